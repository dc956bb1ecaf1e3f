//! wait-for-command: a command as a check (`until CMD; do sleep 2; done` without a shell),
//! its exit codes, its last line of output as the reason, and no process left behind by an
//! attempt that is cut short or by initbox stopping.

use std::time::Duration;

use crate::support::{Sandbox, eventually, path_str};

const SEEN: Duration = Duration::from_secs(20);

/// The processes whose command line contains `marker` (a unique argument of the test).
fn running_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmdline).contains(marker)
        {
            found.push(pid);
        }
    }
    found
}

/// A `sleep` that no other test runs: its duration carries this process's id and a salt.
fn unique_sleep(salt: u32) -> String {
    format!("{}.{}{salt}", 40 + salt, std::process::id())
}

#[test]
fn a_command_that_succeeds_later_is_ready() {
    let sandbox = Sandbox::new();
    let flag = sandbox.path("flag");
    let waiter = sandbox
        .initbox()
        .args([
            "wait-for-command",
            "--timeout",
            "60s",
            "test",
            "-e",
            path_str(&flag),
        ])
        .spawn();
    waiter.wait_for_stderr("is not ready: exited with code 1", SEEN);
    std::fs::write(&flag, "").unwrap();
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("is ready after")
        .assert_stderr_contains("exited with code 0");
}

#[test]
fn the_reason_is_the_last_line_of_stderr_and_output_is_not_passed_through() {
    let sandbox = Sandbox::new();
    let script = sandbox.write(
        "check",
        "#!/bin/sh\necho to-stdout\necho first >&2\necho 'db: starting up' >&2\nexit 3\n",
    );
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let output = sandbox
        .initbox()
        .args([
            "wait-for-command",
            "--timeout",
            "500ms",
            "--",
            path_str(&script),
        ])
        .run();
    output
        .assert_code(124)
        .assert_stderr_contains("last error: exited with code 3: db: starting up");
    assert!(!output.stdout.contains("to-stdout"), "{}", output.stdout);
    assert!(!output.stderr.contains("first"), "{}", output.stderr);
    // Without stderr, stdout's last line is the reason.
    sandbox
        .initbox()
        .args(["wait-for-command", "--timeout", "300ms"])
        .args(["sh", "-c", "echo 127.0.0.1:5432 - no response; exit 2"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("exited with code 2: 127.0.0.1:5432 - no response");
}

#[test]
fn a_command_not_found_or_not_executable_ends_the_wait_at_once() {
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args([
            "wait-for-command",
            "--timeout",
            "60s",
            "no-such-command-here",
        ])
        .run()
        .assert_code(127)
        .assert_stderr_contains("cannot execute no-such-command-here: command not found");
    let script = sandbox.write("script", "#!/bin/sh\nexit 0\n");
    sandbox
        .initbox()
        .args(["wait-for-command", "--timeout", "60s", path_str(&script)])
        .run()
        .assert_code(126)
        .assert_stderr_contains("permission denied (is it executable?)");
    // A command that says 127 itself (a wrapper that could not find what it runs).
    sandbox
        .initbox()
        .args([
            "wait-for-command",
            "--timeout",
            "60s",
            "sh",
            "-c",
            "exit 127",
        ])
        .run()
        .assert_code(127)
        .assert_stderr_contains("exited with code 127");
}

#[test]
fn a_command_killed_by_a_signal_is_not_ready_naming_the_signal() {
    Sandbox::new()
        .initbox()
        .args([
            "wait-for-command",
            "--timeout",
            "500ms",
            "sh",
            "-c",
            "kill -SEGV $$",
        ])
        .run()
        .assert_code(124)
        .assert_stderr_contains("killed by SIGSEGV (signal 11)");
}

#[test]
fn an_attempt_cut_by_the_attempt_timeout_leaves_no_process_behind() {
    let sandbox = Sandbox::new();
    let marker = unique_sleep(1);
    // `; true` keeps sh from exec'ing sleep: a grandchild, killed with its process group.
    let output = sandbox
        .initbox()
        .args([
            "wait-for-command",
            "--attempt-timeout",
            "200ms",
            "--timeout",
            "1s",
        ])
        .args(["sh", "-c", &format!("sleep {marker}; true")])
        .run();
    output
        .assert_code(124)
        .assert_stderr_contains("no answer within 200ms (--attempt-timeout)");
    assert!(
        eventually(Duration::from_secs(10), || running_with(&marker).is_empty()),
        "left behind: {:?}",
        running_with(&marker)
    );
}

#[test]
fn sigterm_while_a_command_runs_exits_143_and_kills_it() {
    let sandbox = Sandbox::new();
    let marker = unique_sleep(2);
    let waiter = sandbox
        .initbox()
        .args(["wait-for-command", "--attempt-timeout", "60s"])
        .args(["sh", "-c", &format!("sleep {marker}; true")])
        .spawn();
    assert!(
        eventually(SEEN, || running_with(&format!("sleep {marker}")).len() >= 2),
        "the command never started: {}",
        waiter.stderr_so_far()
    );
    waiter.signal("TERM");
    waiter
        .wait()
        .assert_code(143)
        .assert_stderr_contains("interrupted by SIGTERM");
    assert!(
        eventually(Duration::from_secs(10), || running_with(&marker).is_empty()),
        "left behind: {:?}",
        running_with(&marker)
    );
}

#[test]
fn a_pipeline_step_runs_a_command_with_its_own_flags() {
    let sandbox = Sandbox::new();
    let flag = sandbox.write("flag", "");
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: check\n    wait-for-command: {{command: [test, -e, {}], timeout: 20s}}\n",
            flag.display()
        ),
    );
    sandbox.check_pipeline(&pipeline).assert_code(0);
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0)
        .assert_stderr_contains("exited with code 0");
}
