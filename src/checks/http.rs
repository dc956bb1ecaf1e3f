//! wait-for-http: one attempt = one request on a fresh connection; ready when the status
//! is in the accepted ranges (the Kubernetes httpGet rule, 200-399, by default) and the
//! body matches `--body-regex` when one is given.

use regex::Regex;
use reqwest::{Method, Url};

use crate::exec::Then;
use crate::exit::Result;
use crate::http_client::{
    self, Header, Redirects, StatusRanges, TlsArgs, Unechoed, parse_header, parse_method, parse_url,
};
use crate::redact;
use crate::resolve::ResolverArgs;
use crate::wait::WaitArgs;
use crate::wait::{self, Attempt, Probe};

/// How much of a body `--body-regex` looks at.
const BODY_LIMIT: usize = 1024 * 1024;

/// Wait until HTTP(S) endpoints answer with an accepted status.
#[derive(Debug, Clone, clap::Args)]
pub struct HttpArgs {
    /// URLs to request (http:// or https://).
    #[arg(required = true, value_name = "URL", value_parser = Unechoed(parse_url))]
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
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    /// GET, HEAD and OPTIONS only look; any other method may change something. An attempt
    /// that reads the body for --body-regex holds up to 1 MiB of it: those do not overlap,
    /// so waiting stays within its memory bound.
    fn may_overlap(&self) -> bool {
        matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
            && self.body_regex.is_none()
    }

    async fn attempt(&self) -> Attempt {
        let request =
            http_client::request(&self.client, &self.method, &self.url, &self.headers, None);
        let mut response = match request.send().await {
            Ok(response) => response,
            Err(error) => return http_client::classify_probe(&error).into(),
        };
        let status = response.status().as_u16();
        if !self.status.contains(status) {
            return Attempt::NotYet(format!("HTTP {status} (expected {})", self.status));
        }
        let Some(regex) = &self.body_regex else {
            return Attempt::ready(format!("HTTP {status}"));
        };
        let body = match http_client::read_body(&mut response, BODY_LIMIT).await {
            Ok((body, _)) => body,
            Err(error) => return http_client::body_read_failed(&error),
        };
        let text = String::from_utf8_lossy(&body);
        if regex.is_match(&text) {
            Attempt::ready(format!("HTTP {status}, body matches /{regex}/"))
        } else {
            Attempt::NotYet(format!(
                "HTTP {status} but the body does not match /{regex}/"
            ))
        }
    }
}

impl crate::cli::Task for HttpArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }

    /// Checks across the waiting flags (`--stable-for` within `--timeout`).
    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        self.wait.validate()
    }
}

pub async fn run(args: HttpArgs) -> Result<()> {
    let options = args.wait.options();
    let resolver = args
        .resolver
        .resolver(args.wait.retry.attempt_timeout.get());
    args.header
        .iter()
        .for_each(http_client::conceal_credentials);
    let client = http_client::build_client(&args.tls, resolver, Redirects::Keep, None)?;
    let probes = args
        .urls
        .into_iter()
        .map(|url| HttpProbe {
            label: redact::url(&url),
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
