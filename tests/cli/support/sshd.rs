//! OpenSSH's sshd for the git-clone-over-ssh tests: its own host keys (ed25519 and ecdsa),
//! client keys of each kind (ed25519, a passphrase-protected ed25519, ecdsa, rsa, and one
//! the server does not know), bare repositories owned by a dedicated user, on a loopback
//! port the kernel picked. No user or system ssh configuration is read.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::Duration;

use super::git_server::{TestRepo, git};
use super::{eventually, free_port, is_root, skip};

/// The unix user git-upload-pack runs as: made once per machine, kept (idempotent).
pub const USER: &str = "initboxgit";

/// The passphrase of the `ed25519_enc` key.
pub const PASSPHRASE: &str = "correct-horse-battery-staple-7";

const SSHD: &str = "/usr/sbin/sshd";

/// Client keys: the server accepts all but `stranger`.
pub const KEYS: [&str; 5] = ["ed25519", "ed25519_enc", "ecdsa", "rsa", "stranger"];

pub struct Sshd {
    pub port: u16,
    pub dir: tempfile::TempDir,
    /// The repository every test clones: main, feature, tags v1 and v1-annotated.
    pub repo: TestRepo,
    child: Option<Child>,
}

/// sshd and root (for the user) are there; else the test says why (failing under
/// INITBOX_TEST_STRICT) and should return.
pub fn available() -> bool {
    if !Path::new(SSHD).exists() {
        skip("needs OpenSSH's sshd (Debian package openssh-server)");
        return false;
    }
    if !is_root() {
        skip("needs root to add the ssh test user");
        return false;
    }
    true
}

static SHARED: Mutex<Option<Sshd>> = Mutex::new(None);
static SHARED_STARTED: Once = Once::new();

/// The server the tests that only clone share: started by the first that asks, stopped
/// (and its directory removed) when the test binary exits. Returns its port and directory.
pub fn shared() -> Option<SharedSshd> {
    if !available() {
        return None;
    }
    SHARED_STARTED.call_once(|| {
        let server = Sshd::start();
        *SHARED.lock().unwrap() = Some(server);
        stop_shared_at_exit();
    });
    let guard = SHARED.lock().unwrap();
    let server = guard.as_ref().expect("the shared sshd");
    Some(SharedSshd {
        port: server.port,
        dir: server.dir.path().to_owned(),
        repo_main: server.repo.main.clone(),
        repo_feature: server.repo.feature.clone(),
    })
}

/// What a test needs of the shared server (the server itself stays behind its lock).
#[derive(Clone)]
pub struct SharedSshd {
    pub port: u16,
    pub dir: PathBuf,
    pub repo_main: String,
    pub repo_feature: String,
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

/// Files of a server, by its directory: the same for the shared server and a test's own.
pub trait SshFiles {
    fn port(&self) -> u16;
    fn dir(&self) -> &Path;

    /// A client key file.
    fn key(&self, name: &str) -> PathBuf {
        self.dir().join("keys").join(name)
    }

