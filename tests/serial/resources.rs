//! Resource bounds a long wait must keep: no descriptor growth across 10 000 attempts, private
//! memory under 4 MiB while waiting (the shipped static binary), and HTTP bodies read only
//! up to a cap, however much a server sends. And the bound on the shipped binary itself:
//! 10 MiB.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::dns_server::DnsServer;
use crate::support::http_server::{HttpServer, reply};
use crate::support::mysql_server::{self, MariaDb};
use crate::support::redis_server::{self, RedisServer};
use crate::support::{
    Cmd, Running, Sandbox, counting_listener, eventually, free_port, need_root, open_fds,
    static_binary,
};

const ATTEMPTS: usize = 10_000;
/// 10 000 attempts at one per millisecond take 10–30 s on a busy machine.
const ATTEMPTS_LIMIT: Duration = Duration::from_secs(180);

/// The descriptors a waiting process holds between attempts: the fewest of a few samples
/// a couple of milliseconds apart. One sample may catch an attempt in flight (a socket, a
/// child's pipes, up to the engine's overlapping attempts); a leak stays in every sample.
fn settled_fds(pid: u32) -> usize {
    (0..25)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(2));
            open_fds(pid)
        })
        .min()
        .unwrap_or(0)
}

/// Samples the descriptors after the first 200 attempts and after 10 000, counted by
/// `attempts` (the server's view), then ends the wait.
fn fds_stay_flat(running: Running, attempts: impl Fn() -> usize) {
    fds_stay_flat_over(running, attempts, ATTEMPTS);
}

/// [`fds_stay_flat`] over `total` attempts, for probes whose attempts cost a real server a
/// login (10 000 of them would take minutes).
fn fds_stay_flat_over(running: Running, attempts: impl Fn() -> usize, total: usize) {
    assert!(
        eventually(Duration::from_secs(30), || attempts() >= 200),
        "the first 200 attempts did not happen; stderr:\n{}",
        running.stderr_so_far()
    );
    let early = settled_fds(running.pid());
    assert!(early > 0, "could not read the descriptors");
    assert!(
        eventually(ATTEMPTS_LIMIT, || attempts() >= total),
        "only {} attempts; stderr:\n{}",
        attempts(),
        running.stderr_so_far()
    );
    let late = settled_fds(running.pid());
    // A socket of an attempt in flight at the moment of sampling is allowed.
    assert!(
        late <= early + 3,
        "descriptors grew from {early} to {late} over {} attempts",
        attempts()
    );
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn tcp_probes_do_not_leak_sockets() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    // --invert against an open port: every attempt connects (and the listener counts it).
    let open = counting_listener("127.0.0.1");
    let accepted = open.accepted.clone();
    fds_stay_flat(
        sandbox
            .initbox()
            .args(["-q", "wait-for-tcp", "--invert", "--interval", "1ms"])
            .arg(format!("127.0.0.1:{}", open.port))
            .spawn(),
        move || *accepted.lock().unwrap(),
    );
}

/// A Redis server's count of the connections it accepted.
fn redis_connections(server: &RedisServer) -> usize {
    let info = server.cli(&["info", "stats"]);
    info.lines()
        .find_map(|line| line.strip_prefix("total_connections_received:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn redis_probes_do_not_leak_sockets() {
    let _serial = crate::support::one_at_a_time();
    if !redis_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    // A master asked to be a replica: every attempt connects, PINGs and is told "not yet".
    let server = RedisServer::start(&[]);
    let running = sandbox
        .initbox()
        .args([
            "-q",
            "wait-for-redis",
            &server.address(),
            "--role",
            "replica",
        ])
        .args(["--interval", "1ms"])
        .spawn();
    // Each poll is a redis-cli connection too, seldom enough not to matter.
    fds_stay_flat_over(running, || redis_connections(&server), 3_000);
}

#[test]
fn mysql_probes_do_not_leak_sockets() {
    let _serial = crate::support::one_at_a_time();
    if !mysql_server::available() {
        return;
    }
    let sandbox = Sandbox::new();
    // A database that does not exist: every attempt logs in and is told "not yet".
    let server = MariaDb::start(&[]);
    let running = sandbox
        .initbox()
        .args(["-q", "wait-for-mysql", "--interval", "1ms"])
        .arg(format!(
            "mysql://{}@{}/missing",
            mysql_server::USER,
            server.address()
        ))
        .env("MYSQL_PWD", mysql_server::PASSWORD)
        .spawn();
    let connections = || {
        server
            .sql("SHOW GLOBAL STATUS LIKE 'Connections'")
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    fds_stay_flat_over(running, connections, 2_000);
}

#[test]
fn dns_probes_do_not_leak_sockets() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let dns = DnsServer::start();
    let running = sandbox
        .initbox()
        .args(["-q", "wait-for-dns", "missing.test", "--interval", "1ms"])
        .args(["--nameserver", &dns.nameserver()])
        .spawn();
    // Each attempt asks A and AAAA.
    fds_stay_flat(running, || dns.queries() / 2);
}

#[test]
fn http_probes_do_not_leak_sockets() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let server = HttpServer::start(vec![reply(503, "not yet")]);
    let running = sandbox
        .initbox()
        .args(["-q", "wait-for-http", &server.url("/"), "--interval", "1ms"])
        .spawn();
    fds_stay_flat(running, || server.requests().len());
}

#[test]
fn ping_probes_do_not_leak_sockets() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    // A namespace with only loopback: every echo fails at once (network unreachable), so
    // attempts come every millisecond; the ICMP sockets are opened once, not per attempt.
    // No server sees these attempts: the count is the time they had (1 ms apart at best).
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let running = sandbox
        .initbox()
        .args([
            "-q",
            "ping",
            "192.0.2.1",
            "2001:db8::1",
            "--interval",
            "1ms",
        ])
        .in_network_namespace("")
        .spawn();
    fds_stay_flat(running, move || started.elapsed().as_millis() as usize);
}

