//! Helpers shared by the integration tests: running initbox as a user would, and the real
//! servers it talks to. Everything listens on loopback, on ports the kernel picks.

#![allow(dead_code)]

pub mod archives;
pub mod dns_server;
pub mod git_server;
pub mod grpc_server;
pub mod http_server;
pub mod kafka_server;
pub mod kube_api;
pub mod mysql_server;
pub mod nats_server;
pub mod postgres_server;
pub mod rabbitmq_server;
pub mod redis_server;
pub mod sshd;
pub mod zookeeper_server;

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Generous upper bound for any single run: a hang is a failure, not a stuck CI job.
pub const RUN_LIMIT: Duration = Duration::from_secs(60);

/// Every command that does a task, as `--help`, completions and man pages must list them:
/// read from the one registry of commands (`cli::commands!`), so a new command is in every
/// table of tests that goes through this list, and a test that has no case for it fails.
pub static COMMANDS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    initbox::cli::command()
        .get_subcommands()
        .map(|command| command.get_name())
        .filter(|name| !initbox::docs::DOC_COMMANDS.contains(name))
        .map(|name| &*Box::leak(name.to_owned().into_boxed_str()))
        .collect()
});

/// The commands of [`COMMANDS`] with a positional argument named one of `value_names` as
/// clap names it (`HOST:PORT`, `URL`): a test of every command that takes a host, a URL or
/// a path asks the registry which those are, so a new one needs a case there.
pub fn commands_taking(value_names: &[&str]) -> Vec<&'static str> {
    let root = initbox::cli::command();
    COMMANDS
        .iter()
        .copied()
        .filter(|name| {
            root.find_subcommand(name).is_some_and(|command| {
                command.get_positionals().any(|arg| {
                    arg.get_value_names().is_some_and(|names| {
                        names.iter().any(|n| value_names.contains(&n.as_str()))
                    })
                })
            })
        })
        .collect()
}

/// Fails naming the commands of `expected` that `covered` (commands, any order, repeats
/// allowed) lacks, or that it has in excess: how a table of cases proves it is complete.
#[track_caller]
pub fn assert_covers(covered: &[&str], expected: &[&str], what: &str) {
    let mut covered: Vec<&str> = covered.to_vec();
    covered.sort();
    covered.dedup();
    let mut expected: Vec<&str> = expected.to_vec();
    expected.sort();
    assert_eq!(covered, expected, "{what}: every command needs a case here");
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_initbox")
}

/// A scratch directory with a hosts file that knows `localhost` on both families and a
/// path where no resolv.conf exists, so no test ever asks the machine's nameserver.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    /// Runs each command line and expects `code` with `message` on stderr: the tables of bad
    /// input every command has.
    pub fn expect_each(&self, code: i32, cases: &[(Vec<&str>, &str)]) {
        for (args, message) in cases {
            self.initbox()
                .args(args)
                .run()
                .assert_code(code)
                .assert_stderr_contains(message);
        }
    }

    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("hosts"),
            "127.0.0.1 localhost\n::1 localhost\n",
        )
        .unwrap();
        Sandbox { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// initbox with a clean environment: no INITBOX_*, TLS, proxy or Kubernetes variables from
    /// the machine.
    pub fn initbox(&self) -> Cmd {
        self.initbox_at(Path::new(binary()))
    }

    /// `initbox run --check -f FILE`: what a pipeline file would do, checked away from a pod.
    pub fn check_pipeline(&self, file: &Path) -> Output {
        self.initbox()
            .args(["run", "--check", "-f"])
            .arg(file)
            .run()
    }

    /// As [`Sandbox::initbox`], running the binary at `path` (a copy, see [`nonroot_copy`]).
    pub fn initbox_at(&self, path: &Path) -> Cmd {
        let mut command = Command::new(path);
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("INITBOX_")
                || key_text.starts_with("SSL_CERT")
                || key_text.starts_with("KUBERNETES_")
                || key_text == "KUBECONFIG"
                || key_text.ends_with("_PROXY")
                || key_text.ends_with("_proxy")
            {
                command.env_remove(&key);
            }
        }
        command
            .env("INITBOX_RESOLV_CONF", self.path("no-resolv.conf"))
            .env("INITBOX_HOSTS_FILE", self.path("hosts"));
        Cmd { command }
    }
}

pub struct Cmd {
    pub command: Command,
}

