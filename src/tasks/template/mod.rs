//! template: the sed/envsubst/dockerize/gomplate init container that renders configuration
//! into a volume, with Jinja2 syntax (minijinja, with `include`/`import`/`extends` confined
//! to the template roots: [`compose`]) or GNU envsubst's ([`envsubst`]), and the data-safety
//! rules of DESIGN.md whichever the syntax.
//!
//! Everything is rendered in memory before anything is written, so an undefined variable,
//! a syntax error or a bad data file leaves DEST exactly as it was. Each file is then
//! written atomically (`atomic_file`), and a file whose bytes would not change is not
//! written at all: its mtime stays, and a main container watching it sees no change.

mod compose;
pub mod context;
pub mod engine;
pub mod envsubst;
mod filters;
mod plan;
mod source;

use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::atomic_file;
use crate::cli::Invalid;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::report;

use context::DataFile;
use plan::{Change, Plan};
use source::{Job, Source, Target, is_dash};

/// How many out-of-date paths a `--check` failure names in its message.
const CHECK_LIST_LIMIT: usize = 10;

/// The syntax of the templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Syntax {
    /// Jinja2 (minijinja): `{{ env.HOME }}`, `{% for %}`, `{% include %}`, with --data and
    /// --set.
    #[default]
    Jinja,
    /// GNU envsubst's `$VAR` and `${VAR}`, plus `${VAR:-default}` and `${VAR:?message}`,
    /// from the environment only; an unset variable is an error.
    Envsubst,
}

impl Syntax {
    fn name(self) -> &'static str {
        match self {
            Syntax::Jinja => "jinja",
            Syntax::Envsubst => "envsubst",
        }
    }
}

/// Render templates into configuration files.
#[derive(Debug, Clone, clap::Args)]
pub struct TemplateArgs {
    /// The template: a file, a directory of templates (rendered into a directory), or '-'
    /// for stdin.
    #[arg(value_name = "SRC")]
    pub src: PathBuf,
    /// Where to write: a file, a directory (for a directory SRC, or a file SRC into it),
    /// or '-' for stdout.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    /// The template syntax: jinja, or envsubst ($VAR, ${VAR}, ${VAR:-default},
    /// ${VAR:?message}, from the environment; an unset variable is an error, not GNU
    /// envsubst's empty string).
    #[arg(long, env = "INITBOX_SYNTAX", value_enum, default_value_t = Syntax::Jinja, value_name = "SYNTAX")]
    pub syntax: Syntax,
    /// --syntax envsubst: substitute only this variable, leaving every other `$…` as
    /// written; a name, or GNU envsubst's SHELL-FORMAT ('$A ${B}'). Repeatable.
    #[arg(long, env = "INITBOX_ALLOW", value_name = "VAR", value_parser = envsubst::parse_allow)]
    pub allow: Vec<envsubst::Allow>,
    /// A directory Jinja templates may include, import and extend from, after the
    /// template's own directory (a directory SRC: SRC itself); nothing outside these is
    /// ever read. Repeatable.
    #[arg(long, env = "INITBOX_TEMPLATES", value_name = "DIR")]
    pub templates: Vec<PathBuf>,
    /// Data for the templates: the file's contents (JSON, YAML or TOML, by extension) as
    /// NAME. Repeatable.
    #[arg(long, env = "INITBOX_DATA", value_name = "NAME=FILE", value_parser = context::parse_data)]
    pub data: Vec<DataFile>,
    /// A value for the templates, always a string; dotted keys nest (db.host=x is
    /// {{ db.host }}) and override --data. Repeatable.
    #[arg(long, env = "INITBOX_SET", value_name = "KEY=VALUE", value_parser = context::parse_set)]
    pub set: Vec<(String, String)>,
    /// The mode of every file written, in octal (default: an existing file keeps its mode;
    /// a new one gets 0666, or 0777 from an executable template, minus the umask).
    #[arg(long, env = "INITBOX_MODE", value_name = "MODE", value_parser = atomic_file::parse_mode)]
    pub mode: Option<u32>,
    /// Write nothing: exit 0 if DEST is up to date, 1 if any file would change (they are
    /// listed on stderr).
    #[arg(long, env = "INITBOX_CHECK")]
    pub check: bool,
    #[command(flatten)]
    pub then: Then,
}

