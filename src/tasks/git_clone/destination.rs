//! Where a clone lands, and how it gets there without ever leaving a half-done checkout
//! that looks complete.
//!
//! A clone is always made in a staging directory first and marked complete (a marker file
//! inside its `.git`, written last) before it is installed:
//!
//! - DEST missing: staging is `PARENT/.NAME.initbox-clone`, installed by one `rename`.
//! - DEST exists (often the root of a mounted volume, which cannot be renamed): staging is
//!   `DEST/.initbox-clone`; installing removes DEST's old entries (`.git` first) and moves
//!   the staged ones in (`.git` last), then removes the empty staging directory.
//!
//! So at any moment, DEST (ignoring the hidden staging directory) is as it was before, or
//! a complete checkout, or in the middle of an install of a *complete* clone, which the next
//! run finishes before doing anything else ([`Destination::recover`]). A DEST without
//! `.git` is never a checkout; a `.git` without the marker is never one of ours.
//!
//! The protocol itself is [`crate::tasks::staged_install`], which extract and k8s-copy use
//! too: git-clone's [`Layout`] makes `.git` the entry that makes DEST complete.
//!
//! A complete checkout is also checked against its commit on every re-run
//! ([`Destination::verify`]: the index's stat data first, content only where it differs),
//! and a damaged one is re-checked-out from its own objects, without the network, through
//! the same staging and install ([`Destination::repair`]): nothing is ever written through
//! what DEST holds now, so a symbolic link planted in DEST cannot redirect a write outside.

use std::fs;
use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::atomic_file;
pub(crate) use crate::tasks::staged_install::{Destination, IGNORED_ENTRIES, remove_staging};
use crate::tasks::staged_install::{Layout, kind_of};

/// The staging directory inside an existing DEST.
pub(super) const INNER_STAGING: &str = ".initbox-clone";
/// The marker inside `.git` saying "this checkout is complete", and of what.
const MARKER: &str = "initbox-checkout.json";
/// The note inside a staged `.git` saying DEST's old entries are gone.
const CLEARED: &str = "initbox-install-cleared";
/// git-clone's names (a checkout's `.git` is its keystone).
pub(crate) const GIT: Layout = Layout {
    inner_staging: INNER_STAGING,
    sibling_suffix: "initbox-clone",
    keystone: ".git",
    marker: MARKER,
    cleared: CLEARED,
};

/// What a complete checkout records about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkout {
    /// The repository URL, without credentials.
    pub repo: String,
    /// The ref asked for (`None`: the remote's HEAD).
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// The commit checked out.
    pub commit: String,
    /// Which submodules were cloned into it (absent in the records of older versions:
    /// none).
    #[serde(
        default,
        skip_serializing_if = "crate::tasks::git_clone::submodules::Submodules::is_off"
    )]
    pub submodules: crate::tasks::git_clone::submodules::Submodules,
    /// The `--sparse` directories checked out (absent: everything).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sparse: Vec<String>,
}

/// What DEST holds before a clone.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Missing,
    Empty,
    /// A complete checkout made by initbox.
    Checkout(Checkout),
    /// A git checkout that initbox did not make (or not completely): its origin URL, if any.
    ForeignCheckout {
        origin: Option<String>,
    },
    /// Files that are not a checkout.
    Other,
}

/// git-clone's own view of its destination.
impl Destination {
    pub fn new(dest: &Path) -> Self {
        Self::with_layout(dest, &GIT)
    }

    /// Looks at DEST as it is now.
    pub fn inspect(&self) -> io::Result<Found> {
        let entries = match fs::read_dir(self.path()) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Found::Missing),
            Err(error) => return Err(error),
        };
        let names: Vec<String> = entries
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<io::Result<_>>()?;
        let meaningful = names
            .iter()
            .filter(|n| !IGNORED_ENTRIES.contains(&n.as_str()) && n.as_str() != INNER_STAGING)
            .count();
        if meaningful == 0 {
            return Ok(Found::Empty);
        }
        // A `.git` that is a symbolic link is not a checkout of ours: repairing it would
        // write wherever the link points.
        if kind_of(&self.path().join(".git")) != Some(true) {
            return Ok(Found::Other);
        }
        if let Some(checkout) = read_marker(self.path()) {
            return Ok(Found::Checkout(checkout));
        }
        Ok(Found::ForeignCheckout {
            origin: origin_url(self.path()),
        })
    }

    /// Marks a staged clone complete: from now on a killed run's successor installs it.
    /// Also tells git to ignore a future run's staging directory, so `git status` stays
    /// clean even while a later clone is under way.
    pub fn mark_complete(staging: &Path, checkout: &Checkout) -> io::Result<()> {
        let git_dir = staging.join(".git");
        let exclude = git_dir.join("info").join("exclude");
        let mut patterns = fs::read_to_string(&exclude).unwrap_or_default();
        let ignored = format!("/{INNER_STAGING}/");
        if !patterns.lines().any(|line| line == ignored) {
            if !patterns.is_empty() && !patterns.ends_with('\n') {
                patterns.push('\n');
            }
            patterns.push_str(&ignored);
            patterns.push('\n');
            atomic_file::write(&exclude, patterns.as_bytes(), None)?;
        }
        let json = serde_json::to_vec_pretty(checkout).map_err(io::Error::other)?;
        atomic_file::write(&git_dir.join(MARKER), &json, None)
    }
}

fn read_marker(checkout: &Path) -> Option<Checkout> {
    let text = fs::read(checkout.join(".git").join(MARKER)).ok()?;
    serde_json::from_slice(&text).ok()
}

