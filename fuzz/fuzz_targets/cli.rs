#![no_main]
//! Proves that no command line makes the CLI parser panic: bytes split on NUL become the
//! arguments after `initbox` (not necessarily UTF-8) and go to `cli::parse_from`, as
//! `main` does. Nothing is executed (clap's value parsers have already refused unusable
//! durations and ports). A rejection must be exit 2 with a message, except the help and
//! version requests, which print to stdout and exit 0, as in `main`.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;

use clap::error::ErrorKind;
use initbox::cli;
use initbox::exit::ExitCode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: initbox_fuzz::clear_initbox_env(),
    |data: &[u8]| {
        let mut argv = vec![OsString::from("initbox")];
        if !data.is_empty() {
            argv.extend(data.split(|&b| b == 0).map(|arg| OsString::from_vec(arg.to_vec())));
        }
        match cli::parse_from(&argv) {
            Ok(cli) => {
                // What every command reads before it runs: the command line after `--`.
                let _ = cli.command.then().len();
            }
            Err(error) => {
                // What main does with it.
                let code = if error.use_stderr() {
                    ExitCode::Usage
                } else {
                    ExitCode::Success
                };
                let informational =
                    matches!(error.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion);
                assert_eq!(
                    code == ExitCode::Success,
                    informational,
                    "{:?} exits {}",
                    error.kind(),
                    code.code()
                );
                assert!(!error.to_string().trim().is_empty(), "{:?}", error.kind());
                if !informational {
                    // The one line main prints for it.
                    let line = cli::usage_message(&error, &argv);
                    assert!(!line.trim().is_empty() && !line.contains('\n'), "{line:?}");
                }
            }
        }
    }
);
