//! The request flags register and fetch share, and the parsers of what users type into
//! them (URLs, methods, headers, status ranges), each checked where the flag is defined.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};

use super::TlsArgs;
use crate::exit::{Error, Result};
use crate::{expand, redact};

/// A URL to request. Its errors name it as typed, with any userinfo masked: a refused URL
/// may still carry a real password.
pub fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text.trim());
    let shown = redact::mask_userinfo(text);
    let text = shown.as_str();
    let url = url.map_err(|e| format!("'{text}' is not a valid URL: {e}"))?;
    // Whatever else is wrong with it, its password is a secret from here on.
    redact::url(&url);
    if url.port() == Some(0) {
        return Err(format!("'{text}': port 0 cannot be connected to"));
    }
    // A host that cannot be a DNS name is a usage error now, not a lookup retried later.
    if let Some(url::Host::Domain(name)) = url.host() {
        crate::resolve::check_host_name(name).map_err(|reason| format!("'{text}': {reason}"))?;
    }
    match url.scheme() {
        "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "http" | "https" => Err(format!("'{text}' has no host")),
        other => Err(format!(
            "'{text}': unsupported scheme '{other}' (expected http:// or https://)"
        )),
    }
}

/// `URL` of register and fetch, checked where the flag is defined (so `run --check` refuses
/// a bad one too) unless it holds a `$(VAR)`, which is expanded, then checked, when the
/// command runs.
pub fn check_url(text: &str) -> Result<String, String> {
    if !text.contains("$(") {
        parse_url(text)?;
    }
    Ok(text.to_owned())
}

/// A value parser for an argument that may carry a password in its userinfo (a URL). clap
/// would say `invalid value '<the value as typed>'`; this one gives only the checker's own
/// words, which name the value with its password masked.
pub struct Unechoed<T>(pub fn(&str) -> Result<T, String>);

impl<T> Clone for Unechoed<T> {
    fn clone(&self) -> Self {
        Unechoed(self.0)
    }
}

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Unechoed<T> {
    type Value = T;

    fn parse_ref(
        &self,
        command: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        use clap::error::ErrorKind;
        let text = value
            .to_str()
            .ok_or_else(|| clap::Error::new(ErrorKind::InvalidUtf8).with_cmd(command))?;
        (self.0)(text).map_err(|reason| {
            let name = arg.map(ToString::to_string).unwrap_or_else(|| "...".into());
            clap::Error::raw(
                ErrorKind::ValueValidation,
                format!("invalid value for '{name}': {reason}\n"),
            )
            .with_cmd(command)
        })
    }
}

pub fn parse_method(text: &str) -> Result<Method, String> {
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
    /// Any 2xx.
    pub fn success() -> Self {
        StatusRanges(vec![(200, 299)])
    }

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
                _ if s.trim() == text.trim() => {
                    Err(format!("'{text}' is not an HTTP status (100-599)"))
                }
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

/// The request flags register and fetch share. Headers are kept as typed, so that `$(VAR)`
/// is expanded before they are parsed.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Request")]
pub struct RequestArgs {
    /// Extra request header as 'Name: value' (repeatable); $(VAR) is expanded. Values of
    /// credential headers (Authorization, *-Token, *-Key, …) are never logged.
    #[arg(long, env = "INITBOX_HEADER", value_name = "NAME:VALUE", value_parser = check_header)]
    pub header: Vec<String>,
    /// Send 'Authorization: Bearer TOKEN' with TOKEN read from this file (a mounted secret
    /// or a service-account token); never logged.
    #[arg(long, env = "INITBOX_BEARER_TOKEN_FILE", value_name = "FILE")]
    pub bearer_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// Checks the shape of a `--header` before any variable is expanded.
fn check_header(text: &str) -> Result<String, String> {
    let (name, _) = text
        .split_once(':')
        .ok_or_else(|| format!("header '{}' must look like 'Name: value'", first_word(text)))?;
    if !name.contains("$(") {
        HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("'{}' is not a valid header name", name.trim()))?;
    }
    Ok(text.to_owned())
}

impl RequestArgs {
    /// The headers to send: `$(VAR)` expanded, the bearer token added, every credential
    /// registered with [`redact::conceal`] before anything can log it.
    pub fn headers(&self) -> Result<Vec<Header>> {
        let mut headers = Vec::new();
        for raw in &self.header {
            let header = parse_header(&expand::flag(raw, "--header")?).map_err(Error::Usage)?;
            conceal_credentials(&header);
            headers.push(header);
        }
        if let Some(path) = &self.bearer_token_file {
            let token = redact::read_secret_file(path, "bearer token file")?;
            let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                Error::Config(format!(
                    "bearer token file {}: the token holds characters a header cannot carry",
                    path.display()
                ))
            })?;
            value.set_sensitive(true);
            headers.push(Header {
                name: reqwest::header::AUTHORIZATION,
                value,
            });
        }
        Ok(headers)
    }
}

/// Registers the value of a credential header (and the credential after its scheme) as a
/// secret, so no log line can show it.
pub fn conceal_credentials(header: &Header) {
    if redact::is_credential_header(header.name.as_str())
        && let Ok(value) = header.value.to_str()
    {
        redact::conceal(value);
        if let Some((_scheme, credential)) = value.split_once(' ') {
            redact::conceal(credential);
        }
    }
}

/// A request as `-v` shows it: method, URL and headers, credentials masked.
pub fn describe_request(method: &Method, url: &Url, headers: &[Header]) -> String {
    let shown: Vec<String> = headers
        .iter()
        .map(|h| {
            let value = String::from_utf8_lossy(h.value.as_bytes());
            format!(
                "{}: {}",
                h.name,
                redact::header_value(h.name.as_str(), &value)
            )
        })
        .collect();
    if shown.is_empty() {
        format!("{method} {}", redact::url(url))
    } else {
        format!("{method} {} ({})", redact::url(url), shown.join(", "))
    }
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
        // The message quotes what was typed, whitespace included (found by fuzzing).
        let error = "\t\u{8}".parse::<StatusRanges>().unwrap_err();
        assert!(error.contains("\t\u{8}"), "{error:?}");
        let error = "600".parse::<StatusRanges>().unwrap_err();
        assert_eq!(error, "'600' is not an HTTP status (100-599)");
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
        assert!(
            parse_url("http://127.0.0.1:0/")
                .unwrap_err()
                .contains("port 0")
        );
        for refused in [
            "http://u:pa55word@127.0.0.1:0/",
            "http://u:pa55word@h:99999/",
            "ftp://u:pa55word@h/",
        ] {
            let error = parse_url(refused).unwrap_err();
            assert!(!error.contains("pa55word"), "{error}");
            assert!(error.contains("://***@"), "{error}");
        }
    }

    #[test]
    fn requests_are_shown_without_credentials() {
        let url: Url = "https://user:pa55word@api.test/register".parse().unwrap();
        let headers = vec![
            parse_header("Authorization: Bearer tok3n-value").unwrap(),
            parse_header("Content-Type: application/json").unwrap(),
        ];
        let shown = describe_request(&Method::POST, &url, &headers);
        assert_eq!(
            shown,
            "POST https://***@api.test/register (authorization: Bearer ***, content-type: application/json)"
        );
    }
}
