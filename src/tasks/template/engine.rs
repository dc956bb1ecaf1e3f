//! The template engine as initbox configures it: minijinja set up to behave like Jinja2
//! with `StrictUndefined` and `keep_trailing_newline` (so a template renders the same in
//! both where the syntax is shared), plus the helpers people rely on in gomplate and
//! dockerize (`required`, `env()`, `file()`, base64, `toyaml`), and error messages that
//! name the template, the line and the variable but never a secret.
//!
//! Strict undefined, as Jinja2's `StrictUndefined` means it: minijinja's own strict mode
//! stops printing, iterating and testing an undefined value, but lets one reach filters,
//! tests and functions, which then make something of it (`tojson` says `null`, `join`
//! prints nothing, `is none` says false). So every filter, test and function the engine
//! has is wrapped: an undefined argument, or one inside a list or map argument, ends the
//! render naming the variable. Only what exists to ask about an undefined value takes one
//! ([`TAKE_UNDEFINED_FILTERS`], [`TAKE_UNDEFINED_TESTS`]).

use std::sync::Arc;

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Rest, Value, ValueKind, ValueOrKwargs};
use minijinja::{
    AutoEscape, Environment, Error as JinjaError, ErrorKind, State, UndefinedBehavior,
};

use crate::exit::{Error, Result};

/// The filters that may be given an undefined value: they exist to replace one (`default`,
/// `d`) or to fail with the user's own message (`required`).
pub const TAKE_UNDEFINED_FILTERS: &[&str] = &["default", "d", "required"];

/// The tests that may be given an undefined value: they exist to ask whether it is one.
pub const TAKE_UNDEFINED_TESTS: &[&str] = &["defined", "undefined"];

/// How many values the search for an undefined one looks at in the arguments of one
/// call: enough for any configuration, and a bound for a self-referencing namespace.
const SCAN_BUDGET: usize = 100_000;

/// An environment configured for rendering configuration files.
pub fn environment() -> Environment<'static> {
    let mut env = unchecked_environment();
    strict_calls(&mut env);
    env
}

/// The names of the filters, tests and functions an environment has, as the engine lists
/// them: what [`environment`] wraps, and what the tests try against undefined values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    pub filters: Vec<String>,
    pub tests: Vec<String>,
    pub functions: Vec<String>,
}

impl Registry {
    pub fn of(env: &Environment<'_>) -> Registry {
        // minijinja lists its filters and tests only in its Debug output; the unit test
        // `the_registry_lists_every_builtin` fails if that ever changes.
        let debug = format!("{env:?}");
        Registry {
            filters: debug_list(&debug, "filters: ["),
            tests: debug_list(&debug, "tests: ["),
            functions: env
                .globals()
                .filter(|(_, value)| value.kind() == ValueKind::Plain)
                .map(|(name, _)| name.to_owned())
                .collect(),
        }
    }
}

/// The quoted names of `…label["a", "b"]` in a Debug dump.
fn debug_list(debug: &str, label: &str) -> Vec<String> {
    let Some(start) = debug.rfind(label) else {
        return Vec::new();
    };
    let mut rest = &debug[start + label.len()..];
    let mut names = Vec::new();
    loop {
        rest = rest.trim_start_matches([',', ' ']);
        let Some(quoted) = rest.strip_prefix('"') else {
            break;
        };
        let Some(end) = quoted.find('"') else {
            break;
        };
        names.push(quoted[..end].to_owned());
        rest = &quoted[end + 1..];
    }
    names
}

