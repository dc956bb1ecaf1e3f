//! The tree walk of chown, chmod and remove: depth-first, streaming, and never following a
//! symbolic link, so that a link planted in a volume cannot make initbox act outside it.
//!
//! Each directory is opened relative to its parent's descriptor with `O_NOFOLLOW |
//! O_DIRECTORY`, every entry is examined with `AT_SYMLINK_NOFOLLOW`, and the visitor acts
//! through those descriptors (`fchown`, `fchownat(AT_SYMLINK_NOFOLLOW)`, `unlinkat`): a
//! directory swapped for a link between two calls makes the open fail (it is then examined
//! again), it can never redirect the walk. Memory stays flat as the tree grows: one open
//! directory per level of depth (with its listing buffer) and one path buffer, never a list
//! of paths. A listing is read with `getdents64` into a buffer reused from one directory to
//! the next, and its names are used where they lie: no allocation per entry.
//!
//! A visitor that can [`Visitor::fork`] has the walk shared among threads (up to
//! [`MAX_THREADS`], no more than the CPUs the process may use) at the first directory where
//! the tree branches: the threads take that directory's entries one by one from its one
//! listing, each walks the whole subtree of the entry it took, and the directory itself is
//! left only once every thread is done. Changing ownership or modes, and removing, cost one
//! system call per entry; two threads do them in about half the time.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, CWD, FileType, Mode, OFlags, RawDir};
use rustix::io::Errno;

use crate::exit::Error;

/// How far a walk goes.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Into directories (`-R`); without, only the named paths are visited.
    pub recursive: bool,
    /// Not into directories of another filesystem (their mount points are skipped too).
    pub one_file_system: bool,
    /// Names skipped among the direct children of each named directory (`lost+found`).
    pub exclude: Vec<OsString>,
}

/// What an entry is; a symbolic link is always the link itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Directory,
    Symlink,
    File,
    /// A device, FIFO or socket.
    Other,
}

impl Kind {
    fn of(file_type: FileType) -> Option<Kind> {
        Some(match file_type {
            FileType::Directory => Kind::Directory,
            FileType::Symlink => Kind::Symlink,
            FileType::RegularFile => Kind::File,
            FileType::Unknown => return None,
            _ => Kind::Other,
        })
    }
}

/// The metadata of an entry, read without following links.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub dev: u64,
    pub ino: u64,
    /// The permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Meta {
    // The fields' types differ between architectures (c_ulong on x86_64, u64 elsewhere).
    #[allow(clippy::unnecessary_cast)]
    pub fn from_stat(stat: &rustix::fs::Stat) -> Meta {
        Meta {
            dev: stat.st_dev as u64,
            ino: stat.st_ino as u64,
            mode: stat.st_mode as u32 & 0o7777,
            uid: stat.st_uid as u32,
            gid: stat.st_gid as u32,
        }
    }
}

/// One entry of the tree, as the visitor sees it.
pub struct Entry<'a> {
    /// The directory that holds the entry (act on `name` relative to it).
    pub parent: BorrowedFd<'a>,
    pub name: &'a CStr,
    /// The path for messages (the named path, joined with the names below it).
    pub path: &'a Path,
    pub kind: Kind,
    /// `None` only for a non-directory of a walk that asked for no metadata.
    pub meta: Option<Meta>,
    /// The directory itself, opened `O_NOFOLLOW`, when the walk descends into it: act on
    /// it through this descriptor.
    pub dir: Option<BorrowedFd<'a>>,
    /// 0 for a named path.
    pub depth: usize,
}

/// Whether to go into a directory just visited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Descend,
    Skip,
}

/// Why the walk passed an entry by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Named by `--exclude`.
    Excluded,
    /// On another filesystem, with `--one-file-system`.
    OtherFilesystem,
    /// Removed (or replaced over and over) while the walk reached it.
    Vanished,
}

/// The most threads a walk is shared among.
pub const MAX_THREADS: usize = 4;

/// What a command does to each entry.
pub trait Visitor: Send {
    /// Whether non-directories need [`Meta`] (an extra `fstatat` each); without it their
    /// kind comes from the directory listing (remove needs no more).
    const NEEDS_META: bool = true;

