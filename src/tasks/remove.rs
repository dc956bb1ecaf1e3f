//! remove: the `rm -rf /data/lost+found` of init containers. It never follows a symbolic
//! link (a link named or found is removed itself, its target is left alone), refuses `/`
//! and anything that is the root directory under another name, empties a directory but
//! keeps it with `--contents` (a mount point cannot be removed), and, like `rm -f`, counts
//! a PATH that does not exist as already removed.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::AtFlags;
use rustix::io::Errno;

use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::report;
use crate::volume::{self, Entry, Kind, Next, Skipped, Tally, TreeArgs, Visitor, walk};

/// Remove files and directory trees (rm -rf), never following symbolic links.
#[derive(Debug, Clone, clap::Args)]
pub struct RemoveArgs {
    /// What to remove; a PATH that does not exist is fine (as with rm -f). '/' and paths
    /// ending in '.' or '..' are refused.
    #[arg(value_name = "PATH", required = true, value_parser = parse_target)]
    pub paths: Vec<PathBuf>,
    /// Empty each PATH (a directory) but keep it, as for a mount point, which cannot be
    /// removed.
    #[arg(long, env = "INITBOX_CONTENTS")]
    pub contents: bool,
    #[command(flatten)]
    pub tree: TreeArgs,
    #[command(flatten)]
    pub then: Then,
}

/// A PATH that names an entry: not `/`, nor `.` or `..` (refused by rm too).
fn parse_target(text: &str) -> std::result::Result<PathBuf, String> {
    let path = PathBuf::from(text);
    let trimmed = text.trim_end_matches('/');
    let last_dot = trimmed
        .rsplit('/')
        .next()
        .is_some_and(|c| c == "." || c == "..");
    match path.components().next_back() {
        Some(Component::Normal(_)) if !last_dot => Ok(path),
        _ if text.is_empty() => Err("an empty path names nothing to remove".into()),
        Some(Component::RootDir) | None => Err(format!(
            "refusing to remove '{text}': it is the root directory"
        )),
        _ => Err(format!(
            "refusing to remove '{text}': name the directory itself, not '.' or '..'"
        )),
    }
}

impl crate::cli::Task for RemoveArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        volume::blocking(move || run(&self))
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

struct Remove {
    contents: bool,
    tally: Tally,
    /// The skipped count when each open directory was entered: a directory that holds
    /// something skipped is left in place, not an error.
    skipped_at: Vec<u64>,
}

impl Visitor for Remove {
    const NEEDS_META: bool = false;

    fn visit(&mut self, entry: &Entry<'_>) -> Result<Next> {
        if entry.kind == Kind::Directory {
            self.skipped_at.push(self.tally.skipped);
            return Ok(Next::Descend);
        }
        if entry.depth == 0 && self.contents {
            return Err(Error::Failed(format!(
                "emptying {}: not a directory (--contents empties a directory)",
                entry.path.display()
            )));
        }
        match rustix::fs::unlinkat(entry.parent, entry.name, AtFlags::empty()) {
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
        Ok(Next::Descend)
    }

    fn leave(&mut self, entry: &Entry<'_>) -> Result<()> {
        let skipped_before = self.skipped_at.pop().unwrap_or(self.tally.skipped);
        if entry.depth == 0 && self.contents {
            return Ok(());
        }
        match rustix::fs::unlinkat(entry.parent, entry.name, AtFlags::REMOVEDIR) {
            Ok(()) => self.tally.changed(entry.path),
            Err(Errno::NOENT) => self.tally.skipped_for(entry.path, Skipped::Vanished),
            Err(Errno::NOTEMPTY | Errno::EXIST) if self.tally.skipped > skipped_before => {
                self.tally.skipped(entry.path, "it holds what was skipped");
            }
            Err(Errno::BUSY) => {
                return Err(Error::Failed(format!(
                    "removing {}: it is a mount point, which cannot be removed; use \
                     --contents to empty it, or --one-file-system to leave other \
                     filesystems alone",
                    entry.path.display()
                )));
            }
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

    fn skipped(&mut self, path: &Path, why: Skipped) {
        self.tally.skipped_for(path, why);
    }

    fn missing(&mut self, path: &Path) -> Result<()> {
        report::debug(
            "remove.absent",
            format!("{} does not exist", path.display()),
        );
        self.tally.unchanged(path);
        Ok(())
    }

    fn action(&self) -> &str {
        "removing"
    }

    fn remedy(&self, errno: Errno) -> Option<String> {
        Some(match errno {
            Errno::PERM => format!(
                "a sticky directory or an immutable file: {}",
                volume::remedy("the CAP_FOWNER capability")
            ),
            _ => format!(
                "removing needs write permission on the directory that holds it: {}",
                volume::remedy("the CAP_DAC_OVERRIDE capability")
            ),
        })
    }

    /// A fork's skips are its own: a directory it leaves in place holds what it skipped.
    fn fork(&self) -> Option<Self> {
        Some(Remove {
            contents: self.contents,
            tally: self.tally.fork(),
            skipped_at: Vec::new(),
        })
    }

    fn join(&mut self, fork: Self) {
        self.tally.absorb(fork.tally);
    }
}

fn run(args: &RemoveArgs) -> Result<()> {
    // Every PATH is checked before anything is removed.
    let root = std::fs::metadata("/").ok().map(|m| (m.dev(), m.ino()));
    for path in &args.paths {
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && Some((meta.dev(), meta.ino())) == root
        {
            return Err(Error::Usage(format!(
                "refusing to remove {}: it is the root directory /",
                path.display()
            )));
        }
    }
    let mut remove = Remove {
        contents: args.contents,
        tally: Tally::new("remove").with_words("removed", "absent"),
        skipped_at: Vec::new(),
    };
    let options = args.tree.options(true);
    for path in &args.paths {
        walk::walk(path, &options, &mut remove)?;
    }
    remove.tally.finish();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_and_dot_paths_are_refused_when_parsed() {
        for bad in [
            "/",
            "//",
            "/.",
            "/..",
            ".",
            "..",
            "a/..",
            "a/.",
            "a/./",
            "",
            "/data/../",
        ] {
            assert!(parse_target(bad).is_err(), "{bad:?}");
        }
        for good in ["/data", "data/", "/data/lost+found", "a/b/c", "./x"] {
            assert!(parse_target(good).is_ok(), "{good:?}");
        }
    }
}
