//! wait-for-dns against a real DNS server whose records change while initbox waits.

use std::str::FromStr;
use std::time::Duration;

use hickory_proto::rr::rdata::{CNAME, MX, NS, SRV, TXT};
use hickory_proto::rr::{Name, RData};

use crate::support::Sandbox;
use crate::support::dns_server::DnsServer;

fn name(text: &str) -> Name {
    Name::from_str(&format!("{text}.")).unwrap()
}

#[test]
fn a_record_that_appears_later_is_seen_despite_the_earlier_nxdomain() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    let waiter = sandbox
        .initbox()
        .args([
            "wait-for-dns",
            "mysvc.test",
            "--nameserver",
            &dns.nameserver(),
            "--timeout",
            "30s",
        ])
        .spawn();
    waiter.wait_for_stderr("NXDOMAIN", Duration::from_secs(10));
    dns.add_a("mysvc.test", "10.0.0.10");
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("mysvc.test is not ready: cannot resolve mysvc.test: NXDOMAIN")
        .assert_stderr_contains("resolved to 10.0.0.10");
}

#[test]
fn short_kubernetes_names_go_through_the_search_domains() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    dns.add_a("mydb.default.svc.cluster.local", "10.96.0.20");
    // The pod's resolv.conf; --nameserver replaces its nameserver but keeps search/ndots.
    let resolv = sandbox.write(
        "resolv.conf",
        "search default.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 192.0.2.53\noptions ndots:5\n",
    );
    sandbox
        .initbox()
        .args(["wait-for-dns", "mydb", "--nameserver", &dns.nameserver()])
        .env("INITBOX_RESOLV_CONF", &resolv)
        .run()
        .assert_code(0)
        .assert_stderr_contains("mydb is ready")
        .assert_stderr_contains("resolved to 10.96.0.20");
}

#[test]
fn every_record_type_with_expected_values() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    dns.add_a("mysvc.test", "10.0.0.10");
    dns.add_aaaa("mysvc.test", "fd00::10");
    dns.add(
        "_http._tcp.mysvc.test",
        RData::SRV(SRV::new(0, 0, 8080, name("mysvc.test"))),
    );
    dns.add("cfg.test", RData::TXT(TXT::new(vec!["k=v".to_owned()])));
    dns.add("alias.test", RData::CNAME(CNAME(name("mysvc.test"))));
    dns.add("mail.test", RData::MX(MX::new(10, name("mx.mail.test"))));
    dns.add("zone.test", RData::NS(NS(name("ns1.zone.test"))));
    let cases: [(&str, &str, &str); 7] = [
        ("mysvc.test", "A", "10.0.0.10"),
        ("mysvc.test", "aaaa", "fd00:0::10"),
        ("_http._tcp.mysvc.test", "SRV", "mysvc.test:8080"),
        ("cfg.test", "TXT", "k=v"),
        ("alias.test", "CNAME", "mysvc.test"),
        ("mail.test", "MX", "mx.mail.test"),
        ("zone.test", "NS", "ns1.zone.test."),
    ];
    for (target, kind, expected) in cases {
        sandbox
            .initbox()
            .args([
                "wait-for-dns",
                target,
                "--type",
                kind,
                "--expect",
                expected,
                "--nameserver",
                &dns.nameserver(),
                "--timeout",
                "10s",
            ])
            .run()
            .assert_code(0)
            .assert_stderr_contains(&format!("{target} is ready"));
    }
    // Default: any address, both families.
    sandbox
        .initbox()
        .args([
            "wait-for-dns",
            "mysvc.test",
            "--nameserver",
            &dns.nameserver(),
        ])
        .args(["--expect", "10.0.0.10", "--expect", "fd00::10"])
        .run()
        .assert_code(0);
}

#[test]
fn a_missing_expected_value_times_out_naming_it() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    dns.add_a("mysvc.test", "10.0.0.10");
    sandbox
        .initbox()
        .args(["wait-for-dns", "mysvc.test", "--expect", "10.0.0.99"])
        .args(["--nameserver", &dns.nameserver(), "--timeout", "300ms"])
        .run()
        .assert_code(124)
        .assert_stderr_contains(
            "timed out after 300ms waiting for mysvc.test (last error: answer [10.0.0.10] lacks 10.0.0.99)",
        );
}

#[test]
fn servfail_is_a_reason_to_wait_not_to_fail() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    dns.add_a("mysvc.test", "10.0.0.10");
    dns.set_servfail(true);
    let waiter = sandbox
        .initbox()
        .args([
            "wait-for-dns",
            "mysvc.test",
            "--nameserver",
            &dns.nameserver(),
        ])
        .spawn();
    waiter.wait_for_stderr("SERVFAIL", Duration::from_secs(10));
    dns.set_servfail(false);
    waiter.wait().assert_code(0);
}

#[test]
fn a_record_that_goes_away_with_invert() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    dns.add_a("old.test", "10.0.0.1");
    let waiter = sandbox
        .initbox()
        .args([
            "wait-for-dns",
            "old.test",
            "--invert",
            "--nameserver",
            &dns.nameserver(),
        ])
        .spawn();
    waiter.wait_for_stderr("still ready", Duration::from_secs(10));
    dns.remove("old.test");
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("no longer ready");
}

#[test]
fn the_hosts_file_answers_without_a_nameserver() {
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .args(["wait-for-dns", "localhost"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("resolved to 127.0.0.1, ::1");
}

#[test]
fn no_resolv_conf_and_no_nameserver_is_a_clear_configuration_error() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args(["wait-for-dns", "mydb", "--timeout", "1m"])
        .run();
    output
        .assert_code(78)
        .assert_stderr_contains("no nameserver to ask")
        .assert_stderr_contains("no-resolv.conf: no such file or directory")
        .assert_stderr_contains("--nameserver");
    assert!(
        output.elapsed < Duration::from_secs(30),
        "fatal must not wait"
    );
}

#[test]
fn an_unanswering_nameserver_is_retried_with_the_reason_shown() {
    let sandbox = Sandbox::new();
    // A UDP socket that never answers.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    sandbox
        .initbox()
        .args([
            "wait-for-dns",
            "mysvc.test",
            "--nameserver",
            &addr.to_string(),
        ])
        .args(["--attempt-timeout", "300ms", "--timeout", "1s"])
        .run()
        .assert_code(124)
        .assert_stderr_contains("timed out after 1s waiting for mysvc.test");
}

#[test]
fn the_hosts_file_answers_first_without_waiting_for_a_nameserver() {
    let sandbox = Sandbox::new();
    // Only an IPv4 line, and a nameserver that never answers: the hosts file decides.
    sandbox.write(
        "hosts",
        "127.0.0.1 localhost\n::1 localhost\n127.0.0.9 db.internal\n",
    );
    let (silent, _held) = crate::support::http_server::silent_server();
    let output = sandbox
        .initbox()
        .args(["wait-for-dns", "db.internal", "--timeout", "20s"])
        .args(["--nameserver", &format!("127.0.0.1:{silent}")])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("resolved to 127.0.0.9");
    assert!(
        output.elapsed < Duration::from_secs(15),
        "{:?}",
        output.elapsed
    );
    // Every command resolves the same way.
    let listener = std::net::TcpListener::bind("127.0.0.9:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    sandbox
        .initbox()
        .args([
            "wait-for-tcp",
            &format!("db.internal:{port}"),
            "--timeout",
            "20s",
        ])
        .args(["--nameserver", &format!("127.0.0.1:{silent}")])
        .run()
        .assert_code(0)
        .assert_stderr_contains("connected to 127.0.0.9");
}
