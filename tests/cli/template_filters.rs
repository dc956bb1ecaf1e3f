//! template's filters and functions through the real binary, byte for byte against the
//! tool each name comes from: python3's Jinja2 for Jinja2's names, Ansible's definitions
//! (run in the same Jinja2) for Ansible's, and Helm's documented output (Sprig's Go code,
//! GNU coreutils for the checksums and base64) for Helm's.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Sandbox, path_str};

/// A python3 with Jinja2 and ruamel.yaml (Debian's first, where apt-get puts them).
fn python() -> &'static str {
    static PYTHON: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| {
        crate::template::python_with("jinja2, ruamel.yaml", "python3-jinja2 python3-ruamel.yaml")
    })
}

/// The values every case renders with, as `v` (initbox's `--data v=values.json`).
const VALUES: &str = r#"{
  "block": "a: 1\nb: 2\n",
  "lines": "a: 1\n\nb: 2",
  "crlf": "a\r\nb\r\n\r\nc",
  "empty": "",
  "uni": "héllo wörld ☃ 𝄞 ünïcödé",
  "ctrl": "tab\there \"q\" back\\slash nl\n \u0001 \u007f </script> & 'x'",
  "none": null,
  "zero": 0,
  "list": [],
  "map": {"b": 1, "a": [1, 2.5, "x<y>&'z"], "é": null, "c": true, "A": {"z": [], "y": {}}},
  "floats": [1.0, 1e16, 1.5e-7, 123.456, -0.0, 1e300, 0.0001, 1234567890123456.7, 1e-5, 12345678901234567.0],
  "text": "The quick brown fox jumps over the lazy dog; well-known state-of-the-art re-entrant long-words and em--dashes -- here, plus https://example.com/a-very-long-path-name-that-does-not-fit-anywhere-at-all.\nSecond paragraph, a bit longer than the width.\n\nThird after a blank line.",
  "tabs": "a\tb\t\tc  d   e    f g-h-i-j-k---l",
  "nospace": "abcdefghijklmnopqrstuvwxyz0123456789",
  "path": "/a b/ç?x=1&y=~_.-!'()*+,;:@/%",
  "query": {"q": "my search/x", "lang": "fr ç", "n": null, "i": 3},
  "pairs": [["a b", "c/d"], ["e", 1]],
  "host": "db.internal",
  "words": "Alpha beta\ngamma Delta\nalpha-42 and Beta_7",
  "json": "{\"b\": [1, 2.5, \"x\"], \"a\": {\"z\": null, \"y\": true}, \"s\": \"ç\\u00e9\"}",
  "yaml": "on: yes\nport: 8080\nratio: 0.5\nhex: 0x1F\noctal: 0o17\nempty: ~\nlist: [a, 1, true]\nnested:\n  b: two\n  a: 'quoted: yes'\n",
  "re": {
    "swap": "^(\\w+)\\.(\\w+)$", "swapped": "\\2-\\1",
    "named": "(?P<word>[a-z]+)-(?P<num>\\d+)", "by_name": "\\g<num>:\\g<word>",
    "vowel": "[aeiou]", "star": "x*", "line_start": "^(\\w)", "dollar": "$1 \\n\\t\\\\",
    "greek": "alpha|beta"
  }
}"#;

/// Ansible's filters as ansible/plugins/filter/core.py defines them (Ansible itself is not
/// installed): the reference for the names Jinja2 lacks. `from_yaml` reads YAML 1.2 with
/// ruamel, as initbox's `--data` files are read (Ansible's PyYAML reads YAML 1.1).
const ANSIBLE: &str = r#"
import json, re
from ruamel.yaml import YAML

def regex_replace(value='', pattern='', replacement='', ignorecase=False, multiline=False,
                  count=0, mandatory_count=0):
    flags = 0
    if ignorecase:
        flags |= re.I
    if multiline:
        flags |= re.M
    (output, subs) = re.compile(pattern, flags=flags).subn(replacement, str(value), count=count)
    if mandatory_count and mandatory_count != subs:
        raise ValueError('mandatory_count')
    return output

