//! What the protocol checks (wait-for-postgres, -mysql, -redis, -zookeeper, -amqp, -nats)
//! share: a target written as `HOST[:PORT]` or as the protocol's own URL, a connection to
//! the first address of the host that accepts, and secrets that come only from a file or
//! the environment, never from the command line (visible in `ps` and in the pod spec).

use std::fmt;
use std::marker::PhantomData;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

use tokio::net::TcpStream;

use crate::checks::tcp::{self, HostPort};
use crate::exit::{Error, Result};
use crate::redact;
use crate::resolve::Resolver;
use crate::wait::Failure;

/// The facts about one protocol that parsing a target needs.
pub trait Protocol: Send + Sync + 'static {
    /// The server's name in messages: `PostgreSQL`.
    const NAME: &'static str;
    /// The URL schemes a user may write: `postgres`, `postgresql`.
    const SCHEMES: &'static [&'static str];
    const DEFAULT_PORT: u16;
    /// Where a password goes instead of the URL: `--password-file (or PGPASSWORD)`.
    const PASSWORD_SOURCE: &'static str;
}

/// A server to check, as `HOST`, `HOST:PORT`, `[IPv6]:PORT` or `SCHEME://[USER@]HOST[:PORT][/PATH]`.
/// A URL's user and path (the database, the vhost, the Redis database number) are kept for
/// the check to use; a password in it is refused.
pub struct Service<P> {
    /// A name or an IP literal, without brackets.
    pub host: String,
    pub port: u16,
    /// The URL's user, percent-decoded.
    pub user: Option<String>,
    /// The URL's path without its leading `/`, percent-decoded; `None` when empty.
    pub path: Option<String>,
    /// The URL's query parameters (`?sslmode=require`), for the check to honour or refuse.
    pub query: Vec<(String, String)>,
    protocol: PhantomData<fn() -> P>,
}

impl<P> Service<P> {
    /// `host:port`, with brackets around an IPv6 literal: the label of every message.
    pub fn address(&self) -> HostPort {
        HostPort {
            host: self.host.clone(),
            port: self.port,
        }
    }
}

// Written by hand: a derive would demand `P: Clone`/`P: Debug` of the marker type.
impl<P> Clone for Service<P> {
    fn clone(&self) -> Self {
        Service {
            host: self.host.clone(),
            port: self.port,
            user: self.user.clone(),
            path: self.path.clone(),
            query: self.query.clone(),
            protocol: PhantomData,
        }
    }
}

impl<P> fmt::Debug for Service<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("path", &self.path)
            .field("query", &self.query)
            .finish()
    }
}

impl<P> fmt::Display for Service<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.address().fmt(f)
    }
}

impl<P: Protocol> FromStr for Service<P> {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        if text.contains("://") {
            return parse_url(text);
        }
        // A bare IPv6 literal has no room for a port; bracketed or not, it gets the default.
        let with_port = if text.parse::<Ipv6Addr>().is_ok() {
            format!("[{text}]:{}", P::DEFAULT_PORT)
        } else if (text.starts_with('[') && text.ends_with(']'))
            || (!text.starts_with('[') && !text.contains(':'))
        {
            format!("{text}:{}", P::DEFAULT_PORT)
        } else {
            text.to_owned()
        };
        let target: HostPort = with_port
            .parse()
            .map_err(|e: String| e.replace(&format!("'{with_port}'"), &format!("'{text}'")))?;
        Ok(Service {
            host: target.host,
            port: target.port,
            user: None,
            path: None,
            query: Vec::new(),
            protocol: PhantomData,
        })
    }
}

