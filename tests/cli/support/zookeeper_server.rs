//! A real ZooKeeper 3.8 (Debian's zookeeperd jars) on 127.0.0.1, for wait-for-zookeeper:
//! standalone, or as one member of a three-member ensemble whose peers never start (alive,
//! `imok`, but not serving). The AdminServer stays off (it would take 0.0.0.0:8080).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, kill, skip};

const JARS: &[&str] = &[
    "/usr/share/java/zookeeper.jar",
    // zookeeper.jar's manifest has no slf4j binding: without these two there is no log.
    "/usr/share/java/slf4j-log4j12.jar",
    "/usr/share/java/log4j-1.2.jar",
];

#[derive(Clone)]
pub struct ZkConfig {
    /// `4lw.commands.whitelist`; keep `ruok` in it, the harness waits with it.
    pub whitelist: String,
    /// A member of an ensemble of three whose two peers never start.
    pub without_quorum: bool,
}

impl Default for ZkConfig {
    fn default() -> Self {
        ZkConfig {
            whitelist: "ruok,srvr,mntr".into(),
            without_quorum: false,
        }
    }
}

pub struct ZkServer {
    pub port: u16,
    config: ZkConfig,
    dir: tempfile::TempDir,
    child: Option<Child>,
    starts: u32,
}

/// True when Java and the jars are there; otherwise says so (see [`skip`]).
pub fn available() -> bool {
    let java = Command::new("java")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if java && JARS.iter().all(|jar| Path::new(jar).exists()) {
        return true;
    }
    skip("needs ZooKeeper (Debian package zookeeperd) and Java");
    false
}

impl ZkServer {
    /// A server on a free port, answering `imok`; None when ZooKeeper is missing.
    pub fn start(config: ZkConfig) -> Option<ZkServer> {
        if !available() {
            return None;
        }
        for _ in 0..5 {
            let mut server = ZkServer::unstarted(config.clone(), free_port("127.0.0.1"));
            if server.try_start() {
                return Some(server);
            }
        }
        panic!("ZooKeeper did not start on any of five free ports");
    }

    /// A server to be started later on its port with [`ZkServer::restart`].
    pub fn later(config: ZkConfig) -> Option<ZkServer> {
        if !available() {
            return None;
        }
        Some(ZkServer::unstarted(config, free_port("127.0.0.1")))
    }

    fn unstarted(config: ZkConfig, port: u16) -> ZkServer {
        ZkServer {
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
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.try_start() {
            assert!(
                Instant::now() < deadline,
                "ZooKeeper did not start again on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn write_config(&self) -> PathBuf {
        let dir = self.dir.path();
        let data = dir.join("data");
        let conf = dir.join("conf");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::create_dir_all(&conf).unwrap();
        let _ = std::fs::copy(
            "/etc/zookeeper/conf_example/log4j.properties",
            conf.join("log4j.properties"),
        );
        let mut text = format!(
            "tickTime=2000\ndataDir={}\nclientPort={}\nclientPortAddress=127.0.0.1\n\
             admin.enableServer=false\n4lw.commands.whitelist={}\n",
            data.display(),
            self.port,
            self.config.whitelist
        );
        if self.config.without_quorum {
            std::fs::write(data.join("myid"), "1\n").unwrap();
            text.push_str("initLimit=5\nsyncLimit=2\n");
            for id in 1..=3 {
                text.push_str(&format!(
                    "server.{id}=127.0.0.1:{}:{}\n",
                    free_port("127.0.0.1"),
                    free_port("127.0.0.1")
                ));
            }
        }
        let file = conf.join("zoo.cfg");
        std::fs::write(&file, text).unwrap();
        file
    }

    /// Starts and waits for `imok`; false when the port was taken.
    fn try_start(&mut self) -> bool {
        self.stop();
        self.starts += 1;
        let config = self.write_config();
        let log = self.dir.path().join(format!("console-{}.log", self.starts));
        let mut classpath = vec![self.dir.path().join("conf").display().to_string()];
        classpath.extend(JARS.iter().map(|jar| jar.to_string()));
        let main = if self.config.without_quorum {
            "org.apache.zookeeper.server.quorum.QuorumPeerMain"
        } else {
            "org.apache.zookeeper.server.ZooKeeperServerMain"
        };
        let mut child = Command::new("java")
            .arg("-cp")
            .arg(classpath.join(":"))
            .args(["-Xmx256m", "-Dzookeeper.root.logger=INFO,CONSOLE"])
            .arg(format!("-Dzookeeper.log.dir={}", self.dir.path().display()))
            .arg(main)
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning java");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if four_letter_word(self.port, "ruok") == "imok" {
                self.child = Some(child);
                return true;
            }
            if let Some(status) = child.try_wait().unwrap() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                assert!(
                    text.contains("Address already in use"),
                    "ZooKeeper exited ({status}) before it answered imok:\n{text}"
                );
                return false;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "ZooKeeper did not answer imok within 60 s:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM by PID, then waits for the exit (SIGKILL after 15 s).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        kill(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
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

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends a four-letter word and returns the whole answer ("" when nothing answers).
pub fn four_letter_word(port: u16, word: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(word.as_bytes()).is_err() {
        return String::new();
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

impl ZkServer {
    /// What the running server has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("console-{}.log", self.starts)))
            .unwrap_or_default()
    }
}
