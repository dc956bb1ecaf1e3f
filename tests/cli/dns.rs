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

/// A pod's resolv.conf, with the nameserver replaced by the test's (`--nameserver`).
fn pod_resolv_conf(sandbox: &Sandbox) -> std::path::PathBuf {
    sandbox.write(
        "resolv.conf",
        "search default.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 192.0.2.53\noptions ndots:5\n",
    )
}

/// Text a dependency prints with `{:?}` or its own wording, never meant for users.
#[track_caller]
fn assert_no_library_wording(stderr: &str) {
    for leak in [
        "Err(",
        "Errors)",
        "protocol error",
        "io error",
        "decoding error",
        "Label contains",
    ] {
        assert!(!stderr.contains(leak), "{leak:?} in:\n{stderr}");
    }
}

#[test]
fn names_with_underscores_resolve_through_dns_the_hosts_file_and_the_search_list() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    dns.add_a("my_db.test", "10.0.0.11");
    dns.add_a("my_cache.default.svc.cluster.local", "10.96.0.12");
    sandbox.write(
        "hosts",
        "127.0.0.1 localhost\n::1 localhost\n127.0.0.13 compose_db\n",
    );
    let resolv = pod_resolv_conf(&sandbox);
    let cases = [
        ("my_db.test", "resolved to 10.0.0.11"),
        ("compose_db", "resolved to 127.0.0.13"),
        (
            "my_cache",
            "resolved to 10.96.0.12 (as my_cache.default.svc.cluster.local)",
        ),
    ];
    for (name, expected) in cases {
        let output = sandbox
            .initbox()
            .args(["wait-for-dns", name, "--nameserver", &dns.nameserver()])
            .args(["--timeout", "10s"])
            .env("INITBOX_RESOLV_CONF", &resolv)
            .run();
        output.assert_code(0).assert_stderr_contains(expected);
        assert_no_library_wording(&output.stderr);
    }
    // wait-for-tcp resolves the same way.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    dns.add_a("my_app.default.svc.cluster.local", "127.0.0.1");
    sandbox
        .initbox()
        .args(["wait-for-tcp", &format!("my_app:{port}")])
        .args(["--nameserver", &dns.nameserver(), "--timeout", "10s"])
        .env("INITBOX_RESOLV_CONF", &resolv)
        .run()
        .assert_code(0)
        .assert_stderr_contains(&format!("connected to 127.0.0.1:{port}"));
}

#[test]
fn names_that_cannot_be_dns_names_are_usage_errors_before_any_query() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    let label64 = format!("{}.test", "a".repeat(64));
    let name254 = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(62));
    let cases: [(&str, &str); 4] = [
        (&label64, "a label holds at most 63"),
        (&name254, "a name holds at most 253"),
        ("my..db", "empty label"),
        (".mydb", "empty label"),
    ];
    for (name, why) in cases {
        let commands = [
            vec!["wait-for-dns".to_owned(), name.to_owned()],
            vec!["wait-for-tcp".to_owned(), format!("{name}:5432")],
            vec!["wait-for-grpc".to_owned(), format!("{name}:50051")],
            vec!["ping".to_owned(), name.to_owned()],
        ];
        let covered: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
        crate::support::assert_covers(
            &covered,
            &crate::support::commands_taking(&["NAME", "HOST", "HOST:PORT"]),
            "a name that cannot be a DNS name",
        );
        for command in commands {
            let output = sandbox
                .initbox()
                .args(&command)
                .args(["--nameserver", &dns.nameserver(), "--timeout", "1m"])
                .run();
            output.assert_code(2).assert_stderr_contains(why);
            assert_no_library_wording(&output.stderr);
            assert!(output.elapsed < Duration::from_secs(30), "{command:?}");
        }
    }
    // A port of 0 names nothing to connect to, and a name takes no port at all.
    for (command, why) in [
        (vec!["wait-for-tcp", "mydb:0"], "port 0"),
        (vec!["ping", "mydb:0"], "no port"),
        (vec!["wait-for-dns", "mydb:0"], "is not a DNS name"),
    ] {
        sandbox
            .initbox()
            .args(&command)
            .args(["--nameserver", &dns.nameserver()])
            .run()
            .assert_code(2)
            .assert_stderr_contains(why);
    }
    assert_eq!(dns.queries(), 0, "a usage error asked the nameserver");
}

#[test]
fn a_failure_lists_every_search_candidate_not_only_the_last() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    dns.refuse("mydb");
    let resolv = sandbox.write(
        "resolv.conf",
        "search ns.svc.cluster.local svc.cluster.local\nnameserver 192.0.2.53\noptions ndots:5\n",
    );
    let output = sandbox
        .initbox()
        .args(["wait-for-dns", "mydb", "--nameserver", &dns.nameserver()])
        .args(["--timeout", "300ms"])
        .env("INITBOX_RESOLV_CONF", &resolv)
        .run();
    output.assert_code(124).assert_stderr_contains(&format!(
        "(last error: cannot resolve mydb: mydb.ns.svc.cluster.local NXDOMAIN, \
         mydb.svc.cluster.local NXDOMAIN, mydb REFUSED by {})",
        dns.nameserver()
    ));
}

