//! The clap tree: every command, every flag, every `INITBOX_*` environment fallback.
//!
//! Each task's own arguments live beside its code (`checks::tcp::TcpArgs`, …) so that the
//! type a flag parses into is the type the task runs with, and each flag group several
//! commands share lives beside the code that gives it meaning (`wait::RetryArgs`,
//! `wait::WaitArgs`, `resolve::ResolverArgs`, `http_client::TlsArgs`, `exec::Then`): this
//! file only assembles them, and applies the conventions every flag follows.

use std::ffi::OsString;
use std::future::Future;

use clap::builder::BoolishValueParser;
use clap::error::{ContextKind, ContextValue};
use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::checks::dns::DnsArgs;
use crate::checks::http::HttpArgs;
use crate::checks::ping::PingArgs;
use crate::checks::tcp::TcpArgs;
use crate::docs::{CompletionsArgs, ManArgs};
use crate::exit::Result;
use crate::pipeline::RunArgs;
use crate::report::LogFormat;
use crate::tasks::fetch::FetchArgs;
use crate::tasks::git_clone::GitCloneArgs;
use crate::tasks::register::RegisterArgs;
use crate::tasks::sleep::SleepArgs;
use crate::tasks::template::TemplateArgs;

#[derive(Debug, Parser)]
#[command(
    name = "initbox",
    version,
    about = "Wait for DNS, TCP, HTTP and ICMP; register, fetch, clone and render; \
             run it all as an init pipeline. One static binary for init containers.",
    after_help = crate::exit::help_summary(),
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

/// What every command is to the rest of initbox: a task run once, and the `-- CMD` that
/// may follow it. Each command's Args type implements it in the command's own file.
pub trait Task {
    /// Runs the task to its end, without the hand-off.
    fn execute(self) -> impl Future<Output = Result<()>> + Send;
    /// The `-- CMD ARGS...` to execute after success (none by default).
    fn then(&self) -> &[OsString] {
        &[]
    }
}

/// Every command, once: its help line, its name (the variant, in kebab case) and its Args
/// type. A new command is one file (its Args type and `impl Task`) and one line here;
/// dispatch, the hand-off, `--help`, completions, man pages, pipeline steps and the tests'
/// list of commands all follow from this list.
macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident($args:ty),)*) => {
        #[derive(Debug, Clone, Subcommand)]
        pub enum Command {
            $($(#[$doc])* $variant($args),)*
        }

        impl Command {
            /// The `-- CMD ARGS...` to execute after success (empty when none was given).
            pub fn then(&self) -> &[OsString] {
                match self {
                    $(Command::$variant(args) => Task::then(args),)*
                }
            }

            /// Runs the command's task, without the hand-off: what a pipeline step does.
            pub async fn execute(self) -> Result<()> {
                match self {
                    $(Command::$variant(args) => args.execute().await,)*
                }
            }
        }
    };
}

commands! {
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
/// Make a symbolic link atomically, replacing what is there (replaces `ln -sfn`).
Link(crate::tasks::link::LinkArgs),
/// Set kernel parameters and check the kernel kept them (replaces `sysctl -w`).
Sysctl(crate::tasks::sysctl::SysctlArgs),
/// Copy initbox itself into a directory, for containers of other images to run.
Install(crate::tasks::install::InstallArgs),
/// Write a file atomically from text, a variable or a file (replaces `echo`/`printf` > file).
Write(crate::tasks::write::WriteArgs),
/// Copy files and trees like `cp -a`, each file atomically, never through DEST's links.
Copy(crate::tasks::copy::CopyArgs),
/// Run a pipeline of these tasks with init-container semantics.
Run(RunArgs),
/// Print a shell completion script (bash, zsh, fish, elvish, powershell).
Completions(CompletionsArgs),
/// Print the man page (roff).
Man(ManArgs),}

/// The clap tree as initbox parses it: the derived definition with the conventions every
/// flag follows applied once, here, instead of on each of them (see [`with_conventions`]).
/// The command line, pipeline steps, `--help`, completions and man pages all use this.
pub fn command() -> clap::Command {
    with_conventions(Cli::command())
}

/// Parses a command line (`argv[0]` first) with [`command`].
pub fn parse_from<I, T>(argv: I) -> std::result::Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(argv)?;
    Cli::from_arg_matches(&matches)
}

