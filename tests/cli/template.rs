//! template through the real binary: the same output as Jinja2 where the syntax is shared,
//! and above all what is never written (half a file, a file after an error, an unchanged
//! file rewritten).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use crate::support::{Cmd, Output, Sandbox, path_str, tree};

/// A python3 that can import `module`: Debian's (where `apt-get install PACKAGE` puts it)
/// first, then whichever `python3` is first on PATH (a pyenv one, say).
pub(crate) fn python_with(module: &str, package: &str) -> &'static str {
    ["/usr/bin/python3", "python3"]
        .into_iter()
        .find(|python| {
            Command::new(python)
                .args(["-c", &format!("import {module}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        })
        .unwrap_or_else(|| panic!("no python3 with {module}: apt-get install {package}"))
}

fn python_with_jinja2() -> &'static str {
    static PYTHON: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| python_with("jinja2", "python3-jinja2"))
}

/// Renders `template` with python3's Jinja2 set up as initbox sets up minijinja; the
/// context is `context` (JSON) plus `env`, the environment python runs with.
fn jinja2(sandbox: &Sandbox, template: &str, context: &str, env: &[(&str, &str)]) -> Vec<u8> {
    let template_path = sandbox.write("jinja2-template", template);
    let context_path = sandbox.write("jinja2-context.json", context);
    const SCRIPT: &str = "
import json, os, sys
import jinja2
source = open(sys.argv[1], encoding='utf-8').read()
context = json.load(open(sys.argv[2], encoding='utf-8'))
context['env'] = dict(os.environ)
environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
sys.stdout.buffer.write(environment.from_string(source).render(context).encode('utf-8'))
";
    let output = Command::new(python_with_jinja2())
        .args(["-c", SCRIPT])
        .arg(&template_path)
        .arg(&context_path)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "jinja2 failed (is python3-jinja2 installed?):\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

/// One template, rendered by both engines.
struct Case {
    name: &'static str,
    template: &'static str,
    /// Files the case needs in the sandbox: (name, contents).
    files: &'static [(&'static str, &'static str)],
    /// initbox's flags (`--data`, `--set`); `{dir}` is the sandbox.
    args: &'static [&'static str],
    /// What Jinja2 gets as its context: the same values, as JSON.
    context: &'static str,
    env: &'static [(&'static str, &'static str)],
}

/// The data file of several cases (a macro, so that `concat!` can wrap it for Jinja2).
macro_rules! servers_json {
    () => {
        r#"{"servers": [
    {"name": "web-0", "host": "10.0.0.1", "port": 8080, "weight": 1.5, "backup": false},
    {"name": "web-1", "host": "10.0.0.2", "port": 8081, "weight": 2, "backup": true}
], "domain": "Example.COM"}"#
    };
}
const SERVERS_JSON: &str = servers_json!();
const SERVERS_CONTEXT: &str = concat!(r#"{"cfg": "#, servers_json!(), "}");

const CASES: &[Case] = &[
    Case {
        name: "loop over a data file, loop variables",
        template: "upstream app {\n{% for s in cfg.servers %}    server {{ s.host }}:{{ s.port }} weight={{ s.weight }}{% if s.backup %} backup{% endif %}; # {{ loop.index }}/{{ loop.length }}{{ '' if loop.last else ',' }}\n{% endfor %}}\n",
        files: &[("cfg.json", SERVERS_JSON)],
        args: &["--data", "cfg={dir}/cfg.json"],
        context: SERVERS_CONTEXT,
        env: &[],
    },
    Case {
        name: "conditionals and tests",
        template: "{% if cfg.servers | length > 1 %}cluster{% elif cfg.servers %}single{% else %}none{% endif %}\n{% if cfg.missing is defined %}bad{% else %}no missing{% endif %}\n{% if cfg.domain is string and not cfg.servers[0].backup %}ok{% endif %}\n{{ 'yes' if cfg.servers[1].backup else 'no' }}\n",
        files: &[("cfg.json", SERVERS_JSON)],
        args: &["--data", "cfg={dir}/cfg.json"],
        context: SERVERS_CONTEXT,
        env: &[],
    },
    Case {
        name: "filters: default, lower, upper, replace, join, map, length",
        template: "{{ cfg.domain | lower }} {{ cfg.domain | upper }} {{ cfg.domain | replace('.', '-') }}\n{{ cfg.nothing | default('fallback') }} {{ cfg.servers | map(attribute='name') | join(', ') }} {{ cfg.servers | length }}\n{{ cfg.servers | selectattr('backup') | map(attribute='host') | first }} {{ [3, 1, 2] | sort | join }}\n",
        files: &[("cfg.json", SERVERS_JSON)],
        args: &["--data", "cfg={dir}/cfg.json"],
        context: SERVERS_CONTEXT,
        env: &[],
    },
    Case {
        name: "indent and tojson",
        template: "config:\n  {{ block | indent(2) }}\nlist: {{ cfg.servers | map(attribute='port') | list | tojson }}\nnames: {{ ['a', 'b<c>'] | tojson }}\none: {{ cfg.servers[0].name | tojson }}\n",
        files: &[("cfg.json", SERVERS_JSON)],
        args: &[
            "--data",
            "cfg={dir}/cfg.json",
            "--set",
            "block=a: 1\nb: 2\nc: 3",
        ],
        context: r#"{"cfg": {"servers": [{"name": "web-0", "port": 8080}, {"name": "web-1", "port": 8081}]}, "block": "a: 1\nb: 2\nc: 3"}"#,
        env: &[],
    },
    Case {
        name: "whitespace control and no trailing newline",
        template: "<ul>\n{%- for i in [1, 2, 3] %}\n  <li>{{ i }}</li>\n{%- endfor %}\n</ul>{# comment #}\n\n{%- set x = 'kept' -%}\n   {{ x }}",
        files: &[],
        args: &[],
        context: "{}",
        env: &[],
    },
    Case {
        name: "trailing newlines kept as written",
        template: "line\n\n\n",
        files: &[],
        args: &[],
        context: "{}",
        env: &[],
    },
    Case {
        name: "env as a map",
        template: "user={{ env.TPL_TEST_USER }} home={{ env.TPL_TEST_HOME | default('/') }}\n{% if env.TPL_TEST_UNSET is defined %}set{% else %}unset{% endif %}\n",
        files: &[],
        args: &[],
        context: "{}",
        env: &[("TPL_TEST_USER", "app"), ("TPL_TEST_HOME", "/srv/app")],
    },
    Case {
        name: "--data YAML",
        template: "{{ db.host }}:{{ db.port }} {{ db.options | join(',') }} {{ db.tls.enabled }} {{ db.name | upper }}\n{% for k, v in db.tls.items() %}{{ k }}={{ v }}\n{% endfor %}",
        files: &[(
            "db.yaml",
            "host: pg.default.svc\nport: 5432\nname: orders\noptions:\n  - sslmode=require\n  - connect_timeout=5\ntls:\n  enabled: true\n  ca: /tls/ca.crt\n",
        )],
        args: &["--data", "db={dir}/db.yaml"],
        context: r#"{"db": {"host": "pg.default.svc", "port": 5432, "name": "orders", "options": ["sslmode=require", "connect_timeout=5"], "tls": {"enabled": true, "ca": "/tls/ca.crt"}}}"#,
        env: &[],
    },
    Case {
        name: "--data TOML",
        template: "{{ app.title }}\n{% for owner in app.owners %}- {{ owner.name }} ({{ owner.id }})\n{% endfor %}{{ app.limits.cpu * 2 }} {{ app.limits.ratio }}\n",
        files: &[(
            "app.toml",
            "title = \"Orders\"\n\n[limits]\ncpu = 2\nratio = 0.5\n\n[[owners]]\nname = \"ada\"\nid = 1\n\n[[owners]]\nname = \"bob\"\nid = 2\n",
        )],
        args: &["--data", "app={dir}/app.toml"],
        context: r#"{"app": {"title": "Orders", "limits": {"cpu": 2, "ratio": 0.5}, "owners": [{"name": "ada", "id": 1}, {"name": "bob", "id": 2}]}}"#,
        env: &[],
    },
    Case {
        name: "--set dotted keys, strings, overriding --data",
        template: "{{ db.host }}:{{ db.port }} {{ db.port | int + 1 }} {{ app.log.level }}\n{% for k in db %}{{ k }} {% endfor %}\n",
        files: &[(
            "db.json",
            r#"{"host": "from-data", "port": 5432, "user": "app"}"#,
        )],
        args: &[
            "--data",
            "db={dir}/db.json",
            "--set",
            "db.host=pg",
            "--set",
            "app.log.level=debug",
        ],
        context: r#"{"db": {"host": "pg", "port": 5432, "user": "app"}, "app": {"log": {"level": "debug"}}}"#,
        env: &[],
    },
    Case {
        name: "macros, set, string methods, dict items",
        template: "{% macro kv(k, v) %}{{ k }} = {{ v | tojson }}{% endmacro %}{% set parts = 'a,b,c'.split(',') %}{{ parts | join('|') }} {{ 'Hello'.upper() }} {{ 'x.conf'.endswith('.conf') }}\n{% for k, v in {'b': 1, 'a': 'two'}.items() %}{{ kv(k, v) }}\n{% endfor %}{{ '%s-%d' | format('n', 3) }} {{ 'abc' ~ 1 }}\n",
        files: &[],
        args: &[],
        context: "{}",
        env: &[],
    },
];

#[test]
fn renders_like_jinja2() {
    for case in CASES {
        let sandbox = Sandbox::new();
        let dir = path_str(sandbox.dir.path()).to_owned();
        for (name, contents) in case.files {
            sandbox.write(name, contents);
        }
        let template = sandbox.write("case.j2", case.template);
        let dest = sandbox.path("out/case");
        let mut command = sandbox.initbox().arg("template").arg(&template).arg(&dest);
        for arg in case.args {
            command = command.arg(arg.replace("{dir}", &dir));
        }
        for (key, value) in case.env {
            command = command.env(key, value);
        }
        let output = command.run();
        assert_eq!(output.code, 0, "{}: {}", case.name, output.stderr);
        let ours = std::fs::read(&dest).unwrap();
        let theirs = jinja2(&sandbox, case.template, case.context, case.env);
        assert!(!theirs.is_empty(), "{}: empty output", case.name);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "{}: initbox (left) and Jinja2 (right) differ",
            case.name
        );
    }
}

