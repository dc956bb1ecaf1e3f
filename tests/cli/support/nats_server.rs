//! A real nats-server on 127.0.0.1, for wait-for-nats: started on a free port (a new one
//! when the port was taken meanwhile), stopped by PID with SIGTERM, restartable on the same
//! port, its directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, kill, skip};

/// How the server is set up: the login it wants, TLS.
#[derive(Clone, Default)]
pub struct NatsConfig {
    pub user: Option<(String, String)>,
    pub token: Option<String>,
    /// Certificate and key files (PEM): the server then requires TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// `-D`: the log has a line per client connection, to count attempts by.
    pub debug: bool,
}

pub struct NatsServer {
    pub port: u16,
    config: NatsConfig,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

/// The nats-server binary, or None (after [`skip`]) when it is not installed.
pub fn binary() -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin"] {
        let path = Path::new(dir).join("nats-server");
        if path.exists() {
            return Some(path);
        }
    }
    skip("needs nats-server (Debian package nats-server)");
    None
}

impl NatsServer {
    /// A server on a free port, ready; None when nats-server is missing (skipped).
    pub fn start(config: NatsConfig) -> Option<NatsServer> {
        binary()?;
        for _ in 0..5 {
            let mut server = NatsServer::unstarted(config.clone(), free_port("127.0.0.1"));
            if server.try_start() {
                return Some(server);
            }
        }
        panic!("nats-server did not start on any of five free ports");
    }

    /// A server that will listen on `port` once [`NatsServer::restart`] is called: for a
    /// waiter that must start first. None when nats-server is missing.
    pub fn later(config: NatsConfig) -> Option<NatsServer> {
        binary()?;
        Some(NatsServer::unstarted(config, free_port("127.0.0.1")))
    }

    fn unstarted(config: NatsConfig, port: u16) -> NatsServer {
        NatsServer {
            port,
            config,
            dir: tempfile::tempdir().unwrap(),
            child: None,
            starts: 0,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port; panics when it cannot.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start again on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts and waits for `Server is ready`; false when the port was taken.
    fn try_start(&mut self) -> bool {
        self.stop();
        self.starts += 1;
        let log = self.dir.path().join(format!("nats-{}.log", self.starts));
        let mut command = Command::new(binary().unwrap());
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-l")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((user, password)) = &self.config.user {
            command.args(["--user", user, "--pass", password]);
        }
        if self.config.debug {
            command.arg("-D");
        }
        if let Some(token) = &self.config.token {
            command.args(["--auth", token]);
        }
        if let Some((cert, key)) = &self.config.tls {
            command
                .arg("--tls")
                .arg("--tlscert")
                .arg(cert)
                .arg("--tlskey")
                .arg(key);
        }
        let mut child = command.spawn().expect("spawning nats-server");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("Server is ready") {
                self.child = Some(child);
                return true;
            }
            if let Some(status) = child.try_wait().unwrap() {
                assert!(
                    text.contains("address already in use"),
                    "nats-server exited ({status}) before it was ready:\n{text}"
                );
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server was not ready within 20 s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the running server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("nats-{}.log", self.starts)))
            .unwrap_or_default()
    }

    /// SIGTERM by PID, then waits for the exit (SIGKILL after 10 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
