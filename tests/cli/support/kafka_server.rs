//! A real Apache Kafka 4 broker on 127.0.0.1, for wait-for-kafka: one KRaft node that is
//! both broker and controller, from the jars `tests/servers/kafka fetch` brings from Maven
//! Central (cached under target/ by version), with five listeners: PLAINTEXT, CONTROLLER,
//! SSL (a test CA's certificate for localhost), SASL_PLAINTEXT (SCRAM-SHA-512 and PLAIN for
//! [`USER`]) and SASL_SSL (both at once). Each start is seconds of JVM, so the tests that only read share one
//! broker ([`shared`]), and the others start as few as they can.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{TlsFiles, free_port, kill, skip};

/// The SASL user every broker knows, by SCRAM-SHA-512 and by PLAIN.
pub const USER: &str = "app";
pub const PASSWORD: &str = "kafka-pw-5531";

/// What the broker logs once its listeners accept requests.
const STARTED: &str = "Kafka Server started";

/// The log4j2 configuration: INFO to the console, which the harness sends to a file.
const LOG4J2: &str = "status = error\n\
    appender.console.type = Console\n\
    appender.console.name = STDOUT\n\
    appender.console.layout.type = PatternLayout\n\
    appender.console.layout.pattern = [%d] %p %m (%c)%n\n\
    rootLogger.level = INFO\n\
    rootLogger.appenderRef.stdout.ref = STDOUT\n";

/// The directory of the broker's jars, fetched once per test binary; None (after saying
/// why, see [`skip`]) when Java or the jars cannot be had.
pub fn libs() -> Option<&'static Path> {
    static LIBS: OnceLock<Option<PathBuf>> = OnceLock::new();
    let libs = LIBS.get_or_init(|| {
        let java = Command::new("java")
            .arg("-version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !java {
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/servers/kafka");
        let output = Command::new("bash")
            .arg(&script)
            .arg("fetch")
            .stdin(Stdio::null())
            .output()
            .ok()?;
        if !output.status.success() {
            eprintln!(
                "tests/servers/kafka fetch failed:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
            return None;
        }
        Some(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim(),
        ))
    });
    if libs.is_none() {
        skip("needs Java and the Kafka jars (tests/servers/kafka fetch, with Maven)");
    }
    libs.as_deref()
}

pub struct KafkaServer {
    pub port: u16,
    pub controller_port: u16,
    pub ssl_port: u16,
    pub sasl_port: u16,
    pub sasl_ssl_port: u16,
    pub tls: TlsFiles,
    libs: &'static Path,
    dir: tempfile::TempDir,
    child: Option<Child>,
    formatted: bool,
    starts: u32,
}

static SHARED: std::sync::Mutex<Option<KafkaServer>> = std::sync::Mutex::new(None);
static SHARED_STARTED: std::sync::Once = std::sync::Once::new();

