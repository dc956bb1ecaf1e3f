//! git-clone `--submodules`: a superproject whose submodule has a submodule of its own,
//! served by `git daemon` with relative URLs, as `git clone --recurse-submodules` checks it
//! out; the levels `shallow` and `recursive`; re-runs that change nothing; a damaged
//! submodule cloned again; and the `.gitmodules` git refuses (paths and URLs that would
//! leave the checkout or run options).

use std::path::Path;

use crate::support::Sandbox;
use crate::support::git_server::{GitDaemon, git};

/// Repositories under `root`: `deep` (one file), `lib` (a file and `deep` as submodule
/// `vendor/deep`), `app` (a file and `lib` as submodule `lib`), each URL relative (`../x`),
/// as they are written for a superproject that may be cloned over several transports.
/// Returns app's, lib's and deep's commits.
fn nested_repos(root: &Path) -> (String, String, String) {
    let commit_with = |name: &str, file: &str, modules: &[(&str, &str, &str)]| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        std::fs::write(dir.join(file), format!("{name}\n")).unwrap();
        // The files first: `git add -A` would drop a gitlink with no directory behind it.
        git(&dir, &["add", "-A"]);
        let mut gitmodules = String::new();
        for (path, url, commit) in modules {
            gitmodules.push_str(&format!(
                "[submodule \"{path}\"]\n\tpath = {path}\n\turl = {url}\n"
            ));
            git(
                &dir,
                &[
                    "update-index",
                    "--add",
                    "--cacheinfo",
                    &format!("160000,{commit},{path}"),
                ],
            );
        }
        if !gitmodules.is_empty() {
            std::fs::write(dir.join(".gitmodules"), gitmodules).unwrap();
            git(&dir, &["add", ".gitmodules"]);
        }
        git(&dir, &["commit", "-q", "-m", name]);
        git(&dir, &["rev-parse", "HEAD"])
    };
    let deep = commit_with("deep", "deep.txt", &[]);
    let lib = commit_with("lib", "lib.txt", &[("vendor/deep", "../deep", &deep)]);
    let app = commit_with("app", "app.txt", &[("lib", "../lib", &lib)]);
    (app, lib, deep)
}

fn clone(sandbox: &Sandbox, url: &str, dest: &Path, extra: &[&str]) -> crate::support::Output {
    sandbox
        .initbox()
        .args(["git-clone", url])
        .arg(dest)
        .args(["--timeout", "60s"])
        .args(extra)
        .run()
}

#[test]
fn recursive_clones_nested_submodules_at_their_recorded_commits_as_git_does() {
    let sandbox = Sandbox::new();
    let root = sandbox.path("repos");
    let (app, lib, deep) = nested_repos(&root);
    let daemon = GitDaemon::start(&root);
    let dest = sandbox.path("app");
    clone(
        &sandbox,
        &daemon.url("app"),
        &dest,
        &["--submodules", "recursive"],
    )
    .assert_code(0)
    .assert_stderr_contains("cloning submodule 'lib'");
    assert_eq!(git(&dest, &["rev-parse", "HEAD"]), app);
    assert_eq!(git(&dest.join("lib"), &["rev-parse", "HEAD"]), lib);
    assert_eq!(
        git(&dest.join("lib/vendor/deep"), &["rev-parse", "HEAD"]),
        deep
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("lib/vendor/deep/deep.txt")).unwrap(),
        "deep\n"
    );
    // git itself sees every submodule initialised, at its commit, and the trees clean.
    let status = git(&dest, &["submodule", "status", "--recursive"]);
    // `-` not initialised, `+` at another commit, `U` conflicts (the helper trims the
    // first line's leading space, which marks a submodule in order).
    assert_eq!(status.lines().count(), 2, "{status}");
    assert!(
        status
            .lines()
            .all(|line| !line.starts_with(['-', '+', 'U'])),
        "every submodule checked out at the recorded commit:\n{status}"
    );
    assert_eq!(
        git(
            &dest,
            &["status", "--porcelain", "--ignore-submodules=none"]
        ),
        ""
    );

    // The same again: nothing to download, DEST untouched.
    clone(
        &sandbox,
        &daemon.url("app"),
        &dest,
        &["--submodules", "recursive"],
    )
    .assert_code(0)
    .assert_stderr_contains("already a checkout");
}

#[test]
fn shallow_clones_only_the_first_level_and_off_none() {
    let sandbox = Sandbox::new();
    let root = sandbox.path("repos");
    let (_, lib, _) = nested_repos(&root);
    let daemon = GitDaemon::start(&root);
    let shallow = sandbox.path("shallow");
    clone(
        &sandbox,
        &daemon.url("app"),
        &shallow,
        &["--submodules", "shallow"],
    )
    .assert_code(0);
    assert_eq!(git(&shallow.join("lib"), &["rev-parse", "HEAD"]), lib);
    assert!(shallow.join("lib/lib.txt").exists());
    let nested = std::fs::read_dir(shallow.join("lib/vendor/deep"))
        .unwrap()
        .count();
    assert_eq!(nested, 0, "a second level is not cloned with shallow");

    let off = sandbox.path("off");
    clone(&sandbox, &daemon.url("app"), &off, &[]).assert_code(0);
    assert_eq!(std::fs::read_dir(off.join("lib")).unwrap().count(), 0);
    // Asking for the submodules later clones again, with them.
    clone(
        &sandbox,
        &daemon.url("app"),
        &off,
        &["--submodules", "shallow"],
    )
    .assert_code(0);
    assert_eq!(git(&off.join("lib"), &["rev-parse", "HEAD"]), lib);
}

