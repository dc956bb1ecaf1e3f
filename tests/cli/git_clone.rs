//! git-clone against real git servers (file://, git daemon, smart HTTP with basic auth):
//! the checkout git itself would make, idempotent re-runs, refusals, credentials that never
//! show, the root of a mounted tmpfs filled in place, damaged checkouts restored without
//! the network, failures that end at once, and a deadline kept while the server stalls.
//! (kill -9 at random moments and a server that dies mid-pack are in `faults`.)

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::support::git_server::{Framing, GitDaemon, SmartHttp, TestRepo, git, tree_listing};
use crate::support::http_server::{HttpServer, reply};
use crate::support::{Mount, Sandbox, free_port, need_root};

fn git_clone_reference(repo: &str, dest: &Path, reference: Option<&str>) {
    let mut args = vec!["clone", "-q", "--depth", "1"];
    if let Some(reference) = reference {
        args.extend(["--branch", reference]);
    }
    let repo_arg = repo.to_owned();
    let dest_arg = dest.display().to_string();
    args.extend([repo_arg.as_str(), dest_arg.as_str()]);
    git(Path::new("/"), &args);
}

fn head(dir: &Path) -> String {
    git(dir, &["rev-parse", "HEAD"])
}

fn assert_clean_checkout(dir: &Path, commit: &str) {
    assert_eq!(head(dir), commit);
    assert_eq!(
        git(dir, &["status", "--porcelain"]),
        "",
        "git status must be clean"
    );
    assert!(!git(dir, &["log", "-1", "--format=%H %s"]).is_empty());
}

/// A clone did something, and its success line says what, as register's and fetch's do
/// ("cloned URL after …: checked out commit …"), not that the repository "is ready".
#[test]
fn a_clone_reports_what_it_did_not_that_something_is_ready() {
    let sandbox = Sandbox::new();
    let repo = TestRepo::create(&sandbox.path("src"), "app");
    let dest = sandbox.path("app");
    let output = sandbox
        .initbox()
        .args(["git-clone", &repo.file_url()])
        .arg(&dest)
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("cloned {} after ", repo.file_url()))
        .assert_stderr_contains(&format!("checked out commit {}", &repo.main[..12]));
    assert!(!output.stderr.contains("is ready"), "{}", output.stderr);
}

#[test]
fn the_checkout_is_the_tree_git_clone_makes() {
    let sandbox = Sandbox::new();
    let repo = TestRepo::create(&sandbox.path("src"), "app");
    for (reference, commit) in [
        (None, &repo.main),
        (Some("feature"), &repo.feature),
        (Some("v1"), &repo.first),
        (Some("v1-annotated"), &repo.first),
    ] {
        let name = reference.unwrap_or("head");
        let ours = sandbox.path(&format!("ours-{name}"));
        let theirs = sandbox.path(&format!("theirs-{name}"));
        let mut command = sandbox
            .initbox()
            .args(["git-clone", &repo.file_url()])
            .arg(&ours);
        if let Some(reference) = reference {
            command = command.args(["--ref", reference]);
        }
        command.run().assert_code(0);
        git_clone_reference(&repo.file_url(), &theirs, reference);
        assert_eq!(tree_listing(&ours), tree_listing(&theirs), "ref {name}");
        assert_clean_checkout(&ours, commit);
    }
    // A full commit id, which `git clone --branch` cannot take.
    let by_id = sandbox.path("by-id");
    sandbox
        .initbox()
        .args(["git-clone", &repo.file_url()])
        .arg(&by_id)
        .args(["--ref", &repo.first])
        .run()
        .assert_code(0);
    assert_clean_checkout(&by_id, &repo.first);
    assert_eq!(
        tree_listing(&by_id),
        tree_listing(&sandbox.path("theirs-v1"))
    );
}

#[test]
fn depth_zero_fetches_the_whole_history() {
    let sandbox = Sandbox::new();
    let repo = TestRepo::create(&sandbox.path("src"), "app");
    let shallow = sandbox.path("shallow");
    let full = sandbox.path("full");
    sandbox
        .initbox()
        .args(["git-clone", &repo.file_url()])
        .arg(&shallow)
        .run()
        .assert_code(0);
    sandbox
        .initbox()
        .args(["git-clone", &repo.file_url()])
        .arg(&full)
        .args(["--depth", "0"])
        .run()
        .assert_code(0);
    assert_eq!(git(&shallow, &["rev-list", "--count", "HEAD"]), "1");
    assert_eq!(git(&full, &["rev-list", "--count", "HEAD"]), "2");
}

