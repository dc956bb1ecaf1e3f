//! wait-for-grpc: one attempt = connect, `grpc.health.v1.Health/Check` for each
//! `--service`, close; ready when every one answers SERVING, as grpc-health-probe and the
//! kubelet's grpc probe decide.
//!
//! gRPC is spoken by hand over the `h2` crate, which is in the binary already (reqwest's
//! HTTP/2), and the two one-field protobuf messages are encoded and decoded here: a gRPC
//! stack (tonic, prost) would add hundreds of KiB for two messages.

use std::fmt::Write as _;
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::checks::service;
use crate::checks::tcp::HostPort;
use crate::cli::Invalid;
use crate::exit::{Error, Result};
use crate::http_client::{self, TlsArgs};
use crate::resolve::{Resolver, ResolverArgs};
use crate::wait::{self, Attempt, Failure, Probe, WaitArgs};

const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";
/// A health answer is a few bytes; more than this is not one.
const MAX_ANSWER: usize = 64 * 1024;

/// Wait until gRPC servers report SERVING through the standard health service.
#[derive(Debug, Clone, clap::Args)]
pub struct GrpcArgs {
    /// Servers as HOST:PORT; IPv6 literals in brackets: [::1]:50051.
    #[arg(required = true, value_name = "HOST:PORT")]
    pub targets: Vec<HostPort>,
    /// The service to check (repeatable: all must be SERVING) [default: the server as a
    /// whole, the empty name].
    #[arg(long, env = "INITBOX_SERVICE", value_name = "NAME")]
    pub service: Vec<String>,
    /// Speak TLS (plaintext by default, as the kubelet's grpc probe).
    #[arg(long, env = "INITBOX_TLS", help_heading = "TLS")]
    pub tls: bool,
    /// The name to send (SNI) and to check the certificate against [default: the host].
    #[arg(
        long,
        env = "INITBOX_SERVER_NAME",
        value_name = "NAME",
        help_heading = "TLS"
    )]
    pub server_name: Option<String>,
    #[command(flatten)]
    pub tls_args: TlsArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: crate::exec::Then,
}

/// How one attempt connects.
#[derive(Clone)]
struct Transport {
    /// `None` for plaintext.
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    server_name: Option<String>,
}

pub struct GrpcProbe {
    target: HostPort,
    label: String,
    services: Vec<String>,
    resolver: Resolver,
    transport: Transport,
    /// Sent as `grpc-timeout`, so the server gives up when we do.
    deadline: Duration,
}

impl Probe for GrpcProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt {
        self.check().await.into()
    }
}

impl GrpcProbe {
    async fn check(&self) -> std::result::Result<String, Failure> {
        let (stream, _addr) = service::connect(&self.resolver, &self.target).await?;
        match &self.transport.tls {
            None => self.exchange(stream, "http").await,
            Some(config) => {
                let name = self
                    .transport
                    .server_name
                    .as_deref()
                    .unwrap_or(&self.target.host);
                let stream = service::start_tls(stream, name, config.clone())
                    .await
                    .map_err(plaintext_server)?;
                self.exchange(stream, "https").await
            }
        }
    }

