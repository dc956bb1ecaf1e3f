//! copy: the `cp -a /opt/app/conf /work/` and `[ -f /data/conf ] || cp /defaults/conf
//! /data/conf` of init containers, safe for a volume someone else may have written to.
//!
//! - `cp -a` semantics: recursive; modes, times and (as root) owners kept; symbolic links
//!   copied as links (a SRC that is itself a link is followed, as `cp -H` does, since every
//!   key of a ConfigMap volume is one); `copy a b` copies into `b/a` when `b` is a directory, and `a/.`
//!   copies a's contents.
//! - Each file (and link) is written to a temp name in its directory and renamed into place,
//!   so a kill leaves every file old or new, never half; leftovers of a killed run are
//!   removed from each directory the next run writes into.
//! - DEST is walked by directory descriptors opened `O_NOFOLLOW`, like the source, so a
//!   link planted in DEST never leads the copy out of it: a link at a file's place is
//!   replaced by the renamed file, a link at a directory's place is an error.
//! - A tree is copied by the threads of the shared walk (as chown's is): each directory's
//!   mode and times are set once its contents are in, whichever thread copied them.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::fs::{AtFlags, CWD, Dir, Gid, Mode as Perm, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::report;
use crate::volume::walk::{self, Entry, Kind, Next, Skipped, Visitor};
use crate::volume::{self, Ids, Mode, Owner, Tally};

/// Copy files and trees like cp -a, each file atomically.
#[derive(Debug, Clone, clap::Args)]
pub struct CopyArgs {
    /// SRC... DEST: the last PATH is the destination. SRC: files, directories
    /// (recursively) and links (as links); `DIR/.` copies the directory's contents. DEST:
    /// an existing directory receives each SRC under its own name (as cp does); else DEST
    /// becomes the copy. With several SRCs, or ending in '/', DEST is a directory (made if
    /// missing). In a pipeline: `paths: [SRC..., DEST]`.
    #[arg(value_name = "PATH", required = true, num_args = 2..)]
    pub paths: Vec<PathBuf>,
    /// Copy only what DEST lacks: an existing file, link or directory is left as it is (the
    /// contents of an existing directory are still completed). Seeds a default once.
    #[arg(long, env = "INITBOX_IF_ABSENT")]
    pub if_absent: bool,
    /// Give every copied file this owner, UID[:GID] (default: the source's, when run as
    /// root).
    #[arg(long, env = "INITBOX_OWNER", value_name = "OWNER")]
    pub owner: Option<Owner>,
    /// Apply this mode to every copied file and directory, octal or symbolic (u+rwX,go-w),
    /// starting from the source's.
    #[arg(long, env = "INITBOX_MODE", value_name = "MODE")]
    pub mode: Option<Mode>,
    /// Leave out what matches: a pattern without '/' matches names at any depth (*.tmp,
    /// .git), one with '/' matches paths below SRC (conf/secret-*). Repeatable.
    #[arg(long, env = "INITBOX_EXCLUDE", value_name = "GLOB", value_parser = parse_glob)]
    pub exclude: Vec<Glob>,
    #[command(flatten)]
    pub then: Then,
}

/// An `--exclude` pattern, checked when the flag is parsed (extract's --include and
/// --exclude too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    pattern: glob::Pattern,
    /// Matched against the path below SRC (else against the name).
    by_path: bool,
}

pub(crate) fn parse_glob(text: &str) -> Result<Glob, String> {
    let trimmed = text.trim_matches('/');
    if trimmed.is_empty() {
        return Err(format!("'{text}' is not a pattern"));
    }
    let pattern = glob::Pattern::new(trimmed)
        .map_err(|error| format!("'{text}' is not a glob pattern: {error}"))?;
    Ok(Glob {
        pattern,
        by_path: trimmed.contains('/'),
    })
}

const MATCH: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

impl Glob {
    /// The pattern as given (without leading and trailing slashes).
    pub(crate) fn as_str(&self) -> &str {
        self.pattern.as_str()
    }

