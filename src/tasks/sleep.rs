//! sleep: the `sleep 60` init container, ending at once on SIGTERM like everything else.

use crate::duration::Duration;
use crate::exec::Then;
use crate::exit::Result;
use crate::report;

/// Sleep for a duration.
#[derive(Debug, Clone, clap::Args)]
pub struct SleepArgs {
    /// How long: 60, 1.5, 90s, 2m30s.
    // Hyphen values reach the duration parser, which names `-5s` a negative duration
    // (clap alone would read it as the flags -5 and -s).
    #[arg(value_name = "DURATION", allow_hyphen_values = true)]
    pub duration: Duration,
    #[command(flatten)]
    pub then: Then,
}

impl crate::cli::Task for SleepArgs {
    fn execute(self) -> impl std::future::Future<Output = Result<()>> + Send {
        run(self)
    }

    fn then(&self) -> &[std::ffi::OsString] {
        &self.then.command
    }
}

pub async fn run(args: SleepArgs) -> Result<()> {
    report::info("sleep.start", format!("sleeping for {}", args.duration));
    let duration = args.duration.get();
    // tokio's timer ticks in whole milliseconds: even a zero sleep would wait for the next
    // tick, a millisecond that `sleep 0` (a no-op in scripts) must not cost.
    if !duration.is_zero() {
        tokio::time::sleep(duration).await;
    }
    Ok(())
}
