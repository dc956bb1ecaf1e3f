//! wait-for-command: a command as a check, for `until CMD; do sleep 2; done` in an image
//! without a shell. One attempt = run the command once; exit 0 is ready.
//!
//! The command is an argv, never a string for a shell (the image has none). It is every
//! word after this command's flags, so this one command offers no `-- CMD` hand-off: a
//! `--` before the command only ends the flags. Its stdout and stderr are not passed
//! through (a loop's noise every 50 ms would bury the log); the last line of stderr (or of
//! stdout when stderr said nothing), from the last 4 KiB of each, is the reason shown.
//! Each attempt runs in its own process group, and the whole group is killed when the
//! attempt ends, is cut by `--attempt-timeout`, or initbox is stopped: no attempt leaves a
//! process behind.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use crate::exit::{Error, Result};
use crate::reason;
use crate::wait::{self, Attempt, Probe, WaitArgs};

/// How much of the end of each output stream is kept for the reason.
const TAIL: usize = 4096;
/// The longest reason line shown, in characters.
const LINE: usize = 300;

/// Wait until a command succeeds (replaces `until CMD; do sleep 2; done`).
#[derive(Debug, Clone, clap::Args)]
pub struct CommandArgs {
    /// The command to run, as its words (no shell): every argument after the flags, so
    /// this command has no `-- CMD` hand-off; a `--` before it only ends the flags.
    #[arg(
        required = true,
        value_name = "CMD",
        trailing_var_arg = true,
        num_args = 1..
    )]
    pub command: Vec<OsString>,
    #[command(flatten)]
    pub wait: WaitArgs,
}

pub struct CommandProbe {
    command: Vec<OsString>,
    label: String,
}

impl CommandProbe {
    pub fn new(command: Vec<OsString>) -> Self {
        let label = command
            .iter()
            .map(|word| word.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        CommandProbe { command, label }
    }

    fn program(&self) -> String {
        self.command
            .first()
            .map(|word| word.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// Kills the attempt's process group when dropped: at the end of the attempt, when the
/// engine abandons it, and when initbox shuts down on a signal.
struct GroupKill(Option<rustix::process::Pid>);

impl GroupKill {
    fn kill(&mut self) {
        if let Some(group) = self.0.take() {
            // ESRCH (the group is already gone) is the usual case and fine.
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Probe for CommandProbe {
    type Output = ();

    fn target(&self) -> &str {
        &self.label
    }

    async fn attempt(&self) -> Attempt {
        let Some((program, args)) = self.command.split_first() else {
            return Attempt::Fatal(Error::Usage("no command to run".into()));
        };
        let mut command = Command::new(program);
        command
            .args(args)
            // A pipe closed at once, not /dev/null: a root without /dev (an empty one,
            // as in the tests) has none, and the command still reads end-of-file.
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(error) => return self.cannot_start(&error),
        };
        let mut group = GroupKill(
            child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
        );
        drop(child.stdin.take());
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let status = async {
            let status = child.wait().await;
            // What the command left running would keep its pipes open: end it now.
            group.kill();
            status
        };
        let (status, out, err) = tokio::join!(status, tail(stdout), tail(stderr));
        let status = match status {
            Ok(status) => status,
            Err(error) => {
                return Attempt::NotYet(format!("waiting for the command: {}", reason::io(&error)));
            }
        };
        let line = last_line(&err).or_else(|| last_line(&out));
        self.judge(status, line)
    }
}

impl CommandProbe {
    fn judge(&self, status: ExitStatus, line: Option<String>) -> Attempt {
        let said = |what: String| match &line {
            Some(line) => format!("{what}: {line}"),
            None => what,
        };
        if let Some(code) = status.code() {
            return match code {
                0 => Attempt::ready(said("exited with code 0".into())),
                126 | 127 => Attempt::Fatal(Error::Exec {
                    message: said(format!(
                        "{} exited with code {code} (a command it runs {}; retrying cannot help)",
                        self.program(),
                        if code == 127 {
                            "was not found"
                        } else {
                            "could not be executed"
                        }
                    )),
                    not_found: code == 127,
                }),
                _ => Attempt::NotYet(said(format!("exited with code {code}"))),
            };
        }
        match status.signal() {
            Some(signal) => Attempt::NotYet(said(format!("killed by {}", signal_name(signal)))),
            None => Attempt::NotYet(said("ended without an exit code".into())),
        }
    }

    /// Not found and not executable stay so: the wait ends at once, with the shell's codes.
    fn cannot_start(&self, error: &io::Error) -> Attempt {
        let program = self.program();
        let fatal = |reason: &str, not_found: bool| {
            Attempt::Fatal(Error::Exec {
                message: format!("cannot execute {program}: {reason}"),
                not_found,
            })
        };
        match error.raw_os_error() {
            Some(libc::ENOENT) => fatal("command not found", true),
            Some(libc::EACCES) => fatal("permission denied (is it executable?)", false),
            Some(libc::ENOEXEC) => fatal("not an executable format", false),
            // ETXTBSY (still being written), EAGAIN (too many processes): may pass.
            _ => Attempt::NotYet(format!("starting {program}: {}", reason::io(error))),
        }
    }
}

/// The last [`TAIL`] bytes of a stream, read to its end.
async fn tail(stream: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::with_capacity(TAIL);
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&chunk[..n]);
                if kept.len() > TAIL {
                    kept.drain(..kept.len() - TAIL);
                }
            }
        }
    }
}

/// The last line with something on it, trimmed, at most [`LINE`] characters.
fn last_line(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.lines().map(str::trim).rfind(|line| !line.is_empty())?;
    let mut shown: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(LINE)
        .collect();
    if line.chars().count() > LINE {
        shown.push('…');
    }
    Some(shown)
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        _ => return format!("signal {signal}"),
    };
    format!("{name} (signal {signal})")
}

impl crate::cli::Task for CommandArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    /// Checks across the waiting flags (`--stable-for` within `--timeout`).
    fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        self.wait.validate()
    }
}

pub async fn run(args: CommandArgs) -> Result<()> {
    let options = args.wait.options();
    let probes = vec![CommandProbe::new(args.command)];
    wait::wait_for_all("command", probes, options)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_last_line_with_text_bounded() {
        assert_eq!(
            last_line(b"first\nsecond\n\n  \n").as_deref(),
            Some("second")
        );
        assert_eq!(last_line(b"\n\n"), None);
        let long = "x".repeat(1000);
        let shown = last_line(long.as_bytes()).unwrap();
        assert_eq!(shown.chars().count(), LINE + 1);
        assert_eq!(last_line(b"a\x1b[31mred").as_deref(), Some("a[31mred"));
    }
}
