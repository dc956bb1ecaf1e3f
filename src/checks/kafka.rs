//! wait-for-kafka: one attempt = connect, an ApiVersions request (what
//! `kafka-broker-api-versions.sh` sends), then a Metadata request that lists no topics:
//! ready when the broker answers with a known controller and enough brokers. A port that
//! merely accepts, or a broker still without a controller, is not ready. The few
//! big-endian structs are written by hand (a client crate would bring a whole producer and
//! consumer); every length the server sends is checked before anything is allocated.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::checks::service::{self, Protocol, Service};
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::Unechoed;
use crate::resolve::{Resolver, ResolverArgs};
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

/// The largest response we read. ApiVersions and a Metadata answer without topics take a
/// few KiB even for a large cluster; a bigger length prefix is not a Kafka broker talking
/// (or is an attack), and is refused before any buffer is allocated.
const MAX_RESPONSE: usize = 1024 * 1024;

const API_METADATA: i16 = 3;
const API_VERSIONS: i16 = 18;
/// The ApiVersions version sent first: flexible (v3 and later), known to every broker since
/// Kafka 2.4. An older broker answers UNSUPPORTED_VERSION with its range, and is asked again.
const API_VERSIONS_FIRST: i16 = 3;
/// The Metadata versions this file can write and read (v13 only adds a trailing error code).
const METADATA_VERSIONS: std::ops::RangeInclusive<i16> = 1..=12;
const UNSUPPORTED_VERSION: i16 = 35;
const CLIENT_ID: &str = "initbox";

/// Kafka as [`Service`] parses it: `HOST`, `HOST:PORT` or `kafka://HOST:PORT`.
pub struct Kafka;

impl Protocol for Kafka {
    const NAME: &'static str = "Kafka";
    const SCHEMES: &'static [&'static str] = &["kafka"];
    const DEFAULT_PORT: u16 = 9092;
    const PASSWORD_SOURCE: &'static str =
        "nothing: wait-for-kafka speaks to PLAINTEXT listeners only, without SASL";
}

/// Wait until Kafka brokers answer ApiVersions and Metadata with a known controller.
#[derive(Debug, Clone, clap::Args)]
pub struct KafkaArgs {
    /// Brokers as HOST or HOST:PORT (default port 9092), or one comma-separated
    /// bootstrap list (`kafka-0:9092,kafka-1:9092`); every one named is checked.
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
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

fn parse_broker(text: &str) -> std::result::Result<Service<Kafka>, String> {
    let broker: Service<Kafka> = text.trim().parse()?;
    if broker.user.is_some() {
        return Err(format!(
            "'{text}' names a user, but wait-for-kafka speaks to PLAINTEXT listeners only \
             (no SASL yet)"
        ));
    }
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
        let (mut stream, _) = match service::connect(&self.resolver, &self.broker.address()).await {
            Ok(connected) => connected,
            Err(failure) => return failure.into(),
        };
        let versions = match api_versions(&mut stream).await {
            Ok(versions) => versions,
            Err(failure) => return failure.into(),
        };
        let metadata = match metadata(&mut stream, &versions).await {
            Ok(metadata) => metadata,
            Err(failure) => return failure.into(),
        };
        judge(&metadata, self.min_brokers)
    }
}

