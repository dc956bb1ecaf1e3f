//! The clap tree: every command, every flag, every `INITBOX_*` environment fallback.
//!
//! Each task's own arguments live beside its code (`checks::tcp::TcpArgs`, …) so that the
//! type a flag parses into is the type the task runs with; this file only assembles them
//! and holds the flag groups several commands share.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use clap::{Parser, Subcommand};

use crate::checks::dns::DnsArgs;
use crate::checks::http::HttpArgs;
use crate::checks::ping::PingArgs;
use crate::checks::tcp::TcpArgs;
use crate::docs::{CompletionsArgs, ManArgs};
use crate::duration::Duration;
use crate::exit::{Error, Result};
use crate::pipeline::RunArgs;
use crate::report::LogFormat;
use crate::resolve::{self, Nameserver, ResolverSettings};
use crate::tasks::fetch::FetchArgs;
use crate::tasks::git_clone::GitCloneArgs;
use crate::tasks::register::RegisterArgs;
use crate::tasks::sleep::SleepArgs;
use crate::tasks::template::TemplateArgs;
use crate::wait::WaitOptions;

#[derive(Debug, Parser)]
#[command(
    name = "initbox",
    version,
    about = "Wait for DNS, TCP, HTTP and ICMP; register, fetch, clone and render; \
             run it all as an init pipeline. One static binary for init containers.",
    after_help = "Exit codes: 0 done, 1 failed, 2 usage error, 78 configuration error, \
                  124 timed out, 126/127 command not executable/not found, \
                  130/143 interrupted by SIGINT/SIGTERM.",
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Output")]
pub struct GlobalArgs {
    /// Log format on stderr.
    #[arg(
        long,
        global = true,
        env = "INITBOX_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// Only print errors.
    #[arg(
        short,
        long,
        global = true,
        env = "INITBOX_QUIET",
        conflicts_with = "verbose"
    )]
    pub quiet: bool,
    /// Also print details of every step (never secrets).
    #[arg(short, long, global = true, env = "INITBOX_VERBOSE")]
    pub verbose: bool,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Wait until DNS names resolve (replaces `until nslookup mydb; do sleep 2; done`).
    WaitForDns(DnsArgs),
    /// Wait until TCP ports accept connections (replaces `until nc -z db 5432`, wait-for-it).
    WaitForTcp(TcpArgs),
    /// Wait until HTTP(S) endpoints answer with an accepted status (like an httpGet probe).
    WaitForHttp(HttpArgs),
    /// Send ICMP echo requests, or wait until a host answers them.
    Ping(PingArgs),
    /// Register this pod with a remote service over HTTP.
    Register(RegisterArgs),
    /// Download a URL into a file, atomically.
    Fetch(FetchArgs),
    /// Clone a git repository into a directory, atomically and idempotently.
    GitClone(GitCloneArgs),
    /// Render Jinja2 templates into configuration files, atomically.
    Template(TemplateArgs),
    /// Sleep for a duration: 60, 1.5, 90s, 2m30s.
    Sleep(SleepArgs),
    /// Run a pipeline of these tasks with init-container semantics.
    Run(RunArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Print the man page (roff).
    Man(ManArgs),
}

impl Command {
    /// The `-- CMD ARGS...` to execute after success (empty when none was given).
    pub fn then(&self) -> &[OsString] {
        match self {
            Command::WaitForDns(args) => &args.then.command,
            Command::WaitForTcp(args) => &args.then.command,
            Command::WaitForHttp(args) => &args.then.command,
            Command::Ping(args) => &args.then.command,
            Command::Sleep(args) => &args.then.command,
            Command::Register(args) => &args.then.command,
            Command::Fetch(args) => &args.then.command,
            Command::GitClone(args) => &args.then.command,
            Command::Template(args) => &args.then.command,
            Command::Run(args) => &args.then.command,
            Command::Completions(_) | Command::Man(_) => &[],
        }
    }
}

