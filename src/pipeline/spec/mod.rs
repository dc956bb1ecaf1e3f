//! The pipeline file, checked completely before anything runs.
//!
//! A step's task is turned into the command line the user would have typed
//! (`initbox wait-for-tcp --timeout=2m mydb:5432`) and parsed by the very clap definition
//! the CLI uses, so a step holds the same `Command` value, with the same defaults and the
//! same validation, as the command run by hand: there is no second definition of any task
//! to drift. The keys a task accepts are read from that definition too (long flag names,
//! and the names of positional arguments).
//!
//! Every problem is reported with file, line and column, all of them at once.
//!
//! Here: the pipeline's types and its top-level keys (`env:`, `restartPolicy`, `backoff`,
//! …); `steps` reads the list of steps and their graph of `needs`; `argv` turns one step's
//! task into the command line clap parses.

mod argv;
mod steps;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use super::yaml::{self, At, Node, Value};
use crate::cli::Command;
use crate::duration::Duration;
use crate::exit::Error;
use crate::expand;

pub use argv::task_names;

/// How a failed step is treated (Kubernetes `restartPolicy`; `Always` means `OnFailure`
/// for init containers, as in Kubernetes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    OnFailure,
}

/// The retry delay of a failed step: 0, then `initial`, doubling up to `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: StdDuration,
    pub max: StdDuration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: StdDuration::from_secs(1),
            max: StdDuration::from_secs(60),
        }
    }
}

#[derive(Debug)]
pub struct Pipeline {
    pub restart_policy: RestartPolicy,
    pub backoff: Backoff,
    pub active_deadline: Option<StdDuration>,
    pub status_file: Option<PathBuf>,
    /// The file's `env:` map, expanded: part of every step's environment.
    pub env: Vec<(String, String)>,
    pub steps: Vec<Step>,
}

#[derive(Debug)]
pub struct Step {
    pub name: String,
    /// The task's command name (`wait-for-tcp`).
    pub task: String,
    pub command: Command,
    /// Indices of the steps that must succeed first.
    pub needs: Vec<usize>,
    /// At most this many restarts under OnFailure (`None`: until the deadline).
    pub retries: Option<u32>,
    /// A bound on one run of the step.
    pub timeout: Option<StdDuration>,
}

const TOP_KEYS: &[&str] = &[
    "restartPolicy",
    "backoff",
    "activeDeadline",
    "statusFile",
    "env",
    "steps",
];

/// Collects every problem in the file before giving up.
struct Problems {
    file: String,
    list: Vec<String>,
    /// What a check could not verify because a variable is not set where it runs.
    warnings: Vec<String>,
}

impl Problems {
    fn add(&mut self, at: At, message: impl Into<String>) {
        self.list
            .push(format!("{}:{at}: {}", self.file, message.into()));
    }

    fn warn(&mut self, at: At, message: impl Into<String>) {
        self.warnings
            .push(format!("{}:{at}: {}", self.file, message.into()));
    }

    fn into_error(self) -> Option<Error> {
        match self.list.len() {
            0 => None,
            1 => Some(Error::Config(
                self.list.into_iter().next().unwrap_or_default(),
            )),
            n => Some(Error::Config(format!(
                "{n} problems in the pipeline:\n  {}",
                self.list.join("\n  ")
            ))),
        }
    }
}

