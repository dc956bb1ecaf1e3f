//! git-clone's own HTTP/1.1 client for git's smart HTTP protocol. gix's reqwest backend
//! hands every piece of a response from hyper's runtime thread to reqwest's blocking reader,
//! then to its own backend thread, then through a pipe to the pack decoder: three threads
//! waking each other for each piece, on the two cores the server shares. This one reads the
//! socket (or rustls on it) on the clone's own thread, keeps one connection alive for all
//! the requests of a clone, resolves names with initbox's resolver and trusts what every
//! initbox HTTPS client trusts. Behind a proxy the clone keeps reqwest's client, which
//! knows proxies (see `transfer::uses_proxy`).
//!
//! What gix asks of a backend (its `Http` trait): a GET or a POST whose request body gix
//! writes first and whose response headers and body it reads after. The request goes out
//! when gix first reads the response, with the body gix wrote as its `Content-Length`: a
//! clone's requests are a few lines (refs to list, objects to want), never a stream.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use gix::protocol::transport::client::blocking_io::http as gix_http;
use gix_http::options::FollowRedirects;

use crate::resolve::Resolver;

/// A connection on which no byte arrives for this long is broken: the read fails and the
/// engine's next attempt starts over (git itself waits forever by default).
const STALLED_AFTER: Duration = Duration::from_secs(60);
/// The most a status line and its headers may take: beyond it the server is not one.
const MAX_HEAD: usize = 64 * 1024;
/// As curl's default, which git follows.
const MAX_REDIRECTS: usize = 50;

/// The backend of one clone: every connection gix makes (one, or two where it looks a
/// name up first) shares the kept-alive connection and the redirect found by the first.
#[derive(Clone)]
pub struct SmartHttp {
    shared: Arc<Shared>,
}

struct Shared {
    tls: Option<Arc<rustls::ClientConfig>>,
    resolver: Resolver,
    runtime: tokio::runtime::Handle,
    connect_timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    idle: Option<Connection>,
    /// Where the repository really is after the first request was redirected (its URL
    /// without the request's own tail), for every later request.
    redirected_base_url: Option<String>,
    extra_headers: Vec<String>,
    follow: FollowRedirects,
    requests: usize,
}

