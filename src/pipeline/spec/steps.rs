//! The `steps:` list: each step's name, settings and one task, and the graph their `needs`
//! form (checked for names that do not exist and for cycles).

use super::argv;
use super::yaml::{Node, Value};
use super::{Problems, Step, duration};
use crate::duration::Duration;

/// The keys of a step beside its task.
pub(super) const STEP_KEYS: &[&str] = &["name", "needs", "retries", "timeout"];

/// Every step of the list, in order; a step with a problem is reported and left out.
pub(super) fn read(
    steps_node: &Node,
    vars: &dyn Fn(&str) -> Option<String>,
    unset_count: &dyn Fn() -> usize,
    problems: &mut Problems,
) -> Vec<Step> {
    let Value::List(step_nodes) = &steps_node.value else {
        problems.add(steps_node.at, "steps: expected a list of steps");
        return Vec::new();
    };
    if step_nodes.is_empty() {
        problems.add(steps_node.at, "steps: the list is empty");
    }
    let names = step_names(step_nodes, problems);
    let mut steps = Vec::new();
    for (index, node) in step_nodes.iter().enumerate() {
        if let Some(step) = read_step(index, node, &names, vars, unset_count, problems) {
            steps.push(step);
        }
    }
    if problems.list.is_empty()
        && let Some(cycle) = find_cycle(&steps)
    {
        problems.add(
            steps_node.at,
            format!("the steps' needs form a cycle: {}", cycle.join(" → ")),
        );
    }
    steps
}

/// Every step's name, read first so that `needs` can refer to later steps too; a step
/// without one is called `step N` in messages.
fn step_names(step_nodes: &[Node], problems: &mut Problems) -> Vec<String> {
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
    names
}

/// One step: its settings, then its one task as the CLI's `Command`.
fn read_step(
    index: usize,
    node: &Node,
    names: &[String],
    vars: &dyn Fn(&str) -> Option<String>,
    unset_count: &dyn Fn() -> usize,
    problems: &mut Problems,
) -> Option<Step> {
    let Value::Map(entries) = &node.value else {
        problems.add(
            node.at,
            format!(
                "a step is a map with a name and one task, not {}",
                node.value.kind()
            ),
        );
        return None;
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
            "needs" => needs = read_needs(value, &name, names, problems),
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
                argv::task_names().join(", ")
            ),
        );
        return None;
    };
    let command = argv::task_command(&name, task_name, body, vars, unset_count, problems)?;
    Some(Step {
        name,
        task: task_name.clone(),
        command,
        needs,
        retries,
        timeout,
    })
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
