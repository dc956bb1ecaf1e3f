//! wait-for-postgres: one attempt = connect, optionally switch to TLS, send a
//! StartupMessage and read what the server answers. Without credentials it judges the
//! answer as pg_isready does (any authentication request means "accepting"); with a user
//! or a password it logs in for real and runs `SELECT 1`, so "the role and the database
//! the init scripts create exist" can be waited for.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use bytes::BytesMut;
use postgres_protocol::authentication::{self, sasl};
use postgres_protocol::message::backend::{ErrorFields, Header, Message};
use postgres_protocol::message::frontend;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::checks::service::{self, Protocol, Service};
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::{self, TlsArgs};
use crate::reason;
use crate::resolve::{Resolver, ResolverArgs};
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

/// Wait until PostgreSQL servers accept connections, or accept a login.
#[derive(Debug, Clone, clap::Args)]
pub struct PostgresArgs {
    /// Servers as HOST, HOST:PORT (default 5432), [IPv6]:PORT or
    /// postgres://[USER@]HOST[:PORT][/DATABASE][?sslmode=MODE].
    #[arg(required = true, value_name = "HOST[:PORT]|URL")]
    pub targets: Vec<PostgresTarget>,
    /// Log in as this role (a URL's user wins). With a user or a password the check is a
    /// real login and `SELECT 1`; without either it only asks whether the server accepts
    /// connections, as pg_isready does.
    /// Else PGUSER, as libpq.
    #[arg(
        long,
        env = "INITBOX_USER",
        value_name = "NAME",
        help_heading = "Login"
    )]
    pub user: Option<String>,
    /// The database to log in to (a URL's path wins); default: the user name, as libpq.
    /// Else PGDATABASE.
    #[arg(
        long,
        env = "INITBOX_DATABASE",
        value_name = "NAME",
        help_heading = "Login"
    )]
    pub database: Option<String>,
    /// Read the password from this file (whitespace around it is dropped); else PGPASSWORD.
    #[arg(
        long,
        env = "INITBOX_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "Login"
    )]
    pub password_file: Option<PathBuf>,
    /// disable: plain text; prefer: TLS when the server offers it, unverified; require: TLS
    /// or fail, unverified; verify-full: TLS with the certificate checked (chain and name).
    /// A URL's ?sslmode= wins; else PGSSLMODE; default prefer, as libpq.
    #[arg(long, env = "INITBOX_TLS", value_name = "MODE", help_heading = "TLS")]
    pub tls: Option<TlsMode>,
    #[command(flatten)]
    pub tls_files: TlsArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

/// The marker that gives [`Service`] PostgreSQL's schemes and port.
pub struct Postgres;

impl Protocol for Postgres {
    const NAME: &'static str = "PostgreSQL";
    const SCHEMES: &'static [&'static str] = &["postgres", "postgresql"];
    const DEFAULT_PORT: u16 = 5432;
    const PASSWORD_SOURCE: &'static str = "--password-file (or PGPASSWORD)";
}

/// libpq's sslmode values that this check implements. `allow` and `verify-ca` are refused
/// rather than quietly treated as something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Prefer,
    Require,
    VerifyFull,
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        // A choice ignores case, as every choice of initbox does (`--tls REQUIRE`).
        match text.to_ascii_lowercase().as_str() {
            "disable" => Ok(TlsMode::Disable),
            "prefer" => Ok(TlsMode::Prefer),
            "require" => Ok(TlsMode::Require),
            "verify-full" => Ok(TlsMode::VerifyFull),
            "allow" | "verify-ca" => Err(format!(
                "TLS mode '{text}' is not supported; use disable, prefer, require or verify-full"
            )),
            _ => Err(format!(
                "'{text}' is not a TLS mode; use disable, prefer, require or verify-full"
            )),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::Disable => "disable",
            TlsMode::Prefer => "prefer",
            TlsMode::Require => "require",
            TlsMode::VerifyFull => "verify-full",
        })
    }
}

/// A server as the user wrote it, with the URL's `?sslmode=` already understood.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub service: Service<Postgres>,
    pub tls: Option<TlsMode>,
}

