//! ping: ICMP echo for the init containers that ran busybox `ping -c 5 db` or
//! `until ping -c 1 db; do sleep 2; done`, without root where the pod allows it.
//!
//! `--count N` behaves like `ping -c N`: N echoes per host, a line per reply and a summary on
//! stdout, success when every host answered at least once. Without it every host is a probe
//! for the wait engine: one echo per attempt, ready on the first reply.
//!
//! Both modes share one socket per address family, opened on first use: an unprivileged ICMP
//! datagram socket where `net.ipv4.ping_group_range` admits our group (the kernel then owns
//! the echo identifier and hands the socket only its own replies), else a raw socket where
//! CAP_NET_RAW allows it (replies are told apart by our identifier), else a fatal error that
//! names both remedies.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence, SurgeError};
use tokio::sync::OnceCell;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::duration::Elapsed;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::report;
use crate::resolve::Resolver;
use crate::resolve::ResolverArgs;
use crate::wait::WaitArgs;
use crate::wait::{self, Attempt, Failure, Probe, WaitOptions};

/// Send ICMP echo requests, or wait until hosts answer them.
#[derive(Debug, Clone, clap::Args)]
pub struct PingArgs {
    /// Hosts: names (looked up afresh every attempt), IPv4 or IPv6 addresses. A name with
    /// several addresses is pinged at the first one the resolver gives.
    #[arg(required = true, value_name = "HOST", value_parser = parse_host)]
    pub hosts: Vec<String>,
    /// Send N echo requests to each host and print the replies and a summary, like `ping -c N`
    /// [default: wait until every host answers one echo].
    ///
    /// Echoes go --interval apart (no fast start); --attempt-timeout is each echo's reply
    /// timeout and --timeout ends the whole run at once. Exit 0 when every host answered at
    /// least once (also when --timeout cut the echoes short), 1 when one never did, 124 when
    /// --timeout passed before a host answered.
    #[arg(
        short = 'c',
        long,
        env = "INITBOX_COUNT",
        value_name = "N",
        value_parser = parse_count,
        conflicts_with = "invert"
    )]
    pub count: Option<u32>,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

fn parse_host(text: &str) -> Result<String, String> {
    let host = text.trim();
    if host.is_empty() {
        return Err("the host is empty".into());
    }
    if host.contains("://") {
        return Err(format!(
            "'{text}' is a URL; ping takes a host name or an IP address"
        ));
    }
    if host.chars().any(|c| c.is_whitespace() || c == '/') {
        return Err(format!(
            "'{text}' is not a host: it contains a space or '/'"
        ));
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if bare.contains(':') && bare.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!(
            "'{text}' is not a host: ping takes no port (an IPv6 address is written as ::1)"
        ));
    }
    crate::resolve::check_host_name(host)?;
    Ok(host.to_owned())
}

fn parse_count(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err("--count must be at least 1 (without --count, ping waits for a reply)".into()),
        Ok(count) => Ok(count),
        Err(_) => Err(format!("'{text}' is not a number of echo requests")),
    }
}

impl crate::cli::Task for PingArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

