//! link, sysctl, install, write and copy: what they leave on a real filesystem, the
//! attacks a volume's planted links make on them, and the same tasks as pipeline steps.
//! The tests that need namespaces or kill -9 are in tests/serial/volume_faults.rs.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use crate::support::{Sandbox, entries, tree};

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

// ---------------------------------------------------------------------------------------
// link
// ---------------------------------------------------------------------------------------

#[test]
fn link_makes_replaces_and_keeps_a_link_like_ln_sfn() {
    let sandbox = Sandbox::new();
    let link = sandbox.path("current");
    let link = path_str(&link);
    sandbox
        .initbox()
        .args(["link", "releases/v1", link])
        .run()
        .assert_code(0)
        .assert_stderr_contains("created");
    assert_eq!(fs::read_link(link).unwrap(), Path::new("releases/v1"));
    // A link to a directory is replaced, not followed (the -n of ln -sfn).
    fs::create_dir_all(sandbox.path("releases/v1")).unwrap();
    sandbox
        .initbox()
        .args(["link", "releases/v2", link])
        .run()
        .assert_code(0)
        .assert_stderr_contains("replaced");
    assert_eq!(fs::read_link(link).unwrap(), Path::new("releases/v2"));
    assert!(entries(&sandbox.path("releases/v1")).is_empty());
    sandbox
        .initbox()
        .args(["link", "releases/v2", link])
        .run()
        .assert_code(0)
        .assert_stderr_contains("unchanged");
    // A file is replaced too; nothing is left beside the link.
    fs::write(sandbox.path("file"), "x").unwrap();
    sandbox
        .initbox()
        .args(["link", "/etc/hostname", path_str(&sandbox.path("file"))])
        .run()
        .assert_code(0);
    assert!(
        fs::symlink_metadata(sandbox.path("file"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        entries(sandbox.dir.path()),
        ["current", "file", "hosts", "releases"]
    );
}

#[test]
fn link_over_a_real_directory_is_refused_and_nothing_is_made_inside_it() {
    let sandbox = Sandbox::new();
    let dir = sandbox.path("data");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("keep"), "x").unwrap();
    sandbox
        .initbox()
        .args(["link", "/new", path_str(&dir)])
        .run()
        .assert_code(1)
        .assert_stderr_contains("a directory is there");
    assert_eq!(entries(&dir), ["keep"]);
    // A missing directory for the link is named.
    sandbox
        .initbox()
        .args(["link", "x", path_str(&sandbox.path("nowhere/link"))])
        .run()
        .assert_code(1)
        .assert_stderr_contains("nowhere");
}

// ---------------------------------------------------------------------------------------
// install
// ---------------------------------------------------------------------------------------

#[test]
fn install_copies_a_runnable_binary_once_and_prints_its_path() {
    let sandbox = Sandbox::new();
    let tools = sandbox.path("tools");
    let output = sandbox.initbox().args(["install", path_str(&tools)]).run();
    output.assert_code(0);
    let installed = tools.join("initbox");
    assert_eq!(output.stdout.trim(), path_str(&installed));
    assert_eq!(mode(&installed), 0o755);
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(crate::support::binary()).unwrap()
    );
    // The installed copy runs.
    sandbox
        .initbox_at(&installed)
        .args(["link", "a", path_str(&tools.join("l"))])
        .run()
        .assert_code(0);
    // Unchanged: the same inode stays (not rewritten); a damaged copy is replaced.
    use std::os::unix::fs::MetadataExt;
    let inode = fs::metadata(&installed).unwrap().ino();
    sandbox
        .initbox()
        .args(["install", path_str(&tools)])
        .run()
        .assert_code(0)
        .assert_stderr_contains("already this initbox");
    assert_eq!(fs::metadata(&installed).unwrap().ino(), inode);
    fs::write(&installed, "#!/bin/false\n").unwrap();
    sandbox
        .initbox()
        .args(["install", path_str(&tools), "--name", "ib"])
        .run()
        .assert_code(0);
    sandbox
        .initbox()
        .args(["install", path_str(&tools)])
        .run()
        .assert_code(0)
        .assert_stderr_contains("installed");
    assert_eq!(entries(&tools), ["ib", "initbox", "l"]);
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(crate::support::binary()).unwrap()
    );
}

