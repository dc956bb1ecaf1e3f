//! chown, chmod, mkdir and remove on real trees: every entry reached, links changed (or
//! passed by) themselves and never followed out of the tree, re-runs that change nothing
//! (not even a ctime), the pipeline steps, and the permission errors of a non-root user.
//! The heavy trees, mounts and the race against a swapping thread are in tests/serial.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Sandbox, need_root, nonroot_copy, path_str};

/// Owner, mode and ctime of one entry, read without following links.
#[derive(Debug, Clone, PartialEq, Eq)]
struct State {
    uid: u32,
    gid: u32,
    mode: u32,
    ctime: (i64, i64),
}

fn state(path: &Path) -> State {
    let meta = std::fs::symlink_metadata(path).unwrap();
    State {
        uid: meta.uid(),
        gid: meta.gid(),
        mode: meta.mode() & 0o7777,
        ctime: (meta.ctime(), meta.ctime_nsec()),
    }
}

/// Every entry under `root` (itself included), by relative path, never following links.
fn states(root: &Path) -> BTreeMap<PathBuf, State> {
    fn walk(root: &Path, dir: &Path, all: &mut BTreeMap<PathBuf, State>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            all.insert(path.strip_prefix(root).unwrap().to_owned(), state(&path));
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                walk(root, &path, all);
            }
        }
    }
    let mut all = BTreeMap::new();
    all.insert(PathBuf::new(), state(root));
    walk(root, root, &mut all);
    all
}

/// A tree of `dirs` × `files` regular files two levels deep, with a hard link, a link to a
/// file outside the tree and a link to `/`; returns the file outside.
fn volume(root: &Path, dirs: usize, files: usize) -> PathBuf {
    let outside = root.with_file_name(format!(
        "{}-outside",
        root.file_name().unwrap().to_string_lossy()
    ));
    std::fs::create_dir_all(&outside).unwrap();
    let secret = outside.join("secret");
    std::fs::write(&secret, "outside").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    for d in 0..dirs {
        let dir = root.join(format!("d{d}")).join("inner");
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..files {
            std::fs::write(dir.join(format!("f{f}")), "x").unwrap();
        }
    }
    std::os::unix::fs::symlink(&secret, root.join("to-secret")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("to-outside-dir")).unwrap();
    std::os::unix::fs::symlink("/", root.join("to-root")).unwrap();
    std::fs::hard_link(root.join("d0/inner/f0"), root.join("hardlink")).unwrap();
    std::fs::write(root.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(root.join("run.sh"), std::fs::Permissions::from_mode(0o744)).unwrap();
    secret
}

/// The two counts of a command's summary line (`chown: 12 changed, 3 unchanged in 0.1s`).
fn summary_counts(stderr: &str, command: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .rev()
        .find_map(|line| {
            line.split_once(&format!("{command}: "))
                .map(|(_, rest)| rest)
        })
        .unwrap_or_else(|| panic!("no summary line of {command}: {stderr}"));
    let numbers: Vec<u64> = line
        .split([' ', ','])
        .filter_map(|word| word.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

/// Whether this machine lets a walk be shared among threads (more than one CPU).
fn walks_are_shared() -> bool {
    std::thread::available_parallelism().is_ok_and(|n| n.get() > 1)
}

fn outside_states(sandbox: &Sandbox) -> (BTreeMap<PathBuf, State>, State) {
    (states(&sandbox.path("vol-outside")), state(Path::new("/")))
}

#[test]
fn chown_recursive_changes_every_entry_and_links_themselves_never_their_targets() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    volume(&root, 20, 100);
    let before_outside = outside_states(&sandbox);
    let entries = states(&root).len();
    let output = sandbox
        .initbox()
        .args(["chown", "-R", "1001:1002"])
        .arg(&root)
        .run();
    output.assert_code(0);
    // The hard link's second name finds its inode changed already, unless the two names
    // were reached by two threads of the walk at the same moment.
    let (changed, unchanged) = summary_counts(&output.stderr, "chown");
    assert_eq!(changed + unchanged, entries as u64, "{}", output.stderr);
    assert!(unchanged <= 1, "{}", output.stderr);
    for (path, state) in states(&root) {
        assert_eq!((state.uid, state.gid), (1001, 1002), "{}", path.display());
    }
    assert_eq!(
        outside_states(&sandbox),
        before_outside,
        "something outside changed"
    );
}

#[test]
fn a_rerun_changes_nothing_not_even_a_ctime() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    volume(&root, 5, 50);
    let entries = states(&root).len();
    for args in [["chown", "-R", "1001:1001"], ["chmod", "-R", "g+rwX,o-rwx"]] {
        sandbox.initbox().args(args).arg(&root).run().assert_code(0);
        let before = states(&root);
        sandbox
            .initbox()
            .args(args)
            .arg(&root)
            .run()
            .assert_code(0)
            .assert_stderr_contains(&format!(
                "0 changed, {}",
                entries - 3 * (args[0] == "chmod") as usize
            ));
        assert_eq!(states(&root), before, "{args:?} touched an entry again");
    }
}

#[test]
fn chown_changes_only_the_entries_whose_owner_differs() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    volume(&root, 2, 10);
    sandbox
        .initbox()
        .args(["chown", "-R", "7:7"])
        .arg(&root)
        .run()
        .assert_code(0);
    std::os::unix::fs::lchown(root.join("d1/inner/f3"), Some(0), Some(0)).unwrap();
    let before = states(&root);
    sandbox
        .initbox()
        .args(["chown", "-R", "7:7"])
        .arg(&root)
        .run()
        .assert_code(0)
        .assert_stderr_contains("chown: 1 changed, ");
    let after = states(&root);
    for (path, state) in &after {
        if path != Path::new("d1/inner/f3") {
            assert_eq!(state, &before[path], "{} was touched", path.display());
        }
    }
    assert_eq!(after[Path::new("d1/inner/f3")].uid, 7);
}

