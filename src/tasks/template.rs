//! template: the sed/envsubst/dockerize/gomplate init container that renders configuration
//! into a volume, with Jinja2 syntax (minijinja) and the data-safety rules of DESIGN.md.
//!
//! Everything is rendered in memory before anything is written, so an undefined variable,
//! a syntax error or a bad data file leaves DEST exactly as it was. Each file is then
//! written atomically (`atomic_file`), and a file whose bytes would not change is not
//! written at all: its mtime stays, and a main container watching it sees no change.

pub mod context;
pub mod engine;

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::atomic_file;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::report;

use context::DataFile;

/// The suffix dropped from a template's name to name its output.
const TEMPLATE_SUFFIX: &str = ".j2";

/// How many out-of-date paths a `--check` failure names in its message.
const CHECK_LIST_LIMIT: usize = 10;

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

/// One template to render.
struct Job {
    /// The template as messages name it: the path under SRC, or `<stdin>`.
    name: String,
    source: Source,
    target: Target,
    /// Whether the template file has an execute bit (a new output file gets them too).
    executable: bool,
}

/// What a template file holds.
enum Source {
    /// UTF-8 text: rendered (text without `{{`, `{%` or `{#` renders to itself).
    Text(String),
    /// Anything else (a keystore, an image, a ConfigMap's `binaryData`): copied byte for
    /// byte, never rendered, even where its bytes happen to read `{{`.
    Bytes(Vec<u8>),
}

impl Source {
    fn of(bytes: Vec<u8>, name: &str) -> Source {
        match String::from_utf8(bytes) {
            Ok(text) => Source::Text(text),
            Err(error) => {
                let bytes = error.into_bytes();
                let marked = [b"{{", b"{%", b"{#"]
                    .iter()
                    .any(|marker| bytes.windows(2).any(|w| w == *marker));
                if marked {
                    report::warn(
                        "template.binary",
                        format!(
                            "{name} is not UTF-8 text: it is copied as it is, its template \
                             markers not rendered"
                        ),
                    );
                }
                Source::Bytes(bytes)
            }
        }
    }
}

impl Job {
    fn verb(&self) -> &'static str {
        match self.source {
            Source::Text(_) => "rendered",
            Source::Bytes(_) => "copied (not UTF-8 text)",
        }
    }
}

enum Target {
    Stdout,
    File(PathBuf),
}

/// What writing a rendered file would do to what is at its destination now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Create,
    /// Different contents; the current mode, kept unless `--mode` says otherwise.
    Update {
        mode: u32,
    },
    /// Same contents, but `--mode` asks for another mode.
    Mode,
    Unchanged,
}

fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

impl crate::cli::Task for TemplateArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

