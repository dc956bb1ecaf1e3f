//! The Kubernetes examples of `examples/kubernetes`, run for real with `podman kube play` and
//! the image `images/Containerfile` builds: what each example promises a cluster would do
//! (init containers run in order, the application container starts only after every one of
//! them succeeded, a failing one blocks it and its exit code is reported, the files land in
//! the shared volume) is checked on real containers, not on a reading of the YAML.
//!
//! Every test has its own podman storage and configuration (in a temp dir) and its own network
//! namespace: every podman command runs inside it, so nothing can reach another address, not
//! even a mistaken image pull. The names an example uses resolve to 127.0.0.1 through the
//! containers' hosts file, and the servers it talks to (python3, `git http-backend`) listen on
//! that namespace's loopback.
//!
//! Needs root, podman, buildah, runc, nsenter and ip (python3, git and sysctl for some tests),
//! and the static binary (`images/build.sh`) named by INITBOX_STATIC_BINARY.
//!
//! Podman 4.3 (Debian 12) is not a kubelet. Where it differs, the fixture or a patch bridges the gap, and
//! only there; each patch must match exactly once, so an example that changes is noticed:
//! - no catatonit for the pod's infra container: an infra image made of initbox `sleep`;
//! - the pod's restartPolicy (default Always) is applied to init containers, so a succeeded
//!   one would restart for ever: every pod gets `restartPolicy: Never`;
//! - init containers are deleted once they ran: the annotation
//!   `io.podman.annotations.init.container.type: always` keeps them for inspect and logs;
//! - hostAliases reach only the infra container (with host or no networking): the names go
//!   into the base hosts file of every container instead;
//! - `--network none` gives no resolv.conf at all: tests that resolve names run with
//!   `hostNetwork: true` in the test's namespace, with resolv.conf naming 127.0.0.1, where
//!   nothing answers;
//! - the pod securityContext (sysctls, runAsUser, fsGroup) is ignored: the ping test sets the
//!   example's sysctl on the namespace the pod runs in, as the kubelet would on the pod's;
//! - a `containerPort` is refused without bridge networking: `ports` are removed (they only
//!   document the port in Kubernetes);
//! - the Downward API knows metadata.name, uid, labels and annotations only: other fieldRefs
//!   become literal values;
//! - a Secret volume without `optional:` crashes podman; a Secret document is stored, but
//!   its volume gets `data` still base64-encoded and no `stringData` at all: the fixture
//!   creates each Secret itself, as a podman secret holding the values as they are;
//! - there are no Services, hence no `*_SERVICE_HOST` variables: a test adds them;
//! - a Deployment becomes the one pod NAME-pod-0, and the init-container annotation is read
//!   from the Deployment's own metadata, not from its template's;
//! - `podman exec` and `podman cp` of a hostNetwork container join no network namespace:
//!   they run in the test's namespace like every other podman command here;
//! - `kube play` holds the pod's lock while an init container runs: a pod is removed only
//!   once `kube play` has returned (or was killed).

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::git_server::git;
use crate::support::{eventually, need_root, skip, static_binary};

/// The image every example runs initbox from, built from images/Containerfile.
const INITBOX_IMAGE: &str = "ghcr.io/initbox/initbox:0.1";
/// The pod's infra container: podman's own pause image needs catatonit, which is not here.
const PAUSE_IMAGE: &str = "localhost/initbox-test/pause:1";
/// `kube play` returns once the init containers finished; a hang is a failure.
const PLAY_LIMIT: Duration = Duration::from_secs(120);
/// Any other podman, buildah or ip command.
const COMMAND_LIMIT: Duration = Duration::from_secs(60);
/// Containers keep their init containers for inspection (podman deletes them otherwise).
const KEEP_INIT_CONTAINERS: &str = "io.podman.annotations.init.container.type: always";

/// An application image the examples name, as a stand-in: the binary, sleeping for an hour
/// (also at /app/server, the entrypoint hand-off's server).
const STAND_IN: &str = "FROM scratch\n\
COPY initbox /initbox\n\
COPY initbox /app/server\n\
USER 65532:65532\n\
ENTRYPOINT [\"/initbox\", \"sleep\", \"1h\"]\n";

const PAUSE: &str = "FROM scratch\n\
COPY initbox /initbox\n\
ENTRYPOINT [\"/initbox\", \"sleep\", \"1000000h\"]\n";

static NEXT_NAMESPACE: AtomicUsize = AtomicUsize::new(0);

/// The servers of the examples, run by python3 inside the test's network namespace: static
/// files, git smart HTTP (`git http-backend`, optionally behind a token), a registration
/// endpoint and plain TCP listeners; every request goes to a JSON-lines log.
const SERVER_PY: &str = r#"
import base64, http.server, json, os, re, socket, socketserver, ssl, subprocess, sys, threading

config = json.load(open(sys.argv[1]))
log_lock = threading.Lock()