def regex_search(value, regex, *args, **kwargs):
    groups = list()
    for arg in args:
        if arg.startswith('\\g'):
            groups.append(re.match(r'\\g<(\S+)>', arg).group(1))
        elif arg.startswith('\\'):
            groups.append(int(re.match(r'\\(\d+)', arg).group(1)))
        else:
            raise ValueError('Unknown argument')
    flags = 0
    if kwargs.get('ignorecase'):
        flags |= re.I
    if kwargs.get('multiline'):
        flags |= re.M
    match = re.search(regex, value, flags)
    if match:
        if not groups:
            return match.group()
        return [match.group(item) for item in groups]

FILTERS = {
    'regex_replace': regex_replace,
    'regex_search': regex_search,
    'fromjson': json.loads,
    'fromyaml': lambda text: YAML(typ='safe', pure=True).load(text),
}
"#;

/// What python3's Jinja2 (set up as initbox sets up minijinja, with [`ANSIBLE`]'s filters)
/// renders for each template: `Ok(text)` or `Err(the exception's class)`.
fn jinja2(sandbox: &Sandbox, templates: &[&str]) -> Vec<Result<String, String>> {
    let input = sandbox.write(
        "jinja2-templates.json",
        &serde_json::to_string(templates).unwrap(),
    );
    let values = sandbox.write("jinja2-values.json", VALUES);
    let script = format!(
        "{ANSIBLE}
import sys
import jinja2
environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
environment.filters.update(FILTERS)
values = json.load(open(sys.argv[2], encoding='utf-8'))
outcomes = []
for source in json.load(open(sys.argv[1], encoding='utf-8')):
    try:
        outcomes.append({{'ok': environment.from_string(source).render(v=values)}})
    except Exception as error:
        outcomes.append({{'error': type(error).__name__}})
print(json.dumps(outcomes))
"
    );
    let output = Command::new(python())
        .args(["-c", &script])
        .arg(&input)
        .arg(&values)
        .stdin(Stdio::null())
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    crate::template::python_outcomes(&output.stdout)
}

/// What initbox renders for one template with [`VALUES`] as `v`: `Ok(the file's bytes)` or
/// `Err((exit code, stderr))`.
fn initbox(sandbox: &Sandbox, name: &str, template: &str) -> Result<String, (i32, String)> {
    let values = sandbox.write("values.json", VALUES);
    let src = sandbox.write(&format!("{name}.j2"), template);
    let dest = sandbox.path(&format!("out/{name}"));
    let output = sandbox
        .initbox()
        .args(["template", path_str(&src), path_str(&dest), "--data"])
        .arg(format!("v={}", values.display()))
        .run();
    match output.code {
        0 => Ok(std::fs::read_to_string(&dest).unwrap()),
        code => Err((code, output.stderr)),
    }
}

/// Each template renders in initbox exactly as in Jinja2.
fn assert_like_jinja2(templates: &[&str]) {
    let sandbox = Sandbox::new();
    let theirs = jinja2(&sandbox, templates);
    for (index, (template, theirs)) in templates.iter().zip(theirs).enumerate() {
        let theirs = theirs.unwrap_or_else(|error| panic!("{template}: Jinja2 fails: {error}"));
        let ours = initbox(&sandbox, &format!("case-{index}"), template)
            .unwrap_or_else(|(code, stderr)| panic!("{template}: exit {code}: {stderr}"));
        assert_eq!(
            ours, theirs,
            "{template}: initbox (left) and Jinja2 (right) differ"
        );
    }
}

#[test]
fn indent_keeps_the_final_newline_and_the_rest_of_jinja2s_output() {
    assert_like_jinja2(&[
        "{{ v.block | indent }}|",
        "config:\n  {{ v.block | indent(2) }}end\n",
        "{{ v.block | indent(2, true) }}|",
        "{{ v.lines | indent(2) }}|{{ v.lines | indent(2, blank=true) }}|",
        "{{ v.block | indent(2, first=true, blank=true) }}|",
        "{{ v.crlf | indent(3) }}|{{ v.crlf | indent(3, true, true) }}|",
        "{{ v.block | indent('> ') }}|{{ v.block | indent(width='\t', first=true) }}|",
        "{{ v.block | indent(-2) }}|{{ v.block | indent(0, true) }}|",
        "{{ v.empty | indent(2) }}|{{ v.empty | indent(2, true) }}|{{ v.empty | indent(2, true, true) }}|",
        "{{ v.uni | indent(1, true) }}|{{ '\n' | indent(2, true, true) }}|",
    ]);
}

