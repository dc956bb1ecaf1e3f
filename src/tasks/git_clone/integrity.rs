//! Whether a checkout initbox made is still exactly its commit's tree, and putting it back
//! when it is not — from the objects already in `.git`, so a pod restart repairs a damaged
//! volume without the network.
//!
//! "Exactly the tree" means: every tracked path is there with the commit's content, kind
//! (file, executable file, symbolic link) and executable bit, and nothing else is (no
//! untracked or ignored files, no empty directories; `.git`, a staging directory and a
//! volume's `lost+found` excepted). Like `git status`, the check trusts the index's stat
//! data (size, times, inode) and reads a file only when those differ, so an intact
//! checkout costs one `lstat` per file.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use gix::index::entry::Mode;

use super::destination::{Checkout, Destination, IGNORED_ENTRIES, INNER_STAGING};
use super::submodules::Submodules;

/// Every stat field but the device number (not stable on network filesystems), to the
/// nanosecond: an edit that keeps a file's size and mtime still changes its ctime. Where a
/// filesystem does not keep nanoseconds, this only costs a read of the file.
const STAT_OPTIONS: gix::index::entry::stat::Options = gix::index::entry::stat::Options {
    trust_ctime: true,
    check_stat: true,
    use_nsec: true,
    use_stdev: false,
};

/// How many differences a message lists before it says "and N more".
const SHOWN: usize = 3;

/// The ways DEST differs from its commit, in words (empty: it is intact).
#[derive(Debug, Default)]
pub struct Differences(Vec<String>);

impl Differences {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn push(&mut self, what: String) {
        self.0.push(what);
    }
}

impl std::fmt::Display for Differences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown: Vec<&str> = self.0.iter().take(SHOWN).map(String::as_str).collect();
        f.write_str(&shown.join(", "))?;
        if self.0.len() > SHOWN {
            write!(f, " and {} more", self.0.len() - SHOWN)?;
        }
        Ok(())
    }
}

fn relative(path: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(path))
}

/// A failure as initbox words it: what failed, and the operating system's reason when an
/// I/O error is among the causes (gix's own wording is for gix's developers).
fn because<E: std::error::Error + 'static>(what: &'static str) -> impl Fn(E) -> String {
    move |error| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = cause {
            if let Some(io) = current.downcast_ref::<std::io::Error>() {
                return format!("{what}: {}", crate::reason::io(io));
            }
            cause = current.source();
        }
        what.to_owned()
    }
}

/// Compares DEST with the commit its marker records.
pub fn verify(destination: &Destination, checkout: &Checkout) -> Differences {
    let mut differences = Differences::default();
    let tree = Tree {
        dest: destination.path(),
        commit: &checkout.commit,
        submodules: checkout.submodules,
        sparse: &checkout.sparse,
        at: Path::new(""),
    };
    if let Err(reason) = compare(&tree, &mut differences) {
        differences.push(format!("its .git cannot be read ({reason})"));
    }
    differences
}

/// One checkout to compare: DEST, or a submodule's directory inside it (`at`, for
/// messages), and what its submodules hold.
struct Tree<'a> {
    dest: &'a Path,
    commit: &'a str,
    submodules: Submodules,
    /// The `--sparse` cone (empty: everything is checked out).
    sparse: &'a [String],
    at: &'a Path,
}

