//! What a template sees: `env` (the process environment), each `--data NAME=FILE` under its
//! NAME, and the `--set` values, merged into one map before anything is rendered so that a
//! bad data file fails the run before a single file is written.
//!
//! Precedence, lowest first: `env`, `--data`, `--set` — so `--set db.port=5433` overrides one
//! value of `--data db=db.yaml` and leaves the rest of it alone.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use minijinja::value::{Enumerator, Object, ObjectExt, ObjectRepr, Value, ValueKind, from_args};
use minijinja::{Error as JinjaError, State};

use crate::cli::Invalid;
use crate::exit::{Error, Result};
use crate::reason;

/// The context key holding the process environment; `--data` and `--set` may not use it.
pub const ENV: &str = "env";

/// One `--data NAME=FILE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    pub name: String,
    pub path: PathBuf,
    pub format: Format,
}

/// The formats a data file may have, told by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Yaml,
    Toml,
}

impl Format {
    fn of(path: &Path) -> Option<Format> {
        let extension = path.extension()?.to_str()?.to_ascii_lowercase();
        match extension.as_str() {
            "json" => Some(Format::Json),
            "yaml" | "yml" => Some(Format::Yaml),
            "toml" => Some(Format::Toml),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Json => "JSON",
            Format::Yaml => "YAML",
            Format::Toml => "TOML",
        })
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses `--data NAME=FILE`.
pub fn parse_data(text: &str) -> Result<DataFile, String> {
    let Some((name, path)) = text.split_once('=') else {
        return Err(format!(
            "'{text}' is not NAME=FILE (the template sees the file's contents as NAME)"
        ));
    };
    if !is_identifier(name) {
        return Err(format!(
            "'{name}' is not a usable name: letters, digits and _, not starting with a digit"
        ));
    }
    if name == ENV {
        return Err("'env' is the process environment; choose another name".into());
    }
    let path = PathBuf::from(path);
    let format = Format::of(&path).ok_or_else(|| {
        format!(
            "{}: the format is told by the extension: .json, .yaml, .yml or .toml",
            path.display()
        )
    })?;
    Ok(DataFile {
        name: name.to_owned(),
        path,
        format,
    })
}

/// Parses `--set KEY=VALUE`; the key may be dotted (`db.host`).
pub fn parse_set(text: &str) -> Result<(String, String), String> {
    let Some((key, value)) = text.split_once('=') else {
        return Err(format!("'{text}' is not KEY=VALUE"));
    };
    if key.split('.').any(str::is_empty) {
        return Err(format!(
            "'{key}' is not a key: names separated by dots, such as db.host"
        ));
    }
    if key == ENV || key.starts_with("env.") {
        return Err("'env' is the process environment; it cannot be --set".into());
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// A map being assembled: values from data files stay whole until a `--set` reaches into
/// them.
enum Node {
    Leaf(Value),
    Map(IndexMap<String, Node>),
}

impl Node {
    fn into_value(self) -> Value {
        match self {
            Node::Leaf(value) => value,
            Node::Map(entries) => Value::from_object(
                entries
                    .into_iter()
                    .map(|(key, node)| (Value::from(key), node.into_value()))
                    .collect::<IndexMap<Value, Value>>(),
            ),
        }
    }

    /// The map inside this node, opening up a map value from a data file if need be.
    fn as_map(&mut self) -> Option<&mut IndexMap<String, Node>> {
        if let Node::Leaf(value) = self {
            if value.kind() != ValueKind::Map {
                return None;
            }
            let mut entries = IndexMap::new();
            for key in value.try_iter().ok()? {
                let item = value.get_item(&key).ok()?;
                entries.insert(key.to_string(), Node::Leaf(item));
            }
            *self = Node::Map(entries);
        }
        match self {
            Node::Map(entries) => Some(entries),
            Node::Leaf(_) => None,
        }
    }
}

/// The checks of `--data` and `--set` that need no file: a NAME given twice, and `--set`
/// values that contradict each other (`a=1` and `a.b=2`). Whether a `--set` reaches into a
/// data file that holds a map is known only once the file is read ([`build`]).
pub fn validate(data: &[DataFile], set: &[(String, String)]) -> std::result::Result<(), Invalid> {
    for (index, file) in data.iter().enumerate() {
        if data[..index].iter().any(|other| other.name == file.name) {
            return Err(Invalid {
                arg: "--data <NAME=FILE>".into(),
                value: format!("{}={}", file.name, file.path.display()),
                reason: format!("'{}' is given twice", file.name),
            });
        }
    }
    let mut root = Node::Map(IndexMap::new());
    for (key, value) in set {
        let top = key.split('.').next().unwrap_or_default();
        if data.iter().any(|file| file.name == top) {
            continue;
        }
        insert(&mut root, key, value).map_err(|reason| set_invalid(key, value, reason))?;
    }
    Ok(())
}

fn set_invalid(key: &str, value: &str, reason: String) -> Invalid {
    Invalid {
        arg: "--set <KEY=VALUE>".into(),
        value: format!("{key}={value}"),
        reason,
    }
}

/// Builds the context from the environment, the data files and the `--set` values
/// (checked first by [`validate`]).
pub fn build(data: &[DataFile], set: &[(String, String)]) -> Result<Value> {
    let mut root = IndexMap::new();
    root.insert(ENV.to_owned(), Node::Leaf(Environ::from_process()));
    for file in data {
        root.insert(file.name.clone(), Node::Leaf(load(file)?));
    }
    let mut root = Node::Map(root);
    for (key, value) in set {
        insert(&mut root, key, value)
            .map_err(|reason| Error::Usage(set_invalid(key, value, reason).to_string()))?;
    }
    Ok(root.into_value())
}

/// Sets `key` (dotted) to `value`; Err says why the key cannot be set.
fn insert(root: &mut Node, key: &str, value: &str) -> std::result::Result<(), String> {
    let segments: Vec<&str> = key.split('.').collect();
    let mut node = root;
    for (depth, segment) in segments.iter().enumerate() {
        let Some(map) = node.as_map() else {
            return Err(format!(
                "{} is a value, not a map",
                segments[..depth].join(".")
            ));
        };
        let last = depth + 1 == segments.len();
        if last {
            if let Some(Node::Map(_)) = map.get(*segment) {
                return Err(format!("{key} is a map; set its keys instead"));
            }
            map.insert((*segment).to_owned(), Node::Leaf(Value::from(value)));
            return Ok(());
        }
        node = map
            .entry((*segment).to_owned())
            .or_insert_with(|| Node::Map(IndexMap::new()));
    }
    unreachable!("a key has at least one segment")
}

/// Reads and parses one data file; any failure is a configuration error naming the file.
fn load(file: &DataFile) -> Result<Value> {
    let what = format!("--data {}={}", file.name, file.path.display());
    let text = std::fs::read(&file.path)
        .map_err(|e| Error::Config(format!("reading {what}: {}", reason::io(&e))))?;
    let text = String::from_utf8(text)
        .map_err(|_| Error::Config(format!("reading {what}: the file is not UTF-8 text")))?;
    // One line each, without the parsers' source excerpts: a data file may hold secrets.
    let parsed = match file.format {
        Format::Json => serde_json::from_str::<Value>(&text).map_err(|e| e.to_string()),
        // The pipeline's reader: YAML 1.2 core schema typing, duplicate keys refused.
        Format::Yaml => crate::pipeline::yaml::parse(&text)
            .map(from_yaml)
            .map_err(|e| e.to_string()),
        Format::Toml => toml::from_str::<toml::Table>(&text)
            .map(|table| from_toml(toml::Value::Table(table)))
            .map_err(|e| match e.span() {
                Some(span) => {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("line {line} column {column}: {}", e.message().trim_end())
                }
                None => e.message().trim_end().to_owned(),
            }),
    };
    parsed.map_err(|reason| {
        Error::Config(format!(
            "reading {what}: invalid {}: {}",
            file.format,
            reason.trim_end().replace('\n', " ")
        ))
    })
}

/// YAML as template values: numbers as the integers or floats they are, keys as text.
pub(super) fn from_yaml(node: crate::pipeline::yaml::Node) -> Value {
    use crate::pipeline::yaml::{NumberValue, Value as Yaml};
    match node.value {
        Yaml::Null => Value::from(()),
        Yaml::Bool(b) => Value::from(b),
        Yaml::Number(number) => match number.value {
            NumberValue::Int(i) => match i64::try_from(i) {
                Ok(i) => Value::from(i),
                Err(_) => Value::from(i),
            },
            NumberValue::Float(f) => Value::from(f),
        },
        Yaml::Text(text) => Value::from(text),
        Yaml::List(items) => items.into_iter().map(from_yaml).collect(),
        Yaml::Map(entries) => Value::from_object(
            entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), from_yaml(v)))
                .collect::<IndexMap<Value, Value>>(),
        ),
    }
}

