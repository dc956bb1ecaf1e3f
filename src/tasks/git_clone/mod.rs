//! git-clone: "clone a git repository into a volume" as an init container does it, made
//! safe for pod restarts. A complete checkout of the same repository and ref is left alone
//! (no download); another ref is switched to; anything else in DEST is refused unless
//! `--force`; and a clone killed at any moment never leaves a DEST that looks complete
//! (see `destination`); a damaged checkout is restored from its own objects (see
//! `integrity`). Network failures are retried through the wait engine; a rejected login, a
//! missing repository or ref, or an untrusted certificate ends the run at once.

mod default_branch;
pub(crate) mod destination;
mod integrity;
mod smart_http;
mod sparse;
mod ssh;
pub mod submodules;
mod transfer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::{TlsArgs, Unechoed};
use crate::reason;
use crate::resolve::ResolverArgs;
use crate::wait::RetryArgs;
use crate::wait::{self, Attempt, Failure, Probe};
use crate::{redact, report};

use destination::{Checkout, Destination, Found};
use transfer::{CloneRequest, Credentials, Reference};

/// The username sent with `--token-file` when `--username` is not given (GitHub's
/// convention; most servers accept any name with a token).
const TOKEN_USERNAME: &str = "x-access-token";

/// Clone a git repository into a directory, atomically and idempotently.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("attempt_timeout", |arg| arg
    .default_value("30s")
    .help("Give up connecting to the server after this long")))]
pub struct GitCloneArgs {
    /// The repository: https://, http://, git://, file://, ssh:// or user@host:path.
    #[arg(value_name = "REPO", value_parser = Unechoed(check_repo))]
    pub repo: String,
    /// The directory to clone into: created when missing; may be an empty mounted volume.
    #[arg(value_name = "DEST")]
    pub dest: PathBuf,
    /// The branch, tag or full commit id to check out (default: the remote's HEAD).
    #[arg(long = "ref", env = "INITBOX_REF", value_name = "REF", value_parser = check_ref)]
    pub reference: Option<String>,
    /// How much history to fetch: 1 = just the commit checked out, 0 = all of it.
    #[arg(long, env = "INITBOX_DEPTH", default_value_t = 1, value_name = "N")]
    pub depth: u32,
    /// Also clone the submodules the commit records, at their recorded commits: shallow
    /// (the repository's own) or recursive (theirs too), as git-sync's --submodules.
    #[arg(
        long,
        env = "INITBOX_SUBMODULES",
        value_enum,
        default_value_t = submodules::Submodules::Off,
        value_name = "WHICH"
    )]
    pub submodules: submodules::Submodules,
    /// Check out only these directories (repeatable), with the files at the top and of the
    /// directories above them: git's cone-mode sparse checkout.
    #[arg(long, env = "INITBOX_SPARSE", value_name = "DIR", value_delimiter = ',', value_parser = sparse::check_dir)]
    pub sparse: Vec<String>,
    /// The username for HTTP(S), with --password-file or INITBOX_GIT_PASSWORD.
    #[arg(long, env = "INITBOX_USERNAME", value_name = "NAME")]
    pub username: Option<String>,
    /// Read the password for --username from this file (never logged, never stored).
    #[arg(
        long,
        env = "INITBOX_PASSWORD_FILE",
        value_name = "FILE",
        conflicts_with = "token_file",
        requires = "username"
    )]
    pub password_file: Option<PathBuf>,
    /// Read an access token from this file, sent as the password (never logged, never
    /// stored).
    #[arg(long, env = "INITBOX_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Replace DEST's contents even when it is not a checkout of REPO.
    #[arg(long, env = "INITBOX_FORCE")]
    pub force: bool,
    /// A private key for ssh:// and user@host:path repositories (OpenSSH format: ed25519,
    /// ecdsa or rsa); repeatable, tried in order. Also read from GITSYNC_SSH_KEY_FILE;
    /// default /etc/git-secret/ssh when that file exists (git-sync's).
    #[arg(
        long = "ssh-key-file",
        env = "INITBOX_SSH_KEY_FILE",
        value_name = "FILE",
        help_heading = "SSH"
    )]
    pub ssh_key_file: Vec<PathBuf>,
    /// Read the passphrase of encrypted --ssh-key-file keys from this file (never logged).
    #[arg(
        long,
        env = "INITBOX_SSH_KEY_PASSPHRASE_FILE",
        value_name = "FILE",
        help_heading = "SSH"
    )]
    pub ssh_key_passphrase_file: Option<PathBuf>,
    /// The known_hosts file that must hold the server's host key (plain or hashed lines,
    /// [host]:port, @revoked). Also read from GITSYNC_SSH_KNOWN_HOSTS_FILE; default
    /// /etc/git-secret/known_hosts when that file exists (git-sync's).
    #[arg(
        long,
        env = "INITBOX_SSH_KNOWN_HOSTS_FILE",
        value_name = "FILE",
        help_heading = "SSH"
    )]
    pub ssh_known_hosts_file: Option<PathBuf>,
    /// The user to log in as over ssh (default: the URL's user, else git).
    #[arg(
        long,
        env = "INITBOX_SSH_USER",
        value_name = "NAME",
        help_heading = "SSH"
    )]
    pub ssh_user: Option<String>,
    /// Accept any host key without checking it. INSECURE: anyone on the network path can
    /// pose as the server; warns at every use, never the default.
    #[arg(
        long,
        env = "INITBOX_SSH_INSECURE_ACCEPT_ANY_HOST_KEY",
        conflicts_with = "ssh_known_hosts_file",
        help_heading = "SSH"
    )]
    pub ssh_insecure_accept_any_host_key: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

