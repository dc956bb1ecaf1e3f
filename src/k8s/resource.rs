//! The kinds of object the Kubernetes commands know, by every name kubectl accepts for
//! them, and the targets users write: `KIND/NAME`, or `KIND` with a label selector.

use std::fmt;

/// One kind of namespaced object and where the API serves it.
#[derive(Debug, PartialEq, Eq)]
pub struct Kind {
    /// The singular, lower-case name (`deployment`).
    pub name: &'static str,
    /// The resource, as RBAC rules name it (`deployments`).
    pub plural: &'static str,
    /// The API group, empty for the core group (as in a Role's `apiGroups`).
    pub group: &'static str,
    pub version: &'static str,
    /// kubectl's short names (`deploy`).
    pub short: &'static [&'static str],
}

pub const POD: Kind = kind("pod", "pods", "", "v1", &["po"]);
pub const JOB: Kind = kind("job", "jobs", "batch", "v1", &[]);
pub const DEPLOYMENT: Kind = kind("deployment", "deployments", "apps", "v1", &["deploy"]);
pub const STATEFULSET: Kind = kind("statefulset", "statefulsets", "apps", "v1", &["sts"]);
pub const DAEMONSET: Kind = kind("daemonset", "daemonsets", "apps", "v1", &["ds"]);
pub const REPLICASET: Kind = kind("replicaset", "replicasets", "apps", "v1", &["rs"]);
pub const SERVICE: Kind = kind("service", "services", "", "v1", &["svc"]);
pub const CONFIGMAP: Kind = kind("configmap", "configmaps", "", "v1", &["cm"]);
pub const SECRET: Kind = kind("secret", "secrets", "", "v1", &[]);
pub const PVC: Kind = kind(
    "persistentvolumeclaim",
    "persistentvolumeclaims",
    "",
    "v1",
    &["pvc"],
);
pub const ENDPOINTSLICE: Kind = kind(
    "endpointslice",
    "endpointslices",
    "discovery.k8s.io",
    "v1",
    &[],
);

const fn kind(
    name: &'static str,
    plural: &'static str,
    group: &'static str,
    version: &'static str,
    short: &'static [&'static str],
) -> Kind {
    Kind {
        name,
        plural,
        group,
        version,
        short,
    }
}

/// Every kind a target may name.
pub const KINDS: &[&Kind] = &[
    &POD,
    &JOB,
    &DEPLOYMENT,
    &STATEFULSET,
    &DAEMONSET,
    &REPLICASET,
    &SERVICE,
    &CONFIGMAP,
    &SECRET,
    &PVC,
];

impl Kind {
    /// The kind a user's word names: singular, plural, short name or `NAME.GROUP`, any case.
    pub fn find(word: &str) -> Result<&'static Kind, String> {
        let lower = word.to_ascii_lowercase();
        let (base, group) = match lower.split_once('.') {
            Some((base, group)) => (base, Some(group)),
            None => (lower.as_str(), None),
        };
        KINDS
            .iter()
            .copied()
            .find(|kind| {
                (kind.name == base || kind.plural == base || kind.short.contains(&base))
                    && group.is_none_or(|group| group == kind.group)
            })
            .ok_or_else(|| {
                format!(
                    "unknown kind '{word}' (known: {})",
                    KINDS
                        .iter()
                        .map(|kind| kind.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// The collection's path in `namespace`: `/apis/batch/v1/namespaces/NS/jobs`.
    pub fn collection(&self, namespace: &str) -> String {
        let prefix = if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        };
        format!("{prefix}/namespaces/{namespace}/{}", self.plural)
    }

    /// `jobs.batch`, `pods`: the resource as the API server's messages name it.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

/// What a command is pointed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static Kind,
    /// `None`: every object of the kind that `--selector` matches.
    pub name: Option<String>,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{name}", self.kind.name),
            None => write!(f, "{}", self.kind.plural),
        }
    }
}

impl Target {
    /// The rule every Kubernetes command follows: an object is named (`KIND/NAME`) or
    /// selected (a `KIND` alone with `--selector`), never both, never neither. `arg` is the
    /// positional as clap names it in messages.
    pub fn check_selection(
        &self,
        selector: Option<&String>,
        arg: &str,
    ) -> Result<(), crate::cli::Invalid> {
        let invalid = |arg: &str, value: String, reason: &str| crate::cli::Invalid {
            arg: arg.into(),
            value,
            reason: reason.into(),
        };
        match (&self.name, selector) {
            (None, None) => Err(invalid(
                arg,
                self.to_string(),
                "name the object (KIND/NAME) or select objects with --selector",
            )),
            (Some(_), Some(selector)) => Err(invalid(
                "--selector <SELECTOR>",
                selector.clone(),
                "a selector applies to targets given as a KIND alone, not to KIND/NAME",
            )),
            _ => Ok(()),
        }
    }
}

/// `KIND/NAME` or `KIND`, checked as clap parses it.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let (kind, name) = match text.split_once('/') {
        Some((kind, name)) => (kind, Some(name)),
        None => (text, None),
    };
    let kind = Kind::find(kind.trim())?;
    let name = match name {
        Some(name) => {
            check_name(name).map_err(|reason| format!("'{text}': {reason}"))?;
            Some(name.to_owned())
        }
        None => None,
    };
    Ok(Target { kind, name })
}

