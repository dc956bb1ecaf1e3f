//! wait-for-redis against real redis-server 7 processes on loopback: started after the
//! waiter, loading a dataset (-LOADING), requiring a password, with ACL users, over TLS and
//! as a replica; compared with `redis-cli ping` in the same states.

use std::time::Duration;

use crate::support::TlsFiles;
use crate::support::redis_server::{self, RedisServer};
use crate::support::{Sandbox, free_port};

const SEEN: Duration = Duration::from_secs(30);

fn waiter(sandbox: &Sandbox, target: &str, extra: &[&str]) -> crate::support::Cmd {
    let timeout: &[&str] = if extra.contains(&"--timeout") {
        &[]
    } else {
        &["--timeout", "45s"]
    };
    sandbox
        .initbox()
        .args(["wait-for-redis", target])
        .args(timeout)
        .args(extra)
}

#[test]
fn a_server_started_after_the_waiter_is_seen_once_it_answers_pong() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let mut server = RedisServer::new(free_port("127.0.0.1"), &[]);
    let running = waiter(&sandbox, &server.address(), &[]).spawn();
    running.wait_for_stderr("connection refused", SEEN);
    assert!(server.launch(false), "the port was taken meanwhile");
    let output = running.wait();
    output
        .assert_code(0)
        .assert_stderr_contains("is ready after");
    output.assert_stderr_contains(": PONG");
    assert_eq!(server.cli(&["ping"]), "PONG");
}

#[test]
fn a_server_loading_its_dataset_is_not_ready_until_loaded_as_redis_cli_says() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let mut server = RedisServer::new(
        free_port("127.0.0.1"),
        &[
            "--key-load-delay",
            "2000",
            "--loading-process-events-interval-bytes",
            "1024",
        ],
    );
    server.make_dataset(3000);
    let running = waiter(&sandbox, &server.address(), &[]).spawn();
    running.wait_for_stderr("connection refused", SEEN);
    assert!(server.launch(true), "the port was taken meanwhile");
    running.wait_for_stderr("LOADING Redis is loading the dataset in memory", SEEN);
    // The vendor client sees the same state at the same time (unless the load just ended).
    let cli = server.cli(&["ping"]);
    assert!(cli.starts_with("LOADING") || cli == "PONG", "{cli}");
    let output = running.wait();
    output.assert_code(0).assert_stderr_contains(": PONG");
    assert_eq!(server.cli(&["ping"]), "PONG");
}

#[test]
fn noauth_without_a_password_is_ready_with_a_warning() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = RedisServer::start(&["--requirepass", "default-pw"]);
    let output = waiter(&sandbox, &server.address(), &[]).run();
    output
        .assert_code(0)
        .assert_stderr_contains("warning:")
        .assert_stderr_contains("it requires a password; give --password-file")
        .assert_stderr_contains("alive (NOAUTH");
    assert!(server.cli(&["ping"]).starts_with("NOAUTH"));
}

#[test]
fn an_acl_user_with_the_right_password_is_ready_from_a_file_or_rediscli_auth() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = RedisServer::start(&[
        "--requirepass",
        "default-pw",
        "--user",
        "app",
        "on",
        ">app-pw",
        "~*",
        "&*",
        "+@all",
    ]);
    let file = sandbox.write("pw", "app-pw\n");
    let url = format!("redis://app@{}/2", server.address());
    let output = waiter(&sandbox, &url, &["--password-file"])
        .arg(&file)
        .run();
    output.assert_code(0).assert_stderr_contains(": PONG");
    assert!(!output.stderr.contains("warning"), "{}", output.stderr);
    let output = waiter(&sandbox, &server.address(), &["--user", "app"])
        .env("REDISCLI_AUTH", "app-pw")
        .run();
    output.assert_code(0).assert_stderr_contains(": PONG");
    // The default user's password, without --user.
    let output = waiter(&sandbox, &server.address(), &[])
        .env("REDISCLI_AUTH", "default-pw")
        .run();
    output.assert_code(0).assert_stderr_contains(": PONG");
}

