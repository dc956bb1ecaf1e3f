//! The conventions of command-line tools, for every command: how usage errors read, how
//! switches and choices are written on the command line and in `INITBOX_*` variables.

use crate::support::{COMMANDS, Sandbox};

#[test]
fn a_usage_error_is_one_prefixed_line_without_clap_tips() {
    let sandbox = Sandbox::new();
    let cases: &[&[&str]] = &[
        &["wait-for-tcp"],
        &["wait-for-tcp", "--timeout", "-1", "db:5432"],
        &["wait-for-tcp", "--timout", "1s", "db:5432"],
        &["sleep", "-1"],
        &["nope"],
    ];
    for args in cases {
        let output = sandbox.initbox().args(*args).run();
        output.assert_code(2);
        let lines: Vec<&str> = output.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {}", output.stderr);
        assert!(
            lines[0].starts_with("initbox: error: "),
            "{args:?}: {}",
            output.stderr
        );
        assert!(
            !output.stderr.contains("'-- "),
            "{args:?}: {}",
            output.stderr
        );
        assert!(
            !output.stderr.contains("Usage:"),
            "{args:?}: {}",
            output.stderr
        );
    }
    sandbox
        .initbox()
        .args(["wait-for-tcp", "--timeout", "-1", "db:5432"])
        .run()
        .assert_stderr_contains("negative duration")
        .assert_stderr_contains("see 'initbox wait-for-tcp --help'");
    sandbox
        .initbox()
        .args(["wait-for-tcp", "--timout", "1s", "db:5432"])
        .run()
        .assert_stderr_contains("a similar argument exists: '--timeout'");
}

#[test]
fn a_usage_error_is_json_when_json_logs_are_asked_for() {
    let sandbox = Sandbox::new();
    let by_flag = sandbox
        .initbox()
        .args([
            "--log-format",
            "json",
            "wait-for-tcp",
            "--timeout",
            "soon",
            "db:1",
        ])
        .run();
    let by_variable = sandbox
        .initbox()
        .env("INITBOX_LOG_FORMAT", "json")
        .args(["wait-for-tcp", "--timeout", "soon", "db:1"])
        .run();
    for output in [by_flag, by_variable] {
        output.assert_code(2);
        let line: serde_json::Value = serde_json::from_str(output.stderr.trim())
            .unwrap_or_else(|e| panic!("not one JSON line ({e}): {}", output.stderr));
        assert_eq!(line["level"], "error");
        assert_eq!(line["event"], "usage");
        assert!(
            line["message"].as_str().unwrap().contains("--timeout"),
            "{line}"
        );
    }
}

#[test]
fn switches_from_the_environment_take_the_usual_spellings_and_empty_is_unset() {
    let sandbox = Sandbox::new();
    for on in ["1", "true", "TRUE", "yes", "Yes", "on"] {
        let output = sandbox
            .initbox()
            .env("INITBOX_QUIET", on)
            .args(["sleep", "0"])
            .run();
        output.assert_code(0);
        assert_eq!(output.stderr, "", "INITBOX_QUIET={on} must silence the log");
    }
    for off in ["0", "false", "no", "OFF", ""] {
        let output = sandbox
            .initbox()
            .env("INITBOX_QUIET", off)
            .args(["sleep", "0"])
            .run();
        output.assert_code(0);
        assert!(
            output.stderr.contains("sleeping"),
            "INITBOX_QUIET={off:?} must not silence the log: {}",
            output.stderr
        );
    }
    // An empty variable is unset for every kind of flag, not only switches.
    sandbox
        .initbox()
        .env("INITBOX_TIMEOUT", "")
        .env("INITBOX_LOG_FORMAT", "")
        .args(["sleep", "0"])
        .run()
        .assert_code(0);
}

