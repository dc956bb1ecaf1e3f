//! wait-for-postgres against a real PostgreSQL 15 started by the test: a server that comes
//! later, the states it refuses connections in (57P03 starting up, 53300 too many
//! clients), real SCRAM and MD5 logins, TLS right and wrong, and pg_isready as the
//! reference for what "accepting connections" means.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::postgres_server::{BIN, PgServer};
use crate::support::{Cmd, Sandbox, eventually, free_port};

const SCRAM_PASSWORD: &str = "scram-Pw-4417";
const MD5_PASSWORD: &str = "md5-Pw-9025";
const TLS_PASSWORD: &str = "tls-Pw-6650";

/// The server the read-only tests share: TLS on, a SCRAM role, an MD5 role, a role that
/// may only come over TLS, and a database `appdb`.
struct Shared {
    server: PgServer,
    ca: String,
}

fn shared() -> Option<&'static Shared> {
    static SHARED: OnceLock<Option<Shared>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            let mut server = PgServer::new()?;
            let ca = server.enable_tls();
            server.start();
            server.create_role("app_scram", SCRAM_PASSWORD, false);
            server.create_role("app_md5", MD5_PASSWORD, true);
            server.create_role("app_tls", TLS_PASSWORD, false);
            server.sql("CREATE DATABASE appdb OWNER app_scram");
            server.hba(
                "local all all trust\n\
                 hostssl all app_tls 127.0.0.1/32 scram-sha-256\n\
                 host all app_tls 127.0.0.1/32 reject\n\
                 host all app_md5 127.0.0.1/32 md5\n\
                 host all app_clear 127.0.0.1/32 password\n\
                 host all all 127.0.0.1/32 scram-sha-256\n",
            );
            Some(Shared { server, ca })
        })
        .as_ref()
}

/// A server without TLS that trusts every TCP client: the pg_isready-style tests.
fn plain() -> Option<&'static PgServer> {
    static PLAIN: OnceLock<Option<PgServer>> = OnceLock::new();
    PLAIN
        .get_or_init(|| {
            let mut server = PgServer::new()?;
            server.start();
            server.hba("local all all trust\nhost all all 127.0.0.1/32 trust\n");
            Some(server)
        })
        .as_ref()
}

/// initbox wait-for-postgres with none of the machine's PG* variables.
fn wait_for(sandbox: &Sandbox, args: &[&str]) -> Cmd {
    let mut cmd = sandbox.initbox().arg("wait-for-postgres").args(args);
    for key in ["PGUSER", "PGPASSWORD", "PGDATABASE", "PGSSLMODE"] {
        cmd.command.env_remove(key);
    }
    cmd
}

/// pg_isready's exit code for a server (0 accepting, 1 rejecting, 2 no response).
fn pg_isready(port: u16) -> i32 {
    Command::new(format!("{BIN}/pg_isready"))
        .args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "postgres",
        ])
        .env_clear()
        .status()
        .unwrap()
        .code()
        .unwrap()
}

fn assert_no_secret(output: &crate::support::Output, secret: &str) {
    assert!(!output.stderr.contains(secret), "{}", output.stderr);
    assert!(!output.stdout.contains(secret), "{}", output.stdout);
}

#[test]
fn a_server_that_starts_after_the_waiter_is_seen() {
    let Some(mut server) = PgServer::new() else {
        return;
    };
    let sandbox = Sandbox::new();
    let waiter = wait_for(&sandbox, &[&server.address(), "--timeout", "60s"]).spawn();
    waiter.wait_for_stderr("connection refused", Duration::from_secs(20));
    server.spawn();
    let output = waiter.wait();
    output
        .assert_code(0)
        .assert_stderr_contains("is not ready: connection refused")
        .assert_stderr_contains(&format!("{} is ready", server.address()))
        .assert_stderr_contains("accepting connections (asks for SCRAM-SHA-256 authentication)");
    // The probe stopped at the password question: the server logged no failed login.
    let log = server.log();
    assert!(!log.contains("authentication failed"), "{log}");
    assert!(!log.contains("does not exist"), "{log}");
}

