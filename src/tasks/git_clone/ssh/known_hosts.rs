//! known_hosts as OpenSSH reads it, so a deploy-key clone trusts exactly the hosts its
//! Secret lists: plain and hashed (`|1|salt|hash`) names, `[host]:port` for other ports,
//! patterns with `*`, `?` and `!`, several keys per host, and `@revoked` keys, which are
//! refused even when another line accepts them. `@cert-authority` lines are not supported
//! (host certificates are rare for git servers): they are skipped, and a host known only
//! through one is reported as such.

use std::path::Path;

use base64::Engine as _;
use russh::keys::ssh_key::PublicKey;
use russh::keys::{Algorithm, EcdsaCurve, HashAlg};

/// One usable line of a known_hosts file.
#[derive(Debug, Clone)]
struct Entry {
    marker: Marker,
    hosts: Vec<HostPattern>,
    key: PublicKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
enum HostPattern {
    /// `|1|salt|hash`: HMAC-SHA1 of the name under the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
    /// A name or pattern; `negated` for `!pattern`.
    Plain { pattern: String, negated: bool },
}

/// The parsed file.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

/// What known_hosts says of the key a server showed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line for this host holds this key.
    Trusted,
    /// An `@revoked` line holds this key.
    Revoked,
    /// Lines for this host hold other keys (of these types).
    Changed { known: Vec<String> },
    /// No line names this host (`cert_authority`: only `@cert-authority` lines do).
    Unknown { cert_authority: bool },
}

impl KnownHosts {
    /// Reads a known_hosts file; lines that cannot be read as entries are skipped, as
    /// OpenSSH does (the error message names the file when no line matches).
    pub fn read(path: &Path) -> std::io::Result<KnownHosts> {
        Ok(KnownHosts::parse(&std::fs::read_to_string(path)?))
    }

    pub fn parse(text: &str) -> KnownHosts {
        KnownHosts {
            entries: text.lines().filter_map(parse_line).collect(),
        }
    }

    /// The verdict on `key` shown by `host` (as written in the URL) on `port`.
    pub fn verify(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        let name = lookup_name(host, port);
        let matching = || self.entries.iter().filter(|e| matches(&e.hosts, &name));
        if matching().any(|e| e.marker == Marker::Revoked && same_key(&e.key, key)) {
            return Verdict::Revoked;
        }
        let plain: Vec<&Entry> = matching().filter(|e| e.marker == Marker::None).collect();
        if plain.iter().any(|e| same_key(&e.key, key)) {
            return Verdict::Trusted;
        }
        if plain.is_empty() {
            return Verdict::Unknown {
                cert_authority: matching().any(|e| e.marker == Marker::CertAuthority),
            };
        }
        let mut known: Vec<String> = plain
            .iter()
            .map(|e| e.key.algorithm().as_str().to_owned())
            .collect();
        known.sort();
        known.dedup();
        Verdict::Changed { known }
    }

    /// The host-key algorithms to offer for `host`: those of its (not revoked) keys, in
    /// russh's order of preference, so that a server with several host keys shows one we
    /// can verify. `None` when the file knows no key for the host: then any algorithm may
    /// be offered, to show the user the server's key in the error.
    pub fn algorithms(&self, host: &str, port: u16) -> Option<Vec<Algorithm>> {
        let name = lookup_name(host, port);
        let keys: Vec<&PublicKey> = self
            .entries
            .iter()
            .filter(|e| e.marker == Marker::None && matches(&e.hosts, &name))
            .map(|e| &e.key)
            .collect();
        if keys.is_empty() {
            return None;
        }
        let offered: Vec<Algorithm> = russh::Preferred::DEFAULT
            .key
            .iter()
            .filter(|algorithm| {
                keys.iter().any(|key| match (algorithm, key.algorithm()) {
                    (Algorithm::Rsa { .. }, Algorithm::Rsa { .. }) => true,
                    (wanted, has) => **wanted == has,
                })
            })
            .cloned()
            .collect();
        (!offered.is_empty()).then_some(offered)
    }
}

/// The name a host is filed under: `host` on port 22, `[host]:port` on any other.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

fn parse_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let marker = match first {
        "@revoked" => Marker::Revoked,
        "@cert-authority" => Marker::CertAuthority,
        other if other.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let hosts = first
        .split(',')
        .filter(|p| !p.is_empty())
        .map(parse_pattern)
        .collect::<Option<Vec<_>>>()?;
    let (kind, blob) = (fields.next()?, fields.next()?);
    let key = PublicKey::from_openssh(&format!("{kind} {blob}")).ok()?;
    Some(Entry { marker, hosts, key })
}

fn parse_pattern(text: &str) -> Option<HostPattern> {
    if let Some(hashed) = text.strip_prefix("|1|") {
        let (salt, hash) = hashed.split_once('|')?;
        let engine = base64::engine::general_purpose::STANDARD;
        return Some(HostPattern::Hashed {
            salt: engine.decode(salt).ok()?,
            hash: engine.decode(hash).ok()?,
        });
    }
    let (pattern, negated) = match text.strip_prefix('!') {
        Some(rest) => (rest, true),
        None => (text, false),
    };
    Some(HostPattern::Plain {
        pattern: pattern.to_ascii_lowercase(),
        negated,
    })
}