    /// One HTTP/2 connection, one Check per service, in order; the first that is not
    /// SERVING is the reason.
    async fn exchange<T>(&self, io: T, scheme: &str) -> std::result::Result<String, Failure>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let plain = scheme == "http";
        let (client, connection) = h2::client::handshake(io)
            .await
            .map_err(|e| self.h2_failure(&e, plain))?;
        // The connection must be driven while the requests run; aborted with the attempt.
        let driver = Abort(tokio::spawn(connection));
        for name in &self.services {
            self.check_one(client.clone(), scheme, name, plain).await?;
        }
        drop(driver);
        let shown: Vec<String> = self.services.iter().map(|s| describe_service(s)).collect();
        Ok(format!("{} SERVING", shown.join(", ")))
    }

    async fn check_one(
        &self,
        client: h2::client::SendRequest<Bytes>,
        scheme: &str,
        name: &str,
        plain: bool,
    ) -> std::result::Result<(), Failure> {
        let h2 = |e: h2::Error| self.h2_failure(&e, plain);
        let mut client = client.ready().await.map_err(h2)?;
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("{scheme}://{}{CHECK_PATH}", self.target))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("grpc-timeout", grpc_timeout(self.deadline))
            .header("user-agent", concat!("initbox/", env!("CARGO_PKG_VERSION")))
            .body(())
            .map_err(|e| Failure::Fatal(Error::Usage(format!("building the request: {e}"))))?;
        let (response, mut send) = client.send_request(request, false).map_err(h2)?;
        send.send_data(frame(&encode_request(name)), true)
            .map_err(h2)?;
        let response = response.await.map_err(h2)?;
        let (parts, mut body) = response.into_parts();
        if parts.status != http::StatusCode::OK {
            return Err(Failure::Retry(format!(
                "answered HTTP {} instead of a gRPC response (is this a gRPC port?)",
                parts.status
            )));
        }
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/grpc") {
            return Err(Failure::Retry(format!(
                "answered with content-type '{content_type}', not gRPC (is this a gRPC port?)"
            )));
        }
        // Trailers-Only: an error comes in the headers, without a body.
        let mut status = RpcStatus::from_headers(&parts.headers);
        let mut answer = Vec::new();
        if status.is_none() {
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(h2)?;
                let _ = body.flow_control().release_capacity(chunk.len());
                answer.extend_from_slice(chunk.chunk());
                if answer.len() > MAX_ANSWER {
                    return Err(Failure::Retry(format!(
                        "the health answer is larger than {MAX_ANSWER} bytes: not a HealthCheckResponse"
                    )));
                }
            }
            let trailers = body.trailers().await.map_err(h2)?;
            status = trailers.as_ref().and_then(RpcStatus::from_headers);
        }
        let Some(status) = status else {
            return Err(Failure::Retry(
                "the answer carries no grpc-status (not a gRPC server?)".into(),
            ));
        };
        if status.code != 0 {
            return Err(self.rpc_failure(name, &status));
        }
        let message = unframe(&answer)
            .map_err(|why| Failure::Retry(format!("malformed HealthCheckResponse: {why}")))?;
        let serving = decode_response(message)
            .map_err(|why| Failure::Retry(format!("malformed HealthCheckResponse: {why}")))?;
        match serving {
            1 => Ok(()),
            other => Err(Failure::Retry(format!(
                "{} is {}",
                describe_service(name),
                serving_status_name(other)
            ))),
        }
    }

    fn rpc_failure(&self, name: &str, status: &RpcStatus) -> Failure {
        let code = code_name(status.code);
        let said = if status.message.is_empty() {
            code.to_owned()
        } else {
            format!("{code}: {}", status.message)
        };
        match status.code {
            12 => Failure::Fatal(Error::Failed(format!(
                "{} has no gRPC health service: {CHECK_PATH} answered {said} (the server must register \
                 grpc.health.v1.Health; retrying cannot help)",
                self.label
            ))),
            5 => Failure::Retry(format!(
                "{} is not known to the server ({said})",
                describe_service(name)
            )),
            7 | 16 => Failure::Fatal(Error::Failed(format!(
                "{CHECK_PATH} for {} was refused: {said}",
                describe_service(name)
            ))),
            _ => Failure::Retry(format!("{CHECK_PATH} failed: {said}")),
        }
    }

    fn h2_failure(&self, error: &h2::Error, plain: bool) -> Failure {
        // Bytes back that are no HTTP/2 frame (an HTTP/1 server's answer, a TLS alert) read
        // as a frame too large to take, which h2 calls "frame with invalid size": say what
        // it means instead.
        if error.is_library() && error.reason() == Some(h2::Reason::FRAME_SIZE_ERROR) {
            let hint = if plain {
                " (an HTTP/1 port, or a TLS port: then try --tls)"
            } else {
                " (an HTTP/1 port?)"
            };
            return Failure::Retry(format!("the server does not answer in HTTP/2{hint}"));
        }
        let what = match error.get_io() {
            Some(io) => crate::reason::io(io),
            None => error.to_string(),
        };
        let hint = if plain && (error.is_io() || error.is_go_away()) {
            " (a TLS-only server closes plaintext connections: try --tls)"
        } else {
            ""
        };
        Failure::Retry(format!("HTTP/2: {what}{hint}"))
    }
}

/// The shared TLS description speaks of URLs; a gRPC user has a flag to drop instead.
fn plaintext_server(failure: Failure) -> Failure {
    match failure {
        Failure::Fatal(Error::Failed(message)) if message.contains("does not speak TLS") => {
            Failure::Fatal(Error::Failed(
                "TLS: the server does not speak TLS (a plaintext gRPC port: leave out --tls)"
                    .into(),
            ))
        }
        other => other,
    }
}