impl FromStr for PostgresTarget {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let service: Service<Postgres> = text.parse()?;
        let mut tls = None;
        for (key, value) in &service.query {
            match key.as_str() {
                "sslmode" => {
                    tls = Some(
                        value
                            .parse()
                            .map_err(|e: String| format!("'{text}': {e}"))?,
                    )
                }
                _ => {
                    return Err(format!(
                        "'{text}': the URL parameter '{key}' is not understood (only sslmode \
                         is; use --user, --database and the TLS flags for the rest)"
                    ));
                }
            }
        }
        Ok(PostgresTarget { service, tls })
    }
}

/// What to send and how to judge the answer, settled once before the first attempt.
struct Login {
    user: String,
    database: String,
    /// `None` without credentials: only "is the server accepting connections?".
    password: Option<String>,
    /// A real login (a user or a password was given), not pg_isready's question.
    full: bool,
}

pub struct PostgresProbe {
    target: PostgresTarget,
    label: String,
    login: Login,
    tls: TlsMode,
    /// The TLS setup for this mode (`None` for disable).
    tls_config: Option<Arc<ClientConfig>>,
    resolver: Resolver,
}

impl Probe for PostgresProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt {
        let address = self.target.service.address();
        let (stream, addr) = match service::connect(&self.resolver, &address).await {
            Ok(connected) => connected,
            Err(failure) => return failure.into(),
        };
        let outcome = match self.negotiate_tls(stream).await {
            Ok(Transport::Plain(mut stream)) => self.exchange(&mut stream, false).await,
            Ok(Transport::Tls(mut stream)) => self.exchange(stream.as_mut(), true).await,
            Err(failure) => Err(failure),
        };
        match outcome {
            Ok(detail) => Attempt::ready(format!("{detail} at {addr}")),
            Err(failure) => failure.into(),
        }
    }
}

enum Transport {
    Plain(tokio::net::TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>),
}

impl PostgresProbe {
    /// SSLRequest and the server's one-byte answer: 'S' = go TLS, 'N' = no TLS here.
    async fn negotiate_tls(
        &self,
        mut stream: tokio::net::TcpStream,
    ) -> std::result::Result<Transport, Failure> {
        let Some(config) = &self.tls_config else {
            return Ok(Transport::Plain(stream));
        };
        let mut request = BytesMut::new();
        frontend::ssl_request(&mut request);
        send(&mut stream, &request).await?;
        let mut answer = [0u8; 1];
        match stream.read(&mut answer).await {
            Ok(0) => return Err(closed()),
            Ok(_) => {}
            Err(error) => return Err(Failure::Retry(reading(&error))),
        }
        match answer[0] {
            b'S' => {
                let host = &self.target.service.host;
                let tls = service::start_tls(stream, host, config.clone()).await?;
                Ok(Transport::Tls(Box::new(tls)))
            }
            b'N' if self.tls == TlsMode::Prefer => Ok(Transport::Plain(stream)),
            b'N' => Err(Failure::Fatal(Error::Failed(format!(
                "the server does not offer TLS, and --tls {} requires it",
                self.tls
            )))),
            // An ErrorResponse here is a server older than SSLRequest, or not PostgreSQL.
            other => Err(Failure::Retry(format!(
                "the server answered the TLS request with {:?}, not 'S' or 'N' (is this PostgreSQL?)",
                char::from(other)
            ))),
        }
    }

