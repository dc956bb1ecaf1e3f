//! Where the Kubernetes API is and who we are to it: the pod's own service account (the
//! kubelet's files and `KUBERNETES_SERVICE_*`), or a kubeconfig outside a pod, read the way
//! kubectl reads it (a `KUBECONFIG` list merged first-wins, the current or `--context`).

use std::path::{Path, PathBuf};

use base64::Engine;
use reqwest::Url;

use crate::exit::{Error, Result};
use crate::http_client::{Identity, Trust, pem_certificates, pem_private_key};
use crate::pipeline::yaml;
use crate::{reason, redact};

/// How requests prove who sends them. A token read from a file is read again for every
/// attempt: the kubelet rotates a projected service-account token in place.
#[derive(Debug, Clone)]
pub enum Credential {
    TokenFile(PathBuf),
    Token(String),
    Basic { user: String, password: String },
    /// A client certificate (in the TLS setup) and nothing in the headers.
    None,
}

impl Credential {
    /// The Authorization header to send now, if any.
    pub fn header(&self) -> Result<Option<String>> {
        Ok(match self {
            Credential::TokenFile(path) => Some(format!(
                "Bearer {}",
                redact::read_secret_file(path, "service-account token")?
            )),
            Credential::Token(token) => Some(format!("Bearer {token}")),
            Credential::Basic { user, password } => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
            )),
            Credential::None => None,
        })
    }
}

/// A cluster to talk to, and as whom.
pub struct Cluster {
    /// `https://HOST:PORT`, without a trailing slash.
    pub server: Url,
    pub trust: Trust,
    pub identity: Option<Identity>,
    pub insecure: bool,
    pub credential: Credential,
    /// The namespace of the pod (its service account's) or of the kubeconfig's context.
    pub namespace: Option<String>,
    /// Where the settings came from, for messages: `the pod's service account` or
    /// `kubeconfig FILE, context NAME`.
    pub source: String,
    /// Who we are, when known (`system:serviceaccount:NS:NAME`), for the 403 hint.
    pub user: Option<String>,
}

/// The in-cluster settings from `dir` (the kubelet mounts them at
/// /var/run/secrets/kubernetes.io/serviceaccount) and the API server's address from the
/// environment every pod has.
pub fn in_cluster(dir: &Path, host: &str, port: &str) -> Result<Cluster> {
    let host = host.trim();
    let port = port.trim();
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let server = Url::parse(&format!("https://{authority}")).map_err(|e| {
        Error::Config(format!(
            "KUBERNETES_SERVICE_HOST={host} and KUBERNETES_SERVICE_PORT={port} do not make an address: {e}"
        ))
    })?;
    let ca_path = dir.join("ca.crt");
    let ca = read(&ca_path, "the service account's CA certificate")?;
    let token = dir.join("token");
    // Read once now, so a missing token is a configuration error before the first attempt.
    redact::read_secret_file(&token, "service-account token")?;
    let namespace = std::fs::read_to_string(dir.join("namespace"))
        .ok()
        .map(|text| text.trim().to_owned())
        .filter(|text| !text.is_empty());
    let user = std::fs::read_to_string(&token)
        .ok()
        .and_then(|token| token_subject(token.trim()));
    Ok(Cluster {
        server,
        trust: Trust::Only(pem_certificates(
            &ca,
            &format!("CA certificate {}", ca_path.display()),
        )?),
        identity: None,
        insecure: false,
        credential: Credential::TokenFile(token),
        namespace,
        source: format!("the service account in {}", dir.display()),
        user,
    })
}

/// The `sub` claim of a service-account JWT (`system:serviceaccount:NS:NAME`), read
/// without checking the signature: it only names the account in messages.
fn token_subject(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["sub"].as_str().map(str::to_owned)
}

