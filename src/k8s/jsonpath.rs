//! The part of kubectl's JSONPath that `--for jsonpath=` needs: fields (`.status.phase`,
//! `['a.b/c']`), indexes (`[0]`, `[-1]`), `[*]` and filters (`[?(@.type=="Ready")]`), with
//! or without the surrounding `{}`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(i64),
    All,
    /// `[?(@.PATH==VALUE)]` (or `!=`).
    Filter {
        path: Vec<Step>,
        equal: bool,
        value: String,
    },
}

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath {
    text: String,
    steps: Vec<Step>,
}

impl std::fmt::Display for JsonPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let inner = text.trim();
        let inner = match inner.strip_prefix('{') {
            Some(rest) => rest
                .strip_suffix('}')
                .ok_or_else(|| format!("'{text}': a '{{' without its '}}'"))?,
            None => inner,
        };
        let inner = inner.strip_prefix('$').unwrap_or(inner);
        let steps = steps(inner).map_err(|reason| format!("'{text}': {reason}"))?;
        if steps.is_empty() {
            return Err(format!("'{text}': an empty path"));
        }
        Ok(JsonPath {
            text: text.trim().to_owned(),
            steps,
        })
    }

    /// Every value the path selects in `root`.
    pub fn select<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        select(&self.steps, root)
    }
}

fn select<'a>(steps: &[Step], root: &'a Value) -> Vec<&'a Value> {
    let mut current = vec![root];
    for step in steps {
        let mut next = Vec::new();
        for value in current {
            match step {
                Step::Field(name) => next.extend(value.get(name)),
                Step::Index(index) => {
                    if let Some(items) = value.as_array() {
                        let at = if *index < 0 {
                            items.len().checked_sub(index.unsigned_abs() as usize)
                        } else {
                            Some(*index as usize)
                        };
                        next.extend(at.and_then(|at| items.get(at)));
                    }
                }
                Step::All => match value {
                    Value::Array(items) => next.extend(items.iter()),
                    Value::Object(map) => next.extend(map.values()),
                    _ => {}
                },
                Step::Filter { path, equal, value: wanted } => {
                    if let Some(items) = value.as_array() {
                        next.extend(items.iter().filter(|item| {
                            let matched = select(path, item)
                                .iter()
                                .any(|found| scalar_text(found).as_deref() == Some(wanted));
                            matched == *equal
                        }));
                    }
                }
            }
        }
        current = next;
    }
    current
}

/// A value as kubectl prints it for comparison: strings bare, numbers and booleans as
/// JSON, nothing for objects and lists.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Number(number) => Some(number.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn steps(text: &str) -> Result<Vec<Step>, String> {
    let bytes = text.as_bytes();
    let mut steps = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'.' => {
                at += 1;
                let end = text[at..]
                    .find(['.', '['])
                    .map_or(text.len(), |offset| at + offset);
                let name = &text[at..end];
                if name.is_empty() {
                    return Err("an empty field name".into());
                }
                if name == "*" {
                    steps.push(Step::All);
                } else {
                    steps.push(Step::Field(name.to_owned()));
                }
                at = end;
            }
            b'[' => {
                let end = closing_bracket(text, at)?;
                steps.push(bracket(&text[at + 1..end])?);
                at = end + 1;
            }
            _ if steps.is_empty() => {
                // `status.phase` without the leading dot, as kubectl also takes it.
                let end = text.find(['.', '[']).unwrap_or(text.len());
                steps.push(Step::Field(text[..end].to_owned()));
                at = end;
            }
            other => return Err(format!("unexpected '{}'", other as char)),
        }
    }
    Ok(steps)
}

/// The `]` that closes the `[` at `open`, skipping quoted text.
fn closing_bracket(text: &str, open: usize) -> Result<usize, String> {
    let mut quote = None;
    for (offset, c) in text[open + 1..].char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ']') => return Ok(open + 1 + offset),
            _ => {}
        }
    }
    Err("a '[' without its ']'".into())
}

fn bracket(inside: &str) -> Result<Step, String> {
    let inside = inside.trim();
    if inside == "*" {
        return Ok(Step::All);
    }
    if let Some(quoted) = unquote(inside) {
        return Ok(Step::Field(quoted));
    }
    if let Ok(index) = inside.parse::<i64>() {
        return Ok(Step::Index(index));
    }
    let filter = inside
        .strip_prefix("?(")
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("'[{inside}]' is neither an index, a name nor a filter"))?;
    let (path, equal, value) = if let Some((path, value)) = filter.split_once("!=") {
        (path, false, value)
    } else if let Some((path, value)) = filter.split_once("==") {
        (path, true, value)
    } else {
        return Err(format!("the filter '{filter}' needs == or !="));
    };
    let path = path
        .trim()
        .strip_prefix('@')
        .ok_or_else(|| format!("the filter '{filter}' must start with @"))?;
    let value = value.trim();
    let value = unquote(value).unwrap_or_else(|| value.to_owned());
    Ok(Step::Filter {
        path: steps(path)?,
        equal,
        value,
    })
}

fn unquote(text: &str) -> Option<String> {
    for quote in ['\'', '"'] {
        if let Some(inner) = text
            .strip_prefix(quote)
            .and_then(|rest| rest.strip_suffix(quote))
        {
            return Some(inner.to_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn texts(path: &str, value: &Value) -> Vec<String> {
        JsonPath::parse(path)
            .unwrap()
            .select(value)
            .into_iter()
            .filter_map(scalar_text)
            .collect()
    }

    #[test]
    fn paths_select_as_kubectl_selects() {
        let pod = json!({
            "metadata": { "labels": { "app.kubernetes.io/name": "web" } },
            "status": {
                "phase": "Running",
                "conditions": [
                    { "type": "PodScheduled", "status": "True" },
                    { "type": "Ready", "status": "False" },
                ],
                "containerStatuses": [{ "restartCount": 3, "ready": true }],
            }
        });
        assert_eq!(texts("{.status.phase}", &pod), ["Running"]);
        assert_eq!(texts(".status.phase", &pod), ["Running"]);
        assert_eq!(texts("status.phase", &pod), ["Running"]);
        assert_eq!(
            texts(r#"{.status.conditions[?(@.type=="Ready")].status}"#, &pod),
            ["False"]
        );
        assert_eq!(texts("{.status.conditions[-1].type}", &pod), ["Ready"]);
        assert_eq!(
            texts("{.status.conditions[*].type}", &pod),
            ["PodScheduled", "Ready"]
        );
        assert_eq!(
            texts("{.status.containerStatuses[0].restartCount}", &pod),
            ["3"]
        );
        assert_eq!(
            texts("{.metadata.labels['app.kubernetes.io/name']}", &pod),
            ["web"]
        );
        assert!(texts("{.status.missing}", &pod).is_empty());
    }

    #[test]
    fn malformed_paths_are_refused() {
        for bad in ["{.status", "", "{}", ".status[", ".a..b", "[?(@.x)]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }
}
