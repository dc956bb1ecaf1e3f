//! The YAML reader of pipeline files and `template --data` files: a tree of nodes that
//! remember where they stand (line and column), so every validation error can point at the
//! offending key, as a compiler would.
//!
//! Values are typed by the YAML 1.2 core schema, as ruamel.yaml reads it in 1.2 mode (the
//! reference the tests compare with): only `true`/`false` (also `True`, `TRUE`…) are
//! booleans, so `y`, `no`, `on` stay text; `0644` is the integer 644 (octal is `0o644`) and
//! an integer never becomes a float; two keys that are the same value (`a` twice, `1` and
//! `0x1`, `true` and `True`) are an error, never an overwrite. Timestamps stay the text
//! they are written as. The parser is serde-saphyr's (granit); the typing is done here,
//! because its own is YAML 1.1's.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use regex::Regex;
use serde_saphyr::granit_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};

/// A position in the file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct At {
    pub line: u32,
    pub column: u32,
}

impl fmt::Display for At {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// One YAML value and where it starts.
#[derive(Debug, Clone)]
pub struct Node {
    pub value: Value,
    pub at: At,
}

#[derive(Debug, Clone)]
pub enum Value {
    Null,
    Bool(bool),
    Number(Number),
    Text(String),
    List(Vec<Node>),
    /// Entries in file order, with the position of each key's value. Keys are text, as
    /// written.
    Map(Vec<(String, Node)>),
}

/// A number: its value, and its text as written (`0o644`, `1_000`, `.5`), which is what a
/// pipeline step hands to the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Number {
    pub text: String,
    pub value: NumberValue,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum NumberValue {
    Int(i128),
    Float(f64),
}

impl Value {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "nothing",
            Value::Bool(_) => "a boolean",
            Value::Number(_) => "a number",
            Value::Text(_) => "a string",
            Value::List(_) => "a list",
            Value::Map(_) => "a map",
        }
    }

    /// A scalar as text (`true`, `8080`, `2m`; a number as written); `None` for lists,
    /// maps and null.
    pub fn scalar(&self) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.text.clone()),
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
}

/// A YAML error, with its position when there is one.
#[derive(Debug)]
pub struct SyntaxError {
    pub at: Option<At>,
    pub message: String,
}

impl SyntaxError {
    fn at(at: At, message: impl Into<String>) -> SyntaxError {
        SyntaxError {
            at: Some(at),
            message: message.into(),
        }
    }
}

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some(at) => write!(f, "line {} column {}: {}", at.line, at.column, self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// How many nodes aliases may copy in one document: far beyond any configuration, and a
/// stop for an alias bomb (a billion laughs).
const ALIAS_BUDGET: usize = 1_000_000;

/// Parses a whole document (one; an empty file is null).
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut composer = Composer {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        alias_budget: ALIAS_BUDGET,
    };
    let start = At { line: 1, column: 1 };
    let mut root = None;
    while let Some((event, span)) = composer.next()? {
        match event {
            Event::StreamStart | Event::DocumentEnd | Event::Comment(..) => {}
            Event::StreamEnd => break,
            Event::DocumentStart(..) => {
                if root.is_some() {
                    return Err(SyntaxError::at(
                        at(&span),
                        "a second YAML document: the file must hold one",
                    ));
                }
                let Some((event, span)) = composer.next_node_event()? else {
                    break;
                };
                root = Some(composer.compose(event, span)?);
            }
            event => {
                return Err(SyntaxError::at(at(&span), format!("unexpected {event:?}")));
            }
        }
    }
    Ok(root.unwrap_or(Node {
        value: Value::Null,
        at: start,
    }))
}

fn at(span: &Span) -> At {
    At {
        line: span.start.line() as u32,
        column: span.start.col() as u32 + 1,
    }
}

/// The parser's message without its own position suffix (the position is kept apart).
fn scan_error(error: &ScanError) -> SyntaxError {
    let marker = error.marker();
    SyntaxError::at(
        At {
            line: marker.line() as u32,
            column: marker.col() as u32 + 1,
        },
        error.info(),
    )
}

struct Composer<'a> {
    parser: Parser<'a, serde_saphyr::granit_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    alias_budget: usize,
}

