//! `--submodules shallow|recursive`: each submodule the checked-out commit records, cloned
//! in-process into the staged checkout at the commit recorded, before the checkout is
//! installed, so DEST gets the superproject and its submodules together or not at all.
//!
//! The rules git applies to `.gitmodules` (it is the repository's content, so anyone who
//! can push to it writes it) apply here too: a path must stay inside the checkout and be a
//! gitlink of the commit, a URL may not start with `-`, a `file://` or local-path URL is
//! only followed from a local superproject (git's `protocol.file.allow=user`), and the
//! superproject's HTTP credentials go only to the same host.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::exit::Error;
use crate::wait::Failure;

use super::transfer::{CloneRequest, Reference, clone_into};

/// Which submodules are cloned (git-sync's `--submodules` values).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Submodules {
    /// None: their directories stay empty.
    #[default]
    Off,
    /// The superproject's own submodules, not theirs.
    Shallow,
    /// Every level.
    Recursive,
}

impl Submodules {
    pub fn is_off(&self) -> bool {
        *self == Submodules::Off
    }

    /// What a submodule's own submodules get.
    pub fn nested(self) -> Submodules {
        match self {
            Submodules::Recursive => Submodules::Recursive,
            _ => Submodules::Off,
        }
    }
}

fn fatal(message: String) -> Failure {
    Failure::Fatal(Error::Failed(message))
}

/// Clones the submodules of the checkout in `dir` (made from `request`) into it.
pub fn clone_all(
    dir: &Path,
    request: &CloneRequest,
    interrupt: &AtomicBool,
) -> Result<(), Failure> {
    if request.submodules.is_off() {
        return Ok(());
    }
    let repo = gix::open_opts(dir, gix::open::Options::isolated()).map_err(|e| {
        fatal(format!(
            "the checkout cannot be opened for its submodules: {e}"
        ))
    })?;
    let modules = repo
        .submodules()
        .map_err(|e| fatal(format!("its .gitmodules cannot be read: {e}")))?;
    let Some(modules) = modules else {
        return Ok(());
    };
    let mut config = String::new();
    for module in modules {
        let name = module
            .validated_name()
            .map_err(|e| fatal(format!("a submodule name in .gitmodules is refused: {e}")))?
            .to_string();
        let path = module
            .path()
            .map_err(|e| fatal(format!("submodule '{name}': its path is refused: {e}")))?;
        // Only what the commit records as a gitlink is cloned, as `git submodule update`
        // does; a .gitmodules entry without one is left alone.
        let commit = match module.head_id() {
            Ok(Some(commit)) => commit,
            Ok(None) => continue,
            Err(e) => return Err(fatal(format!("submodule '{name}' at {path}: {e}"))),
        };
        // Outside a `--sparse` cone: not checked out, so not cloned (as git does).
        if !super::sparse::is_checked_out(&repo, path.as_ref()) {
            continue;
        }
        let raw = module
            .url()
            .map_err(|e| fatal(format!("submodule '{name}': {e}")))?
            .to_bstring()
            .to_string();
        let url = resolve_url(&request.url, &raw)
            .map_err(|reason| fatal(format!("submodule '{name}' ({raw}): {reason}")))?;
        let shown = url.to_bstring().to_string();
        let relative = gix::path::from_bstr(gix::bstr::ByteSlice::as_bstr(path.as_slice()))
            .map_err(|e| fatal(format!("submodule '{name}': its path is refused: {e}")))?;
        let target = dir.join(relative);
        // The checkout left the gitlink as an empty directory; anything else means the
        // path is not what the commit says.
        std::fs::create_dir_all(&target).map_err(|e| {
            fatal(format!(
                "submodule '{name}': cannot make {}: {}",
                target.display(),
                crate::reason::io(&e)
            ))
        })?;
        let sub_request = request_for(request, url, commit.to_string())
            .map_err(|reason| fatal(format!("submodule '{name}' ({shown}): {reason}")))?;
        crate::report::info(
            "git.submodule",
            format!(
                "cloning submodule '{name}' from {shown} at commit {}",
                &commit.to_string()[..12]
            ),
        );
        clone_into(&target, &sub_request, interrupt).map_err(|failure| match failure {
            Failure::Retry(reason) => Failure::Retry(format!("submodule '{name}': {reason}")),
            Failure::Fatal(error) => fatal(format!("submodule '{name}' ({shown}): {error}")),
        })?;
        config.push_str(&format!(
            "[submodule \"{name}\"]\n\tactive = true\n\turl = {shown}\n"
        ));
    }
    if !config.is_empty() {
        // As `git submodule update --init` leaves it: each submodule active, with its URL.
        use std::io::Write;
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.join(".git/config"))
            .and_then(|mut file| file.write_all(config.as_bytes()))
            .map_err(|e| {
                fatal(format!(
                    "cannot record the submodules in .git/config: {}",
                    crate::reason::io(&e)
                ))
            })?;
    }
    Ok(())
}