#[test]
fn if_root_differs_leaves_the_tree_alone_when_its_top_has_the_owner() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    volume(&root, 2, 10);
    std::os::unix::fs::lchown(&root, Some(1001), Some(1001)).unwrap();
    sandbox
        .initbox()
        .args(["chown", "-R", "--if-root-differs", "1001:1001"])
        .arg(&root)
        .run()
        .assert_code(0)
        .assert_stderr_contains("its tree is left as is (--if-root-differs)");
    assert_eq!(
        state(&root.join("d0/inner/f0")).uid,
        0,
        "the tree was walked"
    );
    // A top with another owner: the whole tree is changed.
    sandbox
        .initbox()
        .args(["chown", "-R", "--if-root-differs", "1002:1002"])
        .arg(&root)
        .run()
        .assert_code(0);
    assert_eq!(state(&root.join("d0/inner/f0")).uid, 1002);
    // chmod follows the same rule with the top's mode.
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o770)).unwrap();
    sandbox
        .initbox()
        .args(["chmod", "-R", "--if-root-differs", "g+rwX"])
        .arg(&root)
        .run()
        .assert_code(0)
        .assert_stderr_contains("already has mode 0770");
    assert_eq!(state(&root.join("d0/inner/f0")).mode, 0o644);
}

#[test]
fn excluded_names_are_skipped_at_the_top_level_only() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    for dir in ["lost+found/deep", ".snapshot", "data/lost+found"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    sandbox
        .initbox()
        .args([
            "chown",
            "-R",
            "--exclude",
            "lost+found",
            "--exclude",
            ".snapshot",
            "5:5",
        ])
        .arg(&root)
        .run()
        .assert_code(0)
        .assert_stderr_contains("3 changed, 0 unchanged, 2 skipped");
    assert_eq!(state(&root.join("lost+found")).uid, 0);
    assert_eq!(state(&root.join("lost+found/deep")).uid, 0);
    assert_eq!(state(&root.join(".snapshot")).uid, 0);
    assert_eq!(
        state(&root.join("data/lost+found")).uid,
        5,
        "only the top level is excluded"
    );
}

