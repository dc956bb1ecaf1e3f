//! The pod's own resolver files, not overrides: inside a network namespace whose
//! /etc/resolv.conf (bind-mounted by `ip netns exec`) has Kubernetes' search list and ndots,
//! with dnsmasq as the cluster DNS, the short name `mydb` must resolve once its record
//! appears.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{Sandbox, need_root};

/// A network namespace with its own resolv.conf and a dnsmasq on 127.0.0.1:53.
struct PodNetwork {
    name: String,
    dnsmasq: Child,
    records: tempfile::TempDir,
}

impl PodNetwork {
    fn create() -> Option<Self> {
        if Command::new("dnsmasq").arg("--version").output().is_err() {
            crate::support::skip("dnsmasq is not installed");
            return None;
        }
        let name = format!("initbox-t{}", std::process::id());
        let etc = format!("/etc/netns/{name}");
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            format!("{etc}/resolv.conf"),
            "search default.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 127.0.0.1\noptions ndots:5\n",
        )
        .unwrap();
        std::fs::write(format!("{etc}/hosts"), "127.0.0.1 localhost\n").unwrap();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        let records = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(records.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let dnsmasq = Command::new("ip")
            .args([
                "netns",
                "exec",
                &name,
                "dnsmasq",
                "-k",
                "--conf-file=/dev/null",
            ])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--port=53",
                "--listen-address=127.0.0.1",
            ])
            .args([
                "--bind-interfaces",
                "--local=/cluster.local/",
                "--local-ttl=0",
            ])
            .args(["--neg-ttl=1", "--pid-file=", "--user=root"])
            .arg(format!("--hostsdir={}", records.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Some(PodNetwork {
            name,
            dnsmasq,
            records,
        })
    }

    /// Publishes a record the way a new Service appears: written aside, then renamed in.
    fn publish(&self, ip: &str, name: &str) {
        let staged = self.records.path().join(".staged");
        std::fs::write(&staged, format!("{ip} {name}\n")).unwrap();
        std::fs::rename(&staged, self.records.path().join("service")).unwrap();
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let _ = self.dnsmasq.kill();
        let _ = self.dnsmasq.wait();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

fn run(args: &[&str]) {
    let status = Command::new(args[0]).args(&args[1..]).status().unwrap();
    assert!(status.success(), "{args:?} failed");
}

#[test]
fn short_name_resolves_through_the_pods_resolv_conf_once_the_service_appears() {
    let _serial = crate::support::one_at_a_time();
    if !need_root() {
        return;
    }
    let Some(pod) = PodNetwork::create() else {
        return;
    };
    let sandbox = Sandbox::new();
    let mut initbox = sandbox
        .initbox()
        .args(["wait-for-dns", "mydb", "--timeout", "60s"])
        .wrapped_in(&["ip", "netns", "exec", &pod.name]);
    initbox.command.env_remove("INITBOX_RESOLV_CONF");
    initbox.command.env_remove("INITBOX_HOSTS_FILE");
    let waiter = initbox.spawn();
    waiter.wait_for_stderr("mydb is not ready", Duration::from_secs(20));
    pod.publish("10.0.0.5", "mydb.default.svc.cluster.local");
    waiter
        .wait()
        .assert_code(0)
        .assert_stderr_contains("mydb is ready")
        .assert_stderr_contains("resolved to 10.0.0.5");
}
