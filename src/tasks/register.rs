//! register: the `curl -X POST $HOST/register -d 'instance=$(POD_NAME)&ip=$(POD_IP)'` of
//! the init-container docs, done properly: `$(VAR)` expansion from the environment (the
//! Downward API), retries only where a retry can help (connection errors, timeouts, 5xx,
//! 408, 429 with Retry-After), an immediate failure on any other answer, no secret in any
//! log, and the response body on stdout or atomically in a file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Url};

use crate::atomic_file;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::http_client::{
    self, Header, MAX_REDIRECTS, Redirects, RequestArgs, StatusRanges, Unechoed, check_url,
    parse_method, parse_url,
};
use crate::report;
use crate::resolve::ResolverArgs;
use crate::wait::RetryArgs;
use crate::wait::{self, Attempt, Probe};

/// The most of a response register keeps; anything bigger is not a registration answer.
const RESPONSE_LIMIT: usize = 16 * 1024 * 1024;

/// Register this pod with a remote service over HTTP.
#[derive(Debug, Clone, clap::Args)]
#[command(mut_arg("attempt_timeout", |arg| arg
    .default_value("10s")
    .help("Give up on an attempt when connecting, or waiting for the next byte, takes this long")))]
pub struct RegisterArgs {
    /// Where to send the registration; $(VAR) is expanded from the environment.
    #[arg(value_name = "URL", value_parser = Unechoed(check_url))]
    pub url: String,
    /// Request method.
    #[arg(long, env = "INITBOX_METHOD", default_value = "POST", value_parser = parse_method)]
    pub method: Method,
    /// A form field KEY=VALUE (repeatable), sent urlencoded; $(VAR) is expanded.
    #[arg(long, env = "INITBOX_FORM", value_name = "KEY=VALUE", value_parser = parse_form_field, group = "body")]
    pub form: Vec<(String, String)>,
    /// A JSON body, sent as given (keys, numbers and spacing byte for byte); $(VAR) is
    /// expanded inside string values, and an expanded value is escaped as JSON.
    #[arg(long, env = "INITBOX_JSON", value_name = "JSON", group = "body", value_parser = parse_json_body)]
    pub json: Option<String>,
    /// Send this file as the body, byte for byte.
    #[arg(long, env = "INITBOX_DATA_FILE", value_name = "FILE", group = "body")]
    pub data_file: Option<PathBuf>,
    /// The statuses that mean success: ranges and lists such as 200-299, 201 or 2xx.
    #[arg(
        long,
        env = "INITBOX_EXPECT_STATUS",
        default_value = "200-299",
        value_name = "RANGES"
    )]
    pub expect_status: StatusRanges,
    /// Write the response body to this file (atomically) instead of stdout ('-').
    #[arg(
        short,
        long,
        env = "INITBOX_OUTPUT",
        value_name = "FILE",
        default_value = "-"
    )]
    pub output: PathBuf,
    #[command(flatten)]
    pub request: RequestArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

fn parse_form_field(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!(
            "form field '{}' must look like KEY=VALUE",
            text.split('=').next().unwrap_or("")
        )),
    }
}

/// A request body and its content type.
struct Body {
    bytes: Vec<u8>,
    content_type: &'static str,
}

impl RegisterArgs {
    fn body(&self) -> Result<Option<Body>> {
        if !self.form.is_empty() {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            for (key, value) in &self.form {
                form.append_pair(
                    &crate::expand::flag(key, "--form")?,
                    &crate::expand::flag(value, &format!("--form {key}"))?,
                );
            }
            return Ok(Some(Body {
                bytes: form.finish().into_bytes(),
                content_type: "application/x-www-form-urlencoded",
            }));
        }
        if let Some(json) = &self.json {
            return Ok(Some(Body {
                bytes: expand_json(json)?.into_bytes(),
                content_type: "application/json",
            }));
        }
        if let Some(path) = &self.data_file {
            let bytes = std::fs::read(path).map_err(|e| {
                Error::Config(format!(
                    "reading --data-file {}: {}",
                    path.display(),
                    crate::reason::io(&e)
                ))
            })?;
            return Ok(Some(Body {
                bytes,
                content_type: content_type_of(path),
            }));
        }
        Ok(None)
    }
}

/// `--json` must be JSON before anything runs (so `run --check` refuses it too); it is kept
/// as written, for [`expand_json`].
fn parse_json_body(text: &str) -> Result<String, String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| text.to_owned())
        .map_err(|e| format!("not valid JSON: {e}"))
}

/// The `--json` body as the user wrote it, except for string values that hold `$(VAR)`:
/// those are expanded and written back as JSON strings, so a value with a quote, a
/// backslash or a newline stays inside its string (it cannot end it and add keys). Keys,
/// numbers (big integers and exact decimals included), key order and spacing are kept
/// byte for byte: re-serializing would sort keys and turn big integers into floats.
fn expand_json(text: &str) -> Result<String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map_err(|e| Error::Usage(format!("--json is not valid JSON: {e}")))?;
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        // The document is valid JSON, so every quote outside a string opens one.
        let start = i;
        i += 1;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        i += 1;
        let end = i.min(bytes.len());
        let next = bytes[end..].iter().find(|b| !b.is_ascii_whitespace());
        if next == Some(&b':') {
            continue; // a key
        }
        let literal = &text[start..end];
        let value: String = serde_json::from_str(literal).map_err(|e| {
            Error::Usage(format!("--json: the string {literal} cannot be read: {e}"))
        })?;
        if !value.contains("$(") {
            continue;
        }
        let expanded = crate::expand::flag(&value, "--json")?;
        out.push_str(&text[copied..start]);
        out.push_str(&serde_json::Value::String(expanded).to_string());
        copied = end;
    }
    out.push_str(&text[copied..]);
    Ok(out)
}