impl SmartHttp {
    /// `tls` for https:// URLs; `runtime` runs the resolver's lookups from the clone's
    /// blocking thread.
    pub fn new(
        tls: Option<rustls::ClientConfig>,
        resolver: Resolver,
        runtime: tokio::runtime::Handle,
        connect_timeout: Duration,
    ) -> Self {
        SmartHttp {
            shared: Arc::new(Shared {
                tls: tls.map(Arc::new),
                resolver,
                runtime,
                connect_timeout,
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn transport(&self, url: gix::Url) -> gix_http::Transport<SmartHttp> {
        gix_http::Transport::new_http(
            self.clone(),
            url,
            gix::protocol::transport::Protocol::V2,
            false,
        )
    }

    fn start(
        &self,
        method: Method,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> (Headers, Body, PostBody) {
        let request = Request {
            method,
            url: url.to_owned(),
            base_url: base_url.to_owned(),
            headers: headers
                .into_iter()
                .map(|line| line.as_ref().to_owned())
                .collect(),
            body: Vec::new(),
        };
        let exchange = Arc::new(Mutex::new(Stage::Writing(request)));
        (
            Headers {
                shared: self.shared.clone(),
                exchange: exchange.clone(),
                lines: None,
            },
            Body {
                shared: self.shared.clone(),
                exchange: exchange.clone(),
                body: None,
            },
            PostBody { exchange },
        )
    }
}

impl gix_http::Http for SmartHttp {
    type Headers = Headers;
    type ResponseBody = Body;
    type PostBody = PostBody;

    fn get(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
    ) -> gix::error::Result<gix_http::GetResponse<Headers, Body>> {
        let (headers, body, _) = self.start(Method::Get, url, base_url, headers);
        Ok(gix_http::GetResponse { headers, body })
    }

    fn post(
        &mut self,
        url: &str,
        base_url: &str,
        headers: impl IntoIterator<Item = impl AsRef<str>>,
        _body: gix_http::PostBodyDataKind,
    ) -> gix::error::Result<gix_http::PostResponse<Headers, Body, PostBody>> {
        let (headers, body, post_body) = self.start(Method::Post, url, base_url, headers);
        Ok(gix_http::PostResponse {
            post_body,
            headers,
            body,
        })
    }

    fn configure(&mut self, config: &dyn std::any::Any) -> gix::error::Result {
        if let Some(options) = config.downcast_ref::<gix_http::Options>() {
            let mut state = self.shared.state();
            state.extra_headers = options.extra_headers.clone();
            state.follow = options.follow_redirects;
        }
        Ok(())
    }

    fn redirected_base_url(&self) -> Option<String> {
        self.shared.state().redirected_base_url.clone()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

struct Request {
    method: Method,
    url: String,
    base_url: String,
    headers: Vec<String>,
    body: Vec<u8>,
}

/// One request and its response, shared by the three handles gix holds.
type Exchange = Arc<Mutex<Stage>>;

enum Stage {
    /// gix is still writing the request's body.
    Writing(Request),
    Answered {
        headers: Option<Vec<u8>>,
        body: Option<ResponseBody>,
    },
    /// The request failed; the error went to the reader that asked first.
    Failed,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Sends the request of `stage` if it has not gone out yet.
    fn answer(self: &Arc<Self>, stage: &mut Stage) -> io::Result<()> {
        if !matches!(stage, Stage::Writing(_)) {
            return Ok(());
        }
        let Stage::Writing(request) = std::mem::replace(stage, Stage::Failed) else {
            unreachable!("checked above");
        };
        let (head, body) = self.exchange(request)?;
        *stage = Stage::Answered {
            headers: Some(head),
            body: Some(body),
        };
        Ok(())
    }

    /// The request, following redirects where gix allows them (its first request by
    /// default, as git does), to a response gix may read: a 2xx, or an error of the kind
    /// gix classifies (401 asks for credentials, 5xx is worth retrying).
    fn exchange(self: &Arc<Self>, request: Request) -> io::Result<(Vec<u8>, ResponseBody)> {
        let (effective, follow, extra_headers) = {
            let mut state = self.state();
            let effective = match &state.redirected_base_url {
                Some(base) => format!("{base}{}", tail(&request.url, &request.base_url)),
                None => request.url.clone(),
            };
            let follow = match state.follow {
                FollowRedirects::All => true,
                FollowRedirects::Initial => state.requests == 0,
                FollowRedirects::None => false,
            };
            state.requests += 1;
            (effective, follow, state.extra_headers.clone())
        };
        let may_follow = follow && request.method == Method::Get;
        let mut headers = request.headers;
        headers.extend(extra_headers.iter().cloned());
        let mut url = parse_url(&effective)?;
        let mut redirects = 0;
        loop {
            let response = self.send(&url, request.method, &headers, &request.body)?;
            let location = match response.status {
                301 | 302 | 303 | 307 | 308 if may_follow => response.header("location"),
                _ => None,
            };
            let Some(location) = location else {
                if url.as_str() != effective {
                    self.state().redirected_base_url = Some(redirected_base(
                        url.as_str(),
                        &request.url,
                        &request.base_url,
                    )?);
                }
                return response.into_answer(&url);
            };
            let next = url.join(&location).map_err(|e| {
                refused(format!(
                    "{} redirected to '{location}', which is not a URL: {e}",
                    without_userinfo(&url)
                ))
            })?;
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(refused(format!(
                    "{} redirected more than {MAX_REDIRECTS} times",
                    without_userinfo(&url)
                )));
            }
            if !extra_headers.is_empty() {
                return Err(refused(format!(
                    "{} redirected a request with configured extra headers, which is not followed",
                    without_userinfo(&url)
                )));
            }
            // http → https is an upgrade; https → http, or another scheme, is not followed.
            let safe = next.scheme() == url.scheme()
                || (url.scheme() == "http" && next.scheme() == "https");
            if !safe {
                return Err(refused(format!(
                    "{} redirected to {}: a redirect from {}:// to {}:// is not followed",
                    without_userinfo(&url),
                    without_userinfo(&next),
                    url.scheme(),
                    next.scheme()
                )));
            }
            if authority(&next) != authority(&url) {
                let wanted = tail(&request.url, &request.base_url);
                if !next.as_str().ends_with(wanted) {
                    return Err(refused(format!(
                        "{} redirected to {}, which does not end with the path asked for ({wanted})",
                        without_userinfo(&url),
                        without_userinfo(&next)
                    )));
                }
                // Credentials are for the host they were given for.
                headers.retain(|line| !header_is(line, "authorization"));
            }
            response.discard();
            url = next;
        }
    }

    /// One request on the kept-alive connection when it is to the same origin (again on a
    /// new one if the server closed it meanwhile), else on a new connection.
    fn send(
        self: &Arc<Self>,
        url: &url::Url,
        method: Method,
        headers: &[String],
        body: &[u8],
    ) -> io::Result<Response> {
        let origin = Origin::of(url)?;
        let mut message = Vec::with_capacity(512 + body.len());
        let target = match url.query() {
            Some(query) => format!("{}?{query}", url.path()),
            None => url.path().to_owned(),
        };
        let verb = match method {
            Method::Get => "GET",
            Method::Post => "POST",
        };
        write!(
            message,
            "{verb} {target} HTTP/1.1\r\nHost: {}\r\n",
            origin.host_header()
        )?;
        for line in headers {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if header_is(name, "host") || header_is(name, "content-length") {
                continue;
            }
            write!(message, "{}: {}\r\n", name.trim(), value.trim())?;
        }
        if method == Method::Post {
            write!(message, "Content-Length: {}\r\n", body.len())?;
        }
        message.extend_from_slice(b"\r\n");
        message.extend_from_slice(body);

        let reused = self
            .state()
            .idle
            .take()
            .filter(|idle| idle.origin == origin);
        if let Some(connection) = reused
            && let Ok(response) = Response::read(connection, &message, self.clone())
        {
            return Ok(response);
        }
        let connection = self.connect(origin)?;
        Response::read(connection, &message, self.clone())
    }

    fn connect(&self, origin: Origin) -> io::Result<Connection> {
        let host = origin.host.trim_start_matches('[').trim_end_matches(']');
        let addresses = match host.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => self
                .runtime
                .block_on(self.resolver.lookup_ip(host))
                .map_err(|failure| io::Error::other(crate::http_client::ResolveError(failure)))?,
        };
        let mut last_error = io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            format!("{host} has no address"),
        );
        let mut stream = None;
        for ip in addresses {
            match TcpStream::connect_timeout(
                &SocketAddr::new(ip, origin.port),
                self.connect_timeout,
            ) {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(error) => last_error = error,
            }
        }
        let stream = stream.ok_or(last_error)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(STALLED_AFTER))?;
        stream.set_write_timeout(Some(STALLED_AFTER))?;
        let stream = if origin.tls {
            let config = self
                .tls
                .clone()
                .ok_or_else(|| invalid("an https:// URL without a TLS configuration".into()))?;
            let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| invalid(format!("'{host}' is not a TLS server name: {e}")))?;
            let session = rustls::ClientConnection::new(config, name).map_err(io::Error::other)?;
            Stream::Tls(Box::new(rustls::StreamOwned::new(session, stream)))
        } else {
            Stream::Plain(stream)
        };
        Ok(Connection {
            origin,
            io: BufReader::with_capacity(64 * 1024, stream),
        })
    }
}

/// The part of `url` after `base_url` (gix guarantees `base_url` is its start).
fn tail<'a>(url: &'a str, base_url: &str) -> &'a str {
    url.strip_prefix(base_url).unwrap_or("")
}

