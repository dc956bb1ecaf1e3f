//! chown: the `chown -R 1001:1001 /data` of Bitnami's volume-permissions container, without
//! a shell and without following a symbolic link planted in the volume. Only entries whose
//! owner differs are changed, so a re-run leaves every ctime as it was, and
//! `--if-root-differs` skips a tree whose top already has the owner (Kubernetes'
//! `fsGroupChangePolicy: OnRootMismatch`), so a restart on a huge volume takes no time.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Gid, Uid};
use rustix::io::Errno;

use crate::exec::Then;
use crate::exit::Result;
use crate::report;
use crate::volume::{self, Entry, Ids, Next, Owner, Skipped, Tally, TreeArgs, Visitor, walk};

/// Change the owner of files, never following symbolic links.
#[derive(Debug, Clone, clap::Args)]
pub struct ChownArgs {
    /// UID[:GID], :GID or UID: (the user's login group); names only where /etc/passwd
    /// and /etc/group exist.
    #[arg(value_name = "OWNER")]
    pub owner: Owner,
    /// What to change; a symbolic link is changed itself, never what it points to.
    #[arg(value_name = "PATH", required = true)]
    pub paths: Vec<PathBuf>,
    /// Also everything below each PATH (links are changed themselves, never followed).
    #[arg(short = 'R', long, env = "INITBOX_RECURSIVE")]
    pub recursive: bool,
    /// Leave a PATH's tree alone when PATH itself already has the owner (Kubernetes
    /// fsGroupChangePolicy: OnRootMismatch): a restart on a huge volume takes no time.
    #[arg(long, env = "INITBOX_IF_ROOT_DIFFERS")]
    pub if_root_differs: bool,
    #[command(flatten)]
    pub tree: TreeArgs,
    #[command(flatten)]
    pub then: Then,
}

impl crate::cli::Task for ChownArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        volume::blocking(move || run(&self))
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

struct Chown {
    ids: Ids,
    tally: Tally,
}

impl Chown {
    fn change(&mut self, entry: &Entry<'_>) -> Result<()> {
        let Some(meta) = entry.meta else {
            return Ok(());
        };
        if self.ids.matches(meta.uid, meta.gid) {
            self.tally.unchanged(entry.path);
            return Ok(());
        }
        let uid = self.ids.uid.map(Uid::from_raw);
        let gid = self.ids.gid.map(Gid::from_raw);
        let done = match entry.dir {
            Some(dir) => rustix::fs::fchown(dir, uid, gid),
            None => rustix::fs::chownat(
                entry.parent,
                entry.name,
                uid,
                gid,
                AtFlags::SYMLINK_NOFOLLOW,
            ),
        };
        match done {
            Ok(()) => self.tally.changed(entry.path),
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

impl Visitor for Chown {
    fn visit(&mut self, entry: &Entry<'_>) -> Result<Next> {
        // A named directory walked into changes last, once all below it has: its owner is
        // what --if-root-differs reads as "done", so a walk cut short (a permission error,
        // a kill) must not leave it looking finished.
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
        "changing the owner of"
    }

    fn remedy(&self, _errno: Errno) -> Option<String> {
        Some(volume::remedy("the CAP_CHOWN capability"))
    }

    fn fork(&self) -> Option<Self> {
        Some(Chown {
            ids: self.ids,
            tally: self.tally.fork(),
        })
    }

    fn join(&mut self, fork: Self) {
        self.tally.absorb(fork.tally);
    }
}

fn run(args: &ChownArgs) -> Result<()> {
    let ids = args.owner.resolve()?;
    let mut chown = Chown {
        ids,
        tally: Tally::new("chown"),
    };
    let options = args.tree.options(args.recursive);
    for path in &args.paths {
        if args.if_root_differs
            && let Ok(meta) = std::fs::symlink_metadata(path)
            && ids.matches(meta.uid(), meta.gid())
        {
            report::info(
                "chown.root_matches",
                format!(
                    "{} already belongs to {ids}: its tree is left as is (--if-root-differs)",
                    path.display()
                ),
            );
            chown.tally.skipped(path, "its top already has the owner");
            continue;
        }
        walk::walk(path, &options, &mut chown)?;
    }
    chown.tally.finish();
    Ok(())
}