    /// A pattern with a `/` matches `below_src`, the whole path; one without, `name`.
    pub(crate) fn matches(&self, name: &OsStr, below_src: &Path) -> bool {
        if self.by_path {
            below_src
                .to_str()
                .is_some_and(|p| self.pattern.matches_with(p, MATCH))
        } else {
            name.to_str()
                .is_some_and(|n| self.pattern.matches_with(n, MATCH))
        }
    }
}

impl crate::cli::Task for CopyArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        volume::blocking(move || run(&self))
    }

    fn then(&self) -> &[OsString] {
        &self.then.command
    }
}

/// One SRC and where it goes.
struct Job {
    src: PathBuf,
    /// The directory the copy of SRC is made in, and its name there.
    target_dir: PathBuf,
    target_name: CString,
    target: PathBuf,
}

fn run(args: &CopyArgs) -> Result<()> {
    let ids = args.owner.as_ref().map(Owner::resolve).transpose()?;
    let jobs = plan(args)?;
    let mut tally = Tally::new("copy");
    for job in &jobs {
        let parent = open_target_dir(&job.target_dir)?;
        let mut copier = Copier {
            args,
            ids,
            root: rustix::process::geteuid().is_root(),
            src: &job.src,
            target: &job.target,
            top: (parent, job.target_name.clone()),
            dirs: Vec::new(),
            copied: Arc::default(),
            tally: tally.fork(),
        };
        let options = walk::Options {
            recursive: true,
            ..Default::default()
        };
        let walked = walk::walk(&job.src, &options, &mut copier);
        tally.absorb(copier.tally);
        walked?;
    }
    tally.finish();
    Ok(())
}

fn ends_with_slash(path: &Path) -> bool {
    path.as_os_str().as_bytes().ends_with(b"/")
}

fn without_trailing_slashes(path: &Path) -> &Path {
    let bytes = path.as_os_str().as_bytes();
    let end = bytes
        .iter()
        .rposition(|b| *b != b'/')
        .map_or(1.min(bytes.len()), |at| at + 1);
    Path::new(OsStr::from_bytes(&bytes[..end]))
}

/// `DIR/.`: the contents of DIR (cp's idiom).
fn is_contents(path: &Path) -> bool {
    let bytes = path.as_os_str().as_bytes();
    bytes == b"." || bytes.ends_with(b"/.")
}

/// Where each SRC goes, decided (and every SRC checked) before anything is written.
fn plan(args: &CopyArgs) -> Result<Vec<Job>> {
    let (dest, sources) = args
        .paths
        .split_last()
        .filter(|(_, sources)| !sources.is_empty())
        .ok_or_else(|| Error::Usage("copy needs SRC... DEST".into()))?;
    // Without its trailing '/', which would make lstat follow a link named DEST.
    let dest_meta = std::fs::symlink_metadata(without_trailing_slashes(dest)).ok();
    let dest_is_dir = dest_meta.as_ref().is_some_and(|m| m.is_dir());
    let into_dir = sources.len() > 1 || ends_with_slash(dest);
    if into_dir && dest_meta.is_some() && !dest_is_dir {
        return Err(Error::Failed(format!(
            "cannot copy into {}: not a directory{}",
            dest.display(),
            if dest_meta.is_some_and(|m| m.is_symlink()) {
                " (a symbolic link, which copy does not follow)"
            } else {
                ""
            }
        )));
    }
    let mut jobs = Vec::new();
    for src in sources {
        let src_meta = std::fs::symlink_metadata(src).map_err(|error| {
            Error::Failed(format!(
                "cannot copy {}: {}",
                src.display(),
                crate::reason::io(&error)
            ))
        })?;
        let contents = is_contents(src) || src.file_name().is_none();
        let src_is_link = src_meta.is_symlink();
        let src_meta = if src_is_link {
            std::fs::metadata(src).unwrap_or(src_meta)
        } else {
            src_meta
        };
        let target = if contents || !(dest_is_dir || into_dir) {
            dest.clone()
        } else {
            dest.join(src.file_name().expect("a name"))
        };
        if contents && !src_meta.is_dir() {
            return Err(Error::Failed(format!(
                "cannot copy the contents of {}: not a directory",
                src.display()
            )));
        }
        refuse_into_itself(src, &target)?;
        let (target_dir, target_name) = split(&target)?;
        // A SRC named on the command line that is a link is followed (cp -H): in a
        // ConfigMap or Secret volume every key is a link into `..data`, and a copy of that
        // relative link would dangle. Links inside a tree are copied as links.
        let src = if src_is_link {
            std::fs::canonicalize(src).map_err(|error| {
                Error::Failed(format!(
                    "cannot copy {}: the link leads nowhere ({})",
                    src.display(),
                    crate::reason::io(&error)
                ))
            })?
        } else {
            src.clone()
        };
        jobs.push(Job {
            src,
            target_dir,
            target_name,
            target,
        });
    }
    Ok(jobs)
}