#[test]
fn tojson_sorts_keys_and_escapes_as_jinja2() {
    assert_like_jinja2(&[
        "{{ v.map | tojson }}",
        "{{ v.map | tojson(2) }}\n{{ v.map | tojson(indent=0) }}\n{{ v.map | tojson(indent='\t') }}",
        "{{ v.floats | tojson }}",
        "{{ v.uni | tojson }} {{ v.ctrl | tojson }}",
        "{{ [] | tojson }} {{ {} | tojson(2) }} {{ none | tojson }} {{ [[]] | tojson(1) }}",
        "<script>var config = {{ v.query | tojson }};</script>",
        "{{ v.map | tojson(indent=none) }} {{ v.list | tojson(true) }} {{ v.map.A | tojson(false) }}",
    ]);
}

#[test]
fn default_replaces_only_an_undefined_value_unless_boolean() {
    assert_like_jinja2(&[
        "{{ v.none | default('d') }} {{ v.empty | default('d') }}| {{ v.zero | default('d') }} {{ v.missing | default('d') }} {{ v.missing | default }}|",
        "{{ v.none | default('d', true) }} {{ v.empty | default('d', boolean=true) }} {{ v.zero | d('d', true) }} {{ v.list | default('d', true) }} {{ 'x' | default('d', true) }}",
        "{{ v.empty | default('d', boolean=false) }}|{{ v.none | d('d', false) }}|{{ v.missing | default(default_value='k') }}",
        "{{ v.missing | default(v.map.b) }} {{ v.map.nope | default(v.block) }}",
    ]);
}

#[test]
fn truncate_cuts_at_a_word_with_jinja2s_leeway() {
    assert_like_jinja2(&[
        "{{ v.text | truncate(20) }}|{{ v.text | truncate(20, true) }}|{{ v.text | truncate(20, end='…') }}",
        "{{ v.text | truncate(20, leeway=0) }}|{{ v.text | truncate(length=30, killwords=true, end='', leeway=0) }}",
        "{{ 'short' | truncate(3) }}|{{ 'a bit longer' | truncate(3, leeway=0) }}|{{ v.nospace | truncate(10, leeway=0) }}",
        "{{ v.uni | truncate(9, leeway=0) }}|{{ v.uni | truncate(9, true, '~', 0) }}|{{ v.empty | truncate(3) }}|",
        "{{ v.text | truncate }}",
    ]);
}

#[test]
fn wordwrap_wraps_each_line_as_python_textwrap() {
    assert_like_jinja2(&[
        "{{ v.text | wordwrap }}",
        "{{ v.text | wordwrap(10) }}",
        "{{ v.text | wordwrap(20) }}",
        "{{ v.text | wordwrap(5) }}",
        "{{ v.text | wordwrap(1) }}",
        "{{ v.text | wordwrap(12, break_long_words=false) }}",
        "{{ v.text | wordwrap(12, break_on_hyphens=false) }}",
        "{{ v.text | wordwrap(15, wrapstring='<br>\n') }}",
        "{{ v.tabs | wordwrap(4) }}|{{ v.tabs | wordwrap(7) }}|{{ v.tabs | wordwrap(3, false, '/', false) }}",
        "{{ v.crlf | wordwrap(2) }}|{{ v.uni | wordwrap(6) }}|{{ v.empty | wordwrap }}|{{ v.lines | wordwrap }}|",
        "{{ 'a--b c---d e--f-g well-- x--' | wordwrap(3) }}|{{ 'x-y-z ab-cd-ef a1-b2c3 ---- -a- ' | wordwrap(2) }}",
    ]);
}

#[test]
fn urlencode_quotes_as_jinja2_for_text_maps_and_pairs() {
    assert_like_jinja2(&[
        "{{ v.path | urlencode }}",
        "{{ v.query | urlencode }}",
        "{{ v.pairs | urlencode }}",
        "{{ 42 | urlencode }} {{ v.none | urlencode }} {{ true | urlencode }} {{ v.floats[2] | urlencode }} {{ v.uni | urlencode }}",
        "https://example.com/search?{{ {'q': 'a&b=c', 'lang': 'ç'} | urlencode }}",
    ]);
}