#[test]
fn verbose_shows_each_candidate_the_nameserver_and_each_answer_without_repeating_them() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    let resolv = pod_resolv_conf(&sandbox);
    let ns = dns.nameserver();
    let wait = |verbose: bool| {
        let mut command = sandbox
            .initbox()
            .args(["wait-for-dns", "mydb", "--nameserver", &ns])
            .args(["--timeout", "600ms"])
            .env("INITBOX_RESOLV_CONF", &resolv);
        if verbose {
            command = command.arg("-v");
        }
        command.run()
    };
    let candidates = [
        "mydb.default.svc.cluster.local",
        "mydb.svc.cluster.local",
        "mydb.cluster.local",
        "mydb",
    ];
    let verbose = wait(true);
    verbose.assert_code(124);
    for candidate in candidates {
        let line = format!("initbox: mydb: asked {ns} for {candidate} (A, AAAA): NXDOMAIN\n");
        // A dozen attempts in 600 ms, all alike: the trace is printed once.
        assert_eq!(
            verbose.stderr.matches(&line).count(),
            1,
            "{line:?} in:\n{}",
            verbose.stderr
        );
    }
    // Without -v: the reason once, the timeout, and nothing per attempt.
    let quiet = wait(false);
    quiet.assert_code(124);
    assert!(!quiet.stderr.contains(" asked "), "{}", quiet.stderr);
    assert_eq!(quiet.stderr.lines().count(), 3, "{}", quiet.stderr);

    // Once the record appears, -v shows the answer that made it ready.
    dns.add_a("mydb.svc.cluster.local", "10.96.0.30");
    let ready = wait(true);
    ready
        .assert_code(0)
        .assert_stderr_contains(&format!(
            "mydb: asked {ns} for mydb.default.svc.cluster.local (A, AAAA): NXDOMAIN"
        ))
        .assert_stderr_contains(&format!(
            "mydb: asked {ns} for mydb.svc.cluster.local (A, AAAA): 10.96.0.30"
        ))
        .assert_stderr_contains("resolved to 10.96.0.30 (as mydb.svc.cluster.local)");
    assert!(
        !ready.stderr.contains("mydb.cluster.local"),
        "{}",
        ready.stderr
    );
}

#[test]
fn the_readme_srv_example_matches_the_fully_qualified_answer() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    dns.add(
        "_postgres._tcp.mydb.default.svc.cluster.local",
        RData::SRV(SRV::new(
            0,
            100,
            5432,
            name("mydb-0.mydb.default.svc.cluster.local"),
        )),
    );
    let resolv = pod_resolv_conf(&sandbox);
    // Literally as the README writes it, inside a pod (its resolv.conf, its nameserver).
    let readme = "initbox wait-for-dns _postgres._tcp.mydb --type SRV --expect mydb-0.mydb:5432";
    let args: Vec<&str> = readme.split_whitespace().skip(1).collect();
    sandbox
        .initbox()
        .args(&args)
        .args(["--nameserver", &dns.nameserver(), "--timeout", "10s"])
        .env("INITBOX_RESOLV_CONF", &resolv)
        .run()
        .assert_code(0)
        .assert_stderr_contains("resolved to mydb-0.mydb.default.svc.cluster.local:5432");
    // The full name, with or without the trailing dot, matches too; a trailing dot means
    // exactly that name, so a short name with one does not.
    for (expected, code) in [
        ("mydb-0.mydb.default.svc.cluster.local:5432", 0),
        ("mydb-0.mydb.default.svc.cluster.local.:5432", 0),
        ("mydb-0.mydb.svc.cluster.local", 124),
        ("mydb-0.mydb.:5432", 124),
        ("mydb-0.mydb:5433", 124),
    ] {
        sandbox
            .initbox()
            .args(["wait-for-dns", "_postgres._tcp.mydb", "--type", "SRV"])
            .args(["--expect", expected, "--nameserver", &dns.nameserver()])
            .args(["--timeout", "300ms"])
            .env("INITBOX_RESOLV_CONF", &resolv)
            .run()
            .assert_code(code);
    }
}

#[test]
fn record_types_are_case_insensitive_everywhere() {
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    dns.add_aaaa("mysvc.test", "fd00::10");
    dns.add(
        "_http._tcp.mysvc.test",
        RData::SRV(SRV::new(0, 0, 8080, name("mysvc.test"))),
    );
    for (target, kind) in [
        ("_http._tcp.mysvc.test", "srv"),
        ("_http._tcp.mysvc.test", "Srv"),
        ("mysvc.test", "aaaa"),
    ] {
        sandbox
            .initbox()
            .args(["wait-for-dns", target, "--type", kind])
            .args(["--nameserver", &dns.nameserver(), "--timeout", "10s"])
            .run()
            .assert_code(0);
        sandbox
            .initbox()
            .args(["wait-for-dns", target])
            .args(["--nameserver", &dns.nameserver(), "--timeout", "10s"])
            .env("INITBOX_TYPE", kind)
            .run()
            .assert_code(0);
    }
}

#[test]
fn library_wording_never_reaches_the_user() {
    let sandbox = Sandbox::new();
    let no_nameserver = sandbox.write("resolv.conf", "search svc.cluster.local\n");
    let output = sandbox
        .initbox()
        .args(["wait-for-dns", "my_db", "--timeout", "1m"])
        .env("INITBOX_RESOLV_CONF", &no_nameserver)
        .run();
    output
        .assert_code(78)
        .assert_stderr_contains("resolv.conf names no nameserver");
    assert_no_library_wording(&output.stderr);
    for bad in ["my!db", "bad,name.test", "my*db"] {
        let output = sandbox.initbox().args(["wait-for-dns", bad]).run();
        output
            .assert_code(2)
            .assert_stderr_contains("cannot be a DNS name");
        assert_no_library_wording(&output.stderr);
    }
}
