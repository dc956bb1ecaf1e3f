//! wait-for-zookeeper: one attempt = connect, send the four-letter word `srvr`, read the
//! answer to its end. `ruok` → `imok` is not readiness (an ensemble member without quorum
//! says `imok` forever); `srvr` answers with a `Mode:` line only when the server serves.

use std::fmt;
use std::str::FromStr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::checks::service::{self, Protocol, Service};
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::Unechoed;
use crate::resolve::{Resolver, ResolverArgs};
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

/// `srvr`'s answer is a dozen short lines; more than this is not ZooKeeper talking.
const MAX_ANSWER: u64 = 64 * 1024;

/// What a server says when it is up but not part of a quorum (or still loading).
const NOT_SERVING: &str = "This ZooKeeper instance is not currently serving requests";

/// ZooKeeper as [`Service`] parses it.
pub struct ZooKeeper;

impl Protocol for ZooKeeper {
    const NAME: &'static str = "ZooKeeper";
    const SCHEMES: &'static [&'static str] = &["zk"];
    const DEFAULT_PORT: u16 = 2181;
    const PASSWORD_SOURCE: &'static str =
        "nothing: wait-for-zookeeper's four-letter words take no password";
}

/// Wait until ZooKeeper servers serve requests (`srvr` shows a Mode).
#[derive(Debug, Clone, clap::Args)]
pub struct ZooKeeperArgs {
    /// Servers as HOST or HOST:PORT (default port 2181); several are checked together.
    #[arg(required = true, value_name = "SERVER", value_parser = Unechoed(parse_server))]
    pub servers: Vec<Service<ZooKeeper>>,
    /// Ready only in this mode: leader, follower, standalone or observer (default: any).
    #[arg(long, env = "INITBOX_MODE", value_name = "MODE")]
    pub mode: Option<Mode>,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

fn parse_server(text: &str) -> std::result::Result<Service<ZooKeeper>, String> {
    text.parse()
}

/// The `Mode:` a serving ZooKeeper reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Leader,
    Follower,
    Standalone,
    Observer,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "leader" => Ok(Mode::Leader),
            "follower" => Ok(Mode::Follower),
            "standalone" => Ok(Mode::Standalone),
            "observer" => Ok(Mode::Observer),
            _ => Err(format!(
                "'{text}' is not a ZooKeeper mode: use leader, follower, standalone or observer"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Leader => "leader",
            Mode::Follower => "follower",
            Mode::Standalone => "standalone",
            Mode::Observer => "observer",
        })
    }
}

pub struct ZooKeeperProbe {
    server: Service<ZooKeeper>,
    label: String,
    resolver: Resolver,
    mode: Option<Mode>,
}

impl Probe for ZooKeeperProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt {
        let answer = match self.ask_srvr().await {
            Ok(answer) => answer,
            Err(failure) => return failure.into(),
        };
        judge(&answer, self.mode)
    }
}

impl ZooKeeperProbe {
    /// Sends `srvr` and reads until the server closes (it closes after every 4lw answer).
    async fn ask_srvr(&self) -> std::result::Result<String, Failure> {
        let (mut stream, _) = service::connect(&self.resolver, &self.server.address()).await?;
        stream
            .write_all(b"srvr")
            .await
            .map_err(|e| Failure::Retry(format!("sending srvr: {}", crate::reason::io(&e))))?;
        let mut answer = Vec::new();
        let read = (&mut stream)
            .take(MAX_ANSWER + 1)
            .read_to_end(&mut answer)
            .await;
        match read {
            Ok(_) if answer.len() as u64 > MAX_ANSWER => Err(Failure::Retry(format!(
                "the answer to srvr is longer than {} KiB (is this a ZooKeeper port?)",
                MAX_ANSWER / 1024
            ))),
            // A reset after a complete answer is still the answer.
            Ok(_) => Ok(String::from_utf8_lossy(&answer).into_owned()),
            Err(_) if !answer.is_empty() => Ok(String::from_utf8_lossy(&answer).into_owned()),
            Err(e) => Err(Failure::Retry(format!(
                "reading the answer to srvr: {}",
                crate::reason::io(&e)
            ))),
        }
    }
}

