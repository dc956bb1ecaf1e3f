//! chmod: the `chmod -R g+rwX /data` of init containers, in octal or symbolic modes with
//! the rules of coreutils, never following a symbolic link (Linux has no mode for a link
//! itself, so links are passed by) and changing only entries whose mode differs.
//!
//! A file's mode is changed through a descriptor of the file itself, opened `O_PATH |
//! O_NOFOLLOW` (through `/proc/self/fd`, as glibc's `fchmodat(AT_SYMLINK_NOFOLLOW)` does):
//! changing it by name would follow a link swapped in after the file was examined.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::fs::{AtFlags, CWD, FileType, Mode as RawMode, OFlags};
use rustix::io::Errno;

use crate::exec::Then;
use crate::exit::Result;
use crate::report;
use crate::volume::{self, Entry, Kind, Meta, Mode, Next, Skipped, Tally, TreeArgs, Visitor, walk};

/// Change the mode of files, never following symbolic links.
#[derive(Debug, Clone, clap::Args)]
pub struct ChmodArgs {
    /// Octal (0755, 644) or symbolic (u+rwX,g=u,o-rwx; a+x; +t; g+s); X adds execute only
    /// to directories and to files some execute bit is already set on.
    #[arg(value_name = "MODE", allow_hyphen_values = true)]
    pub mode: Mode,
    /// What to change; a symbolic link is passed by, never followed.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Also everything below each PATH (links are never followed).
    #[arg(short = 'R', long, env = "INITBOX_RECURSIVE")]
    pub recursive: bool,
    /// Leave a PATH's tree alone when PATH itself already has the mode.
    #[arg(long, env = "INITBOX_IF_ROOT_DIFFERS")]
    pub if_root_differs: bool,
    #[command(flatten)]
    pub tree: TreeArgs,
    #[command(flatten)]
    pub then: Then,
}

impl crate::cli::Task for ChmodArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        volume::blocking(move || run(&self))
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

struct Chmod {
    mode: Mode,
    tally: Tally,
}

impl Chmod {
    fn change(&mut self, entry: &Entry<'_>) -> Result<()> {
        let Some(meta) = entry.meta else {
            return Ok(());
        };
        if entry.kind == Kind::Symlink {
            self.tally
                .skipped(entry.path, "a symbolic link has no mode of its own");
            return Ok(());
        }
        let new = self.mode.apply(meta.mode, entry.kind == Kind::Directory);
        if new == meta.mode {
            self.tally.unchanged(entry.path);
            return Ok(());
        }
        let done = match entry.dir {
            Some(dir) => rustix::fs::fchmod(dir, RawMode::from_raw_mode(new)).map(|()| true),
            None => chmod_nofollow(entry.parent, entry.name, &meta, new),
        };
        match done {
            Ok(true) => self.tally.changed(entry.path),
            Ok(false) => self.tally.skipped_for(entry.path, Skipped::Vanished),
            Err(Errno::NOENT) => self.tally.skipped_for(entry.path, Skipped::Vanished),
            Err(errno) => {
                return Err(walk::error(
                    errno,
                    self.action(),
                    entry.path,
                    self.remedy(errno),
                ));
            }
        }
        Ok(())
    }
}

impl Visitor for Chmod {
    fn visit(&mut self, entry: &Entry<'_>) -> Result<Next> {
        // A named directory walked into changes last, once all below it has: its mode is
        // what --if-root-differs reads as "done", so a walk cut short must not leave it
        // looking finished.
        if !(entry.depth == 0 && entry.dir.is_some()) {
            self.change(entry)?;
        }
        Ok(Next::Descend)
    }

    fn leave(&mut self, entry: &Entry<'_>) -> Result<()> {
        if entry.depth == 0 {
            self.change(entry)?;
        }
        Ok(())
    }

    fn skipped(&mut self, path: &Path, why: Skipped) {
        self.tally.skipped_for(path, why);
    }

    fn action(&self) -> &str {
        "changing the mode of"
    }

    fn remedy(&self, _errno: Errno) -> Option<String> {
        Some(format!(
            "only its owner may change a mode: {}",
            volume::remedy("the CAP_FOWNER capability")
        ))
    }

    fn fork(&self) -> Option<Self> {
        Some(Chmod {
            mode: self.mode.clone(),
            tally: self.tally.fork(),
        })
    }

    fn join(&mut self, fork: Self) {
        self.tally.absorb(fork.tally);
    }
}