/// Aborts a spawned task when dropped.
struct Abort(tokio::task::JoinHandle<std::result::Result<(), h2::Error>>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `grpc-timeout`: at most 8 digits and a unit; milliseconds, or seconds when longer.
fn grpc_timeout(limit: Duration) -> String {
    let millis = limit.as_millis().max(1);
    if millis <= 99_999_999 {
        format!("{millis}m")
    } else {
        format!("{}S", limit.as_secs().min(99_999_999))
    }
}

fn describe_service(name: &str) -> String {
    if name.is_empty() {
        "the server (service '')".into()
    } else {
        format!("service '{name}'")
    }
}

/// A gRPC status from `grpc-status` and `grpc-message`.
struct RpcStatus {
    code: u32,
    message: String,
}

impl RpcStatus {
    fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let code = headers
            .get("grpc-status")?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let message = headers
            .get("grpc-message")
            .map(|v| percent_decode(v.as_bytes()))
            .unwrap_or_default();
        Some(RpcStatus { code, message })
    }
}

/// `grpc-message` is percent-encoded UTF-8; shown without control characters.
fn percent_decode(raw: &[u8]) -> String {
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%'
            && i + 2 < raw.len()
            && let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2]))
        {
            bytes.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        bytes.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect()
}

fn code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    match NAMES.get(code as usize) {
        Some(name) => (*name).to_owned(),
        None => format!("status {code}"),
    }
}

fn serving_status_name(status: i32) -> String {
    match status {
        0 => "UNKNOWN".into(),
        1 => "SERVING".into(),
        2 => "NOT_SERVING".into(),
        3 => "SERVICE_UNKNOWN".into(),
        other => format!("in unknown status {other}"),
    }
}

/// `HealthCheckRequest { string service = 1; }`: the empty name is the empty message, as
/// proto3 leaves a default value out.
fn encode_request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        message.push(0x0a); // field 1, wire type 2 (length-delimited)
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    message
}

/// A gRPC length-prefixed message: not compressed, 4-byte big-endian length.
fn frame(message: &[u8]) -> Bytes {
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    Bytes::from(framed)
}

/// The one message of a unary answer; anything else (none, two, compressed, cut short) is
/// refused.
fn unframe(body: &[u8]) -> std::result::Result<&[u8], String> {
    if body.len() < 5 {
        return Err(format!("{} bytes, less than a message header", body.len()));
    }
    if body[0] != 0 {
        return Err("compressed, though no compression was offered".into());
    }
    let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    let rest = &body[5..];
    if rest.len() != length {
        return Err(format!(
            "the header announces {length} bytes, the answer has {}",
            rest.len()
        ));
    }
    Ok(rest)
}

/// `HealthCheckResponse { ServingStatus status = 1; }`: the status (0, UNKNOWN, when
/// absent, as proto3 says); other fields are skipped as protobuf requires, and anything
/// malformed is refused.
fn decode_response(mut message: &[u8]) -> std::result::Result<i32, String> {
    let mut status = 0i32;
    while !message.is_empty() {
        let key = take_varint(&mut message)?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err("field number 0".into());
        }
        match (field, wire) {
            (1, 0) => {
                let value = take_varint(&mut message)? as i64;
                status =
                    i32::try_from(value).map_err(|_| format!("status {value} out of range"))?;
            }
            (1, _) => return Err(format!("field 1 has wire type {wire}, not varint")),
            (_, 0) => {
                take_varint(&mut message)?;
            }
            (_, 1) => skip(&mut message, 8)?,
            (_, 2) => {
                let length = take_varint(&mut message)?;
                let length = usize::try_from(length).map_err(|_| "length out of range")?;
                skip(&mut message, length)?;
            }
            (_, 5) => skip(&mut message, 4)?,
            (_, other) => return Err(format!("unsupported wire type {other}")),
        }
    }
    Ok(status)
}

fn take_varint(bytes: &mut &[u8]) -> std::result::Result<u64, String> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some((&byte, rest)) = bytes.split_first() else {
            return Err("a varint is cut short".into());
        };
        *bytes = rest;
        if i == 9 && byte > 1 {
            return Err("a varint overflows 64 bits".into());
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a varint is longer than 10 bytes".into())
}

fn skip(bytes: &mut &[u8], count: usize) -> std::result::Result<(), String> {
    if bytes.len() < count {
        return Err("a field is cut short".into());
    }
    *bytes = &bytes[count..];
    Ok(())
}

fn put_varint(into: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        into.push((value as u8) | 0x80);
        value >>= 7;
    }
    into.push(value as u8);
}