/// The repository URL as given, split into a URL safe to store and print, and the
/// credentials it carried (if any).
fn parse_repo(text: &str) -> std::result::Result<(gix::Url, Option<Credentials>), String> {
    let port_zero = || format!("'{}': port 0 cannot be connected to", redact_repo(text));
    let not_a_repo = || {
        format!(
            "'{}' is not a git repository URL (expected https://, http://, git://, file://, \
             ssh:// or user@host:path)",
            redact_repo(text)
        )
    };
    let mut url = gix::url::parse(text.trim()).map_err(|_| {
        if reqwest::Url::parse(text.trim()).is_ok_and(|url| url.port() == Some(0)) {
            return port_zero();
        }
        not_a_repo()
    })?;
    use gix::url::Scheme;
    if !matches!(
        url.scheme,
        Scheme::Http | Scheme::Https | Scheme::Git | Scheme::Ssh | Scheme::File
    ) {
        return Err(not_a_repo());
    }
    if let Some(password) = url.password() {
        redact::conceal(password);
        if !matches!(url.scheme, Scheme::Http | Scheme::Https) {
            return Err(format!(
                "'{}': a password in a {} URL is never sent (only https:// sends one); remove it",
                redact_repo(text),
                url.scheme.as_str()
            ));
        }
    }
    if url.port == Some(0) {
        return Err(port_zero());
    }
    if url.scheme != gix::url::Scheme::File
        && let Some(host) = url.host()
    {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        crate::resolve::check_host_name(host)
            .map_err(|reason| format!("'{}': {reason}", redact_repo(text)))?;
    }
    let mut credentials = None;
    if matches!(url.scheme, gix::url::Scheme::Http | gix::url::Scheme::Https) {
        if let Some(password) = url.password().map(str::to_owned) {
            redact::conceal(&password);
            credentials = Some(Credentials {
                username: url.user().unwrap_or_default().to_owned(),
                password,
            });
        }
        url.set_user(None);
        url.set_password(None);
    }
    Ok((url, credentials))
}

/// REPO, checked where it is defined (so `run --check` refuses a bad one too): a URL that
/// can be cloned from, and no password in an http:// URL. Its password is concealed from
/// every log line from here on.
fn check_repo(text: &str) -> std::result::Result<String, String> {
    let (url, credentials) = parse_repo(text)?;
    if url.scheme == gix::url::Scheme::Http && credentials.is_some() {
        return Err(plain_http_credentials(&url));
    }
    Ok(text.to_owned())
}

/// Credentials over http:// are refused, whether they came in the URL or from flags.
fn plain_http_credentials(url: &gix::Url) -> String {
    format!(
        "{}: credentials are never sent over plain http:// (they would travel in clear \
         text); use an https:// URL, or give no --username/--token-file",
        repo_id(url)
    )
}

