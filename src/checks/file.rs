//! wait-for-file: one attempt = one look at each path (and, with `--contains`, one bounded
//! read of it); ready when it exists with the wanted type, size and contents.
//!
//! Symbolic links are followed, as `test -e` does: a ConfigMap or Secret volume is made of
//! links (`key -> ..data/key`), so a check that did not follow them would never see its
//! files. A link to nothing does not count as existing. The contents of a file are never
//! shown, only whether `--contains` matched, so a link planted to another file (a secret,
//! /etc/shadow) tells the logs nothing of what it points to; only regular files are read,
//! so a FIFO or a device planted under the name cannot block or flood an attempt.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::exit::{Error, Result};
use crate::reason;
use crate::wait::{self, Attempt, Probe, WaitArgs};

/// `--contains` reads at most this much of a file: the first MiB.
pub const CONTAINS_LIMIT: u64 = 1024 * 1024;

/// Wait until files exist, with a type, a size or contents.
#[derive(Debug, Clone, clap::Args)]
pub struct FileArgs {
    /// Paths to wait for; symbolic links are followed (a link to nothing does not count).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Ready only when the path is of this type.
    #[arg(long = "type", env = "INITBOX_TYPE", value_enum, value_name = "TYPE")]
    pub kind: Option<FileKind>,
    /// Ready only when a file is not empty, or a directory has an entry.
    #[arg(long, env = "INITBOX_NON_EMPTY")]
    pub non_empty: bool,
    /// Ready only when the file's first MiB matches this regular expression (`^` and `$`
    /// match at every line, as in grep).
    #[arg(long, env = "INITBOX_CONTAINS", value_name = "REGEX", value_parser = parse_regex)]
    pub contains: Option<Pattern>,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub then: crate::exec::Then,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FileKind {
    File,
    Dir,
    Socket,
}

/// A compiled `--contains` expression, with the text the user wrote (for `Debug`, which
/// the pipeline's tests compare).
#[derive(Clone)]
pub struct Pattern {
    text: String,
    regex: regex::Regex,
}

impl std::fmt::Debug for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pattern({:?})", self.text)
    }
}

fn parse_regex(text: &str) -> std::result::Result<Pattern, String> {
    // As grep: `^` and `$` match at the start and end of every line.
    let regex = regex::Regex::new(&format!("(?m){text}"))
        .map_err(|e| format!("not a regular expression: {e}"))?;
    Ok(Pattern {
        text: text.to_owned(),
        regex,
    })
}

/// What a ready file looked like: its size and mtime, so a change between two attempts is
/// seen (the file is still being written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Seen {
    size: u64,
    mtime_ns: i128,
}

pub struct FileProbe {
    look: Arc<Look>,
    /// With `--stable-for`: a change of size or mtime since the last ready look is "not
    /// yet", so the engine's "ready for that long" means "unchanged for that long".
    track_changes: bool,
    last: Mutex<Option<Seen>>,
}

/// What to look for at one path; shared with the blocking thread that looks.
struct Look {
    path: PathBuf,
    label: String,
    kind: Option<FileKind>,
    non_empty: bool,
    contains: Option<Pattern>,
}

impl FileProbe {
    pub fn new(path: PathBuf, args: &FileArgs, track_changes: bool) -> Self {
        FileProbe {
            look: Arc::new(Look {
                label: path.display().to_string(),
                path,
                kind: args.kind,
                non_empty: args.non_empty,
                contains: args.contains.clone(),
            }),
            track_changes,
            last: Mutex::new(None),
        }
    }
}

impl Look {
    /// One look: the outcome, and the size and mtime of a ready path.
    fn look(&self) -> (Attempt, Option<Seen>) {
        match self.check() {
            Ok((detail, seen)) => (Attempt::ready(detail), Some(seen)),
            Err(outcome) => (outcome, None),
        }
    }

    fn check(&self) -> std::result::Result<(String, Seen), Attempt> {
        let metadata = std::fs::metadata(&self.path).map_err(|error| self.missing(&error))?;
        let kind = describe(&metadata);
        let wanted = self.kind.or(self.contains.as_ref().map(|_| FileKind::File));
        if let Some(wanted) = wanted
            && !is_kind(&metadata, wanted)
        {
            let want = match wanted {
                FileKind::File => "a regular file",
                FileKind::Dir => "a directory",
                FileKind::Socket => "a socket",
            };
            let why = if self.kind.is_none() {
                " (--contains reads regular files only)"
            } else {
                ""
            };
            return Err(Attempt::NotYet(format!("is {kind}, not {want}{why}")));
        }
        if self.non_empty {
            if metadata.is_dir() {
                match std::fs::read_dir(&self.path).map(|mut entries| entries.next().is_some()) {
                    Ok(true) => {}
                    Ok(false) => return Err(Attempt::NotYet("is an empty directory".into())),
                    Err(error) => return Err(self.unreadable(&error)),
                }
            } else if metadata.is_file() && metadata.len() == 0 {
                return Err(Attempt::NotYet("is an empty file".into()));
            }
        }
        if let Some(pattern) = &self.contains
            && !self.matches(pattern)?
        {
            return Err(Attempt::NotYet(format!(
                "does not contain a match for '{}' (in its first MiB)",
                pattern.text
            )));
        }
        let seen = Seen {
            size: metadata.len(),
            mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000
                + i128::from(metadata.mtime_nsec()),
        };
        let detail = format!(
            "{kind}, {} bytes, modified {}",
            seen.size,
            modified(&metadata)
        );
        Ok((detail, seen))
    }

