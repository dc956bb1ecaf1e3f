//! Runs a validated pipeline with init-container semantics: a step starts when the steps it
//! needs have succeeded (by default: the step before it, so a plain list runs strictly in
//! order); independent steps run concurrently; a failed step is restarted in-process with
//! the crash-loop schedule under OnFailure, or ends the run under Never; a final failure
//! cancels the steps still running; `activeDeadline` bounds everything. Every transition
//! is logged with the kubectl-style summary and written to the status file.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::spec::{Backoff, Pipeline, RestartPolicy};
use super::status::{self, PipelineStatus, State, StatusFile};
use crate::duration::Elapsed;
use crate::exit::{Error, ExitCode, Result, Signal};
use crate::{report, signals, step};

/// Where the runner reports, besides the log.
pub struct Outputs {
    pub status_file: Option<PathBuf>,
    pub termination_log: Option<PathBuf>,
    /// Whether a `-- CMD` follows success (`PodInitializing`), or not (`Completed`).
    pub hand_off: bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Pending,
    Running { since: Instant },
    BackingOff { until: Instant },
    Succeeded,
    Failed,
}

/// The status shared with the guard that reports an interrupted run.
struct Shared {
    status: Mutex<PipelineStatus>,
    file: StatusFile,
    /// A status file that stopped being writable mid-run is reported once, not per change.
    file_warned: AtomicBool,
    termination_log: Option<PathBuf>,
}

impl Shared {
    /// Applies a transition and rewrites the status file; returns the `Init:N/M` summary.
    fn update(&self, change: impl FnOnce(&mut PipelineStatus)) -> String {
        let (summary, written) = self.apply(change);
        if let Err(message) = written
            && !self.file_warned.swap(true, Ordering::Relaxed)
        {
            report::warn("status.write", message);
        }
        summary
    }

    fn apply(&self, change: impl FnOnce(&mut PipelineStatus)) -> (String, Result<(), String>) {
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        change(&mut status);
        if status.finished_at.is_none() {
            status.summarize();
        }
        let written = self.file.write(&status);
        (status.status.clone(), written)
    }
}

/// Writes the final status when the run is dropped unfinished (SIGTERM, SIGINT): the steps
/// still running end as terminated, and the termination message says why.
struct FinishOnDrop {
    shared: Arc<Shared>,
    finished: bool,
}

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Dropped unfinished without a signal recorded: only a SIGTERM does that.
        let signal = signals::received().unwrap_or(Signal::Terminate);
        let code = ExitCode::for_signal(signal).code();
        let message = format!("interrupted by {signal}");
        self.shared.update(|status| {
            terminate_running(status, code, "Interrupted", &message);
            status.phase = "Failed";
            status.message = Some(message.clone());
            status.finished_at = Some(status::now());
        });
        let status = self.shared.status.lock().unwrap_or_else(|p| p.into_inner());
        status::write_termination_message(
            self.shared.termination_log.as_deref(),
            &format!("{}: {message}", status.status),
        );
    }
}

/// Marks every running or waiting step terminated (a cancelled sibling, a deadline, a signal).
fn terminate_running(status: &mut PipelineStatus, code: i32, reason: &'static str, message: &str) {
    let now = status::now();
    for step in &mut status.init_container_statuses {
        let started_at = match &step.state {
            State::Running { started_at } => started_at.clone(),
            State::Waiting {
                reason: "CrashLoopBackOff",
                ..
            } => now.clone(),
            _ => continue,
        };
        step.state = State::Terminated {
            exit_code: code,
            reason,
            message: Some(message.to_owned()),
            started_at,
            finished_at: now.clone(),
        };
    }
}

/// The delay before restart number `restart` (1-based): 0, then `initial`, doubling up to
/// `max`, with ±10 % jitter so a fleet of pods does not retry in lockstep.
pub fn restart_delay(restart: u32, backoff: Backoff) -> Duration {
    if restart <= 1 {
        return Duration::ZERO;
    }
    let doubled = backoff
        .initial
        .saturating_mul(1u32.checked_shl(restart - 2).unwrap_or(u32::MAX));
    doubled
        .min(backoff.max)
        .mul_f64(0.9 + 0.2 * fastrand::f64())
}

