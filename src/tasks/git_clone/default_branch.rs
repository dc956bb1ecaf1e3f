//! A shallow clone of the remote's default branch in one connection, as git makes it.
//!
//! gix's single-branch shallow clone connects twice: once to learn which branch the remote's
//! HEAD names, then again to fetch it. Over HTTP that is two more requests (each a CGI
//! process on a `git http-backend` server), over git:// and ssh a second upload-pack.
//! Asked for `HEAD` as a revision, gix fetches in the one connection git uses and checks
//! the commit out on a detached HEAD, with no branch and no remote-tracking ref. This
//! module then leaves what `git clone --depth N` leaves: HEAD on the branch, the branch,
//! `origin/BRANCH` and `origin/HEAD`, the single-branch fetch refspec and the branch's
//! upstream in `.git/config`. git, and a later `git pull`, see an ordinary clone.
//!
//! One difference stays: git's include-tag also fetches a tag that points at the fetched
//! commit; a revision fetch asks for no tags.

use gix::bstr::{BStr, ByteSlice};
use gix::protocol::handshake::Ref;
use gix::refs::transaction::{LogChange, PreviousValue, RefEdit};
use gix::refs::{FullName, Target};

use super::transfer::{CloneRequest, Reference};

/// The remote's name in `.git/config`, as git and gix clones call it.
const REMOTE: &str = "origin";

/// Whether this clone takes the one-connection path: a shallow clone of the remote's HEAD.
/// A full clone already connects once, and a named ref must be looked up (a branch or a
/// tag) before its refspec can be written.
pub fn applies(request: &CloneRequest) -> bool {
    request.depth > 0 && request.reference == Reference::RemoteHead
}

/// The revision gix is asked for instead of its single-branch clone.
pub const REVISION: &str = "HEAD";

/// Puts the detached checkout of the remote's HEAD on the branch that HEAD names, with the
/// refs and configuration git writes. A remote whose HEAD is detached (or names no branch)
/// leaves the checkout detached, as git does.
pub fn attach_head(
    repo: &gix::Repository,
    remote_refs: &[Ref],
    url: &gix::Url,
) -> Result<(), String> {
    let Some((branch, commit)) = default_branch(remote_refs) else {
        return Ok(());
    };
    let full = |name: String| {
        FullName::try_from(name.as_str())
            .map_err(|e| format!("the remote's HEAD names '{branch}', not a usable branch: {e}"))
    };
    let local = full(format!("refs/heads/{branch}"))?;
    let tracking = full(format!("refs/remotes/{REMOTE}/{branch}"))?;
    let clone_log = || LogChange {
        message: format!("clone: from {}", url.to_bstring()).into(),
        ..Default::default()
    };
    let update = |name: FullName, target: Target, log: LogChange| {
        RefEdit::update_with_log(name, target, PreviousValue::Any, log)
    };
    repo.edit_references([
        update(local.clone(), Target::Object(commit), clone_log()),
        update(tracking.clone(), Target::Object(commit), clone_log()),
        update(
            full(format!("refs/remotes/{REMOTE}/HEAD"))?,
            Target::Symbolic(tracking.clone()),
            clone_log(),
        ),
        update(
            FullName::try_from("HEAD").expect("a valid name"),
            Target::Symbolic(local.clone()),
            LogChange::default(),
        ),
    ])
    .map_err(|e| format!("cannot put HEAD on the branch '{branch}': {e}"))?;
    record_branch(repo, branch, &local, &tracking)
}

/// The branch the remote's HEAD names, short (`main`), and its commit.
fn default_branch(remote_refs: &[Ref]) -> Option<(&str, gix::ObjectId)> {
    remote_refs.iter().find_map(|remote_ref| match remote_ref {
        Ref::Symbolic {
            full_ref_name,
            target,
            object,
            ..
        } if full_ref_name == "HEAD" => {
            let branch = short_branch(target.as_bstr())?;
            Some((branch, *object))
        }
        _ => None,
    })
}

fn short_branch(target: &BStr) -> Option<&str> {
    target
        .strip_prefix(b"refs/heads/")
        .and_then(|name| name.to_str().ok())
        .filter(|name| !name.is_empty())
}

/// `.git/config` as git's single-branch clone writes it: the fetch refspec of the one
/// branch, and the branch's upstream.
fn record_branch(
    repo: &gix::Repository,
    branch: &str,
    local: &FullName,
    tracking: &FullName,
) -> Result<(), String> {
    let path = repo.git_dir().join("config");
    let failed =
        |e: &dyn std::fmt::Display| format!("cannot record the branch in .git/config: {e}");
    let mut config =
        gix::config::File::from_path_no_includes(path.clone(), gix::config::Source::Local)
            .map_err(|e| failed(&e))?;
    let (local, tracking) = (local.as_bstr().to_string(), tracking.as_bstr().to_string());
    let refspec = format!("+{local}:{tracking}");
    let settings = [
        ("remote", REMOTE, "fetch", refspec.as_str()),
        ("branch", branch, "remote", REMOTE),
        ("branch", branch, "merge", local.as_str()),
    ];
    for (section, subsection, key, value) in settings {
        config
            .set_raw_value_by(section, subsection, key, value)
            .map_err(|e| failed(&e))?;
    }
    let mut text = Vec::new();
    config.write_to(&mut text).map_err(|e| failed(&e))?;
    std::fs::write(&path, text).map_err(|e| failed(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn symbolic(name: &str, target: &str) -> Ref {
        Ref::Symbolic {
            full_ref_name: name.into(),
            target: target.into(),
            tag: None,
            object: gix::ObjectId::empty_tree(gix::hash::Kind::Sha1),
        }
    }

    #[test]
    fn the_default_branch_is_the_one_the_remote_head_names() {
        let refs = [
            symbolic("refs/remotes/x", "refs/heads/other"),
            symbolic("HEAD", "refs/heads/release/2.x"),
        ];
        assert_eq!(default_branch(&refs).map(|(b, _)| b), Some("release/2.x"));
    }

    #[test]
    fn a_detached_or_odd_remote_head_names_no_branch() {
        let detached = [Ref::Direct {
            full_ref_name: "HEAD".into(),
            object: gix::ObjectId::empty_tree(gix::hash::Kind::Sha1),
        }];
        assert_eq!(default_branch(&detached), None);
        assert_eq!(default_branch(&[symbolic("HEAD", "refs/tags/v1")]), None);
        assert_eq!(default_branch(&[symbolic("HEAD", "refs/heads/")]), None);
    }
}