/// What the broker said of its ApiVersions: the request version it answered, and the
/// Metadata range it accepts.
#[derive(Debug, PartialEq, Eq)]
struct Versions {
    api_versions: i16,
    metadata: Option<(i16, i16)>,
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
async fn api_versions(stream: &mut TcpStream) -> std::result::Result<Versions, Failure> {
    let mut version = API_VERSIONS_FIRST;
    for correlation in 1..=2 {
        let mut body = Vec::new();
        if version >= 3 {
            put_compact_string(&mut body, CLIENT_ID);
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
            ApiVersionsAnswer::Ok(metadata) => {
                return Ok(Versions {
                    api_versions: version,
                    metadata,
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
    /// The Metadata range, when the broker lists Metadata at all.
    Ok(Option<(i16, i16)>),
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
    let mut metadata = None;
    let mut own = None;
    for _ in 0..count {
        let (key, min, max) = (r.i16()?, r.i16()?, r.i16()?);
        if flexible {
            r.skip_tags()?;
        }
        match key {
            API_METADATA => metadata = Some((min, max)),
            API_VERSIONS => own = Some(max),
            _ => {}
        }
    }
    Ok(match error {
        0 => ApiVersionsAnswer::Ok(metadata),
        UNSUPPORTED_VERSION => ApiVersionsAnswer::Unsupported {
            max: own.unwrap_or(0),
        },
        code => ApiVersionsAnswer::Error(code),
    })
}

/// A Metadata request for no topics (an empty list; a null one would mean all topics).
async fn metadata(
    stream: &mut TcpStream,
    versions: &Versions,
) -> std::result::Result<Metadata, Failure> {
    let Some((min, max)) = versions.metadata else {
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
fn judge(metadata: &Metadata, min_brokers: u32) -> Attempt {
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
        "{count} {plural}, controller {}{cluster} (Metadata v{})",
        metadata.controller_id, metadata.version
    ))
}

/// Writes one request: a length prefix, request header v1 (v2 when flexible: a tag
/// buffer after the client id), the body.
async fn send(
    stream: &mut TcpStream,
    api: i16,
    version: i16,
    correlation: i32,
    flexible: bool,
    body: &[u8],
) -> std::io::Result<()> {
    let mut header = Vec::with_capacity(32);
    header.extend_from_slice(&api.to_be_bytes());
    header.extend_from_slice(&version.to_be_bytes());
    header.extend_from_slice(&correlation.to_be_bytes());
    header.extend_from_slice(&(CLIENT_ID.len() as i16).to_be_bytes());
    header.extend_from_slice(CLIENT_ID.as_bytes());
    if flexible {
        header.push(0);
    }
    let size = (header.len() + body.len()) as i32;
    let mut request = Vec::with_capacity(4 + size as usize);
    request.extend_from_slice(&size.to_be_bytes());
    request.extend_from_slice(&header);
    request.extend_from_slice(body);
    stream.write_all(&request).await
}

/// Reads one response and returns its body: the length is checked before the buffer is
/// allocated, the correlation id must be ours, and a flexible header's tags are skipped.
async fn receive(
    stream: &mut TcpStream,
    api: &str,
    correlation: i32,
    flexible_header: bool,
) -> std::result::Result<Vec<u8>, Failure> {
    let mut prefix = [0u8; 4];
    if let Err(error) = stream.read_exact(&mut prefix).await {
        return Err(match error.kind() {
            std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
                Failure::Retry(closed(api))
            }
            _ => io_failure(&format!("reading the answer to {api}"), &error),
        });
    }
    if &prefix == b"HTTP" {
        return Err(Failure::Retry(format!(
            "the server answered {api} in HTTP (is this a Kafka port?)"
        )));
    }
    let size = i32::from_be_bytes(prefix);
    if size < 4 || size as usize > MAX_RESPONSE {
        return Err(Failure::Retry(format!(
            "the server announced an answer to {api} of {} bytes, over the {} MiB limit or \
             too short (is this a Kafka port?)",
            u32::from_be_bytes(prefix),
            MAX_RESPONSE / (1024 * 1024)
        )));
    }
    let mut frame = vec![0u8; size as usize];
    stream
        .read_exact(&mut frame)
        .await
        .map_err(|e| io_failure(&format!("reading the answer to {api}"), &e))?;
    let mut r = Reader::new(&frame);
    let got = r.i32().map_err(Failure::Retry)?;
    if got != correlation {
        return Err(Failure::Retry(format!(
            "the answer to {api} has correlation id {got}, not {correlation} (is this a Kafka \
             port?)"
        )));
    }
    if flexible_header {
        r.skip_tags()
            .map_err(|why| Failure::Retry(format!("the answer to {api} is malformed ({why})")))?;
    }
    let start = r.pos;
    frame.drain(..start);
    Ok(frame)
}

fn closed(api: &str) -> String {
    if api == "ApiVersions" {
        "the server closed the connection without answering ApiVersions (is this a PLAINTEXT \
         Kafka listener? SSL and SASL listeners are not supported yet)"
            .into()
    } else {
        format!(
            "the broker closed the connection instead of answering {api} (does this listener \
             require SASL? wait-for-kafka speaks PLAINTEXT only)"
        )
    }
}

fn io_failure(action: &str, error: &std::io::Error) -> Failure {
    Failure::Retry(format!("{action}: {}", crate::reason::io(error)))
}

fn put_compact_string(buf: &mut Vec<u8>, text: &str) {
    put_uvarint(buf, text.len() as u64 + 1);
    buf.extend_from_slice(text.as_bytes());
}

fn put_uvarint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// A bounded reader over one response: every length is checked against what is left.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let left = self.buf.len() - self.pos;
        if n > left {
            return Err(format!(
                "a field of {n} bytes runs past the end ({left} left)"
            ));
        }
        let bytes = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    fn i16(&mut self) -> std::result::Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn i32(&mut self) -> std::result::Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn uvarint(&mut self) -> std::result::Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a varint longer than 5 bytes".into())
    }

    /// An array's element count: INT32 (-1 = null, read as empty), or a compact uvarint
    /// of count + 1 in flexible versions. Each element takes at least one byte, so a count
    /// over what is left is refused rather than looped over.
    fn array_len(&mut self, flexible: bool) -> std::result::Result<usize, String> {
        let count = if flexible {
            self.uvarint()?.saturating_sub(1) as usize
        } else {
            self.i32()?.max(0) as usize
        };
        let left = self.buf.len() - self.pos;
        if count > left {
            return Err(format!("an array of {count} entries in {left} bytes"));
        }
        Ok(count)
    }

    /// A string, or None when null (length -1, or compact length 0).
    fn nullable_string(&mut self, flexible: bool) -> std::result::Result<Option<String>, String> {
        let len = if flexible {
            match self.uvarint()? {
                0 => return Ok(None),
                n => (n - 1) as usize,
            }
        } else {
            match self.i16()? {
                n if n < 0 => return Ok(None),
                n => n as usize,
            }
        };
        Ok(Some(String::from_utf8_lossy(self.take(len)?).into_owned()))
    }

    fn string(&mut self, flexible: bool) -> std::result::Result<String, String> {
        self.nullable_string(flexible)?
            .ok_or_else(|| "a null string where one is required".into())
    }

    /// Skips a tagged-fields section (count, then tag, size and bytes for each).
    fn skip_tags(&mut self) -> std::result::Result<(), String> {
        let count = self.uvarint()?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.take(usize::try_from(size).map_err(|_| "a tagged field too large")?)?;
        }
        Ok(())
    }
}

/// The names of the error codes an ApiVersions answer can carry, as Kafka spells them.
fn error_name(code: i16) -> String {
    let name = match code {
        -1 => "UNKNOWN_SERVER_ERROR",
        7 => "REQUEST_TIMED_OUT",
        8 => "BROKER_NOT_AVAILABLE",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        35 => "UNSUPPORTED_VERSION",
        42 => "INVALID_REQUEST",
        58 => "SASL_AUTHENTICATION_FAILED",
        _ => return format!("error code {code}"),
    };
    format!("{name} (error code {code})")
}

impl crate::cli::Task for KafkaArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

pub async fn run(args: KafkaArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    let probes = args
        .brokers
        .into_iter()
        .map(|broker| KafkaProbe {
            label: broker.to_string(),
            broker,
            resolver: resolver.clone(),
            min_brokers: args.min_brokers,
        })
        .collect();
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
            ApiVersionsAnswer::Ok(metadata) => assert_eq!(metadata, Some((0, 12))),
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
        match judge(&none, 1) {
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
        match judge(&two, 3) {
            Attempt::NotYet(reason) => assert_eq!(reason, "2 of 3 brokers (controller 2)"),
            other => panic!("{other:?}"),
        }
        match judge(&two, 2) {
            Attempt::Ready { detail, .. } => {
                assert_eq!(detail, "2 brokers, controller 2, cluster c (Metadata v12)")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn lengths_past_the_end_are_refused_without_allocating() {
        // An array announcing 2^31-1 entries in a 4-byte body.
        let mut r = Reader::new(&[0x7f, 0xff, 0xff, 0xff]);
        assert!(
            r.array_len(false)
                .unwrap_err()
                .contains("2147483647 entries")
        );
        // A string of 0x7fff bytes with two bytes behind it.
        let mut r = Reader::new(&[0x7f, 0xff, b'a', b'b']);
        assert!(
            r.nullable_string(false)
                .unwrap_err()
                .contains("runs past the end")
        );
        // A varint that never ends.
        let mut r = Reader::new(&[0xff; 8]);
        assert!(r.uvarint().unwrap_err().contains("longer than 5 bytes"));
    }
}
