//! SASL for wait-for-kafka, as a SASL_PLAINTEXT or SASL_SSL listener demands before it
//! answers Metadata: SaslHandshake v1 names the mechanism, then SaslAuthenticate carries
//! PLAIN's one message or SCRAM-SHA-256/512's two rounds (RFC 5802, with ring's HMAC and
//! PBKDF2). A refused login ends the wait (exit 1); the password is never in a message.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::{digest, hmac, pbkdf2};
use tokio::io::{AsyncRead, AsyncWrite};

use super::wire::{self, Reader, error_name, io_failure, put_bytes, put_compact_bytes};
use super::{API_SASL_AUTHENTICATE, API_SASL_HANDSHAKE, Versions};
use crate::exit::Error;
use crate::wait::Failure;

const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;
/// More PBKDF2 rounds than this is not a broker's setting (Kafka allows 4096-16384) but a
/// way to make the client burn CPU: refused.
const MAX_ITERATIONS: u32 = 100_000;

/// The SASL mechanisms wait-for-kafka speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl FromStr for Mechanism {
    type Err = String;

    fn from_str(text: &str) -> std::result::Result<Self, Self::Err> {
        match text.trim().to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Mechanism::Plain),
            "SCRAM-SHA-256" => Ok(Mechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(Mechanism::ScramSha512),
            _ => Err(format!(
                "'{text}' is not a SASL mechanism wait-for-kafka speaks: use SCRAM-SHA-512, \
                 SCRAM-SHA-256 or PLAIN"
            )),
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
        })
    }
}

pub struct Login {
    pub user: String,
    pub password: String,
    pub mechanism: Mechanism,
}

/// Logs in on a connection that has had its ApiVersions answer.
pub async fn authenticate<S>(
    stream: &mut S,
    login: &Login,
    versions: &Versions,
) -> std::result::Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    handshake(stream, login, versions).await?;
    let (min, max) = versions.range(API_SASL_AUTHENTICATE).ok_or_else(|| {
        Failure::Retry("the broker's ApiVersions lists no SaslAuthenticate API".into())
    })?;
    let version = max.min(2);
    if version < min {
        return Err(Failure::Retry(format!(
            "the broker accepts SaslAuthenticate v{min}-v{max} only; initbox speaks v0-v2"
        )));
    }
    let mut exchange = Exchange {
        stream,
        version,
        login,
        correlation: 20,
    };
    match login.mechanism {
        Mechanism::Plain => {
            let message = format!("\0{}\0{}", login.user, login.password);
            exchange.round(message.as_bytes()).await?;
            Ok(())
        }
        Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
            let nonce = client_nonce()?;
            let mut scram = Scram::new(login, &nonce);
            let server_first = exchange.round(scram.client_first().as_bytes()).await?;
            let client_final = scram.client_final(&server_first).map_err(|why| {
                Failure::Retry(format!("the broker's first SCRAM message: {why}"))
            })?;
            let server_final = exchange.round(client_final.as_bytes()).await?;
            scram.verify(&server_final)
        }
    }
}

/// SaslHandshake v1 (v0 would mean SASL tokens without Kafka framing).
async fn handshake<S>(
    stream: &mut S,
    login: &Login,
    versions: &Versions,
) -> std::result::Result<(), Failure>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match versions.range(API_SASL_HANDSHAKE) {
        Some((min, max)) if min <= 1 && max >= 1 => {}
        _ => {
            return Err(Failure::Retry(
                "the broker's ApiVersions lists no SaslHandshake v1".into(),
            ));
        }
    }
    let correlation = 10;
    let mut body = Vec::new();
    wire::put_string(&mut body, &login.mechanism.to_string());
    wire::send(stream, API_SASL_HANDSHAKE, 1, correlation, false, &body)
        .await
        .map_err(|e| io_failure("sending SaslHandshake", &e))?;
    let frame = wire::receive(stream, "SaslHandshake", correlation, false).await?;
    let malformed =
        |why: String| Failure::Retry(format!("the answer to SaslHandshake is malformed ({why})"));
    let mut r = Reader::new(&frame);
    let error = r.i16().map_err(malformed)?;
    let count = r.array_len(false).map_err(malformed)?;
    let mut enabled = Vec::with_capacity(count);
    for _ in 0..count {
        enabled.push(crate::checks::service::shorten(
            &r.string(false).map_err(malformed)?,
        ));
    }
    match error {
        0 => Ok(()),
        UNSUPPORTED_SASL_MECHANISM if enabled.is_empty() => Err(no_sasl()),
        UNSUPPORTED_SASL_MECHANISM => Err(Failure::Fatal(Error::Failed(format!(
            "the listener does not enable SASL {} (it enables {}): pass --sasl-mechanism {}",
            login.mechanism,
            enabled.join(", "),
            enabled[0]
        )))),
        // A PLAINTEXT or SSL listener: there is no SASL to do.
        ILLEGAL_SASL_STATE => Err(no_sasl()),
        code => Err(Failure::Retry(format!(
            "the broker answered SaslHandshake with {}",
            error_name(code)
        ))),
    }
}

