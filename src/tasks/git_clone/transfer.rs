//! The clone itself, with gix, in-process (no git binary: it must work in a scratch
//! image): https and http through the shared TLS and resolver setup, git://, file://, and
//! ssh through initbox's own SSH client (see `ssh`: no ssh program), credentials handed
//! over by a callback so they never reach `.git/config`, progress lines every few seconds,
//! and failures sorted into "retry" (the network) and "stop" (auth, a missing ref).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::progress::tree::Root;
use gix::protocol::transport::client::blocking_io::http as gix_http;

use crate::exit::Error;
use crate::http_client::{self, TlsArgs};
use crate::report;
use crate::resolve::Resolver;
use crate::size::ByteSize;
use crate::wait::Failure;

use super::smart_http::SmartHttp;
use super::ssh;

/// How often a long clone says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// What to check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    /// The remote's HEAD.
    RemoteHead,
    /// A branch or tag, short (`main`, `v1.4.0`) or full (`refs/tags/v1.4.0`).
    Name(String),
    /// A full commit id.
    Commit(String),
}

impl Reference {
    pub fn parse(text: Option<&str>) -> Reference {
        match text.map(str::trim) {
            None | Some("") | Some("HEAD") => Reference::RemoteHead,
            Some(id)
                if (id.len() == 40 || id.len() == 64)
                    && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Reference::Commit(id.to_ascii_lowercase())
            }
            Some(name) => Reference::Name(name.to_owned()),
        }
    }

    /// As recorded in a checkout's marker: `None` for the remote's HEAD.
    pub fn recorded(&self) -> Option<String> {
        match self {
            Reference::RemoteHead => None,
            Reference::Name(name) | Reference::Commit(name) => Some(name.clone()),
        }
    }
}

/// A username and password (or token) for HTTP(S).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Everything one clone attempt needs.
#[derive(Clone)]
pub struct CloneRequest {
    /// Without userinfo: credentials travel separately.
    pub url: gix::Url,
    pub reference: Reference,
    /// 0 = the full history.
    pub depth: u32,
    pub credentials: Option<Credentials>,
    pub tls: TlsArgs,
    pub resolver: Resolver,
    pub connect_timeout: Duration,
    /// For ssh:// and user@host:path URLs: keys, known_hosts, user.
    pub ssh: Option<Arc<ssh::SshSettings>>,
    /// The address the host of an ssh or git:// URL resolved to (this attempt's lookup);
    /// the URL keeps the name, which known_hosts is checked against and a git daemon is
    /// asked for.
    pub address: Option<std::net::IpAddr>,
    /// Which of the checkout's submodules are cloned into it.
    pub submodules: super::submodules::Submodules,
    /// `--sparse`: the directories checked out (cone mode); empty: everything.
    pub sparse: Vec<String>,
}

/// Clones into `dir` (which must exist and be empty) and returns the commit checked out.
pub fn clone_into(
    dir: &Path,
    request: &CloneRequest,
    interrupt: &AtomicBool,
) -> Result<String, Failure> {
    let progress_root: Arc<Root> = Root::new();
    let reporter = ProgressReporter::start(progress_root.clone());
    let result = clone_with_progress(dir, request, interrupt, &progress_root);
    reporter.stop();
    result
}

