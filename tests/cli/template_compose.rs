//! Jinja composition through the real binary: `include`, `import`, `from … import` and
//! `extends` render as python3's Jinja2 renders them with a `FileSystemLoader` over the
//! same roots, never reach outside those roots (`..`, absolute paths, planted symlinks),
//! and a partial in a directory of templates is included, not rendered on its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::support::{Sandbox, path_str, tree};

/// Renders the template file `main` with python3's Jinja2 set up as initbox sets up
/// minijinja, with a `FileSystemLoader` over `roots`; `context` is JSON.
fn jinja2_with_loader(main: &Path, roots: &[PathBuf], context: &str) -> Result<Vec<u8>, String> {
    const SCRIPT: &str = "
import json, sys
import jinja2
main, context, roots = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3:]
environment = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                 loader=jinja2.FileSystemLoader(roots))
source = open(main, encoding='utf-8').read()
sys.stdout.buffer.write(environment.from_string(source).render(context).encode('utf-8'))
";
    let output = Command::new("python3")
        .args(["-c", SCRIPT])
        .arg(main)
        .arg(context)
        .args(roots)
        .stdin(Stdio::null())
        .output()
        .expect("running python3 (apt-get install python3-jinja2)");
    match output.status.success() {
        true => Ok(output.stdout),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

/// A tree of templates: the main one in `app/`, partials beside it and in `lib/` (given
/// with `--templates`).
fn tree_of_templates(sandbox: &Sandbox) -> (PathBuf, PathBuf) {
    let app = sandbox.path("app");
    let lib = sandbox.path("lib");
    for dir in [app.join("_partials"), lib.join("macros")] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let files: &[(&Path, &str, &str)] = &[
        (&app, "_partials/header.j2", "# {{ title }} (header)\n"),
        (
            &app,
            "_partials/nested.j2",
            "nested: {% include '_partials/leaf.j2' %}",
        ),
        (&app, "_partials/leaf.j2", "leaf {{ db.host }}\n"),
        (&app, "shadowed.j2", "from app\n"),
        (&lib, "shadowed.j2", "from lib\n"),
        (&lib, "only-lib.j2", "only in lib: {{ title | upper }}\n"),
        (
            &lib,
            "macros/kv.j2",
            "{% macro kv(k, v) %}{{ k }} = {{ v | tojson }}{% endmacro %}\n{% macro section(name) %}[{{ name }}]\n{{ caller() }}{% endmacro %}\n{% set version = 3 %}",
        ),
        (
            &lib,
            "base.j2",
            "# base\n{% block head %}head default\n{% endblock %}body:\n{% block body %}{% endblock %}# end {{ title }}\n",
        ),
        (
            &lib,
            "child-base.j2",
            "{% extends 'base.j2' %}{% block head %}child head\n{% endblock %}",
        ),
    ];
    for (root, name, contents) in files {
        std::fs::write(root.join(name), contents).unwrap();
    }
    (app, lib)
}

const CONTEXT: &str = r#"{"title": "orders", "db": {"host": "pg", "port": 5432}}"#;
const DB_JSON: &str = r#"{"host": "pg", "port": 5432}"#;

/// initbox's flags for [`CONTEXT`]: `db` from a JSON file (so that the port is a number).
fn context_args(sandbox: &Sandbox) -> Vec<String> {
    let db = sandbox.write("db.json", DB_JSON);
    vec![
        "--set=title=orders".into(),
        format!("--data=db={}", db.display()),
    ]
}

const CASES: &[(&str, &str)] = &[
    ("include", "{% include '_partials/header.j2' %}x\n"),
    ("include nested", "{% include '_partials/nested.j2' %}"),
    (
        "include with a variable set before",
        "{% set title = 'local' %}{% include '_partials/header.j2' %}",
    ),
    (
        "include in a loop",
        "{% for t in ['a', 'b'] %}{% set title = t %}{% include '_partials/header.j2' %}{% endfor %}",
    ),
    ("include from --templates", "{% include 'only-lib.j2' %}"),
    ("the own directory first", "{% include 'shadowed.j2' %}"),
    (
        "include ignore missing",
        "a{% include 'missing.j2' ignore missing %}b\n",
    ),
    (
        "include the first of a list",
        "{% include ['missing.j2', 'only-lib.j2'] %}",
    ),
    (
        "include a path with ./",
        "{% include './_partials/header.j2' %}",
    ),
    (
        "import as",
        "{% import 'macros/kv.j2' as m %}{{ m.kv('port', db.port) }}\n{{ m.version }}\n",
    ),
    (
        "from import",
        "{% from 'macros/kv.j2' import kv, section %}{{ kv('host', db.host) }}\n{% call section('db') %}host={{ db.host }}\n{% endcall %}",
    ),
    (
        "from import with context",
        "{% from 'macros/kv.j2' import kv with context %}{{ kv('t', title) }}\n",
    ),
    (
        "extends",
        "{% extends 'base.j2' %}{% block body %}  {{ db.host }}:{{ db.port }}\n{% endblock %}",
    ),
    (
        "extends with super()",
        "{% extends 'base.j2' %}{% block head %}{{ super() }}more head\n{% endblock %}",
    ),
    (
        "extends two levels",
        "{% extends 'child-base.j2' %}{% block body %}b\n{% endblock %}",
    ),
    (
        "extends a variable",
        "{% set layout = 'base.j2' %}{% extends layout %}{% block body %}v\n{% endblock %}",
    ),
];

#[test]
fn composition_renders_like_jinja2_with_a_file_system_loader() {
    let sandbox = Sandbox::new();
    let (app, lib) = tree_of_templates(&sandbox);
    for (name, template) in CASES {
        let main = app.join("main.conf.j2");
        std::fs::write(&main, template).unwrap();
        let dest = sandbox.path("out.conf");
        let output = sandbox
            .initbox()
            .arg("template")
            .arg(&main)
            .arg(&dest)
            .arg("--templates")
            .arg(&lib)
            .args(context_args(&sandbox))
            .run();
        assert_eq!(output.code, 0, "{name}: {}", output.stderr);
        let ours = std::fs::read(&dest).unwrap();
        let theirs = jinja2_with_loader(&main, &[app.clone(), lib.clone()], CONTEXT)
            .unwrap_or_else(|e| panic!("{name}: Jinja2: {e}"));
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "{name}: initbox (left) and Jinja2 (right) differ"
        );
    }
}

