//! The context of the pipeline step a piece of work belongs to: its name (log lines say
//! `[name]`), the file's `env:` map (what `$(VAR)` and templates' `env` see) and its
//! deadline (its `timeout:` or what is left of `activeDeadline`).
//!
//! One value, carried the same way everywhere: a task-local for async work, kept across
//! `spawn` by [`keep`], and a thread-local for blocking work on its own thread
//! ([`on_thread`]), so that a probe reading a variable inside an attempt can never see the
//! process environment instead of the pipeline's, nor log without its step's name.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// What a pipeline step's work knows about the step.
#[derive(Debug, Clone)]
pub struct Context {
    pub name: Arc<str>,
    /// The file's `env:` map, expanded (later entries win).
    pub env: Arc<Vec<(String, String)>>,
    /// The nearer of the step's `timeout:` and the pipeline's `activeDeadline`.
    pub deadline: Option<Instant>,
}

/// How long the runner lets a step's work pass its deadline before cutting it off: time for
/// the task to report its own timeout, well inside the 50 ms every deadline is kept to.
pub const REPORT_GRACE: Duration = Duration::from_millis(20);

tokio::task_local! {
    static CONTEXT: Context;
}

std::thread_local! {
    static THREAD_CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

/// Runs `work` as the step `context` describes.
pub async fn run_in<F: Future>(context: Context, work: F) -> F::Output {
    CONTEXT.scope(context, work).await
}

/// The step the current work belongs to, if any.
pub fn current() -> Option<Context> {
    CONTEXT
        .try_with(Context::clone)
        .ok()
        .or_else(|| THREAD_CONTEXT.with(|context| context.borrow().clone()))
}

/// `work` (to be spawned) stays in the current step.
pub fn keep<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let context = current();
    async move {
        match context {
            Some(context) => CONTEXT.scope(context, work).await,
            None => work.await,
        }
    }
}

/// Runs blocking `work` on this thread in the step `context` (from [`current`]).
pub fn on_thread<T>(context: Option<Context>, work: impl FnOnce() -> T) -> T {
    THREAD_CONTEXT.with(|current| *current.borrow_mut() = context);
    let result = work();
    THREAD_CONTEXT.with(|current| *current.borrow_mut() = None);
    result
}

/// A task's own time limit (`None` = none) bounded by the deadline of the step it runs in.
pub fn bound(limit: Option<Duration>) -> Option<Duration> {
    // Rounded up to the millisecond, so a step's `timeout: 30s` is announced as 30s, not
    // as the 29.999s left by the time the task starts (the runner's grace covers the rest).
    let left = current().and_then(|context| context.deadline).map(|at| {
        let left = at.saturating_duration_since(Instant::now());
        Duration::from_millis(left.as_nanos().div_ceil(1_000_000) as u64)
    });
    nearer(limit, left)
}

/// The nearer of two optional limits (`None` = no limit).
pub fn nearer<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(deadline: Option<Instant>) -> Context {
        Context {
            name: Arc::from("db"),
            env: Arc::new(vec![("DB_HOST".into(), "db.test".into())]),
            deadline,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_step_deadline_bounds_a_task_limit() {
        assert_eq!(bound(None), None);
        assert_eq!(
            bound(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        let at = Instant::now() + Duration::from_secs(30);
        run_in(context(Some(at)), async {
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

    #[tokio::test]
    async fn the_context_survives_spawned_tasks_and_blocking_threads() {
        run_in(context(None), async {
            let spawned = tokio::spawn(keep(async { current().map(|c| c.name) }));
            assert_eq!(spawned.await.unwrap().as_deref(), Some("db"));
            let here = current();
            let on_thread = tokio::task::spawn_blocking(move || {
                on_thread(here, || crate::expand::var("DB_HOST"))
            });
            assert_eq!(on_thread.await.unwrap().as_deref(), Some("db.test"));
        })
        .await;
        assert!(current().is_none());
    }
}