fn clone_with_progress(
    dir: &Path,
    request: &CloneRequest,
    interrupt: &AtomicBool,
    progress: &Arc<Root>,
) -> Result<String, Failure> {
    if request.url.scheme == gix::url::Scheme::File {
        // Nothing on this machine will create the repository while we wait: say so at once.
        use std::os::unix::ffi::OsStrExt;
        let path = Path::new(std::ffi::OsStr::from_bytes(&request.url.path));
        if !path.exists() {
            return Err(Failure::Fatal(Error::Failed(format!(
                "no repository at {}: the path does not exist",
                path.display()
            ))));
        }
    }
    // One SSH session per clone, opened before anything is written: a refused host key or
    // login leaves nothing behind. Each gix connect gets a channel of its own on it.
    let ssh_session = match (&request.ssh, &request.url.scheme) {
        (Some(settings), gix::url::Scheme::Ssh) => {
            let address = request.address.ok_or_else(|| {
                Failure::Retry(format!("{} has no address", request.url.to_bstring()))
            })?;
            Some(Arc::new(ssh::Session::connect(
                ssh::Target::of(&request.url, settings),
                address,
                settings,
                request.connect_timeout,
            )?))
        }
        _ => None,
    };
    // git://: gix would open a TCP connection of its own before `configure_connection`
    // runs, so an `insteadOf` rule (in memory only) points it at an ssh URL, whose transport
    // gix only spawns at the handshake, and `configure_connection` puts our daemon
    // connection in its place. `.git/config` and the reflog keep the URL as given.
    let git_daemon = request.url.scheme == gix::url::Scheme::Git;
    let mut prepare = gix::clone::PrepareFetch::new(
        request.url.clone(),
        dir,
        gix::create::Kind::WithWorktree,
        gix::create::Options::default(),
        gix::open::Options::isolated(),
    )
    .map_err(|e| {
        write_failure(
            std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source()),
            dir,
        )
        .unwrap_or_else(|| {
            Failure::Fatal(Error::Failed(format!(
                "cannot start a repository in {}: {}",
                dir.display(),
                innermost(&e)
            )))
        })
    })?;
    // The sample hooks gix writes (as `git init` does) are never run and never needed; as
    // `git clone --template=` would, leave them out: a staging directory abandoned at the
    // deadline is then a dozen entries quicker to remove.
    let _ = std::fs::remove_dir_all(dir.join(".git").join("hooks"));
    if git_daemon {
        prepare = prepare.with_in_memory_config_overrides([format!(
            "url.{GIT_DAEMON_STAND_IN}.insteadOf={}",
            request.url.to_bstring()
        )]);
    }
    if request.depth > 0 {
        let depth = std::num::NonZeroU32::new(request.depth).expect("depth > 0");
        prepare = prepare.with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(depth));
    }
    prepare = match &request.reference {
        // A shallow clone of the default branch in one connection (default_branch.rs).
        Reference::RemoteHead if super::default_branch::applies(request) => prepare
            .with_revision(Some(super::default_branch::REVISION))
            .expect("HEAD is a valid revision"),
        Reference::RemoteHead => prepare,
        Reference::Name(name) => prepare.with_ref_name(Some(name.as_str())).map_err(|_| {
            Failure::Fatal(Error::Usage(format!(
                "--ref '{name}' is not a valid branch or tag name"
            )))
        })?,
        Reference::Commit(id) => prepare.with_revision(Some(id.as_str())).map_err(|_| {
            Failure::Fatal(Error::Usage(format!("--ref '{id}' is not a commit id")))
        })?,
    };
    let http = matches!(
        request.url.scheme,
        gix::url::Scheme::Http | gix::url::Scheme::Https
    );
    // Only HTTPS needs the roots: file:// and git:// clones do not read a CA store.
    let tls = if http {
        Some(http_client::tls_config(&request.tls).map_err(Failure::Fatal)?)
    } else {
        None
    };
    let (resolver, connect_timeout) = (request.resolver.clone(), request.connect_timeout);
    let credentials = request.credentials.clone();
    let daemon = git_daemon.then(|| request.clone());
    // Our own HTTP client (smart_http.rs), one per clone; behind a proxy, gix's reqwest
    // backend, which knows proxies, shared the same way.
    let http_backend = match (http, uses_proxy(&request.url)) {
        (false, _) => None,
        (true, false) => Some(HttpBackend::Own(SmartHttp::new(
            tls.clone(),
            resolver.clone(),
            tokio::runtime::Handle::current(),
            connect_timeout,
        ))),
        (true, true) => Some(HttpBackend::Reqwest(SharedHttp::default())),
    };
    let url = request.url.clone();
    prepare = prepare.configure_connection(move |connection| {
        match &http_backend {
            Some(HttpBackend::Own(backend)) => {
                *connection.transport_mut() = Box::new(backend.transport(url.clone()));
            }
            Some(HttpBackend::Reqwest(backend)) => {
                *connection.transport_mut() = Box::new(backend.transport(url.clone()));
                if let Some(tls) = &tls {
                    connection.set_transport_options(http_options(
                        tls.clone(),
                        resolver.clone(),
                        connect_timeout,
                    ));
                }
            }
            None => {}
        }
        if let Some(request) = &daemon {
            *connection.transport_mut() =
                daemon_connection(request).map_err(gix::Error::from_error)?;
        }
        // gix made its own ssh transport, which would run an ssh program at the handshake
        // (it spawns on demand, so nothing has run yet): replaced by a channel of ours.
        if let Some(session) = &ssh_session {
            *connection.transport_mut() = session.transport().map_err(gix::Error::from_error)?;
        }
        // Always our callback: without one gix would ask git's credential helpers or try to
        // prompt on a terminal, neither of which an init container has.
        let credentials = credentials.clone();
        connection.set_credentials(move |action| match (action, &credentials) {
            (gix::credentials::helper::Action::Get(context), Some(credentials)) => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: credentials.username.clone(),
                        password: credentials.password.clone(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                }))
            }
            _ => Ok(None),
        });
        Ok(())
    });
    let (mut checkout, fetched) = prepare
        .fetch_then_checkout(progress.add_child("fetch"), interrupt)
        .map_err(|e| classify(&e, request, dir, Phase::Fetching, interrupt))?;
    let repo = if request.sparse.is_empty() {
        checkout
            .main_worktree(progress.add_child("checkout"), interrupt)
            .map_err(|e| classify(&e, request, dir, Phase::CheckingOut, interrupt))?
            .0
    } else {
        super::sparse::checkout(checkout.persist(), dir, &request.sparse, interrupt)?
    };
    if super::default_branch::applies(request) {
        super::default_branch::attach_head(&repo, &fetched.ref_map.remote_refs, &request.url)
            .map_err(|reason| Failure::Fatal(Error::Failed(reason)))?;
    }
    let head = repo.head_id().map_err(|e| {
        Failure::Fatal(Error::Failed(format!(
            "the clone has no commit checked out: {}",
            innermost(&e)
        )))
    })?;
    super::submodules::clone_all(dir, request, interrupt)?;
    Ok(head.to_string())
}

