//! `-- CMD ARGS...`: initbox becomes the command (same PID, its exit code), with no shell.

use crate::support::{Sandbox, counting_listener};

#[test]
fn the_command_replaces_initbox_and_its_exit_code_is_returned() {
    let sandbox = Sandbox::new();
    let running = sandbox
        .initbox()
        .args([
            "sleep",
            "0",
            "--",
            "sh",
            "-c",
            "echo pid=$$ args=\"$*\"; exit 7",
            "sh",
            "a",
            "--b",
        ])
        .spawn();
    let pid = running.pid();
    let output = running.wait();
    output.assert_code(7);
    assert_eq!(output.stdout, format!("pid={pid} args=a --b\n"));
    assert!(output.stderr.contains("starting sh"), "{}", output.stderr);
}

#[test]
fn the_command_runs_only_after_success() {
    let sandbox = Sandbox::new();
    let marker = sandbox.path("ran");
    let touch = format!("touch {}", marker.display());
    sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            "127.0.0.1:1",
            "--timeout",
            "100ms",
            "--",
            "sh",
            "-c",
            &touch,
        ])
        .run()
        .assert_code(124);
    assert!(!marker.exists());
    let open = counting_listener("127.0.0.1");
    sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            &format!("127.0.0.1:{}", open.port),
            "--",
            "sh",
            "-c",
            &touch,
        ])
        .run()
        .assert_code(0);
    assert!(marker.exists());
}
