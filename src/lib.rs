//! initbox: the jobs of busybox init containers, as one static binary.
//!
//! `main` parses the command line and calls [`run`]; this crate does the rest. The map:
//! `cli` (flags) → a task or check (`checks::*`, `tasks::*`) → the one wait engine (`wait`)
//! for anything that waits → an [`exit::Error`] whose exit code is decided in `exit`.

pub mod atomic_file;
pub mod checks;
pub mod cli;
pub mod docs;
pub mod duration;
pub mod exec;
pub mod exit;
pub mod expand;
pub mod http_client;
pub mod k8s;
pub mod pipeline;
pub mod reason;
pub mod redact;
pub mod report;
pub mod resolve;
pub mod signals;
pub mod size;
pub mod step;
pub mod tasks;
pub mod volume;
pub mod wait;

use cli::{Cli, Command};
use exit::{Error, Result};

/// Runs one command to the end: the task, then the `-- CMD` hand-off if any.
pub async fn run(command: Command) -> Result<()> {
    let then = command.then().to_vec();
    execute(command).await?;
    if then.is_empty() {
        Ok(())
    } else {
        Err(exec::replace_process(&then))
    }
}

/// Runs one command's task, without the hand-off: what a pipeline step does.
pub async fn execute(command: Command) -> Result<()> {
    command.execute().await
}

/// Runs the command until it ends or a signal arrives; a signal drops the running work
/// (closing its sockets and removing its temporary files) and becomes the result.
pub async fn run_until_signal(cli: Cli) -> Result<()> {
    let mut signals = signals::Signals::install()
        .map_err(|e| Error::Failed(format!("installing signal handlers: {e}")))?;
    signals::reap_orphans_when_init()
        .map_err(|e| Error::Failed(format!("installing the SIGCHLD handler: {e}")))?;
    tokio::select! {
        result = run(cli.command) => result,
        signal = signals.recv() => Err(Error::Interrupted(signal)),
    }
}
