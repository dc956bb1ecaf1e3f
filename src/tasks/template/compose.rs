//! Jinja composition (`include`, `import`, `from … import`, `extends`) confined to the
//! template roots: the directory of the template (SRC itself for a directory of templates)
//! and each `--templates DIR`, searched in that order as Jinja2's `FileSystemLoader` searches
//! its paths. A name is relative to the roots, never to the including template (Jinja2's
//! rule), and may not leave them: `..`, an absolute path, or a symbolic link inside a root
//! that resolves outside it are refused, so a template cannot read `/etc/shadow` or a
//! mounted Secret it was not given.
//!
//! The check is on the canonical path (every symlink resolved) against the canonical root:
//! a ConfigMap volume's `app.j2 -> ..data/app.j2` links stay inside and are followed.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use minijinja::{Environment, Error as JinjaError};

use crate::exit::{Error, Result};
use crate::reason;

/// The directories templates may load other templates from, and where each loaded name
/// was found (so that messages name the partial's file).
pub struct Roots {
    /// (the root as given, its canonical path)
    dirs: Vec<(PathBuf, PathBuf)>,
    found: Mutex<HashMap<String, PathBuf>>,
}

impl Roots {
    /// The roots for SRC (a file: its directory; a directory: itself; stdin: none) and the
    /// `--templates` directories, each of which must be a readable directory.
    pub fn new(src: &Path, src_is_dir: bool, templates: &[PathBuf]) -> Result<Arc<Roots>> {
        let mut dirs = Vec::new();
        if !super::source::is_dash(src) {
            let own = if src_is_dir {
                src.to_owned()
            } else {
                match src.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
                    _ => PathBuf::from("."),
                }
            };
            // Read already; a failure here would have been reported naming SRC.
            if let Ok(canonical) = fs::canonicalize(&own) {
                dirs.push((own, canonical));
            }
        }
        for dir in templates {
            let canonical = fs::canonicalize(dir)
                .and_then(|canonical| match fs::metadata(&canonical)?.is_dir() {
                    true => Ok(canonical),
                    false => Err(io::Error::from(io::ErrorKind::NotADirectory)),
                })
                .map_err(|e| {
                    Error::Config(format!("--templates {}: {}", dir.display(), reason::io(&e)))
                })?;
            dirs.push((dir.clone(), canonical));
        }
        Ok(Arc::new(Roots {
            dirs,
            found: Mutex::new(HashMap::new()),
        }))
    }

    /// Lets `env` load templates from the roots.
    pub fn install(self: &Arc<Roots>, env: &mut Environment<'static>) {
        let roots = Arc::clone(self);
        env.set_loader(move |name| roots.load(name));
    }

    /// The file a loaded template came from, for messages.
    pub fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The template `name`, from the first root that has it; `None` when none has it (the
    /// engine then says the template was not found).
    fn load(&self, name: &str) -> std::result::Result<Option<String>, JinjaError> {
        let refuse = |why: &str| {
            super::engine::own_error(format!(
                "template \"{name}\" is refused: {why}; templates load only from {}",
                self.shown()
            ))
        };
        if name.starts_with('/') {
            return Err(refuse("an absolute path"));
        }
        let mut relative = PathBuf::new();
        for segment in name.split('/') {
            match segment {
                "" | "." => {}
                ".." => return Err(refuse("`..` leaves the template roots")),
                _ if segment.contains('\0') => return Err(refuse("a NUL byte in the name")),
                _ => relative.push(segment),
            }
        }
        if relative.as_os_str().is_empty() {
            return Ok(None);
        }
        for (_, root) in &self.dirs {
            let candidate = root.join(&relative);
            let canonical = match fs::canonicalize(&candidate) {
                Ok(canonical) => canonical,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // A symlink to nothing is not a template; a dangling link is no escape.
                    continue;
                }
                Err(e) => return Err(read_error(name, &candidate, &e)),
            };
            if !canonical.starts_with(root) {
                return Err(refuse(&format!(
                    "{} is a symbolic link to {}, outside the template roots",
                    candidate.display(),
                    canonical.display()
                )));
            }
            if canonical.is_dir() {
                continue;
            }
            let bytes = fs::read(&canonical).map_err(|e| read_error(name, &candidate, &e))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                super::engine::own_error(format!(
                    "template \"{name}\" ({}) is not UTF-8 text",
                    candidate.display()
                ))
            })?;
            self.found
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.to_owned(), candidate);
            return Ok(Some(text));
        }
        Ok(None)
    }

    fn shown(&self) -> String {
        if self.dirs.is_empty() {
            return "--templates directories (none given)".into();
        }
        self.dirs
            .iter()
            .map(|(dir, _)| dir.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn read_error(name: &str, path: &Path, error: &io::Error) -> JinjaError {
    super::engine::own_error(format!(
        "reading template \"{name}\" ({}): {}",
        path.display(),
        reason::io(error)
    ))
}
