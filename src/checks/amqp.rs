//! wait-for-amqp: one attempt = connect, send the AMQP 0-9-1 protocol header and read
//! Connection.Start (alive); with credentials go on through Start-Ok (PLAIN), Tune/Tune-Ok
//! and Connection.Open of the vhost, expect Open-Ok, and close politely. The handful of
//! frames is encoded by hand (a client crate would bring a whole broker API); the parser is
//! strict and bounded, so a hostile or confused server cannot make us allocate much.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::checks::service::{self, Protocol, Service};
use crate::checks::tcp::HostPort;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::{self, TlsArgs, Unechoed};
use crate::redact;
use crate::resolve::{Resolver, ResolverArgs};
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

/// The header that asks for AMQP 0-9-1.
const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// The largest frame we accept, and the frame_max we ask for. Connection.Start and the
/// other connection methods are well under 1 KiB; RabbitMQ's default frame_max is 128 KiB.
const MAX_FRAME: u32 = 128 * 1024;
/// How deep field tables may nest in server-properties (RabbitMQ's `capabilities` is 2).
const MAX_DEPTH: usize = 8;
const FRAME_METHOD: u8 = 1;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;
/// Connection class (10) methods.
const START: (u16, u16) = (10, 10);
const START_OK: (u16, u16) = (10, 11);
const TUNE: (u16, u16) = (10, 30);
const TUNE_OK: (u16, u16) = (10, 31);
const OPEN: (u16, u16) = (10, 40);
const OPEN_OK: (u16, u16) = (10, 41);
const CLOSE: (u16, u16) = (10, 50);
const CLOSE_OK: (u16, u16) = (10, 51);
/// Reply codes that end the wait: the login or the permission will not change by itself.
const ACCESS_REFUSED: u16 = 403;
/// Connection.Open of a vhost that does not exist (yet: an init job may be creating it).
const NOT_ALLOWED: u16 = 530;

/// AMQP as [`Service`] parses it.
pub struct Amqp;

impl Protocol for Amqp {
    const NAME: &'static str = "AMQP";
    const SCHEMES: &'static [&'static str] = &["amqp"];
    const DEFAULT_PORT: u16 = 5672;
    const PASSWORD_SOURCE: &'static str = "--password-file (or RABBITMQ_PASSWORD)";
}

/// `amqps://`: TLS from the first byte, on port 5671 by default.
pub struct Amqps;

impl Protocol for Amqps {
    const NAME: &'static str = "AMQP";
    const SCHEMES: &'static [&'static str] = &["amqps"];
    const DEFAULT_PORT: u16 = 5671;
    const PASSWORD_SOURCE: &'static str = Amqp::PASSWORD_SOURCE;
}

/// Wait until AMQP 0-9-1 brokers (RabbitMQ) answer, and with credentials, open the vhost.
#[derive(Debug, Clone, clap::Args)]
pub struct AmqpArgs {
    /// Brokers as HOST, HOST:PORT (default port 5672), amqp://[USER@]HOST[:PORT][/VHOST]
    /// or amqps://… (TLS, default port 5671). The vhost is percent-encoded: %2F is "/".
    #[arg(required = true, value_name = "SERVER", value_parser = Unechoed(parse_server))]
    pub servers: Vec<AmqpServer>,
    /// Log in as this user (with --password-file or RABBITMQ_PASSWORD): ready only when
    /// the vhost opens.
    #[arg(
        long,
        env = "INITBOX_USER",
        value_name = "NAME",
        help_heading = "Login"
    )]
    pub user: Option<String>,
    /// Read the password for --user from this file (never logged).
    #[arg(
        long,
        env = "INITBOX_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "Login"
    )]
    pub password_file: Option<PathBuf>,
    /// The vhost to open when logging in (default: the URL's, else "/"). One that does not
    /// exist yet is waited for.
    #[arg(
        long,
        env = "INITBOX_VHOST",
        value_name = "VHOST",
        help_heading = "Login"
    )]
    pub vhost: Option<String>,
    /// Speak TLS from the start, as amqps:// does.
    #[arg(long, env = "INITBOX_TLS", help_heading = "TLS")]
    pub tls: bool,
    #[command(flatten)]
    pub tls_files: TlsArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

/// A broker as the user wrote it.
#[derive(Debug, Clone)]
pub struct AmqpServer {
    pub address: HostPort,
    pub user: Option<String>,
    pub vhost: Option<String>,
    /// amqps://
    pub tls: bool,
}

