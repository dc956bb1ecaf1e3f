//! wait-for-http: one attempt = one request on a fresh connection; ready when the status
//! is in the accepted ranges (the Kubernetes httpGet rule, 200-399, by default) and the
//! body matches `--body-regex` when one is given.

use std::fmt;
use std::str::FromStr;

use regex::Regex;
use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};

use crate::cli::{ResolverArgs, Then, WaitArgs};
use crate::exit::Result;
use crate::http_client::{self, Redirects, TlsArgs};
use crate::resolve::Resolver;
use crate::wait::{self, Attempt, Probe};

/// How much of a body `--body-regex` looks at.
const BODY_LIMIT: usize = 1024 * 1024;

/// Wait until HTTP(S) endpoints answer with an accepted status.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// URLs to request (http:// or https://).
    #[arg(required = true, value_name = "URL", value_parser = parse_url)]
    pub urls: Vec<Url>,
    /// Accepted status codes: ranges and lists such as 200-399, 200,204 or 2xx.
    #[arg(
        long,
        env = "INITBOX_STATUS",
        default_value = "200-399",
        value_name = "RANGES"
    )]
    pub status: StatusRanges,
    /// Request method.
    #[arg(long, env = "INITBOX_METHOD", default_value = "GET", value_parser = parse_method)]
    pub method: Method,
    /// Extra request header as 'Name: value' (repeatable).
    #[arg(long, env = "INITBOX_HEADER", value_name = "NAME:VALUE", value_parser = parse_header)]
    pub header: Vec<Header>,
    /// Ready only when the response body (first 1 MiB) matches this regular expression.
    #[arg(long, env = "INITBOX_BODY_REGEX", value_name = "REGEX")]
    pub body_regex: Option<Regex>,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(flatten)]
    pub wait: WaitArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim()).map_err(|e| format!("'{text}' is not a valid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "http" | "https" => Err(format!("'{text}' has no host")),
        other => Err(format!(
            "'{text}': unsupported scheme '{other}' (expected http:// or https://)"
        )),
    }
}

fn parse_method(text: &str) -> Result<Method, String> {
    Method::from_bytes(text.trim().to_ascii_uppercase().as_bytes())
        .map_err(|_| format!("'{text}' is not an HTTP method"))
}

/// One `--header Name: value`.
#[derive(Debug, Clone)]
pub struct Header {
    pub name: HeaderName,
    pub value: HeaderValue,
}

pub fn parse_header(text: &str) -> Result<Header, String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("header '{}' must look like 'Name: value'", first_word(text)))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .map_err(|_| format!("'{}' is not a valid header name", name.trim()))?;
    let mut value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of header '{name}' contains invalid characters"))?;
    value.set_sensitive(true);
    Ok(Header { name, value })
}

/// Only the part before any value, so a mistyped secret header is not echoed back.
fn first_word(text: &str) -> &str {
    text.split([' ', '=']).next().unwrap_or("")
}

/// Accepted status codes: a list of inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRanges(Vec<(u16, u16)>);

impl StatusRanges {
    pub fn contains(&self, status: u16) -> bool {
        self.0
            .iter()
            .any(|&(low, high)| (low..=high).contains(&status))
    }
}

impl FromStr for StatusRanges {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let code = |s: &str| -> Result<u16, String> {
            match s.trim().parse::<u16>() {
                Ok(n) if (100..=599).contains(&n) => Ok(n),
                _ => Err(format!(
                    "'{text}': '{}' is not an HTTP status (100-599)",
                    s.trim()
                )),
            }
        };
        let mut ranges = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(format!("'{text}' has an empty status range"));
            }
            let range = if let Some(class) = part.strip_suffix("xx").or(part.strip_suffix("XX")) {
                let first = code(&format!("{class}00"))?;
                (first, first + 99)
            } else if let Some((low, high)) = part.split_once('-') {
                let (low, high) = (code(low)?, code(high)?);
                if low > high {
                    return Err(format!("'{text}': range {part} is backwards"));
                }
                (low, high)
            } else {
                let single = code(part)?;
                (single, single)
            };
            ranges.push(range);
        }
        Ok(StatusRanges(ranges))
    }
}

