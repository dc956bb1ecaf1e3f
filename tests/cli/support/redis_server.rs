//! A real redis-server (Debian's redis-server 7) on a free loopback port, in a temporary
//! directory removed on drop, for the wait-for-redis tests; also the PEM files (a fresh CA
//! and a certificate for localhost and 127.0.0.1) that the TLS tests of the protocol checks
//! hand to real servers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::TlsFiles;
use super::{eventually, free_port, path_str, skip};

/// How long a server may take to say it is ready (a loaded 2-core machine).
const START_LIMIT: Duration = Duration::from_secs(30);

pub struct RedisServer {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
}

/// True when redis-server is installed; otherwise the test says so (failing under
/// INITBOX_TEST_STRICT) and should return.
#[must_use]
pub fn available() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skip("needs redis-server (Debian package redis-server)");
    }
    found
}

impl RedisServer {
    /// A server on a free port with these extra arguments, ready to accept connections.
    pub fn start(args: &[&str]) -> RedisServer {
        for _ in 0..5 {
            let mut server = RedisServer::new(free_port("127.0.0.1"), args);
            if server.launch(false) {
                return server;
            }
        }
        panic!("redis-server did not start on any of 5 free ports");
    }

    /// A server on `port` that is started later with [`RedisServer::launch`] (a waiter
    /// started first must see it come up).
    pub fn new(port: u16, args: &[&str]) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        RedisServer {
            port,
            log: dir.path().join("redis.log"),
            dir,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    /// Starts the server; waits for its ready line unless `loading` (a server loading a big
    /// dataset only says so after it). False when the port was taken meanwhile.
    pub fn launch(&mut self, loading: bool) -> bool {
        let _ = std::fs::remove_file(&self.log);
        let tls = self.args.iter().any(|a| a == "--tls-port");
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        if tls {
            command.args(["--port", "0", "--tls-port", &port]);
        } else {
            command.args(["--port", &port]);
        }
        command
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&self.log)
            .args(self.args.iter().filter(|a| *a != "--tls-port"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        let mut child = command.spawn().expect("starting redis-server");
        let log = self.log.clone();
        let mut exited = false;
        let ready = eventually(START_LIMIT, || {
            if loading && std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Loading")) {
                return true;
            }
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("Ready to accept")) {
                return true;
            }
            exited = child.try_wait().unwrap().is_some();
            exited
        });
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if exited || !ready {
            let _ = child.kill();
            let _ = child.wait();
            if text.contains("Address already in use") {
                return false;
            }
            panic!("redis-server did not start:\n{text}");
        }
        self.child = Some(child);
        true
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the server as Kubernetes would (SIGTERM) and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::kill(child.id(), libc::SIGTERM);
            let _ = child.wait();
        }
    }

    /// `redis-cli ARGS` against this server: its output, trimmed (what the shell loops the
    /// charts use compare).
    pub fn cli(&self, args: &[&str]) -> String {
        let port = self.port.to_string();
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port])
            .args(args)
            .output()
            .expect("running redis-cli");
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        text.trim().to_owned()
    }

    /// Makes a dump of `keys` keys in this server's directory (with a throwaway server),
    /// so a server started here with `--key-load-delay` answers -LOADING for a while.
    pub fn make_dataset(&self, keys: u32) {
        let mut maker = RedisServer::start(&["--enable-debug-command", "local"]);
        let keys = keys.to_string();
        assert_eq!(maker.cli(&["debug", "populate", &keys, "key", "100"]), "OK");
        assert_eq!(maker.cli(&["save"]), "OK");
        maker.stop();
        std::fs::copy(
            maker.dir.path().join("dump.rdb"),
            self.dir.path().join("dump.rdb"),
        )
        .unwrap();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The redis-server arguments that serve TLS with `files`.
pub fn tls_args(files: &TlsFiles) -> Vec<String> {
    vec![
        "--tls-port".into(),
        "--tls-cert-file".into(),
        path_str(&files.cert).into(),
        "--tls-key-file".into(),
        path_str(&files.key).into(),
        "--tls-ca-cert-file".into(),
        path_str(&files.ca).into(),
        "--tls-auth-clients".into(),
        "no".into(),
    ]
}
