//! Name resolution for every command, through hickory, the way a pod resolves names.
//!
//! Reads `/etc/resolv.conf` (nameservers, `search`, `ndots`, so the short Kubernetes name
//! `mydb` finds `mydb.default.svc.cluster.local`) and `/etc/hosts`; `--nameserver`
//! replaces the nameservers and keeps the search list. A fresh resolver answers every
//! attempt, so no cached negative answer can hide a record that has just appeared.
//! wait-for-tcp, wait-for-http and wait-for-dns all resolve here, so they agree.
//!
//! The search list is walked here, not inside hickory, the way glibc's `res_search` walks
//! it: so that names with `_` (Compose service names such as `my_db`) resolve as they do
//! for glibc and dig, so that `-v` can show every candidate and its answer, and so that a
//! failure lists what each candidate got instead of only the last one's answer.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::lookup::Lookup;
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, RecordType};
use hickory_resolver::{Hosts, TokioResolver};
use tokio::time::Instant;

use crate::duration::Elapsed;
use crate::exit::Error;
use crate::report;
use crate::wait::Failure;

pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
pub const DEFAULT_HOSTS_FILE: &str = "/etc/hosts";

/// The longest name in text form, without the trailing dot (RFC 1035: 255 octets on the wire).
const MAX_NAME: usize = 253;
/// The longest label (RFC 1035).
const MAX_LABEL: usize = 63;

/// Checks that `name` can be looked up at all: an IP literal, or a DNS name whose labels are
/// 1 to 63 bytes (after IDNA encoding) of letters, digits, `-` (not first) and `_` (glibc
/// and dig accept `_`, and Compose names services `my_db`), at most 253 bytes in all, with
/// an optional trailing dot. Every command that takes a host calls this before its first
/// attempt, so that such a name is a usage error (exit 2) and never retried.
pub fn check_host_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the host name is empty".into());
    }
    if parse_ip_literal(name).is_some() {
        return Ok(());
    }
    let shown = shorten(name, 60);
    let bad = |why: String| Err(format!("'{shown}' cannot be a DNS name: {why}"));
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return bad("it is only the root '.'".into());
    }
    let mut length = 0;
    for (index, label) in bare.split('.').enumerate() {
        if label.is_empty() {
            return bad("it has an empty label (a leading dot or two dots in a row)".into());
        }
        let encoded = if label.is_ascii() {
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return bad(format!(
                    "{} is not allowed in a name (letters, digits, '-' and '_')",
                    describe_char(c)
                ));
            }
            label.len()
        } else {
            match Name::from_utf8(label) {
                Ok(name) => name.len(),
                Err(_) => {
                    return bad(format!(
                        "label '{}' is not a valid international name",
                        shorten(label, 20)
                    ));
                }
            }
        };
        if label.starts_with('-') {
            return bad(format!("label '{}' starts with '-'", shorten(label, 20)));
        }
        if encoded > MAX_LABEL {
            return bad(format!(
                "label {} ('{}') is {encoded} bytes long; a label holds at most {MAX_LABEL}",
                index + 1,
                shorten(label, 20)
            ));
        }
        length += encoded + usize::from(index > 0);
    }
    if length > MAX_NAME {
        return bad(format!(
            "it is {length} bytes long; a name holds at most {MAX_NAME}"
        ));
    }
    Ok(())
}

fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        c if c.is_ascii_control() => format!("the control character {:#04x}", c as u32),
        c => format!("'{c}'"),
    }
}

/// The first `max` characters of `text`, with `…` when it was longer.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut short: String = text.chars().take(max).collect();
        short.push('…');
        short
    }
}

/// The name to ask for: `_` kept (hickory's IDNA path refuses it), international names
/// encoded as punycode.
fn to_name(text: &str) -> Result<Name, String> {
    check_host_name(text)?;
    let parsed = if text.is_ascii() {
        Name::from_ascii(text)
    } else {
        Name::from_utf8(text)
    };
    parsed.map_err(|_| format!("'{}' cannot be a DNS name", shorten(text, 60)))
}

