//! The static binary in an empty root, as in a `FROM scratch` image: no /etc, no /tmp, no
//! shell, no libc, no CA bundle; uid/gid 65532; the root read-only and one writable
//! directory mounted at /work (an emptyDir). Every command must work there.
//!
//! Needs root (mount namespace, chroot) and the static binary (`images/build.sh`), named by
//! INITBOX_STATIC_BINARY; `.ci/run` provides both.

use std::os::unix::fs::{PermissionsExt, chown};
use std::path::PathBuf;
use std::process::Command;

use crate::support::dns_server::DnsServer;
use crate::support::git_server::{GitDaemon, TestRepo};
use crate::support::http_server::{HttpServer, reply};
use crate::support::{Cmd, Output, counting_listener, need_root, static_binary};

/// The uid and gid of distroless "nonroot", which the image runs as.
const NONROOT: u32 = 65532;

/// Mounts `ROOT` read-only over itself, `WORK` at `ROOT/work`, then runs the binary inside
/// as 65532:65532 (coreutils chroot changes ids after entering the root).
const ENTER_EMPTY_ROOT: &str = r#"set -eu
root=$1 work=$2; shift 2
if [ -n "${OPEN_PING:-}" ]; then
  ip link set lo up
  sysctl -qw net.ipv4.ping_group_range="0 2147483647"
fi
mount --bind "$root" "$root"
mount -o remount,bind,ro "$root"
mount --bind "$work" "$root/work"
exec env -i "$(command -v chroot)" --userspec=65532:65532 "$root" /initbox "$@"
"#;

/// An empty root holding only `/initbox` and the mount point `/work`, and the writable
/// directory mounted there (owned by 65532).
struct EmptyRoot {
    _dir: tempfile::TempDir,
    root: PathBuf,
    work: PathBuf,
}

impl EmptyRoot {
    /// None (after saying why) where the test cannot run.
    fn new() -> Option<EmptyRoot> {
        if !need_root() {
            return None;
        }
        let binary = static_binary()?;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path().join("root");
        let work = dir.path().join("work");
        for path in [&root, &root.join("work"), &work] {
            std::fs::create_dir(path).unwrap();
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        chown(&work, Some(NONROOT), Some(NONROOT)).unwrap();
        let installed = root.join("initbox");
        std::fs::copy(&binary, &installed).expect("copying INITBOX_STATIC_BINARY");
        std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).unwrap();
        let listing: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(
            listing.len(),
            2,
            "the root holds only initbox and work: {listing:?}"
        );
        Some(EmptyRoot {
            _dir: dir,
            root,
            work,
        })
    }

    /// A file in the writable directory, readable by 65532; returns its path inside the root.
    fn put(&self, name: &str, contents: &str) -> String {
        let path = self.work.join(name);
        std::fs::write(&path, contents).unwrap();
        chown(&path, Some(NONROOT), Some(NONROOT)).unwrap();
        format!("/work/{name}")
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.work.join(name))
            .unwrap_or_else(|error| panic!("reading /work/{name}: {error}"))
    }

    fn command(&self, namespaces: &[&str], args: &[&str]) -> Cmd {
        let mut command = Command::new("unshare");
        command
            .args(namespaces)
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(ENTER_EMPTY_ROOT)
            .arg("sh")
            .arg(&self.root)
            .arg(&self.work)
            .args(args);
        Cmd { command }
    }

    /// initbox ARGS in the empty root, sharing the test's network (its loopback servers).
    fn run(&self, args: &[&str]) -> Output {
        self.command(&[], args).run()
    }

    /// initbox ARGS in the empty root inside a fresh network namespace whose
    /// ping_group_range lets 65532 open ICMP datagram sockets.
    fn run_with_ping_allowed(&self, args: &[&str]) -> Output {
        self.command(&["--net"], args).env("OPEN_PING", "1").run()
    }
}

#[test]
fn help_version_completions_and_man_need_nothing() {
    let _serial = crate::support::one_at_a_time();
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    let help = empty.run(&["--help"]);
    help.assert_code(0);
    assert!(help.stdout.contains("wait-for-tcp"), "{}", help.stdout);
    let version = empty.run(&["--version"]);
    version.assert_code(0);
    assert!(version.stdout.starts_with("initbox "), "{}", version.stdout);
    let completions = empty.run(&["completions", "bash"]);
    completions.assert_code(0);
    assert!(completions.stdout.contains("initbox"));
    let man = empty.run(&["man"]);
    man.assert_code(0);
    assert!(man.stdout.contains(".TH initbox"), "{}", &man.stdout[..200]);
}

