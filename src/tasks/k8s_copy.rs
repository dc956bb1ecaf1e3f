//! k8s-copy: the ConfigMaps and Secrets of the pod's namespace as files in a directory, one
//! per key, the way a configMap or secret volume projects them, for what a volume cannot
//! do (objects chosen by label, the k8s-sidecar LIST pattern; several objects merged into
//! one directory; a copy the main container may edit) and in place of `kubectl get cm …
//! -o jsonpath | base64 -d > file` in an image that has no kubectl or shell.
//!
//! The objects are waited for through the one wait engine (one GET, or one LIST for a
//! selector, per attempt; 404 and a selector that matches nothing are "not yet"). DEST is
//! then written through the staged install git-clone and extract use
//! ([`crate::tasks::staged_install`]): it holds the old copy or the complete new one, also
//! as the root of a volume, and a re-run that would write the same files leaves DEST as it
//! is. The one entry initbox adds is the record that makes the install safe
//! (`.initbox-k8s-copy/copied.json`: which objects, which files, their modes — never a
//! value); every other entry of DEST is a key.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::atomic_file;
use crate::cli::Invalid;
use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::k8s::resource::{self, CONFIGMAP, Kind, SECRET, Target};
use crate::k8s::{Access, Api, KubeArgs, query_escape};
use crate::reason;
use crate::report;
use crate::resolve::ResolverArgs;
use crate::tasks::staged_install::{Destination, Found, IGNORED_ENTRIES, Layout, remove_staging};
use crate::wait::{self, Attempt, Probe, RetryArgs};

/// The directory in DEST that records what was copied (installed last: its presence says
/// DEST is complete).
pub const RECORD_DIR: &str = ".initbox-k8s-copy";
/// The record inside [`RECORD_DIR`].
const RECORD: &str = "copied.json";
/// The staging directory inside an existing DEST.
const INNER_STAGING: &str = ".initbox-k8s-copy.staging";
/// Names a key may not take: they are initbox's own.
const RESERVED: &[&str] = &[RECORD_DIR, INNER_STAGING];

static LAYOUT: Layout = Layout {
    inner_staging: INNER_STAGING,
    sibling_suffix: "initbox-k8s-copy",
    keystone: RECORD_DIR,
    marker: RECORD,
    cleared: "install-cleared",
};

/// Copy ConfigMaps and Secrets into a directory, one file per key, atomically.
#[derive(Debug, Clone, clap::Args)]
pub struct K8sCopyArgs {
    /// OBJECT... DEST. OBJECT: configmap/NAME, secret/NAME (cm/NAME), or configmap /
    /// secret with --selector (every object it matches); their keys must not collide.
    /// DEST, the last: the directory the keys become files in, created when missing; may be
    /// a mounted volume; its old content is replaced. In a pipeline: `operands: [OBJECT...,
    /// DEST]`.
    #[arg(value_name = "OBJECT", required = true, num_args = 1..)]
    pub operands: Vec<String>,
    /// Label selector for an OBJECT given as a kind alone (app=web,tier!=db).
    #[arg(short = 'l', long, env = "INITBOX_SELECTOR", value_name = "SELECTOR",
          value_parser = resource::parse_selector)]
    pub selector: Option<String>,
    /// Copy only this key, to this path below DEST (subdirectories are made), as a
    /// volume's `items` does; repeatable, or comma-separated. A key no object has is an
    /// error.
    #[arg(long = "items", env = "INITBOX_ITEMS", value_name = "KEY=PATH",
          value_parser = Item::parse, value_delimiter = ',')]
    pub items: Vec<Item>,
    /// The mode of every file, octal [default: 0644 for a ConfigMap's keys, 0600 for a
    /// Secret's].
    #[arg(long, env = "INITBOX_MODE", value_name = "MODE", value_parser = atomic_file::parse_mode)]
    pub mode: Option<u32>,
    /// The mode of the directories k8s-copy makes: those of --items paths, and DEST when it
    /// does not exist (an existing DEST, such as a volume's root, keeps its own).
    #[arg(long, env = "INITBOX_DIR_MODE", value_name = "MODE", default_value = "0755",
          value_parser = atomic_file::parse_mode)]
    pub dir_mode: u32,
    /// Replace what DEST holds even when k8s-copy did not put it there.
    #[arg(long, env = "INITBOX_FORCE")]
    pub force: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[command(flatten)]
    pub retry: RetryArgs,
    #[command(flatten)]
    pub resolver: ResolverArgs,
    #[command(flatten)]
    pub then: Then,
}