/// OpenSSH's rule: some pattern matches and no negated one does.
fn matches(patterns: &[HostPattern], name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    let mut matched = false;
    for pattern in patterns {
        match pattern {
            HostPattern::Hashed { salt, hash } => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, salt);
                if ring::hmac::verify(&key, name.as_bytes(), hash).is_ok() {
                    matched = true;
                }
            }
            HostPattern::Plain { pattern, negated } => {
                if wildcard(pattern.as_bytes(), name.as_bytes()) {
                    if *negated {
                        return false;
                    }
                    matched = true;
                }
            }
        }
    }
    matched
}

/// `*` and `?` as in OpenSSH's match_pattern.
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| wildcard(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && wildcard(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && wildcard(rest, &text[1..]),
    }
}

/// A key's SHA256 fingerprint as `ssh-keygen -l` prints it (`SHA256:` and unpadded base64).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// The algorithm names of a key type for messages (`ssh-ed25519`, `ecdsa-sha2-nistp256`).
pub fn type_name(key: &PublicKey) -> String {
    match key.algorithm() {
        Algorithm::Ecdsa { curve } => format!(
            "ecdsa-sha2-{}",
            match curve {
                EcdsaCurve::NistP256 => "nistp256",
                EcdsaCurve::NistP384 => "nistp384",
                EcdsaCurve::NistP521 => "nistp521",
            }
        ),
        other => other.as_str().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMKfB2D3SGG91yYO+z7DS5QzJzbWhIxK2TSBnC9GhSpd";
    const ED25519_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN+Wjn4+4Fcvl2JlKpggT+wCRxpSvtqqpVrQrKN1/A22";

    fn key(text: &str) -> PublicKey {
        PublicKey::from_openssh(text).unwrap()
    }

    #[test]
    fn a_hashed_name_matches_the_host_and_port_it_was_made_for() {
        // From `ssh-keyscan -H -p 60031 127.0.0.1`.
        let file = KnownHosts::parse(&format!(
            "|1|EAwdf/SIRk+ncVzCB0Vv0/nQZls=|YSi37gWt+yH1GfmWyhVFJi+i6c4= {ED25519_A}\n"
        ));
        assert_eq!(
            file.verify("127.0.0.1", 60031, &key(ED25519_A)),
            Verdict::Trusted
        );
        assert_eq!(
            file.verify("127.0.0.1", 22, &key(ED25519_A)),
            Verdict::Unknown {
                cert_authority: false
            }
        );
    }

    #[test]
    fn a_port_other_than_22_needs_the_bracketed_name() {
        let file = KnownHosts::parse(&format!("git.example {ED25519_A}\n"));
        assert_eq!(
            file.verify("git.example", 22, &key(ED25519_A)),
            Verdict::Trusted
        );
        assert!(matches!(
            file.verify("git.example", 2222, &key(ED25519_A)),
            Verdict::Unknown { .. }
        ));
        let file = KnownHosts::parse(&format!("[git.example]:2222 {ED25519_A}\n"));
        assert_eq!(
            file.verify("git.example", 2222, &key(ED25519_A)),
            Verdict::Trusted
        );
    }

    #[test]
    fn a_revoked_key_is_refused_even_when_another_line_accepts_it() {
        let file = KnownHosts::parse(&format!(
            "# comment\n\ngit.example {ED25519_A}\n@revoked * {ED25519_A}\n"
        ));
        assert_eq!(
            file.verify("git.example", 22, &key(ED25519_A)),
            Verdict::Revoked
        );
    }

    #[test]
    fn another_key_for_a_known_host_is_a_changed_key() {
        let file = KnownHosts::parse(&format!("git.example,other {ED25519_B}\n"));
        assert_eq!(
            file.verify("git.example", 22, &key(ED25519_A)),
            Verdict::Changed {
                known: vec!["ssh-ed25519".into()]
            }
        );
    }

    #[test]
    fn several_keys_per_host_and_patterns_with_negation() {
        let file = KnownHosts::parse(&format!(
            "*.example,!evil.example {ED25519_B}\n*.example {ED25519_A}\n"
        ));
        assert_eq!(
            file.verify("git.example", 22, &key(ED25519_A)),
            Verdict::Trusted
        );
        assert_eq!(
            file.verify("git.example", 22, &key(ED25519_B)),
            Verdict::Trusted
        );
        assert_eq!(
            file.verify("evil.example", 22, &key(ED25519_B)),
            Verdict::Changed {
                known: vec!["ssh-ed25519".into()]
            }
        );
    }

    #[test]
    fn only_the_algorithms_known_for_the_host_are_offered() {
        let file = KnownHosts::parse(&format!("git.example {ED25519_A}\n"));
        assert_eq!(
            file.algorithms("git.example", 22),
            Some(vec![Algorithm::Ed25519])
        );
        assert_eq!(file.algorithms("other.example", 22), None);
    }

    #[test]
    fn cert_authority_lines_are_reported_not_trusted() {
        let file = KnownHosts::parse(&format!("@cert-authority *.example {ED25519_A}\n"));
        assert_eq!(
            file.verify("git.example", 22, &key(ED25519_A)),
            Verdict::Unknown {
                cert_authority: true
            }
        );
    }

    #[test]
    fn fingerprints_read_as_ssh_keygen_prints_them() {
        let printed = fingerprint(&key(ED25519_A));
        assert!(printed.starts_with("SHA256:"), "{printed}");
        assert!(!printed.ends_with('='), "{printed}");
    }
}
