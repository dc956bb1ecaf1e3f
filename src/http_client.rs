//! The one HTTP client setup: rustls with the Mozilla roots compiled in (so TLS works in a
//! scratch image with no CA bundle), the system store where one exists (SSL_CERT_FILE and
//! SSL_CERT_DIR included), `--cacert` files on top, `--insecure` only when asked for, name
//! resolution through the shared hickory resolver, proxies from the environment, and a
//! User-Agent naming initbox.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::redirect::Policy;
use reqwest::{Method, Url};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    AlertDescription, CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore,
    SignatureScheme,
};

use crate::exit::{Error, Result};
use crate::reason;
use crate::resolve::{LookupFailure, Resolver};
use crate::wait::Attempt;
use crate::{expand, redact, report};

pub const USER_AGENT: &str = concat!("initbox/", env!("CARGO_PKG_VERSION"));

/// How many redirects register and fetch follow.
pub const MAX_REDIRECTS: usize = 10;

/// TLS flags shared by every command that speaks HTTPS.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "TLS")]
pub struct TlsArgs {
    /// Also trust the CA certificates in this PEM file (repeatable). SSL_CERT_FILE and
    /// SSL_CERT_DIR are honoured too.
    #[arg(long, env = "INITBOX_CACERT", value_name = "FILE")]
    pub cacert: Vec<PathBuf>,
    /// Present this client certificate (PEM, with its chain) for mutual TLS.
    #[arg(long, env = "INITBOX_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The private key of --cert (PEM).
    #[arg(long, env = "INITBOX_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
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

/// The client every HTTP command uses; `transfer_timeout` bounds connecting and each
/// stalled read (register, fetch), where the wait engine's attempt timeout would cut a
/// long download short.
pub fn build_client(
    tls: &TlsArgs,
    resolver: Resolver,
    redirects: Redirects,
    transfer_timeout: Option<Duration>,
) -> Result<reqwest::Client> {
    let config = tls_config(tls)?;
    let policy = match redirects {
        Redirects::Keep => Policy::none(),
        Redirects::Follow(limit) => following(limit),
    };
    let mut builder = reqwest::Client::builder()
        .use_preconfigured_tls(config)
        .dns_resolver(Arc::new(HickoryResolve(resolver)))
        .user_agent(USER_AGENT)
        .redirect(policy)
        // Every attempt opens a fresh connection: a kept-alive socket proves nothing about
        // whether the server accepts connections now, and none is left behind.
        .pool_max_idle_per_host(0);
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
struct RedirectProblem(String);

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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls setup every HTTPS connection uses (also git's, via [`configure_blocking`]).
pub fn tls_config(tls: &TlsArgs) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let (added, _ignored) = roots.add_parsable_certificates(system_certificates().iter().cloned());
    report::debug(
        "tls.roots",
        format!(
            "trusting {} bundled and {added} system CA certificates",
            webpki_roots::TLS_SERVER_ROOTS.len()
        ),
    );
    for path in &tls.cacert {
        for cert in read_certificates(path, "CA certificate")? {
            roots.add(cert).map_err(|e| {
                Error::Config(format!("reading CA certificate {}: {e}", path.display()))
            })?;
        }
    }
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| Error::Config(format!("setting up TLS certificate checks: {e}")))?;
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("setting up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamingVerifier(verifier)));
    let mut config = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => {
            let (chain, private_key) = client_identity(cert, key)?;
            builder
                .with_client_auth_cert(chain, private_key)
                .map_err(|e| {
                    let reason = match e {
                        rustls::Error::InconsistentKeys(_) => {
                            "the key does not belong to the certificate".to_owned()
                        }
                        other => in_words(&format!("{other:?}")),
                    };
                    Error::Config(format!(
                        "client certificate {} and key {} do not go together: {reason}",
                        cert.display(),
                        key.display()
                    ))
                })?
        }
        _ => builder.with_no_client_auth(),
    };
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

/// The system's CA certificates (SSL_CERT_FILE, SSL_CERT_DIR, the distribution's bundle),
/// read once per process: a pipeline's HTTP steps share them.
fn system_certificates() -> &'static [CertificateDer<'static>] {
    static CERTIFICATES: std::sync::OnceLock<Vec<CertificateDer<'static>>> =
        std::sync::OnceLock::new();
    CERTIFICATES.get_or_init(|| rustls_native_certs::load_native_certs().certs)
}

/// The certificates in a PEM file; none at all is an error.
fn read_certificates(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            Error::Config(format!(
                "reading {what} {}: {}",
                path.display(),
                pem_reason(&e)
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "reading {what} {}: no PEM certificate found",
            path.display()
        )));
    }
    Ok(certs)
}