impl FromStr for AmqpServer {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        let secure = text
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("amqps://"));
        let (address, user, vhost) = if secure {
            let service: Service<Amqps> = text.parse()?;
            (service.address(), service.user, service.path)
        } else {
            let service: Service<Amqp> = text.parse()?;
            (service.address(), service.user, service.path)
        };
        Ok(AmqpServer {
            address,
            user,
            vhost,
            tls: secure,
        })
    }
}

/// clap echoes a refused value, and a refused URL may hold a password: parse through
/// [`Unechoed`], whose message is only ours (which never repeats a password).
fn parse_server(text: &str) -> std::result::Result<AmqpServer, String> {
    text.parse()
}

#[derive(Clone)]
struct Login {
    user: String,
    password: String,
    vhost: String,
}

pub struct AmqpProbe {
    server: AmqpServer,
    label: String,
    resolver: Resolver,
    login: Option<Login>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Probe for AmqpProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt {
        self.exchange().await.into()
    }
}

impl AmqpProbe {
    async fn exchange(&self) -> std::result::Result<String, Failure> {
        let (stream, _) = service::connect(&self.resolver, &self.server.address).await?;
        match &self.tls {
            Some(config) => {
                let stream =
                    service::start_tls(stream, &self.server.address.host, config.clone()).await?;
                self.converse(stream, ", TLS").await
            }
            None => self.converse(stream, "").await,
        }
    }

    async fn converse<S>(&self, mut stream: S, over: &str) -> std::result::Result<String, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        send(&mut stream, PROTOCOL_HEADER).await?;
        let start = read_method(&mut stream).await?;
        if start.id != START {
            return Err(unexpected("Connection.Start", &start));
        }
        let start = parse_start(&start.args)
            .map_err(|why| Failure::Retry(format!("reading Connection.Start: {why}")))?;
        let server = match (&start.product, &start.version) {
            (Some(product), Some(version)) => format!("{product} {version}"),
            (Some(product), None) => product.clone(),
            _ => format!("AMQP {}-{}", start.major, start.minor),
        };
        let Some(login) = &self.login else {
            return Ok(format!("answering ({server}{over})"));
        };
        if !start.mechanisms.split(' ').any(|m| m == "PLAIN") {
            return Err(Failure::Fatal(Error::Failed(format!(
                "{}: the server does not offer PLAIN login (it offers: {})",
                self.label,
                service::shorten(&start.mechanisms)
            ))));
        }
        send(&mut stream, &start_ok(login)).await?;
        let reply = read_method_or_login_closed(&mut stream).await?;
        let tune = match reply.id {
            TUNE => reply,
            CLOSE => {
                return Err(self
                    .closed(&mut stream, &reply.args, login, "logging in")
                    .await);
            }
            _ => return Err(unexpected("Connection.Tune", &reply)),
        };
        send(&mut stream, &tune_ok(&tune.args)?).await?;
        send(&mut stream, &open(&login.vhost)?).await?;
        let reply = read_method(&mut stream).await?;
        match reply.id {
            OPEN_OK => {}
            CLOSE => {
                return Err(self
                    .closed(&mut stream, &reply.args, login, "opening the vhost")
                    .await);
            }
            _ => return Err(unexpected("Connection.Open-Ok", &reply)),
        }
        // A polite close, so the broker logs no "client unexpectedly closed TCP connection";
        // whatever it answers, the login has worked.
        if send(&mut stream, &close()).await.is_ok() {
            let _ = read_method(&mut stream).await;
        }
        Ok(format!(
            "accepting connections ({server}{over}, user {}, vhost {})",
            login.user, login.vhost
        ))
    }

    /// The server's Connection.Close: refused access is final, anything else (a vhost not
    /// created yet, a broker shutting down) may pass.
    async fn closed<S>(&self, stream: &mut S, args: &[u8], login: &Login, doing: &str) -> Failure
    where
        S: AsyncWrite + Unpin,
    {
        let _ = send(stream, &method_frame(CLOSE_OK, &[])).await;
        let (code, text) = match parse_close(args) {
            Ok(close) => close,
            Err(why) => return Failure::Retry(format!("reading Connection.Close: {why}")),
        };
        let words = format!("{code} {}", redact::scrub(&service::shorten(&text)));
        match code {
            ACCESS_REFUSED => Failure::Fatal(Error::Failed(format!(
                "{}: the server refused user {} {doing} (vhost {}): {words}",
                self.label, login.user, login.vhost
            ))),
            NOT_ALLOWED => Failure::Retry(format!("vhost {} not open: {words}", login.vhost)),
            _ => Failure::Retry(format!("the server closed the connection {doing}: {words}")),
        }
    }
}