pub async fn run(args: TemplateArgs) -> Result<()> {
    if args.check && is_dash(&args.dest) {
        return Err(Error::Usage(
            "--check compares the output with DEST, which cannot be '-'".into(),
        ));
    }
    let context = context::build(&args.data, &args.set)?;
    let (jobs, dirs) = plan(&args).await?;

    let env = engine::environment();
    let mut outputs: Vec<Vec<u8>> = Vec::with_capacity(jobs.len());
    for job in &jobs {
        outputs.push(match &job.source {
            Source::Text(text) => engine::render(&env, &job.name, text, &context)?.into_bytes(),
            Source::Bytes(bytes) => bytes.clone(),
        });
    }

    // Everything rendered: now look at what is there, still without touching it.
    let mut changes = Vec::with_capacity(jobs.len());
    for (job, output) in jobs.iter().zip(&outputs) {
        changes.push(match &job.target {
            Target::Stdout => Change::Create,
            Target::File(path) => compare(path, output, args.mode)?,
        });
    }
    let mut missing_dirs = Vec::new();
    for dir in &dirs {
        match fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::Config(format!(
                    "cannot create the directory {}: a file is in the way",
                    dir.display()
                )));
            }
            Err(_) => missing_dirs.push(dir.as_path()),
        }
    }

    if args.check {
        return check(&jobs, &changes, &missing_dirs, args.mode);
    }
    // Every destination checked before the first write: a render of a directory either
    // writes all its files or, when one place cannot be written, none.
    preflight(&jobs, &changes, &missing_dirs)?;

    for dir in &missing_dirs {
        fs::create_dir_all(dir).map_err(|e| {
            Error::Failed(format!(
                "cannot create the directory {}: {}",
                dir.display(),
                reason::io(&e)
            ))
        })?;
    }
    let mut written = 0;
    for ((job, output), change) in jobs.iter().zip(&outputs).zip(&changes) {
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

/// Fails, naming the directory, if a file to write has a directory that cannot be written
/// (or created), or a mode to set on a file initbox does not own.
fn preflight(jobs: &[Job], changes: &[Change], missing_dirs: &[&Path]) -> Result<()> {
    // Each directory, with the first file to be written into it (messages name both).
    let mut dirs: Vec<(&Path, Option<&Path>)> = missing_dirs.iter().map(|d| (*d, None)).collect();
    for (job, change) in jobs.iter().zip(changes) {
        let Target::File(path) = &job.target else {
            continue;
        };
        match change {
            Change::Create | Change::Update { .. } => dirs.push((parent_dir(path), Some(path))),
            Change::Mode => check_owner(path)?,
            Change::Unchanged => {}
        }
    }
    // A file's entry first, so that the message names the file.
    dirs.sort_by(|a, b| a.0.cmp(b.0).then(b.1.is_some().cmp(&a.1.is_some())));
    dirs.dedup_by(|a, b| a.0 == b.0);
    for (dir, file) in dirs {
        // A directory to create is created in its nearest existing ancestor.
        let mut existing = dir;
        while !existing.exists() {
            match existing.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
                _ => {
                    existing = Path::new(".");
                    break;
                }
            }
        }
        if !existing.is_dir() {
            return Err(Error::Config(format!(
                "cannot create the directory {}: {} is a file, not a directory",
                dir.display(),
                existing.display()
            )));
        }
        if let Err(error) = writable(existing) {
            let reason = reason::io(&error);
            let message = match (file, existing == dir) {
                (Some(file), true) => format!(
                    "cannot write {}: {reason} (the directory {} cannot be written)",
                    file.display(),
                    dir.display()
                ),
                (None, true) => {
                    format!(
                        "cannot write into the directory {}: {reason}",
                        dir.display()
                    )
                }
                (_, false) => format!(
                    "cannot create the directory {} in {}: {reason}",
                    dir.display(),
                    existing.display()
                ),
            };
            return Err(Error::Failed(message));
        }
    }
    Ok(())
}

