//! Name resolution for every command, through hickory, the way a pod resolves names.
//!
//! Reads `/etc/resolv.conf` (nameservers, `search`, `ndots`, so the short Kubernetes name
//! `mydb` finds `mydb.default.svc.cluster.local`) and `/etc/hosts`; `--nameserver`
//! replaces the nameservers and keeps the search list. A fresh resolver answers every
//! attempt, so no cached negative answer can hide a record that has just appeared.
//! wait-for-tcp, wait-for-http and wait-for-dns all resolve here, so they agree.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::{Hosts, TokioResolver};

use crate::exit::Error;

pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
pub const DEFAULT_HOSTS_FILE: &str = "/etc/hosts";

/// A nameserver given on the command line: `10.96.0.10`, `127.0.0.1:5353`, `[fd00::a]:53`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nameserver(pub SocketAddr);

impl FromStr for Nameserver {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(ip) = text.parse::<IpAddr>() {
            return Ok(Nameserver(SocketAddr::new(ip, 53)));
        }
        match text.parse::<SocketAddr>() {
            Ok(addr) if addr.port() != 0 => Ok(Nameserver(addr)),
            Ok(_) => Err(format!("nameserver '{text}': port 0 is not a valid port")),
            Err(_) => Err(format!(
                "nameserver '{text}' is not an IP address (expected IP, IP:PORT or [IPv6]:PORT)"
            )),
        }
    }
}

impl fmt::Display for Nameserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.port() == 53 {
            write!(f, "{}", self.0.ip())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// Where names are looked up; built once per command from its flags.
#[derive(Debug, Clone)]
pub struct ResolverSettings {
    pub nameservers: Vec<Nameserver>,
    pub resolv_conf: PathBuf,
    pub hosts_file: PathBuf,
    /// How long one query may take before the attempt reports a timeout.
    pub query_timeout: Duration,
}

/// Why a lookup did not give an answer. `Retry` reasons heal by waiting; `Fatal` ones do not.
#[derive(Debug)]
pub enum LookupFailure {
    Retry(String),
    Fatal(Error),
}

impl From<LookupFailure> for crate::wait::Attempt {
    fn from(failure: LookupFailure) -> Self {
        match failure {
            LookupFailure::Retry(reason) => crate::wait::Attempt::NotYet(reason),
            LookupFailure::Fatal(error) => crate::wait::Attempt::Fatal(error),
        }
    }
}

/// The shared resolver: configuration read once, a fresh hickory resolver per lookup.
#[derive(Clone)]
pub struct Resolver {
    config: Result<(ResolverConfig, ResolverOpts), String>,
    hosts: Arc<Hosts>,
}

impl Resolver {
    pub fn new(settings: &ResolverSettings) -> Self {
        let system = read_resolv_conf(&settings.resolv_conf);
        let config = match (system, settings.nameservers.is_empty()) {
            (Ok((config, opts)), true) => Ok((config, opts)),
            (system, false) => {
                // --nameserver replaces the nameservers but keeps search, domain and ndots,
                // so short names behave as they would inside the pod.
                let (domain, search, opts) = match system {
                    Ok((config, opts)) => {
                        let (domain, search, _) = config.into_parts();
                        (domain, search, opts)
                    }
                    Err(_) => (None, Vec::new(), ResolverOpts::default()),
                };
                let servers = settings.nameservers.iter().map(|ns| server(ns.0)).collect();
                Ok((ResolverConfig::from_parts(domain, search, servers), opts))
            }
            (Err(reason), true) => Err(reason),
        };
        let config = config.map(|(config, mut opts)| {
            opts.timeout = settings.query_timeout;
            opts.attempts = 1;
            opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
            opts.use_hosts_file = ResolveHosts::Never;
            opts.cache_size = 0;
            opts.try_tcp_on_error = true;
            (config, opts)
        });
        Resolver {
            config,
            hosts: Arc::new(read_hosts(&settings.hosts_file)),
        }
    }

    /// A resolver with no state from earlier attempts.
    fn fresh(&self) -> Result<TokioResolver, LookupFailure> {
        let (config, opts) = self.config.as_ref().map_err(|reason| {
            LookupFailure::Fatal(Error::Config(format!(
                "no nameserver to ask: {reason}; give --nameserver IP[:PORT] or provide a resolv.conf"
            )))
        })?;
        let mut builder =
            TokioResolver::builder_with_config(config.clone(), TokioRuntimeProvider::default());
        *builder.options_mut() = opts.clone();
        let mut resolver = builder.build().map_err(|e| {
            LookupFailure::Fatal(Error::Config(format!("setting up the resolver: {e}")))
        })?;
        resolver.set_hosts(self.hosts.clone());
        Ok(resolver)
    }

    /// Every address of `host` (A and AAAA, or the literal itself).
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, LookupFailure> {
        if let Some(ip) = parse_ip_literal(host) {
            return Ok(vec![ip]);
        }
        if let Some(ips) = self.hosts_file_answer(host) {
            return Ok(ips);
        }
        let resolver = self.fresh()?;
        match resolver.lookup_ip(host).await {
            Ok(lookup) => {
                let ips: Vec<IpAddr> = lookup.iter().collect();
                if ips.is_empty() {
                    Err(LookupFailure::Retry(format!("{host} has no address yet")))
                } else {
                    Ok(ips)
                }
            }
            Err(error) => Err(LookupFailure::Retry(format!(
                "cannot resolve {host}: {}",
                describe(&error, RecordType::A)
            ))),
        }
    }