/// One method frame: its (class, method) and the arguments after them.
struct Method {
    id: (u16, u16),
    args: Vec<u8>,
}

async fn send<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) -> std::result::Result<(), Failure> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| io_failure("sending to the server", &e))?;
    stream
        .flush()
        .await
        .map_err(|e| io_failure("sending to the server", &e))
}

fn io_failure(doing: &str, error: &std::io::Error) -> Failure {
    if error.kind() == std::io::ErrorKind::UnexpectedEof {
        return Failure::Retry("the server closed the connection".into());
    }
    Failure::Retry(format!("{doing}: {}", crate::reason::io(error)))
}

/// After Start-Ok, a server that refuses the login without saying so just closes; with
/// our `authentication_failure_close` capability RabbitMQ sends Close 403 instead.
async fn read_method_or_login_closed<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> std::result::Result<Method, Failure> {
    read_method(stream).await.map_err(|failure| match failure {
        Failure::Retry(reason) if reason == "the server closed the connection" => Failure::Retry(
            "the server closed the connection after the login (a refused login, or a broker \
             shutting down)"
                .into(),
        ),
        other => other,
    })
}

/// The next method frame on channel 0, skipping heartbeats.
async fn read_method<S: AsyncRead + Unpin>(stream: &mut S) -> std::result::Result<Method, Failure> {
    loop {
        let mut header = [0u8; 7];
        stream
            .read_exact(&mut header)
            .await
            .map_err(|e| io_failure("reading a frame", &e))?;
        if &header[..4] == b"AMQP" {
            // The server refused our protocol header and answered with its own version.
            let mut last = [0u8; 1];
            let _ = stream.read_exact(&mut last).await;
            return Err(Failure::Fatal(Error::Failed(format!(
                "the server does not speak AMQP 0-9-1: it answered with the protocol header \
                 for {}-{}-{} (wait-for-amqp speaks 0-9-1, as RabbitMQ does)",
                header[5], header[6], last[0]
            ))));
        }
        let kind = header[0];
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]);
        if size > MAX_FRAME {
            return Err(Failure::Retry(format!(
                "the server sent a frame of {size} bytes, over the {} KiB limit (is this an AMQP \
                 port?)",
                MAX_FRAME / 1024
            )));
        }
        let mut payload = vec![0u8; size as usize + 1];
        stream
            .read_exact(&mut payload)
            .await
            .map_err(|e| io_failure("reading a frame", &e))?;
        if payload.pop() != Some(FRAME_END) {
            return Err(Failure::Retry(
                "the server sent a malformed frame (no frame end; is this an AMQP port?)".into(),
            ));
        }
        match kind {
            FRAME_HEARTBEAT => continue,
            FRAME_METHOD => {
                if payload.len() < 4 {
                    return Err(Failure::Retry(
                        "the server sent a truncated method frame".into(),
                    ));
                }
                let class = u16::from_be_bytes([payload[0], payload[1]]);
                let method = u16::from_be_bytes([payload[2], payload[3]]);
                return Ok(Method {
                    id: (class, method),
                    args: payload.split_off(4),
                });
            }
            other => {
                return Err(Failure::Retry(format!(
                    "the server sent a frame of type {other} where a method was due"
                )));
            }
        }
    }
}

fn unexpected(wanted: &str, got: &Method) -> Failure {
    Failure::Retry(format!(
        "the server answered method {}.{} where {wanted} was due",
        got.id.0, got.id.1
    ))
}

/// A bounded reader over a frame's arguments: every length is checked against what is left.
struct Cursor<'a> {
    bytes: &'a [u8],
}

