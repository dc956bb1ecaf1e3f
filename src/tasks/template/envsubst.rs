//! `template --syntax envsubst`: the `envsubst < app.conf.tmpl > app.conf` of init
//! containers, with GNU envsubst's output wherever GNU defines it, and two changes that are
//! the point: a variable that is not set is an error naming it and the line (GNU prints an
//! empty string, the bug users hit), and the shell's `${VAR:-default}` and `${VAR:?message}`
//! work (GNU leaves them as written).
//!
//! GNU's rules, kept byte for byte: a variable is `$NAME` or `${NAME}` with NAME made of
//! ASCII letters, digits and `_`, not starting with a digit; anything else after a `$` (`$1`,
//! `$$`, `${ A}`, a `${A` never closed) is copied as it is; with a SHELL-FORMAT (`--allow`),
//! a variable not in it is copied as it is too. The text is searched for `$` with memchr and
//! copied in runs between them, which is what makes it faster than GNU's getc loop.

use std::collections::{HashMap, HashSet};

use crate::exit::{Error, Result};

/// One `--allow` value: the variables it names (one name, or GNU's SHELL-FORMAT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow(pub Vec<String>);

/// Parses `--allow`: `DB_HOST`, or GNU envsubst's SHELL-FORMAT (`'$DB_HOST ${DB_PORT}'`), whose
/// variables are found as GNU finds them.
pub fn parse_allow(text: &str) -> std::result::Result<Allow, String> {
    if !text.contains('$') {
        if is_name(text.as_bytes()) {
            return Ok(Allow(vec![text.to_owned()]));
        }
        return Err(format!(
            "'{text}' is not a variable name (letters, digits and _, not starting with a \
             digit) nor a SHELL-FORMAT such as '$A ${{B}}'"
        ));
    }
    let names = shell_format_variables(text);
    if names.is_empty() {
        return Err(format!(
            "'{text}' names no variable: write '$NAME' or '${{NAME}}' for each"
        ));
    }
    Ok(Allow(names))
}

/// The variables of a SHELL-FORMAT, as GNU envsubst's `find_variables` reads them: each
/// `$NAME` and each `${NAME}` (a `${NAME` not closed names nothing).
fn shell_format_variables(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut names = Vec::new();
    let mut at = 0;
    while let Some(found) = memchr::memchr(b'$', &bytes[at..]) {
        let mut start = at + found + 1;
        let brace = bytes.get(start) == Some(&b'{');
        if brace {
            start += 1;
        }
        let end = name_end(bytes, start);
        at = start;
        if end == start {
            continue;
        }
        at = end;
        if brace {
            if bytes.get(end) != Some(&b'}') {
                continue;
            }
            at = end + 1;
        }
        names.push(text[start..end].to_owned());
    }
    names
}

fn is_name_start(byte: u8) -> bool {
    byte.is_ascii_alphabetic() || byte == b'_'
}

fn is_name(bytes: &[u8]) -> bool {
    bytes.first().is_some_and(|&b| is_name_start(b)) && name_end(bytes, 0) == bytes.len()
}

/// Where the name starting at `start` ends (`start` itself when there is none).
fn name_end(bytes: &[u8], start: usize) -> usize {
    match bytes.get(start) {
        Some(&b) if is_name_start(b) => {}
        _ => return start,
    }
    let mut end = start + 1;
    while bytes
        .get(end)
        .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
    {
        end += 1;
    }
    end
}

/// The variables a render sees, and which of them it may substitute.
pub struct Variables {
    values: HashMap<String, String>,
    /// `None`: every variable (GNU envsubst without a SHELL-FORMAT).
    allowed: Option<HashSet<String>>,
}

impl Variables {
    /// The environment a task sees (the process's, plus a pipeline step's `env:`).
    pub fn from_environment(allow: &[Allow]) -> Variables {
        Variables::new(crate::expand::environment(), allow)
    }

    pub fn new(values: impl IntoIterator<Item = (String, String)>, allow: &[Allow]) -> Variables {
        let allowed =
            (!allow.is_empty()).then(|| allow.iter().flat_map(|a| a.0.iter().cloned()).collect());
        Variables {
            values: values.into_iter().collect(),
            allowed,
        }
    }

