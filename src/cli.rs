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
use clap::{ArgAction, Args, FromArgMatches, Subcommand};

use crate::checks::dns::DnsArgs;
use crate::checks::http::HttpArgs;
use crate::checks::ping::PingArgs;
use crate::checks::tcp::TcpArgs;
use crate::docs::{CompletionsArgs, ManArgs};
use crate::exit::Result;
use crate::pipeline::RunArgs;
use crate::report::LogFormat;
use crate::tasks::chmod::ChmodArgs;
use crate::tasks::chown::ChownArgs;
use crate::tasks::fetch::FetchArgs;
use crate::tasks::git_clone::GitCloneArgs;
use crate::tasks::mkdir::MkdirArgs;
use crate::tasks::register::RegisterArgs;
use crate::tasks::remove::RemoveArgs;
use crate::tasks::sleep::SleepArgs;
use crate::tasks::template::TemplateArgs;

/// The parsed command line: the global flags and the command.
#[derive(Debug, clap::Args)]
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
    /// Checks across flags that clap cannot declare (one flag's value ruling out another),
    /// made by [`parse_from`] right after clap's own, so the command line and `run --check`
    /// refuse the same things. No I/O here: what needs the filesystem is the run's.
    fn validate(&self) -> std::result::Result<(), Invalid> {
        Ok(())
    }
}

/// A value refused by [`Task::validate`], reported as clap reports a value its parser
/// refused: `invalid value 'VALUE' for 'ARG': REASON`, so every usage error reads alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// The argument as clap names it in messages: `--set <KEY=VALUE>`, `<DEST>`.
    pub arg: String,
    pub value: String,
    pub reason: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid value '{}' for '{}': {}",
            self.value, self.arg, self.reason
        )
    }
}

impl Invalid {
    /// As clap's own error, carrying the argument and the value (for the messages that name
    /// an `INITBOX_*` variable or a pipeline key).
    fn into_clap(self) -> clap::Error {
        let mut error =
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{self}\n"));
        error.insert(ContextKind::InvalidArg, ContextValue::String(self.arg));
        error.insert(ContextKind::InvalidValue, ContextValue::String(self.value));
        error
    }
}

