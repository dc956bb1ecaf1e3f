//! What the volume commands (chown, chmod, mkdir, remove, copy, write, …) share: the owner
//! and mode types their flags parse into, the tree walk that never follows a symbolic link,
//! the counts and progress lines they report, and the thread their blocking work runs on.

pub mod mode;
pub mod owner;
pub mod walk;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
/// every 10 s while a long tree is walked. A walk shared among threads gives each thread a
/// [`Tally::fork`]: the counts of each are its own (remove compares its own skips), and
/// their sum is what the lines say.
#[derive(Debug)]
pub struct Tally {
    command: &'static str,
    /// How the counts are named: `changed`/`unchanged`, `removed`/`absent`, …
    words: (&'static str, &'static str),
    /// This tally's own counts.
    pub changed: u64,
    pub unchanged: u64,
    pub skipped: u64,
    /// What of the own counts is already in `shared`.
    flushed: [u64; 3],
    shared: Arc<SharedCounts>,
    /// Entries since the clock was last read (reading it for every file would cost).
    since_check: u32,
}

/// A fork's counts reach the sum when its thread ends.
impl Drop for Tally {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The sum of the counts of a tally and its forks, and when the last progress line was.
#[derive(Debug)]
struct SharedCounts {
    counts: [AtomicU64; 3],
    start: Instant,
    last_line: Mutex<Instant>,
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
            flushed: [0; 3],
            shared: Arc::new(SharedCounts {
                counts: Default::default(),
                start: now,
                last_line: Mutex::new(now),
            }),
            since_check: 0,
        }
    }

    /// A tally for another thread of the same walk: its counts start at zero and add to
    /// this one's in every line.
    pub fn fork(&self) -> Self {
        Tally {
            command: self.command,
            words: self.words,
            changed: 0,
            unchanged: 0,
            skipped: 0,
            flushed: [0; 3],
            shared: self.shared.clone(),
            since_check: 0,
        }
    }

    /// Takes in the counts of a fork whose thread is done, so this tally's own counts are
    /// the whole walk's again.
    pub fn absorb(&mut self, mut fork: Tally) {
        fork.flush();
        self.changed += fork.changed;
        self.unchanged += fork.unchanged;
        self.skipped += fork.skipped;
        // Already in the shared sum, through the fork.
        self.flushed[0] += fork.changed;
        self.flushed[1] += fork.unchanged;
        self.flushed[2] += fork.skipped;
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

    /// Adds what this tally counted since the last time to the shared sum (once per 1024
    /// entries, not per entry: threads would fight over the counters' cache line).
    fn flush(&mut self) -> [u64; 3] {
        let own = [self.changed, self.unchanged, self.skipped];
        let mut sum = [0; 3];
        for (i, counter) in self.shared.counts.iter().enumerate() {
            let delta = own[i] - self.flushed[i];
            sum[i] = counter.fetch_add(delta, Ordering::Relaxed) + delta;
        }
        self.flushed = own;
        sum
    }

    fn counts(&self, [changed, unchanged, skipped]: [u64; 3]) -> String {
        let mut text = format!("{changed} {}, {unchanged} {}", self.words.0, self.words.1);
        if skipped > 0 {
            text.push_str(&format!(", {skipped} skipped"));
        }
        text
    }

    fn tick(&mut self, path: &Path) {
        let Some(now) = self.progress_due(Instant::now) else {
            return;
        };
        let [changed, unchanged, skipped] = self.flush();
        report::Event::new(
            report::Level::Info,
            &format!("{}.progress", self.command),
            format!(
                "{}: still working after {}: {}, now at {}",
                self.command,
                Elapsed(now.duration_since(self.shared.start)),
                self.counts([changed, unchanged, skipped]),
                path.display()
            ),
        )
        .field("changed", changed)
        .field("unchanged", unchanged)
        .field("skipped", skipped)
        .emit();
    }

    /// Whether this entry is the one to print a progress line at: the clock is read once
    /// every 1024 entries (not per entry, on a walk of millions), and a line is due
    /// [`PROGRESS_EVERY`] after the last one of any thread. `clock` is the clock (the tests
    /// set the time).
    fn progress_due(&mut self, clock: impl FnOnce() -> Instant) -> Option<Instant> {
        self.since_check += 1;
        if self.since_check < 1024 {
            return None;
        }
        self.since_check = 0;
        self.flush();
        let now = clock();
        let mut last_line = self
            .shared
            .last_line
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if now.duration_since(*last_line) < PROGRESS_EVERY {
            return None;
        }
        *last_line = now;
        Some(now)
    }

    /// The summary line: `chown: 12034 changed, 3 unchanged, 1 skipped in 0.8s`, with the
    /// counts of every fork (ended by then: the walk's threads are joined).
    pub fn finish(&mut self) {
        let [changed, unchanged, skipped] = self.flush();
        let elapsed = self.shared.start.elapsed();
        report::Event::new(
            report::Level::Info,
            &format!("{}.done", self.command),
            format!(
                "{}: {} in {}",
                self.command,
                self.counts([changed, unchanged, skipped]),
                Elapsed(elapsed)
            ),
        )
        .field("changed", changed)
        .field("unchanged", unchanged)
        .field("skipped", skipped)
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
/// system call). When the step gives up on the work (its deadline, a signal), the work is
/// told to stop ([`abandoned`]) and its scratch (temp files, a staging directory, see
/// [`scratch`]) is removed at once: nothing half-written is left in the volume, and a
/// restarted step does not find the abandoned one still writing.
pub async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let step = crate::step::current();
    let job = Arc::new(Job::default());
    let mut abandon = AbandonOnDrop(Some(job.clone()));
    let result = tokio::task::spawn_blocking(move || {
        crate::step::on_thread(step, || on_job(Some(job), work))
    })
    .await;
    abandon.0 = None;
    result.map_err(|e| Error::Failed(format!("the filesystem work stopped: {e}")))?
}

/// The blocking work of one [`blocking`] call, as the threads doing it see it.
#[derive(Debug, Default)]
pub struct Job {
    abandoned: std::sync::atomic::AtomicBool,
    scratch: Mutex<Vec<std::path::PathBuf>>,
}

std::thread_local! {
    static JOB: std::cell::RefCell<Option<Arc<Job>>> = const { std::cell::RefCell::new(None) };
}

/// The job this thread works for (to hand to the threads it starts, see [`on_job`]).
pub fn current_job() -> Option<Arc<Job>> {
    JOB.with(|job| job.borrow().clone())
}

/// Runs `work` on this thread for `job`.
pub fn on_job<T>(job: Option<Arc<Job>>, work: impl FnOnce() -> T) -> T {
    let before = JOB.with(|current| current.replace(job));
    let result = work();
    JOB.with(|current| *current.borrow_mut() = before);
    result
}

/// Whether the step gave up on the work this thread does: a long loop checks it between
/// two changes and stops.
pub fn abandoned() -> bool {
    JOB.with(|job| {
        job.borrow()
            .as_ref()
            .is_some_and(|job| job.abandoned.load(Ordering::Relaxed))
    })
}

/// [`abandoned`] as the error a loop returns.
pub fn stop_if_abandoned() -> Result<()> {
    if abandoned() { Err(gave_up()) } else { Ok(()) }
}

/// The error of work the step gave up on.
fn gave_up() -> Error {
    Error::Failed("stopped: the step gave up on it".into())
}

/// `path` (a temp file or a staging directory the work is about to write) is removed if the
/// work is abandoned while the returned guard lives; drop the guard once the path is renamed
/// into place or removed by the work itself. Refused once the work is abandoned, so nothing
/// new is started after the scratch was cleared.
pub fn scratch(path: &Path) -> Result<Scratch> {
    scratch_made(|| Ok(path.to_owned())).map(|(_, scratch)| scratch)
}

/// Runs `create`, the call that creates a path given to [`scratch`], under the lock the
/// abandonment clears the scratch under, so that the two cannot cross: either the step gave
/// up first and nothing is created, or the path exists by the time the abandonment removes
/// it. A path registered but created only after that removal would be left behind.
pub fn creating<T>(create: impl FnOnce() -> T) -> Result<T> {
    under_scratch_lock(current_job().as_deref(), |_| Ok(create()))
}

/// [`scratch`] for a path whose name is known only once it is made (a staging directory):
/// `make` creates it, and it is registered, in one step under the abandonment's lock.
pub fn scratch_made(make: impl FnOnce() -> Result<PathBuf>) -> Result<(PathBuf, Scratch)> {
    let job = current_job();
    let path = under_scratch_lock(job.as_deref(), |scratch| {
        let path = make()?;
        if let Some(scratch) = scratch {
            scratch.push(path.clone());
        }
        Ok(path)
    })?;
    let scratch = Scratch {
        job,
        path: path.clone(),
    };
    Ok((path, scratch))
}

/// Runs `work` under the lock the abandonment clears the scratch under (with the list, on a
/// job's thread), or refuses once the work was abandoned, so nothing new is started after
/// the scratch was cleared. Off a job's thread, `work` simply runs.
fn under_scratch_lock<T>(
    job: Option<&Job>,
    work: impl FnOnce(Option<&mut Vec<PathBuf>>) -> Result<T>,
) -> Result<T> {
    let Some(job) = job else {
        return work(None);
    };
    let mut scratch = job.scratch.lock().unwrap_or_else(|p| p.into_inner());
    if job.abandoned.load(Ordering::Relaxed) {
        return Err(gave_up());
    }
    work(Some(&mut scratch))
}

/// See [`scratch`].
#[must_use = "the path stays scratch only while the guard lives"]
pub struct Scratch {
    job: Option<Arc<Job>>,
    path: std::path::PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(job) = &self.job {
            let mut scratch = job.scratch.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(at) = scratch.iter().position(|p| *p == self.path) {
                scratch.swap_remove(at);
            }
        }
    }
}

/// Marks the job abandoned and removes its scratch, when [`blocking`]'s future is dropped
/// before the work ended.
struct AbandonOnDrop(Option<Arc<Job>>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        let Some(job) = self.0.take() else { return };
        let scratch = {
            let mut scratch = job.scratch.lock().unwrap_or_else(|p| p.into_inner());
            job.abandoned.store(true, Ordering::Relaxed);
            std::mem::take(&mut *scratch)
        };
        for path in scratch {
            let removed = match path.symlink_metadata() {
                Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
                Ok(_) => std::fs::remove_file(&path),
                Err(_) => Ok(()),
            };
            if let Err(error) = removed {
                report::warn(
                    "volume.scratch",
                    format!(
                        "could not remove {} of the abandoned work: {}",
                        path.display(),
                        crate::reason::io(&error)
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_progress_line_is_due_every_ten_seconds_checked_once_per_1024_entries() {
        let mut tally = Tally::new("chown");
        let start = tally.shared.start;
        let at = |secs: u64| start + Duration::from_secs(secs);
        let due = |tally: &mut Tally, now: Instant, entries: usize| {
            (0..entries)
                .filter(|_| tally.progress_due(|| now).is_some())
                .count()
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
