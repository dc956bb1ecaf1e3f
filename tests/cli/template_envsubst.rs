//! template --syntax envsubst through the real binary, against GNU envsubst byte for byte
//! where GNU defines the output, against the shell where initbox goes further
//! (`${VAR:-default}`, `${VAR:?message}`), and where the two differ on purpose: an unset
//! variable is exit 78, not GNU's empty string.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::support::{Sandbox, path_str, tree};

/// The variables every comparison runs with (GNU and initbox alike).
const VARS: &[(&str, &str)] = &[
    ("A", "aa"),
    ("B", "b b"),
    ("A_B", "a_b"),
    ("EMPTY", ""),
    ("UTF", "é ü ✓"),
    ("DOLLAR", "$A ${B}"),
    ("LONG_NAME_WITH_DIGITS_123", "long"),
];

/// GNU envsubst's output for `input`, with SHELL-FORMAT `format` when given.
fn gnu_envsubst(input: &[u8], format: Option<&str>, vars: &[(&str, &str)]) -> Vec<u8> {
    use std::io::Write;
    let mut command = Command::new("envsubst");
    command.args(format).envs(vars.iter().copied());
    for unset in ["UNSET", "NOPE"] {
        command.env_remove(unset);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running envsubst (apt-get install gettext-base)");
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(output.status.success(), "envsubst failed");
    output.stdout
}

/// initbox's output for `input` (a file in, a file out), or its exit code and stderr.
fn initbox_envsubst(
    sandbox: &Sandbox,
    input: &[u8],
    args: &[&str],
    vars: &[(&str, &str)],
) -> Result<Vec<u8>, (i32, String)> {
    let src = sandbox.path("in.tmpl");
    std::fs::write(&src, input).unwrap();
    let dest = sandbox.path("out.conf");
    let _ = std::fs::remove_file(&dest);
    let mut cmd = sandbox
        .initbox()
        .args(["template", "--syntax", "envsubst"])
        .arg(&src)
        .arg(&dest)
        .args(args);
    for (key, value) in vars {
        cmd = cmd.env(key, value);
    }
    cmd.command.env_remove("UNSET").env_remove("NOPE");
    let output = cmd.run();
    if output.code != 0 {
        return Err((output.code, output.stderr));
    }
    Ok(std::fs::read(&dest).unwrap())
}

/// Inputs whose every variable is set: GNU's output is defined, and initbox's must be it.
fn gnu_cases() -> Vec<Vec<u8>> {
    let mut cases: Vec<Vec<u8>> = [
        "$",
        "a $ b",
        "$1 $9x $0",
        "$$",
        "$$A",
        "${",
        "${}",
        "${ A}",
        "${A",
        "${A\n}",
        "x ${A.",
        "$A_B",
        "${A_B}",
        "${A}B",
        "${A}}",
        "$A$A${A}$A",
        "${1}",
        "${A-x} ${A#x} ${A%x} ${A:+x} ${A=x}",
        "$-A $.A $/A $A/",
        "é$A ü${B}✓ $UTF",
        "$é ${é}",
        "a=$A\r\nb=${B}\r\n",
        "x\0$A\0${B}\0",
        "$DOLLAR",
        "$LONG_NAME_WITH_DIGITS_123 ${LONG_NAME_WITH_DIGITS_123}x",
        "$EMPTY|${EMPTY}|",
        "no variables at all\n",
        "",
        "trailing $",
        "trailing ${",
        "trailing ${A",
        "\n\n\n$A\n",
    ]
    .iter()
    .map(|case| case.as_bytes().to_vec())
    .collect();
    // A 1 MB file: a variable every few dozen bytes, and every form above.
    let mut big = Vec::new();
    let mut n = 0;
    while big.len() < 1_000_000 {
        big.extend_from_slice(
            format!("line {n}: ${{A}} and $B, $$ ${{A cost $5 é ${{UTF}}\r\n").as_bytes(),
        );
        n += 1;
    }
    cases.push(big);
    cases
}

#[test]
fn renders_as_gnu_envsubst_byte_for_byte() {
    let sandbox = Sandbox::new();
    for case in gnu_cases() {
        let ours = initbox_envsubst(&sandbox, &case, &[], VARS)
            .unwrap_or_else(|e| panic!("{:?}: {e:?}", String::from_utf8_lossy(&case)));
        let theirs = gnu_envsubst(&case, None, VARS);
        assert!(
            ours == theirs,
            "{:?}: initbox {:?} GNU {:?}",
            String::from_utf8_lossy(&case[..case.len().min(200)]),
            String::from_utf8_lossy(&ours[..ours.len().min(200)]),
            String::from_utf8_lossy(&theirs[..theirs.len().min(200)])
        );
    }
}

#[test]
fn allow_substitutes_only_the_variables_named_as_gnu_shell_format_does() {
    let sandbox = Sandbox::new();
    let input = "$A ${A} $B ${B} $A_B ${UNSET} $UNSET ${UNSET:-x} ${UNSET:?m} \
                 ${NOPE:-$A} $$A $1 ${UTF}\n";
    for (allow, format) in [
        (vec!["A"], "$A"),
        (vec!["A", "B"], "$A $B"),
        (vec!["$A ${B}"], "$A ${B}"),
        (vec!["A", "${UTF} and $B"], "$A ${UTF} $B"),
        // `${A` names nothing in a SHELL-FORMAT.
        (vec!["${A $B"], "${A $B"),
        // (An allowed `${A:-x}` is initbox's default, where GNU copies it: not compared here.)
    ] {
        let args: Vec<String> = allow.iter().map(|a| format!("--allow={a}")).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let ours = initbox_envsubst(&sandbox, input.as_bytes(), &args, VARS).unwrap();
        let theirs = gnu_envsubst(input.as_bytes(), Some(format), VARS);
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs),
            "{allow:?}"
        );
    }
}

