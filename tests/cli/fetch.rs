//! fetch against a real local HTTP(S) server: what lands at the destination, and above all
//! what never does (a mismatched, oversized or half-finished download).

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::http_server::{CertSpec, HttpServer, reply, reply_bytes};
use crate::support::{Sandbox, entries, eventually};

const PAGE: &str = "<h1>hello from the init container</h1>\n";
/// sha256 of PAGE.
const PAGE_SHA256: &str = "01cfa337e5fc746e7808799a0cdcf2406fc340b717e05ce69d03c59bf8cdc3c1";

fn sha256_of(text: &str) -> String {
    let output = std::process::Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&output.stdout)[..64].to_owned()
}

#[test]
fn downloads_into_a_new_directory_with_mode_and_checksum() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, PAGE)]);
    let dest = sandbox.path("work-dir/html/index.html");
    let sha = sha256_of(PAGE);
    let output = sandbox
        .initbox()
        .args(["fetch", &server.url("/index.html"), "-o"])
        .arg(&dest)
        .args(["--mode", "0640", "--sha256", &sha, "--fsync"])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("fetched {} after", server.url("/index.html")))
        .assert_stderr_contains(&format!("(1 attempt): saved 39 B to {}", dest.display()))
        .assert_stderr_contains("SHA-256 verified");
    assert!(!output.stderr.contains("is ready"), "{}", output.stderr);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), PAGE);
    let mode = std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    assert_eq!(entries(dest.parent().unwrap()), ["index.html"]);
    assert_eq!(server.requests()[0].method, "GET");
}

#[test]
fn a_checksum_mismatch_leaves_nothing_and_keeps_the_old_file() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, "tampered\n")]);
    assert_eq!(sha256_of(PAGE), PAGE_SHA256);
    let dest = sandbox.path("site/index.html");
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, "previous version").unwrap();
    sandbox
        .initbox()
        .args(["fetch", &server.url("/"), "-o"])
        .arg(&dest)
        .args(["--sha256", PAGE_SHA256])
        .run()
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "SHA-256 mismatch: expected {PAGE_SHA256}, got {}",
            sha256_of("tampered\n")
        ))
        .assert_stderr_contains("nothing was saved");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "previous version");
    assert_eq!(entries(dest.parent().unwrap()), ["index.html"]);
    assert_eq!(server.requests().len(), 1, "a mismatch is not retried");

    let fresh = sandbox.path("fresh/index.html");
    sandbox
        .initbox()
        .args(["fetch", &server.url("/"), "-o"])
        .arg(&fresh)
        .args(["--sha256", PAGE_SHA256])
        .run()
        .assert_code(1);
    assert!(!fresh.exists());
    assert!(entries(fresh.parent().unwrap()).is_empty());
}

#[test]
fn retries_server_errors_but_not_client_errors() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![
        reply(503, "not yet"),
        reply(200, PAGE).header("Content-Type", "text/html"),
    ]);
    let dest = sandbox.path("index.html");
    sandbox
        .initbox()
        .args(["fetch", &server.url("/"), "-o"])
        .arg(&dest)
        .args(["--interval", "100ms"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("HTTP 503 Service Unavailable: not yet");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), PAGE);

    let missing = HttpServer::start(vec![reply(404, "gone")]);
    let dest = sandbox.path("missing.html");
    sandbox
        .initbox()
        .args(["fetch", &missing.url("/missing.html"), "-o"])
        .arg(&dest)
        .run()
        .assert_code(1)
        .assert_stderr_contains("HTTP 404 Not Found: gone (expected 200-299)");
    assert_eq!(missing.requests().len(), 1);
    assert!(!dest.exists());
}

#[test]
fn max_size_refuses_big_downloads() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply_bytes(200, vec![b'x'; 100_000])]);
    let dest = sandbox.path("big.bin");
    sandbox
        .initbox()
        .args(["fetch", &server.url("/big"), "-o"])
        .arg(&dest)
        .args(["--max-size", "64k"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("larger than --max-size 64 KiB");
    assert!(!dest.exists());
    sandbox
        .initbox()
        .args(["fetch", &server.url("/big"), "-o"])
        .arg(&dest)
        .args(["--max-size", "100000"])
        .run()
        .assert_code(0);
    assert_eq!(std::fs::metadata(&dest).unwrap().len(), 100_000);
}

#[test]
fn dash_writes_to_stdout() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, PAGE)]);
    let output = sandbox
        .initbox()
        .args(["fetch", &server.url("/"), "-o", "-"])
        .run();
    output.assert_code(0).assert_stderr_contains("to stdout");
    assert_eq!(output.stdout, PAGE);
}

#[test]
fn a_stalled_download_is_retried_from_scratch() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, PAGE).stall_after(10), reply(200, PAGE)]);
    let dest = sandbox.path("index.html");
    sandbox
        .initbox()
        .args(["fetch", &server.url("/"), "-o"])
        .arg(&dest)
        .args(["--attempt-timeout", "1s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("the download broke off after 10 B");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), PAGE);
    assert!(
        !entries(sandbox.dir.path())
            .iter()
            .any(|name| name.ends_with(".tmp")),
        "no temp file is left"
    );
}

#[test]
fn tls_with_the_ca_from_cacert() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start_tls(vec![reply(200, PAGE)]);
    let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
    let dest = sandbox.path("index.html");
    sandbox
        .initbox()
        .args(["fetch", &server.https_url("localhost", "/"), "-o"])
        .arg(&dest)
        .arg("--cacert")
        .arg(&ca)
        .run()
        .assert_code(0);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), PAGE);
}

