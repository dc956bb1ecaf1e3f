//! wait-for-tcp: one attempt = resolve the host afresh, connect to every address at once,
//! and close the first connection that succeeds straight away.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::resolve::ResolverArgs;
use crate::resolve::{self, Resolver, Trace};
use crate::wait::WaitArgs;
use crate::wait::{self, Attempt, Failure, Probe};

/// Wait until TCP ports accept connections.
#[derive(Debug, Clone, clap::Args)]
pub struct TcpArgs {
    /// Targets as HOST:PORT; IPv6 literals in brackets: [::1]:80.
    #[arg(required = true, value_name = "HOST:PORT")]
    pub targets: Vec<HostPort>,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

/// A `host:port` target as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// A name or an IP literal, without brackets.
    pub host: String,
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| format!("'{text}' is not a valid HOST:PORT: {why}");
        if text.contains("://") {
            return Err(bad("this is a URL (wait-for-http takes URLs)"));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("missing ']' after the IPv6 address"))?;
            let port = after
                .strip_prefix(':')
                .ok_or_else(|| bad("missing :PORT after the IPv6 address"))?;
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(bad("brackets hold an IPv6 address"));
            }
            (host, port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or_else(|| bad("missing :PORT"))?;
            if host.contains(':') {
                return Err(bad("IPv6 addresses need brackets, as in [::1]:80"));
            }
            (host, port)
        };
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if host.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(bad("the host contains a space or '/'"));
        }
        resolve::check_host_name(host).map_err(|why| bad(&why))?;
        let port: u16 = match port.parse() {
            Ok(0) => return Err(bad("port 0 cannot be connected to")),
            Ok(port) => port,
            Err(_) if port.is_empty() => return Err(bad("the port is empty")),
            Err(_) => return Err(bad("the port must be a number from 1 to 65535")),
        };
        Ok(HostPort {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

pub struct TcpProbe {
    target: HostPort,
    label: String,
    resolver: Resolver,
    /// `-v`: the addresses tried and what each did, when that changes.
    trace: Trace,
}

impl TcpProbe {
    pub fn new(target: HostPort, resolver: Resolver) -> Self {
        TcpProbe {
            label: target.to_string(),
            target,
            resolver,
            trace: Trace::default(),
        }
    }
}

impl Probe for TcpProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt {
        // IP literals come back as they are, without a lookup.
        let ips = match self.resolver.lookup_ip(&self.target.host).await {
            Ok(ips) => ips,
            Err(failure) => return failure.into(),
        };
        let addrs: Vec<SocketAddr> = ips
            .into_iter()
            .map(|ip| SocketAddr::new(ip, self.target.port))
            .collect();
        let (attempt, tried) = connect_any(&addrs).await;
        let listed: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        let mut lines = vec![format!(
            "{}: connecting to {}",
            self.label,
            listed.join(", ")
        )];
        lines.extend(
            tried
                .into_iter()
                .map(|(addr, result)| format!("{}: {addr}: {result}", self.label)),
        );
        self.trace.emit("tcp.connect", &self.label, lines);
        attempt
    }
}

/// Connects to all addresses at once; the first success wins and is closed at once. Also
/// says what each address that finished did, for `-v`.
async fn connect_any(addrs: &[SocketAddr]) -> (Attempt, Vec<(SocketAddr, String)>) {
    let (attempt, failures, connected) = connect_all(addrs).await;
    let mut tried: Vec<(SocketAddr, String)> = failures
        .iter()
        .map(|(addr, error)| (*addr, reason::io(error)))
        .collect();
    if let Some(addr) = connected {
        tried.push((addr, "connected".into()));
    }
    (attempt, tried)
}

type Outcomes = (Attempt, Vec<(SocketAddr, io::Error)>, Option<SocketAddr>);

async fn connect_all(addrs: &[SocketAddr]) -> Outcomes {
    match race(addrs).await {
        // Dropping the stream closes it; the other connects were aborted with their set.
        (Ok((stream, addr)), failures) => {
            drop(stream);
            (
                Attempt::ready(format!("connected to {addr}")),
                failures,
                Some(addr),
            )
        }
        (Err(failure), failures) => (failure.into(), failures, None),
    }
}

/// Connects to all addresses at once and keeps the first connection that succeeds, for a
/// check that goes on to speak a protocol over it (wait-for-postgres, …).
pub async fn connect_first(addrs: &[SocketAddr]) -> Result<(TcpStream, SocketAddr), Failure> {
    race(addrs).await.0
}

type Race = (
    Result<(TcpStream, SocketAddr), Failure>,
    Vec<(SocketAddr, io::Error)>,
);

/// The first address to accept wins; without one, why not (permission denied is fatal: a
/// firewall or route will not change its mind).
async fn race(addrs: &[SocketAddr]) -> Race {
    let mut attempts = JoinSet::new();
    for &addr in addrs {
        attempts.spawn(async move { (addr, TcpStream::connect(addr).await) });
    }
    let mut failures: Vec<(SocketAddr, io::Error)> = Vec::new();
    while let Some(joined) = attempts.join_next().await {
        let Ok((addr, result)) = joined else { continue };
        match result {
            Ok(stream) => return (Ok((stream, addr)), failures),
            Err(error) => failures.push((addr, error)),
        }
    }
    if let Some((addr, _)) = failures
        .iter()
        .find(|(_, e)| e.kind() == io::ErrorKind::PermissionDenied)
    {
        let fatal = Failure::Fatal(Error::Failed(format!(
            "connecting to {addr}: permission denied (a firewall or route forbids it; retrying cannot help)"
        )));
        return (Err(fatal), failures);
    }
    let reason = Failure::Retry(summarize(&failures));
    (Err(reason), failures)
}

/// `connection refused`, or per address when they differ.
fn summarize(failures: &[(SocketAddr, io::Error)]) -> String {
    let reasons: Vec<String> = failures.iter().map(|(_, e)| reason::io(e)).collect();
    if reasons.windows(2).all(|w| w[0] == w[1]) {
        return reasons
            .into_iter()
            .next()
            .unwrap_or_else(|| "no address".into());
    }
    failures
        .iter()
        .zip(&reasons)
        .map(|((addr, _), reason)| format!("{addr}: {reason}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl crate::cli::Task for TcpArgs {
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

pub async fn run(args: TcpArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let probes = args
        .targets
        .into_iter()
        .map(|target| TcpProbe::new(target, resolver.clone()))
        .collect();
    wait::wait_for_all("tcp", probes, options).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostPort, String> {
        text.parse()
    }

    #[test]
    fn parses_names_and_literals() {
        assert_eq!(
            parse("mydb:5432").unwrap(),
            HostPort {
                host: "mydb".into(),
                port: 5432
            }
        );
        assert_eq!(parse("[::1]:80").unwrap().host, "::1");
        assert_eq!(parse("[::1]:80").unwrap().to_string(), "[::1]:80");
        assert_eq!(parse("10.0.0.1:65535").unwrap().port, 65535);
    }

    #[test]
    fn rejects_what_users_mistype_naming_the_value() {
        let cases = [
            ("mydb", "missing :PORT"),
            ("mydb:", "port is empty"),
            (":80", "host is empty"),
            ("mydb:0", "port 0"),
            ("mydb:65536", "1 to 65535"),
            ("mydb:http", "1 to 65535"),
            ("::1:80", "need brackets"),
            ("[::1]", "missing :PORT"),
            ("[::1:80", "missing ']'"),
            ("[mydb]:80", "IPv6"),
            ("http://mydb:80", "URL"),
            ("my db:80", "space"),
            ("my..db:80", "empty label"),
            ("my!db:80", "'!'"),
        ];
        for (input, expected) in cases {
            let error = parse(input).unwrap_err();
            assert!(error.contains(expected), "{input}: {error}");
            assert!(error.contains(&format!("'{input}'")), "{input}: {error}");
        }
    }
}