fn client_identity(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = read_certificates(cert, "client certificate")?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::Config(format!(
            "reading private key {}: {}",
            key.display(),
            pem_reason(&e)
        ))
    })?;
    Ok((chain, key))
}

/// A PEM file error as the other file errors read: "no such file or directory".
/// The PEM parser's own texts print byte arrays (`missing section end marker: [45, …]`).
fn pem_reason(error: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as E;
    match error {
        E::Io(io) => reason::io(io),
        E::MissingSectionEnd { .. } => {
            "a PEM section has no END line (is the file cut short?)".into()
        }
        E::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed".into(),
        E::Base64Decode(_) => "a PEM section is not valid base64".into(),
        E::NoItemsFound => "no PEM item of the expected kind found".into(),
        other => other.to_string(),
    }
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

/// The standard (webpki) verification, whose errors also say for which names the
/// certificate the server presented is valid, so "unknown CA" or "expired" tells at once
/// whether the right server answered at all.
#[derive(Debug)]
struct NamingVerifier(Arc<WebPkiServerVerifier>);

/// A certificate the verification refused, with the names it is valid for.
#[derive(Debug)]
pub struct CertificateProblem {
    pub error: CertificateError,
    /// The DNS names and IP addresses in the certificate (empty when it could not be read).
    pub names: Vec<String>,
}

impl fmt::Display for CertificateProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe_certificate(&self.error, &self.names))
    }
}

impl StdError for CertificateProblem {}

/// The names a certificate is valid for: asking it to match a name no certificate holds
/// makes webpki list them.
fn certificate_names(end_entity: &CertificateDer<'_>) -> Vec<String> {
    let Ok(parsed) = ParsedCertificate::try_from(end_entity) else {
        return Vec::new();
    };
    let probe = ServerName::try_from("name-nobody-has.invalid").expect("a valid DNS name");
    match rustls::client::verify_server_name(&parsed, &probe) {
        Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForNameContext {
            presented,
            ..
        })) => presented,
        _ => Vec::new(),
    }
}

/// A name as rustls lists it (`DnsName("a.example")`, `IpAddress(10.0.0.1)`), as written.
fn plain_name(name: &str) -> String {
    let inner = name
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or(name);
    inner.trim_matches('"').to_owned()
}

impl ServerCertVerifier for NamingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            .map_err(|error| match error {
                rustls::Error::InvalidCertificate(error) => {
                    let names = match &error {
                        CertificateError::NotValidForNameContext { presented, .. } => {
                            presented.clone()
                        }
                        _ => certificate_names(end_entity),
                    };
                    let names = names.iter().map(|name| plain_name(name)).collect();
                    rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                        Arc::new(CertificateProblem { error, names }),
                    )))
                }
                other => other,
            })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.0.root_hint_subjects()
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

/// A failed request as register, fetch and git-clone see it: a certificate or TLS setup
/// that is wrong, and a redirect loop, end the run at once (exit 1); a retry cannot heal
/// them. Connection problems, timeouts and lookups that may succeed later are retried.
pub fn classify(error: &reqwest::Error) -> RequestFailure {
    classify_with(error, true)
}

