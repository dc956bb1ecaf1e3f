//! wait-for-kafka: one attempt = connect (TLS with --tls), an ApiVersions request (what
//! `kafka-broker-api-versions.sh` sends), a SASL login when given a user, then a Metadata
//! request that lists no topics: ready when the broker answers with a known controller and
//! enough brokers. A port that merely accepts, or a broker still without a controller, is
//! not ready. The few big-endian structs are written by hand (a client crate would bring a
//! whole producer and consumer); see wire.rs for the framing and its bounds.

mod sasl;
mod wire;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::checks::service::{self, Protocol, Service};
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::{self, TlsArgs, Unechoed};
use crate::resolve::{Resolver, ResolverArgs};
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

pub use sasl::Mechanism;
use wire::{Reader, error_name, io_failure, put_compact_string, receive, send};

const API_METADATA: i16 = 3;
const API_SASL_HANDSHAKE: i16 = 17;
const API_VERSIONS: i16 = 18;
const API_SASL_AUTHENTICATE: i16 = 36;
/// The ApiVersions version sent first: flexible (v3 and later), known to every broker since
/// Kafka 2.4. An older broker answers UNSUPPORTED_VERSION with its range, and is asked again.
const API_VERSIONS_FIRST: i16 = 3;
/// The Metadata versions this file can write and read (v13 only adds a trailing error code).
const METADATA_VERSIONS: std::ops::RangeInclusive<i16> = 1..=12;
const UNSUPPORTED_VERSION: i16 = 35;
/// The environment variable a password may come from (Kafka's tools have none of their
/// own: they read client.properties).
const PASSWORD_ENV: &str = "KAFKA_PASSWORD";

/// Kafka as [`Service`] parses it: `HOST`, `HOST:PORT` or `kafka://[USER@]HOST[:PORT]`.
pub struct Kafka;

impl Protocol for Kafka {
    const NAME: &'static str = "Kafka";
    const SCHEMES: &'static [&'static str] = &["kafka"];
    const DEFAULT_PORT: u16 = 9092;
    const PASSWORD_SOURCE: &'static str = "--password-file (or KAFKA_PASSWORD)";
}

/// Wait until Kafka brokers answer ApiVersions and Metadata with a known controller.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Brokers as HOST, HOST:PORT (default port 9092) or kafka://[USER@]HOST[:PORT], or one
    /// comma-separated bootstrap list (`kafka-0:9092,kafka-1:9092`); every one named is
    /// checked.
    #[arg(
        required = true,
        value_name = "BROKER",
        value_delimiter = ',',
        value_parser = Unechoed(parse_broker)
    )]
    pub brokers: Vec<Service<Kafka>>,
    /// Ready only when the cluster's metadata lists at least this many brokers.
    #[arg(long, env = "INITBOX_MIN_BROKERS", value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub min_brokers: u32,
    /// Log in with SASL as this user (with --password-file or KAFKA_PASSWORD) before
    /// asking for metadata, as a SASL_PLAINTEXT or SASL_SSL listener demands.
    #[arg(
        long,
        env = "INITBOX_USER",
        value_name = "NAME",
        help_heading = "Login"
    )]
    pub user: Option<String>,
    /// Read the password for --user from this file (never logged).
    #[arg(
        long,
        env = "INITBOX_PASSWORD_FILE",
        value_name = "FILE",
        help_heading = "Login"
    )]
    pub password_file: Option<PathBuf>,
    /// The SASL mechanism for --user: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN (PLAIN sends
    /// the password as it is: use it over --tls).
    #[arg(
        long,
        env = "INITBOX_SASL_MECHANISM",
        value_name = "MECHANISM",
        default_value = "SCRAM-SHA-512",
        help_heading = "Login"
    )]
    pub sasl_mechanism: Mechanism,
    /// Speak TLS from the start (an SSL or SASL_SSL listener).
    #[arg(long, env = "INITBOX_TLS", help_heading = "TLS")]
    pub tls: bool,
    #[command(flatten)]
    pub tls_files: TlsArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

fn parse_broker(text: &str) -> std::result::Result<Service<Kafka>, String> {
    let broker: Service<Kafka> = text.trim().parse()?;
    if broker.path.is_some() || !broker.query.is_empty() {
        return Err(format!(
            "'{text}' has a path or a query; a Kafka broker is only HOST:PORT"
        ));
    }
    Ok(broker)
}

pub struct KafkaProbe {
    broker: Service<Kafka>,
    label: String,
    resolver: Resolver,
    min_brokers: u32,
    login: Option<Arc<sasl::Login>>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Probe for KafkaProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn may_overlap(&self) -> bool {
        // ApiVersions and a Metadata request for no topics change nothing on the broker.
        true
    }

    async fn attempt(&self) -> Attempt {
        match self.exchange().await {
            Ok(attempt) => attempt,
            Err(failure) => failure.into(),
        }
    }
}

