//! The filters and functions people bring to a template from Jinja2, Helm (Sprig) and
//! Ansible, each with the output of the tool its name comes from, so that a template copied
//! from a chart or a playbook renders the same: Jinja2's names as Jinja2 3.1 (`indent`,
//! `tojson`, `default`, `truncate`, `wordwrap`, `urlencode`), Helm's as Sprig
//! (`nindent`, `quote`, `squote`, `toYaml`, `b64enc`, `sha256sum`), Ansible's as Ansible
//! (`regex_replace`, `regex_search`, `fromjson`, `fromyaml`), and initbox's own
//! (`required`, `file()`, `now()`).
//!
//! Undefined values never reach these (the engine's strict wrapper refuses them first),
//! but `default` and `required`, which exist to take one.

use std::fmt::Write as _;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use minijinja::value::{Kwargs, Rest, Value, ValueKind, ValueOrKwargs, from_args};
use minijinja::{Environment, Error as JinjaError, ErrorKind};

use super::engine::{own_error, reject_undefined, undefined};
use crate::reason;
use crate::redact;

/// The widest indentation `indent` and `nindent` make: a bound on what a typo
/// (`indent(4000000000)`) can allocate, far above any configuration file.
const MAX_WIDTH: i64 = 1 << 20;

/// The deepest a value may nest for `tojson` and `toyaml`: far beyond any configuration,
/// and an end for a namespace that holds itself (`{% set ns.me = ns %}`).
const MAX_DEPTH: usize = 128;

fn too_deep(filter: &str) -> JinjaError {
    own_error(format!(
        "{filter}: the value is nested more than {MAX_DEPTH} levels deep (does it hold itself?)"
    ))
}

/// Whether `value` nests deeper than [`MAX_DEPTH`]. Depth first, so that a value that
/// holds itself is found after [`MAX_DEPTH`] steps; a wide value is looked at up to a
/// budget of items, past which it is taken to be shallow enough.
fn nests_too_deep(value: &Value) -> bool {
    let mut budget = 1_000_000usize;
    let mut pending = vec![(value.clone(), 0)];
    while let Some((value, depth)) = pending.pop() {
        if depth > MAX_DEPTH {
            return true;
        }
        if budget == 0 {
            return false;
        }
        budget -= 1;
        let is_map = match value.kind() {
            ValueKind::Map => true,
            ValueKind::Seq | ValueKind::Iterable => false,
            _ => continue,
        };
        let Ok(items) = value.try_iter() else {
            continue;
        };
        for item in items {
            if is_map && let Ok(entry) = value.get_item(&item) {
                pending.push((entry, depth + 1));
            }
            pending.push((item, depth + 1));
        }
    }
    false
}

/// Adds initbox's filters and functions to `env`, replacing the engine's own `indent`,
/// `tojson`, `default`, `truncate`, `wordwrap` and `urlencode` where they differ from
/// Jinja2's.
pub fn register(env: &mut Environment<'static>) {
    // Jinja2's, as Jinja2 3.1 writes them.
    env.add_filter("indent", indent);
    env.add_filter("tojson", tojson);
    env.add_filter("default", default);
    env.add_filter("d", default);
    env.add_filter("truncate", truncate);
    env.add_filter("wordwrap", wordwrap);
    env.add_filter("urlencode", urlencode);
    // Helm's (Sprig's).
    env.add_filter("nindent", nindent);
    env.add_filter("quote", quote);
    env.add_filter("squote", squote);
    env.add_filter("toYaml", |value: Value| toyaml("toYaml", value));
    env.add_filter("b64enc", |value: Value| b64encode("b64enc", value));
    env.add_filter("b64dec", |value: Value| b64decode("b64dec", value));
    env.add_filter("sha256sum", sha256sum);
    // Ansible's.
    env.add_filter("regex_replace", regex_replace);
    env.add_filter("regex_search", regex_search);
    env.add_filter("fromjson", fromjson);
    env.add_filter("fromyaml", fromyaml);
    // initbox's own (the names gomplate and dockerize users know).
    env.add_filter("required", required);
    env.add_filter("toyaml", |value: Value| toyaml("toyaml", value));
    env.add_filter("b64encode", |value: Value| b64encode("b64encode", value));
    env.add_filter("b64decode", |value: Value| b64decode("b64decode", value));
    env.add_function("file", file);
    env.add_function("now", now);
}

// ---------------------------------------------------------------------------------------
// Arguments, as Python takes them

/// The arguments of a call given by position or by keyword, in the order of `names`, as a
/// Python function takes them. An argument given both ways, an unknown keyword or one
/// argument too many is an error naming the filter.
fn params(filter: &str, args: &[Value], names: &[&str]) -> Result<Vec<Option<Value>>, JinjaError> {
    let (positional, kwargs): (&[Value], Kwargs) = from_args(args)?;
    if positional.len() > names.len() {
        return Err(JinjaError::new(
            ErrorKind::TooManyArguments,
            format!("{filter} takes at most {} arguments", names.len()),
        ));
    }
    let mut values = Vec::with_capacity(names.len());
    for (index, name) in names.iter().enumerate() {
        // As a `Value`, not an `Option`: an undefined keyword argument must stay undefined.
        let by_keyword = match kwargs.has(name) {
            true => Some(kwargs.get::<Value>(name)?),
            false => None,
        };
        let by_position = positional.get(index).cloned();
        if by_position.is_some() && kwargs.has(name) {
            return Err(JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("{filter} got the argument {name} twice"),
            ));
        }
        values.push(by_position.or(by_keyword));
    }
    kwargs.assert_all_used()?;
    Ok(values)
}

/// An argument that is absent or none (Python's `None` default) as `None`.
fn given(value: Option<Value>) -> Option<Value> {
    value.filter(|v| !v.is_none())
}

fn integer(value: &Value, filter: &str, name: &str) -> Result<i64, JinjaError> {
    reject_undefined(value)?;
    match value.kind() {
        // Python's bool is an int: `indent(True)` is one space.
        ValueKind::Bool => Ok(i64::from(value.is_true())),
        _ => value.as_i64().ok_or_else(|| {
            JinjaError::new(
                ErrorKind::InvalidOperation,
                format!("{filter}: {name} must be an integer, not {}", value.kind()),
            )
        }),
    }
}

fn truth(value: &Value) -> Result<bool, JinjaError> {
    reject_undefined(value)?;
    Ok(value.is_true())
}

fn text_of<'a>(value: &'a Value, filter: &str) -> Result<&'a str, JinjaError> {
    if value.is_undefined() {
        return Err(undefined(value));
    }
    value.as_str().ok_or_else(|| {
        JinjaError::new(
            ErrorKind::InvalidOperation,
            format!("{filter} expects text, not {}", value.kind()),
        )
    })
}

