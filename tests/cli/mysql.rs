//! wait-for-mysql against real MariaDB 10.11 servers on loopback: started after the waiter
//! and silent while their init file runs, full (error 1040 before the greeting), with a
//! login that works or not, a database created while waiting, and TLS; compared with
//! `mariadb-admin ping` in the same states. Each test starts its own server: a shared one
//! would outlive the test binary (nothing drops a static).

use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use crate::support::TlsFiles;
use crate::support::mysql_server::{self, MariaDb, PASSWORD, USER};
use crate::support::{Sandbox, free_port, path_str};

const SEEN: Duration = Duration::from_secs(60);

fn waiter(sandbox: &Sandbox, target: &str, extra: &[&str]) -> crate::support::Cmd {
    let timeout: &[&str] = if extra.contains(&"--timeout") {
        &[]
    } else {
        &["--timeout", "90s"]
    };
    sandbox
        .initbox()
        .args(["wait-for-mysql", target])
        .args(timeout)
        .args(extra)
}

fn login(server: &MariaDb) -> String {
    format!("mysql://{USER}@{}", server.address())
}

#[test]
fn a_server_started_after_the_waiter_and_silent_in_its_init_file_is_ready_once_it_greets() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let mut server = MariaDb::new(free_port("127.0.0.1"), &[]);
    // The init file runs after the port opens and before any greeting: connections are
    // accepted and left silent while it sleeps.
    let init = server.dir.path().join("init.sql");
    let mut sql = std::fs::read_to_string(&init).unwrap();
    sql.push_str("SELECT SLEEP(3);\n");
    std::fs::write(&init, sql).unwrap();
    let running = waiter(&sandbox, &server.address(), &["--attempt-timeout", "300ms"]).spawn();
    running.wait_for_stderr("connection refused", SEEN);
    assert!(server.launch(), "the port was taken meanwhile");
    let output = running.wait();
    output
        .assert_code(0)
        .assert_stderr_contains("no answer within 300ms")
        .assert_stderr_contains("accepting connections (MariaDB 10.11");
    // mariadb-admin ping agrees: alive (access denied counts as alive for it too).
    assert_eq!(server.admin_ping(&[]), 0);
}

#[test]
fn too_many_connections_before_the_greeting_is_not_ready_until_a_slot_frees() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    // 10 connections and the one extra kept for administrators, each held past its greeting.
    let server = MariaDb::start(&["--max-connections=10", "--connect-timeout=300"]);
    let mut held = Vec::new();
    for _ in 0..11 {
        let mut stream = TcpStream::connect(server.address()).unwrap();
        let mut first = [0u8; 5];
        stream.read_exact(&mut first).unwrap();
        assert_eq!(first[4], 10, "a greeting for each held connection");
        held.push(stream);
    }
    let running = waiter(&sandbox, &server.address(), &[]).spawn();
    running.wait_for_stderr("Too many connections (error 1040)", SEEN);
    // The vendor loop also keeps waiting here.
    assert_ne!(server.admin_ping(&[]), 0);
    drop(held);
    running
        .wait()
        .assert_code(0)
        .assert_stderr_contains("accepting connections (MariaDB");
}

#[test]
fn a_login_with_the_right_password_runs_select_1_and_a_wrong_one_is_fatal_unechoed() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = MariaDb::start(&[]);
    let file = sandbox.write("pw", &format!("{PASSWORD}\n"));
    waiter(
        &sandbox,
        &login(&server),
        &["--password-file", path_str(&file)],
    )
    .run()
    .assert_code(0)
    .assert_stderr_contains("logged in as app and ran SELECT 1 (MariaDB 10.11");
    waiter(&sandbox, &server.address(), &["--user", USER])
        .env("MYSQL_PWD", PASSWORD)
        .run()
        .assert_code(0)
        .assert_stderr_contains("logged in as app");
    let secret = "Wr0ng-Secret-42";
    let wrong = sandbox.write("wrong", secret);
    for output in [
        waiter(
            &sandbox,
            &login(&server),
            &["--password-file", path_str(&wrong), "-v"],
        )
        .run(),
        waiter(&sandbox, &login(&server), &[])
            .env("MYSQL_PWD", secret)
            .run(),
    ] {
        output
            .assert_code(1)
            .assert_stderr_contains("Access denied for user 'app'@'127.0.0.1'")
            .assert_stderr_contains("error 1045");
        assert!(
            !output.stderr.contains(secret) && !output.stdout.contains(secret),
            "{output:?}"
        );
    }
    // mariadb-admin ping calls a wrong password alive; a login check must not.
    assert_eq!(server.admin_ping(&["-uapp", &format!("-p{secret}")]), 0);
    // This server has no certificate: TLS required is refused at once.
    waiter(&sandbox, &login(&server), &["--tls", "require"])
        .env("MYSQL_PWD", PASSWORD)
        .run()
        .assert_code(1)
        .assert_stderr_contains("does not offer TLS");
}

#[test]
fn a_database_created_while_waiting_is_waited_for() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = MariaDb::start(&[]);
    let running = waiter(&sandbox, &format!("{}/appdb", login(&server)), &[])
        .env("MYSQL_PWD", PASSWORD)
        .spawn();
    running.wait_for_stderr("Unknown database 'appdb' (error 1049)", SEEN);
    server.sql("CREATE DATABASE appdb");
    running
        .wait()
        .assert_code(0)
        .assert_stderr_contains("logged in as app, database appdb and ran SELECT 1");
}

