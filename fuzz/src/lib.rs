//! What the fuzz targets share: the fixed environment `$(VAR)` sees, and the checks a
//! loaded (or rejected) pipeline must pass.

use std::sync::OnceLock;

use initbox::cli::Command;
use initbox::exit::ExitCode;
use initbox::pipeline::spec::{self, Pipeline};

/// The name the pipeline is loaded under; every error message must contain it.
pub const FILE: &str = "fuzz.yaml";

/// The process environment the fuzzed pipelines see: a few Downward-API-like variables.
pub fn lookup(name: &str) -> Option<String> {
    let value = match name {
        "POD_NAME" => "web-7d9f",
        "POD_IP" => "10.1.2.3",
        "HOST" => "mydb",
        "PORT" => "5432",
        "URL" => "http://api.example/healthz",
        "EMPTY" => "",
        "DOLLAR" => "$(POD_NAME)",
        _ => return None,
    };
    Some(value.to_owned())
}

/// Environment variables clap would read as flag values (`INITBOX_TIMEOUT`, …): removed,
/// so that a run does not depend on the shell it was started from.
pub fn clear_initbox_env() {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("INITBOX_") {
            // SAFETY: called from the fuzz target's `init`, before anything else runs and
            // while the process has one thread.
            unsafe { std::env::remove_var(name) };
        }
    }
}

/// `spec::task_names()`, built once (it walks the whole clap tree).
pub fn task_names() -> &'static [String] {
    static NAMES: OnceLock<Vec<String>> = OnceLock::new();
    NAMES.get_or_init(spec::task_names)
}

/// Loads `text` as a pipeline and checks the contract: a valid file gives a sound pipeline,
/// an invalid one a configuration error (exit 78) whose message names the file.
pub fn check_pipeline(text: &str) {
    match spec::load(FILE, text, lookup) {
        Ok(pipeline) => check_sound(&pipeline),
        Err(error) => {
            assert_eq!(
                error.exit_code(),
                ExitCode::Config,
                "a bad pipeline must be a configuration error (78): {error:?}"
            );
            let message = error.to_string();
            assert!(
                message.contains(FILE),
                "the message does not name the file: {message:?}"
            );
        }
    }
}

/// What `spec::load` promises about a pipeline it accepted.
fn check_sound(pipeline: &Pipeline) {
    let steps = &pipeline.steps;
    assert!(!steps.is_empty(), "a valid pipeline has steps");
    assert!(
        pipeline.backoff.initial <= pipeline.backoff.max,
        "{:?}",
        pipeline.backoff
    );
    assert!(pipeline.active_deadline.is_none_or(|d| !d.is_zero()));
    for (index, step) in steps.iter().enumerate() {
        assert!(!step.name.is_empty(), "step {index} has an empty name");
        assert!(
            steps[..index].iter().all(|other| other.name != step.name),
            "two steps are named {:?}",
            step.name
        );
        assert!(
            task_names().contains(&step.task),
            "step {:?} runs {:?}, which is not a task",
            step.name,
            step.task
        );
        assert!(
            !matches!(
                step.command,
                Command::Run(_) | Command::Completions(_) | Command::Man(_)
            ),
            "step {:?} runs {:?}",
            step.name,
            step.command
        );
        assert!(
            step.command.then().is_empty(),
            "step {:?} has a hand-off",
            step.name
        );
        for &needed in &step.needs {
            assert!(needed < steps.len(), "step {:?} needs #{needed}", step.name);
            assert_ne!(needed, index, "step {:?} needs itself", step.name);
        }
        assert!(step.timeout.is_none_or(|d| !d.is_zero()));
    }
    // No cycle: Kahn's algorithm must be able to order every step.
    let mut waiting: Vec<usize> = steps.iter().map(|s| s.needs.len()).collect();
    let mut ready: Vec<usize> = (0..steps.len()).filter(|&i| waiting[i] == 0).collect();
    let mut ordered = 0;
    while let Some(done) = ready.pop() {
        ordered += 1;
        for (index, step) in steps.iter().enumerate() {
            for _ in step.needs.iter().filter(|&&n| n == done) {
                waiting[index] -= 1;
                if waiting[index] == 0 {
                    ready.push(index);
                }
            }
        }
    }
    assert_eq!(ordered, steps.len(), "the steps' needs form a cycle");
}