/// Whether this process may create and rename files in `dir` (as the kernel would decide:
/// permissions, a read-only mount), without creating anything.
#[allow(unsafe_code)]
fn writable(dir: &Path) -> io::Result<()> {
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `path` is a valid NUL-terminated string that outlives the call. The effective
    // IDs decide, as for the writes that follow (AT_EACCESS).
    let result = unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Only a file's owner (or root) may change its mode.
#[allow(unsafe_code)]
fn check_owner(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| {
        Error::Failed(format!(
            "cannot read {}: {}",
            path.display(),
            reason::io(&e)
        ))
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && meta.uid() != euid {
        return Err(Error::Failed(format!(
            "cannot set the mode of {}: it belongs to user {}, not to this user ({euid})",
            path.display(),
            meta.uid()
        )));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
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
fn check(
    jobs: &[Job],
    changes: &[Change],
    missing_dirs: &[&Path],
    mode: Option<u32>,
) -> Result<()> {
    let mut stale = Vec::new();
    for dir in missing_dirs {
        report::info(
            "template.check",
            format!("would create the directory {}", dir.display()),
        );
        stale.push(format!("{}/", dir.display()));
    }
    for (job, change) in jobs.iter().zip(changes) {
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
    let total = jobs.len() + missing_dirs.len();
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

/// What writing `bytes` to `path` would change; errors for a destination that can never
/// be written (a directory in the way), before anything is written anywhere.
fn compare(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<Change> {
    let shown = path.display();
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Change::Create),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            let file = path
                .ancestors()
                .skip(1)
                .filter(|dir| dir.is_file())
                .last()
                .map(|file| format!("{} is a file", file.display()))
                .unwrap_or_else(|| "a parent of it is a file".into());
            return Err(Error::Config(format!(
                "cannot write {shown}: {file}, not a directory"
            )));
        }
        Err(e) => {
            return Err(Error::Failed(format!(
                "cannot read {shown}: {}",
                reason::io(&e)
            )));
        }
    };
    if meta.is_dir() {
        return Err(Error::Config(format!(
            "cannot write {shown}: it is a directory"
        )));
    }
    let current_mode = meta.permissions().mode() & 0o7777;
    // Only a file of the same size can be unchanged: no need to read the others.
    if meta.len() != bytes.len() as u64 {
        return Ok(Change::Update { mode: current_mode });
    }
    let current = fs::read(path)
        .map_err(|e| Error::Failed(format!("cannot read {shown}: {}", reason::io(&e))))?;
    Ok(if current != bytes {
        Change::Update { mode: current_mode }
    } else if mode.is_some_and(|mode| mode != current_mode) {
        Change::Mode
    } else {
        Change::Unchanged
    })
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

/// The templates to render and the directories to mirror, read from SRC.
async fn plan(args: &TemplateArgs) -> Result<(Vec<Job>, Vec<PathBuf>)> {
    let dest = &args.dest;
    let into_dir = dest.as_os_str().as_bytes().ends_with(b"/") || dest.is_dir();
    if is_dash(&args.src) {
        let target = if is_dash(dest) {
            Target::Stdout
        } else if into_dir {
            return Err(Error::Usage(format!(
                "a template read from stdin has no name: DEST must be a file or '-', not the \
                 directory {}",
                dest.display()
            )));
        } else {
            Target::File(dest.clone())
        };
        let job = Job {
            name: "<stdin>".into(),
            source: Source::of(read_stdin().await?, "<stdin>"),
            target,
            executable: false,
        };
        return Ok((vec![job], Vec::new()));
    }

    let src = &args.src;
    let meta = fs::metadata(src)
        .map_err(|e| Error::Config(format!("template {}: {}", src.display(), reason::io(&e))))?;
    if !meta.is_dir() {
        let target = if is_dash(dest) {
            Target::Stdout
        } else if into_dir {
            let name = src.file_name().unwrap_or(src.as_os_str());
            Target::File(dest.join(output_name(name)))
        } else {
            Target::File(dest.clone())
        };
        let job = read_template(src, src.display().to_string(), target)?;
        return Ok((vec![job], Vec::new()));
    }
    if is_dash(dest) {
        return Err(Error::Usage(format!(
            "{} is a directory: it renders into a directory, not to stdout",
            src.display()
        )));
    }
    if dest.exists() && !dest.is_dir() {
        return Err(Error::Config(format!(
            "{} is a directory of templates, but DEST {} is not a directory",
            src.display(),
            dest.display()
        )));
    }
    let mut walk = Walk {
        jobs: Vec::new(),
        dirs: vec![dest.clone()],
        outputs: HashMap::new(),
        ancestors: vec![(meta.dev(), meta.ino())],
        dest: fs::metadata(dest).ok().map(|meta| (meta.dev(), meta.ino())),
    };
    walk.dir(src, dest)?;
    Ok((walk.jobs, walk.dirs))
}

/// `app.conf.j2` → `app.conf`; other names stay as they are.
fn output_name(name: &std::ffi::OsStr) -> std::ffi::OsString {
    let bytes = name.as_bytes();
    match bytes.strip_suffix(TEMPLATE_SUFFIX.as_bytes()) {
        Some(stem) if !stem.is_empty() => std::ffi::OsStr::from_bytes(stem).to_owned(),
        _ => name.to_owned(),
    }
}

fn read_template(path: &Path, name: String, target: Target) -> Result<Job> {
    let bytes = fs::read(path).map_err(|e| {
        Error::Config(format!(
            "reading template {}: {}",
            path.display(),
            reason::io(&e)
        ))
    })?;
    let source = Source::of(bytes, &name);
    let executable = fs::metadata(path)
        .map(|meta| meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    Ok(Job {
        name,
        source,
        target,
        executable,
    })
}

async fn read_stdin() -> Result<Vec<u8>> {
    // On a blocking thread, so that a signal still ends a run whose stdin never closes.
    let bytes = tokio::task::spawn_blocking(|| {
        let mut bytes = Vec::new();
        io::stdin().lock().read_to_end(&mut bytes).map(|_| bytes)
    })
    .await
    .map_err(|e| Error::Failed(format!("reading the template from stdin: {e}")))?
    .map_err(|e| {
        Error::Config(format!(
            "reading the template from stdin: {}",
            reason::io(&e)
        ))
    })?;
    Ok(bytes)
}

/// Walks a directory of templates (following symlinks, as a ConfigMap volume needs).
struct Walk {
    jobs: Vec<Job>,
    /// Every directory of the output tree, so that empty ones are mirrored too.
    dirs: Vec<PathBuf>,
    /// Output path → the template that renders it, to catch `a` beside `a.j2`.
    outputs: HashMap<PathBuf, String>,
    /// (device, inode) of the directories being walked, to stop at a symlink loop.
    ancestors: Vec<(u64, u64)>,
    /// (device, inode) of DEST, when it exists: output inside SRC is not a template.
    dest: Option<(u64, u64)>,
}

impl Walk {
    fn dir(&mut self, src: &Path, dest: &Path) -> Result<()> {
        let unreadable = |e: io::Error| {
            Error::Config(format!(
                "reading the template directory {}: {}",
                src.display(),
                reason::io(&e)
            ))
        };
        let mut entries = fs::read_dir(src)
            .map_err(unreadable)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()
            .map_err(unreadable)?;
        entries.sort();
        for name in entries {
            // `..data`, `..2024_01_01_…`: the machinery of a Kubernetes ConfigMap or
            // Secret volume; the files beside them are symlinks into it.
            if name.as_bytes().starts_with(b"..") {
                continue;
            }
            let path = src.join(&name);
            let meta = fs::metadata(&path).map_err(|e| {
                let broken = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                let reason = if broken {
                    "a symlink to nothing".to_owned()
                } else {
                    reason::io(&e)
                };
                Error::Config(format!("template {}: {reason}", path.display()))
            })?;
            if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                if self.dest == Some(id) {
                    continue;
                }
                if self.ancestors.contains(&id) {
                    return Err(Error::Config(format!(
                        "template directory {}: a symlink loop",
                        path.display()
                    )));
                }
                let sub = dest.join(&name);
                self.dirs.push(sub.clone());
                self.ancestors.push(id);
                self.dir(&path, &sub)?;
                self.ancestors.pop();
            } else if meta.is_file() {
                let output = dest.join(output_name(&name));
                let shown = path.display().to_string();
                if let Some(other) = self.outputs.insert(output.clone(), shown.clone()) {
                    return Err(Error::Config(format!(
                        "templates {other} and {shown} would both render to {}",
                        output.display()
                    )));
                }
                self.jobs
                    .push(read_template(&path, shown, Target::File(output))?);
            } else {
                report::warn(
                    "template.skipped",
                    format!("skipping {}: not a regular file", path.display()),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_drop_j2() {
        let name = |s: &str| output_name(std::ffi::OsStr::new(s)).into_string().unwrap();
        assert_eq!(name("app.conf.j2"), "app.conf");
        assert_eq!(name("app.conf"), "app.conf");
        assert_eq!(name(".j2"), ".j2");
        assert_eq!(name("nginx.j2.conf"), "nginx.j2.conf");
    }

    #[test]
    fn umask_is_read() {
        assert_eq!(umask() & !0o777, 0);
    }
}
