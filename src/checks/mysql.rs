//! wait-for-mysql: one attempt = connect, read the server's greeting (or the error packet
//! it sends instead: too many connections, host blocked), answer it with a login (the
//! user's, or an anonymous one that only proves the server authenticates, as
//! `mysqladmin ping` does), `SELECT 1` when logged in, and `COM_QUIT`. The few packets this
//! needs are written by hand; SHA-1 for `mysql_native_password` comes from ring.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::checks::service::{self, Protocol, Service};
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::TlsArgs;
use crate::resolve::{Resolver, ResolverArgs};
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

pub struct Mysql;

impl Protocol for Mysql {
    const NAME: &'static str = "MySQL";
    const SCHEMES: &'static [&'static str] = &["mysql", "mariadb"];
    const DEFAULT_PORT: u16 = 3306;
    const PASSWORD_SOURCE: &'static str = "--password-file (or MYSQL_PWD)";
}

/// When to speak TLS (`--tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    /// Never (the default: the greeting holds no secret and mysql_native_password sends
    /// only a scramble).
    Disable,
    /// Always, with the certificate checked as HTTPS does (--cacert; --insecure to skip);
    /// a server that does not offer TLS is an error.
    Require,
}

/// Wait until MySQL/MariaDB servers accept connections (replaces `until mysqladmin ping`).
#[derive(Debug, Clone, clap::Args)]
pub struct MysqlArgs {
    /// Servers as HOST, HOST:PORT (3306 by default) or mysql://[USER@]HOST[:PORT][/DATABASE].
    #[arg(required = true, value_name = "HOST[:PORT]|URL",
          value_parser = crate::http_client::Unechoed(<Service<Mysql> as std::str::FromStr>::from_str))]
    pub targets: Vec<Service<Mysql>>,
    /// Log in as this user and run `SELECT 1` (needs a password).
    #[arg(
        long,
        env = "INITBOX_USER",
        value_name = "NAME",
        help_heading = "Login"
    )]
    pub user: Option<String>,
    /// The password of --user, from this file (else MYSQL_PWD, when set): a wrong one ends
    /// the wait at once with exit code 1.
    #[arg(
        long,
        env = "INITBOX_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "Login"
    )]
    pub password_file: Option<PathBuf>,
    /// Also wait until this database exists (and the user may use it).
    #[arg(
        long,
        env = "INITBOX_DATABASE",
        value_name = "NAME",
        help_heading = "Login"
    )]
    pub database: Option<String>,
    /// TLS: disable or require.
    #[arg(
        long,
        env = "INITBOX_TLS",
        value_name = "MODE",
        default_value = "disable"
    )]
    pub tls: TlsMode,
    #[command(flatten)]
    pub tls_args: TlsArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

struct Login {
    user: String,
    password: String,
    database: Option<String>,
}

pub struct MysqlProbe {
    target: Service<Mysql>,
    label: String,
    login: Option<Login>,
    tls: Option<Arc<rustls::ClientConfig>>,
    resolver: Resolver,
}

/// The user of the login that only proves the server authenticates (no such account is
/// expected: "access denied" is the answer, and it means alive).
const PING_USER: &str = "initbox-ping";
/// The largest packet read: a greeting, an error or `SELECT 1`'s rows are far smaller.
const MAX_PACKET: usize = 64 * 1024;

const CLIENT_LONG_PASSWORD: u32 = 1;
const CLIENT_CONNECT_WITH_DB: u32 = 8;
const CLIENT_PROTOCOL_41: u32 = 0x200;
const CLIENT_SSL: u32 = 0x800;
const CLIENT_TRANSACTIONS: u32 = 0x2000;
const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
const NATIVE: &str = "mysql_native_password";

/// The server's greeting (protocol 10), as far as a login needs it.
#[derive(Debug, PartialEq, Eq)]
struct Greeting {
    version: String,
    capabilities: u32,
    nonce: Vec<u8>,
    plugin: String,
}

