//! chown, chmod and remove on real volumes, as root: trees of thousands of files on tmpfs
//! and on a loop-mounted ext4 image (with its `lost+found`), a filesystem mounted inside
//! the tree with and without `--one-file-system`, a bind mount of `/` that remove must
//! refuse, and a thread that swaps a directory for a link to the outside over and over
//! while the walk runs, with proof that nothing outside the volume changed.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::{Mount, Sandbox, entries, eventually, need_root, path_str};

/// Owner, mode and ctime of every entry under `root`, never following links.
fn states(root: &Path) -> BTreeMap<PathBuf, (u32, u32, u32, i64, i64)> {
    fn walk(root: &Path, dir: &Path, all: &mut BTreeMap<PathBuf, (u32, u32, u32, i64, i64)>) {
        let Ok(list) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in list {
            let path = entry.unwrap().path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            all.insert(
                path.strip_prefix(root).unwrap().to_owned(),
                (
                    meta.uid(),
                    meta.gid(),
                    meta.mode() & 0o7777,
                    meta.ctime(),
                    meta.ctime_nsec(),
                ),
            );
            if meta.is_dir() {
                walk(root, &path, all);
            }
        }
    }
    let mut all = BTreeMap::new();
    walk(root, root, &mut all);
    all
}

/// `dirs` directories of `files` files each.
fn fill(root: &Path, dirs: usize, files: usize) {
    for d in 0..dirs {
        let dir = root.join(format!("dir{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("file{f}")), "x").unwrap();
        }
    }
}

/// An ext4 image mounted on a loop device for the test's lifetime, as a pod's block volume
/// is (with `lost+found` at its top).
struct Ext4 {
    mount: PathBuf,
    image: PathBuf,
}

impl Ext4 {
    fn new(image: PathBuf, mount: PathBuf) -> Ext4 {
        let run = |program: &str, args: &[&str]| {
            let status = Command::new(program).args(args).status().unwrap();
            assert!(status.success(), "{program} {args:?}");
        };
        run("truncate", &["-s", "64M", path_str(&image)]);
        run("mkfs.ext4", &["-q", "-F", path_str(&image)]);
        std::fs::create_dir_all(&mount).unwrap();
        run("mount", &["-o", "loop", path_str(&image), path_str(&mount)]);
        Ext4 { mount, image }
    }
}

impl Drop for Ext4 {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_file(&self.image);
    }
}

#[test]
fn an_ext4_volume_is_changed_except_lost_and_found_and_a_rerun_changes_nothing() {
    if !need_root() {
        return;
    }
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let volume = Ext4::new(sandbox.path("ext4.img"), sandbox.path("data"));
    let data = &volume.mount;
    fill(data, 50, 100);
    let found = states(&data.join("lost+found"));
    let run = |args: &[&str]| {
        sandbox
            .initbox()
            .args(args)
            .arg(data)
            .run()
            .assert_code(0)
            .stderr
            .clone()
    };
    let chown = ["chown", "-R", "--exclude", "lost+found", "1001:1001"];
    let stderr = run(&chown);
    assert!(
        stderr.contains("5051 changed, 0 unchanged, 1 skipped"),
        "{stderr}"
    );
    let before = states(data);
    let stderr = run(&chown);
    assert!(
        stderr.contains("0 changed, 5051 unchanged, 1 skipped"),
        "{stderr}"
    );
    let chmod = ["chmod", "-R", "--exclude", "lost+found", "u+rwX,g=u,o-rwx"];
    run(&chmod);
    let changed = states(data);
    run(&chmod);
    assert_eq!(states(data), changed, "a chmod re-run touched entries");
    assert_ne!(changed, before);
    for (path, (uid, _, mode, ..)) in &changed {
        if !path.starts_with("lost+found") {
            assert_eq!((*uid, mode & 0o007), (1001, 0), "{}", path.display());
        }
    }
    assert_eq!(states(&data.join("lost+found")), found);
    assert_eq!(
        std::fs::symlink_metadata(data.join("lost+found"))
            .unwrap()
            .uid(),
        0
    );
    // The volume's contents go, its lost+found and the mount point stay.
    run(&["remove", "--contents", "--exclude", "lost+found"]);
    assert_eq!(entries(data), ["lost+found"]);
}