/// The directory of `target` and its last name.
fn split(target: &Path) -> Result<(PathBuf, CString)> {
    // Components drop a trailing '/' and inner `.`s.
    let normal: PathBuf = target.components().collect();
    match normal.components().next_back() {
        Some(Component::Normal(name)) => {
            let dir = match normal.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            };
            let name = CString::new(name.as_bytes())
                .map_err(|_| Error::Usage(format!("{}: a NUL byte", target.display())))?;
            Ok((dir, name))
        }
        _ => {
            // `/`, `.`, `..`: name it by its real path.
            let real = std::fs::canonicalize(&normal).map_err(|error| {
                Error::Failed(format!(
                    "cannot copy into {}: {}",
                    target.display(),
                    crate::reason::io(&error)
                ))
            })?;
            match real.file_name() {
                Some(_) => split(&real),
                None => Err(Error::Usage("cannot copy onto / itself".into())),
            }
        }
    }
}

/// The absolute path `path` names, with links in the part that exists resolved.
fn real_path(path: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(path).ok()?;
    let mut rest = Vec::new();
    let mut base = absolute.as_path();
    loop {
        if let Ok(real) = std::fs::canonicalize(base) {
            let mut real = real;
            for name in rest.iter().rev() {
                real.push(name);
            }
            return Some(real);
        }
        rest.push(base.file_name()?.to_owned());
        base = base.parent()?;
    }
}

/// Copying a directory onto itself or into its own subtree would never end: refused
/// before anything is written (exit 2).
fn refuse_into_itself(src: &Path, target: &Path) -> Result<()> {
    let (Ok(src_real), Some(target_real)) = (std::fs::canonicalize(src), real_path(target)) else {
        return Ok(());
    };
    if target_real.starts_with(&src_real) {
        let what = if target_real == src_real {
            "onto itself"
        } else {
            "into itself"
        };
        return Err(Error::Usage(format!(
            "cannot copy {} {what} ({} is {})",
            src.display(),
            target.display(),
            if target_real == src_real {
                "the same directory".to_owned()
            } else {
                format!("inside {}", src_real.display())
            }
        )));
    }
    Ok(())
}

/// The directory a copy is made in, made if missing (as its parents are by mkdir -p).
fn open_target_dir(dir: &Path) -> Result<OwnedFd> {
    std::fs::create_dir_all(dir).map_err(|error| {
        Error::Failed(format!(
            "cannot make the directory {}: {}",
            dir.display(),
            crate::reason::io(&error)
        ))
    })?;
    rustix::fs::openat(
        CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Perm::empty(),
    )
    .map_err(|errno| walk::error(errno, "opening the directory", dir, None))
}

