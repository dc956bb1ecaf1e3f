//! The one wait engine: every waiting command is a set of probes handed to [`wait_for_all`].
//!
//! A probe makes exactly one attempt and says Ready, NotYet(reason) or Fatal. Everything
//! about time lives here: the overall deadline, the fast start (an attempt every 50 ms for
//! the first 10 s, so a service that comes up quickly is seen at once) followed by the steady
//! `--interval` with ±10 % jitter (so a long wait costs a shared server at most one probe per
//! interval, and a fleet of pods does not probe in lockstep), the per-attempt timeout,
//! `--invert`, and the log lines (start, change of reason, progress every ~10 s, ready).
//! What a ready attempt produced (register's response body) comes back from the engine as
//! the probe's [`Probe::Output`].

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::duration::{Duration as FlagDuration, Elapsed};
use crate::exit::{Error, Result};
use crate::report;

/// How long the fast phase lasts, and how often it probes.
pub const FAST_PHASE: Duration = Duration::from_secs(10);
pub const FAST_INTERVAL: Duration = Duration::from_millis(50);
/// How often a still-waiting target says so.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// What one attempt found; `T` is what a ready attempt produced ([`Probe::Output`]).
#[derive(Debug)]
pub enum Attempt<T = ()> {
    /// The target is ready; `detail` says what was seen (`connected to 10.0.0.5:5432`).
    Ready { detail: String, output: T },
    /// Not yet; the reason is shown to the user when it changes.
    NotYet(String),
    /// Not yet, and the target asked not to be tried again for a while (an HTTP 503 or
    /// 429, with or without Retry-After): the next attempt waits at least `after`.
    Backoff { reason: String, after: Duration },
    /// Retrying cannot help (permission denied, impossible input): stop the wait now.
    Fatal(Error),
}

impl Attempt {
    /// Ready, for a probe that produces nothing but the fact.
    pub fn ready(detail: impl Into<String>) -> Self {
        Attempt::Ready {
            detail: detail.into(),
            output: (),
        }
    }
}

/// Why one piece of an attempt did not succeed (a lookup, a request, an echo, a clone):
/// worth another attempt, or not. Every helper a probe calls returns this one type, and
/// `.into()` turns it into the attempt's outcome, so no helper needs its own copy.
#[derive(Debug)]
pub enum Failure {
    /// It may work later (connection refused, a name not yet in DNS, a lost reply); the
    /// reason is shown to the user.
    Retry(String),
    /// Retrying cannot help: the wait ends at once with this error.
    Fatal(Error),
}

impl Failure {
    /// The failure as an error, for the one-shot callers that have no retry to offer.
    pub fn into_error(self) -> Error {
        match self {
            Failure::Retry(reason) => Error::Failed(reason),
            Failure::Fatal(error) => error,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Retry(reason) => f.write_str(reason),
            Failure::Fatal(error) => write!(f, "{error}"),
        }
    }
}

impl<T> From<Failure> for Attempt<T> {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Retry(reason) => Attempt::NotYet(reason),
            Failure::Fatal(error) => Attempt::Fatal(error),
        }
    }
}

/// An attempt that either saw the target ready (saying what it saw) or failed.
impl From<std::result::Result<String, Failure>> for Attempt {
    fn from(result: std::result::Result<String, Failure>) -> Self {
        match result {
            Ok(detail) => Attempt::ready(detail),
            Err(failure) => failure.into(),
        }
    }
}

/// One check of one target. Implementations make a single attempt: no loops, no sleeps.
pub trait Probe: Send + Sync + 'static {
    /// What a ready attempt produces for the caller (register: the response body); `()`
    /// for a probe whose only answer is "ready". `Default` is what an inverted wait
    /// returns: it ends when the target stopped answering, so nothing was produced.
    type Output: Default + Send + 'static;
    /// The target as the user wrote it (with secrets redacted), used in every message.
    fn target(&self) -> &str;
    fn attempt(&self) -> impl Future<Output = Attempt<Self::Output>> + Send;
    /// How the success line starts (`mydb:5432 is ready`, then ` after 1.2s (3 attempts)`);
    /// a task that does something says what it did (`registered with …`).
    fn ready_phrase(&self) -> String {
        format!("{} is ready", self.target())
    }
    /// True when attempts only look (a connection, a query, a request that changes
    /// nothing), so that a new one may start while an earlier one still waits for an
    /// answer. Never for an attempt with an effect (register, a command, a download).
    fn may_overlap(&self) -> bool {
        false
    }
}

/// The knobs every waiting command shares (`--timeout`, `--interval`, …), already validated.
#[derive(Debug, Clone, Copy)]
pub struct WaitOptions {
    /// `None` waits forever.
    pub timeout: Option<Duration>,
    pub interval: Duration,
    /// Who keeps a single attempt from taking forever.
    pub attempt: AttemptBound,
    pub invert: bool,
    /// `--stable-for`: ready only once every attempt for this long has been ready (zero:
    /// the first ready attempt is enough).
    pub stable_for: Duration,
}

impl WaitOptions {
    /// The same limit on an attempt, applied by the probe instead of the engine.
    pub fn bounded_by_probe(self) -> Self {
        WaitOptions {
            attempt: AttemptBound::Probe(self.attempt.limit()),
            ..self
        }
    }
}

