//! register against a real local HTTP(S) server: bodies as the server received them,
//! Downward API expansion, which answers are retried, TLS trust and client certificates.

use std::time::Duration;

use crate::support::Sandbox;
use crate::support::http_server::{HttpServer, reply};

#[test]
fn form_with_downward_api_variables_as_received_by_the_server() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(201, "registered web-7d9f")]);
    let output = sandbox
        .initbox()
        .env("POD_NAME", "web-7d9f")
        .env("POD_IP", "10.1.2.3")
        .env("MGMT_PORT", server.port.to_string())
        .args([
            "register",
            "http://127.0.0.1:$(MGMT_PORT)/register",
            "--form",
            "instance=$(POD_NAME)",
            "--form",
            "ip=$(POD_IP)",
            "--form",
            "note=a&b $$(literal)",
        ])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("HTTP 201 Created");
    assert_eq!(output.stdout, "registered web-7d9f\n");
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, "/register");
    assert_eq!(
        request.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        request.body_text(),
        "instance=web-7d9f&ip=10.1.2.3&note=a%26b+%24%28literal%29"
    );
}

#[test]
fn json_body_and_method_and_output_file() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, "{\"id\": 42}")]);
    let saved = sandbox.path("out/registration.json");
    sandbox
        .initbox()
        .env("NODE_NAME", "node-1")
        .args(["register", &server.url("/nodes"), "--method", "put"])
        .args(["--json", r#"{"node": "$(NODE_NAME)", "ready": true}"#])
        .args(["--output", saved.to_str().unwrap()])
        .run()
        .assert_code(0);
    let request = server.requests().pop().unwrap();
    assert_eq!(request.method, "PUT");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.body_text(), r#"{"node":"node-1","ready":true}"#);
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        "{\"id\": 42}",
        "the response body lands in --output"
    );
}

#[test]
fn data_file_is_sent_as_is() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(204, "")]);
    let data = sandbox.write("payload.txt", "raw $(NOT_EXPANDED) bytes\n");
    sandbox
        .initbox()
        .args(["register", &server.url("/raw"), "--data-file"])
        .arg(&data)
        .run()
        .assert_code(0);
    let request = server.requests().pop().unwrap();
    assert_eq!(request.body_text(), "raw $(NOT_EXPANDED) bytes\n");
    assert_eq!(
        request.header("content-type"),
        Some("text/plain; charset=utf-8")
    );
}

#[test]
fn an_undefined_variable_is_a_configuration_error_before_any_request() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, "ok")]);
    sandbox
        .initbox()
        .args(["register", &server.url("/r"), "--form", "ip=$(POD_IP)"])
        .run()
        .assert_code(78)
        .assert_stderr_contains("--form ip: undefined variable $(POD_IP)");
    assert!(server.requests().is_empty());
}

#[test]
fn server_errors_are_retried_until_accepted() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![
        reply(503, "warming up"),
        reply(502, "bad gateway"),
        reply(200, "welcome"),
    ]);
    let output = sandbox
        .initbox()
        .args(["register", &server.url("/r"), "--form", "a=b"])
        .args(["--interval", "100ms"])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("HTTP 503 Service Unavailable: warming up")
        .assert_stderr_contains("HTTP 502 Bad Gateway: bad gateway");
    assert_eq!(output.stdout, "welcome\n");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert!(requests.iter().all(|r| r.body_text() == "a=b"));
}

#[test]
fn a_client_error_fails_at_once_with_one_request() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(404, "no such route: /regster\n")]);
    let output = sandbox
        .initbox()
        .args(["register", &server.url("/regster"), "--timeout", "1m"])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("HTTP 404 Not Found: no such route: /regster (expected 200-299)");
    assert!(
        output.elapsed < Duration::from_secs(10),
        "{:?}",
        output.elapsed
    );
    assert_eq!(server.requests().len(), 1, "a 404 is never retried");
}

#[test]
fn retry_after_is_honoured() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![
        reply(429, "slow down").header("Retry-After", "2"),
        reply(200, "ok"),
    ]);
    let output = sandbox
        .initbox()
        .args(["register", &server.url("/r")])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("HTTP 429 Too Many Requests: slow down (Retry-After 2s)");
    // Without Retry-After the next attempt would come after 50 ms.
    assert!(
        output.elapsed >= Duration::from_secs(2),
        "{:?}",
        output.elapsed
    );
    assert_eq!(server.requests().len(), 2);
}

#[test]
fn expect_status_narrows_success() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, "already there")]);
    sandbox
        .initbox()
        .args(["register", &server.url("/r"), "--expect-status", "201"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("HTTP 200 OK: already there (expected 201)");
}

#[test]
fn gives_up_with_124_naming_the_last_answer() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(503, "maintenance")]);
    sandbox
        .initbox()
        .args(["register", &server.url("/r"), "--timeout", "1s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains(&format!(
            "timed out after 1s waiting for POST {} (last error: HTTP 503 Service Unavailable: maintenance)",
            server.url("/r")
        ));
}

