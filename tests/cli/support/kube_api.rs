//! A real Kubernetes API server on 127.0.0.1 for the Kubernetes commands: kube-apiserver as
//! `tests/servers/kube-apiserver build` builds it from its Go module, over Debian's etcd,
//! with TLS from a CA of the test's own, RBAC on, and a service-account signing key. One
//! server per test binary ([`shared`]); each test works in a namespace of its own
//! ([`KubeApi::namespace`]). Nothing schedules pods or runs controllers there: the tests
//! write pod, Job and Deployment status as a kubelet and the controllers would.
//!
//! The tests talk to it as the admin (a static token of `system:masters`), and hand
//! initbox a service account's files laid out as the kubelet lays them out
//! ([`ServiceAccount`]): `token`, `ca.crt` and `namespace` as links into a `..data`
//! directory that is swapped by renaming a link, so a rotated token appears at once.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{TlsFiles, free_port, skip};

/// How long etcd and the API server may take to answer (about 4 s when the machine is idle).
const START_LIMIT: Duration = Duration::from_secs(120);

/// The issuer and audience of the service-account tokens, as in a cluster.
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";

pub struct KubeApi {
    pub port: u16,
    dir: tempfile::TempDir,
    admin_token: String,
    client: reqwest::blocking::Client,
    /// etcd's and the API server's.
    pids: Vec<u32>,
}

static SHARED: OnceLock<Option<KubeApi>> = OnceLock::new();

/// The API server of this test binary, started by the first test that asks; `None` after
/// [`skip`] said why it cannot run here.
pub fn shared() -> Option<&'static KubeApi> {
    SHARED
        .get_or_init(|| {
            let api = KubeApi::start();
            stop_shared_at_exit();
            api
        })
        .as_ref()
}

/// Stops the servers and removes their files when the test binary exits (a static is
/// never dropped; were the binary killed instead, PR_SET_PDEATHSIG still stops them).
#[allow(unsafe_code)]
fn stop_shared_at_exit() {
    extern "C" fn stop() {
        if let Some(Some(api)) = SHARED.get() {
            api.stop();
        }
    }
    // SAFETY: atexit(3) registers a plain function; `stop` neither panics across the FFI
    // boundary nor unwinds.
    unsafe {
        libc::atexit(stop);
    }
}

/// The kube-apiserver binary the project's script built; None (after [`skip`]) when it
/// has not been built.
fn apiserver_binary() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/kube-apiserver");
    let output = Command::new("bash")
        .arg(&script)
        .arg("path")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        skip("needs kube-apiserver: run tests/servers/kube-apiserver build (Go, about 10 min)");
        return None;
    }
    Some(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim(),
    ))
}

