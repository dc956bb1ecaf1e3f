//! mkdir: the `mkdir -p /data/db && chown 1001 /data/db && chmod 700 /data/db` of init
//! containers in one idempotent command. Parents are always created; `--mode` and
//! `--owner` apply to every directory mkdir creates and to each named directory even when
//! it existed, so a restarted pod converges to the same state (existing parents are never
//! touched).

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Gid, Mode as RawMode, OFlags, Uid};
use rustix::io::Errno;

use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::volume::{self, Ids, Meta, Mode, Owner, Tally, walk};

/// Create directories and their parents (mkdir -p), with a mode and an owner.
#[derive(Debug, Clone, clap::Args)]
pub struct MkdirArgs {
    /// The directories; missing parents are created too.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// The mode of every directory created and of each PATH: octal (0750) or symbolic
    /// (u=rwx,g=rx,o=; applied to 0777 for a new directory, to the current mode of an
    /// existing one). Default: 0777 minus the umask for new directories, existing ones
    /// left as they are.
    #[arg(
        long,
        env = "INITBOX_MODE",
        value_name = "MODE",
        allow_hyphen_values = true
    )]
    pub mode: Option<Mode>,
    /// The owner of every directory created and of each PATH: UID[:GID], :GID.
    #[arg(long, env = "INITBOX_OWNER", value_name = "OWNER")]
    pub owner: Option<Owner>,
    #[command(flatten)]
    pub then: Then,
}

impl crate::cli::Task for MkdirArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        volume::blocking(move || run(&self))
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

fn run(args: &MkdirArgs) -> Result<()> {
    let ids = args.owner.as_ref().map(Owner::resolve).transpose()?;
    let mut tally = Tally::new("mkdir").with_words("created or changed", "unchanged");
    for path in &args.paths {
        let created = create(path)?;
        for dir in &created {
            settle(dir, args.mode.as_ref(), ids, true)?;
            tally.changed(dir);
        }
        if created.last().map(PathBuf::as_path) != Some(path.as_path()) {
            if settle(path, args.mode.as_ref(), ids, false)? {
                tally.changed(path);
            } else {
                tally.unchanged(path);
            }
        }
    }
    tally.finish();
    Ok(())
}

/// Creates `path` and its missing parents, returning those it created, outermost first.
fn create(path: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(dir) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(Error::Failed(format!(
                    "creating directory {}: {} exists and is not a directory",
                    path.display(),
                    dir.display()
                )));
            }
            // A file in the way further up: found when the walk up reaches it.
            Err(error)
                if error.kind() == io::ErrorKind::NotFound
                    || error.kind() == io::ErrorKind::NotADirectory =>
            {
                missing.push(dir)
            }
            Err(error) => return Err(io_error("creating directory", dir, &error)),
        }
        at = dir.parent();
    }
    let mut created = Vec::new();
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => created.push(dir.to_path_buf()),
            // Created meanwhile by someone else: fine if it is a directory.
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(error) => return Err(io_error("creating directory", dir, &error)),
        }
    }
    Ok(created)
}

fn io_error(action: &str, path: &Path, error: &io::Error) -> Error {
    match error.raw_os_error() {
        Some(code) => walk::error(
            Errno::from_raw_os_error(code),
            action,
            path,
            Some(format!(
                "it needs write permission on the parent directory: {}",
                volume::remedy("the CAP_DAC_OVERRIDE capability")
            )),
        ),
        None => Error::Failed(format!(
            "{action} {}: {}",
            path.display(),
            reason::io(error)
        )),
    }
}

/// Gives `dir` the owner, then the mode (a change of owner may clear set-id bits); `true`
/// when something changed. A link is never followed: the directory is opened `O_NOFOLLOW`.
fn settle(dir: &Path, mode: Option<&Mode>, ids: Option<Ids>, new: bool) -> Result<bool> {
    if mode.is_none() && ids.is_none() {
        return Ok(false);
    }
    let fd: OwnedFd = rustix::fs::openat(
        CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        RawMode::empty(),
    )
    .map_err(|errno| match errno {
        // O_DIRECTORY | O_NOFOLLOW on a link fails with ENOTDIR (ELOOP on some kernels).
        Errno::LOOP | Errno::NOTDIR if dir.is_symlink() => Error::Failed(format!(
            "setting the mode and owner of {}: it is a symbolic link, which initbox does not \
             follow",
            dir.display()
        )),
        errno => walk::error(errno, "opening directory", dir, None),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| walk::error(e, "examining", dir, None))?;
    let meta = Meta::from_stat(&stat);
    let mut changed = false;
    if let Some(ids) = ids
        && !ids.matches(meta.uid, meta.gid)
    {
        rustix::fs::fchown(&fd, ids.uid.map(Uid::from_raw), ids.gid.map(Gid::from_raw)).map_err(
            |e| {
                walk::error(
                    e,
                    "changing the owner of",
                    dir,
                    Some(volume::remedy("the CAP_CHOWN capability")),
                )
            },
        )?;
        changed = true;
    }
    if let Some(mode) = mode {
        let current = Meta::from_stat(
            &rustix::fs::fstat(&fd).map_err(|e| walk::error(e, "examining", dir, None))?,
        )
        .mode;
        // A new directory's mode is the mode applied to 0777, as `mkdir -m` does.
        let wanted = mode.apply(if new { 0o777 } else { current }, true);
        if wanted != current {
            rustix::fs::fchmod(&fd, RawMode::from_raw_mode(wanted)).map_err(|e| {
                walk::error(
                    e,
                    "changing the mode of",
                    dir,
                    Some(volume::remedy("the CAP_FOWNER capability")),
                )
            })?;
            changed = true;
        }
    }
    Ok(changed)
}