#[test]
fn sleep_and_the_read_only_root_is_really_read_only() {
    let _serial = crate::support::one_at_a_time();
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    empty.run(&["sleep", "0.1s"]).assert_code(0);
    // Proof of the setting, not of initbox: nothing can be written outside /work.
    let source = empty.put("motd.j2", "hello\n");
    empty
        .run(&["template", &source, "/motd"])
        .assert_code(1)
        // Template's check before writing (a real probe file) finds / read-only.
        .assert_stderr_contains(
            "cannot write /motd: read-only file system (the directory / cannot be written)",
        );
    assert!(!empty.root.join("motd").exists());
}

#[test]
fn wait_for_tcp_and_dns_without_etc() {
    let _serial = crate::support::one_at_a_time();
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    let listener = counting_listener("127.0.0.1");
    let target = format!("127.0.0.1:{}", listener.port);
    empty
        .run(&["wait-for-tcp", &target, "--timeout", "30s"])
        .assert_code(0);

    let dns = DnsServer::start();
    dns.add_a("mydb.test", "10.0.0.5");
    let nameserver = dns.nameserver();
    empty
        .run(&["wait-for-dns", "mydb.test", "--nameserver", &nameserver])
        .assert_code(0)
        .assert_stderr_contains("10.0.0.5");
    // Without /etc/resolv.conf and without --nameserver: a configuration error at once,
    // saying what to do, not a wait that can never succeed.
    empty
        .run(&["wait-for-dns", "mydb.test"])
        .assert_code(78)
        .assert_stderr_contains("no nameserver to ask")
        .assert_stderr_contains("give --nameserver");
}

#[test]
fn wait_for_http_over_tls_with_the_bundled_and_a_mounted_ca() {
    let _serial = crate::support::one_at_a_time();
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    let server = HttpServer::start_tls(vec![reply(200, "ok")]);
    let url = server.https_url("127.0.0.1", "/healthz");
    // No CA bundle in the root: the bundled public roots are loaded and do not know the
    // test CA, so the answer is a clear certificate error, not a crash or a missing file.
    empty
        .run(&["wait-for-http", &url, "--timeout", "2s"])
        .assert_code(124)
        .assert_stderr_contains("unknown CA");
    let ca = empty.put("ca.pem", server.ca_pem.as_deref().unwrap());
    empty
        .run(&["wait-for-http", &url, "--cacert", &ca, "--timeout", "30s"])
        .assert_code(0);
    let by_name = server.https_url("localhost", "/healthz");
    empty
        .run(&[
            "wait-for-http",
            &by_name,
            "--cacert",
            &ca,
            "--timeout",
            "30s",
        ])
        .assert_code(0);
}

#[test]
fn register_and_fetch_write_into_the_mounted_directory() {
    let _serial = crate::support::one_at_a_time();
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    let server = HttpServer::start(vec![reply(200, "{\"registered\":true}")]);
    empty
        .run(&[
            "register",
            &server.url("/register"),
            "--form",
            "pod=web-0",
            "-o",
            "/work/registration.json",
        ])
        .assert_code(0);
    assert_eq!(empty.read("registration.json"), "{\"registered\":true}");
    assert_eq!(server.requests()[0].body_text(), "pod=web-0");
    empty
        .run(&[
            "fetch",
            &server.url("/index.html"),
            "-o",
            "/work/html/index.html",
        ])
        .assert_code(0);
    assert_eq!(empty.read("html/index.html"), "{\"registered\":true}");
}

#[test]
fn ping_as_nonroot_where_ping_group_range_allows_it() {
    let _serial = crate::support::one_at_a_time();
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    let output = empty.run_with_ping_allowed(&["ping", "-c", "1", "127.0.0.1"]);
    output.assert_code(0);
    assert!(output.stdout.contains("1 received"), "{}", output.stdout);
}