/// The URL gix is pointed at for a git:// clone (see `clone_with_progress`): never
/// connected to, its transport is replaced before the handshake.
const GIT_DAEMON_STAND_IN: &str = "ssh://git-daemon.initbox.invalid/repository";

/// A git:// connection of our own, for gix to speak the protocol over: gix writes each
/// pkt-line in several small writes to a socket without TCP_NODELAY, and each request then
/// waits out a delayed ACK (about 40 ms, three times in a shallow clone). Ours has Nagle off
/// and a buffered writer (gix flushes it at the end of each request), goes to the address
/// this attempt resolved with the attempt's connect timeout, and asks the daemon for the
/// URL's host name in `host=` (its virtual hosting), never the address.
fn daemon_connection(
    request: &CloneRequest,
) -> std::io::Result<Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>> {
    use gix::protocol::transport::client::git;
    let host = request.url.host().unwrap_or_default();
    let ip = request.address.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("{host} has no address"),
        )
    })?;
    let address = std::net::SocketAddr::new(ip, request.url.port.unwrap_or(9418));
    let stream = std::net::TcpStream::connect_timeout(&address, request.connect_timeout)?;
    stream.set_nodelay(true)?;
    let writer = std::io::BufWriter::new(stream.try_clone()?);
    Ok(Box::new(git::blocking_io::Connection::new(
        stream,
        writer,
        gix::protocol::transport::Protocol::V2,
        request.url.path.clone(),
        Some((
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            request.url.port,
        )),
        git::ConnectMode::Daemon,
        false,
    )))
}

/// The HTTP client a clone speaks through.
enum HttpBackend {
    Own(SmartHttp),
    Reqwest(SharedHttp),
}

