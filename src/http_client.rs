//! The one HTTP client setup: rustls with the Mozilla roots compiled in (so TLS works in a
//! scratch image with no CA bundle), the system store where one exists (SSL_CERT_FILE and
//! SSL_CERT_DIR included), `--cacert` files on top, `--insecure` only when asked for, name
//! resolution through the shared hickory resolver, proxies from the environment, and a
//! User-Agent naming initbox.

use std::error::Error as StdError;
use std::path::PathBuf;
use std::sync::Arc;

use reqwest::redirect::Policy;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::exit::{Error, Result};
use crate::report;
use crate::resolve::{LookupFailure, Resolver, io_reason};

pub const USER_AGENT: &str = concat!("initbox/", env!("CARGO_PKG_VERSION"));

/// TLS trust flags shared by every command that speaks HTTPS.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Also trust the CA certificates in this PEM file (repeatable). SSL_CERT_FILE and
    /// SSL_CERT_DIR are honoured too.
    #[arg(long, env = "INITBOX_CACERT", value_name = "FILE")]
    pub cacert: Vec<PathBuf>,
    /// Do not verify TLS certificates at all (logged as a warning).
    #[arg(long, env = "INITBOX_INSECURE")]
    pub insecure: bool,
}

/// How redirects are treated by one command.
pub enum Redirects {
    /// Report the 3xx itself (probes: a redirect is an answer).
    Keep,
    /// Follow up to this many.
    Follow(usize),
}

pub fn build_client(
    tls: &TlsArgs,
    resolver: Resolver,
    redirects: Redirects,
) -> Result<reqwest::Client> {
    let config = tls_config(tls)?;
    let policy = match redirects {
        Redirects::Keep => Policy::none(),
        Redirects::Follow(limit) => Policy::limited(limit),
    };
    reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .dns_resolver(Arc::new(HickoryResolve(resolver)))
        .user_agent(USER_AGENT)
        .redirect(policy)
        // Every attempt opens a fresh connection: a kept-alive socket proves nothing about
        // whether the server accepts connections now, and none is left behind.
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| Error::Config(format!("setting up the HTTP client: {e}")))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_config(tls: &TlsArgs) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let system = rustls_native_certs::load_native_certs();
    let (added, _ignored) = roots.add_parsable_certificates(system.certs);
    report::debug(
        "tls.roots",
        format!(
            "trusting {} bundled and {added} system CA certificates",
            webpki_roots::TLS_SERVER_ROOTS.len()
        ),
    );
    for path in &tls.cacert {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
            .map_err(|e| {
                Error::Config(format!("reading CA certificate {}: {e}", path.display()))
            })?;
        if certs.is_empty() {
            return Err(Error::Config(format!(
                "reading CA certificate {}: no PEM certificate found",
                path.display()
            )));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| {
                Error::Config(format!("reading CA certificate {}: {e}", path.display()))
            })?;
        }
    }
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("setting up TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // The client speaks HTTP/1.1 only; say so, or an h2 server would pick a protocol we lack.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if tls.insecure {
        report::warn(
            "tls.insecure",
            "--insecure: TLS certificates are NOT verified; anyone on the path can impersonate the server",
        );
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(AcceptAnyCertificate(
                provider.signature_verification_algorithms,
            )));
    }
    Ok(config)
}

/// `--insecure`: accepts any certificate but still checks handshake signatures.
#[derive(Debug)]
struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// reqwest resolves through the shared hickory resolver, so search domains, ndots and
/// `--nameserver` mean the same for HTTP as for wait-for-dns.
struct HickoryResolve(Resolver);

/// A lookup failure carried through reqwest, so the probe can tell fatal from retryable.
#[derive(Debug)]
pub struct ResolveError(pub LookupFailure);

impl std::fmt::Display for ResolveError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            LookupFailure::Retry(reason) => f.write_str(reason),
            LookupFailure::Fatal(error) => write!(f, "{error}"),
        }
    }
}

impl StdError for ResolveError {}

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

/// What went wrong with a request, in words a user can act on.
pub enum RequestFailure {
    Retry(String),
    Fatal(Error),
}

impl From<RequestFailure> for crate::wait::Attempt {
    fn from(failure: RequestFailure) -> Self {
        match failure {
            RequestFailure::Retry(reason) => crate::wait::Attempt::NotYet(reason),
            RequestFailure::Fatal(error) => crate::wait::Attempt::Fatal(error),
        }
    }
}

pub fn classify(error: &reqwest::Error) -> RequestFailure {
    let causes = causes(error);
    for cause in &causes {
        if let Some(resolve) = cause.downcast_ref::<ResolveError>() {
            return match &resolve.0 {
                LookupFailure::Retry(reason) => RequestFailure::Retry(reason.clone()),
                LookupFailure::Fatal(error) => {
                    RequestFailure::Fatal(Error::Config(error.to_string()))
                }
            };
        }
    }
    if let Some(tls) = causes
        .iter()
        .find_map(|c| c.downcast_ref::<rustls::Error>())
    {
        return RequestFailure::Retry(describe_tls(tls));
    }
    if let Some(io) = causes
        .iter()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
    {
        return RequestFailure::Retry(io_reason(io));
    }
    if error.is_timeout() {
        return RequestFailure::Retry("timed out".into());
    }
    RequestFailure::Retry(match causes.last() {
        Some(cause) => cause.to_string(),
        None => error.to_string(),
    })
}

/// Every cause under a reqwest error, innermost last. An io::Error's `source()` skips the
/// error it wraps, so that one is looked into explicitly (rustls errors hide there).
fn causes<'a>(error: &'a reqwest::Error) -> Vec<&'a (dyn StdError + 'static)> {
    let mut found: Vec<&(dyn StdError + 'static)> = Vec::new();
    let mut pending: Vec<&(dyn StdError + 'static)> = error.source().into_iter().collect();
    while let Some(cause) = pending.pop() {
        found.push(cause);
        if let Some(inner) = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            pending.push(inner);
        } else if let Some(next) = cause.source() {
            pending.push(next);
        }
        if found.len() > 32 {
            break;
        }
    }
    found
}

fn describe_tls(error: &rustls::Error) -> String {
    use rustls::{CertificateError, Error as E};
    match error {
        E::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "TLS: the server certificate is signed by an unknown CA (trust it with --cacert FILE)"
                .into()
        }
        E::InvalidCertificate(CertificateError::NotValidForName)
        | E::InvalidCertificate(CertificateError::NotValidForNameContext { .. }) => {
            "TLS: the server certificate is not valid for this host name".into()
        }
        E::InvalidCertificate(CertificateError::Expired)
        | E::InvalidCertificate(CertificateError::ExpiredContext { .. }) => {
            "TLS: the server certificate has expired".into()
        }
        other => format!("TLS: {other}"),
    }
}

/// A URL safe to print: userinfo is replaced, so a password never reaches a log.
pub fn redact_url(url: &reqwest::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    let _ = shown.set_username("***");
    let _ = shown.set_password(None);
    shown.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_never_shows() {
        let url: reqwest::Url = "https://admin:s3cret@example.test/x".parse().unwrap();
        let shown = redact_url(&url);
        assert!(
            !shown.contains("s3cret") && !shown.contains("admin"),
            "{shown}"
        );
        assert_eq!(shown, "https://***@example.test/x");
        let plain: reqwest::Url = "http://example.test/".parse().unwrap();
        assert_eq!(redact_url(&plain), "http://example.test/");
    }
}