fn etcd_binary() -> Option<PathBuf> {
    let found = ["/usr/bin/etcd", "/usr/local/bin/etcd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| path.exists());
    if found.is_none() {
        skip("needs etcd (apt-get install etcd-server)");
    }
    found
}

impl KubeApi {
    /// Starts etcd and the API server from a thread that never ends: the servers die with
    /// the thread that started them (PR_SET_PDEATHSIG), which must not be a test's own.
    fn start() -> Option<KubeApi> {
        let apiserver = apiserver_binary()?;
        let etcd = etcd_binary()?;
        let (started, receive) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            started.send(KubeApi::launch(&apiserver, &etcd)).unwrap();
            loop {
                std::thread::park();
            }
        });
        match receive.recv().unwrap() {
            Ok(api) => Some(api),
            Err(message) => panic!("{message}"),
        }
    }

    fn launch(apiserver: &Path, etcd: &Path) -> Result<KubeApi, String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let tls = TlsFiles::new(&path);
        write_client_certificate(&path);
        let signing = rcgen::KeyPair::generate().unwrap();
        std::fs::write(path.join("sa.key"), signing.serialize_pem()).unwrap();
        std::fs::write(path.join("sa.pub"), signing.public_key_pem()).unwrap();
        let admin_token = format!("admin-{:016x}", fastrand::u64(..));
        std::fs::write(
            path.join("tokens.csv"),
            format!("{admin_token},admin,admin-uid,system:masters\n"),
        )
        .unwrap();
        let etcd_client = free_port("127.0.0.1");
        let etcd_peer = free_port("127.0.0.1");
        let port = free_port("127.0.0.1");
        let log = |name: &str| std::fs::File::create(path.join(name)).unwrap();
        let etcd_child = spawn_dying_with_us(
            Command::new(etcd)
                .args(["--name", "test", "--unsafe-no-fsync", "--data-dir"])
                .arg(path.join("etcd"))
                .arg(format!(
                    "--listen-client-urls=http://127.0.0.1:{etcd_client}"
                ))
                .arg(format!(
                    "--advertise-client-urls=http://127.0.0.1:{etcd_client}"
                ))
                .arg(format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"))
                .arg(format!(
                    "--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"
                ))
                .arg(format!(
                    "--initial-cluster=test=http://127.0.0.1:{etcd_peer}"
                ))
                .stdout(log("etcd.log"))
                .stderr(log("etcd.log")),
        );
        let apiserver_child = spawn_dying_with_us(
            Command::new(apiserver)
                .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_client}"))
                .args([
                    "--bind-address=127.0.0.1",
                    "--advertise-address=127.0.0.1",
                    &format!("--secure-port={port}"),
                    "--anonymous-auth=false",
                    "--authorization-mode=RBAC",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--endpoint-reconciler-type=none",
                    "--profiling=false",
                    &format!("--service-account-issuer={ISSUER}"),
                    "-v=1",
                ])
                .arg(format!("--tls-cert-file={}", tls.cert.display()))
                .arg(format!("--tls-private-key-file={}", tls.key.display()))
                .arg(format!(
                    "--client-ca-file={}",
                    path.join("client-ca.pem").display()
                ))
                .arg(format!(
                    "--token-auth-file={}",
                    path.join("tokens.csv").display()
                ))
                .arg(format!(
                    "--service-account-key-file={}",
                    path.join("sa.pub").display()
                ))
                .arg(format!(
                    "--service-account-signing-key-file={}",
                    path.join("sa.key").display()
                ))
                .arg(format!("--cert-dir={}", path.join("certs").display()))
                .stdout(log("kube-apiserver.log"))
                .stderr(log("kube-apiserver.log")),
        );
        let mut children = [etcd_child, apiserver_child];
        let api = KubeApi {
            port,
            dir,
            admin_token,
            client: client_trusting(&tls.ca),
            pids: children.iter().map(Child::id).collect(),
        };
        api.wait_until_ready(&mut children)?;
        Ok(api)
    }

    /// Polls /readyz until it says ok.
    fn wait_until_ready(&self, children: &mut [Child]) -> Result<(), String> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            if let Ok(response) = self
                .client
                .get(self.url("/readyz"))
                .bearer_auth(&self.admin_token)
                .send()
                && response.status().is_success()
            {
                return Ok(());
            }
            for child in children.iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!(
                        "{status} from etcd or kube-apiserver:\n{}",
                        self.logs()
                    ));
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "kube-apiserver was not ready within {START_LIMIT:?}:\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The ends of etcd's and the API server's logs.
    pub fn logs(&self) -> String {
        format!(
            "etcd:\n{}\nkube-apiserver:\n{}",
            tail(&self.dir.path().join("etcd.log")),
            tail(&self.dir.path().join("kube-apiserver.log"))
        )
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// The CA that signed the API server's certificate.
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client certificate and its key (PEM) for the user `cert-admin` in the group
    /// `system:masters`, signed by the CA the API server takes client certificates from.
    pub fn client_certificate(&self) -> (PathBuf, PathBuf) {
        (
            self.dir.path().join("client.pem"),
            self.dir.path().join("client.key"),
        )
    }

    /// A request as the admin; the status and the JSON answer (null when there is none).
    pub fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let content_type = if method == "PATCH" {
            "application/merge-patch+json"
        } else {
            "application/json"
        };
        self.admin_with(method, path, body, content_type)
    }

    pub fn admin_with(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        content_type: &str,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request
                .header("Content-Type", content_type)
                .body(body.to_string());
        }
        let response = request.send().expect("a request to kube-apiserver");
        let status = response.status().as_u16();
        let text = response.text().unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// [`KubeApi::admin`], failing the test unless the answer is a success.
    #[track_caller]
    pub fn must(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.admin(method, path, body);
        assert!(
            (200..300).contains(&status),
            "{method} {path}: HTTP {status}: {answer}"
        );
        answer
    }

    /// Creates an object in `namespace` from its manifest (apiVersion and kind name the
    /// collection).
    #[track_caller]
    pub fn create(&self, namespace: &str, object: Value) -> Value {
        let path = collection(namespace, &object);
        self.must("POST", &path, Some(object))
    }

    /// Writes the status subresource as a controller or the kubelet would: a strategic
    /// merge for the types that have one (pod conditions merge by type), a merge patch else.
    #[track_caller]
    pub fn patch_status(&self, namespace: &str, resource: &str, name: &str, status: Value) {
        let (prefix, strategic) = match resource {
            "pods" => ("/api/v1", true),
            "jobs" => ("/apis/batch/v1", false),
            _ => ("/apis/apps/v1", true),
        };
        let content_type = if strategic {
            "application/strategic-merge-patch+json"
        } else {
            "application/merge-patch+json"
        };
        let path = format!("{prefix}/namespaces/{namespace}/{resource}/{name}/status");
        let (code, answer) = self.admin_with(
            "PATCH",
            &path,
            Some(json!({ "status": status })),
            content_type,
        );
        assert!(
            (200..300).contains(&code),
            "PATCH {path}: HTTP {code}: {answer}"
        );
    }

    /// A fresh namespace for one test, with its `default` service account (nothing else
    /// creates it here: no controller manager runs).
    pub fn namespace(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        self.must(
            "POST",
            "/api/v1/namespaces",
            Some(json!({ "metadata": { "name": name } })),
        );
        self.create(
            &name,
            json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": "default" } }),
        );
        name
    }

    /// A service account `name` in `namespace` that may do what `rules` (RBAC PolicyRules)
    /// allow there, with its files laid out as the kubelet mounts them.
    pub fn service_account(&self, namespace: &str, name: &str, rules: Value) -> ServiceAccount {
        self.create(
            namespace,
            json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": { "name": name } }),
        );
        self.create(
            namespace,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": { "name": name },
                "rules": rules,
            }),
        );
        self.create(
            namespace,
            json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": { "name": name },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name },
                "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": namespace }],
            }),
        );
        ServiceAccount::for_existing(self, namespace, name)
    }

    /// A token of the service account from the TokenRequest API, as the kubelet asks for
    /// one; bound to `secret` when given, so that deleting that Secret revokes it.
    pub fn token(&self, namespace: &str, account: &str, secret: Option<(&str, &str)>) -> String {
        let mut spec = json!({ "audiences": [ISSUER], "expirationSeconds": 3600 });
        if let Some((name, uid)) = secret {
            spec["boundObjectRef"] =
                json!({ "apiVersion": "v1", "kind": "Secret", "name": name, "uid": uid });
        }
        let answer = self.must(
            "POST",
            &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{account}/token"),
            Some(json!({
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec,
            })),
        );
        answer["status"]["token"].as_str().unwrap().to_owned()
    }
}

