//! wait-for-tcp against real listeners on loopback that appear, exist or go away.

use std::io::Read;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::support::{Sandbox, counting_listener, free_port, listen_later};

#[test]
fn a_listener_that_appears_later_is_seen() {
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    let waiter = sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "30s",
        ])
        .spawn();
    let listener = listen_later(format!("127.0.0.1:{port}"), Duration::from_millis(400));
    let output = waiter.wait();
    drop(listener.join());
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("waiting for 127.0.0.1:{port} (tcp, timeout 30s)"))
        .assert_stderr_contains("is not ready: connection refused")
        .assert_stderr_contains(&format!("127.0.0.1:{port} is ready after"));
    // One line per change of state, never one per attempt (there were about ten).
    assert!(output.stderr.lines().count() <= 4, "{}", output.stderr);
}

#[test]
fn ipv6_literal_in_brackets() {
    let sandbox = Sandbox::new();
    let port = free_port("::1");
    let waiter = sandbox
        .initbox()
        .args(["wait-for-tcp", &format!("[::1]:{port}"), "--timeout", "30s"])
        .spawn();
    let listener = listen_later(format!("[::1]:{port}"), Duration::from_millis(200));
    let output = waiter.wait();
    drop(listener.join());
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("connected to [::1]:{port}"));
}

#[test]
fn localhost_works_whichever_family_the_listener_uses() {
    let sandbox = Sandbox::new();
    for ip in ["127.0.0.1", "::1"] {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        sandbox
            .initbox()
            .args([
                "wait-for-tcp",
                &format!("localhost:{port}"),
                "--timeout",
                "10s",
            ])
            .run()
            .assert_code(0)
            .assert_stderr_contains(&format!("localhost:{port} is ready"));
    }
}

#[test]
fn several_targets_are_checked_together_and_all_must_pass() {
    let sandbox = Sandbox::new();
    let open = counting_listener("127.0.0.1");
    let late = free_port("127.0.0.1");
    let waiter = sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            &format!("127.0.0.1:{}", open.port),
            &format!("127.0.0.1:{late}"),
            "--timeout",
            "30s",
        ])
        .spawn();
    thread::sleep(Duration::from_millis(300));
    let listener = listen_later(format!("127.0.0.1:{late}"), Duration::ZERO);
    let output = waiter.wait();
    drop(listener.join());
    output
        .assert_code(0)
        .assert_stderr_contains("all 2 targets ready after");
    assert!(output.elapsed >= Duration::from_millis(300));
    // The open one was seen at once and not probed again while the other was waited for.
    assert_eq!(*open.accepted.lock().unwrap(), 1);
}

#[test]
fn connections_are_closed_at_once() {
    let sandbox = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buffer = [0u8; 16];
        stream.read(&mut buffer)
    });
    // The hand-off keeps the process alive for seconds: the probe socket must already be
    // closed (EOF at the server), not merely closed when the process ends.
    let running = sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            &format!("127.0.0.1:{port}"),
            "--",
            "sleep",
            "5",
        ])
        .spawn();
    let read = server.join().unwrap();
    assert!(
        running.started.elapsed() < Duration::from_secs(4),
        "the server saw no EOF while the process lived"
    );
    assert_eq!(
        read.unwrap(),
        0,
        "expected EOF from a closed probe connection"
    );
}

#[test]
fn invert_waits_until_the_port_closes() {
    let sandbox = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let waiter = sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            &format!("127.0.0.1:{port}"),
            "--invert",
            "--timeout",
            "30s",
        ])
        .spawn();
    waiter.wait_for_stderr("still ready", Duration::from_secs(10));
    drop(listener);
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("no longer ready: connection refused");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let sandbox = Sandbox::new();
    let open = counting_listener("127.0.0.1");
    let output = sandbox
        .initbox()
        .args([
            "--log-format",
            "json",
            "wait-for-tcp",
            &format!("127.0.0.1:{}", open.port),
        ])
        .run();
    output.assert_code(0);
    let events: Vec<serde_json::Value> = output
        .stderr
        .lines()
        .map(|line| serde_json::from_str(line).expect("each line is JSON"))
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["wait.start", "wait.ready"]);
    assert_eq!(events[1]["attempts"], 1);
    assert!(events[1]["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn quiet_prints_nothing_on_success_and_the_error_on_failure() {
    let sandbox = Sandbox::new();
    let open = counting_listener("127.0.0.1");
    let output = sandbox
        .initbox()
        .args(["-q", "wait-for-tcp", &format!("127.0.0.1:{}", open.port)])
        .run();
    output.assert_code(0);
    assert_eq!(output.stderr, "");
    let closed = free_port("127.0.0.1");
    let output = sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            &format!("127.0.0.1:{closed}"),
            "--timeout",
            "200ms",
        ])
        .env("INITBOX_QUIET", "true")
        .run();
    output.assert_code(124);
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
}

