//! Real git servers for the git-clone tests: repositories made with the git CLI, `git
//! daemon` on a loopback port, and smart HTTP (`git http-backend` run as a CGI program by a
//! small server here, with optional basic auth), a proxy that stalls a transfer midway, and
//! certificates that are expired. Everything stays on 127.0.0.1.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use super::{eventually, free_port};

/// Runs git with a fixed identity and no user or system configuration.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "initbox test")
        .env("GIT_AUTHOR_EMAIL", "test@initbox.invalid")
        .env("GIT_COMMITTER_NAME", "initbox test")
        .env("GIT_COMMITTER_EMAIL", "test@initbox.invalid")
        .env_remove("GIT_SSL_CAINFO")
        .output()
        .expect("running git");
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository with what a checkout must reproduce: nested files, a symlink, an
/// executable, a branch, a lightweight and an annotated tag, and two commits on main.
pub struct TestRepo {
    pub path: PathBuf,
    /// The first commit (tags v1 and v1-annotated point here).
    pub first: String,
    /// main's head.
    pub main: String,
    /// The head of branch `feature`.
    pub feature: String,
}

impl TestRepo {
    /// Creates `NAME.git`-style repository `name` under `root`.
    pub fn create(root: &Path, name: &str) -> TestRepo {
        let path = root.join(name);
        std::fs::create_dir_all(&path).unwrap();
        git(&path, &["init", "-q", "-b", "main"]);
        std::fs::write(path.join("README.md"), "# app config\n").unwrap();
        std::fs::create_dir_all(path.join("conf/nested")).unwrap();
        std::fs::write(path.join("conf/app.conf"), "port = 8080\n").unwrap();
        std::fs::write(path.join("conf/nested/deep.txt"), "deep\n").unwrap();
        std::fs::write(path.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
        // Executable on disk too: `git add -A` below takes the mode from the file.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        git(&path, &["update-index", "--add", "--chmod=+x", "run.sh"]);
        std::os::unix::fs::symlink("conf/app.conf", path.join("current.conf")).unwrap();
        git(&path, &["add", "-A"]);
        git(&path, &["commit", "-q", "-m", "first"]);
        let first = git(&path, &["rev-parse", "HEAD"]);
        git(&path, &["tag", "v1"]);
        git(&path, &["tag", "-a", "v1-annotated", "-m", "release 1"]);
        std::fs::write(path.join("conf/app.conf"), "port = 9090\n").unwrap();
        git(&path, &["commit", "-q", "-am", "second"]);
        let main = git(&path, &["rev-parse", "HEAD"]);
        git(&path, &["checkout", "-q", "-b", "feature"]);
        std::fs::write(path.join("feature.txt"), "feature\n").unwrap();
        git(&path, &["add", "feature.txt"]);
        git(&path, &["commit", "-q", "-m", "feature"]);
        let feature = git(&path, &["rev-parse", "HEAD"]);
        git(&path, &["checkout", "-q", "main"]);
        TestRepo {
            path,
            first,
            main,
            feature,
        }
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.path.display())
    }
}

/// `git daemon` serving every repository under `base`.
pub struct GitDaemon {
    pub port: u16,
    child: Child,
}

impl GitDaemon {
    pub fn start(base: &Path) -> GitDaemon {
        Self::start_on(base, free_port("127.0.0.1"))
    }

    /// On a given port (for a server that appears later).
    pub fn start_on(base: &Path, port: u16) -> GitDaemon {
        Self::spawn(base, port, &format!("--base-path={}", base.display()))
    }

    /// A daemon with virtual hosts: `git://NAME/repo` is served from `base/NAME/repo`, by
    /// the host name the client asks for (`host=`), not the address it connected to.
    pub fn start_virtual_hosts(base: &Path) -> GitDaemon {
        let port = free_port("127.0.0.1");
        Self::spawn(
            base,
            port,
            &format!("--interpolated-path={}/%H%D", base.display()),
        )
    }