    /// The StartupMessage and everything up to the verdict, then Terminate.
    async fn exchange<S>(
        &self,
        stream: &mut S,
        encrypted: bool,
    ) -> std::result::Result<String, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut conn = Connection {
            stream,
            buffer: BytesMut::with_capacity(1024),
        };
        let login = &self.login;
        let mut out = BytesMut::new();
        let params = [
            ("user", login.user.as_str()),
            ("database", login.database.as_str()),
            ("application_name", "initbox"),
        ];
        frontend::startup_message(params, &mut out).map_err(|e| encoding(&e))?;
        conn.send(&out).await?;
        let result = self.authenticate(&mut conn, encrypted).await;
        let verdict = match result {
            Ok(Authenticated::Asked(method)) => Ok(format!(
                "accepting connections (asks for {method} authentication)"
            )),
            Ok(Authenticated::Ready(version, method)) if login.full => {
                self.select_one(&mut conn).await.map(|()| {
                    let with = method.map(|m| format!(" with {m}")).unwrap_or_default();
                    format!(
                        "logged in as {} to {}{with}{}",
                        login.user,
                        login.database,
                        version_suffix(&version)
                    )
                })
            }
            Ok(Authenticated::Ready(version, _)) => {
                Ok(format!("accepting connections{}", version_suffix(&version)))
            }
            Ok(Authenticated::Refused(said)) => Ok(format!(
                "accepting connections (it refused the probe: {said})"
            )),
            Err(failure) => Err(failure),
        };
        // Polite close: a Terminate keeps "unexpected EOF" out of the server's log. After
        // an ErrorResponse the server has gone already; nothing is lost if this fails.
        let mut bye = BytesMut::new();
        frontend::terminate(&mut bye);
        let _ = conn.stream.write_all(&bye).await;
        let _ = conn.stream.shutdown().await;
        verdict
    }

    /// Reads until the server is ready for a query, or (without credentials) until it asks
    /// for one: that already proves it accepts connections.
    async fn authenticate<S>(
        &self,
        conn: &mut Connection<'_, S>,
        encrypted: bool,
    ) -> std::result::Result<Authenticated, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let login = &self.login;
        let mut version = None;
        let mut scram: Option<sasl::ScramSha256> = None;
        // How we proved who we are (none under trust), for the ready line.
        let mut method = None;
        loop {
            match conn.receive().await? {
                Message::AuthenticationOk => {}
                Message::ParameterStatus(body) => {
                    if body.name().ok() == Some("server_version") {
                        version = body.value().ok().map(str::to_owned);
                    }
                }
                Message::BackendKeyData(_) | Message::NoticeResponse(_) => {}
                Message::ReadyForQuery(_) => return Ok(Authenticated::Ready(version, method)),
                Message::ErrorResponse(body) => {
                    let error = ServerError::from(body.fields());
                    // pg_isready's rule: any other answer with a SQLSTATE proves the server
                    // is up (no such role, no pg_hba.conf entry, no such database).
                    if !login.full && !error.code.is_empty() && !error.is_passing() {
                        return Ok(Authenticated::Refused(error.to_string()));
                    }
                    return Err(judge(error));
                }
                Message::AuthenticationCleartextPassword => {
                    let password = self.password_for("a clear-text password")?;
                    let Some(password) = password else {
                        return Ok(Authenticated::Asked("password"));
                    };
                    if !encrypted {
                        return Err(Failure::Fatal(Error::Failed(format!(
                            "the server asks for the password of {} in clear text over an \
                             unencrypted connection; refusing to send it (use --tls require or \
                             verify-full)",
                            login.user
                        ))));
                    }
                    let mut out = BytesMut::new();
                    frontend::password_message(password.as_bytes(), &mut out)
                        .map_err(|e| encoding(&e))?;
                    conn.send(&out).await?;
                    method = Some("a clear-text password");
                }
                Message::AuthenticationMd5Password(body) => {
                    let Some(password) = self.password_for("an MD5 password")? else {
                        return Ok(Authenticated::Asked("MD5"));
                    };
                    let hash = authentication::md5_hash(
                        login.user.as_bytes(),
                        password.as_bytes(),
                        body.salt(),
                    );
                    let mut out = BytesMut::new();
                    frontend::password_message(hash.as_bytes(), &mut out)
                        .map_err(|e| encoding(&e))?;
                    conn.send(&out).await?;
                    method = Some("MD5");
                }
                Message::AuthenticationSasl(body) => {
                    let mut mechanisms = Vec::new();
                    let mut names = body.mechanisms();
                    while let Ok(Some(name)) = fallible_iterator::FallibleIterator::next(&mut names)
                    {
                        mechanisms.push(name.to_owned());
                    }
                    if !mechanisms.iter().any(|m| m == sasl::SCRAM_SHA_256) {
                        return Err(Failure::Fatal(Error::Failed(format!(
                            "the server offers only SASL {} authentication, which initbox does \
                             not speak (it speaks SCRAM-SHA-256, MD5 and, over TLS, clear text)",
                            mechanisms.join(", ")
                        ))));
                    }
                    let Some(password) = self.password_for("a SCRAM-SHA-256 password")? else {
                        return Ok(Authenticated::Asked("SCRAM-SHA-256"));
                    };
                    // No channel binding ("n"): we do not claim support the server could
                    // then demand; the password is never sent, only a proof of it.
                    let state = sasl::ScramSha256::new(
                        password.as_bytes(),
                        sasl::ChannelBinding::unsupported(),
                    );
                    let mut out = BytesMut::new();
                    frontend::sasl_initial_response(sasl::SCRAM_SHA_256, state.message(), &mut out)
                        .map_err(|e| encoding(&e))?;
                    conn.send(&out).await?;
                    scram = Some(state);
                    method = Some("SCRAM-SHA-256");
                }
                Message::AuthenticationSaslContinue(body) => {
                    let state = scram.as_mut().ok_or_else(|| unexpected("SASLContinue"))?;
                    state.update(body.data()).map_err(|e| {
                        Failure::Fatal(Error::Failed(format!(
                            "SCRAM-SHA-256 with the server failed: {e}"
                        )))
                    })?;
                    let mut out = BytesMut::new();
                    frontend::sasl_response(state.message(), &mut out).map_err(|e| encoding(&e))?;
                    conn.send(&out).await?;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let state = scram.as_mut().ok_or_else(|| unexpected("SASLFinal"))?;
                    // The server proves it knows the password too; one that cannot is
                    // not the server we meant to reach.
                    state.finish(body.data()).map_err(|e| {
                        Failure::Fatal(Error::Failed(format!(
                            "the server failed to prove it knows the password of {} \
                             (SCRAM-SHA-256): {e}",
                            login.user
                        )))
                    })?;
                }
                Message::AuthenticationKerberosV5
                | Message::AuthenticationScmCredential
                | Message::AuthenticationGss
                | Message::AuthenticationSspi
                | Message::AuthenticationGssContinue(_) => {
                    if !login.full {
                        return Ok(Authenticated::Asked("GSSAPI/SSPI"));
                    }
                    return Err(Failure::Fatal(Error::Failed(format!(
                        "the server asks {} to authenticate with Kerberos/GSSAPI/SSPI, which \
                         initbox does not speak",
                        login.user
                    ))));
                }
                _ => return Err(unexpected("a message out of order")),
            }
        }
    }

    /// The password to answer a challenge with; `None` (pg_isready's answer: accepting)
    /// when none was given and no login was asked for.
    fn password_for(&self, what: &str) -> std::result::Result<Option<&str>, Failure> {
        match (&self.login.password, self.login.full) {
            (Some(password), _) => Ok(Some(password)),
            (None, false) => Ok(None),
            (None, true) => Err(Failure::Fatal(Error::Failed(format!(
                "the server asks {} for {what}, and none was given (--password-file or PGPASSWORD)",
                self.login.user
            )))),
        }
    }

    /// `SELECT 1` as a simple query: the session can run statements, not only log in.
    async fn select_one<S>(&self, conn: &mut Connection<'_, S>) -> std::result::Result<(), Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut out = BytesMut::new();
        frontend::query("SELECT 1", &mut out).map_err(|e| encoding(&e))?;
        conn.send(&out).await?;
        let mut row = None;
        loop {
            match conn.receive().await? {
                Message::DataRow(body) => {
                    let mut ranges = body.ranges();
                    if let Ok(Some(Some(range))) =
                        fallible_iterator::FallibleIterator::next(&mut ranges)
                    {
                        row = Some(body.buffer()[range].to_vec());
                    }
                }
                Message::RowDescription(_)
                | Message::CommandComplete(_)
                | Message::NoticeResponse(_)
                | Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => {
                    return Err(judge(ServerError::from(body.fields())));
                }
                Message::ReadyForQuery(_) => break,
                _ => return Err(unexpected("a message out of order after SELECT 1")),
            }
        }
        match row.as_deref() {
            Some(b"1") => Ok(()),
            other => Err(Failure::Retry(format!(
                "SELECT 1 returned {:?} instead of 1",
                other.map(String::from_utf8_lossy)
            ))),
        }
    }
}

