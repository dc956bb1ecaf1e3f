//! A real RabbitMQ 3.10 node on 127.0.0.1, for wait-for-amqp: its four ports (AMQP, Erlang
//! distribution, epmd, the CLI's distribution port) and a TLS listener chosen at run time,
//! its own foreground epmd (the node's own would listen on 0.0.0.0 and outlive it), all
//! state in a temp dir. A node takes 7–8 s to start, so the tests that only read share one
//! ([`shared`], stopped when the test binary exits); only those that must see it start
//! start their own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::TlsFiles;
use super::{free_port, kill, skip};

const BIN: &str = "/usr/lib/rabbitmq/bin";
pub const USER: &str = "app";
pub const PASSWORD: &str = "rabbit-s3cret-pw";

pub struct RabbitServer {
    pub port: u16,
    pub tls_port: u16,
    dist_port: u16,
    epmd_port: u16,
    ctl_port: u16,
    dir: tempfile::TempDir,
    pub tls: TlsFiles,
    epmd: Option<Child>,
    node: Option<Child>,
    starts: u32,
}

/// True when RabbitMQ and epmd are installed; otherwise says so (see [`skip`]).
pub fn available() -> bool {
    if Path::new(BIN).join("rabbitmq-server").exists() && which("epmd").is_some() {
        return true;
    }
    skip("needs RabbitMQ (Debian package rabbitmq-server)");
    false
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(name))
        .find(|path| path.exists())
}

static SHARED: Mutex<Option<RabbitServer>> = Mutex::new(None);
static SHARED_STARTED: std::sync::Once = std::sync::Once::new();

/// The node the read-only tests share: started by the first test that asks, stopped (and
/// its directory removed) when the test binary exits. Returns its AMQP and TLS ports and
/// the CA file, or None when RabbitMQ is missing.
pub fn shared() -> Option<(u16, u16, PathBuf)> {
    if !available() {
        return None;
    }
    SHARED_STARTED.call_once(|| {
        let server = RabbitServer::start();
        *SHARED.lock().unwrap() = Some(server);
        stop_shared_at_exit();
    });
    let guard = SHARED.lock().unwrap();
    let server = guard.as_ref().expect("the shared RabbitMQ node");
    Some((server.port, server.tls_port, server.tls.ca.clone()))
}

/// Runs `rabbitmqctl ARGS` against the shared node.
pub fn shared_ctl(args: &[&str]) {
    let guard = SHARED.lock().unwrap();
    guard.as_ref().expect("the shared RabbitMQ node").ctl(args);
}

#[allow(unsafe_code)]
fn stop_shared_at_exit() {
    extern "C" fn stop() {
        if let Ok(mut guard) = SHARED.lock() {
            drop(guard.take());
        }
    }
    // SAFETY: atexit(3) registers a plain function; `stop` neither panics across the FFI
    // boundary nor unwinds (a failed lock is ignored).
    unsafe {
        libc::atexit(stop);
    }
}

impl RabbitServer {
    /// A node ready for AMQP on fresh ports (new ones when a port was taken meanwhile).
    pub fn start() -> RabbitServer {
        for _ in 0..3 {
            let mut server = RabbitServer::unstarted();
            if server.try_start() {
                return server;
            }
        }
        panic!("RabbitMQ did not start on any of three sets of free ports");
    }

    /// A node to be started later with [`RabbitServer::restart`] (for a waiter that
    /// must start first).
    pub fn later() -> Option<RabbitServer> {
        available().then(RabbitServer::unstarted)
    }

