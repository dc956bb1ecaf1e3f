//! replace: the same bytes GNU sed gives for the chart idioms it replaces, nothing written
//! when any edit of any file does not match, mode and owner kept, no rewrite of a file left
//! as it was, a planted link refused, and the replacement (often a secret) in no output.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::Command;

use crate::support::{Sandbox, need_root, path_str};

/// A default config as images ship it, with the placeholders charts fill in.
const CONFIG: &str = "\
# app.conf
host = __DB_HOST__
port = 5432
url = postgres://__DB_HOST__:5432/app
log_level=info
  log_level = debug
java_opts = -Xmx512m
";

fn inode(path: &Path) -> (u64, i64, i64) {
    let meta = fs::metadata(path).unwrap();
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

/// The file after GNU `sed -i EXPRESSION...` on a copy of `content`.
fn sed(sandbox: &Sandbox, name: &str, content: &str, expressions: &[&str]) -> String {
    let copy = sandbox.write(name, content);
    let mut sed = Command::new("sed");
    sed.arg("-i");
    for expression in expressions {
        sed.args(["-e", expression]);
    }
    let status = sed.arg(&copy).status().expect("GNU sed");
    assert!(status.success());
    fs::read_to_string(copy).unwrap()
}

#[test]
fn replace_gives_the_bytes_gnu_sed_gives_for_the_chart_idioms() {
    let sandbox = Sandbox::new();
    let conf = sandbox.write("app.conf", CONFIG);
    sandbox
        .initbox()
        .arg("replace")
        .arg(&conf)
        .args(["--literal", "__DB_HOST__", "db.prod.svc"])
        .args(["--regex", r"^(\s*)log_level\s*=.*$", "${1}log_level = warn"])
        .args(["--literal", "-Xmx512m", "-Xmx2g"])
        .run()
        .assert_code(0)
        .assert_stderr_contains("replace ")
        .assert_stderr_contains(": 5 replacements");
    let expected = sed(
        &sandbox,
        "by-sed.conf",
        CONFIG,
        &[
            "s/__DB_HOST__/db.prod.svc/g",
            r"s/^\([[:space:]]*\)log_level[[:space:]]*=.*$/\1log_level = warn/",
            "s/-Xmx512m/-Xmx2g/g",
        ],
    );
    assert_eq!(fs::read_to_string(&conf).unwrap(), expected);
}

#[test]
fn edits_apply_in_the_order_given_each_to_the_result_of_the_one_before() {
    let sandbox = Sandbox::new();
    let conf = sandbox.write("a.conf", "x\n");
    sandbox
        .initbox()
        .arg("replace")
        .arg(&conf)
        .args(["--literal", "x", "y"])
        .args(["--regex", "y", "z"])
        .args(["--literal", "z", "done"])
        .run()
        .assert_code(0);
    assert_eq!(fs::read_to_string(&conf).unwrap(), "done\n");
}

#[test]
fn an_edit_that_matches_nothing_changes_no_file_at_all_and_is_exit_1() {
    let sandbox = Sandbox::new();
    let first = sandbox.write("first.conf", CONFIG);
    let second = sandbox.write("second.conf", "host = localhost\n");
    let before = (inode(&first), inode(&second));
    sandbox
        .initbox()
        .args(["replace", path_str(&first), path_str(&second)])
        .args(["--literal", "__DB_HOST__", "db"])
        .run()
        .assert_code(1)
        .assert_stderr_contains(&format!(
            "{}: --literal \"__DB_HOST__\" matched 0 times, expected at least 1; no file was changed",
            second.display()
        ))
        .assert_stderr_contains("--expect-count 0+");
    assert_eq!((inode(&first), inode(&second)), before);
    assert_eq!(fs::read_to_string(&first).unwrap(), CONFIG);

    // --expect-count: exactly N, or at least N; 0+ is sed's "whatever matches".
    sandbox
        .initbox()
        .args(["replace", path_str(&first), "--expect-count", "3"])
        .args(["--literal", "__DB_HOST__", "db"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("matched 2 times, expected exactly 3");
    sandbox
        .initbox()
        .args(["replace", path_str(&first), path_str(&second)])
        .args(["--expect-count", "0+", "--literal", "__DB_HOST__", "db"])
        .run()
        .assert_code(0)
        .assert_stderr_contains(&format!("replace {}: unchanged", second.display()));
    assert_eq!(
        inode(&second),
        before.1,
        "a file left as it was is not rewritten"
    );
    assert!(fs::read_to_string(&first).unwrap().contains("host = db\n"));
}

#[test]
fn an_edit_that_puts_back_what_it_found_does_not_rewrite_the_file() {
    let sandbox = Sandbox::new();
    let conf = sandbox.write("a.conf", "port = 5432\n");
    let before = inode(&conf);
    sandbox
        .initbox()
        .args([
            "replace",
            path_str(&conf),
            "--regex",
            r"port = \d+",
            "port = 5432",
        ])
        .run()
        .assert_code(0)
        .assert_stderr_contains("unchanged");
    assert_eq!(inode(&conf), before);
}

#[test]
fn the_edited_file_keeps_its_mode_and_owner() {
    if !need_root() {
        return;
    }
    let sandbox = Sandbox::new();
    let conf = sandbox.write("a.conf", CONFIG);
    std::os::unix::fs::chown(&conf, Some(1001), Some(1002)).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o2640)).unwrap();
    sandbox
        .initbox()
        .args(["replace", path_str(&conf), "--literal", "__DB_HOST__", "db"])
        .run()
        .assert_code(0);
    let meta = fs::metadata(&conf).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1001, 1002, 0o2640)
    );
    // Nothing is left beside it (the sandbox's own hosts file aside).
    assert!(
        !crate::support::entries(&sandbox.path(""))
            .iter()
            .any(|name| name.contains(".initbox-")),
        "a temp file was left"
    );
}