fn parse_url<P: Protocol>(text: &str) -> std::result::Result<Service<P>, String> {
    let schemes = P::SCHEMES
        .iter()
        .map(|scheme| format!("{scheme}://"))
        .collect::<Vec<_>>()
        .join(" or ");
    let bad = |why: &str| format!("'{text}' is not a {} URL: {why}", P::NAME);
    let url = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if url.password().is_some() {
        // Never echo the URL itself: it holds the password.
        return Err(format!(
            "the {} URL has a password in it; a command line is visible in `ps` and in the pod \
             spec, so put the password in a file and use {} instead",
            P::NAME,
            P::PASSWORD_SOURCE
        ));
    }
    if !P::SCHEMES.contains(&url.scheme()) {
        return Err(bad(&format!("it must start with {schemes}")));
    }
    let host = match url.host() {
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        Some(host) => host.to_string(),
        None => return Err(bad("the host is missing")),
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    crate::resolve::check_host_name(&host).map_err(|why| bad(&why))?;
    let port = match url.port() {
        Some(0) => return Err(bad("port 0 cannot be connected to")),
        Some(port) => port,
        None => P::DEFAULT_PORT,
    };
    let decode = |part: &str| redact::percent_decoded(part);
    let user = Some(url.username()).filter(|u| !u.is_empty()).map(decode);
    let path = Some(url.path().trim_start_matches('/'))
        .filter(|p| !p.is_empty())
        .map(decode);
    let query = url
        .query_pairs()
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect();
    Ok(Service {
        host,
        port,
        user,
        path,
        query,
        protocol: PhantomData,
    })
}

/// Opens a TCP connection to the first address of `target.host` that accepts (all are
/// tried at once, as wait-for-tcp does). The host is looked up afresh on every call, so a
/// server that moves to a new address is followed.
pub async fn connect(
    resolver: &Resolver,
    target: &HostPort,
) -> std::result::Result<(TcpStream, SocketAddr), Failure> {
    let ips = resolver.lookup_ip(&target.host).await?;
    let addrs: Vec<SocketAddr> = ips
        .into_iter()
        .map(|ip| SocketAddr::new(ip, target.port))
        .collect();
    tcp::connect_first(&addrs).await
}

/// Starts TLS on `stream` (a server that switched to TLS after a plain-text request, as
/// PostgreSQL's SSLRequest, or one that speaks TLS from the start), checking the
/// certificate against `server_name`. `config` comes from [`crate::http_client::tls_config`]
/// (the same roots, `--cacert`, client certificate and `--insecure` as HTTPS), with its
/// ALPN set by the caller. A certificate or configuration problem is fatal; a handshake cut
/// short by a restarting server is worth another attempt.
pub async fn start_tls(
    stream: TcpStream,
    server_name: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> std::result::Result<tokio_rustls::client::TlsStream<TcpStream>, Failure> {
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(|_| {
        Failure::Fatal(Error::Usage(format!(
            "'{server_name}' cannot be checked against a TLS certificate"
        )))
    })?;
    let connector = tokio_rustls::TlsConnector::from(config);
    connector.connect(name, stream).await.map_err(|error| {
        let tls = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>());
        match tls {
            Some(tls) if crate::http_client::is_tls_configuration(tls) => {
                Failure::Fatal(Error::Failed(crate::http_client::describe_tls(tls)))
            }
            Some(tls) => Failure::Retry(crate::http_client::describe_tls(tls)),
            None => Failure::Retry(format!("TLS handshake: {}", crate::reason::io(&error))),
        }
    })
}

/// The password for a check: the contents of `file` when given, else the environment
/// variable `env` (PGPASSWORD, REDISCLI_AUTH, …) when set and not empty. Either way it is
/// concealed, so no message, log line or echoed server error can show it. The variable is
/// read as every task reads one ([`crate::expand::var`]): in a pipeline step, the file's
/// `env:` map comes before the process environment.
pub fn password(file: Option<&Path>, env: &str) -> Result<Option<String>> {
    if let Some(file) = file {
        return redact::read_secret_file(file, "password file").map(Some);
    }
    match crate::expand::var(env) {
        Some(value) if !value.is_empty() => {
            redact::conceal(&value);
            Ok(Some(value))
        }
        Some(_) => Ok(None),
        // `expand::var` leaves out a value that is not UTF-8: say so rather than ignore it.
        None if std::env::var_os(env).is_some() => {
            Err(Error::Config(format!("{env} is not valid UTF-8")))
        }
        None => Ok(None),
    }
}

/// What a server said, fit for a message: control characters (a hostile or confused server
/// could move the cursor, clear the screen) replaced by `?`, at most 200 characters.
pub fn shorten(text: &str) -> String {
    const LIMIT: usize = 200;
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    match clean.char_indices().nth(LIMIT) {
        Some((at, _)) => format!("{}…", &clean[..at]),
        None => clean,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Postgres;
    impl Protocol for Postgres {
        const NAME: &'static str = "PostgreSQL";
        const SCHEMES: &'static [&'static str] = &["postgres", "postgresql"];
        const DEFAULT_PORT: u16 = 5432;
        const PASSWORD_SOURCE: &'static str = "--password-file (or PGPASSWORD)";
    }

    fn parse(text: &str) -> std::result::Result<Service<Postgres>, String> {
        text.parse()
    }

    #[test]
    fn hosts_get_the_default_port() {
        for (text, host, port) in [
            ("db", "db", 5432),
            ("db:6543", "db", 6543),
            ("10.0.0.1", "10.0.0.1", 5432),
            ("::1", "::1", 5432),
            ("[::1]", "::1", 5432),
            ("[::1]:6543", "::1", 6543),
        ] {
            let service = parse(text).unwrap();
            assert_eq!(
                (service.host.as_str(), service.port),
                (host, port),
                "{text}"
            );
        }
        assert_eq!(parse("::1").unwrap().to_string(), "[::1]:5432");
    }

    #[test]
    fn urls_give_user_path_and_query() {
        let service =
            parse("postgresql://app%40corp@db.ns.svc:6543/orders?sslmode=require").unwrap();
        assert_eq!(service.host, "db.ns.svc");
        assert_eq!(service.port, 6543);
        assert_eq!(service.user.as_deref(), Some("app@corp"));
        assert_eq!(service.path.as_deref(), Some("orders"));
        assert_eq!(service.query, [("sslmode".into(), "require".into())]);
        let plain = parse("postgres://[::1]/").unwrap();
        assert_eq!((plain.host.as_str(), plain.port), ("::1", 5432));
        assert_eq!((plain.user, plain.path), (None, None));
    }

    #[test]
    fn a_password_in_a_url_is_refused_without_echoing_it() {
        let error = parse("postgres://app:hunter2@db/orders").unwrap_err();
        assert!(error.contains("--password-file"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }

    #[test]
    fn wrong_schemes_and_hosts_are_refused_naming_the_value() {
        for (text, expected) in [
            ("mysql://db/x", "postgres:// or postgresql://"),
            ("postgres:///x", "host is missing"),
            ("postgres://db:0/x", "port 0"),
            ("db:0", "port 0"),
            ("my!db", "'!'"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(error.contains(&format!("'{text}'")), "{text}: {error}");
        }
    }
}
