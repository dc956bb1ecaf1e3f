//! One step's task as the command line the user would have typed: its keys become long
//! flags (`timeout: 2m` → `--timeout=2m`), lists and maps repeated flags, named positional
//! arguments take their places, every value `$(VAR)`-expanded; then clap parses it with
//! the CLI's own definition, and a refusal is placed back on the key it is about.

use clap::ArgAction;

use super::Problems;
use super::steps::STEP_KEYS;
use super::yaml::{At, Node, Value};
use crate::cli::{self, Command};
use crate::expand;

/// The names of the commands a step may run: every subcommand but `run` itself and the
/// ones that print documentation.
pub fn task_names() -> Vec<String> {
    cli::command_for::<&str>(&[])
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
    /// Takes every word after its first (wait-for-command's CMD ARGS...): only the first
    /// is refused when it starts with '-'.
    trailing: bool,
    /// `Name: value` for `--header`, `key=value` for the other maps.
    header_style: bool,
    /// Two values per use (`--literal OLD NEW`): written as a map (`{OLD: NEW}`), a pair
    /// (`[OLD, NEW]`) or a list of pairs.
    pairs: bool,
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
                pairs: arg
                    .get_num_args()
                    .is_some_and(|n| n.min_values() == 2 && n.max_values() == 2),
                value_name: arg
                    .get_value_names()
                    .and_then(|names| names.first())
                    .map(|name| name.to_string()),
                switch: matches!(action, ArgAction::SetTrue),
                repeatable: matches!(action, ArgAction::Append)
                    || arg.get_num_args().is_some_and(|n| n.max_values() > 1),
                required: arg.is_required_set(),
                trailing: arg.is_trailing_var_arg_set(),
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
pub(super) fn task_command(
    step: &str,
    task: &str,
    body: &Node,
    vars: &dyn Fn(&str) -> Option<String>,
    unset_count: &dyn Fn() -> usize,
    problems: &mut Problems,
) -> Option<Command> {
    let body = TaskBody::read(step, task, body, problems)?;
    let argv = body.argv(vars, unset_count, problems)?;
    body.parse(argv, problems)
}

/// A step's task as written: the keys under the task's name, and how the task's flags are
/// written in a file.
struct TaskBody<'a> {
    step: &'a str,
    task: &'a str,
    body: &'a Node,
    args: Vec<TaskArg>,
    entries: Vec<(String, Node)>,
}

/// The command line built from a step.
struct Argv {
    words: Vec<String>,
    /// Keys whose values use a variable that is not set while checking.
    unverifiable: Vec<String>,
}

impl<'a> TaskBody<'a> {
    fn read(step: &'a str, task: &'a str, body: &'a Node, problems: &mut Problems) -> Option<Self> {
        let definition = cli::command_for(&[task]);
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
        Some(TaskBody {
            step,
            task,
            body,
            args: task_args(subcommand),
            entries,
        })
    }

