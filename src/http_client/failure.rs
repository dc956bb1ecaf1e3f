//! What a failed request or an unexpected answer means for a wait: retry (and with what
//! reason), back off, or give up at once; in words a user can act on.

use std::time::Duration;

use super::client::{RedirectProblem, ResolveError};
use super::tls::{describe_tls, in_words, is_tls_configuration};
use super::{StatusRanges, read_body};
use crate::exit::Error;
use crate::reason;
use crate::wait::{Attempt, Failure};

/// A failed request as register, fetch and git-clone see it: a certificate or TLS setup
/// that is wrong, and a redirect loop, end the run at once (exit 1); a retry cannot heal
/// them. Connection problems, timeouts and lookups that may succeed later are retried.
pub fn classify(error: &reqwest::Error) -> Failure {
    classify_with(error, true)
}

/// [`classify`] for wait-for-http, whose job is to wait until an endpoint is ready: a TLS
/// endpoint still presenting a temporary certificate (an ingress controller's default
/// one, cert-manager not done yet) is not ready *yet*, so TLS problems are retried; the
/// reason is logged at the first attempt and named again if the wait times out.
pub fn classify_probe(error: &reqwest::Error) -> Failure {
    classify_with(error, false)
}

fn classify_with(error: &reqwest::Error, tls_fatal: bool) -> Failure {
    // The causes beneath reqwest's own error, whose text only repeats the URL.
    let causes: Vec<_> = reason::causes(error).skip(1).collect();
    for cause in &causes {
        if let Some(resolve) = cause.downcast_ref::<ResolveError>() {
            return resolve.failure();
        }
        if let Some(redirect) = cause.downcast_ref::<RedirectProblem>() {
            return Failure::Fatal(Error::Failed(redirect.0.clone()));
        }
    }
    if let Some(tls) = causes
        .iter()
        .find_map(|c| c.downcast_ref::<rustls::Error>())
    {
        let reason = describe_tls(tls);
        return if tls_fatal && is_tls_configuration(tls) {
            Failure::Fatal(Error::Failed(reason))
        } else {
            Failure::Retry(reason)
        };
    }
    if let Some(io) = causes
        .iter()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
    {
        return Failure::Retry(reason::io(io));
    }
    if error.is_timeout() {
        return Failure::Retry("timed out".into());
    }
    let detail = match causes.last() {
        Some(cause) => cause.to_string(),
        None => String::new(),
    };
    if error.is_redirect() {
        return Failure::Fatal(Error::Failed(format!(
            "following a redirect failed{}",
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {}", in_words(&detail))
            }
        )));
    }
    Failure::Retry(describe_transport(&detail))
}

/// hyper's and reqwest's own wording for a broken exchange, as a sentence (their Display
/// texts name internals, and a bare reqwest error repeats the URL).
fn describe_transport(detail: &str) -> String {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("connection closed before message completed")
        || lower.contains("incomplete message")
    {
        "the server closed the connection without a complete answer".into()
    } else if lower.contains("invalid http")
        || lower.contains("parse")
        || lower.contains("invalid header")
        || lower.contains("invalid status")
    {
        format!(
            "the server's answer is not valid HTTP/1.1 ({})",
            in_words(detail)
        )
    } else if detail.is_empty() {
        "the request failed".into()
    } else {
        format!("the request failed: {}", in_words(detail))
    }
}

/// [`classify`] for a client built with a transfer timeout (register, fetch): a connection
/// or a read that timed out is named by the flag that set the limit, as the wait engine
/// names it for the checks, so a server that accepts and never answers says why it failed.
pub fn classify_within(error: &reqwest::Error, transfer_timeout: Duration) -> Failure {
    let lookup_failed =
        reason::causes(error).any(|cause| cause.downcast_ref::<ResolveError>().is_some());
    if error.is_timeout() && !lookup_failed {
        return Failure::Retry(crate::wait::no_answer_within(transfer_timeout));
    }
    classify(error)
}

/// An attempt whose body broke off: retried, saying so.
pub fn body_read_failed<T>(error: &reqwest::Error) -> Attempt<T> {
    match classify(error) {
        Failure::Retry(reason) => Attempt::NotYet(format!("reading the body: {reason}")),
        Failure::Fatal(error) => Attempt::Fatal(error),
    }
}

/// The start of a body as one short line, for error messages.
async fn excerpt(mut response: reqwest::Response) -> String {
    const SHOWN_CHARS: usize = 200;
    let Ok((body, _)) = read_body(&mut response, 4096).await else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&body);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.chars().count() > SHOWN_CHARS {
        let cut: String = line.chars().take(SHOWN_CHARS).collect();
        format!("{cut}…")
    } else {
        line
    }
}

/// `HTTP 503 Service Unavailable`.
pub fn describe_status(status: reqwest::StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Whether a status says "try again later": 5xx, 408 Request Timeout, 429 Too Many Requests.
pub fn is_retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || matches!(status.as_u16(), 408 | 429)
}

/// The retry rule of register and fetch for an answer outside `expected`: 5xx, 408 and 429
/// are tried again, no sooner than the server's Retry-After (or `pause` when it sent none,
/// so a struggling server is not hammered at the fast-start rate); anything else fails at
/// once, showing the status and the start of the body.
pub async fn unexpected_answer<T>(
    response: reqwest::Response,
    expected: &StatusRanges,
    pause: Duration,
) -> Attempt<T> {
    let status = response.status();
    let retry_after = retry_after(response.headers());
    let body = excerpt(response).await;
    let mut reason = describe_status(status);
    if !body.is_empty() {
        reason = format!("{reason}: {body}");
    }
    if !is_retryable(status) {
        return Attempt::Fatal(Error::Failed(format!("{reason} (expected {expected})")));
    }
    if let Some(after) = retry_after {
        reason = format!("{reason} (Retry-After {})", crate::duration::Elapsed(after));
    }
    Attempt::Backoff {
        reason,
        after: retry_after.unwrap_or(pause),
    }
}

/// Retry-After as seconds or as an HTTP date.
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        headers.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let after = retry_after(&headers).unwrap();
        assert!(after > Duration::from_secs(100) && after <= Duration::from_secs(120));
        headers.insert("retry-after", HeaderValue::from_static("soon"));
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn which_answers_are_retried() {
        use reqwest::StatusCode;
        for code in [500, 502, 503, 504, 408, 429] {
            assert!(is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
        for code in [400, 401, 403, 404, 409, 422, 200, 301] {
            assert!(!is_retryable(StatusCode::from_u16(code).unwrap()), "{code}");
        }
    }
}