/// [`classify`] for wait-for-http, whose job is to wait until an endpoint is ready: a TLS
/// endpoint still presenting a temporary certificate (an ingress controller's default
/// one, cert-manager not done yet) is not ready *yet*, so TLS problems are retried; the
/// reason is logged at the first attempt and named again if the wait times out.
pub fn classify_probe(error: &reqwest::Error) -> RequestFailure {
    classify_with(error, false)
}

fn classify_with(error: &reqwest::Error, tls_fatal: bool) -> RequestFailure {
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
        if let Some(redirect) = cause.downcast_ref::<RedirectProblem>() {
            return RequestFailure::Fatal(Error::Failed(redirect.0.clone()));
        }
    }
    if let Some(tls) = causes
        .iter()
        .find_map(|c| c.downcast_ref::<rustls::Error>())
    {
        let reason = describe_tls(tls);
        return if tls_fatal && is_tls_configuration(tls) {
            RequestFailure::Fatal(Error::Failed(reason))
        } else {
            RequestFailure::Retry(reason)
        };
    }
    if let Some(io) = causes
        .iter()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
    {
        return RequestFailure::Retry(reason::io(io));
    }
    if error.is_timeout() {
        return RequestFailure::Retry("timed out".into());
    }
    let detail = match causes.last() {
        Some(cause) => cause.to_string(),
        None => String::new(),
    };
    if error.is_redirect() {
        return RequestFailure::Fatal(Error::Failed(format!(
            "following a redirect failed{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {}", in_words(&detail))
            }
        )));
    }
    RequestFailure::Retry(describe_transport(&detail))
}

/// hyper's and reqwest's own wording for a broken exchange, as a sentence (their Display
/// texts name internals, and a bare reqwest error repeats the URL).
fn describe_transport(detail: &str) -> String {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("connection closed before message completed")
        || lower.contains("incomplete message")
    {
        "the server closed the connection without a complete answer".into()
    } else if lower.contains("invalid http")
        || lower.contains("parse")
        || lower.contains("invalid header")
        || lower.contains("invalid status")
    {
        format!(
            "the server's answer is not valid HTTP/1.1 ({})",
            in_words(detail)
        )
    } else if detail.is_empty() {
        "the request failed".into()
    } else {
        format!("the request failed: {}", in_words(detail))
    }
}

/// Whether a TLS failure is a matter of configuration (a certificate, a missing client
/// certificate, a plain-HTTP port behind an https:// URL) rather than of the moment.
pub fn is_tls_configuration(error: &rustls::Error) -> bool {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(_)
        | E::NoCertificatesPresented
        | E::UnsupportedNameType
        | E::PeerIncompatible(_)
        | E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => true,
        E::AlertReceived(alert) => !matches!(
            alert,
            AlertDescription::InternalError
                | AlertDescription::CloseNotify
                | AlertDescription::UserCanceled
        ),
        _ => false,
    }
}

/// [`classify`] for a client built with a transfer timeout (register, fetch): a connection
/// or a read that timed out is named by the flag that set the limit, as the wait engine
/// names it for the checks, so a server that accepts and never answers says why it failed.
pub fn classify_within(error: &reqwest::Error, transfer_timeout: Duration) -> RequestFailure {
    let lookup_failed = causes(error)
        .iter()
        .any(|cause| cause.downcast_ref::<ResolveError>().is_some());
    if error.is_timeout() && !lookup_failed {
        return RequestFailure::Retry(crate::wait::no_answer_within(transfer_timeout));
    }
    classify(error)
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

/// A TLS failure in words a user can act on, never a Debug form.
pub fn describe_tls(error: &rustls::Error) -> String {
    use rustls::Error as E;
    match error {
        E::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<CertificateProblem>() {
                Some(problem) => problem.to_string(),
                None => format!("TLS: the server certificate was refused: {}", other.0),
            }
        }
        E::InvalidCertificate(certificate) => describe_certificate(certificate, &[]),
        E::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
            "TLS: the server does not speak TLS (is this https:// URL pointing at a plain-HTTP port? then use http://)".into()
        }
        E::AlertReceived(alert) => describe_alert(*alert),
        E::NoCertificatesPresented => "TLS: the server presented no certificate".into(),
        E::PeerIncompatible(_) => {
            "TLS: the server has no TLS version or cipher suite in common with initbox (TLS 1.2 and 1.3 with current ciphers are supported)".into()
        }
        other => format!("TLS handshake failed: {}", in_words(&format!("{other:?}"))),
    }
}

