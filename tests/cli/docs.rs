//! `initbox completions SHELL` and `initbox man`: generated from the clap definition, so
//! they name every command.

use crate::support::{COMMANDS, Sandbox};

#[test]
fn completion_scripts_name_every_command_and_bash_accepts_its_own() {
    let sandbox = Sandbox::new();
    for shell in ["bash", "zsh", "fish"] {
        let output = sandbox.initbox().args(["completions", shell]).run();
        output.assert_code(0);
        for command in COMMANDS {
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
    for command in COMMANDS {
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
        .initbox()
        .args(["run", "--check", "-f"])
        .arg(&pipeline)
        .run()
        .assert_code(78)
        .assert_stderr_contains("unknown task or key 'man'");
}