#[test]
fn tls_required_logs_in_over_tls_with_the_ca_and_an_unknown_ca_is_fatal() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let files = TlsFiles::new(&sandbox.path(""));
    let server = MariaDb::start(&[
        &format!("--ssl-ca={}", path_str(&files.ca)),
        &format!("--ssl-cert={}", path_str(&files.cert)),
        &format!("--ssl-key={}", path_str(&files.key)),
    ]);
    let ca = path_str(&files.ca);
    waiter(
        &sandbox,
        &login(&server),
        &["--tls", "require", "--cacert", ca],
    )
    .env("MYSQL_PWD", PASSWORD)
    .run()
    .assert_code(0)
    .assert_stderr_contains("ran SELECT 1 (MariaDB 10.11.")
    .assert_stderr_contains(", TLS)");
    // The server really saw TLS: its account can be made to demand it.
    server.sql("ALTER USER 'app'@'127.0.0.1' REQUIRE SSL");
    waiter(
        &sandbox,
        &login(&server),
        &["--tls", "require", "--cacert", ca],
    )
    .env("MYSQL_PWD", PASSWORD)
    .run()
    .assert_code(0);
    waiter(&sandbox, &login(&server), &["--tls", "require"])
        .env("MYSQL_PWD", PASSWORD)
        .run()
        .assert_code(1)
        .assert_stderr_contains("certificate");
    // The greeting alone over TLS (no login), with the right CA.
    waiter(
        &sandbox,
        &server.address(),
        &["--tls", "require", "--cacert", ca],
    )
    .run()
    .assert_code(0)
    .assert_stderr_contains("accepting connections");
}

#[test]
fn a_user_without_a_password_or_a_password_in_the_url_is_refused_before_waiting() {
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args(["wait-for-mysql", "127.0.0.1:1", "--user", "app"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("a user needs a password");
    let file = sandbox.write("pw", "pw");
    sandbox
        .initbox()
        .args(["wait-for-mysql", "127.0.0.1:1", "--password-file"])
        .arg(&file)
        .run()
        .assert_code(2)
        .assert_stderr_contains("a password was given without a user");
    let output = sandbox
        .initbox()
        .args(["wait-for-mysql", "mysql://app:s3cret-pw@127.0.0.1:1/db"])
        .run();
    output
        .assert_code(2)
        .assert_stderr_contains("--password-file");
    assert!(!output.stderr.contains("s3cret-pw"), "{}", output.stderr);
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
fn a_pipeline_step_waits_for_mysql() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = MariaDb::start(&[]);
    let file = sandbox.write("pw", PASSWORD);
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: db\n    wait-for-mysql: {{targets: [\"{}\"], user: {USER}, password-file: \"{}\", database: mysql}}\n",
            server.address(),
            file.display()
        ),
    );
    sandbox.check_pipeline(&pipeline).assert_code(0);
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0)
        .assert_stderr_contains("logged in as app, database mysql and ran SELECT 1")
        .assert_stderr_contains("the step completed");
}

#[test]
fn stable_for_waits_past_the_temporary_server_of_an_init_that_restarts() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let mut server = MariaDb::start(&[]);
    let running = waiter(&sandbox, &login(&server), &["--stable-for", "10s"])
        .env("MYSQL_PWD", PASSWORD)
        .spawn();
    running.wait_for_stderr("confirming it stays ready for 10s (--stable-for)", SEEN);
    server.stop();
    running.wait_for_stderr(", then not: ", SEEN);
    assert!(server.launch(), "the port was taken meanwhile");
    let output = running.wait();
    output
        .assert_code(0)
        .assert_stderr_contains("logged in as app and ran SELECT 1");
    assert_eq!(
        output.stderr.matches("confirming it stays ready").count(),
        2,
        "{}",
        output.stderr
    );
}

#[test]
fn mysql_pwd_without_a_user_is_not_used_and_the_check_is_the_anonymous_one() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = MariaDb::start(&[]);
    waiter(&sandbox, &server.address(), &[])
        .env("MYSQL_PWD", "app-environment-pw")
        .run()
        .assert_code(0)
        .assert_stderr_contains("accepting connections (MariaDB");
}

#[test]
fn a_host_without_an_account_yet_is_not_ready_until_one_is_created_as_mysqladmin_says() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = MariaDb::start(&[]);
    // With --skip-name-resolve no account matches 127.0.0.1 now: error 1130 comes instead
    // of the greeting.
    server.sql("DROP USER 'app'@'127.0.0.1'");
    let running = waiter(&sandbox, &server.address(), &[]).spawn();
    running.wait_for_stderr(
        "is not allowed to connect to this MariaDB server (error 1130)",
        SEEN,
    );
    assert_ne!(server.admin_ping(&[]), 0);
    server.sql("CREATE USER 'app'@'127.0.0.1' IDENTIFIED BY 'app-pw'");
    running
        .wait()
        .assert_code(0)
        .assert_stderr_contains("accepting connections (MariaDB");
    assert_eq!(server.admin_ping(&[]), 0);
}

#[test]
fn an_account_on_a_plugin_not_spoken_is_exit_1_naming_it() {
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    let server = MariaDb::start(&[]);
    server.sql(
        "INSTALL SONAME 'auth_ed25519'; \
         CREATE USER 'ed'@'127.0.0.1' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw')",
    );
    let output = waiter(&sandbox, &format!("mysql://ed@{}", server.address()), &[])
        .env("MYSQL_PWD", "ed-pw")
        .run();
    output
        .assert_code(1)
        .assert_stderr_contains("the authentication plugin 'client_ed25519'");
    assert!(!output.stderr.contains("ed-pw"), "{}", output.stderr);
}
