//! `initbox run -f FILE`: several tasks as one init container, with the semantics of a
//! pod's initContainers (in order, each must succeed, restarts with backoff, `Init:N/M`),
//! and optional `needs` to run independent steps at once.
//!
//! `spec` reads and validates the file (every step becomes the same `Command` the CLI
//! parses), `runner` runs it, `status` reports it as kubectl would.

mod runner;
pub mod spec;
mod status;
pub(crate) mod yaml;

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::exec::Then;
use crate::exit::{Error, Result};
use crate::report;

/// Run a pipeline of these tasks with init-container semantics.
#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    /// The pipeline file ('-' reads stdin).
    #[arg(
        short = 'f',
        long = "file",
        env = "INITBOX_PIPELINE",
        value_name = "FILE"
    )]
    pub file: PathBuf,
    /// Only validate the file: exit 0 when it is valid, 78 listing every problem when not.
    /// A `$(VAR)` not set where the check runs (the pod's `$(POD_IP)`) is a warning.
    #[arg(long, env = "INITBOX_CHECK")]
    pub check: bool,
    /// With --check: a variable that is not set here is an error, as when the pipeline runs.
    #[arg(long, env = "INITBOX_REQUIRE_VARS", requires = "check")]
    pub require_vars: bool,
    /// Rewrite this JSON status file on every transition (instead of the file's statusFile).
    #[arg(long, env = "INITBOX_STATUS_FILE", value_name = "FILE")]
    pub status_file: Option<PathBuf>,
    /// Write the one-line failure summary here (default: /dev/termination-log when it exists).
    #[arg(long, env = "INITBOX_TERMINATION_LOG", value_name = "FILE")]
    pub termination_log: Option<PathBuf>,
    #[command(flatten)]
    pub then: Then,
}

/// Reports a valid pipeline, with what a check away from the pod could not verify.
fn check(name: &str, checked: spec::Checked) -> Result<()> {
    for warning in &checked.warnings {
        report::warn("pipeline.unchecked", warning.clone());
    }
    let steps = checked.pipeline.steps.len();
    let mut message = format!("{name} is valid: {steps} step{}", report::plural(steps));
    if !checked.unset.is_empty() {
        let unset: Vec<String> = checked.unset.iter().map(|v| format!("$({v})")).collect();
        message.push_str(&format!(
            "; not set here, to be set where it runs: {}",
            unset.join(", ")
        ));
    }
    report::Event::new(report::Level::Info, "pipeline.valid", message)
        .field("steps", steps)
        .field("unset", checked.unset.into_iter().collect::<Vec<_>>())
        .emit();
    Ok(())
}

fn read_file(path: &Path) -> Result<(String, String)> {
    if path == Path::new("-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| {
            Error::Config(format!(
                "reading the pipeline from stdin: {}",
                crate::reason::io(&e)
            ))
        })?;
        return Ok(("<stdin>".into(), text));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "reading the pipeline {}: {}",
            path.display(),
            crate::reason::io(&e)
        ))
    })?;
    Ok((path.display().to_string(), text))
}

impl crate::cli::Task for RunArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        // Boxed: a pipeline's steps are commands, so this future contains itself.
        let run: std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>> =
            Box::pin(run(self));
        run
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

pub async fn run(args: RunArgs) -> Result<()> {
    let (name, text) = read_file(&args.file)?;
    let environment = |var: &str| std::env::var(var).ok();
    if args.check && !args.require_vars {
        return check(&name, spec::check(&name, &text, environment)?);
    }
    let pipeline = spec::load(&name, &text, environment)?;
    if args.check {
        return check(
            &name,
            spec::Checked {
                pipeline,
                unset: Default::default(),
                warnings: Vec::new(),
            },
        );
    }
    let outputs = runner::Outputs {
        status_file: args.status_file.clone().or(pipeline.status_file.clone()),
        termination_log: args.termination_log.clone(),
        hand_off: !args.then.command.is_empty(),
    };
    runner::run(pipeline, outputs).await
}