fn no_sasl() -> Failure {
    Failure::Fatal(Error::Failed(
        "the listener takes no SASL login (a PLAINTEXT or SSL listener): drop --user, or \
         name the SASL_PLAINTEXT or SASL_SSL listener"
            .into(),
    ))
}

/// SaslAuthenticate requests on one connection.
struct Exchange<'a, S> {
    stream: &'a mut S,
    version: i16,
    login: &'a Login,
    correlation: i32,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Exchange<'_, S> {
    /// Sends one SASL message, returns the broker's.
    async fn round(&mut self, message: &[u8]) -> std::result::Result<Vec<u8>, Failure> {
        self.correlation += 1;
        let flexible = self.version >= 2;
        let mut body = Vec::new();
        if flexible {
            put_compact_bytes(&mut body, message);
            body.push(0);
        } else {
            put_bytes(&mut body, message);
        }
        wire::send(
            self.stream,
            API_SASL_AUTHENTICATE,
            self.version,
            self.correlation,
            flexible,
            &body,
        )
        .await
        .map_err(|e| io_failure("sending SaslAuthenticate", &e))?;
        let frame =
            wire::receive(self.stream, "SaslAuthenticate", self.correlation, flexible).await?;
        let malformed = |why: String| {
            Failure::Retry(format!(
                "the answer to SaslAuthenticate is malformed ({why})"
            ))
        };
        let mut r = Reader::new(&frame);
        let error = r.i16().map_err(malformed)?;
        let words = r.nullable_string(flexible).map_err(malformed)?;
        let answer = r.bytes(flexible).map_err(malformed)?.to_vec();
        let words = words
            .filter(|w| !w.is_empty())
            .map(|w| format!(": {}", crate::checks::service::shorten(&w)))
            .unwrap_or_default();
        match error {
            0 => Ok(answer),
            SASL_AUTHENTICATION_FAILED => Err(Failure::Fatal(Error::Failed(format!(
                "the broker refused the login as {} via {} ({}{words})",
                self.login.user,
                self.login.mechanism,
                error_name(error)
            )))),
            code => Err(Failure::Retry(format!(
                "the broker answered SaslAuthenticate with {}{words}",
                error_name(code)
            ))),
        }
    }
}

fn client_nonce() -> std::result::Result<String, Failure> {
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).map_err(|_| {
        Failure::Fatal(Error::Failed(
            "reading random bytes for the SCRAM nonce failed".into(),
        ))
    })?;
    Ok(BASE64.encode(bytes))
}

/// One SCRAM conversation (RFC 5802): the client's state between its two messages.
struct Scram<'a> {
    login: &'a Login,
    client_first_bare: String,
    nonce: String,
    /// HMAC(salted password, "Server Key"), set by `client_final` to check the broker's
    /// signature.
    server_key: Option<hmac::Key>,
    auth_message: String,
}

impl<'a> Scram<'a> {
    fn new(login: &'a Login, nonce: &str) -> Self {
        // saslname: '=' and ',' are escaped, as Kafka's ScramFormatter does.
        let name = login.user.replace('=', "=3D").replace(',', "=2C");
        Scram {
            login,
            client_first_bare: format!("n={name},r={nonce}"),
            nonce: nonce.to_owned(),
            server_key: None,
            auth_message: String::new(),
        }
    }

    fn algorithms(
        &self,
    ) -> (
        hmac::Algorithm,
        pbkdf2::Algorithm,
        &'static digest::Algorithm,
    ) {
        match self.login.mechanism {
            Mechanism::ScramSha256 => (
                hmac::HMAC_SHA256,
                pbkdf2::PBKDF2_HMAC_SHA256,
                &digest::SHA256,
            ),
            _ => (
                hmac::HMAC_SHA512,
                pbkdf2::PBKDF2_HMAC_SHA512,
                &digest::SHA512,
            ),
        }
    }

    fn client_first(&self) -> String {
        format!("n,,{}", self.client_first_bare)
    }