#[test]
fn over_git_daemon_and_idempotent_across_restarts() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    let daemon = GitDaemon::start(&base);
    let dest = sandbox.path("work/config");
    sandbox
        .initbox()
        .args(["git-clone", &daemon.url("app"), "--ref", "v1"])
        .arg(&dest)
        .run()
        .assert_code(0);
    assert_clean_checkout(&dest, &repo.first);
    let remote = git(&dest, &["config", "remote.origin.url"]);
    assert_eq!(remote, daemon.url("app"));

    // The pod restarts while the server is gone: nothing to download, so it succeeds.
    drop(daemon);
    let mtime = std::fs::metadata(dest.join("README.md"))
        .unwrap()
        .modified()
        .unwrap();
    sandbox
        .initbox()
        .args(["git-clone", "git://127.0.0.1:1/app", "--ref", "v1"])
        .arg(&dest)
        .run()
        .assert_code(1)
        .assert_stderr_contains("is a checkout of");
    let again = sandbox
        .initbox()
        .args(["git-clone", &remote, "--ref", "v1", "--timeout", "5s"])
        .arg(&dest)
        .run();
    again
        .assert_code(0)
        .assert_stderr_contains("nothing to download");
    assert_eq!(
        std::fs::metadata(dest.join("README.md"))
            .unwrap()
            .modified()
            .unwrap(),
        mtime,
        "an up-to-date checkout is not touched"
    );
}

#[test]
fn another_ref_is_switched_to() {
    let sandbox = Sandbox::new();
    let repo = TestRepo::create(&sandbox.path("src"), "app");
    let dest = sandbox.path("checkout");
    for (reference, commit) in [
        ("v1", &repo.first),
        ("feature", &repo.feature),
        ("main", &repo.main),
    ] {
        sandbox
            .initbox()
            .args(["git-clone", &repo.file_url(), "--ref", reference])
            .arg(&dest)
            .run()
            .assert_code(0);
        assert_clean_checkout(&dest, commit);
    }
    assert!(
        !dest.join("feature.txt").exists(),
        "files of the old ref are gone"
    );
}

#[test]
fn a_server_that_comes_up_later_is_waited_for() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    let port = free_port("127.0.0.1");
    let dest = sandbox.path("checkout");
    let running = sandbox
        .initbox()
        .args(["git-clone", &format!("git://127.0.0.1:{port}/app")])
        .arg(&dest)
        .args(["--timeout", "60s"])
        .spawn();
    running.wait_for_stderr("is not ready", Duration::from_secs(30));
    assert!(
        running.stderr_so_far().contains("connection refused")
            || running.stderr_so_far().contains("Connection refused"),
        "{}",
        running.stderr_so_far()
    );
    let _daemon = GitDaemon::start_on(&base, port);
    running.wait().assert_code(0);
    assert_clean_checkout(&dest, &repo.main);
}

#[test]
fn a_missing_ref_or_repository_fails_at_once() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    TestRepo::create(&base, "app");
    let daemon = GitDaemon::start(&base);
    let dest = sandbox.path("checkout");
    let output = sandbox
        .initbox()
        .args(["git-clone", &daemon.url("app"), "--ref", "no-such-branch"])
        .arg(&dest)
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("no-such-branch");
    assert!(output.elapsed < Duration::from_secs(20));
    assert!(!dest.exists(), "nothing is left behind");
    assert!(
        std::fs::read_dir(sandbox.dir.path()).unwrap().all(|e| !e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("initbox-clone")),
        "no staging directory is left behind"
    );
}

#[test]
fn a_directory_that_is_not_a_checkout_is_never_touched() {
    let sandbox = Sandbox::new();
    let repo = TestRepo::create(&sandbox.path("src"), "app");
    let dest = sandbox.path("data");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("precious.db"), "user data").unwrap();
    sandbox
        .initbox()
        .args(["git-clone", &repo.file_url()])
        .arg(&dest)
        .run()
        .assert_code(1)
        .assert_stderr_contains("is not empty and is not a checkout of")
        .assert_stderr_contains("--force");
    assert_eq!(
        std::fs::read_to_string(dest.join("precious.db")).unwrap(),
        "user data"
    );
    assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 1);

    let other = TestRepo::create(&sandbox.path("src"), "other");
    let checkout = sandbox.path("checkout");
    sandbox
        .initbox()
        .args(["git-clone", &other.file_url()])
        .arg(&checkout)
        .run()
        .assert_code(0);
    sandbox
        .initbox()
        .args(["git-clone", &repo.file_url()])
        .arg(&checkout)
        .run()
        .assert_code(1)
        .assert_stderr_contains("is a checkout of");

    let forced = sandbox
        .initbox()
        .args(["git-clone", &repo.file_url(), "--force"])
        .arg(&dest)
        .run();
    forced
        .assert_code(0)
        .assert_stderr_contains("which holds files that are not a git checkout");
    assert!(!forced.stderr.contains("(Other)"), "{}", forced.stderr);
    assert!(!dest.join("precious.db").exists());
    assert_clean_checkout(&dest, &repo.main);
}

