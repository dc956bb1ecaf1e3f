//! wait-for-dns: one attempt = one fresh lookup; ready when the answer has records of the
//! wanted type and contains every `--expect` value.

use std::net::IpAddr;

use hickory_resolver::proto::rr::{Name, RData, RecordType};

use crate::exec::Then;
use crate::exit::Result;
use crate::resolve::ResolverArgs;
use crate::resolve::{self, Resolver};
use crate::wait::WaitArgs;
use crate::wait::{self, Attempt, Probe};

/// Wait until DNS names resolve.
#[derive(Debug, Clone, clap::Args)]
pub struct DnsArgs {
    /// Names to resolve; short names go through the search domains of resolv.conf.
    #[arg(required = true, value_name = "NAME", value_parser = parse_name)]
    pub names: Vec<String>,
    /// Record type to wait for [default: any address, A or AAAA].
    #[arg(long = "type", env = "INITBOX_TYPE", value_enum, ignore_case = true)]
    pub record_type: Option<RecordKind>,
    /// Ready only when the answer contains VALUE (repeatable: all must be present).
    #[arg(long, env = "INITBOX_EXPECT", value_name = "VALUE")]
    pub expect: Vec<String>,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum RecordKind {
    A,
    Aaaa,
    Cname,
    Srv,
    Txt,
    Mx,
    Ns,
}

impl RecordKind {
    fn record_type(self) -> RecordType {
        match self {
            RecordKind::A => RecordType::A,
            RecordKind::Aaaa => RecordType::AAAA,
            RecordKind::Cname => RecordType::CNAME,
            RecordKind::Srv => RecordType::SRV,
            RecordKind::Txt => RecordType::TXT,
            RecordKind::Mx => RecordType::MX,
            RecordKind::Ns => RecordType::NS,
        }
    }
}

fn parse_name(text: &str) -> Result<String, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the name is empty".into());
    }
    if trimmed.contains(['/', ':', ' ']) {
        return Err(format!(
            "'{text}' is not a DNS name (give a name like mydb or mydb.default.svc.cluster.local)"
        ));
    }
    resolve::check_host_name(trimmed)?;
    Ok(trimmed.to_owned())
}

/// One answer record, as shown to the user and as `--expect` may name it.
struct Answer {
    shown: String,
    matches: Vec<String>,
}

fn normalize(value: &str) -> String {
    value.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn name_text(name: &Name) -> String {
    normalize(&name.to_string())
}

fn answer(data: &RData) -> Option<Answer> {
    let single = |s: String| Answer {
        shown: s.clone(),
        matches: vec![s],
    };
    Some(match data {
        RData::A(a) => single(a.0.to_string()),
        RData::AAAA(aaaa) => single(aaaa.0.to_string()),
        RData::CNAME(cname) => single(name_text(&cname.0)),
        RData::NS(ns) => single(name_text(&ns.0)),
        RData::MX(mx) => {
            let host = name_text(&mx.exchange);
            Answer {
                shown: format!("{} {host}", mx.preference),
                matches: vec![format!("{} {host}", mx.preference), host],
            }
        }
        RData::SRV(srv) => {
            let host = name_text(&srv.target);
            Answer {
                shown: format!("{host}:{}", srv.port),
                matches: vec![
                    format!("{host}:{}", srv.port),
                    format!("{} {} {} {host}", srv.priority, srv.weight, srv.port),
                    host,
                ],
            }
        }
        RData::TXT(txt) => {
            let text: String = txt
                .txt_data
                .iter()
                .map(|part| String::from_utf8_lossy(part))
                .collect();
            Answer {
                shown: text.clone(),
                matches: vec![text],
            }
        }
        _ => return None,
    })
}

/// One `--expect` value and the forms an answer may take for it.
struct Expected {
    /// As the user wrote it, for messages.
    text: String,
    ip: Option<IpAddr>,
    /// The value with its name completed by each search domain, as the answer names are
    /// fully qualified: `mydb-0.mydb:5432` stands for `mydb-0.mydb.default.svc.cluster.local:5432`
    /// in a pod. A name with a trailing dot stands only for itself.
    forms: Vec<String>,
}

impl Expected {
    fn new(text: &str, exact: bool, resolver: &Resolver) -> Self {
        let ip = text.trim().parse::<IpAddr>().ok();
        let forms = if exact {
            vec![text.to_owned()]
        } else {
            name_forms(text.trim(), resolver)
        };
        Expected {
            text: text.to_owned(),
            ip,
            forms,
        }
    }
}

/// The name in an expected value is its last word, before an optional `:PORT`
/// (`host`, `host:port`, `10 host`, `0 5 5432 host`).
fn name_forms(value: &str, resolver: &Resolver) -> Vec<String> {
    let (head, last) = match value.rsplit_once(' ') {
        Some((head, last)) => (format!("{} ", head.to_ascii_lowercase()), last),
        None => (String::new(), value),
    };
    let (name, port) = match last.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (name, format!(":{port}"))
        }
        _ => (last, String::new()),
    };
    let mut forms = vec![normalize(value)];
    for completed in resolver.completions(name) {
        let form = format!("{head}{completed}{port}");
        if !forms.contains(&form) {
            forms.push(form);
        }
    }
    forms
}

