#![no_main]
//! Proves the same contract as `pipeline` deeper in the validator: the input is turned
//! into a well-formed YAML pipeline whose keys are the real ones (top-level keys, step
//! keys, task names and each task's flags, read from the clap definition as the validator
//! does) and whose values come from a pool of plausible and hostile ones (durations,
//! HOST:PORTs, URLs, `$(VAR)`s, flags in disguise), so most inputs get past the YAML layer
//! and reach `needs`, the flag mapping and clap. Accepted: sound; rejected: exit 78 naming
//! the file.

use std::fmt::Write;
use std::sync::OnceLock;

use initbox::cli;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const TOP_KEYS: &[&str] = &["restartPolicy", "backoff", "activeDeadline", "statusFile"];
const STEP_NAMES: &[&str] = &[
    "a",
    "b",
    "c",
    "db",
    "clone",
    "render",
    "",
    "step 1",
    "$(POD_NAME)",
];
const WORDS: &[&str] = &[
    // Durations, numbers, sizes.
    "0",
    "1",
    "1.5",
    "90s",
    "2m30s",
    "-1",
    "1e999",
    "NaN",
    "18446744073709551615",
    "10M",
    "1GiB",
    "99999999999T",
    "500ms",
    "0s",
    "1h",
    // Targets.
    "mydb:5432",
    "[::1]:80",
    "::1:80",
    "host:0",
    "host:",
    ":80",
    "10.0.0.1",
    "mydb",
    "http://api/healthz",
    "https://[::1]:8443/x?y=1",
    "ftp://x",
    "http://",
    "file:///etc/passwd",
    // Flags' values.
    "X-Token: abc",
    "Bad Header",
    "200-299,5xx",
    "600",
    "299-200",
    "GET",
    "POST",
    "bad method",
    "key=value",
    "=",
    "a.b.c=1",
    "name=/dev/null",
    "0644",
    "999",
    "sha256",
    "A",
    "AAAA",
    "txt",
    "https://git.example/r.git",
    "main",
    "v1.4.0",
    "/work-dir/out",
    "-",
    "--timeout",
    "-x",
    "json",
    "text",
    "Never",
    "OnFailure",
    "Always",
    "true",
    "false",
    "",
    // Variables.
    "$(POD_NAME)",
    "$(POD_IP):$(PORT)",
    "$(UNDEFINED)",
    "$$(POD_NAME)",
    "$(",
    "$(EMPTY)",
    "$(DOLLAR)",
    "$$",
    "$",
];

#[derive(Arbitrary, Debug)]
enum Leaf {
    Word(u8),
    Number(i64),
    Float(f64),
    Bool(bool),
    Null,
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Value {
    Leaf(Leaf),
    List(Vec<Leaf>),
    Map(Vec<(u8, Leaf)>),
}

#[derive(Arbitrary, Debug)]
struct Step {
    name: Option<u8>,
    task: u8,
    flags: Vec<(u8, Value)>,
    needs: Option<Vec<u8>>,
    retries: Option<Leaf>,
    timeout: Option<Leaf>,
    extra: Option<(u8, Value)>,
}

#[derive(Arbitrary, Debug)]
struct Doc {
    top: Vec<(u8, Value)>,
    env: Option<Vec<(u8, Leaf)>>,
    steps: Option<Vec<Step>>,
    steps_not_a_list: Option<Leaf>,
}

/// Each task with the keys the validator accepts for it: long flags and positional ids.
fn tasks() -> &'static [(String, Vec<String>)] {
    static TASKS: OnceLock<Vec<(String, Vec<String>)>> = OnceLock::new();
    TASKS.get_or_init(|| {
        let cli = cli::command();
        let mut tasks: Vec<(String, Vec<String>)> = initbox_fuzz::task_names()
            .iter()
            .map(|name| {
                let command = cli.find_subcommand(name).expect("a task is a subcommand");
                let keys = command
                    .get_arguments()
                    .filter(|arg| arg.get_id() != "help")
                    .map(|arg| {
                        arg.get_long()
                            .map(str::to_owned)
                            .unwrap_or_else(|| arg.get_id().to_string())
                    })
                    .collect();
                (name.clone(), keys)
            })
            .collect();
        // What must be refused: a pipeline in a pipeline, documentation, a made-up task.
        for name in ["run", "completions", "man", "help", "no-such-task"] {
            tasks.push((name.to_owned(), vec!["file".into(), "shell".into()]));
        }
        tasks
    })
}

fn pick<'a>(list: &[&'a str], index: u8) -> &'a str {
    list[usize::from(index) % list.len()]
}

/// A YAML double-quoted scalar: everything but printable ASCII escaped.
fn quoted(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c if u32::from(c) <= 0xFFFF => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => {
                let _ = write!(out, "\\U{:08X}", u32::from(c));
            }
        }
    }
    out.push('"');
}