/// One `--items KEY=PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub path: PathBuf,
}

impl Item {
    pub fn parse(text: &str) -> std::result::Result<Item, String> {
        let (key, path) = text
            .split_once('=')
            .ok_or_else(|| format!("'{text}' is not KEY=PATH"))?;
        check_key(key).map_err(|reason| format!("'{text}': {reason}"))?;
        let path = Path::new(path);
        let mut parts = 0;
        for component in path.components() {
            match component {
                Component::Normal(name) => {
                    let name = name.to_string_lossy();
                    // At DEST's top, a volume's lost+found is kept and initbox's names are
                    // its own: neither can be a file of the copy.
                    if parts == 0
                        && (RESERVED.contains(&name.as_ref())
                            || IGNORED_ENTRIES.contains(&name.as_ref()))
                    {
                        return Err(format!(
                            "'{text}': {name} at the top of DEST is not for the copy's files"
                        ));
                    }
                    parts += 1;
                }
                Component::CurDir => {}
                _ => {
                    return Err(format!(
                        "'{text}': the path must stay inside DEST (relative, without '..')"
                    ));
                }
            }
        }
        if parts == 0 || text.ends_with('/') {
            return Err(format!("'{text}': the path must name a file below DEST"));
        }
        let path: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        Ok(Item {
            key: key.to_owned(),
            path,
        })
    }
}

/// A key as a file name: what Kubernetes allows in a key (`[-._a-zA-Z0-9]+`, at most 253)
/// minus what would not stay a file inside DEST (`.`, `..`, a leading `..`, which the API
/// server refuses too, but a copy must not trust the server for its filesystem's sake).
pub fn check_key(key: &str) -> std::result::Result<(), String> {
    let shaped = !key.is_empty()
        && key.len() <= 253
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if !shaped || key.starts_with("..") || key == "." {
        return Err(format!(
            "{key:?} is not a key that can be a file name (letters, digits, '-', '_' and '.', not '.' or '..' or starting with '..')"
        ));
    }
    if RESERVED.contains(&key) {
        return Err(format!("{key:?} is initbox's own name in DEST"));
    }
    Ok(())
}