/// Python's `str(value)`: what Jinja2's `urlencode` and Ansible's `regex_replace` work on
/// when given something other than text.
fn py_str(value: &Value, filter: &str) -> Result<String, JinjaError> {
    Ok(match value.kind() {
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        ValueKind::Number if !value.is_integer() => match f64::try_from(value.clone()) {
            Ok(f) => python_float(f),
            Err(_) => value.to_string(),
        },
        // The engine prints a list or map by recursion: one that holds itself would
        // overflow the stack.
        ValueKind::Seq | ValueKind::Map if nests_too_deep(value) => return Err(too_deep(filter)),
        _ => value.to_string(),
    })
}

/// Python's `str.splitlines()`: every line boundary Python knows, `\r\n` as one, and no
/// empty line after a final boundary.
fn split_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if matches!(
            c,
            '\n' | '\r'
                | '\x0b'
                | '\x0c'
                | '\x1c'
                | '\x1d'
                | '\x1e'
                | '\u{85}'
                | '\u{2028}'
                | '\u{2029}'
        ) {
            lines.push(&text[start..at]);
            start = at + c.len_utf8();
            if c == '\r' && chars.peek().is_some_and(|&(_, next)| next == '\n') {
                chars.next();
                start += 1;
            }
        }
    }
    if start < text.len() {
        lines.push(&text[start..]);
    }
    lines
}

// ---------------------------------------------------------------------------------------
// Numbers as Python and Go print them

/// The shortest digits that read back as `f` (no sign) and the decimal exponent of the
/// first: 0.00015 is ("15", -4).
fn shortest_digits(f: f64) -> (String, i32) {
    let exponential = format!("{:e}", f.abs());
    let (mantissa, exponent) = exponential
        .split_once('e')
        .expect("{:e} always writes an exponent");
    let digits = mantissa.chars().filter(|c| *c != '.').collect();
    (
        digits,
        exponent.parse().expect("the exponent is an integer"),
    )
}

/// `digits` (the first before the point at `exponent`) in positional notation.
fn positional(digits: &str, exponent: i32, point_zero: bool) -> String {
    if exponent < 0 {
        let zeros = "0".repeat((-exponent - 1) as usize);
        return format!("0.{zeros}{digits}");
    }
    let whole = exponent as usize + 1;
    if digits.len() <= whole {
        let zeros = "0".repeat(whole - digits.len());
        let fraction = if point_zero { ".0" } else { "" };
        format!("{digits}{zeros}{fraction}")
    } else {
        format!("{}.{}", &digits[..whole], &digits[whole..])
    }
}

/// `d.ddde±XX`, with at least two digits of exponent, as both Python and Go write it.
fn scientific(digits: &str, exponent: i32) -> String {
    let (first, rest) = digits.split_at(1);
    let point = if rest.is_empty() { "" } else { "." };
    let sign = if exponent < 0 { '-' } else { '+' };
    format!("{first}{point}{rest}e{sign}{:02}", exponent.unsigned_abs())
}

/// Python's `repr(float)`: `2.0`, `1e+16`, `1.5e-05`, `nan`, `inf`.
fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_owned();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f.is_infinite() {
        return format!("{sign}inf");
    }
    let (digits, exponent) = shortest_digits(f);
    if (-4..16).contains(&exponent) {
        format!("{sign}{}", positional(&digits, exponent, true))
    } else {
        format!("{sign}{}", scientific(&digits, exponent))
    }
}

/// Go's `fmt.Sprintf("%v", f)`: `2`, `1.5`, `1e+06` (the shortest digits, in exponent
/// form from a million on), `NaN`, `+Inf`.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".to_owned();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.to_owned();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    let (digits, exponent) = shortest_digits(f);
    if (-4..6).contains(&exponent) {
        format!("{sign}{}", positional(&digits, exponent, false))
    } else {
        format!("{sign}{}", scientific(&digits, exponent))
    }
}

// ---------------------------------------------------------------------------------------
// Jinja2's

/// `{{ text | indent(width=4, first=false, blank=false) }}` as Jinja2 3.1: the lines after
/// the first (all with `first`) get `width` spaces (or `width` itself when it is text);
/// blank lines only with `blank`. A final newline stays, and every line break becomes
/// `\n`, as in Jinja2, which splits with Python's `splitlines`.
fn indent(value: Value, args: Rest<ValueOrKwargs>) -> Result<Value, JinjaError> {
    let [width, first, blank] = <[Option<Value>; 3]>::try_from(params(
        "indent",
        &args.into_values(),
        &["width", "first", "blank"],
    )?)
    .expect("three parameters");
    let text = text_of(&value, "indent")?;
    let indention = match width {
        None => "    ".to_owned(),
        Some(width) if width.kind() == ValueKind::String => width.to_string(),
        Some(width) => spaces(integer(&width, "indent", "width")?.max(0), "indent")?,
    };
    let first = first.as_ref().map(truth).transpose()?.unwrap_or(false);
    let blank = blank.as_ref().map(truth).transpose()?.unwrap_or(false);
    // Jinja2 adds a newline before splitting, so that a final one survives `splitlines`.
    let text = format!("{text}\n");
    let lines = split_lines(&text);
    let mut out = if blank {
        lines.join(&format!("\n{indention}"))
    } else {
        let mut lines = lines.into_iter();
        let mut out = lines.next().unwrap_or_default().to_owned();
        for line in lines {
            out.push('\n');
            if !line.is_empty() {
                out.push_str(&indention);
            }
            out.push_str(line);
        }
        out
    };
    if first {
        out.insert_str(0, &indention);
    }
    Ok(Value::from(out))
}

fn spaces(width: i64, filter: &str) -> Result<String, JinjaError> {
    if width > MAX_WIDTH {
        return Err(own_error(format!(
            "{filter}: a width of {width} is more than {MAX_WIDTH}"
        )));
    }
    Ok(" ".repeat(width.max(0) as usize))
}

/// `{{ value | tojson(indent=none) }}` as Jinja2: Python's `json.dumps` with sorted keys,
/// non-ASCII as `\uXXXX`, and `<`, `>`, `&`, `'` escaped so that the text is safe inside
/// HTML and inside single quotes.
fn tojson(value: Value, args: Rest<ValueOrKwargs>) -> Result<Value, JinjaError> {
    let [indent] =
        <[Option<Value>; 1]>::try_from(params("tojson", &args.into_values(), &["indent"])?)
            .expect("one parameter");
    let indent = match given(indent) {
        None => None,
        Some(indent) if indent.kind() == ValueKind::String => Some(indent.to_string()),
        Some(indent) => Some(spaces(integer(&indent, "tojson", "indent")?, "tojson")?),
    };
    let mut out = String::new();
    write_json(&mut out, &value, indent.as_deref(), 0)?;
    Ok(Value::from_safe_string(out))
}

