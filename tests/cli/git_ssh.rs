//! git-clone over SSH against a real OpenSSH sshd, with no ssh program anywhere (initbox
//! runs with PATH set to an empty directory): keys of each kind, plain and hashed
//! known_hosts, host keys unknown, changed or revoked, a refused key and a missing
//! repository (fatal at once), a server that comes up after the clone began (retried),
//! git-sync's variables, a pipeline step, and secrets that never show.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::git_server::git;
use crate::support::sshd::{self, PASSPHRASE, SharedSshd, SshFiles, Sshd};
use crate::support::{Cmd, Sandbox, counting_listener, entries, free_port, need_root};

/// initbox with no ssh program reachable: PATH is an empty directory.
fn initbox(sandbox: &Sandbox) -> Cmd {
    let empty = sandbox.path("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    sandbox.initbox().env("PATH", &empty)
}

/// `initbox git-clone URL DEST --ssh-key-file KEY --ssh-known-hosts-file KNOWN`, with an
/// empty PATH.
fn ssh_clone(
    sandbox: &Sandbox,
    url: &str,
    dest: impl AsRef<std::ffi::OsStr>,
    key: impl AsRef<std::ffi::OsStr>,
    known: impl AsRef<std::ffi::OsStr>,
) -> Cmd {
    initbox(sandbox)
        .args(["git-clone", url])
        .arg(dest)
        .arg("--ssh-key-file")
        .arg(key)
        .arg("--ssh-known-hosts-file")
        .arg(known)
}

/// The shared server and a known_hosts file (plain) for it in the sandbox.
fn server(sandbox: &Sandbox) -> Option<(SharedSshd, PathBuf)> {
    let server = sshd::shared()?;
    let known = server.write_known_hosts(
        &sandbox.path("known_hosts"),
        &server.known_hosts_line(&server.host_key("ed25519")),
        false,
    );
    Some((server, known))
}

fn head(dir: &Path) -> String {
    git(dir, &["rev-parse", "HEAD"])
}

/// `ssh-keygen -l`'s fingerprint of a public key file: `SHA256:…`.
fn fingerprint(pub_file: &Path) -> String {
    let output = Command::new("ssh-keygen")
        .arg("-lf")
        .arg(pub_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    text.split_whitespace().nth(1).unwrap().to_owned()
}

#[test]
fn clones_over_ssh_with_an_ed25519_key_and_a_hashed_known_hosts_line_without_an_ssh_program() {
    let sandbox = Sandbox::new();
    let Some(server) = sshd::shared() else { return };
    let known = server.write_known_hosts(
        &sandbox.path("known_hosts"),
        &format!(
            "# written by ssh-keyscan -H\n\n{}",
            server.known_hosts_line(&server.host_key("ed25519"))
        ),
        true,
    );
    let dest = sandbox.path("checkout");
    let key = server.key("ed25519");
    ssh_clone(&sandbox, &server.url("app.git"), &dest, &key, &known)
        .run()
        .assert_code(0)
        .assert_stderr_contains("checked out commit");
    assert_eq!(head(&dest), server.repo_main);
    assert_eq!(git(&dest, &["status", "--porcelain"]), "");
    let config = std::fs::read_to_string(dest.join(".git/config")).unwrap();
    assert!(!config.contains(key.to_str().unwrap()), "{config}");
    assert!(config.contains(&server.url("app.git")), "{config}");
}

#[test]
fn scp_like_syntax_reaches_the_server_on_port_22() {
    let sandbox = Sandbox::new();
    if !sshd::available() || !need_root() {
        return;
    }
    // scp-like URLs have no port: this server listens on 22 in a network namespace of the
    // test's own, and initbox runs in it.
    let server = Sshd::prepared(free_port("127.0.0.1"));
    let config = server.config_on_port_22();
    let known = sandbox.write(
        "known_hosts",
        &format!("127.0.0.1 {}\n", server.host_key("ed25519")),
    );
    let dest = sandbox.path("checkout");
    let empty = sandbox.path("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    // PATH is emptied inside the namespace: the wrapper itself needs unshare, sh and ip.
    let output = sandbox
        .initbox()
        .args(["git-clone", &server.scp_url("app.git")])
        .arg(&dest)
        .arg("--ssh-key-file")
        .arg(server.key("ed25519"))
        .arg("--ssh-known-hosts-file")
        .arg(&known)
        .args(["--timeout", "30s"])
        .in_network_namespace(&format!(
            "/usr/sbin/sshd -f {} && export PATH={}",
            config.display(),
            empty.display()
        ))
        .run();
    if let Ok(pid) = std::fs::read_to_string(server.dir().join("sshd22.pid")) {
        let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
    }
    output.assert_code(0);
    assert_eq!(head(&dest), server.repo.main);
}

#[test]
fn a_passphrase_protected_key_logs_in_with_its_passphrase_file() {
    let sandbox = Sandbox::new();
    let Some((server, known)) = server(&sandbox) else {
        return;
    };
    let dest = sandbox.path("checkout");
    initbox(&sandbox)
        .args(["git-clone", &server.url("app.git")])
        .arg(&dest)
        .arg("--ssh-key-file")
        .arg(server.key("ed25519_enc"))
        .arg("--ssh-key-passphrase-file")
        .arg(server.dir().join("passphrase"))
        .arg("--ssh-known-hosts-file")
        .arg(&known)
        .run()
        .assert_code(0);
    assert_eq!(head(&dest), server.repo_main);
}

#[test]
fn rsa_and_ecdsa_keys_log_in() {
    let sandbox = Sandbox::new();
    let Some((server, known)) = server(&sandbox) else {
        return;
    };
    for kind in ["rsa", "ecdsa"] {
        let dest = sandbox.path(&format!("checkout-{kind}"));
        ssh_clone(
            &sandbox,
            &server.url("app.git"),
            &dest,
            server.key(kind),
            &known,
        )
        .run()
        .assert_code(0);
        assert_eq!(head(&dest), server.repo_main, "{kind}");
    }
}

#[test]
fn the_keys_are_tried_in_order_until_the_server_accepts_one() {
    let sandbox = Sandbox::new();
    let Some((server, known)) = server(&sandbox) else {
        return;
    };
    let dest = sandbox.path("checkout");
    initbox(&sandbox)
        .args(["git-clone", &server.url("app.git")])
        .arg(&dest)
        .arg("--ssh-key-file")
        .arg(server.key("stranger"))
        .arg("--ssh-key-file")
        .arg(server.key("ed25519"))
        .arg("--ssh-known-hosts-file")
        .arg(&known)
        .run()
        .assert_code(0);
    assert_eq!(head(&dest), server.repo_main);
}

#[test]
fn an_unknown_host_key_ends_at_once_with_its_fingerprint_and_the_keyscan_hint() {
    let sandbox = Sandbox::new();
    let Some(server) = sshd::shared() else { return };
    let known = sandbox.write("known_hosts", "# no line for this server\n");
    let dest = sandbox.path("checkout");
    let output = ssh_clone(
        &sandbox,
        &server.url("app.git"),
        &dest,
        server.key("ed25519"),
        &known,
    )
    .args(["--timeout", "60s"])
    .run();
    output
        .assert_code(1)
        .assert_stderr_contains("host key of 127.0.0.1")
        .assert_stderr_contains(&fingerprint(&server.dir.join("host_ed25519.pub")))
        .assert_stderr_contains(&format!("ssh-keyscan -H -p {} 127.0.0.1 >>", server.port));
    assert!(
        !dest.exists() || entries(&dest).is_empty(),
        "nothing may be written to DEST: {:?}",
        entries(&dest)
    );
}

#[test]
fn a_changed_host_key_ends_at_once() {
    let sandbox = Sandbox::new();
    let Some(server) = sshd::shared() else { return };
    // Another server's key under this server's name.
    let other = sandbox.path("other");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .status()
        .unwrap();
    assert!(status.success());
    let other_key = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let known = server.write_known_hosts(
        &sandbox.path("known_hosts"),
        &server.known_hosts_line(other_key.trim()),
        false,
    );
    ssh_clone(
        &sandbox,
        &server.url("app.git"),
        sandbox.path("checkout"),
        server.key("ed25519"),
        &known,
    )
    .args(["--timeout", "60s"])
    .run()
    .assert_code(1)
    .assert_stderr_contains("HOST KEY CHANGED")
    .assert_stderr_contains(&fingerprint(&server.dir.join("host_ed25519.pub")));
}

#[test]
fn a_revoked_host_key_is_refused_even_when_another_line_accepts_it() {
    let sandbox = Sandbox::new();
    let Some(server) = sshd::shared() else { return };
    let key = server.host_key("ed25519");
    let known = sandbox.write(
        "known_hosts",
        &format!("{}@revoked * {key}\n", server.known_hosts_line(&key)),
    );
    ssh_clone(
        &sandbox,
        &server.url("app.git"),
        sandbox.path("checkout"),
        server.key("ed25519"),
        &known,
    )
    .args(["--timeout", "60s"])
    .run()
    .assert_code(1)
    .assert_stderr_contains("revoked");
}

#[test]
fn only_the_host_key_types_known_hosts_holds_are_negotiated() {
    let sandbox = Sandbox::new();
    let Some(server) = sshd::shared() else { return };
    // The server prefers to show its ed25519 key; known_hosts holds only the ecdsa one.
    let known = server.write_known_hosts(
        &sandbox.path("known_hosts"),
        &server.known_hosts_line(&server.host_key("ecdsa")),
        true,
    );
    let dest = sandbox.path("checkout");
    ssh_clone(
        &sandbox,
        &server.url("app.git"),
        &dest,
        server.key("ed25519"),
        &known,
    )
    .run()
    .assert_code(0);
    assert_eq!(head(&dest), server.repo_main);
}

#[test]
fn a_key_the_server_refuses_ends_at_once_with_exit_1() {
    let sandbox = Sandbox::new();
    let Some((server, known)) = server(&sandbox) else {
        return;
    };
    // Retried, this would run into the deadline and exit 124.
    ssh_clone(
        &sandbox,
        &server.url("app.git"),
        sandbox.path("checkout"),
        server.key("stranger"),
        &known,
    )
    .args(["--timeout", "60s"])
    .run()
    .assert_code(1)
    .assert_stderr_contains("refused the key")
    .assert_stderr_contains(&format!("user '{}'", sshd::USER));
}

#[test]
fn a_missing_repository_ends_at_once_with_the_servers_message() {
    let sandbox = Sandbox::new();
    let Some((server, known)) = server(&sandbox) else {
        return;
    };
    ssh_clone(
        &sandbox,
        &server.url("nothing-here.git"),
        sandbox.path("checkout"),
        server.key("ed25519"),
        &known,
    )
    .args(["--timeout", "60s"])
    .run()
    .assert_code(1)
    .assert_stderr_contains("does not appear to be a git repository");
}

#[test]
fn a_clone_started_before_sshd_waits_for_it() {
    let sandbox = Sandbox::new();
    if !sshd::available() {
        return;
    }
    let mut server = Sshd::prepared(free_port("127.0.0.1"));
    let known = sandbox.write(
        "known_hosts",
        &server.known_hosts_line(&server.host_key("ed25519")),
    );
    let dest = sandbox.path("checkout");
    let running = ssh_clone(
        &sandbox,
        &server.url("app.git"),
        &dest,
        server.key("ed25519"),
        &known,
    )
    .args(["--timeout", "50s"])
    .spawn();
    running.wait_for_stderr("connection refused", Duration::from_secs(30));
    assert!(server.listen(), "the port was taken meanwhile");
    running.wait().assert_code(0);
    assert_eq!(head(&dest), server.repo.main);
}

#[test]
fn a_shallow_clone_of_a_branch_over_ssh() {
    let sandbox = Sandbox::new();
    let Some((server, known)) = server(&sandbox) else {
        return;
    };
    let dest = sandbox.path("checkout");
    initbox(&sandbox)
        .args(["git-clone", &server.url("app.git")])
        .arg(&dest)
        .args(["--ref", "feature", "--depth", "1"])
        .arg("--ssh-key-file")
        .arg(server.key("ed25519"))
        .arg("--ssh-known-hosts-file")
        .arg(&known)
        .run()
        .assert_code(0);
    assert_eq!(head(&dest), server.repo_feature);
    assert_eq!(git(&dest, &["rev-list", "--count", "HEAD"]), "1");
    assert!(dest.join(".git/shallow").exists());
}

#[test]
fn the_insecure_flag_warns_and_clones() {
    let sandbox = Sandbox::new();
    let Some(server) = sshd::shared() else { return };
    let dest = sandbox.path("checkout");
    initbox(&sandbox)
        .args(["git-clone", &server.url("app.git")])
        .arg(&dest)
        .arg("--ssh-key-file")
        .arg(server.key("ed25519"))
        .arg("--ssh-insecure-accept-any-host-key")
        .run()
        .assert_code(0)
        .assert_stderr_contains("NOT verifying the host key");
    assert_eq!(head(&dest), server.repo_main);
}

#[test]
fn no_known_hosts_file_is_a_usage_error_before_connecting() {
    let sandbox = Sandbox::new();
    let listener = counting_listener("127.0.0.1");
    let key = sandbox.write("key", "not read before the check\n");
    initbox(&sandbox)
        .args([
            "git-clone",
            &format!("ssh://git@127.0.0.1:{}/srv/app.git", listener.port),
        ])
        .arg(sandbox.path("checkout"))
        .arg("--ssh-key-file")
        .arg(&key)
        .run()
        .assert_code(2)
        .assert_stderr_contains("--ssh-known-hosts-file")
        .assert_stderr_contains("--ssh-insecure-accept-any-host-key");
    initbox(&sandbox)
        .args([
            "git-clone",
            &format!("ssh://git@127.0.0.1:{}/srv/app.git", listener.port),
        ])
        .arg(sandbox.path("checkout"))
        .arg("--ssh-insecure-accept-any-host-key")
        .run()
        .assert_code(2)
        .assert_stderr_contains("--ssh-key-file");
    assert_eq!(*listener.accepted.lock().unwrap(), 0);
}

#[test]
fn git_sync_variables_name_the_key_and_known_hosts_files() {
    let sandbox = Sandbox::new();
    let Some((server, known)) = server(&sandbox) else {
        return;
    };
    let dest = sandbox.path("checkout");
    initbox(&sandbox)
        .env("GITSYNC_SSH_KEY_FILE", server.key("ed25519"))
        .env("GITSYNC_SSH_KNOWN_HOSTS_FILE", &known)
        .args(["git-clone", &server.url("app.git")])
        .arg(&dest)
        .run()
        .assert_code(0);
    assert_eq!(head(&dest), server.repo_main);
}

#[test]
fn a_pipeline_step_clones_over_ssh() {
    let sandbox = Sandbox::new();
    let Some((server, known)) = server(&sandbox) else {
        return;
    };
    let dest = sandbox.path("checkout");
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: clone\n    git-clone:\n      repo: \"{repo}\"\n      dest: {dest}\n      \
             ref: feature\n      ssh-key-file: [{key}]\n      ssh-known-hosts-file: {known}\n      \
             ssh-user: {user}\n",
            repo = server.url("app.git"),
            dest = dest.display(),
            key = server.key("ed25519").display(),
            known = known.display(),
            user = sshd::USER,
        ),
    );
    initbox(&sandbox)
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0);
    assert_eq!(head(&dest), server.repo_feature);
}