/// `remote.origin.url` of a checkout, read without running git.
fn origin_url(checkout: &Path) -> Option<String> {
    let repo = gix::open_opts(checkout, gix::open::Options::isolated()).ok()?;
    let remote = repo.find_remote("origin").ok()?;
    let url = remote.url(gix::remote::Direction::Fetch)?;
    Some(url.to_bstring().to_string())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn checkout(commit: &str) -> Checkout {
        Checkout {
            repo: "https://git.example/app.git".into(),
            reference: Some("v1".into()),
            commit: commit.into(),
            submodules: Default::default(),
            sparse: Vec::new(),
        }
    }

    /// A staged "clone": a file, a directory and a .git with the marker.
    fn stage(destination: &Destination, content: &str) -> PathBuf {
        let staging = destination.staging().unwrap();
        fs::write(staging.join("app.conf"), content).unwrap();
        fs::create_dir_all(staging.join("sub")).unwrap();
        fs::write(staging.join("sub/x"), content).unwrap();
        fs::create_dir_all(staging.join(".git")).unwrap();
        staging
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn missing_dest_is_installed_by_one_rename() {
        let root = tempfile::tempdir().unwrap();
        let destination = Destination::new(&root.path().join("checkout"));
        assert_eq!(destination.inspect().unwrap(), Found::Missing);
        let staging = stage(&destination, "one");
        assert!(staging.starts_with(root.path()) && !staging.starts_with(destination.path()));
        Destination::mark_complete(&staging, &checkout("aaa")).unwrap();
        destination.install(&staging).unwrap();
        assert_eq!(
            destination.inspect().unwrap(),
            Found::Checkout(checkout("aaa"))
        );
        assert_eq!(listing(root.path()), ["checkout"]);
    }

    #[test]
    fn an_existing_dest_is_replaced_in_place() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("volume");
        fs::create_dir(&dest).unwrap();
        fs::create_dir(dest.join("lost+found")).unwrap();
        let destination = Destination::new(&dest);
        assert_eq!(destination.inspect().unwrap(), Found::Empty);
        let staging = stage(&destination, "one");
        assert_eq!(staging, dest.join(INNER_STAGING));
        Destination::mark_complete(&staging, &checkout("aaa")).unwrap();
        destination.install(&staging).unwrap();
        assert_eq!(listing(&dest), [".git", "app.conf", "lost+found", "sub"]);

        // A second clone replaces the first.
        fs::write(dest.join("stale-file"), "from the old ref").unwrap();
        let staging = stage(&destination, "two");
        Destination::mark_complete(&staging, &checkout("bbb")).unwrap();
        destination.install(&staging).unwrap();
        assert_eq!(listing(&dest), [".git", "app.conf", "lost+found", "sub"]);
        assert_eq!(fs::read_to_string(dest.join("sub/x")).unwrap(), "two");
        assert_eq!(
            destination.inspect().unwrap(),
            Found::Checkout(checkout("bbb"))
        );
    }

    #[test]
    fn an_incomplete_staging_is_discarded_and_dest_kept() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("volume");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("keep"), "user data").unwrap();
        let destination = Destination::new(&dest);
        let _staging = stage(&destination, "half");
        // Killed before mark_complete.
        assert!(!destination.recover().unwrap());
        assert_eq!(listing(&dest), ["keep"]);
        assert_eq!(destination.inspect().unwrap(), Found::Other);
    }

    #[test]
    fn an_install_killed_midway_is_finished_by_the_next_run() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("volume");
        fs::create_dir(&dest).unwrap();
        let destination = Destination::new(&dest);
        let staging = stage(&destination, "new");
        Destination::mark_complete(&staging, &checkout("ccc")).unwrap();
        // Killed after clearing DEST and moving app.conf, before sub and .git.
        fs::write(staging.join(".git").join(CLEARED), "").unwrap();
        fs::rename(staging.join("app.conf"), dest.join("app.conf")).unwrap();
        assert_eq!(
            destination.inspect().unwrap(),
            Found::Other,
            "half installed never looks like a checkout"
        );
        assert!(destination.recover().unwrap());
        assert_eq!(listing(&dest), [".git", "app.conf", "sub"]);
        assert_eq!(
            destination.inspect().unwrap(),
            Found::Checkout(checkout("ccc"))
        );
    }

    #[test]
    fn a_git_dir_without_the_marker_is_not_ours() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("repo");
        fs::create_dir_all(dest.join(".git")).unwrap();
        fs::write(dest.join("file"), "x").unwrap();
        let found = Destination::new(&dest).inspect().unwrap();
        assert!(matches!(found, Found::ForeignCheckout { .. }), "{found:?}");
    }

    #[test]
    fn a_planted_link_in_place_of_staging_is_removed_not_followed() {
        let root = tempfile::tempdir().unwrap();
        let dest = root.path().join("volume");
        let outside = root.path().join("outside");
        fs::create_dir_all(outside.join(".git")).unwrap();
        fs::write(outside.join("keep"), "outside").unwrap();
        let json = serde_json::to_vec(&checkout("ddd")).unwrap();
        fs::write(outside.join(".git").join(MARKER), json).unwrap();
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("data"), "x").unwrap();
        std::os::unix::fs::symlink(&outside, dest.join(INNER_STAGING)).unwrap();
        let destination = Destination::new(&dest);
        assert!(!destination.recover().unwrap(), "a link is never installed");
        assert_eq!(listing(&dest), ["data"]);
        assert_eq!(listing(&outside), [".git", "keep"]);
    }
}