/// Two copies of a tree, one changed by coreutils, one by initbox: every mode must match.
#[test]
fn chmod_recursive_gives_what_coreutils_chmod_gives_on_a_tree() {
    let sandbox = Sandbox::new();
    for mode in [
        "u+rwX,g=u,o-rwx",
        "a+X",
        "0750",
        "go-w",
        "u=rwx,g=rx,o=",
        "+t",
        "g+s",
    ] {
        let ours = sandbox.path(&format!("ours{}", mode.len()));
        let theirs = sandbox.path(&format!("theirs{}", mode.len()));
        for root in [&ours, &theirs] {
            let _ = std::fs::remove_dir_all(root);
            for (i, name) in ["a", "b/c", "b/d/e"].iter().enumerate() {
                let dir = root.join(name);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::set_permissions(
                    &dir,
                    std::fs::Permissions::from_mode(0o700 | (i as u32 * 0o21)),
                )
                .unwrap();
                for (j, file_mode) in [0o600, 0o644, 0o755, 0o4711, 0o000].iter().enumerate() {
                    let file = dir.join(format!("f{j}"));
                    std::fs::write(&file, "x").unwrap();
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(*file_mode))
                        .unwrap();
                }
            }
        }
        let status = Command::new("chmod")
            .args(["-R", mode])
            .arg(&theirs)
            .status()
            .unwrap();
        assert!(status.success());
        sandbox
            .initbox()
            .args(["chmod", "-R", mode])
            .arg(&ours)
            .run()
            .assert_code(0);
        let modes = |root: &Path| -> BTreeMap<PathBuf, u32> {
            states(root).into_iter().map(|(p, s)| (p, s.mode)).collect()
        };
        assert_eq!(modes(&ours), modes(&theirs), "chmod -R {mode}");
    }
}

#[test]
fn chmod_never_follows_a_link_out_of_the_tree() {
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    let secret = volume(&root, 1, 2);
    let before_outside = outside_states(&sandbox);
    sandbox
        .initbox()
        .args(["chmod", "-R", "a+rwx"])
        .arg(&root)
        .run()
        .assert_code(0)
        .assert_stderr_contains("3 skipped");
    assert_eq!(outside_states(&sandbox), before_outside);
    assert_eq!(state(&secret).mode, 0o600);
    assert_eq!(state(&root.join("d0/inner/f1")).mode, 0o777);
    // A link named on the command line is passed by too.
    sandbox
        .initbox()
        .args(["chmod", "0666"])
        .arg(root.join("to-secret"))
        .run()
        .assert_code(0)
        .assert_stderr_contains("0 changed, 0 unchanged, 1 skipped");
    assert_eq!(state(&secret).mode, 0o600);
}

#[test]
fn chown_of_a_named_link_changes_the_link_not_its_target() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    let secret = volume(&root, 1, 1);
    for link in ["to-secret", "to-outside-dir", "to-root"] {
        sandbox
            .initbox()
            .args(["chown", "-R", "1001:1001"])
            .arg(root.join(link))
            .run()
            .assert_code(0);
        assert_eq!(state(&root.join(link)).uid, 1001, "{link}");
    }
    assert_eq!(state(&secret).uid, 0);
    assert_eq!(state(Path::new("/")).uid, 0);
    assert_eq!(state(secret.parent().unwrap()).uid, 0);
}

#[test]
fn owner_names_are_read_from_etc_passwd_and_unknown_names_exit_2() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let file = sandbox.write("f", "x");
    std::os::unix::fs::lchown(&file, Some(1), Some(1)).unwrap();
    sandbox
        .initbox()
        .args(["chown", "root:root"])
        .arg(&file)
        .run()
        .assert_code(0);
    assert_eq!((state(&file).uid, state(&file).gid), (0, 0));
    sandbox
        .initbox()
        .args(["chown", "no-such-user-here"])
        .arg(&file)
        .run()
        .assert_code(2)
        .assert_stderr_contains("no user 'no-such-user-here' in /etc/passwd; give a numeric uid");
}