/// The broker the read-only tests share: started by the first test that asks, stopped
/// (and its directory removed) when the test binary exits. Returns its listeners, or None
/// when Kafka is missing.
pub fn shared() -> Option<Listeners> {
    libs()?;
    SHARED_STARTED.call_once(|| {
        let server = KafkaServer::start();
        *SHARED.lock().unwrap() = server;
        stop_shared_at_exit();
    });
    let guard = SHARED.lock().unwrap();
    Some(guard.as_ref().expect("the shared Kafka broker").listeners())
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

/// Where a broker listens, as wait-for-kafka arguments.
#[derive(Clone)]
pub struct Listeners {
    /// `127.0.0.1:PORT` of the PLAINTEXT listener.
    pub plaintext: String,
    pub controller: String,
    /// `localhost:PORT`: the name the certificate is for.
    pub ssl: String,
    pub sasl: String,
    /// `localhost:PORT`.
    pub sasl_ssl: String,
    pub ca: PathBuf,
}

impl KafkaServer {
    pub fn listeners(&self) -> Listeners {
        Listeners {
            plaintext: self.address(),
            controller: format!("127.0.0.1:{}", self.controller_port),
            ssl: format!("localhost:{}", self.ssl_port),
            sasl: format!("127.0.0.1:{}", self.sasl_port),
            sasl_ssl: format!("localhost:{}", self.sasl_ssl_port),
            ca: self.tls.ca.clone(),
        }
    }

    /// A broker on free ports, started and accepting requests; None when Kafka is missing.
    pub fn start() -> Option<KafkaServer> {
        let libs = libs()?;
        for _ in 0..5 {
            let mut server = KafkaServer::unstarted(libs);
            if server.try_start() {
                return Some(server);
            }
        }
        panic!("Kafka did not start on any of five sets of free ports");
    }

    /// A broker to be started later on its ports with [`KafkaServer::restart`].
    pub fn later() -> Option<KafkaServer> {
        Some(KafkaServer::unstarted(libs()?))
    }

    fn unstarted(libs: &'static Path) -> KafkaServer {
        let dir = tempfile::tempdir().unwrap();
        let tls = TlsFiles::new(dir.path());
        // Kafka's PEM key store is one file: the private key (PKCS#8) and the chain.
        let keystore = format!(
            "{}{}",
            std::fs::read_to_string(&tls.key).unwrap(),
            std::fs::read_to_string(&tls.cert).unwrap()
        );
        std::fs::write(dir.path().join("keystore.pem"), keystore).unwrap();
        KafkaServer {
            port: free_port("127.0.0.1"),
            controller_port: free_port("127.0.0.1"),
            ssl_port: free_port("127.0.0.1"),
            sasl_port: free_port("127.0.0.1"),
            sasl_ssl_port: free_port("127.0.0.1"),
            tls,
            libs,
            dir,
            child: None,
            formatted: false,
            starts: 0,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same ports, with the same data; panics when it cannot.
    pub fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "Kafka did not start again on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn java(&self) -> Command {
        let mut java = Command::new("java");
        java.arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            // Small and quick to start: the tests need a broker, not throughput.
            .args([
                "-Xmx256m",
                "-Xms64m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
            ])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.path().join("log4j2.properties").display()
            ))
            .stdin(Stdio::null());
        java
    }

    fn write_config(&self) -> PathBuf {
        let dir = self.dir.path();
        let (port, controller) = (self.port, self.controller_port);
        let (ssl, sasl, sasl_ssl) = (self.ssl_port, self.sasl_port, self.sasl_ssl_port);
        let text = format!(
            "process.roles=broker,controller\n\
             node.id=1\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},\
             SSL://127.0.0.1:{ssl},SASL_PLAINTEXT://127.0.0.1:{sasl},\
             SASL_SSL://127.0.0.1:{sasl_ssl}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},SSL://localhost:{ssl},\
             SASL_PLAINTEXT://127.0.0.1:{sasl},SASL_SSL://localhost:{sasl_ssl}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,\
             SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL\n\
             controller.quorum.voters=1@127.0.0.1:{controller}\n\
             log.dirs={data}\n\
             offsets.topic.replication.factor=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n\
             listener.name.ssl.ssl.keystore.type=PEM\n\
             listener.name.ssl.ssl.keystore.location={keystore}\n\
             listener.name.sasl_plaintext.sasl.enabled.mechanisms=SCRAM-SHA-512,PLAIN\n\
             listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required;\n\
             listener.name.sasl_plaintext.plain.sasl.jaas.config=\
             org.apache.kafka.common.security.plain.PlainLoginModule required \
             user_{USER}=\"{PASSWORD}\";\n\
             listener.name.sasl_ssl.ssl.keystore.type=PEM\n\
             listener.name.sasl_ssl.ssl.keystore.location={keystore}\n\
             listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-512\n\
             listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=\
             org.apache.kafka.common.security.scram.ScramLoginModule required;\n",
            data = dir.join("data").display(),
            keystore = dir.join("keystore.pem").display(),
        );
        std::fs::write(dir.join("log4j2.properties"), LOG4J2).unwrap();
        let file = dir.join("server.properties");
        std::fs::write(&file, text).unwrap();
        file
    }

    /// Formats the log dir once (KRaft refuses an unformatted one); a restart keeps it.
    fn format(&mut self, config: &Path) {
        if self.formatted {
            return;
        }
        let output = self
            .java()
            .args([
                "kafka.tools.StorageTool",
                "format",
                "-t",
                &cluster_id(),
                "-c",
            ])
            .arg(config)
            // KRaft keeps SCRAM credentials in the metadata log: they are written here.
            .arg("--add-scram")
            .arg(format!("SCRAM-SHA-512=[name={USER},password={PASSWORD}]"))
            .output()
            .expect("running kafka.tools.StorageTool");
        assert!(
            output.status.success(),
            "formatting Kafka's storage failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        self.formatted = true;
    }

    /// Starts and waits until the broker logs that it serves; false when a port was taken.
    fn try_start(&mut self) -> bool {
        self.stop();
        self.starts += 1;
        let config = self.write_config();
        self.format(&config);
        let log = self.log_path();
        let mut child = self
            .java()
            .arg("kafka.Kafka")
            .arg(&config)
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
            .spawn()
            .expect("spawning java");
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains(STARTED) {
                self.child = Some(child);
                return true;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let text = format!(
                    "{text}{}",
                    std::fs::read_to_string(log.with_extension("err")).unwrap_or_default()
                );
                assert!(
                    text.contains("Address already in use"),
                    "Kafka exited ({status}) before it served:\n{text}"
                );
                // A port was taken meanwhile: new ones (the data dir has no port in it).
                self.port = free_port("127.0.0.1");
                self.controller_port = free_port("127.0.0.1");
                self.ssl_port = free_port("127.0.0.1");
                self.sasl_port = free_port("127.0.0.1");
                self.sasl_ssl_port = free_port("127.0.0.1");
                return false;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("Kafka did not start within 90 s:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("console-{}.log", self.starts))
    }

    /// SIGTERM by PID (the broker's controlled shutdown), then waits (SIGKILL after 30 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for KafkaServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A cluster id as Kafka writes them: 16 random bytes in unpadded URL-safe base64, drawn
/// again when it starts with `-` (as Kafka's `Uuid.randomUuid` does), which the storage
/// tool's argument parser would take for an option.
fn cluster_id() -> String {
    use base64::Engine;
    loop {
        let mut bytes = [0u8; 16];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut random| std::io::Read::read_exact(&mut random, &mut bytes))
            .expect("reading /dev/urandom");
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !id.starts_with('-') {
            return id;
        }
    }
}