    /// Called for every entry, a directory before its contents.
    fn visit(&mut self, entry: &Entry<'_>) -> Result<Next, Error>;

    /// Called for a directory after its contents (when the walk went into it).
    fn leave(&mut self, _entry: &Entry<'_>) -> Result<(), Error> {
        Ok(())
    }

    /// Called for what the walk passed by.
    fn skipped(&mut self, _path: &Path, _why: Skipped) {}

    /// Called when a named path does not exist; an error by default.
    fn missing(&mut self, path: &Path) -> Result<(), Error> {
        Err(Error::Failed(format!(
            "{}: no such file or directory",
            path.display()
        )))
    }

    /// What the visitor does, for messages: "changing the owner of".
    fn action(&self) -> &str;

    /// The remedy for a permission error, if the visitor knows one.
    fn remedy(&self, _errno: Errno) -> Option<String> {
        None
    }

    /// A visitor for another thread of the walk (sharing this one's counts), for a visitor
    /// whose work on one subtree does not depend on another's; `None` (the default) keeps
    /// the walk on one thread.
    fn fork(&self) -> Option<Self>
    where
        Self: Sized,
    {
        None
    }

    /// Takes back a fork once its thread is done (its counts join this one's).
    fn join(&mut self, _fork: Self)
    where
        Self: Sized,
    {
    }
}

/// How many times an entry replaced between examining and opening it is examined again.
const RETRIES: usize = 3;

/// Walks `path` (never following its last component either, even with a trailing `/`).
pub fn walk<V: Visitor>(path: &Path, options: &Options, visitor: &mut V) -> Result<(), Error> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_THREADS);
    let mut walker = Walker {
        options,
        visitor,
        path: path.to_path_buf(),
        root_dev: None,
        split: if threads > 1 {
            Split::Pending(threads)
        } else {
            Split::Done
        },
        buffers: Vec::new(),
    };
    let last = path.components().next_back();
    match last {
        Some(Component::Normal(name)) => {
            let parent = match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let parent_fd = match rustix::fs::openat(
                CWD,
                parent,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return walker.visitor.missing(path),
                Err(errno) => {
                    return Err(walker.fail(errno, "opening the directory of", path));
                }
            };
            let name = cstring(name);
            let name = name.as_c_str();
            walker.path = path.to_path_buf();
            walker.entry(parent_fd.as_fd(), name, FileType::Unknown, 0)
        }
        // `/`, `..` or `.`: a directory named by a path that does not end in a name.
        _ => {
            let fd = match rustix::fs::openat(
                CWD,
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => return walker.visitor.missing(path),
                Err(errno) => return Err(walker.fail(errno, "opening", path)),
            };
            walker.directory(None, fd, c".", 0)
        }
    }
}

fn cstring(name: &OsStr) -> std::ffi::CString {
    // A name from a path or a directory listing has no NUL byte.
    std::ffi::CString::new(name.as_bytes()).unwrap_or_default()
}

struct Walker<'o, 'v, V> {
    options: &'o Options,
    visitor: &'v mut V,
    path: PathBuf,
    root_dev: Option<u64>,
    split: Split,
    /// Listing buffers of the directories already left, for the next ones to reuse.
    buffers: Vec<ListingBuffer>,
}

/// What one `getdents64` call fills: as glibc's `readdir`, 32 KiB, several hundred names.
const LISTING_BUFFER_BYTES: usize = 32 * 1024;

type ListingBuffer = Box<[MaybeUninit<u8>]>;

fn new_listing_buffer() -> ListingBuffer {
    Box::new_uninit_slice(LISTING_BUFFER_BYTES)
}

/// Whether the walk may still be shared among threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Among this many threads, at the first directory with more than one entry.
    Pending(usize),
    /// Shared already (or not to be): a walk splits once.
    Done,
}

/// The listing of the directory a walk is shared at: the entries read ahead to see that the
/// tree branches there, then the rest, taken one by one by the threads.
struct Listing<'b, 'd> {
    raw: RawDir<'b, BorrowedFd<'d>>,
    ahead: Vec<(CString, FileType)>,
}