#[test]
fn regex_replace_and_regex_search_render_as_ansible() {
    assert_like_jinja2(&[
        "{{ v.host | regex_replace(v.re.swap, v.re.swapped) }}",
        "{{ v.words | regex_replace(v.re.named, v.re.by_name) }}",
        "{{ v.words | regex_replace(v.re.vowel, '_') }}|{{ v.words | regex_replace(v.re.vowel, '_', count=2) }}",
        "{{ v.words | regex_replace(v.re.greek, 'X', ignorecase=true) }}",
        "{{ v.words | regex_replace(v.re.line_start, '>\\\\1', multiline=true) }}|{{ v.words | regex_replace(v.re.line_start, '>\\\\1') }}",
        "{{ v.host | regex_replace(v.re.swap, v.re.dollar) }}",
        "{{ 'abc' | regex_replace('', '-') }}|{{ 'abc' | regex_replace('b') }}|{{ 42 | regex_replace('2', 'x') }}",
        "{{ v.words | regex_replace(v.re.vowel, '', mandatory_count=12) }}",
        "{{ v.words | regex_search(v.re.greek) }}|{{ v.words | regex_search('ALPHA') }}|{{ v.words | regex_search('ALPHA', ignorecase=true) }}",
        "{{ v.words | regex_search(v.re.named, '\\\\g<num>', '\\\\1') }}|{{ v.words | regex_search('^g(a)(x)?', '\\\\1', '\\\\2', multiline=true) }}",
    ]);
}

#[test]
fn fromjson_and_fromyaml_read_text_as_ansible_with_yaml_1_2() {
    assert_like_jinja2(&[
        "{{ v.json | fromjson | tojson }}",
        "{{ '[12345678901234567.0, 0.1, 1e-7, 2.5e300]' | fromjson | tojson }}",
        "{% for k, x in (v.json | fromjson).items() %}{{ k }}={{ x }};{% endfor %} {{ (v.json | fromjson).a.y }}",
        "{{ v.yaml | fromyaml | tojson }}",
        "{% for k, x in (v.yaml | fromyaml).items() %}{{ k }}={{ x }};{% endfor %}",
        "{{ (v.yaml | fromyaml).nested.a }} {{ ('[1, 2]' | fromyaml)[1] + 1 }} {{ ('7' | fromjson) * 6 }}",
    ]);
}

/// Helm's documented output, from Sprig's code (strings.go, crypto.go) and Helm's own
/// rendering of `toYaml | nindent` (helm/helm#30790 shows it for the values below).
#[test]
fn helm_names_render_as_helm() {
    let sandbox = Sandbox::new();
    let values = sandbox.write(
        "helm-values.yaml",
        "affinity:\n  nodeAffinity:\n    requiredDuringSchedulingIgnoredDuringExecution:\n      nodeSelectorTerms:\n        - matchExpressions:\n            - key: loadtest\n              operator: In\n              values:\n                - \"true\"\n\
         text: \"He said \\\"hi\\\" \\\\ \\t\\n\\0\\x7f é☃𝄞\\u00a0\\u200b\\u00ad end\"\n\
         port: 8080\nratio: 1.5\nround: 2.0\nmillion: 1000000.0\nsmall: 0.00001\nflag: true\nnothing: null\n\
         squoted: It's \"here\"\nblock: \"a: 1\\n\\nb: 2\\n\"\n",
    );
    let render = |template: &str| {
        let src = sandbox.write("helm.j2", template);
        let dest = sandbox.path("helm.out");
        sandbox
            .initbox()
            .args(["template", path_str(&src), path_str(&dest), "--data"])
            .arg(format!("h={}", values.display()))
            .run()
            .assert_code(0);
        std::fs::read_to_string(&dest).unwrap()
    };
    // Helm's output in helm/helm#30790, byte for byte: lists not indented under their key,
    // a string that reads as a boolean in double quotes.
    assert_eq!(
        render("      affinity:\n        {{- h.affinity | toYaml | nindent(8) }}\n"),
        "      affinity:\n        nodeAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n            nodeSelectorTerms:\n            - matchExpressions:\n              - key: loadtest\n                operator: In\n                values:\n                - \"true\"\n"
    );
    // Sprig's nindent: "\n" + pad + strings.Replace(v, "\n", "\n"+pad), so the line after
    // a final newline is padded too (what Go prints for the same call).
    assert_eq!(
        render("data:{{ h.block | nindent(2) }}|{{ h.block | nindent(0) }}|"),
        "data:\n  a: 1\n  \n  b: 2\n  |\na: 1\n\nb: 2\n|"
    );
    // Go's %q (what fmt.Sprintf("%q", s) prints for the same text), Go's %v of numbers and
    // booleans, nothing for nil.
    assert_eq!(
        render(
            "{{ h.text | quote }}\n{{ h.port | quote }} {{ h.ratio | quote }} {{ h.round | quote }} {{ h.million | quote }} {{ h.small | quote }} {{ h.flag | quote }} [{{ h.nothing | quote }}]\n"
        ),
        "\"He said \\\"hi\\\" \\\\ \\t\\n\\x00\\x7f é☃𝄞\\u00a0\\u200b\\u00ad end\"\n\"8080\" \"1.5\" \"2\" \"1e+06\" \"1e-05\" \"true\" []\n"
    );
    assert_eq!(
        render(
            "{{ h.squoted | squote }} {{ h.port | squote }} {{ h.flag | squote }} [{{ h.nothing | squote }}]"
        ),
        "'It's \"here\"' '8080' 'true' []"
    );
    // sha256sum, b64enc and b64dec against GNU coreutils on the same bytes.
    let text = "user:pässword\n";
    let coreutils = |program: &str, args: &[&str], input: &str| {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{program}");
        String::from_utf8(output.stdout).unwrap()
    };
    let sha = coreutils("sha256sum", &[], text);
    let b64 = coreutils("base64", &["-w0"], text);
    let src_values = sandbox.write("secret.json", &serde_json::json!({ "s": text }).to_string());
    let src = sandbox.write(
        "secret.j2",
        "{{ s.s | sha256sum }}\n{{ s.s | b64enc }}\n{{ s.s | b64enc | b64dec }}",
    );
    let dest = sandbox.path("secret.out");
    sandbox
        .initbox()
        .args(["template", path_str(&src), path_str(&dest), "--data"])
        .arg(format!("s={}", src_values.display()))
        .run()
        .assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        format!("{}\n{b64}\n{text}", sha.split_whitespace().next().unwrap())
    );
}