    fn missing(&self, error: &io::Error) -> Attempt {
        if error.kind() == io::ErrorKind::NotFound {
            // stat follows links; lstat tells a dangling link from nothing at all.
            if let Ok(link) = std::fs::read_link(&self.path) {
                return Attempt::NotYet(format!(
                    "is a symbolic link to nothing ({} does not exist)",
                    link.display()
                ));
            }
            return Attempt::NotYet("does not exist".into());
        }
        self.unreadable(error)
    }

    /// Permission denied will not change by itself: the pod's user or fsGroup must.
    fn unreadable(&self, error: &io::Error) -> Attempt {
        if error.kind() == io::ErrorKind::PermissionDenied {
            return Attempt::Fatal(Error::Failed(format!(
                "checking {}: permission denied (give the container a user or fsGroup that may read it)",
                self.label
            )));
        }
        Attempt::NotYet(reason::io(error))
    }

    /// Whether the first [`CONTAINS_LIMIT`] bytes match. Opened without blocking and checked
    /// again after opening, so what is read is the regular file that was checked.
    fn matches(&self, pattern: &Pattern) -> std::result::Result<bool, Attempt> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&self.path)
            .map_err(|error| self.missing(&error))?;
        let metadata = file.metadata().map_err(|error| self.unreadable(&error))?;
        if !metadata.is_file() {
            return Err(Attempt::NotYet(format!(
                "is {}, not a regular file (--contains reads regular files only)",
                describe(&metadata)
            )));
        }
        let mut text = Vec::new();
        file_head(file, &mut text).map_err(|error| self.unreadable(&error))?;
        Ok(pattern.regex.is_match(&String::from_utf8_lossy(&text)))
    }
}

fn file_head(file: File, into: &mut Vec<u8>) -> io::Result<()> {
    file.take(CONTAINS_LIMIT).read_to_end(into).map(drop)
}

fn is_kind(metadata: &Metadata, kind: FileKind) -> bool {
    match kind {
        FileKind::File => metadata.is_file(),
        FileKind::Dir => metadata.is_dir(),
        FileKind::Socket => metadata.file_type().is_socket(),
    }
}

/// `a regular file`, `a directory`, …: what the path is, for messages.
fn describe(metadata: &Metadata) -> &'static str {
    let kind = metadata.file_type();
    if kind.is_file() {
        "a regular file"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_char_device() {
        "a character device"
    } else {
        "a special file"
    }
}

/// The mtime in UTC, to the millisecond (RFC 3339).
fn modified(metadata: &Metadata) -> String {
    match metadata.modified() {
        Ok(time) => humantime::format_rfc3339_millis(time).to_string(),
        Err(_) => "at an unknown time".into(),
    }
}

impl Probe for FileProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.look.label
    }

    async fn attempt(&self) -> Attempt {
        // A stat and a read of at most a MiB: quick, but on a slow volume better off the
        // runtime's threads. The engine's attempt timeout still bounds it.
        let look = self.look.clone();
        let (outcome, seen) = match tokio::task::spawn_blocking(move || look.look()).await {
            Ok(looked) => looked,
            Err(error) => {
                return Attempt::Fatal(Error::Failed(format!("internal error: {error}")));
            }
        };
        if !self.track_changes {
            return outcome;
        }
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let previous = std::mem::replace(&mut *last, seen);
        match (outcome, previous, seen) {
            (Attempt::Ready { detail, .. }, Some(before), Some(now)) if before != now => {
                Attempt::NotYet(format!("changed since the last look: {detail}"))
            }
            (outcome, ..) => outcome,
        }
    }
}

impl crate::cli::Task for FileArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    /// Checks across the waiting flags (`--stable-for` within `--timeout`).
    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        self.wait.validate()
    }
}

pub async fn run(args: FileArgs) -> Result<()> {
    let options = args.wait.options();
    // With --stable-for, "ready for that long" becomes "unchanged for that long": a file
    // still being written changes size or mtime between two looks.
    let track_changes = !options.stable_for.is_zero();
    let probes = args
        .paths
        .iter()
        .map(|path| FileProbe::new(path.clone(), &args, track_changes))
        .collect();
    wait::wait_for_all("file", probes, options).await.map(drop)
}