    fn spawn(base: &Path, port: u16, layout: &str) -> GitDaemon {
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
            ])
            .arg(format!("--port={port}"))
            .arg(layout)
            .arg(base)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon");
        let up = eventually(Duration::from_secs(20), || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(up, "git daemon did not start on port {port}");
        GitDaemon { port, child }
    }

    pub fn url(&self, name: &str) -> String {
        format!("git://127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Each request's path and Authorization header, as the server saw them.
pub type RequestLog = Arc<Mutex<Vec<(String, Option<String>)>>>;

/// Smart HTTP: `git http-backend` behind a CGI server on 127.0.0.1:0.
pub struct SmartHttp {
    pub port: u16,
    pub requests: RequestLog,
    /// The TCP connections accepted: requests on one connection kept alive count once.
    pub connections: Arc<AtomicUsize>,
    /// PEM of the CA of an HTTPS server.
    pub ca_pem: Option<String>,
}

impl SmartHttp {
    /// Serves the repositories under `root` over plain HTTP; with `auth`, only to that user
    /// and password.
    pub fn start(root: &Path, auth: Option<(&str, &str)>) -> SmartHttp {
        Self::serve(root, auth, None, Framing::default())
    }

    /// Plain HTTP, answers framed as `framing` says.
    pub fn start_framed(root: &Path, framing: Framing) -> SmartHttp {
        Self::serve(root, None, None, framing)
    }

    /// The same over HTTPS, with a certificate from a fresh CA (valid for 127.0.0.1).
    pub fn start_tls(root: &Path, auth: Option<(&str, &str)>) -> SmartHttp {
        let (config, ca_pem) = super::http_server::server_tls_config();
        let mut server = Self::serve(root, auth, Some(Arc::new(config)), Framing::default());
        server.ca_pem = Some(ca_pem);
        server
    }

    /// Over HTTPS with a certificate for 127.0.0.1 and localhost that expired in 2020.
    pub fn start_tls_expired(root: &Path) -> SmartHttp {
        let (config, ca_pem) = expired_tls_config();
        let mut server = Self::serve(root, None, Some(Arc::new(config)), Framing::default());
        server.ca_pem = Some(ca_pem);
        server
    }

    fn serve(
        root: &Path,
        auth: Option<(&str, &str)>,
        tls: Option<Arc<rustls::ServerConfig>>,
        framing: Framing,
    ) -> SmartHttp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let root = root.to_owned();
        let expected = auth.map(|(user, password)| {
            format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
        });
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let accepted = connections.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                accepted.fetch_add(1, Ordering::SeqCst);
                let (root, expected, seen) = (root.clone(), expected.clone(), seen.clone());
                let tls = tls.clone();
                thread::spawn(move || {
                    let _ = match tls {
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            let stream = rustls::StreamOwned::new(connection, stream);
                            serve_connection(stream, &root, expected.as_deref(), &seen, framing)
                        }
                        None => {
                            serve_connection(stream, &root, expected.as_deref(), &seen, framing)
                        }
                    };
                });
            }
        });
        SmartHttp {
            port,
            requests,
            connections,
            ca_pem: None,
        }
    }

    pub fn url(&self, name: &str) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}/{name}", self.port)
    }
}

/// How the smart HTTP server frames its answers, and what it does with the connection
/// after each.
#[derive(Clone, Copy, Default)]
pub struct Framing {
    /// `Transfer-Encoding: chunked`, in chunks of 1000 bytes (one with an extension),
    /// instead of a `Content-Length`.
    pub chunked: bool,
    /// Closes the connection after each answer without saying so (no `Connection:
    /// close`), as a server whose keep-alive timeout ran out between two requests does.
    pub close_after_each: bool,
}

/// Serves the requests of one connection, kept alive as HTTP/1.1 keeps it until the
/// client closes it (or an answer closes it).
fn serve_connection(
    stream: impl Read + Write,
    root: &Path,
    expected_auth: Option<&str>,
    seen: &Mutex<Vec<(String, Option<String>)>>,
    framing: Framing,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream);
    while serve_cgi(&mut reader, root, expected_auth, seen, framing)? {}
    Ok(())
}

/// One request and its answer; `false` when the connection is over (the client closed it,
/// or the answer said `Connection: close`).
fn serve_cgi<S: Read + Write>(
    reader: &mut BufReader<S>,
    root: &Path,
    expected_auth: Option<&str>,
    seen: &Mutex<Vec<(String, Option<String>)>>,
    framing: Framing,
) -> std::io::Result<bool> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Ok(false);
    }
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or("GET").to_owned();
    let mut target = parts.next().unwrap_or("/").to_owned();
    // The absolute form a client sends to a proxy (`GET http://host/path`), which every
    // server must accept too: this one then stands in for the proxy and the server.
    if let Some(rest) = target.strip_prefix("http://") {
        target = rest[rest.find('/').unwrap_or(rest.len())..].to_owned();
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let authorization = header("authorization");
    let body = if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(reader)?
    } else {
        let length: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        body
    };
    let writer = reader.get_mut();
    seen.lock()
        .unwrap()
        .push((target.clone(), authorization.clone()));
    if let Some(expected) = expected_auth
        && authorization.as_deref() != Some(expected)
    {
        let body = "authentication required\n";
        write!(
            writer,
            "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"git\"\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        writer.flush()?;
        return Ok(false);
    }
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut command = Command::new(format!(
        "{}/git-http-backend",
        String::from_utf8_lossy(&Command::new("git").arg("--exec-path").output()?.stdout).trim()
    ));
    command
        .env_clear()
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "safe.directory")
        .env("GIT_CONFIG_VALUE_0", "*")
        .env("REQUEST_METHOD", &method)
        .env("PATH_INFO", path)
        .env("QUERY_STRING", query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if let Some(content_type) = header("content-type") {
        command.env("CONTENT_TYPE", content_type);
    }
    if let Some(encoding) = header("content-encoding") {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    if let Some(protocol) = header("git-protocol") {
        command.env("GIT_PROTOCOL", protocol);
    }
    if expected_auth.is_some() {
        command.env("REMOTE_USER", "git");
    }
    let mut child = command.spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let feeder = thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let mut output = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut output)?;
    let _ = feeder.join();
    child.wait()?;
    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| (p, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|p| (p, 2)));
    let Some((at, gap)) = split else {
        write!(
            writer,
            "HTTP/1.1 500 CGI error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        writer.flush()?;
        return Ok(false);
    };
    let cgi_headers = String::from_utf8_lossy(&output[..at]).into_owned();
    let cgi_body = &output[at + gap..];
    let mut status = "200 OK".to_owned();
    let mut response = String::new();
    for line in cgi_headers.lines() {
        if let Some(value) = line.strip_prefix("Status:") {
            status = value.trim().to_owned();
        } else if !line.trim().is_empty() {
            response.push_str(line.trim_end());
            response.push_str("\r\n");
        }
    }
    if framing.chunked {
        write!(
            writer,
            "HTTP/1.1 {status}\r\n{response}Transfer-Encoding: chunked\r\n\r\n"
        )?;
        for (number, chunk) in cgi_body.chunks(1000).enumerate() {
            let extension = if number == 1 { ";name=value" } else { "" };
            write!(writer, "{:x}{extension}\r\n", chunk.len())?;
            writer.write_all(chunk)?;
            writer.write_all(b"\r\n")?;
        }
        writer.write_all(b"0\r\n\r\n")?;
    } else {
        write!(
            writer,
            "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\n\r\n",
            cgi_body.len()
        )?;
        writer.write_all(cgi_body)?;
    }
    writer.flush()?;
    Ok(!framing.close_after_each)
}

