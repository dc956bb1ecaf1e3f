//! The Kubernetes API as the Kubernetes commands (wait-for-k8s, k8s-copy) use it: plain
//! HTTPS and JSON on the shared HTTP client, with the pod's own service account or a
//! kubeconfig, and the API's answers turned into wait outcomes (a 403 names the Role rule
//! that is missing; a 401 or a 403 ends the wait at once, as retrying cannot heal them).

pub mod config;
pub mod jsonpath;
pub mod resource;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::exit::{Error, Result};
use crate::http_client::{self, Redirects};
use crate::resolve::ResolverArgs;
use crate::wait::Failure;
use config::{Cluster, Credential};
use resource::Kind;

/// Where the service account is mounted in every pod.
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// How much of an answer is read: a list of a thousand ConfigMaps fits.
const ANSWER_LIMIT: usize = 64 * 1024 * 1024;

/// The flags every Kubernetes command shares: which cluster, as whom, which namespace.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Kubernetes")]
pub struct KubeArgs {
    /// Namespace of the objects [default: the pod's own (its service account's), else the
    /// kubeconfig context's, else default].
    #[arg(
        short = 'n',
        long,
        env = "INITBOX_NAMESPACE",
        value_name = "NAMESPACE",
        value_parser = resource::parse_namespace
    )]
    pub namespace: Option<String>,
    /// Use this kubeconfig instead of the pod's service account (repeatable; KUBECONFIG,
    /// a ':'-separated list, is read too).
    #[arg(long, env = "INITBOX_KUBECONFIG", value_name = "FILE", value_delimiter = ':')]
    pub kubeconfig: Vec<PathBuf>,
    /// The kubeconfig context to use [default: its current-context].
    #[arg(long, env = "INITBOX_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    /// Where the pod's service account (token, ca.crt, namespace) is mounted.
    #[arg(
        long,
        env = "INITBOX_SERVICE_ACCOUNT_DIR",
        value_name = "DIR",
        default_value = SERVICE_ACCOUNT_DIR
    )]
    pub service_account_dir: PathBuf,
}

impl KubeArgs {
    /// The cluster, the way kubectl and client-go choose it: a kubeconfig when one is
    /// named (`--kubeconfig`, `KUBECONFIG`), else the pod's service account when the pod's
    /// environment names the API server, else `~/.kube/config`.
    fn cluster(&self) -> Result<Cluster> {
        let mut kubeconfig = self.kubeconfig.clone();
        if kubeconfig.is_empty()
            && let Some(list) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty())
        {
            kubeconfig = std::env::split_paths(&list).collect();
        }
        if !kubeconfig.is_empty() {
            return config::from_kubeconfig(&kubeconfig, self.context.as_deref());
        }
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok();
        let port = std::env::var("KUBERNETES_SERVICE_PORT").ok();
        if let (Some(host), Some(port)) = (host.filter(|h| !h.is_empty()), port) {
            return config::in_cluster(&self.service_account_dir, &host, &port);
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        match home.map(|home| home.join(".kube/config")) {
            Some(path) if path.exists() => {
                config::from_kubeconfig(&[path], self.context.as_deref())
            }
            _ => Err(Error::Config(
                "no Kubernetes API to talk to: not in a pod (KUBERNETES_SERVICE_HOST is not set) and no kubeconfig (--kubeconfig, KUBECONFIG, ~/.kube/config)".into(),
            )),
        }
    }

    /// A client for the chosen cluster; each request is bounded by `attempt_timeout`.
    pub fn connect(&self, resolver: &ResolverArgs, attempt_timeout: Duration) -> Result<Api> {
        let cluster = self.cluster()?;
        let tls = http_client::build_tls(cluster.trust, cluster.identity, cluster.insecure)?;
        let client = http_client::build_client_with(
            tls,
            resolver.resolver(attempt_timeout),
            Redirects::Keep,
            Some(attempt_timeout),
        )?;
        let namespace = self
            .namespace
            .clone()
            .or(cluster.namespace)
            .unwrap_or_else(|| "default".to_owned());
        let mut server = cluster.server.to_string();
        while server.ends_with('/') {
            server.pop();
        }
        Ok(Api(Arc::new(Inner {
            client,
            server,
            credential: cluster.credential,
            namespace,
            source: cluster.source,
            user: cluster.user,
            attempt_timeout,
        })))
    }
}

/// A client of one cluster, cheap to clone (one per probe).
#[derive(Clone)]
pub struct Api(Arc<Inner>);

struct Inner {
    client: reqwest::Client,
    server: String,
    credential: Credential,
    namespace: String,
    source: String,
    user: Option<String>,
    attempt_timeout: Duration,
}

/// What a request does, in RBAC's terms: the 403 message names what to grant.
#[derive(Debug, Clone, Copy)]
pub struct Access<'a> {
    pub verb: &'static str,
    pub kind: &'static Kind,
    pub namespace: &'a str,
}

/// One event seen on a watch, or the watch's window ending without one.
#[derive(Debug, PartialEq, Eq)]
pub enum Watched {
    Changed,
    Quiet,
    /// The account may get but not watch: the caller polls instead.
    NotAllowed,
}

impl Api {
    pub fn namespace(&self) -> &str {
        &self.0.namespace
    }

