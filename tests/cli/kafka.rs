//! wait-for-kafka against a real Kafka 4 broker (KRaft, broker and controller in one node)
//! on loopback: ApiVersions then Metadata with a controller is ready; a port that is not
//! a Kafka broker listener is not, with a reason that says what answered.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

use crate::support::http_server::{HttpServer, reply};
use crate::support::kafka_server::{self, KafkaServer, PASSWORD, USER};
use crate::support::{Sandbox, counting_listener, free_port};

#[test]
fn waits_for_a_broker_that_starts_after_the_waiter_and_names_the_controller() {
    let sandbox = Sandbox::new();
    let Some(mut server) = KafkaServer::later() else {
        return;
    };
    let running = sandbox
        .initbox()
        .args(["wait-for-kafka", &server.address(), "--timeout", "3m"])
        .spawn();
    running.wait_for_stderr("connection refused", Duration::from_secs(30));
    server.restart();
    running
        .wait()
        .assert_code(0)
        .assert_stderr_contains("is ready after")
        .assert_stderr_contains("1 broker, controller 1, cluster ");
}

#[test]
fn min_brokers_two_against_one_broker_times_out_naming_1_of_2() {
    let sandbox = Sandbox::new();
    let Some(kafka_server::Listeners {
        plaintext: broker, ..
    }) = kafka_server::shared()
    else {
        return;
    };
    sandbox
        .initbox()
        .args(["wait-for-kafka", &broker, "--min-brokers", "2"])
        .args(["--timeout", "2s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("last error: 1 of 2 brokers (controller 1)");
}

#[test]
fn a_bootstrap_list_checks_every_broker_named() {
    let sandbox = Sandbox::new();
    let Some(kafka_server::Listeners {
        plaintext: broker, ..
    }) = kafka_server::shared()
    else {
        return;
    };
    let missing = format!("127.0.0.1:{}", free_port("127.0.0.1"));
    // The form `--bootstrap-server ${KAFKA_SERVICE}` takes: one comma-separated argument.
    sandbox
        .initbox()
        .args(["wait-for-kafka", &format!("{broker},{missing}")])
        .args(["--timeout", "2s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains(&format!("{broker} is ready"))
        .assert_stderr_contains(&format!(
            "waiting for {missing} (last error: connection refused"
        ));
}

#[test]
fn a_controller_listener_ends_the_wait_at_once_naming_the_broker_listener() {
    let sandbox = Sandbox::new();
    let Some(kafka_server::Listeners { controller, .. }) = kafka_server::shared() else {
        return;
    };
    sandbox
        .initbox()
        .args(["wait-for-kafka", &controller, "--timeout", "1m"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("without the Metadata API: a KRaft controller listener?");
}

#[test]
fn an_http_server_is_not_ready_and_the_reason_says_it_answered_in_http() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(200, "ok")]);
    sandbox
        .initbox()
        .args(["wait-for-kafka", &format!("127.0.0.1:{}", server.port)])
        .args(["--timeout", "2s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("the server answered ApiVersions in HTTP (is this a Kafka port?)");
}

#[test]
fn a_listener_that_closes_at_once_is_not_ready_and_says_so() {
    let sandbox = Sandbox::new();
    let listener = counting_listener("127.0.0.1");
    sandbox
        .initbox()
        .args(["wait-for-kafka", &format!("127.0.0.1:{}", listener.port)])
        .args(["--timeout", "2s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("closed the connection without answering ApiVersions");
    assert!(*listener.accepted.lock().unwrap() > 0);
}

/// The attack: a peer on the Kafka port announces an answer of almost 2 GiB. The probe must
/// refuse it from the length prefix alone (no buffer of that size), and keep waiting.
#[test]
fn a_server_announcing_a_huge_answer_is_refused_before_any_allocation() {
    let sandbox = Sandbox::new();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut size = [0u8; 4];
            if stream.read_exact(&mut size).is_ok() {
                let mut request = vec![0u8; u32::from_be_bytes(size).min(4096) as usize];
                let _ = stream.read_exact(&mut request);
                let _ = stream.write_all(&0x7FFF_FFF0u32.to_be_bytes());
                let _ = stream.write_all(&request[4..8.min(request.len())]);
            }
        }
    });
    sandbox
        .initbox()
        .args(["wait-for-kafka", &format!("127.0.0.1:{port}")])
        .args(["--timeout", "2s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains(
            "announced an answer to ApiVersions of 2147483632 bytes, over the 1 MiB limit",
        );
}

#[test]
fn tls_with_the_brokers_ca_is_ready_and_says_tls() {
    let sandbox = Sandbox::new();
    let Some(listeners) = kafka_server::shared() else {
        return;
    };
    sandbox
        .initbox()
        .args(["wait-for-kafka", &listeners.ssl, "--tls", "--cacert"])
        .arg(&listeners.ca)
        .args(["--timeout", "1m"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("1 broker, controller 1, cluster ")
        .assert_stderr_contains("(Metadata v12, TLS)");
}

#[test]
fn tls_to_a_certificate_of_an_unknown_ca_ends_at_once_with_exit_1() {
    let sandbox = Sandbox::new();
    let Some(listeners) = kafka_server::shared() else {
        return;
    };
    sandbox
        .initbox()
        .args(["wait-for-kafka", &listeners.ssl, "--tls", "--timeout", "1m"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("certificate");
}

#[test]
fn an_ssl_listener_without_tls_is_not_ready_and_says_to_add_tls() {
    let sandbox = Sandbox::new();
    let Some(listeners) = kafka_server::shared() else {
        return;
    };
    sandbox
        .initbox()
        .args(["wait-for-kafka", &listeners.ssl, "--timeout", "2s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("answered ApiVersions with TLS: an SSL listener? Add --tls");
}

#[test]
fn a_sasl_login_is_ready_and_names_the_user_and_mechanism() {
    let sandbox = Sandbox::new();
    let Some(listeners) = kafka_server::shared() else {
        return;
    };
    let password = sandbox.write("password", PASSWORD);
    let scram = sandbox
        .initbox()
        .args(["wait-for-kafka", &listeners.sasl, "--user", USER])
        .arg("--password-file")
        .arg(&password)
        .args(["--timeout", "1m"])
        .run();
    scram
        .assert_code(0)
        .assert_stderr_contains("(Metadata v12, user app via SCRAM-SHA-512)");
    // PLAIN, with the password from the environment and the user from the URL.
    let plain = sandbox
        .initbox()
        .args([
            "wait-for-kafka",
            &format!("kafka://{USER}@{}", listeners.sasl),
        ])
        .args(["--sasl-mechanism", "plain", "--timeout", "1m"])
        .env("KAFKA_PASSWORD", PASSWORD)
        .run();
    plain
        .assert_code(0)
        .assert_stderr_contains("user app via PLAIN");
    for output in [&scram, &plain] {
        assert!(!output.stderr.contains(PASSWORD) && !output.stdout.contains(PASSWORD));
    }
}

#[test]
fn a_scram_login_over_tls_to_a_sasl_ssl_listener_is_ready() {
    let sandbox = Sandbox::new();
    let Some(listeners) = kafka_server::shared() else {
        return;
    };
    let password = sandbox.write("password", PASSWORD);
    sandbox
        .initbox()
        .args(["wait-for-kafka", &listeners.sasl_ssl, "--tls", "--cacert"])
        .arg(&listeners.ca)
        .args(["--user", USER, "--password-file"])
        .arg(&password)
        .args(["--timeout", "1m"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("(Metadata v12, TLS, user app via SCRAM-SHA-512)");
}

#[test]
fn a_wrong_password_ends_at_once_with_exit_1_and_shows_no_password() {
    let sandbox = Sandbox::new();
    let Some(listeners) = kafka_server::shared() else {
        return;
    };
    let wrong = "wrong-kafka-pw-8812";
    let password = sandbox.write("password", wrong);
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let output = sandbox
            .initbox()
            .args(["wait-for-kafka", &listeners.sasl, "--user", USER])
            .arg("--password-file")
            .arg(&password)
            .args(["--sasl-mechanism", mechanism, "--timeout", "1m", "-v"])
            .run();
        output
            .assert_code(1)
            .assert_stderr_contains(&format!(
                "the broker refused the login as app via {mechanism}"
            ))
            .assert_stderr_contains("SASL_AUTHENTICATION_FAILED");
        for secret in [wrong, PASSWORD] {
            assert!(
                !output.stderr.contains(secret) && !output.stdout.contains(secret),
                "{output:?}"
            );
        }
    }
}

#[test]
fn a_sasl_listener_without_a_login_is_not_ready_and_says_it_may_need_one() {
    let sandbox = Sandbox::new();
    let Some(listeners) = kafka_server::shared() else {
        return;
    };
    sandbox
        .initbox()
        .args(["wait-for-kafka", &listeners.sasl, "--timeout", "2s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains(
            "closed the connection instead of answering Metadata (does this listener require SASL?",
        );
}

#[test]
fn a_login_at_a_listener_without_sasl_ends_at_once() {
    let sandbox = Sandbox::new();
    let Some(listeners) = kafka_server::shared() else {
        return;
    };
    sandbox
        .initbox()
        .args(["wait-for-kafka", &listeners.plaintext, "--user", USER])
        .args(["--timeout", "1m"])
        .env("KAFKA_PASSWORD", PASSWORD)
        .run()
        .assert_code(1)
        .assert_stderr_contains("the listener takes no SASL login");
}

#[test]
fn a_mechanism_the_listener_does_not_enable_ends_at_once_naming_those_it_does() {
    let sandbox = Sandbox::new();
    let Some(listeners) = kafka_server::shared() else {
        return;
    };
    sandbox
        .initbox()
        .args(["wait-for-kafka", &listeners.sasl, "--user", USER])
        .args(["--sasl-mechanism", "SCRAM-SHA-256", "--timeout", "1m"])
        .env("KAFKA_PASSWORD", PASSWORD)
        .run()
        .assert_code(1)
        .assert_stderr_contains(
            "does not enable SASL SCRAM-SHA-256 (it enables SCRAM-SHA-512, PLAIN): pass \
             --sasl-mechanism SCRAM-SHA-512",
        );
}

#[test]
fn sigterm_while_waiting_exits_143() {
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    let running = sandbox
        .initbox()
        .args(["wait-for-kafka", &format!("127.0.0.1:{port}")])
        .args(["--timeout", "1m"])
        .spawn();
    running.wait_for_stderr("connection refused", Duration::from_secs(30));
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn a_pipeline_step_waits_for_kafka() {
    let sandbox = Sandbox::new();
    let Some(kafka_server::Listeners {
        plaintext: broker, ..
    }) = kafka_server::shared()
    else {
        return;
    };
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: kafka\n    wait-for-kafka: {{brokers: [\"{broker}\"], \
             min-brokers: 1, timeout: 1m}}\n"
        ),
    );
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0)
        .assert_stderr_contains("1 broker, controller 1")
        .assert_stderr_contains("[Completed]");
}

#[test]
fn many_attempts_against_too_few_brokers_leave_no_descriptor_open() {
    let sandbox = Sandbox::new();
    let Some(kafka_server::Listeners {
        plaintext: broker, ..
    }) = kafka_server::shared()
    else {
        return;
    };
    let running = sandbox
        .initbox()
        .args(["wait-for-kafka", &broker, "--min-brokers", "3"])
        .args(["--timeout", "0"])
        .spawn();
    running.wait_for_stderr("1 of 3 brokers", Duration::from_secs(30));
    let first = crate::support::open_fds(running.pid());
    // The fast phase makes an attempt every 50 ms: the first progress line comes after
    // about 10 s and a couple of hundred complete ApiVersions + Metadata exchanges.
    running.wait_for_stderr("still waiting for", Duration::from_secs(60));
    let later = crate::support::open_fds(running.pid());
    let progress = running.stderr_so_far();
    let attempts: usize = progress
        .split("still waiting for")
        .nth(1)
        .and_then(|line| line.split(" attempts)").next())
        .and_then(|head| head.rsplit('(').next())
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or_else(|| panic!("no attempt count in: {progress}"));
    assert!(attempts >= 50, "only {attempts} attempts: {progress}");
    assert!(
        later <= first + 2,
        "descriptors grew from {first} to {later} over {attempts} attempts"
    );
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn stable_for_is_not_fooled_by_a_broker_that_restarts() {
    let sandbox = Sandbox::new();
    let Some(mut server) = KafkaServer::start() else {
        return;
    };
    let waiter = sandbox
        .initbox()
        .args(["wait-for-kafka", &server.address()])
        .args(["--stable-for", "10s", "--timeout", "3m"])
        .spawn();
    waiter.wait_for_stderr("confirming it stays ready for 10s", Duration::from_secs(60));
    server.stop();
    waiter.wait_for_stderr("then not:", Duration::from_secs(60));
    server.restart();
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

#[test]
fn the_kubernetes_example_is_a_valid_command_line() {
    crate::support::assert_example_args_parse("wait-for-kafka.yaml", "wait-for-kafka");
}