struct Copier<'a> {
    args: &'a CopyArgs,
    ids: Option<Ids>,
    root: bool,
    src: &'a Path,
    target: &'a Path,
    /// The directory the top entry goes into, and its name there.
    top: (OwnedFd, CString),
    /// The destination directory of each directory being copied, and whether its mode,
    /// owner and times are to be set when it is left (not for one --if-absent kept).
    dirs: Vec<(OwnedFd, bool)>,
    /// Files with more than one name, by (device, inode), and where their first copy went
    /// (relative to `top.0`): a second name becomes a hard link to it, as `cp -a` does.
    /// Shared by the threads of the walk; held while such a file is copied, so that a second
    /// name met by another thread meanwhile waits for the first copy to link to.
    copied: Arc<Mutex<CopiedFiles>>,
    tally: Tally,
}

type CopiedFiles = HashMap<(u64, u64), PathBuf>;

/// How a file came to be at its temp name.
enum Made<'c> {
    /// Copied (or made, for a FIFO, socket or device); `(device, inode)` of a source with
    /// more names, to link them to this copy, and the record of such files, held until
    /// this copy is in place and recorded.
    Copied(Option<((u64, u64), MutexGuard<'c, CopiedFiles>)>),
    /// A hard link to the copy of an earlier name of the same file.
    Linked,
}

/// Where an entry of the source goes.
struct Place<'f> {
    dir: BorrowedFd<'f>,
    name: &'f CStr,
}

