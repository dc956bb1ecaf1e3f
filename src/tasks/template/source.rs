//! What SRC holds: the templates to render (each with the place its output goes) and the
//! directories of the output tree, read before anything is rendered or written.
//!
//! A directory of templates is walked following symbolic links, as a Kubernetes ConfigMap
//! volume needs, skipping the volume's own `..data` machinery and stopping at a link loop.
//! Jinja partials (any name starting with `_`: `_helpers.j2`, a `_partials/` folder) are
//! not rendered on their own there: they exist to be included, as Helm's `_helpers.tpl`.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cli::Invalid;
use crate::exit::{Error, Result};
use crate::reason;
use crate::report;

use super::Syntax;

/// The suffix dropped from a Jinja template's name to name its output (envsubst templates
/// keep their names: they are usually a ConfigMap's files, named as the output).
const TEMPLATE_SUFFIX: &str = ".j2";

/// How a template directory's entry is told to be a Jinja partial.
const PARTIAL_PREFIX: &[u8] = b"_";

/// One template to render.
pub struct Job {
    /// The template as messages name it: the path under SRC, or `<stdin>`.
    pub name: String,
    pub source: Source,
    pub target: Target,
    /// Whether the template file has an execute bit (a new output file gets them too).
    pub executable: bool,
}

/// What a template file holds.
pub enum Source {
    /// UTF-8 text: rendered (text without `{{`, `{%` or `{#` renders to itself).
    Text(String),
    /// Anything else (a keystore, an image, a ConfigMap's `binaryData`): copied byte for
    /// byte, never rendered, even where its bytes happen to read `{{`.
    Bytes(Vec<u8>),
}

impl Source {
    fn of(bytes: Vec<u8>, name: &str, syntax: Syntax) -> Source {
        match String::from_utf8(bytes) {
            Ok(text) => Source::Text(text),
            Err(error) => {
                let bytes = error.into_bytes();
                let marked = match syntax {
                    Syntax::Jinja => [b"{{", b"{%", b"{#"]
                        .iter()
                        .any(|marker| bytes.windows(2).any(|w| w == *marker)),
                    Syntax::Envsubst => memchr::memchr(b'$', &bytes).is_some(),
                };
                if marked {
                    report::warn(
                        "template.binary",
                        format!(
                            "{name} is not UTF-8 text: it is copied as it is, its template \
                             markers not rendered"
                        ),
                    );
                }
                Source::Bytes(bytes)
            }
        }
    }
}

impl Job {
    pub fn verb(&self) -> &'static str {
        match self.source {
            Source::Text(_) => "rendered",
            Source::Bytes(_) => "copied (not UTF-8 text)",
        }
    }
}

pub enum Target {
    Stdout,
    File(PathBuf),
}