#[test]
fn smart_http_over_tls_with_basic_auth_and_secrets_kept_secret() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    let server = SmartHttp::start_tls(&base, Some(("deploy", "pa55-w0rd-xyz")));
    let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
    let url = server.url("app");

    let denied = sandbox
        .initbox()
        .args(["git-clone", &url, "--cacert"])
        .arg(&ca)
        .arg(sandbox.path("denied"))
        .run();
    denied
        .assert_code(1)
        .assert_stderr_contains("authentication failed")
        .assert_stderr_contains("asks for credentials and none were given")
        .assert_stderr_contains("--token-file");
    assert!(
        !denied.stderr.contains("credential helper"),
        "{}",
        denied.stderr
    );
    assert!(!sandbox.path("denied").exists());

    let wrong = sandbox.write("wrong-password", "not-the-password");
    sandbox
        .initbox()
        .args(["git-clone", &url, "--username", "deploy", "--password-file"])
        .arg(&wrong)
        .arg("--cacert")
        .arg(&ca)
        .arg(sandbox.path("rejected"))
        .run()
        .assert_code(1)
        .assert_stderr_contains("rejected the credentials of user 'deploy'");

    let password = sandbox.write("password", "pa55-w0rd-xyz\n");
    let dest = sandbox.path("with-password");
    let output = sandbox
        .initbox()
        .args(["git-clone", &url, "--username", "deploy", "--password-file"])
        .arg(&password)
        .arg("--cacert")
        .arg(&ca)
        .arg(&dest)
        .args(["-v"])
        .run();
    output.assert_code(0);
    assert_clean_checkout(&dest, &repo.main);

    let from_env = sandbox.path("password-from-env");
    sandbox
        .initbox()
        .env("INITBOX_GIT_PASSWORD", "pa55-w0rd-xyz")
        .args(["git-clone", &url, "--username", "deploy", "--cacert"])
        .arg(&ca)
        .arg(&from_env)
        .run()
        .assert_code(0);
    assert_clean_checkout(&from_env, &repo.main);

    let in_url = sandbox.path("in-url");
    let url_with_secret = url.replace("https://", "https://deploy:pa55-w0rd-xyz@");
    let from_url = sandbox
        .initbox()
        .args([
            "git-clone",
            &url_with_secret,
            "--log-format",
            "json",
            "-v",
            "--cacert",
        ])
        .arg(&ca)
        .arg(&in_url)
        .run();
    from_url.assert_code(0);

    let token_server = SmartHttp::start_tls(&base, Some(("x-access-token", "tok-12345678")));
    let token_ca = sandbox.write("token-ca.pem", token_server.ca_pem.as_ref().unwrap());
    let token = sandbox.write("token", "tok-12345678");
    let by_token = sandbox.path("by-token");
    sandbox
        .initbox()
        .args(["git-clone", &token_server.url("app"), "--token-file"])
        .arg(&token)
        .arg("--cacert")
        .arg(&token_ca)
        .arg(&by_token)
        .run()
        .assert_code(0);

    for (output, dir) in [(&output, &dest), (&from_url, &in_url)] {
        let everything = format!("{}{}", output.stdout, output.stderr);
        assert!(!everything.contains("pa55-w0rd-xyz"), "{everything}");
        let config = std::fs::read_to_string(dir.join(".git/config")).unwrap();
        assert!(!config.contains("pa55-w0rd-xyz"), "{config}");
        assert!(!config.contains("deploy"), "{config}");
        assert_eq!(git(dir, &["config", "remote.origin.url"]), url);
    }
    let config = std::fs::read_to_string(by_token.join(".git/config")).unwrap();
    assert!(!config.contains("tok-12345678"), "{config}");
}

#[test]
fn plain_http_clones_but_never_sends_a_password() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    let open = SmartHttp::start(&base, None);
    let dest = sandbox.path("open");
    sandbox
        .initbox()
        .args(["git-clone", &open.url("app")])
        .arg(&dest)
        .run()
        .assert_code(0);
    assert_clean_checkout(&dest, &repo.main);
}

