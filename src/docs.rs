//! Shell completions and the man page, generated from the clap definition itself, so they
//! can never disagree with the flags the binary accepts.

use std::io::Write;

use crate::cli;
use crate::exit::{Error, Result};

/// Print a completion script for a shell: `initbox completions bash > /etc/bash_completion.d/initbox`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// Print a man page (roff): `initbox man > initbox.1`, `initbox man git-clone > initbox-git-clone.1`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManArgs {
    /// The command whose page to print (default: the main page, which lists them all).
    #[arg(value_name = "COMMAND")]
    pub command: Option<String>,
}

/// Commands that describe initbox rather than do a task (never pipeline steps).
pub const DOC_COMMANDS: &[&str] = &["completions", "man"];

impl crate::cli::Task for CompletionsArgs {
    async fn execute(self) -> Result<()> {
        completions(&self)
    }
}

impl crate::cli::Task for ManArgs {
    async fn execute(self) -> Result<()> {
        man(&self)
    }
}

pub fn completions(args: &CompletionsArgs) -> Result<()> {
    let mut command = cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "initbox", &mut out);
    write_stdout(&out)
}

pub fn man(args: &ManArgs) -> Result<()> {
    let mut root = cli::command();
    // Building propagates the global flags into every command and gives each its full
    // name (`initbox wait-for-tcp`), which the synopsis shows.
    root.build();
    let page = match &args.command {
        None => root,
        Some(name) => {
            let Some(sub) = root.find_subcommand(name).cloned() else {
                let known: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).collect();
                return Err(Error::Usage(format!(
                    "no command '{name}' (commands: {})",
                    known.join(", ")
                )));
            };
            // The page's title is `initbox-NAME` (its display name), as the main page's SEE
            // ALSO names it; the synopsis says `initbox NAME` (its bin name).
            sub
        }
    };
    let mut out = Vec::new();
    clap_mangen::Man::new(page)
        .render(&mut out)
        .map_err(|e| Error::Failed(format!("rendering the man page: {e}")))?;
    write_stdout(&out)
}

fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|e| Error::Failed(format!("writing to stdout: {}", crate::reason::io(&e))))
}