#[test]
fn a_large_tmpfs_tree_is_walked_in_flat_memory() {
    if !need_root() {
        return;
    }
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let data = sandbox.path("data");
    let _mount = Mount::tmpfs(&data);
    fill(&data, 100, 100);
    // Deep as well as wide: a chain of 200 directories.
    let mut deep = data.join("deep");
    for level in 0..200 {
        deep = deep.join(format!("l{level}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    sandbox
        .initbox()
        .args(["chown", "-R", "7:7"])
        .arg(&data)
        .run()
        .assert_code(0)
        .assert_stderr_contains("10302 changed, 0 unchanged");
    sandbox
        .initbox()
        .args(["chmod", "-R", "0700"])
        .arg(&data)
        .run()
        .assert_code(0);
    assert!(states(&data).values().all(|s| s.0 == 7 && s.2 == 0o700));
    sandbox
        .initbox()
        .args(["remove", "--contents"])
        .arg(&data)
        .run()
        .assert_code(0)
        .assert_stderr_contains("10301 removed, 0 absent");
    assert!(entries(&data).is_empty());
}

#[test]
fn a_mount_inside_the_tree_is_left_alone_with_one_file_system_only() {
    if !need_root() {
        return;
    }
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let data = sandbox.path("data");
    let _outer = Mount::tmpfs(&data);
    fill(&data, 2, 5);
    let inner = data.join("dir1/mounted");
    let _inner = Mount::tmpfs(&inner);
    fill(&inner, 1, 5);
    let inner_before = states(&inner);
    let inner_top = std::fs::symlink_metadata(&inner).unwrap().uid();
    sandbox
        .initbox()
        .args(["chown", "-R", "--one-file-system", "1001"])
        .arg(&data)
        .run()
        .assert_code(0)
        .assert_stderr_contains("1 skipped");
    assert_eq!(states(&inner), inner_before);
    assert_eq!(std::fs::symlink_metadata(&inner).unwrap().uid(), inner_top);
    assert_eq!(
        std::fs::symlink_metadata(data.join("dir0/file0"))
            .unwrap()
            .uid(),
        1001
    );
    // Without --one-file-system, the walk goes into the other filesystem too.
    sandbox
        .initbox()
        .args(["chown", "-R", "1001"])
        .arg(&data)
        .run()
        .assert_code(0);
    assert!(states(&inner).values().all(|s| s.0 == 1001));
    // remove --one-file-system leaves the mount and what holds it; the rest goes.
    sandbox
        .initbox()
        .args(["remove", "--contents", "--one-file-system"])
        .arg(&data)
        .run()
        .assert_code(0);
    assert_eq!(entries(&data), ["dir1"]);
    assert_eq!(entries(&data.join("dir1")), ["mounted"]);
    assert_eq!(entries(&inner).len(), 1);
    // Without it, the mount is emptied and then named as what cannot be removed.
    sandbox
        .initbox()
        .args(["remove", "--contents"])
        .arg(&data)
        .run()
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "removing {}: it is a mount point",
            inner.display()
        ));
    assert!(entries(&inner).is_empty());
}

#[test]
fn remove_refuses_the_root_directory_under_another_name() {
    if !need_root() {
        return;
    }
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let host = sandbox.path("host");
    std::fs::create_dir(&host).unwrap();
    // Read-only, so that even a broken check could not remove a thing.
    let status = Command::new("mount")
        .args(["--bind", "-o", "ro", "/"])
        .arg(&host)
        .status()
        .unwrap();
    assert!(status.success());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(host.clone());
    let marker = sandbox.write("marker", "x");
    for args in [vec!["remove"], vec!["remove", "--contents"]] {
        sandbox
            .initbox()
            .args(&args)
            .arg(&marker)
            .arg(&host)
            .run()
            .assert_code(2)
            .assert_stderr_contains("it is the root directory /");
        assert!(marker.exists(), "something was removed before the refusal");
    }
}

/// Exchanges each `(name, link to the outside)` pair atomically (renameat2
/// RENAME_EXCHANGE), over and over until stopped: at any moment the name the walk listed
/// is as likely a link to the outside as what it was.
fn swapper(
    pairs: Vec<(PathBuf, PathBuf)>,
    stop: Arc<AtomicBool>,
    swaps: Arc<AtomicUsize>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            for (name, link) in &pairs {
                if rustix::fs::renameat_with(
                    rustix::fs::CWD,
                    name,
                    rustix::fs::CWD,
                    link,
                    rustix::fs::RenameFlags::EXCHANGE,
                )
                .is_ok()
                {
                    swaps.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
}

#[test]
fn a_directory_swapped_for_a_link_during_the_walk_never_redirects_it() {
    if !need_root() {
        return;
    }
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let data = sandbox.path("data");
    let outside = sandbox.path("outside");
    fill(&outside, 3, 20);
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    let outside_before = states(&outside);
    let outside_top = std::fs::symlink_metadata(&outside).unwrap().mode();
    for command in [
        vec!["chown", "-R", "1001:1001"],
        vec!["chmod", "-R", "a+rwx"],
        vec!["chown", "-R", "0:0"],
        vec!["chmod", "-R", "go-rwx"],
        vec!["remove"],
    ] {
        for _ in 0..20 {
            // A fresh tree each round (the last one may have ended mid-exchange).
            let _ = std::fs::remove_dir_all(&data);
            fill(&data.join("swapped"), 5, 40);
            fill(&data, 3, 10);
            // A directory and many files, each with a link to the outside to trade places
            // with: a change made by name after the entry was examined would land outside.
            let mut pairs = vec![(data.join("swapped"), outside.clone())];
            for f in 0..20 {
                let name = format!("file{f}");
                std::fs::write(data.join(&name), "x").unwrap();
                pairs.push((
                    data.join(name),
                    outside.join(format!("dir{}/file{f}", f % 3)),
                ));
            }
            let pairs = pairs
                .into_iter()
                .map(|(name, target)| {
                    let link = name.with_extension("link");
                    std::os::unix::fs::symlink(target, &link).unwrap();
                    (name, link)
                })
                .collect();
            let stop = Arc::new(AtomicBool::new(false));
            let swaps = Arc::new(AtomicUsize::new(0));
            let thread = swapper(pairs, stop.clone(), swaps.clone());
            assert!(
                eventually(Duration::from_secs(10), || swaps.load(Ordering::Relaxed)
                    > 0),
                "the swapping thread never ran"
            );
            let output = sandbox.initbox().args(&command).arg(&data).run();
            stop.store(true, Ordering::Relaxed);
            thread.join().unwrap();
            assert!(
                output.code == 0 || output.code == 1,
                "{command:?}: {}",
                output.stderr
            );
            let after = states(&outside);
            let changed: Vec<_> = after
                .iter()
                .filter(|(path, state)| outside_before.get(*path) != Some(state))
                .map(|(path, _)| path.display().to_string())
                .take(3)
                .collect();
            assert!(
                changed.is_empty(),
                "{command:?} changed the outside: {changed:?}, …"
            );
            assert_eq!(
                after.len(),
                outside_before.len(),
                "{command:?} removed outside files"
            );
            assert_eq!(
                std::fs::symlink_metadata(&outside).unwrap().mode(),
                outside_top,
                "{command:?} changed the outside directory"
            );
        }
    }
}