impl Copier<'_> {
    fn place<'s>(&'s self, entry: &'s Entry<'_>) -> Place<'s> {
        if entry.depth == 0 {
            Place {
                dir: self.top.0.as_fd(),
                name: &self.top.1,
            }
        } else {
            Place {
                dir: self.dirs[entry.depth - 1].0.as_fd(),
                name: entry.name,
            }
        }
    }

    /// The destination path of a source path, for messages.
    fn shown(&self, path: &Path) -> PathBuf {
        match path.strip_prefix(self.src) {
            Ok(rest) if !rest.as_os_str().is_empty() => self.target.join(rest),
            _ => self.target.to_path_buf(),
        }
    }

    fn fail(&self, errno: Errno, action: &str, path: &Path) -> Error {
        let remedy = match errno {
            Errno::PERM if self.ids.is_some() || self.root => {
                Some(volume::remedy("CAP_CHOWN and CAP_FOWNER"))
            }
            Errno::PERM | Errno::ACCESS => Some(
                "the destination must be writable by this user (securityContext.runAsUser, \
                 fsGroup)"
                    .to_owned(),
            ),
            _ => None,
        };
        walk::error(errno, action, path, remedy)
    }

    fn excluded(&self, entry: &Entry<'_>) -> bool {
        if entry.depth == 0 || self.args.exclude.is_empty() {
            return false;
        }
        let below = entry.path.strip_prefix(self.src).unwrap_or(entry.path);
        let name = OsStr::from_bytes(entry.name.to_bytes());
        self.args
            .exclude
            .iter()
            .any(|glob| glob.matches(name, below))
    }

    /// The owner a copy gets: --owner, else the source's as root, else none (the user's).
    fn owner_for(&self, uid: u32, gid: u32) -> Option<(Option<Uid>, Option<Gid>)> {
        match self.ids {
            Some(ids) => Some((ids.uid.map(Uid::from_raw), ids.gid.map(Gid::from_raw))),
            None if self.root => Some((Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))),
            None => None,
        }
    }

    fn mode_for(&self, mode: u32, is_dir: bool) -> u32 {
        match &self.args.mode {
            Some(wanted) => wanted.apply(mode & 0o7777, is_dir),
            None => mode & 0o7777,
        }
    }

    fn directory(&mut self, entry: &Entry<'_>) -> Result<Next> {
        let shown = self.shown(entry.path);
        let place = self.place(entry);
        let existing = rustix::fs::statat(place.dir, place.name, AtFlags::SYMLINK_NOFOLLOW);
        let made = match existing {
            Err(Errno::NOENT) => {
                // Private until it is left, when it gets its final mode.
                match rustix::fs::mkdirat(place.dir, place.name, Perm::from_raw_mode(0o700)) {
                    Ok(()) | Err(Errno::EXIST) => true,
                    Err(errno) => return Err(self.fail(errno, "making the directory", &shown)),
                }
            }
            Err(errno) => return Err(self.fail(errno, "examining", &shown)),
            Ok(stat) => {
                let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
                if kind == rustix::fs::FileType::Symlink {
                    return Err(Error::Failed(format!(
                        "cannot copy the directory {} to {}: a symbolic link is there, which \
                         copy never follows (remove it first)",
                        entry.path.display(),
                        shown.display()
                    )));
                }
                if kind != rustix::fs::FileType::Directory {
                    return Err(Error::Failed(format!(
                        "cannot copy the directory {} to {}: a file is there",
                        entry.path.display(),
                        shown.display()
                    )));
                }
                false
            }
        };
        let fd = rustix::fs::openat(
            place.dir,
            place.name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Perm::empty(),
        )
        .map_err(|errno| match errno {
            Errno::LOOP | Errno::NOTDIR => Error::Failed(format!(
                "cannot copy into {}: it was replaced by a link or a file during the copy",
                shown.display()
            )),
            errno => self.fail(errno, "opening the directory", &shown),
        })?;
        if !made {
            remove_leftovers(&fd);
        }
        let set_attributes = made || !self.args.if_absent;
        self.dirs.push((fd, set_attributes));
        Ok(Next::Descend)
    }

    fn file_or_link(&mut self, entry: &Entry<'_>) -> Result<()> {
        let shown = self.shown(entry.path);
        let place = self.place(entry);
        match rustix::fs::statat(place.dir, place.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) if self.args.if_absent => {
                self.tally.skipped(&shown, "already there (--if-absent)");
                return Ok(());
            }
            Ok(stat)
                if rustix::fs::FileType::from_raw_mode(stat.st_mode)
                    == rustix::fs::FileType::Directory =>
            {
                return Err(Error::Failed(format!(
                    "cannot copy {} to {}: a directory is there",
                    entry.path.display(),
                    shown.display()
                )));
            }
            Ok(_) | Err(Errno::NOENT) => {}
            Err(errno) => return Err(self.fail(errno, "examining", &shown)),
        }
        let temp = temp_name(place.name);
        // Removed at once if the step gives up before the rename (the temp is created
        // through `volume::creating`, so that the removal cannot come first).
        let _scratch = crate::volume::scratch(
            &shown
                .parent()
                .unwrap_or(Path::new("."))
                .join(OsStr::from_bytes(temp.to_bytes())),
        )?;
        let result = match entry.kind {
            Kind::Symlink => self
                .copy_link(entry, &place, &temp, &shown)
                .map(|()| Made::Copied(None)),
            Kind::Other => self.make_special(entry, &place, &temp, &shown),
            _ => self.copy_file(entry, &place, &temp, &shown),
        };
        let renamed = result.and_then(|made| {
            rustix::fs::renameat(place.dir, &temp, place.dir, place.name)
                .map_err(|errno| self.fail(errno, "renaming into place", &shown))
                .map(|()| made)
        });
        if renamed.is_err() {
            let _ = rustix::fs::unlinkat(place.dir, &temp, AtFlags::empty());
        }
        if let Made::Copied(Some((key, mut copied))) = renamed? {
            let below = entry.path.strip_prefix(self.src).unwrap_or(Path::new(""));
            let relative = Path::new(OsStr::from_bytes(self.top.1.to_bytes())).join(below);
            copied.entry(key).or_insert(relative);
        }
        self.tally.changed(&shown);
        Ok(())
    }

    /// Makes `temp` a hard link to the copy of an earlier name of the same file. The copy
    /// is found below the top of the destination without following any link (a link
    /// planted there since cannot redirect it); where that fails (a kernel without
    /// openat2, a filesystem refusing links), the caller copies the file instead.
    fn link_to_copy(&self, first: &Path, place: &Place<'_>, temp: &CStr) -> bool {
        use rustix::fs::ResolveFlags;
        let (Some(parent), Some(name)) = (first.parent(), first.file_name()) else {
            return false;
        };
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        let Ok(dir) = rustix::fs::openat2(
            &self.top.0,
            parent,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Perm::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) else {
            return false;
        };
        crate::volume::creating(|| {
            rustix::fs::linkat(&dir, name, place.dir, temp, AtFlags::empty())
        })
        .is_ok_and(|linked| linked.is_ok())
    }

    /// A FIFO, socket or device, made anew with the source's mode, owner and times, as
    /// `cp -a` does (a device needs CAP_MKNOD: without it, it is skipped with a warning).
    fn make_special(
        &self,
        entry: &Entry<'_>,
        place: &Place<'_>,
        temp: &CStr,
        shown: &Path,
    ) -> Result<Made<'_>> {
        let stat = rustix::fs::statat(entry.parent, entry.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(e, "examining", entry.path))?;
        let kind = rustix::fs::FileType::from_raw_mode(stat.st_mode);
        let mode = self.mode_for(stat.st_mode, false);
        crate::volume::creating(|| {
            rustix::fs::mknodat(
                place.dir,
                temp,
                kind,
                Perm::from_raw_mode(0o600),
                stat.st_rdev,
            )
        })?
        .map_err(|e| self.fail(e, "making", shown))?;
        rustix::fs::chmodat(place.dir, temp, Perm::from_raw_mode(mode), AtFlags::empty())
            .map_err(|e| self.fail(e, "changing the mode of", shown))?;
        self.owner_and_times_at(place, temp, &stat, shown)?;
        Ok(Made::Copied(None))
    }

    fn copy_file(
        &self,
        entry: &Entry<'_>,
        place: &Place<'_>,
        temp: &CStr,
        shown: &Path,
    ) -> Result<Made<'_>> {
        let source = rustix::fs::openat(
            entry.parent,
            entry.name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
            Perm::empty(),
        )
        .map_err(|errno| self.fail(errno, "reading", entry.path))?;
        let stat = rustix::fs::fstat(&source).map_err(|e| self.fail(e, "examining", entry.path))?;
        // The fields' types differ between architectures.
        #[allow(clippy::unnecessary_cast)]
        let key = (stat.st_nlink > 1).then_some((stat.st_dev as u64, stat.st_ino as u64));
        let claimed = match key {
            None => None,
            Some(key) => {
                let copied = self.copied.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(first) = copied.get(&key)
                    && self.link_to_copy(first, place, temp)
                {
                    return Ok(Made::Linked);
                }
                Some((key, copied))
            }
        };
        let copy = crate::volume::creating(|| {
            rustix::fs::openat(
                place.dir,
                temp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                Perm::from_raw_mode(0o600),
            )
        })?
        .map_err(|errno| self.fail(errno, "writing", shown))?;
        let mut source = File::from(source);
        let mut copy = File::from(copy);
        // std's copy of a file to a file is copy_file_range (in-kernel, reflinks where the
        // filesystem has them), falling back to sendfile and read/write.
        std::io::copy(&mut source, &mut copy).map_err(|error| {
            Error::Failed(format!(
                "cannot copy {} to {}: {}",
                entry.path.display(),
                shown.display(),
                crate::reason::io(&error)
            ))
        })?;
        if let Some((uid, gid)) = self.owner_for(stat.st_uid, stat.st_gid) {
            rustix::fs::fchown(&copy, uid, gid)
                .map_err(|e| self.fail(e, "changing the owner of", shown))?;
        }
        let mode = self.mode_for(stat.st_mode, false);
        rustix::fs::fchmod(&copy, Perm::from_raw_mode(mode))
            .map_err(|e| self.fail(e, "changing the mode of", shown))?;
        rustix::fs::futimens(&copy, &times(&stat))
            .map_err(|e| self.fail(e, "setting the times of", shown))?;
        Ok(Made::Copied(claimed))
    }

    fn copy_link(
        &self,
        entry: &Entry<'_>,
        place: &Place<'_>,
        temp: &CStr,
        shown: &Path,
    ) -> Result<()> {
        let stat = rustix::fs::statat(entry.parent, entry.name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(e, "examining", entry.path))?;
        let target = rustix::fs::readlinkat(entry.parent, entry.name, Vec::new())
            .map_err(|e| self.fail(e, "reading the link", entry.path))?;
        crate::volume::creating(|| rustix::fs::symlinkat(target.as_c_str(), place.dir, temp))?
            .map_err(|e| self.fail(e, "making the link", shown))?;
        self.owner_and_times_at(place, temp, &stat, shown)
    }

    /// The source's owner (see [`Copier::owner_for`]) and times, given to what was just
    /// made at `temp` (a link, a FIFO), never through a link.
    fn owner_and_times_at(
        &self,
        place: &Place<'_>,
        temp: &CStr,
        stat: &rustix::fs::Stat,
        shown: &Path,
    ) -> Result<()> {
        if let Some((uid, gid)) = self.owner_for(stat.st_uid, stat.st_gid) {
            rustix::fs::chownat(place.dir, temp, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| self.fail(e, "changing the owner of", shown))?;
        }
        rustix::fs::utimensat(place.dir, temp, &times(stat), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.fail(e, "setting the times of", shown))?;
        Ok(())
    }
}