/// What an answer to `srvr` means.
fn judge(answer: &str, wanted: Option<Mode>) -> Attempt {
    let text = answer.trim();
    if text.is_empty() {
        return Attempt::NotYet("the server closed the connection without answering srvr".into());
    }
    if text.contains(NOT_SERVING) {
        return Attempt::NotYet(format!("{NOT_SERVING} (srvr)"));
    }
    if text.contains("is not executed because it is not in the whitelist") {
        // zoo.cfg does not change while we wait: say what to add and stop.
        return Attempt::Fatal(Error::Failed(format!(
            "the server refuses the srvr command ('{}'); add it to zoo.cfg: \
             4lw.commands.whitelist=srvr,ruok (ZOO_4LW_COMMANDS_WHITELIST in the official image)",
            service::shorten(text.lines().next().unwrap_or(text))
        )));
    }
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name).map(str::trim))
    };
    let Some(mode) = field("Mode:") else {
        return Attempt::NotYet(format!(
            "unexpected answer to srvr (is this a ZooKeeper port?): {}",
            service::shorten(text.lines().next().unwrap_or(text))
        ));
    };
    // `3.8.0-<commit>, built on …`: the release is what a person recognises.
    let version = field("Zookeeper version:")
        .map(|v| v.split([',', '-']).next().unwrap_or(v).trim().to_owned())
        .filter(|v| !v.is_empty())
        .map(|v| format!("ZooKeeper {}", service::shorten(&v)))
        .unwrap_or_else(|| "ZooKeeper".into());
    let mode = service::shorten(mode);
    if let Some(wanted) = wanted
        && !mode.eq_ignore_ascii_case(&wanted.to_string())
    {
        return Attempt::NotYet(format!("serving as {mode}, not yet as {wanted}"));
    }
    Attempt::ready(format!("serving as {mode} ({version})"))
}

impl crate::cli::Task for ZooKeeperArgs {
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

pub async fn run(args: ZooKeeperArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let probes = args
        .servers
        .into_iter()
        .map(|server| ZooKeeperProbe {
            label: server.to_string(),
            server,
            resolver: resolver.clone(),
            mode: args.mode,
        })
        .collect();
    wait::wait_for_all("zookeeper", probes, options)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVING: &str = "Zookeeper version: 3.8.0-${mvngit.commit.id}, built on 2024-12-29 17:54 UTC\n\
        Latency min/avg/max: 0/0.0/0\nReceived: 3\nSent: 2\nConnections: 1\nOutstanding: 0\n\
        Zxid: 0x0\nMode: standalone\nNode count: 5\n";

    #[test]
    fn a_mode_line_is_ready_and_names_mode_and_release() {
        match judge(SERVING, None) {
            Attempt::Ready { detail, .. } => {
                assert_eq!(detail, "serving as standalone (ZooKeeper 3.8.0)")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(SERVING, Some(Mode::Standalone)),
            Attempt::Ready { .. }
        ));
    }

    #[test]
    fn another_mode_than_the_one_asked_is_not_yet() {
        match judge(SERVING, Some(Mode::Leader)) {
            Attempt::NotYet(reason) => {
                assert_eq!(reason, "serving as standalone, not yet as leader")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn not_serving_is_not_yet_and_a_missing_whitelist_entry_is_fatal() {
        assert!(matches!(judge(NOT_SERVING, None), Attempt::NotYet(_)));
        match judge(
            "srvr is not executed because it is not in the whitelist.",
            None,
        ) {
            Attempt::Fatal(error) => {
                assert!(
                    error
                        .to_string()
                        .contains("4lw.commands.whitelist=srvr,ruok")
                )
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(judge("imok", None), Attempt::NotYet(_)));
        assert!(matches!(judge("", None), Attempt::NotYet(_)));
    }

    #[test]
    fn modes_parse_in_any_case_and_others_are_refused() {
        assert_eq!("Leader".parse::<Mode>().unwrap(), Mode::Leader);
        assert!(
            "candidate"
                .parse::<Mode>()
                .unwrap_err()
                .contains("'candidate'")
        );
    }
}