pub async fn run(pipeline: Pipeline, outputs: Outputs) -> Result<()> {
    let names: Vec<(String, String)> = pipeline
        .steps
        .iter()
        .map(|s| (s.name.clone(), s.task.clone()))
        .collect();
    let shared = Arc::new(Shared {
        status: Mutex::new(PipelineStatus::new(&names)),
        file: StatusFile::new(outputs.status_file.clone()),
        file_warned: AtomicBool::new(false),
        termination_log: outputs.termination_log.clone(),
    });
    let mut guard = FinishOnDrop {
        shared: shared.clone(),
        finished: false,
    };
    let started = Instant::now();
    // A status file that cannot be written is a mistake in the pod spec (a read-only or
    // missing volume): said before any step runs, not discovered after the work is done.
    let (summary, written) = shared.apply(|status| status.phase = "Running");
    let written =
        written.and_then(|()| status::check_termination_log(outputs.termination_log.as_deref()));
    if let Err(message) = written {
        guard.finished = true;
        status::write_termination_message(outputs.termination_log.as_deref(), &message);
        return Err(Error::Failed(message));
    }
    report::Event::new(
        report::Level::Info,
        "pipeline.start",
        format!(
            "running {} step{} [{summary}]",
            names.len(),
            report::plural(names.len())
        ),
    )
    .field(
        "steps",
        names.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
    )
    .field("status", summary.clone())
    .emit();

    let mut scheduler = Scheduler {
        phases: vec![Phase::Pending; pipeline.steps.len()],
        restarts: vec![0; pipeline.steps.len()],
        env: Arc::new(pipeline.env.clone()),
        deadline: pipeline.active_deadline.map(|limit| started + limit),
        pipeline,
        shared: shared.clone(),
        running: JoinSet::new(),
    };
    // Past the deadline, the steps' own waits end first and say what they were waiting
    // for (see `finished`); this bound is for work that does not watch the clock (sleep).
    let outcome = match scheduler.deadline {
        None => scheduler.schedule().await,
        Some(at) => {
            match tokio::time::timeout_at(at + step::REPORT_GRACE, scheduler.schedule()).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    scheduler.running.abort_all();
                    let message = scheduler.deadline_passed(None);
                    shared.update(|status| {
                        terminate_running(
                            status,
                            ExitCode::TimedOut.code(),
                            "DeadlineExceeded",
                            &message,
                        );
                    });
                    Err(Error::TimedOut(message))
                }
            }
        }
    };
    guard.finished = true;
    let elapsed = Elapsed(started.elapsed());
    match outcome {
        Ok(()) => {
            let done = if outputs.hand_off {
                "PodInitializing"
            } else {
                "Completed"
            };
            shared.update(|status| {
                status.phase = "Succeeded";
                status.status = done.into();
                status.finished_at = Some(status::now());
            });
            report::Event::new(
                report::Level::Info,
                "pipeline.done",
                match names.len() {
                    1 => format!("the step completed in {elapsed} [{done}]"),
                    n => format!("all {n} steps completed in {elapsed} [{done}]"),
                },
            )
            .field("status", done)
            .emit();
            Ok(())
        }
        Err(error) => {
            let message = error.to_string();
            shared.update(|status| {
                status.phase = "Failed";
                status.status = "Init:Error".into();
                status.message = Some(message.clone());
                status.finished_at = Some(status::now());
            });
            status::write_termination_message(
                outputs.termination_log.as_deref(),
                &format!("Init:Error: {message}"),
            );
            Err(error)
        }
    }
}

struct Scheduler {
    pipeline: Pipeline,
    phases: Vec<Phase>,
    restarts: Vec<u32>,
    shared: Arc<Shared>,
    /// The file's `env:` map, for every step.
    env: Arc<Vec<(String, String)>>,
    /// When `activeDeadline` passes.
    deadline: Option<Instant>,
    running: JoinSet<(usize, Result<()>)>,
}

impl Scheduler {
    /// Runs steps until all succeeded or one failed for good.
    async fn schedule(&mut self) -> Result<()> {
        loop {
            self.start_ready_steps();
            if self.phases.iter().all(|p| *p == Phase::Succeeded) {
                return Ok(());
            }
            let wake = self
                .phases
                .iter()
                .filter_map(|p| match p {
                    Phase::BackingOff { until } => Some(*until),
                    _ => None,
                })
                .min();
            tokio::select! {
                Some(joined) = self.running.join_next() => {
                    let (index, result) = joined
                        .map_err(|e| Error::Failed(format!("a step stopped unexpectedly: {e}")))?;
                    self.finished(index, result)?;
                }
                _ = sleep_until(wake), if wake.is_some() => {}
                else => {
                    return Err(Error::Failed("no step can run: the pipeline is stuck".into()));
                }
            }
        }
    }