impl Greeting {
    /// `MariaDB 10.11.19` or `MySQL 8.0.36`: the `5.5.5-` prefix MariaDB sends for old
    /// replication clients is dropped.
    fn server(&self) -> String {
        let version = self.version.strip_prefix("5.5.5-").unwrap_or(&self.version);
        match version.split_once("-MariaDB") {
            Some((number, _)) => format!("MariaDB {number}"),
            None => format!("MySQL {version}"),
        }
    }
}

/// An error packet: the code and the server's words (with the SQLSTATE when it sent one).
#[derive(Debug, PartialEq, Eq)]
struct ServerError {
    code: u16,
    message: String,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (error {})", self.message, self.code)
    }
}

fn parse_error(payload: &[u8]) -> ServerError {
    let code = payload
        .get(1..3)
        .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]));
    let mut rest = payload.get(3..).unwrap_or_default();
    // After the greeting, `#` and a five-character SQLSTATE come first; before it, not.
    if rest.first() == Some(&b'#') && rest.len() >= 6 {
        rest = &rest[6..];
    }
    ServerError {
        code,
        message: String::from_utf8_lossy(rest).into_owned(),
    }
}

fn not_mysql(what: &str) -> Failure {
    Failure::Retry(format!(
        "the answer is not MySQL's ({what}): not a MySQL server?"
    ))
}

fn nul_terminated(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().position(|&b| b == 0)?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

fn parse_greeting(payload: &[u8]) -> std::result::Result<Greeting, Failure> {
    match payload.first() {
        Some(10) => {}
        Some(other) => return Err(not_mysql(&format!("protocol version {other}"))),
        None => return Err(not_mysql("an empty greeting")),
    }
    let short = || not_mysql("a greeting cut short");
    let (version, rest) = nul_terminated(&payload[1..]).ok_or_else(short)?;
    // connection id (4), nonce part 1 (8), filler (1), capabilities low (2), charset (1),
    // status (2), capabilities high (2), nonce length (1), reserved (10).
    if rest.len() < 31 {
        return Err(short());
    }
    let mut nonce = rest[4..12].to_vec();
    let low = u16::from_le_bytes([rest[13], rest[14]]) as u32;
    let high = u16::from_le_bytes([rest[18], rest[19]]) as u32;
    let capabilities = low | (high << 16);
    let nonce_len = rest[20] as usize;
    let mut rest = &rest[31..];
    if capabilities & CLIENT_SECURE_CONNECTION != 0 {
        let part = nonce_len.saturating_sub(8).max(13).min(rest.len());
        // The second part ends with a NUL that is not part of the nonce.
        let bytes = &rest[..part];
        nonce.extend_from_slice(bytes.strip_suffix(&[0]).unwrap_or(bytes));
        rest = &rest[part..];
    }
    let plugin = if capabilities & CLIENT_PLUGIN_AUTH != 0 {
        let name = nul_terminated(rest).map_or(rest, |(name, _)| name);
        String::from_utf8_lossy(name).into_owned()
    } else {
        NATIVE.to_owned()
    };
    Ok(Greeting {
        version: String::from_utf8_lossy(version).into_owned(),
        capabilities,
        nonce,
        plugin,
    })
}

fn sha1(parts: &[&[u8]]) -> Vec<u8> {
    let mut context = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    for part in parts {
        context.update(part);
    }
    context.finish().as_ref().to_vec()
}

/// mysql_native_password: SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password))).
fn native_scramble(password: &str, nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = sha1(&[password.as_bytes()]);
    let stage2 = sha1(&[&stage1]);
    let mask = sha1(&[nonce, &stage2]);
    stage1.iter().zip(mask).map(|(a, b)| a ^ b).collect()
}

/// Reads and writes packets, counting their sequence numbers.
struct Conn<S> {
    stream: S,
    sequence: u8,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    async fn read(&mut self) -> std::result::Result<Vec<u8>, Failure> {
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => {
                Failure::Retry("the server closed the connection without an answer".into())
            }
            _ => Failure::Retry(format!(
                "reading from the server: {}",
                crate::reason::io(&e)
            )),
        };
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).await.map_err(io)?;
        let length = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        if length > MAX_PACKET {
            return Err(not_mysql(&format!("a packet of {length} bytes")));
        }
        self.sequence = header[3].wrapping_add(1);
        let mut payload = vec![0; length];
        self.stream.read_exact(&mut payload).await.map_err(io)?;
        Ok(payload)
    }

    async fn write(&mut self, payload: &[u8]) -> std::result::Result<(), Failure> {
        let length = (payload.len() as u32).to_le_bytes();
        let mut packet = vec![length[0], length[1], length[2], self.sequence];
        packet.extend_from_slice(payload);
        self.sequence = self.sequence.wrapping_add(1);
        self.stream.write_all(&packet).await.map_err(|e| {
            Failure::Retry(format!("writing to the server: {}", crate::reason::io(&e)))
        })
    }

    /// A command starts a new sequence.
    async fn command(&mut self, payload: &[u8]) -> std::result::Result<(), Failure> {
        self.sequence = 0;
        self.write(payload).await
    }
}

