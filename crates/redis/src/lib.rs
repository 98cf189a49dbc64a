//! The Redis engine: fan-out, history and recovery, presence, the
//! cluster-wide per-user connection registry and control messages for
//! several Chorus nodes sharing one Redis, behind the seam of
//! `chorus_core::broker`.
//!
//! Bird's-eye view: each channel is a Redis stream (event id = offset) with
//! a meta hash (epoch, top offset, restart detection); one Lua script
//! appends, trims and publishes atomically, and every node listening to the
//! channel receives the event over pub/sub in offset order. When Redis is
//! unreachable the node degrades to an in-process broker (local subscribers
//! only, on local epochs), and when Redis returns it resubscribes, writes
//! its own registrations and presence back, and hands the hub each
//! channel's newest event so subscriptions catch up or fail explicitly.
//! ARCHITECTURE.md lists the keys, scripts and invariants.

mod broker;
mod codec;
pub mod config;
mod engine;
mod keys;
pub mod metrics;
mod presence;
mod registry;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use chorus_core::NodeId;
use chorus_core::broker::Backplane;
use chorus_clock::Clock;
use fred::prelude::*;

pub use config::RedisBrokerConfig;
pub use engine::{Mode, SetupError};
pub use metrics::RedisMetrics;

use engine::Inner;

/// The engine for one node. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct RedisBroker(Arc<Inner>);

impl RedisBroker {
    /// Connects to Redis. An unreachable Redis is not an error: the engine
    /// then starts degraded and keeps reconnecting; only a bad configuration is.
    pub async fn connect(config: RedisBrokerConfig, node: NodeId, clock: Arc<dyn Clock>, metrics: RedisMetrics) -> Result<Self, SetupError> {
        if node.as_str().contains(['\n', '\t', '{', '}']) || node.as_str().is_empty() {
            return Err(SetupError::Config(format!("node id `{node}` must be non-empty, without tabs, newlines or braces")));
        }
        let inner = Arc::new(Inner::new(config, node, clock, metrics)?);
        inner.metrics.up.set(0);
        *inner.receivers.lock() = Some(engine::Receivers {
            messages: inner.pubsub.message_rx(),
            pubsub_reconnects: inner.pubsub.reconnect_rx(),
            command_reconnects: inner.commands.reconnect_rx(),
        });
        let wait = inner.cfg.command_timeout * 4;
        // Both start their reconnect loops; a Redis that is down now is
        // retried in the background.
        // The handles are the connection tasks; dropping them detaches, not stops.
        drop(inner.commands.connect());
        drop(inner.pubsub.connect());
        let _ = tokio::time::timeout(wait, inner.commands.wait_for_connect()).await;
        let _ = tokio::time::timeout(wait, inner.pubsub.wait_for_connect()).await;
        Ok(Self(inner))
    }

    /// The three engines of the seam from this one.
    pub fn backplane(&self) -> Backplane {
        let engine = Arc::new(self.clone());
        Backplane { broker: engine.clone(), presence: engine.clone(), registry: engine }
    }

    pub fn mode(&self) -> Mode {
        self.0.mode.read().clone()
    }

    pub fn node(&self) -> &NodeId {
        &self.0.node
    }

    /// Called by `attach`: syncs with Redis once (so a node that starts during
    /// maintenance applies it before serving), then starts the tasks.
    async fn start(&self) {
        if self.0.tasks.is_closed() {
            return;
        }
        let inner = self.0.clone();
        // A first recovery now, within a bounded time; the pump retries.
        let _ = tokio::time::timeout(inner.cfg.command_timeout * 8, inner.clone().first_sync()).await;
        self.0.tasks.spawn(inner.clone().pump());
        self.0.tasks.spawn(inner.keeper());
        self.0.tasks.close();
    }

    /// Stops the tasks, removes this node's entries and closes the connections.
    async fn stop(&self) {
        self.0.leave_cluster().await;
        self.0.shutdown.cancel();
        self.0.tasks.wait().await;
        let _ = self.0.commands.quit().await;
        let _ = self.0.pubsub.quit().await;
    }

    /// Stops at once without removing this node's entries from Redis, as a
    /// crash would: they go when other nodes see its heartbeat stop.
    pub async fn halt(&self) {
        self.0.shutdown.cancel();
        self.0.tasks.wait().await;
        let _ = self.0.commands.quit().await;
        let _ = self.0.pubsub.quit().await;
    }

    /// Registers the engine's metrics (state, reconnects, latencies).
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        self.0.metrics.register(registry);
    }

    /// Waits until the engine reports degraded health (Redis unreachable or
    /// pub/sub not delivering), up to `limit`.
    pub async fn until_degraded(&self, limit: Duration) -> bool {
        use chorus_core::broker::{Broker, Health};
        self.until_state(limit, || matches!(self.health(), Health::Degraded { .. })).await
    }

    /// Waits until the engine is fully in step with Redis (normal mode and
    /// its last recovery finished: subscriptions, registrations and presence
    /// written back), up to `limit`.
    pub async fn until_up(&self, limit: Duration) -> bool {
        self.until_state(limit, || self.0.in_step()).await
    }

    /// Waits for `holds` on every change of mode or sync state, up to `limit`.
    async fn until_state(&self, limit: Duration, holds: impl Fn() -> bool) -> bool {
        let mut changes = self.0.changes.subscribe();
        let in_step = async {
            loop {
                // Marked seen before the check: a change after it wakes us.
                changes.borrow_and_update();
                if holds() {
                    return true;
                }
                if changes.changed().await.is_err() {
                    return false;
                }
            }
        };
        tokio::time::timeout(limit, in_step).await.unwrap_or(false)
    }
}

impl Inner {
    async fn first_sync(self: Arc<Self>) {
        if self.commands.is_connected() && self.pubsub.is_connected() {
            let _ = self.recover_now().await;
        }
    }
}
