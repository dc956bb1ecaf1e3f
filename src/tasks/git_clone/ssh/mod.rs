//! git over SSH without an ssh program: initbox ships `FROM scratch`, where gix's own ssh
//! transport (which runs `ssh`) cannot work. A pure-Rust client (russh, on ring) opens one
//! session per clone, verifies the host key against known_hosts, logs in with the deploy
//! key, and runs `git-upload-pack '<path>'` on one exec channel per gix connect; the
//! channel is handed to gix as a blocking Read/Write pair speaking the git protocol.
//!
//! Sorting failures: an unknown, changed or revoked host key, a refused key and a command
//! that the server ran and that failed (no such repository, "Permission denied") end the
//! run at once; a connection refused, reset or cut short is retried by the engine.

pub mod known_hosts;

use std::borrow::Cow;
use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use russh::keys::ssh_key::PublicKey;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg};
use russh::{ChannelMsg, client};

use crate::exit::Error;
use crate::report;
use crate::wait::Failure;

pub use known_hosts::KnownHosts;
use known_hosts::Verdict;

/// How many of the server's last stderr lines a failure message quotes.
const STDERR_LINES_KEPT: usize = 5;

/// A private key read from `--ssh-key-file`, ready to sign.
#[derive(Clone)]
pub struct ClientKey {
    /// The file it came from, for messages (never its contents).
    pub file: PathBuf,
    pub key: Arc<PrivateKey>,
}

/// How the server's host key is checked.
#[derive(Clone)]
pub enum HostKeys {
    /// Against this known_hosts file.
    Verify { file: PathBuf, known: KnownHosts },
    /// `--ssh-insecure-accept-any-host-key`.
    AcceptAny,
}

/// The SSH half of a clone request, from the flags.
#[derive(Clone)]
pub struct SshSettings {
    /// Tried in order until the server accepts one.
    pub keys: Vec<ClientKey>,
    pub host_keys: HostKeys,
    /// `--ssh-user`: wins over the URL's user; `git` when neither is given.
    pub user: Option<String>,
}

/// Reads `--ssh-key-file` (with its passphrase) as an OpenSSH private key. Errors name
/// the file and never its contents.
pub fn load_key(
    file: &std::path::Path,
    passphrase: Option<&str>,
) -> std::result::Result<ClientKey, Error> {
    let text = crate::redact::read_secret_file(file, "ssh key file")?;
    let key = russh::keys::decode_secret_key(&text, passphrase).map_err(|error| {
        let reason = match (&error, passphrase) {
            (russh::keys::Error::KeyIsEncrypted, _) => {
                "the key is encrypted and no --ssh-key-passphrase-file was given".to_owned()
            }
            (_, Some(_)) if key_is_encrypted(&text) => {
                "the passphrase from --ssh-key-passphrase-file does not decrypt it".to_owned()
            }
            _ => "it is not an OpenSSH private key (ed25519, ecdsa or rsa)".to_owned(),
        };
        Error::Config(format!("reading ssh key file {}: {reason}", file.display()))
    })?;
    Ok(ClientKey {
        file: file.to_owned(),
        key: Arc::new(key),
    })
}

fn key_is_encrypted(text: &str) -> bool {
    russh::keys::ssh_key::PrivateKey::from_openssh(text).is_ok_and(|key| key.is_encrypted())
        || text.contains("ENCRYPTED")
}

/// Where to connect: the URL's parts as the SSH client needs them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
    pub user: String,
    /// The argument of `git-upload-pack`, as git passes it (`~user/…` kept for the server
    /// to expand).
    pub path: String,
}

impl Target {
    pub fn of(url: &gix::Url, settings: &SshSettings) -> Target {
        let path = gix::url::expand_path::for_shell(url.path.clone()).to_string();
        Target {
            host: url
                .host()
                .unwrap_or_default()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: url.port.unwrap_or(22),
            user: settings
                .user
                .clone()
                .or_else(|| url.user().map(str::to_owned))
                .unwrap_or_else(|| "git".to_owned()),
            path,
        }
    }