/// The superproject's request, pointed at a submodule: the same transport settings and
/// depth; HTTP credentials only for the superproject's own host; the nested level.
fn request_for(
    parent: &CloneRequest,
    url: gix::Url,
    commit: String,
) -> Result<CloneRequest, String> {
    use gix::url::Scheme;
    let same_host = url.scheme == parent.url.scheme
        && url.host() == parent.url.host()
        && url.port_or_default() == parent.url.port_or_default();
    let ssh = match url.scheme {
        Scheme::Ssh => Some(parent.ssh.clone().ok_or(
            "an ssh submodule of a repository that is not cloned over ssh: no ssh keys were read (clone the superproject over ssh, or point the submodule at https)",
        )?),
        _ => None,
    };
    let address = match (&url.scheme, url.host()) {
        (Scheme::Ssh | Scheme::Git, Some(host)) => {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some(match host.parse::<std::net::IpAddr>() {
                Ok(ip) => ip,
                Err(_) => {
                    let resolver = parent.resolver.clone();
                    let host = host.to_owned();
                    let found = tokio::runtime::Handle::current()
                        .block_on(async move { resolver.lookup_ip(&host).await })
                        .map_err(|failure| failure.to_string())?;
                    *found.first().ok_or("its host has no address")?
                }
            })
        }
        _ => None,
    };
    Ok(CloneRequest {
        url,
        reference: Reference::Commit(commit),
        depth: parent.depth,
        credentials: parent.credentials.clone().filter(|_| same_host),
        tls: parent.tls.clone(),
        resolver: parent.resolver.clone(),
        connect_timeout: parent.connect_timeout,
        ssh,
        address,
        submodules: parent.submodules.nested(),
        // A submodule is checked out whole: the superproject's cone names its own paths.
        sparse: Vec::new(),
    })
}

/// A submodule's URL as git resolves it: `./x` and `../x` relative to the superproject's
/// URL (as a directory: `../lib.git` beside `org/app.git` is `org/lib.git`), anything else
/// as written, with git's refusals.
pub fn resolve_url(parent: &gix::Url, raw: &str) -> Result<gix::Url, String> {
    if raw.starts_with('-') {
        return Err(
            "a URL that starts with '-' is refused (it could be taken for an option)".into(),
        );
    }
    let url = if raw.starts_with("./") || raw.starts_with("../") {
        let mut base: Vec<String> = parent
            .path
            .to_string()
            .trim_end_matches('/')
            .split('/')
            .map(str::to_owned)
            .collect();
        let mut rest = raw;
        loop {
            if let Some(after) = rest.strip_prefix("./") {
                rest = after;
            } else if let Some(after) = rest.strip_prefix("../") {
                if base.len() <= 1 && base.first().is_none_or(|first| first.is_empty()) {
                    return Err("it climbs above the superproject's host".into());
                }
                base.pop();
                rest = after;
            } else {
                break;
            }
        }
        let mut resolved = parent.clone();
        resolved.path = format!("{}/{rest}", base.join("/")).into();
        resolved
    } else {
        gix::Url::from_bytes(raw.into()).map_err(|e| format!("not a URL git understands: {e}"))?
    };
    use gix::url::Scheme;
    match url.scheme {
        Scheme::Https | Scheme::Http | Scheme::Git | Scheme::Ssh => Ok(url),
        Scheme::File if parent.scheme == Scheme::File => Ok(url),
        Scheme::File => Err(
            "a local path or file:// URL is only followed from a local superproject (as git's protocol.file.allow=user)".into(),
        ),
        other => Err(format!("the scheme {other} cannot be cloned")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(parent: &str, raw: &str) -> Result<String, String> {
        let parent = gix::Url::from_bytes(parent.into()).unwrap();
        resolve_url(&parent, raw).map(|url| url.to_bstring().to_string())
    }

    #[test]
    fn relative_submodule_urls_resolve_beside_the_superproject_as_git_resolves_them() {
        assert_eq!(
            resolved("https://git.example/org/app.git", "../lib.git").unwrap(),
            "https://git.example/org/lib.git"
        );
        assert_eq!(
            resolved("https://git.example/org/app.git", "../../other/lib.git").unwrap(),
            "https://git.example/other/lib.git"
        );
        assert_eq!(
            resolved("git@git.example:org/app.git", "../lib.git").unwrap(),
            "git@git.example:org/lib.git"
        );
        assert_eq!(
            resolved("git://127.0.0.1:9418/app", "./lib").unwrap(),
            "git://127.0.0.1:9418/app/lib"
        );
        assert_eq!(
            resolved(
                "https://git.example/org/app.git",
                "https://other.example/lib.git"
            )
            .unwrap(),
            "https://other.example/lib.git"
        );
    }

    #[test]
    fn submodule_urls_git_refuses_are_refused() {
        let parent = "https://git.example/org/app.git";
        assert!(
            resolved(parent, "-uhttps://evil/x")
                .unwrap_err()
                .contains("'-'")
        );
        assert!(
            resolved(parent, "file:///etc")
                .unwrap_err()
                .contains("local superproject")
        );
        assert!(
            resolved(parent, "/srv/git/lib.git")
                .unwrap_err()
                .contains("local superproject")
        );
        assert!(
            resolved(parent, "../../../x.git")
                .unwrap_err()
                .contains("climbs")
        );
        assert!(resolved("file:///srv/git/app", "../lib").is_ok());
    }
}
