//! wait-for-http against real HTTP and HTTPS servers (with a CA made for the test).

use crate::support::http_server::{CertSpec, HttpServer, reply, silent_server};
use crate::support::{Sandbox, free_port};

#[test]
fn retries_until_the_status_is_accepted() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![
        reply(503, "starting"),
        reply(503, "starting"),
        reply(200, "ok"),
    ]);
    let output = sandbox
        .initbox()
        .args(["wait-for-http", &server.url("/healthz"), "--timeout", "30s"])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("is not ready: HTTP 503 (expected 200-399)")
        .assert_stderr_contains("is ready after")
        .assert_stderr_contains("HTTP 200");
    let requests = server.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].method, "GET");
    assert_eq!(requests[0].path, "/healthz");
    assert!(
        requests[0]
            .header("user-agent")
            .unwrap()
            .starts_with("initbox/")
    );
}

#[test]
fn status_ranges_method_and_headers() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(404, "nope")]);
    sandbox
        .initbox()
        .args(["wait-for-http", &server.url("/"), "--timeout", "300ms"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("(last error: HTTP 404 (expected 200-399))");
    sandbox
        .initbox()
        .args(["wait-for-http", &server.url("/x"), "--status", "4xx"])
        .args(["--method", "post", "--header", "X-Probe: yes"])
        .run()
        .assert_code(0);
    let last = server.requests().pop().unwrap();
    assert_eq!(last.method, "POST");
    assert_eq!(last.header("x-probe"), Some("yes"));
}

#[test]
fn body_regex_must_match() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![
        reply(200, "status: starting"),
        reply(200, "status: ready"),
    ]);
    sandbox
        .initbox()
        .args([
            "wait-for-http",
            &server.url("/"),
            "--body-regex",
            "status: ready$",
        ])
        .run()
        .assert_code(0)
        .assert_stderr_contains("body does not match /status: ready$/")
        .assert_stderr_contains("body matches");
}

#[test]
fn a_connection_refused_is_waited_out() {
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    sandbox
        .initbox()
        .args([
            "wait-for-http",
            &format!("http://127.0.0.1:{port}/"),
            "--timeout",
            "300ms",
        ])
        .run()
        .assert_code(124)
        .assert_stderr_contains("(last error: connection refused)");
}

/// The system's CA store (a directory of hundreds of files where SSL_CERT_DIR names one) is
/// read on the first TLS handshake, never by a process that speaks plain http://.
#[test]
fn the_system_ca_store_is_read_only_for_a_tls_connection() {
    let sandbox = Sandbox::new();
    let plain = HttpServer::start(vec![reply(200, "ok")]);
    let tls = HttpServer::start_tls(vec![reply(200, "ok")]);
    let ca = sandbox.write("ca.pem", tls.ca_pem.as_ref().unwrap());
    let read_the_store = "system CA certificates";
    let output = sandbox
        .initbox()
        .args(["-v", "wait-for-http", &plain.url("/")])
        .env("SSL_CERT_FILE", &ca)
        .run();
    output.assert_code(0);
    assert!(!output.stderr.contains(read_the_store), "{}", output.stderr);
    sandbox
        .initbox()
        .args(["-v", "wait-for-http", &tls.https_url("127.0.0.1", "/")])
        .env("SSL_CERT_FILE", &ca)
        .run()
        .assert_code(0)
        .assert_stderr_contains(read_the_store);
}

#[test]
fn tls_needs_the_private_ca_then_passes() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start_tls(vec![reply(200, "ok")]);
    let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
    let url = server.https_url("localhost", "/healthz");
    sandbox
        .initbox()
        .args(["wait-for-http", &url, "--timeout", "500ms"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("signed by an unknown CA (trust it with --cacert FILE)");
    sandbox
        .initbox()
        .args(["wait-for-http", &url, "--cacert", ca.to_str().unwrap()])
        .run()
        .assert_code(0)
        .assert_stderr_contains("HTTP 200");
    // The same CA through the variable scratch images and CI runners commonly set.
    sandbox
        .initbox()
        .args(["wait-for-http", &server.https_url("127.0.0.1", "/")])
        .env("SSL_CERT_FILE", &ca)
        .run()
        .assert_code(0);
    let output = sandbox
        .initbox()
        .args(["wait-for-http", &url, "--insecure"])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("warning: --insecure: TLS certificates are NOT verified");
}

#[test]
fn an_unreadable_ca_file_is_a_configuration_error() {
    let sandbox = Sandbox::new();
    let not_pem = sandbox.write("not-a-cert.pem", "hello\n");
    sandbox
        .initbox()
        .args([
            "wait-for-http",
            "https://localhost:1/",
            "--cacert",
            not_pem.to_str().unwrap(),
        ])
        .run()
        .assert_code(78)
        .assert_stderr_contains("no PEM certificate found");
    sandbox
        .initbox()
        .args([
            "wait-for-http",
            "https://localhost:1/",
            "--cacert",
            "/nonexistent/ca.pem",
        ])
        .run()
        .assert_code(78)
        .assert_stderr_contains("reading CA certificate /nonexistent/ca.pem");
}

#[test]
fn a_server_that_never_answers_is_cut_by_the_attempt_timeout() {
    let sandbox = Sandbox::new();
    let (port, _server) = silent_server();
    sandbox
        .initbox()
        .args(["wait-for-http", &format!("http://127.0.0.1:{port}/")])
        .args(["--attempt-timeout", "200ms", "--timeout", "1s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("no answer within 200ms (--attempt-timeout)");
}

#[test]
fn passwords_in_urls_never_reach_the_logs() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(500, "no")]);
    let url = format!("http://admin:s3cr3t-pw@127.0.0.1:{}/", server.port);
    let output = sandbox
        .initbox()
        .args([
            "-v",
            "--log-format",
            "json",
            "wait-for-http",
            &url,
            "--timeout",
            "300ms",
        ])
        .run();
    output.assert_code(124);
    assert!(!output.stderr.contains("s3cr3t-pw"), "{}", output.stderr);
    assert!(output.stderr.contains("***@127.0.0.1"), "{}", output.stderr);
    // The credentials were still sent to the server.
    let auth = server.requests()[0]
        .header("authorization")
        .unwrap()
        .to_owned();
    assert!(auth.starts_with("Basic "), "{auth}");
}