    /// `user@host:port`, for messages.
    fn label(&self) -> String {
        format!("{}@{}:{}", self.user, self.host, self.port)
    }

    /// The command git runs on the server, the path quoted as git's `sq_quote` does.
    pub fn command(&self) -> String {
        format!("git-upload-pack {}", shell_quote(&self.path))
    }
}

/// git's `sq_quote_buf`: single quotes, with `'` and `!` closed out and escaped.
fn shell_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('\'');
    for c in text.chars() {
        match c {
            '\'' | '!' => {
                quoted.push_str("'\\");
                quoted.push(c);
                quoted.push('\'');
            }
            c => quoted.push(c),
        }
    }
    quoted.push('\'');
    quoted
}

/// What the host-key check saw, kept for the error message.
type Seen = Arc<Mutex<Option<(Verdict, PublicKey)>>>;

struct Client {
    target: Target,
    host_keys: HostKeys,
    seen: Seen,
}

impl client::Handler for Client {
    type Error = russh::Error;

    async fn check_server_key(&mut self, key: &PublicKey) -> Result<bool, Self::Error> {
        let verdict = match &self.host_keys {
            HostKeys::AcceptAny => Verdict::Trusted,
            HostKeys::Verify { known, .. } => {
                known.verify(&self.target.host, self.target.port, key)
            }
        };
        let trusted = verdict == Verdict::Trusted;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some((verdict, key.clone()));
        Ok(trusted)
    }
}

/// One SSH session, on a runtime of its own (russh is async, gix is blocking): the
/// runtime's thread drives the connection while gix's thread waits on its reads and
/// writes.
pub struct Session {
    runtime: tokio::runtime::Handle,
    /// Dropping it ends the runtime's thread, and with it the connection.
    _stop: tokio::sync::oneshot::Sender<()>,
    handle: client::Handle<Client>,
    target: Target,
    timeout: Duration,
}