impl Visitor for Copier<'_> {
    // Files are examined once they are opened (fstat), links by their own statat.
    const NEEDS_META: bool = false;

    fn visit(&mut self, entry: &Entry<'_>) -> Result<Next> {
        if self.excluded(entry) {
            self.tally.skipped(entry.path, "excluded");
            return Ok(Next::Skip);
        }
        match entry.kind {
            Kind::Directory => self.directory(entry),
            Kind::File | Kind::Symlink => self.file_or_link(entry).map(|()| Next::Skip),
            Kind::Other => match self.file_or_link(entry) {
                Err(_) if !rustix::process::geteuid().is_root() && is_device(entry) => {
                    report::warn(
                        "copy.skipped",
                        format!(
                            "not copied: {} is a device, which only root with CAP_MKNOD can make",
                            entry.path.display()
                        ),
                    );
                    self.tally.skipped(entry.path, "a device");
                    Ok(Next::Skip)
                }
                done => done.map(|()| Next::Skip),
            },
        }
    }

    fn leave(&mut self, entry: &Entry<'_>) -> Result<()> {
        // The walk leaves every directory it visited, also one excluded (never entered).
        if self.dirs.len() != entry.depth + 1 {
            return Ok(());
        }
        let Some((fd, set_attributes)) = self.dirs.pop() else {
            return Ok(());
        };
        let shown = self.shown(entry.path);
        if set_attributes {
            let source = entry
                .dir
                .expect("a directory walked into has its descriptor");
            let stat =
                rustix::fs::fstat(source).map_err(|e| self.fail(e, "examining", entry.path))?;
            if let Some((uid, gid)) = self.owner_for(stat.st_uid, stat.st_gid) {
                rustix::fs::fchown(&fd, uid, gid)
                    .map_err(|e| self.fail(e, "changing the owner of", &shown))?;
            }
            let mode = self.mode_for(stat.st_mode, true);
            rustix::fs::fchmod(&fd, Perm::from_raw_mode(mode))
                .map_err(|e| self.fail(e, "changing the mode of", &shown))?;
            // Last: writing into the directory changed its times.
            rustix::fs::futimens(&fd, &times(&stat))
                .map_err(|e| self.fail(e, "setting the times of", &shown))?;
            self.tally.changed(&shown);
        } else {
            self.tally.unchanged(&shown);
        }
        Ok(())
    }

    fn skipped(&mut self, path: &Path, why: Skipped) {
        let why = match why {
            Skipped::Excluded => "excluded",
            Skipped::OtherFilesystem => "on another filesystem",
            Skipped::Vanished => "removed during the copy",
        };
        self.tally.skipped(path, why);
    }

    fn action(&self) -> &str {
        "copying"
    }

    /// Another thread's copier: the same destination directories (their descriptors
    /// duplicated), the same record of files with more names, its own counts.
    fn fork(&self) -> Option<Self> {
        let dup = |fd: &OwnedFd| fd.try_clone().ok();
        let dirs = self
            .dirs
            .iter()
            .map(|(fd, set_attributes)| dup(fd).map(|fd| (fd, *set_attributes)))
            .collect::<Option<Vec<_>>>()?;
        Some(Copier {
            args: self.args,
            ids: self.ids,
            root: self.root,
            src: self.src,
            target: self.target,
            top: (dup(&self.top.0)?, self.top.1.clone()),
            dirs,
            copied: self.copied.clone(),
            tally: self.tally.fork(),
        })
    }

    fn join(&mut self, fork: Self) {
        self.tally.absorb(fork.tally);
    }
}