#[test]
fn flags_come_from_the_environment_too() {
    let sandbox = Sandbox::new();
    let closed = free_port("127.0.0.1");
    sandbox
        .initbox()
        .args(["wait-for-tcp", &format!("127.0.0.1:{closed}")])
        .env("INITBOX_TIMEOUT", "300ms")
        .run()
        .assert_code(124)
        .assert_stderr_contains("timed out after 300ms");
}

#[test]
fn a_long_wait_prints_a_progress_line_every_ten_seconds_not_a_line_per_attempt() {
    let sandbox = Sandbox::new();
    let closed = free_port("127.0.0.1");
    let output = sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            &format!("127.0.0.1:{closed}"),
            "--timeout",
            "14s",
        ])
        .run();
    output.assert_code(124);
    // About 200 attempts: a start line, the first reason, one progress line, the error.
    let progress: Vec<&str> = output
        .stderr
        .lines()
        .filter(|l| l.contains("still waiting for"))
        .collect();
    assert_eq!(progress.len(), 1, "{}", output.stderr);
    assert!(
        progress[0].contains("attempts): connection refused"),
        "{}",
        progress[0]
    );
    assert_eq!(output.stderr.lines().count(), 4, "{}", output.stderr);
}

#[test]
fn verbose_shows_the_addresses_resolved_and_each_address_tried_once() {
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    let target = format!("localhost:{port}");
    let wait = |verbose: bool| {
        let mut command = sandbox
            .initbox()
            .args(["wait-for-tcp", &target, "--timeout", "500ms"]);
        if verbose {
            command = command.arg("-v");
        }
        command.run()
    };
    let hosts = sandbox.path("hosts");
    let lines = [
        format!(
            "initbox: localhost: {} gives 127.0.0.1, ::1\n",
            hosts.display()
        ),
        format!("initbox: {target}: connecting to 127.0.0.1:{port}, [::1]:{port}\n"),
        format!("initbox: {target}: 127.0.0.1:{port}: connection refused\n"),
        format!("initbox: {target}: [::1]:{port}: connection refused\n"),
    ];
    let verbose = wait(true);
    verbose.assert_code(124);
    for line in &lines {
        // About ten attempts, all alike: each line once.
        assert_eq!(
            verbose.stderr.matches(line.as_str()).count(),
            1,
            "{line:?} in:\n{}",
            verbose.stderr
        );
    }
    let quiet = wait(false);
    quiet.assert_code(124);
    for line in &lines {
        assert!(!quiet.stderr.contains(line.as_str()), "{}", quiet.stderr);
    }

    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait(true)
        .assert_code(0)
        .assert_stderr_contains(&format!("{target}: 127.0.0.1:{port}: connected\n"));
}

/// Accepts on `port` in the background until the returned guard is dropped, then closes
/// the port (connections are refused again).
fn accept_until_dropped(port: u16) -> impl Drop {
    struct Open(Arc<AtomicBool>, Option<thread::JoinHandle<()>>);
    impl Drop for Open {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
            if let Some(thread) = self.1.take() {
                thread.join().unwrap();
            }
        }
    }
    let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let closed = Arc::new(AtomicBool::new(false));
    let stop = closed.clone();
    let thread = thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => drop(stream),
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Open(closed, Some(thread))
}

#[test]
fn stable_for_is_not_fooled_by_a_port_that_closes_again() {
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    let first_start = accept_until_dropped(port);
    let waiter = sandbox
        .initbox()
        .args(["wait-for-tcp", &format!("127.0.0.1:{port}")])
        .args(["--stable-for", "10s", "--timeout", "2m"])
        .spawn();
    waiter.wait_for_stderr(
        "confirming it stays ready for 10s (--stable-for)",
        Duration::from_secs(30),
    );
    // The temporary server of an image's init scripts stops before the real one starts.
    drop(first_start);
    waiter.wait_for_stderr("then not: connection refused", Duration::from_secs(30));
    let _for_good = accept_until_dropped(port);
    let output = waiter.wait();
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("127.0.0.1:{port} is ready after"));
    assert_eq!(
        output.stderr.matches("confirming it stays ready").count(),
        2,
        "{}",
        output.stderr
    );
}

#[test]
fn stable_for_that_cannot_fit_in_the_timeout_is_a_usage_error() {
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args(["wait-for-tcp", "127.0.0.1:9", "--stable-for", "1m"])
        .args(["--timeout", "30s"])
        .run()
        .assert_code(2)
        .assert_stderr_contains(
            "invalid value '1m' for '--stable-for <DURATION>': can never be met within the timeout of 30s",
        );
}
