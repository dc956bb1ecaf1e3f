//! What rendering would do at DEST, found before the first write: which files are created,
//! changed, left alone or only get a new mode, which directories are missing, and whether
//! every place to write can be written. `--check` reports this plan; a run carries it out.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::atomic_file;
use crate::exit::{Error, Result};
use crate::reason;

use super::source::{Job, Target};

/// What writing a rendered file would do to what is at its destination now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Create,
    /// Different contents; the current mode, kept unless `--mode` says otherwise.
    Update {
        mode: u32,
    },
    /// Same contents, but `--mode` asks for another mode.
    Mode,
    Unchanged,
}

/// What a run would do at DEST.
pub struct Plan {
    /// What writing each job's output would do, in the order of the jobs.
    pub changes: Vec<Change>,
    /// The directories of the output tree that do not exist yet.
    pub missing_dirs: Vec<PathBuf>,
}

impl Plan {
    /// Compares each rendered output (`outputs[i]` is `jobs[i]`'s) with what is at its
    /// destination, and finds the directories of the output tree (`dirs`) still missing;
    /// touches nothing.
    pub fn make(
        jobs: &[Job],
        outputs: &[Vec<u8>],
        dirs: &[PathBuf],
        mode: Option<u32>,
    ) -> Result<Plan> {
        let mut changes = Vec::with_capacity(jobs.len());
        for (job, output) in jobs.iter().zip(outputs) {
            changes.push(match &job.target {
                Target::Stdout => Change::Create,
                Target::File(path) => compare(path, output, mode)?,
            });
        }
        let mut missing_dirs = Vec::new();
        for dir in dirs {
            match fs::metadata(dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(Error::Config(format!(
                        "cannot create the directory {}: a file is in the way",
                        dir.display()
                    )));
                }
                Err(_) => missing_dirs.push(dir.clone()),
            }
        }
        Ok(Plan {
            changes,
            missing_dirs,
        })
    }

    /// Fails, naming the directory, if a file to write has a directory that cannot be
    /// written (or created), or a mode to set on a file initbox does not own.
    pub fn check_writable(&self, jobs: &[Job]) -> Result<()> {
        preflight(jobs, &self.changes, &self.missing_dirs)
    }
}

/// What writing `bytes` to `path` would change; errors for a destination that can never
/// be written (a directory in the way), before anything is written anywhere.
fn compare(path: &Path, bytes: &[u8], mode: Option<u32>) -> Result<Change> {
    let shown = path.display();
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Change::Create),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => {
            let file = path
                .ancestors()
                .skip(1)
                .filter(|dir| dir.is_file())
                .last()
                .map(|file| format!("{} is a file", file.display()))
                .unwrap_or_else(|| "a parent of it is a file".into());
            return Err(Error::Config(format!(
                "cannot write {shown}: {file}, not a directory"
            )));
        }
        Err(e) => {
            return Err(Error::Failed(format!(
                "cannot read {shown}: {}",
                reason::io(&e)
            )));
        }
    };
    if meta.is_dir() {
        return Err(Error::Config(format!(
            "cannot write {shown}: it is a directory"
        )));
    }
    let current_mode = meta.permissions().mode() & 0o7777;
    // Only a file of the same size can be unchanged: no need to read the others.
    if meta.len() != bytes.len() as u64 {
        return Ok(Change::Update { mode: current_mode });
    }
    let current = fs::read(path)
        .map_err(|e| Error::Failed(format!("cannot read {shown}: {}", reason::io(&e))))?;
    Ok(if current != bytes {
        Change::Update { mode: current_mode }
    } else if mode.is_some_and(|mode| mode != current_mode) {
        Change::Mode
    } else {
        Change::Unchanged
    })
}

fn preflight(jobs: &[Job], changes: &[Change], missing_dirs: &[PathBuf]) -> Result<()> {
    // Each directory, with the first file to be written into it (messages name both).
    let mut dirs: Vec<(&Path, Option<&Path>)> =
        missing_dirs.iter().map(|d| (d.as_path(), None)).collect();
    for (job, change) in jobs.iter().zip(changes) {
        let Target::File(path) = &job.target else {
            continue;
        };
        match change {
            Change::Create | Change::Update { .. } => dirs.push((parent_dir(path), Some(path))),
            Change::Mode => check_owner(path)?,
            Change::Unchanged => {}
        }
    }
    // A file's entry first, so that the message names the file.
    dirs.sort_by(|a, b| a.0.cmp(b.0).then(b.1.is_some().cmp(&a.1.is_some())));
    dirs.dedup_by(|a, b| a.0 == b.0);
    for (dir, file) in dirs {
        // A directory to create is checked in its nearest existing ancestor, where it
        // would be created.
        let Err(unwritable) = atomic_file::check_directory(dir) else {
            continue;
        };
        let existing = unwritable.refused_by.as_path();
        if unwritable.error.kind() == io::ErrorKind::NotADirectory {
            return Err(Error::Config(format!(
                "cannot create the directory {}: {} is a file, not a directory",
                dir.display(),
                existing.display()
            )));
        }
        let reason = reason::io(&unwritable.error);
        let message = match (file, existing == dir) {
            (Some(file), true) => format!(
                "cannot write {}: {reason} (the directory {} cannot be written)",
                file.display(),
                dir.display()
            ),
            (None, true) => {
                format!(
                    "cannot write into the directory {}: {reason}",
                    dir.display()
                )
            }
            (_, false) => format!(
                "cannot create the directory {} in {}: {reason}",
                dir.display(),
                existing.display()
            ),
        };
        return Err(Error::Failed(message));
    }
    Ok(())
}

/// Only a file's owner (or root) may change its mode.
#[allow(unsafe_code)]
fn check_owner(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(|e| {
        Error::Failed(format!(
            "cannot read {}: {}",
            path.display(),
            reason::io(&e)
        ))
    })?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 && meta.uid() != euid {
        return Err(Error::Failed(format!(
            "cannot set the mode of {}: it belongs to user {}, not to this user ({euid})",
            path.display(),
            meta.uid()
        )));
    }
    Ok(())
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}