type Parsed<T> = std::result::Result<T, String>;

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Parsed<&'a [u8]> {
        if n > self.bytes.len() {
            return Err(format!(
                "a field of {n} bytes runs past the end of the frame ({} left)",
                self.bytes.len()
            ));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Parsed<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Parsed<u16> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Parsed<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn short_string(&mut self) -> Parsed<String> {
        let len = self.u8()? as usize;
        Ok(String::from_utf8_lossy(self.take(len)?).into_owned())
    }

    fn long_bytes(&mut self) -> Parsed<&'a [u8]> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    /// A field table; calls `found` with each string value at the top level.
    fn table(&mut self, depth: usize, found: &mut dyn FnMut(&str, &str)) -> Parsed<()> {
        if depth > MAX_DEPTH {
            return Err(format!("field tables nested deeper than {MAX_DEPTH}"));
        }
        let mut inner = Cursor {
            bytes: self.long_bytes()?,
        };
        while !inner.bytes.is_empty() {
            let name = inner.short_string()?;
            let kind = inner.u8()?;
            if kind == b'S' {
                let value = String::from_utf8_lossy(inner.long_bytes()?).into_owned();
                if depth == 0 {
                    found(&name, &value);
                }
            } else {
                inner.skip_value(kind, depth)?;
            }
        }
        Ok(())
    }

    /// Skips one field value of type `kind` (the types RabbitMQ and the 0-9-1 errata use).
    fn skip_value(&mut self, kind: u8, depth: usize) -> Parsed<()> {
        match kind {
            b't' | b'b' | b'B' => self.take(1).map(drop),
            b's' | b'u' => self.take(2).map(drop),
            b'I' | b'i' | b'f' => self.take(4).map(drop),
            b'l' | b'L' | b'd' | b'T' => self.take(8).map(drop),
            b'D' => self.take(5).map(drop),
            b'V' => Ok(()),
            b'S' | b'x' => self.long_bytes().map(drop),
            b'F' => self.table(depth + 1, &mut |_, _| {}),
            b'A' => {
                if depth >= MAX_DEPTH {
                    return Err(format!("field arrays nested deeper than {MAX_DEPTH}"));
                }
                let mut inner = Cursor {
                    bytes: self.long_bytes()?,
                };
                while !inner.bytes.is_empty() {
                    let kind = inner.u8()?;
                    inner.skip_value(kind, depth + 1)?;
                }
                Ok(())
            }
            other => Err(format!("unknown field type {:?}", other as char)),
        }
    }
}

#[derive(Debug)]
struct Start {
    major: u8,
    minor: u8,
    product: Option<String>,
    version: Option<String>,
    mechanisms: String,
}

fn parse_start(args: &[u8]) -> Parsed<Start> {
    let mut cursor = Cursor { bytes: args };
    let major = cursor.u8()?;
    let minor = cursor.u8()?;
    let mut product = None;
    let mut version = None;
    cursor.table(0, &mut |name, value| match name {
        "product" => product = Some(service::shorten(value)),
        "version" => version = Some(service::shorten(value)),
        _ => {}
    })?;
    let mechanisms = String::from_utf8_lossy(cursor.long_bytes()?).into_owned();
    Ok(Start {
        major,
        minor,
        product,
        version,
        mechanisms,
    })
}

fn parse_close(args: &[u8]) -> Parsed<(u16, String)> {
    let mut cursor = Cursor { bytes: args };
    let code = cursor.u16()?;
    let text = cursor.short_string()?;
    Ok((code, text))
}

/// Builds frame arguments.
#[derive(Default)]
struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    fn u8(&mut self, value: u8) -> &mut Self {
        self.bytes.push(value);
        self
    }

    fn u16(&mut self, value: u16) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    fn u32(&mut self, value: u32) -> &mut Self {
        self.bytes.extend_from_slice(&value.to_be_bytes());
        self
    }

    /// Callers pass text they checked is at most 255 bytes.
    fn short_string(&mut self, text: &str) -> &mut Self {
        let len = text.len().min(255);
        self.bytes.push(len as u8);
        self.bytes.extend_from_slice(&text.as_bytes()[..len]);
        self
    }

    fn long_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.u32(bytes.len() as u32);
        self.bytes.extend_from_slice(bytes);
        self
    }
}

fn method_frame(id: (u16, u16), args: &[u8]) -> Vec<u8> {
    let size = 4 + args.len();
    let mut frame = Vec::with_capacity(8 + size);
    frame.push(FRAME_METHOD);
    frame.extend_from_slice(&0u16.to_be_bytes());
    frame.extend_from_slice(&(size as u32).to_be_bytes());
    frame.extend_from_slice(&id.0.to_be_bytes());
    frame.extend_from_slice(&id.1.to_be_bytes());
    frame.extend_from_slice(args);
    frame.push(FRAME_END);
    frame
}

