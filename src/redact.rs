//! Secrets never reach a log line, an error message or a status file.
//!
//! Two layers. Where a secret's place is known (URL userinfo, credential headers) it is
//! replaced before the text is built: [`url`], [`header_value`]. And every secret initbox
//! reads (token and password files, URL passwords, credential header values) is registered
//! with [`conceal`], so that [`scrub`] — applied by the reporter to every line it prints —
//! masks it wherever it turns up, even inside a server's error body that echoes it back.

use std::borrow::Cow;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets shorter than this are not masked inside other text: masking every `ab` would
/// garble the logs while protecting nothing that a guess could not find.
const MIN_CONCEALED_LEN: usize = 4;

static CONCEALED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// Registers a secret: from now on it is masked in everything the reporter prints.
pub fn conceal(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_CONCEALED_LEN {
        return;
    }
    let mut concealed = CONCEALED.write().unwrap_or_else(|p| p.into_inner());
    for form in [secret.to_owned(), percent_encoded(secret)] {
        if !concealed.contains(&form) {
            concealed.push(form);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    concealed.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// The text with every registered secret masked.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let concealed = CONCEALED.read().unwrap_or_else(|p| p.into_inner());
    let mut result = Cow::Borrowed(text);
    for secret in concealed.iter() {
        if result.contains(secret.as_str()) {
            result = Cow::Owned(result.replace(secret.as_str(), MASK));
        }
    }
    result
}

/// A URL safe to print: userinfo is masked (and its password registered as a secret).
pub fn url(url: &reqwest::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    if let Some(password) = url.password() {
        conceal(password);
        conceal(&percent_decoded(password));
    }
    let mut shown = url.clone();
    let _ = shown.set_username(MASK);
    let _ = shown.set_password(None);
    shown.to_string()
}

/// Whether a header carries credentials, by its name: Authorization, Cookie, API keys,
/// tokens, secrets, passwords.
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    matches!(
        name.as_str(),
        "authorization" | "proxy-authorization" | "cookie" | "set-cookie"
    ) || [
        "auth",
        "token",
        "secret",
        "password",
        "passwd",
        "key",
        "session",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// A header value as it may be printed: credentials are masked, keeping an auth scheme
/// (`Bearer ***`) so the log still says what kind of credential was sent.
pub fn header_value(name: &str, value: &str) -> String {
    if !is_credential_header(name) {
        return scrub(value).into_owned();
    }
    match value.split_once(' ') {
        Some((scheme, _))
            if ["basic", "bearer", "token", "digest"]
                .contains(&scheme.to_ascii_lowercase().as_str()) =>
        {
            format!("{scheme} {MASK}")
        }
        _ => MASK.to_owned(),
    }
}

fn percent_encoded(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = bytes.get(i + 1..i + 3)
            && let Ok(hex) = std::str::from_utf8(hex)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_never_shows() {
        let parsed: reqwest::Url = "https://admin:s3cr%40t!@example.test/x".parse().unwrap();
        let shown = url(&parsed);
        assert_eq!(shown, "https://***@example.test/x");
        // The password is now masked anywhere else too, raw or percent-encoded.
        assert_eq!(scrub("echo s3cr@t! and s3cr%40t!"), "echo *** and ***");
        let plain: reqwest::Url = "http://example.test/".parse().unwrap();
        assert_eq!(url(&plain), "http://example.test/");
    }

    #[test]
    fn concealed_secrets_are_masked_everywhere() {
        conceal("tok-1234567890\n");
        assert_eq!(
            scrub("server said: bad token tok-1234567890!"),
            "server said: bad token ***!"
        );
        conceal("ab");
        assert_eq!(scrub("ab cd"), "ab cd", "too short to mask usefully");
    }

    #[test]
    fn credential_headers() {
        assert!(is_credential_header("Authorization"));
        assert!(is_credential_header("X-Api-Key"));
        assert!(is_credential_header("X-Auth-Token"));
        assert!(!is_credential_header("Content-Type"));
        assert_eq!(
            header_value("Authorization", "Bearer abc.def"),
            "Bearer ***"
        );
        assert_eq!(header_value("X-Api-Key", "k-123"), "***");
        assert_eq!(header_value("Accept", "text/plain"), "text/plain");
    }
}