/// A shallow clone of the remote's default branch makes the three requests git makes (the
/// advertisement, ls-refs, fetch; gix's own single-branch clone connects twice and makes
/// five), and leaves what `git clone --depth 1` leaves: HEAD on the branch the remote's
/// HEAD names (here not main), its remote-tracking ref and `origin/HEAD`, the single-branch
/// refspec and the upstream, so that `git pull` works in it.
#[test]
fn a_shallow_clone_of_the_default_branch_is_one_connection_and_the_clone_git_makes() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    git(&repo.path, &["symbolic-ref", "HEAD", "refs/heads/feature"]);
    let server = SmartHttp::start(&base, None);
    let ours = sandbox.path("ours");
    sandbox
        .initbox()
        .args(["git-clone", &server.url("app")])
        .arg(&ours)
        .run()
        .assert_code(0);
    assert_eq!(
        requested_paths(&server),
        [
            "/app/info/refs?service=git-upload-pack",
            "/app/git-upload-pack",
            "/app/git-upload-pack"
        ],
        "the requests of one connection"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
    let theirs = sandbox.path("theirs");
    git_clone_reference(&server.url("app"), &theirs, None);
    let layout = |dir: &Path| {
        [
            git(dir, &["symbolic-ref", "HEAD"]),
            git(
                dir,
                &[
                    "for-each-ref",
                    "--format=%(refname) %(symref) %(objectname)",
                ],
            ),
            git(dir, &["config", "--get-all", "remote.origin.fetch"]),
            git(dir, &["config", "--get-regexp", "^branch\\."]),
            git(dir, &["status", "--short", "--branch"]),
            git(dir, &["rev-list", "--count", "HEAD"]),
        ]
    };
    assert_eq!(layout(&ours), layout(&theirs));
    assert_eq!(git(&ours, &["symbolic-ref", "HEAD"]), "refs/heads/feature");
    assert_clean_checkout(&ours, &repo.feature);
    assert_eq!(tree_listing(&ours), tree_listing(&theirs));
    assert!(git(&ours, &["pull", "--ff-only"]).contains("up to date"));
}

/// A shallow clone of a named ref still connects twice (gix looks the name up, a branch or
/// a tag, before it fetches), but both connections are one HTTPS client's: the second goes
/// over the connection the first kept alive, with no second TCP or TLS handshake.
#[test]
fn the_two_connections_of_a_named_ref_share_one_kept_alive_https_connection() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    let server = SmartHttp::start_tls(&base, None);
    let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
    let dest = sandbox.path("feature");
    sandbox
        .initbox()
        .args([
            "git-clone",
            &server.url("app"),
            "--ref",
            "feature",
            "--cacert",
        ])
        .arg(&ca)
        .arg(&dest)
        .run()
        .assert_code(0);
    assert_clean_checkout(&dest, &repo.feature);
    let requests = server.requests.lock().unwrap().len();
    assert_eq!(requests, 5, "two connections' requests");
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        1,
        "{requests} requests over more than one TCP connection"
    );
}

/// The paths a smart HTTP server was asked for, in order.
fn requested_paths(server: &SmartHttp) -> Vec<String> {
    server
        .requests
        .lock()
        .unwrap()
        .iter()
        .map(|(path, _)| path.clone())
        .collect()
}

/// git-clone's HTTP client reads an answer in chunks (one with a chunk extension) as well
/// as one with a length, and when the server has closed the connection kept alive since its
/// last answer without saying so (its keep-alive timeout ran out), it sends the request
/// again on a new connection instead of failing the clone.
#[test]
fn chunked_answers_and_a_kept_alive_connection_the_server_closed_meanwhile() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    let server = SmartHttp::start_framed(
        &base,
        Framing {
            chunked: true,
            close_after_each: true,
        },
    );
    for depth in ["1", "0"] {
        let dest = sandbox.path(&format!("depth-{depth}"));
        sandbox
            .initbox()
            .args(["git-clone", &server.url("app"), "--depth", depth])
            .arg(&dest)
            .run()
            .assert_code(0);
        assert_clean_checkout(&dest, &repo.main);
    }
    let requests = server.requests.lock().unwrap().len();
    assert!(requests >= 6, "{requests} requests for two clones");
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        requests,
        "each answer closed its connection: one connection per request"
    );
}