fn mtime(path: &Path) -> SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

/// Moves a file's mtime a day back, so that a rewrite cannot go unnoticed within the
/// timestamp granularity, however quickly the test runs.
fn age(path: &Path) -> SystemTime {
    let old = SystemTime::now() - Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    mtime(path)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn template(sandbox: &Sandbox, args: &[&str]) -> Output {
    sandbox.initbox().arg("template").args(args).run()
}

/// Runs with `input` on stdin; stdout is returned byte for byte.
pub(crate) fn run_with_stdin(cmd: Cmd, input: &str) -> (i32, Vec<u8>, String) {
    use std::io::Write;
    let mut child = { cmd.command }
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning initbox");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn an_undefined_variable_writes_nothing() {
    let sandbox = Sandbox::new();
    let src = sandbox.write("app.conf.j2", "listen {{ port }}\nhost {{ db.host }}\n");
    let dest = sandbox.write("app.conf", "previous\n");
    let before = age(&dest);
    let output = template(
        &sandbox,
        &[
            path_str(&src),
            path_str(&dest),
            "--set",
            "port=80",
            "--set",
            "db.user=x",
        ],
    );
    output
        .assert_code(78)
        .assert_stderr_contains(&format!("{}:2: `db.host` is undefined", src.display()));
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "previous\n");
    assert_eq!(mtime(&dest), before);
    assert_eq!(
        tree(sandbox.dir.path()),
        ["app.conf", "app.conf.j2", "hosts"]
    );

    let missing = sandbox.path("new/app.conf");
    template(&sandbox, &[path_str(&src), path_str(&missing)])
        .assert_code(78)
        .assert_stderr_contains("`port` is undefined");
    assert!(!sandbox.path("new").exists());
}

#[test]
fn a_syntax_error_writes_nothing() {
    let sandbox = Sandbox::new();
    let src = sandbox.write("bad.conf.j2", "a\n{% for x in items %}\n{{ x }}\n");
    let dest = sandbox.write("bad.conf", "previous\n");
    let before = age(&dest);
    template(
        &sandbox,
        &[path_str(&src), path_str(&dest), "--set", "items=abc"],
    )
    .assert_code(78)
    .assert_stderr_contains(&format!("{}:", src.display()))
    .assert_stderr_contains("syntax error: unexpected end of input");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "previous\n");
    assert_eq!(mtime(&dest), before);
    assert_eq!(
        tree(sandbox.dir.path()),
        ["bad.conf", "bad.conf.j2", "hosts"]
    );
}

#[test]
fn a_directory_renders_to_a_mirrored_tree() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("templates");
    std::fs::create_dir_all(src.join("nested/deeper")).unwrap();
    std::fs::create_dir_all(src.join("empty")).unwrap();
    sandbox.write("templates/app.conf.j2", "name={{ name }}\n");
    sandbox.write("templates/plain.txt", "no tags, {{ 'but' }} rendered\n");
    sandbox.write("templates/nested/db.yaml.j2", "host: {{ db.host }}\n");
    sandbox.write("templates/nested/deeper/.hidden.j2", "{{ name | upper }}\n");
    let dest = sandbox.path("work/config");
    let args = [
        path_str(&src),
        path_str(&dest),
        "--set",
        "name=orders",
        "--set",
        "db.host=pg",
    ];

    let output = template(&sandbox, &args);
    output
        .assert_code(0)
        .assert_stderr_contains(&format!(
            "rendered {}/app.conf.j2 → {}/app.conf",
            src.display(),
            dest.display()
        ))
        .assert_stderr_contains("4 templates from")
        .assert_stderr_contains("4 written, 0 unchanged");
    assert_eq!(
        tree(&dest),
        [
            "app.conf",
            "empty/",
            "nested/",
            "nested/db.yaml",
            "nested/deeper/",
            "nested/deeper/.hidden",
            "plain.txt"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("app.conf")).unwrap(),
        "name=orders\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("nested/db.yaml")).unwrap(),
        "host: pg\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("plain.txt")).unwrap(),
        "no tags, but rendered\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("nested/deeper/.hidden")).unwrap(),
        "ORDERS\n"
    );

    // A second run rewrites nothing: every mtime stays.
    let files = [
        "app.conf",
        "plain.txt",
        "nested/db.yaml",
        "nested/deeper/.hidden",
    ];
    let before: Vec<SystemTime> = files.iter().map(|f| age(&dest.join(f))).collect();
    template(&sandbox, &args)
        .assert_code(0)
        .assert_stderr_contains(&format!(
            "unchanged {}/app.conf.j2 → {}/app.conf",
            src.display(),
            dest.display()
        ))
        .assert_stderr_contains("0 written, 4 unchanged");
    let after: Vec<SystemTime> = files.iter().map(|f| mtime(&dest.join(f))).collect();
    assert_eq!(before, after);

    // --check: up to date → 0; after a template change → 1, naming the file, writing nothing.
    let mut check_args = args.to_vec();
    check_args.push("--check");
    template(&sandbox, &check_args)
        .assert_code(0)
        .assert_stderr_contains("up to date");
    sandbox.write(
        "templates/nested/db.yaml.j2",
        "host: {{ db.host }}\nport: 5432\n",
    );
    let output = template(&sandbox, &check_args);
    output
        .assert_code(1)
        .assert_stderr_contains(&format!("would change {}/nested/db.yaml", dest.display()))
        .assert_stderr_contains("1 of 4 out of date");
    assert_eq!(
        std::fs::read_to_string(dest.join("nested/db.yaml")).unwrap(),
        "host: pg\n"
    );
    let after_check: Vec<SystemTime> = files.iter().map(|f| mtime(&dest.join(f))).collect();
    assert_eq!(before, after_check);
    // --check with a wrong --set is still an error of the template, not "out of date".
    template(&sandbox, &[path_str(&src), path_str(&dest), "--check"]).assert_code(78);

    template(&sandbox, &args)
        .assert_code(0)
        .assert_stderr_contains("1 written, 3 unchanged");
    assert_eq!(
        std::fs::read_to_string(dest.join("nested/db.yaml")).unwrap(),
        "host: pg\nport: 5432\n"
    );
    assert_eq!(mtime(&dest.join("app.conf")), before[0]);
    template(&sandbox, &check_args).assert_code(0);

    // DEST inside SRC: what was rendered is not taken for a template the next time.
    let inside = src.join("rendered");
    let inside_args = [
        path_str(&src),
        path_str(&inside),
        "--set",
        "name=orders",
        "--set",
        "db.host=pg",
    ];
    template(&sandbox, &inside_args).assert_code(0);
    template(&sandbox, &inside_args)
        .assert_code(0)
        .assert_stderr_contains("0 written, 4 unchanged");
    assert!(!inside.join("rendered").exists());
}