/// The repository's URL after a redirect: the final URL without the request's tail.
fn redirected_base(final_url: &str, url: &str, base_url: &str) -> io::Result<String> {
    let wanted = tail(url, base_url);
    final_url
        .strip_suffix(wanted)
        .map(str::to_owned)
        .ok_or_else(|| {
            invalid(format!(
                "the server redirected to a URL that does not end with the path asked for ({wanted})"
            ))
        })
}

fn parse_url(text: &str) -> io::Result<url::Url> {
    url::Url::parse(text).map_err(|e| invalid(format!("not a URL: {e}")))
}

fn authority(url: &url::Url) -> (String, Option<String>, Option<u16>) {
    (
        url.scheme().to_owned(),
        url.host_str().map(str::to_owned),
        url.port_or_known_default(),
    )
}

fn without_userinfo(url: &url::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.to_string()
}

fn header_is(line: &str, name: &str) -> bool {
    line.split(':')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case(name)
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// A redirect that is not followed: waiting does not change it, so the clone stops.
#[derive(Debug)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn refused(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, Refusal(message))
}

/// Where a connection goes: a kept-alive one serves only requests to the same.
#[derive(Clone, PartialEq, Eq)]
struct Origin {
    tls: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn of(url: &url::Url) -> io::Result<Origin> {
        let tls = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(invalid(format!("'{other}://' is not HTTP"))),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => format!("[{ip}]"),
            Some(host) => host.to_string(),
            None => return Err(invalid("a URL without a host".into())),
        };
        let port = url
            .port_or_known_default()
            .unwrap_or(if tls { 443 } else { 80 });
        Ok(Origin { tls, host, port })
    }

    fn host_header(&self) -> String {
        match (self.tls, self.port) {
            (true, 443) | (false, 80) => self.host.clone(),
            _ => format!("{}:{}", self.host, self.port),
        }
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.read(buf),
            Stream::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(stream) => stream.write(buf),
            Stream::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(stream) => stream.flush(),
            Stream::Tls(stream) => stream.flush(),
        }
    }
}

