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
    assert!(fs::symlink_metadata(sandbox.path("file")).unwrap().is_symlink());
    assert_eq!(entries(sandbox.dir.path()), ["current", "file", "hosts", "releases"]);
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
    assert_eq!(fs::read(&installed).unwrap(), fs::read(crate::support::binary()).unwrap());
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
    assert_eq!(fs::read(&installed).unwrap(), fs::read(crate::support::binary()).unwrap());
}