impl crate::cli::Task for GrpcArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    /// The TLS flags mean nothing without `--tls` (grpc-health-probe refuses them too):
    /// refused rather than silently ignored on a plaintext connection.
    fn validate(&self) -> std::result::Result<(), Invalid> {
        self.wait.validate()?;
        if self.tls {
            return Ok(());
        }
        let tls = &self.tls_args;
        let given: Option<(&str, String)> = if let Some(file) = tls.cacert.first() {
            Some(("--cacert <FILE>", file.display().to_string()))
        } else if let Some(file) = &tls.cert {
            Some(("--cert <FILE>", file.display().to_string()))
        } else if let Some(file) = &tls.key {
            Some(("--key <FILE>", file.display().to_string()))
        } else if tls.insecure {
            Some(("--insecure", "true".into()))
        } else {
            self.server_name
                .as_ref()
                .map(|name| ("--server-name <NAME>", name.clone()))
        };
        match given {
            None => Ok(()),
            Some((arg, value)) => Err(Invalid {
                arg: arg.into(),
                value,
                reason: "only applies with --tls (the connection is plaintext without it)".into(),
            }),
        }
    }
}

pub async fn run(args: GrpcArgs) -> Result<()> {
    let options = args.wait.options();
    let limit = args.wait.retry.attempt_timeout.get();
    let resolver = args.resolver.resolver(limit);
    let tls = if args.tls {
        let mut config = http_client::tls_config(&args.tls_args)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Some(std::sync::Arc::new(config))
    } else {
        None
    };
    let transport = Transport {
        tls,
        server_name: args.server_name.clone(),
    };
    let services = if args.service.is_empty() {
        vec![String::new()]
    } else {
        args.service.clone()
    };
    let probes = args
        .targets
        .into_iter()
        .map(|target| {
            let mut label = String::new();
            let _ = write!(label, "{target}");
            GrpcProbe {
                label,
                target,
                services: services.clone(),
                resolver: resolver.clone(),
                transport: transport.clone(),
                deadline: limit,
            }
        })
        .collect();
    wait::wait_for_all("grpc", probes, options).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_encode_the_service_name_as_field_one() {
        assert_eq!(encode_request(""), b"");
        assert_eq!(encode_request("app"), b"\x0a\x03app");
        let long = "s".repeat(200);
        let encoded = encode_request(&long);
        assert_eq!(&encoded[..3], b"\x0a\xc8\x01");
        assert_eq!(
            &frame(b"\x0a\x03app")[..],
            b"\x00\x00\x00\x00\x05\x0a\x03app"
        );
    }

    #[test]
    fn responses_decode_strictly() {
        assert_eq!(decode_response(b"\x08\x01"), Ok(1));
        assert_eq!(decode_response(b"\x08\x02"), Ok(2));
        assert_eq!(decode_response(b""), Ok(0));
        // An unknown field is skipped; the last status wins.
        assert_eq!(decode_response(b"\x12\x02hi\x08\x02\x08\x01"), Ok(1));
        assert!(decode_response(b"\x08").is_err());
        assert!(decode_response(b"\x0a\x01\x01").is_err());
        assert!(decode_response(b"\x12\x05hi").is_err());
        assert!(decode_response(b"\x0b").is_err());
        assert!(decode_response(b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f").is_err());
        assert!(decode_response(b"\x00\x01").is_err());
    }

    #[test]
    fn answers_hold_exactly_one_uncompressed_message() {
        assert_eq!(
            unframe(b"\x00\x00\x00\x00\x02\x08\x01"),
            Ok(&b"\x08\x01"[..])
        );
        assert!(unframe(b"").is_err());
        assert!(unframe(b"\x01\x00\x00\x00\x02\x08\x01").is_err());
        assert!(unframe(b"\x00\x00\x00\x00\x03\x08\x01").is_err());
        assert!(unframe(b"\x00\x00\x00\x00\x02\x08\x01\x00").is_err());
    }

    #[test]
    fn the_deadline_sent_fits_grpc_timeouts_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_secs(2)), "2000m");
        assert_eq!(grpc_timeout(Duration::ZERO), "1m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
    }

    #[test]
    fn grpc_messages_are_percent_decoded_without_controls() {
        assert_eq!(percent_decode(b"not%20ready%0A"), "not ready");
        assert_eq!(percent_decode(b"100%"), "100%");
        assert_eq!(percent_decode(b"%zz"), "%zz");
    }
}
