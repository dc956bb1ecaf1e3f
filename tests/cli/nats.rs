//! wait-for-nats against a real nats-server on loopback: alive, logins right and wrong,
//! TLS, signals and pipeline steps.

use std::time::Duration;

use crate::support::TlsFiles;
use crate::support::nats_server::{NatsConfig, NatsServer};
use crate::support::{Output, Sandbox};

const PASSWORD: &str = "nats-s3cret-pw";
const TOKEN: &str = "nats-t0ken-value";

fn with_user() -> NatsConfig {
    NatsConfig {
        user: Some(("app".into(), PASSWORD.into())),
        ..NatsConfig::default()
    }
}

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
fn waits_for_a_server_that_starts_after_the_waiter_and_reports_its_version() {
    let sandbox = Sandbox::new();
    let Some(mut server) = NatsServer::later(NatsConfig::default()) else {
        return;
    };
    let running = sandbox
        .initbox()
        .args(["wait-for-nats", &server.address(), "--timeout", "1m"])
        .spawn();
    running.wait_for_stderr("connection refused", Duration::from_secs(30));
    server.restart();
    let output = running.wait();
    output
        .assert_code(0)
        .assert_stderr_contains("is ready after")
        .assert_stderr_contains("answering (NATS 2.");
}

#[test]
fn a_login_with_the_right_password_is_ready_from_a_file_the_url_or_nats_password() {
    let sandbox = Sandbox::new();
    let Some(server) = NatsServer::start(with_user()) else {
        return;
    };
    let file = sandbox.write("password", &format!("{PASSWORD}\n"));
    let by_flags = sandbox
        .initbox()
        .args(["wait-for-nats", &server.address(), "--user", "app"])
        .arg("--password-file")
        .arg(&file)
        .args(["--timeout", "30s", "-v"])
        .run();
    by_flags
        .assert_code(0)
        .assert_stderr_contains("logged in with user app");
    assert_no_secret(&by_flags, PASSWORD);
    let by_url = sandbox
        .initbox()
        .args(["wait-for-nats", &format!("nats://app@{}", server.address())])
        .env("NATS_PASSWORD", PASSWORD)
        .args(["--timeout", "30s"])
        .run();
    by_url
        .assert_code(0)
        .assert_stderr_contains("logged in with user app");
    // Without credentials the server still answers: alive, the login not checked.
    sandbox
        .initbox()
        .args(["wait-for-nats", &server.address(), "--timeout", "30s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("login not checked");
}

#[test]
fn a_wrong_password_ends_at_once_with_exit_1_and_never_shows() {
    let sandbox = Sandbox::new();
    let Some(server) = NatsServer::start(with_user()) else {
        return;
    };
    let wrong = "wrong-nats-pw-42";
    let file = sandbox.write("password", wrong);
    let output = sandbox
        .initbox()
        .args(["wait-for-nats", &server.address(), "--user", "app"])
        .arg("--password-file")
        .arg(&file)
        .args(["--timeout", "1m", "-v", "--log-format", "json"])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("refused the login with user app: Authorization Violation");
    assert!(output.elapsed < Duration::from_secs(30), "it waited");
    assert_no_secret(&output, wrong);
}

#[test]
fn a_token_login_is_checked_and_a_wrong_token_ends_with_exit_1() {
    let sandbox = Sandbox::new();
    let Some(server) = NatsServer::start(NatsConfig {
        token: Some(TOKEN.into()),
        ..NatsConfig::default()
    }) else {
        return;
    };
    let right = sandbox.write("token", TOKEN);
    sandbox
        .initbox()
        .args(["wait-for-nats", &server.address(), "--token-file"])
        .arg(&right)
        .args(["--timeout", "30s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("logged in with token");
    let wrong = sandbox.write("wrong", "not-the-token-123");
    let output = sandbox
        .initbox()
        .args(["wait-for-nats", &server.address(), "--token-file"])
        .arg(&wrong)
        .args(["--timeout", "1m"])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("refused the login with token");
    assert_no_secret(&output, "not-the-token-123");
    assert_no_secret(&output, TOKEN);
}

#[test]
fn a_server_that_requires_tls_is_checked_against_the_ca_and_an_unknown_ca_is_exit_1() {
    let sandbox = Sandbox::new();
    let files = TlsFiles::new(sandbox.dir.path());
    let Some(server) = NatsServer::start(NatsConfig {
        tls: Some((files.cert.clone(), files.key.clone())),
        ..with_user()
    }) else {
        return;
    };
    let password = sandbox.write("password", PASSWORD);
    let target = format!("tls://app@localhost:{}", server.port);
    sandbox
        .initbox()
        .args(["wait-for-nats", &target, "--cacert"])
        .arg(&files.ca)
        .arg("--password-file")
        .arg(&password)
        .args(["--timeout", "30s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("TLS, logged in with user app");
    // The server asks for TLS on its own: a plain nats:// target gets it too, and without
    // the CA the certificate cannot be trusted, which waiting will not change.
    let output = sandbox
        .initbox()
        .args(["wait-for-nats", &format!("localhost:{}", server.port)])
        .args(["--timeout", "1m"])
        .run();
    output.assert_code(1).assert_stderr_contains("certificate");
    assert!(output.elapsed < Duration::from_secs(30), "it waited");
}

#[test]
fn tls_asked_of_a_server_that_does_not_offer_it_is_exit_1() {
    let sandbox = Sandbox::new();
    let Some(server) = NatsServer::start(NatsConfig::default()) else {
        return;
    };
    sandbox
        .initbox()
        .args([
            "wait-for-nats",
            &server.address(),
            "--tls",
            "--timeout",
            "1m",
        ])
        .run()
        .assert_code(1)
        .assert_stderr_contains("the server does not offer it");
}

#[test]
fn a_password_in_the_url_is_refused_without_showing_it() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args(["wait-for-nats", "nats://app:hunter2-nats@127.0.0.1:4222"])
        .run();
    output
        .assert_code(2)
        .assert_stderr_contains("--password-file (or NATS_PASSWORD)");
    assert_no_secret(&output, "hunter2-nats");
}

#[test]
fn sigterm_while_waiting_exits_143() {
    let sandbox = Sandbox::new();
    let Some(server) = NatsServer::later(NatsConfig::default()) else {
        return;
    };
    let running = sandbox
        .initbox()
        .args(["wait-for-nats", &server.address(), "--timeout", "1m"])
        .spawn();
    running.wait_for_stderr("connection refused", Duration::from_secs(30));
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn a_pipeline_step_waits_for_nats_with_a_login() {
    let sandbox = Sandbox::new();
    let Some(server) = NatsServer::start(with_user()) else {
        return;
    };
    let password = sandbox.write("password", PASSWORD);
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: bus\n    wait-for-nats: {{servers: [\"{}\"], user: app, \
             password-file: {}, timeout: 30s}}\n",
            server.address(),
            password.display()
        ),
    );
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0)
        .assert_stderr_contains("logged in with user app")
        .assert_stderr_contains("[Completed]");
}

#[test]
fn stable_for_is_not_fooled_by_a_server_that_restarts() {
    let sandbox = Sandbox::new();
    let Some(mut server) = NatsServer::start(NatsConfig::default()) else {
        return;
    };
    let waiter = sandbox
        .initbox()
        .args(["wait-for-nats", &server.address()])
        .args(["--stable-for", "10s", "--timeout", "2m"])
        .spawn();
    waiter.wait_for_stderr("confirming it stays ready for 10s", Duration::from_secs(30));
    server.stop();
    waiter.wait_for_stderr("then not: connection refused", Duration::from_secs(30));
    server.restart();
    let output = waiter.wait();
    output
        .assert_code(0)
        .assert_stderr_contains("is ready after");
    assert_eq!(
        output.stderr.matches("confirming it stays ready").count(),
        2,
        "{}",
        output.stderr
    );
}