#[test]
fn tls_needs_the_ca_and_accepts_it_with_cacert() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start_tls(vec![reply(200, "secure hello")]);
    let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
    let url = server.https_url("localhost", "/r");
    sandbox
        .initbox()
        .args(["register", &url, "--timeout", "1s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("signed by an unknown CA (trust it with --cacert FILE)");
    let output = sandbox
        .initbox()
        .args(["register", &url, "--cacert"])
        .arg(&ca)
        .run();
    output.assert_code(0);
    assert_eq!(output.stdout, "secure hello\n");
}

#[test]
fn mutual_tls_with_a_client_certificate() {
    let sandbox = Sandbox::new();
    let (server, client) = HttpServer::start_mutual_tls(vec![reply(200, "hello client")]);
    let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
    let cert = sandbox.write("client.pem", &client.cert_pem);
    let key = sandbox.write("client.key", &client.key_pem);
    let url = server.https_url("127.0.0.1", "/r");
    let without = sandbox
        .initbox()
        .args(["register", &url, "--timeout", "1s", "--cacert"])
        .arg(&ca)
        .run();
    without.assert_code(124);
    assert!(
        server.requests().is_empty(),
        "no request without a certificate"
    );
    let output = sandbox
        .initbox()
        .args(["register", &url, "--cacert"])
        .arg(&ca)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .run();
    output.assert_code(0);
    assert_eq!(output.stdout, "hello client\n");
    sandbox
        .initbox()
        .args(["register", &url, "--cert"])
        .arg(&cert)
        .run()
        .assert_code(2)
        .assert_stderr_contains("--key");
    sandbox
        .initbox()
        .args(["register", &url, "--cert"])
        .arg(&cert)
        .arg("--key")
        .arg(&ca)
        .run()
        .assert_code(78)
        .assert_stderr_contains("reading private key");
}

#[test]
fn proxies_from_the_environment_and_no_proxy() {
    let sandbox = Sandbox::new();
    let proxy = HttpServer::start(vec![reply(200, "via proxy")]);
    let target = HttpServer::start(vec![reply(200, "direct")]);
    // A name only the sandbox hosts file knows: the proxy gets the absolute URL.
    sandbox.write(
        "hosts",
        "127.0.0.1 localhost registry.test\n::1 localhost\n",
    );
    let url = format!("http://registry.test:{}/r", target.port);
    let proxied = sandbox
        .initbox()
        .env("HTTP_PROXY", proxy.url(""))
        .args(["register", &url])
        .run();
    proxied.assert_code(0);
    assert_eq!(proxied.stdout, "via proxy\n");
    assert_eq!(proxy.requests()[0].path, url);
    assert!(target.requests().is_empty());

    let direct = sandbox
        .initbox()
        .env("HTTP_PROXY", proxy.url(""))
        .env("NO_PROXY", "registry.test")
        .args(["register", &url])
        .run();
    direct.assert_code(0);
    assert_eq!(direct.stdout, "direct\n");
    assert_eq!(proxy.requests().len(), 1);
}

#[test]
fn planted_secrets_never_appear_in_any_output() {
    let sandbox = Sandbox::new();
    // The server echoes credentials back in its error, as careless servers do.
    let server = HttpServer::start(vec![reply(
        503,
        "bad token tok-9f8e7d6c5b4a and password hunter2-pw and key k3y-abcdef",
    )]);
    let token = sandbox.write("token", "tok-9f8e7d6c5b4a\n");
    let url = format!("http://admin:hunter2-pw@127.0.0.1:{}/r", server.port);
    for format in ["text", "json"] {
        let output = sandbox
            .initbox()
            .args(["register", &url, "--timeout", "1s", "-v"])
            .args(["--log-format", format, "--bearer-token-file"])
            .arg(&token)
            .args(["--header", "X-Api-Key: k3y-abcdef"])
            .run();
        output.assert_code(124);
        let everything = format!("{}{}", output.stdout, output.stderr);
        for secret in ["tok-9f8e7d6c5b4a", "hunter2-pw", "k3y-abcdef", "admin"] {
            assert!(
                !everything.contains(secret),
                "{secret} leaked in {format} output:\n{everything}"
            );
        }
        assert!(everything.contains("Bearer ***"), "{everything}");
        assert!(everything.contains("http://***@127.0.0.1"), "{everything}");
    }
    // The secrets still reach the server, where they belong.
    let request = server.requests().pop().unwrap();
    assert!(
        request
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("authorization")
                && v == "Bearer tok-9f8e7d6c5b4a"),
        "{:?}",
        request.headers
    );
    assert_eq!(request.header("x-api-key"), Some("k3y-abcdef"));
}
