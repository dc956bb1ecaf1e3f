//! wait-for-grpc against a real grpc.health.v1 server (Python grpcio) on loopback: started
//! after the waiter, switching between SERVING and NOT_SERVING, without a health service,
//! over TLS with the right and the wrong CA.

use std::time::Duration;

use crate::support::grpc_server::{self, GrpcOptions, GrpcServer};
use crate::support::http_server::{HttpServer, reply};
use crate::support::{Sandbox, free_port, path_str};

const SEEN: Duration = Duration::from_secs(20);

#[test]
fn a_server_that_starts_after_the_waiter_is_seen() {
    if grpc_server::python().is_none() {
        return;
    }
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    let waiter = sandbox
        .initbox()
        .args([
            "wait-for-grpc",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "60s",
        ])
        .spawn();
    waiter.wait_for_stderr("is not ready: connection refused", SEEN);
    let Some(server) = GrpcServer::start_on(port, GrpcOptions::default()) else {
        return;
    };
    let output = waiter.wait();
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("{} is ready after", server.address()))
        .assert_stderr_contains("the server (service '') SERVING");
}

#[test]
fn not_serving_is_not_ready_until_the_service_serves() {
    let Some(server) = GrpcServer::start(GrpcOptions {
        app_not_serving: true,
        ..GrpcOptions::default()
    }) else {
        return;
    };
    let sandbox = Sandbox::new();
    let waiter = sandbox
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--service", "app"])
        .args(["--timeout", "60s"])
        .spawn();
    waiter.wait_for_stderr("is not ready: service 'app' is NOT_SERVING", SEEN);
    server.set_app_serving(true);
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("service 'app' SERVING");
}

