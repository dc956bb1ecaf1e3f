//! extract: the `wget … && tar xzf … -C /dest --strip-components 1` (or `unzip`) of init
//! containers, made safe for an archive from the network and for pod restarts. The format
//! is told by content; every entry is checked before it is written (see `unpack`); the tree
//! is unpacked into a staging directory beside (or inside) DEST and installed as git-clone
//! installs a checkout, so DEST holds the old content or the complete new one; a record of
//! the archive's SHA-256 in DEST makes a re-run with the same archive do nothing.
//!
//! `fetch --extract` unpacks its verified download through [`install`], the one code path.

mod format;
mod unpack;

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use ring::digest;
use serde::{Deserialize, Serialize};

use crate::atomic_file;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::report;
use crate::size::ByteSize;
use crate::tasks::copy::{Glob, parse_glob};
use crate::tasks::staged_install::{Destination, Found, Layout, remove_staging};

/// The directory in DEST that records what was extracted there (installed last: its
/// presence says DEST is complete).
pub const RECORD_DIR: &str = ".initbox-extract";
/// The record inside [`RECORD_DIR`].
const RECORD: &str = "archive.json";
/// The staging directory inside an existing DEST.
const INNER_STAGING: &str = ".initbox-extract.staging";
/// Top-level names an archive may not use: they are initbox's own.
pub const RESERVED: &[&str] = &[RECORD_DIR, INNER_STAGING];

static LAYOUT: Layout = Layout {
    inner_staging: INNER_STAGING,
    sibling_suffix: "initbox-extract",
    keystone: RECORD_DIR,
    marker: RECORD,
    cleared: "install-cleared",
};

/// Unpack a tar, tar.gz, tar.xz, tar.zst, tar.bz2 or zip archive into a directory,
/// atomically and idempotently.
#[derive(Debug, Clone, clap::Args)]
pub struct ExtractArgs {
    /// The archive; its format is told by its first bytes, never by its name.
    #[arg(value_name = "ARCHIVE")]
    pub archive: PathBuf,
    /// The directory to unpack into: created when missing; may be a mounted volume. Its
    /// old content is replaced by the archive's.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    /// Refuse an archive whose unpacked files add up to more than this (1048576, 512k,
    /// 100M, 1GiB), counted as they are written.
    #[arg(
        long,
        env = "INITBOX_MAX_SIZE",
        default_value = "1GiB",
        value_name = "SIZE"
    )]
    pub max_size: ByteSize,
    #[command(flatten)]
    pub filters: Filters,
    #[command(flatten)]
    pub then: Then,
}

/// What is unpacked, and how: the flags extract and fetch --extract share.
#[derive(Debug, Clone, clap::Args)]
pub struct Filters {
    /// Drop the first N components of every path (`app-1.2/bin/app` → `bin/app` with 1);
    /// an entry with no more than N is skipped.
    #[arg(
        long,
        env = "INITBOX_STRIP_COMPONENTS",
        default_value_t = 0,
        value_name = "N",
        help_heading = "Unpacking"
    )]
    pub strip_components: usize,
    /// Unpack only the entries this matches, after --strip-components (repeatable): a
    /// pattern with a '/' matches the path from the top (`bin/*`), one without matches any
    /// name in it (`*.so`); a directory matched brings everything below it.
    #[arg(
        long,
        env = "INITBOX_INCLUDE",
        value_name = "GLOB",
        value_parser = parse_glob,
        help_heading = "Unpacking"
    )]
    pub include: Vec<Glob>,
    /// Skip the entries this matches, as for --include (repeatable; wins over --include).
    #[arg(
        long,
        env = "INITBOX_EXCLUDE",
        value_name = "GLOB",
        value_parser = parse_glob,
        help_heading = "Unpacking"
    )]
    pub exclude: Vec<Glob>,
    /// Refuse an archive of more entries than this (every entry counts, also one skipped).
    #[arg(
        long,
        env = "INITBOX_MAX_ENTRIES",
        default_value_t = 100_000,
        value_name = "N",
        help_heading = "Unpacking"
    )]
    pub max_entries: u64,
    /// Keep the setuid and setgid bits of the archive's modes (dropped by default).
    #[arg(long, env = "INITBOX_KEEP_SETUID", help_heading = "Unpacking")]
    pub keep_setuid: bool,
    /// Give files the numeric owners the archive records (root only: exit 2 otherwise);
    /// by default they belong to the user running initbox.
    #[arg(long, env = "INITBOX_SAME_OWNER", help_heading = "Unpacking")]
    pub same_owner: bool,
    /// Replace DEST's content even when it was not extracted by initbox.
    #[arg(long, env = "INITBOX_FORCE", help_heading = "Unpacking")]
    pub force: bool,
}

