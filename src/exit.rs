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

/// The exit-code table: what each code means, in short (for `--help`) and in full (the
/// README's table, which a test holds equal to this one).
pub const TABLE: &[(ExitCode, &str, &str)] = &[
    (
        ExitCode::Success,
        "done",
        "done: every target ready, every step succeeded",
    ),
    (
        ExitCode::Failed,
        "failed",
        "the task ran and failed for good (HTTP 4xx, checksum mismatch, git auth failure or missing ref, a DEST that is not a checkout, no ping reply in `--count` mode, permission denied, `template --check` found a change)",
    ),
    (
        ExitCode::Usage,
        "usage error",
        "usage error: bad flag, bad value, bad host:port, bad URL",
    ),
    (
        ExitCode::Config,
        "configuration error",
        "configuration error: invalid pipeline file, template syntax error, undefined variable, bad data file, unreadable token/CA file, no nameserver configured, an unreadable ssh key, passphrase or known_hosts file, …",
    ),
    (
        ExitCode::TimedOut,
        "timed out",
        "gave up: `--timeout`, a step `timeout` or the pipeline's `activeDeadline` passed before success",
    ),
    (
        ExitCode::CannotExecute,
        "command not executable",
        "the `-- CMD` (or the command of `wait-for-command`) could not be executed",
    ),
    (
        ExitCode::CommandNotFound,
        "command not found",
        "the `-- CMD` (or the command of `wait-for-command`) was not found",
    ),
    (
        ExitCode::Interrupted,
        "interrupted by SIGINT",
        "interrupted by SIGINT (also as PID 1)",
    ),
    (
        ExitCode::Terminated,
        "terminated by SIGTERM",
        "terminated by SIGTERM (also as PID 1)",
    ),
];

/// The line `--help` ends with, from [`TABLE`].
pub fn help_summary() -> String {
    let codes: Vec<String> = TABLE
        .iter()
        .map(|(code, short, _)| format!("{} {short}", code.code()))
        .collect();
    format!("Exit codes: {}.", codes.join(", "))
}

impl ExitCode {
    /// The code a signal's interruption exits with (130 for SIGINT, 143 for SIGTERM).
    pub const fn for_signal(signal: Signal) -> Self {
        match signal {
            Signal::Interrupt => ExitCode::Interrupted,
            Signal::Terminate => ExitCode::Terminated,
        }
    }

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
            Error::Interrupted(signal) => ExitCode::for_signal(*signal),
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
    fn the_table_has_every_code_once() {
        let codes: Vec<i32> = TABLE.iter().map(|(code, ..)| code.code()).collect();
        assert_eq!(codes, [0, 1, 2, 78, 124, 126, 127, 130, 143]);
    }

    #[test]
    fn the_readme_table_is_this_table() {
        let readme = include_str!("../README.md");
        let section = readme
            .split("\n## Exit codes\n")
            .nth(1)
            .expect("README has an Exit codes section");
        let rows: Vec<(i32, &str)> = section
            .lines()
            .skip_while(|line| !line.starts_with("|---"))
            .skip(1)
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                let cells: Vec<&str> = line.trim_matches('|').split(" | ").collect();
                (cells[0].trim().parse().expect("a code"), cells[1].trim())
            })
            .collect();
        let table: Vec<(i32, &str)> = TABLE
            .iter()
            .map(|(code, _, meaning)| (code.code(), *meaning))
            .collect();
        assert_eq!(rows, table);
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
