//! wait-for-redis: one attempt = connect (TLS when asked), `AUTH` when a password is given,
//! `PING`, and `ROLE` when a role is asked for, all sent at once and read back in order. RESP
//! is spoken by hand: the few replies this needs are simpler than a client crate.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

use crate::checks::service::{self, Protocol, Service};
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::TlsArgs;
use crate::report;
use crate::resolve::{Resolver, ResolverArgs};
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

pub struct Redis;

impl Protocol for Redis {
    const NAME: &'static str = "Redis";
    const SCHEMES: &'static [&'static str] = &["redis", "rediss"];
    const DEFAULT_PORT: u16 = 6379;
    const PASSWORD_SOURCE: &'static str = "--password-file (or REDISCLI_AUTH)";
}

/// A server as the user wrote it; rediss:// asks for TLS.
#[derive(Debug, Clone)]
pub struct Target {
    service: Service<Redis>,
    tls: bool,
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        Ok(Target {
            service: text.parse()?,
            tls: text
                .get(..9)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("rediss://")),
        })
    }
}

/// The role `--role` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    Master,
    /// A replica whose link to its master is up (`master_link_status:up`).
    Replica,
}

/// Wait until Redis servers answer PING (replaces `until redis-cli ping; do sleep 2; done`).
#[derive(Debug, Clone, clap::Args)]
pub struct RedisArgs {
    /// Servers as HOST, HOST:PORT (6379 by default) or redis://[USER@]HOST[:PORT][/DB]
    /// (rediss:// for TLS).
    #[arg(required = true, value_name = "HOST[:PORT]|URL",
          value_parser = crate::http_client::Unechoed(<Target as std::str::FromStr>::from_str))]
    pub targets: Vec<Target>,
    /// Log in as this ACL user (Redis 6+); without it, AUTH uses the default user.
    #[arg(
        long,
        env = "INITBOX_USER",
        value_name = "NAME",
        help_heading = "Login"
    )]
    pub user: Option<String>,
    /// Log in with the password in this file (else REDISCLI_AUTH, when set): a wrong one
    /// ends the wait at once with exit code 1.
    #[arg(
        long,
        env = "INITBOX_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "Login"
    )]
    pub password_file: Option<PathBuf>,
    /// Speak TLS from the start (as rediss:// does), checking the server's certificate.
    #[arg(long, env = "INITBOX_TLS")]
    pub tls: bool,
    /// Also wait until the server has this role (a replica: with its link to the master up).
    #[arg(long, env = "INITBOX_ROLE", value_name = "ROLE")]
    pub role: Option<Role>,
    #[command(flatten)]
    pub tls_args: TlsArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

/// What every probe of one command line shares.
struct Login {
    user: Option<String>,
    password: Option<String>,
    role: Option<Role>,
}

pub struct RedisProbe {
    target: Service<Redis>,
    label: String,
    /// The database number of a redis://HOST/DB URL, selected after logging in.
    database: Option<u32>,
    tls: Option<Arc<rustls::ClientConfig>>,
    login: Arc<Login>,
    resolver: Resolver,
}

/// The longest reply line and bulk string read, and the most array items: a PING or ROLE
/// answer is far shorter, so a server (or an impostor) sending more is cut off.
const MAX_LINE: usize = 64 * 1024;
const MAX_ITEMS: usize = 1024;
const MAX_DEPTH: usize = 4;

/// One RESP reply.
#[derive(Debug, PartialEq, Eq)]
enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    Bulk(Option<String>),
    Array(Option<Vec<Reply>>),
}

impl Reply {
    fn text(&self) -> Option<&str> {
        match self {
            Reply::Simple(text) | Reply::Bulk(Some(text)) => Some(text),
            _ => None,
        }
    }
}