#[test]
fn an_error_in_one_template_of_a_directory_writes_none() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("templates");
    std::fs::create_dir_all(&src).unwrap();
    sandbox.write("templates/a.conf.j2", "fine {{ name }}\n");
    sandbox.write("templates/b.conf.j2", "broken {{ nope }}\n");
    let dest = sandbox.path("out");
    template(
        &sandbox,
        &[path_str(&src), path_str(&dest), "--set", "name=x"],
    )
    .assert_code(78)
    .assert_stderr_contains(&format!(
        "{}/b.conf.j2:1: `nope` is undefined",
        src.display()
    ));
    assert!(!dest.exists());

    sandbox.write("templates/b.conf", "clashes with b.conf.j2\n");
    template(
        &sandbox,
        &[
            path_str(&src),
            path_str(&dest),
            "--set",
            "name=x",
            "--set",
            "nope=1",
        ],
    )
    .assert_code(78)
    .assert_stderr_contains("would both render to");
    assert!(!dest.exists());
}

#[test]
fn a_configmap_volume_renders_its_files_once() {
    // The layout kubelet gives a ConfigMap volume: the visible names are symlinks through
    // `..data` into a timestamped directory.
    let sandbox = Sandbox::new();
    let src = sandbox.path("configmap");
    let real = src.join("..2026_11_22_10_00_00.123456789");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("app.conf.j2"), "port={{ port }}\n").unwrap();
    std::fs::write(
        real.join("run.sh.j2"),
        "#!/bin/sh\nexec app --port {{ port }}\n",
    )
    .unwrap();
    std::fs::set_permissions(
        real.join("run.sh.j2"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_11_22_10_00_00.123456789", src.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/app.conf.j2", src.join("app.conf.j2")).unwrap();
    std::os::unix::fs::symlink("..data/run.sh.j2", src.join("run.sh.j2")).unwrap();
    let dest = sandbox.path("work");
    template(
        &sandbox,
        &[path_str(&src), path_str(&dest), "--set", "port=8080"],
    )
    .assert_code(0);
    assert_eq!(tree(&dest), ["app.conf", "run.sh"]);
    assert_eq!(
        std::fs::read_to_string(dest.join("app.conf")).unwrap(),
        "port=8080\n"
    );
    assert!(
        !std::fs::symlink_metadata(dest.join("app.conf"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // An executable template gives an executable file; the umask still applies.
    assert_eq!(mode(&dest.join("run.sh")) & 0o111, 0o111);
    assert_eq!(mode(&dest.join("app.conf")) & 0o111, 0);

    std::os::unix::fs::symlink("nowhere", src.join("dangling.j2")).unwrap();
    template(
        &sandbox,
        &[path_str(&src), path_str(&dest), "--set", "port=1"],
    )
    .assert_code(78)
    .assert_stderr_contains("dangling.j2: a symlink to nothing");
    assert_eq!(
        std::fs::read_to_string(dest.join("app.conf")).unwrap(),
        "port=8080\n"
    );
}

#[test]
fn modes() {
    let sandbox = Sandbox::new();
    let src = sandbox.write("secret.conf.j2", "password={{ pw }}\n");
    let dest = sandbox.path("out/secret.conf");
    template(
        &sandbox,
        &[
            path_str(&src),
            path_str(&dest),
            "--set",
            "pw=a",
            "--mode",
            "0600",
        ],
    )
    .assert_code(0);
    assert_eq!(mode(&dest), 0o600);

    // Without --mode an existing file keeps its mode, also when its contents change.
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o640)).unwrap();
    template(
        &sandbox,
        &[path_str(&src), path_str(&dest), "--set", "pw=b"],
    )
    .assert_code(0);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "password=b\n");
    assert_eq!(mode(&dest), 0o640);

    // Same contents, another --mode: the mode changes, the file is not rewritten.
    let before = age(&dest);
    template(
        &sandbox,
        &[
            path_str(&src),
            path_str(&dest),
            "--set",
            "pw=b",
            "--mode",
            "0400",
            "--check",
        ],
    )
    .assert_code(1)
    .assert_stderr_contains("would set the mode");
    assert_eq!(mode(&dest), 0o640);
    template(
        &sandbox,
        &[
            path_str(&src),
            path_str(&dest),
            "--set",
            "pw=b",
            "--mode",
            "400",
        ],
    )
    .assert_code(0)
    .assert_stderr_contains("mode set to 0400");
    assert_eq!(mode(&dest), 0o400);
    assert_eq!(mtime(&dest), before);

    // A new file without --mode: 0666 minus the umask.
    let fresh = sandbox.path("out/fresh.conf");
    sandbox
        .initbox()
        .wrapped_in(&["sh", "-c", "umask 027 && exec \"$@\"", "sh"])
        .args([
            "template",
            path_str(&src),
            path_str(&fresh),
            "--set",
            "pw=c",
        ])
        .run()
        .assert_code(0);
    assert_eq!(mode(&fresh), 0o640);

    // A file SRC into an existing directory: the name without .j2.
    template(
        &sandbox,
        &[
            path_str(&src),
            path_str(&sandbox.path("out")),
            "--set",
            "pw=d",
        ],
    )
    .assert_code(0);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "password=d\n");
}

#[test]
fn stdin_to_stdout() {
    let sandbox = Sandbox::new();
    let (code, stdout, stderr) = run_with_stdin(
        sandbox
            .initbox()
            .args(["template", "-", "-", "--set", "name=world"]),
        "hello {{ name }}\nno newline at the end",
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, b"hello world\nno newline at the end");
    assert!(stderr.contains("rendered <stdin> → stdout"), "{stderr}");

    let dest = sandbox.path("from-stdin.conf");
    let (code, stdout, stderr) = run_with_stdin(
        sandbox.initbox().args(["template", "-", path_str(&dest)]),
        "{{ missing }}",
    );
    assert_eq!(code, 78);
    assert!(stdout.is_empty());
    assert!(
        stderr.contains("<stdin>:1: `missing` is undefined"),
        "{stderr}"
    );
    assert!(!dest.exists());
}