/// What an error packet means for the wait.
fn judge(error: ServerError, user: Option<&str>) -> Failure {
    match error.code {
        // Access denied for the user: retrying with the same password cannot help.
        1045 | 1698 if user.is_some() => Failure::Fatal(Error::Failed(format!(
            "logging in as '{}': {error}",
            user.unwrap_or_default()
        ))),
        1129 => Failure::Retry(format!(
            "{error}; the server blocks this host until FLUSH HOSTS (or mariadb-admin flush-hosts)"
        )),
        // Too many connections (1040), host not allowed (1130: no account for this host
        // yet, as mysqladmin ping also waits), unknown database (1049) or none granted
        // (1044, 1227) that init scripts are still creating, and the rest: the server's words.
        _ => Failure::Retry(error.to_string()),
    }
}

impl MysqlProbe {
    async fn exchange<S>(
        &self,
        mut conn: Conn<S>,
        greeting: &Greeting,
        tls: bool,
    ) -> std::result::Result<String, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let server = greeting.server();
        let (user, password, database) = match &self.login {
            Some(login) => (
                login.user.as_str(),
                login.password.as_str(),
                login.database.as_deref(),
            ),
            None => (PING_USER, "", None),
        };
        let mut capabilities = CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_TRANSACTIONS
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH;
        if database.is_some() {
            capabilities |= CLIENT_CONNECT_WITH_DB;
        }
        if tls {
            capabilities |= CLIENT_SSL;
        }
        // Always mysql_native_password first: an account that uses another plugin gets an
        // auth switch request, answered below.
        let (plugin, auth) = (NATIVE, native_scramble(password, &greeting.nonce));
        let mut response = handshake_header(capabilities);
        response.extend_from_slice(user.as_bytes());
        response.push(0);
        response.push(auth.len() as u8);
        response.extend_from_slice(&auth);
        if let Some(database) = database {
            response.extend_from_slice(database.as_bytes());
            response.push(0);
        }
        response.extend_from_slice(plugin.as_bytes());
        response.push(0);
        conn.write(&response).await?;
        let mut answer = conn.read().await?;
        if answer.first() == Some(&0xfe) {
            // Auth switch: the account uses another plugin.
            let (name, data) = nul_terminated(&answer[1..]).unwrap_or((&answer[1..], &[]));
            let name = String::from_utf8_lossy(name).into_owned();
            if self.login.is_none() {
                return Ok(format!("accepting connections ({server})"));
            }
            let reply = match name.as_str() {
                NATIVE => {
                    let nonce = data.strip_suffix(&[0]).unwrap_or(data);
                    native_scramble(password, nonce)
                }
                other => {
                    return Err(Failure::Fatal(Error::Failed(format!(
                        "logging in as '{user}': the account uses the authentication plugin \
                         '{other}', which wait-for-mysql does not speak (it speaks \
                         mysql_native_password)"
                    ))));
                }
            };
            conn.write(&reply).await?;
            answer = conn.read().await?;
        }
        match answer.first() {
            Some(0x00) => {}
            Some(0xff) => {
                let error = parse_error(&answer);
                return match self.login {
                    // Alive: it authenticates (access denied, or too many connections
                    // for this user, as mysqladmin ping counts it).
                    None if matches!(error.code, 1045 | 1040 | 1698 | 1044) => {
                        Ok(format!("accepting connections ({server})"))
                    }
                    _ => Err(judge(error, self.login.as_ref().map(|l| l.user.as_str()))),
                };
            }
            Some(0x01) => {
                return Err(Failure::Fatal(Error::Failed(format!(
                    "logging in as '{user}': the server wants more authentication data \
                     (caching_sha2_password's full authentication), which wait-for-mysql does not speak"
                ))));
            }
            _ => return Err(not_mysql("an unknown answer to the login")),
        }
        if self.login.is_none() {
            // An anonymous account let us in.
            let _ = conn.command(&[0x01]).await;
            return Ok(format!("accepting connections ({server})"));
        }
        conn.command(b"\x03SELECT 1").await?;
        select_one(&mut conn).await?;
        let _ = conn.command(&[0x01]).await;
        let on = database
            .map(|db| format!(", database {db}"))
            .unwrap_or_default();
        Ok(format!(
            "logged in as {user}{on} and ran SELECT 1 ({server}{})",
            if tls { ", TLS" } else { "" }
        ))
    }
}