/// An ErrorResponse while logging in: worth waiting through, or the end of the wait.
fn judge(error: ServerError) -> Failure {
    let said = error.to_string();
    if error.is_passing() {
        return Failure::Retry(said);
    }
    match error.code.as_str() {
        // No SQLSTATE: not a server that speaks a modern protocol (pg_isready: "no
        // response").
        "" => Failure::Retry(said),
        // The database the init scripts create: it may come.
        "3D000" => Failure::Retry(said),
        // "role does not exist" or "is not permitted to log in" (raised while setting
        // the session user, whatever the server's language): the role may come.
        "28000" if error.routine == "InitializeSessionUserId" => Failure::Retry(said),
        // A wrong password (or, under password authentication, a role that does not
        // exist: the server answers both alike on purpose), pg_hba.conf refusing us:
        // waiting cannot mend these.
        code if code.starts_with("28") => Failure::Fatal(Error::Failed(said)),
        // A protocol violation or a feature the server lacks: not a server we can check.
        "08P01" | "0A000" => Failure::Fatal(Error::Failed(said)),
        // Shutting down, out of memory or disk, permission for the database not yet
        // granted, …: the server is there and may get better.
        _ => Failure::Retry(said),
    }
}

/// How authentication ended without an error.
enum Authenticated {
    /// The server asked for a password (of this kind) that we did not send: it is up.
    Asked(&'static str),
    /// Logged in; the server's version when it said it, and how we proved who we are.
    Ready(Option<String>, Option<&'static str>),
    /// Without credentials: the server refused the probe in a way that proves it is up.
    Refused(String),
}

fn version_suffix(version: &Option<String>) -> String {
    match version {
        // "15.18 (Debian 15.18-0+deb12u1)": the number says enough.
        Some(version) => format!(
            " (PostgreSQL {})",
            version.split_whitespace().next().unwrap_or(version)
        ),
        None => String::new(),
    }
}

/// The fields of an ErrorResponse a verdict needs.
struct ServerError {
    severity: String,
    code: String,
    message: String,
    detail: String,
    /// The server function that raised it: not translated, unlike the message.
    routine: String,
}

impl ServerError {
    /// Starting up, shutting down, in recovery (57P03); too many clients (53300): states
    /// that pass by themselves, and that no mode of the check counts as ready.
    fn is_passing(&self) -> bool {
        matches!(self.code.as_str(), "57P03" | "53300")
    }
}

impl From<ErrorFields<'_>> for ServerError {
    fn from(mut fields: ErrorFields<'_>) -> Self {
        let mut error = ServerError {
            severity: String::new(),
            code: String::new(),
            message: String::new(),
            detail: String::new(),
            routine: String::new(),
        };
        while let Ok(Some(field)) = fallible_iterator::FallibleIterator::next(&mut fields) {
            let value = String::from_utf8_lossy(field.value_bytes()).into_owned();
            match field.type_() {
                b'V' => error.severity = value,
                b'C' => error.code = value,
                b'M' => error.message = value,
                b'D' => error.detail = value,
                b'R' => error.routine = value,
                _ => {}
            }
        }
        error
    }
}

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = if self.severity.is_empty() {
            "error"
        } else {
            &self.severity
        };
        write!(f, "{severity}: {}", self.message)?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail.trim_end_matches('.'))?;
        }
        write!(f, " (SQLSTATE {})", self.code)
    }
}