#[test]
fn template_and_git_clone_into_the_mounted_directory() {
    let _serial = crate::support::one_at_a_time();
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    let source = empty.put("app.conf.j2", "port = {{ port }}\n");
    empty
        .run(&["template", &source, "/work/app.conf", "--set", "port=8080"])
        .assert_code(0);
    assert_eq!(empty.read("app.conf"), "port = 8080\n");

    let repos = tempfile::tempdir().unwrap();
    let repo = TestRepo::create(repos.path(), "config.git");
    let daemon = GitDaemon::start(repos.path());
    empty
        .run(&["git-clone", &daemon.url("config.git"), "/work/config"])
        .assert_code(0);
    assert_eq!(empty.read("config/conf/app.conf"), "port = 9090\n");
    let marker = empty.read("config/.git/initbox-checkout.json");
    assert!(marker.contains(&repo.main), "{marker}");
}

#[test]
fn run_a_pipeline_with_a_status_file() {
    let _serial = crate::support::one_at_a_time();
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    let listener = counting_listener("127.0.0.1");
    let dns = DnsServer::start();
    dns.add_a("mydb.test", "10.0.0.5");
    empty.put("motd.j2", "db at {{ env.DB_HOST }}\n");
    let pipeline = empty.put(
        "pipeline.yaml",
        &format!(
            "env:\n  DB_HOST: mydb.test\nsteps:\n\
             \x20 - name: dns\n    wait-for-dns: {{ names: [$(DB_HOST)], nameserver: [\"{ns}\"] }}\n\
             \x20 - name: port\n    wait-for-tcp: {{ targets: [\"127.0.0.1:{port}\"] }}\n\
             \x20 - name: motd\n    template: {{ src: /work/motd.j2, dest: /work/motd }}\n\
             \x20 - name: settle\n    sleep: {{ duration: 0s }}\n",
            ns = dns.nameserver(),
            port = listener.port,
        ),
    );
    empty
        .run(&["run", "-f", &pipeline, "--status-file", "/work/status.json"])
        .assert_code(0)
        .assert_stderr_contains("Init:4/4");
    assert_eq!(empty.read("motd"), "db at mydb.test\n");
    let status = empty.read("status.json");
    assert!(
        status.contains("\"phase\": \"Succeeded\"") || status.contains("\"phase\":\"Succeeded\""),
        "{status}"
    );
}

