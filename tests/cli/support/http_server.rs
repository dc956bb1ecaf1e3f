//! A real HTTP/1.1 server on 127.0.0.1:0, plain or TLS with a CA made for the test (a
//! certificate for the right names, for other names, or expired), that answers from a
//! script of replies (fixed, or built from the request, as an echoing debug endpoint does)
//! and records every request it receives, raw head included.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

#[derive(Debug, Clone)]
pub struct Request {
    /// The request line and headers exactly as received, up to the blank line.
    pub head: String,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Request {
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Arc<Vec<u8>>,
    /// Send only this much of the body, then hold the connection open without a word.
    pub stall_after: Option<usize>,
    /// Send the body this many bytes at a time with this pause after each: a slow link.
    pub pace: Option<(usize, std::time::Duration)>,
    /// Build the body from the request instead (an endpoint that echoes what it got).
    pub respond: Option<Responder>,
}

/// A body made from the request received.
#[derive(Clone)]
pub struct Responder(pub Arc<RespondFn>);

/// Builds a reply body from the request received.
pub type RespondFn = dyn Fn(&Request) -> Vec<u8> + Send + Sync;

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Responder")
    }
}

/// A reply whose body `respond` builds from each request.
pub fn reply_with(
    status: u16,
    respond: impl Fn(&Request) -> Vec<u8> + Send + Sync + 'static,
) -> Reply {
    Reply {
        respond: Some(Responder(Arc::new(respond))),
        ..reply(status, "")
    }
}

/// The certificate a TLS test server presents.
#[derive(Debug, Clone)]
pub struct CertSpec {
    /// Subject alternative names: DNS names or IP addresses.
    pub names: Vec<String>,
    /// Valid only in 2020, so expired now.
    pub expired: bool,
}

impl CertSpec {
    pub fn for_names(names: &[&str]) -> CertSpec {
        CertSpec {
            names: names.iter().map(|n| n.to_string()).collect(),
            expired: false,
        }
    }

    /// For localhost and 127.0.0.1, as every other test server.
    pub fn local() -> CertSpec {
        CertSpec::for_names(&["localhost", "127.0.0.1"])
    }

    pub fn expired(mut self) -> CertSpec {
        self.expired = true;
        self
    }
}

pub fn reply(status: u16, body: &str) -> Reply {
    reply_bytes(status, body.as_bytes().to_vec())
}

pub fn reply_bytes(status: u16, body: Vec<u8>) -> Reply {
    Reply {
        status,
        headers: Vec::new(),
        body: Arc::new(body),
        stall_after: None,
        pace: None,
        respond: None,
    }
}

impl Reply {
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn stall_after(mut self, bytes: usize) -> Self {
        self.stall_after = Some(bytes);
        self
    }

    /// Streams the body in `chunk`-byte pieces, `pause` apart.
    pub fn paced(mut self, chunk: usize, pause: std::time::Duration) -> Self {
        self.pace = Some((chunk.max(1), pause));
        self
    }
}

pub struct HttpServer {
    pub port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    /// PEM of the CA that signed the server certificate, for TLS servers.
    pub ca_pem: Option<String>,
    /// Connections accepted: a TLS handshake that fails records no request, yet the
    /// server was reached.
    connections: Arc<std::sync::atomic::AtomicUsize>,
    /// Whether the test expects initbox to reach this server (see `Drop`).
    expect_called: bool,
}

/// A server the test expected initbox to call, and that no request reached, is a test that
/// proves nothing (a wrong port, a request that never left): it fails the test. A server
/// that must not be called says so with [`HttpServer::never_called`] and asserts it.
impl Drop for HttpServer {
    fn drop(&mut self) {
        if self.expect_called && !thread::panicking() {
            assert!(
                self.connections.load(std::sync::atomic::Ordering::SeqCst) > 0,
                "the HTTP server on port {} was never called",
                self.port
            );
        }
    }
}

impl HttpServer {
    /// Plain HTTP; replies are used in order, the last one for every later request.
    pub fn start(replies: Vec<Reply>) -> Self {
        Self::serve(replies, None)
    }

    /// HTTPS with a fresh CA; the certificate is valid for localhost and 127.0.0.1.
    pub fn start_tls(replies: Vec<Reply>) -> Self {
        Self::start_tls_with(replies, CertSpec::local())
    }

    /// HTTPS presenting the certificate `cert` describes, signed by a fresh CA.
    pub fn start_tls_with(replies: Vec<Reply>, cert: CertSpec) -> Self {
        let (config, ca_pem, _) = tls_config(false, &cert);
        let mut server = Self::serve(replies, Some(Arc::new(config)));
        server.ca_pem = Some(ca_pem);
        server
    }

    /// HTTPS that demands a client certificate signed by its CA; also returns such a
    /// client certificate and its key, as PEM.
    pub fn start_mutual_tls(replies: Vec<Reply>) -> (Self, ClientIdentity) {
        let (config, ca_pem, client) = tls_config(true, &CertSpec::local());
        let mut server = Self::serve(replies, Some(Arc::new(config)));
        server.ca_pem = Some(ca_pem);
        (server, client.expect("a client identity"))
    }