/// Who ends an attempt that takes too long (`--attempt-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptBound {
    /// The engine abandons any attempt still running after this long (a connect, a
    /// lookup, an echo reply): the attempt is dropped and counts as not ready.
    Engine(Duration),
    /// The probe applies this limit itself, to the parts it can tell are stuck (connecting,
    /// waiting for the next byte): a download may take minutes as long as bytes keep
    /// coming, so the engine does not cut it.
    Probe(Duration),
}

impl AttemptBound {
    /// The limit, whoever applies it.
    pub fn limit(self) -> Duration {
        match self {
            AttemptBound::Engine(limit) | AttemptBound::Probe(limit) => limit,
        }
    }
}

/// A target that became ready, with what its last attempt produced.
#[derive(Debug, Clone)]
pub struct ReadyTarget<T = ()> {
    pub target: String,
    pub detail: String,
    pub attempts: u32,
    pub elapsed: Duration,
    pub output: T,
}

/// The latest state of one target, read when the deadline passes.
#[derive(Default)]
struct Progress {
    ready: bool,
    attempts: u32,
    last_reason: Option<String>,
    /// Ready since then, and still to stay ready for `--stable-for`.
    ready_since: Option<Instant>,
}

/// Waits until every probe is ready (or, with `invert`, not ready), concurrently.
///
/// `what` names the kind of check for the start line (`tcp`, `dns`, `http`). The targets
/// come back in the order of `probes`.
pub async fn wait_for_all<P: Probe>(
    what: &str,
    probes: Vec<P>,
    options: WaitOptions,
) -> Result<Vec<ReadyTarget<P::Output>>> {
    let start = Instant::now();
    let names: Vec<String> = probes.iter().map(|p| p.target().to_owned()).collect();
    if let Some(limit) = options.timeout
        && !options.stable_for.is_zero()
        && options.stable_for >= limit
    {
        return Err(Error::Usage(format!(
            "--stable-for {} can never be met within the timeout of {}; make it shorter, or the timeout longer",
            Elapsed(options.stable_for),
            Elapsed(limit)
        )));
    }
    announce_start(what, &names, &options);

    let mut tasks = JoinSet::new();
    let mut progress = Vec::with_capacity(probes.len());
    for (index, probe) in probes.into_iter().enumerate() {
        let state = Arc::new(Mutex::new(Progress::default()));
        progress.push(state.clone());
        tasks.spawn(crate::step::keep(async move {
            (index, watch(probe, options, start, state).await)
        }));
    }

    let all_ready = async {
        let mut ready: Vec<Option<ReadyTarget<P::Output>>> =
            std::iter::repeat_with(|| None).take(names.len()).collect();
        while let Some(joined) = tasks.join_next().await {
            let (index, outcome) =
                joined.map_err(|e| Error::Failed(format!("internal error: {e}")))?;
            ready[index] = Some(outcome?);
        }
        Ok::<_, Error>(ready.into_iter().flatten().collect::<Vec<_>>())
    };

    let ready = match options.timeout {
        None => all_ready.await?,
        Some(limit) => match tokio::time::timeout_at(start + limit, all_ready).await {
            Ok(result) => result?,
            Err(_) => {
                return Err(timed_out(
                    limit,
                    options.stable_for,
                    &names,
                    &progress,
                    options.invert,
                ));
            }
        },
    };
    if ready.len() > 1 {
        report::Event::new(
            report::Level::Info,
            "wait.done",
            format!(
                "all {} targets ready after {}",
                ready.len(),
                Elapsed(start.elapsed())
            ),
        )
        .field("elapsed_ms", start.elapsed().as_millis() as u64)
        .emit();
    }
    Ok(ready)
}

fn announce_start(what: &str, names: &[String], options: &WaitOptions) {
    let limit = match options.timeout {
        Some(t) => format!("timeout {}", Elapsed(t)),
        None => "no timeout".to_owned(),
    };
    let goal = if options.invert {
        " to stop being ready"
    } else {
        ""
    };
    let message = format!("waiting for {}{goal} ({what}, {limit})", names.join(", "));
    report::Event::new(report::Level::Info, "wait.start", message)
        .field("check", what)
        .field("targets", names.to_vec())
        .field("invert", options.invert)
        .field(
            "timeout_ms",
            options.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
        )
        .emit();
}

/// How many attempts of one target may be under way at once, for a probe whose attempts
/// may overlap ([`Probe::may_overlap`]).
pub const MAX_IN_FLIGHT: usize = 4;

/// An attempt under way: its start, and the future that ends in its outcome.
type InFlight<'a, T> = Pin<Box<dyn Future<Output = (Instant, Attempt<T>)> + Send + 'a>>;