// ---------------------------------------------------------------------------------------
// write
// ---------------------------------------------------------------------------------------

#[test]
fn write_from_content_env_or_file_with_expansion_and_base64() {
    let sandbox = Sandbox::new();
    let conf = sandbox.path("conf/app.conf");
    let conf_arg = path_str(&conf);
    sandbox
        .initbox()
        .env("POD_IP", "10.1.2.3")
        .args([
            "write",
            conf_arg,
            "--content",
            "listen=$(POD_IP)\npath=$$(HOME)\n",
        ])
        .run()
        .assert_code(0);
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        "listen=10.1.2.3\npath=$(HOME)\n"
    );
    sandbox
        .initbox()
        .args(["write", conf_arg, "--content", "$(NOT_SET)", "--raw"])
        .run()
        .assert_code(0);
    assert_eq!(fs::read_to_string(&conf).unwrap(), "$(NOT_SET)");
    let template = sandbox.write("in.conf", "ip=$(POD_IP)\n");
    sandbox
        .initbox()
        .env("POD_IP", "10.9.9.9")
        .args(["write", conf_arg, "--from-file", path_str(&template)])
        .run()
        .assert_code(0);
    assert_eq!(fs::read_to_string(&conf).unwrap(), "ip=10.9.9.9\n");
    sandbox
        .initbox()
        .env("CERT", "aGVs\nbG8=\n")
        .args([
            "write",
            conf_arg,
            "--from-env",
            "CERT",
            "--base64",
            "--mode",
            "0600",
        ])
        .run()
        .assert_code(0);
    assert_eq!(fs::read(&conf).unwrap(), b"hello");
    assert_eq!(mode(&conf), 0o600);
    assert_eq!(entries(&sandbox.path("conf")), ["app.conf"]);
}

#[test]
fn write_leaves_unchanged_content_alone_but_corrects_its_mode() {
    let sandbox = Sandbox::new();
    let conf = sandbox.path("app.conf");
    let write = |extra: &[&str]| {
        let mut args = vec!["write", path_str(&conf), "--content", "a=1\n"];
        args.extend_from_slice(extra);
        sandbox.initbox().args(args).run()
    };
    write(&["--mode", "0644"])
        .assert_code(0)
        .assert_stderr_contains("written");
    use std::os::unix::fs::MetadataExt;
    let inode = fs::metadata(&conf).unwrap().ino();
    write(&["--mode", "0644"])
        .assert_code(0)
        .assert_stderr_contains(": unchanged");
    write(&["--mode", "g+w"])
        .assert_code(0)
        .assert_stderr_contains("mode or owner corrected");
    assert_eq!(mode(&conf), 0o664);
    assert_eq!(fs::metadata(&conf).unwrap().ino(), inode, "rewritten");
    // A new content keeps the existing file's mode when none is given.
    sandbox
        .initbox()
        .args(["write", path_str(&conf), "--content", "a=2\n"])
        .run()
        .assert_code(0);
    assert_eq!(mode(&conf), 0o664);
    // --if-absent: an existing file is kept whatever it holds.
    sandbox
        .initbox()
        .args([
            "write",
            path_str(&conf),
            "--content",
            "default\n",
            "--if-absent",
        ])
        .run()
        .assert_code(0)
        .assert_stderr_contains("--if-absent");
    assert_eq!(fs::read_to_string(&conf).unwrap(), "a=2\n");
}

