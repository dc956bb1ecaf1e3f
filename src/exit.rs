//! The exit-code contract of DESIGN.md, and the one place where an error becomes a code.
//!
//! Every failure anywhere in initbox ends up as an [`Error`]; `main` asks it for its
//! [`ExitCode`] and nothing else decides what the process returns.

use std::fmt;

/// The documented exit codes. Scripts and kubelet read these; never renumber them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Every target ready, every step succeeded.
    Success,
    /// The task ran and failed (HTTP 4xx, permission denied, …).
    Failed,
    /// Bad flag, bad value, bad host:port, bad URL.
    Usage,
    /// Invalid configuration: pipeline file, template, resolver or CA setup.
    Config,
    /// A deadline passed before success.
    TimedOut,
    /// The `-- CMD` exists but could not be executed.
    CannotExecute,
    /// The `-- CMD` was not found.
    CommandNotFound,
    /// Interrupted by SIGINT.
    Interrupted,
    /// Terminated by SIGTERM.
    Terminated,
}

impl ExitCode {
    pub const fn code(self) -> i32 {
        match self {
            ExitCode::Success => 0,
            ExitCode::Failed => 1,
            ExitCode::Usage => 2,
            ExitCode::Config => 78,
            ExitCode::TimedOut => 124,
            ExitCode::CannotExecute => 126,
            ExitCode::CommandNotFound => 127,
            ExitCode::Interrupted => 130,
            ExitCode::Terminated => 143,
        }
    }
}

/// The signals that end initbox early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Signal::Interrupt => "SIGINT",
            Signal::Terminate => "SIGTERM",
        })
    }
}

/// Everything that can end a command unsuccessfully. The message is what the user reads.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task ran and failed; retrying would not help.
    #[error("{0}")]
    Failed(String),
    /// The user typed something initbox cannot use.
    #[error("{0}")]
    Usage(String),
    /// A configuration the task depends on is missing or invalid.
    #[error("{0}")]
    Config(String),
    /// A deadline passed; the message names the targets and their last reasons.
    #[error("{0}")]
    TimedOut(String),
    /// The command after `--` could not be started.
    #[error("{message}")]
    Exec { message: String, not_found: bool },
    /// A signal asked initbox to stop.
    #[error("interrupted by {0}")]
    Interrupted(Signal),
}

impl Error {
    /// The one mapping from an error to the documented exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Failed(_) => ExitCode::Failed,
            Error::Usage(_) => ExitCode::Usage,
            Error::Config(_) => ExitCode::Config,
            Error::TimedOut(_) => ExitCode::TimedOut,
            Error::Exec {
                not_found: true, ..
            } => ExitCode::CommandNotFound,
            Error::Exec { .. } => ExitCode::CannotExecute,
            Error::Interrupted(Signal::Interrupt) => ExitCode::Interrupted,
            Error::Interrupted(Signal::Terminate) => ExitCode::Terminated,
        }
    }
}

impl Error {
    /// Prefixes the message with the target it concerns, unless it already names it.
    pub fn for_target(self, target: &str) -> Self {
        let prefix = |message: String| {
            if message.contains(target) {
                message
            } else {
                format!("{target}: {message}")
            }
        };
        match self {
            Error::Failed(m) => Error::Failed(prefix(m)),
            Error::Usage(m) => Error::Usage(prefix(m)),
            Error::Config(m) => Error::Config(prefix(m)),
            Error::TimedOut(m) => Error::TimedOut(prefix(m)),
            other => other,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_documented_table() {
        let table = [
            (ExitCode::Success, 0),
            (ExitCode::Failed, 1),
            (ExitCode::Usage, 2),
            (ExitCode::Config, 78),
            (ExitCode::TimedOut, 124),
            (ExitCode::CannotExecute, 126),
            (ExitCode::CommandNotFound, 127),
            (ExitCode::Interrupted, 130),
            (ExitCode::Terminated, 143),
        ];
        for (exit, code) in table {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }

    #[test]
    fn every_error_maps_to_its_code() {
        let cases = [
            (Error::Failed("x".into()), 1),
            (Error::Usage("x".into()), 2),
            (Error::Config("x".into()), 78),
            (Error::TimedOut("x".into()), 124),
            (
                Error::Exec {
                    message: "x".into(),
                    not_found: false,
                },
                126,
            ),
            (
                Error::Exec {
                    message: "x".into(),
                    not_found: true,
                },
                127,
            ),
            (Error::Interrupted(Signal::Interrupt), 130),
            (Error::Interrupted(Signal::Terminate), 143),
        ];
        for (error, code) in cases {
            assert_eq!(error.exit_code().code(), code, "{error:?}");
        }
    }
}