impl Filters {
    /// The components left after --strip-components, `None` when none are.
    fn strip(&self, mut components: Vec<Vec<u8>>) -> Option<Vec<Vec<u8>>> {
        if components.len() <= self.strip_components {
            return None;
        }
        components.drain(..self.strip_components);
        Some(components)
    }

    /// Whether an entry (its path after stripping) is to be unpacked: it, or a directory
    /// above it, matches an --include (when there are any) and none matches an --exclude.
    fn selects(&self, components: &[Vec<u8>]) -> bool {
        let matches = |globs: &[Glob]| {
            (1..=components.len()).any(|end| {
                let name = OsStr::from_bytes(&components[end - 1]);
                let path = components[..end].join(&b'/');
                let path = Path::new(OsStr::from_bytes(&path));
                globs.iter().any(|glob| glob.matches(name, path))
            })
        };
        (self.include.is_empty() || matches(&self.include)) && !matches(&self.exclude)
    }

    /// The mode a file gets: the archive's, without setuid/setgid unless --keep-setuid.
    fn mode(&self, archived: u32) -> u32 {
        if self.keep_setuid {
            archived & 0o7777
        } else {
            archived & 0o1777
        }
    }

    /// --same-owner is for root only.
    pub fn check_owner(&self) -> Result<()> {
        if self.same_owner && !rustix::process::geteuid().is_root() {
            return Err(Error::Usage(
                "--same-owner: only root can give files the owners the archive records".into(),
            ));
        }
        Ok(())
    }
}

/// What DEST/.initbox-extract/archive.json records: the archive and how it was unpacked.
/// A re-run with the same record does nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub sha256: String,
    pub format: String,
    pub strip_components: usize,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub keep_setuid: bool,
    pub same_owner: bool,
}

impl Record {
    fn new(sha256: &str, format: &str, filters: &Filters) -> Record {
        Record {
            sha256: sha256.to_owned(),
            format: format.to_owned(),
            strip_components: filters.strip_components,
            include: filters
                .include
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect(),
            exclude: filters
                .exclude
                .iter()
                .map(|g| g.as_str().to_owned())
                .collect(),
            keep_setuid: filters.keep_setuid,
            same_owner: filters.same_owner,
        }
    }

    /// The same archive, unpacked the same way (the format follows from the archive).
    fn same_as(&self, other: &Record) -> bool {
        Record {
            format: String::new(),
            ..self.clone()
        } == Record {
            format: String::new(),
            ..other.clone()
        }
    }
}

/// Whether DEST already holds this archive (by SHA-256), unpacked with these filters.
/// Finishes an install a killed run left first.
pub fn up_to_date(dest: &Path, sha256: &str, filters: &Filters) -> Result<bool> {
    let destination = Destination::with_layout(dest, &LAYOUT);
    destination
        .recover()
        .map_err(|e| dest_error("finish the interrupted extract into", dest, &e))?;
    let found: Found<Record> = LAYOUT
        .inspect(dest)
        .map_err(|e| dest_error("read", dest, &e))?;
    Ok(matches!(found, Found::Recorded(record)
        if record.same_as(&Record::new(sha256, "", filters))))
}

