//! wait-for-file and wait-for-socket: paths that appear later, types, sizes and contents,
//! links (followed; a link to nothing does not count; contents never shown), a FIFO
//! planted where a file was expected, unix sockets that accept or only exist.

use std::os::unix::net::UnixListener;
use std::time::Duration;

use crate::support::{Sandbox, need_root, nonroot_copy, path_str};

const SEEN: Duration = Duration::from_secs(20);

#[test]
fn a_file_that_appears_later_is_seen() {
    let sandbox = Sandbox::new();
    let path = sandbox.path("ready");
    let waiter = sandbox
        .initbox()
        .args(["wait-for-file", path_str(&path), "--timeout", "60s"])
        .spawn();
    waiter.wait_for_stderr("is not ready: does not exist", SEEN);
    std::fs::write(&path, "ok").unwrap();
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("is ready after")
        .assert_stderr_contains("a regular file, 2 bytes, modified 20");
}

#[test]
fn non_empty_waits_for_content_and_type_for_the_kind() {
    let sandbox = Sandbox::new();
    let path = sandbox.write("data", "");
    let waiter = sandbox
        .initbox()
        .args(["wait-for-file", "--non-empty", path_str(&path)])
        .args(["--timeout", "60s"])
        .spawn();
    waiter.wait_for_stderr("is not ready: is an empty file", SEEN);
    std::fs::write(&path, "x").unwrap();
    waiter.wait().assert_code(0);

    let dir = sandbox.path("dir");
    std::fs::create_dir(&dir).unwrap();
    sandbox
        .initbox()
        .args([
            "wait-for-file",
            "--non-empty",
            "--type",
            "dir",
            path_str(&dir),
        ])
        .args(["--timeout", "300ms"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("is an empty directory");
    sandbox
        .initbox()
        .args(["wait-for-file", "--type", "file", path_str(&dir)])
        .args(["--timeout", "300ms"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("is a directory, not a regular file");
    sandbox
        .initbox()
        .args(["wait-for-file", "--type", "socket", path_str(&path)])
        .args(["--timeout", "300ms"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("is a regular file, not a socket");
}

#[test]
fn contains_waits_for_a_match_and_never_shows_the_contents() {
    let sandbox = Sandbox::new();
    let path = sandbox.write("app.log", "starting secret-token-4711\n");
    let waiter = sandbox
        .initbox()
        .args(["wait-for-file", path_str(&path), "--contains", "^ready$"])
        .args(["--timeout", "60s"])
        .spawn();
    waiter.wait_for_stderr(
        "does not contain a match for '^ready$' (in its first MiB)",
        SEEN,
    );
    std::fs::write(&path, "starting secret-token-4711\nready\n").unwrap();
    let output = waiter.wait();
    output.assert_code(0);
    assert!(!output.stderr.contains("secret-token"), "{}", output.stderr);
    assert!(!output.stdout.contains("secret-token"), "{}", output.stdout);
}

#[test]
fn contains_reads_only_the_first_mib() {
    let sandbox = Sandbox::new();
    let mut text = "x".repeat(1024 * 1024);
    text.push_str("MARK");
    let path = sandbox.write("big", &text);
    sandbox
        .initbox()
        .args(["wait-for-file", path_str(&path), "--contains", "MARK"])
        .args(["--timeout", "300ms"])
        .run()
        .assert_code(124);
}

#[test]
fn a_link_is_followed_and_a_link_to_nothing_does_not_count() {
    let sandbox = Sandbox::new();
    // A link planted to a file elsewhere (a secret): followed, as ConfigMap volumes need,
    // and nothing of what it holds reaches the output.
    let elsewhere = tempfile::tempdir().unwrap();
    let secret = elsewhere.path().join("secret");
    std::fs::write(&secret, "hunter2-password\n").unwrap();
    let link = sandbox.path("config");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let output = sandbox
        .initbox()
        .args(["wait-for-file", path_str(&link), "--contains", "hunter2"])
        .args(["--timeout", "10s"])
        .run();
    output.assert_code(0);
    assert!(
        !output.stderr.contains("hunter2-password"),
        "{}",
        output.stderr
    );

    let dangling = sandbox.path("dangling");
    std::os::unix::fs::symlink(sandbox.path("nothing"), &dangling).unwrap();
    let waiter = sandbox
        .initbox()
        .args(["wait-for-file", path_str(&dangling), "--timeout", "60s"])
        .spawn();
    waiter.wait_for_stderr("is a symbolic link to nothing", SEEN);
    std::fs::write(sandbox.path("nothing"), "now").unwrap();
    waiter.wait().assert_code(0);
}

#[test]
fn a_fifo_planted_for_contains_does_not_block_the_wait() {
    let sandbox = Sandbox::new();
    let fifo = sandbox.path("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // No writer ever opens it: a blocking open or read would hang until the timeout cut
    // the attempt, and say so; the check says what the path is instead.
    sandbox
        .initbox()
        .args(["wait-for-file", path_str(&fifo), "--contains", "x"])
        .args(["--timeout", "500ms"])
        .run()
        .assert_code(124)
        .assert_stderr_contains(
            "is a FIFO, not a regular file (--contains reads regular files only)",
        );
}

#[test]
fn an_unreadable_file_for_contains_fails_at_once() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let path = sandbox.write("private", "x");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    std::fs::set_permissions(
        sandbox.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let (_keep, copy) = nonroot_copy();
    sandbox
        .initbox_at(&copy)
        .args(["wait-for-file", path_str(&path), "--contains", "x"])
        .args(["--timeout", "60s"])
        .wrapped_in(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .run()
        .assert_code(1)
        .assert_stderr_contains("permission denied (give the container a user or fsGroup");
}

#[test]
fn a_socket_is_ready_only_once_something_listens_on_it() {
    let sandbox = Sandbox::new();
    let path = sandbox.path("app.sock");
    // A socket file left by a server that is gone: it exists, and refuses.
    drop(UnixListener::bind(&path).unwrap());
    let waiter = sandbox
        .initbox()
        .args(["wait-for-socket", path_str(&path), "--timeout", "60s"])
        .spawn();
    waiter.wait_for_stderr("is not ready: connection refused", SEEN);
    std::fs::remove_file(&path).unwrap();
    waiter.wait_for_stderr("is not ready: does not exist", SEEN);
    let listener = UnixListener::bind(&path).unwrap();
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("accepted a connection");
    drop(listener);

    let file = sandbox.write("plain", "");
    sandbox
        .initbox()
        .args(["wait-for-socket", path_str(&file), "--timeout", "300ms"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("exists but is not a socket");
}

#[test]
fn a_socket_this_user_may_not_open_fails_at_once_with_the_remedy() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    std::fs::set_permissions(
        sandbox.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = sandbox.path("root.sock");
    let _listener = UnixListener::bind(&path).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let (_keep, copy) = nonroot_copy();
    sandbox
        .initbox_at(&copy)
        .args(["wait-for-socket", path_str(&path), "--timeout", "60s"])
        .wrapped_in(&[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ])
        .run()
        .assert_code(1)
        .assert_stderr_contains("permission denied")
        .assert_stderr_contains("fsGroup");
}

#[test]
fn sigterm_while_waiting_for_a_file_exits_143() {
    let sandbox = Sandbox::new();
    let waiter = sandbox
        .initbox()
        .args(["wait-for-file", path_str(&sandbox.path("never"))])
        .spawn();
    waiter.wait_for_stderr("is not ready", SEEN);
    waiter.signal("TERM");
    waiter.wait().assert_code(143);
}

#[test]
fn pipeline_steps_wait_for_files_and_sockets() {
    let sandbox = Sandbox::new();
    let file = sandbox.write("ready", "go");
    let socket = sandbox.path("s.sock");
    let _listener = UnixListener::bind(&socket).unwrap();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: file\n    wait-for-file: {{paths: [{}], non-empty: true, contains: go, type: file}}\n  - name: socket\n    wait-for-socket: {{paths: [{}]}}\n",
            file.display(),
            socket.display()
        ),
    );
    sandbox.check_pipeline(&pipeline).assert_code(0);
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0)
        .assert_stderr_contains("accepted a connection");
}

#[test]
fn stable_for_waits_until_size_and_mtime_stop_changing() {
    let sandbox = Sandbox::new();
    let path = sandbox.write("dump.sql", "part 1\n");
    let waiter = sandbox
        .initbox()
        .args(["wait-for-file", path_str(&path), "--stable-for", "5s"])
        .args(["--timeout", "60s"])
        .spawn();
    waiter.wait_for_stderr("confirming it stays ready for 5s (--stable-for)", SEEN);
    // Still being written: the next look sees another size, and the wait starts over.
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, b"part 2\n").unwrap();
    drop(file);
    waiter.wait_for_stderr(
        "then not: changed since the last look: a regular file, 14 bytes",
        SEEN,
    );
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("a regular file, 14 bytes");
}