impl KafkaProbe {
    async fn exchange(&self) -> std::result::Result<Attempt, Failure> {
        let (stream, _) = service::connect(&self.resolver, &self.broker.address()).await?;
        match &self.tls {
            Some(config) => {
                let stream = service::start_tls(stream, &self.broker.host, config.clone()).await?;
                self.converse(stream, ", TLS").await
            }
            None => self.converse(stream, "").await,
        }
    }

    async fn converse<S>(&self, mut stream: S, over: &str) -> std::result::Result<Attempt, Failure>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let versions = api_versions(&mut stream).await?;
        let mut seen = over.to_owned();
        if let Some(login) = &self.login {
            sasl::authenticate(&mut stream, login, &versions).await?;
            seen.push_str(&format!(", user {} via {}", login.user, login.mechanism));
        }
        let metadata = metadata(&mut stream, &versions).await?;
        Ok(judge(&metadata, self.min_brokers, &seen))
    }
}

/// What the broker said of its ApiVersions: the request version it answered, and the
/// range of each API it lists.
#[derive(Debug, PartialEq, Eq)]
struct Versions {
    api_versions: i16,
    ranges: Vec<(i16, i16, i16)>,
}

impl Versions {
    fn range(&self, api: i16) -> Option<(i16, i16)> {
        self.ranges
            .iter()
            .find(|(key, ..)| *key == api)
            .map(|&(_, min, max)| (min, max))
    }
}

/// The part of a Metadata answer readiness needs.
#[derive(Debug, PartialEq, Eq)]
struct Metadata {
    version: i16,
    /// Node ids of the brokers the cluster lists.
    brokers: Vec<i32>,
    cluster_id: Option<String>,
    controller_id: i32,
}

/// ApiVersions, first as v3; a broker that does not know v3 answers UNSUPPORTED_VERSION in
/// the v0 layout with its own range, and is asked again on the same connection.
async fn api_versions<S>(stream: &mut S) -> std::result::Result<Versions, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut version = API_VERSIONS_FIRST;
    for correlation in 1..=2 {
        let mut body = Vec::new();
        if version >= 3 {
            put_compact_string(&mut body, wire::CLIENT_ID);
            put_compact_string(&mut body, env!("CARGO_PKG_VERSION"));
            body.push(0); // no tagged fields
        }
        send(
            stream,
            API_VERSIONS,
            version,
            correlation,
            version >= 3,
            &body,
        )
        .await
        .map_err(|e| io_failure("sending ApiVersions", &e))?;
        // ApiVersions answers always carry response header v0, even when flexible.
        let frame = receive(stream, "ApiVersions", correlation, false).await?;
        let answer = parse_api_versions(&frame, version).map_err(|why| {
            Failure::Retry(format!(
                "the answer to ApiVersions v{version} is malformed ({why}; is this a Kafka port?)"
            ))
        })?;
        match answer {
            ApiVersionsAnswer::Ok(ranges) => {
                return Ok(Versions {
                    api_versions: version,
                    ranges,
                });
            }
            ApiVersionsAnswer::Unsupported { max } if max < version && max >= 0 => version = max,
            ApiVersionsAnswer::Unsupported { .. } => break,
            ApiVersionsAnswer::Error(code) => {
                return Err(Failure::Retry(format!(
                    "the broker answered ApiVersions with {}",
                    error_name(code)
                )));
            }
        }
    }
    Err(Failure::Retry(format!(
        "the broker refuses every ApiVersions version initbox speaks (v0-v{API_VERSIONS_FIRST})"
    )))
}

enum ApiVersionsAnswer {
    /// Each API the broker lists: (key, min, max).
    Ok(Vec<(i16, i16, i16)>),
    /// UNSUPPORTED_VERSION, with the broker's highest ApiVersions version.
    Unsupported {
        max: i16,
    },
    Error(i16),
}

fn parse_api_versions(
    frame: &[u8],
    version: i16,
) -> std::result::Result<ApiVersionsAnswer, String> {
    let mut r = Reader::new(frame);
    let error = r.i16()?;
    // An UNSUPPORTED_VERSION answer is laid out as v0, whatever version was asked.
    let flexible = version >= 3 && error != UNSUPPORTED_VERSION;
    let count = r.array_len(flexible)?;
    let mut ranges = Vec::with_capacity(count);
    let mut own = None;
    for _ in 0..count {
        let (key, min, max) = (r.i16()?, r.i16()?, r.i16()?);
        if flexible {
            r.skip_tags()?;
        }
        if key == API_VERSIONS {
            own = Some(max);
        }
        ranges.push((key, min, max));
    }
    Ok(match error {
        0 => ApiVersionsAnswer::Ok(ranges),
        UNSUPPORTED_VERSION => ApiVersionsAnswer::Unsupported {
            max: own.unwrap_or(0),
        },
        code => ApiVersionsAnswer::Error(code),
    })
}