#[test]
fn install_puts_a_runnable_initbox_into_the_shared_volume() {
    let _serial = crate::support::one_at_a_time();
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    // The initbox image's init container: into the emptyDir.
    let installed = empty.run(&["install", "/work/tools"]);
    installed.assert_code(0);
    assert_eq!(installed.stdout.trim(), "/work/tools/initbox");
    let mode = std::fs::metadata(empty.work.join("tools/initbox"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o755);
    // The app image's init container runs the installed copy, as 65532, with nothing else
    // in the root: here by the hand-off, the way a container's command would start it.
    empty.put("default.conf", "port = 8080\n");
    empty
        .run(&[
            "sleep",
            "0",
            "--",
            "/work/tools/initbox",
            "copy",
            "/work/default.conf",
            "/work/conf/app.conf",
        ])
        .assert_code(0);
    assert_eq!(empty.read("conf/app.conf"), "port = 8080\n");
    // A restart finds the same binary and leaves it alone.
    empty
        .run(&["install", "/work/tools"])
        .assert_code(0)
        .assert_stderr_contains("already this initbox");
}

/// Every command of the registry, once, in the empty root as 65532: each finds what it needs
/// without /etc, /tmp, /proc or a shell, and ends the way it would in a scratch image (a
/// file command with 0; a check with nothing to find with 124 at its timeout, its attempts
/// made; sysctl, which needs /proc/sys mounted, with 1 naming it). The table is checked
/// against the registry, so a new command needs its row.
#[test]
fn every_command_of_the_registry_runs_from_the_empty_root() {
    use crate::support::{COMMANDS, assert_covers, free_port};
    let Some(empty) = EmptyRoot::new() else {
        return;
    };
    let closed = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let closed_url = format!("http://{closed}/");
    empty.put("file.txt", "a\n");
    empty.put("page.j2", "{{ 1 + 1 }}\n");
    empty.put(
        "pipeline.yaml",
        "steps:\n  - name: nap\n    sleep: {duration: 0}\n",
    );
    empty.put(
        "kubeconfig",
        &format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{{name: c, cluster: {{server: \"https://{closed}\"}}}}]\n\
             users: [{{name: u, user: {{token: not-a-real-token}}}}]\n\
             contexts: [{{name: c, context: {{cluster: c, user: u, namespace: default}}}}]\n"
        ),
    );
    let archive = empty.work.join("app.tar");
    let made = Command::new("tar")
        .arg("-cf")
        .arg(&archive)
        .arg("-C")
        .arg(&empty.work)
        .arg("file.txt")
        .status()
        .unwrap();
    assert!(made.success());
    chown(&archive, Some(NONROOT), Some(NONROOT)).unwrap();
    let quick = ["--timeout", "300ms"];
    let with = |args: &[&str], more: &[&str]| -> Vec<String> {
        args.iter().chain(more).map(|s| s.to_string()).collect()
    };
    let cases: Vec<(Vec<String>, i32)> = vec![
        (
            with(
                &["wait-for-dns", "db.test", "--nameserver", &closed],
                &quick,
            ),
            124,
        ),
        (with(&["wait-for-tcp", &closed], &quick), 124),
        (with(&["wait-for-http", &closed_url], &quick), 124),
        (with(&["wait-for-postgres", &closed], &quick), 124),
        (with(&["wait-for-redis", &closed], &quick), 124),
        (with(&["wait-for-mysql", &closed], &quick), 124),
        (with(&["wait-for-nats", &closed], &quick), 124),
        (with(&["wait-for-zookeeper", &closed], &quick), 124),
        (with(&["wait-for-kafka", &closed], &quick), 124),
        (with(&["wait-for-amqp", &closed], &quick), 124),
        (with(&["wait-for-grpc", &closed], &quick), 124),
        (
            with(
                &[
                    "wait-for-k8s",
                    "job/migrate",
                    "--kubeconfig",
                    "/work/kubeconfig",
                ],
                &quick,
            ),
            124,
        ),
        (with(&["wait-for-file", "/work/missing"], &quick), 124),
        (
            with(&["wait-for-socket", "/work/missing.sock"], &quick),
            124,
        ),
        (
            with(&["wait-for-command", "/initbox", "sleep", "0"], &[]),
            0,
        ),
        (with(&["ping", "127.0.0.1", "-c", "1"], &[]), 0),
        (with(&["register", &closed_url], &quick), 124),
        (
            with(&["fetch", &closed_url, "-o", "/work/fetched"], &quick),
            124,
        ),
        (
            with(
                &["git-clone", &format!("git://{closed}/app"), "/work/repo"],
                &quick,
            ),
            124,
        ),
        (with(&["template", "/work/page.j2", "/work/page"], &[]), 0),
        (with(&["sleep", "0"], &[]), 0),
        (with(&["chown", "65532:65532", "/work/file.txt"], &[]), 0),
        (with(&["chmod", "0644", "/work/file.txt"], &[]), 0),
        (with(&["mkdir", "/work/dir/sub"], &[]), 0),
        (with(&["remove", "/work/dir"], &[]), 0),
        (with(&["link", "file.txt", "/work/current"], &[]), 0),
        (with(&["sysctl", "vm.max_map_count=262144"], &[]), 1),
        (with(&["install", "/work/bin"], &[]), 0),
        (with(&["write", "/work/written", "--content", "x"], &[]), 0),
        (
            with(&["replace", "/work/file.txt", "--literal", "a", "b"], &[]),
            0,
        ),
        (with(&["copy", "/work/file.txt", "/work/copied"], &[]), 0),
        (
            with(&["extract", "/work/app.tar", "/work/extracted"], &[]),
            0,
        ),
        (
            with(
                &[
                    "k8s-copy",
                    "configmap/app",
                    "/work/config",
                    "--kubeconfig",
                    "/work/kubeconfig",
                ],
                &quick,
            ),
            124,
        ),
        (with(&["run", "-f", "/work/pipeline.yaml"], &[]), 0),
    ];
    let covered: Vec<&str> = cases.iter().map(|(args, _)| args[0].as_str()).collect();
    assert_covers(&covered, &COMMANDS, "the commands run from an empty root");
    let mut failures = Vec::new();
    for (args, code) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = if args[0] == "ping" {
            empty.run_with_ping_allowed(&args)
        } else {
            empty.run(&args)
        };
        if output.code != *code {
            failures.push(format!(
                "initbox {}: exit {} instead of {code}:\n{}",
                args.join(" "),
                output.code,
                output.stderr
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(empty.read("page"), "2\n");
    assert!(empty.work.join("extracted/file.txt").exists());
    assert!(empty.work.join("bin/initbox").exists());
}
