//! `$(VAR)` expansion with the rules of Kubernetes `command`/`args`, so the Downward API
//! variables (`$(POD_NAME)`, `$(POD_IP)`, …) mean the same in initbox as in a manifest.
//!
//! `$(NAME)` is replaced by the variable's value; `$$` is a literal `$` (so `$$(NAME)`
//! stays `$(NAME)`); a `$` followed by anything else is kept as written. Unlike Kubernetes,
//! which leaves an unknown `$(NAME)` alone, an undefined variable is an error: a pod that
//! registers as the literal `$(POD_IP)` is worse than one that does not start.

use std::fmt;

use crate::exit::{Error, Result};

/// A `$(NAME)` whose variable is not defined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undefined(pub String);

impl fmt::Display for Undefined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "undefined variable $({})", self.0)
    }
}

impl std::error::Error for Undefined {}

/// Expands `text`, looking variables up with `lookup`.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, Undefined> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => return Err(Undefined(name.to_owned())),
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A variable of the environment a task sees: the pipeline's `env:` map, then the process.
pub fn var(name: &str) -> Option<String> {
    crate::step::current()
        .and_then(|step| {
            step.env
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        })
        .or_else(|| std::env::var(name).ok())
}

/// The whole environment a task sees (variables that are not UTF-8 are left out).
pub fn environment() -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    if let Some(step) = crate::step::current() {
        for (name, value) in step.env.iter() {
            vars.retain(|(n, _)| n != name);
            vars.push((name.clone(), value.clone()));
        }
    }
    vars
}

/// Expands from the environment a task sees; inside a pipeline step, returns the text as it
/// is (the pipeline expands every value once, when the file is read, so a literal
/// `$$(VAR)` there stays `$(VAR)`).
pub fn from_env(text: &str) -> Result<String, Undefined> {
    if crate::step::current().is_some() {
        return Ok(text.to_owned());
    }
    expand(text, var)
}

/// `$(VAR)` expansion of one flag's value; an undefined variable is a configuration error
/// naming the flag (and never the value, which may hold a secret).
pub fn flag(text: &str, flag: &str) -> Result<String> {
    from_env(text).map_err(|undefined| Error::Config(format!("{flag}: {undefined}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "POD_NAME" => Some("web-7d9f".into()),
            "POD_IP" => Some("10.1.2.3".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn kubernetes_rules() {
        let cases = [
            (
                "instance=$(POD_NAME)&ip=$(POD_IP)",
                "instance=web-7d9f&ip=10.1.2.3",
            ),
            ("$$(POD_NAME)", "$(POD_NAME)"),
            ("$$$(POD_NAME)", "$web-7d9f"),
            ("cost: $5, $$ and $", "cost: $5, $ and $"),
            ("$(EMPTY)x", "x"),
            ("open $(POD_NAME", "open $(POD_NAME"),
            ("no variables", "no variables"),
            ("", ""),
            ("ünïcode $(POD_IP) ✓", "ünïcode 10.1.2.3 ✓"),
        ];
        for (input, expected) in cases {
            assert_eq!(expand(input, vars).as_deref(), Ok(expected), "{input}");
        }
    }

    #[test]
    fn undefined_is_an_error_naming_the_variable() {
        let error = expand("http://$(MGMT_HOST):80/", vars).unwrap_err();
        assert_eq!(error.to_string(), "undefined variable $(MGMT_HOST)");
        assert!(expand("$$(MGMT_HOST)", vars).is_ok());
    }
}