def record(entry):
    with log_lock, open(config["log"], "a") as log:
        log.write(json.dumps(entry) + "\n")

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def reply(self, status, body, content_type="text/plain", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        body = self.body() if self.command == "POST" else b""
        path = self.path.split("?", 1)[0]
        is_git = re.match(r"^/.+?\.git/", path) is not None
        record({"method": self.command, "path": self.path, "port": self.server.server_address[1],
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": "" if is_git else body.decode("utf-8", "replace")})
        if is_git:
            return self.git(path, body)
        if self.command == "POST" and path == "/register" and "register_reply" in config:
            return self.reply(200, config["register_reply"].encode(), "application/json")
        static = os.path.realpath(config["static"])
        file = os.path.realpath(os.path.join(static, path.lstrip("/")))
        if file.startswith(static + "/") and os.path.isfile(file):
            return self.reply(200, open(file, "rb").read(), "text/html")
        return self.reply(404, b"not found\n")

    def git(self, path, body):
        token = config.get("git_token")
        if token is not None:
            auth = self.headers.get("Authorization", "")
            given = base64.b64decode(auth[6:]).decode().split(":", 1)[-1] if auth.startswith("Basic ") else None
            if given != token:
                return self.reply(401, b"unauthorized\n", extra=[("WWW-Authenticate", 'Basic realm="git"')])
        env = {"GIT_PROJECT_ROOT": config["git_root"], "GIT_HTTP_EXPORT_ALL": "1",
               "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_COUNT": "1",
               "GIT_CONFIG_KEY_0": "safe.directory", "GIT_CONFIG_VALUE_0": "*",
               "REQUEST_METHOD": self.command, "PATH_INFO": path,
               "QUERY_STRING": self.path.split("?", 1)[1] if "?" in self.path else "",
               "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": "127.0.0.1",
               "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        for header, variable in [("Content-Type", "CONTENT_TYPE"), ("Content-Encoding", "HTTP_CONTENT_ENCODING"),
                                 ("Git-Protocol", "GIT_PROTOCOL")]:
            if self.headers.get(header):
                env[variable] = self.headers[header]
        if token is not None:
            env["REMOTE_USER"] = "git"
        out = subprocess.run([config["http_backend"]], input=body, env=env, capture_output=True).stdout
        separator = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, payload = out.partition(separator)
        status, headers = 200, []
        for line in head.decode().splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name.strip():
                headers.append((name.strip(), value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_HEAD = handle_any

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

def serve_tcp(port):
    listener = socket.create_server(("127.0.0.1", port))
    def accept():
        while True:
            connection, _ = listener.accept()
            record({"method": "TCP", "path": "", "port": port, "headers": {}, "body": ""})
            connection.close()
    threading.Thread(target=accept, daemon=True).start()

for kind, port in config["listeners"]:
    if kind == "tcp":
        serve_tcp(port)
        continue
    server = Server(("127.0.0.1", port), Handler)
    if kind == "https":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(config["cert"], config["key"])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

open(config["ready"], "w").write("ready\n")
threading.Event().wait()
"#;

// ---------------------------------------------------------------------------------------
// Processes

/// A finished command. Output goes through files, not pipes, so that no process podman
/// leaves running (conmon) can keep a reader waiting.
struct Finished {
    code: i32,
    stdout: Vec<u8>,
    stderr: String,
    timed_out: bool,
}

impl Finished {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn both(&self) -> String {
        format!("{}{}", self.stdout_text(), self.stderr)
    }
}

fn run(mut command: Command, limit: Duration, scratch: &Path) -> Finished {
    let id = NEXT_OUTPUT.fetch_add(1, Ordering::Relaxed);
    let out_path = scratch.join(format!("command-{id}.out"));
    let err_path = scratch.join(format!("command-{id}.err"));
    let out = std::fs::File::create(&out_path).unwrap();
    let err = std::fs::File::create(&err_path).unwrap();
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(error) => panic!("spawning {command:?}: {error}"),
    };
    let deadline = Instant::now() + limit;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let stdout = std::fs::read(&out_path).unwrap_or_default();
    let mut stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    if timed_out {
        let _ = write!(stderr, "\n[killed after {limit:?}: {command:?}]");
    }
    let _ = std::fs::remove_file(out_path);
    let _ = std::fs::remove_file(err_path);
    Finished {
        code,
        stdout,
        stderr,
        timed_out,
    }
}

static NEXT_OUTPUT: AtomicUsize = AtomicUsize::new(0);

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|dir| {
            std::fs::metadata(dir.join(tool))
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
    })
}

// ---------------------------------------------------------------------------------------
// The examples

/// An example's documents as podman gets them: Services dropped (podman has none; the names
/// resolve through the hosts file), Secrets taken out (the fixture creates them), patches
/// applied, podman's needs added to the workload.
struct Manifest {
    file: String,
    docs: Vec<Doc>,
    /// The Secret documents' names and stringData.
    secrets: Vec<(String, Vec<(String, String)>)>,
    host_network: bool,
}

struct Doc {
    kind: String,
    text: String,
}

impl Manifest {
    fn example(file: &str) -> Manifest {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples/kubernetes")
            .join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        let mut docs = Vec::new();
        let mut current = String::new();
        for line in text.lines().chain(std::iter::once("---")) {
            if line == "---" {
                if !current.trim().is_empty() {
                    docs.push(std::mem::take(&mut current));
                }
                current.clear();
            } else {
                current.push_str(line);
                current.push('\n');
            }
        }
        let mut kept = Vec::new();
        let mut secrets = Vec::new();
        for text in docs {
            let kind = text
                .lines()
                .find_map(|line| line.strip_prefix("kind: "))
                .unwrap_or_else(|| panic!("{file}: a document without a kind"))
                .trim()
                .to_owned();
            match kind.as_str() {
                "Service" => continue,
                "Secret" => secrets.push(secret_string_data(file, &text)),
                "Pod" | "Deployment" | "ConfigMap" => kept.push(Doc { kind, text }),
                other => panic!("{file}: kind {other} is not something podman kube play runs"),
            }
        }
        let workloads = kept.iter().filter(|doc| doc.is_workload()).count();
        assert_eq!(workloads, 1, "{file}: expected one Pod or Deployment");
        Manifest {
            file: file.to_owned(),
            docs: kept,
            secrets,
            host_network: false,
        }
    }

    /// Replaces `from`, which must occur exactly once in the kept documents.
    #[track_caller]
    fn patch(mut self, from: &str, to: &str) -> Manifest {
        let found: usize = self
            .docs
            .iter()
            .map(|doc| doc.text.matches(from).count())
            .sum();
        assert_eq!(
            found, 1,
            "{}: the patch target {from:?} occurs {found} times, not once: has the example changed?",
            self.file
        );
        for doc in &mut self.docs {
            if doc.text.contains(from) {
                doc.text = doc.text.replacen(from, to, 1);
            }
        }
        self
    }

    #[track_caller]
    fn insert_after(self, anchor: &str, text: &str) -> Manifest {
        let replacement = format!("{anchor}{text}");
        self.patch(anchor, &replacement)
    }

    /// A Downward API field podman 4.3 does not know becomes the literal value a cluster
    /// would give.
    #[track_caller]
    fn field_ref_as_value(self, variable: &str, field: &str, value: &str) -> Manifest {
        let block = format!(
            "        - name: {variable}\n          valueFrom:\n            fieldRef:\n              fieldPath: {field}\n"
        );
        let literal = format!("        - name: {variable}\n          value: \"{value}\"\n");
        self.patch(&block, &literal)
    }

    /// Podman 4.3 crashes on a Secret volume that does not say whether it is optional.
    #[track_caller]
    fn secret_volume_not_optional(self, secret: &str) -> Manifest {
        self.insert_after(
            &format!("        secretName: {secret}\n"),
            "        optional: false\n",
        )
    }

    /// Runs the pod in the network namespace podman is started in (the test's).
    fn host_network(mut self) -> Manifest {
        self.host_network = true;
        self
    }

    #[track_caller]
    fn assert_contains(&self, text: &str) {
        assert!(
            self.docs.iter().any(|doc| doc.text.contains(text)),
            "{}: lacks {text:?}: has the example changed?",
            self.file
        );
    }

    /// The images the example runs.
    fn images(&self) -> Vec<String> {
        let mut images: Vec<String> = Vec::new();
        for doc in &self.docs {
            for line in doc.text.lines() {
                if let Some(image) = line.trim_start().strip_prefix("image: ") {
                    let image = image.trim().trim_matches('"').to_owned();
                    if !images.contains(&image) {
                        images.push(image);
                    }
                }
            }
        }
        images
    }

    /// The YAML given to podman.
    fn render(&self) -> String {
        let mut out = String::new();
        for doc in &self.docs {
            let text = if doc.is_workload() {
                doc.for_podman(self.host_network, &self.file)
            } else {
                doc.text.clone()
            };
            out.push_str("---\n");
            out.push_str(&text);
        }
        out
    }
}

impl Doc {
    fn is_workload(&self) -> bool {
        self.kind == "Pod" || self.kind == "Deployment"
    }

    /// The workload with what podman needs: its init containers kept, no restarts, and
    /// optionally the host's (the test's) network.
    fn for_podman(&self, host_network: bool, file: &str) -> String {
        // A Deployment's pod spec is its template's; podman reads the annotations of the
        // Deployment itself.
        let (spec_line, indent) = if self.kind == "Pod" {
            ("spec:", "  ")
        } else {
            ("    spec:", "      ")
        };
        for setting in ["restartPolicy:", "hostNetwork:"] {
            assert!(
                !self.text.contains(&format!("\n{indent}{setting}")),
                "{file}: already sets {setting}; the test would override it"
            );
        }
        assert!(
            !self.text.contains("\n  annotations:"),
            "{file}: already has annotations; the test would need to merge them"
        );
        let mut spec = vec![format!("{indent}restartPolicy: Never")];
        if host_network {
            spec.push(format!("{indent}hostNetwork: true"));
        }
        let text = insert_below(
            &self.text,
            "metadata:",
            &[
                "  annotations:".to_owned(),
                format!("    {KEEP_INIT_CONTAINERS}"),
            ],
        );
        insert_below(&text, spec_line, &spec)
    }
}

/// A Secret document's name and its `stringData` (the only form the examples use).
fn secret_string_data(file: &str, text: &str) -> (String, Vec<(String, String)>) {
    let name = text
        .split_once("\nmetadata:\n  name: ")
        .and_then(|(_, rest)| rest.lines().next())
        .unwrap_or_else(|| panic!("{file}: a Secret without a name"))
        .trim()
        .to_owned();
    assert!(
        !text.contains("\ndata:"),
        "{file}: Secret {name} has data; the test reads stringData only"
    );
    let (_, body) = text
        .split_once("\nstringData:\n")
        .unwrap_or_else(|| panic!("{file}: Secret {name} has no stringData"));
    let entries = body
        .lines()
        .take_while(|line| line.starts_with("  "))
        .map(|line| {
            let (key, value) = line.trim().split_once(": ").unwrap_or_else(|| {
                panic!("{file}: Secret {name}: {line:?} is not a simple key: value")
            });
            (key.to_owned(), value.trim().trim_matches('"').to_owned())
        })
        .collect();
    (name, entries)
}

/// Inserts `lines` below the one line equal to `anchor`.
fn insert_below(text: &str, anchor: &str, lines: &[String]) -> String {
    let found = text.lines().filter(|line| *line == anchor).count();
    assert_eq!(found, 1, "expected one line {anchor:?} in:\n{text}");
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if line == anchor {
            for inserted in lines {
                out.push_str(inserted);
                out.push('\n');
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The fixture

/// One container's state, as `podman inspect` reports it.
#[derive(Debug)]
struct State {
    status: String,
    exit_code: i32,
    /// Nanoseconds since the epoch; None when it never started / never finished.
    started: Option<i128>,
    finished: Option<i128>,
    pid: u32,
}

/// podman with its own storage, configuration, hosts file and network namespace.
struct KubePlay {
    test: &'static str,
    dir: tempfile::TempDir,
    netns: String,
    built: RefCell<Vec<String>>,
    secrets: RefCell<Vec<String>>,
    /// The ids of the pods removed, whose cgroups must go too.
    removed_pods: RefCell<Vec<String>>,
    last_play: RefCell<String>,
    manifests: Cell<usize>,
}

impl KubePlay {
    /// None (after saying why) where the test cannot run.
    fn new(test: &'static str, extra_tools: &[&str]) -> Option<KubePlay> {
        if !need_root() {
            return None;
        }
        let binary = static_binary()?;
        let missing: Vec<&str> = ["podman", "buildah", "runc", "nsenter", "ip"]
            .iter()
            .chain(extra_tools)
            .copied()
            .filter(|tool| !on_path(tool))
            .collect();
        if !missing.is_empty() {
            skip(&format!("needs {} on PATH", missing.join(", ")));
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let root = dir.path();
        for sub in [
            "context",
            "scratch",
            "networks",
            "tmp",
            "servers/static",
            "servers/git",
        ] {
            std::fs::create_dir_all(root.join(sub)).unwrap();
        }
        // Everything podman would otherwise keep in global places is in the temp dir. The
        // ulimits are essential (raising them is not permitted here); crun fails on this
        // cgroup setup, runc works; file locks in tmp_dir keep two fixtures apart.
        std::fs::write(
            root.join("containers.conf"),
            format!(
                "[containers]\n\
                 default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
                 netns = \"none\"\n\
                 base_hosts_file = \"{root}/hosts\"\n\
                 dns_servers = [\"127.0.0.1\"]\n\
                 \n\
                 [engine]\n\
                 runtime = \"runc\"\n\
                 cgroup_manager = \"cgroupfs\"\n\
                 events_logger = \"file\"\n\
                 lock_type = \"file\"\n\
                 tmp_dir = \"{root}/tmp\"\n\
                 infra_image = \"{PAUSE_IMAGE}\"\n\
                 \n\
                 [network]\n\
                 network_config_dir = \"{root}/networks\"\n",
                root = root.display()
            ),
        )
        .unwrap();
        std::fs::write(
            root.join("storage.conf"),
            format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{root}/storage\"\nrunroot = \"{root}/run\"\n",
                root = root.display()
            ),
        )
        .unwrap();
        let installed = root.join("context/initbox");
        std::fs::copy(&binary, &installed).expect("copying INITBOX_STATIC_BINARY");
        std::fs::set_permissions(&installed, std::fs::Permissions::from_mode(0o755)).unwrap();

        let netns = format!(
            "initbox-kube-{}-{}",
            std::process::id(),
            NEXT_NAMESPACE.fetch_add(1, Ordering::Relaxed)
        );
        let kube = KubePlay {
            test,
            dir,
            netns,
            built: RefCell::new(Vec::new()),
            secrets: RefCell::new(Vec::new()),
            removed_pods: RefCell::new(Vec::new()),
            last_play: RefCell::new(String::new()),
            manifests: Cell::new(0),
        };
        kube.resolve_to_loopback(&[]);
        kube.command_ok("ip", &["netns", "add", &kube.netns]);
        kube.command_ok("ip", &["-n", &kube.netns, "link", "set", "lo", "up"]);
        let containerfile = Path::new(env!("CARGO_MANIFEST_DIR")).join("images/Containerfile");
        kube.build(INITBOX_IMAGE, &containerfile);
        kube.build_from_text(PAUSE_IMAGE, PAUSE);
        Some(kube)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn netns_path(&self) -> String {
        format!("/run/netns/{}", self.netns)
    }

    /// A command inside the test's network namespace, with this fixture's configuration.
    fn in_netns(&self, program: &str, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--net={}", self.netns_path()))
            .arg(program)
            .args(args)
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env_remove("CONTAINER_HOST")
            .env_remove("CONTAINER_CONNECTION")
            .current_dir(self.dir.path());
        command
    }

    fn podman(&self, args: &[&str]) -> Finished {
        run(
            self.in_netns("podman", args),
            COMMAND_LIMIT,
            &self.path("scratch"),
        )
    }

    /// podman ARGS, which must succeed; its stdout.
    #[track_caller]
    fn podman_ok(&self, args: &[&str]) -> Vec<u8> {
        let done = self.podman(args);
        if done.code != 0 {
            self.fail(&format!(
                "podman {} failed ({}):\n{}",
                args.join(" "),
                done.code,
                done.both()
            ));
        }
        done.stdout
    }

    #[track_caller]
    fn command_ok(&self, program: &str, args: &[&str]) {
        let mut command = Command::new(program);
        command.args(args);
        let done = run(command, COMMAND_LIMIT, &self.path("scratch"));
        assert_eq!(
            done.code,
            0,
            "{program} {} failed:\n{}",
            args.join(" "),
            done.both()
        );
    }

    #[track_caller]
    fn build(&self, image: &str, containerfile: &Path) {
        let containerfile = containerfile.to_str().unwrap();
        let context = self.path("context");
        let done = run(
            self.in_netns(
                "buildah",
                &[
                    "bud",
                    "--isolation",
                    "chroot",
                    "-f",
                    containerfile,
                    "-t",
                    image,
                    context.to_str().unwrap(),
                ],
            ),
            COMMAND_LIMIT,
            &self.path("scratch"),
        );
        assert_eq!(done.code, 0, "building {image}:\n{}", done.both());
        self.built.borrow_mut().push(image.to_owned());
    }

    fn build_from_text(&self, image: &str, containerfile: &str) {
        let path = self.path(&format!("Containerfile.{}", self.built.borrow().len()));
        std::fs::write(&path, containerfile).unwrap();
        self.build(image, &path);
    }

    /// Every image the manifest names: the real one, and stand-ins for the applications.
    fn provide_images(&self, manifest: &Manifest) {
        for image in manifest.images() {
            let full = fully_qualified(&image);
            if self.built.borrow().contains(&full) {
                continue;
            }
            self.build_from_text(&full, STAND_IN);
        }
    }

    /// These names (and localhost) resolve to 127.0.0.1 in every container podman creates
    /// from now on; any other name goes to the nameserver 127.0.0.1, where nothing answers.
    fn resolve_to_loopback(&self, names: &[&str]) {
        let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
        if !names.is_empty() {
            let _ = writeln!(hosts, "127.0.0.1 {}", names.join(" "));
        }
        std::fs::write(self.path("hosts"), hosts).unwrap();
    }

    /// A Secret the cluster would hold, as podman 4.3 reads it: `data` values taken as they
    /// are (not base64).
    fn secret(&self, name: &str, entries: &[(&str, &str)]) {
        let mut yaml = format!("apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\ndata:\n");
        for (key, value) in entries {
            if value.contains('\n') {
                assert!(
                    value.ends_with('\n'),
                    "a multi-line value ends with a newline"
                );
                let _ = writeln!(yaml, "  {key}: |");
                for line in value.lines() {
                    let _ = writeln!(yaml, "    {line}");
                }
            } else {
                let _ = writeln!(yaml, "  {key}: \"{value}\"");
            }
        }
        let path = self.path(&format!("secret-{name}.yaml"));
        std::fs::write(&path, yaml).unwrap();
        self.podman_ok(&["secret", "create", name, path.to_str().unwrap()]);
        self.secrets.borrow_mut().push(name.to_owned());
    }

    /// Sets a sysctl in the test's network namespace (where hostNetwork pods run).
    fn netns_sysctl(&self, key: &str, value: &str) {
        let setting = format!("{key}={value}");
        let done = run(
            self.in_netns("sysctl", &["-w", &setting]),
            COMMAND_LIMIT,
            &self.path("scratch"),
        );
        assert_eq!(done.code, 0, "sysctl -w {setting}:\n{}", done.both());
    }

    /// `podman kube play`: returns once the init containers finished (or one failed).
    fn play(&self, manifest: &Manifest) -> Finished {
        self.provide_images(manifest);
        for (name, entries) in &manifest.secrets {
            if !self.secrets.borrow().contains(name) {
                let entries: Vec<(&str, &str)> = entries
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_str()))
                    .collect();
                self.secret(name, &entries);
            }
        }
        let n = self.manifests.get();
        self.manifests.set(n + 1);
        let path = self.path(&format!("pod-{n}.yaml"));
        std::fs::write(&path, manifest.render()).unwrap();
        let path = path.to_str().unwrap();
        let mut args = vec!["kube", "play", "--build=false"];
        if !manifest.host_network {
            args.extend(["--network", "none"]);
        }
        args.push(path);
        let done = run(
            self.in_netns("podman", &args),
            PLAY_LIMIT,
            &self.path("scratch"),
        );
        *self.last_play.borrow_mut() = format!(
            "podman {} (exit {}):\n{}",
            args.join(" "),
            done.code,
            done.both()
        );
        if done.timed_out {
            self.fail("kube play did not return");
        }
        done
    }

    /// `kube play`, which must succeed.
    #[track_caller]
    fn play_ok(&self, manifest: &Manifest) {
        let done = self.play(manifest);
        if done.code != 0 {
            self.fail("kube play failed");
        }
    }

    /// Removes every pod and container (the images, secrets and volumes stay).
    fn down(&self) {
        let pods = self
            .podman(&["pod", "ps", "--quiet", "--no-trunc"])
            .stdout_text();
        self.removed_pods
            .borrow_mut()
            .extend(pods.split_whitespace().map(str::to_owned));
        let _ = self.podman(&["pod", "rm", "--force", "--all", "--time", "0"]);
        let _ = self.podman(&["rm", "--force", "--all", "--time", "0"]);
    }

    fn state(&self, container: &str) -> State {
        let format = "{{.State.Status}} {{.State.ExitCode}} {{.State.StartedAt.IsZero}} \
                      {{.State.StartedAt.UnixNano}} {{.State.FinishedAt.IsZero}} \
                      {{.State.FinishedAt.UnixNano}} {{.State.Pid}}";
        let out = self.podman_ok(&[
            "inspect",
            "--type",
            "container",
            "--format",
            format,
            container,
        ]);
        let text = String::from_utf8_lossy(&out);
        let fields: Vec<&str> = text.split_whitespace().collect();
        assert_eq!(fields.len(), 7, "unexpected inspect output: {text}");
        let time = |zero: &str, nanos: &str| (zero == "false").then(|| nanos.parse().unwrap());
        State {
            status: fields[0].to_owned(),
            exit_code: fields[1].parse().unwrap(),
            started: time(fields[2], fields[3]),
            finished: time(fields[4], fields[5]),
            pid: fields[6].parse().unwrap(),
        }
    }

    fn logs(&self, container: &str) -> String {
        self.podman(&["logs", container]).both()
    }

    #[track_caller]
    fn expect_exited(&self, container: &str, code: i32) -> State {
        let state = self.state(container);
        if state.status != "exited" || state.exit_code != code {
            self.fail(&format!(
                "{container} should have exited with {code}: {state:?}"
            ));
        }
        state
    }

    #[track_caller]
    fn expect_running(&self, container: &str) -> State {
        let state = self.state(container);
        if state.status != "running" {
            self.fail(&format!("{container} should be running: {state:?}"));
        }
        state
    }

    #[track_caller]
    fn expect_never_started(&self, container: &str) {
        let state = self.state(container);
        if state.status != "created" || state.started.is_some() {
            self.fail(&format!("{container} should never have started: {state:?}"));
        }
    }

    /// Each container started only after the one before it had finished.
    #[track_caller]
    fn expect_in_order(&self, containers: &[&str]) {
        let states: Vec<State> = containers.iter().map(|name| self.state(name)).collect();
        for (pair, names) in states.windows(2).zip(containers.windows(2)) {
            let (Some(finished), Some(started)) = (pair[0].finished, pair[1].started) else {
                self.fail(&format!(
                    "{} must have finished and {} started: {:?}, {:?}",
                    names[0], names[1], pair[0], pair[1]
                ));
            };
            if started < finished {
                self.fail(&format!(
                    "{} started {} ns before {} finished",
                    names[1],
                    finished - started,
                    names[0]
                ));
            }
        }
    }

    #[track_caller]
    fn expect_log(&self, container: &str, needle: &str) {
        let logs = self.logs(container);
        if !logs.contains(needle) {
            self.fail(&format!("the log of {container} lacks {needle:?}:\n{logs}"));
        }
    }

    /// A file as the container sees it (`podman cp`): its mode and contents.
    #[track_caller]
    fn read(&self, container: &str, path: &str) -> (u32, String) {
        let source = format!("{container}:{path}");
        let tar = self.podman_ok(&["cp", &source, "-"]);
        match first_file_in_tar(&tar) {
            Some((mode, contents)) => (mode, String::from_utf8_lossy(&contents).into_owned()),
            None => self.fail(&format!("podman cp {source} gave no regular file")),
        }
    }

    /// Panics with `message`, `podman ps -a`, every container's log and the last kube play.
    #[track_caller]
    fn fail(&self, message: &str) -> ! {
        panic!("{}: {message}\n\n{}", self.test, self.diagnostics());
    }

    fn diagnostics(&self) -> String {
        let mut out = String::new();
        let ps = self.podman(&["ps", "--all", "--format", "{{.Names}}\t{{.Status}}"]);
        let _ = writeln!(out, "podman ps -a:\n{}", ps.both());
        for name in ps
            .stdout_text()
            .lines()
            .filter_map(|l| l.split('\t').next())
        {
            if !name.is_empty() {
                let _ = writeln!(out, "--- podman logs {name}:\n{}", self.logs(name));
            }
        }
        let _ = writeln!(out, "--- last {}", self.last_play.borrow());
        out
    }

    /// python3 servers on the test namespace's loopback.
    fn serve(&self, spec: &ServerSpec) -> Servers {
        let base = self.path("servers");
        for (name, contents) in spec.files {
            let file = base.join("static").join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, contents).unwrap();
        }
        let index = NEXT_OUTPUT.fetch_add(1, Ordering::Relaxed);
        let log = base.join(format!("requests-{index}.log"));
        let ready = base.join(format!("ready-{index}"));
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned());
        let mut config = serde_json::json!({
            "log": log,
            "ready": ready,
            "static": base.join("static"),
            "git_root": base.join("git"),
            "http_backend": format!("{}/git-http-backend", exec_path.unwrap_or_default()),
            "cert": base.join("server.crt"),
            "key": base.join("server.key"),
            "listeners": spec.listeners,
        });
        if let Some(token) = spec.git_token {
            config["git_token"] = token.into();
        }
        if let Some(reply) = spec.register_reply {
            config["register_reply"] = reply.into();
        }
        let config_path = base.join(format!("server-{index}.json"));
        std::fs::write(&config_path, config.to_string()).unwrap();
        std::fs::write(base.join("server.py"), SERVER_PY).unwrap();
        let stderr = std::fs::File::create(base.join(format!("server-{index}.err"))).unwrap();
        let child = self
            .in_netns(
                "python3",
                &[
                    base.join("server.py").to_str().unwrap(),
                    config_path.to_str().unwrap(),
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("starting python3");
        let mut servers = Servers { child, log };
        // The ready file is written once every listener is bound.
        eventually(Duration::from_secs(30), || {
            ready.exists() || servers.child.try_wait().unwrap().is_some()
        });
        if !ready.exists() {
            let error = std::fs::read_to_string(base.join(format!("server-{index}.err")));
            panic!(
                "{}: the servers did not start:\n{}",
                self.test,
                error.unwrap_or_default()
            );
        }
        servers
    }

    /// A CA and a certificate for `names` signed by it (server.crt and server.key, which
    /// the https listeners use); returns the CA certificate (PEM).
    fn tls(&self, names: &[&str]) -> String {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "initbox kube_play test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let base = self.path("servers");
        std::fs::write(base.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(base.join("server.key"), key.serialize_pem()).unwrap();
        ca.pem()
    }

    /// A bare repository `servers/git/PATH` whose tag `tag` holds `files`; main moves on
    /// after it (so a checkout of the tag is told apart). Returns the tag's commit.
    fn git_repo(&self, path: &str, files: &[(&str, &str)], tag: &str) -> String {
        let work = self.path(&format!("work-{}", path.replace('/', "-")));
        std::fs::create_dir_all(&work).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        for (name, contents) in files {
            let file = work.join(name);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, contents).unwrap();
        }
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", tag]);
        git(&work, &["tag", "-a", tag, "-m", tag]);
        let commit = git(&work, &["rev-parse", "HEAD"]);
        std::fs::write(work.join("after-the-tag.txt"), "not in the tag\n").unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "after the tag"]);
        let bare = self.path("servers/git").join(path);
        git(
            self.dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        commit
    }

    /// Waits (up to `limit`) until no process refers to this fixture's directory: conmon
    /// and the `podman container cleanup` it starts must be gone before the storage is.
    fn wait_for_no_users(&self, limit: Duration) {
        let needle = self.dir.path().to_string_lossy().into_owned();
        let users = || {
            std::fs::read_dir("/proc")
                .into_iter()
                .flatten()
                .flatten()
                .filter(|entry| entry.file_name().to_string_lossy().parse::<u32>().is_ok())
                .filter(|entry| {
                    std::fs::read(entry.path().join("cmdline"))
                        .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
                })
                .count()
        };
        eventually(limit, || users() == 0);
    }

    /// Mount points under this fixture's directory, deepest first.
    fn mounts(&self) -> Vec<String> {
        let prefix = format!("{}/", self.dir.path().display());
        let mut mounts: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .filter(|point| point.starts_with(&prefix))
            .map(str::to_owned)
            .collect();
        mounts.sort_by_key(|point| std::cmp::Reverse(point.len()));
        mounts
    }
}

impl Drop for KubePlay {
    fn drop(&mut self) {
        self.down();
        self.wait_for_no_users(Duration::from_secs(20));
        remove_empty_pod_cgroups(&self.removed_pods.borrow());
        for point in self.mounts() {
            let _ = Command::new("umount").args(["--lazy", &point]).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.netns])
            .stderr(Stdio::null())
            .status();
    }
}

/// The cgroups of these pods, which podman (rarely) leaves behind, empty, when a pod goes
/// while its containers are being cleaned up. rmdir removes only an empty cgroup.
fn remove_empty_pod_cgroups(pods: &[String]) {
    fn remove_tree(dir: &Path) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_tree(&entry.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    // cgroup v2: /sys/fs/cgroup/libpod_parent; v1: the same under every controller.
    let mut parents = vec![PathBuf::from("/sys/fs/cgroup/libpod_parent")];
    for controller in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        parents.push(controller.path().join("libpod_parent"));
    }
    for parent in parents {
        for pod in pods {
            let dir = parent.join(pod);
            if dir.is_dir() {
                remove_tree(&dir);
            }
        }
    }
}

/// What the python3 servers listen on and serve.
#[derive(Default)]
struct ServerSpec<'a> {
    /// ("http" | "https" | "tcp", port), all on 127.0.0.1 of the test's namespace.
    listeners: &'a [(&'a str, u16)],
    /// Static files by path.
    files: &'a [(&'a str, &'a str)],
    /// The password git clients must send (basic auth), if any.
    git_token: Option<&'a str>,
    /// The JSON answer to POST /register.
    register_reply: Option<&'a str>,
}