/// An object's name: a DNS subdomain (lower-case letters, digits, `-` and `.`, at most 253).
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "'{name}' is not a valid object name (lower-case letters, digits, '-' and '.', starting and ending with a letter or digit)"
        ))
    }
}

/// A namespace: a DNS label (at most 63 of lower-case letters, digits and `-`).
pub fn parse_namespace(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(text.to_owned())
    } else {
        Err(format!(
            "'{text}' is not a valid namespace (at most 63 lower-case letters, digits and '-')"
        ))
    }
}

/// A label selector as kubectl takes it (`app=web,tier!=db`, `env in (a,b)`, `!legacy`),
/// checked for its shape here so a typo is a usage error, not a request the server
/// refuses later; the server parses it again.
pub fn parse_selector(text: &str) -> Result<String, String> {
    let mut depth = 0i32;
    let mut parts = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    if depth != 0 {
        return Err(format!("'{text}': unbalanced parentheses"));
    }
    for part in &parts {
        let part = part.trim();
        let key = part
            .trim_start_matches('!')
            .split(|c: char| c == '=' || c == '!' || c.is_whitespace())
            .next()
            .unwrap_or("");
        let key_valid = !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
        if !key_valid {
            return Err(format!(
                "'{text}' is not a label selector (key=value, key!=value, key in (a,b), key notin (a,b), key or !key, separated by commas)"
            ));
        }
    }
    Ok(text.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_found_by_every_name_kubectl_takes() {
        for word in ["deploy", "Deployment", "deployments", "deployments.apps"] {
            assert_eq!(Kind::find(word).unwrap().name, "deployment", "{word}");
        }
        assert!(Kind::find("deployment.batch").is_err());
        assert!(
            Kind::find("widget")
                .unwrap_err()
                .contains("known: pod, job")
        );
    }

    #[test]
    fn targets_name_a_kind_and_an_optional_object() {
        let target = parse_target("job/db-migrate").unwrap();
        assert_eq!(target.kind, &JOB);
        assert_eq!(target.to_string(), "job/db-migrate");
        assert_eq!(parse_target("pods").unwrap().name, None);
        assert!(parse_target("job/DB").is_err());
        assert!(parse_target("job/").is_err());
        assert_eq!(
            JOB.collection("demo"),
            "/apis/batch/v1/namespaces/demo/jobs"
        );
        assert_eq!(POD.collection("demo"), "/api/v1/namespaces/demo/pods");
    }

    #[test]
    fn selectors_are_checked_for_their_shape() {
        for good in [
            "app=web",
            "app=web,tier!=db",
            "env in (a,b),!legacy",
            "app.kubernetes.io/name=x",
        ] {
            assert!(parse_selector(good).is_ok(), "{good}");
        }
        for bad in ["", "=web", "env in (a,b", "a=b,,c=d"] {
            assert!(parse_selector(bad).is_err(), "{bad}");
        }
    }
}