fn write_json(
    out: &mut String,
    value: &Value,
    indent: Option<&str>,
    depth: usize,
) -> Result<(), JinjaError> {
    if value.is_undefined() {
        return Err(undefined(value));
    }
    if depth > MAX_DEPTH {
        return Err(too_deep("tojson"));
    }
    // Python's separators: ", " and ": " on one line, "," and a line break with indent.
    let newline = |out: &mut String, depth: usize| {
        if let Some(indent) = indent {
            out.push('\n');
            for _ in 0..depth {
                out.push_str(indent);
            }
        }
    };
    let item_separator = if indent.is_some() { "," } else { ", " };
    match value.kind() {
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if value.is_true() { "true" } else { "false" }),
        ValueKind::Number if value.is_integer() => out.push_str(&value.to_string()),
        ValueKind::Number => {
            let f = f64::try_from(value.clone())?;
            out.push_str(&if f.is_nan() {
                "NaN".to_owned()
            } else if f.is_infinite() {
                if f > 0.0 { "Infinity" } else { "-Infinity" }.to_owned()
            } else {
                python_float(f)
            });
        }
        ValueKind::String => json_string(out, value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                write_json(out, item, indent, depth + 1)?;
            }
            newline(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let entry = value.get_item(&key)?;
                entries.push((key, entry));
            }
            if entries.is_empty() {
                out.push_str("{}");
                return Ok(());
            }
            // Python sorts the keys themselves: text among text, numbers among numbers.
            let all_text = entries.iter().all(|(k, _)| k.kind() == ValueKind::String);
            let all_numbers = entries.iter().all(|(k, _)| k.kind() == ValueKind::Number);
            if !all_text && !all_numbers {
                return Err(own_error(
                    "tojson: cannot sort the keys of a map that mixes text and other keys",
                ));
            }
            entries.sort_by(|(a, _), (b, _)| a.cmp(b));
            out.push('{');
            for (index, (key, entry)) in entries.iter().enumerate() {
                if index > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                match key.as_str() {
                    Some(key) => json_string(out, key),
                    None => {
                        let mut number = String::new();
                        write_json(&mut number, key, None, depth + 1)?;
                        json_string(out, &number);
                    }
                }
                out.push_str(": ");
                write_json(out, entry, indent, depth + 1)?;
            }
            newline(out, depth);
            out.push('}');
        }
        kind => {
            return Err(own_error(format!("tojson: a {kind} has no JSON form")));
        }
    }
    Ok(())
}

/// A JSON string as Python's `json.dumps` writes it (`ensure_ascii`), with Jinja2's HTML
/// escapes of `<`, `>`, `&` and `'`.
fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '<' | '>' | '&' | '\'' => write!(out, "\\u{:04x}", c as u32).unwrap(),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    write!(out, "\\u{unit:04x}").unwrap();
                }
            }
        }
    }
    out.push('"');
}

/// `{{ value | default(default_value='', boolean=false) }}` as Jinja2: the default for an
/// undefined value only, or with `boolean=true` for any false one (none, empty, 0). Unlike
/// Helm's `default`, none alone is kept: Jinja2 prints it as `None`. The default itself
/// must be defined, even when the value is.
fn default(value: Value, args: Rest<ValueOrKwargs>) -> Result<Value, JinjaError> {
    let [fallback, boolean] = <[Option<Value>; 2]>::try_from(params(
        "default",
        &args.into_values(),
        &["default_value", "boolean"],
    )?)
    .expect("two parameters");
    let boolean = boolean.as_ref().map(truth).transpose()?.unwrap_or(false);
    // Stricter than Jinja2, which looks at the default only when it needs it: a typo in
    // it (`default(valuse.port)`) would otherwise wait for the day the value is missing.
    if let Some(fallback) = &fallback {
        reject_undefined(fallback)?;
    }
    if value.is_undefined() || (boolean && !value.is_true()) {
        Ok(fallback.unwrap_or_else(|| Value::from("")))
    } else {
        Ok(value)
    }
}

/// `{{ text | truncate(length=255, killwords=false, end='...', leeway=5) }}` as Jinja2:
/// text longer than `length + leeway` characters is cut to `length` with `end`, at the
/// last space unless `killwords`.
fn truncate(value: Value, args: Rest<ValueOrKwargs>) -> Result<Value, JinjaError> {
    let [length, killwords, end, leeway] = <[Option<Value>; 4]>::try_from(params(
        "truncate",
        &args.into_values(),
        &["length", "killwords", "end", "leeway"],
    )?)
    .expect("four parameters");
    let text = text_of(&value, "truncate")?;
    let length = length
        .map(|l| integer(&l, "truncate", "length"))
        .transpose()?
        .unwrap_or(255);
    let killwords = killwords.as_ref().map(truth).transpose()?.unwrap_or(false);
    let end = match end {
        Some(end) => text_of(&end, "truncate: end")?.to_owned(),
        None => "...".to_owned(),
    };
    let leeway = given(leeway)
        .map(|l| integer(&l, "truncate", "leeway"))
        .transpose()?
        .unwrap_or(5);
    let end_len = end.chars().count() as i64;
    if length < end_len {
        return Err(own_error(format!(
            "truncate: the length {length} is shorter than the end {end:?}"
        )));
    }
    if leeway < 0 {
        return Err(own_error(format!(
            "truncate: the leeway {leeway} is negative"
        )));
    }
    if text.chars().count() as i64 <= length.saturating_add(leeway) {
        return Ok(value);
    }
    let keep: String = text.chars().take((length - end_len) as usize).collect();
    let kept = if killwords {
        keep.as_str()
    } else {
        keep.rsplit_once(' ')
            .map_or(keep.as_str(), |(head, _)| head)
    };
    Ok(Value::from(format!("{kept}{end}")))
}

/// `{{ text | wordwrap(width=79, break_long_words=true, wrapstring='\n',
/// break_on_hyphens=true) }}` as Jinja2: each line of the text wrapped on its own by the
/// rules of Python's `textwrap` (tabs and spaces kept as they are).
fn wordwrap(value: Value, args: Rest<ValueOrKwargs>) -> Result<Value, JinjaError> {
    let [width, break_long_words, wrapstring, break_on_hyphens] =
        <[Option<Value>; 4]>::try_from(params(
            "wordwrap",
            &args.into_values(),
            &[
                "width",
                "break_long_words",
                "wrapstring",
                "break_on_hyphens",
            ],
        )?)
        .expect("four parameters");
    let text = text_of(&value, "wordwrap")?;
    let width = width
        .map(|w| integer(&w, "wordwrap", "width"))
        .transpose()?
        .unwrap_or(79);
    if width <= 0 {
        return Err(own_error(format!(
            "wordwrap: invalid width {width} (must be > 0)"
        )));
    }
    let options = Wrap {
        width: usize::try_from(width).unwrap_or(usize::MAX),
        break_long_words: break_long_words
            .as_ref()
            .map(truth)
            .transpose()?
            .unwrap_or(true),
        break_on_hyphens: break_on_hyphens
            .as_ref()
            .map(truth)
            .transpose()?
            .unwrap_or(true),
    };
    let wrapstring = match given(wrapstring) {
        Some(wrapstring) => text_of(&wrapstring, "wordwrap: wrapstring")?.to_owned(),
        None => "\n".to_owned(),
    };
    let paragraphs: Vec<String> = split_lines(text)
        .into_iter()
        .map(|line| wrap(line, &options).join(&wrapstring))
        .collect();
    Ok(Value::from(paragraphs.join(&wrapstring)))
}