/// A name as users write it: lowercase, no trailing dot.
fn shown(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

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

/// Verbose lines that are printed only when they differ from the ones printed last for the
/// same key: `-v` shows what an attempt asked and got, without a flood of identical lines
/// from the 50 ms fast phase.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<HashMap<String, Vec<String>>>>);

impl Trace {
    pub fn emit(&self, event: &str, key: &str, lines: Vec<String>) {
        {
            let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if last.get(key) == Some(&lines) {
                return;
            }
            last.insert(key.to_owned(), lines.clone());
        }
        for line in lines {
            report::Event::new(report::Level::Debug, event, line)
                .field("target", key)
                .emit();
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

/// An answer and the name that gave it (a search-list completion of a short name).
#[derive(Debug)]
pub struct Resolved<T> {
    /// The name that answered, as users write it (lowercase, no trailing dot).
    pub name: String,
    pub value: T,
}

/// What one candidate of the search list got instead of an answer.
struct Miss {
    /// As the candidate's entry in a failure message: `REFUSED by 10.0.0.10`.
    text: String,
    /// As a verbose line says it after naming the nameserver: `REFUSED`.
    bare: String,
    /// glibc goes on to the next candidate after NXDOMAIN, no data and SERVFAIL only.
    go_on: bool,
    /// The library's own words, for `-v` only.
    detail: Option<String>,
}

/// The shared resolver: configuration read once, a fresh hickory resolver per lookup.
#[derive(Clone)]
pub struct Resolver {
    config: Result<(ResolverConfig, ResolverOpts), String>,
    hosts: Arc<Hosts>,
    hosts_file: Arc<Path>,
    /// The domains a name with fewer than `ndots` dots is tried in.
    search: Arc<[Name]>,
    ndots: usize,
    /// The nameservers, as messages name them: `10.96.0.10` or `10.0.0.1 or 10.0.0.2`.
    servers: Arc<str>,
    query_timeout: Duration,
    trace: Trace,
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
        let (search, ndots, servers) = match &config {
            Ok((config, opts)) => {
                // As glibc: the search list, or else the domain (which hickory takes from
                // the host name when resolv.conf has neither).
                let search: Vec<Name> = if config.search().is_empty() {
                    config.domain().cloned().into_iter().collect()
                } else {
                    config.search().to_vec()
                };
                let servers: Vec<String> = config
                    .name_servers()
                    .iter()
                    .map(|ns| {
                        let port = ns.connections.first().map_or(53, |c| c.port);
                        Nameserver(SocketAddr::new(ns.ip, port)).to_string()
                    })
                    .collect();
                (search, opts.ndots, servers.join(" or "))
            }
            Err(_) => (Vec::new(), 1, String::new()),
        };
        Resolver {
            config,
            hosts: Arc::new(read_hosts(&settings.hosts_file)),
            hosts_file: settings.hosts_file.clone().into(),
            search: search.into(),
            ndots,
            servers: servers.into(),
            query_timeout: settings.query_timeout,
            trace: Trace::default(),
        }
    }

    /// A resolver with no state from earlier attempts.
    fn fresh(&self) -> Result<TokioResolver, Failure> {
        let (config, opts) = self.config.as_ref().map_err(|reason| {
            Failure::Fatal(Error::Config(format!(
                "no nameserver to ask: {reason}; give --nameserver IP[:PORT] or provide a resolv.conf"
            )))
        })?;
        let mut builder =
            TokioResolver::builder_with_config(config.clone(), TokioRuntimeProvider::default());
        *builder.options_mut() = opts.clone();
        builder.build().map_err(|_| {
            Failure::Fatal(Error::Config(
                "the resolver configuration cannot be used (check --nameserver and resolv.conf)"
                    .into(),
            ))
        })
    }

    /// The names a lookup of `name` asks for, in order, as glibc's `res_search` builds
    /// them: a name with a trailing dot only as it is; one with at least `ndots` dots as it
    /// is first, then in each search domain; a shorter one in each search domain first.
    fn candidates(&self, name: &Name) -> Vec<Name> {
        let mut as_is = name.clone();
        as_is.set_fqdn(true);
        if name.is_fqdn() {
            return vec![as_is];
        }
        let as_is_first = usize::from(name.num_labels()) > self.ndots;
        let mut names = Vec::new();
        if as_is_first {
            names.push(as_is.clone());
        }
        for domain in self.search.iter() {
            // A completion longer than a name may be is skipped, as glibc skips it.
            if let Ok(mut full) = name.clone().append_domain(domain) {
                full.set_fqdn(true);
                if !names.contains(&full) {
                    names.push(full);
                }
            }
        }
        if !names.contains(&as_is) {
            names.push(as_is);
        }
        names
    }

    /// The names `text` stands for after search-list completion, as users write them: what
    /// an answer may name when the user wrote `text` (`--expect mydb-0.mydb:5432`).
    pub fn completions(&self, text: &str) -> Vec<String> {
        match to_name(text.trim()) {
            Ok(name) => self.candidates(&name).iter().map(shown).collect(),
            Err(_) => vec![text.trim().trim_end_matches('.').to_ascii_lowercase()],
        }
    }

    /// Every address of `host` (A and AAAA, or the literal itself).
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, Failure> {
        self.resolve_ip(host).await.map(|resolved| resolved.value)
    }

    /// Every address of `host`, and the name that had them.
    pub async fn resolve_ip(&self, host: &str) -> Result<Resolved<Vec<IpAddr>>, Failure> {
        if let Some(ip) = parse_ip_literal(host) {
            return Ok(Resolved {
                name: host.to_owned(),
                value: vec![ip],
            });
        }
        let name = to_name(host).map_err(|m| Failure::Fatal(Error::Usage(m)))?;
        if let Some(ips) = self.hosts_file_answer(&name) {
            let shown_ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
            self.trace.emit(
                "dns.hosts",
                host,
                vec![format!(
                    "{host}: {} gives {}",
                    self.hosts_file.display(),
                    shown_ips.join(", ")
                )],
            );
            return Ok(Resolved {
                name: shown(&name),
                value: ips,
            });
        }
        let resolver = self.fresh()?;
        let budget = self.budget();
        let mut lines = Vec::new();
        let mut misses = Vec::new();
        for candidate in self.candidates(&name) {
            let asked = format!(
                "{host}: asked {} for {} (A, AAAA)",
                self.servers,
                shown(&candidate)
            );
            let outcome = tokio::time::timeout_at(budget, resolver.lookup_ip(candidate.clone()))
                .await
                .unwrap_or(Err(NetError::Timeout));
            let miss = match outcome {
                Ok(lookup) => {
                    let ips: Vec<IpAddr> = lookup.iter().collect();
                    if !ips.is_empty() {
                        let shown_ips: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
                        lines.push(format!("{asked}: {}", shown_ips.join(", ")));
                        self.trace.emit("dns.query", host, lines);
                        return Ok(Resolved {
                            name: shown(&candidate),
                            value: ips,
                        });
                    }
                    Miss {
                        bare: "no address".into(),
                        text: "no address".into(),
                        go_on: true,
                        detail: None,
                    }
                }
                Err(error) => self.miss_of(&error, "address"),
            };
            lines.push(trace_line(&asked, &miss));
            let go_on = miss.go_on;
            misses.push((candidate, miss));
            if !go_on {
                break;
            }
        }
        self.trace.emit("dns.query", host, lines);
        Err(Failure::Retry(cannot_resolve(host, &name, &misses)))
    }

    /// Records of one type for `name`, following the search list like [`Resolver::resolve_ip`].
    pub async fn lookup(&self, text: &str, kind: RecordType) -> Result<Resolved<Lookup>, Failure> {
        let name = to_name(text).map_err(|m| Failure::Fatal(Error::Usage(m)))?;
        if matches!(kind, RecordType::A | RecordType::AAAA)
            && let Some(lookup) = self
                .hosts
                .lookup_static_host(&Query::query(name.clone(), kind))
        {
            return Ok(Resolved {
                name: shown(&name),
                value: lookup,
            });
        }
        let resolver = self.fresh()?;
        let budget = self.budget();
        let kind_name = record_type_name(kind);
        let mut lines = Vec::new();
        let mut misses = Vec::new();
        for candidate in self.candidates(&name) {
            let asked = format!(
                "{text}: asked {} for {} ({kind_name})",
                self.servers,
                shown(&candidate)
            );
            let outcome = tokio::time::timeout_at(budget, resolver.lookup(candidate.clone(), kind))
                .await
                .unwrap_or(Err(NetError::Timeout));
            match outcome {
                Ok(lookup) => {
                    let answers: Vec<String> = lookup
                        .answers()
                        .iter()
                        .map(|record| {
                            format!("{} {}", record_type_name(record.record_type()), record.data)
                        })
                        .collect();
                    lines.push(format!("{asked}: {}", answers.join(", ")));
                    self.trace.emit("dns.query", text, lines);
                    return Ok(Resolved {
                        name: shown(&candidate),
                        value: lookup,
                    });
                }
                Err(error) => {
                    let miss = self.miss_of(&error, &format!("{kind_name} record"));
                    lines.push(trace_line(&asked, &miss));
                    let go_on = miss.go_on;
                    misses.push((candidate, miss));
                    if !go_on {
                        break;
                    }
                }
            }
        }
        self.trace.emit("dns.query", text, lines);
        Err(Failure::Retry(cannot_resolve(text, &name, &misses)))
    }

    /// When this attempt's queries give up: a little before the attempt timeout cuts the
    /// attempt, so that the reason the user reads names the nameserver.
    fn budget(&self) -> Instant {
        let limit = self.query_timeout;
        Instant::now() + limit.saturating_sub((limit / 10).min(Duration::from_millis(5)))
    }

    /// The reason a user reads for a failed query, in sentences of ours, never the
    /// library's words (those go to `-v` only).
    fn miss_of(&self, error: &NetError, wanted: &str) -> Miss {
        let servers = &self.servers;
        let miss = |bare: &str, text: String, go_on: bool| Miss {
            bare: bare.to_owned(),
            text,
            go_on,
            detail: None,
        };
        match error {
            NetError::Dns(DnsError::NoRecordsFound(no_records)) => {
                if no_records.response_code == ResponseCode::NXDomain {
                    miss("NXDOMAIN", "NXDOMAIN".into(), true)
                } else {
                    miss(&format!("no {wanted}"), format!("no {wanted}"), true)
                }
            }
            NetError::Dns(DnsError::ResponseCode(code)) => match code {
                ResponseCode::ServFail => {
                    miss("SERVFAIL", format!("SERVFAIL from {servers}"), true)
                }
                ResponseCode::Refused => miss("REFUSED", format!("REFUSED by {servers}"), false),
                ResponseCode::NXDomain => miss("NXDOMAIN", "NXDOMAIN".into(), true),
                other => {
                    let code = response_code_name(*other);
                    miss(&code, format!("{code} from {servers}"), false)
                }
            },
            NetError::Timeout => {
                let within = format!("no answer within {}", Elapsed(self.query_timeout));
                miss(
                    &within,
                    format!(
                        "no answer from {servers} within {}",
                        Elapsed(self.query_timeout)
                    ),
                    false,
                )
            }
            NetError::Io(e) => {
                let reason = crate::reason::io(e);
                miss(
                    &format!("unreachable ({reason})"),
                    format!("{servers} unreachable ({reason})"),
                    false,
                )
            }
            NetError::NoConnections => miss(
                "no connection",
                format!("no connection to {servers}"),
                false,
            ),
            NetError::Proto(detail) => Miss {
                detail: Some(detail.to_string()),
                ..miss(
                    "an answer that cannot be read",
                    format!("an answer from {servers} that cannot be read"),
                    false,
                )
            },
            other => Miss {
                detail: Some(other.to_string()),
                ..miss(
                    "no usable answer",
                    format!("no usable answer from {servers}"),
                    false,
                )
            },
        }
    }

    /// The hosts file answers first, as `hosts: files dns` does for every libc: a name it
    /// knows needs no nameserver (a scratch image with only `localhost`, a pod with
    /// hostAliases) and never waits for one, even for the address family it lacks. Like
    /// glibc's files backend it matches the name as written, without the search list.
    fn hosts_file_answer(&self, name: &Name) -> Option<Vec<IpAddr>> {
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

fn trace_line(asked: &str, miss: &Miss) -> String {
    match &miss.detail {
        Some(detail) => format!("{asked}: {} ({detail})", miss.bare),
        None => format!("{asked}: {}", miss.bare),
    }
}

/// `cannot resolve mysvc.test: NXDOMAIN (no such name)` for a name asked as it is, or every
/// candidate with what it got: `cannot resolve mydb: mydb.ns.svc.cluster.local NXDOMAIN,
/// mydb.svc.cluster.local NXDOMAIN, mydb REFUSED by 10.0.0.10`.
fn cannot_resolve(typed: &str, name: &Name, misses: &[(Name, Miss)]) -> String {
    match misses {
        [(only, miss)] if shown(only) == shown(name) => {
            let explained = if miss.bare == "NXDOMAIN" {
                "NXDOMAIN (no such name)".to_owned()
            } else {
                miss.text.clone()
            };
            format!("cannot resolve {typed}: {explained}")
        }
        _ => {
            let each: Vec<String> = misses
                .iter()
                .map(|(candidate, miss)| format!("{} {}", shown(candidate), miss.text))
                .collect();
            format!("cannot resolve {typed}: {}", each.join(", "))
        }
    }
}

/// `SRV`, `AAAA`: the record type as DNS tools write it.
pub fn record_type_name(kind: RecordType) -> String {
    let text = kind.to_string();
    text.to_ascii_uppercase()
}

fn response_code_name(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        ResponseCode::NotZone => "NOTZONE".into(),
        ResponseCode::YXDomain => "YXDOMAIN".into(),
        ResponseCode::YXRRSet => "YXRRSET".into(),
        ResponseCode::NXRRSet => "NXRRSET".into(),
        other => format!("response code {}", u16::from(other)),
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
        .map_err(|e| format!("reading {}: {}", path.display(), crate::reason::io(&e)))?;
    hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|error| match error {
        // hickory's words for a file without a `nameserver` line.
        NetError::Io(e) if e.to_string().contains("no nameservers") => {
            format!("{} names no nameserver", path.display())
        }
        _ => format!(
            "{} cannot be used: a search domain in it is not a valid name",
            path.display()
        ),
    })
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

/// Where names are resolved: the pod's resolv.conf and hosts file, or explicit nameservers.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Name resolution")]
pub struct ResolverArgs {
    /// Ask this nameserver instead of those in resolv.conf (search domains are kept).
    /// Repeatable, or comma-separated.
    #[arg(
        long,
        env = "INITBOX_NAMESERVER",
        value_name = "IP[:PORT]",
        value_delimiter = ','
    )]
    pub nameserver: Vec<Nameserver>,
    /// The resolver configuration to read.
    #[arg(
        long,
        env = "INITBOX_RESOLV_CONF",
        value_name = "FILE",
        default_value = DEFAULT_RESOLV_CONF
    )]
    pub resolv_conf: PathBuf,
    /// The hosts file to read.
    #[arg(
        long,
        env = "INITBOX_HOSTS_FILE",
        value_name = "FILE",
        default_value = DEFAULT_HOSTS_FILE
    )]
    pub hosts_file: PathBuf,
}

