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

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration as StdDuration;

use clap::ArgAction;

use super::yaml::{self, At, Node, Value};
use crate::cli::{self, Command};
use crate::duration::Duration;
use crate::exit::Error;
use crate::expand;

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
const STEP_KEYS: &[&str] = &["name", "needs", "retries", "timeout"];

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

/// `unset_count` says how many variables were missing so far (always 0 unless checking):
/// a value whose expansion raised it used one.
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
    // The file's env: map first, so every other value can use it.
    let mut file_env: Vec<(String, String)> = Vec::new();
    if let Some((_, env)) = entries.iter().find(|(k, _)| k == "env") {
        match &env.value {
            Value::Map(vars) => {
                for (name, value) in vars {
                    let Some(text) = value.value.scalar() else {
                        problems.add(value.at, format!("env {name}: expected a string"));
                        continue;
                    };
                    match expand::expand(&text, |var| lookup_var(&file_env, lookup, var)) {
                        Ok(expanded) => file_env.push((name.clone(), expanded)),
                        Err(undefined) => {
                            problems.add(value.at, format!("env {name}: {undefined}"))
                        }
                    }
                }
            }
            other => problems.add(env.at, format!("env: expected a map, not {}", other.kind())),
        }
    }
    pipeline.env = file_env.clone();
    let vars = |var: &str| lookup_var(&file_env, lookup, var);
    let expand_at = |text: &str, at: At, what: &str, problems: &mut Problems| -> Option<String> {
        match expand::expand(text, vars) {
            Ok(expanded) => Some(expanded),
            Err(undefined) => {
                problems.add(at, format!("{what}: {undefined}"));
                None
            }
        }
    };

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
                Some(path) => {
                    pipeline.status_file =
                        expand_at(&path, node.at, "statusFile", problems).map(PathBuf::from)
                }
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
    let Some(steps_node) = steps_node else {
        problems.add(root.at, "the pipeline has no 'steps'");
        return pipeline;
    };
    let Value::List(step_nodes) = &steps_node.value else {
        problems.add(steps_node.at, "steps: expected a list of steps");
        return pipeline;
    };
    if step_nodes.is_empty() {
        problems.add(steps_node.at, "steps: the list is empty");
    }

    // First pass: names (so `needs` can refer to later steps too).
    let mut names: Vec<String> = Vec::new();
    for (index, node) in step_nodes.iter().enumerate() {
        let name = match &node.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k == "name")
                .and_then(|(_, n)| n.value.scalar()),
            _ => None,
        };
        let name = name.unwrap_or_else(|| format!("step {}", index + 1));
        if names.contains(&name) {
            problems.add(node.at, format!("two steps are named '{name}'"));
        }
        names.push(name);
    }

    for (index, node) in step_nodes.iter().enumerate() {
        let Value::Map(entries) = &node.value else {
            problems.add(
                node.at,
                format!(
                    "a step is a map with a name and one task, not {}",
                    node.value.kind()
                ),
            );
            continue;
        };
        let name = names[index].clone();
        if !entries.iter().any(|(k, _)| k == "name") {
            problems.add(node.at, format!("step {} has no name", index + 1));
        }
        let mut needs = if index == 0 { vec![] } else { vec![index - 1] };
        let mut retries = None;
        let mut timeout = None;
        let mut task: Option<(&String, &Node)> = None;
        for (key, value) in entries {
            match key.as_str() {
                "name" => {
                    if value.value.scalar().is_none_or(|n| n.is_empty()) {
                        problems.add(value.at, "name: expected a non-empty string");
                    }
                }
                "needs" => needs = read_needs(value, &name, &names, problems),
                "retries" => match value.value.scalar().and_then(|n| n.parse::<u32>().ok()) {
                    Some(n) => retries = Some(n),
                    None => problems.add(value.at, "retries: expected a whole number ≥ 0"),
                },
                "timeout" => {
                    timeout = duration(value, "timeout", problems).and_then(Duration::as_limit)
                }
                task_name => {
                    if let Some((first, _)) = task {
                        problems.add(
                            value.at,
                            format!(
                                "step '{name}' has two tasks, '{first}' and '{task_name}': one step runs one task"
                            ),
                        );
                    } else {
                        task = Some((key, value));
                    }
                }
            }
        }
        let Some((task_name, body)) = task else {
            problems.add(
                node.at,
                format!(
                    "step '{name}' has no task (one of: {})",
                    task_names().join(", ")
                ),
            );
            continue;
        };
        let Some(command) = task_command(&name, task_name, body, &vars, unset_count, problems)
        else {
            continue;
        };
        pipeline.steps.push(Step {
            name,
            task: task_name.clone(),
            command,
            needs,
            retries,
            timeout,
        });
    }
    if problems.list.is_empty()
        && let Some(cycle) = find_cycle(&pipeline.steps)
    {
        problems.add(
            steps_node.at,
            format!("the steps' needs form a cycle: {}", cycle.join(" → ")),
        );
    }
    pipeline
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

