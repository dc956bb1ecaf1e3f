//! The staged install that git-clone, extract and k8s-copy share: a directory's new
//! content is made complete elsewhere, then put in place so that DEST never looks complete
//! while it is not, even when DEST is the root of a mounted volume that cannot be renamed.
//!
//! The new tree is made in a staging directory and marked complete (a marker file inside
//! the tree's *keystone* directory, written last) before it is installed:
//!
//! - DEST missing: staging is `PARENT/.NAME.{sibling_suffix}`, installed by one `rename`.
//! - DEST exists (often the root of a mounted volume, which cannot be renamed): staging is
//!   `DEST/{inner_staging}`; installing removes DEST's old entries (the keystone first) and
//!   moves the staged ones in (the keystone last), then removes the empty staging directory.
//!
//! So at any moment, DEST (ignoring the hidden staging directory) is as it was before, or
//! complete, or in the middle of an install of a *complete* tree, which the next run
//! finishes before doing anything else ([`Destination::recover`]). A DEST without the
//! keystone is never complete. Nothing is written through what DEST holds: old entries are
//! removed without following links and new ones renamed in, so a symbolic link planted in
//! DEST cannot redirect a write outside it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomic_file;

/// Entries a fresh filesystem brings along that do not make a volume "not empty".
pub const IGNORED_ENTRIES: &[&str] = &["lost+found"];

/// The names a staged install uses: where it is staged, and which entry of the staged tree
/// is installed last (its presence in DEST says "complete"), holding the marker.
#[derive(Debug)]
pub struct Layout {
    /// The staging directory inside an existing DEST.
    pub inner_staging: &'static str,
    /// `PARENT/.NAME.{sibling_suffix}`: the staging directory beside a missing DEST.
    pub sibling_suffix: &'static str,
    /// The directory moved in last: DEST is complete once it is there.
    pub keystone: &'static str,
    /// The file inside the keystone written last when staging (a JSON document).
    pub marker: &'static str,
    /// The note inside the staged keystone saying DEST's old entries are gone.
    pub cleared: &'static str,
}

/// What DEST holds before a command that records its installs (extract, k8s-copy) writes it.
#[derive(Debug)]
pub enum Found<R> {
    /// Missing or empty (`lost+found` and a staging directory aside).
    Nothing,
    /// What the command installed there, by its record.
    Recorded(R),
    /// Files the command did not put there.
    Other,
}

impl Layout {
    /// Reads DEST's record (the marker inside the keystone), never through a link planted
    /// in its place.
    pub fn inspect<R: serde::de::DeserializeOwned>(&self, dest: &Path) -> io::Result<Found<R>> {
        let entries = match fs::read_dir(dest) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Found::Nothing),
            Err(error) => return Err(error),
        };
        let mut any = false;
        for entry in entries {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if !IGNORED_ENTRIES.contains(&name.as_ref()) && name != self.inner_staging {
                any = true;
            }
        }
        if !any {
            return Ok(Found::Nothing);
        }
        let dir = dest.join(self.keystone);
        let record = dir
            .symlink_metadata()
            .ok()
            .filter(|m| m.is_dir())
            .and_then(|_| fs::read(dir.join(self.marker)).ok())
            .and_then(|text| serde_json::from_slice(&text).ok());
        Ok(record.map_or(Found::Other, Found::Recorded))
    }
}

/// A directory installed by the staged-install protocol with the names of its [`Layout`].
pub struct Destination {
    dest: PathBuf,
    layout: &'static Layout,
}

impl Destination {
    /// A destination installed with the names of `layout`.
    pub fn with_layout(dest: &Path, layout: &'static Layout) -> Self {
        Destination {
            dest: dest.to_owned(),
            layout,
        }
    }

    pub fn path(&self) -> &Path {
        &self.dest
    }