#[test]
fn a_link_planted_where_the_file_should_be_is_refused_and_its_target_untouched() {
    let sandbox = Sandbox::new();
    fs::create_dir(sandbox.path("outside")).unwrap();
    let outside = sandbox.write("outside/secret", "password = __DB_HOST__\n");
    fs::create_dir(sandbox.path("vol")).unwrap();
    let planted = sandbox.path("vol/app.conf");
    symlink(&outside, &planted).unwrap();
    sandbox
        .initbox()
        .args([
            "replace",
            path_str(&planted),
            "--literal",
            "__DB_HOST__",
            "x",
        ])
        .run()
        .assert_code(1)
        .assert_stderr_contains("it is a symbolic link; replace edits regular files only");
    assert_eq!(
        fs::read_to_string(&outside).unwrap(),
        "password = __DB_HOST__\n"
    );
    assert!(
        fs::symlink_metadata(&planted)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

#[test]
fn the_replacement_text_is_in_no_output_even_when_the_edit_fails() {
    let sandbox = Sandbox::new();
    let conf = sandbox.write("a.conf", "password = __PASSWORD__\n");
    for (args, code) in [
        (vec!["--literal", "__PASSWORD__", "s3cret-value"], 0),
        (
            vec![
                "--literal",
                "__NOT_THERE__",
                "s3cret-value",
                "--regex",
                "(",
                "s3cret-value",
            ],
            2,
        ),
        (vec!["--literal", "__NOT_THERE__", "s3cret-value"], 1),
    ] {
        let output = sandbox
            .initbox()
            .args(["-v", "replace", path_str(&conf)])
            .args(&args)
            .run();
        output.assert_code(code);
        assert!(
            !output.stderr.contains("s3cret") && !output.stdout.contains("s3cret"),
            "{}",
            output.stderr
        );
    }
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        "password = s3cret-value\n"
    );
}

#[test]
fn regex_edits_need_text_and_literal_edits_take_any_bytes() {
    let sandbox = Sandbox::new();
    let blob = sandbox.path("blob.bin");
    fs::write(&blob, b"\xff\xfeKEY=__V__\x00").unwrap();
    sandbox
        .initbox()
        .args(["replace", path_str(&blob), "--regex", "__V__", "x"])
        .run()
        .assert_code(1)
        .assert_stderr_contains("is not UTF-8 text (--literal edits any bytes)");
    sandbox
        .initbox()
        .args(["replace", path_str(&blob), "--literal", "__V__", "on"])
        .run()
        .assert_code(0);
    assert_eq!(fs::read(&blob).unwrap(), b"\xff\xfeKEY=on\x00");
}

#[test]
fn replace_runs_as_a_pipeline_step_with_a_map_of_edits() {
    let sandbox = Sandbox::new();
    let conf = sandbox.write("app.conf", CONFIG);
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &format!(
            "steps:\n  - name: configure\n    replace:\n      files: [{}]\n      literal:\n        __DB_HOST__: $(DB_HOST)\n        -Xmx512m: -Xmx1g\n      regex:\n        - ['^log_level=.*$', 'log_level=error']\n",
            conf.display()
        ),
    );
    sandbox
        .initbox()
        .env("DB_HOST", "db.example")
        .args(["run", "-f", path_str(&pipeline)])
        .run()
        .assert_code(0);
    let edited = fs::read_to_string(&conf).unwrap();
    assert!(edited.contains("host = db.example\n"), "{edited}");
    assert!(edited.contains("java_opts = -Xmx1g\n"), "{edited}");
    assert!(edited.contains("\nlog_level=error\n"), "{edited}");
    assert!(edited.contains("  log_level = debug\n"), "{edited}");

    // A value that is neither a map nor pairs is a configuration error naming the key.
    let bad = sandbox.write(
        "bad.yaml",
        "steps:\n  - name: s\n    replace: {files: [/a], literal: [x]}\n",
    );
    sandbox
        .initbox()
        .args(["run", "--check", "-f", path_str(&bad)])
        .run()
        .assert_code(78)
        .assert_stderr_contains(
            "replace.literal: expected a map {OLD: NEW}, a pair [OLD, NEW] or a list of pairs",
        );
}

