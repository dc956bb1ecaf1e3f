//! git-clone against real git servers (file://, git daemon, smart HTTP with basic auth):
//! the checkout git itself would make, idempotent re-runs, refusals, credentials that never
//! show, and the root of a mounted tmpfs filled in place. (kill -9 at random moments and a
//! server that dies mid-pack are in `faults`.)

use std::path::Path;
use std::time::Duration;

use crate::support::git_server::{GitDaemon, SmartHttp, TestRepo, git, tree_listing};
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

    sandbox
        .initbox()
        .args(["git-clone", &repo.file_url(), "--force"])
        .arg(&dest)
        .run()
        .assert_code(0);
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

    sandbox
        .initbox()
        .args(["git-clone", &url, "--timeout", "2s"])
        .arg(sandbox.path("untrusted"))
        .run()
        .assert_code(124)
        .assert_stderr_contains("unknown CA");

    let denied = sandbox
        .initbox()
        .args(["git-clone", &url, "--cacert"])
        .arg(&ca)
        .arg(sandbox.path("denied"))
        .run();
    denied
        .assert_code(1)
        .assert_stderr_contains("authentication failed");
    assert!(!sandbox.path("denied").exists());

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

    let guarded = SmartHttp::start(&base, Some(("deploy", "pa55-w0rd-xyz")));
    let password = sandbox.write("password", "pa55-w0rd-xyz");
    sandbox
        .initbox()
        .args(["git-clone", &guarded.url("app"), "--username", "deploy"])
        .arg("--password-file")
        .arg(&password)
        .arg(sandbox.path("refused"))
        .run()
        .assert_code(1)
        .assert_stderr_contains("clear text");
    assert!(
        guarded
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|(_, auth)| auth.is_none()),
        "no credentials went over plain HTTP"
    );
}

#[test]
fn the_root_of_a_mounted_volume_is_filled_and_switched_in_place() {
    if !need_root("the_root_of_a_mounted_volume_is_filled_and_switched_in_place") {
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