/// Start-Ok with PLAIN, asking to be told of a refused login (a Close 403 instead of a
/// silent hang-up).
fn start_ok(login: &Login) -> Vec<u8> {
    let mut capabilities = Writer::default();
    capabilities
        .short_string("authentication_failure_close")
        .u8(b't')
        .u8(1);
    let mut properties = Writer::default();
    properties
        .short_string("product")
        .u8(b'S')
        .long_bytes(b"initbox");
    properties
        .short_string("version")
        .u8(b'S')
        .long_bytes(env!("CARGO_PKG_VERSION").as_bytes());
    properties
        .short_string("capabilities")
        .u8(b'F')
        .long_bytes(&capabilities.bytes);
    let response = format!("\0{}\0{}", login.user, login.password);
    let mut args = Writer::default();
    args.long_bytes(&properties.bytes)
        .short_string("PLAIN")
        .long_bytes(response.as_bytes())
        .short_string("en_US");
    method_frame(START_OK, &args.bytes)
}

/// Tune-Ok: the server's channel-max, its frame-max capped at ours, no heartbeats (the
/// connection lives for a few round trips).
fn tune_ok(tune: &[u8]) -> std::result::Result<Vec<u8>, Failure> {
    let mut cursor = Cursor { bytes: tune };
    let (channel_max, frame_max) = (|| Ok::<_, String>((cursor.u16()?, cursor.u32()?)))()
        .map_err(|why| Failure::Retry(format!("reading Connection.Tune: {why}")))?;
    let frame_max = if frame_max == 0 {
        MAX_FRAME
    } else {
        frame_max.min(MAX_FRAME)
    };
    let mut args = Writer::default();
    args.u16(channel_max).u32(frame_max).u16(0);
    Ok(method_frame(TUNE_OK, &args.bytes))
}

fn open(vhost: &str) -> std::result::Result<Vec<u8>, Failure> {
    let mut args = Writer::default();
    args.short_string(vhost).short_string("").u8(0);
    Ok(method_frame(OPEN, &args.bytes))
}

fn close() -> Vec<u8> {
    let mut args = Writer::default();
    args.u16(200).short_string("ready check done").u16(0).u16(0);
    method_frame(CLOSE, &args.bytes)
}