    /// The client-final message for the broker's `r=…,s=…,i=…`.
    fn client_final(&mut self, server_first: &[u8]) -> std::result::Result<String, String> {
        let text = std::str::from_utf8(server_first).map_err(|_| "not UTF-8".to_owned())?;
        let field = |name: char| {
            text.split(',')
                .find_map(|part| part.strip_prefix(name)?.strip_prefix('='))
        };
        if text.starts_with("m=") {
            return Err("a mandatory extension initbox does not know".into());
        }
        let nonce = field('r').ok_or("no nonce (r=)")?;
        if !nonce.starts_with(&self.nonce) || nonce.len() <= self.nonce.len() {
            return Err("the nonce does not extend ours".into());
        }
        let salt = BASE64
            .decode(field('s').ok_or("no salt (s=)")?)
            .map_err(|_| "the salt is not base64".to_owned())?;
        let iterations: u32 = field('i')
            .ok_or("no iteration count (i=)")?
            .parse()
            .map_err(|_| "the iteration count is not a number".to_owned())?;
        if iterations == 0 || iterations > MAX_ITERATIONS {
            return Err(format!(
                "{iterations} iterations (initbox accepts 1-{MAX_ITERATIONS})"
            ));
        }
        let (mac, kdf, hash) = self.algorithms();
        let mut salted = vec![0u8; hash.output_len()];
        pbkdf2::derive(
            kdf,
            std::num::NonZeroU32::new(iterations).unwrap(),
            &salt,
            self.login.password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(mac, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        let stored_key = digest::digest(hash, client_key.as_ref());
        // "biws" is base64("n,,"): no channel binding, no authzid.
        let without_proof = format!("c=biws,r={nonce}");
        self.auth_message = format!("{},{text},{without_proof}", self.client_first_bare);
        let signature = hmac::sign(
            &hmac::Key::new(mac, stored_key.as_ref()),
            self.auth_message.as_bytes(),
        );
        let proof: Vec<u8> = client_key
            .as_ref()
            .iter()
            .zip(signature.as_ref())
            .map(|(k, s)| k ^ s)
            .collect();
        self.server_key = Some(hmac::Key::new(
            mac,
            hmac::sign(&salted, b"Server Key").as_ref(),
        ));
        Ok(format!("{without_proof},p={}", BASE64.encode(proof)))
    }

    /// Checks the broker's `v=…`: a broker that does not know the password cannot make it.
    fn verify(&self, server_final: &[u8]) -> std::result::Result<(), Failure> {
        let text = String::from_utf8_lossy(server_final);
        if let Some(error) = text.strip_prefix("e=") {
            return Err(Failure::Fatal(Error::Failed(format!(
                "the broker refused the login as {} via {}: {}",
                self.login.user,
                self.login.mechanism,
                crate::checks::service::shorten(error)
            ))));
        }
        let key = self.server_key.as_ref().expect("client_final ran");
        let expected = BASE64.encode(hmac::sign(key, self.auth_message.as_bytes()));
        match text.strip_prefix("v=") {
            Some(signature) if signature == expected => Ok(()),
            _ => Err(Failure::Fatal(Error::Failed(format!(
                "the broker's SCRAM signature for {} does not match: it does not hold this \
                 user's credentials (is this the right cluster?)",
                self.login.user
            )))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(mechanism: Mechanism) -> Login {
        Login {
            user: "user".into(),
            password: "pencil".into(),
            mechanism,
        }
    }

    /// RFC 7677's SCRAM-SHA-256 example, message for message.
    #[test]
    fn scram_sha_256_matches_the_rfc_7677_example() {
        let login = login(Mechanism::ScramSha256);
        let mut scram = Scram::new(&login, "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(scram.client_first(), "n,,n=user,r=rOprNGfwEbeRWgbNEkqO");
        let server_first = b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
            s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
        assert_eq!(
            scram.client_final(server_first).unwrap(),
            "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
             p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        );
        assert!(
            scram
                .verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
                .is_ok()
        );
        assert!(matches!(
            scram.verify(b"v=AAAATRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="),
            Err(Failure::Fatal(_))
        ));
    }

    #[test]
    fn a_server_first_message_that_does_not_extend_our_nonce_or_burns_cpu_is_refused() {
        let login = login(Mechanism::ScramSha512);
        let mut scram = Scram::new(&login, "abc");
        assert!(
            scram
                .client_final(b"r=xyz123,s=AAAA,i=4096")
                .unwrap_err()
                .contains("does not extend ours")
        );
        assert!(
            scram
                .client_final(b"r=abcdef,s=AAAA,i=4000000000")
                .unwrap_err()
                .contains("4000000000 iterations")
        );
    }

    #[test]
    fn user_names_are_escaped_and_mechanisms_parse_in_any_case() {
        let login = Login {
            user: "a=b,c".into(),
            ..login(Mechanism::Plain)
        };
        assert_eq!(Scram::new(&login, "n").client_first(), "n,,n=a=3Db=2Cc,r=n");
        assert_eq!(
            "scram-sha-256".parse::<Mechanism>().unwrap(),
            Mechanism::ScramSha256
        );
        assert!(
            "GSSAPI"
                .parse::<Mechanism>()
                .unwrap_err()
                .contains("'GSSAPI'")
        );
    }
}