/// Runs `template` on a one-line template and expects exit 78 with `message` in stderr.
fn fails_with(sandbox: &Sandbox, template: &str, message: &str) -> String {
    let values = sandbox.write("values.json", VALUES);
    let src = sandbox.write("fail.j2", template);
    let dest = sandbox.path("fail.out");
    let output = sandbox
        .initbox()
        .args(["template", path_str(&src), path_str(&dest), "--data"])
        .arg(format!("v={}", values.display()))
        .run();
    output.assert_code(78).assert_stderr_contains(message);
    assert!(!dest.exists(), "{template}: {} written", dest.display());
    output.stderr
}

#[test]
fn invalid_filter_arguments_are_exit_78_naming_the_filter() {
    let sandbox = Sandbox::new();
    for (template, message) in [
        (
            "{{ v.text | wordwrap(0) }}",
            "wordwrap: invalid width 0 (must be > 0)",
        ),
        ("{{ v.text | wordwrap(-3) }}", "wordwrap: invalid width -3"),
        (
            "{{ v.text | truncate(2) }}",
            "truncate: the length 2 is shorter than the end \"...\"",
        ),
        (
            "{{ v.text | truncate(5, leeway=-1) }}",
            "truncate: the leeway -1 is negative",
        ),
        (
            "{{ v.zero | truncate(5) }}",
            "truncate expects text, not number",
        ),
        (
            "{{ v.block | nindent(-1) }}",
            "nindent: the width -1 is negative",
        ),
        (
            "{{ v.block | indent(99999999999) }}",
            "indent: a width of 99999999999 is more than",
        ),
        (
            "{{ v.host | regex_replace('(', 'x') }}",
            "regex_replace: invalid pattern \"(\"",
        ),
        (
            "{{ v.host | regex_replace('(a)', '\\\\2') }}",
            "regex_replace: unknown group 2 in the replacement",
        ),
        (
            "{{ v.host | regex_replace('\\\\.', '', mandatory_count=2) }}",
            "regex_replace: \"\\\\.\" matched 1 times, not 2",
        ),
        (
            "{{ v.host | regex_search('(a)', '\\\\3') }}",
            "regex_search: \"(a)\" has no group 3",
        ),
        (
            "{{ v.host | regex_search('a', 'x') }}",
            "regex_search: unknown argument \"x\"",
        ),
        (
            "{{ v.map | quote }}",
            "quote expects text, a number or a boolean, not a map",
        ),
        (
            "{{ v.zero | nindent(2) }}",
            "nindent expects text, not number",
        ),
        (
            "{{ v.block | default('a', 'b', 'c') }}",
            "default takes at most 2 arguments",
        ),
        (
            "{{ v.block | indent(2, width=3) }}",
            "indent got the argument width twice",
        ),
        ("{{ now(1) }}", "now() takes no arguments"),
        (
            "{{ {1: 'a', 'b': 2} | tojson }}",
            "tojson: cannot sort the keys",
        ),
    ] {
        fails_with(&sandbox, template, message);
    }
}

