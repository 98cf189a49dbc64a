//! How committed runs reach the runtime: the chat domain calls [`Intake`]
//! (its `RunIntake` seam) after a commit; the runtime reads the other end.
//! The channel is bounded: when it is full the notification is dropped and
//! the runtime rescans the store for queued runs instead, so a run is only
//! ever delayed, never lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chorus_chat::triggers::{ChainLimit, LimitReason, RunIntake};
use chorus_store::Run;
use tokio::sync::{Notify, mpsc};

use crate::metrics::AgentMetrics;

/// Notifications the intake holds before it overflows.
pub const INTAKE_CAPACITY: usize = 4096;

/// The chat domain's end.
#[derive(Clone)]
pub struct Intake {
    tx: mpsc::Sender<Vec<Run>>,
    shared: Arc<Shared>,
}

/// The runtime's end.
pub struct IntakeReceiver {
    pub(crate) rx: mpsc::Receiver<Vec<Run>>,
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    /// Set when a notification was dropped: rescan the store.
    pub(crate) rescan: AtomicBool,
    pub(crate) wake: Notify,
    pub(crate) metrics: AgentMetrics,
}

impl Intake {
    pub fn channel(capacity: usize, metrics: AgentMetrics) -> (Intake, IntakeReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(Shared { rescan: AtomicBool::new(false), wake: Notify::new(), metrics });
        (Intake { tx, shared: shared.clone() }, IntakeReceiver { rx, shared })
    }
}

impl RunIntake for Intake {
    fn queued(&self, runs: &[Run]) {
        if runs.is_empty() {
            return;
        }
        if self.tx.try_send(runs.to_vec()).is_err() {
            // Full (or the runtime is gone): the runs are in the store.
            self.shared.metrics.intake_overflow();
            self.shared.rescan.store(true, Ordering::Release);
            self.shared.wake.notify_one();
        }
    }

    fn chain_limited(&self, limit: &ChainLimit) {
        let reason = match limit.reason {
            LimitReason::Hops => "hops",
            LimitReason::Rate => "rate",
        };
        self.shared.metrics.chain_limited(reason);
    }
}
