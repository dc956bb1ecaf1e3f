//! File modes as `chmod` takes them: octal (`0755`, `755`) and symbolic (`u+rwX,g=u,o-rwx`,
//! `a+x`, `+t`, `g+s`), parsed once when the flag is read and applied to each file with
//! [`Mode::apply`]. The rules are those of coreutils (`lib/modechange.c`), bit for bit, so
//! a chart's `chmod` line means the same here: `X` adds execute only to directories and to
//! files that already have an execute bit; a mode without `u`/`g`/`o`/`a` is limited by
//! the umask; a directory keeps its set-user-ID and set-group-ID bits unless they are named
//! (or a 5-digit octal mode such as `00755` is given).

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;
const S_IRWXU: u32 = 0o700;
const S_IRWXG: u32 = 0o070;
const S_IRWXO: u32 = 0o007;
const ALL: u32 = 0o7777;
const READ: u32 = 0o444;
const WRITE: u32 = 0o222;
const EXEC: u32 = 0o111;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value {
    /// These bits.
    Bits,
    /// The bits of `value` (a class: u, g or o) that the file has, copied to every class.
    Copy,
    /// `X`: execute, if the file is a directory or already has an execute bit.
    ExecIfAny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Change {
    op: u8,
    value_kind: Value,
    /// The bits the `who` part names (0: none named, the umask applies).
    affected: u32,
    value: u32,
    /// The bits the change names explicitly (decides what a directory keeps).
    mentioned: u32,
}

/// A parsed mode, octal or symbolic.
#[derive(Clone, PartialEq, Eq)]
pub struct Mode {
    text: String,
    changes: Vec<Change>,
    /// The mode, when it was written in octal.
    octal: Option<u32>,
}

impl fmt::Debug for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mode({:?})", self.text)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn octal_mentioned(value: u32, digits: usize) -> u32 {
    if digits < 5 {
        (value & (S_ISUID | S_ISGID)) | S_ISVTX | S_IRWXU | S_IRWXG | S_IRWXO
    } else {
        ALL
    }
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "'{text}' is not a file mode (octal such as 0755, or symbolic such as \
                 u+rwX,g=u,o-rwx)"
            )
        };
        let bytes = text.as_bytes();
        // `0o640` is YAML 1.2's octal, which a pipeline passes on as written (fetch and
        // template take it too); the digits after the prefix are the mode.
        let digits = text.strip_prefix("0o").unwrap_or(text).as_bytes();
        if digits.first().is_some_and(|b| (b'0'..=b'7').contains(b)) {
            let mut value: u32 = 0;
            for &b in digits {
                if !(b'0'..=b'7').contains(&b) {
                    return Err(invalid());
                }
                value = value * 8 + u32::from(b - b'0');
                if value > ALL {
                    return Err(invalid());
                }
            }
            return Ok(Mode {
                text: text.to_owned(),
                changes: vec![Change {
                    op: b'=',
                    value_kind: Value::Bits,
                    affected: ALL,
                    value,
                    mentioned: octal_mentioned(value, digits.len()),
                }],
                octal: Some(value),
            });
        }
        let mut changes = Vec::new();
        let mut i = 0;
        loop {
            let mut affected = 0;
            while let Some(&b) = bytes.get(i) {
                affected |= match b {
                    b'u' => S_ISUID | S_IRWXU,
                    b'g' => S_ISGID | S_IRWXG,
                    b'o' => S_ISVTX | S_IRWXO,
                    b'a' => ALL,
                    _ => break,
                };
                i += 1;
            }
            if !matches!(bytes.get(i), Some(b'=' | b'+' | b'-')) {
                return Err(invalid());
            }
            while let Some(&op) = bytes.get(i).filter(|b| matches!(b, b'=' | b'+' | b'-')) {
                i += 1;
                let mut value = 0;
                let mut value_kind = Value::Bits;
                let mut mentioned = 0;
                match bytes.get(i) {
                    Some(b'0'..=b'7') => {
                        while let Some(b @ b'0'..=b'7') = bytes.get(i) {
                            value = value * 8 + u32::from(b - b'0');
                            if value > ALL {
                                return Err(invalid());
                            }
                            i += 1;
                        }
                        // coreutils refuses `u+755`: an octal value needs an empty `who`.
                        if affected != 0 {
                            return Err(invalid());
                        }
                        // As coreutils: an octal value after an operator names every bit.
                        affected = ALL;
                        mentioned = ALL;
                    }
                    Some(&class @ (b'u' | b'g' | b'o')) => {
                        value = match class {
                            b'u' => S_IRWXU,
                            b'g' => S_IRWXG,
                            _ => S_IRWXO,
                        };
                        value_kind = Value::Copy;
                        i += 1;
                    }
                    _ => {
                        while let Some(&b) = bytes.get(i) {
                            match b {
                                b'r' => value |= READ,
                                b'w' => value |= WRITE,
                                b'x' => value |= EXEC,
                                b'X' => value_kind = Value::ExecIfAny,
                                b's' => value |= S_ISUID | S_ISGID,
                                b't' => value |= S_ISVTX,
                                _ => break,
                            }
                            i += 1;
                        }
                    }
                }
                let mentioned = if mentioned != 0 {
                    mentioned
                } else if affected != 0 {
                    affected & value
                } else {
                    value
                };
                changes.push(Change {
                    op,
                    value_kind,
                    affected,
                    value,
                    mentioned,
                });
            }
            match bytes.get(i) {
                None => break,
                Some(b',') => i += 1,
                Some(_) => return Err(invalid()),
            }
        }
        Ok(Mode {
            text: text.to_owned(),
            changes,
            octal: None,
        })
    }
}