/// A command as RESP: an array of bulk strings.
fn command(words: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", words.len()).into_bytes();
    for word in words {
        out.extend_from_slice(format!("${}\r\n", word.len()).as_bytes());
        out.extend_from_slice(word.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
) -> std::result::Result<String, Failure> {
    let mut line = Vec::new();
    let read = (&mut *reader)
        .take(MAX_LINE as u64 + 2)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| Failure::Retry(format!("reading the reply: {}", crate::reason::io(&e))))?;
    if read == 0 {
        return Err(Failure::Retry(
            "the server closed the connection without a reply".into(),
        ));
    }
    if !line.ends_with(b"\r\n") {
        return Err(Failure::Retry(if line.len() > MAX_LINE {
            format!("the reply is longer than {MAX_LINE} bytes: not a Redis server?")
        } else {
            "the server closed the connection in the middle of a reply".into()
        }));
    }
    line.truncate(line.len() - 2);
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn not_redis(what: &str) -> Failure {
    Failure::Retry(format!(
        "the answer is not RESP ({what}): not a Redis server?"
    ))
}

/// Reads one reply, arrays included (boxed: a reply nests).
fn read_reply<'a, R: AsyncBufRead + Unpin + Send>(
    reader: &'a mut R,
    depth: usize,
) -> std::pin::Pin<Box<dyn Future<Output = std::result::Result<Reply, Failure>> + Send + 'a>> {
    Box::pin(async move {
        let line = read_line(reader).await?;
        let Some(kind) = line.chars().next() else {
            return Err(not_redis("an empty line"));
        };
        let rest = &line[kind.len_utf8()..];
        let length = || -> std::result::Result<Option<usize>, Failure> {
            match rest.parse::<i64>() {
                Ok(-1) => Ok(None),
                Ok(n) if (0..=MAX_LINE as i64).contains(&n) => Ok(Some(n as usize)),
                _ => Err(not_redis(&format!("a length of '{rest}'"))),
            }
        };
        match kind {
            '+' => Ok(Reply::Simple(rest.to_owned())),
            '-' => Ok(Reply::Error(rest.to_owned())),
            ':' => rest
                .parse()
                .map(Reply::Integer)
                .map_err(|_| not_redis(&format!("an integer of '{rest}'"))),
            '$' => {
                let Some(n) = length()? else {
                    return Ok(Reply::Bulk(None));
                };
                let mut data = vec![0; n + 2];
                reader.read_exact(&mut data).await.map_err(|e| {
                    Failure::Retry(format!("reading the reply: {}", crate::reason::io(&e)))
                })?;
                if !data.ends_with(b"\r\n") {
                    return Err(not_redis("a bulk string without its CRLF"));
                }
                data.truncate(n);
                Ok(Reply::Bulk(Some(
                    String::from_utf8_lossy(&data).into_owned(),
                )))
            }
            '*' => {
                let Some(n) = length()? else {
                    return Ok(Reply::Array(None));
                };
                if n > MAX_ITEMS || depth >= MAX_DEPTH {
                    return Err(not_redis("an array too long or too deep"));
                }
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(read_reply(reader, depth + 1).await?);
                }
                Ok(Reply::Array(Some(items)))
            }
            _ => Err(not_redis(&format!(
                "a line starting with {:?}",
                line.chars().take(16).collect::<String>()
            ))),
        }
    })
}

/// The first word of an error reply: `LOADING`, `WRONGPASS`, `ERR`.
fn code(error: &str) -> &str {
    error.split_whitespace().next().unwrap_or("")
}

/// An error reply that means "not yet": the server is loading its data, a replica without
/// its master, or busy running a script.
fn is_transient(error: &str) -> bool {
    matches!(code(error), "LOADING" | "MASTERDOWN" | "BUSY" | "TRYAGAIN")
}

fn unexpected(what: &str, reply: &Reply) -> Failure {
    Failure::Retry(format!("unexpected answer to {what}: {reply:?}"))
}

/// What the answer to AUTH means.
fn check_auth(reply: Reply, user: Option<&str>) -> std::result::Result<Option<String>, Failure> {
    let error = match reply {
        Reply::Simple(ok) if ok == "OK" => return Ok(None),
        Reply::Error(error) => error,
        other => return Err(unexpected("AUTH", &other)),
    };
    if is_transient(&error) {
        return Err(Failure::Retry(error));
    }
    // Redis 6+ says so when no password is set for the default user: the server is up and
    // needs no login, which is worth a warning but not a failed start.
    if error.contains("without any password configured") {
        return Ok(Some(
            "the server needs no password, but one was given; check that this is the server you meant".into(),
        ));
    }
    let whom = match user {
        Some(user) => format!(" as '{user}'"),
        None => String::new(),
    };
    // WRONGPASS (6+), `ERR invalid password` (before 6), or an ACL user a server before 6
    // does not know: none of them changes by retrying.
    Err(Failure::Fatal(Error::Failed(format!(
        "logging in{whom}: the server refused it: {error}"
    ))))
}

/// What the answer to PING means; with no password given, NOAUTH is "alive" with a warning.
fn check_ping(reply: Reply, logged_in: bool) -> std::result::Result<Option<String>, Failure> {
    match reply {
        Reply::Simple(pong) if pong == "PONG" => Ok(None),
        Reply::Error(error) if is_transient(&error) => Err(Failure::Retry(error)),
        Reply::Error(error) if code(&error) == "NOAUTH" && !logged_in => Ok(Some(
            "the server is alive, but it requires a password; give --password-file (or \
             REDISCLI_AUTH) to check the login"
                .into(),
        )),
        Reply::Error(error) if code(&error) == "NOPERM" => Err(Failure::Fatal(Error::Failed(
            format!("PING: the user may not run it: {error}"),
        ))),
        Reply::Error(error) => Err(Failure::Retry(format!("PING: {error}"))),
        other => Err(unexpected("PING", &other)),
    }
}

