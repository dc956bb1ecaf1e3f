//! What the volume commands (chown, chmod, mkdir, remove, copy, write, …) share: the owner
//! and mode types their flags parse into, the tree walk that never follows a symbolic link,
//! the counts and progress lines they report, and the thread their blocking work runs on.

pub mod mode;
pub mod owner;
pub mod walk;

use std::ffi::OsString;
use std::path::Path;
use std::time::Instant;

pub use mode::Mode;
pub use owner::{Ids, Owner};
pub use walk::{Entry, Kind, Meta, Next, Options, Skipped, Visitor};

use crate::duration::Elapsed;
use crate::exit::{Error, Result};
use crate::report::{self, plural};
use crate::wait::PROGRESS_EVERY;

/// The flags of the commands that walk trees (chown, chmod, remove).
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Tree")]
pub struct TreeArgs {
    /// Skip this name among the direct children of each PATH (repeatable): lost+found,
    /// .snapshot.
    #[arg(long, env = "INITBOX_EXCLUDE", value_name = "NAME")]
    pub exclude: Vec<OsString>,
    /// Do not go into (nor change) a directory on another filesystem than its PATH.
    #[arg(long, env = "INITBOX_ONE_FILE_SYSTEM")]
    pub one_file_system: bool,
}

impl TreeArgs {
    /// The walk these flags ask for.
    pub fn options(&self, recursive: bool) -> Options {
        Options {
            recursive,
            one_file_system: self.one_file_system,
            exclude: self.exclude.clone(),
        }
    }
}

/// The remedy for a permission error of a change only root or a capability may make.
pub fn remedy(capability: &str) -> String {
    format!("run as root (securityContext.runAsUser: 0) or add {capability}")
}

/// The counts a command reports: one summary line at the end, and a progress line about
/// every 10 s while a long tree is walked.
#[derive(Debug)]
pub struct Tally {
    command: &'static str,
    /// How the counts are named: `changed`/`unchanged`, `removed`/`absent`, …
    words: (&'static str, &'static str),
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
            words: ("changed", "unchanged"),
            changed: 0,
            unchanged: 0,
            skipped: 0,
            start: now,
            last_line: now,
            since_check: 0,
        }
    }

    /// Names the counts otherwise: `removed` and `absent` for remove.
    pub fn with_words(mut self, changed: &'static str, unchanged: &'static str) -> Self {
        self.words = (changed, unchanged);
        self
    }

    /// Counts a skipped entry for the walk's reason.
    pub fn skipped_for(&mut self, path: &Path, why: Skipped) {
        self.skipped(
            path,
            match why {
                Skipped::Excluded => "excluded",
                Skipped::OtherFilesystem => "on another filesystem (--one-file-system)",
                Skipped::Vanished => "removed or replaced during the walk",
            },
        );
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
        let mut text = format!(
            "{} {}, {} {}",
            self.changed, self.words.0, self.unchanged, self.words.1
        );
        if self.skipped > 0 {
            text.push_str(&format!(", {} skipped", self.skipped));
        }
        text
    }

    fn tick(&mut self, path: &Path) {
        if !self.progress_due(Instant::now()) {
            return;
        }
        let now = self.last_line;
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

    /// Whether this entry is the one to print a progress line at: the clock is read once
    /// every 1024 entries (not per entry, on a walk of millions), and a line is due
    /// [`PROGRESS_EVERY`] after the last one.
    fn progress_due(&mut self, now: Instant) -> bool {
        self.since_check += 1;
        if self.since_check < 1024 {
            return false;
        }
        self.since_check = 0;
        if now.duration_since(self.last_line) < PROGRESS_EVERY {
            return false;
        }
        self.last_line = now;
        true
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_progress_line_is_due_every_ten_seconds_checked_once_per_1024_entries() {
        let mut tally = Tally::new("chown");
        let start = tally.start;
        let at = |secs: u64| start + Duration::from_secs(secs);
        let due = |tally: &mut Tally, now: Instant, entries: usize| {
            (0..entries).filter(|_| tally.progress_due(now)).count()
        };
        // Within the first 10 s, never; the clock is read on every 1024th entry only.
        assert_eq!(due(&mut tally, at(9), 4096), 0);
        assert_eq!(due(&mut tally, at(11), 1023), 0);
        assert_eq!(due(&mut tally, at(11), 1), 1);
        // The next one 10 s after that line, however many entries pass meanwhile.
        assert_eq!(due(&mut tally, at(20), 100_000), 0);
        assert_eq!(due(&mut tally, at(21), 1024), 1);
        assert_eq!(due(&mut tally, at(21), 1024), 0);
    }
}
