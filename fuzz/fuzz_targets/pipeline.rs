#![no_main]
//! Proves that no pipeline file, however broken, makes the loader panic: bytes (made UTF-8
//! lossily) go through `spec::load` (YAML, then the validator, then each step's flags
//! through the CLI's own clap definition). A file it accepts must be sound (steps, unique
//! names, real tasks, `needs` without cycles); a file it rejects must give a configuration
//! error (exit 78) whose message names the file.
//!
//! Seeds: the example pipelines; `pipeline.dict` lets it past the YAML layer.

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: initbox_fuzz::clear_initbox_env(),
    |data: &[u8]| {
        initbox_fuzz::check_pipeline(&String::from_utf8_lossy(data));
    }
);