#[test]
fn a_damaged_submodule_is_noticed_and_the_checkout_cloned_again() {
    let sandbox = Sandbox::new();
    let root = sandbox.path("repos");
    let (_, lib, _) = nested_repos(&root);
    let daemon = GitDaemon::start(&root);
    let dest = sandbox.path("app");
    let args = ["--submodules", "recursive"];
    clone(&sandbox, &daemon.url("app"), &dest, &args).assert_code(0);
    std::fs::write(dest.join("lib/vendor/deep/deep.txt"), "edited\n").unwrap();
    clone(&sandbox, &daemon.url("app"), &dest, &args)
        .assert_code(0)
        .assert_stderr_contains("lib/vendor/deep/deep.txt was changed")
        .assert_stderr_contains("cloning");
    assert_eq!(
        std::fs::read_to_string(dest.join("lib/vendor/deep/deep.txt")).unwrap(),
        "deep\n"
    );
    assert_eq!(git(&dest.join("lib"), &["rev-parse", "HEAD"]), lib);
}

#[test]
fn gitmodules_that_leave_the_checkout_or_run_options_are_refused() {
    let sandbox = Sandbox::new();
    let root = sandbox.path("repos");
    let (_, lib, _) = nested_repos(&root);
    let daemon = GitDaemon::start(&root);
    let hostile = |name: &str, path: &str, url: &str| {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q", "-b", "main"]);
        std::fs::write(
            dir.join(".gitmodules"),
            format!("[submodule \"m\"]\n\tpath = {path}\n\turl = {url}\n"),
        )
        .unwrap();
        git(&dir, &["add", ".gitmodules"]);
        git(
            &dir,
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{lib},m"),
            ],
        );
        git(&dir, &["commit", "-q", "-m", name]);
    };
    let secret = sandbox.path("secret");
    std::fs::create_dir_all(&secret).unwrap();
    let cases = [
        // gix's URL parser refuses it before initbox's own check would.
        (
            "option",
            "m",
            "-uhttps://evil.invalid/x",
            "could not be parsed",
        ),
        (
            "local",
            "m",
            &format!("file://{}", root.join("lib").display()),
            "local superproject",
        ),
        ("escape", "../outside", "../lib", "path is refused"),
    ];
    for (name, path, url, message) in cases {
        hostile(name, path, url);
        let dest = sandbox.path(&format!("dest-{name}"));
        clone(
            &sandbox,
            &daemon.url(name),
            &dest,
            &["--submodules", "recursive"],
        )
        .assert_code(1)
        .assert_stderr_contains(message);
        assert!(!dest.join("m/lib.txt").exists());
        assert!(!sandbox.path("outside").exists());
    }
}

#[test]
fn over_ssh_nested_submodules_come_through_the_same_session_settings() {
    use crate::support::sshd::{self, SshFiles, USER};
    let Some(server) = sshd::shared() else { return };
    let sandbox = Sandbox::new();
    // Repositories of this test beside the server's own, owned by its git user
    // (git-upload-pack refuses a repository of another owner).
    let name = format!("nested-{}", std::process::id());
    let root = server.dir.join("srv").join(&name);
    let (app, lib, deep) = nested_repos(&root);
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{USER}:{USER}")])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    let known = server.write_known_hosts(
        &sandbox.path("known_hosts"),
        &server.known_hosts_line(&server.host_key("ed25519")),
        false,
    );
    let empty_path = sandbox.path("empty-path");
    std::fs::create_dir_all(&empty_path).unwrap();
    let dest = sandbox.path("app");
    sandbox
        .initbox()
        .env("PATH", &empty_path)
        .args(["git-clone", &server.url(&format!("{name}/app"))])
        .arg(&dest)
        .arg("--ssh-key-file")
        .arg(server.key("ed25519"))
        .arg("--ssh-known-hosts-file")
        .arg(&known)
        .args(["--submodules", "recursive", "--timeout", "60s"])
        .run()
        .assert_code(0);
    assert_eq!(git(&dest, &["rev-parse", "HEAD"]), app);
    assert_eq!(git(&dest.join("lib"), &["rev-parse", "HEAD"]), lib);
    assert_eq!(
        git(&dest.join("lib/vendor/deep"), &["rev-parse", "HEAD"]),
        deep
    );
    let _ = std::fs::remove_dir_all(&root);
}