#[test]
fn a_wrong_password_ends_the_wait_at_once_with_exit_1_and_never_shows_it() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = RedisServer::start(&[
        "--requirepass",
        "default-pw",
        "--user",
        "app",
        "on",
        ">app-pw",
        "~*",
        "+@all",
    ]);
    let secret = "Wr0ng-Secret-42";
    let file = sandbox.write("pw", secret);
    for extra in [vec!["--user", "app"], vec![]] {
        let output = waiter(&sandbox, &server.address(), &extra)
            .args(["--password-file"])
            .arg(&file)
            .args(["-v"])
            .run();
        output
            .assert_code(1)
            .assert_stderr_contains("WRONGPASS invalid username-password pair");
        assert!(
            !output.stderr.contains(secret) && !output.stdout.contains(secret),
            "{output:?}"
        );
    }
    let output = waiter(&sandbox, &server.address(), &["--user", "app"])
        .env("REDISCLI_AUTH", secret)
        .run();
    output.assert_code(1);
    assert!(!output.stderr.contains(secret) && !output.stdout.contains(secret));
}

#[test]
fn a_user_without_a_password_or_a_password_in_the_url_is_refused_before_waiting() {
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args(["wait-for-redis", "127.0.0.1:1", "--user", "app"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("--user needs a password");
    let output = sandbox
        .initbox()
        .args(["wait-for-redis", "redis://app:s3cret-pw@127.0.0.1:1/0"])
        .run();
    output
        .assert_code(2)
        .assert_stderr_contains("--password-file");
    assert!(!output.stderr.contains("s3cret-pw"), "{}", output.stderr);
}

#[test]
fn tls_with_the_servers_ca_is_ready_and_an_unknown_ca_is_fatal() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let files = TlsFiles::new(&sandbox.path(""));
    let args = redis_server::tls_args(&files);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = RedisServer::start(&args);
    let ca = files.ca.to_str().unwrap();
    let output = waiter(&sandbox, &server.address(), &["--tls", "--cacert", ca]).run();
    output.assert_code(0).assert_stderr_contains(": PONG");
    let url = format!("rediss://localhost:{}", server.port);
    let output = waiter(&sandbox, &url, &["--cacert", ca]).run();
    output.assert_code(0).assert_stderr_contains(": PONG");
    // Without the CA the certificate cannot be trusted, which no retry changes.
    let output = waiter(&sandbox, &server.address(), &["--tls"]).run();
    output.assert_code(1).assert_stderr_contains("certificate");
    // Plain text to a TLS port: the server drops it, never a PONG.
    let output = waiter(&sandbox, &server.address(), &["--timeout", "1s"]).run();
    output.assert_code(124);
}

#[test]
fn role_replica_waits_for_the_link_to_the_master_and_names_the_role_seen() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    // A replica of a master that is not there yet: alive, but its link is down.
    let master_port = free_port("127.0.0.1");
    let master_port_text = master_port.to_string();
    let replica = RedisServer::start(&["--replicaof", "127.0.0.1", &master_port_text]);
    let running = waiter(&sandbox, &replica.address(), &["--role", "replica"]).spawn();
    running.wait_for_stderr("whose link to its master is not up yet", SEEN);
    let mut master = RedisServer::new(master_port, &[]);
    assert!(
        master.launch(false),
        "the master's port was taken meanwhile"
    );
    let output = running.wait();
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("PONG, replica of 127.0.0.1:{master_port}"));
    let output = waiter(
        &sandbox,
        &replica.address(),
        &["--role", "master", "--timeout", "1s"],
    )
    .run();
    output.assert_code(124).assert_stderr_contains(&format!(
        "is a replica of 127.0.0.1:{master_port}, not a master"
    ));
    waiter(&sandbox, &master.address(), &["--role", "master"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("PONG, master");
}

#[test]
fn sigterm_while_waiting_exits_143() {
    let sandbox = Sandbox::new();
    let address = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    let running = waiter(&sandbox, &address, &[]).spawn();
    running.wait_for_stderr("is not ready", SEEN);
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn a_pipeline_step_waits_for_redis() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = RedisServer::start(&["--requirepass", "step-pw"]);
    let file = sandbox.write("pw", "step-pw");
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: cache\n    wait-for-redis: {{targets: [\"{}\"], password-file: \"{}\", role: master}}\n",
            server.address(),
            file.display()
        ),
    );
    sandbox.check_pipeline(&pipeline).assert_code(0);
    let output = sandbox.initbox().args(["run", "-f"]).arg(&pipeline).run();
    output
        .assert_code(0)
        .assert_stderr_contains("PONG, master")
        .assert_stderr_contains("the step completed");
}

/// The password variables of the protocol checks (REDISCLI_AUTH, PGPASSWORD, …) are read as
/// every variable a task reads: in a pipeline step, the file's `env:` map first, then the
/// process environment.
#[test]
fn a_password_variable_in_the_pipelines_env_map_wins_over_the_process_environment() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = RedisServer::start(&["--requirepass", "map-pw"]);
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "restartPolicy: Never\nenv:\n  REDISCLI_AUTH: map-pw\nsteps:\n  - name: cache\n    \
             wait-for-redis: {{targets: [\"{}\"], timeout: 45s}}\n",
            server.address()
        ),
    );
    let output = sandbox
        .initbox()
        .env("REDISCLI_AUTH", "process-pw")
        .args(["run", "-f"])
        .arg(&pipeline)
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains(": PONG")
        .assert_stderr_contains("the step completed");
    assert!(!output.stderr.contains("map-pw"), "{}", output.stderr);
}

