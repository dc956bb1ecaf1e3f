//! link: the `ln -sfn TARGET LINK` of init containers, without its one race: the new link
//! is made at a temp name beside LINK and renamed over it, so a reader of LINK sees the
//! old link or the new one, never no link at all.
//!
//! Unlike `ln -sf` without `-n`, an existing real directory at LINK is refused instead of
//! getting a link made inside it (`ln -sf /new /data/current` with `current` a directory
//! makes `/data/current/new`, which no one wants); a link to a directory is replaced, as
//! `-n` does.

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::reason;
use crate::report;

/// Make a symbolic link atomically, replacing what is there (ln -sfn).
#[derive(Debug, Clone, clap::Args)]
pub struct LinkArgs {
    /// What the link points to, stored as written (it need not exist; relative targets are
    /// read from the link's directory, as with ln -s).
    #[arg(value_name = "TARGET")]
    pub target: PathBuf,
    /// The link to make. An existing link or file there is replaced atomically; a real
    /// directory is refused (remove it first). Its directory must exist.
    #[arg(value_name = "LINK")]
    pub link: PathBuf,
    #[command(flatten)]
    pub then: Then,
}

impl crate::cli::Task for LinkArgs {
    async fn execute(self) -> Result<()> {
        run(&self)
    }

    fn then(&self) -> &[OsString] {
        &self.then.command
    }
}

/// What became of LINK.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Created,
    Replaced,
    Unchanged,
}

fn run(args: &LinkArgs) -> Result<()> {
    let shown = format!("{} -> {}", args.link.display(), args.target.display());
    let outcome = make(&args.target, &args.link)
        .map_err(|error| Error::Failed(format!("cannot link {shown}: {error}")))?;
    let what = match outcome {
        Outcome::Created => "created",
        Outcome::Replaced => "replaced",
        Outcome::Unchanged => "unchanged",
    };
    report::info("link.done", format!("link {shown}: {what}"));
    Ok(())
}

fn make(target: &Path, link: &Path) -> std::result::Result<Outcome, String> {
    if target.as_os_str().is_empty() {
        return Err("the target is empty".into());
    }
    let bytes = link.as_os_str().as_bytes();
    let name = match link.file_name() {
        Some(name) if !bytes.ends_with(b"/") => name,
        _ => return Err("LINK must name a link, not a directory (it ends in '/' or '..')".into()),
    };
    let dir = match link.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let outcome = match fs::symlink_metadata(link) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if fs::read_link(link).is_ok_and(|current| current == target) {
                return Ok(Outcome::Unchanged);
            }
            Outcome::Replaced
        }
        Ok(meta) if meta.is_dir() => {
            return Err(
                "a directory is there (remove it first; initbox does not make the link inside \
                 it as ln -sf without -n would)"
                    .into(),
            );
        }
        Ok(_) => Outcome::Replaced,
        Err(error) if error.kind() == io::ErrorKind::NotFound => Outcome::Created,
        Err(error) => return Err(reason::io(&error)),
    };
    match fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", dir.display())),
        Err(error) => return Err(format!("{}: {}", dir.display(), reason::io(&error))),
    }
    let temp = loop {
        let temp = dir.join(format!(
            ".{}.initbox-{:08x}.tmp",
            name.to_string_lossy(),
            fastrand::u32(..)
        ));
        match std::os::unix::fs::symlink(target, &temp) {
            Ok(()) => break temp,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(reason::io(&error)),
        }
    };
    // rename(2) replaces a link or a file atomically, and fails on a directory that took
    // LINK's place since the look above (EISDIR), which is then refused like the first.
    if let Err(error) = fs::rename(&temp, link) {
        let _ = fs::remove_file(&temp);
        return Err(match error.raw_os_error() {
            Some(libc::EISDIR) | Some(libc::ENOTEMPTY) | Some(libc::EEXIST) => {
                "a directory is there (remove it first)".into()
            }
            _ => reason::io(&error),
        });
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_links_and_files_refuses_directories() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        assert_eq!(make(Path::new("v1"), &link), Ok(Outcome::Created));
        assert_eq!(make(Path::new("v1"), &link), Ok(Outcome::Unchanged));
        assert_eq!(make(Path::new("v2"), &link), Ok(Outcome::Replaced));
        assert_eq!(fs::read_link(&link).unwrap(), Path::new("v2"));
        let file = dir.path().join("file");
        fs::write(&file, "x").unwrap();
        assert_eq!(make(Path::new("v1"), &file), Ok(Outcome::Replaced));
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        assert!(
            make(Path::new("v1"), &sub)
                .unwrap_err()
                .contains("directory")
        );
        assert!(fs::read_dir(&sub).unwrap().next().is_none());
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["current", "file", "sub"]);
    }
}