#[test]
fn fromjson_and_fromyaml_errors_never_show_the_text() {
    let sandbox = Sandbox::new();
    for (template, message) in [
        (
            "{{ 'hunter2-secret {' | fromjson }}",
            "fromjson: the text is not valid JSON",
        ),
        (
            "{{ 'a: hunter2-secret\\na: again' | fromyaml }}",
            "fromyaml: the text is not valid YAML",
        ),
        (
            "{{ 'hunter2-secret' | b64dec }}",
            "b64dec: the value is not valid base64",
        ),
    ] {
        let stderr = fails_with(&sandbox, template, message);
        assert!(!stderr.contains("hunter2"), "{template}: {stderr}");
    }
}

/// Every filter and function of this module, each with an undefined value as its input and
/// as each argument (issue 12's rule: exit 78 naming the variable; `default` and `required`
/// take an undefined input on purpose). The engine's registry test covers the input; this
/// covers the arguments with calls that are valid but for the undefined `x`.
#[test]
fn an_undefined_argument_to_any_new_filter_is_exit_78_naming_it() {
    let sandbox = Sandbox::new();
    let values = sandbox.write("values.json", VALUES);
    let calls: &[(&str, &[&str])] = &[
        ("'a\\nb' | indent", &["2", "true", "true"]),
        ("'a\\nb' | indent", &["width=2", "first=true", "blank=true"]),
        ("{'a': 1} | tojson", &["2"]),
        ("{'a': 1} | tojson", &["indent=2"]),
        // Stricter than Jinja2, which never looks at the default of a defined value.
        ("'a' | default", &["'d'", "true"]),
        ("'a' | default", &["default_value='d'", "boolean=true"]),
        ("'a b c' | truncate", &["3", "true", "'.'", "0"]),
        (
            "'a b c' | truncate",
            &["length=3", "killwords=true", "end='.'", "leeway=0"],
        ),
        ("'a b c' | wordwrap", &["2", "true", "'/'", "true"]),
        ("'a b' | nindent", &["2"]),
        (
            "'abc' | regex_replace",
            &["'b'", "'x'", "true", "true", "1", "1"],
        ),
        (
            "'abc' | regex_replace",
            &["pattern='b'", "replacement='x'", "count=1"],
        ),
        ("'abc' | regex_search", &["'(b)'", "'\\\\1'"]),
        (
            "'abc' | regex_search",
            &["'b'", "ignorecase=true", "multiline=true"],
        ),
    ];
    let mut uses: Vec<String> = Vec::new();
    for (call, args) in calls {
        for at in 0..args.len() {
            let args: Vec<String> = args
                .iter()
                .enumerate()
                .map(|(i, arg)| match (i == at, arg.split_once('=')) {
                    (false, _) => arg.to_string(),
                    (true, Some((keyword, _))) if !keyword.contains('\'') => format!("{keyword}=x"),
                    (true, _) => "x".to_owned(),
                })
                .collect();
            uses.push(format!("{{{{ {call}({}) }}}}", args.join(", ")));
        }
    }
    for filter in [
        "indent",
        "tojson",
        "truncate",
        "wordwrap",
        "urlencode",
        "nindent",
        "quote",
        "squote",
        "toYaml",
        "toyaml",
        "b64enc",
        "b64dec",
        "sha256sum",
        "regex_replace",
        "regex_search",
        "fromjson",
        "fromyaml",
    ] {
        uses.push(format!("{{{{ x | {filter} }}}}"));
        uses.push(format!("{{{{ [1, x] | {filter} }}}}"));
        uses.push(format!("{{{{ {{'a': x}} | {filter} }}}}"));
    }
    uses.push("{{ now(x) }}".to_owned());
    uses.push("{{ x | required }}".to_owned());
    uses.push("{{ 'a' | required(x) }}".to_owned());
    for (index, source) in uses.iter().enumerate() {
        let src = sandbox.write(&format!("undefined-{index}.j2"), source);
        let dest = sandbox.path(&format!("undefined-{index}"));
        let output = sandbox
            .initbox()
            .args(["template", path_str(&src), path_str(&dest), "--data"])
            .arg(format!("v={}", values.display()))
            .run();
        assert_eq!(output.code, 78, "{source}: {}", output.stderr);
        assert!(
            output.stderr.contains("`x` is undefined"),
            "{source}: the message does not name x: {}",
            output.stderr
        );
        assert!(!dest.exists(), "{source}");
    }
}