#[test]
fn a_missing_path_is_exit_1_naming_it_except_for_remove() {
    let sandbox = Sandbox::new();
    let missing = sandbox.path("no/such/dir");
    for args in [["chown", "0"], ["chmod", "0755"]] {
        sandbox
            .initbox()
            .args(args)
            .arg(&missing)
            .run()
            .assert_code(1)
            .assert_stderr_contains(&format!("{}: no such file or directory", missing.display()));
    }
    sandbox
        .initbox()
        .arg("remove")
        .arg(&missing)
        .run()
        .assert_code(0)
        .assert_stderr_contains("remove: 0 removed, 1 absent");
}

#[test]
fn bad_modes_and_owners_exit_2_before_anything_is_touched_and_78_under_check() {
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    volume(&root, 1, 3);
    let before = states(&root);
    let r = path_str(&root);
    for args in [
        vec!["chown", "-R", "1001:1001:1", r],
        vec!["chmod", "-R", "a+rwq", r],
        vec!["chmod", "-R", "0755", r, "--exclude"],
        vec!["mkdir", "--mode", "999", r],
    ] {
        sandbox.initbox().args(&args).run().assert_code(2);
    }
    assert_eq!(states(&root), before);
    let pipeline = sandbox.write(
        "p.yaml",
        &format!(
            "steps:\n  - name: perms\n    chmod: {{mode: 'u+rwz', paths: [{r}], recursive: true}}\n"
        ),
    );
    for check in [true, false] {
        let mut command = sandbox.initbox().arg("run").arg("-f").arg(&pipeline);
        if check {
            command = command.arg("--check");
        }
        command
            .run()
            .assert_code(78)
            .assert_stderr_contains("'u+rwz' is not a file mode");
    }
    assert_eq!(states(&root), before);
}

#[test]
fn mkdir_creates_parents_and_settles_the_mode_and_owner_of_what_it_created_and_named() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let existing = sandbox.path("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let owner_and_mode = |s: State| (s.uid, s.gid, s.mode);
    let existing_before = owner_and_mode(state(&existing));
    let named = existing.join("a/b/c");
    let run = || {
        sandbox
            .initbox()
            .args(["mkdir", "--mode", "0750", "--owner", "1001:1002"])
            .arg(&named)
            .run()
    };
    run()
        .assert_code(0)
        .assert_stderr_contains("mkdir: 3 created or changed, 0 unchanged");
    for dir in ["a", "a/b", "a/b/c"] {
        let s = state(&existing.join(dir));
        assert_eq!((s.uid, s.gid, s.mode), (1001, 1002, 0o750), "{dir}");
    }
    assert_eq!(
        owner_and_mode(state(&existing)),
        existing_before,
        "an existing parent was changed"
    );
    // Idempotent, and an existing named directory converges to the mode and owner.
    run()
        .assert_code(0)
        .assert_stderr_contains("0 created or changed, 1 unchanged");
    std::os::unix::fs::lchown(&named, Some(0), Some(0)).unwrap();
    std::fs::set_permissions(&named, std::fs::Permissions::from_mode(0o777)).unwrap();
    run()
        .assert_code(0)
        .assert_stderr_contains("1 created or changed");
    let s = state(&named);
    assert_eq!((s.uid, s.gid, s.mode), (1001, 1002, 0o750));
    // Without --mode, a new directory gets 0777 minus the umask.
    sandbox
        .initbox()
        .arg("mkdir")
        .arg(existing.join("plain"))
        .run()
        .assert_code(0);
    assert_eq!(state(&existing.join("plain")).mode, 0o755);
}

#[test]
fn mkdir_refuses_a_file_in_the_way_and_a_named_link() {
    let sandbox = Sandbox::new();
    let file = sandbox.write("file", "x");
    sandbox
        .initbox()
        .arg("mkdir")
        .arg(file.join("sub"))
        .run()
        .assert_code(1)
        .assert_stderr_contains("exists and is not a directory");
    let outside = sandbox.path("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(&outside, sandbox.path("link")).unwrap();
    sandbox
        .initbox()
        .args(["mkdir", "--mode", "0777"])
        .arg(sandbox.path("link"))
        .run()
        .assert_code(1)
        .assert_stderr_contains("is a symbolic link");
    assert_eq!(state(&outside).mode, 0o700);
}

#[test]
fn remove_deletes_trees_and_links_themselves_never_their_targets() {
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    let secret = volume(&root, 3, 30);
    let before_outside = outside_states(&sandbox);
    sandbox
        .initbox()
        .arg("remove")
        .arg(root.join("to-outside-dir"))
        .arg(root.join("to-root"))
        .arg(&root)
        .run()
        .assert_code(0)
        .assert_stderr_contains("remove: ");
    assert!(!root.exists());
    assert_eq!(outside_states(&sandbox), before_outside);
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "outside");
}

