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
//!
//! Split by those seams: `socket` (sockets and single echoes), `count` (`--count` mode) and
//! `probe` (wait mode).

mod count;
mod probe;
mod socket;

use std::sync::Arc;

use crate::exec::Then;
use crate::exit::Result;
use crate::resolve::ResolverArgs;
use crate::wait::{self, WaitArgs};

use count::ping_counted;
use probe::PingProbe;
use socket::IcmpSockets;

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

    /// Checks across the waiting flags (`--stable-for` within `--timeout`).
    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        self.wait.validate()
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
}
