//! wait-for-amqp against a real RabbitMQ 3.10 on loopback: Connection.Start, logins right
//! and wrong, a vhost created while waiting, amqps, signals and pipeline steps. One node is
//! shared by the tests that only read (a node takes 7–8 s to start).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::support::rabbitmq_server::{self, PASSWORD, RabbitServer, USER};
use crate::support::{Output, Sandbox};

#[track_caller]
fn assert_no_secret(output: &Output, secret: &str) {
    assert!(
        !output.stdout.contains(secret) && !output.stderr.contains(secret),
        "the secret shows:\n{}\n{}",
        output.stderr,
        output.stdout
    );
}

#[test]
fn connection_start_is_alive_and_names_product_and_version() {
    let sandbox = Sandbox::new();
    let Some((port, _, _)) = rabbitmq_server::shared() else {
        return;
    };
    sandbox
        .initbox()
        .args([
            "wait-for-amqp",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "30s",
        ])
        .run()
        .assert_code(0)
        .assert_stderr_contains("answering (RabbitMQ 3.");
}

#[test]
fn a_login_with_the_right_password_opens_the_vhost_from_a_file_or_the_url() {
    let sandbox = Sandbox::new();
    let Some((port, _, _)) = rabbitmq_server::shared() else {
        return;
    };
    let password = sandbox.write("password", PASSWORD);
    let output = sandbox
        .initbox()
        .args([
            "wait-for-amqp",
            &format!("127.0.0.1:{port}"),
            "--user",
            USER,
        ])
        .arg("--password-file")
        .arg(&password)
        .args(["--timeout", "30s", "-v"])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("user app, vhost /)");
    assert_no_secret(&output, PASSWORD);
    sandbox
        .initbox()
        .args([
            "wait-for-amqp",
            &format!("amqp://{USER}@127.0.0.1:{port}/%2F"),
        ])
        .env("RABBITMQ_PASSWORD", PASSWORD)
        .args(["--timeout", "30s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("vhost /)");
}

#[test]
fn a_wrong_password_ends_at_once_with_exit_1_and_never_shows() {
    let sandbox = Sandbox::new();
    let Some((port, _, _)) = rabbitmq_server::shared() else {
        return;
    };
    let wrong = "wrong-rabbit-pw-7";
    let file = sandbox.write("password", wrong);
    let output = sandbox
        .initbox()
        .args([
            "wait-for-amqp",
            &format!("127.0.0.1:{port}"),
            "--user",
            USER,
        ])
        .arg("--password-file")
        .arg(&file)
        .args(["--timeout", "2m", "-v", "--log-format", "json"])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("403 ACCESS_REFUSED");
    assert!(output.elapsed < Duration::from_secs(60), "it waited");
    assert_no_secret(&output, wrong);
}

#[test]
fn a_vhost_created_while_waiting_ends_the_wait() {
    let sandbox = Sandbox::new();
    let Some((port, _, _)) = rabbitmq_server::shared() else {
        return;
    };
    let vhost = format!("orders-{}", std::process::id());
    let password = sandbox.write("password", PASSWORD);
    let running = sandbox
        .initbox()
        .args([
            "wait-for-amqp",
            &format!("amqp://{USER}@127.0.0.1:{port}/{vhost}"),
        ])
        .arg("--password-file")
        .arg(&password)
        .args(["--timeout", "2m"])
        .spawn();
    running.wait_for_stderr("530 NOT_ALLOWED", Duration::from_secs(60));
    rabbitmq_server::shared_ctl(&["add_vhost", &vhost]);
    rabbitmq_server::shared_ctl(&["set_permissions", "-p", &vhost, USER, ".*", ".*", ".*"]);
    running
        .wait()
        .assert_code(0)
        .assert_stderr_contains(&format!("vhost {vhost})"));
}

#[test]
fn amqps_is_checked_against_the_ca_and_an_unknown_ca_is_exit_1() {
    let sandbox = Sandbox::new();
    let Some((_, tls_port, ca)) = rabbitmq_server::shared() else {
        return;
    };
    let password = sandbox.write("password", PASSWORD);
    let target = format!("amqps://{USER}@localhost:{tls_port}/");
    sandbox
        .initbox()
        .args(["wait-for-amqp", &target, "--cacert"])
        .arg(&ca)
        .arg("--password-file")
        .arg(&password)
        .args(["--timeout", "30s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("TLS, user app, vhost /)");
    let output = sandbox
        .initbox()
        .args(["wait-for-amqp", &format!("localhost:{tls_port}"), "--tls"])
        .args(["--timeout", "1m"])
        .run();
    output.assert_code(1).assert_stderr_contains("certificate");
    assert!(output.elapsed < Duration::from_secs(30), "it waited");
}

#[test]
fn a_password_in_the_url_is_refused_without_showing_it() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args(["wait-for-amqp", "amqps://app:hunter2-amqp@127.0.0.1/"])
        .run();
    output
        .assert_code(2)
        .assert_stderr_contains("--password-file (or RABBITMQ_PASSWORD)");
    assert_no_secret(&output, "hunter2-amqp");
}

#[test]
fn waits_for_a_broker_that_starts_after_the_waiter() {
    let sandbox = Sandbox::new();
    let Some(mut server) = RabbitServer::later() else {
        return;
    };
    let password = sandbox.write("password", PASSWORD);
    let running = sandbox
        .initbox()
        .args(["wait-for-amqp", &server.address(), "--user", USER])
        .arg("--password-file")
        .arg(&password)
        .args(["--timeout", "3m"])
        .spawn();
    running.wait_for_stderr("connection refused", Duration::from_secs(30));
    server.restart();
    running
        .wait()
        .assert_code(0)
        .assert_stderr_contains("accepting connections (RabbitMQ 3.");
}

#[test]
fn sigterm_while_waiting_exits_143() {
    let sandbox = Sandbox::new();
    let port = crate::support::free_port("127.0.0.1");
    let running = sandbox
        .initbox()
        .args([
            "wait-for-amqp",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "1m",
        ])
        .spawn();
    running.wait_for_stderr("connection refused", Duration::from_secs(30));
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn a_pipeline_step_opens_the_vhost() {
    let sandbox = Sandbox::new();
    let Some((port, _, _)) = rabbitmq_server::shared() else {
        return;
    };
    let password = sandbox.write("password", PASSWORD);
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: mq\n    wait-for-amqp: {{servers: [\"127.0.0.1:{port}\"], \
             user: {USER}, password-file: {}, vhost: /, timeout: 30s}}\n",
            password.display()
        ),
    );
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0)
        .assert_stderr_contains("user app, vhost /)")
        .assert_stderr_contains("[Completed]");
}

/// The attack: a peer on the AMQP port announces a frame of almost 4 GiB. The probe must
/// refuse it from the header alone (no buffer of that size), and keep waiting.
#[test]
fn a_server_announcing_a_huge_frame_is_refused_before_any_allocation() {
    let sandbox = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut header = [0u8; 8];
            if stream.read_exact(&mut header).is_ok() {
                let mut frame = vec![1u8, 0, 0];
                frame.extend_from_slice(&0xFFFF_FFF0u32.to_be_bytes());
                let _ = stream.write_all(&frame);
            }
        }
    });
    sandbox
        .initbox()
        .args([
            "wait-for-amqp",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "2s",
        ])
        .run()
        .assert_code(124)
        .assert_stderr_contains("a frame of 4294967280 bytes, over the 128 KiB limit");
}