impl Cmd {
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.command.args(args);
        self
    }

    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Wraps the command: `unshare --pid --fork …`, `setpriv …`.
    pub fn wrapped_in(self, wrapper: &[&str]) -> Self {
        let mut command = Command::new(wrapper[0]);
        command.args(&wrapper[1..]);
        command.arg(self.command.get_program());
        command.args(self.command.get_args());
        for (key, value) in self.command.get_envs() {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        Cmd { command }
    }

    /// Runs inside a network namespace of its own (needs root): loopback up, then the shell
    /// commands `setup` (routes, sysctls; "" for none), then this command.
    pub fn in_network_namespace(self, setup: &str) -> Self {
        let script = if setup.is_empty() {
            "ip link set lo up && exec \"$@\"".to_owned()
        } else {
            format!("ip link set lo up && {setup} && exec \"$@\"")
        };
        self.wrapped_in(&["unshare", "--net", "sh", "-c", &script, "sh"])
    }

    /// Runs inside a mount namespace of its own (needs root), after the shell commands
    /// `setup` (mounts that only this run sees, so nothing is left mounted on the machine).
    pub fn in_mount_namespace(self, setup: &str) -> Self {
        let script = format!("{setup} && exec \"$@\"");
        self.wrapped_in(&[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
            "sh",
        ])
    }

    pub fn spawn(mut self) -> Running {
        let started = Instant::now();
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning initbox");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Running {
            child,
            started,
            stdout,
            stderr,
        }
    }

    pub fn run(self) -> Output {
        self.spawn().wait()
    }
}

type Collected = (Arc<Mutex<String>>, Option<thread::JoinHandle<()>>);

fn collect(stream: impl std::io::Read + Send + 'static) -> Collected {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = text.clone();
    let handle = thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            let mut all = sink.lock().unwrap();
            all.push_str(&line);
            all.push('\n');
        }
    });
    (text, Some(handle))
}

pub struct Running {
    pub child: Child,
    pub started: Instant,
    stdout: Collected,
    stderr: Collected,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_so_far(&self) -> String {
        self.stderr.0.lock().unwrap().clone()
    }

    /// Waits until stderr contains `needle`; panics with what it has after `limit`.
    pub fn wait_for_stderr(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.stderr_so_far().contains(needle) {
                return;
            }
            thread::sleep(Duration::from_millis(10));
        }
        panic!(
            "stderr never contained {needle:?}; it has:\n{}",
            self.stderr_so_far()
        );
    }

    pub fn signal(&self, name: &str) {
        signal(self.pid(), name);
    }

    pub fn wait(mut self) -> Output {
        let deadline = self.started + RUN_LIMIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "initbox did not finish within {RUN_LIMIT:?}; stderr:\n{}",
                    self.stderr_so_far()
                );
            }
            thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        for reader in [self.stdout.1.take(), self.stderr.1.take()]
            .into_iter()
            .flatten()
        {
            reader.join().unwrap();
        }
        use std::os::unix::process::ExitStatusExt;
        // A death by a signal is not an exit code: 143 must mean "initbox handled SIGTERM
        // and exited 143", never "SIGTERM killed it" (see `killed_by`).
        let code = status.code().unwrap_or(-1);
        Output {
            code,
            killed_by: status.signal(),
            stdout: self.stdout.0.lock().unwrap().clone(),
            stderr: self.stderr.0.lock().unwrap().clone(),
            elapsed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Debug)]
pub struct Output {
    /// The exit code; -1 when a signal ended the process (`killed_by` names it).
    pub code: i32,
    /// The signal that ended the process without it exiting, if one did.
    pub killed_by: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            code,
            "unexpected exit code{}; stderr:\n{}\nstdout:\n{}",
            match self.killed_by {
                Some(signal) => format!(" (killed by signal {signal}, no exit code)"),
                None => String::new(),
            },
            self.stderr,
            self.stdout
        );
        self
    }

    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}:\n{}",
            self.stderr
        );
        self
    }
}

/// Sends a signal with kill(2) itself, not a `kill` process: a test can time an exit from
/// the very moment the signal was sent.
#[allow(unsafe_code)]
pub fn kill(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let sent = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(
        sent,
        0,
        "kill({pid}, {signal}): {}",
        std::io::Error::last_os_error()
    );
}

/// The process under `unshare --pid --fork`: its only child, PID 1 of the new namespace.
pub fn pid_one_of(unshare_pid: u32) -> u32 {
    let mut found = None;
    assert!(
        eventually(Duration::from_secs(10), || {
            found = children(unshare_pid).first().copied();
            found.is_some()
        }),
        "unshare started no child"
    );
    found.unwrap()
}

/// A tmpfs mounted at a path for the test's lifetime, like a pod's volume: the directory
/// cannot be renamed or removed, only its contents changed.
pub struct Mount(PathBuf);

impl Mount {
    pub fn tmpfs(at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
            .arg(at)
            .status()
            .unwrap();
        assert!(status.success(), "mounting a tmpfs");
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// A port that was free a moment ago on this address (for listeners that appear later).
pub fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .expect("binding port 0")
        .local_addr()
        .unwrap()
        .port()
}

/// Opens a listener on `addr` after `delay`, accepting and closing connections until dropped.
pub fn listen_later(addr: String, delay: Duration) -> thread::JoinHandle<TcpListener> {
    thread::spawn(move || {
        thread::sleep(delay);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(&addr) {
                Ok(listener) => return listener,
                Err(_) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Err(e) => panic!("binding {addr}: {e}"),
            }
        }
    })
}