#[test]
fn stable_for_waits_past_a_server_that_restarts_after_its_first_pong() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let mut server = RedisServer::start(&[]);
    let running = waiter(&sandbox, &server.address(), &["--stable-for", "10s"]).spawn();
    running.wait_for_stderr("confirming it stays ready for 10s (--stable-for)", SEEN);
    // An image's init scripts stop their temporary server before the real one starts.
    server.stop();
    running.wait_for_stderr(", then not: ", SEEN);
    assert!(server.launch(false), "the port was taken meanwhile");
    let output = running.wait();
    output.assert_code(0).assert_stderr_contains(": PONG");
    assert_eq!(
        output.stderr.matches("confirming it stays ready").count(),
        2,
        "{}",
        output.stderr
    );
}

#[test]
fn a_replica_without_its_master_answering_masterdown_is_not_ready() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let dead_master = free_port("127.0.0.1").to_string();
    let replica = RedisServer::start(&[
        "--replicaof",
        "127.0.0.1",
        &dead_master,
        "--replica-serve-stale-data",
        "no",
    ]);
    let output = waiter(&sandbox, &replica.address(), &["--timeout", "1s"]).run();
    output
        .assert_code(124)
        .assert_stderr_contains("MASTERDOWN Link with MASTER is down");
    assert!(replica.cli(&["ping"]).starts_with("MASTERDOWN"));
}

#[test]
fn a_password_for_a_server_that_needs_none_is_ready_with_a_warning() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = RedisServer::start(&[]);
    let output = waiter(&sandbox, &server.address(), &[])
        .env("REDISCLI_AUTH", "unneeded-pw")
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("warning:")
        .assert_stderr_contains("the server needs no password")
        .assert_stderr_contains(": PONG");
    assert!(!output.stderr.contains("unneeded-pw"), "{}", output.stderr);
}

#[test]
fn a_server_busy_running_a_script_is_not_ready_until_the_script_ends() {
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = RedisServer::start(&["--busy-reply-threshold", "50"]);
    let port = server.port.to_string();
    let mut script = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port])
        .args(["eval", "while true do end", "0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        crate::support::eventually(SEEN, || server.cli(&["ping"]).starts_with("BUSY")),
        "the script never made the server busy"
    );
    let running = waiter(&sandbox, &server.address(), &[]).spawn();
    running.wait_for_stderr("BUSY Redis is busy running a script", SEEN);
    assert_eq!(server.cli(&["script", "kill"]), "OK");
    let output = running.wait();
    let _ = script.wait();
    output.assert_code(0).assert_stderr_contains(": PONG");
}