/// Checks, before a download, that DEST can take an extract.
pub fn check_destination(dest: &Path) -> Result<()> {
    Destination::with_layout(dest, &LAYOUT)
        .check_writable()
        .map_err(|e| dest_error("extract into", dest, &e))
}

/// Unpacks `archive` (already open; `label` names it in messages) into `dest`: the one code
/// path of extract and fetch --extract. `sha256` is the archive's, when the caller already
/// knows it (fetch hashed the download); otherwise it is computed here.
pub fn install(
    mut archive: File,
    label: &str,
    dest: &Path,
    filters: &Filters,
    max_size: ByteSize,
    sha256: Option<String>,
) -> Result<()> {
    filters.check_owner()?;
    let destination = Destination::with_layout(dest, &LAYOUT);
    destination
        .recover()
        .map_err(|e| dest_error("finish the interrupted extract into", dest, &e))?;
    let found: Found<Record> = LAYOUT
        .inspect(dest)
        .map_err(|e| dest_error("read", dest, &e))?;
    if matches!(found, Found::Other) && !filters.force {
        return Err(Error::Failed(format!(
            "{} holds files that extract did not put there; --force replaces them",
            dest.display()
        )));
    }
    let read_error = |e: io::Error| {
        Error::Failed(format!(
            "cannot read {label}: {}",
            unpack::describe_damage(&e)
        ))
    };
    let format = format::sniff(&mut archive)
        .map_err(read_error)?
        .ok_or_else(|| {
            Error::Failed(format!(
                "{label} is not a tar, tar.gz, tar.xz, tar.zst, tar.bz2 or zip archive (judged by its first bytes)"
            ))
        })?;
    // The digest decides a re-run, so with a record in DEST it comes first; otherwise it
    // is computed on the other CPU while the archive is unpacked.
    let (sha256, hasher) = match (sha256, &found) {
        (Some(known), _) => (Some(known), None),
        (None, Found::Recorded(_)) => (Some(sha256_of(&archive).map_err(read_error)?), None),
        (None, _) => {
            let copy = archive.try_clone().map_err(read_error)?;
            (None, Some(std::thread::spawn(move || sha256_of(&copy))))
        }
    };
    if let (Some(sha256), Found::Recorded(record)) = (&sha256, &found)
        && record.same_as(&Record::new(sha256, format.name(), filters))
    {
        report::info(
            "extract.unchanged",
            format!(
                "extract {label}: {} already holds it (SHA-256 {sha256}); nothing to do",
                dest.display()
            ),
        );
        return Ok(());
    }
    // Made and registered in one step: removed at once if the step gives up while the tree
    // is staged; no longer once its install begins (a cut install is finished by the next
    // run).
    let (staging, staged) = crate::volume::scratch_made(|| {
        destination
            .staging()
            .map_err(|e| dest_error("create a staging directory for", dest, &e))
    })?;
    let unpacked = unpack::Unpacker::new(&staging, filters, max_size).and_then(|mut unpacker| {
        unpacker.unpack(format, archive)?;
        Ok(unpacker.summary)
    });
    let summary = match unpacked {
        Ok(summary) => summary,
        Err(error) => {
            remove_staging(&staging);
            return Err(error);
        }
    };
    let sha256 = match (sha256, hasher) {
        (Some(sha256), _) => sha256,
        (None, Some(hasher)) => match hasher.join() {
            Ok(Ok(sha256)) => sha256,
            Ok(Err(error)) => {
                remove_staging(&staging);
                return Err(read_error(error));
            }
            Err(_) => {
                remove_staging(&staging);
                return Err(Error::Failed(format!("cannot hash {label}")));
            }
        },
        (None, None) => unreachable!("a digest or a hasher"),
    };
    let record = Record::new(&sha256, format.name(), filters);
    drop(staged);
    let written = serde_json::to_vec_pretty(&record)
        .map_err(io::Error::other)
        .and_then(|json| {
            fs::create_dir(staging.join(RECORD_DIR))?;
            atomic_file::write(&staging.join(RECORD_DIR).join(RECORD), &json, Some(0o644))
        })
        .and_then(|()| destination.install(&staging));
    if let Err(error) = written {
        remove_staging(&staging);
        return Err(dest_error("install the extracted tree into", dest, &error));
    }
    report::Event::new(
        report::Level::Info,
        "extract.done",
        format!(
            "extract {label}: {} {} file{}, {} director{}, {} link{} ({}) into {}{}",
            format.name(),
            summary.files,
            plural(summary.files),
            summary.directories,
            if summary.directories == 1 { "y" } else { "ies" },
            summary.links,
            plural(summary.links),
            ByteSize(summary.bytes),
            dest.display(),
            if summary.skipped > 0 {
                format!(", {} entries skipped", summary.skipped)
            } else {
                String::new()
            }
        ),
    )
    .field("sha256", sha256)
    .field("bytes", summary.bytes)
    .emit();
    Ok(())
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn dest_error(action: &str, dest: &Path, error: &io::Error) -> Error {
    Error::Failed(format!(
        "cannot {action} {}: {}",
        dest.display(),
        reason::io(error)
    ))
}

/// The SHA-256 of a whole file, read through its own descriptor position from the start.
fn sha256_of(file: &File) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut context = digest::Context::new(&digest::SHA256);
    let mut buffer = vec![0; 256 * 1024];
    let mut offset = 0;
    loop {
        // Positioned reads: the unpacker reads the same open file at its own pace.
        let read = match file.read_at(&mut buffer, offset) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        context.update(&buffer[..read]);
        offset += read as u64;
    }
    Ok(hex(context.finish().as_ref()))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl crate::cli::Task for ExtractArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        crate::volume::blocking(move || run(&self))
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

fn run(args: &ExtractArgs) -> Result<()> {
    args.filters.check_owner()?;
    let label = args.archive.display().to_string();
    let archive = File::open(&args.archive)
        .map_err(|e| Error::Failed(format!("cannot read {label}: {}", reason::io(&e))))?;
    if archive.metadata().is_ok_and(|m| m.is_dir()) {
        return Err(Error::Failed(format!(
            "cannot read {label}: it is a directory"
        )));
    }
    install(
        archive,
        &label,
        &args.dest,
        &args.filters,
        args.max_size,
        None,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(include: &[&str], exclude: &[&str], strip: usize) -> Filters {
        Filters {
            strip_components: strip,
            include: include.iter().map(|g| parse_glob(g).unwrap()).collect(),
            exclude: exclude.iter().map(|g| parse_glob(g).unwrap()).collect(),
            max_entries: 10,
            keep_setuid: false,
            same_owner: false,
            force: false,
        }
    }

    fn path(text: &str) -> Vec<Vec<u8>> {
        unpack::components(text.as_bytes()).unwrap()
    }

    #[test]
    fn globs_match_the_path_after_stripping_or_any_name_in_it() {
        let only_bin = filters(&["bin/*"], &[], 1);
        let stripped = only_bin.strip(path("app-1.2/bin/app")).unwrap();
        assert!(only_bin.selects(&stripped));
        assert!(!only_bin.selects(&path("lib/libfoo.so")));
        assert!(only_bin.strip(path("app-1.2")).is_none());
        let no_docs = filters(&[], &["docs", "*.md"], 0);
        assert!(!no_docs.selects(&path("docs/guide/index.html")));
        assert!(!no_docs.selects(&path("lib/README.md")));
        assert!(no_docs.selects(&path("lib/README.txt")));
    }

    #[test]
    fn setuid_bits_are_dropped_unless_kept() {
        let mut f = filters(&[], &[], 0);
        assert_eq!(f.mode(0o4755), 0o755);
        assert_eq!(f.mode(0o3777), 0o1777);
        f.keep_setuid = true;
        assert_eq!(f.mode(0o4755), 0o4755);
    }
}