pub async fn run(args: PingArgs) -> Result<()> {
    let options = args.wait.options();
    let reply_timeout = args.wait.retry.attempt_timeout.get();
    let resolver = args.resolver.resolver(reply_timeout);
    let sockets = Arc::new(IcmpSockets::new());
    match args.count {
        Some(count) => {
            ping_counted(args.hosts, count, options, reply_timeout, resolver, sockets).await
        }
        None => {
            let probes = args
                .hosts
                .into_iter()
                .map(|host| PingProbe {
                    host,
                    resolver: resolver.clone(),
                    sockets: sockets.clone(),
                    reply_timeout,
                })
                .collect();
            wait::wait_for_all("icmp", probes, options).await.map(drop)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Sockets and single echoes
// ---------------------------------------------------------------------------------------

/// The data bytes of every echo request: 56, as ping sends, so a reply is 64 bytes.
const PAYLOAD: [u8; 56] = {
    let mut bytes = [0u8; 56];
    let mut i = 0;
    while i < bytes.len() {
        bytes[i] = i as u8;
        i += 1;
    }
    bytes
};

/// The run's ICMP sockets, one per address family, opened on first use and shared by every
/// host and every attempt, so descriptors do not grow with the attempts.
struct IcmpSockets {
    v4: OnceCell<IcmpSocket>,
    v6: OnceCell<IcmpSocket>,
    /// The echo identifier on raw sockets; on datagram sockets the kernel sets its own.
    identifier: PingIdentifier,
}

struct IcmpSocket {
    /// surge-ping's socket and the task that hands each reply to the echo waiting for it.
    client: Client,
    /// One sequence for all echoes on the socket: replies are matched by (address,
    /// sequence), so two hosts with the same address must never share a number.
    next_sequence: AtomicU16,
}

/// What came back for one echo request.
#[derive(Debug, Clone)]
struct Reply {
    from: IpAddr,
    bytes: usize,
    /// Known on raw IPv4 sockets only, where the IP header comes with the reply.
    ttl: Option<u8>,
    rtt: Duration,
}

impl IcmpSockets {
    fn new() -> Self {
        IcmpSockets {
            v4: OnceCell::new(),
            v6: OnceCell::new(),
            identifier: PingIdentifier(fastrand::u16(..)),
        }
    }

    async fn socket_for(&self, ip: IpAddr) -> Result<&IcmpSocket> {
        let (cell, family) = match ip {
            IpAddr::V4(_) => (&self.v4, ICMP::V4),
            IpAddr::V6(_) => (&self.v6, ICMP::V6),
        };
        cell.get_or_try_init(|| async { open_socket(family) }).await
    }

    /// Sends one echo request to `ip` and waits up to `reply_timeout` for its reply. A
    /// reply lost, unreachable or refused for now is `Retry` (another echo may get
    /// through); no ICMP socket, or sending forbidden, is `Fatal`.
    async fn echo(&self, ip: IpAddr, reply_timeout: Duration) -> Result<Reply, Failure> {
        let socket = self.socket_for(ip).await.map_err(Failure::Fatal)?;
        let sequence = PingSequence(socket.next_sequence.fetch_add(1, Ordering::Relaxed));
        let mut pinger = socket.client.pinger(ip, self.identifier).await;
        pinger.timeout(reply_timeout);
        // Timed here, from before the send: surge-ping starts its clock after sendto returns,
        // and on loopback the reply is already queued by then.
        let sent = Instant::now();
        match pinger.ping(sequence, &PAYLOAD).await {
            Ok((packet, _)) => reply_or_reason(ip, packet, sent.elapsed()),
            Err(SurgeError::Timeout { .. }) => Err(Failure::Retry(format!(
                "no reply from {ip} within {}",
                Elapsed(reply_timeout)
            ))),
            Err(SurgeError::IOError(error)) if error.kind() == io::ErrorKind::PermissionDenied => {
                Err(Failure::Fatal(Error::Failed(format!(
                    "sending to {ip}: permission denied (a firewall or route forbids it; retrying cannot help)"
                ))))
            }
            Err(SurgeError::IOError(error)) => Err(Failure::Retry(format!(
                "sending to {ip}: {}",
                reason::io(&error)
            ))),
            Err(other) => Err(Failure::Retry(format!(
                "pinging {ip}: {}",
                surge_reason(&other)
            ))),
        }
    }
}

/// The rest of surge-ping's errors, in our words.
fn surge_reason(error: &SurgeError) -> &'static str {
    match error {
        SurgeError::IncorrectBufferSize | SurgeError::MalformedPacket(_) => {
            "a reply that cannot be read came back"
        }
        SurgeError::IdenticalRequests { .. } => "an echo with the same sequence is still waiting",
        SurgeError::ClientDestroyed => "the ICMP socket was closed",
        _ => "the echo could not be sent",
    }
}

/// Opens a datagram socket, or a raw one where datagram sockets are refused.
fn open_socket(family: ICMP) -> Result<IcmpSocket> {
    let family_name = match family {
        ICMP::V4 => "ICMPv4",
        ICMP::V6 => "ICMPv6",
    };
    // surge-ping tries the hinted type first and the other one when it is refused.
    let config = Config::builder()
        .kind(family)
        .sock_type_hint(socket2::Type::DGRAM)
        .build();
    let client = Client::new(&config).map_err(|error| {
        if error.kind() == io::ErrorKind::PermissionDenied {
            Error::Failed(no_socket_allowed())
        } else {
            Error::Failed(format!(
                "cannot open an {family_name} socket: {}",
                reason::io(&error)
            ))
        }
    })?;
    let (kind, why) = if client.get_socket().get_type() == socket2::Type::RAW {
        (
            "raw",
            "unprivileged ICMP is not allowed for this group; CAP_NET_RAW is there",
        )
    } else {
        (
            "datagram",
            "unprivileged ICMP, allowed by net.ipv4.ping_group_range",
        )
    };
    report::Event::new(
        report::Level::Debug,
        "ping.socket",
        format!("{family_name}: using a {kind} socket ({why})"),
    )
    .field("family", family_name)
    .field("socket", kind)
    .emit();
    Ok(IcmpSocket {
        client,
        next_sequence: AtomicU16::new(fastrand::u16(..)),
    })
}

/// The one message for "neither socket kind is allowed", with both ways out.
fn no_socket_allowed() -> String {
    let mut facts = Vec::new();
    if let Some(gid) = effective_gid() {
        facts.push(format!("gid {gid}"));
    }
    if let Ok(range) = std::fs::read_to_string("/proc/sys/net/ipv4/ping_group_range") {
        let range: Vec<&str> = range.split_whitespace().collect();
        facts.push(format!(
            "net.ipv4.ping_group_range is \"{}\"",
            range.join(" ")
        ));
    }
    let facts = if facts.is_empty() {
        "net.ipv4.ping_group_range".to_owned()
    } else {
        facts.join("; ")
    };
    format!(
        "cannot open an ICMP socket: unprivileged ICMP is not allowed for this group ({facts}) \
         and raw sockets need CAP_NET_RAW; allow one: \
         sysctl net.ipv4.ping_group_range=\"0 2147483647\" \
         (a Kubernetes safe sysctl, pod securityContext.sysctls) or add the NET_RAW capability"
    )
}

fn effective_gid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Gid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

const ICMPV4_ECHO_REPLY: u8 = 0;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// surge-ping hands over echo replies and the ICMP errors quoting our request alike.
fn reply_or_reason(ip: IpAddr, packet: IcmpPacket, rtt: Duration) -> Result<Reply, Failure> {
    let (from, kind, code, bytes, ttl) = match &packet {
        IcmpPacket::V4(p) => (
            IpAddr::V4(p.get_source()),
            p.get_icmp_type().0,
            p.get_icmp_code().0,
            p.get_size(),
            p.get_ttl(),
        ),
        // surge-ping does not see the IPv6 header, so it reports the hop limit as 0.
        IcmpPacket::V6(p) => (
            IpAddr::V6(p.get_source()),
            p.get_icmpv6_type().0,
            p.get_icmpv6_code().0,
            p.get_size(),
            None,
        ),
    };
    let echo_reply = match ip {
        IpAddr::V4(_) => kind == ICMPV4_ECHO_REPLY,
        IpAddr::V6(_) => kind == ICMPV6_ECHO_REPLY,
    };
    if echo_reply {
        return Ok(Reply {
            from,
            bytes,
            ttl,
            rtt,
        });
    }
    let what = match ip {
        IpAddr::V4(_) => icmpv4_error(kind, code),
        IpAddr::V6(_) => icmpv6_error(kind, code),
    };
    Err(Failure::Retry(format!(
        "{what} for {ip} (reported by {from})"
    )))
}

fn icmpv4_error(kind: u8, code: u8) -> String {
    match (kind, code) {
        (3, 0) => "network unreachable".into(),
        (3, 1) => "host unreachable".into(),
        (3, 2) => "protocol unreachable".into(),
        (3, 3) => "port unreachable".into(),
        (3, 4) => "fragmentation needed".into(),
        (3, 9 | 10 | 13) => "communication administratively prohibited".into(),
        (3, code) => format!("destination unreachable (code {code})"),
        (11, 0) => "time to live exceeded in transit".into(),
        (11, _) => "fragment reassembly time exceeded".into(),
        (12, _) => "parameter problem".into(),
        (kind, code) => format!("ICMP type {kind} code {code}"),
    }
}

fn icmpv6_error(kind: u8, code: u8) -> String {
    match (kind, code) {
        (1, 0) => "no route to destination".into(),
        (1, 1) => "communication administratively prohibited".into(),
        (1, 3) => "address unreachable".into(),
        (1, 4) => "port unreachable".into(),
        (1, code) => format!("destination unreachable (code {code})"),
        (2, _) => "packet too big".into(),
        (3, _) => "hop limit exceeded in transit".into(),
        (4, _) => "parameter problem".into(),
        (kind, code) => format!("ICMPv6 type {kind} code {code}"),
    }
}

/// The address of a host that is pinged, and the others it has.
struct Chosen {
    ip: IpAddr,
    all: Vec<IpAddr>,
}

impl Chosen {
    /// The first address, as the resolver ordered them (never empty: see `lookup_ip`).
    fn first_of(all: Vec<IpAddr>) -> Option<Self> {
        Some(Chosen {
            ip: *all.first()?,
            all,
        })
    }

    /// ` (first of 127.0.0.1, ::1)` when there was a choice.
    fn choice_note(&self) -> String {
        if self.all.len() < 2 {
            return String::new();
        }
        let all: Vec<String> = self.all.iter().map(IpAddr::to_string).collect();
        format!(" (first of {})", all.join(", "))
    }
}

async fn choose_address(resolver: &Resolver, host: &str) -> Result<Chosen, Failure> {
    let ips = resolver.lookup_ip(host).await?;
    Chosen::first_of(ips).ok_or_else(|| Failure::Retry(format!("{host} has no address yet")))
}

fn milliseconds(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

// ---------------------------------------------------------------------------------------
// Wait mode
// ---------------------------------------------------------------------------------------

/// One host for the wait engine: each attempt looks the host up and sends one echo.
struct PingProbe {
    host: String,
    resolver: Resolver,
    sockets: Arc<IcmpSockets>,
    reply_timeout: Duration,
}

impl Probe for PingProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.host
    }

    async fn attempt(&self) -> Attempt {
        let started = Instant::now();
        let chosen = match choose_address(&self.resolver, &self.host).await {
            Ok(chosen) => chosen,
            Err(failure) => return failure.into(),
        };
        // The engine cuts the attempt at --attempt-timeout; the echo gives up a little
        // earlier, so that the reason the user reads names the address.
        let left = self.reply_timeout.saturating_sub(started.elapsed());
        let reply_timeout = left.saturating_sub((left / 10).min(Duration::from_millis(5)));
        match self.sockets.echo(chosen.ip, reply_timeout).await {
            Ok(reply) => Attempt::ready(format!(
                "reply from {}{} in {} ms",
                reply.from,
                chosen.choice_note(),
                milliseconds(reply.rtt)
            )),
            Err(failure) => failure.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Count mode
// ---------------------------------------------------------------------------------------

/// What `--count` mode saw of one host.
#[derive(Debug)]
struct HostStats {
    host: String,
    ip: IpAddr,
    transmitted: u32,
    rtts: Vec<Duration>,
    last_failure: Option<String>,
    /// The deadline ended this host's echoes before all of them were done.
    timed_out: bool,
}

impl HostStats {
    /// The summary ping prints at the end, without the blank line before it.
    fn summary(&self) -> String {
        let received = self.rtts.len() as u32;
        let lost = self.transmitted.saturating_sub(received);
        let loss = (lost * 100).checked_div(self.transmitted).unwrap_or(100);
        let mut text = format!(
            "--- {} ping statistics ---\n{} packets transmitted, {received} received, {loss}% packet loss",
            self.host, self.transmitted
        );
        if let (Some(min), Some(max)) = (self.rtts.iter().min(), self.rtts.iter().max()) {
            let avg = self.rtts.iter().sum::<Duration>() / received;
            text.push_str(&format!(
                "\nrtt min/avg/max = {}/{}/{} ms",
                milliseconds(*min),
                milliseconds(avg),
                milliseconds(*max)
            ));
        }
        text
    }

    /// `db (10.0.0.5): 5 packets transmitted, 0 received (last: no reply …)`.
    fn no_reply(&self) -> String {
        let address = if self.host == self.ip.to_string() {
            String::new()
        } else {
            format!(" ({})", self.ip)
        };
        let last = match &self.last_failure {
            Some(reason) => format!(" (last error: {reason})"),
            None => String::new(),
        };
        format!(
            "{}{address}: {} packets transmitted, 0 received{last}",
            self.host, self.transmitted
        )
    }
}

/// The pace of `--count` mode, the same for every host.
#[derive(Debug, Clone, Copy)]
struct CountPlan {
    count: u32,
    interval: Duration,
    reply_timeout: Duration,
    deadline: Option<Instant>,
}

async fn ping_counted(
    hosts: Vec<String>,
    count: u32,
    options: WaitOptions,
    reply_timeout: Duration,
    resolver: Resolver,
    sockets: Arc<IcmpSockets>,
) -> Result<()> {
    let plan = CountPlan {
        count,
        interval: options.interval,
        reply_timeout,
        deadline: options.timeout.map(|limit| Instant::now() + limit),
    };
    let mut tasks = JoinSet::new();
    for (index, host) in hosts.iter().cloned().enumerate() {
        let (resolver, sockets) = (resolver.clone(), sockets.clone());
        tasks.spawn(crate::step::keep(async move {
            (index, ping_host(host, plan, resolver, sockets).await)
        }));
    }
    let mut stats: Vec<Option<HostStats>> = hosts.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (index, result) = joined.map_err(|e| Error::Failed(format!("internal error: {e}")))?;
        // The first host that fails for good ends the run; dropping `tasks` stops the rest.
        stats[index] = Some(result?);
    }
    let stats: Vec<HostStats> = stats.into_iter().flatten().collect();
    for host in &stats {
        println!("\n{}", host.summary());
    }

    let silent: Vec<String> = stats
        .iter()
        .filter(|s| s.rtts.is_empty())
        .map(HostStats::no_reply)
        .collect();
    if silent.is_empty() {
        return Ok(());
    }
    // A host that answered before the deadline cut its echoes short counts as answered,
    // as with busybox `ping -c N -w T`; one that had not answered by then timed out.
    let cut_short = stats.iter().any(|s| s.rtts.is_empty() && s.timed_out);
    match options.timeout {
        Some(limit) if cut_short => Err(Error::TimedOut(format!(
            "timed out after {} with no reply from {}",
            Elapsed(limit),
            silent.join("; ")
        ))),
        _ => Err(Error::Failed(format!(
            "no reply from {}",
            silent.join("; ")
        ))),
    }
}

/// `ping -c N HOST`: N echoes, `interval` apart whatever the replies do, each waiting up to
/// the reply timeout (and never past the deadline); a line on stdout per reply.
async fn ping_host(
    host: String,
    plan: CountPlan,
    resolver: Resolver,
    sockets: Arc<IcmpSockets>,
) -> Result<HostStats> {
    let lookup = choose_address(&resolver, &host);
    let looked_up = match plan.deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, lookup)
            .await
            .map_err(|_| Error::TimedOut(format!("timed out looking up {host}")))?,
        None => lookup.await,
    };
    let chosen = looked_up.map_err(|failure| failure.into_error().for_target(&host))?;
    if chosen.all.len() > 1 {
        report::Event::new(
            report::Level::Info,
            "ping.address",
            format!("pinging {host} at {}{}", chosen.ip, chosen.choice_note()),
        )
        .field("host", host.clone())
        .field("address", chosen.ip.to_string())
        .emit();
    }
    // A socket that cannot be opened ends the run before anything is printed.
    sockets
        .socket_for(chosen.ip)
        .await
        .map_err(|e| e.for_target(&host))?;
    println!("PING {host} ({}): {} data bytes", chosen.ip, PAYLOAD.len());

    let mut stats = HostStats {
        host,
        ip: chosen.ip,
        transmitted: 0,
        rtts: Vec::new(),
        last_failure: None,
        timed_out: false,
    };
    let mut echoes = JoinSet::new();
    let mut next_send = Instant::now();
    let mut out_of_time = false;
    // Far enough to never fire when there is no --timeout.
    let deadline = plan
        .deadline
        .unwrap_or_else(|| Instant::now() + Duration::from_secs(86400 * 365 * 30));
    loop {
        let may_send = stats.transmitted < plan.count && !out_of_time;
        if !may_send && echoes.is_empty() {
            break;
        }
        tokio::select! {
            // The deadline first: when it and the next echo's turn fall in the same tick,
            // the run has timed out (not "ended after its last echo").
            biased;
            // The deadline ends the run at once, not at the next echo's turn: echoes still
            // waiting for a reply are abandoned with the set.
            _ = tokio::time::sleep_until(deadline) => {
                stats.timed_out = true;
                break;
            }
            _ = tokio::time::sleep_until(next_send), if may_send => {
                let now = Instant::now();
                let reply_timeout = match plan.deadline {
                    Some(deadline) if now >= deadline => {
                        out_of_time = true;
                        stats.timed_out = true;
                        continue;
                    }
                    Some(deadline) => plan.reply_timeout.min(deadline - now),
                    None => plan.reply_timeout,
                };
                stats.transmitted += 1;
                let sequence = stats.transmitted;
                let (sockets, ip) = (sockets.clone(), chosen.ip);
                echoes.spawn(async move {
                    let result = sockets.echo(ip, reply_timeout).await;
                    if let Ok(reply) = &result {
                        println!("{}", reply_line(reply, sequence));
                    }
                    result
                });
                next_send += plan.interval;
            }
            Some(joined) = echoes.join_next() => {
                match joined.map_err(|e| Error::Failed(format!("internal error: {e}")))? {
                    Ok(reply) => stats.rtts.push(reply.rtt),
                    Err(Failure::Retry(reason)) => stats.last_failure = Some(reason),
                    Err(Failure::Fatal(error)) => return Err(error.for_target(&stats.host)),
                }
            }
        }
    }
    Ok(stats)
}

/// `64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.045 ms`, as ping prints it.
fn reply_line(reply: &Reply, sequence: u32) -> String {
    let ttl = match reply.ttl {
        Some(ttl) => format!(" ttl={ttl}"),
        None => String::new(),
    };
    format!(
        "{} bytes from {}: icmp_seq={sequence}{ttl} time={} ms",
        reply.bytes,
        reply.from,
        milliseconds(reply.rtt)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_names_or_addresses_without_ports() {
        for good in [
            "db",
            "db.default.svc",
            "10.0.0.5",
            "::1",
            "[::1]",
            "fd00::50",
        ] {
            assert_eq!(parse_host(good).unwrap(), good);
        }
        let cases = [
            ("", "empty"),
            ("db:5432", "no port"),
            ("http://db", "URL"),
            ("my db", "space"),
            ("db/x", "'/'"),
        ];
        for (input, expected) in cases {
            let error = parse_host(input).unwrap_err();
            assert!(error.contains(expected), "{input}: {error}");
        }
    }

    #[test]
    fn count_is_a_positive_number() {
        assert_eq!(parse_count("5").unwrap(), 5);
        assert!(parse_count("0").unwrap_err().contains("at least 1"));
        assert!(parse_count("five").unwrap_err().contains("'five'"));
    }

    #[test]
    fn the_payload_makes_64_byte_echoes() {
        assert_eq!(PAYLOAD.len() + 8, 64);
    }

    fn stats(transmitted: u32, rtts_us: &[u64]) -> HostStats {
        HostStats {
            host: "db".into(),
            ip: "10.0.0.5".parse().unwrap(),
            transmitted,
            rtts: rtts_us
                .iter()
                .map(|us| Duration::from_micros(*us))
                .collect(),
            last_failure: Some("no reply from 10.0.0.5 within 2s".into()),
            timed_out: false,
        }
    }

    #[test]
    fn summary_reads_like_ping() {
        assert_eq!(
            stats(4, &[45, 61, 50]).summary(),
            "--- db ping statistics ---\n\
             4 packets transmitted, 3 received, 25% packet loss\n\
             rtt min/avg/max = 0.045/0.052/0.061 ms"
        );
        assert_eq!(
            stats(3, &[]).summary(),
            "--- db ping statistics ---\n3 packets transmitted, 0 received, 100% packet loss"
        );
        assert_eq!(
            stats(3, &[]).no_reply(),
            "db (10.0.0.5): 3 packets transmitted, 0 received \
             (last error: no reply from 10.0.0.5 within 2s)"
        );
    }

    #[test]
    fn reply_lines_show_the_ttl_only_when_known() {
        let mut reply = Reply {
            from: "127.0.0.1".parse().unwrap(),
            bytes: 64,
            ttl: Some(64),
            rtt: Duration::from_micros(45),
        };
        assert_eq!(
            reply_line(&reply, 1),
            "64 bytes from 127.0.0.1: icmp_seq=1 ttl=64 time=0.045 ms"
        );
        reply.ttl = None;
        assert_eq!(
            reply_line(&reply, 2),
            "64 bytes from 127.0.0.1: icmp_seq=2 time=0.045 ms"
        );
    }

    #[test]
    fn icmp_errors_are_named() {
        assert_eq!(icmpv4_error(3, 1), "host unreachable");
        assert_eq!(icmpv4_error(11, 0), "time to live exceeded in transit");
        assert_eq!(icmpv6_error(1, 3), "address unreachable");
        assert_eq!(icmpv6_error(9, 0), "ICMPv6 type 9 code 0");
    }

    #[test]
    fn a_choice_of_addresses_is_noted() {
        let one = Chosen::first_of(vec!["::1".parse().unwrap()]).unwrap();
        assert_eq!(one.choice_note(), "");
        let two =
            Chosen::first_of(vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()]).unwrap();
        assert_eq!(two.ip.to_string(), "127.0.0.1");
        assert_eq!(two.choice_note(), " (first of 127.0.0.1, ::1)");
        assert!(Chosen::first_of(Vec::new()).is_none());
    }

    #[test]
    fn the_no_socket_message_names_both_remedies() {
        let message = no_socket_allowed();
        assert!(
            message.contains("net.ipv4.ping_group_range=\"0 2147483647\""),
            "{message}"
        );
        assert!(message.contains("CAP_NET_RAW"), "{message}");
        assert!(message.contains("NET_RAW capability"), "{message}");
    }
}