    /// `initbox TASK --flag=value… positional…`, every value expanded; `None` after
    /// reporting every key that cannot be one.
    fn argv(
        &self,
        vars: &dyn Fn(&str) -> Option<String>,
        unset_count: &dyn Fn() -> usize,
        problems: &mut Problems,
    ) -> Option<Argv> {
        let (step, task) = (self.step, self.task);
        let before = problems.list.len();
        let mut words: Vec<String> = vec!["initbox".into(), task.into()];
        let mut positionals: Vec<(usize, String, At, Vec<String>, bool)> = Vec::new();
        let mut unverifiable: Vec<String> = Vec::new();
        for (key, node) in &self.entries {
            let Some(arg) = self.args.iter().find(|a| a.key == *key) else {
                let known: Vec<&str> = self.args.iter().map(|a| a.key.as_str()).collect();
                problems.add(
                    node.at,
                    format!("{task}: unknown key '{key}' (known: {})", known.join(", ")),
                );
                continue;
            };
            if arg.switch {
                match &node.value {
                    Value::Bool(true) => words.push(format!("--{key}")),
                    Value::Bool(false) => {}
                    _ => problems.add(node.at, format!("{task}.{key}: expected true or false")),
                }
                continue;
            }
            let Some(raw) = self.raw_values(key, node, arg, problems) else {
                continue;
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
                (Some(long), _) if arg.pairs => {
                    for pair in values.chunks(2) {
                        words.push(format!("--{long}"));
                        words.extend(pair.iter().cloned());
                    }
                }
                (Some(long), _) => {
                    words.extend(values.into_iter().map(|v| format!("--{long}={v}")));
                }
                (None, Some(index)) => {
                    positionals.push((index, key.clone(), node.at, values, arg.trailing))
                }
                (None, None) => {}
            }
        }
        for arg in self.args.iter().filter(|a| a.required) {
            if !self.entries.iter().any(|(key, _)| *key == arg.key) {
                problems.add(
                    self.body.at,
                    format!("step '{step}': {task} needs '{}'", arg.key),
                );
            }
        }
        if problems.list.len() > before {
            return None;
        }
        positionals.sort_by_key(|(index, ..)| *index);
        for (_, key, at, values, trailing) in positionals {
            for (i, value) in values.into_iter().enumerate() {
                // After the first word of a trailing list clap reads every word as a value.
                if value.starts_with('-') && value != "-" && !(trailing && i > 0) {
                    problems.add(
                        at,
                        format!(
                            "{task}.{key}: '{value}' starts with '-', which would read as a flag"
                        ),
                    );
                    return None;
                }
                words.push(value);
            }
        }
        Some(Argv {
            words,
            unverifiable,
        })
    }

    /// The values one key stands for, as written (before expansion), each with its place:
    /// a list gives one per item, a map one `k=v` (or `Name: value` for headers) per entry.
    fn raw_values(
        &self,
        key: &str,
        node: &Node,
        arg: &TaskArg,
        problems: &mut Problems,
    ) -> Option<Vec<(String, At)>> {
        let task = self.task;
        if arg.pairs {
            return self.raw_pairs(key, node, problems);
        }
        Some(match &node.value {
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
                    return None;
                }
            },
        })
    }

    /// The values of a two-value flag, two by two: a map's keys and values, one pair
    /// `[OLD, NEW]`, or a list of pairs.
    fn raw_pairs(
        &self,
        key: &str,
        node: &Node,
        problems: &mut Problems,
    ) -> Option<Vec<(String, At)>> {
        let task = self.task;
        let pair = |item: &Node| -> Option<Vec<(String, At)>> {
            match &item.value {
                Value::List(two) if two.len() == 2 => two
                    .iter()
                    .map(|value| value.value.scalar().map(|text| (text, value.at)))
                    .collect(),
                _ => None,
            }
        };
        let values = match &node.value {
            Value::Map(entries) => entries
                .iter()
                .map(|(name, item)| {
                    item.value
                        .scalar()
                        .map(|text| vec![(name.clone(), item.at), (text, item.at)])
                })
                .collect::<Option<Vec<_>>>()
                .map(|pairs| pairs.concat()),
            Value::List(items) if items.iter().all(|item| item.value.scalar().is_some()) => {
                pair(node)
            }
            Value::List(items) => items
                .iter()
                .map(pair)
                .collect::<Option<Vec<_>>>()
                .map(|pairs| pairs.concat()),
            _ => None,
        };
        if values.is_none() {
            problems.add(
                node.at,
                format!(
                    "{task}.{key}: expected a map {{OLD: NEW}}, a pair [OLD, NEW] or a list of pairs"
                ),
            );
        }
        values
    }

    /// Parses the command line with the CLI's definition; a refusal is reported on the key
    /// it is about (a warning instead when that key's value uses a variable not set here).
    fn parse(&self, argv: Argv, problems: &mut Problems) -> Option<Command> {
        let (step, task) = (self.step, self.task);
        let error = match cli::parse_from(&argv.words) {
            Ok(cli) => return Some(cli.command),
            Err(error) => error,
        };
        let (at, key) =
            locate(&error, &self.args, &self.entries).unwrap_or((self.body.at, task.to_owned()));
        if argv.unverifiable.contains(&key) {
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
        problems.add(
            at,
            format!("step '{step}', {task}.{key}: {}", cli::one_line(&error)),
        );
        None
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
