//! Publishing into a channel's stream, reading its history, and the fan-out
//! of what the broker delivers to this node's subscribers.

use std::sync::Arc;

use chorus_protocol::ChannelName;

use super::subscriptions::retention;
use super::{Hub, shard_index};
use crate::access::AccessError;
use crate::broker::{BrokerError, HistoryPage, HistoryQuery};
use crate::publication::{Draft, Publication};
use crate::subscription::{Delivery, Subscription};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl Hub {
    /// Appends an event to a channel's stream; every subscriber on every node receives it.
    pub async fn publish(&self, channel: &ChannelName, mut draft: Draft) -> Result<Arc<Publication>, PublishError> {
        let retention = retention(self.0.access.namespace(channel)?);
        let event = draft.event;
        draft.origin = Some(self.0.node.clone());
        let p = self.0.backplane.broker.publish(channel, draft, retention).await.inspect_err(|_| {
            self.0.metrics.broker_errors.inc();
        })?;
        self.0.metrics.events_in.inc_by(event, 1);
        self.tap(&p);
        Ok(p)
    }

    /// Reads retained events of a channel.
    pub async fn history(&self, channel: &ChannelName, query: HistoryQuery) -> Result<HistoryPage, PublishError> {
        let retention = retention(self.0.access.namespace(channel)?);
        Ok(self.0.backplane.broker.history(channel, query, retention).await?)
    }

    /// Delivers one broker publication to the local subscribers of its channel.
    pub(super) fn fan_out(&self, p: &Arc<Publication>) {
        // Events published here were tapped by `publish`.
        if p.origin.as_ref() != Some(&self.0.node) {
            self.tap(p);
        }
        let lag_ms = self.now_ms().saturating_sub(p.time_ms).max(0);
        self.0.metrics.delivery_lag.observe(lag_ms as f64 / 1000.0);
        let mut queued = 0u64;
        let mut gaps: Vec<Arc<Subscription>> = Vec::new();
        {
            let shard = self.0.channels[shard_index(p.channel.as_str())].read();
            let Some(entry) = shard.get(&p.channel) else { return };
            if !entry.subscribers.is_empty() {
                // Encode once, before the loop, for every subscriber to share.
                let _ = p.frame();
            }
            for sub in entry.subscribers.values() {
                match sub.deliver(p) {
                    Delivery::Queued => queued += 1,
                    Delivery::Gap => gaps.push(sub.clone()),
                    Delivery::Duplicate | Delivery::Deferred | Delivery::Overflow | Delivery::Closed => {}
                }
            }
        }
        self.0.metrics.events_out.inc_by(p.event, queued);
        for sub in gaps {
            let Ok(ns) = self.0.access.namespace(&sub.channel) else { continue };
            // The catch-up starts from the last position queued before the gap.
            let Some(at) = sub.last_position() else { continue };
            self.spawn_resync(sub, at, retention(ns));
        }
    }
}