#[test]
fn an_unset_variable_is_exit_78_naming_it_and_the_line_where_gnu_prints_nothing() {
    let sandbox = Sandbox::new();
    let input = "host=${A}\nport=$NOPE\n";
    // GNU: an empty string, silently.
    assert_eq!(
        gnu_envsubst(input.as_bytes(), None, VARS),
        b"host=aa\nport=\n"
    );
    let dest = sandbox.write("out.conf", "old\n");
    let (code, stderr) = initbox_envsubst(&sandbox, input.as_bytes(), &[], VARS)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code, 78, "{stderr}");
    let src = sandbox.path("in.tmpl");
    assert!(
        stderr.contains(&format!("{}:2: `NOPE` is undefined", src.display())),
        "{stderr}"
    );
    // Nothing written (initbox_envsubst removed the old file: nothing came back).
    assert!(!dest.exists());
    // An allowed but unset variable is the same error.
    let (code, stderr) = initbox_envsubst(&sandbox, b"$UNSET", &["--allow", "UNSET"], VARS)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code, 78);
    assert!(stderr.contains(":1: `UNSET` is undefined"), "{stderr}");
}

#[test]
fn an_unset_variable_leaves_an_existing_destination_as_it_was() {
    let sandbox = Sandbox::new();
    let src = sandbox.write("app.conf.tmpl", "a=$A\nb=$NOPE\n");
    let dest = sandbox.write("app.conf", "old\n");
    sandbox
        .initbox()
        .args(["template", "--syntax=envsubst"])
        .arg(&src)
        .arg(&dest)
        .env("A", "1")
        .run()
        .assert_code(78)
        .assert_stderr_contains("app.conf.tmpl:2: `NOPE` is undefined");
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old\n");
    assert_eq!(
        tree(sandbox.dir.path()),
        ["app.conf", "app.conf.tmpl", "hosts"]
    );
}