    /// A host public key line (`ssh-ed25519 AAAA…`) of `kind` (ed25519, ecdsa).
    fn host_key(&self, kind: &str) -> String {
        let text = std::fs::read_to_string(self.dir().join(format!("host_{kind}.pub"))).unwrap();
        text.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// A known_hosts line for this server holding `key_line`.
    fn known_hosts_line(&self, key_line: &str) -> String {
        format!("[127.0.0.1]:{} {key_line}\n", self.port())
    }

    /// Writes `text` as a known_hosts file at `path`, hashed (`|1|salt|hash`, as
    /// `ssh-keyscan -H` writes) when asked.
    fn write_known_hosts(&self, path: &Path, text: &str, hashed: bool) -> PathBuf {
        std::fs::write(path, text).unwrap();
        if hashed {
            let status = Command::new("ssh-keygen")
                .args(["-q", "-H", "-f"])
                .arg(path)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("ssh-keygen -H");
            assert!(status.success());
            let hashed_text = std::fs::read_to_string(path).unwrap();
            assert!(
                hashed_text.contains("|1|") && !hashed_text.contains("[127.0.0.1]"),
                "{hashed_text}"
            );
        }
        path.to_owned()
    }

    /// ssh:// URL of a repository under the server's `srv/`.
    fn url(&self, name: &str) -> String {
        format!(
            "ssh://{USER}@127.0.0.1:{}{}",
            self.port(),
            self.dir().join("srv").join(name).display()
        )
    }

    /// The same repository in scp-like syntax (`user@host:path`), which has no port: it
    /// reaches a server on port 22 (see [`Sshd::config_on_port_22`]).
    fn scp_url(&self, name: &str) -> String {
        format!(
            "{USER}@127.0.0.1:{}",
            self.dir().join("srv").join(name).display()
        )
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir().join("sshd.log")).unwrap_or_default()
    }
}

impl SshFiles for SharedSshd {
    fn port(&self) -> u16 {
        self.port
    }
    fn dir(&self) -> &Path {
        &self.dir
    }
}

impl SshFiles for Sshd {
    fn port(&self) -> u16 {
        self.port
    }
    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Sshd {
    /// A server listening on a fresh port (another one when the port was taken meanwhile).
    pub fn start() -> Sshd {
        let mut server = Sshd::prepared(free_port("127.0.0.1"));
        for _ in 0..5 {
            if server.listen() {
                return server;
            }
            server.port = free_port("127.0.0.1");
            server.write_config();
        }
        panic!(
            "sshd did not start on any of five free ports:\n{}",
            server.log()
        );
    }

    /// Keys, repositories and configuration for a server on `port`, not started yet (for a
    /// clone that must begin before the server is there): start it with [`Sshd::listen`].
    pub fn prepared(port: u16) -> Sshd {
        ensure_user();
        std::fs::create_dir_all("/run/sshd").unwrap();
        let dir = tempfile::Builder::new()
            .prefix("sshd")
            .tempdir_in("/tmp")
            .unwrap();
        use std::os::unix::fs::PermissionsExt;
        // The user must reach the repositories through it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = dir.path();
        for kind in ["ed25519", "ecdsa"] {
            keygen(&d.join(format!("host_{kind}")), kind, "");
        }
        std::fs::create_dir_all(d.join("keys")).unwrap();
        let mut authorized = String::new();
        for name in KEYS {
            let (kind, passphrase) = match name {
                "ed25519_enc" => ("ed25519", PASSPHRASE),
                "stranger" => ("ed25519", ""),
                other => (other, ""),
            };
            let file = d.join("keys").join(name);
            keygen(&file, kind, passphrase);
            if name != "stranger" {
                authorized.push_str(&std::fs::read_to_string(file.with_extension("pub")).unwrap());
            }
        }
        std::fs::write(d.join("authorized_keys"), authorized).unwrap();
        std::fs::write(d.join("passphrase"), format!("{PASSPHRASE}\n")).unwrap();
        let repo = TestRepo::create(&d.join("work"), "app");
        std::fs::create_dir_all(d.join("srv")).unwrap();
        git(
            d,
            &[
                "clone",
                "-q",
                "--bare",
                repo.path.to_str().unwrap(),
                d.join("srv/app.git").to_str().unwrap(),
            ],
        );
        // git-upload-pack refuses a repository of another owner ("dubious ownership").
        let status = Command::new("chown")
            .args(["-R", &format!("{USER}:{USER}")])
            .arg(d.join("srv"))
            .status()
            .unwrap();
        assert!(status.success());
        let server = Sshd {
            port,
            dir,
            repo,
            child: None,
        };
        server.write_config();
        server
    }

    fn write_config(&self) {
        let config = self.config(self.port, "sshd.pid");
        std::fs::write(self.dir.path().join("sshd_config"), config).unwrap();
    }

    /// A configuration for port 22 (for a network namespace of a test's own, where the
    /// port is free), its PID file `sshd22.pid`: scp-like URLs have no port.
    pub fn config_on_port_22(&self) -> PathBuf {
        let path = self.dir.path().join("sshd22_config");
        std::fs::write(&path, self.config(22, "sshd22.pid")).unwrap();
        path
    }

    fn config(&self, port: u16, pid_file: &str) -> String {
        let d = self.dir.path();
        format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_ed25519\nHostKey {d}/host_ecdsa\n\
             PidFile {d}/{pid_file}\nAuthorizedKeysFile {d}/authorized_keys\nAllowUsers {USER}\n\
             PermitRootLogin no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PubkeyAuthentication yes\nUsePAM no\nStrictModes no\nAcceptEnv GIT_PROTOCOL\n\
             LogLevel VERBOSE\n",
            d = d.display()
        )
    }

    /// Starts sshd on its port; false when the port was taken ("address in use").
    pub fn listen(&mut self) -> bool {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join("sshd.log")).unwrap();
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting sshd");
        let ready = format!("Server listening on 127.0.0.1 port {}.", self.port);
        let mut exited = false;
        eventually(Duration::from_secs(20), || {
            exited = child.try_wait().ok().flatten().is_some();
            exited || self.log().contains(&ready)
        });
        if self.log().contains(&ready) {
            self.child = Some(child);
            return true;
        }
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            self.log().contains("Address already in use"),
            "sshd did not start:\n{}",
            self.log()
        );
        false
    }

    /// What the server logged so far (which key it accepted, why it refused).
    pub fn log(&self) -> String {
        SshFiles::log(self)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Sessions are processes of their own that outlive the listener: end them too.
            for pid in super::children(child.id()) {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .stderr(Stdio::null())
                    .status();
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The test user: not locked (`*`, not useradd's `!`, which sshd without PAM refuses),
/// shell /bin/sh (sshd runs the command through it). Several test binaries may race.
fn ensure_user() {
    let exists = || {
        Command::new("id")
            .arg(USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !exists() {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--home-dir",
                "/",
                "--shell",
                "/bin/sh",
                USER,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        assert!(exists(), "cannot add user {USER}");
    }
    let status = Command::new("usermod")
        .args(["-p", "*", USER])
        .status()
        .expect("usermod");
    assert!(status.success());
}

fn keygen(file: &Path, kind: &str, passphrase: &str) {
    let mut command = Command::new("ssh-keygen");
    command.args([
        "-q",
        "-t",
        kind,
        "-N",
        passphrase,
        "-C",
        "initbox-test",
        "-f",
    ]);
    command.arg(file);
    if kind == "rsa" {
        command.args(["-b", "2048"]);
    }
    let status = command
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ssh-keygen");
    assert!(status.success(), "ssh-keygen -t {kind}");
}