struct Servers {
    child: Child,
    log: PathBuf,
}

impl Servers {
    /// Every request so far, as the server logged it.
    fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    }

    fn requests_to(&self, port: u16) -> Vec<serde_json::Value> {
        self.requests()
            .into_iter()
            .filter(|request| request["port"] == port)
            .collect()
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The name podman stores a short or Docker Hub image name under.
fn fully_qualified(image: &str) -> String {
    let first = image.split('/').next().unwrap_or("");
    if !image.contains('/') {
        format!("docker.io/library/{image}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        image.to_owned()
    } else {
        format!("docker.io/{image}")
    }
}

/// The first regular file in a tar stream: its permission bits and contents.
fn first_file_in_tar(tar: &[u8]) -> Option<(u32, Vec<u8>)> {
    let octal = |field: &[u8]| {
        let text: String = field
            .iter()
            .take_while(|byte| **byte != 0)
            .map(|byte| *byte as char)
            .collect();
        usize::from_str_radix(text.trim(), 8).unwrap_or(0)
    };
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &tar[at..at + 512];
        if header.iter().all(|byte| *byte == 0) {
            return None;
        }
        let size = octal(&header[124..136]);
        let body = at + 512;
        if matches!(header[156], b'0' | 0) {
            let mode = u32::try_from(octal(&header[100..108]) & 0o7777).unwrap();
            return Some((mode, tar.get(body..body + size)?.to_vec()));
        }
        at = body + size.div_ceil(512) * 512;
    }
    None
}

// ---------------------------------------------------------------------------------------
// The examples, one test each

#[test]
fn sleep_holds_the_app_back_until_the_init_container_is_done() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "sleep_holds_the_app_back_until_the_init_container_is_done",
        &[],
    ) else {
        return;
    };
    // A minute is the example's wait, not the test's: two seconds show it as well.
    let pod = Manifest::example("sleep.yaml")
        .patch(r#"args: ["sleep", "60s"]"#, r#"args: ["sleep", "2s"]"#);
    kube.play_ok(&pod);
    let settle = kube.expect_exited("sleep-demo-settle", 0);
    kube.expect_running("sleep-demo-app");
    kube.expect_in_order(&["sleep-demo-settle", "sleep-demo-app"]);
    kube.expect_log("sleep-demo-settle", "sleeping for 2s");
    // A lower bound only: the sleep cannot end early, however loaded the machine.
    let slept = settle.finished.unwrap() - settle.started.unwrap();
    if slept < 1_000_000_000 {
        kube.fail(&format!("the init container ran for {slept} ns, not ~2 s"));
    }
}

