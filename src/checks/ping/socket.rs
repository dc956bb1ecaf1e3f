//! The ICMP side of ping, shared by its two modes: one socket per address family opened on
//! first use (datagram where the kernel allows it, else raw), one echo and its reply or
//! the reason there was none, and the choice of the address a host is pinged at.

use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use surge_ping::{Client, Config, ICMP, IcmpPacket, PingIdentifier, PingSequence, SurgeError};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::duration::Elapsed;
use crate::exit::{Error, Result};
use crate::resolve::Resolver;
use crate::wait::Failure;
use crate::{reason, report};

/// The data bytes of every echo request: 56, as ping sends, so a reply is 64 bytes.
pub(super) const PAYLOAD: [u8; 56] = {
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
pub(super) struct IcmpSockets {
    v4: OnceCell<IcmpSocket>,
    v6: OnceCell<IcmpSocket>,
    /// The echo identifier on raw sockets; on datagram sockets the kernel sets its own.
    identifier: PingIdentifier,
}

pub(super) struct IcmpSocket {
    /// surge-ping's socket and the task that hands each reply to the echo waiting for it.
    client: Client,
    /// One sequence for all echoes on the socket: replies are matched by (address,
    /// sequence), so two hosts with the same address must never share a number.
    next_sequence: AtomicU16,
}

/// What came back for one echo request.
#[derive(Debug, Clone)]
pub(super) struct Reply {
    pub(super) from: IpAddr,
    pub(super) bytes: usize,
    /// Known on raw IPv4 sockets only, where the IP header comes with the reply.
    pub(super) ttl: Option<u8>,
    pub(super) rtt: Duration,
}

impl IcmpSockets {
    pub(super) fn new() -> Self {
        IcmpSockets {
            v4: OnceCell::new(),
            v6: OnceCell::new(),
            identifier: PingIdentifier(fastrand::u16(..)),
        }
    }

    pub(super) async fn socket_for(&self, ip: IpAddr) -> Result<&IcmpSocket> {
        let (cell, family) = match ip {
            IpAddr::V4(_) => (&self.v4, ICMP::V4),
            IpAddr::V6(_) => (&self.v6, ICMP::V6),
        };
        cell.get_or_try_init(|| async { open_socket(family) }).await
    }

    /// Sends one echo request to `ip` and waits up to `reply_timeout` for its reply. A
    /// reply lost, unreachable or refused for now is `Retry` (another echo may get
    /// through); no ICMP socket, or sending forbidden, is `Fatal`.
    pub(super) async fn echo(&self, ip: IpAddr, reply_timeout: Duration) -> Result<Reply, Failure> {
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
pub(super) fn surge_reason(error: &SurgeError) -> &'static str {
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
pub(super) fn open_socket(family: ICMP) -> Result<IcmpSocket> {
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
pub(super) fn no_socket_allowed() -> String {
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

pub(super) fn effective_gid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Gid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

pub(super) const ICMPV4_ECHO_REPLY: u8 = 0;
pub(super) const ICMPV6_ECHO_REPLY: u8 = 129;

/// surge-ping hands over echo replies and the ICMP errors quoting our request alike.
pub(super) fn reply_or_reason(
    ip: IpAddr,
    packet: IcmpPacket,
    rtt: Duration,
) -> Result<Reply, Failure> {
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

pub(super) fn icmpv4_error(kind: u8, code: u8) -> String {
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

pub(super) fn icmpv6_error(kind: u8, code: u8) -> String {
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
pub(super) struct Chosen {
    pub(super) ip: IpAddr,
    pub(super) all: Vec<IpAddr>,
}

impl Chosen {
    /// The first address, as the resolver ordered them (never empty: see `lookup_ip`).
    pub(super) fn first_of(all: Vec<IpAddr>) -> Option<Self> {
        Some(Chosen {
            ip: *all.first()?,
            all,
        })
    }

    /// ` (first of 127.0.0.1, ::1)` when there was a choice.
    pub(super) fn choice_note(&self) -> String {
        if self.all.len() < 2 {
            return String::new();
        }
        let all: Vec<String> = self.all.iter().map(IpAddr::to_string).collect();
        format!(" (first of {})", all.join(", "))
    }
}

pub(super) async fn choose_address(resolver: &Resolver, host: &str) -> Result<Chosen, Failure> {
    let ips = resolver.lookup_ip(host).await?;
    Chosen::first_of(ips).ok_or_else(|| Failure::Retry(format!("{host} has no address yet")))
}

pub(super) fn milliseconds(duration: Duration) -> String {
    format!("{:.3}", duration.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_makes_64_byte_echoes() {
        assert_eq!(PAYLOAD.len() + 8, 64);
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
