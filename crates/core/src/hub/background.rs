//! The hub's periodic passes (cleanup, token, typing and limiter-entry
//! expiry, limiter sweep, queue bounds following reloads), its one-off background tasks,
//! and the gauges computed at scrape time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chorus_protocol::{ChannelName, CloseCode};

use super::Hub;
use crate::config::Limits;
use crate::outbound::QueueLimits;
use crate::supervise::{catch_panic, spawn_background};

/// Pause before a panicked background pass restarts.
const RESTART_BACKOFF: Duration = Duration::from_secs(1);

pub(super) fn queue_limits(l: &Limits) -> QueueLimits {
    QueueLimits { max_items: l.outbound_queue_messages, max_bytes: l.outbound_queue_bytes }
}

impl Hub {
    pub(super) fn spawn_background_tasks(&self) {
        let i = &self.0;
        let weak = Arc::downgrade(&self.0);
        spawn_background(&i.background, i.shutdown.clone(), i.metrics.clone(), "cleanup", RESTART_BACKOFF, {
            let weak = weak.clone();
            move || {
                let weak = weak.clone();
                async move {
                    let Some(period) = weak.upgrade().map(|i| i.timing.cleanup_interval) else { return };
                    let mut tick = tokio::time::interval(period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    tick.tick().await;
                    loop {
                        tick.tick().await;
                        let Some(inner) = weak.upgrade() else { return };
                        Hub(inner).cleanup().await;
                    }
                }
            }
        });
        spawn_background(&i.background, i.shutdown.clone(), i.metrics.clone(), "expiry", RESTART_BACKOFF, {
            let weak = weak.clone();
            move || {
                let weak = weak.clone();
                async move {
                    let mut tick = tokio::time::interval(Duration::from_secs(1));
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    loop {
                        tick.tick().await;
                        let Some(inner) = weak.upgrade() else { return };
                        Hub(inner).expire().await;
                    }
                }
            }
        });
        spawn_background(&i.background, i.shutdown.clone(), i.metrics.clone(), "limiter_sweep", RESTART_BACKOFF, {
            let weak = weak.clone();
            let rates = i.rates.clone();
            move || {
                let weak = weak.clone();
                let mut rates = rates.clone();
                async move {
                    let mut last = tokio::time::Instant::now();
                    // False once nothing can reload the rates any more.
                    let mut reloadable = true;
                    loop {
                        let period = rates.borrow_and_update().limiter_sweep;
                        // A reloaded period takes effect now, not after the old one ends.
                        tokio::select! {
                            _ = tokio::time::sleep_until(last + period) => {}
                            changed = rates.changed(), if reloadable => {
                                reloadable = changed.is_ok();
                                continue;
                            }
                        }
                        last = tokio::time::Instant::now();
                        let Some(inner) = weak.upgrade() else { return };
                        Hub(inner).sweep_limiters();
                    }
                }
            }
        });
        spawn_background(&i.background, i.shutdown.clone(), i.metrics.clone(), "queue_bounds", RESTART_BACKOFF, {
            let bounds = i.queue_bounds.clone();
            let limits = i.limits.clone();
            move || {
                let bounds = bounds.clone();
                let mut limits = limits.clone();
                async move {
                    loop {
                        bounds.set(queue_limits(&limits.borrow_and_update()));
                        if limits.changed().await.is_err() {
                            // Nothing can reload the limits any more.
                            return std::future::pending().await;
                        }
                    }
                }
            }
        });
    }

    /// Runs a one-off task among the background tasks (drained at shutdown), panics caught.
    pub(super) fn spawn_task<F: Future<Output = ()> + Send + 'static>(&self, task: &'static str, fut: F) {
        let metrics = self.0.metrics.clone();
        self.0.background.spawn(async move {
            catch_panic(&metrics, task, fut).await;
        });
    }

    /// Unlistens empty channels, sweeps the broker. (Stale connections are
    /// closed by their transports, which see their own reads and writes.)
    pub async fn cleanup(&self) {
        self.unlisten_empty_channels().await;
        self.0.backplane.broker.sweep().await;
        self.drop_refilled_limiters();
        self.0.metrics.channels.set(i64::try_from(self.channel_count()).unwrap_or(i64::MAX));
    }

    async fn unlisten_empty_channels(&self) {
        for shard in self.0.channels.iter() {
            let empty: Vec<(ChannelName, Arc<tokio::sync::Mutex<bool>>)> =
                shard.read().iter().filter(|(_, e)| e.subscribers.is_empty()).map(|(n, e)| (n.clone(), e.gate.clone())).collect();
            for (name, gate) in empty {
                self.unlisten_if_empty(&name, &gate).await;
            }
        }
    }

    /// Token expiry, typing expiry and refilled limiter entries; runs every second.
    async fn expire(&self) {
        self.expire_refilled_limiters();
        let now = self.now_ms();
        for c in self.all_connections() {
            if c.deadline_ms().is_some_and(|t| t <= now) {
                c.close(CloseCode::TokenExpired);
            }
        }
        for (channel, user) in self.0.typing.expire(tokio::time::Instant::now()) {
            for c in self.user_connections(&user) {
                c.state.lock().typing.retain(|ch| ch != &channel);
            }
            self.announce_typing_stopped(&channel, &user).await;
        }
    }

    /// Registers the gauges computed at scrape time (queue depths, map sizes).
    pub fn register_gauges(&self, registry: &mut prometheus_client::registry::Registry) {
        let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
        let hub = |f: fn(&Hub) -> usize| {
            let h = self.clone();
            move || n(f(&h))
        };
        let b = &self.0.backplane;
        let (broker, presence, registered) = (b.broker.clone(), b.presence.clone(), b.registry.clone());
        crate::metrics::ScrapeGauges::default()
            .with("outbound_queued", "Events waiting in outbound queues on this node", hub(|h| h.queue_depths().0))
            .with("outbound_queue_max", "Longest outbound queue on this node", hub(|h| h.queue_depths().1))
            .with("limiter_entries", "Entries in the per-user rate limiters", hub(Hub::limiter_entries))
            .with("typing_indicators", "Typing indicators tracked on this node", hub(Hub::typing_count))
            .with("tasks", "Connection and background tasks running", hub(Hub::task_count))
            .with("broker_streams", "Channel streams held by the broker", move || n(broker.streams()))
            .with("presence_channels", "Channels with presence entries", move || n(presence.channels()))
            .with("registered_users", "Users with registered connections", move || n(registered.users()))
            .register(registry);
    }
}