/// Reads and validates a pipeline to run it; `file` names it in messages; `lookup` gives
/// the process environment for `$(VAR)`, where every variable must be defined.
pub fn load(
    file: &str,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Pipeline, Error> {
    load_with(file, text, &lookup, None).map(|checked| checked.pipeline)
}

/// A pipeline as `run --check` sees it, away from the pod that will run it.
pub struct Checked {
    pub pipeline: Pipeline,
    /// The variables used but not set here (`$(POD_IP)`: the pod defines them).
    pub unset: BTreeSet<String>,
    /// Values that could not be verified because they use such a variable.
    pub warnings: Vec<String>,
}

/// What an unset variable stands for while checking: a value every kind of flag accepts
/// (a host, a port, a number, a duration, part of a URL or a path), so the rest of the
/// step is still checked.
const PLACEHOLDER: &str = "1";

/// Validates a pipeline's structure for `run --check`: a variable that is not set here is
/// reported among the `unset`, not as an error, since a CI job does not have the pod's
/// `$(POD_IP)`; a value that cannot be checked without it is a warning.
pub fn check(
    file: &str,
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Checked, Error> {
    let unset = RefCell::new(BTreeSet::new());
    load_with(file, text, &lookup, Some(&unset))
}

fn load_with(
    file: &str,
    text: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset: Option<&RefCell<BTreeSet<String>>>,
) -> Result<Checked, Error> {
    let root = yaml::parse(text).map_err(|error| match error.at {
        Some(at) => Error::Config(format!("{file}:{at}: {}", error.message)),
        None => Error::Config(format!("{file}: {}", error.message)),
    })?;
    let mut problems = Problems {
        file: file.to_owned(),
        list: Vec::new(),
        warnings: Vec::new(),
    };
    let lenient = |var: &str| {
        lookup(var).or_else(|| {
            let unset = unset?;
            unset.borrow_mut().insert(var.to_owned());
            Some(PLACEHOLDER.to_owned())
        })
    };
    let unset_count = || unset.map_or(0, |u| u.borrow().len());
    let pipeline = read_pipeline(&root, &lenient, &unset_count, &mut problems);
    let warnings = std::mem::take(&mut problems.warnings);
    match problems.into_error() {
        Some(error) => Err(error),
        None => Ok(Checked {
            pipeline,
            unset: unset.map(|u| u.take()).unwrap_or_default(),
            warnings,
        }),
    }
}

/// The whole file: its `env:` map first (every other value may use it), then the settings
/// beside `steps`, then the steps. `unset_count` says how many variables were missing so
/// far (always 0 unless checking): a value whose expansion raised it used one.
fn read_pipeline(
    root: &Node,
    lookup: &dyn Fn(&str) -> Option<String>,
    unset_count: &dyn Fn() -> usize,
    problems: &mut Problems,
) -> Pipeline {
    let mut pipeline = Pipeline {
        restart_policy: RestartPolicy::OnFailure,
        backoff: Backoff::default(),
        active_deadline: None,
        status_file: None,
        env: Vec::new(),
        steps: Vec::new(),
    };
    let Value::Map(entries) = &root.value else {
        problems.add(
            root.at,
            format!(
                "a pipeline is a map with 'steps', not {}",
                root.value.kind()
            ),
        );
        return pipeline;
    };
    let file_env = read_env(entries, lookup, problems);
    pipeline.env = file_env.clone();
    let vars = |var: &str| lookup_var(&file_env, lookup, var);
    let Some(steps_node) = read_settings(entries, &mut pipeline, &vars, problems) else {
        problems.add(root.at, "the pipeline has no 'steps'");
        return pipeline;
    };
    pipeline.steps = steps::read(steps_node, &vars, unset_count, problems);
    pipeline
}

/// The file's `env:` map, each value expanded with the entries before it and the process
/// environment.
fn read_env(
    entries: &[(String, Node)],
    lookup: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Vec<(String, String)> {
    let mut file_env: Vec<(String, String)> = Vec::new();
    let Some((_, env)) = entries.iter().find(|(k, _)| k == "env") else {
        return file_env;
    };
    let Value::Map(vars) = &env.value else {
        problems.add(
            env.at,
            format!("env: expected a map, not {}", env.value.kind()),
        );
        return file_env;
    };
    for (name, value) in vars {
        let Some(text) = value.value.scalar() else {
            problems.add(value.at, format!("env {name}: expected a string"));
            continue;
        };
        match expand::expand(&text, |var| lookup_var(&file_env, lookup, var)) {
            Ok(expanded) => file_env.push((name.clone(), expanded)),
            Err(undefined) => problems.add(value.at, format!("env {name}: {undefined}")),
        }
    }
    file_env
}

/// The top-level keys but `env` and `steps`, into `pipeline`; returns the `steps` node.
fn read_settings<'a>(
    entries: &'a [(String, Node)],
    pipeline: &mut Pipeline,
    vars: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<&'a Node> {
    let mut steps_node = None;
    for (key, node) in entries {
        match key.as_str() {
            "restartPolicy" => match node.value.scalar().as_deref() {
                Some("Never") => pipeline.restart_policy = RestartPolicy::Never,
                Some("OnFailure" | "Always") => pipeline.restart_policy = RestartPolicy::OnFailure,
                _ => problems.add(
                    node.at,
                    "restartPolicy: expected Never, OnFailure or Always",
                ),
            },
            "backoff" => read_backoff(node, &mut pipeline.backoff, problems),
            "activeDeadline" => {
                pipeline.active_deadline =
                    duration(node, "activeDeadline", problems).and_then(Duration::as_limit)
            }
            "statusFile" => match node.value.scalar() {
                Some(path) => match expand::expand(&path, vars) {
                    Ok(expanded) => pipeline.status_file = Some(PathBuf::from(expanded)),
                    Err(undefined) => problems.add(node.at, format!("statusFile: {undefined}")),
                },
                None => problems.add(node.at, "statusFile: expected a path"),
            },
            "env" => {}
            "steps" => steps_node = Some(node),
            other => problems.add(
                node.at,
                format!(
                    "unknown key '{other}' (expected one of: {})",
                    TOP_KEYS.join(", ")
                ),
            ),
        }
    }
    steps_node
}

/// A variable from the file's `env:` map (later entries win), else from the process.
fn lookup_var(
    file_env: &[(String, String)],
    lookup: &dyn Fn(&str) -> Option<String>,
    var: &str,
) -> Option<String> {
    file_env
        .iter()
        .rev()
        .find(|(name, _)| name == var)
        .map(|(_, value)| value.clone())
        .or_else(|| lookup(var))
}

fn read_backoff(node: &Node, backoff: &mut Backoff, problems: &mut Problems) {
    let Value::Map(entries) = &node.value else {
        problems.add(node.at, "backoff: expected a map with initial and max");
        return;
    };
    for (key, value) in entries {
        match key.as_str() {
            "initial" => {
                if let Some(d) = duration(value, "backoff.initial", problems) {
                    backoff.initial = d.get();
                }
            }
            "max" => {
                if let Some(d) = duration(value, "backoff.max", problems) {
                    backoff.max = d.get();
                }
            }
            other => problems.add(
                value.at,
                format!("unknown key 'backoff.{other}' (expected initial, max)"),
            ),
        }
    }
    if backoff.max < backoff.initial {
        problems.add(node.at, "backoff: max is smaller than initial");
    }
}

fn duration(node: &Node, what: &str, problems: &mut Problems) -> Option<Duration> {
    let Some(text) = node.value.scalar() else {
        problems.add(
            node.at,
            format!("{what}: expected a duration such as 90s or 2m"),
        );
        return None;
    };
    match Duration::from_str(&text) {
        Ok(d) => Some(d),
        Err(error) => {
            problems.add(node.at, format!("{what}: {error}"));
            None
        }
    }
}