fn describe_alert(alert: AlertDescription) -> String {
    use AlertDescription as A;
    match alert {
        A::CertificateRequired => {
            "TLS: the server requires a client certificate (give one with --cert FILE --key FILE)".into()
        }
        A::BadCertificate
        | A::UnsupportedCertificate
        | A::CertificateRevoked
        | A::CertificateExpired
        | A::CertificateUnknown
        | A::UnknownCA
        | A::AccessDenied => format!(
            "TLS: the server refused the client certificate, or requires one (--cert FILE --key FILE): it answered '{}'",
            in_words(&format!("{alert:?}"))
        ),
        A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity => {
            "TLS: the server has no TLS version or cipher suite in common with initbox (TLS 1.2 and 1.3 with current ciphers are supported)".into()
        }
        A::UnrecognisedName => {
            "TLS: the server does not serve this host name (it refused the name sent in SNI)".into()
        }
        A::NoApplicationProtocol => "TLS: the server does not offer HTTP/1.1 (ALPN)".into(),
        other => format!(
            "TLS: the server ended the handshake with the alert '{}'",
            in_words(&format!("{other:?}"))
        ),
    }
}

/// A refused server certificate, naming what it is valid for when that is known.
fn describe_certificate(error: &CertificateError, names: &[String]) -> String {
    use CertificateError as C;
    let valid_for = if names.is_empty() {
        String::new()
    } else {
        format!(" (valid for {})", names.join(", "))
    };
    let date = |time: &UnixTime| {
        httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(time.as_secs()))
    };
    match error {
        C::UnknownIssuer => format!(
            "TLS: the server certificate{valid_for} is signed by an unknown CA (trust it with --cacert FILE)"
        ),
        C::NotValidForNameContext { expected, .. } if !names.is_empty() => format!(
            "TLS: the server certificate is not valid for {}: it is valid for {} (use one of those names in the URL, or fix the certificate)",
            expected.to_str(),
            names.join(", ")
        ),
        C::NotValidForNameContext {
            expected,
            presented,
        } if !presented.is_empty() => format!(
            "TLS: the server certificate is not valid for {}: it is valid for {} (use one of those names in the URL, or fix the certificate)",
            expected.to_str(),
            presented
                .iter()
                .map(|name| presented_name(name))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "TLS: the server certificate is not valid for this host name".into()
        }
        C::ExpiredContext { not_after, .. } => format!(
            "TLS: the server certificate{valid_for} expired on {}",
            date(not_after)
        ),
        C::Expired => format!("TLS: the server certificate{valid_for} has expired"),
        C::NotValidYetContext { not_before, .. } => format!(
            "TLS: the server certificate{valid_for} is not valid before {} (is the clock right?)",
            date(not_before)
        ),
        C::NotValidYet => {
            format!("TLS: the server certificate{valid_for} is not valid yet (is the clock right?)")
        }
        C::Revoked => format!("TLS: the server certificate{valid_for} has been revoked"),
        C::BadEncoding => format!("TLS: the server certificate{valid_for} cannot be read"),
        C::BadSignature => {
            format!("TLS: the server certificate{valid_for} has a bad signature")
        }
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
            "TLS: the server certificate{valid_for} is not meant for a TLS server (extended key usage)"
        ),
        other => format!(
            "TLS: the server certificate{valid_for} was refused: {}",
            in_words(&format!("{other:?}"))
        ),
    }
}