impl crate::cli::Task for K8sCopyArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[OsString] {
        &self.then.command
    }

    fn validate(&self) -> std::result::Result<(), Invalid> {
        let invalid = |arg: &str, value: String, reason: &str| Invalid {
            arg: arg.into(),
            value,
            reason: reason.into(),
        };
        let (objects, _) = self.split()?;
        for target in &objects {
            if target.kind != &CONFIGMAP && target.kind != &SECRET {
                return Err(invalid(
                    "<OBJECT>",
                    target.to_string(),
                    "k8s-copy copies configmaps and secrets",
                ));
            }
            target.check_selection(self.selector.as_ref(), "<OBJECT>")?;
        }
        // Two items may copy one key twice, never write one path twice or make a file of
        // another's directory.
        let mut paths = BTreeSet::new();
        for item in &self.items {
            let value = format!("{}={}", item.key, item.path.display());
            if !paths.insert(item.path.clone()) {
                return Err(invalid(
                    "--items <KEY=PATH>",
                    value,
                    "another --items writes the same path",
                ));
            }
        }
        for item in &self.items {
            if let Some(file) = item.path.ancestors().skip(1).find(|a| paths.contains(*a)) {
                return Err(invalid(
                    "--items <KEY=PATH>",
                    format!("{}={}", item.key, item.path.display()),
                    &format!(
                        "another --items writes {} as a file, which this path needs as a directory",
                        file.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl K8sCopyArgs {
    /// The OBJECTs, parsed, and DEST.
    fn split(&self) -> std::result::Result<(Vec<Target>, PathBuf), Invalid> {
        let (dest, objects) = match self.operands.split_last() {
            Some((dest, objects)) if !objects.is_empty() => (dest, objects),
            _ => {
                return Err(Invalid {
                    arg: "<OBJECT>... <DEST>".into(),
                    value: self.operands.join(" "),
                    reason: "name at least one OBJECT, then DEST".into(),
                });
            }
        };
        let objects = objects
            .iter()
            .map(|text| {
                resource::parse_target(text).map_err(|reason| Invalid {
                    arg: "<OBJECT>".into(),
                    value: text.clone(),
                    reason,
                })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if dest.is_empty() {
            return Err(Invalid {
                arg: "<DEST>".into(),
                value: String::new(),
                reason: "DEST must name a directory".into(),
            });
        }
        Ok((objects, PathBuf::from(dest)))
    }
}

pub async fn run(args: K8sCopyArgs) -> Result<()> {
    let (objects, dest) = args
        .split()
        .map_err(|invalid| Error::Usage(invalid.to_string()))?;
    let destination = Destination::with_layout(&dest, &LAYOUT);
    // Before the wait: a DEST that can never be written is reported now, not once the
    // objects exist.
    destination
        .check_writable()
        .map_err(|e| dest_error("copy into", &dest, &e))?;
    let attempt_timeout = args.retry.attempt_timeout.get();
    let api = args.kube.connect(&args.resolver, attempt_timeout)?;
    let options = args.retry.options().bounded_by_probe();
    let probes: Vec<CopyProbe> = objects
        .iter()
        .map(|target| CopyProbe {
            label: match &args.selector {
                Some(selector) if target.name.is_none() => {
                    format!("{target} -l {selector} in namespace {}", api.namespace())
                }
                _ => format!("{target} in namespace {}", api.namespace()),
            },
            api: api.clone(),
            target: target.clone(),
            selector: args.selector.clone(),
        })
        .collect();
    let found = wait::wait_for_all("k8s", probes, options).await?;
    let namespace = api.namespace().to_owned();
    // An object named twice (cm/app, and a selector that matches it too) is copied once.
    let mut seen = BTreeSet::new();
    let found: Vec<(&'static Kind, Value)> = found
        .into_iter()
        .flat_map(|ready| ready.output)
        .filter(|(kind, object)| {
            seen.insert((
                kind.name,
                object["metadata"]["name"].as_str().map(str::to_owned),
            ))
        })
        .collect();
    let plan = plan(&found, &args, &dest, &namespace)?;
    crate::volume::blocking(move || install(&destination, &plan, args.force)).await
}

/// Waits for one OBJECT argument: one GET (a named object) or one LIST (a selector).
struct CopyProbe {
    api: Api,
    target: Target,
    label: String,
    selector: Option<String>,
}

impl Probe for CopyProbe {
    /// The objects found, as the API server sent them, with their kind (a LIST's items do
    /// not say it).
    type Output = Vec<(&'static Kind, Value)>;

    fn target(&self) -> &str {
        &self.label
    }

    fn ready_phrase(&self) -> String {
        format!("{} found", self.label)
    }

    fn may_overlap(&self) -> bool {
        true
    }

    async fn attempt(&self) -> Attempt<Vec<(&'static Kind, Value)>> {
        let kind = self.target.kind;
        let namespace = self.api.namespace();
        let collection = kind.collection(namespace);
        let (path, verb) = match &self.target.name {
            Some(name) => (format!("{collection}/{name}"), "get"),
            None => (
                format!(
                    "{collection}?labelSelector={}",
                    query_escape(self.selector.as_deref().unwrap_or_default())
                ),
                "list",
            ),
        };
        let access = Access {
            verb,
            kind,
            namespace,
        };
        let answer = match self.api.get(&path, access).await {
            Ok(answer) => answer,
            Err(failure) => return failure.into(),
        };
        let objects = match (&self.target.name, answer) {
            (_, None) => return Attempt::NotYet("does not exist yet".into()),
            (Some(_), Some(object)) => vec![object],
            (None, Some(list)) => {
                let mut items = list["items"].as_array().cloned().unwrap_or_default();
                if items.is_empty() {
                    return Attempt::NotYet("no object matches yet".into());
                }
                // The API server lists by name already; sorted here so that the order of
                // the files never depends on it.
                items.sort_by(|a, b| {
                    a["metadata"]["name"]
                        .as_str()
                        .cmp(&b["metadata"]["name"].as_str())
                });
                items
            }
        };
        let detail = objects
            .iter()
            .map(|object| {
                let keys = keys_of(object);
                format!(
                    "{} ({} key{})",
                    object["metadata"]["name"].as_str().unwrap_or("?"),
                    keys,
                    if keys == 1 { "" } else { "s" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        Attempt::Ready {
            detail,
            output: objects.into_iter().map(|object| (kind, object)).collect(),
        }
    }
}

fn keys_of(object: &Value) -> usize {
    ["data", "binaryData"]
        .iter()
        .filter_map(|field| object[field].as_object())
        .map(|map| map.len())
        .sum()
}

/// One file DEST is to hold.
#[derive(Debug, Clone)]
struct Planned {
    /// Below DEST.
    path: PathBuf,
    bytes: Vec<u8>,
    mode: u32,
    /// `configmap/app`, for messages and the record.
    from: String,
    key: String,
}

/// What an install writes: the files and the record that describes them.
#[derive(Debug)]
struct Plan {
    files: Vec<Planned>,
    record: Record,
    /// Of the directories made.
    dir_mode: u32,
}

/// What DEST/.initbox-k8s-copy/copied.json says: where each file came from, never what
/// it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Record {
    namespace: String,
    objects: Vec<String>,
    files: Vec<RecordedFile>,
    /// Of the directories of --items paths.
    dir_mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct RecordedFile {
    path: String,
    mode: String,
    from: String,
    key: String,
}

/// The files the objects make: each key decoded and checked, collisions refused.
fn plan(
    objects: &[(&'static Kind, Value)],
    args: &K8sCopyArgs,
    dest: &Path,
    namespace: &str,
) -> Result<Plan> {
    // key -> (object, bytes, mode), in the order the objects came.
    let mut keys: BTreeMap<String, (String, Vec<u8>, u32)> = BTreeMap::new();
    let wanted: Option<BTreeSet<&str>> =
        (!args.items.is_empty()).then(|| args.items.iter().map(|item| item.key.as_str()).collect());
    let mut names = Vec::new();
    for &(kind, ref object) in objects {
        let is_secret = kind == &SECRET;
        let label = format!(
            "{}/{}",
            kind.name,
            object["metadata"]["name"].as_str().unwrap_or("?")
        );
        names.push(label.clone());
        let mode = args.mode.unwrap_or(if is_secret { 0o600 } else { 0o644 });
        // ConfigMap `data` is text as is; its `binaryData` and a Secret's `data` are base64.
        let fields: &[(&str, bool)] = if is_secret {
            &[("data", true)]
        } else {
            &[("data", false), ("binaryData", true)]
        };
        for &(field, encoded) in fields {
            let Some(map) = object[field].as_object() else {
                continue;
            };
            for (key, value) in map {
                if wanted
                    .as_ref()
                    .is_some_and(|wanted| !wanted.contains(key.as_str()))
                {
                    continue;
                }
                check_key(key).map_err(|reason| {
                    Error::Failed(format!(
                        "cannot copy {label} in namespace {namespace}: its key {reason}"
                    ))
                })?;
                let text = value.as_str().unwrap_or_default();
                let bytes = if encoded {
                    base64::engine::general_purpose::STANDARD
                        .decode(text)
                        .map_err(|_| {
                            // Never the value: it may be a secret's.
                            Error::Failed(format!(
                                "cannot copy {label} in namespace {namespace}: the value of {key:?} in {field} is not base64"
                            ))
                        })?
                } else {
                    text.as_bytes().to_vec()
                };
                if is_secret {
                    crate::redact::conceal(&String::from_utf8_lossy(&bytes));
                }
                if let Some((first, _, _)) = keys.get(key) {
                    return Err(Error::Failed(format!(
                        "cannot copy into {}: {first} and {label} in namespace {namespace} both have the key {key:?}; copy them into separate directories, or choose keys with --items",
                        dest.display()
                    )));
                }
                keys.insert(key.clone(), (label.clone(), bytes, mode));
            }
        }
    }
    let mut files = Vec::new();
    if args.items.is_empty() {
        for (key, (from, bytes, mode)) in keys {
            files.push(Planned {
                path: PathBuf::from(&key),
                bytes,
                mode,
                from,
                key,
            });
        }
    } else {
        for item in &args.items {
            let Some((from, bytes, mode)) = keys.get(&item.key) else {
                // As a volume with such an item fails to mount: the copy is not complete.
                return Err(Error::Failed(format!(
                    "cannot copy the key {:?} (--items): none of {} in namespace {namespace} has it",
                    item.key,
                    names.join(", ")
                )));
            };
            files.push(Planned {
                path: item.path.clone(),
                bytes: bytes.clone(),
                mode: *mode,
                from: from.clone(),
                key: item.key.clone(),
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
    }
    let record = Record {
        namespace: namespace.to_owned(),
        objects: names,
        files: files
            .iter()
            .map(|file| RecordedFile {
                path: file.path.to_string_lossy().into_owned(),
                mode: format!("{:04o}", file.mode),
                from: file.from.clone(),
                key: file.key.clone(),
            })
            .collect(),
        dir_mode: format!("{:04o}", args.dir_mode),
    };
    Ok(Plan {
        files,
        record,
        dir_mode: args.dir_mode,
    })
}

/// Whether DEST holds exactly the planned files already: the same record, each file a
/// regular file (reached through real directories, never a link) with the same mode and
/// bytes, and nothing else at its top.
fn holds(dest: &Path, plan: &Plan, record: &Record) -> bool {
    if *record != plan.record {
        return false;
    }
    let mut expected: BTreeSet<OsString> = plan
        .files
        .iter()
        .filter_map(|file| file.path.components().next())
        .map(|c| c.as_os_str().to_owned())
        .collect();
    expected.insert(RECORD_DIR.into());
    let Ok(entries) = fs::read_dir(dest) else {
        return false;
    };
    for entry in entries {
        let Ok(entry) = entry else { return false };
        let name = entry.file_name();
        if !expected.contains(&name) && !IGNORED_ENTRIES.contains(&name.to_string_lossy().as_ref())
        {
            return false;
        }
    }
    plan.files.iter().all(|file| same_file(dest, file))
}

fn same_file(dest: &Path, file: &Planned) -> bool {
    let mut at = dest.to_owned();
    let parts: Vec<_> = file.path.components().collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        let Ok(meta) = at.symlink_metadata() else {
            return false;
        };
        let last = i + 1 == parts.len();
        if (last && !meta.file_type().is_file()) || (!last && !meta.is_dir()) {
            return false;
        }
        if last && (meta.mode() & 0o7777 != file.mode || meta.len() != file.bytes.len() as u64) {
            return false;
        }
    }
    let mut content = Vec::with_capacity(file.bytes.len());
    fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&at)
        .and_then(|mut f| f.read_to_end(&mut content))
        .is_ok_and(|_| content == file.bytes)
}

fn install(destination: &Destination, plan: &Plan, force: bool) -> Result<()> {
    let dest = destination.path();
    destination
        .recover()
        .map_err(|e| dest_error("finish the interrupted copy into", dest, &e))?;
    match LAYOUT
        .inspect(dest)
        .map_err(|e| dest_error("read", dest, &e))?
    {
        Found::Recorded(record) if holds(dest, plan, &record) => {
            report::info(
                "k8s-copy.unchanged",
                format!(
                    "k8s-copy: {} already holds the {} file{} of {}; nothing to do",
                    dest.display(),
                    plan.files.len(),
                    plural(plan.files.len()),
                    plan.record.objects.join(", ")
                ),
            );
            return Ok(());
        }
        Found::Other if !force => {
            return Err(Error::Failed(format!(
                "{} holds files that k8s-copy did not put there; --force replaces them",
                dest.display()
            )));
        }
        _ => {}
    }
    let staging = destination
        .staging()
        .map_err(|e| dest_error("create a staging directory for", dest, &e))?;
    let written = (if staging == destination.inner_staging() {
        Ok(())
    } else {
        // Renamed into DEST's place: its mode is DEST's.
        fs::set_permissions(&staging, fs::Permissions::from_mode(plan.dir_mode))
    })
    .and_then(|()| stage(&staging, plan))
    .and_then(|()| destination.install(&staging));
    if let Err(error) = written {
        remove_staging(&staging);
        return Err(dest_error("write the copy into", dest, &error));
    }
    for file in &plan.files {
        report::debug(
            "k8s-copy.file",
            format!(
                "{} key {:?} -> {} ({} bytes, mode {:04o})",
                file.from,
                file.key,
                dest.join(&file.path).display(),
                file.bytes.len(),
                file.mode
            ),
        );
    }
    let bytes: usize = plan.files.iter().map(|f| f.bytes.len()).sum();
    report::Event::new(
        report::Level::Info,
        "k8s-copy.done",
        format!(
            "k8s-copy: {} file{} ({bytes} bytes) from {} into {}",
            plan.files.len(),
            plural(plan.files.len()),
            plan.record.objects.join(", "),
            dest.display()
        ),
    )
    .field("files", plan.files.len())
    .field("bytes", bytes)
    .emit();
    Ok(())
}

/// Writes the planned files and then the record (the marker: from then on the staged
/// tree is complete) into a fresh staging directory.
fn stage(staging: &Path, plan: &Plan) -> io::Result<()> {
    for file in &plan.files {
        let path = staging.join(&file.path);
        if let Some(parent) = path.parent() {
            make_dirs(staging, parent, plan.dir_mode)?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        io::Write::write_all(&mut out, &file.bytes)?;
        // The mode as asked, whatever the umask.
        out.set_permissions(fs::Permissions::from_mode(file.mode))?;
    }
    let json = serde_json::to_vec_pretty(&plan.record).map_err(io::Error::other)?;
    fs::create_dir(staging.join(RECORD_DIR))?;
    atomic_file::write(&staging.join(RECORD_DIR).join(RECORD), &json, Some(0o644))
}

/// The directories from `staging` down to `dir`, each with `mode` whatever the umask.
fn make_dirs(staging: &Path, dir: &Path, mode: u32) -> io::Result<()> {
    let mut at = staging.to_owned();
    for part in dir
        .strip_prefix(staging)
        .map_err(io::Error::other)?
        .components()
    {
        at.push(part);
        match fs::DirBuilder::new().mode(mode).create(&at) {
            Ok(()) => fs::set_permissions(&at, fs::Permissions::from_mode(mode))?,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn dest_error(action: &str, dest: &Path, error: &io::Error) -> Error {
    Error::Failed(format!(
        "cannot {action} {}: {}",
        dest.display(),
        reason::io(error)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_that_would_leave_dest_or_take_initbox_names_are_refused() {
        for bad in [
            ".",
            "..",
            "..data",
            "a/b",
            "/etc",
            "",
            "a b",
            RECORD_DIR,
            INNER_STAGING,
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        for good in ["app.conf", ".env", "tls.crt", "a..b", "A_b-1"] {
            assert!(check_key(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn items_stay_inside_dest() {
        assert_eq!(
            Item::parse("app.conf=conf/app.conf").unwrap().path,
            PathBuf::from("conf/app.conf")
        );
        assert_eq!(Item::parse("k=./x").unwrap().path, PathBuf::from("x"));
        for bad in [
            "k",
            "k=",
            "k=/etc/passwd",
            "k=../x",
            "k=a/../../x",
            "k=.",
            "k=a/",
            "../k=x",
            "k=.initbox-k8s-copy/x",
            "k=lost+found/x",
        ] {
            assert!(Item::parse(bad).is_err(), "{bad}");
        }
    }

    fn args(items: &[&str]) -> K8sCopyArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: K8sCopyArgs,
        }
        let mut argv = vec!["k8s-copy", "configmap/a", "/d"];
        for item in items {
            argv.extend(["--items", item]);
        }
        <Cli as clap::Parser>::parse_from(argv).args
    }

    #[test]
    fn a_key_an_api_server_should_have_refused_is_refused_here_too() {
        // A compromised or buggy API server, or a proxy in between: the key is still checked.
        let object = json!({"metadata": {"name": "a"}, "data": {"..": "x"}});
        let error = plan(&[(&CONFIGMAP, object)], &args(&[]), Path::new("/d"), "ns")
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("configmap/a in namespace ns") && error.contains("\"..\""),
            "{error}"
        );
    }

    #[test]
    fn the_same_key_in_two_objects_is_refused_naming_both() {
        let a = json!({"metadata": {"name": "a"}, "data": {"k": "1"}});
        let b = json!({"metadata": {"name": "b"}, "data": {"k": "Mg=="}});
        let error = plan(
            &[(&CONFIGMAP, a), (&SECRET, b)],
            &args(&[]),
            Path::new("/d"),
            "ns",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("configmap/a and secret/b") && error.contains("\"k\""),
            "{error}"
        );
    }

    #[test]
    fn secrets_are_decoded_and_private_configmaps_as_is() {
        let a = json!({"metadata": {"name": "a"},
                       "data": {"t": "text"}, "binaryData": {"b": "AAH/"}});
        let s = json!({"metadata": {"name": "s"}, "data": {"p": "cGFzcw=="}});
        let plan = plan(
            &[(&CONFIGMAP, a), (&SECRET, s)],
            &args(&[]),
            Path::new("/d"),
            "ns",
        )
        .unwrap();
        let files: Vec<_> = plan
            .files
            .iter()
            .map(|f| (f.path.to_str().unwrap(), f.bytes.clone(), f.mode))
            .collect();
        assert_eq!(
            files,
            [
                ("b", vec![0, 1, 255], 0o644),
                ("p", b"pass".to_vec(), 0o600),
                ("t", b"text".to_vec(), 0o644)
            ]
        );
    }

    #[test]
    fn a_listed_key_no_object_has_is_an_error() {
        let a = json!({"metadata": {"name": "a"}, "data": {"k": "1"}});
        let error = plan(
            &[(&CONFIGMAP, a)],
            &args(&["missing=x"]),
            Path::new("/d"),
            "ns",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("\"missing\"") && error.contains("configmap/a"),
            "{error}"
        );
    }
}