#[test]
fn write_never_prints_a_secret_from_the_environment() {
    let sandbox = Sandbox::new();
    let secret = "s3cr3t-Passw0rd-value";
    let output = sandbox
        .initbox()
        .env("DB_PASSWORD", secret)
        .args([
            "-v",
            "write",
            path_str(&sandbox.path("pw")),
            "--from-env",
            "DB_PASSWORD",
        ])
        .run();
    output.assert_code(0);
    assert!(!output.stderr.contains(secret) && !output.stdout.contains(secret));
    assert_eq!(fs::read_to_string(sandbox.path("pw")).unwrap(), secret);
    // Not base64: the error names the variable, not its value.
    let output = sandbox
        .initbox()
        .env("DB_PASSWORD", secret)
        .args([
            "write",
            path_str(&sandbox.path("pw2")),
            "--from-env",
            "DB_PASSWORD",
            "--base64",
        ])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("--from-env DB_PASSWORD is not base64");
    assert!(!output.stderr.contains(secret), "{}", output.stderr);
    assert!(!sandbox.path("pw2").exists());
}

#[test]
fn write_replaces_a_planted_link_instead_of_writing_through_it() {
    let sandbox = Sandbox::new();
    let outside = sandbox.write("outside", "precious\n");
    let volume = sandbox.path("volume");
    fs::create_dir(&volume).unwrap();
    symlink(&outside, volume.join("app.conf")).unwrap();
    sandbox
        .initbox()
        .args([
            "write",
            path_str(&volume.join("app.conf")),
            "--content",
            "mine\n",
        ])
        .run()
        .assert_code(0);
    assert_eq!(fs::read_to_string(&outside).unwrap(), "precious\n");
    assert!(
        !fs::symlink_metadata(volume.join("app.conf"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        fs::read_to_string(volume.join("app.conf")).unwrap(),
        "mine\n"
    );
}

// ---------------------------------------------------------------------------------------
// copy
// ---------------------------------------------------------------------------------------

/// A small tree with a file of mode 0640 and an old mtime, a subdirectory and a link.
fn source_tree(sandbox: &Sandbox) -> std::path::PathBuf {
    let src = sandbox.path("conf");
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::write(src.join("app.conf"), "port=1\n").unwrap();
    fs::write(src.join("sub/extra.conf"), "x\n").unwrap();
    fs::write(src.join("scratch.tmp"), "t\n").unwrap();
    symlink("app.conf", src.join("current")).unwrap();
    fs::set_permissions(src.join("app.conf"), fs::Permissions::from_mode(0o640)).unwrap();
    let old = filetime(src.join("app.conf").as_path());
    assert!(old > 0);
    src
}

/// `initbox copy SRC DEST` into a DEST not there yet, which must succeed; DEST's path.
fn copied_to_new_dest(sandbox: &Sandbox, src: &Path) -> std::path::PathBuf {
    let dest = sandbox.path("dest");
    sandbox
        .initbox()
        .args(["copy", path_str(src), path_str(&dest)])
        .run()
        .assert_code(0);
    dest
}

fn filetime(path: &Path) -> i64 {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).unwrap().mtime()
}

#[test]
fn copy_follows_cp_a_into_a_directory_onto_a_new_name_and_contents_with_dot() {
    let sandbox = Sandbox::new();
    let src = source_tree(&sandbox);
    std::process::Command::new("touch")
        .args(["-h", "-d", "2020-02-02 02:02:02"])
        .arg(src.join("app.conf"))
        .status()
        .unwrap();
    // DEST missing: becomes the copy.
    let fresh = sandbox.path("fresh");
    sandbox
        .initbox()
        .args(["copy", path_str(&src), path_str(&fresh)])
        .run()
        .assert_code(0)
        .assert_stderr_contains("copy: 6 changed");
    assert_eq!(
        tree(&fresh),
        [
            "app.conf",
            "current",
            "scratch.tmp",
            "sub/",
            "sub/extra.conf"
        ]
    );
    assert_eq!(mode(&fresh.join("app.conf")), 0o640);
    assert_eq!(
        filetime(&fresh.join("app.conf")),
        filetime(&src.join("app.conf"))
    );
    assert_eq!(
        fs::read_link(fresh.join("current")).unwrap(),
        Path::new("app.conf")
    );
    // DEST an existing directory: SRC goes in under its name (a trailing '/' on SRC
    // changes nothing, as with cp).
    let work = sandbox.path("work");
    fs::create_dir(&work).unwrap();
    sandbox
        .initbox()
        .args(["copy", &format!("{}/", src.display()), path_str(&work)])
        .run()
        .assert_code(0);
    assert_eq!(entries(&work), ["conf"]);
    // SRC/. copies the contents; --exclude leaves out names anywhere.
    let flat = sandbox.path("flat");
    sandbox
        .initbox()
        .args(["copy", &format!("{}/.", src.display()), path_str(&flat)])
        .args(["--exclude", "*.tmp", "--exclude", "sub"])
        .run()
        .assert_code(0);
    assert_eq!(tree(&flat), ["app.conf", "current"]);
    // Several sources into a directory made for them.
    let several = sandbox.path("several");
    sandbox
        .initbox()
        .arg("copy")
        .arg(src.join("app.conf"))
        .arg(src.join("current"))
        .arg(format!("{}/", several.display()))
        .run()
        .assert_code(0);
    assert_eq!(tree(&several), ["app.conf", "current"]);
}

#[test]
fn copy_if_absent_seeds_a_default_once() {
    let sandbox = Sandbox::new();
    let src = source_tree(&sandbox);
    let data = sandbox.path("data");
    let seed = || {
        sandbox
            .initbox()
            .args([
                "copy",
                "--if-absent",
                path_str(&src.join("app.conf")),
                path_str(&data.join("app.conf")),
            ])
            .run()
    };
    seed().assert_code(0);
    fs::write(data.join("app.conf"), "edited by the app\n").unwrap();
    seed().assert_code(0).assert_stderr_contains("1 skipped");
    assert_eq!(
        fs::read_to_string(data.join("app.conf")).unwrap(),
        "edited by the app\n"
    );
    // A tree: what is missing is completed, what exists is kept.
    fs::remove_file(data.join("app.conf")).unwrap();
    fs::create_dir(data.join("sub")).unwrap();
    fs::write(data.join("sub/extra.conf"), "mine\n").unwrap();
    sandbox
        .initbox()
        .args([
            "copy",
            "--if-absent",
            &format!("{}/.", src.display()),
            path_str(&data),
        ])
        .run()
        .assert_code(0);
    assert_eq!(
        fs::read_to_string(data.join("sub/extra.conf")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        fs::read_to_string(data.join("app.conf")).unwrap(),
        "port=1\n"
    );
}

#[test]
fn copy_never_follows_a_link_planted_in_dest() {
    let sandbox = Sandbox::new();
    let src = source_tree(&sandbox);
    let outside = sandbox.path("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("app.conf"), "precious\n").unwrap();
    let before = tree(&outside);
    // A link at a file's place: replaced by the file, the target untouched.
    let dest = sandbox.path("dest");
    fs::create_dir(&dest).unwrap();
    symlink(outside.join("app.conf"), dest.join("app.conf")).unwrap();
    sandbox
        .initbox()
        .args([
            "copy",
            &format!("{}/.", src.display()),
            path_str(&dest),
            "--exclude",
            "sub",
        ])
        .run()
        .assert_code(0);
    assert!(
        !fs::symlink_metadata(dest.join("app.conf"))
            .unwrap()
            .is_symlink()
    );
    // A link at a directory's place (to a directory outside, or to /): refused, nothing
    // written through it.
    for target in [outside.as_path(), Path::new("/")] {
        let dest = sandbox.path(&format!("dest-{}", entries(sandbox.dir.path()).len()));
        fs::create_dir(&dest).unwrap();
        symlink(target, dest.join("sub")).unwrap();
        sandbox
            .initbox()
            .args(["copy", &format!("{}/.", src.display()), path_str(&dest)])
            .run()
            .assert_code(1)
            .assert_stderr_contains("a symbolic link is there, which copy never follows");
    }
    assert_eq!(tree(&outside), before);
    assert_eq!(
        fs::read_to_string(outside.join("app.conf")).unwrap(),
        "precious\n"
    );
    assert!(!Path::new("/extra.conf").exists());
    // DEST itself a link to a directory: not copied into (copy follows no link of DEST).
    let link_dest = sandbox.path("link-dest");
    symlink(&outside, &link_dest).unwrap();
    sandbox
        .initbox()
        .args(["copy", path_str(&src), &format!("{}/", link_dest.display())])
        .run()
        .assert_code(1)
        .assert_stderr_contains("not a directory (a symbolic link");
    assert_eq!(tree(&outside), before);
}

#[test]
fn copy_onto_itself_or_into_its_subtree_is_refused_before_anything() {
    let sandbox = Sandbox::new();
    let src = source_tree(&sandbox);
    let before = tree(&src);
    for dest in [src.clone(), src.join("sub"), src.join("sub/new")] {
        sandbox
            .initbox()
            .args(["copy", path_str(&src), path_str(&dest)])
            .run()
            .assert_code(2)
            .assert_stderr_contains("into itself");
    }
    sandbox
        .initbox()
        .args(["copy", &format!("{}/.", src.display()), path_str(&src)])
        .run()
        .assert_code(2)
        .assert_stderr_contains("onto itself");
    assert_eq!(tree(&src), before);
}

#[test]
fn bad_values_exit_2_before_anything_and_78_under_run_check() {
    let sandbox = Sandbox::new();
    let target = sandbox.path("t");
    let t = path_str(&target);
    let cases: &[(&[&str], &str)] = &[
        (
            &["write", t, "--content", "x", "--mode", "0999"],
            "'0999' is not a file mode",
        ),
        (
            &["write", t, "--content", "x", "--owner", "a:b:c"],
            "is not an owner",
        ),
        (&["write", t], "--content"),
        (
            &["write", t, "--content", "x", "--from-env", "X"],
            "cannot be used with",
        ),
        (
            &["write", t, "--content", "!!", "--base64"],
            "--content is not base64",
        ),
        (&["copy", t, t, "--exclude", "[x"], "is not a glob pattern"),
        (&["copy", t, t, "--mode", "u+q"], "is not a file mode"),
        (&["copy", t], "2 values required"),
        (&["sysctl", "vm/../x=1"], "is not a sysctl key"),
        (&["sysctl", "vm.max_map_count"], "is not KEY=VALUE"),
        (&["install", t, "--name", "a/b"], "is not a file name"),
    ];
    for (args, message) in cases {
        sandbox
            .initbox()
            .args(*args)
            .run()
            .assert_code(2)
            .assert_stderr_contains(message);
    }
    assert!(!target.exists());
    let pipeline = sandbox.write(
        "p.yaml",
        &format!(
            "steps:\n  - name: conf\n    write: {{file: {t}, content: x, mode: rwx}}\n  - name: seed\n    copy: {{paths: [{t}, {t}], exclude: ['[']}}\n"
        ),
    );
    sandbox
        .check_pipeline(&pipeline)
        .assert_code(78)
        .assert_stderr_contains("'rwx' is not a file mode")
        .assert_stderr_contains("is not a glob pattern");
    // A missing key: exit 1 naming it, with the nearest key.
    sandbox
        .initbox()
        .args(["sysctl", "vm.max_map_cont=1"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("no sysctl key vm.max_map_cont")
        .assert_stderr_contains("did you mean vm.max_map_count?");
}

#[test]
fn the_same_tasks_as_pipeline_steps() {
    let sandbox = Sandbox::new();
    let src = source_tree(&sandbox);
    let work = sandbox.path("work");
    let pipeline = sandbox.write(
        "p.yaml",
        &format!(
            r#"env:
  PORT: "8080"
steps:
  - name: tools
    install: {{dir: {work}/tools}}
  - name: seed
    copy: {{paths: ["{src}/.", {work}/conf], if-absent: true, exclude: ["*.tmp"]}}
  - name: conf
    write: {{file: {work}/conf/port.conf, content: "port=$(PORT)\n", mode: "0600"}}
  - name: current
    link: {{target: conf, link: {work}/current}}
"#,
            work = work.display(),
            src = src.display()
        ),
    );
    sandbox
        .initbox()
        .args(["run", "-f", path_str(&pipeline)])
        .run()
        .assert_code(0);
    assert_eq!(
        tree(&work),
        [
            "conf/",
            "conf/app.conf",
            "conf/current",
            "conf/port.conf",
            "conf/sub/",
            "conf/sub/extra.conf",
            "current",
            "tools/",
            "tools/initbox"
        ]
    );
    assert_eq!(
        fs::read_to_string(work.join("conf/port.conf")).unwrap(),
        "port=8080\n"
    );
    assert_eq!(mode(&work.join("conf/port.conf")), 0o600);
}

#[test]
fn copy_follows_a_src_that_is_a_link_as_in_a_configmap_volume() {
    let sandbox = Sandbox::new();
    // The layout of a ConfigMap volume: each key a link into ..data, itself a link.
    let cm = sandbox.path("configmap");
    fs::create_dir_all(cm.join("..2026_12_01")).unwrap();
    fs::write(cm.join("..2026_12_01/app.conf"), "port=1\n").unwrap();
    symlink("..2026_12_01", cm.join("..data")).unwrap();
    symlink("..data/app.conf", cm.join("app.conf")).unwrap();
    let data = sandbox.path("data");
    sandbox
        .initbox()
        .args([
            "copy",
            "--if-absent",
            path_str(&cm.join("app.conf")),
            path_str(&data.join("app.conf")),
        ])
        .run()
        .assert_code(0);
    assert!(
        !fs::symlink_metadata(data.join("app.conf"))
            .unwrap()
            .is_symlink()
    );
    assert_eq!(
        fs::read_to_string(data.join("app.conf")).unwrap(),
        "port=1\n"
    );
}

#[test]
fn copy_keeps_owners_as_root_and_owner_sets_them() {
    use std::os::unix::fs::{MetadataExt, lchown};
    if !crate::support::is_root() {
        crate::support::skip("needs root to give files other owners");
        return;
    }
    let sandbox = Sandbox::new();
    let src = source_tree(&sandbox);
    lchown(src.join("app.conf"), Some(1234), Some(5678)).unwrap();
    lchown(src.join("current"), Some(4321), Some(8765)).unwrap();
    let kept = sandbox.path("kept");
    sandbox
        .initbox()
        .args(["copy", path_str(&src), path_str(&kept)])
        .run()
        .assert_code(0);
    let owner = |path: &Path| {
        let meta = fs::symlink_metadata(path).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner(&kept.join("app.conf")), (1234, 5678));
    assert_eq!(owner(&kept.join("current")), (4321, 8765));
    let given = sandbox.path("given");
    sandbox
        .initbox()
        .args([
            "copy",
            path_str(&src),
            path_str(&given),
            "--owner",
            "1001:1001",
        ])
        .run()
        .assert_code(0);
    for name in ["", "app.conf", "current", "sub", "sub/extra.conf"] {
        assert_eq!(owner(&given.join(name)), (1001, 1001), "{name}");
    }
}

#[test]
fn write_owner_as_an_unprivileged_user_fails_with_the_remedy() {
    if !crate::support::is_root() {
        crate::support::skip("needs root to run as another user");
        return;
    }
    let sandbox = Sandbox::new();
    let (dir, binary) = crate::support::nonroot_copy();
    let dest = dir.path().join("out");
    fs::create_dir(&dest).unwrap();
    std::os::unix::fs::chown(&dest, Some(65532), Some(65532)).unwrap();
    let file = dest.join("app.conf");
    sandbox
        .initbox_at(&binary)
        .args(["write", path_str(&file), "--content", "x", "--owner", "0:0"])
        .wrapped_in(&[
            "setpriv",
            "--reuid",
            "65532",
            "--regid",
            "65532",
            "--clear-groups",
        ])
        .run()
        .assert_code(1)
        .assert_stderr_contains("giving it the owner 0:0: permission denied")
        .assert_stderr_contains("runAsUser: 0");
    assert!(entries(&dest).is_empty(), "{:?}", entries(&dest));
}

#[test]
fn copy_keeps_hard_links_fifos_and_devices_as_cp_a_does() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("a/data"), "shared\n").unwrap();
    std::fs::hard_link(src.join("a/data"), src.join("b/same")).unwrap();
    std::fs::hard_link(src.join("a/data"), src.join("top-name")).unwrap();
    let fifo = std::ffi::CString::new(path_str(&src.join("a/pipe"))).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        fifo.as_c_str(),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    std::fs::set_permissions(src.join("a/pipe"), std::fs::Permissions::from_mode(0o640)).unwrap();
    let root = crate::support::is_root();
    if root {
        let null = std::ffi::CString::new(path_str(&src.join("a/null"))).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            null.as_c_str(),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .unwrap();
    }
    let dest = copied_to_new_dest(&sandbox, &src);

    let meta = |name: &str| std::fs::symlink_metadata(dest.join(name)).unwrap();
    assert_eq!(
        std::fs::read_to_string(dest.join("b/same")).unwrap(),
        "shared\n"
    );
    assert_eq!(
        meta("a/data").ino(),
        meta("b/same").ino(),
        "one file, two names"
    );
    assert_eq!(meta("a/data").ino(), meta("top-name").ino());
    assert_eq!(meta("a/data").nlink(), 3);
    assert_ne!(
        meta("a/data").ino(),
        std::fs::metadata(src.join("a/data")).unwrap().ino()
    );
    assert!(meta("a/pipe").file_type().is_fifo());
    assert_eq!(mode(&dest.join("a/pipe")), 0o640);
    if root {
        assert!(meta("a/null").file_type().is_char_device());
        assert_eq!(meta("a/null").rdev(), rustix::fs::makedev(1, 3));
    }
    // A re-run replaces each name atomically and keeps the names together.
    sandbox
        .initbox()
        .args(["copy", &format!("{}/.", path_str(&src)), path_str(&dest)])
        .run()
        .assert_code(0);
    assert_eq!(meta("a/data").ino(), meta("b/same").ino());
    assert_eq!(meta("a/data").nlink(), 3);
}

/// The walk of a tree is shared among threads: names of one file met by different threads
/// at about the same time must still end as one copy with all its names, as `cp -a` leaves.
#[test]
fn copy_links_the_names_of_one_file_across_directories_copied_by_different_threads() {
    use std::os::unix::fs::MetadataExt;
    let sandbox = Sandbox::new();
    let src = sandbox.path("src");
    let (files, dirs) = (12, 24);
    std::fs::create_dir_all(src.join("originals")).unwrap();
    for file in 0..files {
        std::fs::write(src.join(format!("originals/f{file}")), format!("{file}\n")).unwrap();
    }
    for dir in 0..dirs {
        std::fs::create_dir_all(src.join(format!("d{dir}"))).unwrap();
        for file in 0..files {
            std::fs::hard_link(
                src.join(format!("originals/f{file}")),
                src.join(format!("d{dir}/name-of-f{file}")),
            )
            .unwrap();
        }
    }
    let dest = copied_to_new_dest(&sandbox, &src);

    for file in 0..files {
        let first = std::fs::metadata(dest.join(format!("originals/f{file}"))).unwrap();
        assert_eq!(
            first.nlink(),
            dirs + 1,
            "f{file}: every name links to one copy"
        );
        for dir in 0..dirs {
            let name = dest.join(format!("d{dir}/name-of-f{file}"));
            assert_eq!(
                std::fs::metadata(&name).unwrap().ino(),
                first.ino(),
                "{name:?}"
            );
        }
        assert_eq!(
            std::fs::read_to_string(dest.join(format!("d0/name-of-f{file}"))).unwrap(),
            format!("{file}\n")
        );
    }
}