fn is_device(entry: &Entry<'_>) -> bool {
    use rustix::fs::FileType;
    rustix::fs::statat(entry.parent, entry.name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|stat| {
        matches!(
            FileType::from_raw_mode(stat.st_mode),
            FileType::CharacterDevice | FileType::BlockDevice
        )
    })
}

fn times(stat: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: stat.st_atime as _,
            tv_nsec: stat.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: stat.st_mtime as _,
            tv_nsec: stat.st_mtime_nsec as _,
        },
    }
}

const TEMP_MARK: &[u8] = b".initbox-";
const TEMP_SUFFIX: &[u8] = b".tmp";

/// `.NAME.initbox-RANDOM.tmp`, the temp name every atomic write of initbox uses.
fn temp_name(name: &CStr) -> CString {
    let mut bytes = Vec::with_capacity(name.to_bytes().len() + 24);
    bytes.push(b'.');
    bytes.extend_from_slice(name.to_bytes());
    bytes.extend_from_slice(TEMP_MARK);
    bytes.extend_from_slice(format!("{:08x}", fastrand::u32(..)).as_bytes());
    bytes.extend_from_slice(TEMP_SUFFIX);
    CString::new(bytes).expect("no NUL in a file name")
}

fn is_temp_name(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b".") else {
        return false;
    };
    let Some(rest) = rest.strip_suffix(TEMP_SUFFIX) else {
        return false;
    };
    rest.len() > TEMP_MARK.len() + 8 && {
        let (head, random) = rest.split_at(rest.len() - 8);
        head.ends_with(TEMP_MARK) && random.iter().all(u8::is_ascii_hexdigit)
    }
}

