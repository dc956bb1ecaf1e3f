//! The template engine as initbox configures it: minijinja set up to behave like Jinja2
//! with `StrictUndefined` and `keep_trailing_newline` (so a template renders the same in
//! both where the syntax is shared), plus the helpers people rely on in gomplate and
//! dockerize (`required`, `env()`, `file()`, base64, `toyaml`), and error messages that
//! name the template, the line and the variable but never a secret.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, Error as JinjaError, ErrorKind, UndefinedBehavior};

use crate::exit::{Error, Result};
use crate::redact;
use crate::resolve::io_reason;

/// An environment configured for rendering configuration files.
pub fn environment<'source>() -> Environment<'source> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_syntax(
        SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    // Configuration files are not HTML: `app.html.j2` must not be escaped (Jinja2's default).
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Debug mode is what lets an undefined-variable error say which variable it was.
    env.set_debug(true);
    // Python's str and dict methods (`.items()`, `.split()`, `.startswith()`…), as in Jinja2.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    env.add_filter("required", required);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("toyaml", toyaml);
    env.add_function("file", file);
    env
}

/// Compiles and renders one template; every failure is a configuration error whose
/// message starts with `NAME:LINE:`.
pub fn render<'source>(
    env: &Environment<'source>,
    name: &'source str,
    source: &'source str,
    context: &Value,
) -> Result<String> {
    env.template_from_named_str(name, source)
        .and_then(|template| template.render(context))
        .map_err(|error| Error::Config(describe(&error, name)))
}

/// Marks the errors of initbox's own filters and functions, whose message says it all
/// (no "invalid operation:" in front).
#[derive(Debug)]
struct OwnMessage;

impl std::fmt::Display for OwnMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("initbox")
    }
}

impl std::error::Error for OwnMessage {}

/// An error of a filter or function whose message is complete as it is.
pub fn own_error(message: impl Into<String>) -> JinjaError {
    JinjaError::new(ErrorKind::InvalidOperation, message.into()).with_source(OwnMessage)
}

/// `template.conf.j2:3: `db.host` is undefined`, `…:7: syntax error: unexpected end of
/// input`. The engine's debug dump (source excerpt and the values of nearby variables) is
/// left out on purpose: those values may be secrets.
pub fn describe(error: &JinjaError, name: &str) -> String {
    let location = match (error.name(), error.line()) {
        (Some(file), Some(line)) => format!("{file}:{line}"),
        (Some(file), None) => file.to_owned(),
        (None, Some(line)) => format!("{name}:{line}"),
        (None, None) => name.to_owned(),
    };
    let detail = error.detail();
    let source = std::error::Error::source(error);
    let mut message = if source.is_some_and(|s| s.is::<OwnMessage>()) {
        detail.unwrap_or("failed").to_owned()
    } else {
        match (error.kind(), detail) {
            (ErrorKind::UndefinedError, Some(detail)) if detail.contains("undefined") => {
                detail.to_owned()
            }
            (ErrorKind::UndefinedError, _) => "undefined variable".to_owned(),
            (kind, Some(detail)) => format!("{kind}: {detail}"),
            (kind, None) => kind.to_string(),
        }
    };
    // Errors inside a macro or a filter carry their cause; minijinja's own Display of a
    // cause is the short one (no debug dump).
    let mut cause = source;
    while let Some(inner) = cause {
        if !inner.is::<OwnMessage>() {
            message.push_str(&format!(": {inner}"));
        }
        cause = inner.source();
    }
    format!("{location}: {message}")
}

