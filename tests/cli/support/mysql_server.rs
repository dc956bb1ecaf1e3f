//! A real MariaDB 10.11 server (Debian's mariadb-server) on a free loopback port, in a
//! temporary directory removed on drop, for the wait-for-mysql tests. Always
//! `--no-defaults` first (else /etc/mysql/my.cnf is read) and `--skip-name-resolve` (the
//! client is `127.0.0.1`, never looked up).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, free_port, path_str, skip};

/// install-db and start-up on a loaded 2-core machine.
const START_LIMIT: Duration = Duration::from_secs(60);

/// The accounts every server has, created by its init file: `app`/`app-pw` with every
/// privilege.
pub const USER: &str = "app";
pub const PASSWORD: &str = "app-pw";

pub struct MariaDb {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    args: Vec<String>,
}

/// True when MariaDB is installed; otherwise the test says so (failing under
/// INITBOX_TEST_STRICT) and should return.
#[must_use]
pub fn available() -> bool {
    let found = ["mariadbd", "mariadb-install-db", "mariadb"]
        .iter()
        .all(|tool| {
            Command::new("sh")
                .args([
                    "-c",
                    &format!("command -v {tool} || test -x /usr/sbin/{tool}"),
                ])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        });
    if !found {
        skip("needs MariaDB (Debian packages mariadb-server and mariadb-client)");
    }
    found
}

impl MariaDb {
    /// A server on a free port with these extra mariadbd arguments, ready for connections.
    pub fn start(args: &[&str]) -> MariaDb {
        let mut server = MariaDb::new(free_port("127.0.0.1"), args);
        for _ in 0..5 {
            if server.launch() {
                return server;
            }
            server.port = free_port("127.0.0.1");
        }
        panic!("mariadbd did not start on any of 5 free ports");
    }

    /// A data directory (install-db done) for a server on `port`, started later with
    /// [`MariaDb::launch`]. `init.sql` in its directory runs at start-up (before the server
    /// greets anyone); the test may append to it.
    pub fn new(port: u16, args: &[&str]) -> MariaDb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // A temporary directory of its own: in /tmp, two servers in PID namespaces of their
        // own can pick the same temporary table names and delete each other's.
        let tmp = dir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let output = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg(format!("--datadir={}", path_str(&data)))
            .arg(format!("--tmpdir={}", path_str(&tmp)))
            .output()
            .expect("running mariadb-install-db");
        assert!(
            output.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::fs::write(
            dir.path().join("init.sql"),
            format!(
                "CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';\n\
                 GRANT ALL ON *.* TO '{USER}'@'127.0.0.1';\n"
            ),
        )
        .unwrap();
        MariaDb {
            port,
            dir,
            child: None,
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts the server and waits for `ready for connections`; false when the port was
    /// taken meanwhile.
    pub fn launch(&mut self) -> bool {
        let log = self.path("error.log");
        let _ = std::fs::remove_file(&log);
        let mut child = Command::new("mariadbd")
            .args(["--no-defaults", "--user=root", "--bind-address=127.0.0.1"])
            .arg(format!("--datadir={}", path_str(&self.path("data"))))
            .arg(format!("--tmpdir={}", path_str(&self.path("tmp"))))
            .arg(format!("--port={}", self.port))
            .arg(format!("--socket={}", path_str(&self.path("mysqld.sock"))))
            .arg(format!("--pid-file={}", path_str(&self.path("mysqld.pid"))))
            .arg(format!("--log-error={}", path_str(&log)))
            .arg(format!("--init-file={}", path_str(&self.path("init.sql"))))
            .args([
                "--skip-log-bin",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=32M",
                "--innodb-log-file-size=16M",
                "--max-connections=20",
            ])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting mariadbd");
        let mut exited = false;
        let ready = eventually(START_LIMIT, || {
            if std::fs::read_to_string(&log).is_ok_and(|l| l.contains("ready for connections")) {
                return true;
            }
            exited = child.try_wait().unwrap().is_some();
            exited
        });
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if exited || !ready {
            let _ = child.kill();
            let _ = child.wait();
            if text.contains("Address already in use") {
                return false;
            }
            panic!("mariadbd did not start:\n{text}");
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

    /// Runs SQL as root over the unix socket (root authenticates by the OS user there).
    pub fn sql(&self, sql: &str) -> String {
        let output = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-N", "-S"])
            .arg(self.path("mysqld.sock"))
            .args(["-e", sql])
            .output()
            .expect("running mariadb");
        assert!(
            output.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// `mariadb-admin ping` over TCP with these arguments: its exit code, as the shell
    /// loops of the charts test it.
    pub fn admin_ping(&self, args: &[&str]) -> i32 {
        Command::new("mariadb-admin")
            .args(["--no-defaults", "--protocol=tcp", "-h127.0.0.1"])
            .arg(format!("-P{}", self.port))
            .args(["--connect-timeout=5"])
            .args(args)
            .arg("ping")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("running mariadb-admin")
            .code()
            .unwrap_or(-1)
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
