//! register against a real local HTTP(S) server: bodies as the server received them,
//! Downward API expansion, which answers are retried, TLS trust and client certificates.

use std::time::Duration;

use crate::support::http_server::{CertSpec, HttpServer, reply};
use crate::support::{Sandbox, entries, free_port};

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
    // The success line says what was done, not that something "is ready".
    output.assert_code(0).assert_stderr_contains(&format!(
        "registered with http://127.0.0.1:{}/register after",
        server.port
    ));
    assert!(
        output.stderr.contains("(1 attempt): HTTP 201 Created"),
        "{}",
        output.stderr
    );
    assert!(!output.stderr.contains("is ready"), "{}", output.stderr);
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
    assert_eq!(request.body_text(), r#"{"node": "node-1", "ready": true}"#);
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
    let server = HttpServer::start(vec![reply(200, "ok")]).never_called();
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
        .args(["register", &url, "--timeout", "1m"])
        .run()
        .assert_code(1)
        .assert_stderr_contains(
            "TLS: the server certificate (valid for localhost, 127.0.0.1) is signed by an unknown CA (trust it with --cacert FILE)",
        );
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
        .args(["register", &url, "--timeout", "1m", "--cacert"])
        .arg(&ca)
        .run();
    // A missing client certificate is configuration: it ends the run at once.
    without.assert_code(1).assert_stderr_contains(
        "TLS: the server requires a client certificate (give one with --cert FILE --key FILE)",
    );
    assert!(
        !without.stderr.contains("CertificateRequired"),
        "{}",
        without.stderr
    );
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

#[test]
fn json_is_sent_byte_for_byte_with_string_values_expanded_and_escaped() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(201, "ok")]);
    // A value that would break out of its string if pasted in as it is.
    let hostile = "x\", \"admin\": true, \"y\": \"\\ \n\u{7}";
    let given = r#"{"z": 1, "id": 123456789012345678901234567890, "ratio": 1.50,
  "$(POD_NAME)": "$(POD_NAME)", "note": "$(HOSTILE)", "lit": "$$(POD_NAME)", "u": "\u00e9"}"#;
    sandbox
        .initbox()
        .env("POD_NAME", "web-0")
        .env("HOSTILE", hostile)
        .args(["register", &server.url("/r"), "--json", given])
        .run()
        .assert_code(0);
    let sent = server.requests().pop().unwrap().body_text();
    let expected = given
        .replacen(r#": "$(POD_NAME)""#, r#": "web-0""#, 1)
        .replace(r#""$(HOSTILE)""#, &serde_json::to_string(hostile).unwrap())
        .replace(r#""$$(POD_NAME)""#, r#""$(POD_NAME)""#);
    assert_eq!(sent, expected, "keys, numbers, order and spacing as given");
    let parsed: serde_json::Value = serde_json::from_str(&sent).unwrap();
    assert_eq!(
        parsed["note"], hostile,
        "the value stayed inside its string"
    );
    assert!(parsed.get("admin").is_none(), "{sent}");
    assert_eq!(parsed["$(POD_NAME)"], "web-0", "keys are not expanded");
    sandbox
        .initbox()
        .args(["register", &server.url("/r"), "--json", "{\"a\": 1,}"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("for '--json <JSON>': not valid JSON");
}

#[test]
fn post_and_put_without_a_body_send_content_length_0() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(204, "")]);
    for method in ["POST", "PUT", "PATCH"] {
        sandbox
            .initbox()
            .args(["register", &server.url("/r"), "--method", method])
            .run()
            .assert_code(0);
        let request = server.requests().pop().unwrap();
        assert_eq!(request.method, method);
        let lengths: Vec<&str> = request
            .head
            .lines()
            .filter(|line| line.to_ascii_lowercase().starts_with("content-length:"))
            .collect();
        assert_eq!(lengths.len(), 1, "{}", request.head);
        assert_eq!(lengths[0].split(':').nth(1).unwrap().trim(), "0");
    }
    // A body brings its own length, once.
    sandbox
        .initbox()
        .args(["register", &server.url("/r"), "--form", "a=b"])
        .run()
        .assert_code(0);
    let head = server.requests().pop().unwrap().head.to_ascii_lowercase();
    assert_eq!(head.matches("content-length: 3").count(), 1, "{head}");
}

#[test]
fn an_unusable_output_is_found_before_the_pod_is_registered() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(201, "registered")]).never_called();
    let blocker = sandbox.write("blocker", "a file where a directory should be");
    let dir = sandbox.path("existing-dir");
    std::fs::create_dir(&dir).unwrap();
    let cases: [(std::path::PathBuf, &str); 4] = [
        (
            blocker.join("out.json"),
            &format!("{} is not a directory", blocker.display()),
        ),
        (dir.clone(), "is a directory"),
        (sandbox.path("existing-dir/"), "is a directory"),
        (sandbox.path("new-dir/"), "names a directory"),
    ];
    for (output, reason) in cases {
        sandbox
            .initbox()
            .args(["register", &server.url("/r"), "--form", "a=b", "-o"])
            .arg(&output)
            .run()
            .assert_code(1)
            .assert_stderr_contains(&format!(
                "cannot write the response to {}: {reason}",
                output.display()
            ));
    }
    assert_eq!(server.requests().len(), 0, "no registration was sent");
    assert!(entries(&dir).is_empty(), "left behind: {:?}", entries(&dir));
    assert_eq!(
        entries(sandbox.dir.path()),
        ["blocker", "existing-dir", "hosts"]
    );
}