    /// GET `path` (with its query); `None` for 404 Not Found.
    pub async fn get(
        &self,
        path: &str,
        access: Access<'_>,
    ) -> std::result::Result<Option<Value>, Failure> {
        let request = self.request(path)?;
        let sent = tokio::time::timeout(self.0.attempt_timeout, async {
            let mut response = request
                .send()
                .await
                .map_err(|e| http_client::classify_within(&e, self.0.attempt_timeout))?;
            let status = response.status();
            let (body, cut) = http_client::read_body(&mut response, ANSWER_LIMIT)
                .await
                .map_err(|e| http_client::classify(&e))?;
            Ok::<_, Failure>((status, body, cut))
        })
        .await;
        let (status, body, cut) = match sent {
            Ok(result) => result?,
            Err(_) => {
                return Err(Failure::Retry(crate::wait::no_answer_within(
                    self.0.attempt_timeout,
                )));
            }
        };
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self.refused(status, &body, access));
        }
        if cut {
            return Err(Failure::Fatal(Error::Failed(format!(
                "the API server's answer to GET {path} is larger than {} MiB",
                ANSWER_LIMIT >> 20
            ))));
        }
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            Failure::Retry(format!("the API server's answer is not JSON: {e}"))
        })
    }

    /// Watches `path` (a collection with its selector) from `resource_version` for up to
    /// `window`, and says whether anything happened.
    pub async fn watch(
        &self,
        path: &str,
        resource_version: Option<&str>,
        window: Duration,
        access: Access<'_>,
    ) -> std::result::Result<Watched, Failure> {
        let separator = if path.contains('?') { '&' } else { '?' };
        // Without a version (an object that does not exist yet) the watch starts now and
        // reports the object's creation.
        let since = resource_version
            .map(|version| format!("&resourceVersion={}", query_escape(version)))
            .unwrap_or_default();
        let path = format!(
            "{path}{separator}watch=true{since}&timeoutSeconds={}",
            window.as_secs().max(1)
        );
        let request = self.request(&path)?;
        // The server ends the watch at timeoutSeconds; this bound is for one that does not.
        let limit = window + self.0.attempt_timeout;
        let watched = tokio::time::timeout(limit, async {
            let mut response = request
                .send()
                .await
                .map_err(|e| http_client::classify(&e))?;
            let status = response.status();
            if status == StatusCode::FORBIDDEN {
                return Ok(Watched::NotAllowed);
            }
            if !status.is_success() {
                let (body, _) = http_client::read_body(&mut response, 64 * 1024)
                    .await
                    .unwrap_or_default();
                return Err(self.refused(status, &body, access));
            }
            // Any event (ADDED, MODIFIED, DELETED, an ERROR such as 410 Gone) means: look
            // again. A chunk may hold part of an event, so wait for its end of line.
            let mut pending = Vec::new();
            loop {
                match response.chunk().await {
                    Ok(Some(chunk)) => {
                        pending.extend_from_slice(&chunk);
                        if let Some(end) = pending.iter().position(|&b| b == b'\n') {
                            let line = &pending[..end];
                            let event: Value = serde_json::from_slice(line).unwrap_or_default();
                            if event["type"] != "BOOKMARK" {
                                return Ok(Watched::Changed);
                            }
                            pending.drain(..=end);
                        }
                    }
                    Ok(None) => return Ok(Watched::Quiet),
                    Err(error) => return Err(http_client::classify(&error)),
                }
            }
        })
        .await;
        watched.unwrap_or(Ok(Watched::Quiet))
    }

    fn request(&self, path: &str) -> std::result::Result<reqwest::RequestBuilder, Failure> {
        let mut request = self
            .0
            .client
            .get(format!("{}{path}", self.0.server))
            .header("Accept", "application/json");
        if let Some(header) = self.0.credential.header().map_err(Failure::Fatal)? {
            let mut value = reqwest::header::HeaderValue::from_str(&header).map_err(|_| {
                Failure::Fatal(Error::Config(
                    "the token holds characters an HTTP header cannot carry".into(),
                ))
            })?;
            value.set_sensitive(true);
            request = request.header(reqwest::header::AUTHORIZATION, value);
        }
        Ok(request)
    }

    /// An answer other than success or 404, as a wait outcome.
    fn refused(&self, status: StatusCode, body: &[u8], access: Access<'_>) -> Failure {
        let message = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|status| status["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        let message = crate::redact::scrub(&message).into_owned();
        let Access {
            verb,
            kind,
            namespace,
        } = access;
        match status.as_u16() {
            401 => Failure::Fatal(Error::Failed(format!(
                "the API server did not accept the credentials of {} (401 Unauthorized): the token is expired, revoked or for another cluster",
                self.0.source
            ))),
            403 => {
                let who = self
                    .0
                    .user
                    .as_deref()
                    .map(|user| format!("{user} ({})", self.0.source))
                    .unwrap_or_else(|| self.0.source.clone());
                Failure::Fatal(Error::Failed(format!(
                    "forbidden: {who} may not {verb} {} in namespace {namespace}: {message}; grant it with a Role in {namespace} with the rule {{apiGroups: [\"{}\"], resources: [\"{}\"], verbs: [\"{verb}\"]}} and a RoleBinding to the service account",
                    kind.qualified(),
                    kind.group,
                    kind.plural,
                )))
            }
            429 => Failure::Retry(format!("the API server is throttling requests: {message}")),
            code if code >= 500 => Failure::Retry(format!(
                "the API server answered {}: {message}",
                http_client::describe_status(status)
            )),
            _ => Failure::Fatal(Error::Failed(format!(
                "the API server refused the request ({}): {message}",
                http_client::describe_status(status)
            ))),
        }
    }
}

/// A query parameter's value, percent-encoded.
pub fn query_escape(value: &str) -> String {
    percent_encoding::utf8_percent_encode(value, percent_encoding::NON_ALPHANUMERIC).to_string()
}