/// A repository that moved answers the first request with a redirect, as a hosting service
/// does for a renamed repository: the clone follows it, and sends every later request
/// straight to where it moved (git's `http.followRedirects=initial`).
#[test]
fn a_moved_repository_is_cloned_from_where_its_redirect_points() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    let server = SmartHttp::start(&base, None);
    let moved = HttpServer::start(vec![reply(301, "moved\n").header(
        "Location",
        &format!("{}/info/refs?service=git-upload-pack", server.url("app")),
    )]);
    let dest = sandbox.path("app");
    sandbox
        .initbox()
        .args(["git-clone", &moved.url("/old-name")])
        .arg(&dest)
        .run()
        .assert_code(0);
    assert_clean_checkout(&dest, &repo.main);
    assert_eq!(
        moved.requests().len(),
        1,
        "only the first request was redirected"
    );
    assert_eq!(
        requested_paths(&server),
        [
            "/app/info/refs?service=git-upload-pack",
            "/app/git-upload-pack",
            "/app/git-upload-pack"
        ]
    );
}

/// A redirect from https:// to http:// would send the rest of the clone, credentials
/// included, in clear text: it is not followed, and the clone stops at once (exit 1)
/// saying so, instead of retrying until its deadline.
#[test]
fn a_redirect_from_https_to_plain_http_is_refused_at_once() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    TestRepo::create(&base, "app");
    let plain = SmartHttp::start(&base, None);
    let secure = HttpServer::start_tls(vec![reply(302, "").header(
        "Location",
        &format!("{}/info/refs?service=git-upload-pack", plain.url("app")),
    )]);
    let ca = sandbox.write("ca.pem", secure.ca_pem.as_ref().unwrap());
    let dest = sandbox.path("app");
    let run = sandbox
        .initbox()
        .args(["git-clone", &secure.https_url("127.0.0.1", "/app")])
        .arg(&dest)
        .arg("--cacert")
        .arg(&ca)
        .args(["--timeout", "60s"])
        .run();
    run.assert_code(1);
    run.assert_stderr_contains("a redirect from https:// to http:// is not followed");
    assert_eq!(secure.requests().len(), 1, "not retried");
    assert!(
        requested_paths(&plain).is_empty(),
        "the redirect was followed"
    );
    assert!(!dest.exists());
}

/// Behind a proxy (`HTTP_PROXY`), a clone goes through it, and the name in the URL is the
/// proxy's to resolve: initbox never looks it up (here it could not: `.invalid`). The git
/// server stands in for the proxy, taking the absolute-form requests a proxy gets.
#[test]
fn an_http_clone_goes_through_the_proxy_the_environment_names() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    let proxy = SmartHttp::start(&base, None);
    let dest = sandbox.path("app");
    sandbox
        .initbox()
        .args(["git-clone", "http://git.invalid/app"])
        .arg(&dest)
        .env("HTTP_PROXY", format!("http://127.0.0.1:{}", proxy.port))
        .run()
        .assert_code(0);
    assert_clean_checkout(&dest, &repo.main);
    assert_eq!(
        requested_paths(&proxy).first().map(String::as_str),
        Some("/app/info/refs?service=git-upload-pack")
    );
}

#[test]
fn credentials_for_plain_http_are_a_usage_error_before_any_request() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    TestRepo::create(&base, "app");
    // Both a server that asks for credentials and one that would clone without them: the
    // credentials are refused either way, not dropped silently.
    let guarded = SmartHttp::start(&base, Some(("deploy", "pa55-w0rd-xyz")));
    let open = SmartHttp::start(&base, None);
    let password = sandbox.write("password", "pa55-w0rd-xyz");
    let token = sandbox.write("token", "tok-12345678");
    for server in [&guarded, &open] {
        let url = server.url("app");
        let in_url = url.replace("http://", "http://deploy:pa55-w0rd-xyz@");
        let runs = [
            sandbox
                .initbox()
                .args(["git-clone", &url, "--username", "deploy", "--password-file"])
                .arg(&password),
            sandbox
                .initbox()
                .args(["git-clone", &url, "--token-file"])
                .arg(&token),
            sandbox.initbox().args(["git-clone", &in_url]),
        ];
        for run in runs {
            let output = run.arg(sandbox.path("refused")).run();
            output
                .assert_code(2)
                .assert_stderr_contains("credentials are never sent over plain http://")
                .assert_stderr_contains("clear text");
            assert!(
                !output.stderr.contains("pa55-w0rd-xyz"),
                "{}",
                output.stderr
            );
        }
        assert!(
            server.requests.lock().unwrap().is_empty(),
            "no request was made: {:?}",
            server.requests.lock().unwrap()
        );
    }
    assert!(!sandbox.path("refused").exists());
}