/// A Metadata request for no topics (an empty list; a null one would mean all topics).
async fn metadata<S>(stream: &mut S, versions: &Versions) -> std::result::Result<Metadata, Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some((min, max)) = versions.range(API_METADATA) else {
        // A KRaft controller listener answers ApiVersions with its own APIs only: the port
        // is the wrong one, and stays so.
        return Err(Failure::Fatal(Error::Failed(format!(
            "the listener answers ApiVersions (v{}) without the Metadata API: a KRaft \
             controller listener? Name a broker listener (listeners=PLAINTEXT://…) instead",
            versions.api_versions
        ))));
    };
    let version = max.min(*METADATA_VERSIONS.end());
    if version < min || !METADATA_VERSIONS.contains(&version) {
        // A broker upgrade can change this; a retry costs little and says it each time.
        return Err(Failure::Retry(format!(
            "the broker accepts Metadata v{min}-v{max} only; initbox speaks v{}-v{}",
            METADATA_VERSIONS.start(),
            METADATA_VERSIONS.end()
        )));
    }
    let flexible = version >= 9;
    let mut body = Vec::new();
    if flexible {
        body.push(1); // topics: a compact array of length 0
    } else {
        body.extend_from_slice(&0i32.to_be_bytes());
    }
    if version >= 4 {
        body.push(0); // allow_auto_topic_creation: false
    }
    if (8..=10).contains(&version) {
        body.push(0); // include_cluster_authorized_operations
    }
    if version >= 8 {
        body.push(0); // include_topic_authorized_operations
    }
    if flexible {
        body.push(0); // no tagged fields
    }
    let correlation = 3;
    send(stream, API_METADATA, version, correlation, flexible, &body)
        .await
        .map_err(|e| io_failure("sending Metadata", &e))?;
    let frame = receive(stream, "Metadata", correlation, flexible).await?;
    parse_metadata(&frame, version).map_err(|why| {
        Failure::Retry(format!(
            "the answer to Metadata v{version} is malformed ({why})"
        ))
    })
}

fn parse_metadata(frame: &[u8], version: i16) -> std::result::Result<Metadata, String> {
    let flexible = version >= 9;
    let mut r = Reader::new(frame);
    if version >= 3 {
        r.i32()?; // throttle_time_ms
    }
    let count = r.array_len(flexible)?;
    let mut brokers = Vec::new();
    for _ in 0..count {
        let node = r.i32()?;
        r.string(flexible)?; // host
        r.i32()?; // port
        r.nullable_string(flexible)?; // rack
        if flexible {
            r.skip_tags()?;
        }
        brokers.push(node);
    }
    let cluster_id = if version >= 2 {
        r.nullable_string(flexible)?
    } else {
        None
    };
    let controller_id = r.i32()?;
    Ok(Metadata {
        version,
        brokers,
        cluster_id,
        controller_id,
    })
}

/// What a Metadata answer means.
/// `seen` is what else the attempt saw (`, TLS, user app via SCRAM-SHA-512`).
fn judge(metadata: &Metadata, min_brokers: u32, seen: &str) -> Attempt {
    let count = metadata.brokers.len();
    let plural = if count == 1 { "broker" } else { "brokers" };
    if metadata.controller_id < 0 {
        return Attempt::NotYet(format!(
            "no controller yet (controller_id {}; {count} {plural} listed)",
            metadata.controller_id
        ));
    }
    if (count as u64) < u64::from(min_brokers) {
        return Attempt::NotYet(format!(
            "{count} of {min_brokers} brokers (controller {})",
            metadata.controller_id
        ));
    }
    let cluster = metadata
        .cluster_id
        .as_deref()
        .map(|id| format!(", cluster {}", service::shorten(id)))
        .unwrap_or_default();
    Attempt::ready(format!(
        "{count} {plural}, controller {}{cluster} (Metadata v{}{seen})",
        metadata.controller_id, metadata.version
    ))
}

impl crate::cli::Task for KafkaArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    /// `--password-file` without a user to log in as is refused when the flags are parsed,
    /// so `run --check` refuses it too (it needs no I/O).
    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        self.wait.validate()?;
        match &self.password_file {
            Some(file) if self.user.is_none() && self.brokers.iter().any(|b| b.user.is_none()) => {
                Err(crate::cli::Invalid {
                    arg: "--password-file <FILE>".into(),
                    value: file.display().to_string(),
                    reason: "needs --user (or a user in the kafka:// URL)".into(),
                })
            }
            _ => Ok(()),
        }
    }
}