impl Listing<'_, '_> {
    fn next(&mut self) -> Option<rustix::io::Result<(CString, FileType)>> {
        if let Some(entry) = self.ahead.pop() {
            return Some(Ok(entry));
        }
        next_entry(&mut self.raw, |name, listed| (name.to_owned(), listed))
    }
}

/// The next entry of a listing other than `.` and `..`, handed to `take` where it lies in
/// the buffer. A directory removed while it is read ends its listing (as readdir's ENOENT).
fn next_entry<T>(
    raw: &mut RawDir<'_, BorrowedFd<'_>>,
    take: impl FnOnce(&CStr, FileType) -> T,
) -> Option<rustix::io::Result<T>> {
    loop {
        match raw.next()? {
            Err(Errno::NOENT) => return None,
            Err(errno) => return Some(Err(errno)),
            Ok(item) => {
                let name = item.file_name();
                if matches!(name.to_bytes(), b"." | b"..") {
                    continue;
                }
                return Some(Ok(take(name, item.file_type())));
            }
        }
    }
}

impl<V: Visitor> Walker<'_, '_, V> {
    /// An error of the walk itself (examining, opening or reading a directory): what lets
    /// a user in is read permission, not the capability of the change.
    fn fail(&self, errno: Errno, action: &str, path: &Path) -> Error {
        let remedy = crate::volume::remedy("the CAP_DAC_READ_SEARCH capability");
        error(errno, action, path, Some(remedy))
    }

