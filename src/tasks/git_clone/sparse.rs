//! `--sparse DIR...`: git's cone-mode sparse checkout, in-process. The clone fetches the
//! whole commit as usual; the checkout writes only the files at the top, those of the
//! directories leading to each DIR, and everything below each DIR. The rest stays in the
//! index flagged skip-worktree, `.git/info/sparse-checkout` holds the cone as `git
//! sparse-checkout set --cone` writes it, and `core.sparseCheckout`/`core.sparseCheckoutCone`
//! are set, so git itself sees the same sparse checkout afterwards.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use gix::bstr::ByteSlice;

use crate::exit::Error;
use crate::wait::Failure;

/// One `--sparse` directory, checked as clap parses it: relative to the repository's top,
/// inside it.
pub fn check_dir(text: &str) -> Result<String, String> {
    let trimmed = text.trim().trim_end_matches('/');
    if trimmed.is_empty() || trimmed == "." {
        return Err(
            "a directory of the repository is needed (the top is checked out anyway)".into(),
        );
    }
    if trimmed.starts_with('/') {
        return Err(format!(
            "'{text}': give the directory relative to the repository's top"
        ));
    }
    if trimmed
        .split('/')
        .any(|part| part.is_empty() || part == "." || part == "..")
    {
        return Err(format!(
            "'{text}' must name a directory inside the repository (no '.', '..' or '//')"
        ));
    }
    Ok(trimmed.to_owned())
}

/// The directories as recorded and compared: sorted, each once.
pub fn normalized(dirs: &[String]) -> Vec<String> {
    let mut dirs: Vec<String> = dirs.to_vec();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// The cone as `git sparse-checkout set --cone DIR...` writes `info/sparse-checkout`: the
/// top's files, then for each directory its parents' files and the directory whole.
pub fn cone_patterns(dirs: &[String]) -> String {
    let mut lines = vec!["/*".to_owned(), "!/*/".to_owned()];
    let mut parents: Vec<String> = Vec::new();
    for dir in dirs {
        let parts: Vec<&str> = dir.split('/').collect();
        for depth in 1..parts.len() {
            let parent = parts[..depth].join("/");
            if !parents.contains(&parent) {
                lines.push(format!("/{parent}/"));
                lines.push(format!("!/{parent}/*/"));
                parents.push(parent);
            }
        }
        lines.push(format!("/{dir}/"));
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Marks what the cone leaves out skip-worktree in a full index made from a tree.
pub fn apply(index: &mut gix::index::State, dirs: &[String]) -> Result<(), String> {
    let patterns = cone_patterns(dirs);
    gix::worktree::sparse::apply_patterns(
        index,
        patterns.as_bytes(),
        Path::new("--sparse"),
        true,
        gix::glob::pattern::Case::Sensitive,
    )
    .map_err(|e| format!("the --sparse directories cannot be applied: {e}"))
}

fn failed(what: &str) -> impl Fn(gix::Error) -> Failure + '_ {
    move |error| Failure::Fatal(Error::Failed(format!("{what}: {error}")))
}

/// The checkout of a fetched repository (`main_worktree` without `--sparse`), with the
/// cone applied to the index first; the repository's git settings record the cone.
pub fn checkout(
    repo: gix::Repository,
    dir: &Path,
    dirs: &[String],
    interrupt: &AtomicBool,
) -> Result<gix::Repository, Failure> {
    let tree = repo
        .head_tree_id()
        .map_err(failed("the fetched commit has no tree"))?
        .detach();
    let mut index = repo
        .index_from_tree(&tree)
        .map_err(failed("the commit's tree cannot be read"))?;
    apply(&mut index, dirs).map_err(|reason| Failure::Fatal(Error::Failed(reason)))?;
    let mut options = repo
        .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
        .map_err(failed("the checkout settings cannot be read"))?;
    options.destination_is_initially_empty = true;
    let objects =
        repo.objects.clone().into_arc().map_err(|e| {
            failed("the object database cannot be shared")(gix::Error::from_error(e))
        })?;
    gix::worktree::state::checkout(
        &mut index,
        dir,
        objects,
        &gix::progress::Discard,
        &gix::progress::Discard,
        interrupt,
        options,
    )
    .map_err(|e| failed("writing the files failed")(gix::Error::from_error(e)))?;
    index
        .write(Default::default())
        .map_err(|e| failed("the index cannot be written")(gix::Error::from_error(e)))?;
    let git = dir.join(".git");
    let written = std::fs::create_dir_all(git.join("info"))
        .and_then(|()| std::fs::write(git.join("info/sparse-checkout"), cone_patterns(dirs)))
        .and_then(|()| {
            use std::io::Write;
            std::fs::OpenOptions::new()
                .append(true)
                .open(git.join("config"))?
                .write_all(b"[core]\n\tsparseCheckout = true\n\tsparseCheckoutCone = true\n")
        });
    written.map_err(|e| {
        Failure::Fatal(Error::Failed(format!(
            "cannot record the sparse checkout in {}: {}",
            git.display(),
            crate::reason::io(&e)
        )))
    })?;
    Ok(repo)
}

/// Whether `path` (a gitlink or a file) is in the working tree of the checkout `repo`,
/// which is so unless a `--sparse` cone left it out.
pub fn is_checked_out(repo: &gix::Repository, path: &[u8]) -> bool {
    let Ok(index) = repo.open_index() else {
        return true;
    };
    index.entry_by_path(path.as_bstr()).is_none_or(|entry| {
        !entry
            .flags
            .contains(gix::index::entry::Flags::SKIP_WORKTREE)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cone_is_written_as_git_sparse_checkout_writes_it() {
        let dirs = normalized(&["deploy/prod".into(), "docs".into(), "deploy/base".into()]);
        assert_eq!(
            cone_patterns(&dirs),
            "/*\n!/*/\n/deploy/\n!/deploy/*/\n/deploy/base/\n/deploy/prod/\n/docs/\n"
        );
    }

    #[test]
    fn sparse_directories_stay_inside_the_repository() {
        assert_eq!(check_dir("deploy/prod/").unwrap(), "deploy/prod");
        for bad in ["", ".", "/etc", "../x", "a/../b", "a//b"] {
            assert!(check_dir(bad).is_err(), "{bad}");
        }
    }
}