struct Wrap {
    width: usize,
    break_long_words: bool,
    break_on_hyphens: bool,
}

/// Python's whitespace for `textwrap`: ASCII only.
fn wrap_space(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Python's `\w` (letters, digits, `_`).
fn word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Python's `[^\d\W]`: a word character that is not a digit.
fn letter(c: char) -> bool {
    word_char(c) && !c.is_numeric()
}

/// `textwrap`'s `[\w!"'&.,?]`: what may stand before an em-dash.
fn word_punct(c: char) -> bool {
    word_char(c) || "!\"'&.,?".contains(c)
}

/// `textwrap.TextWrapper._split`: the text cut into words and runs of whitespace, words
/// also after the hyphen of a hyphenated word and before an em-dash (`--`), exactly as
/// its `wordsep_re` cuts them (written out by hand: the regex crate has no look-behind).
fn wrap_chunks(text: &str, break_on_hyphens: bool) -> Vec<String> {
    let c: Vec<char> = text.chars().collect();
    let n = c.len();
    let at = |i: usize| c.get(i).copied();
    let is = |i: usize, f: fn(char) -> bool| at(i).is_some_and(f);
    // `-{2,}` from `i`, then a word character: the end of the dashes.
    let em_dash = |i: usize| {
        let mut j = i;
        while at(j) == Some('-') {
            j += 1;
        }
        (j - i >= 2 && is(j, word_char)).then_some(j)
    };
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < n {
        let end = if wrap_space(c[i]) {
            (i..n).find(|&j| !wrap_space(c[j])).unwrap_or(n)
        } else if !break_on_hyphens {
            (i..n).find(|&j| wrap_space(c[j])).unwrap_or(n)
        } else if i > 0 && word_punct(c[i - 1]) && em_dash(i).is_some() {
            em_dash(i).expect("checked")
        } else {
            // The shortest run of non-space characters that ends a word.
            let mut k = i + 1;
            loop {
                if k == n || wrap_space(c[k]) {
                    break k;
                }
                if c[k] == '-' {
                    let after_two_letters = k >= 2 && letter(c[k - 1]) && letter(c[k - 2]);
                    let after_letter_hyphen_letter =
                        k >= 3 && letter(c[k - 1]) && c[k - 2] == '-' && letter(c[k - 3]);
                    let letters_follow = is(k + 1, letter)
                        && (is(k + 2, letter) || (at(k + 2) == Some('-') && is(k + 3, letter)));
                    if (after_two_letters || after_letter_hyphen_letter) && letters_follow {
                        break k + 1;
                    }
                    if word_punct(c[k - 1]) && em_dash(k).is_some() {
                        break k;
                    }
                }
                k += 1;
            }
        };
        chunks.push(c[i..end].iter().collect());
        i = end;
    }
    chunks
}

fn is_blank(chunk: &str) -> bool {
    chunk.chars().all(char::is_whitespace)
}

fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// `textwrap.wrap(line, width, expand_tabs=False, replace_whitespace=False, …)`.
fn wrap(line: &str, options: &Wrap) -> Vec<String> {
    let width = options.width;
    let mut chunks = wrap_chunks(line, options.break_on_hyphens);
    chunks.reverse();
    let mut lines: Vec<String> = Vec::new();
    while !chunks.is_empty() {
        let mut current: Vec<String> = Vec::new();
        let mut current_len = 0;
        // Whitespace that would start a line is dropped, but at the very beginning.
        if !lines.is_empty() && chunks.last().is_some_and(|c| is_blank(c)) {
            chunks.pop();
        }
        while let Some(chunk) = chunks.last() {
            let len = char_len(chunk);
            if current_len + len > width {
                break;
            }
            current_len += len;
            current.push(chunks.pop().expect("there is a last chunk"));
        }
        if chunks.last().is_some_and(|c| char_len(c) > width) {
            // A word longer than a whole line.
            let space_left = if width < 1 { 1 } else { width - current_len };
            if options.break_long_words {
                let chunk: Vec<char> = chunks.pop().expect("checked").chars().collect();
                let mut end = space_left;
                if options.break_on_hyphens && chunk.len() > space_left {
                    // After the last hyphen that fits, if something but hyphens is before it.
                    if let Some(hyphen) = chunk[..space_left].iter().rposition(|&c| c == '-')
                        && hyphen > 0
                        && chunk[..hyphen].iter().any(|&c| c != '-')
                    {
                        end = hyphen + 1;
                    }
                }
                let end = end.min(chunk.len());
                current.push(chunk[..end].iter().collect());
                chunks.push(chunk[end..].iter().collect());
            } else if current.is_empty() {
                current.push(chunks.pop().expect("checked"));
            }
        }
        if current.last().is_some_and(|c| is_blank(c)) {
            current.pop();
        }
        if !current.is_empty() {
            lines.push(current.concat());
        }
    }
    lines
}

/// `{{ params | urlencode }}` as Jinja2: text (or any single value) with every byte but
/// letters, digits, `_.-~` and `/` percent-encoded; a map, or a list of pairs, as a query
/// string, `k=v&…`, where `/` is encoded too and a space is `+`.
fn urlencode(value: Value) -> Result<String, JinjaError> {
    use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_encode};
    const QUERY: &AsciiSet = &NON_ALPHANUMERIC
        .remove(b'_')
        .remove(b'.')
        .remove(b'-')
        .remove(b'~');
    const PATH: &AsciiSet = &QUERY.remove(b'/');
    let quote = |text: &[u8], set| percent_encode(text, set).to_string();
    let query_part = |value: &Value| -> Result<String, JinjaError> {
        Ok(quote(py_str(value, "urlencode")?.as_bytes(), QUERY).replace("%20", "+"))
    };
    match value.kind() {
        ValueKind::Bytes => Ok(quote(value.as_bytes().unwrap_or_default(), PATH)),
        ValueKind::Map => {
            let mut pairs = Vec::new();
            for key in value.try_iter()? {
                let entry = value.get_item(&key)?;
                pairs.push(format!("{}={}", query_part(&key)?, query_part(&entry)?));
            }
            Ok(pairs.join("&"))
        }
        ValueKind::Seq | ValueKind::Iterable => {
            let mut pairs = Vec::new();
            for pair in value.try_iter()? {
                let items: Vec<Value> = match pair.kind() {
                    ValueKind::Seq => pair.try_iter()?.collect(),
                    _ => Vec::new(),
                };
                let [key, entry] = items.as_slice() else {
                    return Err(own_error("urlencode: a list must hold [key, value] pairs"));
                };
                pairs.push(format!("{}={}", query_part(key)?, query_part(entry)?));
            }
            Ok(pairs.join("&"))
        }
        _ => Ok(quote(py_str(&value, "urlencode")?.as_bytes(), PATH)),
    }
}