/// The most a server message may claim to be: PostgreSQL's own are small, and a length
/// read from a server that is not PostgreSQL must not make us buffer gigabytes.
const MAX_MESSAGE: usize = 1 << 20;

/// A stream with the messages read from it so far.
struct Connection<'s, S> {
    stream: &'s mut S,
    buffer: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<'_, S> {
    async fn send(&mut self, bytes: &[u8]) -> std::result::Result<(), Failure> {
        send(self.stream, bytes).await
    }

    /// The next whole message from the server.
    async fn receive(&mut self) -> std::result::Result<Message, Failure> {
        loop {
            if let Ok(Some(header)) = Header::parse(&self.buffer) {
                let length = usize::try_from(header.len()).unwrap_or(usize::MAX);
                if length > MAX_MESSAGE {
                    return Err(not_postgres(&format!("a message of {length} bytes")));
                }
            }
            match Message::parse(&mut self.buffer) {
                Ok(Some(message)) => return Ok(message),
                Ok(None) => {}
                Err(error) => return Err(not_postgres(&error.to_string())),
            }
            self.buffer.reserve(4096);
            match self.stream.read_buf(&mut self.buffer).await {
                Ok(0) => return Err(closed()),
                Ok(_) => {}
                Err(error) => return Err(Failure::Retry(reading(&error))),
            }
        }
    }
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> std::result::Result<(), Failure> {
    stream
        .write_all(bytes)
        .await
        .map_err(|error| Failure::Retry(format!("sending to the server: {}", reason::io(&error))))
}