#[test]
fn a_redirect_loop_ends_at_once_with_exit_1() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(302, "").header("Location", "/loop")]);
    let output = sandbox
        .initbox()
        .args(["register", &server.url("/loop"), "--timeout", "1m"])
        .run();
    output.assert_code(1).assert_stderr_contains(&format!(
        "redirect loop: {url} redirects back to {url}, visited before",
        url = server.url("/loop")
    ));
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn too_many_redirects_end_at_once_with_exit_1() {
    let sandbox = Sandbox::new();
    let chain = (1..=12)
        .map(|n| reply(307, "").header("Location", &format!("/hop{n}")))
        .collect();
    let server = HttpServer::start(chain);
    sandbox
        .initbox()
        .args(["register", &server.url("/start"), "--timeout", "1m"])
        .run()
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "more than 10 redirects (the last to {})",
            server.url("/hop11")
        ));
    assert_eq!(server.requests().len(), 11);
}

#[test]
fn certificate_problems_end_at_once_naming_the_certificates_names() {
    let sandbox = Sandbox::new();
    let wrong_name = HttpServer::start_tls_with(
        vec![reply(200, "ok")],
        CertSpec::for_names(&["registry.example", "10.9.8.7"]),
    );
    let expired = HttpServer::start_tls_with(vec![reply(200, "ok")], CertSpec::local().expired());
    let cases = [
        (
            &wrong_name,
            "TLS: the server certificate is not valid for localhost: it is valid for registry.example, 10.9.8.7 (use one of those names in the URL, or fix the certificate)",
        ),
        (
            &expired,
            "TLS: the server certificate (valid for localhost, 127.0.0.1) expired on Thu, 31 Dec 2020",
        ),
    ];
    for (server, message) in cases {
        let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
        sandbox
            .initbox()
            .args(["register", &server.https_url("localhost", "/r")])
            .args(["--timeout", "1m", "--cacert"])
            .arg(&ca)
            .run()
            .assert_code(1)
            .assert_stderr_contains(message);
        assert!(server.requests().is_empty());
    }
}

#[test]
fn https_to_a_plain_http_port_says_the_server_does_not_speak_tls() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, "plain")]);
    let output = sandbox
        .initbox()
        .args([
            "register",
            &format!("https://127.0.0.1:{}/r", server.port),
            "--timeout",
            "1m",
        ])
        .run();
    output.assert_code(1).assert_stderr_contains(
        "TLS: the server does not speak TLS (is this https:// URL pointing at a plain-HTTP port? then use http://)",
    );
    assert!(
        !output.stderr.contains("InvalidContentType"),
        "{}",
        output.stderr
    );
}

#[test]
fn port_0_is_a_usage_error_before_any_attempt() {
    let sandbox = Sandbox::new();
    let unused = free_port("127.0.0.1");
    let dest = sandbox.path("out");
    let cases = [
        vec!["register", "http://127.0.0.1:0/r"],
        vec!["register", "http://127.0.0.1:$(PORT)/r"],
        vec![
            "fetch",
            "http://127.0.0.1:0/f",
            "-o",
            dest.to_str().unwrap(),
        ],
        vec!["wait-for-http", "https://localhost:0/"],
        vec!["git-clone", "http://127.0.0.1:0/r", dest.to_str().unwrap()],
    ];
    let covered: Vec<&str> = cases.iter().map(|args| args[0]).collect();
    crate::support::assert_covers(
        &covered,
        &crate::support::commands_taking(&["URL", "REPO"]),
        "port 0 in a URL",
    );
    for args in cases {
        sandbox
            .initbox()
            .env("PORT", "0")
            .args(&args)
            .args(["--timeout", "1m"])
            .run()
            .assert_code(2)
            .assert_stderr_contains("port 0 cannot be connected to");
    }
    assert!(!dest.exists());
    let _ = unused;
}

#[test]
fn run_check_refuses_a_url_that_cannot_be_requested_and_checks_one_with_a_variable_later() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        "steps:\n  - name: nowhere\n    register: {url: \"http://127.0.0.1:0/r\"}\n  - name: pod\n    register: {url: \"http://$(API_HOST)/r\"}\n",
    );
    let output = sandbox.check_pipeline(&pipeline);
    output
        .assert_code(78)
        .assert_stderr_contains("port 0 cannot be connected to");
    assert!(
        !output.stderr.contains("problems in the pipeline"),
        "only the URL without a variable is refused:\n{}",
        output.stderr
    );
}

#[test]
fn a_password_in_a_refused_url_never_reaches_the_log() {
    let sandbox = Sandbox::new();
    let out = sandbox.path("out");
    let out = out.to_str().unwrap();
    for args in [
        vec!["register", "-o", out],
        vec!["fetch", "-o", out],
        vec!["wait-for-http"],
    ] {
        let command = args[0];
        let output = sandbox
            .initbox()
            .args(&args)
            .arg("http://deploy:pa55-w0rd-xyz@127.0.0.1:0/r")
            .run();
        output.assert_code(2).assert_stderr_contains("port 0");
        assert!(
            !output.stderr.contains("pa55-w0rd-xyz"),
            "{command}: {}",
            output.stderr
        );
    }
}