#[test]
fn a_template_outside_the_roots_is_refused_naming_the_template_and_line() {
    let sandbox = Sandbox::new();
    let (app, lib) = tree_of_templates(&sandbox);
    // A file just outside the roots, which a `..` would reach.
    sandbox.write("secret.txt", "s3cret\n");
    for (statement, why) in [
        (
            "{% include '../secret.txt' %}",
            "`..` leaves the template roots",
        ),
        (
            "{% include '../../../../../../etc/shadow' %}",
            "`..` leaves",
        ),
        ("{% include '_partials/../../secret.txt' %}", "`..` leaves"),
        ("{% include '/etc/passwd' %}", "an absolute path"),
        ("{% import '../secret.txt' as s %}", "`..` leaves"),
        ("{% from '/etc/passwd' import x %}", "an absolute path"),
        ("{% extends '../secret.txt' %}", "`..` leaves"),
        (
            "{% include ['missing.j2', '../secret.txt'] %}",
            "`..` leaves",
        ),
    ] {
        let main = app.join("main.conf.j2");
        std::fs::write(&main, format!("line one\n{statement}\n")).unwrap();
        let dest = sandbox.path("out.conf");
        let output = sandbox
            .initbox()
            .arg("template")
            .arg(&main)
            .arg(&dest)
            .arg("--templates")
            .arg(&lib)
            .run();
        output
            .assert_code(78)
            .assert_stderr_contains(&format!("{}:2: ", main.display()))
            .assert_stderr_contains("is refused: ")
            .assert_stderr_contains(why);
        assert!(!output.stderr.contains("s3cret"), "{}", output.stderr);
        assert!(!dest.exists(), "{statement}");
    }
    // Jinja2 refuses them too (not found), so no template that works there breaks here.
    let main = app.join("main.conf.j2");
    std::fs::write(&main, "{% include '../secret.txt' %}").unwrap();
    assert!(jinja2_with_loader(&main, &[app.clone(), lib.clone()], "{}").is_err());
}

