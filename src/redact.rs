//! Secrets never reach a log line, an error message or a status file.
//!
//! Two layers. Where a secret's place is known (URL userinfo, credential headers) it is
//! replaced before the text is built: [`url`], [`header_value`]. And every secret initbox
//! reads (token and password files, URL passwords, credential header values) is registered
//! with [`conceal`], so that [`scrub`] — applied by the reporter to every line it prints —
//! masks it wherever it turns up, even inside a server's error body that echoes it back.

use std::borrow::Cow;
use std::path::Path;
use std::sync::RwLock;

use crate::exit::{Error, Result};
use crate::reason;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets shorter than this are not masked inside other text: masking every `ab` would
/// garble the logs while protecting nothing that a guess could not find.
const MIN_CONCEALED_LEN: usize = 4;

/// The shortest run of base64 characters looked into: 6 characters hold 4 bytes, the
/// shortest secret masked.
const MIN_ENCODED_LEN: usize = 6;

/// Every registered secret, raw (what decoded text is searched for) and in every textual
/// form it can take in an echo (what plain text is searched for), longest first.
struct Concealed {
    raw: Vec<String>,
    forms: Vec<String>,
}

static CONCEALED: RwLock<Concealed> = RwLock::new(Concealed {
    raw: Vec::new(),
    forms: Vec::new(),
});

/// Registers a secret: from now on it is masked in everything the reporter prints, and
/// so is everything derived from it: its percent-encoded, form-encoded and JSON-escaped
/// forms, and any base64 text (standard or URL-safe, padded or not, at any offset) that
/// decodes to something holding it — the `Authorization: Basic` value built from a URL's
/// userinfo or a password file, a token a server echoes re-encoded.
pub fn conceal(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_CONCEALED_LEN {
        return;
    }
    let mut concealed = CONCEALED.write().unwrap_or_else(|p| p.into_inner());
    if !concealed.raw.iter().any(|s| s == secret) {
        concealed.raw.push(secret.to_owned());
        concealed.raw.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
    for form in textual_forms(secret) {
        if !concealed.forms.contains(&form) {
            concealed.forms.push(form);
        }
    }
    // Longest first, so a secret that contains another is masked whole.
    concealed.forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
}

/// The ways a secret is spelled when a server or a library writes it into other text.
fn textual_forms(secret: &str) -> Vec<String> {
    let upper = percent_encoded(secret);
    let mut forms = vec![
        secret.to_owned(),
        lowercase_escapes(&upper),
        // application/x-www-form-urlencoded: a space is `+`.
        upper.replace("%20", "+"),
        upper,
    ];
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json[1..json.len() - 1].to_owned());
        forms.push(json[1..json.len() - 1].replace('/', "\\/"));
    }
    forms.retain(|form| form.len() >= MIN_CONCEALED_LEN);
    forms.dedup();
    forms
}

/// Percent-encoding with lowercase hex digits (`%2f`), as some servers write it.
fn lowercase_escapes(encoded: &str) -> String {
    let mut out = String::with_capacity(encoded.len());
    let mut rest = encoded;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3).unwrap_or(&rest[at..]);
        out.push_str(&escape.to_ascii_lowercase());
        rest = &rest[at + escape.len()..];
    }
    out.push_str(rest);
    out
}

/// The text with every registered secret masked, in any of its forms.
pub fn scrub(text: &str) -> Cow<'_, str> {
    let concealed = CONCEALED.read().unwrap_or_else(|p| p.into_inner());
    if concealed.raw.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut result = Cow::Borrowed(text);
    for secret in concealed.forms.iter() {
        if result.contains(secret.as_str()) {
            result = Cow::Owned(result.replace(secret.as_str(), MASK));
        }
    }
    match mask_encoded(&result, &concealed.raw) {
        Some(masked) => Cow::Owned(masked),
        None => result,
    }
}

/// Masks every run of base64 characters that decodes to bytes holding a secret; None when
/// there is none. A JSON-escaped slash (`\/`) counts as part of a run.
fn mask_encoded(text: &str, secrets: &[String]) -> Option<String> {
    let bytes = text.as_bytes();
    let is_symbol = |b: u8| b.is_ascii_alphanumeric() || b"+/-_".contains(&b);
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if !is_symbol(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        let mut symbols = String::new();
        while i < bytes.len() {
            if is_symbol(bytes[i]) {
                symbols.push(bytes[i] as char);
                i += 1;
            } else if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'/') {
                symbols.push('/');
                i += 2;
            } else {
                break;
            }
        }
        while i < bytes.len() && bytes[i] == b'=' {
            i += 1;
        }
        if symbols.len() >= MIN_ENCODED_LEN && decodes_to_a_secret(&symbols, secrets) {
            let out = out.get_or_insert_with(String::new);
            out.push_str(&text[copied..start]);
            out.push_str(MASK);
            copied = i;
        }
    }
    out.map(|mut out| {
        out.push_str(&text[copied..]);
        out
    })
}