#[test]
fn required_env_and_file() {
    let sandbox = Sandbox::new();
    let secret = sandbox.write("db-password", "s3cr3t-Passw0rd\n");
    let src = sandbox.write(
        "app.conf.j2",
        &format!(
            "user={{{{ user | required('set --set user=NAME') }}}}\n\
             port={{{{ env('TPL_PORT', '5432') }}}} home={{{{ env('TPL_HOME') }}}}\n\
             password={{{{ file('{}') | trim }}}}\n",
            secret.display()
        ),
    );
    let dest = sandbox.path("app.conf");
    let base = |cmd: Cmd| cmd.args(["template", path_str(&src), path_str(&dest)]);

    base(sandbox.initbox())
        .env("TPL_HOME", "/srv")
        .run()
        .assert_code(78)
        .assert_stderr_contains("app.conf.j2:1: required: set --set user=NAME");
    base(sandbox.initbox())
        .args(["--set", "user="])
        .env("TPL_HOME", "/srv")
        .run()
        .assert_code(78)
        .assert_stderr_contains("required: set --set user=NAME");
    let output = base(sandbox.initbox()).args(["--set", "user=app"]).run();
    output
        .assert_code(78)
        .assert_stderr_contains("app.conf.j2:2: environment variable TPL_HOME is not set");
    assert!(!dest.exists());

    let output = base(sandbox.initbox())
        .args(["--set", "user=app", "-v"])
        .env("TPL_HOME", "/srv")
        .run();
    output.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "user=app\nport=5432 home=/srv\npassword=s3cr3t-Passw0rd\n"
    );
    assert!(!output.stderr.contains("s3cr3t"), "{}", output.stderr);

    // A missing file is named; contents never appear in an error.
    let src = sandbox.write("missing.j2", "{{ file('/nonexistent/token') }}");
    template(&sandbox, &[path_str(&src), "-"])
        .assert_code(78)
        .assert_stderr_contains(
            "missing.j2:1: file(\"/nonexistent/token\"): no such file or directory",
        );
    let src = sandbox.write(
        "decode.j2",
        &format!("{{{{ file('{}') | b64decode }}}}", secret.display()),
    );
    let output = template(&sandbox, &[path_str(&src), "-"]);
    output
        .assert_code(78)
        .assert_stderr_contains("b64decode: the value is not valid base64");
    assert!(!output.stderr.contains("s3cr3t"), "{}", output.stderr);
}

#[test]
fn base64_and_yaml() {
    let sandbox = Sandbox::new();
    sandbox.write(
        "values.json",
        r#"{"labels": {"app": "orders", "tier": "backend"}, "ports": [80, 443], "auth": "admin:pässword"}"#,
    );
    let src = sandbox.write(
        "secret.yaml.j2",
        "data:\n  auth: {{ v.auth | b64encode }}\n  plain: {{ v.auth | b64encode | b64decode }}\n\
         metadata:\n  labels:\n    {{ v.labels | toyaml | indent(4) }}\nports: {{ v.ports | tojson }}\n\
         all:\n{{ v | toyaml }}\n",
    );
    let dest = sandbox.path("secret.yaml");
    let values = sandbox.path("values.json");
    template(
        &sandbox,
        &[
            path_str(&src),
            path_str(&dest),
            "--data",
            &format!("v={}", values.display()),
        ],
    )
    .assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "data:\n  auth: YWRtaW46cMOkc3N3b3Jk\n  plain: admin:pässword\n\
         metadata:\n  labels:\n    app: orders\n    tier: backend\nports: [80, 443]\n\
         all:\nlabels:\n  app: orders\n  tier: backend\nports:\n- 80\n- 443\nauth: admin:pässword\n"
    );
}

#[test]
fn hands_off_to_a_command() {
    let sandbox = Sandbox::new();
    let src = sandbox.write("t.j2", "x={{ x }}\n");
    let dest = sandbox.path("t");
    let output = template(
        &sandbox,
        &[
            path_str(&src),
            path_str(&dest),
            "--set",
            "x=1",
            "--",
            "cat",
            path_str(&dest),
        ],
    );
    output.assert_code(0);
    assert_eq!(output.stdout, "x=1\n");
}

/// examples/kubernetes/render-config.yaml, run as kubelet would lay out its volumes.
#[test]
fn the_kubernetes_example_renders() {
    use serde_json::Value;
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes/render-config.yaml");
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let find = |kind: &str, name: &str| {
        documents
            .iter()
            .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name} in {}", manifest.display()))
    };
    let sandbox = Sandbox::new();
    let secret_path = sandbox.path("secrets/db/password");
    std::fs::create_dir_all(secret_path.parent().unwrap()).unwrap();
    let password = find("Secret", "web-db")["stringData"]["password"]
        .as_str()
        .unwrap();
    std::fs::write(&secret_path, password).unwrap();

    // A ConfigMap volume: the files are symlinks through ..data into a timestamped directory.
    let templates = sandbox.path("templates");
    let timestamped = templates.join("..2026_11_22_10_00_00.000000001");
    std::fs::create_dir_all(&timestamped).unwrap();
    for (name, text) in find("ConfigMap", "web-templates")["data"]
        .as_object()
        .unwrap()
    {
        let text = text
            .as_str()
            .unwrap()
            .replace("/secrets/db/password", path_str(&secret_path));
        std::fs::write(timestamped.join(name), text).unwrap();
        std::os::unix::fs::symlink(format!("..data/{name}"), templates.join(name)).unwrap();
    }
    std::os::unix::fs::symlink(timestamped.file_name().unwrap(), templates.join("..data")).unwrap();
    let values = sandbox.path("values");
    std::fs::create_dir_all(&values).unwrap();
    let values_yaml = &find("ConfigMap", "web-values")["data"]["values.yaml"];
    std::fs::write(values.join("values.yaml"), values_yaml.as_str().unwrap()).unwrap();

    let out = sandbox.path("work/config");
    let pod = find("Pod", "web");
    let args: Vec<String> = pod["spec"]["initContainers"][0]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| {
            arg.as_str()
                .unwrap()
                .replace("/work/config", path_str(&out))
                .replace("/templates", path_str(&templates))
                .replace("=/values", &format!("={}", values.display()))
        })
        .collect();
    let output = sandbox
        .initbox()
        .args(&args)
        .env("POD_NAME", "web")
        .env("POD_NAMESPACE", "shop")
        .env("POD_IP", "10.1.2.3")
        .run();
    output.assert_code(0);
    assert!(!output.stderr.contains(password), "{}", output.stderr);
    assert_eq!(tree(&out), ["app.conf", "labels.yaml"]);
    let app = std::fs::read_to_string(out.join("app.conf")).unwrap();
    for line in [
        "listen = \"10.1.2.3:8080\"",
        "log_level = \"info\"",
        &format!(
            "url = \"postgres://web:{password}@postgres.default.svc.cluster.local:5432/orders\""
        ),
        "address = \"billing.default.svc.cluster.local:8080\"",
        "address = \"search.default.svc.cluster.local:9200\"",
    ] {
        assert!(app.contains(line), "{line:?} not in:\n{app}");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("labels.yaml")).unwrap(),
        "pod: web\nnamespace: shop\nlabels:\n  team: orders\n  tier: backend\n"
    );
    assert_eq!(mode(&out.join("app.conf")), 0o640);
}

/// How Jinja2 (with `StrictUndefined`, as [`jinja2`] sets it up) fares with each template:
/// `Ok(output)`, or `Err(the exception's class)`. One python run for the whole list.
fn jinja2_outcomes(sandbox: &Sandbox, templates: &[String]) -> Vec<Result<String, String>> {
    let input = sandbox.write(
        "jinja2-templates.json",
        &serde_json::to_string(templates).unwrap(),
    );
    const SCRIPT: &str = "
import collections.abc, json, sys
import jinja2
# A filter that returns a generator (`select`, `batch`) is run to the end, as printing it
# in initbox does.
def force(value):
    return list(value) if isinstance(value, collections.abc.Iterator) else value
environment = jinja2.Environment(
    undefined=jinja2.StrictUndefined, keep_trailing_newline=True, finalize=force)
outcomes = []
for source in json.load(open(sys.argv[1], encoding='utf-8')):
    try:
        outcomes.append({'ok': environment.from_string(source).render({'env': {}})})
    except Exception as error:
        outcomes.append({'error': type(error).__name__})
print(json.dumps(outcomes))
";
    let output = Command::new(python_with_jinja2())
        .args(["-c", SCRIPT])
        .arg(&input)
        .stdin(Stdio::null())
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    python_outcomes(&output.stdout)
}

