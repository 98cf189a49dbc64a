//! Runs across nodes: which node owns a run, what other nodes send it, and
//! when an owner counts as dead.
//!
//! The owner is recorded with the run in the store (`runs.node_id`, set by
//! the claim): durable, and changed in the same compare-and-sets that start
//! and end runs, so it survives a broker restart and holds on every broker
//! engine. Liveness comes from the broker (`Broker::live_nodes`: the nodes
//! whose heartbeat has not expired). A cancel asked on any node goes to the
//! owner as a targeted control message: only the owner produces the run's
//! events, so only it can end the run with nothing published after the ending.

use std::collections::HashSet;
use std::sync::{Arc, Weak};

use chorus_core::broker::BrokerError;
use chorus_core::{NodeId, RunControls};

use crate::ledger::Stop;
use crate::runtime::{Runtime, Shared};

/// Receives the run controls other nodes send this one.
struct Routes(Weak<Shared>);

impl RunControls for Routes {
    fn cancel_run(&self, run_id: String) {
        let Some(shared) = self.0.upgrade() else { return };
        let runtime = Runtime(shared);
        let tasks = runtime.0.background_tracker();
        tasks.spawn(async move {
            if let Err(e) = runtime.cancel(&run_id, Stop::Cancelled).await {
                tracing::warn!(%run_id, error = %e, "cancel from another node not applied");
            }
        });
    }
}

/// What the hub routes run controls to.
pub(crate) fn controls(runtime: &Runtime) -> Weak<dyn RunControls> {
    let routes: Arc<dyn RunControls> = Arc::new(Routes(Arc::downgrade(&runtime.0)));
    // The hub holds it weakly; the runtime keeps it alive.
    let weak = Arc::downgrade(&routes);
    runtime.0.keep_routes(routes);
    weak
}

/// Judges owners of runs dead: missing from the broker's live nodes in two
/// passes in a row (one pass may fall in a blip, e.g. Redis restarting
/// empty before the owner's next heartbeat). At start, missing is dead at
/// once (the runs of this process's earlier incarnation). While the broker
/// cannot tell (degraded), no owner is dead. Holds one entry per missing
/// owner seen in the last pass (nodes, not runs).
pub(crate) struct OwnerWatch {
    live: Option<HashSet<String>>,
    /// Owners missing in the previous pass.
    missing_before: HashSet<String>,
    missing_now: HashSet<String>,
    at_once: bool,
}

impl OwnerWatch {
    pub(crate) fn at_start(live: Result<Vec<NodeId>, BrokerError>) -> Self {
        let mut watch = OwnerWatch { live: None, missing_before: HashSet::new(), missing_now: HashSet::new(), at_once: true };
        watch.set_live(live);
        watch
    }

    fn set_live(&mut self, live: Result<Vec<NodeId>, BrokerError>) {
        self.live = match live {
            Ok(nodes) => Some(nodes.into_iter().map(|n| n.as_str().to_owned()).collect()),
            Err(e) => {
                tracing::warn!(error = %e, "live nodes unknown: no run's owner is judged dead in this pass");
                None
            }
        };
    }

    /// Starts a pass with the live nodes now.
    pub(crate) fn begin(&mut self, live: Result<Vec<NodeId>, BrokerError>) {
        self.set_live(live);
        self.missing_now.clear();
    }

    /// Whether `owner` is dead, as of this pass.
    pub(crate) fn is_dead(&mut self, owner: &str) -> bool {
        let Some(live) = &self.live else { return false };
        if live.contains(owner) {
            return false;
        }
        self.missing_now.insert(owner.to_owned());
        self.at_once || self.missing_before.contains(owner)
    }

    /// Ends a pass: who was missing in it is remembered for the next one.
    pub(crate) fn finish(&mut self) {
        self.at_once = false;
        if self.live.is_some() {
            self.missing_before = std::mem::take(&mut self.missing_now);
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    fn live(nodes: &[&str]) -> Result<Vec<NodeId>, BrokerError> {
        Ok(nodes.iter().map(|n| NodeId::new(*n)).collect())
    }

    #[test]
    fn an_owner_is_dead_when_missing_twice_in_a_row_or_at_start() {
        let mut w = OwnerWatch::at_start(live(&["a"]));
        assert!(w.is_dead("old"), "missing at start: dead at once");
        assert!(!w.is_dead("a"));
        w.finish();
        w.begin(live(&["a"]));
        assert!(!w.is_dead("b"), "first miss");
        w.finish();
        w.begin(Err(BrokerError::Unavailable("down".into())));
        assert!(!w.is_dead("b"), "unknown: nobody is dead");
        w.finish();
        w.begin(live(&["a"]));
        assert!(w.is_dead("b"), "second miss in a row (an unknown pass in between is not counted)");
        w.finish();
        w.begin(live(&["a", "b"]));
        assert!(!w.is_dead("b"), "back");
        w.finish();
        w.begin(live(&["a"]));
        assert!(!w.is_dead("b"), "missing again: counts from one");
    }
}