impl Session {
    /// Connects to `address` (the target host's, resolved by the caller), checks the host
    /// key and logs in: one attempt, bounded by `timeout`.
    pub fn connect(
        target: Target,
        address: IpAddr,
        settings: &SshSettings,
        timeout: Duration,
    ) -> Result<Session, Failure> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Failure::Retry(format!("starting the ssh client: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("initbox-ssh".into())
            .spawn(move || {
                let _ = runtime.block_on(stopped);
            })
            .map_err(|e| Failure::Retry(format!("starting the ssh client: {e}")))?;
        if let HostKeys::AcceptAny = settings.host_keys {
            report::warn(
                "git.ssh_insecure",
                format!(
                    "--ssh-insecure-accept-any-host-key: NOT verifying the host key of {}:{}; \
                     anyone on the network path can pose as the server and read or alter \
                     the clone",
                    target.host, target.port
                ),
            );
        }
        let seen: Seen = Arc::default();
        let session = handle.block_on(tokio::time::timeout(
            timeout,
            open_session(&target, address, settings, seen.clone()),
        ));
        let session = match session {
            Ok(Ok(session)) => session,
            Ok(Err(failure)) => {
                return Err(host_key_failure(&target, settings, &seen).unwrap_or(failure));
            }
            Err(_) => {
                return Err(
                    host_key_failure(&target, settings, &seen).unwrap_or_else(|| {
                        Failure::Retry(format!(
                            "no ssh session with {} within {}",
                            target.label(),
                            crate::duration::Elapsed(timeout)
                        ))
                    }),
                );
            }
        };
        Ok(Session {
            runtime: handle,
            _stop: stop,
            handle: session,
            target,
            timeout,
        })
    }

    /// A new exec channel running `git-upload-pack` on the repository, as gix's transport.
    pub fn transport(
        &self,
    ) -> Result<
        Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
        ChannelError,
    > {
        let command = self.target.command();
        let open = async {
            let channel = self.handle.channel_open_session().await?;
            // As git does (`SendEnv GIT_PROTOCOL`): servers that accept it answer in
            // protocol v2, the others in v0, which gix speaks too.
            channel.set_env(false, "GIT_PROTOCOL", "version=2").await?;
            channel.exec(true, command.as_bytes()).await?;
            Ok::<_, russh::Error>(channel)
        };
        let channel = match self
            .runtime
            .block_on(tokio::time::timeout(self.timeout, open))
        {
            Ok(Ok(channel)) => channel,
            Ok(Err(error)) => {
                return Err(ChannelError(format!(
                    "opening a channel to {} failed: {error}",
                    self.target.label()
                )));
            }
            Err(_) => {
                return Err(ChannelError(format!(
                    "{} did not open a channel within {}",
                    self.target.label(),
                    crate::duration::Elapsed(self.timeout)
                )));
            }
        };
        let (read, write) = channel.split();
        let reader = ChannelReader {
            runtime: self.runtime.clone(),
            channel: read,
            pending: bytes::Bytes::new(),
            stderr: Stderr::default(),
            exit_status: None,
            closed: false,
            label: self.target.label(),
        };
        let writer = ChannelWriter {
            runtime: self.runtime.clone(),
            channel: write,
        };
        use gix::protocol::transport::client::git::{self, blocking_io::Connection};
        Ok(Box::new(Connection::new(
            reader,
            std::io::BufWriter::new(writer),
            gix::protocol::transport::Protocol::V2,
            self.target.path.clone(),
            None::<(String, Option<u16>)>,
            git::ConnectMode::Process,
            false,
        )))
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // A polite goodbye, not waited for long: the server ends its side either way.
        let _ = self.runtime.block_on(tokio::time::timeout(
            Duration::from_millis(200),
            self.handle
                .disconnect(russh::Disconnect::ByApplication, "", "en"),
        ));
    }
}

/// TCP, key exchange with the host-key check, and the login.
async fn open_session(
    target: &Target,
    address: IpAddr,
    settings: &SshSettings,
    seen: Seen,
) -> Result<client::Handle<Client>, Failure> {
    let label = target.label();
    let stream = tokio::net::TcpStream::connect((address, target.port))
        .await
        .map_err(|e| {
            Failure::Retry(format!(
                "connecting to {}:{} failed: {}",
                target.host,
                target.port,
                crate::reason::io(&e)
            ))
        })?;
    let _ = stream.set_nodelay(true);
    let mut preferred = russh::Preferred::default();
    if let HostKeys::Verify { known, .. } = &settings.host_keys
        && let Some(algorithms) = known.algorithms(&target.host, target.port)
    {
        preferred.key = Cow::Owned(algorithms);
    }
    let config = Arc::new(client::Config {
        preferred,
        nodelay: true,
        ..Default::default()
    });
    let client = Client {
        target: target.clone(),
        host_keys: settings.host_keys.clone(),
        seen,
    };
    let mut handle = client::connect_stream(config, stream, client)
        .await
        .map_err(|e| match e {
            // The host-key verdict replaces this (see `host_key_failure`).
            russh::Error::UnknownKey => Failure::Fatal(Error::Failed("host key refused".into())),
            russh::Error::NoCommonAlgo { kind, theirs, .. } => {
                Failure::Fatal(Error::Failed(format!(
                    "{label} and initbox share no {kind:?} algorithm (the server offers {})",
                    theirs.join(", ")
                )))
            }
            other => Failure::Retry(format!("the ssh handshake with {label} failed: {other}")),
        })?;
    let session_error =
        |e: russh::Error| Failure::Retry(format!("the ssh session with {label} broke off: {e}"));
    for key in &settings.keys {
        let hash = if key.key.algorithm().is_rsa() {
            handle
                .best_supported_rsa_hash()
                .await
                .map_err(session_error)?
                .flatten()
        } else {
            None
        };
        let result = handle
            .authenticate_publickey(
                target.user.clone(),
                PrivateKeyWithHashAlg::new(key.key.clone(), hash),
            )
            .await
            .map_err(session_error)?;
        if result.success() {
            return Ok(handle);
        }
    }
    let files: Vec<String> = settings
        .keys
        .iter()
        .map(|k| k.file.display().to_string())
        .collect();
    Err(Failure::Fatal(Error::Failed(format!(
        "{label} refused the key{} {} (Permission denied (publickey)): the server must \
         hold its public half for user '{}' (GitHub and GitLab: a deploy key of the \
         repository)",
        if files.len() == 1 { "" } else { "s" },
        files.join(", "),
        target.user
    ))))
}

/// The message for a host key known_hosts does not accept, once the check has run.
fn host_key_failure(target: &Target, settings: &SshSettings, seen: &Seen) -> Option<Failure> {
    let (verdict, key) = seen.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
    let HostKeys::Verify { file, .. } = &settings.host_keys else {
        return None;
    };
    let shown = format!(
        "{} key {}",
        known_hosts::type_name(&key),
        known_hosts::fingerprint(&key)
    );
    let hint = format!(
        "if the server is really {host}, add its key: ssh-keyscan -H -p {port} {host} >> {file}",
        host = target.host,
        port = target.port,
        file = file.display()
    );
    let message = match verdict {
        Verdict::Trusted => return None,
        Verdict::Revoked => format!(
            "the host key of {}:{} is revoked in {} (@revoked): {shown}; refusing to connect",
            target.host,
            target.port,
            file.display()
        ),
        Verdict::Changed { known } => format!(
            "HOST KEY CHANGED: {}:{} shows {shown}, but {} holds another {} key for it; \
             someone may be posing as the server (or its key was replaced); {hint}",
            target.host,
            target.port,
            file.display(),
            known.join("/")
        ),
        Verdict::Unknown { cert_authority } => format!(
            "the host key of {}:{} is unknown: {} has no line for {}{}; the server shows \
             {shown}; {hint}",
            target.host,
            target.port,
            file.display(),
            if target.port == 22 {
                target.host.clone()
            } else {
                format!("[{}]:{}", target.host, target.port)
            },
            if cert_authority {
                " (only @cert-authority lines, which initbox does not support)"
            } else {
                ""
            },
        ),
    };
    Some(Failure::Fatal(Error::Failed(message)))
}

/// A channel could not be opened on the session: the session broke off (retried).
#[derive(Debug)]
pub struct ChannelError(pub String);

impl std::fmt::Display for ChannelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChannelError {}

/// `git-upload-pack` ended with a failure: what the server said on stderr.
#[derive(Debug)]
pub struct RemoteFailure {
    pub label: String,
    pub status: u32,
    pub stderr: Vec<String>,
}

impl std::fmt::Display for RemoteFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.stderr.is_empty() {
            write!(
                f,
                "git-upload-pack on {} exited with status {}",
                self.label, self.status
            )
        } else {
            write!(f, "{} says: {}", self.label, self.stderr.join(" / "))
        }
    }
}