#[test]
fn every_service_named_must_serve() {
    let Some(server) = GrpcServer::start(GrpcOptions {
        app_not_serving: true,
        ..GrpcOptions::default()
    }) else {
        return;
    };
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--service", ""])
        .args(["--service", "app", "--timeout", "1s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("last error: service 'app' is NOT_SERVING");
    server.set_app_serving(true);
    sandbox
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--service", ""])
        .args(["--service", "app", "--timeout", "10s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("the server (service ''), service 'app' SERVING");
}

#[test]
fn an_unknown_service_is_not_ready_naming_it() {
    let Some(server) = grpc_server::shared() else {
        return;
    };
    Sandbox::new()
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--service", "nosuch"])
        .args(["--timeout", "1s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("service 'nosuch' is not known to the server (NOT_FOUND");
}

#[test]
fn a_server_without_the_health_service_fails_at_once_with_exit_1() {
    let Some(server) = GrpcServer::start(GrpcOptions {
        no_health: true,
        ..GrpcOptions::default()
    }) else {
        return;
    };
    let output = Sandbox::new()
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--timeout", "60s"])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("has no gRPC health service")
        .assert_stderr_contains("UNIMPLEMENTED");
    assert_eq!(
        output.stderr.matches("is not ready").count(),
        0,
        "{}",
        output.stderr
    );
}

#[test]
fn tls_with_the_servers_ca_is_ready_and_with_another_ca_fails_at_once() {
    let Some(server) = GrpcServer::start(GrpcOptions {
        tls: true,
        ..GrpcOptions::default()
    }) else {
        return;
    };
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--tls", "--cacert"])
        .arg(server.ca())
        .args(["--service", "app", "--timeout", "20s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("service 'app' SERVING");
    // The certificate names 127.0.0.1 and localhost: another name is refused, and
    // --server-name is what the certificate is checked against.
    sandbox
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--tls", "--cacert"])
        .arg(server.ca())
        .args(["--server-name", "localhost", "--timeout", "20s"])
        .run()
        .assert_code(0);
    sandbox
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--tls", "--cacert"])
        .arg(server.ca())
        .args(["--server-name", "api.example", "--timeout", "20s"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("api.example");
    sandbox
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--tls", "--cacert"])
        .arg(server.other_ca())
        .args(["--timeout", "20s"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("certificate");
}

#[test]
fn plaintext_against_tls_is_not_ready_and_tls_against_plaintext_fails() {
    let Some(tls) = GrpcServer::start(GrpcOptions {
        tls: true,
        ..GrpcOptions::default()
    }) else {
        return;
    };
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args(["wait-for-grpc", &tls.address(), "--timeout", "1s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("try --tls");
    let Some(plain) = grpc_server::shared() else {
        return;
    };
    sandbox
        .initbox()
        .args(["wait-for-grpc", &plain.address(), "--tls", "--insecure"])
        .args(["--timeout", "20s"])
        .run()
        .assert_code(1)
        .assert_stderr_contains(
            "the server does not speak TLS (a plaintext gRPC port: leave out --tls)",
        );
}

/// gRPC needs HTTP/2: a port that answers in HTTP/1 is not ready, and the reason says so in
/// initbox's words, not h2's ("frame with invalid size").
#[test]
fn an_http1_server_is_not_ready_and_the_reason_says_it_does_not_speak_http2() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start((0..200).map(|_| reply(400, "Bad Request")).collect());
    let output = sandbox
        .initbox()
        .args(["wait-for-grpc", &format!("127.0.0.1:{}", server.port)])
        .args(["--timeout", "1s"])
        .run();
    output
        .assert_code(124)
        .assert_stderr_contains("the server does not answer in HTTP/2 (an HTTP/1 port");
    assert!(
        !output.stderr.contains("invalid size"),
        "library wording: {}",
        output.stderr
    );
}

#[test]
fn tls_flags_without_tls_are_refused() {
    let sandbox = Sandbox::new();
    let ca = sandbox.write("ca.pem", "");
    sandbox
        .initbox()
        .args(["wait-for-grpc", "127.0.0.1:1", "--cacert", path_str(&ca)])
        .run()
        .assert_code(2)
        .assert_stderr_contains("'--cacert <FILE>': only applies with --tls");
    sandbox
        .initbox()
        .args(["wait-for-grpc", "127.0.0.1:1", "--server-name", "api"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("only applies with --tls");
}

#[test]
fn sigterm_while_waiting_exits_143() {
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    let waiter = sandbox
        .initbox()
        .args(["wait-for-grpc", &format!("127.0.0.1:{port}")])
        .spawn();
    waiter.wait_for_stderr("is not ready", SEEN);
    waiter.signal("TERM");
    waiter
        .wait()
        .assert_code(143)
        .assert_stderr_contains("interrupted by SIGTERM");
}

#[test]
fn a_pipeline_step_waits_for_grpc() {
    let Some(server) = grpc_server::shared() else {
        return;
    };
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: api\n    wait-for-grpc: {{targets: [\"{}\"], service: [app], timeout: 20s}}\n",
            server.address()
        ),
    );
    sandbox.check_pipeline(&pipeline).assert_code(0);
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0)
        .assert_stderr_contains("service 'app' SERVING");
}

#[test]
fn stable_for_is_met_only_after_the_server_came_back_and_stayed() {
    let Some(mut server) = GrpcServer::start(GrpcOptions::default()) else {
        return;
    };
    let sandbox = Sandbox::new();
    let waiter = sandbox
        .initbox()
        .args(["wait-for-grpc", &server.address(), "--stable-for", "10s"])
        .args(["--timeout", "120s"])
        .spawn();
    waiter.wait_for_stderr("confirming it stays ready for 10s", SEEN);
    // The "ready twice" restart: the first ready run is broken, the second one counts.
    server.stop();
    waiter.wait_for_stderr("then not: connection refused", SEEN);
    server.restart();
    let output = waiter.wait();
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("{} is ready after", server.address()));
    assert_eq!(
        output.stderr.matches("confirming it stays ready").count(),
        2,
        "{}",
        output.stderr
    );
}