/// Peak resident memory of a running process, from /proc.
/// One `/proc/PID/status` field in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// The memory a wait allocates is its anonymous resident set (heap, stacks, buffers).
/// `VmHWM` is no measure of it: it also counts the binary's own code pages, which are
/// shared, reclaimable, bounded by the binary's size, and paged in more or less eagerly
/// depending on the page cache (one machine showed 6 MiB of them, another 7.5).
const PRIVATE_MEMORY_LIMIT_KIB: u64 = 4 * 1024;

/// The most the static binary may weigh: what an init container pulls before anything else
/// starts, on every node.
const STATIC_BINARY_LIMIT_BYTES: u64 = 10 * 1024 * 1024;

#[test]
fn the_static_binary_stays_within_10_mib() {
    let Some(binary) = static_binary() else {
        return;
    };
    let size = std::fs::metadata(&binary).unwrap().len();
    assert!(
        size <= STATIC_BINARY_LIMIT_BYTES,
        "{} is {size} bytes, over the limit of {STATIC_BINARY_LIMIT_BYTES}",
        binary.display()
    );
}

/// images/build.sh links the shipped binary without position independence: a static-pie
/// binary writes its relocated pointer tables at every start (images/README.md says why
/// start-up pays for that). The ELF header's type says which it is: `ET_EXEC` (2), not
/// `ET_DYN` (3).
#[test]
fn the_static_binary_is_not_position_independent() {
    let Some(binary) = static_binary() else {
        return;
    };
    let header = std::fs::read(&binary).unwrap();
    assert_eq!(
        &header[..4],
        b"\x7fELF",
        "{} is not an ELF file",
        binary.display()
    );
    let e_type = u16::from_le_bytes([header[16], header[17]]);
    assert_eq!(
        e_type,
        2,
        "{} has ELF type {e_type}, not ET_EXEC (2): built position-independent \
         (PIE=yes images/build.sh?)",
        binary.display()
    );
}

#[test]
fn waiting_allocates_under_4_mib() {
    let _serial = crate::support::one_at_a_time();
    let Some(binary) = static_binary() else {
        return;
    };
    let sandbox = Sandbox::new();
    let closed = free_port("127.0.0.1");
    let dns = DnsServer::start();
    let http = HttpServer::start(vec![reply(503, "not yet")]);
    let endless = endless_server(200);
    let waits: Vec<(&str, Cmd)> = vec![
        (
            "wait-for-tcp",
            sandbox
                .initbox_at(&binary)
                .args(["wait-for-tcp", &format!("127.0.0.1:{closed}")]),
        ),
        (
            "wait-for-dns",
            sandbox.initbox_at(&binary).args([
                "wait-for-dns",
                "missing.test",
                "--nameserver",
                &dns.nameserver(),
            ]),
        ),
        (
            "wait-for-http",
            sandbox
                .initbox_at(&binary)
                .args(["wait-for-http", &http.url("/")]),
        ),
        (
            "wait-for-http, endless body",
            sandbox.initbox_at(&binary).args([
                "wait-for-http",
                &format!("http://127.0.0.1:{}/", endless.port),
                "--body-regex",
                "never-there",
            ]),
        ),
    ];
    for (what, command) in waits {
        let running = command.args(["--interval", "1ms"]).spawn();
        let sampling_ends = Instant::now() + Duration::from_secs(3);
        let mut peak = 0;
        while Instant::now() < sampling_ends {
            peak = peak.max(status_kib(running.pid(), "RssAnon"));
            thread::sleep(Duration::from_millis(10));
        }
        let binary_size_kib = std::fs::metadata(&binary).unwrap().len() / 1024;
        let high_water = status_kib(running.pid(), "VmHWM");
        running.signal("TERM");
        running.wait().assert_code(143);
        assert!(
            peak <= PRIVATE_MEMORY_LIMIT_KIB,
            "{what}: {peak} KiB of private memory while waiting, above {PRIVATE_MEMORY_LIMIT_KIB}"
        );
        assert!(
            high_water <= binary_size_kib + PRIVATE_MEMORY_LIMIT_KIB,
            "{what}: peak resident set {high_water} KiB, above the binary ({binary_size_kib} KiB) \
             plus {PRIVATE_MEMORY_LIMIT_KIB} KiB"
        );
    }
}

