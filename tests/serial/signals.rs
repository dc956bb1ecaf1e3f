//! SIGTERM/SIGINT end any command promptly with 143/130, and as PID 1 of a pid namespace
//! initbox reaps orphans. (SIGTERM to PID 1 during every waiting command, where the kernel
//! drops signals that have no handler, is in `faults`.)

use std::time::Duration;

use crate::support::{Sandbox, children, eventually, free_port, need_root, pid_one_of};

/// Far below kubelet's 30 s grace period, generous for a loaded CI machine.
const PROMPTLY: Duration = Duration::from_secs(5);

#[test]
fn sigterm_ends_a_wait_with_143() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    let running = sandbox
        .initbox()
        .args(["wait-for-tcp", &format!("127.0.0.1:{port}")])
        .spawn();
    running.wait_for_stderr("is not ready", Duration::from_secs(10));
    let sent = std::time::Instant::now();
    running.signal("TERM");
    let output = running.wait();
    output
        .assert_code(143)
        .assert_stderr_contains("interrupted by SIGTERM");
    assert!(sent.elapsed() < PROMPTLY);
}

#[test]
fn sigint_ends_a_sleep_with_130() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let running = sandbox.initbox().args(["sleep", "5m"]).spawn();
    running.wait_for_stderr("sleeping for 5m", Duration::from_secs(10));
    running.signal("INT");
    let output = running.wait();
    output
        .assert_code(130)
        .assert_stderr_contains("interrupted by SIGINT");
    assert!(output.elapsed < Duration::from_secs(60));
}

#[test]
fn pid_1_reaps_orphaned_children() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    // The shell is PID 1, starts a short-lived child, then execs initbox: that child is now
    // initbox's, and nobody else will ever wait for it.
    let script = format!("sleep 0.2 & exec {} sleep 5m", crate::support::binary());
    let running = sandbox
        .initbox()
        .wrapped_in(&[
            "unshare",
            "--pid",
            "--fork",
            "--kill-child",
            "sh",
            "-c",
            &script,
        ])
        .spawn();
    let init = pid_one_of(running.pid());
    running.wait_for_stderr("sleeping for 5m", Duration::from_secs(10));
    assert!(
        eventually(Duration::from_secs(10), || children(init).is_empty()),
        "the exited child was never reaped: {:?}",
        children(init)
    );
    crate::support::signal(init, "TERM");
    running.wait().assert_code(143);
}