#[test]
fn a_variable_in_a_replacement_is_expanded_by_initbox_so_no_secret_is_on_the_command_line() {
    let sandbox = Sandbox::new();
    let conf = sandbox.write("a.conf", "password = __PASSWORD__\nhome = __HOME__\n");
    sandbox
        .initbox()
        .env("DB_PASSWORD", "from-the-secret")
        .args(["replace", path_str(&conf)])
        .args(["--literal", "__PASSWORD__", "$(DB_PASSWORD)"])
        .args(["--literal", "__HOME__", "$$(HOME)"])
        .run()
        .assert_code(0);
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        "password = from-the-secret\nhome = $(HOME)\n"
    );
    // --raw: as given; an undefined variable is a configuration error naming the flag.
    let conf = sandbox.write("b.conf", "x = __X__\n");
    sandbox
        .initbox()
        .args([
            "replace",
            path_str(&conf),
            "--raw",
            "--literal",
            "__X__",
            "$(NOT_SET)",
        ])
        .run()
        .assert_code(0);
    assert_eq!(fs::read_to_string(&conf).unwrap(), "x = $(NOT_SET)\n");
    sandbox
        .initbox()
        .args([
            "replace",
            path_str(&conf),
            "--literal",
            "$(NOT_SET)",
            "$(ALSO_NOT_SET)",
        ])
        .run()
        .assert_code(78)
        .assert_stderr_contains("--literal: ")
        .assert_stderr_contains("ALSO_NOT_SET");
}

#[test]
fn the_config_from_default_example_edits_as_gnu_sed_does_and_stops_when_a_setting_is_gone() {
    let sandbox = Sandbox::new();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/pipelines/config-from-default.yaml");
    let default = "host = __DB_HOST__\nmax_connections = 100\n# log_destination = stderr\n";
    let defaults = sandbox.path("defaults");
    let config = sandbox.path("config");
    fs::create_dir_all(&defaults).unwrap();
    fs::create_dir_all(&config).unwrap();
    fs::write(defaults.join("server.conf"), default).unwrap();
    // No restarts: the failing run below is to end with its exit code.
    let pipeline = sandbox.write(
        "pipeline.yaml",
        &("restartPolicy: Never\n".to_owned() + &fs::read_to_string(example).unwrap())
            .replace("/defaults/", &format!("{}/", defaults.display()))
            .replace("/config/", &format!("{}/", config.display())),
    );
    let run = || {
        sandbox
            .initbox()
            .env("DB_HOST", "db.example")
            .args(["run", "-f", path_str(&pipeline)])
            .run()
    };
    run().assert_code(0);
    let theirs = sed(
        &sandbox,
        "sed.conf",
        default,
        &[
            "s/__DB_HOST__/db.example/",
            "s/^max_connections *=.*/max_connections = 200/",
            "s/^# *\\(log_destination\\)/\\1/",
        ],
    );
    assert_eq!(
        fs::read_to_string(config.join("server.conf")).unwrap(),
        theirs
    );

    // A new image's default without the setting: sed would edit nothing and exit 0.
    fs::write(defaults.join("server.conf"), "host = __DB_HOST__\n").unwrap();
    run()
        .assert_code(1)
        .assert_stderr_contains("max_connections");
    assert_eq!(
        fs::read_to_string(config.join("server.conf")).unwrap(),
        "host = __DB_HOST__\n",
        "copied, and left unedited: no edit is half applied"
    );
}
