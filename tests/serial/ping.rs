//! ping against real ICMP: loopback as root (raw sockets), an unprivileged user with and
//! without `net.ipv4.ping_group_range` (datagram sockets), and a host that appears later on
//! the far side of a veth pair between two network namespaces the test creates.

use std::process::Command;
use std::thread;
use std::time::Duration;

use crate::support::{Output, Sandbox, need_root};

/// Generous: the machine may be busy, and a failure must still be quicker than the timeout.
const QUICKLY: Duration = Duration::from_secs(10);

fn reply_lines(output: &Output) -> usize {
    output
        .stdout
        .lines()
        .filter(|l| l.contains(" bytes from "))
        .count()
}

#[track_caller]
fn assert_summary(output: &Output, host: &str, sent: u32) {
    let expected = [
        format!("--- {host} ping statistics ---"),
        format!("{sent} packets transmitted, {sent} received, 0% packet loss"),
        "rtt min/avg/max = ".to_owned(),
    ];
    for line in expected {
        assert!(
            output.stdout.contains(&line),
            "no {line:?} in:\n{}",
            output.stdout
        );
    }
}

#[test]
fn count_mode_prints_a_line_per_reply_and_a_summary() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    // As busybox scripts write it: the flag after the host.
    let output = sandbox
        .initbox()
        .args(["ping", "127.0.0.1", "-c", "3"])
        .run();
    output.assert_code(0);
    assert_eq!(reply_lines(&output), 3, "{}", output.stdout);
    assert!(
        output
            .stdout
            .contains("64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time="),
        "{}",
        output.stdout
    );
    assert!(
        output
            .stdout
            .starts_with("PING 127.0.0.1 (127.0.0.1): 56 data bytes\n")
    );
    assert_summary(&output, "127.0.0.1", 3);
}

#[test]
fn count_mode_over_ipv6() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args(["ping", "-c", "3", "--interval", "200ms", "::1"])
        .run();
    output.assert_code(0);
    assert_eq!(reply_lines(&output), 3, "{}", output.stdout);
    assert!(
        output
            .stdout
            .contains("64 bytes from ::1: icmp_seq=3 time=")
    );
    assert_summary(&output, "::1", 3);
}

#[test]
fn wait_mode_is_ready_on_the_first_reply() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args(["ping", "127.0.0.1", "--", "echo", "handed over"])
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("waiting for 127.0.0.1 (icmp, timeout 5m)")
        .assert_stderr_contains("127.0.0.1 is ready after")
        .assert_stderr_contains("(1 attempt): reply from 127.0.0.1 in ");
    assert!(output.elapsed < QUICKLY, "took {:?}", output.elapsed);
    assert_eq!(output.stdout, "handed over\n");
}

#[test]
fn a_name_is_resolved_and_its_first_address_pinged() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    // The sandbox's hosts file lists localhost as 127.0.0.1, then ::1.
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args(["ping", "localhost", "--interval", "200ms"])
        .env("INITBOX_COUNT", "2")
        .run();
    output
        .assert_code(0)
        .assert_stderr_contains("pinging localhost at 127.0.0.1 (first of 127.0.0.1, ::1)");
    assert!(
        output
            .stdout
            .starts_with("PING localhost (127.0.0.1): 56 data bytes\n")
    );
    assert_eq!(reply_lines(&output), 2, "{}", output.stdout);
    assert_summary(&output, "localhost", 2);

    sandbox
        .initbox()
        .args(["ping", "localhost", "::1"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("reply from 127.0.0.1 (first of 127.0.0.1, ::1) in ")
        .assert_stderr_contains("all 2 targets ready");
}

#[test]
fn the_same_address_twice_is_pinged_twice() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    // Replies are matched by address and sequence: the hosts must not steal each other's.
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args(["ping", "-c", "2", "--interval", "100ms"])
        .args(["127.0.0.1", "127.0.0.1", "localhost"])
        .run();
    output.assert_code(0);
    assert_eq!(reply_lines(&output), 6, "{}", output.stdout);
}