#[test]
fn keys_and_passphrases_never_appear_in_any_output() {
    let sandbox = Sandbox::new();
    let Some((server, known)) = server(&sandbox) else {
        return;
    };
    let wrong = "wr0ng-passphrase-that-must-never-show-up";
    let wrong_file = sandbox.write("wrong-passphrase", &format!("{wrong}\n"));
    let key_text = std::fs::read_to_string(server.key("ed25519_enc")).unwrap();
    let key_body = key_text.lines().nth(2).unwrap().to_owned();
    let output = initbox(&sandbox)
        .args(["git-clone", &server.url("app.git")])
        .arg(sandbox.path("wrong"))
        .arg("--ssh-key-file")
        .arg(server.key("ed25519_enc"))
        .arg("--ssh-key-passphrase-file")
        .arg(&wrong_file)
        .arg("--ssh-known-hosts-file")
        .arg(&known)
        .run();
    output
        .assert_code(78)
        .assert_stderr_contains("does not decrypt it");
    for out in [&output.stdout, &output.stderr] {
        assert!(!out.contains(wrong), "the passphrase leaked:\n{out}");
        assert!(!out.contains(&key_body), "the key leaked:\n{out}");
    }
    // A successful clone, with every log line on, shows neither either.
    let dest = sandbox.path("right");
    let output = initbox(&sandbox)
        .env("INITBOX_VERBOSE", "1")
        .args(["git-clone", &server.url("app.git")])
        .arg(&dest)
        .arg("--ssh-key-file")
        .arg(server.key("ed25519_enc"))
        .arg("--ssh-key-passphrase-file")
        .arg(server.dir.join("passphrase"))
        .arg("--ssh-known-hosts-file")
        .arg(&known)
        .run();
    output.assert_code(0);
    for out in [&output.stdout, &output.stderr] {
        assert!(!out.contains(PASSPHRASE), "the passphrase leaked:\n{out}");
        assert!(!out.contains(&key_body), "the key leaked:\n{out}");
    }
    let config = std::fs::read_to_string(dest.join(".git/config")).unwrap();
    assert!(
        !config.contains(PASSPHRASE) && !config.contains("passphrase"),
        "{config}"
    );
}