/// `--ref`, checked where it is defined: a name git allows for a branch or tag, or a full
/// commit id of a kind git-clone can ask for.
fn check_ref(text: &str) -> std::result::Result<String, String> {
    match Reference::parse(Some(text)) {
        Reference::RemoteHead => {}
        Reference::Name(name) => {
            <&gix::refs::PartialNameRef>::try_from(name.as_str())
                .map_err(|_| format!("'{name}' is not a valid branch or tag name"))?;
        }
        Reference::Commit(id) => {
            gix::ObjectId::from_hex(id.as_bytes())
                .map_err(|_| format!("'{id}' is not a commit id"))?;
        }
    }
    Ok(text.to_owned())
}

/// A repository URL for messages, before it could be parsed: userinfo masked.
fn redact_repo(text: &str) -> String {
    match reqwest::Url::parse(text) {
        Ok(url) => redact::url(&url),
        Err(_) => redact::mask_userinfo(text),
    }
}

/// The URL as stored in the checkout and compared between runs.
fn repo_id(url: &gix::Url) -> String {
    url.to_bstring().to_string()
}

/// Two spellings of one repository: `…/app`, `…/app.git`, `…/app/`.
fn same_repo(a: &str, b: &str) -> bool {
    fn normal(url: &str) -> &str {
        let url = url.trim_end_matches('/');
        url.strip_suffix(".git").unwrap_or(url)
    }
    normal(a) == normal(b)
}

impl GitCloneArgs {
    fn credentials(&self, from_url: Option<Credentials>) -> Result<Option<Credentials>> {
        if let Some(path) = &self.token_file {
            let token = redact::read_secret_file(path, "token file")?;
            return Ok(Some(Credentials {
                username: self
                    .username
                    .clone()
                    .unwrap_or_else(|| TOKEN_USERNAME.into()),
                password: token,
            }));
        }
        if let Some(username) = &self.username {
            let password = match &self.password_file {
                Some(path) => redact::read_secret_file(path, "password file")?,
                None => match crate::expand::var("INITBOX_GIT_PASSWORD").ok_or(()) {
                    Ok(password) if !password.is_empty() => {
                        redact::conceal(&password);
                        password
                    }
                    _ => {
                        return Err(Error::Usage(
                            "--username needs --password-file FILE or INITBOX_GIT_PASSWORD".into(),
                        ));
                    }
                },
            };
            return Ok(Some(Credentials {
                username: username.clone(),
                password,
            }));
        }
        // clap refuses --password-file without --username (`requires`), at parse time.
        Ok(from_url)
    }