/// A name from a certificate as rustls hands it over (`DnsName("a.example")`,
/// `IpAddress(10.0.0.1)`), as the name alone.
fn presented_name(name: &str) -> &str {
    let name = name
        .strip_prefix("DnsName(")
        .or_else(|| name.strip_prefix("IpAddress("))
        .and_then(|inner| inner.strip_suffix(')'))
        .unwrap_or(name);
    name.trim_matches('"')
}

/// `PeerMisbehaved(IllegalMiddleboxChangeCipherSpec)` → `peer misbehaved (illegal
/// middlebox change cipher spec)`: a library's identifiers as words, for the rare errors
/// that have no sentence of their own here.
fn in_words(identifier: &str) -> String {
    let mut out = String::with_capacity(identifier.len() + 8);
    let mut previous: Option<char> = None;
    for c in identifier.chars() {
        match c {
            '(' => out.push_str(" ("),
            '{' | '}' | '"' => {}
            c if c.is_ascii_uppercase() => {
                if previous.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit()) {
                    out.push(' ');
                }
                out.push(c.to_ascii_lowercase());
            }
            c => out.push(c),
        }
        previous = Some(c);
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("'{text}' is not a valid URL: {e}"))?;
    if url.port() == Some(0) {
        return Err(format!("'{text}': port 0 cannot be connected to"));
    }
    // A host that cannot be a DNS name is a usage error now, not a lookup retried later.
    if let Some(url::Host::Domain(name)) = url.host() {
        crate::resolve::check_host_name(name).map_err(|reason| format!("'{text}': {reason}"))?;
    }
    match url.scheme() {
        "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "http" | "https" => Err(format!("'{text}' has no host")),
        other => Err(format!(
            "'{text}': unsupported scheme '{other}' (expected http:// or https://)"
        )),
    }
}

pub fn parse_method(text: &str) -> Result<Method, String> {
    Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("'{text}' is not an HTTP method"))
}

/// One `--header Name: value`.
#[derive(Debug, Clone)]
pub struct Header {
    pub name: HeaderName,
    pub value: HeaderValue,
}

pub fn parse_header(text: &str) -> Result<Header, String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header '{}' must look like 'Name: value'", first_word(text)))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("'{}' is not a valid header name", name.trim()))?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of header '{name}' contains invalid characters"))?;
    value.set_sensitive(true);
    Ok(Header { name, value })
}

/// Only the part before any value, so a mistyped secret header is not echoed back.
fn first_word(text: &str) -> &str {
    text.split([' ', '=']).next().unwrap_or("")
}

/// Accepted status codes: a list of inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges(Vec<(u16, u16)>);

impl StatusRanges {
    /// Any 2xx.
    pub fn success() -> Self {
        StatusRanges(vec![(200, 299)])
    }

    pub fn contains(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

impl FromStr for StatusRanges {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let code = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ if s.trim() == text.trim() => {
                    Err(format!("'{text}' is not an HTTP status (100-599)"))
                }
                _ => Err(format!(
                    "'{text}': '{}' is not an HTTP status (100-599)",
                    s.trim()
                )),
            }
        };
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!("'{text}' has an empty status range"));
            }
            let range = if let Some(class) = part.strip_suffix("xx").or(part.strip_suffix("XX")) {
                let first = code(&format!("{class}00"))?;
                (first, first + 99)
            } else if let Some((low, high)) = part.split_once('-') {
                let (low, high) = (code(low)?, code(high)?);
                if low > high {
                    return Err(format!("'{text}': range {part} is backwards"));
                }
                (low, high)
            } else {
                let single = code(part)?;
                (single, single)
            };
            ranges.push(range);
        }
        Ok(StatusRanges(ranges))
    }
}