#[test]
fn the_root_of_a_mounted_volume_is_filled_and_switched_in_place() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let repo = TestRepo::create(&sandbox.path("src"), "app");
    let dest = sandbox.path("volume");
    let _mount = Mount::tmpfs(&dest);
    for (reference, commit) in [("v1", &repo.first), ("main", &repo.main)] {
        sandbox
            .initbox()
            .args(["git-clone", &repo.file_url(), "--ref", reference])
            .arg(&dest)
            .run()
            .assert_code(0);
        assert_clean_checkout(&dest, commit);
    }
    let names: Vec<String> = std::fs::read_dir(&dest)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains("initbox")), "{names:?}");
}

/// What `git status` would call clean, counting untracked and ignored files too.
fn assert_exactly_the_tree(dir: &Path, commit: &str, reference: &Path, what: &str) {
    assert_eq!(head(dir), commit, "{what}");
    assert_eq!(
        git(
            dir,
            &[
                "status",
                "--porcelain",
                "--ignored",
                "--untracked-files=all"
            ]
        ),
        "",
        "{what}: git status must be clean"
    );
    assert_eq!(tree_listing(dir), tree_listing(reference), "{what}");
}

/// A way to damage a checkout, and its name.
type Damage = (&'static str, Box<dyn Fn(&Path)>);

#[test]
fn a_damaged_checkout_is_restored_from_its_own_objects_without_the_network() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    let repo = TestRepo::create(&base, "app");
    let daemon = GitDaemon::start(&base);
    let url = daemon.url("app");
    let dest = sandbox.path("checkout");
    let reference = sandbox.path("reference");
    git_clone_reference(&repo.file_url(), &reference, Some("v1"));
    // --timeout 5s: a run that went to the network would end in 124, not 0.
    let clone = || {
        sandbox
            .initbox()
            .args(["git-clone", &url, "--ref", "v1", "--timeout", "5s"])
            .arg(&dest)
            .run()
    };
    clone().assert_code(0);
    // From here on the server is gone: its port refuses connections.
    drop(daemon);

    let same_size_same_mtime = |dest: &Path| {
        // An edit the size and mtime checks alone would miss (ctime and content catch it).
        let path = dest.join("conf/app.conf");
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, "port = 8081\n").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    };
    let damages: Vec<Damage> = vec![
        (
            "a deleted file",
            Box::new(|d| std::fs::remove_file(d.join("README.md")).unwrap()),
        ),
        (
            "an edited file",
            Box::new(|d| std::fs::write(d.join("conf/app.conf"), "port = 1\n").unwrap()),
        ),
        (
            "an edit of the same size and mtime",
            Box::new(same_size_same_mtime),
        ),
        (
            "a gained executable bit",
            Box::new(|d| {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::Permissions::from_mode(0o755);
                std::fs::set_permissions(d.join("README.md"), mode).unwrap()
            }),
        ),
        (
            "a lost executable bit",
            Box::new(|d| {
                use std::os::unix::fs::PermissionsExt;
                let mode = std::fs::Permissions::from_mode(0o644);
                std::fs::set_permissions(d.join("run.sh"), mode).unwrap()
            }),
        ),
        (
            "an untracked file",
            Box::new(|d| std::fs::write(d.join("conf/new.txt"), "new\n").unwrap()),
        ),
        (
            "an empty directory",
            Box::new(|d| std::fs::create_dir(d.join("empty")).unwrap()),
        ),
        (
            "a symbolic link replaced by a file",
            Box::new(|d| {
                std::fs::remove_file(d.join("current.conf")).unwrap();
                std::fs::write(d.join("current.conf"), "port = 8080\n").unwrap()
            }),
        ),
        (
            "a file taken out of the index",
            Box::new(|d| {
                git(d, &["rm", "-q", "--cached", "README.md"]);
            }),
        ),
        (
            "a deleted directory",
            Box::new(|d| std::fs::remove_dir_all(d.join("conf")).unwrap()),
        ),
    ];
    for (what, damage) in damages {
        damage(&dest);
        let output = clone();
        output.assert_code(0);
        assert!(
            output.stderr.contains("restoring it from its own objects")
                && output.stderr.contains("nothing to download"),
            "{what}: {}",
            output.stderr
        );
        assert_exactly_the_tree(&dest, &repo.first, &reference, what);
    }

    // An intact checkout is only looked at: not one file is rewritten.
    let mtime = |name: &str| {
        std::fs::metadata(dest.join(name))
            .unwrap()
            .modified()
            .unwrap()
    };
    let before = (mtime("README.md"), mtime("conf/app.conf"));
    let output = clone();
    output
        .assert_code(0)
        .assert_stderr_contains("is already a checkout of");
    assert!(!output.stderr.contains("restoring"), "{}", output.stderr);
    assert_eq!((mtime("README.md"), mtime("conf/app.conf")), before);
}