fn closed() -> Failure {
    Failure::Retry("the server closed the connection without an answer".into())
}

fn reading(error: &std::io::Error) -> String {
    format!("reading the server's answer: {}", reason::io(error))
}

fn not_postgres(what: &str) -> Failure {
    Failure::Retry(format!(
        "the server's answer is not PostgreSQL's protocol ({what})"
    ))
}

fn unexpected(what: &str) -> Failure {
    not_postgres(&format!("it sent {what}"))
}

fn encoding(error: &std::io::Error) -> Failure {
    Failure::Fatal(Error::Usage(format!(
        "a login parameter cannot be sent: {error}"
    )))
}

/// Accepts any server certificate while still checking the handshake's signatures: what
/// libpq's `prefer` and `require` do (encryption against a passive listener, no identity).
#[derive(Debug)]
struct Unverified(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// The TLS setup of one mode: the shared one (roots, --cacert, client certificate) for
/// verify-full, the same without the certificate check for prefer and require.
fn tls_setup(mode: TlsMode, files: &TlsArgs) -> Result<Option<Arc<ClientConfig>>> {
    if mode == TlsMode::Disable {
        return Ok(None);
    }
    if mode == TlsMode::VerifyFull && files.insecure {
        return Err(Error::Usage(
            "--insecure contradicts --tls verify-full; use --tls require for TLS without \
             checking the certificate"
                .into(),
        ));
    }
    let mut config = http_client::tls_config(files)?;
    // What libpq 17 sends for PostgreSQL over TLS; older servers ignore it.
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    if mode != TlsMode::VerifyFull {
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        config
            .dangerous()
            .set_certificate_verifier(Arc::new(Unverified(algorithms)));
    }
    Ok(Some(Arc::new(config)))
}

/// A libpq environment variable, when set and not empty; in a pipeline step the file's
/// `env:` map comes first, as for every variable a task reads.
fn libpq_variable(name: &str) -> Option<String> {
    crate::expand::var(name).filter(|value| !value.is_empty())
}

impl crate::cli::Task for PostgresArgs {
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

pub async fn run(args: PostgresArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let password = service::password(args.password_file.as_deref(), "PGPASSWORD")?;
    // libpq's variables, below initbox's own flags and variables.
    let default_user = args.user.clone().or_else(|| libpq_variable("PGUSER"));
    let default_database = args
        .database
        .clone()
        .or_else(|| libpq_variable("PGDATABASE"));
    let default_tls = match (args.tls, libpq_variable("PGSSLMODE")) {
        (Some(mode), _) => mode,
        (None, Some(text)) => text
            .parse()
            .map_err(|e: String| Error::Usage(format!("PGSSLMODE={text}: {e}")))?,
        (None, None) => TlsMode::Prefer,
    };
    let mut configs: Vec<(TlsMode, Option<Arc<ClientConfig>>)> = Vec::new();
    let mut probes = Vec::new();
    for target in args.targets {
        let user = target.service.user.clone().or_else(|| default_user.clone());
        let full = user.is_some() || password.is_some();
        // Without a user, the role every image has: a trust server then lets us all the
        // way in (and logs nothing), a password server asks and we stop there.
        let user = user.unwrap_or_else(|| "postgres".to_owned());
        let database = target
            .service
            .path
            .clone()
            .or_else(|| default_database.clone())
            .unwrap_or_else(|| user.clone());
        let tls = target.tls.unwrap_or(default_tls);
        let tls_config = match configs.iter().find(|(mode, _)| *mode == tls) {
            Some((_, config)) => config.clone(),
            None => {
                let config = tls_setup(tls, &args.tls_files)?;
                configs.push((tls, config.clone()));
                config
            }
        };
        probes.push(PostgresProbe {
            label: target.service.to_string(),
            target,
            login: Login {
                user,
                database,
                password: password.clone(),
                full,
            },
            tls,
            tls_config,
            resolver: resolver.clone(),
        });
    }
    wait::wait_for_all("postgres", probes, options)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(code: &str, routine: &str) -> ServerError {
        ServerError {
            severity: "FATAL".into(),
            code: code.into(),
            message: "m".into(),
            detail: String::new(),
            routine: routine.into(),
        }
    }

    #[test]
    fn tls_modes_are_libpqs_and_the_unsupported_ones_are_named() {
        for mode in ["disable", "prefer", "require", "verify-full"] {
            assert_eq!(mode.parse::<TlsMode>().unwrap().to_string(), mode);
        }
        assert!(
            "verify-ca"
                .parse::<TlsMode>()
                .unwrap_err()
                .contains("'verify-ca' is not supported")
        );
        assert!(
            "on".parse::<TlsMode>()
                .unwrap_err()
                .contains("'on' is not a TLS mode")
        );
    }

    #[test]
    fn a_url_gives_sslmode_and_refuses_other_parameters() {
        let target: PostgresTarget = "postgres://app@db/orders?sslmode=require".parse().unwrap();
        assert_eq!(target.tls, Some(TlsMode::Require));
        assert_eq!(target.service.user.as_deref(), Some("app"));
        let plain: PostgresTarget = "db:6543".parse().unwrap();
        assert_eq!((plain.service.port, plain.tls), (6543, None));
        let error = "postgres://db/x?application_name=a"
            .parse::<PostgresTarget>()
            .unwrap_err();
        assert!(
            error.contains("'application_name' is not understood"),
            "{error}"
        );
    }

    #[test]
    fn login_errors_that_can_heal_are_waited_through_and_the_others_are_fatal() {
        let retried =
            |code: &str, routine: &str| matches!(judge(error(code, routine)), Failure::Retry(_));
        assert!(retried("57P03", "ProcessStartupPacket"));
        assert!(retried("53300", "InitProcess"));
        assert!(retried("3D000", "InitPostgres"));
        assert!(retried("28000", "InitializeSessionUserId"));
        assert!(retried("57P01", "ProcessInterrupts"));
        assert!(!retried("28P01", "auth_failed"));
        assert!(!retried("28000", "ClientAuthentication"));
        assert!(!retried("08P01", "ProcessStartupPacket"));
    }

    #[test]
    fn a_server_error_reads_as_the_server_said_it_with_its_code() {
        let mut e = error("57P03", "");
        e.message = "the database system is not accepting connections".into();
        e.detail = "Hot standby mode is disabled.".into();
        assert_eq!(
            e.to_string(),
            "FATAL: the database system is not accepting connections (Hot standby mode is \
             disabled) (SQLSTATE 57P03)"
        );
    }

    #[tokio::test]
    async fn a_huge_message_length_is_refused_before_it_is_buffered() {
        let (mut client, mut server) = tokio::io::duplex(64);
        // 'R' with a length of 1 GiB: a server that is not PostgreSQL, or a hostile one.
        server
            .write_all(&[b'R', 0x40, 0, 0, 0, 0, 0, 0, 0])
            .await
            .unwrap();
        let mut conn = Connection {
            stream: &mut client,
            buffer: BytesMut::new(),
        };
        match conn.receive().await {
            Err(Failure::Retry(reason)) => {
                assert!(reason.contains("not PostgreSQL's protocol"), "{reason}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