/// A listener that accepts in the background and counts the connections it saw.
pub struct CountingListener {
    pub port: u16,
    pub accepted: Arc<Mutex<usize>>,
}

pub fn counting_listener(ip: &str) -> CountingListener {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(Mutex::new(0));
    let count = accepted.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { break };
            *count.lock().unwrap() += 1;
            drop::<TcpStream>(stream);
        }
    });
    CountingListener { port, accepted }
}

pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Namespaces need root (as on CI); elsewhere the test says so and does nothing.
#[must_use]
pub fn need_root() -> bool {
    if is_root() {
        true
    } else {
        skip("needs root for namespaces");
        false
    }
}

/// The running test's name: libtest runs each test on a thread named after it, so a test
/// never repeats its own name by hand (where copies drift).
pub fn test_name() -> String {
    std::thread::current().name().unwrap_or("a test").to_owned()
}

/// A test that cannot run on this machine says why and returns. With INITBOX_TEST_STRICT
/// set (CI sets it, where everything is provided) a skip fails the test instead.
pub fn skip(reason: &str) {
    let test = test_name();
    if std::env::var_os("INITBOX_TEST_STRICT").is_some_and(|value| !value.is_empty()) {
        panic!("{test}: cannot run ({reason}), and INITBOX_TEST_STRICT forbids skipping");
    }
    eprintln!("{test}: skipped, {reason}");
}

/// The static release binary (`images/build.sh`), as shipped in the image, named by
/// INITBOX_STATIC_BINARY; None (after saying why, see [`skip`]) when it is not given.
pub fn static_binary() -> Option<PathBuf> {
    let binary = std::env::var_os("INITBOX_STATIC_BINARY").map(PathBuf::from);
    if binary.is_none() {
        skip(
            "needs the static binary: run images/build.sh, then set \
             INITBOX_STATIC_BINARY=target/static/initbox",
        );
    }
    binary
}

/// A copy of the binary in a 0755 directory, so that a dropped-privilege user (uid 65532)
/// can run it wherever the build directory lives. Keep the TempDir alive while it runs.
pub fn nonroot_copy() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("initbox");
    std::fs::copy(binary(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, copy)
}

/// The names in a directory, sorted (none when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Every path under `dir`, relative, directories with a trailing `/` (symlinks are not
/// followed), sorted; none when `dir` does not exist. Temp files show up too.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, names: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let relative = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() && !path.is_symlink() {
                names.push(format!("{relative}/"));
                walk(root, &path, names);
            } else {
                names.push(relative);
            }
        }
    }
    let mut names = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut names);
    }
    names.sort();
    names
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

/// The children of a process, as the kernel lists them (zombies included).
pub fn children(pid: u32) -> Vec<u32> {
    let mut all = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return all;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            all.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    all
}

/// Polls `condition` every 10 ms until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if condition() {
            return true;
        }
        thread::sleep(Duration::from_millis(10));
    }
    condition()
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Held by every test of the `serial` target for its whole run: those tests load the
/// machine (10 000 attempts, kill -9 at random moments, podman) or assert on prompt exits,
/// so they run one at a time instead of beside each other.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// PEM files for a TLS server on localhost and 127.0.0.1, signed by a fresh CA of their own
/// (for the servers started by the tests: Redis, MariaDB, NATS, RabbitMQ).
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// Writes `ca.pem`, `server.pem` and `server.key` into `dir`.
    pub fn new(dir: &Path) -> TlsFiles {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "initbox test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        std::fs::write(&files.ca, ca.pem()).unwrap();
        std::fs::write(&files.cert, cert.pem()).unwrap();
        std::fs::write(&files.key, key.serialize_pem()).unwrap();
        files
    }
}

/// The first `args:` list of an example manifest under examples/kubernetes/ starts with
/// `command` and parses with the CLI's own definition.
#[track_caller]
pub fn assert_example_args_parse(example: &str, command: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/kubernetes")
        .join(example);
    let text = std::fs::read_to_string(path).unwrap();
    let args: Vec<&str> = text
        .lines()
        .skip_while(|line| line.trim() != "args:")
        .skip(1)
        .map_while(|line| line.trim().strip_prefix("- "))
        .collect();
    assert_eq!(args.first(), Some(&command), "{args:?}");
    let argv = std::iter::once("initbox").chain(args.iter().copied());
    assert!(
        initbox::cli::parse_from(argv).is_ok(),
        "the example's args do not parse: {args:?}"
    );
}