fn compare(tree: &Tree<'_>, out: &mut Differences) -> Result<(), String> {
    let dest = tree.dest;
    let repo = gix::open_opts(dest, gix::open::Options::isolated())
        .map_err(because("the repository cannot be opened"))?;
    let head = repo.head_id().map_err(because("HEAD cannot be read"))?;
    if head != tree.commit {
        let head = head.to_string();
        let whose = if tree.at.as_os_str().is_empty() {
            String::new()
        } else {
            format!(" of submodule {}", tree.at.display())
        };
        out.push(format!("HEAD{whose} is at {} instead", &head[..12]));
        return Ok(());
    }
    let mut expected = expected_index(&repo, tree.commit)?;
    if !tree.sparse.is_empty() {
        super::sparse::apply(&mut expected, tree.sparse)?;
    }
    let index = repo
        .open_index()
        .map_err(because("the index cannot be read"))?;
    // The index file's own time: a file changed in the same clock tick as the index was
    // written may keep its stat data, so such "racy" entries are read, as git does.
    let index_written = fs::metadata(index.path())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());

    if index.entries().len() != expected.entries().len() {
        out.push("the index lists other files than the commit".into());
    }
    let mut files: HashSet<&[u8]> = HashSet::new();
    let mut dirs: HashSet<&[u8]> = HashSet::new();
    for entry in expected.entries() {
        let path: &[u8] = entry.path(&expected);
        // Left out by the sparse cone: not in the working tree, so not looked for (and
        // found as an extra if something is there).
        if entry
            .flags
            .contains(gix::index::entry::Flags::SKIP_WORKTREE)
        {
            continue;
        }
        files.insert(path);
        let mut at = 0;
        while let Some(slash) = path[at..].iter().position(|&b| b == b'/') {
            dirs.insert(&path[..at + slash]);
            at += slash + 1;
        }
        let shown_path = tree.at.join(relative(path));
        let shown = shown_path.display();
        let full = dest.join(relative(path));
        let metadata = match gix::index::fs::Metadata::from_path_no_follow(&full) {
            Ok(metadata) => metadata,
            Err(_) => {
                out.push(format!("{shown} is missing"));
                continue;
            }
        };
        if entry.mode == Mode::COMMIT {
            if !metadata.is_dir() {
                out.push(format!("{shown} is not a directory"));
            } else if !tree.submodules.is_off() {
                // A submodule cloned with the checkout: its own checkout, at the commit
                // the superproject records, is compared the same way.
                let commit = entry.id.to_string();
                let nested = Tree {
                    dest: &full,
                    commit: &commit,
                    submodules: tree.submodules.nested(),
                    sparse: &[],
                    at: &shown_path,
                };
                if let Err(reason) = compare(&nested, out) {
                    out.push(format!("submodule {shown} cannot be read ({reason})"));
                }
            }
            continue;
        }
        let kind_ok = if entry.mode == Mode::SYMLINK {
            metadata.is_symlink()
        } else {
            metadata.is_file()
        };
        if !kind_ok {
            out.push(format!("{shown} was replaced by another kind of file"));
            continue;
        }
        if entry.mode != Mode::SYMLINK
            && (entry.mode == Mode::FILE_EXECUTABLE) != metadata.is_executable()
        {
            out.push(format!("{shown} has another executable bit"));
            continue;
        }
        let indexed = index
            .entry_by_path(path.into())
            .filter(|indexed| indexed.id == entry.id && indexed.mode == entry.mode);
        if indexed.is_none() {
            // Something was staged (`git add`, `git rm`): `git status` would not be clean.
            out.push(format!("the index differs from the commit at {shown}"));
            continue;
        }
        let stat_unchanged = indexed.is_some_and(|indexed| {
            let modified = std::time::Duration::new(
                u64::from(indexed.stat.mtime.secs),
                indexed.stat.mtime.nsecs,
            );
            let racy = index_written.is_none_or(|written| modified >= written);
            !racy
                && gix::index::entry::Stat::from_fs(&metadata)
                    .is_ok_and(|now| indexed.stat.matches(&now, STAT_OPTIONS))
        });
        if stat_unchanged {
            continue;
        }
        let content = if entry.mode == Mode::SYMLINK {
            fs::read_link(&full).map(|target| target.as_os_str().as_bytes().to_vec())
        } else {
            fs::read(&full)
        };
        let same = content.ok().is_some_and(|data| {
            gix::objs::compute_hash(repo.object_hash(), gix::objs::Kind::Blob, &data)
                .is_ok_and(|id| id == entry.id)
        });
        if !same {
            out.push(format!("{shown} was changed"));
        }
    }
    find_extras(dest, Path::new(""), &files, &dirs, out, tree.at)
        .map_err(because("DEST cannot be listed"))?;
    Ok(())
}

/// The index the commit's tree makes (what a fresh checkout writes).
fn expected_index(repo: &gix::Repository, commit: &str) -> Result<gix::index::File, String> {
    let id = gix::ObjectId::from_hex(commit.as_bytes())
        .map_err(because("the recorded commit id is not valid"))?;
    let tree = repo
        .find_commit(id)
        .and_then(|commit| commit.tree_id())
        .map_err(because("the recorded commit is not in .git"))?;
    repo.index_from_tree(&tree)
        .map_err(because("the commit's tree cannot be read"))
}

