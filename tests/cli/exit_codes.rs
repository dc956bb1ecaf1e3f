//! The exit-code contract of DESIGN.md, one test per code, each reached the way users reach it.
//! (130/143 live in `signals`, 126/127 also in `exec`; 2 and 78 for every command in
//! `bad_input`.)

use std::time::Duration;

use crate::support::{Sandbox, counting_listener, free_port, need_root};

#[test]
fn code_0_when_every_target_is_ready() {
    let sandbox = Sandbox::new();
    let open = counting_listener("127.0.0.1");
    sandbox
        .initbox()
        .args(["wait-for-tcp", &format!("127.0.0.1:{}", open.port)])
        .run()
        .assert_code(0);
}

#[test]
fn code_1_when_the_task_fails_for_good_permission_denied() {
    if !need_root() {
        return;
    }
    // A 'prohibit' route in a private network namespace: connect() gets EACCES, which no
    // amount of retrying heals, so the wait ends at once instead of at the timeout.
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args(["wait-for-tcp", "192.0.2.1:80", "--timeout", "1m"])
        .in_network_namespace("ip route add prohibit 192.0.2.1/32")
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("connecting to 192.0.2.1:80: permission denied");
    assert!(output.elapsed < Duration::from_secs(30));
}

#[test]
fn code_78_for_configuration_errors() {
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args(["wait-for-dns", "mydb"])
        .run()
        .assert_code(78)
        .assert_stderr_contains("no nameserver to ask");
}

#[test]
fn code_124_when_the_timeout_passes() {
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "300ms",
        ])
        .run()
        .assert_code(124)
        .assert_stderr_contains(&format!(
            "timed out after 300ms waiting for 127.0.0.1:{port} (last error: connection refused)"
        ));
}

#[test]
fn code_126_and_127_for_the_command_after_the_double_dash() {
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args(["sleep", "0", "--", "/nonexistent/app"])
        .run()
        .assert_code(127)
        .assert_stderr_contains("cannot execute /nonexistent/app: command not found");
    let script = sandbox.write("not-executable.sh", "#!/bin/sh\nexit 0\n");
    sandbox
        .initbox()
        .args(["sleep", "0", "--", script.to_str().unwrap()])
        .run()
        .assert_code(126)
        .assert_stderr_contains("permission denied");
}

#[test]
fn help_and_version_succeed() {
    let sandbox = Sandbox::new();
    let help = sandbox.initbox().arg("--help").run();
    help.assert_code(0);
    for command in crate::support::COMMANDS.iter() {
        assert!(help.stdout.contains(command), "--help lacks {command}");
    }
    let version = sandbox.initbox().arg("--version").run();
    version.assert_code(0);
    assert!(version.stdout.starts_with("initbox "));
}