impl crate::cli::Task for TemplateArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    fn validate(&self) -> std::result::Result<(), Invalid> {
        if self.check && is_dash(&self.dest) {
            return Err(Invalid {
                arg: "<DEST>".into(),
                value: "-".into(),
                reason: "--check compares the output with DEST, which cannot be '-'".into(),
            });
        }
        // A DEST ending in '/' names a directory without looking; an existing directory
        // is found when the run looks ([`source::read`]).
        if is_dash(&self.src) && self.dest.as_os_str().as_bytes().ends_with(b"/") {
            return Err(source::stdin_into_directory(&self.dest));
        }
        self.validate_syntax()?;
        context::validate(&self.data, &self.set)
    }
}

impl TemplateArgs {
    /// The flags that belong to one syntax only are refused under the other: a `--set`
    /// that an envsubst template would silently ignore is a mistake worth stopping.
    fn validate_syntax(&self) -> std::result::Result<(), Invalid> {
        let refuse = |arg: &str, value: String, reason: &str| {
            Err(Invalid {
                arg: arg.into(),
                value,
                reason: format!("{reason} (--syntax {})", self.syntax.name()),
            })
        };
        match self.syntax {
            Syntax::Envsubst => {
                let only_env = "envsubst templates see the environment only: set an \
                                environment variable instead";
                if let Some(file) = self.data.first() {
                    let value = format!("{}={}", file.name, file.path.display());
                    return refuse("--data <NAME=FILE>", value, only_env);
                }
                if let Some((key, value)) = self.set.first() {
                    return refuse("--set <KEY=VALUE>", format!("{key}={value}"), only_env);
                }
                if let Some(dir) = self.templates.first() {
                    let value = dir.display().to_string();
                    return refuse("--templates <DIR>", value, "envsubst has no include");
                }
            }
            Syntax::Jinja => {
                if let Some(allow) = self.allow.first() {
                    let value = allow.0.join(" ");
                    return refuse(
                        "--allow <VAR>",
                        value,
                        "--allow chooses the variables of --syntax envsubst; a Jinja \
                         template names its own",
                    );
                }
            }
        }
        Ok(())
    }
}

pub async fn run(args: TemplateArgs) -> Result<()> {
    // The data first: a bad data file fails the run before SRC is even read.
    let context = match args.syntax {
        Syntax::Jinja => Some(context::build(&args.data, &args.set)?),
        Syntax::Envsubst => None,
    };
    let (jobs, dirs) = source::read(&args.src, &args.dest, args.syntax).await?;
    let outputs = match context {
        Some(context) => render_jinja(&args, &jobs, &context)?,
        None => {
            let variables = envsubst::Variables::from_environment(&args.allow);
            jobs.iter()
                .map(|job| match &job.source {
                    Source::Text(text) => envsubst::render(&job.name, text, &variables),
                    Source::Bytes(bytes) => Ok(bytes.clone()),
                })
                .collect::<Result<Vec<_>>>()?
        }
    };

    // Everything rendered: now look at what is there, still without touching it.
    let plan = Plan::make(&jobs, &outputs, &dirs, args.mode)?;
    if args.check {
        return check(&jobs, &plan, args.mode);
    }
    // Every destination checked before the first write: a render of a directory either
    // writes all its files or, when one place cannot be written, none.
    plan.check_writable(&jobs)?;

    for dir in &plan.missing_dirs {
        fs::create_dir_all(dir).map_err(|e| {
            Error::Failed(format!(
                "cannot create the directory {}: {}",
                dir.display(),
                reason::io(&e)
            ))
        })?;
    }
    let mut written = 0;
    for ((job, output), change) in jobs.iter().zip(&outputs).zip(&plan.changes) {
        if write(job, output, *change, args.mode)? {
            written += 1;
        }
    }
    let unchanged = jobs.len() - written;
    report::Event::new(
        report::Level::Info,
        "template.done",
        format!(
            "{} from {}: {written} written, {unchanged} unchanged",
            count(jobs.len(), "template"),
            display_src(&args.src)
        ),
    )
    .field("written", written)
    .field("unchanged", unchanged)
    .emit();
    Ok(())
}

/// Every job rendered with Jinja, in memory; partials load from the template roots.
fn render_jinja(
    args: &TemplateArgs,
    jobs: &[Job],
    context: &minijinja::Value,
) -> Result<Vec<Vec<u8>>> {
    let roots = compose::Roots::new(&args.src, args.src.is_dir(), &args.templates)?;
    let mut env = engine::environment();
    roots.install(&mut env);
    let locate = |name: &str| roots.path_of(name).map(|path| path.display().to_string());
    let mut outputs = Vec::with_capacity(jobs.len());
    for job in jobs {
        outputs.push(match &job.source {
            Source::Text(text) => {
                engine::render_located(&env, &job.name, text, context, &locate)?.into_bytes()
            }
            Source::Bytes(bytes) => bytes.clone(),
        });
    }
    Ok(outputs)
}