#[test]
fn a_symlink_planted_in_a_root_that_points_outside_is_refused() {
    let sandbox = Sandbox::new();
    let (app, lib) = tree_of_templates(&sandbox);
    sandbox.write("secret.txt", "s3cret\n");
    std::os::unix::fs::symlink(sandbox.path("secret.txt"), lib.join("evil.j2")).unwrap();
    std::os::unix::fs::symlink("../../secret.txt", app.join("_partials/evil.j2")).unwrap();
    std::os::unix::fs::symlink(sandbox.dir.path(), lib.join("up")).unwrap();
    // A ConfigMap volume's links stay inside the root: followed.
    std::fs::create_dir(app.join("..2026_01_01")).unwrap();
    std::fs::write(
        app.join("..2026_01_01/cm.j2"),
        "from the configmap {{ title }}\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("..2026_01_01", app.join("..data")).unwrap();
    std::os::unix::fs::symlink("..data/cm.j2", app.join("cm.j2")).unwrap();
    let main = app.join("main.conf.j2");
    let dest = sandbox.path("out.conf");
    for name in ["evil.j2", "_partials/evil.j2", "up/secret.txt"] {
        std::fs::write(&main, format!("{{% include '{name}' %}}")).unwrap();
        let output = sandbox
            .initbox()
            .arg("template")
            .arg(&main)
            .arg(&dest)
            .arg("--templates")
            .arg(&lib)
            .run();
        output
            .assert_code(78)
            .assert_stderr_contains(&format!("{}:1: ", main.display()))
            .assert_stderr_contains("is a symbolic link to ")
            .assert_stderr_contains("outside the template roots");
        assert!(!output.stderr.contains("s3cret"), "{}", output.stderr);
        assert!(!dest.exists());
    }
    std::fs::write(&main, "{% include 'cm.j2' %}").unwrap();
    sandbox
        .initbox()
        .arg("template")
        .arg(&main)
        .arg(&dest)
        .arg("--set=title=t")
        .run()
        .assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "from the configmap t\n"
    );
}

#[test]
fn partials_in_a_directory_of_templates_are_included_not_rendered() {
    let sandbox = Sandbox::new();
    let src = sandbox.path("templates");
    std::fs::create_dir_all(src.join("_partials")).unwrap();
    std::fs::create_dir_all(src.join("conf.d")).unwrap();
    std::fs::write(
        src.join("_helpers.j2"),
        "{% macro port() %}{{ db.port }}{% endmacro %}",
    )
    .unwrap();
    std::fs::write(src.join("_partials/db.j2"), "host={{ db.host }}\n").unwrap();
    std::fs::write(
        src.join("app.conf.j2"),
        // `with context`: Jinja2's imports see no variables without it (minijinja's see them
        // always; the README says so).
        "{% import '_helpers.j2' as h with context %}{% include '_partials/db.j2' %}port={{ h.port() }}\n",
    )
    .unwrap();
    // A template in a subdirectory names partials from the root of SRC, as Jinja2's
    // FileSystemLoader over SRC does.
    std::fs::write(
        src.join("conf.d/db.conf.j2"),
        "{% include '_partials/db.j2' %}",
    )
    .unwrap();
    let dest = sandbox.path("out");
    sandbox
        .initbox()
        .arg("template")
        .arg(&src)
        .arg(&dest)
        .args(context_args(&sandbox))
        .run()
        .assert_code(0);
    assert_eq!(tree(&dest), ["app.conf", "conf.d/", "conf.d/db.conf"]);
    for (template, output) in [
        ("app.conf.j2", "app.conf"),
        ("conf.d/db.conf.j2", "conf.d/db.conf"),
    ] {
        let theirs =
            jinja2_with_loader(&src.join(template), std::slice::from_ref(&src), CONTEXT).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&std::fs::read(dest.join(output)).unwrap()),
            String::from_utf8_lossy(&theirs),
            "{template}"
        );
    }
    // Named on its own, a partial is rendered: the user asked for that file.
    let one = sandbox.path("one.conf");
    sandbox
        .initbox()
        .arg("template")
        .arg(src.join("_partials/db.j2"))
        .arg(&one)
        .args(context_args(&sandbox))
        .run()
        .assert_code(0);
    assert_eq!(std::fs::read_to_string(&one).unwrap(), "host=pg\n");
}