/// What a reference script printed: a JSON list of `{"ok": TEXT}` or `{"error": TEXT}`.
pub(crate) fn python_outcomes(stdout: &[u8]) -> Vec<Result<String, String>> {
    let outcomes: Vec<serde_json::Value> = serde_json::from_slice(stdout).unwrap();
    outcomes
        .into_iter()
        .map(|outcome| match outcome.get("ok") {
            Some(text) => Ok(text.as_str().unwrap().to_owned()),
            None => Err(outcome["error"].as_str().unwrap().to_owned()),
        })
        .collect()
}

/// A valid input and valid arguments for a filter or test, so that the undefined value is
/// the only thing wrong with a case. A name missing here is still tried, with `'a'`.
const CALL_SHAPES: &[(&str, &str, &[&str])] = &[
    ("abs", "-1", &[]),
    ("attr", "{'a': 1}", &["'a'"]),
    ("batch", "[1, 2]", &["1"]),
    ("chain", "[1]", &["[2]"]),
    ("dictsort", "{'a': 1}", &[]),
    ("divisibleby", "4", &["2"]),
    ("endingwith", "'ab'", &["'b'"]),
    ("format", "'%s'", &["1"]),
    ("groupby", "[{'a': 1}]", &["'a'"]),
    ("in", "1", &["[1]"]),
    ("indent", "'a\\nb'", &["2"]),
    ("items", "{'a': 1}", &[]),
    ("join", "[1, 2]", &["','"]),
    ("map", "[{'a': 1}]", &["attribute='a'"]),
    ("reject", "[1, 2]", &["'odd'"]),
    ("rejectattr", "[{'a': 1}]", &["'a'"]),
    ("replace", "'ab'", &["'a'", "'c'"]),
    ("round", "1.5", &["0"]),
    ("sameas", "none", &["none"]),
    ("select", "[1, 2]", &["'odd'"]),
    ("selectattr", "[{'a': 1}]", &["'a'"]),
    ("slice", "[1, 2]", &["2"]),
    ("split", "'a b'", &["' '"]),
    ("startingwith", "'ab'", &["'a'"]),
    ("tojson", "[1]", &["indent=2"]),
    ("zip", "[1]", &["[2]"]),
    ("b64decode", "'YQ=='", &[]),
    ("eq", "1", &["1"]),
    ("ne", "1", &["2"]),
    ("lt", "1", &["2"]),
    ("le", "1", &["2"]),
    ("gt", "2", &["1"]),
    ("ge", "2", &["1"]),
    ("equalto", "1", &["1"]),
    ("lessthan", "1", &["2"]),
    ("greaterthan", "2", &["1"]),
];

fn call_shape(name: &str) -> (&'static str, &'static [&'static str]) {
    CALL_SHAPES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, input, args)| (*input, *args))
        .unwrap_or(("'a'", &[]))
}

/// `(args)` with `x` in place of argument `at` (a keyword argument keeps its keyword).
fn call_args(args: &[&str], undefined_at: Option<usize>) -> String {
    if args.is_empty() {
        return String::new();
    }
    let args: Vec<String> = args
        .iter()
        .enumerate()
        .map(
            |(i, arg)| match (undefined_at == Some(i), arg.split_once('=')) {
                (false, _) => arg.to_string(),
                (true, Some((keyword, _))) if !keyword.contains('\'') => format!("{keyword}=x"),
                (true, _) => "x".to_owned(),
            },
        )
        .collect();
    format!("({})", args.join(", "))
}

/// Each use of the undefined `x` through every filter, test and function the engine has
/// (as its own registry lists them, so that a new one cannot be forgotten): as the value,
/// as each argument, and inside a list.
fn undefined_uses() -> Vec<String> {
    use initbox::tasks::template::engine::{
        Registry, TAKE_UNDEFINED_FILTERS, TAKE_UNDEFINED_TESTS, environment,
    };
    let registry = Registry::of(&environment());
    let mut uses = Vec::new();
    for filter in &registry.filters {
        if TAKE_UNDEFINED_FILTERS.contains(&filter.as_str()) {
            continue;
        }
        let (input, args) = call_shape(filter);
        uses.push(format!("{{{{ x | {filter}{} }}}}", call_args(args, None)));
        uses.push(format!("{{{{ [x] | {filter}{} }}}}", call_args(args, None)));
        for at in 0..args.len() {
            uses.push(format!(
                "{{{{ {input} | {filter}{} }}}}",
                call_args(args, Some(at))
            ));
        }
    }
    for test in &registry.tests {
        if TAKE_UNDEFINED_TESTS.contains(&test.as_str()) {
            continue;
        }
        let (input, args) = call_shape(test);
        let quoted: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let extra = if quoted.is_empty() {
            String::new()
        } else {
            format!(", {}", quoted.join(", "))
        };
        // Through select, which also reaches the tests named like operators (`==`).
        uses.push(format!("{{{{ [x] | select('{test}'{extra}) | list }}}}"));
        if test.chars().all(|c| c.is_ascii_alphabetic()) {
            uses.push(format!("{{{{ x is {test}{} }}}}", call_args(args, None)));
            for at in 0..args.len() {
                uses.push(format!(
                    "{{{{ {input} is {test}{} }}}}",
                    call_args(args, Some(at))
                ));
            }
        }
    }
    for function in &registry.functions {
        uses.push(format!("{{{{ {function}(x) }}}}"));
        uses.push(format!("{{{{ {function}(a=x) }}}}"));
    }
    // Methods (Python's, as in Jinja2), the `env()` call, printing and operators.
    for method_use in [
        "{{ x.upper() }}",
        "{{ 'ab'.startswith(x) }}",
        "{{ 'a,b'.split(x) }}",
        "{{ 'ab'.replace('a', x) }}",
        "{{ {'a': 1}.get('b', x) }}",
        "{{ {'a': 1}.get(x) }}",
        "{{ [1].count(x) }}",
        "{{ env('NOPE', x) }}",
        "{{ x }}",
        "{{ [x] }}",
        "{{ {'a': x} }}",
        "{{ x == 1 }}",
        "{{ x in [1] }}",
        "{{ x ~ 'a' }}",
        "{% if x %}{% endif %}",
        "{% for i in x %}{% endfor %}",
    ] {
        uses.push(method_use.to_owned());
    }
    uses
}

#[test]
fn an_undefined_value_fails_through_every_filter_test_and_function() {
    let sandbox = Sandbox::new();
    let uses = undefined_uses();
    assert!(uses.len() > 150, "{} uses", uses.len());
    let theirs = jinja2_outcomes(&sandbox, &uses);
    let mut lenient_in_jinja2 = Vec::new();
    for (index, (source, theirs)) in uses.iter().zip(&theirs).enumerate() {
        let src = sandbox.write(&format!("use-{index}.j2"), source);
        let output = template(&sandbox, &[path_str(&src), "-"]);
        assert_eq!(
            (output.code, output.stdout.as_str()),
            (78, ""),
            "{source}: {}",
            output.stderr
        );
        assert!(
            output.stderr.contains("`x` is undefined"),
            "{source}: the message does not name x: {}",
            output.stderr
        );
        if let Ok(text) = theirs {
            lenient_in_jinja2.push(format!("{source} → {text}"));
        }
    }
    // Where Jinja2 itself lets the undefined value through, initbox refuses it too. Those
    // places are of five kinds, as the README says; anything else would be a case to look at.
    for case in &lenient_in_jinja2 {
        let (source, rendered) = case.split_once(" → ").unwrap();
        let kind = if rendered.to_ascii_lowercase().contains("undefined") {
            "printed inside a list, map or namespace"
        } else if source.contains(" is ") || source.contains("select(") {
            "a question about the type, answered false"
        } else if source.contains("| length") || source.contains("| count") {
            "counted as an item of a list"
        } else if source.contains("| int") || source.contains("| float") {
            "a failed conversion, answered 0"
        } else if source.contains("x | items") {
            "a missing map, taken for an empty one"
        } else {
            panic!("Jinja2 renders this without complaint: {case}")
        };
        assert!(!kind.is_empty());
    }
}

