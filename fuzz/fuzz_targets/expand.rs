#![no_main]
//! Proves that `$(VAR)` expansion never panics and follows the Kubernetes rules: it agrees
//! with a small independent model (`$$` → `$`, `$(NAME)` → value, an undefined name is an
//! error naming it, any other `$` stays), text without `$` comes back unchanged, and a
//! defined `$(NAME)` survives into the output only where the input escaped it (`$$(`).

use initbox::expand::{Undefined, expand};
use libfuzzer_sys::fuzz_target;

/// Values that cannot build a `$(NAME)` themselves: no `$`, no parentheses, never empty.
fn tame(name: &str) -> Option<String> {
    match name {
        "A" => Some("alpha".into()),
        "POD_IP" => Some("10.1.2.3".into()),
        "B C" => Some("spaced name".into()),
        "ü" => Some("ünïcode ✓".into()),
        _ => None,
    }
}

/// Values that can: the output is still exactly what the model says.
fn wild(name: &str) -> Option<String> {
    match name {
        "" => Some("empty name".into()),
        "EMPTY" => Some(String::new()),
        "DOLLAR" => Some("$(A)".into()),
        "ESCAPED" => Some("$$".into()),
        "OPEN" => Some("(".into()),
        "CLOSE" => Some(")".into()),
        _ => tame(name),
    }
}

/// The rules, written out character by character.
fn model(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '$' {
            out.push(chars[i]);
            i += 1;
        } else if chars.get(i + 1) == Some(&'$') {
            out.push('$');
            i += 2;
        } else if chars.get(i + 1) == Some(&'(')
            && let Some(len) = chars[i + 2..].iter().position(|&c| c == ')')
        {
            let name: String = chars[i + 2..i + 2 + len].iter().collect();
            out.push_str(&lookup(&name).ok_or(name)?);
            i += 2 + len + 1;
        } else {
            out.push('$');
            i += 1;
        }
    }
    Ok(out)
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for lookup in [&tame as &dyn Fn(&str) -> Option<String>, &wild] {
        let result = expand(text, lookup);
        match (&result, model(text, lookup)) {
            (Ok(out), Ok(expected)) => assert_eq!(*out, expected, "{text:?}"),
            (Err(Undefined(name)), Err(expected)) => {
                assert_eq!(*name, expected, "{text:?}");
                assert_eq!(
                    result.as_ref().unwrap_err().to_string(),
                    format!("undefined variable $({name})")
                );
            }
            (got, expected) => panic!("{text:?}: got {got:?}, the model says {expected:?}"),
        }
        if !text.contains('$') {
            assert_eq!(result.as_deref(), Ok(text), "identity");
        }
    }
    if let Ok(out) = expand(text, tame) {
        let left: usize = ["A", "POD_IP", "B C", "ü"]
            .iter()
            .map(|name| out.matches(&format!("$({name})")).count())
            .sum();
        let escaped = text.matches("$$(").count();
        assert!(left <= escaped, "{text:?} → {out:?}: {left} unexpanded");
    }
});