impl std::error::Error for RemoteFailure {}

/// The server's failure among an error's causes, sorted: the server ran the command and
/// it failed (a missing repository, no permission, no git on the server): waiting will
/// not change that. A channel that broke off is retried.
pub fn failure_in<'a>(
    causes: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
) -> Option<Failure> {
    for cause in causes {
        let inner = cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|e| e as &(dyn std::error::Error + 'static));
        for candidate in [Some(cause), inner].into_iter().flatten() {
            if let Some(remote) = candidate.downcast_ref::<RemoteFailure>() {
                return Some(Failure::Fatal(Error::Failed(remote.to_string())));
            }
            if let Some(channel) = candidate.downcast_ref::<ChannelError>() {
                return Some(Failure::Retry(channel.0.clone()));
            }
        }
    }
    None
}

/// The server's stderr: logged line by line as it comes, the last lines kept.
#[derive(Default)]
struct Stderr {
    partial: Vec<u8>,
    last: std::collections::VecDeque<String>,
}

impl Stderr {
    fn push(&mut self, label: &str, data: &[u8]) {
        self.partial.extend_from_slice(data);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.line(label, &line);
        }
    }

    fn line(&mut self, label: &str, line: &[u8]) {
        let line = String::from_utf8_lossy(line).trim().to_owned();
        if line.is_empty() {
            return;
        }
        report::info("git.remote", format!("{label}: {line}"));
        if self.last.len() == STDERR_LINES_KEPT {
            self.last.pop_front();
        }
        self.last.push_back(line);
    }

    fn finish(&mut self, label: &str) -> Vec<String> {
        let rest = std::mem::take(&mut self.partial);
        self.line(label, &rest);
        self.last.iter().cloned().collect()
    }
}