/// A server that answers every request with `status` and a body that never ends (no
/// Content-Length, 64 KiB writes until the client goes away). Counts the bytes it sent.
struct EndlessServer {
    port: u16,
    sent: Arc<AtomicUsize>,
}

fn endless_server(status: u16) -> EndlessServer {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            let counter = counter.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                    line.clear();
                }
                let head =
                    format!("HTTP/1.1 {status} Whatever\r\nContent-Type: text/plain\r\n\r\n");
                if stream.write_all(head.as_bytes()).is_err() {
                    return;
                }
                let chunk = vec![b'z'; 64 * 1024];
                while stream.write_all(&chunk).is_ok() {
                    counter.fetch_add(chunk.len(), Ordering::Relaxed);
                }
            });
        }
    });
    EndlessServer { port, sent }
}

#[test]
fn http_bodies_are_read_only_up_to_a_cap() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    // A 200 whose body never ends and never matches: each attempt reads at most 1 MiB,
    // then gives up on that body, so the wait still ends at --timeout.
    let endless = endless_server(200);
    let url = format!("http://127.0.0.1:{}/", endless.port);
    let output = sandbox
        .initbox()
        .args(["wait-for-http", &url, "--body-regex", "never-there"])
        .args(["--timeout", "3s", "--interval", "500ms"])
        .run();
    output
        .assert_code(124)
        .assert_stderr_contains("the body does not match");
    assert!(
        output.elapsed < Duration::from_secs(30),
        "{:?}",
        output.elapsed
    );
    // A 500 whose body never ends: register and fetch show a short excerpt and retry, and
    // neither reads the endless error body.
    let failing = endless_server(500);
    let url = format!("http://127.0.0.1:{}/", failing.port);
    for args in [
        vec!["register", url.as_str(), "--form", "a=b"],
        vec!["fetch", url.as_str(), "-o", "-"],
    ] {
        let before = failing.sent.load(Ordering::Relaxed);
        let output = sandbox
            .initbox()
            .args(&args)
            .args(["--timeout", "2s", "--interval", "500ms"])
            .run();
        output
            .assert_code(124)
            .assert_stderr_contains("HTTP 500 Internal Server Error: zzzz");
        assert!(
            output.elapsed < Duration::from_secs(30),
            "{:?}",
            output.elapsed
        );
        assert!(output.stdout.is_empty(), "an error body reached stdout");
        // What the server managed to push (into socket buffers, mostly) stays far below
        // what it would have sent to a client reading it all during those seconds.
        let pushed = failing.sent.load(Ordering::Relaxed) - before;
        assert!(
            pushed < 64 * 1024 * 1024,
            "{args:?}: the server pushed {pushed} bytes"
        );
    }
}

#[test]
fn nats_probes_with_a_login_do_not_leak_sockets() {
    use crate::support::nats_server::{NatsConfig, NatsServer};
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    let Some(server) = NatsServer::start(NatsConfig {
        user: Some(("app".into(), "nats-leak-pw".into())),
        debug: true,
        ..NatsConfig::default()
    }) else {
        return;
    };
    let password = sandbox.write("password", "nats-leak-pw");
    // --invert against a real server that accepts the login: every attempt is the whole
    // exchange (INFO, CONNECT, PING, +OK, PONG), and the server logs each connection.
    fds_stay_flat(
        sandbox
            .initbox()
            .args(["-q", "wait-for-nats", "--invert", "--interval", "1ms"])
            .args([&server.address(), "--user", "app", "--timeout", "0"])
            .arg("--password-file")
            .arg(&password)
            .spawn(),
        || server.log().matches("Client connection created").count(),
    );
}