// ---------------------------------------------------------------------------------------
// Helm's (Sprig's)

/// `{{ text | nindent(4) }}` as Sprig: a newline, then every line of the text (the
/// first, blank ones and the one after a final newline too) after `width` spaces; for
/// `key:{{ block | nindent(2) }}` after a key.
fn nindent(value: Value, width: Value) -> Result<Value, JinjaError> {
    let text = text_of(&value, "nindent")?;
    let width = integer(&width, "nindent", "width")?;
    if width < 0 {
        // Sprig's strings.Repeat panics on a negative count, which fails the render.
        return Err(own_error(format!("nindent: the width {width} is negative")));
    }
    let pad = spaces(width, "nindent")?;
    Ok(Value::from(format!(
        "\n{pad}{}",
        text.replace('\n', &format!("\n{pad}"))
    )))
}

/// A value as Sprig's `strval` (Go's `%v`) writes it; none is nothing, as Sprig drops nil.
fn go_text(value: &Value, filter: &str) -> Result<Option<String>, JinjaError> {
    reject_undefined(value)?;
    Ok(Some(match value.kind() {
        ValueKind::None => return Ok(None),
        ValueKind::String => value.as_str().unwrap_or_default().to_owned(),
        ValueKind::Bytes => String::from_utf8_lossy(value.as_bytes().unwrap_or_default()).into(),
        ValueKind::Bool => if value.is_true() { "true" } else { "false" }.to_owned(),
        ValueKind::Number if value.is_integer() => value.to_string(),
        ValueKind::Number => go_float(f64::try_from(value.clone())?),
        kind => {
            return Err(own_error(format!(
                "{filter} expects text, a number or a boolean, not a {kind}"
            )));
        }
    }))
}

/// `{{ value | quote }}` as Sprig: in double quotes, escaped as Go's `%q` escapes (`\"`,
/// `\\`, `\n`, `\x00`, `\u00a0`); none gives nothing; true is `"true"`, as in Helm.
fn quote(value: Value) -> Result<String, JinjaError> {
    let Some(text) = go_text(&value, "quote")? else {
        return Ok(String::new());
    };
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x0b' => out.push_str("\\v"),
            c if go_printable(c) => out.push(c),
            c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32).unwrap(),
            c if (c as u32) < 0x10000 => write!(out, "\\u{:04x}", c as u32).unwrap(),
            c => write!(out, "\\U{:08x}", c as u32).unwrap(),
        }
    }
    out.push('"');
    Ok(out)
}

/// Go's `unicode.IsPrint` as far as Rust's character tables tell it: not a control or
/// format character, not private use, and no space but U+0020.
fn go_printable(c: char) -> bool {
    let code = c as u32;
    let format = matches!(
        code,
        0xAD | 0x600..=0x605
            | 0x61C
            | 0x6DD
            | 0x70F
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0xE0001
            | 0xE0020..=0xE007F
    );
    let private = matches!(code, 0xE000..=0xF8FF | 0xF0000..=0x10FFFF);
    let noncharacter = (0xFDD0..=0xFDEF).contains(&code) || code & 0xFFFE == 0xFFFE;
    c == ' ' || !(c.is_control() || c.is_whitespace() || format || private || noncharacter)
}

/// `{{ value | squote }}` as Sprig: in single quotes, nothing escaped.
fn squote(value: Value) -> Result<String, JinjaError> {
    Ok(go_text(&value, "squote")?
        .map(|text| format!("'{text}'"))
        .unwrap_or_default())
}

/// `{{ text | sha256sum }}` as Sprig: the SHA-256 of the UTF-8 text, in lowercase hex
/// (the checksum annotation that rolls a Deployment when its config changes).
fn sha256sum(value: Value) -> Result<String, JinjaError> {
    let bytes = match value.as_bytes() {
        Some(bytes) if value.kind() == ValueKind::Bytes => bytes,
        _ => text_of(&value, "sha256sum")?.as_bytes(),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        write!(hex, "{byte:02x}").unwrap();
    }
    Ok(hex)
}

// ---------------------------------------------------------------------------------------
// Ansible's

/// `(pattern, ignorecase, multiline)` as a regex; an invalid pattern names the filter and
/// the pattern (never the value it is applied to).
fn compile(
    filter: &str,
    pattern: &str,
    ignorecase: bool,
    multiline: bool,
) -> Result<regex::Regex, JinjaError> {
    regex::RegexBuilder::new(pattern)
        .case_insensitive(ignorecase)
        .multi_line(multiline)
        .build()
        .map_err(|error| {
            let reason = error.to_string();
            let reason = reason.lines().last().unwrap_or("invalid").trim();
            own_error(format!("{filter}: invalid pattern {pattern:?}: {reason}"))
        })
}