/// initbox as uid/gid 65532 with no capabilities, in a private network namespace whose
/// `ping_group_range` is `range`.
fn unprivileged(sandbox: &Sandbox, range: &str, args: &[&str]) -> Output {
    // uid 65532 must be able to reach and run the binary.
    let (_dir, copy) = crate::support::nonroot_copy();
    // `sh -c SCRIPT sh ORIGINAL ARGS...`: the script drops the original binary's path.
    let script = format!(
        "ip link set lo up && sysctl -qw net.ipv4.ping_group_range='{range}' && shift && \
         exec setpriv --reuid=65532 --regid=65532 --clear-groups --bounding-set=-all \
         --inh-caps=-all {} \"$@\"",
        copy.display()
    );
    sandbox
        .initbox()
        .args(args)
        .wrapped_in(&["unshare", "--net", "sh", "-c", &script, "sh"])
        .run()
}

#[test]
fn an_unprivileged_user_pings_where_ping_group_range_allows_it() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let output = unprivileged(
        &sandbox,
        "0 2147483647",
        &["-v", "ping", "-c", "2", "--interval", "200ms", "127.0.0.1"],
    );
    output
        .assert_code(0)
        .assert_stderr_contains("ICMPv4: using a datagram socket");
    assert_eq!(reply_lines(&output), 2, "{}", output.stdout);
    assert_summary(&output, "127.0.0.1", 2);
}

#[test]
fn neither_socket_allowed_fails_at_once_naming_both_remedies() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    for args in [
        &["ping", "127.0.0.1", "--timeout", "1m"][..],
        &["ping", "-c", "3", "127.0.0.1", "--timeout", "1m"][..],
    ] {
        let output = unprivileged(&sandbox, "1 0", args);
        output
            .assert_code(1)
            .assert_stderr_contains("cannot open an ICMP socket")
            .assert_stderr_contains("sysctl net.ipv4.ping_group_range=\"0 2147483647\"")
            .assert_stderr_contains("securityContext.sysctls")
            .assert_stderr_contains("add the NET_RAW capability");
        assert!(output.elapsed < QUICKLY, "took {:?}", output.elapsed);
        assert_eq!(output.stdout, "", "nothing was pinged");
    }
}

/// Two network namespaces joined by a veth pair: initbox runs in `near`, the host it pings
/// gets its address in `far`. Names and subnet derive from the test process and a tag, so
/// parallel tests and runs do not meet; dropping it deletes both namespaces (and the pair).
struct VethPair {
    near: String,
    far: String,
    near_link: String,
    far_link: String,
    /// The third octet of 10.200.N.0/24 and the group of fd00:200:N::/64.
    subnet: u32,
}

impl VethPair {
    fn create(tag: u32) -> Self {
        let pid = std::process::id();
        // Built first, so that a step failing below still cleans up what came before it.
        let pair = VethPair {
            near: format!("initbox-p{pid}-{tag}a"),
            far: format!("initbox-p{pid}-{tag}b"),
            near_link: format!("ibp{pid}{tag}a"),
            far_link: format!("ibp{pid}{tag}b"),
            subnet: (pid * 4 + tag) % 250 + 1,
        };
        let (near, far) = (pair.near.as_str(), pair.far.as_str());
        let (near_link, far_link) = (pair.near_link.as_str(), pair.far_link.as_str());
        run(&["ip", "netns", "add", near]);
        run(&["ip", "netns", "add", far]);
        run(&[
            "ip", "link", "add", near_link, "type", "veth", "peer", "name", far_link,
        ]);
        run(&["ip", "link", "set", near_link, "netns", near]);
        run(&["ip", "link", "set", far_link, "netns", far]);
        for (ns, link, host) in [(near, near_link, 1), (far, far_link, 2)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &pair.v4(host, 24),
                "dev",
                link,
            ]);
            let v6 = pair.v6(host, 64);
            run(&["ip", "-n", ns, "addr", "add", &v6, "dev", link, "nodad"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "link", "set", link, "up"]);
        }
        pair
    }

    fn v4(&self, host: u32, prefix: u32) -> String {
        format!("10.200.{}.{host}/{prefix}", self.subnet)
    }

    fn v6(&self, host: u32, prefix: u32) -> String {
        format!("fd00:200:{}::{host}/{prefix}", self.subnet)
    }

    /// The host appears: `address` (with its prefix) is added in the far namespace.
    fn add_far_address(&self, address: &str) {
        let mut args = vec!["ip", "-n", &self.far, "addr", "add", address];
        args.extend(["dev", &self.far_link]);
        if address.contains(':') {
            args.push("nodad");
        }
        run(&args);
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and with it the pair; the link is
        // deleted by name too in case it never left the test's own namespace.
        let quiet = |args: &[&str]| {
            let _ = Command::new("ip")
                .args(args)
                .stderr(std::process::Stdio::null())
                .status();
        };
        quiet(&["link", "del", &self.near_link]);
        quiet(&["netns", "del", &self.near]);
        quiet(&["netns", "del", &self.far]);
    }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?} failed");
}