#[test]
fn remove_contents_empties_a_directory_but_keeps_it_and_what_is_excluded() {
    let sandbox = Sandbox::new();
    let root = sandbox.path("vol");
    volume(&root, 2, 5);
    std::fs::create_dir(root.join("lost+found")).unwrap();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
    let top = state(&root);
    sandbox
        .initbox()
        .args(["remove", "--contents", "--exclude", "lost+found"])
        .arg(&root)
        .run()
        .assert_code(0);
    assert_eq!(crate::support::entries(&root), ["lost+found"]);
    assert_eq!((state(&root).uid, state(&root).mode), (top.uid, top.mode));
    sandbox
        .initbox()
        .args(["remove", "--contents"])
        .arg(root.join("lost+found"))
        .arg(sandbox.path("missing"))
        .run()
        .assert_code(0);
    sandbox
        .initbox()
        .args(["remove", "--contents"])
        .arg(sandbox.write("file", "x"))
        .run()
        .assert_code(1)
        .assert_stderr_contains("not a directory");
}

#[test]
fn a_walk_shared_among_threads_reaches_every_entry_once_and_adds_up_its_counts() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    // The tree branches one level down, as a database volume does (`/data/pgdata/...`).
    let root = sandbox.path("vol");
    let top = root.join("pgdata");
    for d in 0..40 {
        let dir = top.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..25 {
            std::fs::write(dir.join(format!("f{f}")), "x").unwrap();
        }
    }
    let entries = states(&root).len() as u64;
    let chown = sandbox
        .initbox()
        .args(["-v", "chown", "-R", "1001:1001"])
        .arg(&root)
        .run();
    chown.assert_code(0);
    assert_eq!(
        summary_counts(&chown.stderr, "chown"),
        (entries, 0),
        "{}",
        chown.stderr
    );
    if walks_are_shared() {
        chown.assert_stderr_contains(&format!("the walk below {} is shared among", top.display()));
    }
    for (path, state) in states(&root) {
        assert_eq!((state.uid, state.gid), (1001, 1001), "{}", path.display());
    }
    let chmod = sandbox
        .initbox()
        .args(["chmod", "-R", "g-w,o="])
        .arg(&root)
        .run();
    chmod.assert_code(0);
    assert_eq!(
        summary_counts(&chmod.stderr, "chmod"),
        (entries, 0),
        "{}",
        chmod.stderr
    );
    for (path, state) in states(&root) {
        assert_eq!(state.mode & 0o027, 0, "{}", path.display());
    }

    // Removing: the name excluded is taken by whichever thread; the top holds it and
    // stays, which is not an error whichever thread skipped it (tried at several places
    // of the listing, so that another thread than the first takes it in some rounds).
    for round in 0..8 {
        let excluded = format!("d{}", round * 5);
        let output = sandbox
            .initbox()
            .args(["remove", "--exclude", &excluded])
            .arg(&top)
            .run();
        output.assert_code(0);
        assert_eq!(
            crate::support::entries(&top),
            [excluded],
            "{}",
            output.stderr
        );
        for d in 0..40 {
            let dir = top.join(format!("d{d}"));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("f"), "x").unwrap();
        }
    }
}