/// Probes one target until it is ready or fatal. The caller owns the deadline.
///
/// Attempts start on the schedule of [`pause_after`]. A probe whose attempts may overlap
/// gets a new one at its due time even while earlier ones are still waiting for an answer
/// (up to [`MAX_IN_FLIGHT`]), so one connection a starting server never answers does not
/// hold the wait up for the whole `--attempt-timeout`. An answer older than one already
/// judged is stale and ignored.
async fn watch<P: Probe>(
    probe: P,
    options: WaitOptions,
    start: Instant,
    state: Arc<Mutex<Progress>>,
) -> Result<ReadyTarget<P::Output>> {
    let overlapping = probe.may_overlap() && matches!(options.attempt, AttemptBound::Engine(_));
    let limit = if overlapping { MAX_IN_FLIGHT } else { 1 };
    let mut judge = Judge::new(probe.target().to_owned(), options, start, state);
    let mut in_flight: Vec<InFlight<'_, P::Output>> = Vec::new();
    let mut last_started: Option<Instant> = None;
    loop {
        enum Next<T> {
            Start,
            Done(Instant, Attempt<T>),
        }
        let due = judge.next_due(last_started);
        let next = tokio::select! {
            biased;
            (started, outcome) = first_done(&mut in_flight), if !in_flight.is_empty() => {
                Next::Done(started, outcome)
            }
            _ = tokio::time::sleep_until(due), if in_flight.len() < limit => Next::Start,
        };
        match next {
            Next::Start => {
                let started = Instant::now();
                last_started = Some(started);
                in_flight.push(Box::pin(one_attempt(&probe, options, started)));
            }
            Next::Done(started, outcome) => {
                if let Some(verdict) = judge.judge(started, outcome, &probe) {
                    return verdict;
                }
            }
        }
    }
}

/// Runs one attempt, cut at the attempt timeout when the engine bounds it, and turned
/// around for `--invert`.
async fn one_attempt<P: Probe>(
    probe: &P,
    options: WaitOptions,
    started: Instant,
) -> (Instant, Attempt<P::Output>) {
    let outcome = match options.attempt {
        AttemptBound::Probe(_) => probe.attempt().await,
        AttemptBound::Engine(limit) => match tokio::time::timeout(limit, probe.attempt()).await {
            Ok(outcome) => outcome,
            Err(_) => Attempt::NotYet(no_answer_within(limit)),
        },
    };
    let outcome = if options.invert {
        invert(outcome)
    } else {
        outcome
    };
    (started, outcome)
}

/// The first of the attempts under way to end, taken out of the list.
async fn first_done<T>(in_flight: &mut Vec<InFlight<'_, T>>) -> (Instant, Attempt<T>) {
    std::future::poll_fn(|cx| {
        for index in 0..in_flight.len() {
            if let Poll::Ready(done) = in_flight[index].as_mut().poll(cx) {
                drop(in_flight.remove(index));
                return Poll::Ready(done);
            }
        }
        Poll::Pending
    })
    .await
}

/// What the outcomes of one target's attempts add up to, and the lines that say so: the
/// change of reason, the progress every ~10 s, the `--stable-for` run, ready.
struct Judge {
    target: String,
    options: WaitOptions,
    start: Instant,
    state: Arc<Mutex<Progress>>,
    attempts: u32,
    last_reason: Option<String>,
    last_line: Instant,
    /// The start of the first attempt of the current run of ready ones (`--stable-for`).
    ready_since: Option<Instant>,
    /// The start of the newest attempt judged: an answer from an older one is stale.
    newest_judged: Option<Instant>,
    /// A target that asked for a pause (HTTP 503, 429) is not tried again before this.
    not_before: Option<Instant>,
}

impl Judge {
    fn new(
        target: String,
        options: WaitOptions,
        start: Instant,
        state: Arc<Mutex<Progress>>,
    ) -> Self {
        Judge {
            target,
            options,
            start,
            state,
            attempts: 0,
            last_reason: None,
            last_line: start,
            ready_since: None,
            newest_judged: None,
            not_before: None,
        }
    }

    /// When the next attempt is due, given the start of the latest one (none yet: now).
    fn next_due(&self, last_started: Option<Instant>) -> Instant {
        let Some(last) = last_started else {
            return Instant::now();
        };
        let due = match self.ready_since {
            // Confirming goes on at the fast rate, up to the moment the run is long enough.
            Some(since) => (last + self.options.interval.min(FAST_INTERVAL))
                .min(since + self.options.stable_for),
            None => last + pause_after(last.duration_since(self.start), self.options.interval),
        };
        match self.not_before {
            Some(not_before) => due.max(not_before),
            None => due,
        }
    }