#[test]
fn what_asks_about_an_undefined_value_renders_as_in_jinja2() {
    let sandbox = Sandbox::new();
    let cases: Vec<String> = [
        "{{ x is defined }} {{ x is undefined }} {{ x is not defined }}",
        "{{ x | default('fallback') }} {{ x | d('d') }} {{ x | default(none) is none }}",
        "{% if x is defined and x %}yes{% else %}no{% endif %}",
        "{{ [x, 1] | select('defined') | list }} {{ [x, 1] | reject('undefined') | list }}",
        "{{ [{'a': 1}, {}] | selectattr('a', 'defined') | list }}",
        "{{ [{'a': 1}, {}] | rejectattr('a', 'defined') | list }}",
        "{{ [x, 1] | map('default', 2) | list }}",
        "{% set y = x %}{{ y is defined }}",
        "{% macro m(v) %}{{ v is defined }}{% endmacro %}{{ m(x) }}",
    ]
    .map(str::to_owned)
    .to_vec();
    let theirs = jinja2_outcomes(&sandbox, &cases);
    for (index, (source, theirs)) in cases.iter().zip(theirs).enumerate() {
        // With a final newline: the test helper ends what it reads from stdout with one.
        let src = sandbox.write(&format!("ask-{index}.j2"), &format!("{source}\n"));
        let output = template(&sandbox, &[path_str(&src), "-"]);
        assert_eq!(output.code, 0, "{source}: {}", output.stderr);
        assert_eq!(Ok(output.stdout.trim_end().to_owned()), theirs, "{source}");
    }
}

/// Names under `dir` (recursively) that look like a temp file of an atomic write.
fn temp_files(dir: &Path) -> Vec<String> {
    tree(dir)
        .into_iter()
        .filter(|name| name.contains(".initbox-") || name.ends_with(".tmp"))
        .collect()
}

#[test]
fn a_binary_file_in_a_template_directory_is_copied_byte_for_byte() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("templates");
    std::fs::create_dir_all(&src).unwrap();
    // A keystore-like blob: not UTF-8, and with bytes that read `{{ x }}` and `{%`.
    let mut blob: Vec<u8> = (0..=255u8).collect();
    blob.extend_from_slice(b"\xfe\xed{{ x }}{% if %}{# \x00\xff");
    std::fs::write(src.join("keystore.jks"), &blob).unwrap();
    std::fs::write(src.join("logo.png.j2"), &blob).unwrap();
    sandbox.write("templates/app.conf.j2", "name={{ name }}\n");
    let dest = sandbox.path("out");
    let output = template(
        &sandbox,
        &[path_str(&src), path_str(&dest), "--set", "name=web"],
    );
    output
        .assert_code(0)
        .assert_stderr_contains("keystore.jks is not UTF-8 text: it is copied as it is")
        .assert_stderr_contains("3 written");
    assert_eq!(tree(&dest), ["app.conf", "keystore.jks", "logo.png"]);
    assert_eq!(std::fs::read(dest.join("keystore.jks")).unwrap(), blob);
    assert_eq!(std::fs::read(dest.join("logo.png")).unwrap(), blob);
    assert_eq!(
        std::fs::read_to_string(dest.join("app.conf")).unwrap(),
        "name=web\n"
    );
    // Unchanged on the next run, like any other output.
    template(
        &sandbox,
        &[
            path_str(&src),
            path_str(&dest),
            "--set",
            "name=web",
            "--check",
        ],
    )
    .assert_code(0);

    // The same rule for a single file and for stdin.
    let single = sandbox.path("single.bin");
    template(
        &sandbox,
        &[path_str(&src.join("keystore.jks")), path_str(&single)],
    )
    .assert_code(0);
    assert_eq!(std::fs::read(&single).unwrap(), blob);
}

#[test]
fn a_destination_that_is_the_wrong_kind_writes_nothing_and_leaves_no_temp_file() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("templates");
    std::fs::create_dir_all(src.join("conf")).unwrap();
    sandbox.write("templates/a.conf.j2", "a\n");
    sandbox.write("templates/conf/b.conf.j2", "b\n");
    sandbox.write("templates/z.conf.j2", "z\n");

    // DEST is a file where a directory is needed.
    let file = sandbox.write("dest-file", "keep\n");
    template(&sandbox, &[path_str(&src), path_str(&file)])
        .assert_code(78)
        .assert_stderr_contains(&format!("DEST {} is not a directory", file.display()));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep\n");

    // A file where a subdirectory of the output goes.
    let dest = sandbox.path("out");
    std::fs::create_dir_all(&dest).unwrap();
    sandbox.write("out/conf", "a file\n");
    template(&sandbox, &[path_str(&src), path_str(&dest)])
        .assert_code(78)
        .assert_stderr_contains(&format!(
            "cannot write {0}/conf/b.conf: {0}/conf is a file, not a directory",
            dest.display()
        ));
    assert_eq!(tree(&dest), ["conf"]);

    // The reverse: a directory where a file goes.
    std::fs::remove_file(dest.join("conf")).unwrap();
    std::fs::create_dir_all(dest.join("z.conf")).unwrap();
    template(&sandbox, &[path_str(&src), path_str(&dest)])
        .assert_code(78)
        .assert_stderr_contains(&format!(
            "cannot write {}/z.conf: it is a directory",
            dest.display()
        ));
    assert_eq!(tree(&dest), ["z.conf/"]);

    // A single file whose DEST has a file for a parent.
    template(
        &sandbox,
        &[
            path_str(&src.join("a.conf.j2")),
            path_str(&file.join("a.conf")),
        ],
    )
    .assert_code(78)
    .assert_stderr_contains(&format!("{} is a file, not a directory", file.display()));
    assert!(
        temp_files(sandbox.dir.path()).is_empty(),
        "{:?}",
        tree(sandbox.dir.path())
    );
}

#[test]
fn an_unwritable_directory_in_dest_writes_nothing_and_leaves_no_temp_file() {
    use std::os::unix::fs::chown;
    if !crate::support::need_root() {
        return;
    }
    const USER: u32 = 65532;
    let sandbox = Sandbox::new();
    std::fs::set_permissions(sandbox.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let src = sandbox.path("templates");
    std::fs::create_dir_all(src.join("locked/new")).unwrap();
    sandbox.write("templates/a.conf.j2", "a\n");
    sandbox.write("templates/locked/b.conf.j2", "b\n");
    sandbox.write("templates/z.conf.j2", "z\n");
    // DEST belongs to the user, but its `locked` subdirectory to root (0755).
    let dest = sandbox.path("out");
    std::fs::create_dir_all(dest.join("locked")).unwrap();
    chown(&dest, Some(USER), Some(USER)).unwrap();
    let (_dir, binary) = crate::support::nonroot_copy();
    let as_user = |args: &[&str]| {
        sandbox
            .initbox_at(&binary)
            .arg("template")
            .args(args)
            .wrapped_in(&[
                "setpriv",
                "--reuid=65532",
                "--regid=65532",
                "--clear-groups",
            ])
            .run()
    };
    as_user(&[path_str(&src), path_str(&dest)])
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "cannot write {0}/locked/b.conf: permission denied (the directory {0}/locked \
             cannot be written)",
            dest.display()
        ));
    assert_eq!(tree(&dest), ["locked/"]);

    // A directory to create inside the locked one.
    std::fs::remove_file(src.join("locked/b.conf.j2")).unwrap();
    as_user(&[path_str(&src), path_str(&dest)])
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "cannot create the directory {0}/locked/new in {0}/locked: permission denied",
            dest.display()
        ));
    assert_eq!(tree(&dest), ["locked/"]);

    // A mode to set on a file of another user, beside a file to create.
    std::fs::remove_dir_all(src.join("locked")).unwrap();
    std::fs::write(dest.join("z.conf"), "z\n").unwrap();
    as_user(&[path_str(&src), path_str(&dest), "--mode", "0600"])
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "cannot set the mode of {}/z.conf: it belongs to user 0",
            dest.display()
        ));
    assert_eq!(tree(&dest), ["locked/", "z.conf"]);
    assert!(
        temp_files(sandbox.dir.path()).is_empty(),
        "{:?}",
        tree(&dest)
    );
}