#[test]
fn wait_for_services_runs_the_app_once_both_names_resolve() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "wait_for_services_runs_the_app_once_both_names_resolve",
        &[],
    ) else {
        return;
    };
    // The Services' names, as the cluster DNS would answer them.
    kube.resolve_to_loopback(&["myservice", "mydb"]);
    let pod = Manifest::example("wait-for-services.yaml").host_network();
    kube.play_ok(&pod);
    kube.expect_exited("myapp-pod-init-myservice", 0);
    kube.expect_exited("myapp-pod-init-mydb", 0);
    kube.expect_running("myapp-pod-myapp-container");
    kube.expect_in_order(&[
        "myapp-pod-init-myservice",
        "myapp-pod-init-mydb",
        "myapp-pod-myapp-container",
    ]);
    kube.expect_log("myapp-pod-init-myservice", "myservice is ready");
    kube.expect_log("myapp-pod-init-mydb", "resolved to 127.0.0.1");
}

#[test]
fn wait_for_services_a_missing_service_blocks_the_app_with_exit_124() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "wait_for_services_a_missing_service_blocks_the_app_with_exit_124",
        &[],
    ) else {
        return;
    };
    // mydb does not exist: its name is in no hosts file, and the nameserver (127.0.0.1 of
    // the test's namespace) does not answer.
    kube.resolve_to_loopback(&["myservice"]);
    // `--timeout 0` would wait for ever, as the example means to; the test needs an end.
    let pod = Manifest::example("wait-for-services.yaml")
        .host_network()
        .patch(
            r#"args: ["wait-for-dns", "mydb", "--timeout", "0"]"#,
            r#"args: ["wait-for-dns", "mydb", "--timeout", "3s"]"#,
        );
    let played = kube.play(&pod);
    if played.code == 0 || !played.stderr.contains("exited with code 124") {
        kube.fail("kube play should report init-mydb's exit code 124");
    }
    kube.expect_exited("myapp-pod-init-myservice", 0);
    kube.expect_exited("myapp-pod-init-mydb", 124);
    kube.expect_log("myapp-pod-init-mydb", "timed out after 3s waiting for mydb");
    kube.expect_in_order(&["myapp-pod-init-myservice", "myapp-pod-init-mydb"]);
    kube.expect_never_started("myapp-pod-myapp-container");
}