/// Python's `re.sub` replacement template (`\1`, `\g<name>`, `\n`) in the regex crate's
/// syntax (`${1}`, `${name}`, `$$`), checked against the groups the pattern has.
fn replacement(filter: &str, template: &str, regex: &regex::Regex) -> Result<String, JinjaError> {
    let bad = |what: String| own_error(format!("{filter}: {what} in the replacement {template:?}"));
    let group = |name: &str| -> Result<String, JinjaError> {
        let known = match name.parse::<usize>() {
            Ok(number) => number < regex.captures_len(),
            Err(_) => regex.capture_names().any(|n| n == Some(name)),
        };
        if known {
            Ok(format!("${{{name}}}"))
        } else {
            Err(bad(format!("unknown group {name}")))
        }
    };
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' => match chars.next() {
                None => return Err(bad("a lone \\ at the end".to_owned())),
                Some(digit @ '0'..='9') => {
                    let mut number = digit.to_string();
                    if let Some(&next) = chars.peek()
                        && next.is_ascii_digit()
                    {
                        number.push(next);
                        chars.next();
                    }
                    out.push_str(&group(&number)?);
                }
                Some('g') => {
                    if chars.next() != Some('<') {
                        return Err(bad("\\g without <name>".to_owned()));
                    }
                    let name: String = chars.by_ref().take_while(|&c| c != '>').collect();
                    out.push_str(&group(&name)?);
                }
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('f') => out.push('\x0c'),
                Some('v') => out.push('\x0b'),
                Some('a') => out.push('\x07'),
                Some('b') => out.push('\x08'),
                Some('\\') => out.push('\\'),
                Some(other) if other.is_ascii_alphabetic() => {
                    return Err(bad(format!("the unknown escape \\{other}")));
                }
                Some(other) => {
                    out.push('\\');
                    if other == '$' {
                        out.push_str("$$");
                    } else {
                        out.push(other);
                    }
                }
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `{{ text | regex_replace(pattern, replacement='', ignorecase=false, multiline=false,
/// count=0, mandatory_count=0) }}` as Ansible: every match (or the first `count`)
/// replaced, `\1` and `\g<name>` being groups; with `mandatory_count`, any other number
/// of matches is an error. Patterns are the regex crate's (no look-around, no
/// back-references), the syntax of `replace --regex`.
fn regex_replace(value: Value, args: Rest<ValueOrKwargs>) -> Result<String, JinjaError> {
    let [pattern, with, ignorecase, multiline, count, mandatory_count] =
        <[Option<Value>; 6]>::try_from(params(
            "regex_replace",
            &args.into_values(),
            &[
                "pattern",
                "replacement",
                "ignorecase",
                "multiline",
                "count",
                "mandatory_count",
            ],
        )?)
        .expect("six parameters");
    let text = py_str(&value, "regex_replace")?;
    let pattern = match &pattern {
        Some(pattern) => text_of(pattern, "regex_replace: pattern")?,
        None => "",
    };
    let with = match &with {
        Some(with) => text_of(with, "regex_replace: replacement")?,
        None => "",
    };
    let flag = |v: &Option<Value>| {
        v.as_ref()
            .map(truth)
            .transpose()
            .map(|b| b.unwrap_or(false))
    };
    let regex = compile(
        "regex_replace",
        pattern,
        flag(&ignorecase)?,
        flag(&multiline)?,
    )?;
    let number = |v: &Option<Value>, name| {
        v.as_ref()
            .map(|v| integer(v, "regex_replace", name))
            .transpose()
            .map(|n| n.unwrap_or(0))
    };
    let count = number(&count, "count")?;
    let mandatory_count = number(&mandatory_count, "mandatory_count")?;
    let limit = usize::try_from(count).unwrap_or(0);
    let matches = match limit {
        0 => regex.find_iter(&text).count(),
        limit => regex.find_iter(&text).take(limit).count(),
    };
    if mandatory_count != 0 && mandatory_count != matches as i64 {
        return Err(own_error(format!(
            "regex_replace: {pattern:?} matched {matches} times, not {mandatory_count}"
        )));
    }
    let with = replacement("regex_replace", with, &regex)?;
    Ok(regex.replacen(&text, limit, with.as_str()).into_owned())
}

/// `{{ text | regex_search(pattern, '\\1', '\\g<name>', ignorecase=false,
/// multiline=false) }}` as Ansible: the first match, or with group arguments the list of
/// those groups of it; none when nothing matches.
fn regex_search(value: Value, args: Rest<ValueOrKwargs>) -> Result<Value, JinjaError> {
    let args = args.into_values();
    let (positional, kwargs): (&[Value], Kwargs) = from_args(&args)?;
    let Some((pattern, groups)) = positional.split_first() else {
        return Err(JinjaError::new(
            ErrorKind::MissingArgument,
            "regex_search needs a pattern",
        ));
    };
    let text = text_of(&value, "regex_search")?;
    let pattern = text_of(pattern, "regex_search: pattern")?;
    let flag = |name| -> Result<bool, JinjaError> {
        kwargs
            .get::<Option<Value>>(name)?
            .as_ref()
            .map(truth)
            .transpose()
            .map(|b| b.unwrap_or(false))
    };
    let regex = compile(
        "regex_search",
        pattern,
        flag("ignorecase")?,
        flag("multiline")?,
    )?;
    kwargs.assert_all_used()?;
    // Ansible's group arguments: `\1` by number, `\g<name>` by name.
    let mut wanted = Vec::with_capacity(groups.len());
    for group in groups {
        let spec = text_of(group, "regex_search: group")?;
        let name = if let Some(name) = spec.strip_prefix("\\g<").and_then(|s| s.strip_suffix('>')) {
            name
        } else if let Some(number) = spec
            .strip_prefix('\\')
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            number
        } else {
            return Err(own_error(format!(
                "regex_search: unknown argument {spec:?} (a group is \\1 or \\g<name>)"
            )));
        };
        let known = match name.parse::<usize>() {
            Ok(number) => number < regex.captures_len(),
            Err(_) => regex.capture_names().any(|n| n == Some(name)),
        };
        if !known {
            return Err(own_error(format!(
                "regex_search: {pattern:?} has no group {name}"
            )));
        }
        wanted.push(name.to_owned());
    }
    let Some(captures) = regex.captures(text) else {
        return Ok(Value::from(()));
    };
    if wanted.is_empty() {
        return Ok(Value::from(&captures[0]));
    }
    Ok(wanted
        .iter()
        .map(|name| {
            let group = match name.parse::<usize>() {
                Ok(number) => captures.get(number),
                Err(_) => captures.name(name),
            };
            group.map_or_else(|| Value::from(()), |g| Value::from(g.as_str()))
        })
        .collect())
}

/// `{{ text | fromjson }}` as Ansible's `from_json`: JSON text as a value (maps keep their
/// order). The error gives the position, never the text: it may be a secret.
fn fromjson(value: Value) -> Result<Value, JinjaError> {
    let text = text_of(&value, "fromjson")?;
    serde_json::from_str::<Value>(text)
        .map_err(|error| own_error(format!("fromjson: the text is not valid JSON: {error}")))
}

/// `{{ text | fromyaml }}`: YAML text as a value, typed as `--data` files are (YAML 1.2
/// core schema: `yes` and `on` stay text), duplicate keys refused.
fn fromyaml(value: Value) -> Result<Value, JinjaError> {
    let text = text_of(&value, "fromyaml")?;
    crate::pipeline::yaml::parse(text)
        .map(super::context::from_yaml)
        .map_err(|error| {
            own_error(format!(
                "fromyaml: the text is not valid YAML: {}",
                error.to_string().trim_end().replace('\n', " ")
            ))
        })
}

// ---------------------------------------------------------------------------------------
// initbox's own

/// `{{ db.password | required("set DB_PASSWORD") }}`: the value, unless it is undefined,
/// none or empty, in which case rendering fails with the message.
fn required(value: Value, message: Rest<Value>) -> Result<Value, JinjaError> {
    // `Rest`, not `Option`: an undefined message must not pass for no message.
    let message = match message.as_slice() {
        [] => None,
        [message] => {
            reject_undefined(message)?;
            Some(message.to_string())
        }
        _ => return Err(JinjaError::from(ErrorKind::TooManyArguments)),
    };
    let empty = value.is_none() || value.len() == Some(0);
    match message {
        _ if !value.is_undefined() && !empty => Ok(value),
        None if value.is_undefined() => Err(undefined(&value)),
        None => Err(own_error("required: the value is empty")),
        Some(message) => Err(own_error(format!("required: {message}"))),
    }
}

/// `{{ "user:pass" | b64encode }}`: standard base64, padded (as Kubernetes Secrets use).
fn b64encode(filter: &str, value: Value) -> Result<String, JinjaError> {
    if let Some(bytes) = value.as_bytes().filter(|_| value.as_str().is_none()) {
        return Ok(BASE64.encode(bytes));
    }
    Ok(BASE64.encode(text_of(&value, filter)?))
}

