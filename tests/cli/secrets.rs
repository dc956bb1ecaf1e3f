//! Planted secrets — a password in URL userinfo, a password file, a bearer token file, a
//! credential header — never appear in anything initbox writes for people to read: stdout,
//! stderr (text and JSON, with -v), the pipeline's status file and termination log. The
//! servers answer with the secrets echoed back in their error bodies, the way a careless
//! server does, so the error excerpts are exercised too; each case also checks that the
//! secret really was sent (a test that never used the secret could not fail).

use crate::support::git_server::{SmartHttp, TestRepo};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};

use crate::support::http_server::{HttpServer, Request, reply, reply_with};
use crate::support::{Output, Sandbox, path_str};

const URL_PASSWORD: &str = "urlpass-6d1f0c";
const FILE_PASSWORD: &str = "filepass-93ab7e";
const TOKEN: &str = "tokenval-4c2e88";
const HEADER_SECRET: &str = "hdrsecret-b71d05";
const SECRETS: [&str; 4] = [URL_PASSWORD, FILE_PASSWORD, TOKEN, HEADER_SECRET];

/// A server body that repeats the secrets the client sent, as a debugging endpoint might.
fn echoing_body(sent: &[&str]) -> String {
    format!("denied for {}", sent.join(" and "))
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(
            !text.contains(secret),
            "{what} shows the secret {secret}:\n{text}"
        );
    }
}

fn assert_output_clean(what: &str, output: &Output) {
    assert_no_secret(&format!("{what}: stdout"), &output.stdout);
    assert_no_secret(&format!("{what}: stderr"), &output.stderr);
}

/// Files holding the secrets, and the same command line in both log formats.
struct Planted {
    sandbox: Sandbox,
    token_file: String,
    password_file: String,
}

impl Planted {
    fn new() -> Planted {
        let sandbox = Sandbox::new();
        let token_file = path_str(&sandbox.write("token", &format!("{TOKEN}\n"))).to_owned();
        let password_file =
            path_str(&sandbox.write("password", &format!("{FILE_PASSWORD}\n"))).to_owned();
        Planted {
            sandbox,
            token_file,
            password_file,
        }
    }

    /// Runs `args` with -v in text and in JSON; checks the exit code and that neither
    /// output shows a secret.
    fn run_both_formats(&self, what: &str, args: &[&str], code: i32) {
        for format in ["text", "json"] {
            let output = self
                .sandbox
                .initbox()
                .args(["-v", "--log-format", format])
                .args(args)
                .run();
            output.assert_code(code);
            assert_output_clean(&format!("{what} ({format})"), &output);
        }
    }
}

fn credential_url(server: &HttpServer, path: &str) -> String {
    format!(
        "http://deploy:{URL_PASSWORD}@127.0.0.1:{}{path}",
        server.port
    )
}

#[test]
fn http_commands_never_show_credentials() {
    let planted = Planted::new();
    let header = format!("Authorization: Bearer {HEADER_SECRET}");

    // wait-for-http: a 500 that echoes the secrets until the timeout, then a 401 that does.
    let sent = [URL_PASSWORD, HEADER_SECRET];
    let failing = HttpServer::start(vec![reply(500, &echoing_body(&sent))]);
    let url = credential_url(&failing, "/ready");
    planted.run_both_formats(
        "wait-for-http (500 until timeout)",
        &[
            "wait-for-http",
            &url,
            "--header",
            &header,
            "--timeout",
            "1s",
        ],
        124,
    );
    let request = &failing.requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {HEADER_SECRET}").as_str())
    );
    let refused = HttpServer::start(vec![reply(401, &echoing_body(&sent))]);
    planted.run_both_formats(
        "wait-for-http (401)",
        &[
            "wait-for-http",
            &credential_url(&refused, "/ready"),
            "--status",
            "200",
            "--header",
            &header,
            "--timeout",
            "1s",
        ],
        124,
    );

    // register: bearer token file, URL userinfo and a header; a 400 echoing them is fatal.
    let sent = [URL_PASSWORD, TOKEN, HEADER_SECRET];
    let register = HttpServer::start(vec![reply(400, &echoing_body(&sent))]);
    planted.run_both_formats(
        "register (400)",
        &[
            "register",
            &credential_url(&register, "/register"),
            "--bearer-token-file",
            &planted.token_file,
            "--header",
            &format!("X-Api-Key: {HEADER_SECRET}"),
            "--form",
            "pod=web-0",
        ],
        1,
    );
    let request = &register.requests()[0];
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    // fetch: the same credentials, a 404 echoing them.
    let sent = [URL_PASSWORD, TOKEN];
    let fetch = HttpServer::start(vec![reply(404, &echoing_body(&sent))]);
    let dest = planted.sandbox.path("page.html");
    planted.run_both_formats(
        "fetch (404)",
        &[
            "fetch",
            &credential_url(&fetch, "/index.html"),
            "-o",
            path_str(&dest),
            "--bearer-token-file",
            &planted.token_file,
        ],
        1,
    );
    assert!(fetch.requests()[0].header("authorization").is_some());
}