/// The usual conventions of command-line tools, for every flag of every command:
/// - a switch set from the environment takes `1`/`0`, `true`/`false`, `yes`/`no`,
///   `on`/`off`, in any case (`INITBOX_QUIET=1`), as Kubernetes manifests write them;
/// - a variable that is set but empty counts as unset (`INITBOX_TIMEOUT=` in a manifest is
///   "no value", not an invalid one);
/// - a choice of values ignores case (`--log-format JSON`, `--type srv`);
/// - a value may start with `-` (`--timeout -1` is refused by the duration's own check with a
///   reason, not read as an unknown flag).
fn with_conventions(command: clap::Command) -> clap::Command {
    command
        .mut_args(|arg| {
            let mut arg = arg;
            if let Some(name) = arg.get_env()
                && std::env::var_os(name).is_some_and(|value| value.is_empty())
            {
                arg = arg.env(None);
            }
            match arg.get_action() {
                ArgAction::SetTrue => arg.value_parser(BoolishValueParser::new()),
                ArgAction::Set | ArgAction::Append => {
                    let choices = !arg.get_possible_values().is_empty();
                    arg.allow_negative_numbers(true).ignore_case(choices)
                }
                _ => arg,
            }
        })
        .mut_subcommands(with_conventions)
}

/// A clap error as one line, the way initbox reports every other error: no usage block, no
/// "for more information" footer, and none of clap's tip to pass a value after `--` (here
/// `--` starts the hand-off command). A bad value that came from an `INITBOX_*` variable
/// names the variable, since the user never typed the flag.
pub fn usage_message(error: &clap::Error, argv: &[OsString]) -> String {
    let mut message = one_line(error);
    let root = Cli::command();
    if let Some(variable) = variable_behind(&root, error, argv) {
        message = format!("{variable}: {message}");
    }
    if let Some(subcommand) = subcommand_in(&root, argv) {
        message.push_str(&format!(" (see 'initbox {subcommand} --help')"));
    }
    message
}

/// A clap error's text as one line: the usage block, the "for more information" footer and
/// the tip about `--` dropped, clap's indented lists (missing arguments) joined in.
pub fn one_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let mut parts: Vec<String> = Vec::new();
    for line in rendered.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if line.is_empty() || line.starts_with("tip: to pass") {
            continue;
        }
        match line.strip_prefix("tip: ") {
            Some(tip) => parts.push(format!("({tip})")),
            None => parts.push(line.trim_start_matches("error: ").to_owned()),
        }
    }
    parts.join(" ")
}

/// The `INITBOX_*` variable whose value clap refused, when the flag was not on the command line.
fn variable_behind(root: &clap::Command, error: &clap::Error, argv: &[OsString]) -> Option<String> {
    let Some(ContextValue::String(arg)) = error.get(ContextKind::InvalidArg) else {
        return None;
    };
    let Some(ContextValue::String(value)) = error.get(ContextKind::InvalidValue) else {
        return None;
    };
    let long = arg.split_whitespace().next()?.strip_prefix("--")?;
    let typed = argv.iter().any(|a| {
        a.to_str()
            .and_then(|a| a.strip_prefix("--"))
            .is_some_and(|a| a == long || a.starts_with(&format!("{long}=")))
    });
    if typed {
        return None;
    }
    fn find(command: &clap::Command, long: &str, value: &str) -> Option<String> {
        command
            .get_arguments()
            .filter(|arg| arg.get_long() == Some(long))
            .filter_map(|arg| arg.get_env())
            .find(|name| std::env::var_os(name).is_some_and(|v| v == value))
            .map(|name| name.to_string_lossy().into_owned())
            .or_else(|| {
                command
                    .get_subcommands()
                    .find_map(|sub| find(sub, long, value))
            })
    }
    find(root, long, value).map(|name| format!("{name}={value}"))
}

/// The subcommand a command line names, if any.
fn subcommand_in(root: &clap::Command, argv: &[OsString]) -> Option<String> {
    argv.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .filter_map(|a| a.to_str())
        .find(|a| root.find_subcommand(a).is_some())
        .map(str::to_owned)
}

/// The log format a command line asks for, read without clap: a usage error must be
/// reported in the format the user asked for even when clap could not parse the line.
pub fn requested_log_format(argv: &[OsString]) -> LogFormat {
    let mut words = argv.iter().skip(1).filter_map(|a| a.to_str());
    let mut asked = None;
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if let Some(value) = word.strip_prefix("--log-format=") {
            asked = Some(value.to_owned());
        } else if word == "--log-format" {
            asked = words.next().map(str::to_owned);
        }
    }
    let asked = asked.or_else(|| std::env::var("INITBOX_LOG_FORMAT").ok());
    match asked {
        Some(format) if format.eq_ignore_ascii_case("json") => LogFormat::Json,
        _ => LogFormat::Text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn verify_cli() {
        Cli::command().debug_assert();
        command().debug_assert();
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