/// A key as the value it is, to find two keys that are the same (`1` and `0x1`).
#[derive(PartialEq)]
enum KeyIdentity {
    Null,
    Bool(bool),
    Int(i128),
    Float(u64),
    Text(String),
}

impl KeyIdentity {
    fn of(value: &Value) -> Option<KeyIdentity> {
        Some(match value {
            Value::Null => KeyIdentity::Null,
            Value::Bool(b) => KeyIdentity::Bool(*b),
            Value::Number(Number {
                value: NumberValue::Int(i),
                ..
            }) => KeyIdentity::Int(*i),
            Value::Number(Number {
                value: NumberValue::Float(f),
                ..
            }) => KeyIdentity::Float(f.to_bits()),
            Value::Text(t) => KeyIdentity::Text(t.clone()),
            Value::List(_) | Value::Map(_) => return None,
        })
    }
}

impl<'a> Composer<'a> {
    fn next(&mut self) -> Result<Option<(Event<'a>, Span)>, SyntaxError> {
        match self.parser.next_event() {
            None => Ok(None),
            Some(Ok(event)) => Ok(Some(event)),
            Some(Err(error)) => Err(scan_error(&error)),
        }
    }

    /// The next event that is part of the data (comments skipped).
    fn next_node_event(&mut self) -> Result<Option<(Event<'a>, Span)>, SyntaxError> {
        loop {
            match self.next()? {
                Some((Event::Comment(..), _)) => continue,
                other => return Ok(other),
            }
        }
    }

    fn expect_node_event(&mut self) -> Result<(Event<'a>, Span), SyntaxError> {
        self.next_node_event()?.ok_or_else(|| SyntaxError {
            at: None,
            message: "unexpected end of the file".into(),
        })
    }

    fn compose(&mut self, event: Event<'a>, span: Span) -> Result<Node, SyntaxError> {
        let position = at(&span);
        let (node, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let value = resolve(&text, style, tag.as_deref(), position)?;
                (
                    Node {
                        value,
                        at: position,
                    },
                    anchor,
                )
            }
            Event::SequenceStart(_, anchor, tag) => {
                collection_tag(tag.as_deref(), "seq", position)?;
                let mut items = Vec::new();
                loop {
                    let (event, span) = self.expect_node_event()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.compose(event, span)?);
                }
                (
                    Node {
                        value: Value::List(items),
                        at: position,
                    },
                    anchor,
                )
            }
            Event::MappingStart(_, anchor, tag) => {
                collection_tag(tag.as_deref(), "map", position)?;
                (self.mapping(position)?, anchor)
            }
            Event::Alias(id) => {
                let node = self.anchors.get(&id).cloned().ok_or_else(|| {
                    SyntaxError::at(position, "an alias to an anchor not defined before it")
                })?;
                let size = count(&node);
                if size > self.alias_budget {
                    return Err(SyntaxError::at(
                        position,
                        "aliases copy too many values (more than a million)",
                    ));
                }
                self.alias_budget -= size;
                // Where the alias stands, for messages; the copy keeps its own positions.
                return Ok(Node {
                    value: node.value,
                    at: position,
                });
            }
            event => {
                return Err(SyntaxError::at(position, format!("unexpected {event:?}")));
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }

    /// The entries of a mapping; `<<` merges (as ruamel.yaml does): the mapping's own keys
    /// win over merged ones, and among merged mappings the first wins.
    fn mapping(&mut self, position: At) -> Result<Node, SyntaxError> {
        let mut own: Vec<(String, Node, KeyIdentity, At)> = Vec::new();
        let mut merged: Vec<(String, Node)> = Vec::new();
        loop {
            let (event, span) = self.expect_node_event()?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let key_at = at(&span);
            let is_merge = matches!(
                &event,
                Event::Scalar(text, ScalarStyle::Plain, _, None) if text == "<<"
            );
            // A key is named as written (`True`, `0x1`), not as the value it is.
            let written = match &event {
                Event::Scalar(text, ..) => Some(text.to_string()),
                _ => None,
            };
            let key = self.compose(event, span)?;
            let (event, span) = self.expect_node_event()?;
            let value = self.compose(event, span)?;
            if is_merge {
                let sources = match value.value {
                    Value::Map(_) => vec![value],
                    Value::List(items) => items,
                    _ => {
                        return Err(SyntaxError::at(
                            value.at,
                            "a merge (<<) takes a mapping or a list of mappings",
                        ));
                    }
                };
                for source in sources {
                    let Value::Map(entries) = source.value else {
                        return Err(SyntaxError::at(
                            source.at,
                            "a merge (<<) takes a mapping or a list of mappings",
                        ));
                    };
                    for (name, node) in entries {
                        if !merged.iter().any(|(n, _)| *n == name) {
                            merged.push((name, node));
                        }
                    }
                }
                continue;
            }
            let Some(identity) = KeyIdentity::of(&key.value) else {
                return Err(SyntaxError::at(
                    key_at,
                    "a key must be a single value, not a list or a map",
                ));
            };
            let name = written.unwrap_or_else(|| key.value.scalar().unwrap_or_default());
            if let Some((first, _, _, first_at)) =
                own.iter().find(|(_, _, other, _)| *other == identity)
            {
                let same = if *first == name {
                    format!("'{name}'")
                } else {
                    format!("'{name}' (the same key as '{first}')")
                };
                return Err(SyntaxError::at(
                    key_at,
                    format!(
                        "duplicate key {same}, first at line {} column {}",
                        first_at.line, first_at.column
                    ),
                ));
            }
            own.push((name, value, identity, key_at));
        }
        let mut entries: Vec<(String, Node)> = merged
            .into_iter()
            .filter(|(name, _)| !own.iter().any(|(n, _, _, _)| n == name))
            .collect();
        entries.extend(own.into_iter().map(|(name, node, _, _)| (name, node)));
        Ok(Node {
            value: Value::Map(entries),
            at: position,
        })
    }
}

fn count(node: &Node) -> usize {
    1 + match &node.value {
        Value::List(items) => items.iter().map(count).sum(),
        Value::Map(entries) => entries.iter().map(|(_, node)| count(node)).sum(),
        _ => 0,
    }
}

fn collection_tag(tag: Option<&Tag>, expected: &str, at: At) -> Result<(), SyntaxError> {
    match tag {
        None => Ok(()),
        Some(tag) if tag.is_yaml_core_schema_tag(expected) => Ok(()),
        Some(tag) => Err(SyntaxError::at(
            at,
            format!("the tag {} is not supported here", tag.original()),
        )),
    }
}

/// The YAML 1.2 core schema's patterns, as ruamel.yaml writes them for 1.2.
struct Patterns {
    int: Regex,
    float: Regex,
}

fn patterns() -> &'static Patterns {
    static PATTERNS: OnceLock<Patterns> = OnceLock::new();
    PATTERNS.get_or_init(|| Patterns {
        int: Regex::new(
            r"^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+)$",
        )
        .expect("a valid pattern"),
        float: Regex::new(
            r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        )
        .expect("a valid pattern"),
    })
}

