//! Probes must not leak: after hundreds of attempts the process holds as many descriptors
//! as after the first few.

use std::thread;
use std::time::Duration;

use crate::support::dns_server::DnsServer;
use crate::support::http_server::{HttpServer, reply};
use crate::support::{Running, Sandbox, free_port, need_root, open_fds};

/// Samples the open descriptors after ~1 s and after ~4 s of fast (50 ms) attempts.
fn fds_stay_flat(running: Running) {
    running.wait_for_stderr("is not ready", Duration::from_secs(10));
    thread::sleep(Duration::from_millis(1000));
    let early = open_fds(running.pid());
    thread::sleep(Duration::from_millis(3000));
    let late = open_fds(running.pid());
    assert!(early > 0, "could not read the descriptors");
    // About 60 attempts ran in between: a leak of one per attempt would show plainly.
    // A socket of an attempt in flight at the moment of sampling is allowed.
    assert!(late <= early + 3, "descriptors grew from {early} to {late}");
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn tcp_probes_do_not_leak_sockets() {
    let sandbox = Sandbox::new();
    let port = free_port("127.0.0.1");
    fds_stay_flat(
        sandbox
            .initbox()
            .args([
                "wait-for-tcp",
                &format!("127.0.0.1:{port}"),
                &format!("localhost:{port}"),
            ])
            .spawn(),
    );
}

#[test]
fn dns_probes_do_not_leak_sockets() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    fds_stay_flat(
        sandbox
            .initbox()
            .args([
                "wait-for-dns",
                "missing.test",
                "--nameserver",
                &dns.nameserver(),
            ])
            .spawn(),
    );
    assert!(dns.queries() > 20, "only {} queries", dns.queries());
}

#[test]
fn http_probes_do_not_leak_sockets() {
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(503, "not yet")]);
    fds_stay_flat(
        sandbox
            .initbox()
            .args(["wait-for-http", &server.url("/")])
            .spawn(),
    );
    assert!(server.requests().len() > 20);
}

#[test]
fn ping_probes_do_not_leak_sockets() {
    if !need_root("ping_probes_do_not_leak_sockets") {
        return;
    }
    // A namespace with only loopback: every echo fails at once (network unreachable), so
    // attempts come every 50 ms; the ICMP socket is opened once, not per attempt.
    let sandbox = Sandbox::new();
    fds_stay_flat(
        sandbox
            .initbox()
            .args(["ping", "192.0.2.1", "2001:db8::1"])
            .wrapped_in(&[
                "unshare",
                "--net",
                "sh",
                "-c",
                "ip link set lo up && exec \"$@\"",
                "sh",
            ])
            .spawn(),
    );
}