/// Writes one rendered template, or leaves an unchanged file alone (changing at most its
/// mode); true when bytes were written.
fn write(job: &Job, bytes: &[u8], change: Change, mode: Option<u32>) -> Result<bool> {
    let Target::File(path) = &job.target else {
        write_stdout(bytes)?;
        let message = format!("{} {} → stdout", job.verb(), job.name);
        log_file("template.rendered", message, job, None, Some(bytes.len()));
        return Ok(true);
    };
    let shown = path.display().to_string();
    match change {
        Change::Unchanged => {
            let message = format!("unchanged {} → {shown}", job.name);
            log_file("template.unchanged", message, job, Some(&shown), None);
            Ok(false)
        }
        Change::Mode => {
            let mode = mode.expect("a mode change comes from --mode");
            fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| {
                Error::Failed(format!(
                    "cannot set the mode of {shown}: {}",
                    reason::io(&e)
                ))
            })?;
            let message = format!("unchanged {} → {shown}, mode set to {mode:04o}", job.name);
            log_file("template.mode", message, job, Some(&shown), None);
            Ok(false)
        }
        Change::Create | Change::Update { .. } => {
            let mode = match (mode, change) {
                (Some(mode), _) => Some(mode),
                (None, Change::Update { mode }) => Some(mode),
                (None, _) if job.executable => Some(0o777 & !umask()),
                (None, _) => None,
            };
            atomic_file::write(path, bytes, mode)
                .map_err(|e| Error::Failed(format!("cannot write {shown}: {}", reason::io(&e))))?;
            let message = format!("{} {} → {shown}", job.verb(), job.name);
            log_file(
                "template.rendered",
                message,
                job,
                Some(&shown),
                Some(bytes.len()),
            );
            Ok(true)
        }
    }
}

fn log_file(event: &str, message: String, job: &Job, dest: Option<&str>, bytes: Option<usize>) {
    let mut line = report::Event::new(report::Level::Info, event, message)
        .field("template", job.name.as_str());
    if let Some(dest) = dest {
        line = line.field("dest", dest);
    }
    if let Some(bytes) = bytes {
        line = line.field("bytes", bytes);
    }
    line.emit();
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn display_src(src: &Path) -> String {
    if is_dash(src) {
        "stdin".to_owned()
    } else {
        src.display().to_string()
    }
}

/// `--check`: what would change, on stderr; exit 1 if anything would.
fn check(jobs: &[Job], plan: &Plan, mode: Option<u32>) -> Result<()> {
    let mut stale = Vec::new();
    for dir in &plan.missing_dirs {
        report::info(
            "template.check",
            format!("would create the directory {}", dir.display()),
        );
        stale.push(format!("{}/", dir.display()));
    }
    for (job, change) in jobs.iter().zip(&plan.changes) {
        let Target::File(path) = &job.target else {
            continue;
        };
        let shown = path.display();
        let message = match change {
            Change::Unchanged => {
                report::debug("template.check", format!("up to date: {shown}"));
                continue;
            }
            Change::Create => format!("would create {shown} from {}", job.name),
            Change::Update { .. } => format!("would change {shown} from {}", job.name),
            Change::Mode => format!(
                "would set the mode of {shown} to {:04o}",
                mode.unwrap_or_default()
            ),
        };
        report::info("template.check", message);
        stale.push(shown.to_string());
    }
    let total = jobs.len() + plan.missing_dirs.len();
    if stale.is_empty() {
        report::info(
            "template.check",
            format!("up to date: {}", count(total, "file")),
        );
        return Ok(());
    }
    let mut list = stale
        .iter()
        .take(CHECK_LIST_LIMIT)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if stale.len() > CHECK_LIST_LIMIT {
        list.push_str(&format!(" and {} more", stale.len() - CHECK_LIST_LIMIT));
    }
    Err(Error::Failed(format!(
        "{} of {total} out of date: {list}",
        stale.len()
    )))
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::Failed(format!("writing to stdout: {}", reason::io(&e))))
}

/// The process umask, for new executable files (the kernel applies it to the others).
fn umask() -> u32 {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Umask:"))
                .and_then(|value| u32::from_str_radix(value.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn umask_is_read() {
        assert_eq!(umask() & !0o777, 0);
    }
}