/// Every command, once: its help line, its name (the variant, in kebab case) and its Args
/// type. A new command is one file (its Args type and `impl Task`) and one line here;
/// dispatch, the hand-off, `--help`, completions, man pages, pipeline steps and the tests'
/// list of commands all follow from this list.
///
/// The subcommands are clap's `Subcommand` written out rather than derived, for one reason:
/// start-up. A derived enum builds every command's flags before parsing; here each command
/// is a name and a help line whose flags are defined only when it is the one invoked
/// (`Command::defer`), so `initbox sleep 0` does not pay for thirty commands' flags.
macro_rules! commands {
    ($($(#[doc = $about:literal])+ $variant:ident($args:ty),)*) => {
        #[derive(Debug, Clone)]
        pub enum Command {
            $($(#[doc = $about])+ $variant($args),)*
        }

        impl Command {
            /// The `-- CMD ARGS...` to execute after success (empty when none was given).
            pub fn then(&self) -> &[OsString] {
                match self {
                    $(Command::$variant(args) => Task::then(args),)*
                }
            }

            /// The checks across flags of the command's task ([`Task::validate`]).
            pub fn validate(&self) -> std::result::Result<(), Invalid> {
                match self {
                    $(Command::$variant(args) => Task::validate(args),)*
                }
            }

            /// Runs the command's task, without the hand-off: what a pipeline step does.
            ///
            /// Each command's future is boxed behind `dyn`: awaited inline, all thirty
            /// tasks' state machines would share one poll function whose stack frame holds
            /// the locals of every one of them (about 100 KB, each page of it touched by the
            /// stack probe on every run of every command), and one future the size of the
            /// largest task. Boxed, a run pays for its own task only.
            pub async fn execute(self) -> Result<()> {
                let task: std::pin::Pin<Box<dyn Future<Output = Result<()>> + Send>> = match self {
                    $(Command::$variant(args) => Box::pin(args.execute()),)*
                };
                task.await
            }
        }

        /// Every command, in the order of the list: what clap is told of it before it is
        /// invoked.
        const COMMANDS: &[Entry] = &[$(Entry {
            variant: stringify!($variant),
            about: concat!($($about),+),
            define: define::<$args>,
        },)*];

        impl FromArgMatches for Command {
            fn from_arg_matches(matches: &clap::ArgMatches) -> std::result::Result<Self, clap::Error> {
                let Some((name, matches)) = matches.subcommand() else {
                    return Err(clap::Error::new(clap::error::ErrorKind::MissingSubcommand));
                };
                $(if name == kebab_case(stringify!($variant)) {
                    return Ok(Command::$variant(<$args as FromArgMatches>::from_arg_matches(matches)?));
                })*
                Err(clap::Error::new(clap::error::ErrorKind::InvalidSubcommand))
            }

            fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> std::result::Result<(), clap::Error> {
                *self = Self::from_arg_matches(matches)?;
                Ok(())
            }
        }
    };
}

/// One command of [`COMMANDS`]: its variant's name, its help line, and the definition of
/// its flags, made only when clap needs them.
struct Entry {
    variant: &'static str,
    about: &'static str,
    define: fn(clap::Command) -> clap::Command,
}

impl Entry {
    /// The command's name: the variant in kebab case, as clap's derive names it.
    fn name(&self) -> String {
        kebab_case(self.variant)
    }

    /// The command as a name and a help line; its flags are defined when clap first needs
    /// them (`--help`, completions, or an unknown command's suggestions).
    fn deferred(&self) -> clap::Command {
        clap::Command::new(self.name())
            .about(help_line(self.about))
            .defer(self.define)
    }

    /// The command with its flags defined now.
    fn defined(&self) -> clap::Command {
        (self.define)(clap::Command::new(self.name()).about(help_line(self.about)))
    }
}

/// Every command, flags deferred, built one at a time (a `vec!` of thirty `clap::Command`
/// values would first be laid out on the stack).
fn deferred_subcommands() -> Vec<clap::Command> {
    COMMANDS.iter().map(Entry::deferred).collect()
}

impl Subcommand for Command {
    fn augment_subcommands(command: clap::Command) -> clap::Command {
        command.subcommands(deferred_subcommands())
    }

    fn augment_subcommands_for_update(command: clap::Command) -> clap::Command {
        Self::augment_subcommands(command)
    }

    fn has_subcommand(name: &str) -> bool {
        COMMANDS.iter().any(|entry| entry.name() == name)
    }
}

/// A doc comment as clap's derive makes it a help line: trimmed, without the final period.
fn help_line(doc: &'static str) -> &'static str {
    let line = doc.trim();
    line.strip_suffix('.').unwrap_or(line)
}

/// A command's flags, with the conventions every flag follows.
fn define<A: clap::Args>(command: clap::Command) -> clap::Command {
    // The Args type's own doc comment would replace the command's help line.
    let about = command.get_about().cloned();
    let command = with_conventions(A::augment_args(command));
    match about {
        Some(about) => command.about(about),
        None => command,
    }
}

/// `WaitForDns` → `wait-for-dns`, the name clap's derive would give the variant.
fn kebab_case(variant: &str) -> String {
    let mut name = String::with_capacity(variant.len() + 4);
    for (i, c) in variant.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('-');
        }
        name.push(c.to_ascii_lowercase());
    }
    name
}

commands! {
/// Wait until DNS names resolve (replaces `until nslookup mydb; do sleep 2; done`).
WaitForDns(DnsArgs),
/// Wait until TCP ports accept connections (replaces `until nc -z db 5432`, wait-for-it).
WaitForTcp(TcpArgs),
/// Wait until HTTP(S) endpoints answer with an accepted status (like an httpGet probe).
WaitForHttp(HttpArgs),
/// Wait until PostgreSQL accepts connections, or a login (replaces `until pg_isready; do sleep 2; done`).
WaitForPostgres(crate::checks::postgres::PostgresArgs),
/// Wait until Redis servers answer PING (replaces `until redis-cli ping; do sleep 2; done`).
WaitForRedis(crate::checks::redis::RedisArgs),
/// Wait until MySQL/MariaDB servers accept connections (replaces `until mysqladmin ping; do sleep 2; done`).
WaitForMysql(crate::checks::mysql::MysqlArgs),
/// Wait until NATS servers answer, and accept a login when given one.
WaitForNats(crate::checks::nats::NatsArgs),
/// Wait until ZooKeeper servers serve requests (`srvr` shows a Mode, not just `imok`).
WaitForZookeeper(crate::checks::zookeeper::ZooKeeperArgs),
/// Wait until Kafka brokers answer with a controller (replaces `until kafka-broker-api-versions.sh --bootstrap-server kafka:9092; do sleep 2; done`).
WaitForKafka(crate::checks::kafka::KafkaArgs),
/// Wait until AMQP 0-9-1 brokers (RabbitMQ) answer, and open a vhost when given a login.
WaitForAmqp(crate::checks::amqp::AmqpArgs),
/// Wait until gRPC servers report SERVING (grpc.health.v1, like grpc-health-probe).
WaitForGrpc(crate::checks::grpc::GrpcArgs),
/// Wait until Kubernetes objects are ready, complete, created or deleted (replaces `kubectl wait`, k8s-wait-for).
WaitForK8s(crate::checks::k8s::K8sArgs),
/// Copy ConfigMaps and Secrets into a directory, one file per key, atomically (replaces `kubectl get cm … -o jsonpath | base64 -d`, k8s-sidecar).
K8sCopy(crate::tasks::k8s_copy::K8sCopyArgs),
/// Wait until files exist, with a type, a size or contents.
WaitForFile(crate::checks::file::FileArgs),
/// Wait until unix sockets accept connections.
WaitForSocket(crate::checks::socket::SocketArgs),
/// Wait until a command succeeds (replaces `until CMD; do sleep 2; done`).
WaitForCommand(crate::checks::command::CommandArgs),
/// Send ICMP echo requests, or wait until a host answers them.
Ping(PingArgs),
/// Register this pod with a remote service over HTTP.
Register(RegisterArgs),
/// Download a URL into a file, atomically.
Fetch(FetchArgs),
/// Clone a git repository into a directory, atomically and idempotently.
GitClone(GitCloneArgs),
/// Render Jinja2 or envsubst templates into configuration files, atomically.
Template(TemplateArgs),
/// Sleep for a duration: 60, 1.5, 90s, 2m30s.
Sleep(SleepArgs),
/// Change the owner of files, never following symbolic links (replaces `chown -R 1001 /data`).
Chown(ChownArgs),
/// Change the mode of files, never following symbolic links (replaces `chmod -R g+rwX /data`).
Chmod(ChmodArgs),
/// Create directories with their parents, a mode and an owner (replaces `mkdir -p`).
Mkdir(MkdirArgs),
/// Remove files and trees, never following symbolic links (replaces `rm -rf`).
Remove(RemoveArgs),
/// Make a symbolic link atomically, replacing what is there (replaces `ln -sfn`).
Link(crate::tasks::link::LinkArgs),
/// Set kernel parameters and check the kernel kept them (replaces `sysctl -w`).
Sysctl(crate::tasks::sysctl::SysctlArgs),
/// Copy initbox itself into a directory, for containers of other images to run.
Install(crate::tasks::install::InstallArgs),
/// Write a file atomically from text, a variable or a file (replaces `echo`/`printf` > file).
Write(crate::tasks::write::WriteArgs),
/// Replace text in files in place, failing when an edit does not match (replaces `sed -i 's/…/…/'`).
Replace(crate::tasks::replace::ReplaceArgs),
/// Copy files and trees like `cp -a`, each file atomically, never through DEST's links.
Copy(crate::tasks::copy::CopyArgs),
/// Unpack a tar(.gz/.xz/.zst/.bz2) or zip archive into a directory, atomically (replaces `tar xzf … -C /dest`, `unzip`).
Extract(crate::tasks::extract::ExtractArgs),
/// Run a pipeline of these tasks with init-container semantics.
Run(RunArgs),
/// Print a shell completion script (bash, zsh, fish, elvish, powershell).
Completions(CompletionsArgs),
/// Print the man page (roff).
Man(ManArgs),}

/// The whole clap tree, every command's flags defined, with the conventions every flag
/// follows applied once, here, instead of on each of them (see [`with_conventions`]).
/// Pipeline validation, completions, man pages and the tests read this; parsing a command
/// line uses the same definitions, made only for the commands it names ([`parse_from`]).
pub fn command() -> clap::Command {
    root(COMMANDS.iter().map(Entry::defined).collect())
}

/// The tree [`parse_from`] uses for `argv`: as [`command`], but only the commands `argv`
/// names have their flags defined; the others are a name and a help line until clap needs
/// more (defining flags late would put the global flags first in their help). When `argv`
/// invokes a command, the tree holds that command alone: clap copies the global flags into
/// every command of the tree, which would make each command's start-up grow with the
/// number of commands. A pipeline step's task is read with `command_for(&[task])`.
pub fn command_for<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> clap::Command {
    let named = |entry: &Entry| {
        let name = entry.name();
        argv.iter().any(|arg| arg.as_ref() == name.as_str())
    };
    let invoked = invoked_command(argv)
        .and_then(|invoked| COMMANDS.iter().find(|entry| entry.name() == invoked));
    let subcommands = match invoked {
        Some(entry) => vec![entry.defined()],
        None => COMMANDS
            .iter()
            .map(|entry| {
                if named(entry) {
                    entry.defined()
                } else {
                    entry.deferred()
                }
            })
            .collect(),
    };
    root(subcommands)
}

/// The command `argv` invokes: its first word after the global flags ([`GlobalArgs`], read
/// from their definition: `-q`, `-v`, `--log-format FORMAT`), which take no part in the
/// choice of a command. `None` for anything else before it (`--help`, `--version`, a
/// mistyped flag), which the whole tree must answer.
fn invoked_command<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> Option<&str> {
    let globals = GlobalArgs::augment_args(clap::Command::new("initbox"));
    let takes_value = |arg: &clap::Arg| arg.get_action().takes_values();
    let mut words = argv.iter().skip(1).map(|arg| arg.as_ref().to_str());
    while let Some(word) = words.next() {
        let word = word?;
        if let Some(long) = word.strip_prefix("--") {
            let (name, inline_value) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            let arg = globals
                .get_arguments()
                .find(|arg| arg.get_long() == Some(name))?;
            if takes_value(arg) && !inline_value {
                words.next()?;
            }
        } else if let Some(shorts) = word.strip_prefix('-').filter(|s| !s.is_empty()) {
            // A cluster of switches (`-qv`); a short flag with a value ends the cluster.
            for (at, short) in shorts.char_indices() {
                let arg = globals
                    .get_arguments()
                    .find(|arg| arg.get_short() == Some(short))?;
                if takes_value(arg) {
                    if at + short.len_utf8() == shorts.len() {
                        words.next()?;
                    }
                    break;
                }
            }
        } else {
            return Some(word);
        }
    }
    None
}

/// initbox itself: its help, version and global flags, holding `subcommands`.
fn root(subcommands: Vec<clap::Command>) -> clap::Command {
    let root = clap::Command::new("initbox")
        .version(env!("CARGO_PKG_VERSION"))
        .about(
            "Wait for DNS, TCP, HTTP and ICMP; register, fetch, clone and render; prepare \
             volumes; run it all as an init pipeline. One static binary for init containers.",
        )
        .after_help(crate::exit::help_summary())
        .subcommand_required(true)
        .arg_required_else_help(true);
    with_conventions(GlobalArgs::augment_args(root).subcommands(subcommands))
}

/// Parses a command line (`argv[0]` first) with the tree of [`command`], built only as far
/// as this command line needs it, then the task's own checks across flags
/// ([`Task::validate`]).
pub fn parse_from<I, T>(argv: I) -> std::result::Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let matches = command_for(&argv).try_get_matches_from(argv)?;
    let cli = Cli::from_arg_matches(&matches)?;
    cli.command.validate().map_err(Invalid::into_clap)?;
    Ok(cli)
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
    let root = command();
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
    // A refused value is quoted as typed: a URL in it may hold a password not yet concealed.
    let rendered = crate::redact::mask_userinfo(&error.render().to_string());
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

    #[test]
    fn verify_cli() {
        command_for(&["initbox", "sleep", "0"]).debug_assert();
        command().debug_assert();
    }

    /// The tree that defines flags only for the commands named on the command line says
    /// the same as the whole tree, in help and in errors, for every command.
    #[test]
    fn defining_flags_late_changes_no_help_and_no_error() {
        for sub in command().get_subcommands() {
            let name = sub.get_name();
            for argv in [
                vec!["initbox", name, "--help"],
                vec!["initbox", name, "--no-such-flag"],
                vec!["initbox", "help", name],
                vec!["initbox", "--help", name],
                vec![
                    "initbox",
                    "-q",
                    "--log-format",
                    "json",
                    name,
                    "--no-such-flag",
                ],
                vec!["initbox", "--no-such-flag", name],
            ] {
                let whole = command().try_get_matches_from(&argv).unwrap_err();
                let lazy = parse_from(&argv).unwrap_err();
                assert_eq!(
                    whole.render().to_string(),
                    lazy.render().to_string(),
                    "{argv:?}"
                );
            }
        }
    }

    /// A command's own help starts with the line `initbox --help` lists it with (its Args
    /// type's doc comment must not replace it).
    #[test]
    fn a_commands_help_starts_with_its_line_in_the_list() {
        let listing = parse_from(["initbox", "--help"])
            .unwrap_err()
            .render()
            .to_string();
        for sub in command().get_subcommands() {
            let name = sub.get_name();
            let help = parse_from(["initbox", name, "--help"])
                .unwrap_err()
                .render()
                .to_string();
            let first = help.lines().next().unwrap();
            assert!(
                listing
                    .lines()
                    .any(|line| line.trim_start().strip_prefix(name).map(str::trim) == Some(first)),
                "{name}: {first:?} is not its line in initbox --help"
            );
        }
    }

    #[test]
    fn every_flag_has_an_environment_fallback() {
        fn check(command: &clap::Command, path: &str) {
            for arg in command.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_positional() || id == "help" || id == "version" {
                    continue;
                }
                // A flag of two values per use (replace --literal OLD NEW): one variable
                // cannot hold a list of pairs; the pipeline's map form stands in for it.
                if arg.get_num_args().is_some_and(|n| n.min_values() == 2) {
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
        check(&command(), "initbox");
    }
}