/// `{{ token_b64 | b64decode }}`: decodes standard base64 (line breaks ignored) into text.
/// Errors never show the value: it is usually a secret.
fn b64decode(filter: &str, value: Value) -> Result<String, JinjaError> {
    let text = text_of(&value, filter)?;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = BASE64
        .decode(compact.as_bytes())
        .map_err(|_| own_error(format!("{filter}: the value is not valid base64")))?;
    String::from_utf8(bytes)
        .map_err(|_| own_error(format!("{filter}: the decoded value is not UTF-8 text")))
}

/// `{{ db | toyaml }}`: the value as YAML, without the final newline so that it composes
/// with `indent` and `nindent` (`{{ labels | toYaml | nindent(4) }}`), as Helm's `toYaml`.
/// Keys keep the order of the data (Helm sorts them).
fn toyaml(filter: &str, value: Value) -> Result<String, JinjaError> {
    reject_undefined(&value)?;
    // The serializer recurses: a value that holds itself would overflow the stack.
    if nests_too_deep(&value) {
        return Err(too_deep(filter));
    }
    let yaml = serde_saphyr::to_string(&HelmYaml(&value))
        .map_err(|error| own_error(format!("{filter}: cannot serialize the value: {error}")))?;
    Ok(yaml.trim_end_matches('\n').to_owned())
}

/// A value as `toYaml` writes it: a string that a YAML 1.1 reader (go-yaml v2, which Helm
/// uses; PyYAML) would take for a time or a base-60 number (`12:30`, `2001-12-14`) in
/// double quotes, as Helm writes it; the YAML 1.1 booleans (`yes`, `on`) the serializer
/// quotes by itself.
struct HelmYaml<'a>(&'a Value);

impl serde::Serialize for HelmYaml<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error as _, SerializeMap as _, SerializeSeq as _};
        let value = self.0;
        let fail = |error: JinjaError| S::Error::custom(error.to_string());
        match value.kind() {
            ValueKind::String => {
                let text = value.as_str().unwrap_or_default();
                if retyped_by_yaml_1_1(text) {
                    serde_saphyr::DoubleQuoted(text).serialize(serializer)
                } else {
                    value.serialize(serializer)
                }
            }
            ValueKind::Seq | ValueKind::Iterable => {
                let items: Vec<Value> = value.try_iter().map_err(fail)?.collect();
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in &items {
                    seq.serialize_element(&HelmYaml(item))?;
                }
                seq.end()
            }
            ValueKind::Map => {
                let mut entries = Vec::new();
                for key in value.try_iter().map_err(fail)? {
                    let entry = value.get_item(&key).map_err(fail)?;
                    entries.push((key, entry));
                }
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, entry) in &entries {
                    map.serialize_entry(&HelmYaml(key), &HelmYaml(entry))?;
                }
                map.end()
            }
            _ => value.serialize(serializer),
        }
    }
}

/// Whether YAML 1.1 reads `text`, unquoted, as a timestamp or a base-60 number: go-yaml
/// v2's `isBase60Float` and the timestamp forms it parses.
fn retyped_by_yaml_1_1(text: &str) -> bool {
    static PATTERN: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        regex::Regex::new(concat!(
            r"^(?:[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?",
            r"|[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}",
            r"(?:[Tt][0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]+)?(?:Z|[-+][0-9]{2}:[0-9]{2})",
            r"| [0-9]{1,2}:[0-9]{1,2}:[0-9]{1,2}(?:\.[0-9]+)?)?)$",
        ))
        .expect("the pattern is valid")
    });
    pattern.is_match(text)
}

/// `{{ file("/run/secrets/db-password") }}`: a file's contents, as written (add `| trim`
/// to drop a final newline). Relative paths are relative to the working directory. The
/// contents are treated as a secret: masked in every log line, never in an error.
fn file(path: &str) -> Result<String, JinjaError> {
    let bytes = std::fs::read(path)
        .map_err(|error| own_error(format!("file(\"{path}\"): {}", reason::io(&error))))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| own_error(format!("file(\"{path}\"): the file is not UTF-8 text")))?;
    redact::conceal(&text);
    Ok(text)
}