    /// Takes in the outcome of the attempt started at `started`: `Some` ends the wait.
    fn judge<P: Probe>(
        &mut self,
        started: Instant,
        outcome: Attempt<P::Output>,
        probe: &P,
    ) -> Option<Result<ReadyTarget<P::Output>>> {
        self.attempts += 1;
        if self.newest_judged.is_some_and(|newest| started < newest) {
            self.progress().attempts = self.attempts;
            return None;
        }
        self.newest_judged = Some(started);
        let options = self.options;
        if let Attempt::Backoff { after, .. } = &outcome {
            self.not_before = Some(Instant::now() + *after);
        }
        let unconfirmed = match (&outcome, options.stable_for.is_zero()) {
            (Attempt::Ready { detail, .. }, false) => {
                let since = *self.ready_since.get_or_insert_with(|| {
                    announce_confirming(&self.target, detail, options.stable_for);
                    started
                });
                started.duration_since(since) < options.stable_for
            }
            _ => false,
        };
        if let (Some(since), Attempt::NotYet(reason) | Attempt::Backoff { reason, .. }) =
            (self.ready_since, &outcome)
        {
            report::Event::new(
                report::Level::Info,
                "wait.unstable",
                format!(
                    "{} was ready for {}, then not: {reason}; waiting for it to stay ready for {}",
                    self.target,
                    Elapsed(started.duration_since(since)),
                    Elapsed(options.stable_for)
                ),
            )
            .field("target", self.target.clone())
            .field("reason", reason.clone())
            .field("attempts", self.attempts)
            .emit();
            self.ready_since = None;
            // Said just now; the same reason again is news only after the next ready run.
            self.last_reason = Some(reason.clone());
            self.last_line = Instant::now();
        }
        let ready_since = self.ready_since;
        self.progress().ready_since = ready_since;
        match outcome {
            Attempt::Ready { .. } if unconfirmed => {
                self.progress().attempts = self.attempts;
                None
            }
            Attempt::Ready { detail, output } => Some(Ok(self.ready(detail, output, probe))),
            Attempt::Fatal(error) => Some(Err(error.for_target(&self.target))),
            Attempt::NotYet(reason) | Attempt::Backoff { reason, .. } => {
                self.not_ready(reason);
                None
            }
        }
    }

    fn progress(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ready<P: Probe>(
        &self,
        detail: String,
        output: P::Output,
        probe: &P,
    ) -> ReadyTarget<P::Output> {
        self.progress().ready = true;
        let attempts = self.attempts;
        let elapsed = self.start.elapsed();
        let plural = report::plural(attempts as usize);
        let phrase = probe.ready_phrase();
        let message = if detail.is_empty() {
            format!(
                "{phrase} after {} ({attempts} attempt{plural})",
                Elapsed(elapsed)
            )
        } else {
            format!(
                "{phrase} after {} ({attempts} attempt{plural}): {detail}",
                Elapsed(elapsed)
            )
        };
        report::Event::new(report::Level::Info, "wait.ready", message)
            .field("target", self.target.clone())
            .field("attempts", attempts)
            .field("elapsed_ms", elapsed.as_millis() as u64)
            .field("detail", detail.clone())
            .emit();
        ReadyTarget {
            target: self.target.clone(),
            detail,
            attempts,
            elapsed,
            output,
        }
    }

    /// A not-ready outcome: said when the reason changes, and every ~10 s while it does not.
    fn not_ready(&mut self, reason: String) {
        let target = &self.target;
        let attempts = self.attempts;
        {
            let mut progress = self.progress();
            progress.attempts = attempts;
            progress.last_reason = Some(reason.clone());
        }
        let now = Instant::now();
        if self.last_reason.as_deref() != Some(reason.as_str()) {
            report::Event::new(
                report::Level::Info,
                "wait.not_ready",
                format!("{target} is not ready: {reason}"),
            )
            .field("target", target.clone())
            .field("reason", reason.clone())
            .field("attempts", attempts)
            .emit();
            self.last_reason = Some(reason);
            self.last_line = now;
        } else if now.duration_since(self.last_line) >= PROGRESS_EVERY {
            let elapsed = now.duration_since(self.start);
            report::Event::new(
                report::Level::Info,
                "wait.progress",
                format!(
                    "still waiting for {target} after {} ({attempts} attempts): {reason}",
                    Elapsed(elapsed)
                ),
            )
            .field("target", target.clone())
            .field("reason", reason)
            .field("attempts", attempts)
            .field("elapsed_ms", elapsed.as_millis() as u64)
            .emit();
            self.last_line = now;
        }
    }
}

/// The first ready attempt of a run that `--stable-for` must confirm.
fn announce_confirming(target: &str, detail: &str, stable_for: Duration) {
    let seen = if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    };
    report::Event::new(
        report::Level::Info,
        "wait.confirming",
        format!(
            "{target} is ready{seen}; confirming it stays ready for {} (--stable-for)",
            Elapsed(stable_for)
        ),
    )
    .field("target", target.to_owned())
    .field("stable_for_ms", stable_for.as_millis() as u64)
    .emit();
}

/// The reason an attempt cut short by `--attempt-timeout` gives, whoever cut it.
pub fn no_answer_within(limit: Duration) -> String {
    format!("no answer within {} (--attempt-timeout)", Elapsed(limit))
}

fn invert<T: Default>(outcome: Attempt<T>) -> Attempt<T> {
    match outcome {
        Attempt::Ready { detail, .. } if detail.is_empty() => Attempt::NotYet("still ready".into()),
        Attempt::Ready { detail, .. } => Attempt::NotYet(format!("still ready ({detail})")),
        Attempt::NotYet(reason) | Attempt::Backoff { reason, .. } => Attempt::Ready {
            detail: format!("no longer ready: {reason}"),
            output: T::default(),
        },
        fatal @ Attempt::Fatal(_) => fatal,
    }
}