struct Connection {
    origin: Origin,
    io: BufReader<Stream>,
}

/// A response whose status line and headers are read, its body not yet.
struct Response {
    status: u16,
    reason: String,
    /// Names and values in the order the server sent them, trimmed.
    headers: Vec<(String, String)>,
    body: ResponseBody,
}

/// The value of the first header called `name`, whatever its case.
fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

impl Response {
    /// Sends `message` on `connection` and reads the response's head.
    fn read(mut connection: Connection, message: &[u8], shared: Arc<Shared>) -> io::Result<Self> {
        connection.io.get_mut().write_all(message)?;
        connection.io.get_mut().flush()?;
        loop {
            let (version, status, reason) = read_status_line(&mut connection.io)?;
            let headers = read_headers(&mut connection.io)?;
            // 100 Continue and other interim answers come before the real one.
            if (100..200).contains(&status) && status != 101 {
                continue;
            }
            let value = |name: &str| header_value(&headers, name).map(str::to_ascii_lowercase);
            let chunked = value("transfer-encoding").is_some_and(|v| v.contains("chunked"));
            let length =
                match value("content-length") {
                    Some(text) if !chunked => Some(text.trim().parse::<u64>().map_err(|_| {
                        invalid(format!("the server sent Content-Length '{text}'"))
                    })?),
                    _ => None,
                };
            let closes =
                value("connection").is_some_and(|v| v.contains("close")) || version == "HTTP/1.0";
            let framing = if chunked {
                Framing::Chunked(ChunkState::Size)
            } else {
                match length {
                    Some(length) => Framing::Length(length),
                    None => Framing::UntilClose,
                }
            };
            let keep_alive = !closes && !matches!(framing, Framing::UntilClose);
            return Ok(Response {
                status,
                reason,
                headers,
                body: ResponseBody {
                    connection: Some(connection),
                    framing,
                    keep_alive,
                    shared,
                },
            });
        }
    }

    fn header(&self, name: &str) -> Option<String> {
        header_value(&self.headers, name).map(str::to_owned)
    }

    /// Reads past a small body so the connection can serve the next request; a large one
    /// is not worth it (the connection is dropped instead).
    fn discard(mut self) {
        let mut limited = (&mut self.body).take(64 * 1024);
        if io::copy(&mut limited, &mut io::sink()).is_err() {
            self.body.connection = None;
        }
    }

    /// The response as gix wants it: its headers as `name:value` lines and its body, or the
    /// error its status means to gix.
    fn into_answer(self, url: &url::Url) -> io::Result<(Vec<u8>, ResponseBody)> {
        if (200..300).contains(&self.status) {
            let mut lines = Vec::new();
            for (name, value) in &self.headers {
                lines.extend_from_slice(name.as_bytes());
                lines.push(b':');
                lines.extend_from_slice(value.as_bytes());
                lines.push(b'\n');
            }
            return Ok((lines, self.body));
        }
        let www_authenticate = self
            .headers
            .iter()
            .filter(|(key, _)| key.eq_ignore_ascii_case("www-authenticate"))
            .map(|(_, value)| value.as_str().into())
            .collect();
        let status = StatusError {
            status: self.status,
            reason: self.reason.clone(),
            url: without_userinfo(url),
        };
        self.discard();
        if (300..400).contains(&status.status) {
            return Err(refused(format!(
                "{status}: a redirect is followed only on a clone's first request"
            )));
        }
        Err(match status.status {
            401 => io::Error::new(
                io::ErrorKind::PermissionDenied,
                gix::protocol::transport::client::AuthenticationRequired { www_authenticate },
            ),
            403 => io::Error::new(io::ErrorKind::PermissionDenied, status),
            404 | 410 => io::Error::new(io::ErrorKind::NotFound, status),
            500..=599 if status.status != 501 => {
                io::Error::new(io::ErrorKind::ConnectionAborted, status)
            }
            _ => io::Error::other(status),
        })
    }
}

