//! The client itself: one reqwest setup for every HTTP command (rustls, the shared hickory
//! resolver, a redirect policy that names loops, a fresh connection per attempt), and the
//! request and body helpers every command sends and reads with.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderValue;
use reqwest::redirect::Policy;
use reqwest::{Method, Url};
use rustls::ClientConfig;

use super::{Header, TlsArgs, tls_config};
use crate::exit::{Error, Result};
use crate::redact;
use crate::resolve::Resolver;
use crate::wait::Failure;

pub const USER_AGENT: &str = concat!("initbox/", env!("CARGO_PKG_VERSION"));

/// How many redirects register and fetch follow.
pub const MAX_REDIRECTS: usize = 10;

/// How redirects are treated by one command.
pub enum Redirects {
    /// Report the 3xx itself (probes: a redirect is an answer).
    Keep,
    /// Follow up to this many.
    Follow(usize),
}

/// The client every HTTP command uses; `transfer_timeout` bounds connecting and each
/// stalled read (register, fetch), where the wait engine's attempt timeout would cut a
/// long download short.
pub fn build_client(
    tls: &TlsArgs,
    resolver: Resolver,
    redirects: Redirects,
    transfer_timeout: Option<Duration>,
) -> Result<reqwest::Client> {
    build_client_with(
        tls_config(tls)?,
        resolver,
        redirects,
        transfer_timeout,
        Connections::FreshPerRequest,
    )
}

/// Whether a client keeps its connections between requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// Every request opens a fresh connection: a kept-alive socket proves nothing about
    /// whether the server accepts connections now, and none is left behind. What a check of
    /// a server's readiness needs.
    FreshPerRequest,
    /// Kept and reused: the Kubernetes API server is a given, not what is waited for, and a
    /// look after a watch event should cost a round trip, not a TLS handshake.
    Reused,
}

/// [`build_client`] with a TLS setup of the caller's ([`build_tls`]) and its choice of
/// connections: the Kubernetes commands trust the cluster's CA alone and reuse connections.
pub fn build_client_with(
    config: ClientConfig,
    resolver: Resolver,
    redirects: Redirects,
    transfer_timeout: Option<Duration>,
    connections: Connections,
) -> Result<reqwest::Client> {
    let policy = match redirects {
        Redirects::Keep => Policy::none(),
        Redirects::Follow(limit) => following(limit),
    };
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .dns_resolver(Arc::new(HickoryResolve(resolver)))
        .user_agent(USER_AGENT)
        .redirect(policy);
    if connections == Connections::FreshPerRequest {
        builder = builder.pool_max_idle_per_host(0);
    }
    if let Some(limit) = transfer_timeout {
        builder = builder.connect_timeout(limit).read_timeout(limit);
    }
    builder
        .build()
        .map_err(|e| Error::Config(format!("setting up the HTTP client: {e}")))
}

/// Follows up to `limit` redirects; a redirect back to a URL already visited is a loop,
/// reported as one at the first repetition (a loop never heals: it fails the run at once,
/// see [`classify`]).
fn following(limit: usize) -> Policy {
    Policy::custom(move |attempt| {
        if attempt.previous().iter().any(|seen| seen == attempt.url()) {
            let error = RedirectProblem(format!(
                "redirect loop: {} redirects back to {}, visited before",
                attempt
                    .previous()
                    .last()
                    .map(redact::url)
                    .unwrap_or_default(),
                redact::url(attempt.url())
            ));
            attempt.error(error)
        } else if attempt.previous().len() > limit {
            let error = RedirectProblem(format!(
                "more than {limit} redirects (the last to {})",
                redact::url(attempt.url())
            ));
            attempt.error(error)
        } else {
            attempt.follow()
        }
    })
}

/// A redirect chain that cannot end well: a loop, or longer than the limit.
#[derive(Debug)]
pub(super) struct RedirectProblem(pub(super) String);

impl fmt::Display for RedirectProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl StdError for RedirectProblem {}

/// The blocking client gix builds for git over HTTP(S), set up like [`build_client`].
pub fn configure_blocking(
    builder: reqwest::blocking::ClientBuilder,
    tls: ClientConfig,
    resolver: Resolver,
) -> reqwest::blocking::ClientBuilder {
    builder
        .use_preconfigured_tls(tls)
        .dns_resolver(Arc::new(HickoryResolve(resolver)))
        .user_agent(USER_AGENT)
}

/// reqwest resolves through the shared hickory resolver, so search domains, ndots and
/// `--nameserver` mean the same for HTTP as for wait-for-dns.
struct HickoryResolve(Resolver);

/// A lookup failure carried through reqwest, so the probe can tell fatal from retryable.
#[derive(Debug)]
pub struct ResolveError(pub Failure);

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl StdError for ResolveError {}

impl ResolveError {
    /// What the failed lookup means for the attempt: a name that does not exist is
    /// configuration (exit 78), anything else is retried.
    pub fn failure(&self) -> Failure {
        match &self.0 {
            Failure::Retry(reason) => Failure::Retry(reason.clone()),
            Failure::Fatal(error) => Failure::Fatal(crate::exit::Error::Config(error.to_string())),
        }
    }
}

impl reqwest::dns::Resolve for HickoryResolve {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let ips = resolver.lookup_ip(&host).await.map_err(|failure| {
                Box::new(ResolveError(failure)) as Box<dyn StdError + Send + Sync>
            })?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| std::net::SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// A request with its headers and body, as every HTTP command sends it. A header given by
/// the user replaces one reqwest derives (an `Authorization` from the URL's userinfo), as
/// in curl; the same header given twice is sent twice. A POST, PUT or PATCH without a body
/// says `Content-Length: 0`: without it some servers and proxies wait for a body, or
/// refuse the request with 411 Length Required.
pub fn request(
    client: &reqwest::Client,
    method: &Method,
    url: &Url,
    headers: &[Header],
    body: Option<Vec<u8>>,
) -> reqwest::RequestBuilder {
    let mut given = reqwest::header::HeaderMap::new();
    for header in headers {
        given.append(header.name.clone(), header.value.clone());
    }
    let needs_length = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    if body.is_none() && needs_length && !given.contains_key(reqwest::header::CONTENT_LENGTH) {
        given.insert(
            reqwest::header::CONTENT_LENGTH,
            HeaderValue::from_static("0"),
        );
    }
    let builder = client.request(method.clone(), url.clone()).headers(given);
    match body {
        Some(body) => builder.body(body),
        None => builder,
    }
}

/// Up to `limit` bytes of the body, and whether there was more.
pub async fn read_body(
    response: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = limit - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if chunk.len() > room || body.len() == limit {
            return Ok((body, true));
        }
    }
    Ok((body, false))
}