/// The fixed start of an SSL request and of a handshake response.
fn handshake_header(capabilities: u32) -> Vec<u8> {
    let mut header = capabilities.to_le_bytes().to_vec();
    header.extend_from_slice(&(16u32 << 20).to_le_bytes());
    header.push(45); // utf8mb4_general_ci
    header.extend_from_slice(&[0; 23]);
    header
}

/// Reads `SELECT 1`'s result: column count, column definition, EOF, the row, EOF.
async fn select_one<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut Conn<S>,
) -> std::result::Result<(), Failure> {
    let mut eofs = 0;
    for _ in 0..8 {
        let packet = conn.read().await?;
        match packet.first() {
            Some(0xff) => {
                return Err(Failure::Retry(format!(
                    "SELECT 1: {}",
                    parse_error(&packet)
                )));
            }
            Some(0xfe) if packet.len() < 9 => {
                eofs += 1;
                if eofs == 2 {
                    return Ok(());
                }
            }
            _ => {}
        }
    }
    Err(not_mysql("SELECT 1 answered with more than a row"))
}

impl Probe for MysqlProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt {
        self.try_once().await.into()
    }
}

impl MysqlProbe {
    async fn try_once(&self) -> std::result::Result<String, Failure> {
        let (stream, _addr) = service::connect(&self.resolver, &self.target.address()).await?;
        let mut conn = Conn {
            stream,
            sequence: 0,
        };
        let first = conn.read().await?;
        if first.first() == Some(&0xff) {
            return Err(judge(parse_error(&first), None));
        }
        let greeting = parse_greeting(&first)?;
        let Some(config) = &self.tls else {
            return self.exchange(conn, &greeting, false).await;
        };
        if greeting.capabilities & CLIENT_SSL == 0 {
            return Err(Failure::Fatal(Error::Failed(format!(
                "{} does not offer TLS, and --tls require was given",
                greeting.server()
            ))));
        }
        let capabilities = CLIENT_LONG_PASSWORD
            | CLIENT_PROTOCOL_41
            | CLIENT_SSL
            | CLIENT_SECURE_CONNECTION
            | CLIENT_PLUGIN_AUTH;
        conn.write(&handshake_header(capabilities)).await?;
        let stream = service::start_tls(conn.stream, &self.target.host, config.clone()).await?;
        let conn = Conn {
            stream,
            sequence: conn.sequence,
        };
        self.exchange(conn, &greeting, true).await
    }
}