impl KubeApi {
    /// SIGKILL to the API server and etcd (nothing of theirs is kept), and their files
    /// removed; never panics.
    #[allow(unsafe_code)]
    fn stop(&self) {
        for pid in &self.pids {
            // SAFETY: kill(2) takes plain integers and touches no memory of ours.
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

/// The collection an object is created in: `/api/v1/namespaces/NS/pods`, …
fn collection(namespace: &str, object: &Value) -> String {
    let api_version = object["apiVersion"].as_str().expect("apiVersion");
    let kind = object["kind"].as_str().expect("kind");
    let plural = match kind {
        "Endpoints" => "endpoints".to_owned(),
        kind => format!("{}s", kind.to_ascii_lowercase()),
    };
    let prefix = if api_version == "v1" {
        "/api/v1".to_owned()
    } else {
        format!("/apis/{api_version}")
    };
    format!("{prefix}/namespaces/{namespace}/{plural}")
}

/// The files a pod's service account is mounted as, at
/// /var/run/secrets/kubernetes.io/serviceaccount in a pod and in a temporary directory
/// here, in the kubelet's layout: each file a link into `..data`, itself a link to a
/// timestamped directory that is replaced whole.
pub struct ServiceAccount {
    pub dir: tempfile::TempDir,
    pub namespace: String,
    pub name: String,
    port: u16,
}

/// A fresh namespace with a service account `name` that may do what `rules` allow there;
/// `None` after [`skip`] said why no API server can run here.
pub fn namespace_with_account(
    name: &str,
    rules: Value,
) -> Option<(&'static KubeApi, String, ServiceAccount)> {
    let api = shared()?;
    let namespace = api.namespace();
    let account = api.service_account(&namespace, name, rules);
    Some((api, namespace, account))
}

impl ServiceAccount {
    /// initbox as the pod of this service account runs it: its environment, its files.
    pub fn initbox(&self, sandbox: &super::Sandbox) -> super::Cmd {
        let mut command = sandbox.initbox();
        for (key, value) in self.env() {
            command = command.env(key, value);
        }
        command
    }

    /// The files of a service account that exists already (its Role and RoleBinding made
    /// by the caller), with a fresh token.
    pub fn for_existing(api: &KubeApi, namespace: &str, name: &str) -> ServiceAccount {
        let account = ServiceAccount {
            dir: tempfile::tempdir().unwrap(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            port: api.port,
        };
        let token = api.token(namespace, name, None);
        account.mount(&token, &std::fs::read_to_string(api.ca()).unwrap());
        account
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The environment a pod has: the API server's address, and where initbox finds the
    /// service account's files.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KUBERNETES_SERVICE_HOST", "127.0.0.1".to_owned()),
            ("KUBERNETES_SERVICE_PORT", self.port.to_string()),
            (
                "INITBOX_SERVICE_ACCOUNT_DIR",
                self.dir.path().display().to_string(),
            ),
        ]
    }

    /// Writes a new token (and the CA and namespace) into a fresh timestamped directory and
    /// swaps `..data` to it with one rename, as the kubelet rotates a projected token.
    pub fn mount(&self, token: &str, ca: &str) {
        static GENERATION: AtomicU32 = AtomicU32::new(0);
        let root = self.dir.path();
        let generation = format!(
            "..2026_12_02_00_00_00.{}",
            GENERATION.fetch_add(1, Ordering::Relaxed)
        );
        let data = root.join(&generation);
        std::fs::create_dir(&data).unwrap();
        std::fs::write(data.join("token"), token).unwrap();
        std::fs::write(data.join("ca.crt"), ca).unwrap();
        std::fs::write(data.join("namespace"), &self.namespace).unwrap();
        let staged = root.join("..data_tmp");
        let _ = std::fs::remove_file(&staged);
        std::os::unix::fs::symlink(&generation, &staged).unwrap();
        let old = std::fs::read_link(root.join("..data")).ok();
        std::fs::rename(&staged, root.join("..data")).unwrap();
        for file in ["token", "ca.crt", "namespace"] {
            let link = root.join(file);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(file), &link).unwrap();
            }
        }
        if let Some(old) = old {
            std::fs::remove_dir_all(root.join(old)).unwrap();
        }
    }
}

/// A blocking client that trusts `ca` only.
pub fn client_trusting(ca: &Path) -> reqwest::blocking::Client {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls_pemfile_certs(&pem) {
        roots.add(cert).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::blocking::Client::builder()
        .use_preconfigured_tls(config)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The certificates of a PEM text.
fn rustls_pemfile_certs(pem: &[u8]) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|cert| cert.unwrap())
        .collect()
}

/// Spawns a server that the kernel kills when this test process ends, however it ends: a
/// panicking test binary must not leave an API server and etcd behind.
#[allow(unsafe_code)]
fn spawn_dying_with_us(command: &mut Command) -> Child {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl(2) is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    command
        .stdin(Stdio::null())
        .spawn()
        .expect("starting a server")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The CA the API server takes client certificates from (`client-ca.pem`), and one
/// certificate it signed for `cert-admin` in `system:masters` (`client.pem`, `client.key`).
fn write_client_certificate(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "initbox test client CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "cert-admin");
    params
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("client-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("client.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("client.key"), key.serialize_pem()).unwrap();
}