/// The engine's own error for an undefined value, which names the expression it came
/// from (`db.password`) once the engine has seen it.
fn undefined(value: &Value) -> JinjaError {
    value
        .get_attr("")
        .err()
        .unwrap_or_else(|| JinjaError::from(ErrorKind::UndefinedError))
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

/// `{{ db.password | required("set DB_PASSWORD") }}`: the value, unless it is undefined,
/// none or empty, in which case rendering fails with the message.
fn required(value: Value, message: Option<String>) -> Result<Value, JinjaError> {
    let empty = value.is_none() || value.len() == Some(0);
    match message {
        _ if !value.is_undefined() && !empty => Ok(value),
        None if value.is_undefined() => Err(undefined(&value)),
        None => Err(own_error("required: the value is empty")),
        Some(message) => Err(own_error(format!("required: {message}"))),
    }
}

/// `{{ "user:pass" | b64encode }}`: standard base64, padded (as Kubernetes Secrets use).
fn b64encode(value: Value) -> Result<String, JinjaError> {
    if let Some(bytes) = value.as_bytes().filter(|_| value.as_str().is_none()) {
        return Ok(BASE64.encode(bytes));
    }
    Ok(BASE64.encode(text_of(&value, "b64encode")?))
}

/// `{{ token_b64 | b64decode }}`: decodes standard base64 (line breaks ignored) into text.
/// Errors never show the value: it is usually a secret.
fn b64decode(value: Value) -> Result<String, JinjaError> {
    let text = text_of(&value, "b64decode")?;
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bytes = BASE64
        .decode(compact.as_bytes())
        .map_err(|_| own_error("b64decode: the value is not valid base64"))?;
    String::from_utf8(bytes)
        .map_err(|_| own_error("b64decode: the decoded value is not UTF-8 text"))
}

/// `{{ db | toyaml }}`: the value as YAML, without the final newline so that it composes
/// with `indent` (`{{ labels | toyaml | indent(4) }}`).
fn toyaml(value: Value) -> Result<String, JinjaError> {
    if value.is_undefined() {
        return Err(undefined(&value));
    }
    let yaml = serde_saphyr::to_string(&value)
        .map_err(|error| own_error(format!("toyaml: cannot serialize the value: {error}")))?;
    Ok(yaml.trim_end_matches('\n').to_owned())
}

/// `{{ file("/run/secrets/db-password") }}`: a file's contents, as written (add `| trim`
/// to drop a final newline). Relative paths are relative to the working directory. The
/// contents are treated as a secret: masked in every log line, never in an error.
fn file(path: &str) -> Result<String, JinjaError> {
    let bytes = std::fs::read(path)
        .map_err(|error| own_error(format!("file(\"{path}\"): {}", io_reason(&error))))?;
    let text = String::from_utf8(bytes)
        .map_err(|_| own_error(format!("file(\"{path}\"): the file is not UTF-8 text")))?;
    redact::conceal(&text);
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn render_str(source: &str, context: Value) -> Result<String> {
        render(&environment(), "t.j2", source, &context)
    }

    #[test]
    fn keeps_the_trailing_newline_and_does_not_escape() {
        let out = render_str("<{{ a }}>\n", context! { a => "&" }).unwrap();
        assert_eq!(out, "<&>\n");
    }

    #[test]
    fn undefined_names_the_variable_and_line() {
        let error = render_str("a\n{{ db.host }}\n", context! { db => context! {} })
            .unwrap_err()
            .to_string();
        assert_eq!(error, "t.j2:2: `db.host` is undefined");
        let error = render_str("{{ nothing }}", context! {})
            .unwrap_err()
            .to_string();
        assert_eq!(error, "t.j2:1: `nothing` is undefined");
    }

    #[test]
    fn syntax_errors_name_the_line() {
        let error = render_str("ok\n{% if x %}\nno end\n", context! { x => true })
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("t.j2:"), "{error}");
        assert!(error.contains("syntax error"), "{error}");
    }

    #[test]
    fn required_filter() {
        let ctx = context! { set => "v", empty => "", nothing => () };
        assert_eq!(
            render_str("{{ set | required('m') }}", ctx.clone()).unwrap(),
            "v"
        );
        for expr in ["empty", "nothing", "missing"] {
            let error = render_str(
                &format!("{{{{ {expr} | required('set X') }}}}"),
                ctx.clone(),
            )
            .unwrap_err()
            .to_string();
            assert_eq!(error, "t.j2:1: required: set X", "{expr}");
        }
        let error = render_str("{{ missing | required }}", ctx)
            .unwrap_err()
            .to_string();
        assert_eq!(error, "t.j2:1: `missing` is undefined");
    }

    #[test]
    fn base64_round_trip_and_yaml() {
        let ctx = context! { s => "user:pässword", m => context! { b => 1, a => vec!["x"] } };
        assert_eq!(
            render_str("{{ s | b64encode }}", ctx.clone()).unwrap(),
            "dXNlcjpww6Rzc3dvcmQ="
        );
        assert_eq!(
            render_str("{{ s | b64encode | b64decode }}", ctx.clone()).unwrap(),
            "user:pässword"
        );
        let error = render_str("{{ 'not base64!' | b64decode }}", ctx.clone()).unwrap_err();
        assert!(error.to_string().contains("not valid base64"), "{error}");
        assert!(!error.to_string().contains("not base64!"), "{error}");
        assert_eq!(
            render_str("{{ m | toyaml }}", ctx).unwrap(),
            "b: 1\na:\n- x"
        );
    }

    #[test]
    fn file_errors_name_the_path() {
        let error = render_str("{{ file('/nonexistent/secret') }}", context! {})
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "t.j2:1: file(\"/nonexistent/secret\"): no such file or directory"
        );
    }
}