    fn start_ready_steps(&mut self) {
        let now = Instant::now();
        for index in 0..self.phases.len() {
            let ready = match self.phases[index] {
                Phase::Pending => self.pipeline.steps[index]
                    .needs
                    .iter()
                    .all(|&needed| self.phases[needed] == Phase::Succeeded),
                Phase::BackingOff { until } => until <= now,
                _ => false,
            };
            if ready {
                self.start(index);
            }
        }
    }

    fn start(&mut self, index: usize) {
        let step = &self.pipeline.steps[index];
        self.phases[index] = Phase::Running {
            since: Instant::now(),
        };
        let summary = self.shared.update(|status| {
            status.init_container_statuses[index].state = State::Running {
                started_at: status::now(),
            };
        });
        let restart = self.restarts[index];
        let again = if restart > 0 {
            format!(" (restart {restart})")
        } else {
            String::new()
        };
        report::Event::new(
            report::Level::Info,
            "step.start",
            format!(
                "step {} ({}) started{again} [{summary}]",
                step.name, step.task
            ),
        )
        .field("step", step.name.clone())
        .field("restart_count", restart)
        .field("status", summary)
        .emit();
        let command = step.command.clone();
        let timeout = step.timeout;
        let own_deadline = timeout.map(|limit| Instant::now() + limit);
        let context = step::Context {
            name: Arc::from(step.name.as_str()),
            env: self.env.clone(),
            // The step's work knows the nearer of its own deadline and the pipeline's, so
            // its waits announce and keep that limit (see `step::bound`).
            deadline: step::nearer(own_deadline, self.deadline),
        };
        self.running.spawn(async move {
            let work = step::run_in(context, crate::execute(command));
            let result = match (timeout, own_deadline) {
                (Some(limit), Some(at)) => tokio::time::timeout_at(at + step::REPORT_GRACE, work)
                    .await
                    .unwrap_or_else(|_| {
                        Err(Error::TimedOut(format!(
                            "the step's timeout of {} passed",
                            Elapsed(limit)
                        )))
                    }),
                _ => work.await,
            };
            (index, result)
        });
    }