/// Wraps every filter, test and function of `env` (but those of [`TAKE_UNDEFINED_FILTERS`]
/// and [`TAKE_UNDEFINED_TESTS`]) so that an undefined argument is an error; the
/// formatter and the Python-style methods get the same check.
fn strict_calls(env: &mut Environment<'static>) {
    let registry = Registry::of(env);
    // The originals, reached by name: minijinja hands out a filter or test only by
    // applying it.
    let originals = Arc::new(env.clone());
    for name in registry.filters {
        if TAKE_UNDEFINED_FILTERS.contains(&name.as_str()) {
            continue;
        }
        let originals = Arc::clone(&originals);
        let filter = name.clone();
        env.add_filter(name, move |args: Rest<ValueOrKwargs>| {
            let args = args.into_values();
            reject_undefined_args(&filter, &args)?;
            originals.empty_state().apply_filter(&filter, &args)
        });
    }
    for name in registry.tests {
        if TAKE_UNDEFINED_TESTS.contains(&name.as_str()) {
            continue;
        }
        let originals = Arc::clone(&originals);
        let test = name.clone();
        env.add_test(name, move |args: Rest<ValueOrKwargs>| {
            let args = args.into_values();
            reject_undefined_args(&test, &args)?;
            originals.empty_state().perform_test(&test, &args)
        });
    }
    let functions: Vec<(String, Value)> = env
        .globals()
        .filter(|(name, _)| registry.functions.iter().any(|f| f == name))
        .map(|(name, value)| (name.to_owned(), value))
        .collect();
    for (name, original) in functions {
        let function = name.clone();
        env.add_function(name, move |state: &mut State, args: Rest<ValueOrKwargs>| {
            let args = args.into_values();
            reject_undefined_args(&function, &args)?;
            original.call(state, &args)
        });
    }
    env.set_formatter(|out, state, value| {
        reject_undefined(value)?;
        minijinja::escape_formatter(out, state, value)
    });
    env.set_unknown_method_callback(|state, value, method, args| {
        reject_undefined(value)?;
        for arg in args {
            reject_undefined(arg)?;
        }
        minijinja_contrib::pycompat::unknown_method_callback(state, value, method, args)
    });
}

/// The check of one call: no argument is undefined or holds one. The list given to
/// `select`/`reject('defined')` (and `selectattr`/`rejectattr`), or to `map('default')`,
/// may hold undefined items: sorting those out is what the call is for.
fn reject_undefined_args(name: &str, args: &[Value]) -> Result<(), JinjaError> {
    let asks_about_items = |test_at: usize| {
        args.get(test_at)
            .and_then(Value::as_str)
            .is_some_and(|test| match name {
                "map" => TAKE_UNDEFINED_FILTERS.contains(&test),
                _ => TAKE_UNDEFINED_TESTS.contains(&test),
            })
    };
    let items_may_be_undefined = match name {
        "select" | "reject" | "map" => asks_about_items(1),
        "selectattr" | "rejectattr" => asks_about_items(2),
        _ => false,
    };
    for (index, arg) in args.iter().enumerate() {
        if index == 0 && items_may_be_undefined {
            if arg.is_undefined() {
                return Err(undefined(arg));
            }
            continue;
        }
        reject_undefined(arg)?;
    }
    Ok(())
}

/// An error naming the variable if `value` is undefined or holds an undefined value
/// (a list or map built in the template: `[db.host, db.port]`).
pub fn reject_undefined(value: &Value) -> Result<(), JinjaError> {
    let mut budget = SCAN_BUDGET;
    match find_undefined(value, &mut budget) {
        Some(found) => Err(undefined(&found)),
        None => Ok(()),
    }
}

fn find_undefined(value: &Value, budget: &mut usize) -> Option<Value> {
    // Depth first with a stack of its own, not by recursion: a namespace can hold itself
    // (`{% set ns.me = ns %}`), and the scan must end at the budget, not overflow the
    // thread's stack (which aborted the process).
    let mut pending = vec![value.clone()];
    while let Some(value) = pending.pop() {
        if value.is_undefined() {
            return Some(value);
        }
        if *budget == 0 {
            return None;
        }
        *budget -= 1;
        // Only lists and maps: their items can be read again; an iterator would be used up.
        let is_map = match value.kind() {
            ValueKind::Map => true,
            ValueKind::Seq => false,
            _ => continue,
        };
        let Ok(items) = value.try_iter() else {
            continue;
        };
        let mut children = Vec::new();
        for item in items {
            let entry = is_map.then(|| value.get_item(&item).ok()).flatten();
            children.push(item);
            children.extend(entry);
        }
        // Reversed onto the stack, so that the first undefined value in reading order is
        // the one named.
        pending.extend(children.into_iter().rev());
    }
    None
}

/// The environment before [`strict_calls`]: the engine's own filters, tests and functions
/// and initbox's.
fn unchecked_environment() -> Environment<'static> {
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
    super::filters::register(&mut env);
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
    render_located(env, name, source, context, &|_| None)
}