impl crate::cli::Task for MysqlArgs {
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

pub async fn run(args: MysqlArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let password = service::password(args.password_file.as_deref(), "MYSQL_PWD")?;
    let tls = match args.tls {
        TlsMode::Disable => None,
        TlsMode::Require => {
            let mut config = crate::http_client::tls_config(&args.tls_args)?;
            config.alpn_protocols.clear();
            Some(Arc::new(config))
        }
    };
    let mut probes = Vec::new();
    for target in args.targets {
        if let Some((key, _)) = target.query.first() {
            return Err(Error::Usage(format!(
                "{target}: the MySQL URL parameter '{key}' is not understood (use the flags)"
            )));
        }
        let user = target.user.clone().or_else(|| args.user.clone());
        let database = target.path.clone().or_else(|| args.database.clone());
        let login = match (user, &password) {
            (Some(user), Some(password)) => Some(Login {
                user,
                password: password.clone(),
                database,
            }),
            (Some(_), None) => {
                return Err(Error::Usage(format!(
                    "{target}: a user needs a password: give --password-file (or MYSQL_PWD)"
                )));
            }
            // MYSQL_PWD alone may be in an environment shared with the application; without
            // a user there is no login to check, so it is not used.
            (None, Some(_)) if args.password_file.is_none() && database.is_none() => None,
            (None, Some(_)) => {
                return Err(Error::Usage(
                    "a password was given without a user: give --user (or mysql://USER@HOST)"
                        .into(),
                ));
            }
            (None, None) if database.is_some() => {
                return Err(Error::Usage(format!(
                    "{target}: checking a database needs a login: give --user and --password-file"
                )));
            }
            (None, None) => None,
        };
        probes.push(MysqlProbe {
            label: target.to_string(),
            target,
            login,
            tls: tls.clone(),
            resolver: resolver.clone(),
        });
    }
    wait::wait_for_all("mysql", probes, options).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_native_scramble_is_the_documented_formula() {
        // The value Python's hashlib gives for the same formula.
        let nonce = b"abcdefghijklmnopqrst";
        let hex: String = native_scramble("pw", nonce)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "12909d72d875523f8c9d6da44cbd3a6c1ce794db");
        assert!(native_scramble("", nonce).is_empty());
    }

    #[test]
    fn a_packet_longer_than_any_answer_is_refused_before_it_is_read() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (client, mut server) = tokio::io::duplex(64);
            // A length of 16 MiB - 1, and never the bytes: reading them would wait forever.
            server.write_all(&[0xff, 0xff, 0xff, 0]).await.unwrap();
            let mut conn = Conn {
                stream: client,
                sequence: 0,
            };
            let error = conn.read().await.unwrap_err().to_string();
            assert!(error.contains("a packet of 16777215 bytes"), "{error}");
        });
    }

    #[test]
    fn errors_before_the_greeting_have_no_sqlstate() {
        let mut packet = vec![0xff, 0x10, 0x04];
        packet.extend_from_slice(b"Too many connections");
        assert_eq!(
            parse_error(&packet),
            ServerError {
                code: 1040,
                message: "Too many connections".into()
            }
        );
        let mut packet = vec![0xff, 0x15, 0x04, b'#'];
        packet.extend_from_slice(b"28000Access denied");
        assert_eq!(parse_error(&packet).message, "Access denied");
    }

    #[test]
    fn the_version_drops_mariadbs_replication_prefix() {
        let greeting = |version: &str| Greeting {
            version: version.into(),
            capabilities: 0,
            nonce: Vec::new(),
            plugin: NATIVE.into(),
        };
        assert_eq!(
            greeting("5.5.5-10.11.19-MariaDB-0+deb12u1").server(),
            "MariaDB 10.11.19"
        );
        assert_eq!(greeting("8.0.36").server(), "MySQL 8.0.36");
        assert!(parse_greeting(b"\x09abc").is_err());
        assert!(parse_greeting(b"\x0a5.5\0short").is_err());
    }
}