/// Changes the mode of `name` in `parent` without following a link: `false` when the
/// entry is no longer the one examined (replaced by a link or another file).
fn chmod_nofollow(
    parent: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    meta: &Meta,
    mode: u32,
) -> rustix::io::Result<bool> {
    match fchmodat2_nofollow(parent, name, mode) {
        Some(Ok(())) => Ok(true),
        // The name is a symbolic link now, swapped in since it was examined.
        Some(Err(Errno::OPNOTSUPP)) => Ok(false),
        // Before the call has ever worked, EPERM may be a seccomp profile that does not
        // know it: the descriptor route tells (and then is the route from now on).
        Some(Err(Errno::PERM)) if FCHMODAT2.load(Ordering::Relaxed) == UNKNOWN => {
            let done = chmod_through_descriptor(parent, name, meta, mode);
            if done.is_ok() {
                FCHMODAT2.store(ABSENT, Ordering::Relaxed);
            }
            done
        }
        Some(Err(errno)) => Err(errno),
        None => chmod_through_descriptor(parent, name, meta, mode),
    }
}

/// Whether the kernel has `fchmodat2` (Linux 6.6): unknown until first asked.
static FCHMODAT2: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const PRESENT: u8 = 1;
const ABSENT: u8 = 2;

/// `fchmodat2(parent, name, mode, AT_SYMLINK_NOFOLLOW)`: one system call, by name, that
/// refuses a symbolic link instead of following it. `None` where the kernel (or a seccomp
/// profile that predates the call) answers ENOSYS: then the caller goes through a
/// descriptor.
#[allow(unsafe_code)]
fn fchmodat2_nofollow(
    parent: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    mode: u32,
) -> Option<rustix::io::Result<()>> {
    if FCHMODAT2.load(Ordering::Relaxed) == ABSENT {
        return None;
    }
    // SAFETY: the descriptor is open for the call's duration, the name is a NUL-terminated
    // string that outlives it, and the kernel only reads both.
    let done = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            parent.as_raw_fd(),
            name.as_ptr(),
            mode as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if done == 0 {
        FCHMODAT2.store(PRESENT, Ordering::Relaxed);
        return Some(Ok(()));
    }
    let errno = Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO);
    if errno == Errno::NOSYS {
        FCHMODAT2.store(ABSENT, Ordering::Relaxed);
        return None;
    }
    Some(Err(errno))
}

/// The route without `fchmodat2`: open the entry `O_PATH | O_NOFOLLOW`, check it is the one
/// examined, and change it through `/proc/self/fd` (a link swapped in after the check
/// cannot redirect a change made through the descriptor).
fn chmod_through_descriptor(
    parent: BorrowedFd<'_>,
    name: &std::ffi::CStr,
    meta: &Meta,
    mode: u32,
) -> rustix::io::Result<bool> {
    let fd = rustix::fs::openat(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        RawMode::empty(),
    )?;
    let stat = rustix::fs::fstat(&fd)?;
    let held = Meta::from_stat(&stat);
    if FileType::from_raw_mode(stat.st_mode) == FileType::Symlink
        || (held.dev, held.ino) != (meta.dev, meta.ino)
    {
        return Ok(false);
    }
    let through = format!("/proc/self/fd/{}", fd.as_fd().as_raw_fd());
    match rustix::fs::chmodat(
        CWD,
        through.as_str(),
        RawMode::from_raw_mode(mode),
        AtFlags::empty(),
    ) {
        Ok(()) => Ok(true),
        // No /proc: a regular file can still be opened and changed through its descriptor.
        Err(Errno::NOENT) if FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile => {
            let file = rustix::fs::openat(
                parent,
                name,
                OFlags::RDONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
                RawMode::empty(),
            )?;
            let again = Meta::from_stat(&rustix::fs::fstat(&file)?);
            if (again.dev, again.ino) != (meta.dev, meta.ino) {
                return Ok(false);
            }
            rustix::fs::fchmod(&file, RawMode::from_raw_mode(mode))?;
            Ok(true)
        }
        Err(errno) => Err(errno),
    }
}

fn run(args: &ChmodArgs) -> Result<()> {
    let mut chmod = Chmod {
        mode: args.mode.clone(),
        tally: Tally::new("chmod"),
    };
    let options = args.tree.options(args.recursive);
    for path in &args.paths {
        if args.if_root_differs
            && let Ok(meta) = std::fs::symlink_metadata(path)
        {
            let current = meta.mode() & 0o7777;
            if args.mode.apply(current, meta.is_dir()) == current {
                report::info(
                    "chmod.root_matches",
                    format!(
                        "{} already has mode {:04o}: its tree is left as is (--if-root-differs)",
                        path.display(),
                        current
                    ),
                );
                chmod.tally.skipped(path, "its top already has the mode");
                continue;
            }
        }
        walk::walk(path, &options, &mut chmod)?;
    }
    chmod.tally.finish();
    Ok(())
}
