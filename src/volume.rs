//! What the volume commands (chown, chmod, mkdir, remove, copy, write, …) share: the owner
//! and mode types their flags parse into, the tree walk that never follows a symbolic link,
//! the counts and progress lines they report, and the thread their blocking work runs on.

pub mod mode;
pub mod owner;
pub mod walk;

use std::path::Path;
use std::time::Instant;

pub use mode::Mode;
pub use owner::{Ids, Owner};
pub use walk::{Entry, Kind, Meta, Next, Options, Skipped, Visitor};

use crate::duration::Elapsed;
use crate::exit::{Error, Result};
use crate::report::{self, plural};
use crate::wait::PROGRESS_EVERY;

/// The remedy for a permission error of a change only root or a capability may make.
pub fn remedy(capability: &str) -> String {
    format!("run as root (securityContext.runAsUser: 0) or add {capability}")
}

/// The counts a command reports: one summary line at the end, and a progress line about
/// every 10 s while a long tree is walked.
#[derive(Debug)]
pub struct Tally {
    command: &'static str,
    pub changed: u64,
    pub unchanged: u64,
    pub skipped: u64,
    start: Instant,
    last_line: Instant,
    /// Entries since the clock was last read (reading it for every file would cost).
    since_check: u32,
}

impl Tally {
    pub fn new(command: &'static str) -> Self {
        let now = Instant::now();
        Tally {
            command,
            changed: 0,
            unchanged: 0,
            skipped: 0,
            start: now,
            last_line: now,
            since_check: 0,
        }
    }

    pub fn changed(&mut self, path: &Path) {
        self.changed += 1;
        self.tick(path);
    }

    pub fn unchanged(&mut self, path: &Path) {
        self.unchanged += 1;
        self.tick(path);
    }

    /// Counts a skipped entry, saying why at `-v`.
    pub fn skipped(&mut self, path: &Path, why: &str) {
        self.skipped += 1;
        report::debug(
            &format!("{}.skipped", self.command),
            format!("skipped {}: {why}", path.display()),
        );
        self.tick(path);
    }

    fn counts(&self) -> String {
        let mut text = format!("{} changed, {} unchanged", self.changed, self.unchanged);
        if self.skipped > 0 {
            text.push_str(&format!(", {} skipped", self.skipped));
        }
        text
    }

    fn tick(&mut self, path: &Path) {
        self.since_check += 1;
        if self.since_check < 1024 {
            return;
        }
        self.since_check = 0;
        let now = Instant::now();
        if now.duration_since(self.last_line) >= PROGRESS_EVERY {
            self.last_line = now;
            report::Event::new(
                report::Level::Info,
                &format!("{}.progress", self.command),
                format!(
                    "{}: still working after {}: {}, now at {}",
                    self.command,
                    Elapsed(now.duration_since(self.start)),
                    self.counts(),
                    path.display()
                ),
            )
            .field("changed", self.changed)
            .field("unchanged", self.unchanged)
            .field("skipped", self.skipped)
            .emit();
        }
    }

    /// The summary line: `chown: 12034 changed, 3 unchanged, 1 skipped in 0.8s`.
    pub fn finish(&self) {
        let elapsed = self.start.elapsed();
        report::Event::new(
            report::Level::Info,
            &format!("{}.done", self.command),
            format!(
                "{}: {} in {}",
                self.command,
                self.counts(),
                Elapsed(elapsed)
            ),
        )
        .field("changed", self.changed)
        .field("unchanged", self.unchanged)
        .field("skipped", self.skipped)
        .field("elapsed_ms", elapsed.as_millis() as u64)
        .emit();
    }

    /// `1 file`, `3 files`: for commands whose summary counts something else.
    pub fn noun(count: u64, noun: &str) -> String {
        format!("{count} {noun}{}", plural(count as usize))
    }
}

/// Runs blocking filesystem work on a blocking thread, in the current pipeline step, so a
/// signal still ends initbox at once (the work is safe to cut short: each change is one
/// system call).
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let step = crate::step::current();
    tokio::task::spawn_blocking(move || crate::step::on_thread(step, work))
        .await
        .map_err(|e| Error::Failed(format!("the filesystem work stopped: {e}")))?
}