/// `-- CMD ARGS...`: what to execute in place of initbox once the command succeeded.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Then {
    /// After success, replace initbox with this command (no shell needed).
    #[arg(last = true, value_name = "CMD", help_heading = "Hand-off")]
    pub command: Vec<OsString>,
}

/// The flags of every command that retries through the wait engine; see `wait`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Waiting")]
pub struct RetryArgs {
    /// Give up after this long (0 = never); exit code 124.
    #[arg(
        long,
        env = "INITBOX_TIMEOUT",
        default_value = "5m",
        value_name = "DURATION"
    )]
    pub timeout: Duration,
    /// Pause between attempts once the first 10 s of fast (50 ms) attempts are over; ±10 % jitter.
    #[arg(
        long,
        env = "INITBOX_INTERVAL",
        default_value = "1s",
        value_name = "DURATION"
    )]
    pub interval: Duration,
    /// Abandon a single attempt after this long.
    #[arg(
        long,
        env = "INITBOX_ATTEMPT_TIMEOUT",
        default_value = "2s",
        value_name = "DURATION"
    )]
    pub attempt_timeout: Duration,
}

/// The flags of the checks (wait-for-*, ping): retrying, and `--invert`.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Wait until the targets are NOT ready (a port closed, a name gone).
    #[arg(long, env = "INITBOX_INVERT", help_heading = "Waiting")]
    pub invert: bool,
}

impl WaitArgs {
    pub fn options(&self) -> Result<WaitOptions> {
        Ok(WaitOptions {
            invert: self.invert,
            ..self.retry.options()?
        })
    }
}

impl RetryArgs {
    pub fn options(&self) -> Result<WaitOptions> {
        if self.interval.get().is_zero() {
            return Err(Error::Usage("--interval must be greater than 0".into()));
        }
        if self.attempt_timeout.get().is_zero() {
            return Err(Error::Usage(
                "--attempt-timeout must be greater than 0".into(),
            ));
        }
        Ok(WaitOptions {
            timeout: self.timeout.as_limit(),
            interval: self.interval.get(),
            attempt_timeout: Some(self.attempt_timeout.get()),
            invert: false,
        })
    }
}

/// Where names are resolved: the pod's resolv.conf and hosts file, or explicit nameservers.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Name resolution")]
pub struct ResolverArgs {
    /// Ask this nameserver instead of those in resolv.conf (search domains are kept).
    /// Repeatable, or comma-separated.
    #[arg(
        long,
        env = "INITBOX_NAMESERVER",
        value_name = "IP[:PORT]",
        value_delimiter = ','
    )]
    pub nameserver: Vec<Nameserver>,
    /// The resolver configuration to read.
    #[arg(
        long,
        env = "INITBOX_RESOLV_CONF",
        value_name = "FILE",
        default_value = resolve::DEFAULT_RESOLV_CONF
    )]
    pub resolv_conf: PathBuf,
    /// The hosts file to read.
    #[arg(
        long,
        env = "INITBOX_HOSTS_FILE",
        value_name = "FILE",
        default_value = resolve::DEFAULT_HOSTS_FILE
    )]
    pub hosts_file: PathBuf,
}

impl ResolverArgs {
    pub fn settings(&self, query_timeout: StdDuration) -> ResolverSettings {
        ResolverSettings {
            nameservers: self.nameserver.clone(),
            resolv_conf: self.resolv_conf.clone(),
            hosts_file: self.hosts_file.clone(),
            query_timeout,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_environment_fallback() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_positional() || id == "help" || id == "version" {
                    continue;
                }
                let env = arg
                    .get_env()
                    .unwrap_or_else(|| panic!("{path} --{id} has no INITBOX_* variable"));
                assert!(
                    env.to_string_lossy().starts_with("INITBOX_"),
                    "{path} --{id}: {env:?}"
                );
            }
            for sub in command.get_subcommands() {
                check(sub, &format!("{path} {}", sub.get_name()));
            }
        }
        check(&Cli::command(), "initbox");
    }
}