/// Whether a proxy is set in the environment for the URL's scheme (curl's and reqwest's
/// variables, either case). `NO_PROXY` is left to reqwest: a clone it exempts still works,
/// through reqwest's client.
fn uses_proxy(url: &gix::Url) -> bool {
    let names: &[&str] = match url.scheme {
        gix::url::Scheme::Https => &["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"],
        gix::url::Scheme::Http => &["HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"],
        _ => return false,
    };
    names
        .iter()
        .any(|name| std::env::var_os(name).is_some_and(|value| !value.is_empty()))
}

/// Behind a proxy: one gix HTTP backend, and so one reqwest client with its connections
/// kept alive, for every connection of a clone. gix makes a backend per connect: a clone
/// that connects twice (a shallow clone of a named ref looks the name up first) paid a
/// second TCP and TLS handshake. The backend serves one request at a time, and gix makes them one after
/// the other; the lock is held only while a request starts.
#[derive(Clone, Default)]
struct SharedHttp(Arc<Mutex<gix_http::reqwest::Remote>>);

impl SharedHttp {
    fn transport(&self, url: gix::Url) -> gix_http::Transport<SharedHttp> {
        gix_http::Transport::new_http(
            self.clone(),
            url,
            gix::protocol::transport::Protocol::V2,
            false,
        )
    }

    fn backend(&self) -> std::sync::MutexGuard<'_, gix_http::reqwest::Remote> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl gix_http::Http for SharedHttp {
    type Headers = <gix_http::reqwest::Remote as gix_http::Http>::Headers;
    type ResponseBody = <gix_http::reqwest::Remote as gix_http::Http>::ResponseBody;
    type PostBody = <gix_http::reqwest::Remote as gix_http::Http>::PostBody;

    fn get(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::error::Result<gix_http::GetResponse<Self::Headers, Self::ResponseBody>> {
        self.backend().get(url, base_url, headers)
    }

    fn post(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        body: gix_http::PostBodyDataKind,
    ) -> gix::error::Result<gix_http::PostResponse<Self::Headers, Self::ResponseBody, Self::PostBody>>
    {
        self.backend().post(url, base_url, headers, body)
    }

    fn configure(&mut self, config: &dyn std::any::Any) -> gix::error::Result {
        self.backend().configure(config)
    }

    fn redirected_base_url(&self) -> Option<String> {
        self.backend().redirected_base_url()
    }
}

/// gix's HTTP options with a reqwest client set up like every other initbox HTTP client:
/// the same roots, CA files, client certificate, resolver and User-Agent.
fn http_options(
    tls: rustls::ClientConfig,
    resolver: Resolver,
    connect_timeout: Duration,
) -> Box<dyn std::any::Any> {
    let backend = gix_http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            Ok(http_client::configure_blocking(
                builder,
                tls.clone(),
                resolver.clone(),
            ))
        })),
        configure_request: None,
    };
    Box::new(gix_http::Options {
        backend: Some(Arc::new(Mutex::new(backend))),
        connect_timeout: Some(connect_timeout),
        user_agent: Some(http_client::USER_AGENT.to_owned()),
        ..Default::default()
    })
}