/// The channel's stdout as a blocking reader for gix; stderr goes to the log.
struct ChannelReader {
    runtime: tokio::runtime::Handle,
    channel: russh::ChannelReadHalf,
    pending: bytes::Bytes,
    stderr: Stderr,
    exit_status: Option<u32>,
    closed: bool,
    label: String,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if !self.pending.is_empty() {
                let n = buf.len().min(self.pending.len());
                buf[..n].copy_from_slice(&self.pending.split_to(n));
                return Ok(n);
            }
            if self.closed {
                return self.finished();
            }
            match self.runtime.block_on(self.channel.wait()) {
                Some(ChannelMsg::Data { data }) => self.pending = data,
                Some(ChannelMsg::ExtendedData { data, .. }) => self.stderr.push(&self.label, &data),
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    self.exit_status = Some(exit_status)
                }
                Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                    self.stderr.line(
                        &self.label,
                        format!("git-upload-pack was killed by signal {signal_name:?}").as_bytes(),
                    );
                    self.exit_status = Some(128);
                }
                // EOF comes before the exit status: read on until the channel closes.
                Some(ChannelMsg::Close) | None => self.closed = true,
                Some(_) => {}
            }
        }
    }
}

impl ChannelReader {
    /// The end of the output: a clean end, the server's failure, or a channel cut short.
    fn finished(&mut self) -> std::io::Result<usize> {
        let stderr = self.stderr.finish(&self.label);
        match self.exit_status {
            Some(0) => Ok(0),
            Some(status) => Err(std::io::Error::other(RemoteFailure {
                label: self.label.clone(),
                status,
                stderr,
            })),
            // No status: the connection went away under the channel (a restart, a reset).
            None if stderr.is_empty() => Ok(0),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                format!("{} closed the channel: {}", self.label, stderr.join(" / ")),
            )),
        }
    }
}

/// The channel's stdin as a blocking writer for gix (buffered by the caller).
struct ChannelWriter {
    runtime: tokio::runtime::Handle,
    channel: russh::ChannelWriteHalf<client::Msg>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.runtime
            .block_on(self.channel.data(buf))
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::BrokenPipe, e.to_string()))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(user: Option<&str>) -> SshSettings {
        SshSettings {
            keys: Vec::new(),
            host_keys: HostKeys::AcceptAny,
            user: user.map(str::to_owned),
        }
    }

    #[test]
    fn scp_like_and_ssh_urls_name_the_path_as_git_does() {
        let url = gix::url::parse(gix::bstr::BStr::new("git@git.example:org/repo.git")).unwrap();
        let target = Target::of(&url, &settings(None));
        assert_eq!(
            (target.user.as_str(), target.host.as_str(), target.port),
            ("git", "git.example", 22)
        );
        assert_eq!(target.command(), "git-upload-pack 'org/repo.git'");
        let url =
            gix::url::parse(gix::bstr::BStr::new("ssh://deploy@[::1]:2222/srv/it's.git")).unwrap();
        let target = Target::of(&url, &settings(Some("bot")));
        assert_eq!(
            (target.user.as_str(), target.host.as_str(), target.port),
            ("bot", "::1", 2222)
        );
        assert_eq!(target.command(), "git-upload-pack '/srv/it'\\''s.git'");
        let url = gix::url::parse(gix::bstr::BStr::new("ssh://h/~alice/repo.git")).unwrap();
        assert_eq!(
            Target::of(&url, &settings(None)).command(),
            "git-upload-pack '~alice/repo.git'"
        );
    }

    #[test]
    fn quoting_closes_out_quotes_and_bangs_like_git() {
        assert_eq!(shell_quote("a!b"), "'a'\\!'b'");
        assert_eq!(shell_quote("$(x) `y`"), "'$(x) `y`'");
    }
}