#[test]
fn a_symlink_planted_in_a_checkout_is_removed_never_written_through() {
    let sandbox = Sandbox::new();
    let repo = TestRepo::create(&sandbox.path("src"), "app");
    let dest = sandbox.path("checkout");
    let reference = sandbox.path("reference");
    git_clone_reference(&repo.file_url(), &reference, None);
    sandbox
        .initbox()
        .args(["git-clone", &repo.file_url()])
        .arg(&dest)
        .run()
        .assert_code(0);

    let outside = sandbox.path("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("app.conf"), "precious\n").unwrap();
    std::fs::write(outside.join("dir/deep.txt"), "precious\n").unwrap();
    let outside_before = tree_listing(&outside);
    use std::os::unix::fs::symlink;
    // A tracked file, a tracked directory and the staging directory's name, each taken by
    // a link out of DEST: restoring through any of them would overwrite files outside.
    std::fs::remove_file(dest.join("conf/app.conf")).unwrap();
    symlink(outside.join("app.conf"), dest.join("conf/app.conf")).unwrap();
    std::fs::remove_dir_all(dest.join("conf/nested")).unwrap();
    symlink(outside.join("dir"), dest.join("conf/nested")).unwrap();
    symlink(&outside, dest.join(".initbox-clone")).unwrap();

    sandbox
        .initbox()
        .args(["git-clone", &repo.file_url()])
        .arg(&dest)
        .run()
        .assert_code(0)
        .assert_stderr_contains("restoring it from its own objects");
    assert_eq!(
        tree_listing(&outside),
        outside_before,
        "nothing outside DEST changed"
    );
    assert_exactly_the_tree(&dest, &repo.main, &reference, "after the planted links");
    assert!(!dest.join(".initbox-clone").exists());
}

#[test]
fn a_checkout_moved_to_another_commit_is_cloned_again() {
    let sandbox = Sandbox::new();
    let repo = TestRepo::create(&sandbox.path("src"), "app");
    let dest = sandbox.path("checkout");
    let clone = || {
        sandbox
            .initbox()
            .args(["git-clone", &repo.file_url(), "--depth", "0"])
            .arg(&dest)
            .run()
    };
    clone().assert_code(0);
    git(&dest, &["checkout", "-q", "--detach", &repo.first]);
    clone()
        .assert_code(0)
        .assert_stderr_contains("HEAD is at")
        .assert_stderr_contains("cloning")
        .assert_stderr_contains("again");
    assert_clean_checkout(&dest, &repo.main);
    clone()
        .assert_code(0)
        .assert_stderr_contains("nothing to download");
}

#[test]
fn a_missing_repository_over_git_daemon_fails_at_once() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    TestRepo::create(&base, "app");
    let daemon = GitDaemon::start(&base);
    let dest = sandbox.path("checkout");
    let output = sandbox
        .initbox()
        .args(["git-clone", &daemon.url("no-such-repo"), "--timeout", "5m"])
        .arg(&dest)
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("the server refused to serve")
        .assert_stderr_contains("no-such-repo");
    assert!(
        !output.stderr.contains("is not ready"),
        "not retried: {}",
        output.stderr
    );
    assert!(!dest.exists());
}

#[test]
fn certificate_problems_end_the_run_at_once_saying_what_to_fix() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    TestRepo::create(&base, "app");
    let server = SmartHttp::start_tls(&base, None);
    let ca = sandbox.write("ca.pem", server.ca_pem.as_ref().unwrap());
    let expired = SmartHttp::start_tls_expired(&base);
    let expired_ca = sandbox.write("expired-ca.pem", expired.ca_pem.as_ref().unwrap());
    // A name the certificate (for localhost and 127.0.0.1) does not cover, resolved through
    // the sandbox's hosts file.
    let hosts = std::fs::read_to_string(sandbox.path("hosts")).unwrap();
    sandbox.write("hosts", &format!("{hosts}127.0.0.1 git.test\n"));
    let wrong_name = format!("https://git.test:{}/app", server.port);
    let cases: [(&str, &[&str], &Path, &str); 3] = [
        ("unknown CA", &[], &ca, "signed by an unknown CA"),
        ("wrong name", &["--cacert"], &ca, "valid for localhost"),
        ("expired", &["--cacert"], &expired_ca, "expired on"),
    ];
    for (what, cacert, ca_file, message) in cases {
        let url = match what {
            "wrong name" => wrong_name.clone(),
            "expired" => expired.url("app"),
            _ => server.url("app"),
        };
        let mut command = sandbox
            .initbox()
            .args(["git-clone", &url, "--timeout", "5m"])
            .args(cacert);
        if !cacert.is_empty() {
            command = command.arg(ca_file);
        }
        let output = command.arg(sandbox.path("checkout")).run();
        output.assert_code(1).assert_stderr_contains(message);
        assert!(
            !output.stderr.contains("is not ready"),
            "{what}: not retried: {}",
            output.stderr
        );
    }
    assert!(!sandbox.path("checkout").exists());
}

