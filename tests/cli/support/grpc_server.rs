//! A real grpc.health.v1 server (Python grpcio with grpcio-health-checking, running
//! tests/servers/grpc_health_server.py) on 127.0.0.1, for wait-for-grpc: started on a port
//! it picks or one it is given, stopped by PID with SIGTERM, restarted on the same port;
//! its temporary directory goes with it.
//!
//! The interpreter is INITBOX_TEST_GRPC_PYTHON, else target/grpc-venv/bin/python (a venv
//! with the system's packages and grpcio-health-checking from PyPI), else /usr/bin/python3,
//! the first that can import both modules.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{eventually, free_port, skip};

const START_LIMIT: Duration = Duration::from_secs(20);

/// How a server is started.
#[derive(Clone, Default)]
pub struct GrpcOptions {
    /// Service `app` starts NOT_SERVING.
    pub app_not_serving: bool,
    /// No health service at all: every call answers UNIMPLEMENTED.
    pub no_health: bool,
    pub tls: bool,
}

pub struct GrpcServer {
    pub port: u16,
    child: Option<Child>,
    options: GrpcOptions,
    dir: tempfile::TempDir,
}

/// The interpreter that can run the server, found once; `None` after [`skip`] said why.
pub fn python() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/grpc-venv/bin/python");
        let candidates = std::env::var_os("INITBOX_TEST_GRPC_PYTHON")
            .map(PathBuf::from)
            .into_iter()
            .chain([venv, PathBuf::from("/usr/bin/python3")]);
        candidates.into_iter().find(|python| {
            Command::new(python)
                .args(["-c", "import grpc, grpc_health.v1.health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
    });
    if found.is_none() {
        skip(
            "needs Python grpcio and grpcio-health-checking (apt-get install python3-grpcio \
             python3-protobuf; python3 -m venv --system-site-packages target/grpc-venv; \
             target/grpc-venv/bin/pip install --no-deps grpcio-health-checking==1.51.1)",
        );
    }
    found.as_deref()
}

/// One server for the tests that only read from it (service `app` SERVING); `None` after
/// [`skip`] said why.
pub fn shared() -> Option<&'static GrpcServer> {
    static SHARED: OnceLock<Option<GrpcServer>> = OnceLock::new();
    SHARED
        .get_or_init(|| GrpcServer::start(GrpcOptions::default()))
        .as_ref()
}

impl GrpcServer {
    /// A server on a port of its choosing; `None` after [`skip`] said why.
    pub fn start(options: GrpcOptions) -> Option<GrpcServer> {
        python()?;
        let mut server = GrpcServer {
            port: 0,
            child: None,
            options,
            dir: tempfile::tempdir().unwrap(),
        };
        if server.options.tls {
            server.write_certificates();
        }
        server.launch(0);
        Some(server)
    }

    /// A server that starts later on `port` (taken from [`free_port`]), retried on another
    /// port while that one is taken.
    pub fn start_on(port: u16, options: GrpcOptions) -> Option<GrpcServer> {
        python()?;
        let mut server = GrpcServer {
            port,
            child: None,
            options,
            dir: tempfile::tempdir().unwrap(),
        };
        if server.options.tls {
            server.write_certificates();
        }
        server.launch(port);
        Some(server)
    }

    /// The CA that signed the TLS server's certificate (for 127.0.0.1 and localhost).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that signed nothing the server has.
    pub fn other_ca(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn write_certificates(&self) {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let ca_for = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
        };
        let ca = ca_for("initbox grpc test CA");
        let other = ca_for("initbox other CA");
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let dir = self.dir.path();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    }

    /// Starts the server on `port` (0: any) and waits for its port file. A taken port
    /// (exit 98) is retried on a fresh one, unless a fixed port was asked for by a restart.
    fn launch(&mut self, port: u16) {
        let python = python().expect("checked by start");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/grpc_health_server.py");
        let mut port = port;
        for _ in 0..5 {
            let portfile = self.dir.path().join("port");
            let _ = std::fs::remove_file(&portfile);
            let log = std::fs::File::create(self.dir.path().join("server.log")).unwrap();
            let mut command = Command::new(python);
            command
                .arg(&script)
                .arg(port.to_string())
                .arg("--portfile")
                .arg(&portfile)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            if self.options.app_not_serving {
                command.args(["--app", "NOT_SERVING"]);
            }
            if self.options.no_health {
                command.arg("--no-health");
            }
            if self.options.tls {
                let dir = self.dir.path();
                command
                    .arg("--tls")
                    .arg(dir.join("server.pem"))
                    .arg(dir.join("server.key"));
            }
            let mut child = command.spawn().expect("starting the gRPC health server");
            let deadline = Instant::now() + START_LIMIT;
            loop {
                if let Ok(text) = std::fs::read_to_string(&portfile)
                    && let Ok(bound) = text.trim().parse()
                {
                    self.port = bound;
                    self.child = Some(child);
                    return;
                }
                if let Some(status) = child.try_wait().unwrap() {
                    if status.code() == Some(98) {
                        break;
                    }
                    panic!(
                        "the gRPC health server exited with {status}:\n{}",
                        self.log()
                    );
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    panic!("the gRPC health server did not start:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            port = free_port("127.0.0.1");
        }
        panic!("no free port for the gRPC health server:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Sends `signal` (USR1: app NOT_SERVING, USR2: app SERVING) and waits until the
    /// server says it made the change.
    pub fn set_app_serving(&self, serving: bool) {
        let (signal, line) = if serving {
            (libc::SIGUSR2, "app -> SERVING")
        } else {
            (libc::SIGUSR1, "app -> NOT_SERVING")
        };
        let before = self.log().matches(line).count();
        super::kill(self.pid(), signal);
        assert!(
            eventually(START_LIMIT, || self.log().matches(line).count() > before),
            "the server did not switch: {}",
            self.log()
        );
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Stops the server with SIGTERM (its graceful stop) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::kill(child.id(), libc::SIGTERM);
            let deadline = Instant::now() + START_LIMIT;
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.wait();
        }
    }

    /// Stops the server and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port;
        self.launch(port);
        assert_eq!(self.port, port, "restarted on another port");
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        self.stop();
    }
}
