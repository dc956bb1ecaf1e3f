//! write: the `echo "$CONF" > /data/app.conf`, `printf '%s' … > f` and `cat > f <<EOF` of
//! init containers, without a shell: content from a flag, a variable or a file, written
//! atomically (a reader never sees half of it), and not rewritten when it is already there.
//!
//! Content from a variable is often a secret (a Secret as an env var): it is never printed,
//! not even in an error, and it is registered with the redactor in case it turns up
//! elsewhere.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::PathBuf;

use base64::Engine;

use crate::atomic_file::AtomicFile;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::expand;
use crate::reason;
use crate::redact;
use crate::report;
use crate::volume::{self, Ids, Mode, Owner};

/// Write a file atomically from --content, --from-env or --from-file.
#[derive(Debug, Clone, clap::Args)]
#[command(group = clap::ArgGroup::new("source").required(true).multiple(false))]
pub struct WriteArgs {
    /// The file to write; missing parent directories are made. A symbolic link there is
    /// replaced by the file, never written through.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The content, as written ($(VAR) expanded unless --raw). No newline is added.
    #[arg(long, env = "INITBOX_CONTENT", group = "source", value_name = "TEXT")]
    pub content: Option<String>,
    /// The content is this environment variable's value, written exactly (never expanded,
    /// never printed: it may be a secret).
    #[arg(long, env = "INITBOX_FROM_ENV", group = "source", value_name = "VAR")]
    pub from_env: Option<String>,
    /// The content is this file's ($(VAR) expanded unless --raw or --base64).
    #[arg(long, env = "INITBOX_FROM_FILE", group = "source", value_name = "FILE")]
    pub from_file: Option<PathBuf>,
    /// Write the content as it is: no $(VAR) expansion.
    #[arg(long, env = "INITBOX_RAW")]
    pub raw: bool,
    /// The content is base64: write the bytes it decodes to (never expanded).
    #[arg(long, env = "INITBOX_BASE64")]
    pub base64: bool,
    /// The file's mode, octal or symbolic (default: an existing file's, else 0666 minus the
    /// umask). Corrected even when the content is unchanged.
    #[arg(long, env = "INITBOX_MODE", value_name = "MODE")]
    pub mode: Option<Mode>,
    /// The file's owner, UID[:GID] (default: an existing file's when run as root, else the
    /// user's). Corrected even when the content is unchanged.
    #[arg(long, env = "INITBOX_OWNER", value_name = "OWNER")]
    pub owner: Option<Owner>,
    /// Leave an existing FILE (of any kind) exactly as it is: write a default only once.
    #[arg(long, env = "INITBOX_IF_ABSENT")]
    pub if_absent: bool,
    #[command(flatten)]
    pub then: Then,
}

impl crate::cli::Task for WriteArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        volume::blocking(move || run(&self))
    }

    fn then(&self) -> &[OsString] {
        &self.then.command
    }
}

/// What became of FILE.
enum Outcome {
    Written(usize),
    Unchanged { corrected: bool },
    Kept,
}

fn run(args: &WriteArgs) -> Result<()> {
    let file = &args.file;
    let outcome = write(args)?;
    let (event, what) = match outcome {
        Outcome::Written(bytes) => ("write.done", format!("written ({bytes} bytes)")),
        Outcome::Unchanged { corrected: true } => (
            "write.unchanged",
            "content unchanged, mode or owner corrected".to_owned(),
        ),
        Outcome::Unchanged { corrected: false } => ("write.unchanged", "unchanged".to_owned()),
        Outcome::Kept => (
            "write.skipped",
            "exists, left as it is (--if-absent)".to_owned(),
        ),
    };
    report::info(event, format!("write {}: {what}", file.display()));
    Ok(())
}