/// Everything under DEST that the tree does not have, without following symbolic links.
fn find_extras(
    dest: &Path,
    dir: &Path,
    files: &HashSet<&[u8]>,
    dirs: &HashSet<&[u8]>,
    out: &mut Differences,
    at: &Path,
) -> std::io::Result<()> {
    for entry in fs::read_dir(dest.join(dir))? {
        let entry = entry?;
        let name = entry.file_name();
        if dir.as_os_str().is_empty()
            && (name == ".git"
                || name == INNER_STAGING
                || IGNORED_ENTRIES.contains(&name.to_string_lossy().as_ref()))
        {
            continue;
        }
        let path = dir.join(&name);
        let key = path.as_os_str().as_bytes();
        let is_dir = entry.file_type()?.is_dir();
        if files.contains(key) {
            continue;
        }
        if is_dir && dirs.contains(key) {
            find_extras(dest, &path, files, dirs, out, at)?;
        } else if !(is_dir && files.contains(key)) {
            out.push(format!("{} is not in the commit", at.join(&path).display()));
        }
    }
    Ok(())
}

/// Re-creates the commit's tree from `.git`'s own objects in a fresh staging directory and
/// installs it in place of DEST's entries, as a clone would be installed: a kill at any
/// moment leaves the damaged checkout or the repaired one, and no write ever goes through
/// an entry of the damaged tree.
pub fn repair(destination: &Destination, checkout: &Checkout) -> Result<(), String> {
    // The superproject's objects cannot restore a submodule, and restoring the rest would
    // empty the submodules' directories: such a checkout is cloned again.
    if !checkout.submodules.is_off() {
        return Err("it has submodules, which its own objects cannot restore".into());
    }
    let dest = destination.path();
    let staging = destination
        .staging()
        .map_err(because("no staging directory can be made"))?;
    let result = (|| {
        let mut index = {
            let repo = gix::open_opts(dest, gix::open::Options::isolated())
                .map_err(because("the repository cannot be opened"))?;
            // Only the tree is restored here: a HEAD moved elsewhere needs a new clone.
            if repo.head_id().map_err(because("HEAD cannot be read"))? != checkout.commit.as_str() {
                return Err("HEAD points to another commit".to_owned());
            }
            let mut index = expected_index(&repo, &checkout.commit)?;
            if !checkout.sparse.is_empty() {
                super::sparse::apply(&mut index, &checkout.sparse)?;
            }
            let mut options = repo
                .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
                .map_err(because("the checkout settings cannot be read"))?;
            options.destination_is_initially_empty = true;
            let objects = repo
                .objects
                .clone()
                .into_arc()
                .map_err(because("the object database cannot be shared"))?;
            gix::worktree::state::checkout(
                &mut index,
                &staging,
                objects,
                &gix::progress::Discard,
                &gix::progress::Discard,
                &AtomicBool::new(false),
                options,
            )
            .map_err(because("writing the files failed"))?;
            index
        };
        // One rename makes the staged tree a complete clone (the marker lives in `.git`):
        // from here on, a killed run's successor finishes the install.
        let staged_git: PathBuf = staging.join(".git");
        fs::rename(dest.join(".git"), &staged_git).map_err(because("moving .git failed"))?;
        index.set_path(staged_git.join("index"));
        // Past the rename the install must go on whatever happens: an index that could not
        // be written only costs the next run a content check (and maybe another repair).
        let _ = index.write(Default::default());
        Ok(())
    })();
    match result {
        Ok(()) => destination
            .install_inside(&staging)
            .map_err(because("installing the restored files failed")),
        Err(reason) => {
            if !staging.join(".git").exists() {
                super::destination::remove_staging(&staging);
            }
            Err(reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences_name_the_first_few_and_count_the_rest() {
        let mut differences = Differences::default();
        assert!(differences.is_empty());
        for name in ["a", "b", "c", "d", "e"] {
            differences.push(format!("{name} is missing"));
        }
        assert_eq!(
            differences.to_string(),
            "a is missing, b is missing, c is missing and 2 more"
        );
    }
}
