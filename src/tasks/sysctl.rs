//! sysctl: the `sysctl -w vm.max_map_count=262144` of Elasticsearch-style init containers,
//! written to /proc/sys directly and read back, since the kernel may clamp or refuse a
//! value without failing the write.
//!
//! A key already at its value is not written at all, so the command succeeds without
//! privileges on a node that is already set up. A read-only /proc/sys or EPERM is the usual
//! Kubernetes situation (an unprivileged container) and ends at once with the remedy.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::report;

const PROC_SYS: &str = "/proc/sys";

/// Set kernel parameters under /proc/sys and check that the kernel kept them.
#[derive(Debug, Clone, clap::Args)]
pub struct SysctlArgs {
    /// KEY=VALUE: vm.max_map_count=262144, net/ipv4/ip_forward=1, or a value of several
    /// fields ("net.ipv4.ip_local_port_range=1024 65000").
    #[arg(value_name = "KEY=VALUE", required = true, value_parser = parse_setting)]
    pub settings: Vec<Setting>,
    /// Only raise a value: a key whose current value is already at least VALUE is left
    /// alone (Elasticsearch's vm.max_map_count rule). Needs one number per VALUE.
    #[arg(long, env = "INITBOX_IF_LOWER")]
    pub if_lower: bool,
    #[command(flatten)]
    pub then: Then,
}

/// One KEY=VALUE, checked when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// As the user wrote it, for messages: `vm.max_map_count`.
    pub key: String,
    /// The path below /proc/sys: `vm/max_map_count`.
    pub path: PathBuf,
    /// The value's whitespace-separated fields.
    pub fields: Vec<String>,
}

fn parse_setting(text: &str) -> Result<Setting, String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!(
            "'{text}' is not KEY=VALUE (such as vm.max_map_count=262144)"
        ));
    };
    let key = key.trim();
    // procps' rule: when the first separator is a '/', the key is a path and its dots are
    // part of names (net/ipv4/conf/eth0.100/forwarding); otherwise dots separate.
    let path_like = key
        .find(['.', '/'])
        .is_some_and(|at| key[at..].starts_with('/'));
    let parts: Vec<&str> = if path_like {
        key.split('/').collect()
    } else {
        key.split('.').collect()
    };
    let name_ok = |part: &&str| {
        !part.is_empty()
            && *part != ".."
            && *part != "."
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.:@+".contains(&b))
    };
    if key.is_empty() || !parts.iter().all(name_ok) {
        return Err(format!(
            "'{key}' is not a sysctl key (names separated by dots or slashes, such as \
             vm.max_map_count)"
        ));
    }
    let fields: Vec<String> = value.split_whitespace().map(str::to_owned).collect();
    if fields.is_empty() {
        return Err(format!("{key}: the value is empty"));
    }
    Ok(Setting {
        key: key.to_owned(),
        path: parts.iter().collect(),
        fields,
    })
}

impl crate::cli::Task for SysctlArgs {
    async fn execute(self) -> Result<()> {
        run(&self)
    }

    fn then(&self) -> &[OsString] {
        &self.then.command
    }
}

fn run(args: &SysctlArgs) -> Result<()> {
    if args.if_lower {
        // Known before anything is read: --if-lower compares one number.
        for setting in &args.settings {
            if setting.fields.len() != 1 || setting.fields[0].parse::<i128>().is_err() {
                return Err(Error::Usage(format!(
                    "--if-lower compares one number, and {}={} is not one (set keys of \
                     several fields, such as ip_local_port_range, without --if-lower)",
                    setting.key,
                    setting.fields.join(" ")
                )));
            }
        }
    }
    let root = Path::new(PROC_SYS);
    for setting in &args.settings {
        apply(root, setting, args.if_lower)?;
    }
    Ok(())
}

fn apply(root: &Path, setting: &Setting, if_lower: bool) -> Result<()> {
    let key = &setting.key;
    let file = root.join(&setting.path);
    let wanted = setting.fields.join(" ");
    let current = read(&file).map_err(|error| read_error(root, setting, &error))?;
    if current == setting.fields {
        report::info("sysctl.unchanged", format!("{key} = {wanted}: already set"));
        return Ok(());
    }
    if if_lower && at_least(&current, &setting.fields) {
        report::info(
            "sysctl.unchanged",
            format!(
                "{key} = {}: already at least {wanted} (--if-lower)",
                current.join(" ")
            ),
        );
        return Ok(());
    }
    write(&file, &wanted).map_err(|error| write_error(setting, &error))?;
    let now = read(&file).map_err(|error| read_error(root, setting, &error))?;
    let kept = now == setting.fields || (if_lower && at_least(&now, &setting.fields));
    if !kept {
        return Err(Error::Failed(format!(
            "setting {key}: the kernel kept {} instead of {wanted} (the value is out of its \
             range, or clamped by a limit)",
            now.join(" ")
        )));
    }
    report::info(
        "sysctl.set",
        format!("{key} = {} (was {})", now.join(" "), current.join(" ")),
    );
    Ok(())
}

/// One-number values only (checked before): whether the current value reaches the wanted.
fn at_least(current: &[String], wanted: &[String]) -> bool {
    match (current, wanted) {
        ([current], [wanted]) => match (current.parse::<i128>(), wanted.parse::<i128>()) {
            (Ok(current), Ok(wanted)) => current >= wanted,
            _ => false,
        },
        _ => false,
    }
}