#[test]
fn a_directory_render_into_a_volume_out_of_inodes_writes_nothing() {
    if !crate::support::need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let src = sandbox.path("templates");
    std::fs::create_dir_all(src.join("a")).unwrap();
    std::fs::create_dir_all(src.join("b")).unwrap();
    sandbox.write("templates/a/x.conf.j2", "x\n");
    sandbox.write("templates/b/y.conf.j2", "y\n");
    let dest = sandbox.path("out");
    std::fs::create_dir_all(dest.join("a")).unwrap();
    std::fs::create_dir_all(dest.join("b")).unwrap();
    // `b` is a volume with no inode left: the kernel says it may be written (access(2)),
    // and only a real file made there finds out it cannot.
    let full = dest.join("b");
    let render = || {
        sandbox
            .initbox()
            .args(["template", path_str(&src), path_str(&dest)])
            .in_mount_namespace(&format!(
                "mount -t tmpfs -o nr_inodes=1,size=64k tmpfs {}",
                full.display()
            ))
            .run()
    };
    render().assert_code(1).assert_stderr_contains(&format!(
        "cannot write {0}/b/y.conf: no space left on device (the directory {0}/b cannot be \
             written)",
        dest.display()
    ));
    assert_eq!(
        tree(&dest),
        ["a/", "b/"],
        "a/x.conf was written before b failed"
    );

    // A directory to create on that volume.
    std::fs::remove_file(src.join("b/y.conf.j2")).unwrap();
    std::fs::create_dir(src.join("b/new")).unwrap();
    render().assert_code(1).assert_stderr_contains(&format!(
        "cannot create the directory {0}/b/new in {0}/b: no space left on device",
        dest.display()
    ));
    assert_eq!(tree(&dest), ["a/", "b/"]);
    assert!(temp_files(sandbox.dir.path()).is_empty());
}

/// `initbox template SRC - --data d=DATA`.
fn render_to_stdout_with_d(
    sandbox: &Sandbox,
    src: &std::path::Path,
    data: &std::path::Path,
) -> Output {
    template(
        sandbox,
        &[
            "--data",
            &format!("d={}", data.display()),
            path_str(src),
            "-",
        ],
    )
}

/// The YAML 1.2 reference: Debian's python3-ruamel.yaml.
fn python_with_ruamel() -> &'static str {
    static PYTHON: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    PYTHON.get_or_init(|| python_with("ruamel.yaml", "python3-ruamel.yaml"))
}

/// Each scalar as `TYPE:VALUE` when ruamel.yaml reads `k: SCALAR` as YAML 1.2, or `error`.
fn ruamel_types(sandbox: &Sandbox, scalars: &[&str]) -> Vec<String> {
    let input = sandbox.write(
        "ruamel-scalars.json",
        &serde_json::to_string(scalars).unwrap(),
    );
    const SCRIPT: &str = "
import json, math, sys
from ruamel.yaml import YAML
yaml = YAML(typ='safe')
yaml.version = (1, 2)
out = []
for scalar in json.load(open(sys.argv[1], encoding='utf-8')):
    try:
        v = yaml.load('k: ' + scalar + '\\n')['k']
    except Exception:
        out.append('error')
        continue
    if v is None: out.append('null')
    elif isinstance(v, bool): out.append('bool:' + str(v))
    elif isinstance(v, int): out.append('int:' + str(v))
    elif isinstance(v, float): out.append('float:' + repr(v))
    else: out.append('str:' + str(v))
print(json.dumps(out))
";
    let output = Command::new(python_with_ruamel())
        .args(["-c", SCRIPT])
        .arg(&input)
        .stdin(Stdio::null())
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn yaml_data_is_typed_by_the_yaml_1_2_core_schema_as_ruamel_reads_it() {
    let sandbox = Sandbox::new();
    let scalars = [
        "0644",
        "-0644",
        "+12",
        "1_000",
        "0b101",
        "0x1F",
        "0X1F",
        "0o17",
        "0O17",
        "-0x1F",
        "+0o7",
        "0",
        "-0",
        "00",
        "089",
        "123456789012345678901234567890",
        "-9223372036854775809",
        "true",
        "True",
        "TRUE",
        "tRuE",
        "false",
        "FALSE",
        "yes",
        "no",
        "on",
        "off",
        "y",
        "n",
        "Y",
        "N",
        "No",
        "null",
        "Null",
        "NULL",
        "nUll",
        "~",
        "",
        ".5",
        "+.5",
        "5.",
        "1e3",
        "1E3",
        "1.0e+3",
        "1.e3",
        "12e03",
        "-1.5",
        "0.",
        ".inf",
        "-.Inf",
        "+.INF",
        "inf",
        "nan",
        ".e3",
        "1:20",
        "190:20:30",
        "0o8",
        "0x",
        "0x_1F",
        "'0644'",
        "\"true\"",
        "!!str 12",
        "!!int \"12\"",
        "!!float 1",
        "!!null x",
        "|-\n  12",
        "a b",
        "1.2.3",
        "- 1",
        "[1, 2]",
    ];
    let scalars: Vec<&str> = scalars
        .into_iter()
        .filter(|s| !s.starts_with('[') && !s.starts_with("- "))
        .collect();
    let theirs = ruamel_types(&sandbox, &scalars);
    let types = sandbox.write(
        "types.j2",
        "{% set v = d.k %}{% if v is none %}null{% elif v is boolean %}bool:{{ v }}\
         {% elif v is integer %}int:{{ v }}{% elif v is float %}float:{{ v }}\
         {% else %}str:{{ v }}{% endif %}",
    );
    for (index, (scalar, theirs)) in scalars.iter().zip(&theirs).enumerate() {
        let data = sandbox.write(&format!("d{index}.yaml"), &format!("k: {scalar}\n"));
        let output = render_to_stdout_with_d(&sandbox, &types, &data);
        let ours = if output.code == 0 {
            output.stdout.trim_end().to_owned()
        } else {
            "error".to_owned()
        };
        assert_eq!(&ours, theirs, "k: {scalar} ({})", output.stderr);
    }

    // Keys that YAML 1.1 takes for booleans are twelve keys, none lost.
    let keys = [
        "y", "n", "yes", "no", "on", "off", "Y", "N", "YES", "NO", "On", "Off",
    ];
    let data = sandbox.write(
        "keys.yaml",
        &keys
            .iter()
            .map(|k| format!("{k}: {k}-value\n"))
            .collect::<String>(),
    );
    let src = sandbox.write(
        "keys.j2",
        "{% for k, v in d | items %}{{ k }}={{ v }} {% endfor %}\n",
    );
    let output = render_to_stdout_with_d(&sandbox, &src, &data);
    output.assert_code(0);
    let expected: String = keys.iter().map(|k| format!("{k}={k}-value ")).collect();
    assert_eq!(output.stdout.trim_end(), expected.trim_end());

    // A timestamp stays the text it is written as (ruamel makes a date of it).
    let data = sandbox.write("when.yaml", "when: 2001-12-14t21:59:43.10-05:00\n");
    let src = sandbox.write("when.j2", "{{ d.when }} {{ d.when is string }}\n");
    render_to_stdout_with_d(&sandbox, &src, &data).assert_code(0);
}

#[test]
fn colliding_yaml_keys_are_an_error_with_their_position() {
    let sandbox = Sandbox::new();
    let src = sandbox.write("t.j2", "{{ d | tojson }}\n");
    for (yaml, message) in [
        (
            "a: 1\nb: 2\na: 3\n",
            "line 3 column 1: duplicate key 'a', first at line 1 column 1",
        ),
        (
            "1: a\n0x1: b\n",
            "line 2 column 1: duplicate key '0x1' (the same key as '1')",
        ),
        (
            "true: a\nTrue: b\n",
            "line 2 column 1: duplicate key 'True' (the same key as 'true')",
        ),
        (
            "x:\n  k: 1\n  'k': 2\n",
            "line 3 column 3: duplicate key 'k'",
        ),
    ] {
        let data = sandbox.write("dup.yaml", yaml);
        let output = render_to_stdout_with_d(&sandbox, &src, &data);
        output.assert_code(78).assert_stderr_contains(message);
        assert!(!output.stderr.contains("Options"), "{}", output.stderr);
    }
    // Merged keys are not duplicates: the mapping's own key wins, as in ruamel.
    let data = sandbox.write(
        "merge.yaml",
        "base: &b {host: a, port: 1}\nx:\n  <<: *b\n  port: 2\n",
    );
    let output = render_to_stdout_with_d(&sandbox, &src, &data);
    output.assert_code(0);
    assert_eq!(
        output.stdout,
        "{\"base\": {\"host\": \"a\", \"port\": 1}, \"x\": {\"host\": \"a\", \"port\": 2}}\n"
    );
}

#[test]
fn a_pipeline_file_is_typed_by_the_yaml_1_2_core_schema() {
    let sandbox = Sandbox::new();
    let src = sandbox.write("t.j2", "{{ y }} {{ n }} {{ on }} {{ off }} {{ m }}\n");
    let dest = sandbox.path("out.conf");
    let pipeline = sandbox.write(
        "p.yaml",
        &format!(
            "steps:\n  - name: render\n    template:\n      src: {}\n      dest: {}\n      \
             mode: 0644\n      set: {{y: a, n: b, on: c, off: d, m: 0o17}}\n",
            src.display(),
            dest.display()
        ),
    );
    sandbox
        .initbox()
        .args(["run", "-f", path_str(&pipeline)])
        .run()
        .assert_code(0);
    // Numbers reach the command line as written: `0o17` stays `0o17`, `0644` is octal there.
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "a b c d 0o17\n");
    assert_eq!(mode(&dest), 0o644);

    let pipeline = sandbox.write(
        "dup.yaml",
        "steps:\n  - name: a\n    sleep: {duration: 1, duration: 2}\n",
    );
    let output = sandbox.check_pipeline(&pipeline);
    output.assert_code(78).assert_stderr_contains(&format!(
        "{}:3:26: duplicate key 'duration', first at line 3 column 13",
        pipeline.display()
    ));
    assert!(!output.stderr.contains("Options"), "{}", output.stderr);
    // A 1.1 boolean is no boolean: a switch says so, at its position.
    let pipeline = sandbox.write(
        "yes.yaml",
        &format!(
            "steps:\n  - name: a\n    template: {{src: {}, dest: \"-\", check: yes}}\n",
            src.display()
        ),
    );
    sandbox
        .check_pipeline(&pipeline)
        .assert_code(78)
        .assert_stderr_contains("template.check: expected true or false");
}