/// Network trouble is retried; a rejected login, a missing repository or ref, a certificate
/// that is not trusted for the host, a full or read-only disk, and anything else initbox
/// cannot fix by waiting, are not. `dir` is where the clone was being written. Every message
/// is a sentence of initbox's: gix's errors are nested many levels deep, and their wording
/// is written for gix's developers.
fn classify(
    error: &gix::Error,
    request: &CloneRequest,
    dir: &Path,
    phase: Phase,
    interrupt: &AtomicBool,
) -> Failure {
    if interrupt.load(Ordering::Relaxed) {
        return Failure::Retry("interrupted".into());
    }
    let causes = causes(error);
    if let Some(failure) = write_failure(causes.iter().copied(), dir) {
        return failure;
    }
    if let Some(failure) = ssh::failure_in(causes.iter().copied()) {
        return failure;
    }
    if let Some(tls) = causes
        .iter()
        .find_map(|cause| cause.downcast_ref::<rustls::Error>())
    {
        return tls_failure(tls);
    }
    // `ERR …` from the server (git daemon says "access denied or repository not exported"
    // for a missing repository): its answer, which waiting will not change.
    if let Some(refusal) = causes
        .iter()
        .find_map(|cause| cause.downcast_ref::<gix::protocol::transport::packetline::read::Error>())
    {
        return Failure::Fatal(Error::Failed(format!(
            "the server refused to serve {}: {}",
            request.url.to_bstring(),
            refusal.message
        )));
    }
    if error.is_unauthenticated() || error.is_permission_denied() {
        return Failure::Fatal(Error::Failed(match &request.credentials {
            None => format!(
                "authentication failed: {} asks for credentials and none were given \
                 (--username with --password-file FILE or INITBOX_GIT_PASSWORD, or \
                 --token-file FILE)",
                request.url.to_bstring()
            ),
            Some(credentials) => format!(
                "authentication failed: {} rejected the credentials of user '{}'",
                request.url.to_bstring(),
                credentials.username
            ),
        }));
    }
    if let Some(refusal) = causes
        .iter()
        .find_map(|cause| cause.downcast_ref::<super::smart_http::Refusal>())
    {
        return Failure::Fatal(Error::Failed(refusal.0.clone()));
    }
    // A name our HTTP client could not look up, in the words of every HTTP command.
    if let Some(resolve) = causes
        .iter()
        .find_map(|cause| cause.downcast_ref::<http_client::ResolveError>())
    {
        return resolve.failure();
    }
    // Behind a proxy the cause is a reqwest error: described as every HTTP command does.
    if let Some(http_error) = causes
        .iter()
        .find_map(|cause| cause.downcast_ref::<reqwest::Error>())
        && !http_error.is_status()
    {
        return http_client::classify(http_error);
    }
    let library_text = describe(error).to_ascii_lowercase();
    if error.is_not_found() || library_text.contains("not found") {
        return Failure::Fatal(Error::Failed(match &request.reference {
            Reference::Name(name) if library_text.contains("any ref that matched") => format!(
                "{} has no branch or tag named '{name}'",
                request.url.to_bstring()
            ),
            Reference::Commit(id) if !library_text.contains("repository") => format!(
                "{} does not have commit {id} (or does not let a client ask for it by id)",
                request.url.to_bstring()
            ),
            _ => format!("no repository at {}", request.url.to_bstring()),
        }));
    }
    let sentence = phase.sentence(&causes, &library_text);
    if error.can_retry_lenient() || causes.iter().any(|c| c.is::<std::io::Error>()) {
        return Failure::Retry(sentence);
    }
    Failure::Fatal(Error::Failed(sentence))
}

/// Where a clone was when it failed, for the message.
#[derive(Clone, Copy)]
enum Phase {
    Fetching,
    CheckingOut,
}

impl Phase {
    /// "what broke: the innermost reason", the reason in initbox's words where it is an I/O
    /// error.
    fn sentence(self, causes: &[&(dyn std::error::Error + 'static)], library_text: &str) -> String {
        let reason = causes
            .iter()
            .rev()
            .find_map(|cause| cause.downcast_ref::<std::io::Error>())
            .map(crate::reason::io)
            .or_else(|| causes.last().map(|cause| cause.to_string()))
            .unwrap_or_else(|| "unknown error".into());
        let what = match self {
            Phase::CheckingOut => "writing the checked-out files failed",
            Phase::Fetching if library_text.contains("pack") => {
                "the transfer of the pack from the server broke off"
            }
            Phase::Fetching => "talking to the server failed",
        };
        format!("{what}: {reason}")
    }
}

/// A TLS problem that is configuration (a CA to trust, a name to use, a certificate to
/// renew, a plain-HTTP port behind https://) ends the run at once, in the words register
/// and fetch use; a failed handshake of another kind is retried.
fn tls_failure(error: &rustls::Error) -> Failure {
    let reason = http_client::describe_tls(error);
    if http_client::is_tls_configuration(error) {
        Failure::Fatal(Error::Failed(reason))
    } else {
        Failure::Retry(reason)
    }
}

/// Every cause of a gix error, outermost first: gix's error is a graph (its
/// `iter_errors` visits every node), and each node's chain is walked by
/// [`crate::reason::causes`]; a cause two nodes share is kept once.
fn causes(error: &gix::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut found: Vec<&(dyn std::error::Error + 'static)> = Vec::new();
    for cause in error.iter_errors().flat_map(crate::reason::causes) {
        if found.len() > 64 {
            break;
        }
        if !found.iter().any(|seen| std::ptr::addr_eq(*seen, cause)) {
            found.push(cause);
        }
    }
    found
}

/// The most specific cause of an error, an I/O error in initbox's words.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    match last.downcast_ref::<std::io::Error>() {
        Some(io) => crate::reason::io(io),
        None => last.to_string(),
    }
}

/// Disk trouble that no retry heals (the volume is full or mounted read-only), found among
/// an error's causes; `dir` is where the clone was being written.
fn write_failure<'a>(
    causes: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>,
    dir: &Path,
) -> Option<Failure> {
    use std::io::ErrorKind::{FileTooLarge, QuotaExceeded, ReadOnlyFilesystem, StorageFull};
    let io = causes
        .filter_map(|cause| cause.downcast_ref::<std::io::Error>())
        .find(|io| {
            matches!(
                io.kind(),
                StorageFull | ReadOnlyFilesystem | QuotaExceeded | FileTooLarge
            )
        })?;
    let volume = dir.parent().unwrap_or(dir);
    Some(Failure::Fatal(Error::Failed(format!(
        "cannot write the checkout into {}: {}",
        volume.display(),
        crate::reason::io(io)
    ))))
}