#[test]
fn render_config_renders_the_configmap_into_the_shared_volume() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "render_config_renders_the_configmap_into_the_shared_volume",
        &[],
    ) else {
        return;
    };
    let pod = Manifest::example("render-config.yaml")
        // Podman 4.3's Downward API has no metadata.namespace and no status.podIP: the
        // values a cluster would give (the pod's only address here is loopback).
        .field_ref_as_value("POD_NAMESPACE", "metadata.namespace", "default")
        .field_ref_as_value("POD_IP", "status.podIP", "127.0.0.1")
        .secret_volume_not_optional("web-db");
    kube.play_ok(&pod);
    kube.expect_exited("web-render-config", 0);
    kube.expect_running("web-app");
    kube.expect_in_order(&["web-render-config", "web-app"]);

    let (mode, app_conf) = kube.read("web-app", "/config/app.conf");
    let expected = "# rendered by initbox for web\n\
                    listen = \"127.0.0.1:8080\"\n\
                    log_level = \"info\"\n\
                    \n\
                    [database]\n\
                    url = \"postgres://web:change-me@postgres.default.svc.cluster.local:5432/orders\"\n\
                    \n\
                    \n\
                    [[peers]]\n\
                    name = \"billing\"\n\
                    address = \"billing.default.svc.cluster.local:8080\"\n\
                    \n\
                    [[peers]]\n\
                    name = \"search\"\n\
                    address = \"search.default.svc.cluster.local:9200\"\n\
                    \n";
    if app_conf != expected || mode != 0o640 {
        kube.fail(&format!(
            "/config/app.conf (mode {mode:o}, expected 640) is:\n{app_conf}\nexpected:\n{expected}"
        ));
    }
    let (_, labels) = kube.read("web-app", "/config/labels.yaml");
    let expected = "pod: web\nnamespace: default\nlabels:\n  team: orders\n  tier: backend\n";
    if labels != expected {
        kube.fail(&format!(
            "/config/labels.yaml is:\n{labels}\nexpected:\n{expected}"
        ));
    }
}

#[test]
fn ping_database_needs_the_pods_ping_group_range_sysctl() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "ping_database_needs_the_pods_ping_group_range_sysctl",
        &["sysctl"],
    ) else {
        return;
    };
    // The database host is the test namespace's loopback, not an address on some network.
    let pod = Manifest::example("ping-database.yaml")
        .host_network()
        .patch(
            r#"args: ["ping", "192.168.11.248", "--timeout", "5m"]"#,
            r#"args: ["ping", "127.0.0.1", "--timeout", "5m"]"#,
        );
    let (key, value) = ("net.ipv4.ping_group_range", "0 2147483647");
    pod.assert_contains(&format!("- name: {key}\n        value: \"{value}\"\n"));

    // Podman 4.3 ignores the pod's sysctls. Without it (a new namespace allows no group),
    // uid 65532 gets no ICMP socket: the init container fails at once, naming both remedies.
    let played = kube.play(&pod);
    if played.code == 0 {
        kube.fail("without the sysctl, ping-db must fail");
    }
    kube.expect_exited("app-after-db-ping-ping-db", 1);
    kube.expect_log("app-after-db-ping-ping-db", "net.ipv4.ping_group_range");
    kube.expect_log("app-after-db-ping-ping-db", "NET_RAW");
    kube.expect_never_started("app-after-db-ping-app");
    kube.down();

    // The sysctl of the example, set as the kubelet sets it: on the pod's network namespace.
    kube.netns_sysctl(key, value);
    kube.play_ok(&pod);
    kube.expect_exited("app-after-db-ping-ping-db", 0);
    kube.expect_log("app-after-db-ping-ping-db", "127.0.0.1 is ready");
    kube.expect_running("app-after-db-ping-app");
    kube.expect_in_order(&["app-after-db-ping-ping-db", "app-after-db-ping-app"]);
}