impl crate::cli::Task for AmqpArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    /// `--password-file` without a user to log in as is refused when the flags are parsed,
    /// so `run --check` refuses it too (it needs no I/O).
    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        self.wait.validate()?;
        match &self.password_file {
            Some(file) if self.user.is_none() && self.servers.iter().any(|s| s.user.is_none()) => {
                Err(crate::cli::Invalid {
                    arg: "--password-file <FILE>".into(),
                    value: file.display().to_string(),
                    reason: "needs --user (or a user in the amqp:// URL)".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The login a server gets: --user or the URL's user, the password, and the vhost.
fn login(args: &AmqpArgs, server: &AmqpServer, password: &Option<String>) -> Result<Option<Login>> {
    let user = args.user.clone().or_else(|| server.user.clone());
    let Some(user) = user else {
        if args.password_file.is_some() {
            return Err(Error::Usage(
                "--password-file needs --user (or a user in the amqp:// URL)".into(),
            ));
        }
        return Ok(None);
    };
    let Some(password) = password.clone() else {
        return Err(Error::Usage(format!(
            "a login as '{user}' needs a password: use --password-file (or RABBITMQ_PASSWORD)"
        )));
    };
    let vhost = args
        .vhost
        .clone()
        .or_else(|| server.vhost.clone())
        .unwrap_or_else(|| "/".to_owned());
    for (what, value) in [("user", &user), ("vhost", &vhost)] {
        if value.len() > 255 {
            return Err(Error::Usage(format!(
                "the AMQP {what} '{}…' is longer than 255 bytes",
                value.chars().take(20).collect::<String>()
            )));
        }
    }
    Ok(Some(Login {
        user,
        password,
        vhost,
    }))
}

pub async fn run(args: AmqpArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let wants_login = args.user.is_some() || args.servers.iter().any(|s| s.user.is_some());
    let password = if wants_login {
        service::password(args.password_file.as_deref(), "RABBITMQ_PASSWORD")?
    } else {
        None
    };
    let tls = if args.tls || args.servers.iter().any(|s| s.tls) {
        let mut config = http_client::tls_config(&args.tls_files)?;
        config.alpn_protocols = Vec::new();
        Some(Arc::new(config))
    } else {
        None
    };
    let mut probes = Vec::new();
    for server in &args.servers {
        probes.push(AmqpProbe {
            label: server.address.to_string(),
            login: login(&args, server, &password)?,
            tls: tls.clone().filter(|_| args.tls || server.tls),
            server: server.clone(),
            resolver: resolver.clone(),
        });
    }
    wait::wait_for_all("amqp", probes, options).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(entries: &[u8]) -> Vec<u8> {
        let mut w = Writer::default();
        w.long_bytes(entries);
        w.bytes
    }

    #[test]
    fn connection_start_gives_product_version_and_mechanisms() {
        let mut props = Writer::default();
        props
            .short_string("product")
            .u8(b'S')
            .long_bytes(b"RabbitMQ");
        let mut caps = Writer::default();
        caps.short_string("publisher_confirms").u8(b't').u8(1);
        props
            .short_string("capabilities")
            .u8(b'F')
            .long_bytes(&caps.bytes);
        props.short_string("version").u8(b'S').long_bytes(b"3.10.8");
        let mut args = Writer::default();
        args.u8(0).u8(9);
        args.bytes.extend(table(&props.bytes));
        args.long_bytes(b"PLAIN AMQPLAIN").long_bytes(b"en_US");
        let start = parse_start(&args.bytes).unwrap();
        assert_eq!(start.product.as_deref(), Some("RabbitMQ"));
        assert_eq!(start.version.as_deref(), Some("3.10.8"));
        assert_eq!(start.mechanisms, "PLAIN AMQPLAIN");
    }

    #[test]
    fn lengths_past_the_frame_and_deep_nesting_are_refused_without_allocating() {
        // A table claiming 4 GiB inside a frame of a few bytes.
        let mut args = vec![0, 9];
        args.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(
            parse_start(&args)
                .unwrap_err()
                .contains("runs past the end")
        );
        // Tables nested 100 deep.
        let mut inner = Vec::new();
        for _ in 0..100 {
            let mut w = Writer::default();
            w.short_string("x").u8(b'F').long_bytes(&inner);
            inner = w.bytes;
        }
        let mut args = vec![0, 9];
        args.extend(table(&inner));
        args.extend_from_slice(&[0, 0, 0, 0]);
        assert!(parse_start(&args).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn frames_are_framed_with_size_and_end() {
        let frame = close();
        assert_eq!(frame[0], FRAME_METHOD);
        let size = u32::from_be_bytes([frame[3], frame[4], frame[5], frame[6]]) as usize;
        assert_eq!(frame.len(), 7 + size + 1);
        assert_eq!(*frame.last().unwrap(), FRAME_END);
        assert_eq!(&frame[7..11], &[0, 10, 0, 50]);
    }

    #[test]
    fn amqps_urls_default_to_5671_and_tls() {
        let server: AmqpServer = "amqps://app@mq/%2F".parse().unwrap();
        assert_eq!(server.address.port, 5671);
        assert!(server.tls);
        assert_eq!(server.vhost.as_deref(), Some("/"));
        assert_eq!(server.user.as_deref(), Some("app"));
        let plain: AmqpServer = "mq".parse().unwrap();
        assert_eq!((plain.address.port, plain.tls), (5672, false));
        assert!("amqps://app:pw@mq/".parse::<AmqpServer>().is_err());
    }

    #[tokio::test]
    async fn a_protocol_header_in_reply_is_fatal_and_heartbeats_are_skipped() {
        // An AMQP 1.0-only broker answers our header with its own.
        let mut reply: &[u8] = b"AMQP\x00\x01\x00\x00";
        match read_method(&mut reply).await {
            Err(Failure::Fatal(error)) => assert!(error.to_string().contains("1-0-0")),
            other => panic!("{:?}", other.map(|m| m.id)),
        }
        let mut frames = vec![FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END];
        frames.extend(close());
        let mut stream: &[u8] = &frames;
        assert_eq!(
            read_method(&mut stream).await.ok().map(|m| m.id),
            Some(CLOSE)
        );
        // A frame without its end byte is refused.
        let mut broken = close();
        *broken.last_mut().unwrap() = 0;
        let mut stream: &[u8] = &broken;
        assert!(matches!(
            read_method(&mut stream).await,
            Err(Failure::Retry(_))
        ));
    }
}
