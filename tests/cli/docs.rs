//! `initbox completions SHELL` and `initbox man`: generated from the clap definition, so
//! they name every command.

use crate::support::{COMMANDS, Sandbox};

#[test]
fn completion_scripts_name_every_command_and_bash_accepts_its_own() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let output = sandbox.initbox().args(["completions", shell]).run();
        output.assert_code(0);
        for command in COMMANDS.iter() {
            assert!(output.stdout.contains(command), "{shell} lacks {command}");
        }
        assert!(output.stdout.contains("attempt-timeout"), "{shell}");
    }
    let script = sandbox.write(
        "initbox.bash",
        &sandbox.initbox().args(["completions", "bash"]).run().stdout,
    );
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(syntax.success(), "bash -n rejects the completion script");
    sandbox
        .initbox()
        .args(["completions", "tcsh"])
        .run()
        .assert_code(2);
}

#[test]
fn man_pages_for_initbox_and_each_command() {
    let sandbox = Sandbox::new();
    let main = sandbox.initbox().arg("man").run();
    main.assert_code(0);
    assert!(
        main.stdout.contains(".TH initbox 1"),
        "{}",
        &main.stdout[..200]
    );
    for command in COMMANDS.iter() {
        // roff escapes the hyphens of the names it refers to.
        let reference = format!("initbox\\-{}(1)", command.replace('-', "\\-"));
        assert!(
            main.stdout.contains(&reference),
            "the main page lacks {reference}"
        );
        let page = sandbox.initbox().args(["man", command]).run();
        page.assert_code(0);
        assert!(
            page.stdout.contains(&format!(".TH initbox-{command} 1")),
            "{command}: {}",
            &page.stdout[..page.stdout.len().min(300)]
        );
    }
    let clone = sandbox.initbox().args(["man", "git-clone"]).run().stdout;
    assert!(clone.contains("password\\-file"), "{clone}");
    sandbox
        .initbox()
        .args(["man", "nope"])
        .run()
        .assert_code(2)
        .assert_stderr_contains("no command 'nope'");
}

#[test]
fn documentation_commands_are_not_pipeline_steps() {
    let sandbox = Sandbox::new();
    let pipeline = sandbox.write("pipeline.yaml", "steps:\n  - name: docs\n    man: {}\n");
    sandbox
        .check_pipeline(&pipeline)
        .assert_code(78)
        .assert_stderr_contains("unknown task or key 'man'");
}

/// The `--long` flags and `INITBOX_*` variables a page names, roff escapes removed.
fn flags_and_variables(
    text: &str,
) -> (
    std::collections::BTreeSet<String>,
    std::collections::BTreeSet<String>,
) {
    let text = text
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fR", "")
        .replace("\\fI", "");
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .collect();
    let flags = words
        .iter()
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| w.to_string())
        .collect();
    let variables = words
        .iter()
        .filter(|w| w.starts_with("INITBOX_"))
        .map(|w| w.to_string())
        .collect();
    (flags, variables)
}

#[test]
fn every_man_page_names_the_flags_and_variables_of_its_help() {
    let sandbox = Sandbox::new();
    for command in COMMANDS.iter() {
        let help = sandbox.initbox().args([command, "--help"]).run();
        help.assert_code(0);
        let page = sandbox.initbox().args(["man", command]).run();
        page.assert_code(0);
        let (help_flags, help_vars) = flags_and_variables(&help.stdout);
        let (page_flags, page_vars) = flags_and_variables(&page.stdout);
        for global in ["--log-format", "--quiet", "--verbose"] {
            assert!(
                help_flags.contains(global),
                "{command} --help lacks {global}"
            );
        }
        assert_eq!(
            help_flags, page_flags,
            "{command}: --help and the man page disagree"
        );
        assert_eq!(
            help_vars, page_vars,
            "{command}: --help and the man page disagree"
        );
        assert!(
            page.stdout
                .contains(&format!("\\fBinitbox {}\\fR", command.replace('-', "\\-"))),
            "{command}: the synopsis must name `initbox {command}`"
        );
        assert!(
            !page.stdout.contains(&format!(
                "\\fBinitbox\\-{}\\fR",
                command.replace('-', "\\-")
            )),
            "{command}: the synopsis names a command that does not exist"
        );
    }
}