#[test]
fn one_ssh_session_serves_every_connection_of_a_clone() {
    let sandbox = Sandbox::new();
    if !sshd::available() {
        return;
    }
    // A server of its own: its log counts this clone's logins and commands alone.
    let server = Sshd::start();
    let known = sandbox.write(
        "known_hosts",
        &server.known_hosts_line(&server.host_key("ed25519")),
    );
    let dest = sandbox.path("checkout");
    // A shallow clone of a branch connects twice (the ref first, then the pack).
    initbox(&sandbox)
        .args(["git-clone", &server.url("app.git")])
        .arg(&dest)
        .args(["--ref", "feature"])
        .arg("--ssh-key-file")
        .arg(server.key("ed25519"))
        .arg("--ssh-known-hosts-file")
        .arg(&known)
        .run()
        .assert_code(0);
    assert_eq!(head(&dest), server.repo.feature);
    let log = server.log();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
    assert_eq!(log.matches("Starting session: command").count(), 2, "{log}");
}

#[test]
fn a_server_that_drops_the_connection_is_retried_until_the_deadline() {
    let sandbox = Sandbox::new();
    // Accepts and closes at once, before any SSH banner: what a restarting server does.
    let listener = counting_listener("127.0.0.1");
    let key = sandbox.path("key");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(status.success());
    initbox(&sandbox)
        .args([
            "git-clone",
            &format!("ssh://git@127.0.0.1:{}/srv/app.git", listener.port),
        ])
        .arg(sandbox.path("checkout"))
        .arg("--ssh-key-file")
        .arg(&key)
        .arg("--ssh-insecure-accept-any-host-key")
        .args(["--timeout", "3s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("ssh handshake");
    assert!(*listener.accepted.lock().unwrap() > 1, "retried");
}