    /// Keys, known_hosts and user for an ssh URL, read before anything is touched: a
    /// missing key or known_hosts is a usage error (exit 2), an unreadable one a
    /// configuration error (exit 78).
    fn ssh_settings(&self, url: &gix::Url) -> Result<ssh::SshSettings> {
        let key_files = match self.ssh_key_file.as_slice() {
            [] => git_sync_fallback("GITSYNC_SSH_KEY_FILE", GIT_SYNC_KEY_FILE)
                .into_iter()
                .collect(),
            given => given.to_vec(),
        };
        if key_files.is_empty() {
            return Err(Error::Usage(format!(
                "{} is an ssh repository: give its deploy key with --ssh-key-file FILE \
                 (or INITBOX_SSH_KEY_FILE, GITSYNC_SSH_KEY_FILE)",
                repo_id(url)
            )));
        }
        let host_keys = if self.ssh_insecure_accept_any_host_key {
            ssh::HostKeys::AcceptAny
        } else {
            let file = self
                .ssh_known_hosts_file
                .clone()
                .or_else(|| {
                    git_sync_fallback("GITSYNC_SSH_KNOWN_HOSTS_FILE", GIT_SYNC_KNOWN_HOSTS_FILE)
                })
                .ok_or_else(|| {
                    Error::Usage(format!(
                        "{} is an ssh repository: give the server's host keys with \
                         --ssh-known-hosts-file FILE (or INITBOX_SSH_KNOWN_HOSTS_FILE, \
                         GITSYNC_SSH_KNOWN_HOSTS_FILE; make one with `ssh-keyscan -H HOST`), \
                         or --ssh-insecure-accept-any-host-key to not check them",
                        repo_id(url)
                    ))
                })?;
            let known = ssh::KnownHosts::read(&file).map_err(|e| {
                Error::Config(format!(
                    "reading known_hosts file {}: {}",
                    file.display(),
                    reason::io(&e)
                ))
            })?;
            ssh::HostKeys::Verify { file, known }
        };
        let passphrase = self
            .ssh_key_passphrase_file
            .as_deref()
            .map(|file| crate::redact::read_secret_file(file, "ssh key passphrase file"))
            .transpose()?;
        let keys = key_files
            .iter()
            .map(|file| ssh::load_key(file, passphrase.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        Ok(ssh::SshSettings {
            keys,
            host_keys,
            user: self.ssh_user.clone(),
        })
    }
}

/// git-sync's default paths (its Secret mounted at /etc/git-secret), so its manifests
/// move over with only the image changed.
const GIT_SYNC_KEY_FILE: &str = "/etc/git-secret/ssh";
const GIT_SYNC_KNOWN_HOSTS_FILE: &str = "/etc/git-secret/known_hosts";

/// A file named by git-sync's variable, else git-sync's default path when it exists.
fn git_sync_fallback(variable: &str, default: &str) -> Option<PathBuf> {
    match crate::expand::var(variable) {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => Some(PathBuf::from(default)).filter(|path| path.is_file()),
    }
}

struct CloneProbe {
    label: String,
    request: CloneRequest,
    destination: Arc<Destination>,
    repo_id: String,
    /// Held by this run and by every clone thread it started (see [`claim`]).
    claim: Arc<tokio::sync::OwnedMutexGuard<()>>,
}

/// Where the blocking clone is, shared with the async side that may abandon it.
#[derive(Default)]
struct AttemptState {
    /// The staging directory in use, until it is installed or removed.
    staging: Option<PathBuf>,
    /// The clone is complete and being installed: it must not be removed any more (an
    /// install cut short is finished by the next run, see `destination`).
    installing: bool,
    /// The deadline passed or a signal came: the thread must not go on to install.
    abandoned: bool,
}

fn lock(state: &Mutex<AttemptState>) -> std::sync::MutexGuard<'_, AttemptState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stops the blocking clone when its attempt is abandoned (deadline or signal) WITHOUT
/// waiting for it: gix notices the interrupt only between two reads, and a stalled server
/// sends none, so waiting would hold the exit past the deadline. The staging directory is
/// removed here instead, unless the clone is already being installed.
struct AbandonOnDrop {
    interrupt: Arc<AtomicBool>,
    state: Arc<Mutex<AttemptState>>,
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.interrupt.store(true, Ordering::Relaxed);
        let mut state = lock(&self.state);
        state.abandoned = true;
        if !state.installing
            && let Some(staging) = state.staging.take()
        {
            destination::remove_staging(&staging);
        }
    }
}

/// One clone at a time into a DEST, per process. An abandoned clone thread may still be
/// blocked in a read when a pipeline retries the step; the retry waits for it to end
/// instead of sharing its staging directory with it.
async fn claim(dest: &Path) -> Arc<tokio::sync::OwnedMutexGuard<()>> {
    static CLAIMS: OnceLock<Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let key = std::path::absolute(dest).unwrap_or_else(|_| dest.to_owned());
    let mutex = CLAIMS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .entry(key)
        .or_default()
        .clone();
    let guard = match mutex.clone().try_lock_owned() {
        Ok(guard) => guard,
        Err(_) => {
            report::info(
                "git.busy",
                format!(
                    "waiting for an earlier clone into {} to stop",
                    dest.display()
                ),
            );
            mutex.lock_owned().await
        }
    };
    Arc::new(guard)
}

impl Probe for CloneProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    /// A clone does something: the success line says so (`cloned URL after …`), as
    /// register's and fetch's do, not that the repository "is ready".
    fn ready_phrase(&self) -> String {
        format!("cloned {}", self.label)
    }