fn without_prefix(address: &str) -> &str {
    address.split('/').next().unwrap()
}

/// Waits in the near namespace for `address`, which appears in the far one after ~1 s.
fn a_host_that_appears_later(pair: &VethPair, address: &str) {
    let host = without_prefix(address);
    let sandbox = Sandbox::new();
    let waiter = sandbox
        .initbox()
        .args(["ping", host, "--timeout", "30s"])
        .wrapped_in(&["ip", "netns", "exec", &pair.near])
        .spawn();
    thread::sleep(Duration::from_secs(1));
    pair.add_far_address(address);
    // The first echo may wait in the neighbour queue and get its reply once the address is
    // there, or be lost; either way the reply cannot come before the address exists.
    let output = waiter.wait();
    assert!(output.elapsed >= Duration::from_millis(900), "{output:?}");
    output
        .assert_code(0)
        .assert_stderr_contains(&format!("{host} is ready after"))
        .assert_stderr_contains(&format!("reply from {host} in "));
}

#[test]
fn a_host_that_appears_later_is_seen() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let pair = VethPair::create(0);
    a_host_that_appears_later(&pair, &pair.v4(50, 24));
}

#[test]
fn an_ipv6_host_that_appears_later_is_seen() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let pair = VethPair::create(1);
    a_host_that_appears_later(&pair, &pair.v6(50, 64));
}

#[test]
fn a_host_that_never_answers_times_out_naming_it() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let pair = VethPair::create(2);
    let host = pair.v4(50, 24);
    let host = without_prefix(&host);
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args([
            "ping",
            host,
            "--timeout",
            "2s",
            "--attempt-timeout",
            "500ms",
        ])
        .wrapped_in(&["ip", "netns", "exec", &pair.near])
        .run();
    // The reason is the last one an attempt gave: no reply, or the neighbour's host
    // unreachable (raw sockets see that ICMP error, datagram sockets do not).
    output.assert_code(124).assert_stderr_contains(&format!(
        "timed out after 2s waiting for {host} (last error: "
    ));
    assert!(output.elapsed < QUICKLY, "took {:?}", output.elapsed);

    // --count: every echo lost is a failure (1), with the summary printed first.
    let output = sandbox
        .initbox()
        .args([
            "ping",
            "-c",
            "2",
            "--interval",
            "200ms",
            "--attempt-timeout",
            "500ms",
            host,
        ])
        .wrapped_in(&["ip", "netns", "exec", &pair.near])
        .run();
    output.assert_code(1).assert_stderr_contains(&format!(
        "no reply from {host}: 2 packets transmitted, 0 received"
    ));
    assert!(
        output
            .stdout
            .contains("2 packets transmitted, 0 received, 100% packet loss"),
        "{}",
        output.stdout
    );
    // --timeout bounds --count mode too: 124 when it passes before any reply.
    sandbox
        .initbox()
        .args(["ping", "-c", "100", "--timeout", "1s", host])
        .wrapped_in(&["ip", "netns", "exec", &pair.near])
        .run()
        .assert_code(124)
        .assert_stderr_contains(&format!("timed out after 1s with no reply from {host}"));
}

#[test]
fn count_mode_ends_at_the_timeout_not_at_the_next_echo() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    // Echoes at 0 s and 1 s; the third would go at 2 s, after the deadline. Every host
    // answered before the deadline cut the count short: 0, as busybox `ping -c 5 -w 1.5`.
    let output = sandbox
        .initbox()
        .args(["ping", "127.0.0.1", "-c", "5", "--interval", "1s"])
        .args(["--timeout", "1500ms"])
        .run();
    output.assert_code(0);
    assert!(
        output
            .stdout
            .contains("2 packets transmitted, 2 received, 0% packet loss"),
        "{}",
        output.stdout
    );
    // That it ends within 50 ms of the deadline is asserted in faults.rs, where the
    // startup of the process is measured and taken off.
}
