//! wait-for-zookeeper against a real ZooKeeper 3.8 on loopback: `srvr` with a Mode line is
//! ready, `imok` without quorum is not, a whitelist without `srvr` ends at once.

use std::time::Duration;

use crate::support::Sandbox;
use crate::support::zookeeper_server::{ZkConfig, ZkServer, four_letter_word};

#[test]
fn waits_for_a_server_that_starts_after_the_waiter_and_reports_mode_and_release() {
    let sandbox = Sandbox::new();
    let Some(mut server) = ZkServer::later(ZkConfig::default()) else {
        return;
    };
    let running = sandbox
        .initbox()
        .args(["wait-for-zookeeper", &server.address(), "--timeout", "2m"])
        .spawn();
    running.wait_for_stderr("connection refused", Duration::from_secs(30));
    server.restart();
    running
        .wait()
        .assert_code(0)
        .assert_stderr_contains("is ready after")
        .assert_stderr_contains("serving as standalone (ZooKeeper 3.");
}

#[test]
fn a_member_without_quorum_says_imok_but_is_not_ready() {
    let sandbox = Sandbox::new();
    let Some(server) = ZkServer::start(ZkConfig {
        without_quorum: true,
        ..ZkConfig::default()
    }) else {
        return;
    };
    // What `until echo ruok | nc zk 2181 | grep imok` would have taken for ready.
    assert_eq!(four_letter_word(server.port, "ruok"), "imok");
    sandbox
        .initbox()
        .args(["wait-for-zookeeper", &server.address(), "--timeout", "3s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains(
            "last error: This ZooKeeper instance is not currently serving requests",
        );
}

#[test]
fn srvr_is_answered_even_when_the_whitelist_names_only_ruok() {
    // ZooKeeper always allows srvr (its own zkServer.sh needs it), so a locked-down
    // `4lw.commands.whitelist=ruok` needs no change for initbox. A server that refuses it
    // anyway (a fork) ends the wait with exit 1 naming the setting: see the unit tests.
    let sandbox = Sandbox::new();
    let Some(server) = ZkServer::start(ZkConfig {
        whitelist: "ruok".into(),
        ..ZkConfig::default()
    }) else {
        return;
    };
    assert!(
        four_letter_word(server.port, "mntr").contains("is not in the whitelist"),
        "the whitelist is not in force"
    );
    sandbox
        .initbox()
        .args(["wait-for-zookeeper", &server.address(), "--timeout", "30s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("serving as standalone");
}

#[test]
fn mode_waits_for_the_mode_asked_for() {
    let sandbox = Sandbox::new();
    let Some(server) = ZkServer::start(ZkConfig::default()) else {
        return;
    };
    sandbox
        .initbox()
        .args([
            "wait-for-zookeeper",
            &server.address(),
            "--mode",
            "standalone",
        ])
        .args(["--timeout", "30s"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("serving as standalone");
    sandbox
        .initbox()
        .args(["wait-for-zookeeper", &server.address(), "--mode", "leader"])
        .args(["--timeout", "2s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("serving as standalone, not yet as leader");
}

#[test]
fn sigterm_while_waiting_exits_143() {
    let sandbox = Sandbox::new();
    let Some(server) = ZkServer::later(ZkConfig::default()) else {
        return;
    };
    let running = sandbox
        .initbox()
        .args(["wait-for-zookeeper", &server.address(), "--timeout", "1m"])
        .spawn();
    running.wait_for_stderr("connection refused", Duration::from_secs(30));
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn a_pipeline_step_waits_for_zookeeper() {
    let sandbox = Sandbox::new();
    let Some(server) = ZkServer::start(ZkConfig::default()) else {
        return;
    };
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: zk\n    wait-for-zookeeper: {{servers: [\"{}\"], mode: standalone, \
             timeout: 30s}}\n",
            server.address()
        ),
    );
    sandbox
        .initbox()
        .args(["run", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(0)
        .assert_stderr_contains("serving as standalone")
        .assert_stderr_contains("[Completed]");
}

#[test]
fn many_attempts_against_a_server_not_serving_leave_no_descriptor_open() {
    let sandbox = Sandbox::new();
    let Some(server) = ZkServer::start(ZkConfig {
        without_quorum: true,
        ..ZkConfig::default()
    }) else {
        return;
    };
    let running = sandbox
        .initbox()
        .args(["wait-for-zookeeper", &server.address(), "--timeout", "0"])
        .spawn();
    running.wait_for_stderr("not currently serving", Duration::from_secs(30));
    let first = crate::support::open_fds(running.pid());
    let asked = |server: &ZkServer| server.log().matches("Processing srvr command").count();
    let before = asked(&server);
    // 100 more attempts: about 5 s, the fast phase sends one every 50 ms.
    assert!(crate::support::eventually(Duration::from_secs(30), || {
        asked(&server) >= before + 100
    }));
    let later = crate::support::open_fds(running.pid());
    assert!(
        later <= first + 2,
        "descriptors grew from {first} to {later}"
    );
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn stable_for_is_not_fooled_by_a_server_that_restarts() {
    let sandbox = Sandbox::new();
    let Some(mut server) = ZkServer::start(ZkConfig::default()) else {
        return;
    };
    let waiter = sandbox
        .initbox()
        .args(["wait-for-zookeeper", &server.address()])
        .args(["--stable-for", "10s", "--timeout", "2m"])
        .spawn();
    waiter.wait_for_stderr("confirming it stays ready for 10s", Duration::from_secs(60));
    server.stop();
    waiter.wait_for_stderr("then not:", Duration::from_secs(30));
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
    crate::support::assert_example_args_parse("wait-for-zookeeper.yaml", "wait-for-zookeeper");
}