impl fmt::Display for StatusRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|&(low, high)| {
                if low == high {
                    low.to_string()
                } else {
                    format!("{low}-{high}")
                }
            })
            .collect();
        f.write_str(&parts.join(","))
    }
}

pub struct HttpProbe {
    url: Url,
    label: String,
    client: reqwest::Client,
    method: Method,
    headers: Vec<Header>,
    status: StatusRanges,
    body_regex: Option<Regex>,
}

impl Probe for HttpProbe {
    fn target(&self) -> &str {
        &self.label
    }

    async fn attempt(&self) -> Attempt {
        let mut request = self.client.request(self.method.clone(), self.url.clone());
        for header in &self.headers {
            request = request.header(header.name.clone(), header.value.clone());
        }
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return http_client::classify(&error).into(),
        };
        let status = response.status().as_u16();
        if !self.status.contains(status) {
            return Attempt::NotYet(format!("HTTP {status} (expected {})", self.status));
        }
        let Some(regex) = &self.body_regex else {
            return Attempt::Ready(format!("HTTP {status}"));
        };
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = BODY_LIMIT - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= BODY_LIMIT {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    return match http_client::classify(&error).into() {
                        Attempt::NotYet(reason) => {
                            Attempt::NotYet(format!("reading the body: {reason}"))
                        }
                        other => other,
                    };
                }
            }
        }
        let text = String::from_utf8_lossy(&body);
        if regex.is_match(&text) {
            Attempt::Ready(format!("HTTP {status}, body matches /{regex}/"))
        } else {
            Attempt::NotYet(format!(
                "HTTP {status} but the body does not match /{regex}/"
            ))
        }
    }
}

pub async fn run(args: HttpArgs) -> Result<()> {
    let options = args.wait.options()?;
    let resolver = Resolver::new(&args.resolver.settings(options.attempt_timeout));
    let client = http_client::build_client(&args.tls, resolver, Redirects::Keep)?;
    let probes = args
        .urls
        .into_iter()
        .map(|url| HttpProbe {
            label: http_client::redact_url(&url),
            url,
            client: client.clone(),
            method: args.method.clone(),
            headers: args.header.clone(),
            status: args.status.clone(),
            body_regex: args.body_regex.clone(),
        })
        .collect();
    wait::wait_for_all("http", probes, options).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_ranges() {
        let ranges: StatusRanges = "200-399".parse().unwrap();
        assert!(ranges.contains(200) && ranges.contains(302) && ranges.contains(399));
        assert!(!ranges.contains(404) && !ranges.contains(199));
        let list: StatusRanges = "204, 3xx,418".parse().unwrap();
        assert!(list.contains(204) && list.contains(301) && list.contains(418));
        assert!(!list.contains(200));
        assert_eq!(list.to_string(), "204,300-399,418");
        for bad in ["", "abc", "99", "600", "399-200", "200,", "7xx"] {
            assert!(bad.parse::<StatusRanges>().is_err(), "{bad}");
        }
    }

    #[test]
    fn urls_and_headers() {
        assert!(parse_url("http://mydb:8080/healthz").is_ok());
        assert!(parse_url("http//x").unwrap_err().contains("http//x"));
        assert!(parse_url("ftp://x/").unwrap_err().contains("ftp"));
        let header = parse_header("Authorization: Bearer abc").unwrap();
        assert_eq!(header.name, "authorization");
        assert!(header.value.is_sensitive());
        let error = parse_header("Authorization=Bearer secret").unwrap_err();
        assert!(!error.contains("secret"), "{error}");
        assert!(parse_method("post").unwrap() == Method::POST);
    }
}