/// `sh -c 'printf %s "EXPR"'` with `vars` set and UNSET unset: the shell's own meaning.
fn shell(expr: &str, vars: &[(&str, &str)]) -> Result<String, String> {
    let output = Command::new("sh")
        .args(["-c", &format!("printf %s \"{expr}\"")])
        .envs(vars.iter().copied())
        .env_remove("UNSET")
        .env_remove("NOPE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8(output.stdout).unwrap();
    match output.status.success() {
        true => Ok(stdout),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

#[test]
fn defaults_and_messages_mean_what_they_mean_in_the_shell() {
    let sandbox = Sandbox::new();
    for expr in [
        "${A:-x}",
        "${EMPTY:-x}",
        "${UNSET:-x}",
        "${UNSET:-}",
        "${UNSET:-a b: c=d, e}",
        "${UNSET:-$A}",
        "${UNSET:-${B}/x}",
        "${UNSET:-${NOPE:-deep}}",
        "${UNSET:-${EMPTY:-${A}}}",
        "${A:-${NOPE}}",
        "${A:-${NOPE:?never}}",
        "${UTF:-x}${UNSET:-é}",
        "${A:?must be set}",
        "x${UNSET:-}y",
    ] {
        let ours = initbox_envsubst(&sandbox, expr.as_bytes(), &[], VARS)
            .unwrap_or_else(|e| panic!("{expr}: {e:?}"));
        let theirs = shell(expr, VARS).unwrap();
        assert_eq!(String::from_utf8(ours).unwrap(), theirs, "{expr}");
        // GNU envsubst has no defaults: it copies the expansion (or a part of it).
        if expr.starts_with("${UNSET") {
            let gnu = gnu_envsubst(expr.as_bytes(), None, VARS);
            assert!(
                String::from_utf8_lossy(&gnu).starts_with("${UNSET"),
                "{expr}"
            );
        }
    }
    for (expr, message) in [
        (
            "${UNSET:?set UNSET to the database host}",
            "UNSET: set UNSET to the database host",
        ),
        ("${EMPTY:?must not be empty}", "EMPTY: must not be empty"),
        ("${UNSET:?with $A inside}", "UNSET: with aa inside"),
    ] {
        let (code, stderr) = initbox_envsubst(&sandbox, format!("a\n{expr}").as_bytes(), &[], VARS)
            .map(|_| ())
            .unwrap_err();
        assert_eq!(code, 78, "{expr}: {stderr}");
        assert!(
            stderr.contains(&format!(":2: {message}")),
            "{expr}: {stderr}"
        );
        let shell_error = shell(expr, VARS).unwrap_err();
        assert!(shell_error.contains(message), "{expr}: {shell_error}");
    }
    let (code, stderr) = initbox_envsubst(&sandbox, b"${UNSET:?}", &[], VARS)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code, 78);
    assert!(
        stderr.contains(":1: `UNSET` is not set or empty"),
        "{stderr}"
    );
    let (code, stderr) = initbox_envsubst(&sandbox, b"ok\n${UNSET:-never closed\n", &[], VARS)
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code, 78);
    assert!(stderr.contains(":2: a `${VAR:-…}`"), "{stderr}");
}

#[test]
fn flags_of_the_other_syntax_are_refused_with_exit_2() {
    let sandbox = Sandbox::new();
    let src = sandbox.write("app.conf.tmpl", "$A\n");
    let src = path_str(&src);
    let out = sandbox.path("app.conf");
    let out = path_str(&out);
    sandbox.expect_each(
        2,
        &[
            (
                vec!["template", "--syntax", "envsubst", src, out, "--set", "a=1"],
                "envsubst templates see the environment only",
            ),
            (
                vec![
                    "template", "--syntax", "envsubst", src, out, "--data", "d=x.json",
                ],
                "envsubst templates see the environment only",
            ),
            (
                vec![
                    "template",
                    "--syntax",
                    "envsubst",
                    src,
                    out,
                    "--templates",
                    "/t",
                ],
                "envsubst has no include",
            ),
            (
                vec!["template", src, out, "--allow", "A"],
                "--allow chooses the variables of --syntax envsubst",
            ),
            (
                vec![
                    "template", "--syntax", "envsubst", src, out, "--allow", "1A",
                ],
                "'1A' is not a variable name",
            ),
            (
                vec![
                    "template", "--syntax", "envsubst", src, out, "--allow", "$1 x",
                ],
                "names no variable",
            ),
            (
                vec!["template", "--syntax", "m4", src, out],
                "invalid value 'm4' for '--syntax <SYNTAX>'",
            ),
        ],
    );
    assert!(!Path::new(out).exists());
}

#[test]
fn a_pipeline_step_renders_envsubst_with_the_pipeline_env() {
    let sandbox = Sandbox::new();
    let src = sandbox.write(
        "app.conf",
        "greeting=${GREETING}\nuser=${APP_USER:-nobody}\n$KEEP\n",
    );
    let dest = sandbox.path("out/app.conf");
    let pipeline = sandbox.write(
        "p.yaml",
        &format!(
            "env:\n  GREETING: hello\nsteps:\n  - name: render\n    template: {{src: {}, dest: {}, syntax: envsubst, allow: [GREETING, '$APP_USER']}}\n",
            src.display(),
            dest.display()
        ),
    );
    sandbox
        .initbox()
        .args(["run", "-f", path_str(&pipeline)])
        .run()
        .assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&dest).unwrap(),
        "greeting=hello\nuser=nobody\n$KEEP\n"
    );
}

fn mtime(path: &Path) -> std::time::SystemTime {
    std::fs::metadata(path).unwrap().modified().unwrap()
}