/// Start-to-start spacing of attempts: fast during the first seconds, then the steady
/// interval with ±10 % jitter.
pub fn pause_after(since_start: Duration, interval: Duration) -> Duration {
    if since_start < FAST_PHASE {
        return interval.min(FAST_INTERVAL);
    }
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

fn timed_out(
    limit: Duration,
    stable_for: Duration,
    names: &[String],
    progress: &[Arc<Mutex<Progress>>],
    invert: bool,
) -> Error {
    let label = if invert { "last state" } else { "last error" };
    let goal = if invert { " to stop being ready" } else { "" };
    let pending: Vec<String> = names
        .iter()
        .zip(progress)
        .filter_map(|(name, state)| {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            match (&state.last_reason, state.ready) {
                (_, true) => None,
                (_, false) if let Some(since) = state.ready_since => Some(format!(
                    "{name}{goal} (ready for {} of the {} --stable-for asks)",
                    Elapsed(since.elapsed()),
                    Elapsed(stable_for)
                )),
                (Some(reason), false) => Some(format!("{name}{goal} ({label}: {reason})")),
                (None, false) => Some(format!(
                    "{name}{goal} (its first attempt was still under way)"
                )),
            }
        })
        .collect();
    Error::TimedOut(format!(
        "timed out after {} waiting for {}",
        Elapsed(limit),
        pending.join(", ")
    ))
}

/// The flags of every command that retries through the wait engine; see `wait`.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Waiting")]
pub struct RetryArgs {
    /// Give up after this long (0 = never); exit code 124 (timed out).
    #[arg(
        long,
        env = "INITBOX_TIMEOUT",
        default_value = "5m",
        value_name = "DURATION"
    )]
    pub timeout: FlagDuration,
    /// Pause between attempts once the first 10 s of fast (50 ms) attempts are over; ±10 % jitter.
    #[arg(
        long,
        env = "INITBOX_INTERVAL",
        default_value = "1s",
        value_name = "DURATION",
        value_parser = FlagDuration::positive
    )]
    pub interval: FlagDuration,
    /// Abandon a single attempt after this long.
    #[arg(
        long,
        env = "INITBOX_ATTEMPT_TIMEOUT",
        default_value = "2s",
        value_name = "DURATION",
        value_parser = FlagDuration::positive
    )]
    pub attempt_timeout: FlagDuration,
}

/// The flags of the checks (wait-for-*, ping): retrying, and `--invert`.
#[derive(Debug, Clone, clap::Args)]
pub struct WaitArgs {
    #[command(flatten)]
    pub retry: RetryArgs,
    /// Wait until the targets are NOT ready (a port closed, a name gone).
    #[arg(long, env = "INITBOX_INVERT", help_heading = "Waiting")]
    pub invert: bool,
    /// Ready only once every attempt for this long has been ready (attempts go on at the
    /// fast rate meanwhile): a server that restarts once it has started, such as the
    /// official PostgreSQL and MySQL images after their init scripts, is not taken for
    /// ready the first time.
    #[arg(
        long,
        env = "INITBOX_STABLE_FOR",
        value_name = "DURATION",
        default_value = "0s",
        help_heading = "Waiting"
    )]
    pub stable_for: FlagDuration,
}

impl WaitArgs {
    /// A `--stable-for` that can never fit in `--timeout` is refused when the flags are
    /// parsed, so `run --check` refuses it too; every check's `Task::validate` calls this.
    /// (A step's own `timeout:` is known only when the step runs: [`wait_for_all`] checks
    /// the limit it is given.)
    pub fn validate(&self) -> std::result::Result<(), crate::cli::Invalid> {
        let stable_for = self.stable_for.get();
        match self.retry.timeout.as_limit() {
            Some(limit) if !stable_for.is_zero() && stable_for >= limit => {
                Err(crate::cli::Invalid {
                    arg: "--stable-for <DURATION>".into(),
                    value: self.stable_for.to_string(),
                    reason: format!(
                        "can never be met within the timeout of {}; make it shorter, or the \
                         timeout longer",
                        Elapsed(limit)
                    ),
                })
            }
            _ => Ok(()),
        }
    }

    /// The options of a check: the engine bounds each attempt.
    pub fn options(&self) -> WaitOptions {
        WaitOptions {
            invert: self.invert,
            stable_for: self.stable_for.get(),
            ..self.retry.options()
        }
    }
}