/// `{{ now() }}`: the time of the render in UTC, RFC 3339 to the second
/// (`2026-11-22T10:00:00Z`), for a "rendered at" line or a restart annotation.
fn now(args: Rest<Value>) -> Result<String, JinjaError> {
    if !args.is_empty() {
        return Err(JinjaError::new(
            ErrorKind::TooManyArguments,
            "now() takes no arguments",
        ));
    }
    Ok(humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn render(source: &str) -> Result<String, String> {
        let context = context! {
            crlf => "a\r\nb\r\n",
            uni => "día ☃ 𝄞",
            empty => "",
            nothing => (),
        };
        super::super::engine::render(
            &super::super::engine::environment(),
            "t.j2",
            source,
            &context,
        )
        .map_err(|error| error.to_string())
    }

    fn ok(source: &str) -> String {
        render(source).unwrap_or_else(|error| panic!("{source}: {error}"))
    }

    #[test]
    fn python_and_go_print_floats_their_own_way() {
        for (f, python, go) in [
            (2.0, "2.0", "2"),
            (1.5, "1.5", "1.5"),
            (-0.0, "-0.0", "-0"),
            (0.0001, "0.0001", "0.0001"),
            (0.00001, "1e-05", "1e-05"),
            (123456.0, "123456.0", "123456"),
            (1234567.0, "1234567.0", "1.234567e+06"),
            (1e16, "1e+16", "1e+16"),
            (
                1234567890123456.7,
                "1234567890123456.8",
                "1.2345678901234568e+15",
            ),
            (
                12345678901234567.0,
                "1.2345678901234568e+16",
                "1.2345678901234568e+16",
            ),
            (1e300, "1e+300", "1e+300"),
            (f64::INFINITY, "inf", "+Inf"),
        ] {
            assert_eq!(python_float(f), python, "{f}");
            assert_eq!(go_float(f), go, "{f}");
        }
    }

    #[test]
    fn split_lines_is_pythons() {
        assert_eq!(split_lines(""), Vec::<&str>::new());
        assert_eq!(split_lines("\n"), [""]);
        assert_eq!(
            split_lines("a\r\nb\rc\n\nd\u{2028}e\x0bf"),
            ["a", "b", "c", "", "d", "e", "f"]
        );
        assert_eq!(split_lines("a\r"), ["a"]);
        assert_eq!(split_lines("a\r\r\n"), ["a", ""]);
    }

    #[test]
    fn indent_edge_cases() {
        assert_eq!(
            ok("{{ empty | indent(2) }}|{{ empty | indent(2, true) }}|"),
            "|  |"
        );
        // Every line break becomes \n, as Jinja2's splitlines makes it; the final one stays.
        assert_eq!(ok("{{ crlf | indent(2) }}|"), "a\n  b\n|");
        assert_eq!(ok("{{ crlf | indent(-3, true) }}|"), "a\nb\n|");
        assert_eq!(ok("{{ uni | indent('· ', true) }}"), "· día ☃ 𝄞");
        assert_eq!(
            ok("{{ 'a\n\nb\n' | indent(1, blank=true) }}|"),
            "a\n \n b\n |"
        );
    }

    #[test]
    fn nindent_edge_cases() {
        assert_eq!(ok("{{ empty | nindent(2) }}|"), "\n  |");
        assert_eq!(ok("{{ crlf | nindent(1) }}|"), "\n a\r\n b\r\n |");
        assert_eq!(ok("{{ uni | nindent(0) }}"), "\ndía ☃ 𝄞");
        let error = render("{{ uni | nindent(-1) }}").unwrap_err();
        assert_eq!(error, "t.j2:1: nindent: the width -1 is negative");
    }

    #[test]
    fn wordwrap_edge_cases() {
        assert_eq!(ok("{{ empty | wordwrap(3) }}|"), "|");
        assert_eq!(ok("{{ crlf | wordwrap(1) }}|"), "a\nb|");
        assert_eq!(ok("{{ uni | wordwrap(4) }}"), "día\n☃ 𝄞");
        assert_eq!(ok("{{ 'abcdef' | wordwrap(2) }}"), "ab\ncd\nef");
        assert_eq!(ok("{{ 'abcdef' | wordwrap(2, false) }}"), "abcdef");
        assert_eq!(ok("{{ 'well-known' | wordwrap(6) }}"), "well-\nknown");
        for width in ["0", "-1"] {
            let error = render(&format!("{{{{ uni | wordwrap({width}) }}}}")).unwrap_err();
            assert_eq!(
                error,
                format!("t.j2:1: wordwrap: invalid width {width} (must be > 0)")
            );
        }
    }

    #[test]
    fn quote_escapes_as_go() {
        assert_eq!(ok("{{ empty | quote }}|{{ empty | squote }}"), "\"\"|''");
        assert_eq!(ok("{{ nothing | quote }}|{{ nothing | squote }}"), "|");
        assert_eq!(ok("{{ crlf | quote }}"), "\"a\\r\\nb\\r\\n\"");
        assert_eq!(ok("{{ uni | quote }}"), "\"día ☃ 𝄞\"");
        assert_eq!(
            ok("{{ '\u{feff}\u{e000}\u{3000}' | quote }}"),
            "\"\\ufeff\\ue000\\u3000\""
        );
    }

    #[test]
    fn tojson_edge_cases() {
        assert_eq!(
            ok("{{ empty | tojson }} {{ uni | tojson }}"),
            "\"\" \"d\\u00eda \\u2603 \\ud834\\udd1e\""
        );
        assert_eq!(ok("{{ crlf | tojson }}"), "\"a\\r\\nb\\r\\n\"");
        assert_eq!(
            ok("{{ {'b': [], 'a': {}} | tojson(-1) }}"),
            "{\n\"a\": {},\n\"b\": []\n}"
        );
    }

    #[test]
    fn truncate_and_urlencode_edge_cases() {
        assert_eq!(
            ok("{{ empty | truncate(3) }}|{{ empty | urlencode }}|"),
            "||"
        );
        assert_eq!(ok("{{ uni | truncate(3, true, '', 0) }}"), "día");
        assert_eq!(
            ok("{{ uni | urlencode }}"),
            "d%C3%ADa%20%E2%98%83%20%F0%9D%84%9E"
        );
        assert_eq!(ok("{{ crlf | urlencode }}"), "a%0D%0Ab%0D%0A");
    }

    #[test]
    fn regex_replace_translates_python_replacements() {
        assert_eq!(
            ok("{{ 'a.b' | regex_replace('(\\\\w)\\\\.(\\\\w)', '\\\\2$\\\\1') }}"),
            "b$a"
        );
        assert_eq!(ok("{{ empty | regex_replace('^', 'x') }}"), "x");
        assert_eq!(
            ok("{{ uni | regex_replace('(?P<w>\\\\w+)', '<\\\\g<w>>') }}"),
            "<día> ☃ 𝄞"
        );
        assert_eq!(
            ok("{{ crlf | regex_replace('\\\\r\\\\n', '\\\\n') }}"),
            "a\nb\n"
        );
        assert_eq!(ok("{{ uni | regex_search('x') is none }}"), "True");
        let error = render("{{ uni | regex_replace('a', '\\\\q') }}").unwrap_err();
        assert_eq!(
            error,
            "t.j2:1: regex_replace: the unknown escape \\q in the replacement \"\\\\q\""
        );
    }

    #[test]
    fn sha256sum_and_base64_of_empty_and_non_ascii_text() {
        assert_eq!(
            ok("{{ empty | sha256sum }}"),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(ok("{{ empty | b64enc }}|{{ empty | b64dec }}|"), "||");
        assert_eq!(ok("{{ uni | b64enc | b64dec }}"), "día ☃ 𝄞");
    }

    /// What Helm 3 (sigs.k8s.io/yaml 1.4, go-yaml v2) writes for the same strings.
    #[test]
    fn toyaml_quotes_what_yaml_1_1_would_retype_as_helm_does() {
        let out = ok(
            "{{ ['12:30', '2001-12-14', '2001-12-14T21:59:43Z', '1:2', '190:20:30', \
             '20:30.15', '12:60', '2001-12-14 21:59:43.10 -5', 'yes', 'on', '0644', 'é', \
             {'12:30': '1_000'}] | toYaml }}",
        );
        assert_eq!(
            out,
            "- \"12:30\"\n- \"2001-12-14\"\n- \"2001-12-14T21:59:43Z\"\n- \"1:2\"\n\
             - \"190:20:30\"\n- \"20:30.15\"\n- 12:60\n- 2001-12-14 21:59:43.10 -5\n\
             - \"yes\"\n- \"on\"\n- \"0644\"\n- é\n- \"12:30\": \"1_000\""
        );
    }

    #[test]
    fn every_filter_and_function_is_registered_and_wrapped() {
        let registry = super::super::engine::Registry::of(&super::super::engine::environment());
        for filter in [
            "indent",
            "nindent",
            "quote",
            "squote",
            "toyaml",
            "toYaml",
            "tojson",
            "fromjson",
            "fromyaml",
            "b64enc",
            "b64dec",
            "b64encode",
            "b64decode",
            "sha256sum",
            "regex_replace",
            "regex_search",
            "default",
            "d",
            "required",
            "urlencode",
            "truncate",
            "wordwrap",
        ] {
            assert!(registry.filters.iter().any(|f| f == filter), "{filter}");
        }
        for function in ["now", "file"] {
            assert!(
                registry.functions.iter().any(|f| f == function),
                "{function}"
            );
        }
    }
}