#[test]
fn an_unusable_destination_is_found_before_the_request() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, PAGE)]).never_called();
    let blocker = sandbox.write("not-a-dir", "a file where a directory should be");
    let dir = sandbox.path("html");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("old.html"), "old").unwrap();
    let cases: [(std::path::PathBuf, String); 4] = [
        (
            blocker.join("index.html"),
            format!("{} is not a directory", blocker.display()),
        ),
        (dir.clone(), "is a directory".into()),
        (sandbox.path("html/"), "is a directory".into()),
        (sandbox.path("html/."), "is a directory".into()),
    ];
    for (dest, reason) in cases {
        sandbox
            .initbox()
            .args(["fetch", &server.url("/"), "--timeout", "1m", "-o"])
            .arg(&dest)
            .run()
            .assert_code(1)
            .assert_stderr_contains(&format!("cannot write {}: {reason}", dest.display()));
    }
    assert_eq!(server.requests().len(), 0, "nothing was downloaded");
    assert_eq!(entries(&dir), ["old.html"], "no temp file is left");
    assert_eq!(entries(sandbox.dir.path()), ["hosts", "html", "not-a-dir"]);
}

#[test]
fn stdout_with_sha256_gets_only_verified_bytes() {
    let sandbox = Sandbox::new();
    let good = HttpServer::start(vec![reply(200, PAGE)]);
    let output = sandbox
        .initbox()
        .args(["fetch", &good.url("/"), "-o", "-", "--sha256", PAGE_SHA256])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("wrote 39 B to stdout, SHA-256 verified");
    assert_eq!(output.stdout, PAGE);

    // A large tampered download: not one byte reaches stdout.
    let tampered = HttpServer::start(vec![reply_bytes(200, vec![b't'; 300_000])]);
    let output = sandbox
        .initbox()
        .args([
            "fetch",
            &tampered.url("/"),
            "-o",
            "-",
            "--sha256",
            PAGE_SHA256,
        ])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("SHA-256 mismatch")
        .assert_stderr_contains("nothing was written to stdout");
    assert_eq!(output.stdout, "", "unverified bytes reached stdout");

    // The spool is bounded by --max-size.
    let output = sandbox
        .initbox()
        .args([
            "fetch",
            &tampered.url("/"),
            "-o",
            "-",
            "--sha256",
            PAGE_SHA256,
        ])
        .args(["--max-size", "64k"])
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("larger than --max-size 64 KiB");
    assert_eq!(output.stdout, "");
}

#[test]
fn a_broken_spooled_download_is_retried_and_only_the_full_one_is_written() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, PAGE).stall_after(10), reply(200, PAGE)]);
    let output = sandbox
        .initbox()
        .args([
            "fetch",
            &server.url("/"),
            "-o",
            "-",
            "--sha256",
            PAGE_SHA256,
        ])
        .args(["--attempt-timeout", "1s"])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("the download broke off after 10 B");
    assert_eq!(
        output.stdout, PAGE,
        "the first 10 bytes were not written twice"
    );
}

#[test]
fn a_redirect_loop_ends_at_once_with_exit_1() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![
        reply(301, "").header("Location", "/b"),
        reply(301, "").header("Location", "/a"),
    ]);
    let dest = sandbox.path("page.html");
    sandbox
        .initbox()
        .args(["fetch", &server.url("/a"), "--timeout", "1m", "-o"])
        .arg(&dest)
        .run()
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "redirect loop: {} redirects back to {}, visited before",
            server.url("/b"),
            server.url("/a")
        ));
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/a", "/b"]);
    assert!(entries(sandbox.dir.path()) == ["hosts"]);
}

#[test]
fn an_expired_certificate_ends_at_once_with_exit_1() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start_tls_with(vec![reply(200, PAGE)], CertSpec::local().expired());
    let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
    let dest = sandbox.path("index.html");
    sandbox
        .initbox()
        .args(["fetch", &server.https_url("127.0.0.1", "/"), "--timeout", "1m"])
        .arg("--cacert")
        .arg(&ca)
        .arg("-o")
        .arg(&dest)
        .run()
        .assert_code(1)
        .assert_stderr_contains(
            "TLS: the server certificate (valid for localhost, 127.0.0.1) expired on Thu, 31 Dec 2020",
        );
    assert!(!dest.exists());
}

#[test]
fn sigterm_midway_exits_143_and_removes_the_temp_file() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![
        reply_bytes(200, vec![b'y'; 64 * 1024]).stall_after(1000),
    ]);
    let dir = sandbox.path("volume");
    let running = sandbox
        .initbox()
        .args(["fetch", &server.url("/y"), "-o"])
        .arg(dir.join("y.bin"))
        .args(["--attempt-timeout", "5m"])
        .spawn();
    assert!(eventually(Duration::from_secs(30), || !entries(&dir).is_empty()));
    running.signal("TERM");
    running.wait().assert_code(143);
    assert!(entries(&dir).is_empty(), "left behind: {:?}", entries(&dir));
}

#[test]
fn run_check_refuses_a_url_fetch_cannot_download() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        "steps:\n  - name: ftp\n    fetch: {url: \"ftp://files.example/f\", output: /tmp/f}\n",
    );
    sandbox
        .check_pipeline(&pipeline)
        .assert_code(78)
        .assert_stderr_contains("unsupported scheme 'ftp'");
}