/// Removes the temp files a killed copy left in a directory it writes into again.
fn remove_leftovers(dir: &OwnedFd) {
    let Ok(mut listing) = Dir::read_from(dir) else {
        return;
    };
    while let Some(Ok(item)) = listing.read() {
        let name = item.file_name();
        if is_temp_name(name.to_bytes()) {
            let _ = rustix::fs::unlinkat(dir, name, AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_recognised() {
        let temp = temp_name(c"app.conf");
        assert!(is_temp_name(temp.to_bytes()), "{temp:?}");
        for other in [
            &b"app.conf"[..],
            b".app.conf.initbox-zz.tmp",
            b".initbox-.tmp",
        ] {
            assert!(!is_temp_name(other));
        }
    }

    #[test]
    fn globs_match_names_anywhere_or_paths_below_src() {
        let name = parse_glob("*.tmp").unwrap();
        assert!(name.matches(OsStr::new("a.tmp"), Path::new("x/y/a.tmp")));
        assert!(!name.matches(OsStr::new("a.conf"), Path::new("a.conf")));
        let path = parse_glob("conf/secret-*").unwrap();
        assert!(path.matches(OsStr::new("secret-1"), Path::new("conf/secret-1")));
        assert!(!path.matches(OsStr::new("secret-1"), Path::new("other/conf/secret-1")));
        assert!(parse_glob("[").is_err());
        assert!(parse_glob("/").is_err());
    }
}