/// The kubeconfig files in the order kubectl reads them: `paths` (from `--kubeconfig` or
/// `KUBECONFIG`, a `:`-separated list), else `~/.kube/config`.
pub fn from_kubeconfig(paths: &[PathBuf], context: Option<&str>) -> Result<Cluster> {
    let mut files = Vec::new();
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(text) => files.push((path.clone(), text)),
            // A KUBECONFIG list may name files that do not exist; kubectl skips them.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && paths.len() > 1 => {}
            Err(e) => {
                return Err(Error::Config(format!(
                    "reading kubeconfig {}: {}",
                    path.display(),
                    reason::io(&e)
                )));
            }
        }
    }
    if files.is_empty() {
        return Err(Error::Config(format!(
            "none of the kubeconfig files {} exists",
            paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let mut parsed = Vec::new();
    for (path, text) in &files {
        let node = yaml::parse(text).map_err(|e| {
            Error::Config(format!("reading kubeconfig {}: {e}", path.display()))
        })?;
        parsed.push((path.clone(), to_json(node)));
    }
    let first_path = parsed[0].0.clone();
    let current = parsed
        .iter()
        .find_map(|(_, config)| config["current-context"].as_str().filter(|s| !s.is_empty()))
        .map(str::to_owned);
    let context_name = match context.map(str::to_owned).or(current) {
        Some(name) => name,
        None => {
            return Err(Error::Config(format!(
                "kubeconfig {} has no current-context; name one with --context",
                first_path.display()
            )));
        }
    };
    let (context, context_file) = named(&parsed, "contexts", "context", &context_name)?;
    let cluster_name = context["cluster"].as_str().unwrap_or_default();
    let user_name = context["user"].as_str().unwrap_or_default();
    let (cluster, cluster_file) = named(&parsed, "clusters", "cluster", cluster_name)?;
    let user = if user_name.is_empty() {
        (serde_json::Value::Null, context_file.clone())
    } else {
        named(&parsed, "users", "user", user_name)?
    };
    let (user, user_file) = user;
    let source = format!(
        "kubeconfig {}, context {context_name}",
        context_file.display()
    );
    let field = |value: &serde_json::Value, key: &str| value[key].as_str().map(str::to_owned);

    let server = field(&cluster, "server").ok_or_else(|| {
        Error::Config(format!("{source}: cluster {cluster_name} has no server"))
    })?;
    let server = Url::parse(&server).map_err(|e| {
        Error::Config(format!(
            "{source}: the server '{server}' is not a valid URL: {e}"
        ))
    })?;
    if server.scheme() != "https" && server.scheme() != "http" {
        return Err(Error::Config(format!(
            "{source}: the server {server} is neither https:// nor http://"
        )));
    }
    for unsupported in ["exec", "auth-provider"] {
        if !user[unsupported].is_null() {
            return Err(Error::Config(format!(
                "{source}: user {user_name} logs in with an {unsupported} plugin, which initbox does not run (no programs in a scratch image); give the user a token, a token file or a client certificate"
            )));
        }
    }
    if field(&cluster, "tls-server-name").is_some() {
        return Err(Error::Config(format!(
            "{source}: tls-server-name is not supported; use a server address the certificate names"
        )));
    }
    let ca = material(&cluster, "certificate-authority", &cluster_file, &source)?;
    let trust = match ca {
        Some((pem, what)) => Trust::Only(pem_certificates(&pem, &what)?),
        None => Trust::Public(Vec::new()),
    };
    let cert = material(&user, "client-certificate", &user_file, &source)?;
    let key = material(&user, "client-key", &user_file, &source)?;
    let identity = match (cert, key) {
        (Some((cert, cert_what)), Some((key, key_what))) => Some(Identity {
            chain: pem_certificates(&cert, &cert_what)?,
            key: pem_private_key(&key, &key_what)?,
            source: format!("{cert_what} and {key_what}"),
        }),
        (None, None) => None,
        _ => {
            return Err(Error::Config(format!(
                "{source}: user {user_name} has a client certificate or a key, not both"
            )));
        }
    };
    let credential = if let Some(token) = field(&user, "token").filter(|t| !t.is_empty()) {
        redact::conceal(&token);
        Credential::Token(token)
    } else if let Some(file) = field(&user, "tokenFile") {
        let path = relative_to(&user_file, &file);
        redact::read_secret_file(&path, "token file")?;
        Credential::TokenFile(path)
    } else if let (Some(user), Some(password)) =
        (field(&user, "username"), field(&user, "password"))
    {
        redact::conceal(&password);
        Credential::Basic { user, password }
    } else {
        Credential::None
    };
    let insecure = cluster["insecure-skip-tls-verify"].as_bool() == Some(true);
    Ok(Cluster {
        server,
        trust,
        identity,
        insecure,
        credential,
        namespace: field(&context, "namespace").filter(|n| !n.is_empty()),
        source,
        user: (!user_name.is_empty()).then(|| user_name.to_owned()),
    })
}

/// The entry `name` of the list `list` (`clusters`, `contexts`, `users`), first file
/// first, with the file it came from (relative paths in it are relative to that file).
fn named(
    files: &[(PathBuf, serde_json::Value)],
    list: &str,
    inner: &str,
    name: &str,
) -> Result<(serde_json::Value, PathBuf)> {
    for (path, config) in files {
        if let Some(entries) = config[list].as_array() {
            for entry in entries {
                if entry["name"].as_str() == Some(name) {
                    return Ok((entry[inner].clone(), path.clone()));
                }
            }
        }
    }
    Err(Error::Config(format!(
        "kubeconfig {} has no {inner} named '{name}'",
        files[0].0.display()
    )))
}

/// PEM given inline (`KEY-data`, base64) or as a file (`KEY`, relative to the kubeconfig).
fn material(
    entry: &serde_json::Value,
    key: &str,
    file: &Path,
    source: &str,
) -> Result<Option<(Vec<u8>, String)>> {
    if let Some(data) = entry[format!("{key}-data")].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .map_err(|_| Error::Config(format!("{source}: {key}-data is not valid base64")))?;
        return Ok(Some((bytes, format!("{key}-data of {source}"))));
    }
    let Some(path) = entry[key].as_str() else {
        return Ok(None);
    };
    let path = relative_to(file, path);
    let what = format!("{key} {}", path.display());
    let bytes = read(&path, &what)?;
    Ok(Some((bytes, what)))
}

fn relative_to(file: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::Config(format!(
            "reading {what} {}: {}",
            path.display(),
            reason::io(&e)
        ))
    })
}

/// The YAML reader's tree as JSON values (numbers and booleans as the YAML 1.2 core
/// schema types them).
fn to_json(node: yaml::Node) -> serde_json::Value {
    use serde_json::Value as J;
    match node.value {
        yaml::Value::Null => J::Null,
        yaml::Value::Bool(b) => J::Bool(b),
        yaml::Value::Number(number) => match number.value {
            yaml::NumberValue::Int(i) => i64::try_from(i)
                .map(J::from)
                .unwrap_or_else(|_| J::String(number.text)),
            yaml::NumberValue::Float(f) => J::from(f),
        },
        yaml::Value::Text(text) => J::String(text),
        yaml::Value::List(items) => J::Array(items.into_iter().map(to_json).collect()),
        yaml::Value::Map(entries) => J::Object(
            entries
                .into_iter()
                .map(|(key, value)| (key, to_json(value)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_account_token_names_its_subject() {
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(r#"{"sub":"system:serviceaccount:demo:reader"}"#);
        assert_eq!(
            token_subject(&format!("e30.{claims}.sig")).as_deref(),
            Some("system:serviceaccount:demo:reader")
        );
        assert_eq!(token_subject("not-a-jwt"), None);
    }
}