fn content_type_of(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => "application/json",
        Some("xml") => "application/xml",
        Some("yaml" | "yml") => "application/yaml",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

struct RegisterProbe {
    label: String,
    client: reqwest::Client,
    method: Method,
    url: Url,
    headers: Vec<Header>,
    body: Option<Vec<u8>>,
    expect: StatusRanges,
    /// The least pause after a "try again later" answer without Retry-After.
    pause: Duration,
    /// `--attempt-timeout`, which the client applies to connecting and to each read.
    attempt_timeout: Duration,
}

impl Probe for RegisterProbe {
    /// The body of the accepted answer.
    type Output = Vec<u8>;

    fn target(&self) -> &str {
        &self.label
    }

    fn ready_phrase(&self) -> String {
        format!("registered with {}", crate::redact::url(&self.url))
    }

    async fn attempt(&self) -> Attempt<Vec<u8>> {
        let request = http_client::request(
            &self.client,
            &self.method,
            &self.url,
            &self.headers,
            self.body.clone(),
        );
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => {
                return http_client::classify_within(&error, self.attempt_timeout).into();
            }
        };
        let status = response.status();
        if !self.expect.contains(status.as_u16()) {
            return http_client::unexpected_answer(response, &self.expect, self.pause).await;
        }
        match http_client::read_body(&mut response, RESPONSE_LIMIT).await {
            Ok((_, true)) => Attempt::Fatal(Error::Failed(format!(
                "{}, but the response is larger than {} (use fetch for downloads)",
                http_client::describe_status(status),
                crate::size::ByteSize(RESPONSE_LIMIT as u64)
            ))),
            Ok((body, false)) => {
                report::debug(
                    "register.response",
                    format!(
                        "{}, {} byte response",
                        http_client::describe_status(status),
                        body.len()
                    ),
                );
                Attempt::Ready {
                    detail: http_client::describe_status(status),
                    output: body,
                }
            }
            Err(error) => http_client::body_read_failed(&error),
        }
    }
}

impl crate::cli::Task for RegisterArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

pub async fn run(args: RegisterArgs) -> Result<()> {
    // The client bounds connecting and each read, so a slow answer that keeps coming is
    // not cut short.
    let options = args.retry.options().bounded_by_probe();
    let attempt_timeout = options.attempt.limit();
    let url = parse_url(&crate::expand::flag(&args.url, "URL")?).map_err(Error::Usage)?;
    let mut headers = args.request.headers()?;
    let body = args.body()?;
    if let Some(body) = &body
        && !headers.iter().any(|h| h.name == CONTENT_TYPE)
    {
        headers.push(Header {
            name: CONTENT_TYPE,
            value: HeaderValue::from_static(body.content_type),
        });
    }
    // Every destination is checked before the request: once the pod is registered, an
    // unwritable --output would fail the run and a restart would register it again.
    if args.output != Path::new("-") {
        atomic_file::check_destination(&args.output).map_err(|e| output_error(&args.output, &e))?;
    }
    let resolver = args.resolver.resolver(attempt_timeout);
    let client = http_client::build_client(
        &args.request.tls,
        resolver,
        Redirects::Follow(MAX_REDIRECTS),
        Some(attempt_timeout),
    )?;
    report::debug(
        "register.request",
        http_client::describe_request(&args.method, &url, &headers),
    );
    let probe = RegisterProbe {
        label: format!("{} {}", args.method, crate::redact::url(&url)),
        client,
        method: args.method,
        url,
        headers,
        body: body.map(|b| b.bytes),
        expect: args.expect_status,
        pause: options.interval,
        attempt_timeout,
    };
    let mut ready = wait::wait_for_all("register", vec![probe], options).await?;
    let body = ready.pop().map(|target| target.output).unwrap_or_default();
    write_output(&args.output, &body)
}

/// The response body to stdout (`-`) or atomically to a file.
fn write_output(output: &Path, body: &[u8]) -> Result<()> {
    use std::io::Write;
    if output == Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        return stdout
            .write_all(body)
            .and_then(|()| stdout.flush())
            .map_err(|e| {
                Error::Failed(format!(
                    "writing the response to stdout: {}",
                    crate::reason::io(&e)
                ))
            });
    }
    atomic_file::write(output, body, None).map_err(|e| output_error(output, &e))
}

fn output_error(output: &Path, error: &std::io::Error) -> Error {
    Error::Failed(format!(
        "cannot write the response to {}: {}",
        output.display(),
        crate::reason::io(error)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_sent_as_given_with_values_expanded_and_escaped() {
        let path = serde_json::to_string(&std::env::var("PATH").unwrap()).unwrap();
        let given = r#"{ "z": 12345678901234567890123, "a": 1.50, "$(PATH)" : "$(PATH)", "t": ["$$(x)", "plain \u0041"] }"#;
        let expected = format!(
            r#"{{ "z": 12345678901234567890123, "a": 1.50, "$(PATH)" : {path}, "t": ["$(x)", "plain \u0041"] }}"#
        );
        assert_eq!(expand_json(given).unwrap(), expected);
        assert!(expand_json("{\"a\": }").is_err());
    }

    #[test]
    fn form_fields() {
        assert_eq!(
            parse_form_field("ip=$(POD_IP)"),
            Ok(("ip".into(), "$(POD_IP)".into()))
        );
        assert_eq!(parse_form_field("empty="), Ok(("empty".into(), "".into())));
        assert!(parse_form_field("novalue").is_err());
        assert!(parse_form_field("=x").is_err());
    }
}
