//! Presence: per user, and settled after races between a user's connections,
//! on every engine.

use std::sync::Arc;

use async_trait::async_trait;
use chorus_core::broker::{Backplane, BrokerError, PresenceEntry, PresenceStore, PresentUser};
use chorus_core::{ConnId, UserId};
use chorus_protocol::ChannelName;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::common::*;
use crate::engines::{Deployment, every_engine};

every_engine!(
    presence_is_per_user_and_announced_once_each_way,
    a_leave_overtaken_by_a_join_ends_with_the_user_present,
    expired_presence_of_a_dead_node_is_announced_as_left,
);

/// Presence store whose `leave` can be held after it changed the store and
/// before it returns, to force a join to overtake a leave's announcement.
struct HeldLeave {
    inner: Arc<dyn PresenceStore>,
    hold: parking_lot::Mutex<Option<Arc<Notify>>>,
    reached: Notify,
}

#[async_trait]
impl PresenceStore for HeldLeave {
    async fn join(&self, channel: &ChannelName, entry: PresenceEntry) -> Result<bool, BrokerError> {
        self.inner.join(channel, entry).await
    }

    async fn leave(&self, channel: &ChannelName, conn: ConnId, user: &UserId) -> Result<bool, BrokerError> {
        let last = self.inner.leave(channel, conn, user).await?;
        let hold = self.hold.lock().take();
        if let Some(release) = hold {
            self.reached.notify_one();
            release.notified().await;
        }
        Ok(last)
    }

    async fn list(&self, channel: &ChannelName) -> Result<Vec<PresentUser>, BrokerError> {
        self.inner.list(channel).await
    }

    async fn is_present(&self, channel: &ChannelName, user: &UserId) -> Result<bool, BrokerError> {
        self.inner.is_present(channel, user).await
    }

    fn channels(&self) -> usize {
        self.inner.channels()
    }
}

fn presence_of(frames: &[Value], user: &str) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f["type"].as_str().is_some_and(|t| t.starts_with("presence_")) && f["data"]["user_id"] == user)
        .map(|f| f["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn presence_is_per_user_and_announced_once_each_way(d: Deployment) {
    let n = d.node().await;
    let mut watcher = Client::open(&n, &token("wendy", &[])).await;
    watcher.request(json!({"type": "subscribe", "channel": "chat:p"})).await;
    let mut a1 = Client::open(&n, &token("alice", &[])).await;
    let mut a2 = Client::open(&n, &token("alice", &[])).await;
    a1.request(json!({"type": "subscribe", "channel": "chat:p"})).await;
    a2.request(json!({"type": "subscribe", "channel": "chat:p"})).await;
    let r = watcher.request(json!({"type": "presence", "channel": "chat:p"})).await;
    assert_eq!(r["result"]["users"], json!([{"user_id": "alice", "connections": 2}, {"user_id": "wendy", "connections": 1}]));
    a1.close().await;
    a2.close().await;
    publish(&n.hub, "chat:p", 0).await;
    let frames = watcher.until("publication").await;
    assert_eq!(presence_of(&frames, "alice"), ["presence_joined", "presence_left"]);
}

async fn a_leave_overtaken_by_a_join_ends_with_the_user_present(d: Deployment) {
    let id = chorus_core::NodeId::random();
    let engine = d.backplane(&id).await;
    let held = Arc::new(HeldLeave { inner: engine.presence, hold: parking_lot::Mutex::new(None), reached: Notify::new() });
    let backplane = Backplane { broker: engine.broker, presence: held.clone(), registry: engine.registry };
    let n = d.node_with(NodeOptions { id, backplane: Some(backplane), clock: d.clock.clone(), ..Default::default() }).await;
    let mut watcher = Client::open(&n, &token("wendy", &[])).await;
    watcher.request(json!({"type": "subscribe", "channel": "chat:r"})).await;
    let mut old_tab = Client::open(&n, &token("alice", &[])).await;
    old_tab.request(json!({"type": "subscribe", "channel": "chat:r"})).await;

    // A page reload: the old tab's leave changes the store (alice gone), then
    // the new tab joins and announces before the leave is announced.
    let release = Arc::new(Notify::new());
    *held.hold.lock() = Some(release.clone());
    let leaving = tokio::spawn(old_tab.close());
    held.reached.notified().await;
    let mut new_tab = Client::open(&n, &token("alice", &[])).await;
    new_tab.request(json!({"type": "subscribe", "channel": "chat:r"})).await;
    release.notify_one();
    leaving.await.unwrap();

    publish(&n.hub, "chat:r", 0).await;
    let frames = watcher.until("publication").await;
    let seen = presence_of(&frames, "alice");
    assert_eq!(seen.last().map(String::as_str), Some("presence_joined"), "the channel's last word matches the store: {seen:?}");
    assert_eq!(seen, ["presence_joined", "presence_joined", "presence_left", "presence_joined"]);
    let r = watcher.request(json!({"type": "presence", "channel": "chat:r"})).await;
    assert!(r["result"]["users"].as_array().unwrap().iter().any(|u| u["user_id"] == "alice"));
}

async fn expired_presence_of_a_dead_node_is_announced_as_left(d: Deployment) {
    let n = d.node().await;
    let store = n.hub.backplane().presence.clone();
    let mut watcher = Client::open(&n, &token("wendy", &[])).await;
    watcher.request(json!({"type": "subscribe", "channel": "chat:d"})).await;
    // Entries of a node that died: in the store, with no connection behind them here.
    let ghost = |user: &str| PresenceEntry { conn: ConnId::random(), user: UserId::new(user), node: chorus_core::NodeId::new("dead") };
    let expired = |user: &str| chorus_core::broker::Control::PresenceExpired { channel: channel("chat:d"), user: UserId::new(user) };
    let (staying, gone) = (ghost("staying"), ghost("gone"));
    for entry in [&staying, &gone] {
        store.join(&channel("chat:d"), entry.clone()).await.unwrap();
    }

    // Still present (another connection of the user holds it): nothing to
    // announce, whenever the engine's message is handled.
    n.hub.backplane().broker.control(None, expired("staying")).await.unwrap();
    // The engine's TTL ran out: gone, and announced once.
    store.leave(&channel("chat:d"), gone.conn, &gone.user).await.unwrap();
    n.hub.backplane().broker.control(None, expired("gone")).await.unwrap();
    let mut frames = watcher.until("presence_left").await;
    publish(&n.hub, "chat:d", 0).await;
    frames.extend(watcher.until("publication").await);
    assert_eq!(presence_of(&frames, "gone"), ["presence_left"]);
    assert_eq!(presence_of(&frames, "staying"), Vec::<String>::new());
}