#[test]
fn an_undefined_variable_in_a_partial_names_the_partials_file_and_line() {
    let sandbox = Sandbox::new();
    let (app, lib) = tree_of_templates(&sandbox);
    std::fs::write(app.join("_partials/bad.j2"), "ok\n{{ db.user }}\n").unwrap();
    std::fs::write(
        lib.join("macros/bad.j2"),
        "{% macro user() %}\n\n{{ db.password }}{% endmacro %}",
    )
    .unwrap();
    std::fs::write(
        lib.join("bad-base.j2"),
        "{% block b %}{% endblock %}\n{{ nope }}\n",
    )
    .unwrap();
    let main = app.join("main.conf.j2");
    let dest = sandbox.path("out.conf");
    for (template, file, line, variable) in [
        (
            "a\n{% include '_partials/bad.j2' %}",
            app.join("_partials/bad.j2"),
            2,
            "db.user",
        ),
        (
            "{% import 'macros/bad.j2' as m %}\n{{ m.user() }}",
            lib.join("macros/bad.j2"),
            3,
            "db.password",
        ),
        (
            "{% from 'macros/bad.j2' import user %}{{ user() }}",
            lib.join("macros/bad.j2"),
            3,
            "db.password",
        ),
        (
            "{% extends 'bad-base.j2' %}",
            lib.join("bad-base.j2"),
            2,
            "nope",
        ),
        // The nested include's undefined: the innermost file.
        (
            "{% include '_partials/nested.j2' %}",
            app.join("_partials/leaf.j2"),
            1,
            "db.host",
        ),
    ] {
        std::fs::write(&main, template).unwrap();
        let output = sandbox
            .initbox()
            .arg("template")
            .arg(&main)
            .arg(&dest)
            .arg("--templates")
            .arg(&lib)
            .arg("--set=title=t")
            .arg("--set=db.port=1")
            .run();
        output.assert_code(78).assert_stderr_contains(&format!(
            "{}:{line}: `{variable}` is undefined",
            file.display()
        ));
        assert!(!dest.exists(), "{template}");
        // Jinja2's StrictUndefined fails on it as well.
        let context = r#"{"title": "t", "db": {"port": 1}}"#;
        assert!(jinja2_with_loader(&main, &[app.clone(), lib.clone()], context).is_err());
    }
}

#[test]
fn a_missing_template_or_root_is_exit_78() {
    let sandbox = Sandbox::new();
    let main = sandbox.write("main.conf.j2", "{% include 'nowhere.j2' %}");
    let dest = sandbox.path("out.conf");
    sandbox
        .initbox()
        .arg("template")
        .arg(&main)
        .arg(&dest)
        .run()
        .assert_code(78)
        .assert_stderr_contains(&format!("{}:1: ", main.display()))
        .assert_stderr_contains("nowhere.j2");
    sandbox
        .initbox()
        .arg("template")
        .arg(&main)
        .arg(&dest)
        .arg("--templates")
        .arg(sandbox.path("no-such-dir"))
        .run()
        .assert_code(78)
        .assert_stderr_contains(&format!(
            "--templates {}: no such file or directory",
            path_str(&sandbox.path("no-such-dir"))
        ));
    assert!(!dest.exists());
}

#[test]
fn stdin_includes_from_the_templates_directories_only() {
    let sandbox = Sandbox::new();
    let (_app, lib) = tree_of_templates(&sandbox);
    let cmd = sandbox
        .initbox()
        .args(["template", "-", "-", "--set=title=t", "--templates"])
        .arg(&lib);
    let (code, stdout, stderr) =
        crate::template::run_with_stdin(cmd, "{% include 'only-lib.j2' %}");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, b"only in lib: T\n");
}

#[test]
fn a_pipeline_step_takes_templates_as_a_list() {
    let sandbox = Sandbox::new();
    let (app, lib) = tree_of_templates(&sandbox);
    let main = app.join("main.conf.j2");
    std::fs::write(&main, "{% include 'only-lib.j2' %}").unwrap();
    let dest = sandbox.path("out.conf");
    let pipeline = sandbox.write(
        "p.yaml",
        &format!(
            "steps:\n  - name: render\n    template: {{src: {}, dest: {}, templates: [{}], set: {{title: x}}}}\n",
            main.display(),
            dest.display(),
            lib.display()
        ),
    );
    sandbox
        .initbox()
        .args(["run", "-f", path_str(&pipeline)])
        .run()
        .assert_code(0);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "only in lib: X\n");
}