#[test]
fn fetch_into_emptydir_puts_the_page_where_nginx_serves_it() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "fetch_into_emptydir_puts_the_page_where_nginx_serves_it",
        &["python3"],
    ) else {
        return;
    };
    let page = "<!doctype html>\n<title>initbox</title>\n<p>fetched by an init container</p>\n";
    let servers = kube.serve(&ServerSpec {
        listeners: &[("http", 80)],
        files: &[("index.html", page)],
        ..ServerSpec::default()
    });
    kube.resolve_to_loopback(&["content.example"]);
    let pod = Manifest::example("fetch-into-emptydir.yaml")
        .host_network()
        // Podman 4.3 refuses container ports without bridge networking; in Kubernetes
        // they only document the port.
        .patch("      ports:\n        - containerPort: 80\n", "");
    kube.play_ok(&pod);
    kube.expect_exited("nginx-with-fetched-page-fetch-page", 0);
    kube.expect_running("nginx-with-fetched-page-nginx");
    kube.expect_in_order(&[
        "nginx-with-fetched-page-fetch-page",
        "nginx-with-fetched-page-nginx",
    ]);
    let (mode, served) = kube.read(
        "nginx-with-fetched-page-nginx",
        "/usr/share/nginx/html/index.html",
    );
    if served != page || mode != 0o644 {
        kube.fail(&format!("nginx would serve (mode {mode:o}):\n{served}"));
    }
    let requests = servers.requests_to(80);
    if requests.len() != 1
        || requests[0]["path"] != "/index.html"
        || requests[0]["headers"]["host"] != "content.example"
    {
        kube.fail(&format!(
            "one GET of http://content.example/index.html expected: {requests:?}"
        ));
    }
}

#[test]
fn git_clone_into_emptydir_checks_out_the_tag_with_the_token() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "git_clone_into_emptydir_checks_out_the_tag_with_the_token",
        &["python3", "git"],
    ) else {
        return;
    };
    let ca = kube.tls(&["git.example"]);
    let commit = kube.git_repo(
        "team/site.git",
        &[
            ("index.html", "<h1>site v1.4.0</h1>\n"),
            ("css/site.css", "body { margin: 0 }\n"),
        ],
        "v1.4.0",
    );
    let token = "kube-play-token-4f1c";
    // The Secret the example expects in the namespace; the CA of the test's server too.
    kube.secret("git-token", &[("token", token), ("ca.crt", ca.as_str())]);
    let servers = kube.serve(&ServerSpec {
        listeners: &[("https", 443)],
        git_token: Some(token),
        ..ServerSpec::default()
    });
    kube.resolve_to_loopback(&["git.example"]);
    let pod = Manifest::example("git-clone-into-emptydir.yaml")
        .host_network()
        .secret_volume_not_optional("git-token")
        // git.example's certificate comes from the test's CA.
        .insert_after(
            "        - name: INITBOX_TIMEOUT\n          value: \"5m\"\n",
            "        - name: INITBOX_CACERT\n          value: /var/run/secrets/git/ca.crt\n",
        );
    kube.play_ok(&pod);
    kube.expect_exited("site-from-git-clone", 0);
    kube.expect_running("site-from-git-web");
    kube.expect_in_order(&["site-from-git-clone", "site-from-git-web"]);
    let html = "/usr/share/nginx/html";
    let (_, index) = kube.read("site-from-git-web", &format!("{html}/index.html"));
    let (_, css) = kube.read("site-from-git-web", &format!("{html}/css/site.css"));
    if index != "<h1>site v1.4.0</h1>\n" || css != "body { margin: 0 }\n" {
        kube.fail(&format!("the checkout is not v1.4.0's: {index:?} {css:?}"));
    }
    let (_, marker) = kube.read(
        "site-from-git-web",
        &format!("{html}/.git/initbox-checkout.json"),
    );
    let (_, git_config) = kube.read("site-from-git-web", &format!("{html}/.git/config"));
    if !marker.contains(&commit) || git_config.contains(token) {
        kube.fail(&format!(
            "checkout marker {marker} should name {commit}; .git/config must not hold the token:\n{git_config}"
        ));
    }
    let logs = kube.logs("site-from-git-clone");
    if logs.contains(token) {
        kube.fail(&format!("the token appears in the log:\n{logs}"));
    }
    let authorized = servers
        .requests_to(443)
        .iter()
        .any(|request| request["headers"]["authorization"].is_string());
    if !authorized {
        kube.fail(&format!(
            "no request carried the token: {:?}",
            servers.requests()
        ));
    }
}

#[test]
fn git_clone_ssh_deploy_key_clones_over_the_built_in_ssh_client() {
    use crate::support::sshd::{self, SshFiles, Sshd, USER};
    let _serial = crate::support::one_at_a_time();
    if !sshd::available() {
        return;
    }
    let Some(kube) = KubePlay::new(
        "git_clone_ssh_deploy_key_clones_over_the_built_in_ssh_client",
        &["git"],
    ) else {
        return;
    };
    // sshd on port 22 of the test's namespace, where the hostNetwork pod runs: the
    // example's scp-like URL has no port.
    let server = Sshd::prepared(22);
    let config = server.config_on_port_22();
    let log = server.dir().join("sshd.log");
    let started = kube
        .in_netns(
            "/usr/sbin/sshd",
            &["-f", config.to_str().unwrap(), "-E", log.to_str().unwrap()],
        )
        .status()
        .expect("starting sshd in the test's namespace");
    assert!(started.success(), "sshd did not start: {}", server.log());
    let _stop_sshd = StopByPidFile(server.dir().join("sshd22.pid"));
    let known_hosts = server.write_known_hosts(
        &kube.path("known_hosts"),
        &format!("git.example {}\n", server.host_key("ed25519")),
        true,
    );
    let key = std::fs::read_to_string(server.key("ed25519")).unwrap();
    kube.secret(
        "git-creds",
        &[
            ("ssh", key.as_str()),
            (
                "known_hosts",
                &std::fs::read_to_string(known_hosts).unwrap(),
            ),
        ],
    );
    kube.resolve_to_loopback(&["git.example"]);
    let repository = server.dir().join("srv/app.git");
    let pod = Manifest::example("git-clone-ssh-deploy-key.yaml")
        .host_network()
        .secret_volume_not_optional("git-creds")
        // The test server's user, repository and tag.
        .patch(
            "        - git@git.example:team/site.git\n",
            &format!("        - {USER}@git.example:{}\n", repository.display()),
        )
        .patch("        - v1.4.0\n", "        - v1\n");
    kube.play_ok(&pod);
    kube.expect_exited("site-from-ssh-clone", 0);
    kube.expect_running("site-from-ssh-web");
    kube.expect_in_order(&["site-from-ssh-clone", "site-from-ssh-web"]);
    let html = "/usr/share/nginx/html";
    let (_, conf) = kube.read("site-from-ssh-web", &format!("{html}/conf/app.conf"));
    let (_, marker) = kube.read(
        "site-from-ssh-web",
        &format!("{html}/.git/initbox-checkout.json"),
    );
    if conf != "port = 8080\n" || !marker.contains(&server.repo.first) {
        kube.fail(&format!(
            "the checkout is not v1's ({}): app.conf {conf:?}, marker {marker}",
            server.repo.first
        ));
    }
    let logs = kube.logs("site-from-ssh-clone");
    if logs.contains("PRIVATE KEY") {
        kube.fail(&format!("the key appears in the log:\n{logs}"));
    }
    if !server.log().contains("Accepted publickey for initboxgit") {
        kube.fail(&format!("sshd saw no key login:\n{}", server.log()));
    }
}

/// Ends a daemon by the PID file it wrote (sshd started in a namespace forks away).
struct StopByPidFile(PathBuf);

impl Drop for StopByPidFile {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-TERM", pid.trim()]).status();
        }
    }
}