/// [`render`], where `locate` gives the file of a template the engine loaded by name (an
/// included partial), so that a message names the file the error is in.
pub fn render_located<'source>(
    env: &Environment<'source>,
    name: &'source str,
    source: &'source str,
    context: &Value,
    locate: &dyn Fn(&str) -> Option<String>,
) -> Result<String> {
    env.template_from_named_str(name, source)
        .and_then(|template| template.render(context))
        .map_err(|error| Error::Config(describe_located(&error, name, locate)))
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
    describe_located(error, name, &|_| None)
}

/// [`describe`], naming a loaded template by the file `locate` gives for its name.
pub fn describe_located(
    error: &JinjaError,
    name: &str,
    locate: &dyn Fn(&str) -> Option<String>,
) -> String {
    // An error inside an included, imported or extended template comes wrapped in one at
    // the `include` line ("could not render include: error in …"): the innermost error
    // from another template says where it really is, the partial's file and line.
    let mut inner = std::error::Error::source(error);
    let mut deepest = None;
    while let Some(cause) = inner {
        if let Some(cause) = cause.downcast_ref::<JinjaError>()
            && cause.line().is_some()
            && cause.name().is_some_and(|file| Some(file) != error.name())
        {
            deepest = Some(cause);
        }
        inner = cause.source();
    }
    if let Some(deepest) = deepest {
        return describe_located(deepest, name, locate);
    }
    let file = error
        .name()
        .map(|file| locate(file).unwrap_or_else(|| file.to_owned()));
    let location = match (file.as_deref(), error.line()) {
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
            // An undefined value the engine cannot trace to a name: an attribute or item
            // that is missing, as `map(attribute=…)` leaves one.
            (ErrorKind::UndefinedError, _) => {
                "a value is undefined (a missing attribute or item)".to_owned()
            }
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
pub fn undefined(value: &Value) -> JinjaError {
    value
        .get_attr("")
        .err()
        .unwrap_or_else(|| JinjaError::from(ErrorKind::UndefinedError))
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn render_str(source: &str, context: Value) -> Result<String> {
        render(&environment(), "t.j2", source, &context)
    }

    #[test]
    fn the_registry_lists_every_builtin() {
        let registry = Registry::of(&environment());
        for filter in [
            "tojson",
            "join",
            "default",
            "b64encode",
            "toyaml",
            "required",
            "map",
        ] {
            assert!(
                registry.filters.iter().any(|f| f == filter),
                "{filter}: {registry:?}"
            );
        }
        for test in ["defined", "none", "==", "in", "sameas"] {
            assert!(
                registry.tests.iter().any(|t| t == test),
                "{test}: {registry:?}"
            );
        }
        for function in ["range", "dict", "namespace", "debug", "file"] {
            assert!(
                registry.functions.iter().any(|f| f == function),
                "{function}: {registry:?}"
            );
        }
        assert!(
            registry.filters.len() > 40 && registry.tests.len() > 30,
            "{registry:?}"
        );
        // The wrapped environment has the same names as the engine's own.
        assert_eq!(registry, Registry::of(&unchecked_environment()));
    }

    #[test]
    fn an_undefined_value_reaches_no_filter_test_or_function() {
        for source in [
            "{{ x | tojson }}",
            "{{ [x] | join }}",
            "{{ x is none }}",
            "{{ dict(a=x) }}",
            "{{ {'a': x} }}",
            "{{ 'a,b'.split(x) }}",
            "{{ env('NOPE', x) }}",
            "{{ 1 | required(x) }}",
        ] {
            let context =
                context! { env => Value::from_object(super::super::context::Environ::empty()) };
            let error = render_str(source, context).unwrap_err().to_string();
            assert_eq!(error, "t.j2:1: `x` is undefined", "{source}");
        }
        let ok = |source: &str| render_str(source, context! {}).unwrap();
        assert_eq!(ok("{{ x is defined }} {{ x | default('d') }}"), "False d");
        assert_eq!(ok("{{ [x, 1] | select('defined') | list }}"), "[1]");
        assert_eq!(ok("{{ [x, 1] | map('default', 2) | list }}"), "[2, 1]");
        assert_eq!(
            ok("{{ 'abc' | replace('a', 'b', count=1) }} {{ [1] | tojson(indent=2) }}"),
            "bbc [\n  1\n]"
        );
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
