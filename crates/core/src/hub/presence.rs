//! Presence and typing: announcing a change, then settling against the
//! store (presence) or the tracker (typing), so the channel's last event
//! for a user always says the current state.

use chorus_protocol::reply::PresenceUser;
use chorus_protocol::{ChannelName, EventType, Payload, timestamp};
use std::sync::Arc;

use super::Hub;
use super::publish::PublishError;
use crate::broker::{BrokerError, PresenceEntry};
use crate::connection::Connection;
use crate::ids::UserId;
use crate::publication::Draft;
use crate::typing::TypingChange;

/// How many corrections a presence or typing announcement may make before
/// it leaves the rest to whoever changes the state next.
const SETTLE_ROUNDS: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypingError {
    #[error("typing is not enabled in namespace `{0}`")]
    Disabled(String),
    #[error("not subscribed to `{0}`")]
    NotSubscribed(ChannelName),
    #[error("too many typing indicators on this node")]
    Full,
    #[error(transparent)]
    Publish(#[from] PublishError),
}

impl Hub {
    pub(super) async fn join_presence(&self, conn: &Connection, channel: &ChannelName) {
        let entry = PresenceEntry { conn: conn.id, user: conn.user.clone(), node: self.0.node.clone() };
        match self.0.backplane.presence.join(channel, entry).await {
            Ok(true) => self.settle_presence(channel, &conn.user, true).await,
            Ok(false) => {}
            Err(e) => {
                self.0.metrics.broker_errors.inc();
                tracing::warn!(error = %e, %channel, "presence join failed");
            }
        }
    }

    pub(super) async fn leave_presence(&self, conn: &Connection, channel: &ChannelName) {
        match self.0.backplane.presence.leave(channel, conn.id, &conn.user).await {
            Ok(true) => self.settle_presence(channel, &conn.user, false).await,
            Ok(false) => {}
            Err(e) => {
                self.0.metrics.broker_errors.inc();
                tracing::warn!(error = %e, %channel, "presence leave failed");
            }
        }
    }

    /// Announces that a user's presence changed, then makes sure the channel's
    /// last presence event agrees with the store. Two connections of one user
    /// (on one node or two) joining and leaving at once can publish their
    /// events in the opposite order of their store changes; whoever publishes
    /// last reads the settled state afterwards and corrects the channel.
    /// Presence events are therefore state announcements and may repeat.
    pub(super) async fn settle_presence(&self, channel: &ChannelName, user: &UserId, mut present: bool) {
        for _ in 0..SETTLE_ROUNDS {
            let event = if present { EventType::PresenceJoined } else { EventType::PresenceLeft };
            self.announce(channel, event, user, None).await;
            match self.0.backplane.presence.is_present(channel, user).await {
                Ok(now) if now != present => present = now,
                Ok(_) => return,
                Err(e) => {
                    self.0.metrics.broker_errors.inc();
                    tracing::warn!(error = %e, %channel, "presence check failed");
                    return;
                }
            }
        }
    }

    /// Announces a typing change (`Some(expiry)`: started or renewed), then
    /// checks the tracker as presence does with its store: a start racing a
    /// stop (two connections, or the expiry pass) ends with the event that
    /// matches the tracker.
    async fn settle_typing(&self, channel: &ChannelName, user: &UserId, mut expires_at_ms: Option<i64>) {
        for _ in 0..SETTLE_ROUNDS {
            let event = if expires_at_ms.is_some() { EventType::TypingStarted } else { EventType::TypingStopped };
            self.announce(channel, event, user, expires_at_ms).await;
            let left = self.0.typing.remaining(channel, user, tokio::time::Instant::now());
            if left.is_some() == expires_at_ms.is_some() {
                return;
            }
            expires_at_ms = left.map(|d| self.now_ms().saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)));
        }
    }

    pub async fn presence(&self, channel: &ChannelName) -> Result<Vec<PresenceUser>, BrokerError> {
        Ok(self
            .0
            .backplane
            .presence
            .list(channel)
            .await?
            .into_iter()
            .map(|p| PresenceUser { user_id: p.user.to_string(), connections: p.connections })
            .collect())
    }

    /// Publishes a presence or typing event; failures are logged, not returned,
    /// because they must not fail the operation that caused them.
    async fn announce(&self, channel: &ChannelName, event: EventType, user: &UserId, expires_at_ms: Option<i64>) {
        #[derive(serde::Serialize)]
        struct UserEvent<'a> {
            user_id: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            expires_at: Option<String>,
        }
        let data = UserEvent { user_id: user.as_str(), expires_at: expires_at_ms.map(timestamp::format_ms) };
        let Ok(payload) = Payload::from_value(&data) else { return };
        if let Err(e) = self.publish(channel, Draft::new(event, payload)).await {
            tracing::warn!(error = %e, %channel, event = event.as_str(), "could not announce");
        }
    }

    pub async fn typing(&self, conn: &Arc<Connection>, channel: &ChannelName, active: bool) -> Result<(), TypingError> {
        let ns = self.0.access.namespace(channel).map_err(PublishError::from)?;
        if !ns.typing {
            return Err(TypingError::Disabled(channel.namespace().to_owned()));
        }
        if conn.subscription(channel.as_str()).is_none() {
            return Err(TypingError::NotSubscribed(channel.clone()));
        }
        if !active {
            conn.state.lock().typing.retain(|c| c != channel);
            self.stop_typing(channel, &conn.user).await;
            return Ok(());
        }
        let ttl = self.0.timing.typing_ttl;
        let cap = self.0.limits.borrow().typing_entries;
        let change = self.0.typing.start(channel, &conn.user, ttl, cap, tokio::time::Instant::now()).map_err(|_| TypingError::Full)?;
        {
            let mut st = conn.state.lock();
            if !st.typing.contains(channel) {
                st.typing.push(channel.clone());
            }
        }
        if matches!(change, TypingChange::Started | TypingChange::Renewed) {
            let expires = self.now_ms().saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
            self.settle_typing(channel, &conn.user, Some(expires)).await;
        }
        Ok(())
    }

    /// Ends a user's typing indicator (e.g. when they send the message).
    pub async fn stop_typing(&self, channel: &ChannelName, user: &UserId) {
        if self.0.typing.stop(channel, user) {
            self.announce_typing_stopped(channel, user).await;
        }
    }

    /// Announces that a user stopped typing (the tracker already forgot them).
    pub(super) async fn announce_typing_stopped(&self, channel: &ChannelName, user: &UserId) {
        self.settle_typing(channel, user, None).await;
    }

    pub fn typing_count(&self) -> usize {
        self.0.typing.len()
    }
}