/// TOML as template values; dates and times become their TOML text (`1979-05-27T07:32:00Z`).
fn from_toml(value: toml::Value) -> Value {
    match value {
        toml::Value::String(s) => Value::from(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => Value::from(f),
        toml::Value::Boolean(b) => Value::from(b),
        toml::Value::Datetime(d) => Value::from(d.to_string()),
        toml::Value::Array(items) => items.into_iter().map(from_toml).collect(),
        toml::Value::Table(table) => Value::from_object(
            table
                .into_iter()
                .map(|(k, v)| (Value::from(k), from_toml(v)))
                .collect::<IndexMap<Value, Value>>(),
        ),
    }
}

/// `env`: the environment (the process's, plus a pipeline's `env:` map) as a map (`{{ env.HOME }}`, `{% for k, v in env|items %}`)
/// that can also be called (`{{ env("PORT", "8080") }}`), as gomplate and dockerize users
/// expect. One object serves both because a context variable would hide a global function
/// of the same name.
#[derive(Debug)]
pub struct Environ(BTreeMap<String, Value>);

impl Environ {
    /// An empty environment, for tests.
    #[cfg(test)]
    pub fn empty() -> Environ {
        Environ(BTreeMap::new())
    }

    fn from_process() -> Value {
        // A variable whose name or value is not UTF-8 cannot be used in a template anyway.
        let vars = crate::expand::environment()
            .into_iter()
            .map(|(k, v)| (k, Value::from(v)))
            .collect();
        Value::from_object(Environ(vars))
    }
}

impl Object for Environ {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        ObjectRepr::Map
    }

    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.get(key.as_str()?).cloned()
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        self.mapped_rev_key_value_enumerator(|this| {
            Box::new(
                this.0
                    .iter()
                    .map(|(k, v)| (Value::from(k.as_str()), v.clone())),
            )
        })
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.len())
    }

    /// `env("NAME")` or `env("NAME", default)`.
    fn call(
        self: &Arc<Self>,
        _state: &mut State<'_, '_>,
        args: &[Value],
    ) -> Result<Value, JinjaError> {
        for arg in args {
            super::engine::reject_undefined(arg)?;
        }
        let (name, default): (&str, Option<Value>) = from_args(args)?;
        match (self.0.get(name), default) {
            (Some(value), _) => Ok(value.clone()),
            (None, Some(default)) => Ok(default),
            (None, None) => Err(super::engine::own_error(format!(
                "environment variable {name} is not set (give a default: env(\"{name}\", \"…\"))"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_arguments() {
        let data = parse_data("db=/config/db.yml").unwrap();
        assert_eq!(data.name, "db");
        assert_eq!(data.format, Format::Yaml);
        assert_eq!(parse_data("x=a.JSON").unwrap().format, Format::Json);
        assert_eq!(parse_data("x=a.toml").unwrap().format, Format::Toml);
        for bad in [
            "db",
            "db=a.ini",
            "1db=a.json",
            "my-db=a.json",
            "=a.json",
            "env=a.json",
        ] {
            assert!(parse_data(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn set_arguments() {
        assert_eq!(
            parse_set("db.host=a=b").unwrap(),
            ("db.host".into(), "a=b".into())
        );
        assert_eq!(parse_set("x=").unwrap(), ("x".into(), "".into()));
        for bad in ["x", "=x", "db..host=x", ".x=1", "env.HOME=/", "env=1"] {
            assert!(parse_set(bad).is_err(), "{bad}");
        }
    }

    fn render(context: &Value, template: &str) -> String {
        let env = minijinja::Environment::new();
        env.render_str(template, context).unwrap()
    }

    #[test]
    fn dotted_keys_build_maps_and_reach_into_data() {
        let mut root = Node::Map(IndexMap::new());
        root.as_map().unwrap().insert(
            "db".into(),
            Node::Leaf(serde_json::from_str(r#"{"host": "a", "port": 5432}"#).unwrap()),
        );
        insert(&mut root, "db.port", "5433").unwrap();
        insert(&mut root, "app.log.level", "debug").unwrap();
        insert(&mut root, "app.name", "web").unwrap();
        let context = root.into_value();
        assert_eq!(
            render(
                &context,
                "{{ db.host }}:{{ db.port }} {{ app.log.level }} {{ app.name }}"
            ),
            "a:5433 debug web"
        );
        // Data keys keep their order; the overridden one stays in place.
        assert_eq!(render(&context, "{{ db|list|join(',') }}"), "host,port");
    }

    #[test]
    fn conflicting_keys_are_usage_errors() {
        let mut root = Node::Map(IndexMap::new());
        insert(&mut root, "a", "1").unwrap();
        let error = insert(&mut root, "a.b", "2").unwrap_err();
        assert!(
            error.to_string().contains("a is a value, not a map"),
            "{error}"
        );
        insert(&mut root, "m.x", "1").unwrap();
        let error = insert(&mut root, "m", "2").unwrap_err();
        assert!(error.to_string().contains("m is a map"), "{error}");
        insert(&mut root, "a", "3").unwrap();
        assert_eq!(render(&root.into_value(), "{{ a }}"), "3");
    }

    #[test]
    fn toml_dates_are_text() {
        let table: toml::Table = toml::from_str("when = 1979-05-27T07:32:00Z\nn = [1, 2]").unwrap();
        let value = from_toml(toml::Value::Table(table));
        assert_eq!(
            render(&value, "{{ when }} {{ n|sum }}"),
            "1979-05-27T07:32:00Z 3"
        );
    }
}