    fn entry(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &CStr,
        mut listed: FileType,
        depth: usize,
    ) -> Result<(), Error> {
        crate::volume::stop_if_abandoned()?;
        for _ in 0..=RETRIES {
            let known = Kind::of(listed);
            let (kind, meta) = match known {
                Some(kind) if !V::NEEDS_META || kind == Kind::Directory => (kind, None),
                _ => match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(stat) => {
                        let kind =
                            Kind::of(FileType::from_raw_mode(stat.st_mode)).unwrap_or(Kind::Other);
                        (kind, Some(Meta::from_stat(&stat)))
                    }
                    Err(Errno::NOENT) => return self.vanished(depth),
                    Err(errno) => return Err(self.fail(errno, "examining", &self.path.clone())),
                },
            };
            if depth == 0 && self.root_dev.is_none() {
                self.root_dev = meta.map(|m| m.dev);
            }
            if kind != Kind::Directory {
                if let Some(meta) = meta
                    && self.other_filesystem(&meta, depth)
                {
                    self.visitor.skipped(&self.path, Skipped::OtherFilesystem);
                    return Ok(());
                }
                let entry = Entry {
                    parent,
                    name,
                    path: &self.path,
                    kind,
                    meta,
                    dir: None,
                    depth,
                };
                self.visitor.visit(&entry)?;
                return Ok(());
            }
            if !self.options.recursive {
                let meta = match meta {
                    Some(meta) => meta,
                    None => match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(stat) => Meta::from_stat(&stat),
                        Err(Errno::NOENT) => return self.vanished(depth),
                        Err(errno) => {
                            return Err(self.fail(errno, "examining", &self.path.clone()));
                        }
                    },
                };
                let entry = Entry {
                    parent,
                    name,
                    path: &self.path,
                    kind,
                    meta: Some(meta),
                    dir: None,
                    depth,
                };
                self.visitor.visit(&entry)?;
                return Ok(());
            }
            match rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY
                    | OFlags::DIRECTORY
                    | OFlags::NOFOLLOW
                    | OFlags::CLOEXEC
                    | OFlags::NOCTTY,
                Mode::empty(),
            ) {
                Ok(fd) => return self.directory(Some(parent), fd, name, depth),
                // Replaced by a link or a file since it was listed or examined: look again.
                Err(Errno::NOTDIR | Errno::LOOP) => listed = FileType::Unknown,
                Err(Errno::NOENT) => return self.vanished(depth),
                Err(errno) => {
                    return Err(self.fail(errno, "opening the directory", &self.path.clone()));
                }
            }
        }
        self.vanished(depth)
    }

    fn vanished(&mut self, depth: usize) -> Result<(), Error> {
        if depth == 0 {
            let path = self.path.clone();
            return self.visitor.missing(&path);
        }
        self.visitor.skipped(&self.path, Skipped::Vanished);
        Ok(())
    }

    fn other_filesystem(&self, meta: &Meta, depth: usize) -> bool {
        self.options.one_file_system && depth > 0 && self.root_dev.is_some_and(|d| d != meta.dev)
    }

    /// A directory, opened: visit it, its contents, and leave it.
    fn directory(
        &mut self,
        parent: Option<BorrowedFd<'_>>,
        fd: OwnedFd,
        name: &CStr,
        depth: usize,
    ) -> Result<(), Error> {
        let stat = match rustix::fs::fstat(&fd) {
            Ok(stat) => stat,
            Err(errno) => return Err(self.fail(errno, "examining", &self.path.clone())),
        };
        let meta = Meta::from_stat(&stat);
        if depth == 0 {
            self.root_dev = Some(meta.dev);
        }
        if self.other_filesystem(&meta, depth) {
            self.visitor.skipped(&self.path, Skipped::OtherFilesystem);
            return Ok(());
        }
        // A named `/` or `..` has no parent of its own to act through: its own descriptor
        // stands in (only a non-directory, or removing the directory, would need one).
        let own_parent;
        let parent = match parent {
            Some(parent) => parent,
            None => {
                own_parent = rustix::io::dup(&fd)
                    .map_err(|e| self.fail(e, "opening", &self.path.clone()))?;
                own_parent.as_fd()
            }
        };
        let dir_fd = fd.as_fd();
        let path = std::mem::take(&mut self.path);
        let next = {
            let entry = Entry {
                parent,
                name,
                path: &path,
                kind: Kind::Directory,
                meta: Some(meta),
                dir: Some(dir_fd),
                depth,
            };
            self.visitor.visit(&entry)
        };
        self.path = path;
        if next? == Next::Descend {
            let mut buffer = self.buffers.pop().unwrap_or_else(new_listing_buffer);
            let contents = self.contents(dir_fd, &mut buffer, depth + 1);
            self.buffers.push(buffer);
            contents?;
        }
        let path = std::mem::take(&mut self.path);
        let left = self.visitor.leave(&Entry {
            parent,
            name,
            path: &path,
            kind: Kind::Directory,
            meta: Some(meta),
            dir: Some(dir_fd),
            depth,
        });
        self.path = path;
        left
    }

    /// The entries of a directory, listed into `buffer`.
    fn contents(
        &mut self,
        dir: BorrowedFd<'_>,
        buffer: &mut [MaybeUninit<u8>],
        depth: usize,
    ) -> Result<(), Error> {
        let mut raw = RawDir::new(dir, buffer);
        if let Split::Pending(threads) = self.split {
            return self.contents_maybe_shared(dir, raw, depth, threads);
        }
        loop {
            let walked = next_entry(&mut raw, |name, listed| {
                self.child(dir, name, listed, depth)
            });
            match walked {
                None => return Ok(()),
                Some(Ok(walked)) => walked?,
                Some(Err(errno)) => {
                    return Err(self.fail(errno, "reading the directory", &self.path.clone()));
                }
            }
        }
    }

    /// One entry of a directory's listing: skipped when excluded, else walked.
    fn child(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        listed: FileType,
        depth: usize,
    ) -> Result<(), Error> {
        let bytes = name.to_bytes();
        self.path.push(OsStr::from_bytes(bytes));
        if depth == 1 && self.options.exclude.iter().any(|x| x.as_bytes() == bytes) {
            self.visitor.skipped(&self.path, Skipped::Excluded);
            self.path.pop();
            return Ok(());
        }
        let result = self.entry(dir, name, listed, depth);
        self.path.pop();
        result
    }

    /// The contents of a directory while the walk may still be shared: shared here when the
    /// directory has more than one entry; else its one entry is walked, and the walk may be
    /// shared further down (`/data` holding only `pgdata/` branches below it).
    fn contents_maybe_shared(
        &mut self,
        fd: BorrowedFd<'_>,
        mut raw: RawDir<'_, BorrowedFd<'_>>,
        depth: usize,
        threads: usize,
    ) -> Result<(), Error> {
        let mut ahead = Vec::with_capacity(2);
        while ahead.len() < 2 {
            match next_entry(&mut raw, |name, listed| (name.to_owned(), listed)) {
                None => break,
                Some(Ok(entry)) => ahead.push(entry),
                Some(Err(errno)) => {
                    return Err(self.fail(errno, "reading the directory", &self.path.clone()));
                }
            }
        }
        // The threads act through the directory's descriptor while one of them at a time
        // reads its listing (the `*at` calls do not touch the listing's offset).
        if ahead.len() < 2 {
            for (name, listed) in ahead {
                self.child(fd, &name, listed, depth)?;
            }
            return Ok(());
        }
        self.split = Split::Done;
        let forks: Vec<V> = (1..threads).map_while(|_| self.visitor.fork()).collect();
        if !forks.is_empty() {
            crate::report::debug(
                "walk.shared",
                format!(
                    "the walk below {} is shared among {} threads",
                    self.path.display(),
                    forks.len() + 1
                ),
            );
        }
        let listing = Mutex::new(Listing { raw, ahead });
        let failed = AtomicBool::new(false);
        let (options, root_dev, step) = (self.options, self.root_dev, crate::step::current());
        let job = crate::volume::current_job();
        std::thread::scope(|scope| {
            let others: Vec<_> = forks
                .into_iter()
                .map(|mut visitor| {
                    let (path, step, job) = (self.path.clone(), step.clone(), job.clone());
                    let (listing, failed) = (&listing, &failed);
                    scope.spawn(move || {
                        crate::step::on_thread(step, || {
                            crate::volume::on_job(job, || {
                                let mut walker = Walker {
                                    options,
                                    visitor: &mut visitor,
                                    path,
                                    root_dev,
                                    split: Split::Done,
                                    buffers: Vec::new(),
                                };
                                let result = walker.take_entries(listing, fd, depth, failed);
                                (result, visitor)
                            })
                        })
                    })
                })
                .collect();
            let mut result = self.take_entries(&listing, fd, depth, &failed);
            for other in others {
                let theirs = match other.join() {
                    Ok((theirs, visitor)) => {
                        self.visitor.join(visitor);
                        theirs
                    }
                    Err(_) => Err(Error::Failed(format!(
                        "{} {}: a thread of the walk stopped (internal error)",
                        self.visitor.action(),
                        self.path.display()
                    ))),
                };
                if result.is_ok() {
                    result = theirs;
                }
            }
            result
        })
    }

    /// One thread's share of a shared directory: entries taken from the listing until it
    /// ends or a thread failed (the first error ends the walk, as on one thread).
    fn take_entries(
        &mut self,
        listing: &Mutex<Listing<'_, '_>>,
        dir: BorrowedFd<'_>,
        depth: usize,
        failed: &AtomicBool,
    ) -> Result<(), Error> {
        while !failed.load(Ordering::Relaxed) {
            let next = listing.lock().unwrap_or_else(|p| p.into_inner()).next();
            let result = match next {
                None => return Ok(()),
                Some(Ok((name, listed))) => self.child(dir, &name, listed, depth),
                Some(Err(errno)) => {
                    Err(self.fail(errno, "reading the directory", &self.path.clone()))
                }
            };
            if result.is_err() {
                failed.store(true, Ordering::Relaxed);
                return result;
            }
        }
        Ok(())
    }
}

/// The error of an action on a path, with the remedy for a permission problem:
/// `changing the owner of /data/x: operation not permitted; run as root (…)`.
pub fn error(errno: Errno, action: &str, path: &Path, remedy: Option<String>) -> Error {
    let reason = crate::reason::io(&std::io::Error::from(errno));
    let remedy = match errno {
        Errno::PERM | Errno::ACCESS => remedy,
        Errno::ROFS => Some("the filesystem is mounted read-only".into()),
        Errno::MFILE | Errno::NFILE => {
            Some("the tree is deeper than the open-file limit allows (ulimit -n)".into())
        }
        _ => None,
    };
    match remedy {
        Some(remedy) => Error::Failed(format!("{action} {}: {reason}; {remedy}", path.display())),
        None => Error::Failed(format!("{action} {}: {reason}", path.display())),
    }
}