/// Does the answer contain this expected value? IP addresses compare as addresses.
fn contains(answers: &[Answer], expected: &Expected) -> bool {
    if let Some(ip) = expected.ip {
        return answers
            .iter()
            .any(|a| a.shown.parse::<IpAddr>().is_ok_and(|seen| seen == ip));
    }
    answers
        .iter()
        .any(|a| expected.forms.iter().any(|form| a.matches.contains(form)))
}

pub struct DnsProbe {
    name: String,
    kind: Option<RecordKind>,
    expect: Vec<Expected>,
    resolver: Resolver,
}

impl Probe for DnsProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.name
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt {
        let (answered_as, answers): (String, Vec<Answer>) = match self.kind {
            None => match self.resolver.resolve_ip(&self.name).await {
                Ok(resolved) => (
                    resolved.name,
                    resolved.value.iter().map(|ip| answer_ip(*ip)).collect(),
                ),
                Err(failure) => return failure.into(),
            },
            Some(kind) => {
                let wanted = kind.record_type();
                match self.resolver.lookup(&self.name, wanted).await {
                    Ok(resolved) => (
                        resolved.name,
                        resolved
                            .value
                            .answers()
                            .iter()
                            .filter(|record| record.record_type() == wanted)
                            .filter_map(|record| answer(&record.data))
                            .collect(),
                    ),
                    Err(failure) => return failure.into(),
                }
            }
        };
        let kind_label = self
            .kind
            .map(|k| resolve::record_type_name(k.record_type()))
            .unwrap_or_else(|| "address".into());
        // A short name that answered in a search domain says which.
        let as_name = if answered_as == normalize(&self.name) {
            String::new()
        } else {
            format!(" (as {answered_as})")
        };
        if answers.is_empty() {
            return Attempt::NotYet(format!("no {kind_label} record{as_name}"));
        }
        let shown: Vec<&str> = answers.iter().map(|a| a.shown.as_str()).collect();
        let missing: Vec<&str> = self
            .expect
            .iter()
            .filter(|value| !contains(&answers, value))
            .map(|value| value.text.as_str())
            .collect();
        if !missing.is_empty() {
            return Attempt::NotYet(format!(
                "answer [{}]{as_name} lacks {}",
                shown.join(", "),
                missing.join(", ")
            ));
        }
        Attempt::ready(format!("resolved to {}{as_name}", shown.join(", ")))
    }
}

fn answer_ip(ip: IpAddr) -> Answer {
    Answer {
        shown: ip.to_string(),
        matches: vec![ip.to_string()],
    }
}

impl crate::cli::Task for DnsArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    /// Checks across the waiting flags (`--stable-for` within `--timeout`).
    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        self.wait.validate()
    }
}

pub async fn run(args: DnsArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let exact = args.record_type == Some(RecordKind::Txt);
    let probes = args
        .names
        .into_iter()
        .map(|name| DnsProbe {
            name,
            kind: args.record_type,
            expect: args
                .expect
                .iter()
                .map(|value| Expected::new(value, exact, &resolver))
                .collect(),
            resolver: resolver.clone(),
        })
        .collect();
    wait::wait_for_all("dns", probes, options).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_before_any_lookup() {
        assert_eq!(parse_name("mydb").unwrap(), "mydb");
        assert_eq!(
            parse_name(" mydb.default.svc ").unwrap(),
            "mydb.default.svc"
        );
        assert!(parse_name("").unwrap_err().contains("empty"));
        assert!(parse_name("mydb:5432").unwrap_err().contains("mydb:5432"));
        assert!(parse_name("http://x").is_err());
        let long_label = "a".repeat(64);
        assert!(parse_name(&long_label).is_err());
    }

    #[test]
    fn expected_values_compare_as_users_write_them() {
        let resolver = Resolver::new(&crate::resolve::ResolverSettings {
            nameservers: vec!["127.0.0.1:5353".parse().unwrap()],
            resolv_conf: "/nonexistent/resolv.conf".into(),
            hosts_file: "/nonexistent/hosts".into(),
            query_timeout: std::time::Duration::from_secs(1),
        });
        let answers = vec![
            Answer {
                shown: "fd00::10".into(),
                matches: vec!["fd00::10".into()],
            },
            Answer {
                shown: "mysvc.test:8080".into(),
                matches: vec!["mysvc.test:8080".into(), "mysvc.test".into()],
            },
        ];
        let has = |value: &str| contains(&answers, &Expected::new(value, false, &resolver));
        assert!(has("fd00:0:0::10"));
        assert!(has("MySvc.Test."));
        assert!(has("mysvc.test:8080"));
        assert!(!has("mysvc.test:8081"));
        assert!(!has("10.0.0.1"));
    }
}