    async fn attempt(&self) -> Attempt {
        let mut request = self.request.clone();
        // ssh and git://: we connect to the resolved address ourselves; the URL keeps the
        // name, which known_hosts is checked against and which a git daemon is asked for
        // (`host=`, its virtual hosting).
        if matches!(
            request.url.scheme,
            gix::url::Scheme::Ssh | gix::url::Scheme::Git
        ) && let Some(host) = request.url.host()
        {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            request.address = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => match request.resolver.lookup_ip(host).await {
                    Ok(addresses) => addresses.first().copied(),
                    Err(failure) => return failure.into(),
                },
            };
        }
        let interrupt = Arc::new(AtomicBool::new(false));
        let state = Arc::new(Mutex::new(AttemptState::default()));
        let _abandon_when_dropped = AbandonOnDrop {
            interrupt: interrupt.clone(),
            state: state.clone(),
        };
        let destination = self.destination.clone();
        let repo = self.repo_id.clone();
        let step = crate::step::current();
        let claim = self.claim.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let _claim = claim;
            crate::step::on_thread(step, || {
                clone_and_install(&destination, &request, repo, &interrupt, &state)
            })
        })
        .await;
        match outcome {
            Ok(Ok(commit)) => Attempt::ready(format!(
                "checked out commit {} in {}",
                short(&commit),
                self.destination.path().display()
            )),
            Ok(Err(failure)) => failure.into(),
            Err(error) => Attempt::Fatal(Error::Failed(format!("the clone stopped: {error}"))),
        }
    }
}

/// One attempt, on a blocking thread: clone into staging, mark it complete, install it.
fn clone_and_install(
    destination: &Destination,
    request: &CloneRequest,
    repo: String,
    interrupt: &AtomicBool,
    state: &Mutex<AttemptState>,
) -> std::result::Result<String, Failure> {
    let write_error = |e: std::io::Error| {
        Failure::Fatal(Error::Failed(format!(
            "cannot write {}: {}",
            destination.path().display(),
            reason::io(&e)
        )))
    };
    let interrupted = || Failure::Retry("interrupted".into());
    let staging = {
        let mut state = lock(state);
        if state.abandoned {
            return Err(interrupted());
        }
        let staging = destination.staging().map_err(write_error)?;
        state.staging = Some(staging.clone());
        staging
    };
    let discard = |state: &mut AttemptState| {
        if let Some(staging) = state.staging.take() {
            destination::remove_staging(&staging);
        }
    };
    let commit = match transfer::clone_into(&staging, request, interrupt) {
        Ok(commit) => commit,
        Err(failure) => {
            discard(&mut lock(state));
            return Err(failure);
        }
    };
    {
        let mut state = lock(state);
        if state.abandoned {
            discard(&mut state);
            return Err(interrupted());
        }
        state.installing = true;
    }
    let checkout = Checkout {
        repo,
        reference: request.reference.recorded(),
        commit: commit.clone(),
        submodules: request.submodules,
        sparse: request.sparse.clone(),
    };
    if let Err(error) = Destination::mark_complete(&staging, &checkout) {
        discard(&mut lock(state));
        return Err(write_error(error));
    }
    destination.install(&staging).map_err(write_error)?;
    lock(state).staging = None;
    Ok(commit)
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn describe_ref(reference: &Option<String>) -> String {
    match reference {
        Some(name) => name.clone(),
        None => "the remote HEAD".into(),
    }
}

/// DEST's contents in words, for the `--force` warning.
fn describe_found(found: &Found) -> String {
    match found {
        Found::Missing | Found::Empty => "nothing".into(),
        Found::Checkout(existing) => format!("a checkout of {}", existing.repo),
        Found::ForeignCheckout {
            origin: Some(origin),
        } => format!("a git checkout of {origin} that initbox did not make"),
        Found::ForeignCheckout { origin: None } => {
            "a git checkout without an origin that initbox did not make".into()
        }
        Found::Other => "files that are not a git checkout".into(),
    }
}

/// Runs local file work off the runtime thread, so that a signal still ends initbox at once
/// (the work itself is safe to cut short: see `destination`).
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    let step = crate::step::current();
    tokio::task::spawn_blocking(move || crate::step::on_thread(step, work))
        .await
        .map_err(|e| Error::Failed(format!("the checkout work stopped: {e}")))
}