fn read_needs(node: &Node, step: &str, names: &[String], problems: &mut Problems) -> Vec<usize> {
    let items: Vec<&Node> = match &node.value {
        Value::List(items) => items.iter().collect(),
        Value::Null => Vec::new(),
        _ if node.value.scalar().is_some() => vec![node],
        _ => {
            problems.add(node.at, "needs: expected a list of step names");
            return Vec::new();
        }
    };
    let mut needs = Vec::new();
    for item in items {
        let Some(needed) = item.value.scalar() else {
            problems.add(item.at, "needs: expected step names");
            continue;
        };
        match names.iter().position(|n| *n == needed) {
            Some(_) if needed == step => {
                problems.add(item.at, format!("step '{step}' needs itself"))
            }
            Some(index) => needs.push(index),
            None => problems.add(
                item.at,
                format!("step '{step}' needs '{needed}', and there is no step of that name"),
            ),
        }
    }
    needs
}

/// The names of the commands a step may run: every subcommand but `run` itself and the
/// ones that print documentation.
pub fn task_names() -> Vec<String> {
    cli::command()
        .get_subcommands()
        .map(|c| c.get_name().to_owned())
        .filter(|name| is_task(name))
        .collect()
}

fn is_task(name: &str) -> bool {
    name != "run" && name != "help" && !crate::docs::DOC_COMMANDS.contains(&name)
}

/// How each flag of a task is written in the file.
struct TaskArg {
    key: String,
    /// `None` for positional arguments.
    long: Option<String>,
    index: Option<usize>,
    switch: bool,
    repeatable: bool,
    required: bool,
    /// `Name: value` for `--header`, `key=value` for the other maps.
    header_style: bool,
    /// How clap names the argument in its errors: `--timeout <DURATION>` or `<DURATION>`.
    value_name: Option<String>,
}

fn task_args(task: &clap::Command) -> Vec<TaskArg> {
    // Positional arguments in the order clap gives them their places (declaration order).
    let positional_ids: Vec<&str> = task
        .get_positionals()
        .filter(|arg| !arg.is_last_set())
        .map(|arg| arg.get_id().as_str())
        .collect();
    task.get_arguments()
        .filter(|arg| {
            let id = arg.get_id().as_str();
            // The hand-off belongs to the whole pipeline, not to a step.
            id != "help" && !arg.is_last_set()
        })
        .map(|arg| {
            let long = arg.get_long().map(str::to_owned);
            let key = long
                .clone()
                .unwrap_or_else(|| arg.get_id().as_str().to_owned());
            let action = arg.get_action();
            TaskArg {
                header_style: key == "header",
                value_name: arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map(|name| name.to_string()),
                switch: matches!(action, ArgAction::SetTrue),
                repeatable: matches!(action, ArgAction::Append)
                    || arg.get_num_args().is_some_and(|n| n.max_values() > 1),
                required: arg.is_required_set(),
                index: positional_ids
                    .iter()
                    .position(|id| *id == arg.get_id().as_str()),
                key,
                long,
            }
        })
        .collect()
}