    fn unstarted() -> RabbitServer {
        let dir = tempfile::Builder::new()
            .prefix("rabbit")
            .tempdir_in("/tmp")
            .unwrap();
        let tls = TlsFiles::new(dir.path());
        RabbitServer {
            port: free_port("127.0.0.1"),
            tls_port: free_port("127.0.0.1"),
            dist_port: free_port("127.0.0.1"),
            epmd_port: free_port("127.0.0.1"),
            ctl_port: free_port("127.0.0.1"),
            dir,
            tls,
            epmd: None,
            node: None,
            starts: 0,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same ports; panics when it cannot.
    pub fn restart(&mut self) {
        assert!(self.try_start(), "RabbitMQ did not start again");
    }

    fn env(&self, command: &mut Command) {
        let dir = self.dir.path();
        command
            .env("HOME", dir)
            .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"))
            .env(
                "RABBITMQ_NODENAME",
                format!("rabbit-{}@localhost", self.port),
            )
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("RABBITMQ_CTL_DIST_PORT_MIN", self.ctl_port.to_string())
            .env("RABBITMQ_CTL_DIST_PORT_MAX", self.ctl_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string())
            .env("ERL_EPMD_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_LOGS", "-")
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_PID_FILE", dir.join("rabbit.pid"))
            .env(
                "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS",
                "-kernel inet_dist_use_interface {127,0,0,1}",
            );
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("server-{}.log", self.starts))
    }

    /// Starts epmd and the node, waits for `Server startup complete`; false when a port
    /// was taken.
    fn try_start(&mut self) -> bool {
        self.stop();
        self.starts += 1;
        let dir = self.dir.path();
        std::fs::write(dir.join("rabbitmq-env.conf"), "").unwrap();
        std::fs::write(dir.join("enabled_plugins"), "[].\n").unwrap();
        std::fs::write(
            dir.join("rabbitmq.conf"),
            format!(
                "default_user = {USER}\ndefault_pass = {PASSWORD}\ndefault_vhost = /\n\
                 listeners.ssl.default = 127.0.0.1:{}\n\
                 ssl_options.cacertfile = {}\nssl_options.certfile = {}\n\
                 ssl_options.keyfile = {}\nssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                self.tls_port,
                self.tls.ca.display(),
                self.tls.cert.display(),
                self.tls.key.display()
            ),
        )
        .unwrap();
        let epmd = Command::new(which("epmd").unwrap())
            .args([
                "-port",
                &self.epmd_port.to_string(),
                "-address",
                "127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning epmd");
        self.epmd = Some(epmd);
        let log = self.log_path();
        let mut command = Command::new(Path::new(BIN).join("rabbitmq-server"));
        self.env(&mut command);
        let node = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning rabbitmq-server");
        self.node = Some(node);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server startup complete") {
                return true;
            }
            // The script exits 0 even when the boot failed: judge by the log.
            let exited = self
                .node
                .as_mut()
                .is_some_and(|node| node.try_wait().unwrap().is_some());
            if exited || text.contains("BOOT FAILED") {
                self.stop();
                assert!(
                    text.contains("eaddrinuse") || text.contains("already in use"),
                    "RabbitMQ did not start:\n{text}"
                );
                return false;
            }
            if Instant::now() > deadline {
                self.stop();
                panic!("RabbitMQ was not ready within 90 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `rabbitmqctl ARGS` against this node; panics when it fails.
    pub fn ctl(&self, args: &[&str]) {
        let mut command = Command::new(Path::new(BIN).join("rabbitmqctl"));
        self.env(&mut command);
        let output = command
            .arg("-n")
            .arg(format!("rabbit-{}@localhost", self.port))
            .arg("-q")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running rabbitmqctl");
        assert!(
            output.status.success(),
            "rabbitmqctl {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// SIGTERM by PID to the node's script (it stops the node cleanly), then to epmd.
    pub fn stop(&mut self) {
        for child in [self.node.take(), self.epmd.take()].into_iter().flatten() {
            stop_child(child);
        }
    }
}

fn stop_child(mut child: Child) {
    if child.try_wait().unwrap().is_none() {
        kill(child.id(), libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for RabbitServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the shared node has logged so far.
pub fn shared_log() -> String {
    let guard = SHARED.lock().unwrap();
    let server = guard.as_ref().expect("the shared RabbitMQ node");
    std::fs::read_to_string(server.log_path()).unwrap_or_default()
}