    fn finished(&mut self, index: usize, result: Result<()>) -> Result<()> {
        let Phase::Running { since } = self.phases[index] else {
            return Ok(());
        };
        let took = Elapsed(since.elapsed());
        let step = &self.pipeline.steps[index];
        let (name, task) = (step.name.clone(), step.task.clone());
        let error = match result {
            Ok(()) => {
                self.phases[index] = Phase::Succeeded;
                let summary = self.shared.update(|status| {
                    let entry = &mut status.init_container_statuses[index];
                    entry.ready = true;
                    entry.state = terminated(&entry.state, 0, "Completed", None);
                });
                report::Event::new(
                    report::Level::Info,
                    "step.done",
                    format!("step {name} completed in {took} [{summary}]"),
                )
                .field("step", name)
                .field("status", summary)
                .emit();
                return Ok(());
            }
            Err(error) => error,
        };
        // A step that timed out because the pipeline's deadline passed ends the run: no
        // restart can beat a deadline that is gone, and the message says which step was
        // running and what it was waiting for.
        let past_deadline = matches!(error, Error::TimedOut(_))
            && self.deadline.is_some_and(|at| Instant::now() >= at);
        let error = match error {
            Error::TimedOut(reason) if past_deadline => {
                Error::TimedOut(self.deadline_passed(Some(&reason)))
            }
            error => error,
        };
        let code = error.exit_code().code();
        let message = error.to_string();
        let reason = match error {
            Error::TimedOut(_) => "DeadlineExceeded",
            _ => "Error",
        };
        let may_restart = self.pipeline.restart_policy == RestartPolicy::OnFailure
            && step.retries.is_none_or(|max| self.restarts[index] < max)
            && !matches!(error, Error::Interrupted(_))
            && !past_deadline;
        if may_restart {
            self.restarts[index] += 1;
            let restart = self.restarts[index];
            let delay = restart_delay(restart, self.pipeline.backoff);
            self.phases[index] = Phase::BackingOff {
                until: Instant::now() + delay,
            };
            let summary = self.shared.update(|status| {
                let entry = &mut status.init_container_statuses[index];
                entry.last_state = Some(terminated(&entry.state, code, reason, Some(&message)));
                entry.restart_count = restart;
                entry.state = State::Waiting {
                    reason: "CrashLoopBackOff",
                    message: Some(format!(
                        "back-off {} restarting failed step",
                        Elapsed(delay)
                    )),
                };
            });
            report::Event::new(
                report::Level::Warn,
                "step.failed",
                format!(
                    "step {name} failed (exit code {code}) after {took}: {message}; restart {restart} in {} [{summary}]",
                    Elapsed(delay)
                ),
            )
            .field("step", name)
            .field("exit_code", code)
            .field("restart_count", restart)
            .field("status", summary)
            .emit();
            return Ok(());
        }
        self.phases[index] = Phase::Failed;
        self.running.abort_all();
        let cancelled: Vec<usize> = (0..self.phases.len())
            .filter(|&i| {
                matches!(
                    self.phases[i],
                    Phase::Running { .. } | Phase::BackingOff { .. }
                )
            })
            .collect();
        for &i in &cancelled {
            self.phases[i] = Phase::Failed;
        }
        let cancel_message = format!("cancelled: step {name} failed");
        self.shared.update(|status| {
            let entry = &mut status.init_container_statuses[index];
            entry.state = terminated(&entry.state, code, reason, Some(&message));
            for &i in &cancelled {
                let sibling = &mut status.init_container_statuses[i];
                sibling.state = terminated(
                    &sibling.state,
                    ExitCode::Terminated.code(),
                    "Cancelled",
                    Some(&cancel_message),
                );
            }
        });
        report::Event::new(
            report::Level::Error,
            "step.failed",
            format!("step {name} ({task}) failed (exit code {code}) after {took}: {message} [Init:Error]"),
        )
        .field("step", name.clone())
        .field("exit_code", code)
        .field("status", "Init:Error")
        .emit();
        Err(error.for_target(&format!("step {name} ({task})")))
    }
}

impl Scheduler {
    /// What to say when `activeDeadline` passed: the steps that were running, and the
    /// reason the one that noticed gave, if one did.
    fn deadline_passed(&self, noticed: Option<&str>) -> String {
        let limit = self.pipeline.active_deadline.map(Elapsed);
        let mut message = match limit {
            Some(limit) => format!("the pipeline's activeDeadline of {limit} passed"),
            None => "the pipeline's activeDeadline passed".to_owned(),
        };
        let running: Vec<String> = self
            .phases
            .iter()
            .enumerate()
            .filter(|(_, phase)| matches!(phase, Phase::Running { .. }))
            .map(|(i, _)| {
                let step = &self.pipeline.steps[i];
                format!("{} ({})", step.name, step.task)
            })
            .collect();
        if !running.is_empty() {
            message.push_str(&format!(
                " while step{} {} {} running",
                report::plural(running.len()),
                running.join(", "),
                if running.len() == 1 { "was" } else { "were" }
            ));
        }
        if let Some(reason) = noticed {
            message.push_str(&format!(": {reason}"));
        }
        message
    }
}

/// A `terminated` state for a step that was in `state`.
fn terminated(state: &State, code: i32, reason: &'static str, message: Option<&str>) -> State {
    let now = status::now();
    let started_at = match state {
        State::Running { started_at } => started_at.clone(),
        _ => now.clone(),
    };
    State::Terminated {
        exit_code: code,
        reason,
        message: message.map(str::to_owned),
        started_at,
        finished_at: now,
    }
}

async fn sleep_until(wake: Option<Instant>) {
    match wake {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crash_loop_schedule() {
        let backoff = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        assert_eq!(restart_delay(1, backoff), Duration::ZERO);
        let near = |restart: u32, secs: f64| {
            let delay = restart_delay(restart, backoff).as_secs_f64();
            assert!(
                (secs * 0.89..=secs * 1.11).contains(&delay),
                "restart {restart}: {delay}"
            );
        };
        near(2, 1.0);
        near(3, 2.0);
        near(4, 4.0);
        near(8, 60.0);
        near(40, 60.0);
    }
}