/// An HTTP status that is not success, as gix's other backends describe it.
#[derive(Debug)]
struct StatusError {
    status: u16,
    reason: String,
    url: String,
}

impl std::fmt::Display for StatusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Received HTTP status {} ({}) for {}",
            self.status,
            if self.reason.is_empty() {
                "no reason given"
            } else {
                &self.reason
            },
            self.url
        )
    }
}

impl std::error::Error for StatusError {}

/// One line of the head, without its CRLF; the head as a whole is bounded by [`MAX_HEAD`].
fn read_head_line(io: &mut impl BufRead, budget: &mut usize) -> io::Result<String> {
    let mut line = Vec::new();
    let read = io.take(*budget as u64 + 1).read_until(b'\n', &mut line)?;
    if read == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection without an answer",
        ));
    }
    if read > *budget || line.last() != Some(&b'\n') {
        return Err(invalid(
            "the server's answer has no end of its headers".into(),
        ));
    }
    *budget -= read;
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    String::from_utf8(line).map_err(|_| invalid("the server's answer is not text".into()))
}

fn read_status_line(io: &mut impl BufRead) -> io::Result<(String, u16, String)> {
    let mut budget = MAX_HEAD;
    let line = read_head_line(io, &mut budget)?;
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default().to_owned();
    let status = parts.next().and_then(|code| code.parse::<u16>().ok());
    match status {
        Some(status) if version.starts_with("HTTP/1.") => Ok((
            version,
            status,
            parts.next().unwrap_or_default().trim().to_owned(),
        )),
        _ => Err(invalid(format!(
            "the server did not answer in HTTP/1.1: '{}'",
            line.chars().take(80).collect::<String>()
        ))),
    }
}

fn read_headers(io: &mut impl BufRead) -> io::Result<Vec<(String, String)>> {
    let mut budget = MAX_HEAD;
    let mut headers = Vec::new();
    loop {
        let line = read_head_line(io, &mut budget)?;
        if line.is_empty() {
            return Ok(headers);
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
    }
}

enum Framing {
    Length(u64),
    Chunked(ChunkState),
    UntilClose,
    Done,
}

enum ChunkState {
    /// Before a chunk's size line.
    Size,
    /// Inside a chunk, this much of it left.
    Data(u64),
}

/// A response body being read off its connection, which goes back to be kept alive once
/// the body has been read to its end.
struct ResponseBody {
    connection: Option<Connection>,
    framing: Framing,
    keep_alive: bool,
    shared: Arc<Shared>,
}

impl ResponseBody {
    fn finished(&mut self) {
        self.framing = Framing::Done;
        if let Some(connection) = self.connection.take()
            && self.keep_alive
        {
            self.shared.state().idle = Some(connection);
        }
    }

    fn io(&mut self) -> io::Result<&mut BufReader<Stream>> {
        self.connection
            .as_mut()
            .map(|connection| &mut connection.io)
            .ok_or_else(|| io::Error::other("the connection was given up"))
    }

    /// Reads chunk-size lines (and the CRLF after the previous chunk) until data or the end.
    fn next_chunk(&mut self) -> io::Result<()> {
        let io = self.io()?;
        let mut budget = 1024;
        let mut line = read_head_line(io, &mut budget)?;
        if line.is_empty() {
            // The CRLF that ends the previous chunk's data.
            line = read_head_line(io, &mut budget)?;
        }
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16)
            .map_err(|_| invalid(format!("the server sent a chunk size of '{size}'")))?;
        if size == 0 {
            // Trailers, then the empty line that ends the body.
            let mut budget = MAX_HEAD;
            while !read_head_line(self.io()?, &mut budget)?.is_empty() {}
            self.finished();
        } else {
            self.framing = Framing::Chunked(ChunkState::Data(size));
        }
        Ok(())
    }
}