impl ResolverArgs {
    /// The resolver these flags describe, for queries bounded by `query_timeout`.
    pub fn resolver(&self, query_timeout: Duration) -> Resolver {
        Resolver::new(&self.settings(query_timeout))
    }

    pub fn settings(&self, query_timeout: Duration) -> ResolverSettings {
        ResolverSettings {
            nameservers: self.nameserver.clone(),
            resolv_conf: self.resolv_conf.clone(),
            hosts_file: self.hosts_file.clone(),
            query_timeout,
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

    #[test]
    fn host_names_are_checked_as_glibc_and_dig_take_them() {
        let label63 = "a".repeat(63);
        let name253 = format!("{label63}.{label63}.{label63}.{}", "b".repeat(61));
        assert_eq!(name253.len(), 253);
        for good in [
            "my_db",
            "_postgres._tcp.mydb",
            "mydb.",
            "a-b.c",
            "MyDB.Example",
            "10.0.0.1",
            "[::1]",
            "fd00::1",
            "bücher.example",
            &label63,
            &name253,
            &format!("{name253}."),
        ] {
            assert_eq!(check_host_name(good), Ok(()), "{good}");
        }
        let label64 = "a".repeat(64);
        let name254 = format!("{name253}b");
        let cases = [
            ("", "empty"),
            (".", "root"),
            ("a..b", "empty label"),
            (".a", "empty label"),
            ("a.b..", "empty label"),
            (&label64, "64 bytes long; a label holds at most 63"),
            (&name254, "254 bytes long; a name holds at most 253"),
            ("-a.b", "starts with '-'"),
            ("a b", "a space"),
            ("a/b", "'/'"),
            ("a*b", "'*'"),
        ];
        for (bad, why) in cases {
            let error = check_host_name(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
            assert!(!error.contains("Err("), "{bad}: {error}");
        }
    }

    fn with_search(search: &[&str], ndots: usize) -> Resolver {
        let base = Resolver::new(&ResolverSettings {
            nameservers: vec!["127.0.0.1:5353".parse().unwrap()],
            resolv_conf: "/nonexistent/resolv.conf".into(),
            hosts_file: "/nonexistent/hosts".into(),
            query_timeout: Duration::from_secs(1),
        });
        Resolver {
            search: search.iter().map(|d| to_name(d).unwrap()).collect(),
            ndots,
            ..base
        }
    }

    #[test]
    fn the_search_list_is_walked_in_glibc_order() {
        let k8s = with_search(&["ns.svc.cluster.local", "svc.cluster.local"], 5);
        assert_eq!(
            k8s.completions("my_db"),
            [
                "my_db.ns.svc.cluster.local",
                "my_db.svc.cluster.local",
                "my_db"
            ]
        );
        assert_eq!(k8s.completions("mydb.example."), ["mydb.example"]);
        let dotted = with_search(&["example"], 1);
        assert_eq!(dotted.completions("a.b"), ["a.b", "a.b.example"]);
        assert_eq!(dotted.completions("a"), ["a.example", "a"]);
        assert_eq!(k8s.servers.as_ref(), "127.0.0.1:5353");
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
            Err(Failure::Fatal(Error::Config(message))) => {
                assert!(message.contains("--nameserver"), "{message}");
                assert!(message.contains("/nonexistent/resolv.conf"), "{message}");
            }
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }
}