fn leaf(out: &mut String, leaf: &Leaf) {
    match leaf {
        // Plain where YAML allows it (so `1.5` stays a number, `true` a boolean), else quoted.
        Leaf::Word(index) => {
            let word = pick(WORDS, *index);
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._".contains(c))
            {
                out.push_str(word);
            } else {
                quoted(out, word);
            }
        }
        Leaf::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Leaf::Float(f) if f.is_finite() => {
            let _ = write!(out, "{f:?}");
        }
        Leaf::Float(f) if f.is_nan() => out.push_str(".nan"),
        Leaf::Float(f) => out.push_str(if *f > 0.0 { ".inf" } else { "-.inf" }),
        Leaf::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Leaf::Null => out.push_str("null"),
        Leaf::Text(text) => quoted(out, text),
    }
}

fn value(out: &mut String, value: &Value, keys: &[&str]) {
    match value {
        Value::Leaf(l) => leaf(out, l),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                leaf(out, item);
            }
            out.push(']');
        }
        Value::Map(entries) => {
            out.push('{');
            for (i, (key, item)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                quoted(out, pick(keys, *key));
                out.push_str(": ");
                leaf(out, item);
            }
            out.push('}');
        }
    }
}

/// Distinct keys only: a duplicate key is a YAML error, which `pipeline` already covers.
fn unique<'a, T>(entries: impl IntoIterator<Item = (&'a str, T)>) -> Vec<(&'a str, T)> {
    let mut seen: Vec<(&str, T)> = Vec::new();
    for (key, item) in entries {
        if !seen.iter().any(|(k, _)| *k == key) {
            seen.push((key, item));
        }
    }
    seen
}

fn render(doc: &Doc) -> String {
    let mut out = String::new();
    let map_keys: &[&str] = &["initial", "max", "db.host", "values", "other"];
    for (key, item) in unique(doc.top.iter().map(|(k, v)| (pick(TOP_KEYS, *k), v))) {
        let _ = write!(out, "{key}: ");
        value(&mut out, item, map_keys);
        out.push('\n');
    }
    if let Some(env) = &doc.env {
        out.push_str("env:\n");
        let names = &["POD_NAME", "A", "B", "URL", "SELF", "EMPTY"];
        for (name, item) in unique(env.iter().map(|(k, v)| (pick(names, *k), v))) {
            let _ = write!(out, "  {name}: ");
            leaf(&mut out, item);
            out.push('\n');
        }
    }
    if let Some(not_a_list) = &doc.steps_not_a_list {
        out.push_str("steps: ");
        leaf(&mut out, not_a_list);
        out.push('\n');
        return out;
    }
    let Some(steps) = &doc.steps else {
        return out;
    };
    out.push_str("steps:");
    if steps.is_empty() {
        out.push_str(" []");
    }
    out.push('\n');
    let tasks = tasks();
    for step in steps {
        let (task, task_keys) = &tasks[usize::from(step.task) % tasks.len()];
        let mut keys: Vec<&str> = task_keys.iter().map(String::as_str).collect();
        keys.extend(["name", "unknown-flag"]);
        let mut first = true;
        let mut line = |out: &mut String, key: &str| {
            out.push_str(if first { "  - " } else { "    " });
            first = false;
            quoted(out, key);
            out.push_str(": ");
        };
        if let Some(name) = step.name {
            line(&mut out, "name");
            quoted(&mut out, pick(STEP_NAMES, name));
            out.push('\n');
        }
        line(&mut out, task);
        out.push('{');
        for (i, (key, item)) in unique(step.flags.iter().map(|(k, v)| (pick(&keys, *k), v)))
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                out.push_str(", ");
            }
            quoted(&mut out, key);
            out.push_str(": ");
            value(&mut out, item, WORDS);
        }
        out.push_str("}\n");
        if let Some(needs) = &step.needs {
            line(&mut out, "needs");
            out.push('[');
            for (i, need) in needs.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                quoted(&mut out, pick(STEP_NAMES, *need));
            }
            out.push_str("]\n");
        }
        for (key, item) in [("retries", &step.retries), ("timeout", &step.timeout)] {
            if let Some(item) = item {
                line(&mut out, key);
                leaf(&mut out, item);
                out.push('\n');
            }
        }
        if let Some((key, item)) = &step.extra {
            // A second task, or a key no step has.
            let (other, _) = &tasks[usize::from(*key) % tasks.len()];
            let other = if other == task { "backoff" } else { other };
            line(&mut out, other);
            value(&mut out, item, WORDS);
            out.push('\n');
        }
    }
    out
}

fuzz_target!(
    init: {
        initbox_fuzz::clear_initbox_env();
    },
    |doc: Doc| {
        initbox_fuzz::check_pipeline(&render(&doc));
    }
);