/// The step's task as the `Command` the CLI would have parsed, or `None` after reporting why
/// not.
fn task_command(
    step: &str,
    task: &str,
    body: &Node,
    vars: &dyn Fn(&str) -> Option<String>,
    unset_count: &dyn Fn() -> usize,
    problems: &mut Problems,
) -> Option<Command> {
    let definition = cli::command();
    let Some(subcommand) = definition
        .get_subcommands()
        .find(|c| c.get_name() == task && is_task(task))
    else {
        let message = if task == "run" {
            format!("step '{step}': a step cannot run a pipeline")
        } else {
            format!(
                "step '{step}': unknown task or key '{task}' (tasks: {}; step keys: {})",
                task_names().join(", "),
                STEP_KEYS.join(", ")
            )
        };
        problems.add(body.at, message);
        return None;
    };
    let args = task_args(subcommand);
    let entries: Vec<(String, Node)> = match &body.value {
        Value::Map(entries) => entries.clone(),
        Value::Null => Vec::new(),
        other => {
            problems.add(
                body.at,
                format!("{task}: expected a map of its flags, not {}", other.kind()),
            );
            return None;
        }
    };
    let before = problems.list.len();
    let mut argv: Vec<String> = vec!["initbox".into(), task.into()];
    let mut positionals: Vec<(usize, String, At, Vec<String>)> = Vec::new();
    // Keys whose values use a variable that is not set while checking.
    let mut unverifiable: Vec<String> = Vec::new();
    for (key, node) in &entries {
        let Some(arg) = args.iter().find(|a| a.key == *key) else {
            let known: Vec<&str> = args.iter().map(|a| a.key.as_str()).collect();
            problems.add(
                node.at,
                format!("{task}: unknown key '{key}' (known: {})", known.join(", ")),
            );
            continue;
        };
        if arg.switch {
            match &node.value {
                Value::Bool(true) => argv.push(format!("--{key}")),
                Value::Bool(false) => {}
                _ => problems.add(node.at, format!("{task}.{key}: expected true or false")),
            }
            continue;
        }
        let raw: Vec<(String, At)> = match &node.value {
            Value::List(items) if arg.repeatable => items
                .iter()
                .filter_map(|item| match item.value.scalar() {
                    Some(text) => Some((text, item.at)),
                    None => {
                        problems.add(item.at, format!("{task}.{key}: expected plain values"));
                        None
                    }
                })
                .collect(),
            Value::Map(pairs) if arg.repeatable => pairs
                .iter()
                .filter_map(|(name, item)| match item.value.scalar() {
                    Some(text) if arg.header_style => Some((format!("{name}: {text}"), item.at)),
                    Some(text) => Some((format!("{name}={text}"), item.at)),
                    None => {
                        problems.add(
                            item.at,
                            format!("{task}.{key}.{name}: expected a plain value"),
                        );
                        None
                    }
                })
                .collect(),
            value => match value.scalar() {
                Some(text) => vec![(text, node.at)],
                None => {
                    problems.add(
                        node.at,
                        format!(
                            "{task}.{key}: expected {}, not {}",
                            if arg.repeatable {
                                "a value or a list"
                            } else {
                                "one value"
                            },
                            value.kind()
                        ),
                    );
                    continue;
                }
            },
        };
        let mut values = Vec::new();
        let unset_before = unset_count();
        for (text, at) in raw {
            match expand::expand(&text, vars) {
                Ok(expanded) => values.push(expanded),
                Err(undefined) => {
                    problems.add(at, format!("step '{step}', {task}.{key}: {undefined}"))
                }
            }
        }
        if unset_count() > unset_before {
            unverifiable.push(key.clone());
        }
        match (&arg.long, arg.index) {
            (Some(long), _) => {
                argv.extend(values.into_iter().map(|v| format!("--{long}={v}")));
            }
            (None, Some(index)) => positionals.push((index, key.clone(), node.at, values)),
            (None, None) => {}
        }
    }
    for arg in args.iter().filter(|a| a.required) {
        if !entries.iter().any(|(key, _)| *key == arg.key) {
            problems.add(
                body.at,
                format!("step '{step}': {task} needs '{}'", arg.key),
            );
        }
    }
    if problems.list.len() > before {
        return None;
    }
    positionals.sort_by_key(|(index, ..)| *index);
    for (_, key, at, values) in positionals {
        for value in values {
            if value.starts_with('-') && value != "-" {
                problems.add(
                    at,
                    format!("{task}.{key}: '{value}' starts with '-', which would read as a flag"),
                );
                return None;
            }
            argv.push(value);
        }
    }
    match cli::parse_from(&argv) {
        Ok(cli) => Some(cli.command),
        Err(error) => {
            let (at, key) = locate(&error, &args, &entries).unwrap_or((body.at, task.to_owned()));
            let first = cli::one_line(&error);
            if unverifiable.contains(&key) {
                problems.warn(
                    at,
                    format!(
                        "step '{step}', {task}.{key}: not checked, it uses a variable that is not set here"
                    ),
                );
                // A checked pipeline is never run: the step keeps its place (its index is
                // what `needs` refers to) with a command that stands in for it.
                return cli::parse_from(["initbox", "sleep", "0"])
                    .ok()
                    .map(|cli| cli.command);
            }
            problems.add(at, format!("step '{step}', {task}.{key}: {first}"));
            None
        }
    }
}