    fn serve(replies: Vec<Reply>, tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let replies = Arc::new(Mutex::new(VecDeque::from(replies)));
        let seen = requests.clone();
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let accepted = connections.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (seen, replies, tls) = (seen.clone(), replies.clone(), tls.clone());
                thread::spawn(move || {
                    let _ = match tls {
                        Some(config) => {
                            let Ok(connection) = rustls::ServerConnection::new(config) else {
                                return;
                            };
                            let mut tls_stream = rustls::StreamOwned::new(connection, stream);
                            handle(&mut tls_stream, &seen, &replies)
                        }
                        None => handle(&mut { stream }, &seen, &replies),
                    };
                });
            }
        });
        HttpServer {
            port,
            requests,
            ca_pem: None,
            connections,
            expect_called: true,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn https_url(&self, host: &str, path: &str) -> String {
        format!("https://{host}:{}{path}", self.port)
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// This server is there to prove initbox does not call it (a check before a side
    /// effect): the test asserts `requests()` is empty, and dropping it uncalled is right.
    pub fn never_called(mut self) -> Self {
        self.expect_called = false;
        self
    }
}

fn handle(
    stream: &mut impl ReadWrite,
    seen: &Mutex<Vec<Request>>,
    replies: &Mutex<VecDeque<Reply>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        // Not a request line (a TLS ClientHello sent to this plain port): answer as web
        // servers do, 400 and close.
        if head.is_empty() && !byte[0].is_ascii_alphabetic() {
            stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )?;
            return stream.flush();
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let mut first = lines.next().unwrap_or("").split_whitespace();
    let mut request = Request {
        head: text.to_string(),
        method: first.next().unwrap_or("").to_owned(),
        path: first.next().unwrap_or("").to_owned(),
        headers: lines
            .filter_map(|line| line.split_once(':'))
            .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
            .collect(),
        body: Vec::new(),
    };
    let length: usize = request
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    request.body = vec![0; length.min(16 * 1024 * 1024)];
    stream.read_exact(&mut request.body)?;
    seen.lock().unwrap().push(request.clone());
    let reply = {
        let mut replies = replies.lock().unwrap();
        if replies.len() > 1 {
            replies.pop_front().unwrap()
        } else {
            replies.front().cloned().unwrap_or(reply(200, "ok"))
        }
    };
    let reply = match &reply.respond {
        Some(respond) => Reply {
            body: Arc::new((respond.0)(&request)),
            ..reply.clone()
        },
        None => reply,
    };
    let mut head = format!(
        "HTTP/1.1 {} Status\r\nContent-Length: {}\r\nContent-Type: text/plain\r\nConnection: close\r\n",
        reply.status,
        reply.body.len(),
    );
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes())?;
    match (reply.stall_after, reply.pace) {
        (None, None) => stream.write_all(&reply.body)?,
        (None, Some((chunk, pause))) => {
            for piece in reply.body.chunks(chunk) {
                stream.write_all(piece)?;
                stream.flush()?;
                thread::sleep(pause);
            }
        }
        (Some(sent), _) => {
            stream.write_all(&reply.body[..sent.min(reply.body.len())])?;
            stream.flush()?;
            thread::sleep(std::time::Duration::from_secs(600));
        }
    }
    stream.flush()
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// A server TLS configuration for localhost and 127.0.0.1, and its CA as PEM.
pub fn server_tls_config() -> (rustls::ServerConfig, String) {
    let (config, ca_pem, _) = tls_config(false, &CertSpec::local());
    (config, ca_pem)
}

/// A client certificate and key (PEM) signed by a test server's CA.
pub struct ClientIdentity {
    pub cert_pem: String,
    pub key_pem: String,
}

fn tls_config(
    client_auth: bool,
    spec: &CertSpec,
) -> (rustls::ServerConfig, String, Option<ClientIdentity>) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "initbox test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(spec.names.clone()).unwrap();
    if spec.expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 12, 31);
    }
    let cert = params.signed_by(&key, &ca).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let (builder, client) = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(ca.der().to_vec())).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        let client_key = KeyPair::generate().unwrap();
        let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        client_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "initbox test client");
        client_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params.signed_by(&client_key, &ca).unwrap();
        let identity = ClientIdentity {
            cert_pem: client_cert.pem(),
            key_pem: client_key.serialize_pem(),
        };
        (builder.with_client_cert_verifier(verifier), Some(identity))
    } else {
        (builder.with_no_client_auth(), None)
    };
    let config = builder
        .with_single_cert(
            vec![CertificateDer::from(cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    (config, ca.pem(), client)
}

/// A server that accepts connections and never answers (for attempt timeouts).
pub fn silent_server() -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for stream in listener.incoming().flatten() {
            held.push(stream);
            if held.len() > 64 {
                held.remove(0);
            }
        }
    });
    (port, handle)
}