#[test]
fn the_volume_tasks_run_as_pipeline_steps() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let data = sandbox.path("data");
    std::fs::create_dir_all(data.join("lost+found")).unwrap();
    std::fs::create_dir_all(data.join("old/cache")).unwrap();
    std::fs::write(data.join("old/cache/x"), "x").unwrap();
    std::fs::write(data.join("keep"), "x").unwrap();
    let d = path_str(&data);
    let pipeline = sandbox.write(
        "p.yaml",
        &format!(
            "steps:
  - name: clean
    remove: {{paths: [{d}/old]}}
  - name: dirs
    mkdir: {{paths: [{d}/db, {d}/logs], mode: '0750', owner: '1001:1001'}}
    needs: [clean]
  - name: own
    chown: {{owner: '1001:1001', paths: [{d}], recursive: true, exclude: [lost+found]}}
    needs: [dirs]
  - name: perms
    chmod: {{mode: 'g+rwX,o-rwx', paths: [{d}], recursive: true, exclude: [lost+found]}}
    needs: [own]
"
        ),
    );
    sandbox
        .initbox()
        .arg("run")
        .arg("-f")
        .arg(&pipeline)
        .run()
        .assert_code(0);
    assert!(!data.join("old").exists());
    assert_eq!(state(&data.join("lost+found")).uid, 0);
    for entry in ["", "keep", "db", "logs"] {
        let s = state(&data.join(entry));
        assert_eq!(s.uid, 1001, "{entry}");
        assert_eq!(s.mode & 0o007, 0, "{entry}");
    }
    assert_eq!(state(&data.join("db")).mode, 0o770);
    assert_eq!(state(&data.join("keep")).mode, 0o660);
}

/// A sandbox uid 65532 may enter, and a copy of the binary it may run.
fn nonroot_sandbox() -> (Sandbox, tempfile::TempDir, PathBuf) {
    let sandbox = Sandbox::new();
    std::fs::set_permissions(sandbox.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (keep, binary) = nonroot_copy();
    (sandbox, keep, binary)
}

/// uid 65532 (the distroless `nonroot` user), as an init container without runAsUser: 0.
fn as_nonroot(sandbox: &Sandbox, binary: &Path, args: &[&str]) -> crate::support::Output {
    sandbox
        .initbox_at(binary)
        .args(args)
        .wrapped_in(&[
            "setpriv",
            "--reuid",
            "65532",
            "--regid",
            "65532",
            "--clear-groups",
        ])
        .run()
}

#[test]
fn a_permission_error_is_fatal_at_once_with_the_remedy() {
    if !need_root() {
        return;
    }
    let (sandbox, _keep, binary) = nonroot_sandbox();
    let root = sandbox.path("vol");
    volume(&root, 2, 3);
    let mine = sandbox.path("mine");
    std::fs::create_dir(&mine).unwrap();
    std::os::unix::fs::lchown(&mine, Some(65532), Some(65532)).unwrap();
    let r = path_str(&root);
    as_nonroot(&sandbox, &binary, &["chown", "-R", "65532", r])
        .assert_code(1)
        .assert_stderr_contains(&format!("changing the owner of {r}/"))
        .assert_stderr_contains("runAsUser: 0")
        .assert_stderr_contains("CAP_CHOWN");
    as_nonroot(&sandbox, &binary, &["chmod", "-R", "o-rwx", r])
        .assert_code(1)
        .assert_stderr_contains(&format!("changing the mode of {r}/"))
        .assert_stderr_contains("CAP_FOWNER");
    as_nonroot(&sandbox, &binary, &["remove", &format!("{r}/d0")])
        .assert_code(1)
        .assert_stderr_contains("permission denied")
        .assert_stderr_contains("runAsUser: 0");
    as_nonroot(&sandbox, &binary, &["mkdir", &format!("{r}/new")])
        .assert_code(1)
        .assert_stderr_contains(&format!("creating directory {r}/new: permission denied"));
    // What the user owns it may change, and giving it away is refused.
    as_nonroot(&sandbox, &binary, &["chmod", "0700", path_str(&mine)]).assert_code(0);
    as_nonroot(&sandbox, &binary, &["chown", "0", path_str(&mine)])
        .assert_code(1)
        .assert_stderr_contains("CAP_CHOWN");
    // A directory it cannot read: the walk names it and the capability that would help.
    let locked = mine.join("locked");
    std::fs::create_dir(&locked).unwrap();
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o700)).unwrap();
    as_nonroot(
        &sandbox,
        &binary,
        &["chmod", "-R", "u+rwX", path_str(&mine)],
    )
    .assert_code(1)
    .assert_stderr_contains(&format!(
        "opening the directory {}: permission denied",
        locked.display()
    ))
    .assert_stderr_contains("CAP_DAC_READ_SEARCH");
    assert_eq!(state(&root).uid, 0);
}