#[test]
fn a_bad_value_from_the_environment_names_the_variable() {
    let sandbox = Sandbox::new();
    sandbox
        .initbox()
        .env("INITBOX_QUIET", "maybe")
        .args(["sleep", "0"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("INITBOX_QUIET=maybe");
    sandbox
        .initbox()
        .env("INITBOX_TIMEOUT", "soon")
        .args(["wait-for-tcp", "db:1"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("INITBOX_TIMEOUT=soon");
    // Typed on the command line, the flag is named, not the variable.
    let output = sandbox
        .initbox()
        .env("INITBOX_TIMEOUT", "soon")
        .args(["wait-for-tcp", "--timeout", "later", "db:1"])
        .run();
    output.assert_code(2).assert_stderr_contains("'later'");
    assert!(
        !output.stderr.contains("INITBOX_TIMEOUT"),
        "{}",
        output.stderr
    );
}

#[test]
fn choices_ignore_case_on_the_command_line_and_in_the_environment() {
    let sandbox = Sandbox::new();
    let output = sandbox
        .initbox()
        .args(["--log-format", "JSON", "sleep", "0"])
        .run();
    output.assert_code(0);
    assert!(output.stderr.starts_with('{'), "{}", output.stderr);
    let output = sandbox
        .initbox()
        .env("INITBOX_LOG_FORMAT", "Json")
        .args(["sleep", "0"])
        .run();
    output.assert_code(0);
    assert!(output.stderr.starts_with('{'), "{}", output.stderr);
}

#[test]
fn every_command_reports_usage_errors_the_same_way() {
    let sandbox = Sandbox::new();
    for command in COMMANDS.iter() {
        let output = sandbox.initbox().args([command, "--no-such-flag"]).run();
        output.assert_code(2);
        assert_eq!(
            output.stderr.lines().count(),
            1,
            "{command}: {}",
            output.stderr
        );
        // `sleep -5s` reads its argument as a duration, so there the flag is a bad duration.
        output
            .assert_stderr_contains("initbox: error: ")
            .assert_stderr_contains("'--no-such-flag'")
            .assert_stderr_contains(&format!("see 'initbox {command} --help'"));
    }
}

/// The flags whose choices a parser of their own reads (no clap possible values to list):
/// each must ignore case like the others. A new one belongs here.
const CHOICES_OF_THEIR_OWN: &[(&str, &str, &str)] = &[
    ("wait-for-postgres", "--tls", "verify-full"),
    ("wait-for-zookeeper", "--mode", "leader"),
    ("wait-for-kafka", "--sasl-mechanism", "SCRAM-SHA-256"),
];

/// Every choice of every command ignores case (`--tls REQUIRE`, `--type srv`): each value
/// is given with its case swapped, before `--help`, which clap reaches only when the value
/// was accepted.
#[test]
fn every_choice_of_every_command_ignores_case() {
    let sandbox = Sandbox::new();
    let swapped = |value: &str| -> String {
        value
            .chars()
            .map(|c| {
                if c.is_ascii_uppercase() {
                    c.to_ascii_lowercase()
                } else {
                    c.to_ascii_uppercase()
                }
            })
            .collect()
    };
    let root = initbox::cli::command();
    let mut cases: Vec<(String, String, String)> = Vec::new();
    for command in COMMANDS.iter() {
        let sub = root.find_subcommand(command).unwrap();
        for arg in sub.get_arguments() {
            // A switch lists the spellings of true and false; those have their own test.
            if !matches!(
                arg.get_action(),
                clap::ArgAction::Set | clap::ArgAction::Append
            ) {
                continue;
            }
            let choices = arg.get_possible_values();
            let (Some(long), Some(choice)) = (arg.get_long(), choices.first()) else {
                continue;
            };
            cases.push((
                command.to_string(),
                format!("--{long}"),
                choice.get_name().to_owned(),
            ));
        }
    }
    assert!(
        cases
            .iter()
            .any(|(c, f, _)| c == "wait-for-dns" && f == "--type"),
        "{cases:?}"
    );
    for (command, flag, value) in CHOICES_OF_THEIR_OWN {
        cases.push((command.to_string(), flag.to_string(), value.to_string()));
    }
    for (command, flag, value) in &cases {
        for given in [value.clone(), swapped(value)] {
            let output = sandbox
                .initbox()
                .args([command.as_str(), flag.as_str(), &given, "--help"])
                .run();
            assert_eq!(
                output.code, 0,
                "{command} {flag} {given}: {}",
                output.stderr
            );
        }
    }
}