#[test]
fn proxy_variables_are_honoured() {
    let sandbox = Sandbox::new();
    let proxy = HttpServer::start(vec![reply(200, "via proxy")]);
    sandbox
        .initbox()
        .args([
            "wait-for-http",
            "http://backend.invalid/health",
            "--timeout",
            "10s",
        ])
        .env("HTTP_PROXY", proxy.url(""))
        .run()
        .assert_code(0);
    let seen = proxy.requests();
    assert_eq!(seen[0].path, "http://backend.invalid/health");
}

/// wait-for-http waits for an endpoint to become ready, and a TLS endpoint still showing a
/// temporary certificate (an ingress controller's default one, cert-manager not done yet)
/// is not ready yet: certificate problems are retried, named at the first attempt and in
/// the timeout message (register and fetch end at once instead).
#[test]
fn certificate_problems_are_waited_out_and_named() {
    let sandbox = Sandbox::new();
    let wrong_name = HttpServer::start_tls_with(
        vec![reply(200, "ok")],
        CertSpec::for_names(&["ingress.example"]),
    );
    let expired = HttpServer::start_tls_with(vec![reply(200, "ok")], CertSpec::local().expired());
    let cases = [
        (
            &wrong_name,
            "(last error: TLS: the server certificate is not valid for localhost: it is valid for ingress.example (use one of those names in the URL, or fix the certificate))",
        ),
        (
            &expired,
            "(last error: TLS: the server certificate (valid for localhost, 127.0.0.1) expired on Thu, 31 Dec 2020",
        ),
    ];
    for (server, message) in cases {
        let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
        sandbox
            .initbox()
            .args(["wait-for-http", &server.https_url("localhost", "/")])
            .args(["--timeout", "300ms", "--cacert"])
            .arg(&ca)
            .run()
            .assert_code(124)
            .assert_stderr_contains(message);
    }
}

#[test]
fn tls_failures_are_sentences_not_library_identifiers() {
    let sandbox = Sandbox::new();
    let plain = HttpServer::start(vec![reply(200, "plain")]);
    let not_tls = sandbox
        .initbox()
        .args([
            "wait-for-http",
            &format!("https://127.0.0.1:{}/", plain.port),
        ])
        .args(["--timeout", "300ms"])
        .run();
    not_tls.assert_code(124).assert_stderr_contains(
        "TLS: the server does not speak TLS (is this https:// URL pointing at a plain-HTTP port? then use http://)",
    );
    let (mutual, _client) = HttpServer::start_mutual_tls(vec![reply(200, "ok")]);
    let ca = sandbox.write("ca.pem", mutual.ca_pem.as_ref().unwrap());
    let no_client_cert = sandbox
        .initbox()
        .args(["wait-for-http", &mutual.https_url("127.0.0.1", "/")])
        .args(["--timeout", "300ms", "--cacert"])
        .arg(&ca)
        .run();
    no_client_cert.assert_code(124).assert_stderr_contains(
        "TLS: the server requires a client certificate (give one with --cert FILE --key FILE)",
    );
    for output in [&not_tls, &no_client_cert] {
        for identifier in ["InvalidContentType", "CertificateRequired", "AlertReceived"] {
            assert!(!output.stderr.contains(identifier), "{}", output.stderr);
        }
    }
}

#[test]
fn a_server_that_hangs_up_without_answering_is_named_in_words() {
    let sandbox = Sandbox::new();
    // The server reads the whole request before it closes: closing with the request still
    // unread would send a reset instead, a different failure ("connection reset").
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reader = std::io::BufReader::new(stream);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut line).is_ok_and(|n| n > 0)
                && line != "\r\n"
            {
                line.clear();
            }
        }
    });
    let output = sandbox
        .initbox()
        .args(["wait-for-http", &format!("http://127.0.0.1:{port}/")])
        .args(["--timeout", "300ms"])
        .run();
    output.assert_code(124).assert_stderr_contains(
        "(last error: the server closed the connection without a complete answer)",
    );
    assert!(accepted.load(std::sync::atomic::Ordering::SeqCst) > 0);
}