/// The library's chain of causes on one line, to look things up in (never printed).
fn describe(error: &gix::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.iter_errors() {
        let text = cause.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

/// Prints how far a clone got every few seconds, from gix's progress tree.
struct ProgressReporter {
    /// Dropping the sender wakes the thread at once: a quick clone does not wait for it.
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressReporter {
    fn start(root: Arc<Root>) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let step = crate::step::current();
        let thread = std::thread::spawn(move || {
            crate::step::on_thread(step, || Self::report_until(&root, &stopped))
        });
        ProgressReporter {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn report_until(root: &Root, stopped: &std::sync::mpsc::Receiver<()>) {
        let start = Instant::now();
        let mut snapshot = Vec::new();
        let mut previous_bytes = std::collections::HashMap::new();
        while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            stopped.recv_timeout(PROGRESS_EVERY)
        {
            root.sorted_snapshot(&mut snapshot);
            let line = progress_line(&snapshot, &mut previous_bytes, PROGRESS_EVERY);
            if !line.is_empty() {
                report::info(
                    "git.progress",
                    format!(
                        "cloning, {}: {line}",
                        crate::duration::Elapsed(start.elapsed())
                    ),
                );
            }
        }
    }

    fn stop(mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The tasks that are under way, as `name step/total`, bytes shown as sizes.
fn progress_line(
    snapshot: &[(
        gix::progress::prodash::progress::Key,
        gix::progress::prodash::progress::Task,
    )],
    previous_bytes: &mut std::collections::HashMap<String, usize>,
    since_previous: Duration,
) -> String {
    let mut parts = Vec::new();
    for (_, task) in snapshot {
        let Some(value) = &task.progress else {
            continue;
        };
        let step = value.step.load(Ordering::Relaxed);
        if step == 0 {
            continue;
        }
        let is_bytes = value
            .unit
            .as_ref()
            .map(|u| format!("{}", u.display(1, None, None)).contains('B'))
            .unwrap_or(false);
        let amount = |n: usize| {
            if is_bytes {
                ByteSize(n as u64).to_string()
            } else {
                n.to_string()
            }
        };
        let mut part = match value.done_at {
            Some(total) => format!("{} {}/{}", task.name, amount(step), amount(total)),
            None => format!("{} {}", task.name, amount(step)),
        };
        if is_bytes {
            let before = previous_bytes.insert(task.name.clone(), step).unwrap_or(0);
            let rate = step.saturating_sub(before) as f64 / since_previous.as_secs_f64();
            part.push_str(&format!(" ({}/s)", ByteSize(rate as u64)));
        }
        parts.push(part);
    }
    parts.join(", ")
}