/// wait-for-postgres against a standby that answers every connection with 57P03: each
/// attempt is a full exchange (connect, StartupMessage, ErrorResponse, close). 2 000, not
/// 10 000: every answer costs the server a fork, about 10 ms each here under load, and the
/// fds are sampled after the first 200 as for the other probes.
#[test]
fn postgres_probes_do_not_leak_sockets() {
    let _serial = crate::support::one_at_a_time();
    let Some(mut server) = crate::support::postgres_server::PgServer::new() else {
        return;
    };
    server.write_data_file("standby.signal", "", 0o600);
    server.set("hot_standby=off").set("log_connections=on");
    server.spawn();
    let sandbox = Sandbox::new();
    let running = sandbox
        .initbox()
        .args([
            "-q",
            "wait-for-postgres",
            "--tls",
            "disable",
            "--interval",
            "1ms",
        ])
        .args(["--timeout", "0", &server.address()])
        .spawn();
    let attempts = || server.log().matches("connection received").count();
    assert!(
        eventually(Duration::from_secs(30), || attempts() >= 200),
        "the first 200 attempts did not happen; stderr:\n{}",
        running.stderr_so_far()
    );
    let early = settled_fds(running.pid());
    assert!(early > 0, "could not read the descriptors");
    assert!(
        eventually(ATTEMPTS_LIMIT, || attempts() >= 2_000),
        "only {} attempts",
        attempts()
    );
    let late = settled_fds(running.pid());
    assert!(late <= early + 3, "descriptors grew from {early} to {late}");
    running.signal("TERM");
    running.wait().assert_code(143);
}

/// The attempts made so far, as the last "still waiting … (N attempts)" line says.
fn attempts_reported(stderr: &str) -> usize {
    stderr
        .lines()
        .rev()
        .filter(|line| line.contains("still waiting"))
        .find_map(|line| {
            let open = line.rfind(" (")?;
            line[open + 2..].split(' ').next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// Descriptors (and, for commands, children) sampled at the first and the second progress
/// line (10 s and 20 s into the wait, every attempt back to back in between): for checks
/// whose attempts are too slow for 10 000 in a test's time (an HTTP/2 exchange with a
/// Python server, a process started per attempt), thousands within 30 s.
fn fds_flat_across_progress_lines(running: Running, what: &str) {
    running.wait_for_stderr("still waiting", Duration::from_secs(30));
    let early = settled_fds(running.pid());
    let early_attempts = attempts_reported(&running.stderr_so_far());
    assert!(
        eventually(Duration::from_secs(30), || {
            attempts_reported(&running.stderr_so_far()) > early_attempts
        }),
        "no second progress line; stderr:\n{}",
        running.stderr_so_far()
    );
    let late = settled_fds(running.pid());
    let late_attempts = attempts_reported(&running.stderr_so_far());
    assert!(
        late_attempts >= early_attempts + 500,
        "{what}: only {} attempts between the samples",
        late_attempts - early_attempts
    );
    assert!(
        late <= early + 3,
        "{what}: descriptors grew from {early} to {late} over {} attempts",
        late_attempts - early_attempts
    );
    assert!(
        crate::support::children(running.pid()).len() <= 1,
        "{what}: children left: {:?}",
        crate::support::children(running.pid())
    );
    running.signal("TERM");
    running.wait().assert_code(143);
}

#[test]
fn grpc_probes_do_not_leak_connections() {
    use crate::support::grpc_server::{GrpcOptions, GrpcServer};
    let _serial = crate::support::one_at_a_time();
    let Some(server) = GrpcServer::start(GrpcOptions {
        app_not_serving: true,
        ..GrpcOptions::default()
    }) else {
        return;
    };
    let sandbox = Sandbox::new();
    fds_flat_across_progress_lines(
        sandbox
            .initbox()
            .args(["wait-for-grpc", &server.address(), "--service", "app"])
            .args(["--interval", "1ms"])
            .spawn(),
        "wait-for-grpc",
    );
}

#[test]
fn command_probes_leave_no_descriptor_or_process_behind() {
    let _serial = crate::support::one_at_a_time();
    let sandbox = Sandbox::new();
    fds_flat_across_progress_lines(
        sandbox
            .initbox()
            .args(["wait-for-command", "--interval", "1ms", "false"])
            .spawn(),
        "wait-for-command",
    );
}
