//! The pipeline file as a tree of YAML nodes that remember where they stand (line and
//! column), so every validation error can point at the offending key, as a compiler would.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

/// A position in the pipeline file (1-based).
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
    /// Numbers are kept as written-ish text: they end up as command-line values.
    Number(String),
    Text(String),
    List(Vec<Node>),
    /// Entries in file order, with the position of each key's value.
    Map(Vec<(String, Node)>),
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

    /// A scalar as text (`true`, `8080`, `2m`); `None` for lists, maps and null.
    pub fn scalar(&self) -> Option<String> {
        match self {
            Value::Bool(b) => Some(b.to_string()),
            Value::Number(n) => Some(n.clone()),
            Value::Text(t) => Some(t.clone()),
            _ => None,
        }
    }
}

/// A YAML syntax error, with its position when the parser gave one.
#[derive(Debug)]
pub struct SyntaxError {
    pub at: Option<At>,
    pub message: String,
}

/// Parses a whole document.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    match serde_saphyr::from_str::<Spanned<Raw>>(text) {
        Ok(spanned) => {
            let position = at(&spanned);
            Ok(spanned.value.0.into_node(position))
        }
        Err(error) => Err(syntax_error(&error.to_string())),
    }
}

/// serde-saphyr says `error: line 3 column 12: unclosed bracket '{'` and then draws the
/// source; keep the position and the first line of the message.
fn syntax_error(display: &str) -> SyntaxError {
    let first = display.lines().next().unwrap_or(display);
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let parsed = first.strip_prefix("line ").and_then(|rest| {
        let (line, rest) = rest.split_once(" column ")?;
        let (column, message) = rest.split_once(": ")?;
        Some((
            At {
                line: line.parse().ok()?,
                column: column.parse().ok()?,
            },
            message,
        ))
    });
    match parsed {
        Some((at, message)) => SyntaxError {
            at: Some(at),
            message: message.to_owned(),
        },
        None => SyntaxError {
            at: None,
            message: first.to_owned(),
        },
    }
}

fn at<T>(spanned: &Spanned<T>) -> At {
    At {
        line: spanned.referenced.line() as u32,
        column: spanned.referenced.column() as u32,
    }
}

/// The value as deserialized; positions are attached by the `Spanned` around every child.
/// (A derived untagged enum would lose them: serde buffers untagged content.)
struct Raw(RawValue);

enum RawValue {
    Null,
    Bool(bool),
    Number(String),
    Text(String),
    List(Vec<Spanned<Raw>>),
    Map(Vec<(String, Spanned<Raw>)>),
}

impl RawValue {
    fn into_node(self, at: At) -> Node {
        let value = match self {
            RawValue::Null => Value::Null,
            RawValue::Bool(b) => Value::Bool(b),
            RawValue::Number(n) => Value::Number(n),
            RawValue::Text(t) => Value::Text(t),
            RawValue::List(items) => Value::List(
                items
                    .into_iter()
                    .map(|item| {
                        let position = self::at(&item);
                        item.value.0.into_node(position)
                    })
                    .collect(),
            ),
            RawValue::Map(entries) => Value::Map(
                entries
                    .into_iter()
                    .map(|(key, item)| {
                        let position = self::at(&item);
                        (key, item.value.0.into_node(position))
                    })
                    .collect(),
            ),
        };
        Node { value, at }
    }
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor).map(Raw)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = RawValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<RawValue, E> {
        Ok(RawValue::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.to_string()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.to_string()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<RawValue, E> {
        Ok(RawValue::Number(v.to_string()))
    }

    fn visit_str<E>(self, v: &str) -> Result<RawValue, E> {
        Ok(RawValue::Text(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<RawValue, E> {
        Ok(RawValue::Text(v))
    }

    fn visit_unit<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }

    fn visit_none<E>(self) -> Result<RawValue, E> {
        Ok(RawValue::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element::<Spanned<Raw>>()? {
            items.push(item);
        }
        Ok(RawValue::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
        let mut entries: Vec<(String, Spanned<Raw>)> = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value::<Spanned<Raw>>()?;
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(de::Error::custom(format!("duplicate key '{key}'")));
            }
            entries.push((key, value));
        }
        Ok(RawValue::Map(entries))
    }
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