#[test]
fn git_clone_never_shows_credentials() {
    let planted = Planted::new();
    let repos = tempfile::tempdir().unwrap();
    TestRepo::create(repos.path(), "app");
    let server = SmartHttp::start_tls(repos.path(), Some(("deploy", FILE_PASSWORD)));
    let ca = planted
        .sandbox
        .write("ca.pem", server.ca_pem.as_deref().unwrap());
    let url = server.url("app");
    let dest = |name: &str| path_str(&planted.sandbox.path(name)).to_owned();
    let with_userinfo = url.replacen("https://", &format!("https://deploy:{URL_PASSWORD}@"), 1);
    // A wrong password in the URL: refused (exit 1), the URL password never shown.
    planted.run_both_formats(
        "git-clone (wrong URL password)",
        &[
            "git-clone",
            &with_userinfo,
            &dest("a"),
            "--cacert",
            path_str(&ca),
        ],
        1,
    );
    // The right password from a file, and a token file (refused by this server).
    planted.run_both_formats(
        "git-clone (password file)",
        &[
            "git-clone",
            &url,
            &dest("b"),
            "--cacert",
            path_str(&ca),
            "--username",
            "deploy",
            "--password-file",
            &planted.password_file,
        ],
        0,
    );
    planted.run_both_formats(
        "git-clone (token file)",
        &[
            "git-clone",
            &url,
            &dest("c"),
            "--cacert",
            path_str(&ca),
            "--token-file",
            &planted.token_file,
        ],
        1,
    );
    let sent: Vec<_> = server
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, auth)| auth.clone())
        .collect();
    assert!(!sent.is_empty(), "the clone sent credentials");
    // Nothing of the credentials is kept in the checkout's configuration.
    let config = std::fs::read_to_string(planted.sandbox.path("b/.git/config")).unwrap();
    assert_no_secret("b/.git/config", &config);
    assert!(!config.contains("deploy@"), "{config}");
}

#[test]
fn a_pipeline_keeps_credentials_out_of_its_status_and_termination_log() {
    let planted = Planted::new();
    let server = HttpServer::start(vec![reply(
        403,
        &echoing_body(&[URL_PASSWORD, TOKEN, HEADER_SECRET]),
    )]);
    let status = planted.sandbox.path("status.json");
    let termination = planted.sandbox.path("termination-log");
    let secret_template = planted
        .sandbox
        .write("secret.j2", "token={{ file(env.TOKEN_FILE) | trim }}\n");
    let pipeline = planted.sandbox.write(
        "pipeline.yaml",
        &format!(
            "restartPolicy: Never\n\
             env:\n  TOKEN_FILE: {token}\n\
             steps:\n\
             \x20 - name: render\n    template: {{src: {template}, dest: {rendered}}}\n\
             \x20 - name: register\n    register:\n      url: \"{url}\"\n      \
             bearer-token-file: {token}\n      header: {{X-Api-Key: {HEADER_SECRET}}}\n",
            token = planted.token_file,
            template = path_str(&secret_template),
            rendered = path_str(&planted.sandbox.path("rendered.conf")),
            url = credential_url(&server, "/register"),
        ),
    );
    for format in ["text", "json"] {
        let output = planted
            .sandbox
            .initbox()
            .args([
                "-v",
                "--log-format",
                format,
                "run",
                "-f",
                path_str(&pipeline),
            ])
            .arg("--status-file")
            .arg(&status)
            .arg("--termination-log")
            .arg(&termination)
            .run();
        output.assert_code(1);
        assert_output_clean(&format!("run ({format})"), &output);
        let status_json = std::fs::read_to_string(&status).unwrap();
        assert!(status_json.contains("403"), "{status_json}");
        assert_no_secret("the status file", &status_json);
        let message = std::fs::read_to_string(&termination).unwrap();
        assert!(message.contains("403"), "{message}");
        assert_no_secret("the termination log", &message);
    }
    // The secrets were in play: rendered into the file (by design) and sent to the server.
    let rendered = std::fs::read_to_string(planted.sandbox.path("rendered.conf")).unwrap();
    assert_eq!(rendered, format!("token={TOKEN}\n"));
    let request = &server.requests()[0];
    assert_eq!(request.header("x-api-key"), Some(HEADER_SECRET));
}