pub fn is_dash(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// The templates to render and the directories of the output tree (DEST and every
/// directory under it), read from SRC.
pub async fn read(src: &Path, dest: &Path, syntax: Syntax) -> Result<(Vec<Job>, Vec<PathBuf>)> {
    let into_dir = dest.as_os_str().as_bytes().ends_with(b"/") || dest.is_dir();
    if is_dash(src) {
        let target = if is_dash(dest) {
            Target::Stdout
        } else if into_dir {
            return Err(Error::Usage(stdin_into_directory(dest).to_string()));
        } else {
            Target::File(dest.to_owned())
        };
        let job = Job {
            name: "<stdin>".into(),
            source: Source::of(read_stdin().await?, "<stdin>", syntax),
            target,
            executable: false,
        };
        return Ok((vec![job], Vec::new()));
    }

    let meta = fs::metadata(src)
        .map_err(|e| Error::Config(format!("template {}: {}", src.display(), reason::io(&e))))?;
    if !meta.is_dir() {
        let target = if is_dash(dest) {
            Target::Stdout
        } else if into_dir {
            let name = src.file_name().unwrap_or(src.as_os_str());
            Target::File(dest.join(output_name(name, syntax)))
        } else {
            Target::File(dest.to_owned())
        };
        let job = read_template(src, src.display().to_string(), target, syntax)?;
        return Ok((vec![job], Vec::new()));
    }
    if is_dash(dest) {
        let invalid = Invalid {
            arg: "<DEST>".into(),
            value: "-".into(),
            reason: format!(
                "{} is a directory: it renders into a directory, not to stdout",
                src.display()
            ),
        };
        return Err(Error::Usage(invalid.to_string()));
    }
    if dest.exists() && !dest.is_dir() {
        return Err(Error::Config(format!(
            "{} is a directory of templates, but DEST {} is not a directory",
            src.display(),
            dest.display()
        )));
    }
    let mut walk = Walk {
        jobs: Vec::new(),
        dirs: vec![dest.to_owned()],
        outputs: HashMap::new(),
        ancestors: vec![(meta.dev(), meta.ino())],
        dest: fs::metadata(dest).ok().map(|meta| (meta.dev(), meta.ino())),
        syntax,
    };
    walk.dir(src, dest)?;
    Ok((walk.jobs, walk.dirs))
}

/// The refusal of a template read from stdin (it has no name) into a directory.
pub fn stdin_into_directory(dest: &Path) -> Invalid {
    Invalid {
        arg: "<DEST>".into(),
        value: dest.display().to_string(),
        reason: "a template read from stdin has no name: DEST must be a file or '-', not a \
                 directory"
            .into(),
    }
}

/// `app.conf.j2` → `app.conf` (Jinja); other names stay as they are.
fn output_name(name: &std::ffi::OsStr, syntax: Syntax) -> std::ffi::OsString {
    if syntax == Syntax::Envsubst {
        return name.to_owned();
    }
    let bytes = name.as_bytes();
    match bytes.strip_suffix(TEMPLATE_SUFFIX.as_bytes()) {
        Some(stem) if !stem.is_empty() => std::ffi::OsStr::from_bytes(stem).to_owned(),
        _ => name.to_owned(),
    }
}

fn read_template(path: &Path, name: String, target: Target, syntax: Syntax) -> Result<Job> {
    let bytes = fs::read(path).map_err(|e| {
        Error::Config(format!(
            "reading template {}: {}",
            path.display(),
            reason::io(&e)
        ))
    })?;
    let source = Source::of(bytes, &name, syntax);
    let executable = fs::metadata(path)
        .map(|meta| meta.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    Ok(Job {
        name,
        source,
        target,
        executable,
    })
}

async fn read_stdin() -> Result<Vec<u8>> {
    // On a blocking thread, so that a signal still ends a run whose stdin never closes.
    let bytes = tokio::task::spawn_blocking(|| {
        let mut bytes = Vec::new();
        io::stdin().lock().read_to_end(&mut bytes).map(|_| bytes)
    })
    .await
    .map_err(|e| Error::Failed(format!("reading the template from stdin: {e}")))?
    .map_err(|e| {
        Error::Config(format!(
            "reading the template from stdin: {}",
            reason::io(&e)
        ))
    })?;
    Ok(bytes)
}

/// Walks a directory of templates (following symlinks, as a ConfigMap volume needs).
struct Walk {
    jobs: Vec<Job>,
    /// Every directory of the output tree, so that empty ones are mirrored too.
    dirs: Vec<PathBuf>,
    /// Output path → the template that renders it, to catch `a` beside `a.j2`.
    outputs: HashMap<PathBuf, String>,
    /// (device, inode) of the directories being walked, to stop at a symlink loop.
    ancestors: Vec<(u64, u64)>,
    /// (device, inode) of DEST, when it exists: output inside SRC is not a template.
    dest: Option<(u64, u64)>,
    syntax: Syntax,
}

impl Walk {
    fn dir(&mut self, src: &Path, dest: &Path) -> Result<()> {
        let unreadable = |e: io::Error| {
            Error::Config(format!(
                "reading the template directory {}: {}",
                src.display(),
                reason::io(&e)
            ))
        };
        let mut entries = fs::read_dir(src)
            .map_err(unreadable)?
            .map(|entry| entry.map(|e| e.file_name()))
            .collect::<io::Result<Vec<_>>>()
            .map_err(unreadable)?;
        entries.sort();
        for name in entries {
            // `..data`, `..2024_01_01_…`: the machinery of a Kubernetes ConfigMap or
            // Secret volume; the files beside them are symlinks into it.
            if name.as_bytes().starts_with(b"..") {
                continue;
            }
            // A Jinja partial (`_helpers.j2`, `_partials/`): included, never rendered alone.
            if self.syntax == Syntax::Jinja && name.as_bytes().starts_with(PARTIAL_PREFIX) {
                report::debug(
                    "template.partial",
                    format!(
                        "{}: a partial, not rendered on its own",
                        src.join(&name).display()
                    ),
                );
                continue;
            }
            let path = src.join(&name);
            let meta = fs::metadata(&path).map_err(|e| {
                let broken = fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink());
                let reason = if broken {
                    "a symlink to nothing".to_owned()
                } else {
                    reason::io(&e)
                };
                Error::Config(format!("template {}: {reason}", path.display()))
            })?;
            if meta.is_dir() {
                let id = (meta.dev(), meta.ino());
                if self.dest == Some(id) {
                    continue;
                }
                if self.ancestors.contains(&id) {
                    return Err(Error::Config(format!(
                        "template directory {}: a symlink loop",
                        path.display()
                    )));
                }
                let sub = dest.join(&name);
                self.dirs.push(sub.clone());
                self.ancestors.push(id);
                self.dir(&path, &sub)?;
                self.ancestors.pop();
            } else if meta.is_file() {
                let output = dest.join(output_name(&name, self.syntax));
                let shown = path.display().to_string();
                if let Some(other) = self.outputs.insert(output.clone(), shown.clone()) {
                    return Err(Error::Config(format!(
                        "templates {other} and {shown} would both render to {}",
                        output.display()
                    )));
                }
                self.jobs.push(read_template(
                    &path,
                    shown,
                    Target::File(output),
                    self.syntax,
                )?);
            } else {
                report::warn(
                    "template.skipped",
                    format!("skipping {}: not a regular file", path.display()),
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_names_drop_j2() {
        let name = |s: &str| {
            output_name(std::ffi::OsStr::new(s), Syntax::Jinja)
                .into_string()
                .unwrap()
        };
        assert_eq!(name("app.conf.j2"), "app.conf");
        assert_eq!(name("app.conf"), "app.conf");
        assert_eq!(name(".j2"), ".j2");
        assert_eq!(name("nginx.j2.conf"), "nginx.j2.conf");
        let kept = output_name(std::ffi::OsStr::new("app.conf.j2"), Syntax::Envsubst);
        assert_eq!(kept, "app.conf.j2");
    }
}