/// What the answer to ROLE means for `--role`: the role seen when it is not the one wanted.
fn check_role(reply: Reply, wanted: Role) -> std::result::Result<String, Failure> {
    let items = match reply {
        Reply::Array(Some(items)) => items,
        Reply::Error(error) if is_transient(&error) => return Err(Failure::Retry(error)),
        Reply::Error(error) => return Err(Failure::Retry(format!("ROLE: {error}"))),
        other => return Err(unexpected("ROLE", &other)),
    };
    let field = |i: usize| items.get(i).and_then(Reply::text).unwrap_or("?");
    let port = match items.get(2) {
        Some(Reply::Integer(port)) => port.to_string(),
        _ => field(2).to_owned(),
    };
    match (field(0), wanted) {
        ("master", Role::Master) => Ok("master".into()),
        ("slave", Role::Replica) if field(3) == "connected" => {
            Ok(format!("replica of {}:{port}", field(1)))
        }
        ("slave", Role::Replica) => Err(Failure::Retry(format!(
            "a replica of {}:{port} whose link to its master is not up yet (state '{}')",
            field(1),
            field(3)
        ))),
        ("slave", Role::Master) => Err(Failure::Retry(format!(
            "the server is a replica of {}:{port}, not a master",
            field(1)
        ))),
        ("master", Role::Replica) => Err(Failure::Retry(
            "the server is a master, not a replica".into(),
        )),
        (other, _) => Err(Failure::Retry(format!(
            "the server's role is '{other}', not {}",
            match wanted {
                Role::Master => "master",
                Role::Replica => "replica",
            }
        ))),
    }
}

impl RedisProbe {
    async fn exchange<S>(&self, stream: S) -> std::result::Result<String, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let login = &self.login;
        let mut request = Vec::new();
        if let Some(password) = &login.password {
            let mut words = vec!["AUTH"];
            words.extend(login.user.as_deref());
            words.push(password);
            request.extend(command(&words));
        }
        let database = self.database.map(|db| db.to_string());
        if let Some(database) = &database {
            request.extend(command(&["SELECT", database]));
        }
        request.extend(command(&["PING"]));
        if login.role.is_some() {
            request.extend(command(&["ROLE"]));
        }
        // One write, one round trip: the replies come back in order.
        let mut stream = tokio::io::BufReader::new(stream);
        stream
            .get_mut()
            .write_all(&request)
            .await
            .map_err(|e| Failure::Retry(format!("sending PING: {}", crate::reason::io(&e))))?;
        let mut warning = None;
        if login.password.is_some() {
            warning = check_auth(read_reply(&mut stream, 0).await?, login.user.as_deref())?;
        }
        if let Some(database) = &database {
            match read_reply(&mut stream, 0).await? {
                Reply::Simple(ok) if ok == "OK" => {}
                Reply::Error(error) if is_transient(&error) => return Err(Failure::Retry(error)),
                // NOAUTH here is the ping's to report.
                Reply::Error(error) if code(&error) == "NOAUTH" => {}
                Reply::Error(error) => {
                    return Err(Failure::Fatal(Error::Failed(format!(
                        "selecting database {database}: {error}"
                    ))));
                }
                other => return Err(unexpected("SELECT", &other)),
            }
        }
        let ping = check_ping(read_reply(&mut stream, 0).await?, login.password.is_some())?;
        let alive_only = ping.is_some();
        let mut detail = if alive_only {
            "alive (NOAUTH: the login was not checked)".to_owned()
        } else {
            "PONG".to_owned()
        };
        warning = warning.or(ping);
        if let Some(wanted) = login.role {
            let reply = read_reply(&mut stream, 0).await?;
            if alive_only {
                // Without the password, ROLE is refused as PING was: the role is not known.
                return Err(Failure::Fatal(Error::Failed(
                    "--role needs a login: the server requires a password; give \
                     --password-file (or REDISCLI_AUTH)"
                        .into(),
                )));
            }
            detail = format!("PONG, {}", check_role(reply, wanted)?);
        }
        if let Some(warning) = warning {
            report::warn("redis.auth", format!("{}: {warning}", self.label));
        }
        Ok(detail)
    }
}

impl Probe for RedisProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt {
        let (stream, _addr) = match service::connect(&self.resolver, &self.target.address()).await {
            Ok(connected) => connected,
            Err(failure) => return failure.into(),
        };
        let outcome = match &self.tls {
            Some(config) => {
                match service::start_tls(stream, &self.target.host, config.clone()).await {
                    Ok(stream) => self.exchange(stream).await,
                    Err(failure) => Err(failure),
                }
            }
            None => self.exchange(stream).await,
        };
        outcome.into()
    }
}