    /// Records of one type for `name`, following the resolver's search list.
    pub async fn lookup(&self, name: &str, kind: RecordType) -> Result<Lookup, LookupFailure> {
        let resolver = self.fresh()?;
        resolver
            .lookup(name, kind)
            .await
            .map_err(|error| LookupFailure::Retry(describe(&error, kind)))
    }

    /// The hosts file answers first, as `hosts: files dns` does for every libc: a name it
    /// knows needs no nameserver (a scratch image with only `localhost`, a pod with
    /// hostAliases) and never waits for one, even for the address family it lacks.
    fn hosts_file_answer(&self, host: &str) -> Option<Vec<IpAddr>> {
        use hickory_resolver::proto::op::Query;
        use hickory_resolver::proto::rr::Name;
        let name = Name::from_str(host).ok()?;
        let mut ips = Vec::new();
        for kind in [RecordType::A, RecordType::AAAA] {
            if let Some(lookup) = self
                .hosts
                .lookup_static_host(&Query::query(name.clone(), kind))
            {
                ips.extend(lookup.answers().iter().filter_map(|r| r.data.ip_addr()));
            }
        }
        (!ips.is_empty()).then_some(ips)
    }
}

fn server(addr: SocketAddr) -> NameServerConfig {
    let mut config = NameServerConfig::udp_and_tcp(addr.ip());
    for connection in &mut config.connections {
        connection.port = addr.port();
    }
    config
}

fn read_resolv_conf(path: &Path) -> Result<(ResolverConfig, ResolverOpts), String> {
    let data = std::fs::read(path)
        .map_err(|e| format!("reading {}: {}", path.display(), io_reason(&e)))?;
    hickory_resolver::system_conf::parse_resolv_conf(data)
        .map_err(|e| format!("reading {}: {e}", path.display()))
}

/// The hosts file, or just `localhost` where there is none (RFC 6761: localhost is loopback).
fn read_hosts(path: &Path) -> Hosts {
    let mut hosts = Hosts::default();
    let parsed = std::fs::File::open(path).and_then(|file| hosts.read_hosts_conf(file));
    if parsed.is_err() {
        hosts = Hosts::default();
        let _ = hosts.read_hosts_conf(&b"127.0.0.1 localhost\n::1 localhost\n"[..]);
    }
    hosts
}

/// `127.0.0.1`, `::1` or `[::1]`.
fn parse_ip_literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// The reason a user reads for a failed lookup: NXDOMAIN, SERVFAIL, timeout, …
fn describe(error: &NetError, kind: RecordType) -> String {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
            if no_records.response_code == ResponseCode::NXDomain {
                "NXDOMAIN (no such name)".to_owned()
            } else {
                format!("no {kind} record")
            }
        }
        NetError::Dns(DnsError::ResponseCode(code)) => match code {
            ResponseCode::ServFail => "SERVFAIL from the nameserver".to_owned(),
            ResponseCode::Refused => "the nameserver REFUSED the query".to_owned(),
            other => format!("the nameserver answered {other}"),
        },
        NetError::Timeout => "no answer from the nameserver (timeout)".to_owned(),
        NetError::Io(e) => format!("nameserver unreachable: {}", io_reason(e)),
        NetError::NoConnections => "no nameserver reachable".to_owned(),
        other => other.to_string(),
    }
}

/// An io::Error as a short lowercase phrase, without the "(os error 111)" suffix.
pub fn io_reason(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::ConnectionReset => "connection reset".into(),
        io::ErrorKind::TimedOut => "timed out".into(),
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::HostUnreachable => "host unreachable".into(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".into(),
        io::ErrorKind::AddrNotAvailable => "address not available".into(),
        _ => {
            let text = error.to_string();
            match text.find(" (os error") {
                Some(cut) => text[..cut].to_lowercase(),
                None => text,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    const LOOPBACK: [IpAddr; 2] = [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ];

    #[test]
    fn nameserver_forms() {
        let ns = |s: &str| s.parse::<Nameserver>().map(|n| n.0);
        assert_eq!(ns("10.96.0.10").unwrap(), "10.96.0.10:53".parse().unwrap());
        assert_eq!(
            ns("127.0.0.1:5353").unwrap(),
            "127.0.0.1:5353".parse().unwrap()
        );
        assert_eq!(ns("fd00::a").unwrap(), "[fd00::a]:53".parse().unwrap());
        assert_eq!(ns("[fd00::a]:54").unwrap(), "[fd00::a]:54".parse().unwrap());
        assert!(ns("dns.example").unwrap_err().contains("dns.example"));
        assert!(ns("127.0.0.1:0").is_err());
    }

    #[test]
    fn ip_literals() {
        assert_eq!(parse_ip_literal("[::1]"), Some(LOOPBACK[1]));
        assert_eq!(parse_ip_literal("127.0.0.1"), Some(LOOPBACK[0]));
        assert_eq!(parse_ip_literal("localhost"), None);
    }

    #[tokio::test]
    async fn localhost_works_without_any_system_files() {
        let resolver = Resolver::new(&ResolverSettings {
            nameservers: vec![],
            resolv_conf: "/nonexistent/resolv.conf".into(),
            hosts_file: "/nonexistent/hosts".into(),
            query_timeout: Duration::from_secs(1),
        });
        let mut ips = resolver.lookup_ip("localhost").await.unwrap();
        ips.sort();
        assert_eq!(ips, LOOPBACK.to_vec());
        match resolver.lookup_ip("mydb").await {
            Err(LookupFailure::Fatal(Error::Config(message))) => {
                assert!(message.contains("--nameserver"), "{message}");
                assert!(message.contains("/nonexistent/resolv.conf"), "{message}");
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}