/// A scalar's value: plain scalars are typed by the core schema, quoted and block ones are
/// text, and a core tag (`!!str`, `!!int`…) says what it says.
fn resolve(
    text: &str,
    style: ScalarStyle,
    tag: Option<&Tag>,
    at: At,
) -> Result<Value, SyntaxError> {
    let number = |value| {
        Value::Number(Number {
            text: text.to_owned(),
            value,
        })
    };
    let tag_suffix = match tag {
        None => None,
        // `! x`: the non-specific tag, a string.
        Some(tag) if tag.original() == "!" => Some("str"),
        Some(tag) => match tag.core_suffix() {
            Some(suffix) => Some(suffix),
            None => {
                return Err(SyntaxError::at(
                    at,
                    format!("the tag {} is not supported", tag.original()),
                ));
            }
        },
    };
    let wrong = |what: &str| Err(SyntaxError::at(at, format!("'{text}' is not {what}")));
    match tag_suffix {
        Some("str") => return Ok(Value::Text(text.to_owned())),
        Some("null") => return Ok(Value::Null),
        Some("bool") => {
            return match core_bool(text) {
                Some(b) => Ok(Value::Bool(b)),
                None => wrong("a boolean (true or false)"),
            };
        }
        Some("int") => {
            return match core_int(text, at)? {
                Some(i) => Ok(number(NumberValue::Int(i))),
                None => wrong("an integer"),
            };
        }
        Some("float") => {
            if let Some(f) = core_float(text) {
                return Ok(number(NumberValue::Float(f)));
            }
            return match core_int(text, at)? {
                Some(i) => Ok(number(NumberValue::Float(i as f64))),
                None => wrong("a number"),
            };
        }
        Some(other) => {
            return Err(SyntaxError::at(
                at,
                format!("the tag !!{other} is not supported on a single value"),
            ));
        }
        None => {}
    }
    if style != ScalarStyle::Plain {
        return Ok(Value::Text(text.to_owned()));
    }
    if matches!(text, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if let Some(b) = core_bool(text) {
        return Ok(Value::Bool(b));
    }
    if let Some(i) = core_int(text, at)? {
        return Ok(number(NumberValue::Int(i)));
    }
    if let Some(f) = core_float(text) {
        return Ok(number(NumberValue::Float(f)));
    }
    Ok(Value::Text(text.to_owned()))
}

fn core_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

/// An integer of the core schema; too large for 128 bits is an error, not a float.
fn core_int(text: &str, at: At) -> Result<Option<i128>, SyntaxError> {
    if !patterns().int.is_match(text) {
        return Ok(None);
    }
    let digits: String = text.chars().filter(|c| *c != '_').collect();
    let (negative, digits) = match digits.strip_prefix('-') {
        Some(rest) => (true, rest.to_owned()),
        None => (
            false,
            digits.strip_prefix('+').unwrap_or(&digits).to_owned(),
        ),
    };
    let (radix, digits) = if let Some(rest) = digits.strip_prefix("0b") {
        (2, rest)
    } else if let Some(rest) = digits.strip_prefix("0x") {
        (16, rest)
    } else if let Some(rest) = digits.strip_prefix("0o") {
        (8, rest)
    } else {
        (10, digits.as_str())
    };
    if digits.is_empty() {
        return Ok(None);
    }
    let signed = if negative {
        format!("-{digits}")
    } else {
        digits.to_owned()
    };
    match i128::from_str_radix(&signed, radix) {
        Ok(value) => Ok(Some(value)),
        Err(_) => Err(SyntaxError::at(
            at,
            format!("the integer {text} is too large (more than 128 bits)"),
        )),
    }
}

fn core_float(text: &str) -> Option<f64> {
    if !patterns().float.is_match(text) {
        return None;
    }
    let cleaned: String = text.chars().filter(|c| *c != '_').collect();
    let unsigned = cleaned.trim_start_matches(['-', '+']);
    let negative = cleaned.starts_with('-');
    let value = match unsigned.to_ascii_lowercase().as_str() {
        ".inf" => f64::INFINITY,
        ".nan" => f64::NAN,
        _ => unsigned.parse::<f64>().ok()?,
    };
    Some(if negative { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_knows_its_position() {
        let text = "restartPolicy: Never\nsteps:\n  - name: one\n    sleep: {duration: 1.5}\n";
        let root = parse(text).unwrap();
        let Value::Map(top) = &root.value else {
            panic!("a map")
        };
        assert_eq!(top[0].0, "restartPolicy");
        assert_eq!(
            top[0].1.at,
            At {
                line: 1,
                column: 16
            }
        );
        let Value::List(steps) = &top[1].1.value else {
            panic!("a list")
        };
        let Value::Map(step) = &steps[0].value else {
            panic!("a map")
        };
        let Value::Map(task) = &step[1].1.value else {
            panic!("a map")
        };
        assert_eq!(task[0].0, "duration");
        assert_eq!(task[0].1.value.scalar().as_deref(), Some("1.5"));
        assert_eq!(
            task[0].1.at,
            At {
                line: 4,
                column: 23
            }
        );
    }

    #[test]
    fn syntax_errors_keep_their_position() {
        let error = parse("steps:\n  - name: x\n    sleep: {duration: 1\n").unwrap_err();
        assert_eq!(
            error.at,
            Some(At {
                line: 3,
                column: 12
            })
        );
        assert!(error.message.contains("unclosed"), "{}", error.message);
        let duplicate = parse("a: 1\na: 2\n").unwrap_err();
        assert!(
            duplicate.message.contains("duplicate"),
            "{}",
            duplicate.message
        );
    }
}