#[test]
fn starting_up_57p03_is_not_ready_until_recovery_ends() {
    let Some(mut server) = PgServer::new() else {
        return;
    };
    // The startup process runs restore_command before the server leaves its "starting up"
    // state; this one blocks until the test says go.
    let go = server.dir().join("go");
    server.write_data_file("recovery.signal", "", 0o600);
    server.set(&format!(
        "restore_command=while [ ! -e {} ]; do sleep 0.05; done; false",
        go.display()
    ));
    server.spawn();
    let sandbox = Sandbox::new();
    let waiter = wait_for(&sandbox, &[&server.address(), "--timeout", "60s"]).spawn();
    waiter.wait_for_stderr(
        "the database system is starting up (SQLSTATE 57P03)",
        Duration::from_secs(30),
    );
    assert_eq!(pg_isready(server.port), 1, "pg_isready: rejecting");
    fs::write(&go, "").unwrap();
    let output = waiter.wait();
    output.assert_code(0).assert_stderr_contains("is ready");
    assert_eq!(pg_isready(server.port), 0, "pg_isready: accepting");
}

#[test]
fn too_many_clients_53300_is_not_ready_until_a_slot_frees() {
    let Some(mut server) = PgServer::new() else {
        return;
    };
    server
        .set("max_connections=2")
        .set("superuser_reserved_connections=0")
        .set("log_connections=on")
        // A holder the test kills frees its slot at once, not when pg_sleep ends.
        .set("client_connection_check_interval=50ms");
    server.start();
    let mut holders: Vec<Child> = (0..2)
        .map(|_| {
            server
                .psql("SELECT pg_sleep(120)")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Watched in the log, not by connecting: a probe would take a holder's slot.
    assert!(
        eventually(Duration::from_secs(20), || {
            server.log().matches("connection authorized").count() == 2
        }),
        "the holders never filled the server:\n{}",
        server.log()
    );
    // pg_isready counts a full server as accepting; initbox does not.
    assert_eq!(pg_isready(server.port), 0);
    let sandbox = Sandbox::new();
    let waiter = wait_for(&sandbox, &[&server.address(), "--timeout", "60s"]).spawn();
    waiter.wait_for_stderr(
        "sorry, too many clients already (SQLSTATE 53300)",
        Duration::from_secs(30),
    );
    let mut freed = holders.remove(0);
    freed.kill().unwrap();
    freed.wait().unwrap();
    let output = waiter.wait();
    for mut holder in holders {
        let _ = holder.kill();
        let _ = holder.wait();
    }
    output.assert_code(0).assert_stderr_contains("is ready");
}

#[test]
fn pg_isready_and_initbox_agree_on_each_state_of_a_server() {
    let Some(mut server) = PgServer::new() else {
        return;
    };
    let sandbox = Sandbox::new();
    let initbox = |server: &PgServer| {
        wait_for(&sandbox, &[&server.address(), "--timeout", "300ms"])
            .run()
            .code
    };
    // Nothing listening.
    assert_eq!((pg_isready(server.port), initbox(&server)), (2, 124));
    // A standby without hot_standby never accepts: 57P03 "not accepting connections".
    server.write_data_file("standby.signal", "", 0o600);
    server.set("hot_standby=off");
    server.spawn();
    assert!(eventually(Duration::from_secs(20), || pg_isready(
        server.port
    ) == 1));
    let output = wait_for(&sandbox, &[&server.address(), "--timeout", "300ms"]).run();
    output.assert_code(124).assert_stderr_contains(
        "not accepting connections (Hot standby mode is disabled) (SQLSTATE 57P03)",
    );
    server.stop();
    fs::remove_file(server.data().join("standby.signal")).unwrap();
    // Serving; and an unknown role under trust (FATAL, but the server is up): both ready.
    server.start();
    assert_eq!((pg_isready(server.port), initbox(&server)), (0, 0));
    server.hba("local all all trust\nhost all all 127.0.0.1/32 trust\n");
    let unknown = format!("postgres://127.0.0.1:{}/postgres", server.port);
    let no_role = Command::new(format!("{BIN}/pg_isready"))
        .args([
            "-q",
            "-h",
            "127.0.0.1",
            "-p",
            &server.port.to_string(),
            "-U",
            "nobody_here",
        ])
        .status()
        .unwrap()
        .code();
    assert_eq!(no_role, Some(0));
    wait_for(&sandbox, &[&unknown, "--timeout", "300ms"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("accepting connections (PostgreSQL 15.");
}

#[test]
fn a_scram_login_runs_select_1() {
    let Some(shared) = shared() else { return };
    let sandbox = Sandbox::new();
    let password = sandbox.write("pw", &format!("{SCRAM_PASSWORD}\n"));
    let output = wait_for(
        &sandbox,
        &[
            &shared.server.address(),
            "--user",
            "app_scram",
            "--database",
            "appdb",
            "--password-file",
            password.to_str().unwrap(),
            "--tls",
            "disable",
        ],
    )
    .run();
    output.assert_code(0).assert_stderr_contains(
        "logged in as app_scram to appdb with SCRAM-SHA-256 (PostgreSQL 15.",
    );
    assert_no_secret(&output, SCRAM_PASSWORD);
}

#[test]
fn an_md5_login_runs_select_1_with_the_user_and_database_from_the_url() {
    let Some(shared) = shared() else { return };
    let sandbox = Sandbox::new();
    let url = format!(
        "postgresql://app_md5@127.0.0.1:{}/appdb",
        shared.server.port
    );
    let output = wait_for(&sandbox, &[&url, "--tls", "disable"])
        .env("PGPASSWORD", MD5_PASSWORD)
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("logged in as app_md5 to appdb with MD5");
    assert_no_secret(&output, MD5_PASSWORD);
}

#[test]
fn pguser_pgdatabase_and_pgpassword_are_honoured() {
    let Some(shared) = shared() else { return };
    let sandbox = Sandbox::new();
    wait_for(&sandbox, &[&shared.server.address()])
        .env("PGUSER", "app_scram")
        .env("PGDATABASE", "appdb")
        .env("PGPASSWORD", SCRAM_PASSWORD)
        .run()
        .assert_code(0)
        .assert_stderr_contains("logged in as app_scram to appdb");
    // initbox's own variables come before libpq's.
    wait_for(&sandbox, &[&shared.server.address()])
        .env("PGUSER", "nobody")
        .env("INITBOX_USER", "app_md5")
        .env("INITBOX_DATABASE", "appdb")
        .env("PGPASSWORD", MD5_PASSWORD)
        .run()
        .assert_code(0)
        .assert_stderr_contains("logged in as app_md5 to appdb");
    let Some(plain) = plain() else { return };
    wait_for(&sandbox, &[&plain.address(), "--timeout", "60s"])
        .env("PGSSLMODE", "require")
        .run()
        .assert_code(1)
        .assert_stderr_contains("--tls require requires it");
}

#[test]
fn a_wrong_password_fails_at_once_with_exit_1_and_is_shown_nowhere() {
    let Some(shared) = shared() else { return };
    let sandbox = Sandbox::new();
    let wrong = "Wrong-Pw-31337";
    let file = sandbox.write("pw", wrong);
    for via_env in [false, true] {
        let mut cmd = wait_for(
            &sandbox,
            &[
                &shared.server.address(),
                "--user",
                "app_scram",
                "--database",
                "appdb",
            ],
        );
        cmd = if via_env {
            cmd.env("PGPASSWORD", wrong)
        } else {
            cmd.args(["--password-file", file.to_str().unwrap()])
        };
        let output = cmd.args(["--timeout", "60s"]).run();
        output.assert_code(1).assert_stderr_contains(
            "password authentication failed for user \"app_scram\" (SQLSTATE 28P01)",
        );
        assert!(output.elapsed < Duration::from_secs(30), "not at once");
        assert_no_secret(&output, wrong);
    }
}

#[test]
fn a_server_message_that_echoes_the_password_shows_it_concealed() {
    let Some(shared) = shared() else { return };
    let sandbox = Sandbox::new();
    // The database named like the password: the server's "does not exist" repeats it.
    let output = wait_for(
        &sandbox,
        &[
            &shared.server.address(),
            "--user",
            "app_scram",
            "--database",
            SCRAM_PASSWORD,
            "--timeout",
            "300ms",
        ],
    )
    .env("PGPASSWORD", SCRAM_PASSWORD)
    .run();
    output
        .assert_code(124)
        .assert_stderr_contains("(SQLSTATE 3D000)");
    assert_no_secret(&output, SCRAM_PASSWORD);
}

#[test]
fn a_missing_database_is_waited_for_until_it_is_created() {
    let Some(shared) = shared() else { return };
    let sandbox = Sandbox::new();
    let waiter = wait_for(
        &sandbox,
        &[
            &shared.server.address(),
            "--user",
            "app_scram",
            "--database",
            "later_db",
            "--timeout",
            "60s",
        ],
    )
    .env("PGPASSWORD", SCRAM_PASSWORD)
    .spawn();
    waiter.wait_for_stderr(
        "database \"later_db\" does not exist (SQLSTATE 3D000)",
        Duration::from_secs(30),
    );
    shared.server.sql("CREATE DATABASE later_db");
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("logged in as app_scram to later_db");
}

#[test]
fn a_missing_role_is_waited_for_until_it_is_created() {
    let Some(mut server) = PgServer::new() else {
        return;
    };
    server.start();
    // Under password authentication a missing role looks like a wrong password (on purpose,
    // against user enumeration); trust authentication says which it is.
    server.hba("local all all trust\nhost all all 127.0.0.1/32 trust\n");
    let sandbox = Sandbox::new();
    let waiter = wait_for(
        &sandbox,
        &[
            &server.address(),
            "--user",
            "late_role",
            "--database",
            "postgres",
            "--timeout",
            "60s",
        ],
    )
    .spawn();
    waiter.wait_for_stderr(
        "role \"late_role\" does not exist (SQLSTATE 28000)",
        Duration::from_secs(30),
    );
    server.sql("CREATE ROLE late_role LOGIN");
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("logged in as late_role to postgres (PostgreSQL 15.");
}

#[test]
fn pg_hba_refusing_the_connection_is_fatal() {
    let Some(shared) = shared() else { return };
    let sandbox = Sandbox::new();
    // app_tls may only come over TLS: in plain text pg_hba.conf rejects it.
    let output = wait_for(
        &sandbox,
        &[
            &shared.server.address(),
            "--user",
            "app_tls",
            "--tls",
            "disable",
            "--timeout",
            "60s",
        ],
    )
    .env("PGPASSWORD", TLS_PASSWORD)
    .run();
    output
        .assert_code(1)
        .assert_stderr_contains("pg_hba.conf rejects connection")
        .assert_stderr_contains("(SQLSTATE 28000)");
    assert!(output.elapsed < Duration::from_secs(30));
}

#[test]
fn verify_full_with_the_servers_ca_logs_in_over_tls() {
    let Some(shared) = shared() else { return };
    let sandbox = Sandbox::new();
    let ca = sandbox.write("ca.pem", &shared.ca);
    let url = format!(
        "postgres://app_tls@localhost:{}/appdb?sslmode=verify-full",
        shared.server.port
    );
    let hosts = "127.0.0.1 localhost\n";
    sandbox.write("hosts", hosts);
    let output = wait_for(&sandbox, &[&url, "--cacert", ca.to_str().unwrap()])
        .env("PGPASSWORD", TLS_PASSWORD)
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("logged in as app_tls to appdb with SCRAM-SHA-256");
    // The server saw TLS: app_tls is rejected in plain text.
    assert_no_secret(&output, TLS_PASSWORD);
}

#[test]
fn verify_full_with_another_ca_is_fatal() {
    let Some(shared) = shared() else { return };
    let Some(mut other) = PgServer::new() else {
        return;
    };
    let other_ca = other.enable_tls();
    let sandbox = Sandbox::new();
    let ca = sandbox.write("other-ca.pem", &other_ca);
    let output = wait_for(
        &sandbox,
        &[
            &shared.server.address(),
            "--tls",
            "verify-full",
            "--cacert",
            ca.to_str().unwrap(),
            "--timeout",
            "60s",
        ],
    )
    .run();
    output.assert_code(1).assert_stderr_contains("certificate");
    assert!(output.elapsed < Duration::from_secs(30));
}

#[test]
fn require_accepts_any_certificate_but_insists_on_tls() {
    let Some(shared) = shared() else { return };
    let Some(plain) = plain() else { return };
    let sandbox = Sandbox::new();
    // The shared server's certificate is from a CA nobody trusts: require does not check.
    wait_for(
        &sandbox,
        &[
            &shared.server.address(),
            "--user",
            "app_tls",
            "--database",
            "appdb",
            "--tls",
            "require",
        ],
    )
    .env("PGPASSWORD", TLS_PASSWORD)
    .run()
    .assert_code(0)
    .assert_stderr_contains("logged in as app_tls");
    let output = wait_for(
        &sandbox,
        &[&plain.address(), "--tls", "require", "--timeout", "60s"],
    )
    .run();
    output
        .assert_code(1)
        .assert_stderr_contains("the server does not offer TLS, and --tls require requires it");
    assert!(output.elapsed < Duration::from_secs(30));
}

#[test]
fn prefer_goes_on_in_plain_text_with_a_server_without_tls() {
    let Some(plain) = plain() else { return };
    let sandbox = Sandbox::new();
    wait_for(&sandbox, &[&plain.address()])
        .run()
        .assert_code(0)
        .assert_stderr_contains("accepting connections (PostgreSQL 15.");
}

#[test]
fn a_clear_text_password_is_sent_only_over_tls() {
    let Some(shared) = shared() else { return };
    shared.server.sql(
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app_clear') THEN \
         CREATE ROLE app_clear LOGIN PASSWORD 'clear-Pw-1'; END IF; END $$",
    );
    let sandbox = Sandbox::new();
    let run = |mode: &str| {
        wait_for(
            &sandbox,
            &[
                &shared.server.address(),
                "--user",
                "app_clear",
                "--database",
                "appdb",
                "--tls",
                mode,
            ],
        )
        .env("PGPASSWORD", "clear-Pw-1")
        .run()
    };
    run("disable")
        .assert_code(1)
        .assert_stderr_contains("refusing to send it");
    run("require")
        .assert_code(0)
        .assert_stderr_contains("with a clear-text password");
}

#[test]
fn sigterm_while_waiting_exits_143() {
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    let waiter = wait_for(
        &sandbox,
        &[&format!("127.0.0.1:{port}"), "--timeout", "60s"],
    )
    .spawn();
    waiter.wait_for_stderr("is not ready", Duration::from_secs(20));
    waiter.signal("TERM");
    let output = waiter.wait();
    output.assert_code(143);
}

#[test]
fn a_pipeline_step_waits_for_postgres() {
    let Some(plain) = plain() else { return };
    let sandbox = Sandbox::new();
    let file = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: db\n    wait-for-postgres: {{targets: [\"{}\"], tls: disable, timeout: 30s}}\n",
            plain.address()
        ),
    );
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&file)
        .run()
        .assert_code(0)
        .assert_stderr_contains("accepting connections");
}

#[test]
fn url_parameters_other_than_sslmode_are_refused() {
    let sandbox = Sandbox::new();
    sandbox.expect_each(
        2,
        &[
            (
                vec!["wait-for-postgres", "postgres://db/x?connect_timeout=3"],
                "the URL parameter 'connect_timeout' is not understood",
            ),
            (
                vec!["wait-for-postgres", "postgres://db/x?sslmode=verify-ca"],
                "TLS mode 'verify-ca' is not supported",
            ),
            (
                vec![
                    "wait-for-postgres",
                    "db",
                    "--tls",
                    "verify-full",
                    "--insecure",
                ],
                "--insecure contradicts --tls verify-full",
            ),
        ],
    );
}

#[test]
fn stable_for_is_ready_only_after_the_server_stayed_up_across_a_restart() {
    let Some(mut server) = PgServer::new() else {
        return;
    };
    server.start();
    let sandbox = Sandbox::new();
    let waiter = wait_for(
        &sandbox,
        &[&server.address(), "--stable-for", "3s", "--timeout", "2m"],
    )
    .spawn();
    waiter.wait_for_stderr(
        "confirming it stays ready for 3s (--stable-for)",
        Duration::from_secs(30),
    );
    // A server restarted by its entrypoint once the init scripts have run.
    server.stop();
    // "then not: the database system is shutting down (SQLSTATE 57P03)" or "connection
    // refused", depending on when the attempt came.
    waiter.wait_for_stderr("then not: ", Duration::from_secs(30));
    server.start();
    let output = waiter.wait();
    output
        .assert_code(0)
        .assert_stderr_contains("is ready after");
    assert_eq!(
        output.stderr.matches("confirming it stays ready").count(),
        2,
        "{}",
        output.stderr
    );
}
