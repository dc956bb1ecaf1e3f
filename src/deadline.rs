//! The deadline of the pipeline step a task runs in (its `timeout:`, or what is left of the
//! pipeline's `activeDeadline`), so that a task's own wait ends at the step's deadline with
//! its own reason ("timed out after 30s waiting for db:5432 (last error: …)") and says the
//! step's limit when it starts, instead of announcing its default of 5m and being cut off
//! without a word about what it was waiting for.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How long the runner lets a step's work pass its deadline before cutting it off: time for
/// the task to report its own timeout, well inside the 50 ms every deadline is kept to.
pub const REPORT_GRACE: Duration = Duration::from_millis(20);

tokio::task_local! {
    static STEP_DEADLINE: Instant;
}

/// Runs `work` with `deadline` as the current step's deadline (none: no limit).
pub async fn within<F: Future>(deadline: Option<Instant>, work: F) -> F::Output {
    match deadline {
        Some(at) => STEP_DEADLINE.scope(at, work).await,
        None => work.await,
    }
}

/// A task's own time limit (`None` = none) bounded by the deadline of the step it runs in.
pub fn bound(limit: Option<Duration>) -> Option<Duration> {
    // Rounded up to the millisecond, so a step's `timeout: 30s` is announced as 30s, not
    // as the 29.999s left by the time the task starts (the runner's grace covers the rest).
    let left = STEP_DEADLINE
        .try_with(|at| {
            let left = at.saturating_duration_since(Instant::now());
            Duration::from_millis(left.as_nanos().div_ceil(1_000_000) as u64)
        })
        .ok();
    match (limit, left) {
        (Some(limit), Some(left)) => Some(limit.min(left)),
        (limit, left) => limit.or(left),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_step_deadline_bounds_a_task_limit() {
        assert_eq!(bound(None), None);
        assert_eq!(
            bound(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        let at = Instant::now() + Duration::from_secs(30);
        within(Some(at), async {
            assert_eq!(bound(None), Some(Duration::from_secs(30)));
            assert_eq!(
                bound(Some(Duration::from_secs(300))),
                Some(Duration::from_secs(30))
            );
            assert_eq!(
                bound(Some(Duration::from_secs(10))),
                Some(Duration::from_secs(10))
            );
            tokio::time::advance(Duration::from_secs(40)).await;
            assert_eq!(bound(None), Some(Duration::ZERO));
        })
        .await;
    }
}