impl<'de> serde::Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The process umask, read once from /proc/self/status (setting it to read it back would
/// race with files being created on other threads); 022 when /proc is not mounted.
pub fn process_umask() -> u32 {
    static UMASK: OnceLock<u32> = OnceLock::new();
    *UMASK.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| {
                status.lines().find_map(|line| {
                    line.strip_prefix("Umask:")
                        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
                })
            })
            .unwrap_or(0o022)
    })
}

impl Mode {
    /// The mode as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The mode, when it was written in octal (what `fetch --mode` and `template --mode`
    /// take).
    pub fn octal(&self) -> Option<u32> {
        self.octal
    }

    /// The permission bits (07777) a file with mode `current` gets, with the process umask
    /// limiting a mode that names no class (`+x`).
    pub fn apply(&self, current: u32, is_dir: bool) -> u32 {
        self.apply_with_umask(current, is_dir, process_umask())
    }

    /// [`apply`](Self::apply) with a given umask.
    pub fn apply_with_umask(&self, current: u32, is_dir: bool, umask: u32) -> u32 {
        let mut mode = current & ALL;
        for change in &self.changes {
            let omit = if is_dir { S_ISUID | S_ISGID } else { 0 } & !change.mentioned;
            let mut value = change.value;
            match change.value_kind {
                Value::Bits => {}
                Value::Copy => {
                    value &= mode;
                    value |= (if value & READ != 0 { READ } else { 0 })
                        | (if value & WRITE != 0 { WRITE } else { 0 })
                        | (if value & EXEC != 0 { EXEC } else { 0 });
                }
                Value::ExecIfAny => {
                    if mode & EXEC != 0 || is_dir {
                        value |= EXEC;
                    }
                }
            }
            let limit = if change.affected != 0 {
                change.affected
            } else {
                !umask
            };
            value &= limit & !omit;
            match change.op {
                b'=' => {
                    let preserved = if change.affected != 0 {
                        !change.affected
                    } else {
                        0
                    } | omit;
                    mode = (mode & preserved) | value;
                }
                b'+' => mode |= value,
                _ => mode &= !value,
            }
        }
        mode & ALL
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;

    const MODES: &[&str] = &[
        "0",
        "755",
        "0644",
        "00755",
        "4755",
        "2775",
        "1777",
        "07777",
        "u+rwX,g=u,o-rwx",
        "a+x",
        "+x",
        "-w",
        "=r",
        "+t",
        "g+s",
        "u+s",
        "u-s,g-s",
        "a=rX",
        "go-w",
        "u=rw,go=r",
        "g=u",
        "o=g",
        "u+X",
        "a+X",
        "ug+rwX",
        "o=",
        "a-rwx,u+r",
        "u+r-w+x",
        "+X",
        "=",
        "g+w,o+t",
        "a+s",
        "o+s",
        "u=rwx,g=rx,o=",
        "g=o,o=u",
        "=755",
        "+020",
        "-0111",
        "a=,u=rwx",
    ];
    const STARTS: &[u32] = &[
        0o000, 0o644, 0o755, 0o600, 0o711, 0o4755, 0o2750, 0o1777, 0o7000,
    ];

    #[test]
    fn malformed_modes_are_refused() {
        for bad in [
            "", "8", "0758", "77777", "u", "u+rwz", "x", "u+755", "rwx", ",", "u+x,", "a+x,,g+w",
            "+q", "u=r g=r", "010000",
        ] {
            assert!(bad.parse::<Mode>().is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn octal_modes_are_octal() {
        assert_eq!("0755".parse::<Mode>().unwrap().octal(), Some(0o755));
        assert_eq!("640".parse::<Mode>().unwrap().octal(), Some(0o640));
        assert_eq!("0o640".parse::<Mode>().unwrap().octal(), Some(0o640));
        assert_eq!("0o2755".parse::<Mode>().unwrap().octal(), Some(0o2755));
        for bad in ["0o", "0o8", "0o+x", "0o77777"] {
            assert!(bad.parse::<Mode>().is_err(), "{bad}");
        }
        assert_eq!("u+x".parse::<Mode>().unwrap().octal(), None);
    }

    /// The table of modes × starting modes × file and directory, each result compared with
    /// what coreutils `chmod` does to a real file, under the same umask.
    #[test]
    fn every_mode_gives_what_coreutils_chmod_gives() {
        let chmod = Command::new("chmod").arg("--version").output();
        if chmod.is_err() || std::env::var_os("INITBOX_SKIP_COREUTILS").is_some() {
            assert!(
                std::env::var_os("INITBOX_TEST_STRICT").is_none(),
                "coreutils chmod is needed"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let umask = process_umask();
        let mut mismatches = Vec::new();
        for (m, text) in MODES.iter().enumerate() {
            let mode: Mode = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            for (s, &start) in STARTS.iter().enumerate() {
                for is_dir in [false, true] {
                    let path = dir.path().join(format!("{m}-{s}-{is_dir}"));
                    if is_dir {
                        std::fs::create_dir(&path).unwrap();
                    } else {
                        std::fs::write(&path, "").unwrap();
                    }
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(start))
                        .unwrap();
                    let status = Command::new("chmod")
                        .arg("--")
                        .arg(text)
                        .arg(&path)
                        .status()
                        .unwrap();
                    assert!(status.success(), "chmod {text}");
                    let real = std::fs::symlink_metadata(&path)
                        .unwrap()
                        .permissions()
                        .mode()
                        & ALL;
                    let ours = mode.apply_with_umask(start, is_dir, umask);
                    if real != ours {
                        mismatches.push(format!(
                            "chmod {text} on {} {start:04o}: coreutils {real:04o}, ours {ours:04o}",
                            if is_dir { "dir" } else { "file" }
                        ));
                    }
                }
            }
        }
        assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    }

    #[test]
    fn x_adds_execute_only_to_directories_and_executables() {
        let mode: Mode = "a+X".parse().unwrap();
        assert_eq!(mode.apply_with_umask(0o644, false, 0o022), 0o644);
        assert_eq!(mode.apply_with_umask(0o744, false, 0o022), 0o755);
        assert_eq!(mode.apply_with_umask(0o644, true, 0o022), 0o755);
    }

    #[test]
    fn a_mode_without_a_class_is_limited_by_the_umask() {
        let mode: Mode = "+w".parse().unwrap();
        assert_eq!(mode.apply_with_umask(0o444, false, 0o022), 0o644);
        assert_eq!(mode.apply_with_umask(0o444, false, 0o000), 0o666);
    }
}
