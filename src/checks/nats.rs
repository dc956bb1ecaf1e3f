//! wait-for-nats: one attempt = connect, read the `INFO {json}` line the server sends first
//! (alive), and with credentials send `CONNECT` + `PING` and expect `+OK` and `PONG` (the
//! login works). The text protocol is a few lines, so no NATS client crate is needed.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader,
};

use crate::checks::service::{self, Protocol, Service};
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::{self, TlsArgs, Unechoed};
use crate::redact;
use crate::resolve::{Resolver, ResolverArgs};
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

/// The longest protocol line we read. An INFO line lists the cluster's URLs, so it may be
/// a few KiB; a server that sends more without a line end is not one we can talk to, and
/// must not make us buffer without end.
const MAX_LINE: u64 = 64 * 1024;

/// NATS as [`Service`] parses it.
pub struct Nats;

impl Protocol for Nats {
    const NAME: &'static str = "NATS";
    const SCHEMES: &'static [&'static str] = &["nats", "tls"];
    const DEFAULT_PORT: u16 = 4222;
    const PASSWORD_SOURCE: &'static str = "--password-file (or NATS_PASSWORD)";
}

/// Wait until NATS servers answer, and with credentials, accept the login.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// Servers as HOST, HOST:PORT (default port 4222) or nats://[USER@]HOST:PORT
    /// (tls://… requires TLS).
    #[arg(required = true, value_name = "SERVER", value_parser = Unechoed(parse_server))]
    pub servers: Vec<NatsServer>,
    /// Log in as this user (with --password-file or NATS_PASSWORD): ready only when the
    /// server accepts the login.
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
        conflicts_with = "token_file",
        help_heading = "Login"
    )]
    pub password_file: Option<PathBuf>,
    /// Log in with the token in this file (never logged) instead of a user and password.
    #[arg(
        long,
        env = "INITBOX_TOKEN_FILE",
        value_name = "FILE",
        help_heading = "Login"
    )]
    pub token_file: Option<PathBuf>,
    /// Require TLS even when the server does not ask for it (it must offer it).
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

/// A server as the user wrote it, remembering whether `tls://` asked for TLS.
#[derive(Debug, Clone)]
pub struct NatsServer {
    pub service: Service<Nats>,
    pub tls: bool,
}

impl std::str::FromStr for NatsServer {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        // `tls://` is how NATS clients spell "TLS required"; the rest is a nats:// URL.
        let (tls, text) = match text.get(..6) {
            Some(scheme) if scheme.eq_ignore_ascii_case("tls://") => {
                (true, format!("nats://{}", &text[6..]))
            }
            _ => (false, text.to_owned()),
        };
        Ok(NatsServer {
            service: text.parse()?,
            tls,
        })
    }
}

/// clap echoes a refused value, and a refused URL may hold a password: parse through
/// [`Unechoed`], whose message is only ours (which never repeats a password).
fn parse_server(text: &str) -> std::result::Result<NatsServer, String> {
    text.parse()
}

/// How the probe logs in, when it does.
#[derive(Clone)]
enum Login {
    None,
    Password { user: String, password: String },
    Token(String),
}

pub struct NatsProbe {
    server: Service<Nats>,
    label: String,
    resolver: Resolver,
    login: Login,
    require_tls: bool,
    tls: Arc<rustls::ClientConfig>,
}

/// What the server's INFO line says that we use.
struct Info {
    version: String,
    tls_required: bool,
    tls_available: bool,
    auth_required: bool,
}