#[test]
fn a_tree_walk_cut_short_leaves_its_top_unchanged_so_if_root_differs_redoes_it() {
    if !need_root() {
        return;
    }
    let (sandbox, _keep, binary) = nonroot_sandbox();
    // The user's own volume (group 0, as a fresh volume often is) with one file that is
    // not theirs: the walk changes what it may, then fails on that file.
    let root = sandbox.path("vol");
    std::fs::create_dir_all(root.join("a")).unwrap();
    std::fs::write(root.join("a/mine"), "").unwrap();
    std::fs::write(root.join("a/roots"), "").unwrap();
    for entry in ["", "a", "a/mine"] {
        std::os::unix::fs::lchown(root.join(entry), Some(65532), Some(0)).unwrap();
    }
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
    let r = path_str(&root);
    for args in [
        ["chown", "-R", "--if-root-differs", "65532:65532", r],
        ["chmod", "-R", "--if-root-differs", "0700", r],
    ] {
        as_nonroot(&sandbox, &binary, &args)
            .assert_code(1)
            .assert_stderr_contains(&format!("{r}/a/roots"));
        // The top is what --if-root-differs reads: it must still say "not done".
        let top = state(&root);
        assert_eq!((top.gid, top.mode), (0, 0o750), "{}", args[0]);
        as_nonroot(&sandbox, &binary, &args)
            .assert_code(1)
            .assert_stderr_contains(&format!("{r}/a/roots"));
    }
    // Once the file is the user's too, the re-run finishes and only then marks the top.
    std::os::unix::fs::lchown(root.join("a/roots"), Some(65532), Some(0)).unwrap();
    as_nonroot(
        &sandbox,
        &binary,
        &["chown", "-R", "--if-root-differs", "65532:65532", r],
    )
    .assert_code(0);
    assert_eq!(state(&root).gid, 65532);
    assert_eq!(state(&root.join("a/roots")).gid, 65532);
}

/// YAML 1.2 writes an octal number as `0o640`, and a pipeline passes a number on as written:
/// every command with a mode takes that spelling as the octal mode it is, as `0640`.
#[test]
fn a_yaml_1_2_octal_mode_in_a_pipeline_is_that_mode_for_every_command() {
    let sandbox = Sandbox::new();
    let root = sandbox.path("v");
    std::fs::create_dir(&root).unwrap();
    std::fs::write(root.join("plain"), "x").unwrap();
    let template = sandbox.write("app.conf.j2", "port={{ 80 }}\n");
    let d = path_str(&root);
    let pipeline = sandbox.write(
        "p.yaml",
        &format!(
            "steps:
  - name: dirs
    mkdir: {{paths: [{d}/db], mode: 0o750}}
  - name: conf
    write: {{file: {d}/written, content: x, mode: 0o640}}
  - name: perms
    chmod: {{mode: 0o600, paths: [{d}/plain]}}
  - name: seed
    copy: {{paths: [{d}/plain, {d}/copied], mode: 0o604}}
    needs: [perms]
  - name: render
    template: {{src: {t}, dest: {d}/app.conf, mode: 0o644}}
",
            t = path_str(&template)
        ),
    );
    sandbox.check_pipeline(&pipeline).assert_code(0);
    sandbox
        .initbox()
        .args(["run", "-f", path_str(&pipeline)])
        .run()
        .assert_code(0);
    for (name, mode) in [
        ("db", 0o750),
        ("written", 0o640),
        ("plain", 0o600),
        ("copied", 0o604),
        ("app.conf", 0o644),
    ] {
        assert_eq!(state(&root.join(name)).mode, mode, "{name}");
    }
    // On the command line too.
    sandbox
        .initbox()
        .args(["chmod", "0o640", d])
        .run()
        .assert_code(0);
    assert_eq!(state(&root).mode, 0o640);
}