    fn allows(&self, name: &str) -> bool {
        self.allowed.as_ref().is_none_or(|set| set.contains(name))
    }
}

/// Renders `text`; every failure is a configuration error starting with `NAME:LINE:`.
pub fn render(name: &str, text: &str, variables: &Variables) -> Result<Vec<u8>> {
    let mut renderer = Renderer {
        src: text.as_bytes(),
        at: 0,
        variables,
    };
    let mut out = Vec::with_capacity(text.len() + text.len() / 8);
    match renderer.text(&mut out, Until::End, true) {
        Ok(()) => Ok(out),
        Err(failure) => {
            let line = 1 + memchr::memchr_iter(b'\n', &renderer.src[..failure.at]).count();
            Err(Error::Config(format!("{name}:{line}: {}", failure.message)))
        }
    }
}

/// Why a render stopped, and where (the byte offset of the `$` it stopped at).
struct Failure {
    at: usize,
    message: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Until {
    End,
    /// The `}` that closes a `${VAR:-word}` (the word is being read); the offset of its
    /// `$`, which an unclosed one is reported at.
    Brace(usize),
}

struct Renderer<'a> {
    src: &'a [u8],
    at: usize,
    variables: &'a Variables,
}

impl Renderer<'_> {
    /// Copies and substitutes up to the end (or the `}` closing a word, which is consumed);
    /// with `emit` false, only reads past it (a default that is not used: the shell does
    /// not evaluate it, so an unset variable in it is no error).
    fn text(
        &mut self,
        out: &mut Vec<u8>,
        until: Until,
        emit: bool,
    ) -> std::result::Result<(), Failure> {
        loop {
            let rest = &self.src[self.at..];
            let next = match until {
                Until::End => memchr::memchr(b'$', rest),
                Until::Brace(_) => memchr::memchr2(b'$', b'}', rest),
            };
            let Some(offset) = next else {
                if let Until::Brace(dollar) = until {
                    return Err(Failure {
                        at: dollar,
                        message: "a `${VAR:-…}` or `${VAR:?…}` is not closed by `}`".into(),
                    });
                }
                if emit {
                    out.extend_from_slice(rest);
                }
                self.at = self.src.len();
                return Ok(());
            };
            if emit {
                out.extend_from_slice(&rest[..offset]);
            }
            self.at += offset;
            if self.src[self.at] == b'}' {
                self.at += 1;
                return Ok(());
            }
            self.dollar(out, emit)?;
        }
    }

    /// One `$…` at `self.at`, as GNU envsubst reads it, plus `${VAR:-word}` and
    /// `${VAR:?word}`.
    fn dollar(&mut self, out: &mut Vec<u8>, emit: bool) -> std::result::Result<(), Failure> {
        let dollar = self.at;
        let src = self.src;
        let brace = src.get(dollar + 1) == Some(&b'{');
        let start = dollar + 1 + usize::from(brace);
        let end = name_end(src, start);
        if end == start {
            // `$1`, `$$`, `${ `: the `$` (and `{`) as written; what follows is read anew.
            if emit {
                out.extend_from_slice(&src[dollar..start]);
            }
            self.at = start;
            return Ok(());
        }
        // ASCII by construction.
        let name = std::str::from_utf8(&src[start..end]).expect("a name is ASCII");
        let allowed = self.variables.allows(name);
        if !brace {
            self.at = end;
            return self.substitute(out, emit, name, allowed, dollar);
        }
        match (src.get(end).copied(), src.get(end + 1).copied()) {
            (Some(b'}'), _) => {
                self.at = end + 1;
                self.substitute(out, emit, name, allowed, dollar)
            }
            (Some(b':'), Some(op @ (b'-' | b'?'))) if allowed => {
                self.at = end + 2;
                let value = self
                    .variables
                    .values
                    .get(name)
                    .filter(|value| !value.is_empty());
                match (value, op) {
                    (Some(value), _) => {
                        if emit {
                            out.extend_from_slice(value.as_bytes());
                        }
                        self.text(out, Until::Brace(dollar), false)
                    }
                    (None, b'-') => self.text(out, Until::Brace(dollar), emit),
                    (None, _) => {
                        let mut message = Vec::new();
                        self.text(&mut message, Until::Brace(dollar), emit)?;
                        if !emit {
                            return Ok(());
                        }
                        let message = String::from_utf8_lossy(&message);
                        Err(Failure {
                            at: dollar,
                            message: if message.is_empty() {
                                format!("`{name}` is not set or empty")
                            } else {
                                format!("{name}: {message}")
                            },
                        })
                    }
                }
            }
            _ => {
                // `${A` not closed, `${A-x}`, `${A#x}`: GNU copies `${A` and reads on from
                // the next byte; a variable not allowed keeps its `:-word` as written too.
                if emit {
                    out.extend_from_slice(&src[dollar..end]);
                }
                self.at = end;
                Ok(())
            }
        }
    }

    fn substitute(
        &mut self,
        out: &mut Vec<u8>,
        emit: bool,
        name: &str,
        allowed: bool,
        dollar: usize,
    ) -> std::result::Result<(), Failure> {
        if !emit {
            return Ok(());
        }
        if !allowed {
            out.extend_from_slice(&self.src[dollar..self.at]);
            return Ok(());
        }
        match self.variables.values.get(name) {
            Some(value) => {
                out.extend_from_slice(value.as_bytes());
                Ok(())
            }
            None => Err(Failure {
                at: dollar,
                message: format!(
                    "`{name}` is undefined: not in the environment (`${{{name}:-…}}` gives a \
                     default)"
                ),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(allow: &[&str]) -> Variables {
        let allow: Vec<Allow> = allow.iter().map(|a| parse_allow(a).unwrap()).collect();
        Variables::new(
            [("A", "aa"), ("B", ""), ("C", "c c")].map(|(k, v)| (k.to_owned(), v.to_owned())),
            &allow,
        )
    }

    fn ok(text: &str, allow: &[&str]) -> String {
        String::from_utf8(render("t", text, &vars(allow)).unwrap()).unwrap()
    }

    fn err(text: &str) -> String {
        render("t", text, &vars(&[])).unwrap_err().to_string()
    }

    #[test]
    fn gnu_forms() {
        assert_eq!(
            ok("$ $1 $$ ${ ${1} ${A $A_x", &["A"]),
            "$ $1 $$ ${ ${1} ${A $A_x"
        );
        assert_eq!(ok("$A${A}B$B.${C}", &[]), "aaaaB.c c");
        assert_eq!(ok("${A-x} ${A#x} $", &[]), "${A-x} ${A#x} $");
        assert_eq!(ok("${A}}", &[]), "aa}");
    }

    #[test]
    fn defaults_and_messages() {
        assert_eq!(ok("${A:-x} ${B:-x} ${N:-x}", &[]), "aa x x");
        assert_eq!(ok("${N:-${A}/$C} ${A:-${N}}", &[]), "aa/c c aa");
        assert_eq!(ok("${N:-}|${A:?never}", &[]), "|aa");
        assert_eq!(err("x\n${B:?set B}"), "t:2: B: set B");
        assert_eq!(err("${N:?}"), "t:1: `N` is not set or empty");
        assert!(err("\n\n$N").starts_with("t:3: `N` is undefined"));
        assert!(err("${N:-abc").contains("not closed"));
        // Not allowed: as written, but the allowed variables inside it are substituted.
        assert_eq!(ok("${N:-$A} $N", &["$A"]), "${N:-aa} $N");
    }

    #[test]
    fn allow_values() {
        assert_eq!(parse_allow("A").unwrap().0, ["A"]);
        assert_eq!(
            parse_allow("$A ${B} ${C $1 x$D_1").unwrap().0,
            ["A", "B", "D_1"]
        );
        for bad in ["", "1A", "A B", "$", "${A"] {
            assert!(parse_allow(bad).is_err(), "{bad}");
        }
    }
}