impl crate::cli::Task for GitCloneArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    /// `--username`/`--token-file` with a plain `http://` REPO, refused before the run (and
    /// by `run --check`): whether a password or a token exists is known only in the pod,
    /// but that none may travel in clear text is known now.
    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        if self.username.is_none() && self.token_file.is_none() {
            return Ok(());
        }
        match parse_repo(&self.repo) {
            Ok((url, _)) if url.scheme == gix::url::Scheme::Http => Err(crate::cli::Invalid {
                arg: "<REPO>".into(),
                value: repo_id(&url),
                reason: "credentials are never sent over plain http:// (they would travel in \
                         clear text); use an https:// URL, or give no --username/--token-file"
                    .into(),
            }),
            _ => Ok(()),
        }
    }
}

pub async fn run(args: GitCloneArgs) -> Result<()> {
    // gix bounds connecting itself; a clone of a big repository may take minutes once
    // connected, so the engine must not cut the attempt.
    let options = args.retry.options().bounded_by_probe();
    let connect_timeout = options.attempt.limit();
    // REPO was checked by clap (`check_repo`); what remains needs the other flags.
    let (url, url_credentials) = parse_repo(&args.repo).map_err(Error::Usage)?;
    let credentials = args.credentials(url_credentials)?;
    if url.scheme == gix::url::Scheme::Http && credentials.is_some() {
        return Err(Error::Usage(plain_http_credentials(&url)));
    }
    let ssh = match url.scheme {
        gix::url::Scheme::Ssh => Some(Arc::new(args.ssh_settings(&url)?)),
        _ => None,
    };
    let reference = Reference::parse(args.reference.as_deref());
    let repo = repo_id(&url);
    let claim = match options.timeout {
        None => claim(&args.dest).await,
        Some(limit) => tokio::time::timeout(limit, claim(&args.dest))
            .await
            .map_err(|_| {
                Error::TimedOut(format!(
                    "timed out after {} waiting for an earlier clone into {} to stop",
                    crate::duration::Elapsed(limit),
                    args.dest.display()
                ))
            })?,
    };
    let destination = Arc::new(Destination::new(&args.dest));
    let dest_shown = args.dest.display().to_string();
    let fs_error =
        |e: std::io::Error| Error::Failed(format!("cannot use {dest_shown}: {}", reason::io(&e)));
    if destination.recover().map_err(fs_error)? {
        report::info(
            "git.recovered",
            format!("finished installing the checkout a stopped run left in {dest_shown}"),
        );
    }
    match destination.inspect().map_err(fs_error)? {
        Found::Missing | Found::Empty => {}
        Found::Checkout(existing)
            if same_repo(&existing.repo, &repo)
                && existing.reference == reference.recorded()
                && existing.submodules == args.submodules
                && existing.sparse == sparse::normalized(&args.sparse) =>
        {
            let at = format!(
                "{} (commit {})",
                describe_ref(&existing.reference),
                short(&existing.commit)
            );
            let (checked, marker) = (destination.clone(), existing.clone());
            let differences = blocking(move || integrity::verify(&checked, &marker)).await?;
            if differences.is_empty() {
                report::info(
                    "git.up_to_date",
                    format!(
                        "{dest_shown} is already a checkout of {repo} at {at}: nothing to download"
                    ),
                );
                return Ok(());
            }
            report::warn(
                "git.damaged",
                format!(
                    "{dest_shown} is a checkout of {repo} at {at}, but {differences}; \
                     restoring it from its own objects"
                ),
            );
            let (repaired, marker) = (destination.clone(), existing.clone());
            match blocking(move || integrity::repair(&repaired, &marker)).await? {
                Ok(()) => {
                    report::info(
                        "git.restored",
                        format!("{dest_shown} is again the tree of {at}: nothing to download"),
                    );
                    return Ok(());
                }
                Err(reason) => report::warn(
                    "git.restore_failed",
                    format!(
                        "cannot restore {dest_shown} from its own objects ({reason}); \
                         cloning {repo} again"
                    ),
                ),
            }
        }
        Found::Checkout(existing) if same_repo(&existing.repo, &repo) => {
            report::info(
                "git.switch",
                format!(
                    "{dest_shown} holds {} (commit {}); switching to {}",
                    describe_ref(&existing.reference),
                    short(&existing.commit),
                    describe_ref(&reference.recorded())
                ),
            );
        }
        Found::ForeignCheckout {
            origin: Some(origin),
        } if same_repo(&origin, &repo) => {
            report::info(
                "git.switch",
                format!(
                    "{dest_shown} is a checkout of {repo} made by another tool; replacing it with {}",
                    describe_ref(&reference.recorded())
                ),
            );
        }
        found if args.force => {
            report::warn(
                "git.force",
                format!(
                    "--force: replacing the contents of {dest_shown}, which holds {}",
                    describe_found(&found)
                ),
            );
        }
        Found::Checkout(existing) => {
            return Err(Error::Failed(format!(
                "{dest_shown} is a checkout of {}, not of {repo}; refusing to touch it (--force replaces its contents)",
                existing.repo
            )));
        }
        _ => {
            return Err(Error::Failed(format!(
                "{dest_shown} is not empty and is not a checkout of {repo}; refusing to touch it (--force replaces its contents)"
            )));
        }
    }
    // Before the first request: a DEST that cannot be written ends the run now, not after
    // a download (or a retry loop) that could never be installed.
    destination
        .check_writable()
        .map_err(|e| Error::Failed(format!("cannot write {dest_shown}: {}", reason::io(&e))))?;
    let resolver = args.resolver.resolver(connect_timeout);
    let request = CloneRequest {
        url,
        reference: reference.clone(),
        depth: args.depth,
        credentials,
        tls: args.tls.clone(),
        resolver,
        connect_timeout,
        ssh,
        address: None,
        submodules: args.submodules,
        sparse: sparse::normalized(&args.sparse),
    };
    let label = match &reference {
        Reference::RemoteHead => repo.clone(),
        other => format!("{repo} at {}", describe_ref(&other.recorded())),
    };
    let probe = CloneProbe {
        label,
        request,
        destination,
        repo_id: repo,
        claim,
    };
    wait::wait_for_all("git-clone", vec![probe], options)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_stay_in_the_url() {
        let (url, credentials) =
            parse_repo("https://bot:s3cret-t0ken@git.example/app.git").unwrap();
        assert_eq!(repo_id(&url), "https://git.example/app.git");
        let credentials = credentials.unwrap();
        assert_eq!(credentials.username, "bot");
        assert_eq!(credentials.password, "s3cret-t0ken");
        let (ssh, none) = parse_repo("git@git.example:team/app.git").unwrap();
        assert!(none.is_none());
        assert_eq!(ssh.scheme, gix::url::Scheme::Ssh);
    }

    #[test]
    fn references() {
        assert_eq!(Reference::parse(None), Reference::RemoteHead);
        assert_eq!(Reference::parse(Some("HEAD")), Reference::RemoteHead);
        assert_eq!(
            Reference::parse(Some("v1.4.0")),
            Reference::Name("v1.4.0".into())
        );
        let id = "E862BD751B3BA4A5C9C1A78A012A462B88C0F13D";
        assert_eq!(
            Reference::parse(Some(id)),
            Reference::Commit(id.to_ascii_lowercase())
        );
        assert_eq!(
            Reference::parse(Some("e862bd7")),
            Reference::Name("e862bd7".into()),
            "short ids are names: the server cannot be asked for them"
        );
    }

    #[test]
    fn spellings_of_one_repository() {
        assert!(same_repo("https://h/app.git", "https://h/app"));
        assert!(same_repo("https://h/app/", "https://h/app.git"));
        assert!(!same_repo("https://h/app", "https://h/other"));
    }

    #[test]
    fn refs_are_checked_where_the_flag_is_defined() {
        for good in ["main", "v1.4.0", "feature/x", "refs/heads/main", "HEAD", ""] {
            assert_eq!(check_ref(good).unwrap(), good);
        }
        let id = "e862bd751b3ba4a5c9c1a78a012a462b88c0f13d";
        assert!(check_ref(id).is_ok());
        for bad in ["a..b", "x y", "main.lock", "-x/~"] {
            let error = check_ref(bad).unwrap_err();
            assert!(
                error.contains("not a valid branch or tag name"),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn a_password_in_an_http_url_is_refused_without_being_shown() {
        let error = check_repo("http://deploy:pa55-w0rd@git.example/app.git").unwrap_err();
        assert!(error.contains("credentials are never sent over plain http://"));
        assert!(!error.contains("pa55-w0rd"), "{error}");
        assert!(check_repo("https://deploy:pa55-w0rd@git.example/app.git").is_ok());
        assert!(
            check_repo("https://h:0/app")
                .unwrap_err()
                .contains("port 0")
        );
    }
}