fn read_chunked(reader: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size_line = String::new();
        reader.read_line(&mut size_line)?;
        let size = usize::from_str_radix(size_line.trim().split(';').next().unwrap_or("0"), 16)
            .unwrap_or(0);
        if size == 0 {
            let mut trailer = String::new();
            reader.read_line(&mut trailer)?;
            return Ok(body);
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Every file under `dir` (not `.git`) with its kind, mode and content or link target:
/// what must be identical between initbox's checkout and git's.
pub fn tree_listing(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let relative = path.strip_prefix(dir).unwrap().display().to_string();
            if relative == ".git" {
                continue;
            }
            let metadata = std::fs::symlink_metadata(&path).unwrap();
            if metadata.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.push(format!("link {relative} -> {}", target.display()));
            } else if metadata.is_dir() {
                out.push(format!("dir {relative}"));
                pending.push(path);
            } else {
                let mode = metadata.permissions().mode() & 0o777;
                let content = std::fs::read(&path).unwrap();
                out.push(format!(
                    "file {relative} {mode:o} {}",
                    String::from_utf8_lossy(&content).escape_debug()
                ));
            }
        }
    }
    out.sort();
    out
}

fn expired_tls_config() -> (rustls::ServerConfig, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap(),
        )
        .unwrap();
    (config, ca.pem())
}

/// A TCP proxy to a git server that passes the first `limit` bytes the server sends on
/// each connection and then stops passing anything, keeping both connections open: a server
/// that stalls mid-transfer (the client sees no error, only silence).
pub struct StallingProxy {
    pub port: u16,
    /// Bytes passed to the client so far, over all connections.
    pub passed: Arc<Mutex<usize>>,
    /// The stalled connections, held open for as long as the proxy lives.
    _stalled: Arc<Mutex<Vec<TcpStream>>>,
}

impl StallingProxy {
    pub fn start(upstream: u16, limit: usize) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let passed = Arc::new(Mutex::new(0));
        let count = passed.clone();
        let stalled = Arc::new(Mutex::new(Vec::new()));
        let held = stalled.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { break };
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue;
                };
                let (mut client_in, mut server_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                thread::spawn(move || {
                    let _ = std::io::copy(&mut client_in, &mut server_out);
                });
                let (count, held) = (count.clone(), held.clone());
                thread::spawn(move || {
                    let (mut client, mut server) = (client, server);
                    let mut buffer = [0u8; 4096];
                    let mut sent = 0;
                    while sent < limit {
                        let Ok(n) = server.read(&mut buffer[..(limit - sent).min(4096)]) else {
                            return;
                        };
                        if n == 0 || client.write_all(&buffer[..n]).is_err() {
                            return;
                        }
                        sent += n;
                        *count.lock().unwrap() += n;
                    }
                    // Stalled: both ends stay open, and nothing more is passed.
                    held.lock().unwrap().extend([client, server]);
                });
            }
        });
        StallingProxy {
            port,
            passed,
            _stalled: stalled,
        }
    }
}

/// A repository whose pack cannot be compressed below `size` bytes (one file of
/// pseudo-random content), for transfers that must take many reads.
pub fn incompressible_repo(root: &Path, name: &str, size: usize) -> PathBuf {
    let path = root.join(name);
    std::fs::create_dir_all(&path).unwrap();
    git(&path, &["init", "-q", "-b", "main"]);
    let mut rng = fastrand::Rng::with_seed(12);
    let data: Vec<u8> = (0..size).map(|_| rng.u8(..)).collect();
    std::fs::write(path.join("blob.bin"), data).unwrap();
    git(&path, &["add", "-A"]);
    git(&path, &["commit", "-q", "-m", "big"]);
    path
}