#[test]
fn many_attempts_at_a_missing_vhost_leave_no_descriptor_open() {
    let sandbox = Sandbox::new();
    let Some((port, _, _)) = rabbitmq_server::shared() else {
        return;
    };
    let password = sandbox.write("password", PASSWORD);
    let target = format!(
        "amqp://{USER}@127.0.0.1:{port}/never-{}",
        std::process::id()
    );
    let running = sandbox
        .initbox()
        .args(["wait-for-amqp", &target, "--timeout", "0"])
        .arg("--password-file")
        .arg(&password)
        .spawn();
    running.wait_for_stderr("530 NOT_ALLOWED", Duration::from_secs(60));
    let first = crate::support::open_fds(running.pid());
    let accepted = || {
        rabbitmq_server::shared_log()
            .matches("accepting AMQP connection")
            .count()
    };
    let before = accepted();
    // 100 attempts: the fast phase sends one every 50 ms.
    assert!(crate::support::eventually(Duration::from_secs(60), || {
        accepted() >= before + 100
    }));
    let later = crate::support::open_fds(running.pid());
    assert!(
        later <= first + 2,
        "descriptors grew from {first} to {later}"
    );
    running.signal("TERM");
    running.wait().assert_code(143);
}

/// A vhost that goes away and comes back (an init job that recreates it) stands in for a
/// restart: the shared node stays up.
#[test]
fn stable_for_is_not_fooled_by_a_vhost_that_goes_away_and_comes_back() {
    let sandbox = Sandbox::new();
    let Some((port, _, _)) = rabbitmq_server::shared() else {
        return;
    };
    let vhost = format!("stable-{}", std::process::id());
    let grant = || {
        rabbitmq_server::shared_ctl(&["add_vhost", &vhost]);
        rabbitmq_server::shared_ctl(&["set_permissions", "-p", &vhost, USER, ".*", ".*", ".*"]);
    };
    grant();
    let password = sandbox.write("password", PASSWORD);
    let waiter = sandbox
        .initbox()
        .args([
            "wait-for-amqp",
            &format!("amqp://{USER}@127.0.0.1:{port}/{vhost}"),
        ])
        .arg("--password-file")
        .arg(&password)
        // Long enough that a slow rabbitmqctl (seconds of Erlang start-up on a loaded
        // machine) still deletes the vhost before the run is over.
        .args(["--stable-for", "20s", "--timeout", "2m"])
        .spawn();
    waiter.wait_for_stderr("confirming it stays ready for 20s", Duration::from_secs(60));
    rabbitmq_server::shared_ctl(&["delete_vhost", &vhost]);
    waiter.wait_for_stderr("then not:", Duration::from_secs(30));
    grant();
    let output = waiter.wait();
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("vhost {vhost})"));
    assert_eq!(
        output.stderr.matches("confirming it stays ready").count(),
        2,
        "{}",
        output.stderr
    );
}