impl RetryArgs {
    /// The options the flags give (clap has already refused impossible values); the engine
    /// bounds each attempt unless the caller hands that to the probe
    /// ([`WaitOptions::bounded_by_probe`]).
    pub fn options(&self) -> WaitOptions {
        WaitOptions {
            timeout: crate::step::bound(self.timeout.as_limit()),
            interval: self.interval.get(),
            attempt: AttemptBound::Engine(self.attempt_timeout.get()),
            invert: false,
            stable_for: Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A probe that becomes ready at a given time and counts its attempts.
    struct ReadyAt {
        name: String,
        at: Instant,
        attempts: Arc<AtomicU32>,
        hang: bool,
    }

    impl ReadyAt {
        fn new(name: &str, after: Duration) -> Self {
            ReadyAt {
                name: name.into(),
                at: Instant::now() + after,
                attempts: Arc::new(AtomicU32::new(0)),
                hang: false,
            }
        }
    }

    impl Probe for ReadyAt {
        type Output = ();
        fn target(&self) -> &str {
            &self.name
        }
        async fn attempt(&self) -> Attempt {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            if self.hang {
                std::future::pending::<()>().await;
            }
            if Instant::now() >= self.at {
                Attempt::ready("up")
            } else {
                Attempt::NotYet("connection refused".into())
            }
        }
    }

    struct Fatal;
    impl Probe for Fatal {
        type Output = ();
        fn target(&self) -> &str {
            "bad"
        }
        async fn attempt(&self) -> Attempt {
            Attempt::Fatal(Error::Failed("permission denied".into()))
        }
    }

    fn options(timeout: u64) -> WaitOptions {
        WaitOptions {
            timeout: (timeout > 0).then(|| Duration::from_secs(timeout)),
            interval: Duration::from_secs(1),
            attempt: AttemptBound::Engine(Duration::from_secs(2)),
            invert: false,
            stable_for: Duration::ZERO,
        }
    }

    /// Ready in the given windows of time since its creation (a server that starts, stops
    /// to restart, and starts again, as the official database images do).
    struct Windows {
        start: Instant,
        up: Vec<(Duration, Duration)>,
        attempts: Arc<AtomicU32>,
    }
    impl Probe for Windows {
        type Output = ();
        fn target(&self) -> &str {
            "db"
        }
        async fn attempt(&self) -> Attempt {
            self.attempts.fetch_add(1, Ordering::SeqCst);
            let now = self.start.elapsed();
            if self.up.iter().any(|(from, to)| (*from..*to).contains(&now)) {
                Attempt::ready("up")
            } else {
                Attempt::NotYet("connection refused".into())
            }
        }
    }

    fn stable(timeout: u64, stable_for: Duration) -> WaitOptions {
        WaitOptions {
            stable_for,
            ..options(timeout)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn stable_for_skips_a_first_start_that_restarts() {
        let secs = Duration::from_secs;
        let probe = Windows {
            start: Instant::now(),
            // Up for 1 s (the init scripts' temporary server), down 2 s, then up for good.
            up: vec![(secs(1), secs(2)), (secs(4), secs(3600))],
            attempts: Arc::default(),
        };
        let count = probe.attempts.clone();
        let start = Instant::now();
        let ready = wait_for_all("test", vec![probe], stable(60, secs(3)))
            .await
            .unwrap();
        let took = start.elapsed();
        // Ready from 4 s on; confirmed by an attempt 3 s later.
        assert!(
            took >= secs(7) && took <= Duration::from_millis(7050),
            "{took:?}"
        );
        // The confirming went on at the fast rate: one attempt per 50 ms all along.
        assert_eq!(count.load(Ordering::SeqCst), ready[0].attempts);
        assert!(ready[0].attempts >= 140, "{}", ready[0].attempts);
    }

    #[tokio::test(start_paused = true)]
    async fn stable_for_ends_at_the_exact_moment_the_run_is_long_enough() {
        let probe = Windows {
            start: Instant::now(),
            up: vec![(Duration::ZERO, Duration::from_secs(3600))],
            attempts: Arc::default(),
        };
        let mut options = stable(60, Duration::from_millis(120));
        options.interval = Duration::from_secs(1);
        let start = Instant::now();
        let ready = wait_for_all("test", vec![probe], options).await.unwrap();
        // Attempts at 0, 50, 100 and 120 ms: the last one is due when the run is complete.
        assert_eq!(start.elapsed(), Duration::from_millis(120));
        assert_eq!(ready[0].attempts, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn stable_for_timing_out_says_how_long_it_had_been_ready() {
        let secs = Duration::from_secs;
        let probe = Windows {
            start: Instant::now(),
            up: vec![(secs(8), secs(3600))],
            attempts: Arc::default(),
        };
        let error = wait_for_all("test", vec![probe], stable(10, secs(5)))
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "timed out after 10s waiting for db (ready for 2s of the 5s --stable-for asks)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stable_for_longer_than_the_timeout_is_refused_before_any_attempt() {
        let probe = ReadyAt::new("a", Duration::ZERO);
        let count = probe.attempts.clone();
        let error = wait_for_all("test", vec![probe], stable(10, Duration::from_secs(10)))
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Usage(_)), "{error}");
        assert!(error.to_string().contains("--stable-for 10s"), "{error}");
        assert_eq!(count.load(Ordering::SeqCst), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn ready_at_once_takes_one_attempt() {
        let probe = ReadyAt::new("a", Duration::ZERO);
        let count = probe.attempts.clone();
        let ready = wait_for_all("test", vec![probe], options(5)).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        assert_eq!(ready[0].attempts, 1);
        assert_eq!(ready[0].detail, "up");
    }

    #[tokio::test(start_paused = true)]
    async fn fast_phase_sees_a_quick_service_within_50ms() {
        let probe = ReadyAt::new("a", Duration::from_millis(1010));
        let start = Instant::now();
        let ready = wait_for_all("test", vec![probe], options(60))
            .await
            .unwrap();
        let seen = start.elapsed();
        assert!(seen >= Duration::from_millis(1010), "{seen:?}");
        assert!(seen <= Duration::from_millis(1060), "{seen:?}");
        // One attempt per 50 ms: 0, 50, …, 1050 ms.
        assert_eq!(ready[0].attempts, 22);
    }

    #[tokio::test(start_paused = true)]
    async fn after_the_fast_phase_attempts_come_once_per_interval() {
        let probe = ReadyAt::new("a", Duration::from_secs(40));
        let ready = wait_for_all("test", vec![probe], options(0)).await.unwrap();
        // 200 fast attempts in the first 10 s, then about one a second for 30 s.
        let steady = ready[0].attempts - 200;
        assert!((27..=35).contains(&steady), "steady attempts: {steady}");
        assert!(ready[0].elapsed < Duration::from_millis(41_200));
    }

    #[test]
    fn steady_pause_has_ten_percent_jitter() {
        let interval = Duration::from_secs(1);
        let pauses: Vec<Duration> = (0..1000)
            .map(|_| pause_after(Duration::from_secs(11), interval))
            .collect();
        assert!(pauses.iter().all(|p| *p >= Duration::from_millis(900)));
        assert!(pauses.iter().all(|p| *p <= Duration::from_millis(1100)));
        let distinct: std::collections::HashSet<_> = pauses.iter().collect();
        assert!(distinct.len() > 100, "jitter must vary");
        assert_eq!(pause_after(Duration::from_secs(1), interval), FAST_INTERVAL);
        assert_eq!(
            pause_after(Duration::from_secs(1), Duration::from_millis(10)),
            Duration::from_millis(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_names_the_target_and_last_reason() {
        let probe = ReadyAt::new("mydb:5432", Duration::from_secs(3600));
        let start = Instant::now();
        let error = wait_for_all("test", vec![probe], options(30))
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        assert!(matches!(error, Error::TimedOut(_)));
        assert_eq!(
            error.to_string(),
            "timed out after 30s waiting for mydb:5432 (last error: connection refused)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn fatal_ends_the_wait_at_once() {
        let start = Instant::now();
        let error = wait_for_all("test", vec![Fatal], options(300))
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert!(matches!(error, Error::Failed(_)));
        assert_eq!(error.to_string(), "bad: permission denied");
    }

    #[tokio::test(start_paused = true)]
    async fn all_targets_must_pass_and_run_concurrently() {
        let probes = vec![
            ReadyAt::new("a", Duration::from_secs(2)),
            ReadyAt::new("b", Duration::from_secs(5)),
            ReadyAt::new("c", Duration::ZERO),
        ];
        let start = Instant::now();
        let ready = wait_for_all("test", probes, options(60)).await.unwrap();
        let took = start.elapsed();
        assert!(took >= Duration::from_secs(5) && took < Duration::from_millis(5100));
        let names: Vec<_> = ready.iter().map(|r| r.target.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_lists_only_the_targets_still_waiting() {
        let probes = vec![
            ReadyAt::new("fast", Duration::ZERO),
            ReadyAt::new("slow", Duration::from_secs(3600)),
        ];
        let error = wait_for_all("test", probes, options(3)).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "timed out after 3s waiting for slow (last error: connection refused)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_attempt_is_cut_by_the_attempt_timeout() {
        let mut probe = ReadyAt::new("hang", Duration::ZERO);
        probe.hang = true;
        let count = probe.attempts.clone();
        let error = wait_for_all("test", vec![probe], options(5))
            .await
            .unwrap_err();
        // Attempts start at 0, 2.05, 4.1 s: each cut after 2 s.
        assert_eq!(count.load(Ordering::SeqCst), 3);
        assert_eq!(
            error.to_string(),
            "timed out after 5s waiting for hang (last error: no answer within 2s (--attempt-timeout))"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn invert_waits_until_not_ready() {
        let probe = ReadyAt::new("a", Duration::ZERO);
        let mut opts = options(2);
        opts.invert = true;
        let error = wait_for_all("test", vec![probe], opts).await.unwrap_err();
        assert_eq!(
            error.to_string(),
            "timed out after 2s waiting for a to stop being ready (last state: still ready (up))"
        );

        let probe = ReadyAt::new("b", Duration::from_secs(3600));
        let ready = wait_for_all("test", vec![probe], opts).await.unwrap();
        assert_eq!(ready[0].detail, "no longer ready: connection refused");
    }

    /// A probe that produces the number of the attempt that succeeded, on the third.
    struct Counting {
        attempts: AtomicU32,
        takes: Duration,
    }

    impl Probe for Counting {
        type Output = Vec<u8>;
        fn target(&self) -> &str {
            "counting"
        }
        async fn attempt(&self) -> Attempt<Vec<u8>> {
            let n = self.attempts.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::time::sleep(self.takes).await;
            if n < 3 {
                return Attempt::NotYet("not yet".into());
            }
            Attempt::Ready {
                detail: format!("attempt {n}"),
                output: n.to_string().into_bytes(),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_ready_attempt_hands_its_output_to_the_caller() {
        let probe = Counting {
            attempts: AtomicU32::new(0),
            takes: Duration::ZERO,
        };
        let start = Instant::now();
        let ready = wait_for_all("test", vec![probe], options(5)).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].attempts, 3);
        assert_eq!(ready[0].detail, "attempt 3");
        assert_eq!(ready[0].output, b"3");
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_the_probe_bounds_is_not_cut_by_the_engine() {
        let probe = Counting {
            attempts: AtomicU32::new(0),
            takes: Duration::from_secs(3),
        };
        let start = Instant::now();
        let opts = options(60).bounded_by_probe();
        assert_eq!(opts.attempt, AttemptBound::Probe(Duration::from_secs(2)));
        let ready = wait_for_all("test", vec![probe], opts).await.unwrap();
        // Three attempts of 3 s each, longer than the 2 s limit the probe applies itself;
        // in the fast phase the next one starts as soon as the last has ended.
        assert_eq!(start.elapsed(), Duration::from_secs(9));
        assert_eq!(ready[0].output, b"3");
    }

    #[tokio::test(start_paused = true)]
    async fn an_inverted_wait_produces_the_default_output() {
        let probe = Counting {
            attempts: AtomicU32::new(0),
            takes: Duration::ZERO,
        };
        let mut opts = options(5);
        opts.invert = true;
        let ready = wait_for_all("test", vec![probe], opts).await.unwrap();
        assert_eq!(ready[0].attempts, 1);
        assert_eq!(ready[0].detail, "no longer ready: not yet");
        assert!(ready[0].output.is_empty());
    }

    /// A read-only probe whose attempt `n` (from 1) takes `answer(n).0` and then says
    /// `answer(n).1`; it counts the attempts under way at once.
    struct Overlapping {
        overlap: bool,
        answer: fn(u32) -> (Duration, bool),
        started: AtomicU32,
        under_way: Arc<AtomicU32>,
        most_under_way: Arc<AtomicU32>,
    }

    impl Overlapping {
        fn new(overlap: bool, answer: fn(u32) -> (Duration, bool)) -> Self {
            Overlapping {
                overlap,
                answer,
                started: AtomicU32::new(0),
                under_way: Arc::default(),
                most_under_way: Arc::default(),
            }
        }
    }

    /// Counts an attempt as under way until it is dropped (answered or abandoned).
    struct UnderWay(Arc<AtomicU32>);
    impl Drop for UnderWay {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    impl Probe for Overlapping {
        type Output = ();
        fn target(&self) -> &str {
            "zk"
        }
        fn may_overlap(&self) -> bool {
            self.overlap
        }
        async fn attempt(&self) -> Attempt {
            let n = self.started.fetch_add(1, Ordering::SeqCst) + 1;
            let now = self.under_way.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_under_way.fetch_max(now, Ordering::SeqCst);
            let _under_way = UnderWay(self.under_way.clone());
            let (takes, ready) = (self.answer)(n);
            tokio::time::sleep(takes).await;
            if ready {
                Attempt::ready("serving")
            } else {
                Attempt::NotYet("not serving".into())
            }
        }
    }

    /// The first connection is never answered (a server that accepted it before it served);
    /// every later one is answered at once.
    fn first_unanswered(n: u32) -> (Duration, bool) {
        match n {
            1 => (Duration::from_secs(3600), false),
            _ => (Duration::ZERO, true),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_never_answered_does_not_hold_up_an_overlapping_probe() {
        let start = Instant::now();
        let probe = Overlapping::new(true, first_unanswered);
        wait_for_all("test", vec![probe], options(60))
            .await
            .unwrap();
        // The second attempt starts at its due time while the first still waits.
        assert_eq!(start.elapsed(), FAST_INTERVAL);

        // A probe whose attempts may not overlap waits the first one out.
        let start = Instant::now();
        let probe = Overlapping::new(false, first_unanswered);
        wait_for_all("test", vec![probe], options(60))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn overlapping_attempts_are_bounded() {
        fn never_answered(_: u32) -> (Duration, bool) {
            (Duration::from_secs(3600), false)
        }
        for (overlap, most) in [(true, MAX_IN_FLIGHT as u32), (false, 1)] {
            let probe = Overlapping::new(overlap, never_answered);
            let (under_way, most_under_way) =
                (probe.under_way.clone(), probe.most_under_way.clone());
            let error = wait_for_all("test", vec![probe], options(5))
                .await
                .unwrap_err();
            assert_eq!(
                most_under_way.load(Ordering::SeqCst),
                most,
                "overlap {overlap}"
            );
            // The timeout aborted the target's task, which drops every attempt still under
            // way once the runtime has run it (an aborted task goes at its next turn).
            tokio::task::yield_now().await;
            assert_eq!(under_way.load(Ordering::SeqCst), 0);
            assert_eq!(
                error.to_string(),
                "timed out after 5s waiting for zk (last error: no answer within 2s (--attempt-timeout))"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stale_answer_does_not_break_a_stable_for_run() {
        // The first attempt's "not serving" comes back at 300 ms, after the second attempt
        // (50 ms) saw the server serving: it is older news and ignored.
        fn slow_first(n: u32) -> (Duration, bool) {
            match n {
                1 => (Duration::from_millis(300), false),
                _ => (Duration::ZERO, true),
            }
        }
        let start = Instant::now();
        let probe = Overlapping::new(true, slow_first);
        let opts = stable(60, Duration::from_millis(500));
        wait_for_all("test", vec![probe], opts).await.unwrap();
        assert_eq!(start.elapsed(), FAST_INTERVAL + Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_the_probe_bounds_never_overlaps() {
        let probe = Overlapping::new(true, first_unanswered);
        let most_under_way = probe.most_under_way.clone();
        let opts = options(1).bounded_by_probe();
        wait_for_all("test", vec![probe], opts).await.unwrap_err();
        assert_eq!(most_under_way.load(Ordering::SeqCst), 1);
    }
}