/// A mistake among template's flags that needs no file: refused with exit 2 on the command
/// line and, as a pipeline step, by `run --check` (exit 78, naming the step's key), with
/// the same message; nothing is written either way.
fn refused_by_the_cli_and_by_run_check(args: &[&str], step: &str, key: &str, message: &str) {
    let sandbox = Sandbox::new();
    sandbox.write("app.conf.j2", "x\n");
    let mut cmd = sandbox.initbox().arg("template");
    for arg in args {
        cmd = cmd.arg(arg.replace("SANDBOX", path_str(sandbox.dir.path())));
    }
    cmd.run().assert_code(2).assert_stderr_contains(message);
    let pipeline = sandbox.write(
        "p.yaml",
        &format!(
            "steps:\n  - name: render\n    template: {}\n",
            step.replace("SANDBOX", path_str(sandbox.dir.path()))
        ),
    );
    sandbox
        .check_pipeline(&pipeline)
        .assert_code(78)
        .assert_stderr_contains(&format!("step 'render', template.{key}: invalid value '"))
        .assert_stderr_contains(message);
    assert_eq!(tree(sandbox.dir.path()), ["app.conf.j2", "hosts", "p.yaml"]);
}

#[test]
fn check_to_stdout_is_refused_by_the_cli_and_by_run_check() {
    refused_by_the_cli_and_by_run_check(
        &["SANDBOX/app.conf.j2", "-", "--check"],
        "{src: SANDBOX/app.conf.j2, dest: '-', check: true}",
        "dest",
        "invalid value '-' for '<DEST>': --check compares the output with DEST, which cannot \
         be '-'",
    );
}

#[test]
fn stdin_into_a_directory_path_is_refused_by_the_cli_and_by_run_check() {
    refused_by_the_cli_and_by_run_check(
        &["-", "SANDBOX/out/"],
        "{src: '-', dest: SANDBOX/out/}",
        "dest",
        "/out/' for '<DEST>': a template read from stdin has no name: DEST must be a file or \
         '-', not a directory",
    );
}

#[test]
fn data_named_twice_is_refused_by_the_cli_and_by_run_check() {
    refused_by_the_cli_and_by_run_check(
        &[
            "SANDBOX/app.conf.j2",
            "SANDBOX/app.conf",
            "--data",
            "db=a.json",
            "--data",
            "db=b.json",
        ],
        "{src: SANDBOX/app.conf.j2, dest: SANDBOX/app.conf, data: [db=a.json, db=b.json]}",
        "data",
        "invalid value 'db=b.json' for '--data <NAME=FILE>': 'db' is given twice",
    );
}

#[test]
fn set_values_that_contradict_each_other_are_refused_by_the_cli_and_by_run_check() {
    refused_by_the_cli_and_by_run_check(
        &[
            "SANDBOX/app.conf.j2",
            "SANDBOX/app.conf",
            "--set",
            "db=x",
            "--set",
            "db.host=y",
        ],
        "{src: SANDBOX/app.conf.j2, dest: SANDBOX/app.conf, set: [db=x, db.host=y]}",
        "set",
        "invalid value 'db.host=y' for '--set <KEY=VALUE>': db is a value, not a map",
    );
    refused_by_the_cli_and_by_run_check(
        &[
            "SANDBOX/app.conf.j2",
            "SANDBOX/app.conf",
            "--set",
            "db.host=y",
            "--set",
            "db=x",
        ],
        "{src: SANDBOX/app.conf.j2, dest: SANDBOX/app.conf, set: {db.host: y, db: x}}",
        "set",
        "invalid value 'db=x' for '--set <KEY=VALUE>': db is a map; set its keys instead",
    );
    // Whether a --set reaches into a data file's map is known only once the file is read:
    // the run refuses it, in the same words.
    let sandbox = Sandbox::new();
    let template = sandbox.write("app.conf.j2", "{{ db }}\n");
    let data = sandbox.write("db.json", "\"just a string\"");
    sandbox
        .initbox()
        .arg("template")
        .arg(&template)
        .arg(sandbox.path("app.conf"))
        .arg(format!("--data=db={}", data.display()))
        .arg("--set=db.host=y")
        .run()
        .assert_code(2)
        .assert_stderr_contains(
            "invalid value 'db.host=y' for '--set <KEY=VALUE>': db is a value, not a map",
        );
    assert!(!sandbox.path("app.conf").exists());
}