fn decodes_to_a_secret(symbols: &str, secrets: &[String]) -> bool {
    use base64::Engine as _;
    use base64::engine::DecodePaddingMode;
    use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true);
    const ENGINES: [GeneralPurpose; 2] = [
        GeneralPurpose::new(&base64::alphabet::STANDARD, LENIENT),
        GeneralPurpose::new(&base64::alphabet::URL_SAFE, LENIENT),
    ];
    // The run may start mid-quantum (`%20` before it leaves a stray `20`): try each offset.
    for offset in 0..4 {
        let Some(mut tail) = symbols.get(offset..) else {
            break;
        };
        if tail.len() % 4 == 1 {
            tail = &tail[..tail.len() - 1];
        }
        if tail.len() < MIN_ENCODED_LEN {
            break;
        }
        for engine in &ENGINES {
            if let Ok(decoded) = engine.decode(tail)
                && secrets
                    .iter()
                    .any(|secret| contains_bytes(&decoded, secret.as_bytes()))
            {
                return true;
            }
        }
    }
    false
}

fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty()
        && haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

/// A URL safe to print: userinfo is masked (and its password registered as a secret).
pub fn url(url: &reqwest::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    match url.password() {
        Some(password) => {
            conceal(password);
            conceal(&percent_decoded(password));
        }
        // `https://TOKEN@host/`: a user name alone is a token (GitHub, GitLab deploy tokens).
        None => {
            conceal(url.username());
            conceal(&percent_decoded(url.username()));
        }
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

/// `%XX` sequences decoded (a URL's userinfo or path); invalid ones kept as written.
pub fn percent_decoded(text: &str) -> String {
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

/// Every URL's userinfo in `text` masked: `scheme://user:password@host/…` becomes
/// `scheme://***@host/…`, wherever it stands (a whole value, or inside a message that
/// quotes one). For what is shown of a value refused before its secrets could be concealed:
/// clap's usage errors quote the refused value as typed.
pub fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = rest.find("://") {
        let start = found + 3;
        let authority_end = rest[start..]
            .find(|c: char| "/?#'\"".contains(c) || c.is_whitespace())
            .map_or(rest.len(), |i| start + i);
        match rest[start..authority_end].rfind('@') {
            Some(at) => {
                out.push_str(&rest[..start]);
                out.push_str("***");
                out.push_str(&rest[start + at..authority_end]);
            }
            None => out.push_str(&rest[..authority_end]),
        }
        rest = &rest[authority_end..];
    }
    out.push_str(rest);
    out
}

/// Reads a one-line secret (token, password) from a file, trimmed, and conceals it. The
/// error names the file, never its contents.
pub fn read_secret_file(path: &Path, what: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "reading {what} {}: {}",
            path.display(),
            reason::io(&e)
        ))
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Error::Config(format!("{what} {} is empty", path.display())));
    }
    conceal(secret);
    Ok(secret.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked_in_any_text() {
        assert_eq!(
            mask_userinfo("invalid value 'postgres://app:pw@db/x' for '<URL>': bad"),
            "invalid value 'postgres://***@db/x' for '<URL>': bad"
        );
        assert_eq!(
            mask_userinfo("a://u@h b://h c://x:y@z"),
            "a://***@h b://h c://***@z"
        );
        assert_eq!(mask_userinfo("no url, a@b: c"), "no url, a@b: c");
        assert_eq!(mask_userinfo("redis://:pw@h:6379"), "redis://***@h:6379");
    }

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
    fn values_derived_from_a_secret_are_masked_too() {
        use base64::Engine as _;
        use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
        conceal("pa ss/w?rd+\"1");
        // The Basic credential built from user:password, in every base64 spelling.
        let basic = STANDARD.encode("deploy:pa ss/w?rd+\"1");
        assert!(
            basic.ends_with('='),
            "{basic}: the padded form is exercised"
        );
        let url_safe = URL_SAFE_NO_PAD.encode("deploy:pa ss/w?rd+\"1");
        for (echo, expected) in [
            (
                format!("auth: Basic {basic} denied"),
                "auth: Basic *** denied",
            ),
            (format!("auth=Basic%20{basic}"), "auth=Basic%***"),
            (format!("t={url_safe};"), "t=***;"),
            (
                format!("{{\"h\":\"Basic {}\"}}", basic.replace('/', "\\/")),
                "{\"h\":\"Basic ***\"}",
            ),
            ("q=pa%20ss%2Fw%3Frd%2B%221".to_owned(), "q=***"),
            ("q=pa%20ss%2fw%3frd%2b%221".to_owned(), "q=***"),
            ("q=pa+ss%2Fw%3Frd%2B%221".to_owned(), "q=***"),
            ("{\"p\":\"pa ss/w?rd+\\\"1\"}".to_owned(), "{\"p\":\"***\"}"),
        ] {
            assert_eq!(scrub(&echo), expected, "{echo}");
        }
        // Ordinary words and base64 of other things stay as they are.
        let other = STANDARD.encode("deploy:another-password");
        let line = format!("connection refused; Basic {other}");
        assert_eq!(scrub(&line), line);
    }

    #[test]
    fn a_user_name_without_a_password_is_a_token() {
        let parsed: reqwest::Url = "https://ghp_tok3n5ecret@git.test/x".parse().unwrap();
        assert_eq!(url(&parsed), "https://***@git.test/x");
        assert_eq!(scrub("echo ghp_tok3n5ecret"), "echo ***");
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
