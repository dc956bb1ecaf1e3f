//! TLS for every HTTPS connection (git's included): the Mozilla roots compiled in (so TLS
//! works in a scratch image with no CA bundle), the system store where one exists,
//! `--cacert` files on top, client certificates, `--insecure` only when asked for, and
//! TLS failures described in words a user can act on.

use std::error::Error as StdError;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
use crate::{reason, report};

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

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The rustls setup every HTTPS connection uses (also git's, via [`configure_blocking`]).
pub fn tls_config(tls: &TlsArgs) -> Result<ClientConfig> {
    let mut extra = Vec::new();
    for path in &tls.cacert {
        extra.extend(read_certificates(path, "CA certificate")?);
    }
    let identity = match (&tls.cert, &tls.key) {
        (Some(cert), Some(key)) => Some(client_identity(cert, key)?),
        _ => None,
    };
    build_tls(Trust::Public(extra), identity, tls.insecure)
}

/// Which certificate authorities a connection trusts.
pub enum Trust {
    /// The bundled and system roots, and these besides (`--cacert`).
    Public(Vec<CertificateDer<'static>>),
    /// These alone: a private cluster's CA (a Kubernetes API server), where a public CA's
    /// certificate for the same name must not be accepted.
    Only(Vec<CertificateDer<'static>>),
}

/// A client certificate with its key, and where they came from (for messages).
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// `client certificate FILE and key FILE`, as messages name them.
    pub source: String,
}

/// The rustls setup from its parts; see [`tls_config`].
pub fn build_tls(trust: Trust, identity: Option<Identity>, insecure: bool) -> Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    let (extra, with_system_roots) = match trust {
        Trust::Public(extra) => {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            (extra, true)
        }
        Trust::Only(only) => (only, false),
    };
    for cert in extra {
        roots
            .add(cert)
            .map_err(|e| Error::Config(format!("reading a CA certificate: {e}")))?;
    }
    let provider = provider();
    let verifier = if with_system_roots {
        WebPki::with_system_roots(roots, provider.clone())
    } else {
        WebPki::built(roots, provider.clone())?
    };
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Config(format!("setting up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NamingVerifier(verifier)));
    let mut config = match identity {
        Some(Identity { chain, key, source }) => {
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                let reason = match e {
                    rustls::Error::InconsistentKeys(_) => {
                        "the key does not belong to the certificate".to_owned()
                    }
                    other => in_words(&format!("{other:?}")),
                };
                Error::Config(format!("{source} do not go together: {reason}"))
            })?
        }
        None => builder.with_no_client_auth(),
    };
    // The client speaks HTTP/1.1 only; say so, or an h2 server would pick a protocol we lack.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if insecure {
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

/// The certificates of PEM text (`what` and where it came from name it in errors); none
/// at all is an error.
pub fn pem_certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("reading {what}: {}", pem_reason(&e))))?;
    if certs.is_empty() {
        return Err(Error::Config(format!(
            "reading {what}: no PEM certificate found"
        )));
    }
    Ok(certs)
}

/// The private key of PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn pem_private_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| Error::Config(format!("reading {what}: {}", pem_reason(&e))))
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

fn client_identity(cert: &Path, key: &Path) -> Result<Identity> {
    let chain = read_certificates(cert, "client certificate")?;
    let private_key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::Config(format!(
            "reading private key {}: {}",
            key.display(),
            pem_reason(&e)
        ))
    })?;
    Ok(Identity {
        chain,
        key: private_key,
        source: format!(
            "client certificate {} and key {}",
            cert.display(),
            key.display()
        ),
    })
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
struct NamingVerifier(WebPki);

/// The webpki verifier, with the system's CA store added on the first TLS handshake: a
/// store where SSL_CERT_DIR names a directory is a few hundred files (about 50 ms to read
/// and parse on a CI machine), which a process that never opens a TLS connection (an
/// http:// probe, fetch or clone) has no reason to read. The bundled roots and `--cacert`
/// files are taken at once, so a bad CA file is still refused before the run.
#[derive(Debug)]
struct WebPki {
    roots: RootCertStore,
    provider: Arc<CryptoProvider>,
    verifier: std::sync::OnceLock<Arc<WebPkiServerVerifier>>,
}

impl WebPki {
    /// `roots` and the system store, read when first needed.
    fn with_system_roots(roots: RootCertStore, provider: Arc<CryptoProvider>) -> Self {
        WebPki {
            roots,
            provider,
            verifier: std::sync::OnceLock::new(),
        }
    }

    /// `roots` alone, the verifier built now (its errors are the run's configuration's).
    fn built(roots: RootCertStore, provider: Arc<CryptoProvider>) -> Result<Self> {
        let verifier = Self::verifier_of(roots.clone(), provider.clone())
            .map_err(|e| Error::Config(format!("setting up TLS certificate checks: {e}")))?;
        Ok(WebPki {
            roots,
            provider,
            verifier: std::sync::OnceLock::from(verifier),
        })
    }

    fn verifier_of(
        roots: RootCertStore,
        provider: Arc<CryptoProvider>,
    ) -> std::result::Result<Arc<WebPkiServerVerifier>, rustls::client::VerifierBuilderError> {
        WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()
    }

    fn get(&self) -> &WebPkiServerVerifier {
        self.verifier.get_or_init(|| {
            let mut roots = self.roots.clone();
            let (added, _ignored) =
                roots.add_parsable_certificates(system_certificates().iter().cloned());
            report::debug(
                "tls.roots",
                format!(
                    "trusting {} bundled and {added} system CA certificates",
                    webpki_roots::TLS_SERVER_ROOTS.len()
                ),
            );
            Self::verifier_of(roots, self.provider.clone())
                .expect("a verifier over the bundled roots always builds")
        })
    }
}

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
            .get()
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
        self.0.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.get().supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.0.get().root_hint_subjects()
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
pub(super) fn in_words(identifier: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
