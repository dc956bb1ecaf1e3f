//! `-- CMD ARGS...`: once a command succeeded, initbox replaces itself with CMD (execve),
//! so the application becomes the container's main process without a shell in between.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use crate::exit::Error;
use crate::report;

/// `-- CMD ARGS...`: what to execute in place of initbox once the command succeeded.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Then {
    /// After success, replace initbox with this command (no shell needed).
    #[arg(last = true, value_name = "CMD", help_heading = "Hand-off")]
    pub command: Vec<OsString>,
}

/// Executes `command` in place of this process. Returns only when that fails.
pub fn replace_process(command: &[OsString]) -> Error {
    let Some((program, args)) = command.split_first() else {
        return Error::Usage("nothing to execute after --".into());
    };
    let shown = program.to_string_lossy().into_owned();
    report::Event::new(report::Level::Info, "exec", format!("starting {shown}"))
        .field("command", shown.clone())
        .emit();
    // `exec` searches PATH like a shell would when the name has no '/'.
    let error = Command::new(program).args(args).exec();
    let not_found = error.kind() == io::ErrorKind::NotFound;
    let reason = match error.raw_os_error() {
        Some(libc::ENOEXEC) => "not an executable format".to_owned(),
        Some(libc::EACCES) => "permission denied (is it executable?)".to_owned(),
        _ if not_found => "command not found".to_owned(),
        _ => crate::reason::io(&error),
    };
    Error::Exec {
        message: format!("cannot execute {shown}: {reason}"),
        not_found,
    }
}