/// The key a clap error is about, and where it stands in the file.
fn locate(
    error: &clap::Error,
    args: &[TaskArg],
    entries: &[(String, Node)],
) -> Option<(At, String)> {
    let invalid = error.get(clap::error::ContextKind::InvalidArg)?.to_string();
    let arg = match invalid.strip_prefix("--") {
        Some(flag) => {
            let long = flag.split([' ', '=']).next()?;
            args.iter().find(|a| a.long.as_deref() == Some(long))?
        }
        None => {
            let name = invalid.trim_matches(['<', '>', '.']);
            args.iter()
                .find(|a| a.long.is_none() && a.value_name.as_deref() == Some(name))?
        }
    };
    entries
        .iter()
        .find(|(key, _)| *key == arg.key)
        .map(|(key, node)| (node.at, key.clone()))
}

/// A cycle among the steps' needs, as step names, if there is one.
fn find_cycle(steps: &[Step]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(index: usize, steps: &[Step], marks: &mut [Mark], path: &mut Vec<usize>) -> bool {
        match marks[index] {
            Mark::Done => return false,
            Mark::Open => {
                path.push(index);
                return true;
            }
            Mark::New => {}
        }
        marks[index] = Mark::Open;
        path.push(index);
        for &needed in &steps[index].needs {
            if visit(needed, steps, marks, path) {
                return true;
            }
        }
        path.pop();
        marks[index] = Mark::Done;
        false
    }
    let mut marks = vec![Mark::New; steps.len()];
    for start in 0..steps.len() {
        let mut path = Vec::new();
        if visit(start, steps, &mut marks, &mut path) {
            let last = *path.last()?;
            let first = path.iter().position(|&i| i == last)?;
            return Some(
                path[first..]
                    .iter()
                    .map(|&i| steps[i].name.clone())
                    .collect(),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_ok(text: &str) -> Pipeline {
        load("p.yaml", text, no_env).unwrap_or_else(|e| panic!("{e}"))
    }

    fn load_err(text: &str) -> String {
        match load("p.yaml", text, no_env) {
            Ok(_) => panic!("expected an error for:\n{text}"),
            Err(error) => {
                assert!(matches!(error, Error::Config(_)), "{error:?}");
                error.to_string()
            }
        }
    }

    fn cli(argv: &[&str]) -> Command {
        cli::parse_from(argv).expect("a valid command line").command
    }

    #[test]
    fn the_cli_and_the_file_give_identical_commands_for_every_task() {
        let cases: &[(&str, &[&str], &str)] = &[
            ("wait-for-dns", &["mydb"], "{names: [mydb]}"),
            (
                "wait-for-tcp",
                &["mydb:5432"],
                r#"{targets: ["mydb:5432"]}"#,
            ),
            (
                "wait-for-http",
                &["http://api/healthz"],
                r#"{urls: ["http://api/healthz"]}"#,
            ),
            ("ping", &["10.0.0.1"], "{hosts: [10.0.0.1]}"),
            (
                "register",
                &["http://mgmt/register"],
                r#"{url: "http://mgmt/register"}"#,
            ),
            (
                "fetch",
                &["http://web/index.html", "-o", "/w/index.html"],
                r#"{url: "http://web/index.html", output: /w/index.html}"#,
            ),
            (
                "git-clone",
                &["https://git.example/app.git", "/w/app"],
                r#"{repo: "https://git.example/app.git", dest: /w/app}"#,
            ),
            (
                "template",
                &["/t/app.conf.j2", "/w/app.conf"],
                "{src: /t/app.conf.j2, dest: /w/app.conf}",
            ),
            ("sleep", &["5"], "{duration: 5}"),
            // Volume content: link, sysctl, install.
            (
                "link",
                &["v2", "/w/current"],
                "{target: v2, link: /w/current}",
            ),
            (
                "sysctl",
                &["vm.max_map_count=262144", "--if-lower"],
                r#"{settings: ["vm.max_map_count=262144"], if-lower: true}"#,
            ),
            ("install", &["/tools"], "{dir: /tools}"),
            (
                "write",
                &["/w/app.conf", "--content", "port=1", "--mode", "0640"],
                r#"{file: /w/app.conf, content: "port=1", mode: "0640"}"#,
            ),
            (
                "copy",
                &["/opt/conf", "/w/", "--exclude", "*.tmp", "--if-absent"],
                r#"{paths: [/opt/conf, /w/], exclude: ["*.tmp"], if-absent: true}"#,
            ),
        ];
        let mut covered: Vec<&str> = cases.iter().map(|(task, ..)| *task).collect();
        covered.sort();
        let mut all = task_names();
        all.sort();
        assert_eq!(covered, all, "every task needs a case here");
        for (task, args, body) in cases {
            let mut argv = vec!["initbox", *task];
            argv.extend_from_slice(args);
            let from_cli = cli(&argv);
            let pipeline = load_ok(&format!("steps:\n  - name: s\n    {task}: {body}\n"));
            assert_eq!(
                format!("{:?}", pipeline.steps[0].command),
                format!("{from_cli:?}"),
                "{task}"
            );
        }
    }

    #[test]
    fn keys_map_to_flags_lists_maps_and_switches() {
        let pipeline = load_ok(
            r#"steps:
  - name: s
    wait-for-tcp: {targets: ["a:1", "b:2"], timeout: 2m, invert: true, nameserver: [10.0.0.10]}
  - name: r
    register:
      url: http://mgmt/register
      form: {instance: web-1, ip: 10.1.2.3}
      header: {X-Team: platform}
"#,
        );
        let expected = cli(&[
            "initbox",
            "wait-for-tcp",
            "a:1",
            "b:2",
            "--timeout",
            "2m",
            "--invert",
            "--nameserver",
            "10.0.0.10",
        ]);
        assert_eq!(
            format!("{:?}", pipeline.steps[0].command),
            format!("{expected:?}")
        );
        let expected = cli(&[
            "initbox",
            "register",
            "http://mgmt/register",
            "--form",
            "instance=web-1",
            "--form",
            "ip=10.1.2.3",
            "--header",
            "X-Team: platform",
        ]);
        assert_eq!(
            format!("{:?}", pipeline.steps[1].command),
            format!("{expected:?}")
        );
    }

    #[test]
    fn order_needs_and_step_settings() {
        let pipeline = load_ok(
            "restartPolicy: Always
backoff: {initial: 2s, max: 30s}
activeDeadline: 10m
steps:
  - name: a
    sleep: {duration: 0}
  - name: b
    sleep: {duration: 0}
    retries: 3
    timeout: 1m
  - name: c
    sleep: {duration: 0}
    needs: []
  - name: d
    sleep: {duration: 0}
    needs: [a, c]
",
        );
        assert_eq!(pipeline.restart_policy, RestartPolicy::OnFailure);
        assert_eq!(pipeline.backoff.initial, StdDuration::from_secs(2));
        assert_eq!(pipeline.active_deadline, Some(StdDuration::from_secs(600)));
        let needs: Vec<Vec<usize>> = pipeline.steps.iter().map(|s| s.needs.clone()).collect();
        assert_eq!(needs, [vec![], vec![0], vec![], vec![0, 2]]);
        assert_eq!(pipeline.steps[1].retries, Some(3));
        assert_eq!(pipeline.steps[1].timeout, Some(StdDuration::from_secs(60)));
    }

    #[test]
    fn variables_expand_from_the_environment_and_the_env_map() {
        let text = r#"env:
  HOST: mgmt.$(DOMAIN)
steps:
  - name: r
    register: {url: "http://$(HOST)/r", form: {note: "$$(LITERAL)"}}
"#;
        let pipeline = load("p.yaml", text, |var| {
            (var == "DOMAIN").then(|| "svc".to_owned())
        })
        .unwrap();
        let expected = cli(&[
            "initbox",
            "register",
            "http://mgmt.svc/r",
            "--form",
            "note=$(LITERAL)",
        ]);
        assert_eq!(
            format!("{:?}", pipeline.steps[0].command),
            format!("{expected:?}")
        );
        let error =
            load_err("steps:\n  - name: r\n    register: {url: \"http://$(MGMT_HOST)/r\"}\n");
        assert_eq!(
            error,
            "p.yaml:3:21: step 'r', register.url: undefined variable $(MGMT_HOST)"
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_position() {
        let cases: &[(&str, &str)] = &[
            (
                "steps:\n  - name: a\n    sleep: {duration: 1\n",
                "p.yaml:3:12: unclosed",
            ),
            ("step:\n  - name: a\n", "p.yaml:1:"),
            (
                "steps:\n  - name: a\n    slep: {duration: 1}\n",
                "p.yaml:3:11: step 'a': unknown task or key 'slep'",
            ),
            (
                "steps:\n  - name: a\n    sleep: {duration: 1, colour: red}\n",
                "p.yaml:3:34: sleep: unknown key 'colour'",
            ),
            (
                "steps:\n  - name: a\n    sleep: {duration: 1}\n    wait-for-dns: {names: [x]}\n",
                "p.yaml:4:19: step 'a' has two tasks",
            ),
            (
                "steps:\n  - name: a\n    sleep: {duration: 1}\n  - name: a\n    sleep: {duration: 1}\n",
                "p.yaml:4:5: two steps are named 'a'",
            ),
            (
                "steps:\n  - name: a\n    sleep: {duration: 1}\n    needs: [b]\n",
                "p.yaml:4:13: step 'a' needs 'b', and there is no step of that name",
            ),
            (
                "steps:\n  - name: a\n    sleep: {duration: 1}\n    needs: [b]\n  - name: b\n    sleep: {duration: 1}\n",
                "the steps' needs form a cycle: a → b → a",
            ),
            (
                "steps:\n  - name: a\n    sleep: {duration: soon}\n",
                "p.yaml:3:23: step 'a', sleep.duration",
            ),
            (
                "steps:\n  - name: a\n    wait-for-tcp: {targets: [\"db:5432\"], timeout: soonish}\n",
                "p.yaml:3:51: step 'a', wait-for-tcp.timeout",
            ),
            (
                "steps:\n  - name: a\n    sleep: {duration: 1}\n    timeout: later\n",
                "p.yaml:4:14: timeout:",
            ),
            (
                "restartPolicy: Sometimes\nsteps:\n  - name: a\n    sleep: {duration: 1}\n",
                "p.yaml:1:16: restartPolicy: expected Never, OnFailure or Always",
            ),
            (
                "activeDeadline: -1s\nsteps:\n  - name: a\n    sleep: {duration: 1}\n",
                "p.yaml:1:17: activeDeadline",
            ),
            (
                "steps:\n  - name: a\n    git-clone: {repo: \"https://h/r\"}\n",
                "p.yaml:3:16: step 'a': git-clone needs 'dest'",
            ),
            (
                "steps:\n  - name: a\n    run: {file: x.yaml}\n",
                "a step cannot run a pipeline",
            ),
            (
                "steps:\n  - name: a\n    wait-for-tcp: {targets: [\"db:5432\"], invert: maybe}\n",
                "wait-for-tcp.invert: expected true or false",
            ),
            (
                "colour: red\nsteps:\n  - name: a\n    sleep: {duration: 1}\n",
                "p.yaml:1:9: unknown key 'colour'",
            ),
            ("steps: []\n", "steps: the list is empty"),
        ];
        for (text, expected) in cases {
            let error = load_err(text);
            assert!(
                error.contains(expected),
                "expected {expected:?} in {error:?}"
            );
        }
        // All problems at once.
        let error =
            load_err("steps:\n  - name: a\n    slep: {}\n  - name: b\n    sleep: {duration: x}\n");
        assert!(error.starts_with("2 problems in the pipeline:"), "{error}");
    }
}
