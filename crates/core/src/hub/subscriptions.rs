//! Subscriptions: adding one (limits, broker listen, where the stream
//! stands, presence), ending one, and the per-channel fan-out lists.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chorus_protocol::reply::SubscribedResult;
use chorus_protocol::{ChannelName, StreamPosition};

use super::follow_up::{FollowUp, SyncStart};
use super::{ChannelEntry, Hub, shard_index};
use crate::access::AccessError;
use crate::broker::{BrokerError, HistoryPage, HistoryQuery, Retention};
use crate::config::NamespaceConfig;
use crate::connection::Connection;
use crate::publication::Position;
use crate::subscription::Subscription;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("already subscribed to `{0}`")]
    AlreadySubscribed(ChannelName),
    #[error("at most {0} subscriptions per connection")]
    TooMany(usize),
    #[error("connection is closed")]
    Closed,
    #[error(transparent)]
    Access(#[from] AccessError),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

pub(super) fn retention(ns: &NamespaceConfig) -> Retention {
    Retention { max_events: ns.history_size, ttl: ns.history_ttl }
}

impl Hub {
    /// Adds a subscription (already authorized) and reads where the stream
    /// stands. The caller sends the reply, then runs the [`FollowUp`].
    pub async fn subscribe(&self, conn: &Arc<Connection>, channel: ChannelName, since: Option<StreamPosition>) -> Result<(SubscribedResult, FollowUp), SubscribeError> {
        let ns = self.0.access.namespace(&channel)?.clone();
        let retention = retention(&ns);
        let sub = Arc::new(Subscription::new(channel.clone(), conn.id, conn.outbound.clone()));
        let max = self.0.limits.borrow().subscriptions_per_connection;
        {
            let mut st = conn.state.lock();
            if st.released {
                return Err(SubscribeError::Closed);
            }
            if st.subscriptions.contains_key(&channel) {
                return Err(SubscribeError::AlreadySubscribed(channel));
            }
            if st.subscriptions.len() >= max {
                return Err(SubscribeError::TooMany(max));
            }
            st.subscriptions.insert(channel.clone(), sub.clone());
        }
        self.0.sub_count.fetch_add(1, Ordering::AcqRel);
        self.0.metrics.subscriptions.inc();

        let setup = async {
            self.attach(&sub).await?;
            let query = match &since {
                Some(pos) => HistoryQuery::Since {
                    position: Position { offset: pos.offset, epoch: Arc::from(pos.epoch.as_str()) },
                    limit: ns.history_size.max(1),
                },
                None => HistoryQuery::Position,
            };
            match self.0.backplane.broker.history(&channel, query, retention).await {
                Ok(HistoryPage { current, publications }) => Ok((current.clone(), SyncStart::Replay { from: since_position(&since, &current), publications })),
                Err(BrokerError::Unrecoverable { current }) => Ok((current.clone(), SyncStart::Failed { current })),
                Err(e) => Err(SubscribeError::Broker(e)),
            }
        };
        let (current, start) = match setup.await {
            Ok(v) => v,
            Err(e) => {
                if self.remove_subscription(conn, &channel).is_some() {
                    self.detach(conn, &sub).await;
                }
                return Err(e);
            }
        };
        let recovered = since.as_ref().map(|_| matches!(start, SyncStart::Replay { .. }));
        if let Some(ok) = recovered {
            self.0.metrics.recovery(if ok { "recovered" } else { "failed" });
        }
        let replaying = recovered.map(|_| start.replay_len());
        if ns.presence && sub.is_active() {
            self.join_presence(conn, &channel).await;
            // Released meanwhile: its detach may have run before this join.
            if !sub.is_active() {
                self.leave_presence(conn, &channel).await;
            }
        }
        let result = SubscribedResult { channel: channel.to_string(), offset: current.offset, epoch: current.epoch.to_string(), recovered, replaying };
        Ok((result, FollowUp::new(sub, conn.request_id.clone(), start, retention)))
    }

    /// Ends a subscription; true if there was one.
    pub async fn unsubscribe(&self, conn: &Arc<Connection>, channel: &ChannelName) -> bool {
        let Some(sub) = self.remove_subscription(conn, channel) else { return false };
        // Typing stops before the user leaves.
        let stopped = {
            let mut st = conn.state.lock();
            let before = st.typing.len();
            st.typing.retain(|c| c != channel);
            before != st.typing.len()
        };
        if stopped {
            self.stop_typing(channel, &conn.user).await;
        }
        self.detach(conn, &sub).await;
        true
    }

    fn remove_subscription(&self, conn: &Connection, channel: &ChannelName) -> Option<Arc<Subscription>> {
        conn.state.lock().subscriptions.remove(channel)
    }

    /// Puts the subscription in the channel's fan-out list and makes sure the
    /// broker delivers the channel to this node.
    async fn attach(&self, sub: &Arc<Subscription>) -> Result<(), BrokerError> {
        let gate = {
            let mut shard = self.0.channels[shard_index(sub.channel.as_str())].write();
            let entry = shard.entry(sub.channel.clone()).or_insert_with(|| ChannelEntry {
                subscribers: HashMap::new(),
                gate: Arc::new(tokio::sync::Mutex::new(false)),
            });
            entry.subscribers.insert(sub.conn, sub.clone());
            // A release that raced this subscribe has already detached it; undo the insert.
            if !sub.is_active() {
                entry.subscribers.remove(&sub.conn);
            }
            entry.gate.clone()
        };
        let mut listening = gate.lock().await;
        if !*listening {
            // Marked first: if this future is dropped mid-call, the cleanup
            // pass still unlistens (unlisten is idempotent).
            *listening = true;
            if let Err(e) = self.0.backplane.broker.listen(&self.0.node, &sub.channel).await {
                *listening = false;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes the subscription out of fan-out and presence. The last
    /// subscriber here unlistens the channel and drops its entry at once (a
    /// failed unlisten is retried by the cleanup pass): a churn of users on
    /// channels of their own leaves nothing behind.
    pub(super) async fn detach(&self, conn: &Arc<Connection>, sub: &Arc<Subscription>) {
        sub.deactivate();
        let emptied = {
            let mut shard = self.0.channels[shard_index(sub.channel.as_str())].write();
            shard.get_mut(&sub.channel).and_then(|entry| {
                entry.subscribers.remove(&sub.conn);
                entry.subscribers.is_empty().then(|| entry.gate.clone())
            })
        };
        self.0.sub_count.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.subscriptions.dec();
        if self.0.access.namespace(&sub.channel).map(|ns| ns.presence).unwrap_or(false) {
            self.leave_presence(conn, &sub.channel).await;
        }
        if let Some(gate) = emptied {
            self.unlisten_if_empty(&sub.channel, &gate).await;
        }
    }

    /// Stops listening to a channel nobody here subscribes to and forgets it.
    /// A subscribe that raced in keeps the entry (and its listen).
    pub(super) async fn unlisten_if_empty(&self, name: &ChannelName, gate: &Arc<tokio::sync::Mutex<bool>>) {
        let shard = &self.0.channels[shard_index(name.as_str())];
        let mut listening = gate.lock().await;
        let still_empty = shard.read().get(name).is_some_and(|e| e.subscribers.is_empty());
        if !still_empty {
            return;
        }
        if *listening {
            if let Err(e) = self.0.backplane.broker.unlisten(&self.0.node, name).await {
                self.0.metrics.broker_errors.inc();
                tracing::warn!(error = %e, channel = %name, "unlisten failed; the cleanup pass retries");
                return;
            }
            *listening = false;
        }
        let mut w = shard.write();
        if w.get(name).is_some_and(|e| e.subscribers.is_empty() && Arc::ptr_eq(&e.gate, gate)) {
            w.remove(name);
        }
    }

    pub fn subscription_count(&self) -> usize {
        self.0.sub_count.load(Ordering::Acquire)
    }

    pub fn channel_count(&self) -> usize {
        self.0.channels.iter().map(|s| s.read().len()).sum()
    }
}

fn since_position(since: &Option<StreamPosition>, current: &Position) -> Position {
    match since {
        Some(s) => Position { offset: s.offset, epoch: current.epoch.clone() },
        None => current.clone(),
    }
}
