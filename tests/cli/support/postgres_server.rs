//! A real PostgreSQL 15 for the wait-for-postgres tests: a cluster in a temporary
//! directory, on a free port of 127.0.0.1, run as the `postgres` user (the server refuses
//! root), stopped by PID with SIGINT (fast shutdown) and removed on drop.
//!
//! initdb runs once per test binary into a template; each cluster is a copy of it, so a
//! test that needs its own server pays ~0.1 s, not initdb's ~0.6 s.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::free_port;

pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The superuser's password in every cluster (scram-sha-256 over TCP).
pub const SUPER_PASSWORD: &str = "super-Pw-7731";

/// The `postgres` account's uid and gid, or why the server cannot run here.
fn postgres_ids() -> Result<(u32, u32), String> {
    if !Path::new(BIN).join("postgres").exists() {
        return Err(format!(
            "needs PostgreSQL 15 in {BIN} (Debian package postgresql-15)"
        ));
    }
    if !super::is_root() {
        return Err("needs root to run PostgreSQL as the postgres user".into());
    }
    let passwd = fs::read_to_string("/etc/passwd").map_err(|e| e.to_string())?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres"))
                .then(|| Some((fields.get(2)?.parse().ok()?, fields.get(3)?.parse().ok()?)))
                .flatten()
        })
        .ok_or_else(|| "needs the postgres user (Debian package postgresql-15)".into())
}

/// A PostgreSQL program run as the postgres user, with a clean environment.
fn as_postgres(program: &str) -> Command {
    as_postgres_run(&Path::new(BIN).join(program))
}

fn as_postgres_run(program: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "env",
            "-i",
            "PATH=/usr/bin:/bin",
            "LANG=C.UTF-8",
        ])
        .arg(program);
    command
}

/// A directory the postgres user owns, removed on drop.
fn owned_dir() -> tempfile::TempDir {
    let (uid, gid) = postgres_ids().unwrap();
    let dir = tempfile::Builder::new()
        .prefix("initbox-pg")
        .tempdir()
        .unwrap();
    chown(dir.path(), Some(uid), Some(gid)).unwrap();
    stop_leftovers_at_exit();
    DIRECTORIES.lock().unwrap().push(dir.path().to_owned());
    dir
}

/// The data directory initdb made once, copied for every cluster.
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, data) = TEMPLATE.get_or_init(|| {
        let dir = owned_dir();
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, format!("{SUPER_PASSWORD}\n")).unwrap();
        let (uid, gid) = postgres_ids().unwrap();
        chown(&pwfile, Some(uid), Some(gid)).unwrap();
        let data = dir.path().join("data");
        let output = as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-N", "-E", "UTF8", "--locale=C.UTF-8"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("running initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        (dir, data)
    });
    data
}

/// The servers started by the tests and their directories, stopped and removed when the
/// test binary exits even when no destructor runs (the template and the shared servers
/// live in statics).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static DIRECTORIES: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

#[allow(unsafe_code)]
fn stop_leftovers_at_exit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn stop_all() {
        if let Ok(pids) = RUNNING.lock() {
            for &pid in pids.iter() {
                // SAFETY: kill(2) and waitpid(2) take plain integers and a null pointer.
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGINT);
                    libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
                }
            }
        }
        if let Ok(directories) = DIRECTORIES.lock() {
            for directory in directories.iter() {
                let _ = fs::remove_dir_all(directory);
            }
        }
    }
    // SAFETY: registers a plain function with no captured state.
    ONCE.call_once(|| unsafe {
        libc::atexit(stop_all);
    });
}

/// One PostgreSQL cluster: its directory, port and (when running) process.
pub struct PgServer {
    dir: tempfile::TempDir,
    pub port: u16,
    /// Extra `-c name=value` settings of every start.
    settings: Vec<String>,
    child: Option<Child>,
}