#[test]
fn pipeline_configmap_runs_every_step_in_one_init_container() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "pipeline_configmap_runs_every_step_in_one_init_container",
        &["python3", "git"],
    ) else {
        return;
    };
    let ca = kube.tls(&["git.example"]);
    let commit = kube.git_repo(
        "team/app-config.git",
        &[("app.conf.j2", "instance = {{ env.POD_NAME }}\n")],
        "v1.4.0",
    );
    let servers = kube.serve(&ServerSpec {
        listeners: &[("http", 80), ("https", 443), ("tcp", 5432)],
        register_reply: Some("{\"registered\": true}"),
        ..ServerSpec::default()
    });
    kube.resolve_to_loopback(&["myservice", "mydb", "git.example", "management.default.svc"]);
    let ca_key: String = ca.lines().map(|line| format!("    {line}\n")).collect();
    let pod = Manifest::example("pipeline-configmap.yaml")
        .host_network()
        .field_ref_as_value("POD_IP", "status.podIP", "127.0.0.1")
        // git.example's certificate comes from the test's CA, shipped in the same ConfigMap.
        .insert_after("\ndata:\n", &format!("  ca.crt: |\n{ca_key}"))
        .insert_after(
            "        - name: MANAGEMENT_SERVICE_PORT\n          value: \"80\"\n",
            "        - name: SSL_CERT_FILE\n          value: /etc/initbox/ca.crt\n",
        );
    kube.play_ok(&pod);
    kube.expect_exited("web-init", 0);
    kube.expect_running("web-web");
    kube.expect_in_order(&["web-init", "web-web"]);
    kube.expect_log("web-init", "all 5 steps completed");
    let (_, rendered) = kube.read("web-web", "/etc/web/app.conf");
    let (_, marker) = kube.read("web-web", "/etc/web/config/.git/initbox-checkout.json");
    if rendered != "instance = web\n" || !marker.contains(&commit) {
        kube.fail(&format!(
            "/etc/web/app.conf is {rendered:?}; the checkout marker: {marker}"
        ));
    }
    let (_, status) = kube.read("web-init", "/run/initbox/status.json");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status.json is JSON");
    let steps: Vec<&str> = status["initContainerStatuses"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter_map(|step| step["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    if status["phase"] != "Succeeded"
        || steps != ["init-myservice", "init-mydb", "clone", "render", "register"]
    {
        kube.fail(&format!("status.json: {status:#}"));
    }
    let registered: Vec<_> = servers
        .requests_to(80)
        .into_iter()
        .filter(|request| request["path"] == "/register")
        .collect();
    if registered.len() != 1 || registered[0]["body"] != "instance=web&ip=127.0.0.1" {
        kube.fail(&format!("one registration expected: {registered:?}"));
    }
    if servers.requests_to(5432).is_empty() {
        kube.fail("init-mydb never connected to mydb:5432");
    }
}

#[test]
fn register_downward_api_registers_the_pod_before_the_app_starts() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "register_downward_api_registers_the_pod_before_the_app_starts",
        &["python3"],
    ) else {
        return;
    };
    let token = "kube-play-registration-token";
    kube.secret("registration-token", &[("token", token)]);
    let reply = "{\"id\": \"registered-app\", \"registered\": true}";
    let servers = kube.serve(&ServerSpec {
        listeners: &[("http", 80)],
        register_reply: Some(reply),
        ..ServerSpec::default()
    });
    let pod = Manifest::example("register-downward-api.yaml")
        .host_network()
        .field_ref_as_value("POD_IP", "status.podIP", "127.0.0.1")
        .secret_volume_not_optional("registration-token")
        // Kubernetes gives every pod the variables of the namespace's Services (here the
        // Service `management`); podman has no Services.
        .insert_after(
            "      env:\n",
            "        - name: MANAGEMENT_SERVICE_HOST\n          value: \"127.0.0.1\"\n\
             \x20       - name: MANAGEMENT_SERVICE_PORT\n          value: \"80\"\n",
        );
    kube.play_ok(&pod);
    kube.expect_exited("registered-app-register", 0);
    kube.expect_running("registered-app-app");
    kube.expect_in_order(&["registered-app-register", "registered-app-app"]);
    let (_, response) = kube.read("registered-app-app", "/registration/response.json");
    if response != reply {
        kube.fail(&format!("/registration/response.json is {response:?}"));
    }
    let requests = servers.requests_to(80);
    let expected_auth = format!("Bearer {token}");
    if requests.len() != 1
        || requests[0]["method"] != "POST"
        || requests[0]["path"] != "/register"
        || requests[0]["body"] != "instance=registered-app&ip=127.0.0.1"
        || requests[0]["headers"]["authorization"] != expected_auth.as_str()
    {
        kube.fail(&format!(
            "one authorized registration expected: {requests:?}"
        ));
    }
    let logs = kube.logs("registered-app-register");
    if logs.contains(token) {
        kube.fail(&format!("the token appears in the log:\n{logs}"));
    }
}

#[test]
fn wait_for_tcp_http_deployment_waits_for_the_datastores_and_the_api() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "wait_for_tcp_http_deployment_waits_for_the_datastores_and_the_api",
        &["python3"],
    ) else {
        return;
    };
    let servers = kube.serve(&ServerSpec {
        listeners: &[("tcp", 3306), ("tcp", 6379), ("http", 8080)],
        files: &[("healthz", "ok\n")],
        ..ServerSpec::default()
    });
    kube.resolve_to_loopback(&["mysql", "redis", "config-api"]);
    let deployment = Manifest::example("wait-for-tcp-http.yaml")
        .host_network()
        // Podman 4.3 refuses container ports without bridge networking (and ignores the
        // readinessProbe that names it).
        .patch(
            "          ports:\n            - name: http\n              containerPort: 8080\n",
            "",
        );
    kube.play_ok(&deployment);
    // Podman names a Deployment's (single) pod NAME-pod-0.
    kube.expect_exited("web-pod-0-wait-for-datastores", 0);
    kube.expect_exited("web-pod-0-wait-for-config-api", 0);
    kube.expect_running("web-pod-0-web");
    kube.expect_in_order(&[
        "web-pod-0-wait-for-datastores",
        "web-pod-0-wait-for-config-api",
        "web-pod-0-web",
    ]);
    // INITBOX_LOG_FORMAT=json from the example: every line is a JSON object.
    let logs = kube.logs("web-pod-0-wait-for-datastores");
    let json_lines = logs
        .lines()
        .filter(|line| !line.trim().is_empty())
        .all(|line| serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| v.is_object()));
    if !json_lines || !logs.contains("mysql:3306") || !logs.contains("redis:6379") {
        kube.fail(&format!(
            "wait-for-datastores should log JSON about both targets:\n{logs}"
        ));
    }
    if servers.requests_to(3306).is_empty() || servers.requests_to(6379).is_empty() {
        kube.fail("mysql and redis were not both connected to");
    }
    let health = servers.requests_to(8080);
    if health.is_empty() || health.iter().any(|request| request["path"] != "/healthz") {
        kube.fail(&format!("GET /healthz expected: {health:?}"));
    }
}

#[test]
fn entrypoint_handoff_waits_then_becomes_the_server() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "entrypoint_handoff_waits_then_becomes_the_server",
        &["python3"],
    ) else {
        return;
    };
    kube.resolve_to_loopback(&["mydb"]);
    let deployment = Manifest::example("entrypoint-handoff.yaml")
        .host_network()
        // The stand-in image's /app/server is initbox: it needs a task to run as the server.
        .patch(
            r#"args: ["wait-for-tcp", "mydb:5432", "--", "/app/server"]"#,
            r#"args: ["wait-for-tcp", "mydb:5432", "--", "/app/server", "sleep", "1h"]"#,
        )
        // Podman 4.3 refuses container ports without bridge networking.
        .patch(
            "          ports:\n            - name: http\n              containerPort: 8080\n",
            "",
        );
    kube.play_ok(&deployment);
    let container = "myapp-pod-0-myapp";
    let cmdline = |pid: u32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    // No database yet: initbox waits as the container's main process.
    let waiting = eventually(Duration::from_secs(30), || {
        kube.logs(container).contains("waiting for mydb:5432")
    });
    let before = kube.expect_running(container);
    if !waiting || !cmdline(before.pid).starts_with("/initbox wait-for-tcp") {
        kube.fail(&format!(
            "initbox should be waiting: {:?}",
            cmdline(before.pid)
        ));
    }
    // The database appears: the same process becomes the server.
    let _servers = kube.serve(&ServerSpec {
        listeners: &[("tcp", 5432)],
        ..ServerSpec::default()
    });
    let handed_off = eventually(Duration::from_secs(60), || {
        cmdline(before.pid) == "/app/server sleep 1h"
    });
    let after = kube.expect_running(container);
    if !handed_off || after.pid != before.pid {
        kube.fail(&format!(
            "pid {} should have become /app/server: {:?} (pid now {})",
            before.pid,
            cmdline(before.pid),
            after.pid
        ));
    }
    kube.expect_log(container, "mydb:5432 is ready");
}

/// A directory on the host that a pod's emptyDir `volume` becomes (a hostPath, as a
/// PersistentVolume would be), so the test sees what the pod left in it and a second pod
/// finds what the first one wrote. Owned by `owner`, as fsGroup would make a volume.
fn host_volume(kube: &KubePlay, volume: &str, owner: Option<u32>) -> PathBuf {
    let dir = kube.path(&format!("volume-{volume}"));
    std::fs::create_dir(&dir).unwrap();
    if let Some(id) = owner {
        std::os::unix::fs::chown(&dir, Some(id), Some(id)).unwrap();
    }
    dir
}

fn as_host_path(manifest: Manifest, emptydir: &str, dir: &Path) -> Manifest {
    let indent = emptydir.len() - emptydir.trim_start().len();
    let volume = format!(
        "{:indent$}hostPath: {{path: {}, type: Directory}}\n",
        "",
        dir.display()
    );
    manifest.patch(emptydir, &volume)
}

fn owner_of(path: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    (meta.uid(), meta.gid())
}