#[test]
fn now_is_the_render_time_in_utc_rfc_3339() {
    let sandbox = Sandbox::new();
    let src = sandbox.write("now.j2", "rendered: {{ now() }}\n");
    let dest = sandbox.path("now.out");
    let seconds = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let before = seconds();
    sandbox
        .initbox()
        .args(["template", path_str(&src), path_str(&dest)])
        .run()
        .assert_code(0);
    let after = seconds();
    let text = std::fs::read_to_string(&dest).unwrap();
    let stamp = text
        .strip_prefix("rendered: ")
        .and_then(|rest| rest.strip_suffix('\n'))
        .unwrap_or_else(|| panic!("{text:?}"));
    // Python's reading of RFC 3339, as the reference: UTC, to the second.
    let output = Command::new(python())
        .args([
            "-c",
            "import sys, datetime; t = datetime.datetime.strptime(sys.argv[1], '%Y-%m-%dT%H:%M:%SZ'); print(int(t.replace(tzinfo=datetime.timezone.utc).timestamp()))",
            stamp,
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{stamp}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let at: u64 = String::from_utf8(output.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        (before..=after).contains(&at),
        "{stamp}: not between {before} and {after}"
    );
}

/// examples/helm-style/: a chart's config template (nindent, toYaml, quote, sha256sum,
/// default, required) rendered from its values as the README shows.
#[test]
fn the_helm_style_example_renders() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/helm-style");
    let sandbox = Sandbox::new();
    let dest = sandbox.path("configmap.yaml");
    sandbox
        .initbox()
        .args([
            "template",
            path_str(&example.join("configmap.yaml.j2")),
            path_str(&dest),
            "--data",
        ])
        .arg(format!("values={}", example.join("values.yaml").display()))
        .env("POD_NAMESPACE", "shop")
        .run()
        .assert_code(0);
    let rendered = std::fs::read_to_string(&dest).unwrap();
    let expected = std::fs::read_to_string(example.join("configmap.yaml")).unwrap();
    assert_eq!(rendered, expected);
    // The rendered file is YAML that reads back as what the values said.
    let documents: serde_json::Value = serde_saphyr::from_str(&rendered).unwrap();
    assert_eq!(documents["metadata"]["namespace"], "shop");
    assert_eq!(
        documents["metadata"]["labels"]["app.kubernetes.io/name"],
        "orders"
    );
}

/// A namespace that holds itself is a value without end: every filter that walks it ends
/// with exit 78 (or stops at its bound), never with a stack overflow that aborts the process.
#[test]
fn a_namespace_that_holds_itself_is_exit_78_not_a_crash() {
    let sandbox = Sandbox::new();
    let setup = "{% set ns = namespace(a=1) %}{% set ns.me = ns %}";
    for (filter, call) in [
        ("tojson", "tojson"),
        ("toYaml", "toYaml"),
        ("toyaml", "toyaml"),
        ("urlencode", "urlencode"),
        ("regex_replace", "regex_replace('a', 'b')"),
    ] {
        fails_with(
            &sandbox,
            &format!("{setup}{{{{ {{'k': ns}} | {call} }}}}"),
            &format!("{filter}: the value is nested more than 128 levels deep"),
        );
    }
    // Twice itself: a walk that tried every path would never end.
    fails_with(
        &sandbox,
        "{% set ns = namespace() %}{% set ns.a = ns %}{% set ns.b = ns %}{{ ns | tojson }}",
        "tojson: the value is nested more than 128 levels deep",
    );
    // The engine's search for an undefined value in the arguments stops at its budget.
    let src = sandbox.write("length.j2", &format!("{setup}{{{{ ns | length }}}}"));
    let dest = sandbox.path("length.out");
    sandbox
        .initbox()
        .args(["template", path_str(&src), path_str(&dest)])
        .run()
        .assert_code(0);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "2");
}