impl PgServer {
    /// A new cluster (not started), or None after `skip` when PostgreSQL cannot run here.
    pub fn new() -> Option<PgServer> {
        if let Err(why) = postgres_ids() {
            super::skip(&why);
            return None;
        }
        let template = template();
        let dir = owned_dir();
        let status = as_postgres_run(Path::new("/bin/cp"))
            .arg("-a")
            .arg(template)
            .arg(dir.path().join("data"))
            .status()
            .unwrap();
        assert!(status.success(), "copying the template cluster");
        let sock = dir.path().join("sock");
        fs::create_dir(&sock).unwrap();
        fs::set_permissions(&sock, fs::Permissions::from_mode(0o700)).unwrap();
        let (uid, gid) = postgres_ids().unwrap();
        chown(&sock, Some(uid), Some(gid)).unwrap();
        Some(PgServer {
            dir,
            port: free_port("127.0.0.1"),
            settings: vec!["fsync=off".into()],
            child: None,
        })
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A setting for every later start (`max_connections=2`).
    pub fn set(&mut self, setting: &str) -> &mut Self {
        self.settings.push(setting.to_owned());
        self
    }

    /// Writes a file into the data directory as the postgres user would own it.
    pub fn write_data_file(&self, name: &str, contents: &str, mode: u32) {
        let path = self.data().join(name);
        fs::write(&path, contents).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        let (uid, gid) = postgres_ids().unwrap();
        chown(&path, Some(uid), Some(gid)).unwrap();
    }

    /// Starts the server and returns at once (a waiter may already be running).
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        let log = fs::File::create(self.log_path()).unwrap();
        let mut command = as_postgres("postgres");
        command
            .arg("-D")
            .arg(self.data())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path().join("sock"))
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "logging_collector=off",
            ]);
        for setting in &self.settings {
            command.args(["-c", setting]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting postgres");
        stop_leftovers_at_exit();
        RUNNING.lock().unwrap().push(child.id());
        self.child = Some(child);
    }

    /// Starts the server and waits until it accepts connections; a port taken meanwhile
    /// by another process means a new port.
    pub fn start(&mut self) -> &mut Self {
        for _ in 0..5 {
            self.spawn();
            if self.wait_ready() {
                return self;
            }
            self.port = free_port("127.0.0.1");
        }
        panic!("postgres did not start:\n{}", self.log());
    }

    /// Waits for the log line of a server that serves; false when the port was taken.
    pub fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let log = self.log();
            if log.contains("database system is ready to accept") {
                return true;
            }
            let child = self.child.as_mut().expect("the server was started");
            if child.try_wait().unwrap().is_some() {
                self.forget_child();
                if log.contains("Address already in use") {
                    return false;
                }
                panic!("postgres exited:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("postgres not ready after 30 s:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is running").id()
    }

    /// Fast shutdown (SIGINT), waiting for the process to end.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            super::kill(child.id(), libc::SIGINT);
            let _ = child.wait();
            RUNNING.lock().unwrap().retain(|&pid| pid != child.id());
        }
    }

    /// Stop and start again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
        assert!(self.wait_ready(), "the port was taken during a restart");
    }

    fn forget_child(&mut self) {
        if let Some(child) = self.child.take() {
            RUNNING.lock().unwrap().retain(|&pid| pid != child.id());
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs SQL as the superuser over the Unix socket (trust); panics on an error.
    pub fn sql(&self, sql: &str) -> String {
        let output = self.psql(sql).output().expect("running psql");
        assert!(
            output.status.success(),
            "psql {sql:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// psql as the superuser over the Unix socket, to run or to hold a connection open.
    pub fn psql(&self, sql: &str) -> Command {
        let mut command = Command::new(Path::new(BIN).join("psql"));
        command
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path().join("sock"))
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        command
    }

    /// Replaces pg_hba.conf and reloads it (SIGHUP), waiting until the server has read it.
    pub fn hba(&self, lines: &str) {
        self.write_data_file("pg_hba.conf", lines, 0o600);
        let reloads = self.log().matches("reloading configuration files").count();
        super::kill(self.pid(), libc::SIGHUP);
        assert!(
            super::eventually(Duration::from_secs(10), || {
                self.log().matches("reloading configuration files").count() > reloads
            }),
            "postgres did not reload pg_hba.conf"
        );
    }

    /// The password of roles made by the tests.
    pub fn create_role(&self, name: &str, password: &str, md5: bool) {
        let encryption = if md5 { "md5" } else { "scram-sha-256" };
        self.sql(&format!(
            "SET password_encryption = '{encryption}'; CREATE ROLE {name} LOGIN PASSWORD '{password}'"
        ));
    }

    /// Turns TLS on with a certificate for 127.0.0.1 and localhost signed by a new CA;
    /// returns the CA's PEM. Takes effect at the next start.
    pub fn enable_tls(&mut self) -> String {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "initbox postgres test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        self.write_data_file("server.crt", &cert.pem(), 0o644);
        self.write_data_file("server.key", &key.serialize_pem(), 0o600);
        self.set("ssl=on");
        ca.pem()
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