    fn sibling_staging(&self) -> PathBuf {
        let name = self
            .dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "checkout".into());
        parent_dir(&self.dest).join(format!(".{name}.{}", self.layout.sibling_suffix))
    }

    pub fn inner_staging(&self) -> PathBuf {
        self.dest.join(self.layout.inner_staging)
    }

    /// Whether a staged (or installed) tree carries its marker: it is complete.
    pub fn is_complete(&self, tree: &Path) -> bool {
        let marker = tree.join(self.layout.keystone).join(self.layout.marker);
        fs::read(marker)
            .ok()
            .and_then(|text| serde_json::from_slice::<serde_json::Value>(&text).ok())
            .is_some()
    }

    /// Finishes or discards what a killed run left. Returns true when it completed an
    /// install (DEST is now a complete checkout).
    ///
    /// Only a real directory counts as a staging directory: anything else under that name
    /// (a symbolic link planted there, say) is removed, never followed.
    pub fn recover(&self) -> io::Result<bool> {
        let sibling = self.sibling_staging();
        if let Some(is_dir) = kind_of(&sibling) {
            if is_dir && self.dest.symlink_metadata().is_err() && self.is_complete(&sibling) {
                fs::rename(&sibling, &self.dest)?;
                return Ok(true);
            }
            remove_any(&sibling)?;
        }
        let inner = self.inner_staging();
        if let Some(is_dir) = kind_of(&inner) {
            if is_dir && self.is_complete(&inner) {
                self.install_inside(&inner)?;
                return Ok(true);
            }
            remove_any(&inner)?;
        }
        Ok(false)
    }

    /// Makes sure a clone could be written here, before anything goes over the network:
    /// the directory its staging directory goes in takes new entries.
    pub fn check_writable(&self) -> io::Result<()> {
        let staging = if self.dest.exists() {
            self.inner_staging()
        } else {
            self.sibling_staging()
        };
        Ok(atomic_file::check_directory(parent_dir(&staging))?)
    }

    /// A fresh, empty staging directory for a clone (removing any stale one).
    pub fn staging(&self) -> io::Result<PathBuf> {
        let staging = if self.dest.exists() {
            self.inner_staging()
        } else {
            fs::create_dir_all(parent_dir(&self.dest))?;
            self.sibling_staging()
        };
        if staging.symlink_metadata().is_ok() {
            remove_any(&staging)?;
        }
        fs::create_dir(&staging)?;
        Ok(staging)
    }

    /// Puts a complete staged clone in place of whatever DEST holds.
    pub fn install(&self, staging: &Path) -> io::Result<()> {
        if staging == self.sibling_staging() {
            if self.dest.exists() {
                // DEST appeared while cloning: fall back to installing inside it.
                let inner = self.inner_staging();
                fs::rename(staging, &inner)?;
                return self.install_inside(&inner);
            }
            return fs::rename(staging, &self.dest);
        }
        self.install_inside(staging)
    }

    /// Replaces DEST's entries with the staged ones; safe to repeat after a kill. Two
    /// phases: clearing DEST's old entries, then moving the staged ones in; a note in the
    /// staged `.git` says the first phase is over, so a resumed install never deletes what
    /// it has already moved.
    pub fn install_inside(&self, staging: &Path) -> io::Result<()> {
        let keystone = self.layout.keystone;
        let cleared = staging.join(keystone).join(self.layout.cleared);
        if !cleared.exists() {
            // The old checkout stops being one first…
            let old_git = self.dest.join(keystone);
            if old_git.symlink_metadata().is_ok() {
                remove_any(&old_git)?;
            }
            for entry in fs::read_dir(&self.dest)? {
                let entry = entry?;
                let name = entry.file_name();
                if name == self.layout.inner_staging
                    || IGNORED_ENTRIES.contains(&name.to_string_lossy().as_ref())
                {
                    continue;
                }
                remove_any(&entry.path())?;
            }
            atomic_file::write(&cleared, b"", None)?;
        }
        // …and the new one becomes one last.
        for entry in fs::read_dir(staging)? {
            let entry = entry?;
            if entry.file_name() != keystone {
                fs::rename(entry.path(), self.dest.join(entry.file_name()))?;
            }
        }
        fs::rename(staging.join(keystone), self.dest.join(keystone))?;
        fs::remove_dir(staging)?;
        let _ = fs::remove_file(self.dest.join(keystone).join(self.layout.cleared));
        Ok(())
    }
}

/// `Some(true)` for a directory, `Some(false)` for anything else (a symbolic link is never
/// followed), `None` when nothing is there.
pub fn kind_of(path: &Path) -> Option<bool> {
    path.symlink_metadata().ok().map(|m| m.is_dir())
}

/// Removes a staging directory that a clone thread may still be writing into: a removal
/// that races with a file being created is tried again.
pub fn remove_staging(staging: &Path) {
    for _ in 0..5 {
        match remove_any(staging) {
            Err(error) if error.kind() != io::ErrorKind::NotFound => continue,
            _ => return,
        }
    }
}

pub fn remove_any(path: &Path) -> io::Result<()> {
    let metadata = path.symlink_metadata()?;
    if metadata.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    }
}

pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
