//! Panic isolation: a panic in one connection or background task is caught,
//! logged and counted, and never takes anything else down.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::CoreMetrics;

/// Runs `fut`, turning a panic into `None` after logging and counting it.
pub async fn catch_panic<F: Future>(metrics: &CoreMetrics, task: &str, fut: F) -> Option<F::Output> {
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(out) => Some(out),
        Err(panic) => {
            let message = panic_message(&*panic);
            metrics.panic(task);
            tracing::error!(task, panic = %message, "task panicked; only this task was affected");
            None
        }
    }
}

pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// Runs a background task until `shutdown`, restarting it (after `backoff`)
/// whenever it panics or returns early.
pub fn spawn_background<F, Fut>(
    tracker: &TaskTracker,
    shutdown: CancellationToken,
    metrics: CoreMetrics,
    name: &'static str,
    backoff: Duration,
    make: F,
) where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    tracker.spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = catch_panic(&metrics, name, make()) => {
                    if outcome.is_some() && shutdown.is_cancelled() {
                        return;
                    }
                    tracing::warn!(task = name, "background task ended; restarting");
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn panicking_background_task_is_counted_and_restarted() {
        let metrics = CoreMetrics::unregistered();
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let r = runs.clone();
        spawn_background(&tracker, shutdown.clone(), metrics.clone(), "flaky", Duration::from_millis(10), move || {
            let r = r.clone();
            async move {
                if r.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("injected");
                }
                std::future::pending::<()>().await;
            }
        });
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(runs.load(Ordering::SeqCst), 3, "restarted after each panic");
        assert_eq!(metrics.panics.get_or_create(&vec![("task", "flaky".into())]).get(), 2);
        shutdown.cancel();
        tracker.close();
        tracker.wait().await;
    }
}