#[test]
fn volume_permissions_owns_the_volume_but_not_what_a_planted_link_points_to() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "volume_permissions_owns_the_volume_but_not_what_a_planted_link_points_to",
        &[],
    ) else {
        return;
    };
    // A volume that already holds data (a restarted StatefulSet), with lost+found, and a
    // link planted by whoever wrote the volume last, pointing at a file outside it.
    let volume = host_volume(&kube, "data", None);
    let outside = kube.path("outside-secret");
    std::fs::write(&outside, "root's\n").unwrap();
    std::fs::create_dir_all(volume.join("old/base")).unwrap();
    std::fs::write(volume.join("old/base/1259"), "table\n").unwrap();
    std::fs::create_dir(volume.join("lost+found")).unwrap();
    std::os::unix::fs::symlink(&outside, volume.join("old/escape")).unwrap();
    let pod = as_host_path(
        Manifest::example("volume-permissions.yaml"),
        "      emptyDir: {}\n",
        &volume,
    );
    let init = "postgresql-with-volume-permissions-volume-permissions";
    let app = "postgresql-with-volume-permissions-postgresql";
    kube.play_ok(&pod);
    kube.expect_exited(init, 0);
    kube.expect_running(app);
    kube.expect_in_order(&[init, app]);

    let mut wrong = Vec::new();
    for entry in ["", "data", "old", "old/base", "old/base/1259", "old/escape"] {
        if owner_of(&volume.join(entry)) != (1001, 1001) {
            wrong.push(format!("{entry}: {:?}", owner_of(&volume.join(entry))));
        }
    }
    let data_mode = std::fs::metadata(volume.join("data"))
        .unwrap()
        .permissions()
        .mode();
    if !wrong.is_empty() || data_mode & 0o7777 != 0o700 {
        kube.fail(&format!(
            "everything but lost+found should belong to 1001:1001 and data be 0700 \
             (is {data_mode:o}): {wrong:?}"
        ));
    }
    if owner_of(&volume.join("lost+found")) != (0, 0) || owner_of(&outside) != (0, 0) {
        kube.fail(&format!(
            "lost+found {:?} and the file the link points to {:?} must keep root",
            owner_of(&volume.join("lost+found")),
            owner_of(&outside)
        ));
    }

    // The pod restarts: the volume's top has the owner, so the tree is not walked again.
    let ctime = |path: &Path| std::fs::symlink_metadata(path).unwrap().ctime_nsec();
    let before = ctime(&volume.join("old/base/1259"));
    kube.down();
    kube.play_ok(&pod);
    kube.expect_exited(init, 0);
    kube.expect_log(init, "its tree is left as is (--if-root-differs)");
    if ctime(&volume.join("old/base/1259")) != before {
        kube.fail("a restart must not change the files again");
    }
}

#[test]
fn seed_config_once_seeds_a_new_volume_and_keeps_an_edited_copy() {
    use std::os::unix::fs::PermissionsExt;
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "seed_config_once_seeds_a_new_volume_and_keeps_an_edited_copy",
        &[],
    ) else {
        return;
    };
    let volume = host_volume(&kube, "data", Some(65532));
    let pod = as_host_path(
        Manifest::example("seed-config-once.yaml"),
        "      emptyDir: {}  # a PersistentVolumeClaim in a real deployment\n",
        &volume,
    );
    let containers = [
        "seed-config-once-seed",
        "seed-config-once-marker",
        "seed-config-once-app",
    ];
    kube.play_ok(&pod);
    kube.expect_exited(containers[0], 0);
    kube.expect_exited(containers[1], 0);
    kube.expect_running(containers[2]);
    kube.expect_in_order(&containers);
    let read = |name: &str| std::fs::read_to_string(volume.join(name)).unwrap_or_default();
    let mode = std::fs::metadata(volume.join("app.conf"))
        .map(|meta| meta.permissions().mode() & 0o7777)
        .unwrap_or(0);
    if read("app.conf") != "port = 8080\nlog_level = info\n" || mode != 0o640 {
        kube.fail(&format!("app.conf (mode {mode:o}):\n{}", read("app.conf")));
    }
    if read("instance.conf") != "instance = seed-config-once\n" {
        kube.fail(&format!("instance.conf:\n{}", read("instance.conf")));
    }
    if std::fs::read_dir(&volume).unwrap().count() != 2 {
        kube.fail("the volume should hold app.conf and instance.conf only");
    }

    // The application edits its copy; the next start of the pod keeps it.
    std::fs::write(volume.join("app.conf"), "port = 9090\n").unwrap();
    kube.down();
    kube.play_ok(&pod);
    kube.expect_exited(containers[0], 0);
    kube.expect_exited(containers[1], 0);
    if read("app.conf") != "port = 9090\n"
        || read("instance.conf") != "instance = seed-config-once\n"
    {
        kube.fail(&format!(
            "a restart must keep the edited app.conf:\n{}",
            read("app.conf")
        ));
    }
}

#[test]
fn install_into_app_image_copies_with_the_binary_the_app_image_lacks() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "install_into_app_image_copies_with_the_binary_the_app_image_lacks",
        &[],
    ) else {
        return;
    };
    // The application's image: its configuration and nothing else, no shell, no initbox.
    let app_image = "example.test/app:1.4";
    let conf = kube.path("context/appconf");
    std::fs::create_dir_all(conf.join("conf.d")).unwrap();
    std::fs::write(conf.join("app.conf"), "listen = 8080\n").unwrap();
    std::fs::write(conf.join("conf.d/extra.conf"), "debug = false\n").unwrap();
    kube.build_from_text(app_image, "FROM scratch\nCOPY appconf /opt/app/conf\n");
    let tools = host_volume(&kube, "tools", Some(65532));
    let work = host_volume(&kube, "work", Some(65532));
    let pod = Manifest::example("install-into-app-image.yaml").patch(
        "      image: ghcr.io/initbox/initbox:0.1\n      command: [\"/tools/initbox\"]\n",
        &format!("      image: {app_image}\n      command: [\"/tools/initbox\"]\n"),
    );
    let pod = as_host_path(
        pod.patch(
            "    - name: tools\n      emptyDir: {}\n",
            "    - name: tools\n      TOOLS\n",
        ),
        "      TOOLS\n",
        &tools,
    );
    let pod = as_host_path(pod, "      emptyDir: {}\n", &work);
    let containers = [
        "install-into-app-image-install-initbox",
        "install-into-app-image-copy-conf",
        "install-into-app-image-app",
    ];
    kube.play_ok(&pod);
    kube.expect_exited(containers[0], 0);
    kube.expect_exited(containers[1], 0);
    kube.expect_running(containers[2]);
    kube.expect_in_order(&containers);
    let installed = std::fs::read(tools.join("initbox")).unwrap_or_default();
    let binary = std::fs::read(static_binary().unwrap()).unwrap();
    if installed != binary {
        kube.fail("/tools/initbox should be the image's binary");
    }
    let read = |name: &str| std::fs::read_to_string(work.join(name)).unwrap_or_default();
    if read("conf/app.conf") != "listen = 8080\n"
        || read("conf/conf.d/extra.conf") != "debug = false\n"
    {
        kube.fail(&format!(
            "/work/conf should hold the app image's configuration: {:?}",
            std::fs::read_dir(&work).map(|d| d.count())
        ));
    }
}

/// vm.max_map_count as it was, put back when the test ends however it ends: the key is the
/// whole machine's.
struct MaxMapCount(String);

const MAX_MAP_COUNT: &str = "/proc/sys/vm/max_map_count";

impl MaxMapCount {
    fn save() -> MaxMapCount {
        MaxMapCount(std::fs::read_to_string(MAX_MAP_COUNT).unwrap())
    }
    fn set(&self, value: u64) {
        std::fs::write(MAX_MAP_COUNT, value.to_string()).unwrap();
    }
    fn get(&self) -> u64 {
        std::fs::read_to_string(MAX_MAP_COUNT)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for MaxMapCount {
    fn drop(&mut self) {
        let _ = std::fs::write(MAX_MAP_COUNT, self.0.trim());
    }
}

#[test]
fn elasticsearch_sysctl_raises_max_map_count_only_where_it_is_lower() {
    let _serial = crate::support::one_at_a_time();
    let Some(kube) = KubePlay::new(
        "elasticsearch_sysctl_raises_max_map_count_only_where_it_is_lower",
        &[],
    ) else {
        return;
    };
    let saved = MaxMapCount::save();
    let init = "elasticsearch-sysctl-sysctl";
    let app = "elasticsearch-sysctl-elasticsearch";
    let example = Manifest::example("elasticsearch-sysctl.yaml");
    let unprivileged =
        || Manifest::example("elasticsearch-sysctl.yaml").patch("        privileged: true\n", "");

    // A node with the kernel's default: only the privileged container can raise it.
    saved.set(65530);
    if kube.play(&unprivileged()).code == 0 {
        kube.fail("without privileges, raising vm.max_map_count must fail");
    }
    kube.expect_exited(init, 1);
    kube.expect_log(init, "privileged");
    kube.expect_never_started(app);
    kube.down();
    kube.play_ok(&example);
    kube.expect_exited(init, 0);
    kube.expect_running(app);
    if saved.get() != 262_144 {
        kube.fail(&format!("vm.max_map_count is {}, not 262144", saved.get()));
    }
    kube.down();

    // A node its administrator prepared: nothing to write, so no privileges are needed,
    // and a higher value is never lowered.
    saved.set(524_288);
    kube.play_ok(&unprivileged());
    kube.expect_exited(init, 0);
    kube.expect_running(app);
    if saved.get() != 524_288 {
        kube.fail(&format!("vm.max_map_count is {}, not 524288", saved.get()));
    }
}