impl crate::cli::Task for RedisArgs {
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

/// The database number of a redis:// URL's path; query parameters are not understood.
fn database(target: &Service<Redis>) -> Result<Option<u32>> {
    if let Some((key, _)) = target.query.first() {
        return Err(Error::Usage(format!(
            "{target}: the Redis URL parameter '{key}' is not understood (use the flags)"
        )));
    }
    match &target.path {
        None => Ok(None),
        Some(path) => path.parse().map(Some).map_err(|_| {
            Error::Usage(format!(
                "{target}: '/{path}' is not a Redis database number (redis://HOST:PORT/0)"
            ))
        }),
    }
}

pub async fn run(args: RedisArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let password = service::password(args.password_file.as_deref(), "REDISCLI_AUTH")?;
    if args.user.is_some() && password.is_none() {
        return Err(Error::Usage(
            "--user needs a password: give --password-file (or REDISCLI_AUTH)".into(),
        ));
    }
    let wants_tls = args.tls || args.targets.iter().any(|t| t.tls);
    let tls = if wants_tls {
        let mut config = crate::http_client::tls_config(&args.tls_args)?;
        config.alpn_protocols.clear();
        Some(Arc::new(config))
    } else {
        None
    };
    let mut probes = Vec::new();
    for Target {
        service: target,
        tls: rediss,
    } in args.targets
    {
        let user = target.user.clone().or_else(|| args.user.clone());
        if target.user.is_some() && password.is_none() {
            return Err(Error::Usage(format!(
                "{target}: the URL names a user, which needs a password: give --password-file \
                 (or REDISCLI_AUTH)"
            )));
        }
        let login = Arc::new(Login {
            user,
            password: password.clone(),
            role: args.role,
        });
        probes.push(RedisProbe {
            label: target.to_string(),
            database: database(&target)?,
            tls: (args.tls || rediss).then(|| tls.clone()).flatten(),
            target,
            login,
            resolver: resolver.clone(),
        });
    }
    wait::wait_for_all("redis", probes, options).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8]) -> std::result::Result<Reply, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let mut reader = tokio::io::BufReader::new(bytes);
            read_reply(&mut reader, 0).await.map_err(|f| f.to_string())
        })
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        assert_eq!(command(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            command(&["AUTH", "app", "pw"]),
            b"*3\r\n$4\r\nAUTH\r\n$3\r\napp\r\n$2\r\npw\r\n"
        );
    }

    #[test]
    fn replies_are_read_as_resp() {
        assert_eq!(parse(b"+PONG\r\n").unwrap(), Reply::Simple("PONG".into()));
        assert_eq!(
            parse(b"-LOADING Redis is loading\r\n").unwrap(),
            Reply::Error("LOADING Redis is loading".into())
        );
        assert_eq!(
            parse(b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:14\r\n")
                .unwrap(),
            Reply::Array(Some(vec![
                Reply::Bulk(Some("slave".into())),
                Reply::Bulk(Some("127.0.0.1".into())),
                Reply::Integer(6379),
                Reply::Bulk(Some("connected".into())),
                Reply::Integer(14),
            ]))
        );
        assert_eq!(parse(b"$-1\r\n").unwrap(), Reply::Bulk(None));
    }

    #[test]
    fn what_is_not_resp_or_too_big_is_refused_without_reading_it_all() {
        for (bytes, expected) in [
            (&b"HTTP/1.1 400 Bad Request\r\n"[..], "not RESP"),
            (b"$99999999999\r\n", "a length of"),
            (b"*2000\r\n", "too long"),
            (b"*1\r\n*1\r\n*1\r\n*1\r\n*1\r\n+x\r\n", "too deep"),
            (b"+PON", "middle of a reply"),
            (b"", "without a reply"),
        ] {
            let error = parse(bytes).unwrap_err();
            assert!(error.contains(expected), "{bytes:?}: {error}");
        }
        let endless = vec![b'+'; MAX_LINE + 10];
        assert!(parse(&endless).unwrap_err().contains("longer than"));
    }

    #[test]
    fn roles_are_read_from_the_role_reply() {
        let replica = |state: &str| {
            Reply::Array(Some(vec![
                Reply::Bulk(Some("slave".into())),
                Reply::Bulk(Some("10.0.0.1".into())),
                Reply::Integer(6379),
                Reply::Bulk(Some(state.into())),
                Reply::Integer(-1),
            ]))
        };
        assert_eq!(
            check_role(replica("connected"), Role::Replica).unwrap(),
            "replica of 10.0.0.1:6379"
        );
        let syncing = check_role(replica("sync"), Role::Replica).unwrap_err();
        assert!(syncing.to_string().contains("state 'sync'"), "{syncing}");
        let not_master = check_role(replica("connected"), Role::Master).unwrap_err();
        assert!(
            not_master
                .to_string()
                .contains("a replica of 10.0.0.1:6379, not a master")
        );
    }
}