#[test]
fn port_zero_is_a_usage_error() {
    let sandbox = Sandbox::new();
    for url in [
        "git://127.0.0.1:0/app",
        "https://127.0.0.1:0/app.git",
        "http://git.test:0/app",
    ] {
        sandbox
            .initbox()
            .args(["git-clone", url])
            .arg(sandbox.path("checkout"))
            .run()
            .assert_code(2)
            .assert_stderr_contains("port 0");
    }
}

#[test]
fn an_unwritable_dest_ends_at_once_before_any_request() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    TestRepo::create(&base, "app");
    let server = SmartHttp::start(&base, None);
    let url = server.url("app");
    let file = sandbox.write("a-file", "not a directory");
    for (dest, message) in [
        (file.join("checkout"), "not a directory"),
        (file.clone(), "not a directory"),
    ] {
        sandbox
            .initbox()
            .args(["git-clone", &url, "--timeout", "5m"])
            .arg(&dest)
            .run()
            .assert_code(1)
            .assert_stderr_contains(message);
    }
    assert!(server.requests.lock().unwrap().is_empty());

    if !need_root() {
        return;
    }
    let volume = sandbox.path("ro");
    let _mount = Mount::tmpfs(&volume);
    std::fs::create_dir(volume.join("empty-volume")).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&volume)
        .status()
        .unwrap();
    assert!(status.success(), "remounting read-only");
    for dest in [volume.join("checkout"), volume.join("empty-volume")] {
        sandbox
            .initbox()
            .args(["git-clone", &url, "--timeout", "5m"])
            .arg(&dest)
            .run()
            .assert_code(1)
            .assert_stderr_contains("read-only file system");
    }
    assert!(
        server.requests.lock().unwrap().is_empty(),
        "requests were made: {:?}",
        server.requests.lock().unwrap()
    );
}

#[test]
fn run_check_refuses_a_bad_repo_a_bad_ref_and_a_password_over_plain_http() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write(
        "pipeline.yaml",
        "steps:\n  - name: port\n    git-clone: {repo: \"https://127.0.0.1:0/app.git\", dest: /tmp/a}\n  - name: ref\n    git-clone: {repo: \"https://git.example/app.git\", dest: /tmp/b, ref: \"a..b\"}\n  - name: clear\n    git-clone: {repo: \"http://deploy:pa55-w0rd-xyz@git.example/app.git\", dest: /tmp/c}\n  - name: token\n    git-clone: {repo: \"http://git.example/app.git\", dest: /tmp/d, token-file: /secrets/token}\n",
    );
    let output = sandbox.check_pipeline(&pipeline);
    output
        .assert_code(78)
        .assert_stderr_contains("4 problems in the pipeline")
        .assert_stderr_contains("port 0")
        .assert_stderr_contains("'a..b' is not a valid branch or tag name")
        .assert_stderr_contains("credentials are never sent over plain http://")
        .assert_stderr_contains("step 'token'");
    assert!(
        !output.stderr.contains("pa55-w0rd-xyz"),
        "{}",
        output.stderr
    );
}

#[test]
fn git_daemon_is_asked_for_the_urls_host_name_not_the_address_it_resolved_to() {
    let sandbox = Sandbox::new();
    let base = sandbox.path("srv");
    // The daemon serves by host name: asked with host=127.0.0.1, it finds no "app".
    let repo = TestRepo::create(&base.join("code.example.test"), "app");
    let daemon = GitDaemon::start_virtual_hosts(&base);
    let dns = crate::support::dns_server::DnsServer::start();
    dns.add_a("code.example.test.", "127.0.0.1");
    let dest = sandbox.path("work");
    let url = format!("git://code.example.test:{}/app", daemon.port);
    sandbox
        .initbox()
        .args(["git-clone", "--depth", "1", "--ref", "v1"])
        .arg(&url)
        .arg(&dest)
        .args(["--nameserver", &dns.nameserver()])
        .run()
        .assert_code(0);
    assert_clean_checkout(&dest, &repo.first);
    // The checkout records the URL as given, not an address or anything gix was pointed at.
    assert_eq!(git(&dest, &["config", "remote.origin.url"]), url);
}