/// gix drops a response once it has its last packet, which leaves a chunked body's end
/// (`0` CRLF CRLF) unread: when that is all the connection holds, it is taken here and the
/// connection is kept for the next request (never a read that could wait).
impl Drop for ResponseBody {
    fn drop(&mut self) {
        let Framing::Chunked(ChunkState::Size) = self.framing else {
            return;
        };
        let Some(connection) = self.connection.as_mut() else {
            return;
        };
        if matches!(connection.io.buffer(), b"0\r\n\r\n" | b"\r\n0\r\n\r\n") {
            let end = connection.io.buffer().len();
            connection.io.consume(end);
            self.finished();
        }
    }
}

impl Read for ResponseBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for ResponseBody {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if let Framing::Chunked(ChunkState::Size) = self.framing {
            self.next_chunk()?;
        }
        if let Framing::Length(0) = self.framing {
            self.finished();
        }
        let limit = match self.framing {
            Framing::Done => return Ok(&[]),
            Framing::Length(left) | Framing::Chunked(ChunkState::Data(left)) => left,
            Framing::UntilClose => u64::MAX,
            Framing::Chunked(ChunkState::Size) => unreachable!("read above"),
        };
        let buffered = self.io()?.fill_buf()?.len();
        if buffered == 0 {
            if matches!(self.framing, Framing::UntilClose) {
                self.finished();
                return Ok(&[]);
            }
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the connection before the end of its answer",
            ));
        }
        let n = buffered.min(usize::try_from(limit).unwrap_or(usize::MAX));
        // Borrowed again: finishing above needed `self` whole.
        Ok(&self.io()?.buffer()[..n])
    }

    fn consume(&mut self, amount: usize) {
        if let Some(connection) = self.connection.as_mut() {
            connection.io.consume(amount);
        }
        match &mut self.framing {
            Framing::Length(left) => {
                *left -= amount as u64;
                // gix stops reading at the protocol's last packet: the connection is free
                // as soon as the body's last byte is taken.
                if *left == 0 {
                    self.finished();
                }
            }
            Framing::Chunked(ChunkState::Data(left)) => {
                *left -= amount as u64;
                if *left == 0 {
                    self.framing = Framing::Chunked(ChunkState::Size);
                }
            }
            _ => {}
        }
    }
}

/// The response's headers as gix reads them, `name:value` lines; reading them sends the
/// request.
pub struct Headers {
    shared: Arc<Shared>,
    exchange: Exchange,
    lines: Option<io::Cursor<Vec<u8>>>,
}

impl Read for Headers {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = io::Read::read(&mut self.fill_buf()?, buf)?;
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Headers {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.lines.is_none() {
            let mut stage = lock(&self.exchange);
            self.shared.answer(&mut stage)?;
            let lines = match &mut *stage {
                Stage::Answered { headers, .. } => headers.take().unwrap_or_default(),
                _ => Vec::new(),
            };
            self.lines = Some(io::Cursor::new(lines));
        }
        self.lines.as_mut().expect("set above").fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if let Some(lines) = self.lines.as_mut() {
            lines.consume(amount);
        }
    }
}

/// The response's body; reading it sends the request if the headers were not read first.
pub struct Body {
    shared: Arc<Shared>,
    exchange: Exchange,
    body: Option<ResponseBody>,
}

impl Body {
    fn body(&mut self) -> io::Result<&mut ResponseBody> {
        if self.body.is_none() {
            let mut stage = lock(&self.exchange);
            self.shared.answer(&mut stage)?;
            let body = match &mut *stage {
                Stage::Answered { body, .. } => body.take(),
                _ => None,
            };
            self.body = Some(body.ok_or_else(|| io::Error::other("the request failed"))?);
        }
        Ok(self.body.as_mut().expect("set above"))
    }
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body()?.read(buf)
    }
}

impl BufRead for Body {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        self.body()?.fill_buf()
    }

    fn consume(&mut self, amount: usize) {
        if let Some(body) = self.body.as_mut() {
            body.consume(amount);
        }
    }
}

/// The request's body as gix writes it, sent with the request when gix reads the answer.
pub struct PostBody {
    exchange: Exchange,
}

impl Write for PostBody {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut *lock(&self.exchange) {
            Stage::Writing(request) => {
                request.body.extend_from_slice(buf);
                Ok(buf.len())
            }
            _ => Err(io::Error::other(
                "the request was sent before its body was complete",
            )),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