fn read(file: &Path) -> io::Result<Vec<String>> {
    let text = fs::read_to_string(file)?;
    Ok(text.split_whitespace().map(str::to_owned).collect())
}

fn write(file: &Path, value: &str) -> io::Result<()> {
    // One write(2) of the whole value: /proc/sys parses each write on its own.
    let mut handle = fs::OpenOptions::new().write(true).open(file)?;
    handle.write_all(format!("{value}\n").as_bytes())
}

/// Keys that belong to a namespace of the pod (network, IPC), which Kubernetes sets through
/// the pod's `securityContext.sysctls` without a privileged container.
fn is_namespaced(path: &Path) -> bool {
    let path = path.to_string_lossy();
    path.starts_with("net/")
        || path.starts_with("fs/mqueue/")
        || path == "kernel/sem"
        || path.starts_with("kernel/shm")
        || path.starts_with("kernel/msg")
}

fn remedy(setting: &Setting) -> String {
    let mut remedy = "run this container with securityContext.privileged: true".to_owned();
    if is_namespaced(&setting.path) {
        remedy.push_str(&format!(
            ", or set {} in the pod's securityContext.sysctls instead (namespaced keys need \
             no privileged container)",
            setting.path.to_string_lossy().replace('/', ".")
        ));
    }
    remedy
}

fn write_error(setting: &Setting, error: &io::Error) -> Error {
    let key = &setting.key;
    let wanted = setting.fields.join(" ");
    match error.raw_os_error() {
        Some(libc::EROFS) | Some(libc::EPERM) | Some(libc::EACCES) => {
            let why = if error.raw_os_error() == Some(libc::EROFS) {
                "/proc/sys is mounted read-only"
            } else {
                "permission denied"
            };
            Error::Failed(format!(
                "cannot set {key}={wanted}: {why}; {}",
                remedy(setting)
            ))
        }
        Some(libc::EINVAL) | Some(libc::ERANGE) => Error::Failed(format!(
            "cannot set {key}={wanted}: the kernel refused the value ({})",
            reason::io(error)
        )),
        _ => Error::Failed(format!("cannot set {key}={wanted}: {}", reason::io(error))),
    }
}

fn read_error(root: &Path, setting: &Setting, error: &io::Error) -> Error {
    let key = &setting.key;
    if error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(libc::ENOTDIR) {
        let mut message = format!(
            "no sysctl key {key} (there is no {})",
            root.join(&setting.path).display()
        );
        if let Some(near) = nearest_key(root, &setting.path) {
            message.push_str(&format!("; did you mean {near}?"));
        }
        return Error::Failed(message);
    }
    if error.raw_os_error() == Some(libc::EISDIR) {
        return Error::Failed(format!(
            "{key} is a group of keys, not a key (its keys are in {})",
            root.join(&setting.path).display()
        ));
    }
    Error::Failed(format!("cannot read {key}: {}", reason::io(error)))
}

/// The existing key nearest to a missing one: the deepest directory of the path that
/// exists, and the name in it closest to the next part (a typo, a wrong group).
fn nearest_key(root: &Path, path: &Path) -> Option<String> {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut dir = root.to_path_buf();
    let mut found: Vec<String> = Vec::new();
    for part in &parts {
        if !dir.join(part).exists() {
            break;
        }
        dir.push(part);
        found.push(part.clone());
    }
    let missing = parts.get(found.len())?;
    let (best, score) = fs::read_dir(&dir)
        .ok()?
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .map(|name| {
            let score = strsim::jaro_winkler(missing, &name);
            (name, score)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if score < 0.85 {
        return None;
    }
    found.push(best);
    Some(found.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_dots_or_slashes() {
        let s = parse_setting("vm.max_map_count=262144").unwrap();
        assert_eq!(s.path, Path::new("vm/max_map_count"));
        assert_eq!(s.fields, ["262144"]);
        let s = parse_setting("net/ipv4/conf/eth0.100/forwarding=1").unwrap();
        assert_eq!(s.path, Path::new("net/ipv4/conf/eth0.100/forwarding"));
        let s = parse_setting("net.ipv4.ip_local_port_range=1024\t 65000").unwrap();
        assert_eq!(s.fields, ["1024", "65000"]);
        for bad in [
            "vm.max_map_count",
            "=1",
            "vm..x=1",
            "../etc/passwd=1",
            "net/../../x=1",
            "/vm/x=1",
            "vm.x=",
            "vm x=1",
        ] {
            assert!(parse_setting(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespaced_keys() {
        for key in [
            "net/core/somaxconn",
            "kernel/shmmax",
            "kernel/sem",
            "fs/mqueue/msg_max",
        ] {
            assert!(is_namespaced(Path::new(key)), "{key}");
        }
        for key in ["vm/max_map_count", "kernel/pid_max", "fs/file-max"] {
            assert!(!is_namespaced(Path::new(key)), "{key}");
        }
    }

    #[test]
    fn a_typo_finds_the_key() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("vm")).unwrap();
        fs::write(root.path().join("vm/max_map_count"), "65530\n").unwrap();
        fs::write(root.path().join("vm/swappiness"), "60\n").unwrap();
        assert_eq!(
            nearest_key(root.path(), Path::new("vm/max_mapcount")).as_deref(),
            Some("vm.max_map_count")
        );
        assert_eq!(nearest_key(root.path(), Path::new("vm/zzz")), None);
    }
}