/// The ways a server echoes the `Authorization` header it received: as text, as JSON
/// (slashes escaped, as PHP does), and re-encoded (the credential decoded and encoded
/// again URL-safe without padding, percent-encoded), each short enough to be shown whole.
/// A body made from the request, named by the kind of echo.
type Echo = (&'static str, fn(&Request) -> Vec<u8>);

fn echoes() -> Vec<Echo> {
    fn auth(request: &Request) -> String {
        request.header("authorization").unwrap_or("").to_owned()
    }
    fn credential(request: &Request) -> Vec<u8> {
        let auth = auth(request);
        let encoded = auth.split_once(' ').map(|(_, c)| c).unwrap_or("");
        STANDARD
            .decode(encoded)
            .unwrap_or_else(|_| encoded.as_bytes().to_vec())
    }
    vec![
        ("text", |r| {
            format!("denied; you sent Authorization: {}", auth(r)).into_bytes()
        }),
        ("json", |r| {
            let value = serde_json::to_string(&auth(r)).unwrap().replace('/', "\\/");
            format!("{{\"error\":\"denied\",\"headers\":{{\"Authorization\":{value}}}}}")
                .into_bytes()
        }),
        ("url-safe base64", |r| {
            format!(
                "denied; credential={}",
                URL_SAFE_NO_PAD.encode(credential(r))
            )
            .into_bytes()
        }),
        ("unpadded base64", |r| {
            format!(
                "denied; credential={}",
                STANDARD_NO_PAD.encode(credential(r))
            )
            .into_bytes()
        }),
        ("percent-encoded", |r| {
            let auth = auth(r);
            let encoded: String = auth
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => (b as char).to_string(),
                    other => format!("%{other:02X}"),
                })
                .collect();
            format!("denied; auth={encoded}").into_bytes()
        }),
    ]
}

#[test]
fn a_header_built_from_a_secret_is_concealed_when_a_server_echoes_it() {
    let planted = Planted::new();
    let basic = STANDARD.encode(format!("deploy:{URL_PASSWORD}"));
    let derived = [
        basic.clone(),
        basic.trim_end_matches('=').to_owned(),
        URL_SAFE_NO_PAD.encode(format!("deploy:{URL_PASSWORD}")),
        URL_SAFE_NO_PAD.encode(TOKEN),
        STANDARD_NO_PAD.encode(TOKEN),
    ];
    for (echo, respond) in echoes() {
        // register: the Basic header reqwest builds from the URL's userinfo; 401 is fatal.
        let server = HttpServer::start(vec![reply_with(401, respond)]);
        let register = ["register", &credential_url(&server, "/register")].map(String::from);
        // fetch: a bearer token from a file; 403 is fatal.
        let token_server = HttpServer::start(vec![reply_with(403, respond)]);
        let dest = planted.sandbox.path("page.html");
        let fetch = [
            "fetch",
            &token_server.url("/page"),
            "-o",
            path_str(&dest),
            "--bearer-token-file",
            &planted.token_file,
        ]
        .map(String::from);
        for (what, args) in [("register", &register[..]), ("fetch", &fetch[..])] {
            for format in ["text", "json"] {
                let output = planted
                    .sandbox
                    .initbox()
                    .args(["-v", "--log-format", format])
                    .args(args)
                    .run();
                output.assert_code(1);
                assert!(output.stderr.contains("denied"), "{}", output.stderr);
                let what = format!("{what}, {echo} echo ({format})");
                assert_output_clean(&what, &output);
                for value in &derived {
                    assert!(
                        !output.stderr.contains(value.as_str()),
                        "{what} shows {value}:\n{}",
                        output.stderr
                    );
                }
            }
        }
        // The credentials were sent: the echo had something to leak.
        assert_eq!(
            server.requests()[0].header("authorization"),
            Some(format!("Basic {basic}").as_str())
        );
        assert_eq!(
            token_server.requests()[0].header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str())
        );
    }
}

/// Every command that takes a server, a host or a URL, given a URL with a password where it
/// takes one: whatever it thinks of the value, no message repeats the password (clap quotes
/// a refused value as typed; a check's own error may too).
#[test]
fn a_password_in_a_refused_target_never_shows() {
    let names = [
        "HOST:PORT",
        "HOST",
        "NAME",
        "URL",
        "SERVER",
        "BROKER",
        "HOST[:PORT]|URL",
        "REPO",
    ];
    let commands = crate::support::commands_taking(&names);
    let sandbox = Sandbox::new();
    let mut covered = Vec::new();
    for command in &commands {
        for url in [
            "ftp://app:leak-pw-4711@db.test/x",
            "postgres://app:leak-pw-4711@db.test:0/x",
            "redis://:leak-pw-4711@[::1",
        ] {
            let mut args = vec![*command, url];
            // The second positional some take (git-clone's DEST).
            if *command == "git-clone" {
                args.push("dest");
            }
            let output = sandbox
                .initbox()
                .args(&args)
                .args(["--timeout", "1s"])
                .run();
            assert!(
                !output.stderr.contains("leak-pw-4711") && !output.stdout.contains("leak-pw-4711"),
                "{args:?}: {}{}",
                output.stdout,
                output.stderr
            );
        }
        covered.push(*command);
    }
    assert!(commands.contains(&"wait-for-postgres") && commands.contains(&"fetch"));
    crate::support::assert_covers(&covered, &commands, "refused targets");
}