#[test]
fn a_directory_renders_with_names_kept_unchanged_files_untouched_and_check() {
    use std::os::unix::fs::PermissionsExt;
    let sandbox = Sandbox::new();
    let src = sandbox.path("tmpl");
    std::fs::create_dir_all(src.join("conf.d")).unwrap();
    std::fs::write(src.join("app.conf"), "host=$A\n").unwrap();
    // No partials in envsubst: a `_` name and a `.j2` name are files like the others.
    std::fs::write(src.join("_extra.conf.j2"), "b=${B}\n").unwrap();
    std::fs::write(src.join("conf.d/db.conf"), "db=${A:-x}\n").unwrap();
    // Not UTF-8: copied as it is, its `$A` left alone (a keystore, say).
    std::fs::write(src.join("keystore.bin"), b"\xff\xfe$A\x00").unwrap();
    let dest = sandbox.path("out");
    let run = |extra: &[&str]| {
        sandbox
            .initbox()
            .args(["template", "--syntax", "envsubst"])
            .arg(&src)
            .arg(&dest)
            .args(extra)
            .env("A", "aa")
            .env("B", "bb")
            .run()
    };
    run(&["--mode", "0640"]).assert_code(0);
    assert_eq!(
        tree(&dest),
        [
            "_extra.conf.j2",
            "app.conf",
            "conf.d/",
            "conf.d/db.conf",
            "keystore.bin"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("app.conf")).unwrap(),
        "host=aa\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("_extra.conf.j2")).unwrap(),
        "b=bb\n"
    );
    assert_eq!(
        std::fs::read_to_string(dest.join("conf.d/db.conf")).unwrap(),
        "db=aa\n"
    );
    assert_eq!(
        std::fs::read(dest.join("keystore.bin")).unwrap(),
        b"\xff\xfe$A\x00"
    );
    let mode = std::fs::metadata(dest.join("app.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o640);

    // A re-run writes nothing: the mtime of an unchanged file stays.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
    let file = dest.join("app.conf");
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(old)
        .unwrap();
    run(&["--mode", "0640"]).assert_code(0);
    assert_eq!(mtime(&file), old);
    run(&["--check"]).assert_code(0);

    // A changed variable: --check says which file would change, and writes nothing.
    std::fs::write(src.join("app.conf"), "host=$B\n").unwrap();
    run(&["--check"])
        .assert_code(1)
        .assert_stderr_contains(&format!("would change {}", file.display()));
    assert_eq!(mtime(&file), old);
    run(&[]).assert_code(0);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "host=bb\n");
}

#[test]
fn stdin_to_stdout_renders_like_envsubst() {
    let sandbox = Sandbox::new();
    let cmd = sandbox
        .initbox()
        .args(["template", "--syntax", "envsubst", "-", "-"])
        .env("A", "aa");
    let (code, stdout, stderr) = crate::template::run_with_stdin(cmd, "x=$A ${A}\n");
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout, b"x=aa aa\n");
}

/// examples/kubernetes/render-envsubst.yaml, run as kubelet would: the ConfigMap's file in
/// a volume, the init container's args and env; the output compared with GNU envsubst's on
/// the same SHELL-FORMAT (the template sets every variable it names but one, which has a
/// default only initbox reads).
#[test]
fn the_kubernetes_envsubst_example_renders() {
    use serde_json::Value;
    let manifest =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes/render-envsubst.yaml");
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    let find = |kind: &str| documents.iter().find(|d| d["kind"] == kind).unwrap();
    let sandbox = Sandbox::new();
    let templates = sandbox.path("templates");
    std::fs::create_dir_all(&templates).unwrap();
    let template = find("ConfigMap")["data"]["nginx.conf"].as_str().unwrap();
    std::fs::write(templates.join("nginx.conf"), template).unwrap();
    let out = sandbox.path("work/nginx");
    let init = &find("Pod")["spec"]["initContainers"][0];
    let args: Vec<String> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|arg| {
            let arg = arg.as_str().unwrap();
            match arg {
                "/templates" => path_str(&templates).to_owned(),
                "/work/nginx" => path_str(&out).to_owned(),
                _ => arg.to_owned(),
            }
        })
        .collect();
    let env: Vec<(String, String)> = init["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let value = e["value"].as_str().unwrap().to_owned();
            (e["name"].as_str().unwrap().to_owned(), value)
        })
        .collect();
    let mut cmd = sandbox.initbox().args(&args);
    for (key, value) in &env {
        cmd = cmd.env(key, value);
    }
    cmd.command.env_remove("LISTEN_PORT");
    cmd.run().assert_code(0);
    let ours = std::fs::read_to_string(out.join("nginx.conf")).unwrap();
    assert!(
        ours.contains("server orders.default.svc.cluster.local:8080;"),
        "{ours}"
    );
    assert!(ours.contains("listen 8080;"), "{ours}");
    assert!(ours.contains("proxy_set_header Host $host;"), "{ours}");
    // GNU envsubst with LISTEN_PORT set renders the rest identically.
    let vars: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain([("LISTEN_PORT", "8080")])
        .collect();
    let gnu_input = template.replace("${LISTEN_PORT:-8080}", "$LISTEN_PORT");
    let gnu = gnu_envsubst(
        gnu_input.as_bytes(),
        Some("$BACKEND_HOST $BACKEND_PORT $LISTEN_PORT"),
        &vars,
    );
    assert_eq!(ours, String::from_utf8(gnu).unwrap());
}