fn write(args: &WriteArgs) -> Result<Outcome> {
    let file = &args.file;
    let existing = match fs::symlink_metadata(file) {
        Ok(meta) => Some(meta),
        Err(error) if error.kind() == io::ErrorKind::NotFound => None,
        Err(error) => {
            return Err(Error::Failed(format!(
                "cannot write {}: {}",
                file.display(),
                reason::io(&error)
            )));
        }
    };
    if args.if_absent && existing.is_some() {
        return Ok(Outcome::Kept);
    }
    // Ids are looked up before anything is written: a bad name is a usage error.
    let ids = args.owner.as_ref().map(Owner::resolve).transpose()?;
    let content = content(args)?;
    let fail = |error: io::Error| {
        let remedy = if error.to_string().starts_with("giving it the owner") {
            format!("; {}", volume::remedy("CAP_CHOWN"))
        } else {
            String::new()
        };
        Error::Failed(format!(
            "cannot write {}: {}{remedy}",
            file.display(),
            reason::io(&error)
        ))
    };
    let regular = existing.as_ref().filter(|meta| meta.is_file());
    let umask = volume::mode::process_umask();
    let base_mode = regular.map_or(0o666 & !umask, |meta| meta.mode() & 0o7777);
    let mode = args.mode.as_ref().map(|m| m.apply(base_mode, false));

    if regular.is_some() {
        // Opened without following a link, so the comparison and the corrections act on
        // the file that is there, not on whatever a link would point to.
        let current = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(file);
        if let Ok(mut current) = current
            && same_content(&mut current, &content).map_err(fail)?
        {
            let corrected = correct(&current, mode, ids).map_err(fail)?;
            return Ok(Outcome::Unchanged { corrected });
        }
    }

    // An existing file keeps its owner (as root) and mode when none is given, as an edit
    // in place would; the rename gives the path a new inode.
    let keep_owner = regular.filter(|_| is_root()).map(|meta| Ids {
        uid: Some(meta.uid()),
        gid: Some(meta.gid()),
    });
    let mode = mode.or(regular.map(|_| base_mode));
    let mut atomic = AtomicFile::create(file, mode).map_err(fail)?;
    atomic.write_all(&content).map_err(fail)?;
    if let Some(ids) = ids.or(keep_owner) {
        chown(atomic.as_file(), ids).map_err(fail)?;
    }
    atomic.commit().map_err(fail)?;
    Ok(Outcome::Written(content.len()))
}

/// The bytes to write, from the one source given.
fn content(args: &WriteArgs) -> Result<Vec<u8>> {
    let expanding = !args.raw && !args.base64;
    let text: Vec<u8> = if let Some(content) = &args.content {
        if expanding {
            expand::flag(content, "--content")?.into_bytes()
        } else {
            content.clone().into_bytes()
        }
    } else if let Some(name) = &args.from_env {
        let value = expand::var(name).ok_or_else(|| {
            Error::Config(format!(
                "--from-env: the variable {name} is not set (or not UTF-8)"
            ))
        })?;
        redact::conceal(&value);
        value.into_bytes()
    } else if let Some(source) = &args.from_file {
        let bytes = fs::read(source).map_err(|error| {
            Error::Failed(format!(
                "cannot read {}: {}",
                source.display(),
                reason::io(&error)
            ))
        })?;
        if expanding {
            let text = String::from_utf8(bytes).map_err(|_| {
                Error::Failed(format!(
                    "{} is not UTF-8 text, so $(VAR) cannot be expanded in it; give --raw \
                     to write it as it is",
                    source.display()
                ))
            })?;
            // The pipeline expands its own values once, but never a file's content.
            expand::expand(&text, expand::var)
                .map_err(|undefined| {
                    Error::Config(format!("--from-file {}: {undefined}", source.display()))
                })?
                .into_bytes()
        } else {
            bytes
        }
    } else {
        unreachable!("clap requires one source")
    };
    if !args.base64 {
        return Ok(text);
    }
    let compact: Vec<u8> = text
        .into_iter()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(&compact)
        .map_err(|error| {
            // The text is not shown: it may be a secret.
            let what = match (&args.content, &args.from_env, &args.from_file) {
                (Some(_), ..) => "--content".to_owned(),
                (_, Some(name), _) => format!("--from-env {name}"),
                (.., Some(file)) => format!("--from-file {}", file.display()),
                _ => "the content".to_owned(),
            };
            let message = format!("{what} is not base64 ({error})");
            if args.content.is_some() {
                Error::Usage(message)
            } else {
                Error::Failed(message)
            }
        })
}

fn same_content(file: &mut File, content: &[u8]) -> io::Result<bool> {
    if file.metadata()?.len() != content.len() as u64 {
        return Ok(false);
    }
    let mut current = Vec::with_capacity(content.len());
    file.read_to_end(&mut current)?;
    Ok(current == content)
}

/// Gives an unchanged file the mode and owner asked for; whether anything changed.
fn correct(file: &File, mode: Option<u32>, ids: Option<Ids>) -> io::Result<bool> {
    let meta = file.metadata()?;
    let mut corrected = false;
    if let Some(ids) = ids
        && !ids.matches(meta.uid(), meta.gid())
    {
        chown(file, ids)?;
        corrected = true;
    }
    // After chown, which clears set-user-ID bits.
    if let Some(mode) = mode
        && (corrected || meta.mode() & 0o7777 != mode)
    {
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        corrected = true;
    }
    Ok(corrected)
}

fn chown(file: &File, ids: Ids) -> io::Result<()> {
    std::os::unix::fs::fchown(file, ids.uid, ids.gid).map_err(|error| {
        // Named as the change it is, not as a failed write.
        // Kind Other, so that reason::io keeps the whole text.
        io::Error::other(format!("giving it the owner {ids}: {}", reason::io(&error)))
    })
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}