impl Probe for NatsProbe {
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

impl NatsProbe {
    async fn exchange(&self) -> std::result::Result<String, Failure> {
        let (stream, _) = service::connect(&self.resolver, &self.server.address()).await?;
        let mut plain = BufReader::new(stream);
        let info = read_info(&mut plain).await?;
        if info.tls_required || self.require_tls {
            if !info.tls_required && !info.tls_available {
                return Err(Failure::Fatal(Error::Failed(format!(
                    "{}: TLS is required, but the server does not offer it (its INFO has no \
                     tls_required or tls_available)",
                    self.label
                ))));
            }
            // The server says nothing more until our TLS handshake, so nothing is buffered.
            let stream = plain.into_inner();
            let tls = service::start_tls(stream, &self.server.host, self.tls.clone()).await?;
            self.log_in(BufReader::new(tls), &info, true).await
        } else {
            self.log_in(plain, &info, false).await
        }
    }

    /// With credentials: CONNECT, PING, and the answers. Without: the INFO line was enough.
    async fn log_in<S>(
        &self,
        mut stream: S,
        info: &Info,
        tls: bool,
    ) -> std::result::Result<String, Failure>
    where
        S: AsyncBufRead + AsyncWrite + Unpin,
    {
        let over = if tls { ", TLS" } else { "" };
        let (mut connect, who) = match &self.login {
            Login::None => {
                let auth = if info.auth_required {
                    ", login not checked"
                } else {
                    ""
                };
                return Ok(format!("answering (NATS {}{over}{auth})", info.version));
            }
            Login::Password { user, password } => (
                serde_json::json!({"user": user, "pass": password}),
                format!("user {user}"),
            ),
            Login::Token(token) => (serde_json::json!({"auth_token": token}), "token".into()),
        };
        let fields = connect.as_object_mut().expect("an object");
        fields.insert("verbose".into(), true.into());
        fields.insert("pedantic".into(), false.into());
        fields.insert("tls_required".into(), tls.into());
        fields.insert("name".into(), "initbox".into());
        fields.insert("lang".into(), "rust".into());
        fields.insert("version".into(), env!("CARGO_PKG_VERSION").into());
        fields.insert("protocol".into(), 1.into());
        let request = format!("CONNECT {connect}\r\nPING\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| Failure::Retry(format!("sending CONNECT: {}", crate::reason::io(&e))))?;
        stream
            .flush()
            .await
            .map_err(|e| Failure::Retry(format!("sending CONNECT: {}", crate::reason::io(&e))))?;
        let mut acknowledged = false;
        loop {
            let line = read_line(&mut stream, "the answer to CONNECT").await?;
            if line == "+OK" {
                acknowledged = true;
            } else if line == "PONG" {
                if !acknowledged {
                    return Err(Failure::Retry(
                        "answered PING without +OK for CONNECT".into(),
                    ));
                }
                return Ok(format!(
                    "accepting connections (NATS {}{over}, logged in with {who})",
                    info.version
                ));
            } else if let Some(error) = line.strip_prefix("-ERR") {
                return Err(refused(&self.label, error.trim(), &who));
            } else if line == "PING" {
                // The server's own keep-alive; our PONG keeps it from closing on us.
                let _ = stream.write_all(b"PONG\r\n").await;
            } else if !line.starts_with("INFO ") {
                return Err(Failure::Retry(format!(
                    "unexpected answer to CONNECT: {}",
                    service::shorten(&line)
                )));
            }
        }
    }
}

/// A `-ERR` after CONNECT: a refused login is final (the credentials will not change
/// while we wait); anything else (too many connections, a timeout) may pass.
fn refused(label: &str, error: &str, who: &str) -> Failure {
    let words = error.trim_matches('\'');
    let lower = words.to_ascii_lowercase();
    if lower.contains("authorization violation")
        || lower.contains("authentication") && !lower.contains("timeout")
    {
        return Failure::Fatal(Error::Failed(format!(
            "{label}: the server refused the login with {who}: {} (check the user and the \
             password or token)",
            redact::scrub(words)
        )));
    }
    Failure::Retry(format!("server error: {}", redact::scrub(words)))
}

/// Reads the first line and insists it is `INFO {json}`: anything else is not a NATS
/// server (or not yet one), and worth another attempt.
async fn read_info<S: AsyncBufRead + Unpin>(stream: &mut S) -> std::result::Result<Info, Failure> {
    let line = read_line(stream, "the server's INFO line").await?;
    let Some(json) = line.strip_prefix("INFO ") else {
        return Err(Failure::Retry(format!(
            "the server did not start with INFO (is this a NATS port?): {}",
            service::shorten(&line)
        )));
    };
    let value: serde_json::Value = serde_json::from_str(json.trim())
        .map_err(|e| Failure::Retry(format!("the server's INFO line is not valid JSON: {e}")))?;
    let flag = |key: &str| value.get(key).and_then(serde_json::Value::as_bool) == Some(true);
    let version = value
        .get("version")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("(version unknown)");
    Ok(Info {
        version: service::shorten(version),
        tls_required: flag("tls_required"),
        tls_available: flag("tls_available"),
        auth_required: flag("auth_required"),
    })
}

/// One `\r\n`-ended line, at most [`MAX_LINE`] bytes.
async fn read_line<S: AsyncBufRead + Unpin>(
    stream: &mut S,
    what: &str,
) -> std::result::Result<String, Failure> {
    let mut line = Vec::new();
    let read = (&mut *stream)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| Failure::Retry(format!("reading {what}: {}", crate::reason::io(&e))))?;
    if read == 0 {
        return Err(Failure::Retry(format!(
            "the server closed the connection before {what}"
        )));
    }
    if line.last() != Some(&b'\n') {
        if read as u64 >= MAX_LINE {
            return Err(Failure::Retry(format!(
                "{what} is longer than {} KiB (is this a NATS port?)",
                MAX_LINE / 1024
            )));
        }
        return Err(Failure::Retry(format!(
            "the server closed the connection in the middle of {what}"
        )));
    }
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

impl crate::cli::Task for NatsArgs {
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
            Some(file)
                if self.user.is_none() && self.servers.iter().all(|s| s.service.user.is_none()) =>
            {
                Err(crate::cli::Invalid {
                    arg: "--password-file <FILE>".into(),
                    value: file.display().to_string(),
                    reason: "needs --user (or a user in the nats:// URL)".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The login the flags and the URL ask for; the URL's user when --user is not given.
fn login(
    args: &NatsArgs,
    server: &Service<Nats>,
    password: &Option<String>,
    token: &Option<String>,
) -> Result<Login> {
    if let Some(token) = token {
        return Ok(Login::Token(token.clone()));
    }
    let user = args.user.clone().or_else(|| server.user.clone());
    match (user, password) {
        (Some(user), Some(password)) => Ok(Login::Password {
            user,
            password: password.clone(),
        }),
        (Some(user), None) => Err(Error::Usage(format!(
            "a login as '{user}' needs a password: use --password-file (or NATS_PASSWORD)"
        ))),
        (None, _) => Ok(Login::None),
    }
}

pub async fn run(args: NatsArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let wants_login = args.user.is_some() || args.servers.iter().any(|s| s.service.user.is_some());
    if args.password_file.is_some() && !wants_login {
        return Err(Error::Usage(
            "--password-file needs --user (or a user in the nats:// URL)".into(),
        ));
    }
    let password = if wants_login {
        service::password(args.password_file.as_deref(), "NATS_PASSWORD")?
    } else {
        None
    };
    let token = match &args.token_file {
        Some(file) => Some(redact::read_secret_file(file, "token file")?),
        None => None,
    };
    let mut config = http_client::tls_config(&args.tls_files)?;
    config.alpn_protocols = Vec::new();
    let config = Arc::new(config);
    let mut probes = Vec::new();
    for server in &args.servers {
        let require_tls = args.tls || server.tls;
        let server = &server.service;
        probes.push(NatsProbe {
            label: server.to_string(),
            login: login(&args, server, &password, &token)?,
            server: server.clone(),
            resolver: resolver.clone(),
            require_tls,
            tls: config.clone(),
        });
    }
    wait::wait_for_all("nats", probes, options).await.map(drop)
}