impl fmt::Display for StatusRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(low, high)| {
                if low == high {
                    low.to_string()
                } else {
                    format!("{low}-{high}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

/// The request flags register and fetch share. Headers are kept as typed, so that `$(VAR)`
/// is expanded before they are parsed.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Request")]
pub struct RequestArgs {
    /// Extra request header as 'Name: value' (repeatable); $(VAR) is expanded. Values of
    /// credential headers (Authorization, *-Token, *-Key, …) are never logged.
    #[arg(long, env = "INITBOX_HEADER", value_name = "NAME:VALUE", value_parser = check_header)]
    pub header: Vec<String>,
    /// Send 'Authorization: Bearer TOKEN' with TOKEN read from this file (a mounted secret
    /// or a service-account token); never logged.
    #[arg(long, env = "INITBOX_BEARER_TOKEN_FILE", value_name = "FILE")]
    pub bearer_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Checks the shape of a `--header` before any variable is expanded.
fn check_header(text: &str) -> Result<String, String> {
    let (name, _) = text
        .split_once(':')
        .ok_or_else(|| format!("header '{}' must look like 'Name: value'", first_word(text)))?;
    if !name.contains("$(") {
        HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("'{}' is not a valid header name", name.trim()))?;
    }
    Ok(text.to_owned())
}

impl RequestArgs {
    /// The headers to send: `$(VAR)` expanded, the bearer token added, every credential
    /// registered with [`redact::conceal`] before anything can log it.
    pub fn headers(&self) -> Result<Vec<Header>> {
        let mut headers = Vec::new();
        for raw in &self.header {
            let header = parse_header(&expand::flag(raw, "--header")?).map_err(Error::Usage)?;
            conceal_credentials(&header);
            headers.push(header);
        }
        if let Some(path) = &self.bearer_token_file {
            let token = redact::read_secret_file(path, "bearer token file")?;
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::Config(format!(
                    "bearer token file {}: the token holds characters a header cannot carry",
                    path.display()
                ))
            })?;
            value.set_sensitive(true);
            headers.push(Header {
                name: reqwest::header::AUTHORIZATION,
                value,
            });
        }
        Ok(headers)
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

/// Registers the value of a credential header (and the credential after its scheme) as a
/// secret, so no log line can show it.
pub fn conceal_credentials(header: &Header) {
    if redact::is_credential_header(header.name.as_str())
        && let Ok(value) = header.value.to_str()
    {
        redact::conceal(value);
        if let Some((_scheme, credential)) = value.split_once(' ') {
            redact::conceal(credential);
        }
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

/// An attempt whose body broke off: retried, saying so.
pub fn body_read_failed(error: &reqwest::Error) -> Attempt {
    match classify(error) {
        RequestFailure::Retry(reason) => Attempt::NotYet(format!("reading the body: {reason}")),
        RequestFailure::Fatal(error) => Attempt::Fatal(error),
    }
}

/// The start of a body as one short line, for error messages.
async fn excerpt(mut response: reqwest::Response) -> String {
    const SHOWN_CHARS: usize = 200;
    let Ok((body, _)) = read_body(&mut response, 4096).await else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > SHOWN_CHARS {
        let cut: String = line.chars().take(SHOWN_CHARS).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// `HTTP 503 Service Unavailable`.
pub fn describe_status(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Whether a status says "try again later": 5xx, 408 Request Timeout, 429 Too Many Requests.
pub fn is_retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 429)
}

/// The retry rule of register and fetch for an answer outside `expected`: 5xx, 408 and 429
/// are tried again, no sooner than the server's Retry-After (or `pause` when it sent none,
/// so a struggling server is not hammered at the fast-start rate); anything else fails at
/// once, showing the status and the start of the body.
pub async fn unexpected_answer(
    response: reqwest::Response,
    expected: &StatusRanges,
    pause: Duration,
) -> Attempt {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = excerpt(response).await;
    let mut reason = describe_status(status);
    if !body.is_empty() {
        reason = format!("{reason}: {body}");
    }
    if !is_retryable(status) {
        return Attempt::Fatal(Error::Failed(format!("{reason} (expected {expected})")));
    }
    if let Some(after) = retry_after {
        reason = format!("{reason} (Retry-After {})", crate::duration::Elapsed(after));
    }
    Attempt::Backoff {
        reason,
        after: retry_after.unwrap_or(pause),
    }
}

/// Retry-After as seconds or as an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// A request as `-v` shows it: method, URL and headers, credentials masked.
pub fn describe_request(method: &Method, url: &Url, headers: &[Header]) -> String {
    let shown: Vec<String> = headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value.as_bytes());
            format!(
                "{}: {}",
                h.name,
                redact::header_value(h.name.as_str(), &value)
            )
        })
        .collect();
    if shown.is_empty() {
        format!("{method} {}", redact::url(url))
    } else {
        format!("{method} {} ({})", redact::url(url), shown.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        let ranges: StatusRanges = "200-399".parse().unwrap();
        assert!(ranges.contains(200) && ranges.contains(302) && ranges.contains(399));
        assert!(!ranges.contains(404) && !ranges.contains(199));
        let list: StatusRanges = "204, 3xx,418".parse().unwrap();
        assert!(list.contains(204) && list.contains(301) && list.contains(418));
        assert!(!list.contains(200));
        assert_eq!(list.to_string(), "204,300-399,418");
        for bad in ["", "abc", "99", "600", "399-200", "200,", "7xx"] {
            assert!(bad.parse::<StatusRanges>().is_err(), "{bad}");
        }
        // The message quotes what was typed, whitespace included (found by fuzzing).
        let error = "\t\u{8}".parse::<StatusRanges>().unwrap_err();
        assert!(error.contains("\t\u{8}"), "{error:?}");
        let error = "600".parse::<StatusRanges>().unwrap_err();
        assert_eq!(error, "'600' is not an HTTP status (100-599)");
    }

    #[test]
    fn urls_and_headers() {
        assert!(parse_url("http://mydb:8080/healthz").is_ok());
        assert!(parse_url("http//x").unwrap_err().contains("http//x"));
        assert!(parse_url("ftp://x/").unwrap_err().contains("ftp"));
        let header = parse_header("Authorization: Bearer abc").unwrap();
        assert_eq!(header.name, "authorization");
        assert!(header.value.is_sensitive());
        let error = parse_header("Authorization=Bearer secret").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
        assert!(parse_method("post").unwrap() == Method::POST);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let after = retry_after(&headers).unwrap();
        assert!(after > Duration::from_secs(100) && after <= Duration::from_secs(120));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn which_answers_are_retried() {
        use reqwest::StatusCode;
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 200, 301] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }

    #[test]
    fn library_identifiers_become_words() {
        assert_eq!(
            in_words("PeerMisbehaved(IllegalMiddleboxChangeCipherSpec)"),
            "peer misbehaved (illegal middlebox change cipher spec)"
        );
        assert_eq!(plain_name("DnsName(\"a.example\")"), "a.example");
        assert_eq!(plain_name("IpAddress(10.0.0.1)"), "10.0.0.1");
        let alert = describe_tls(&rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert!(alert.contains("--cert FILE --key FILE"), "{alert}");
        let plain = describe_tls(&rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(plain.contains("does not speak TLS"), "{plain}");
        assert!(
            parse_url("http://127.0.0.1:0/")
                .unwrap_err()
                .contains("port 0")
        );
    }

    #[test]
    fn requests_are_shown_without_credentials() {
        let url: Url = "https://user:pa55word@api.test/register".parse().unwrap();
        let headers = vec![
            parse_header("Authorization: Bearer tok3n-value").unwrap(),
            parse_header("Content-Type: application/json").unwrap(),
        ];
        let shown = describe_request(&Method::POST, &url, &headers);
        assert_eq!(
            shown,
            "POST https://***@api.test/register (authorization: Bearer ***, content-type: application/json)"
        );
    }
}