/// The login a broker gets: --user or the URL's user, with the password.
fn login(
    args: &KafkaArgs,
    broker: &Service<Kafka>,
    password: &Option<String>,
) -> Result<Option<sasl::Login>> {
    let Some(user) = args.user.clone().or_else(|| broker.user.clone()) else {
        if args.password_file.is_some() {
            return Err(Error::Usage(
                "--password-file needs --user (or a user in the kafka:// URL)".into(),
            ));
        }
        return Ok(None);
    };
    let Some(password) = password.clone() else {
        return Err(Error::Usage(format!(
            "a SASL login as '{user}' needs a password: use --password-file (or {PASSWORD_ENV})"
        )));
    };
    Ok(Some(sasl::Login {
        user,
        password,
        mechanism: args.sasl_mechanism,
    }))
}

pub async fn run(args: KafkaArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let wants_login = args.user.is_some() || args.brokers.iter().any(|b| b.user.is_some());
    let password = if wants_login {
        service::password(args.password_file.as_deref(), PASSWORD_ENV)?
    } else {
        None
    };
    let tls = if args.tls {
        let mut config = http_client::tls_config(&args.tls_files)?;
        // Kafka's SSL listeners negotiate no ALPN.
        config.alpn_protocols = Vec::new();
        Some(Arc::new(config))
    } else {
        None
    };
    let mut probes = Vec::new();
    for broker in &args.brokers {
        probes.push(KafkaProbe {
            label: broker.to_string(),
            login: login(&args, broker, &password)?.map(Arc::new),
            broker: broker.clone(),
            resolver: resolver.clone(),
            min_brokers: args.min_brokers,
            tls: tls.clone(),
        });
    }
    wait::wait_for_all("kafka", probes, options).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn an_unsupported_version_answer_is_read_in_the_v0_layout() {
        // Kafka 4.1's answer to ApiVersions v9, after the correlation id: error 35, one
        // entry (ApiVersions, v0-v4), no throttle time, no tags.
        let body = hex("002300000001001200000004");
        match parse_api_versions(&body, 9).unwrap() {
            ApiVersionsAnswer::Unsupported { max } => assert_eq!(max, 4),
            _ => panic!("not read as UNSUPPORTED_VERSION"),
        }
    }

    #[test]
    fn a_flexible_answer_gives_the_metadata_range() {
        // error 0; a compact array of 2 entries (written 3), each with an empty tag
        // buffer: Metadata v0-v12, ApiVersions v0-v4; throttle_time_ms; no tags.
        let body = hex("00000300030000000c00001200000004000000000000");
        match parse_api_versions(&body, 3).unwrap() {
            ApiVersionsAnswer::Ok(ranges) => assert_eq!(ranges, [(3, 0, 12), (18, 0, 4)]),
            _ => panic!("not read as a success"),
        }
    }

    #[test]
    fn metadata_answers_are_read_in_the_flexible_and_the_old_layout() {
        // v12: throttle; brokers (1): node 1, host "127.0.0.1", port 9092, rack null, no
        // tags; cluster "abc"; controller 1; the rest (topics, tags) is not read.
        let v12 = hex(concat!(
            "000000000200000001",
            "0a3132372e302e302e31",
            "000023840000",
            "04616263",
            "000000010100"
        ));
        assert_eq!(
            parse_metadata(&v12, 12).unwrap(),
            Metadata {
                version: 12,
                brokers: vec![1],
                cluster_id: Some("abc".into()),
                controller_id: 1,
            }
        );
        // v1: no throttle, INT32 arrays and INT16 strings, no cluster id.
        let v1 = hex(concat!(
            "0000000100000007",
            "00093132372e302e302e31",
            "00002384ffff",
            "00000007"
        ));
        assert_eq!(
            parse_metadata(&v1, 1).unwrap(),
            Metadata {
                version: 1,
                brokers: vec![7],
                cluster_id: None,
                controller_id: 7,
            }
        );
        assert!(parse_metadata(&v12[..10], 12).is_err());
    }

    #[test]
    fn metadata_without_controller_is_not_yet_and_too_few_brokers_counts_them() {
        let none = Metadata {
            version: 12,
            brokers: vec![1],
            cluster_id: Some("c".into()),
            controller_id: -1,
        };
        match judge(&none, 1, "") {
            Attempt::NotYet(reason) => {
                assert_eq!(
                    reason,
                    "no controller yet (controller_id -1; 1 broker listed)"
                )
            }
            other => panic!("{other:?}"),
        }
        let two = Metadata {
            brokers: vec![1, 2],
            controller_id: 2,
            ..none
        };
        match judge(&two, 3, "") {
            Attempt::NotYet(reason) => assert_eq!(reason, "2 of 3 brokers (controller 2)"),
            other => panic!("{other:?}"),
        }
        match judge(&two, 2, ", TLS") {
            Attempt::Ready { detail, .. } => {
                assert_eq!(
                    detail,
                    "2 brokers, controller 2, cluster c (Metadata v12, TLS)"
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
