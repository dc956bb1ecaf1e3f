//! The initbox binary: parse, run on a single-threaded runtime, turn the outcome into the
//! documented exit code.

use std::ffi::OsString;

use initbox::cli::{self, Cli};
use initbox::exit::{Error, ExitCode};
use initbox::report::{self, Reporter};

fn main() {
    let argv: Vec<OsString> = std::env::args_os().collect();
    let code = match cli::parse_from(&argv) {
        Ok(cli) => run(cli),
        // --help and --version: clap's own text on stdout.
        Err(error) if !error.use_stderr() => {
            let _ = error.print();
            ExitCode::Success
        }
        Err(error) => {
            Reporter::new(cli::requested_log_format(&argv), false, false).install();
            report::error("usage", cli::usage_message(&error, &argv));
            ExitCode::Usage
        }
    };
    std::process::exit(code.code());
}

fn run(cli: Cli) -> ExitCode {
    Reporter::new(cli.global.log_format, cli.global.quiet, cli.global.verbose).install();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            report::error("start", format!("starting the runtime: {error}"));
            return ExitCode::Failed;
        }
    };
    let result = runtime.block_on(initbox::run_until_signal(cli));
    // Blocking work still running after a signal must not hold the exit back.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::Success,
        Err(error) => {
            match &error {
                Error::Interrupted(_) => report::warn("interrupted", error.to_string()),
                _ => report::error("failed", error.to_string()),
            }
            error.exit_code()
        }
    }
}
