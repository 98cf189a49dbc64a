//! Replay, catch-up and live delivery meeting without gaps or duplicates,
//! on every engine.

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use chorus_core::broker::{Backplane, Broker, BrokerError, Control, Health, HistoryPage, HistoryQuery, NodeSink, Retention};
use chorus_core::outbound::Outgoing;
use chorus_core::publication::{Draft, Publication};
use chorus_core::NodeId;
use chorus_protocol::{ChannelName, CloseCode};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::common::*;
use crate::engines::{Deployment, every_engine};

every_engine!(
    a_lost_delivery_is_caught_up_from_history_in_order,
    a_gap_history_cannot_fill_closes_with_4008,
    after_the_unsubscribe_reply_nothing_of_the_channel_follows,
    every_subscriber_gets_the_same_encoded_frame,
);

/// A broker that loses some deliveries (and, optionally, hides events from
/// history), as a cluster broker might.
struct Lossy {
    inner: Arc<dyn Broker>,
    drop_delivery: Arc<Mutex<HashSet<u64>>>,
    /// History shows nothing at or after this offset.
    history_below: Mutex<Option<u64>>,
}

struct LossySink {
    inner: Arc<dyn NodeSink>,
    drop: Arc<Mutex<HashSet<u64>>>,
}

impl NodeSink for LossySink {
    fn publication(&self, p: Arc<Publication>) {
        if !self.drop.lock().contains(&p.offset) {
            self.inner.publication(p);
        }
    }

    fn control(&self, control: Control) {
        self.inner.control(control);
    }
}

#[async_trait]
impl Broker for Lossy {
    async fn publish(&self, channel: &ChannelName, draft: Draft, retention: Retention) -> Result<Arc<Publication>, BrokerError> {
        self.inner.publish(channel, draft, retention).await
    }

    async fn history(&self, channel: &ChannelName, query: HistoryQuery, retention: Retention) -> Result<HistoryPage, BrokerError> {
        let mut page = self.inner.history(channel, query, retention).await?;
        if let Some(below) = *self.history_below.lock() {
            page.publications.retain(|p| p.offset < below);
        }
        Ok(page)
    }

    async fn attach(&self, node: &NodeId, sink: Arc<dyn NodeSink>) -> Result<(), BrokerError> {
        self.inner.attach(node, Arc::new(LossySink { inner: sink, drop: self.drop_delivery.clone() })).await
    }

    async fn detach(&self, node: &NodeId) {
        self.inner.detach(node).await;
    }

    async fn listen(&self, node: &NodeId, channel: &ChannelName) -> Result<(), BrokerError> {
        self.inner.listen(node, channel).await
    }

    async fn unlisten(&self, node: &NodeId, channel: &ChannelName) -> Result<(), BrokerError> {
        self.inner.unlisten(node, channel).await
    }

    async fn control(&self, target: Option<&NodeId>, control: Control) -> Result<(), BrokerError> {
        self.inner.control(target, control).await
    }

    async fn live_nodes(&self) -> Result<Vec<NodeId>, BrokerError> {
        self.inner.live_nodes().await
    }

    async fn sweep(&self) {
        self.inner.sweep().await;
    }

    fn health(&self) -> Health {
        self.inner.health()
    }

    fn streams(&self) -> usize {
        self.inner.streams()
    }
}

async fn lossy_node(d: &Deployment) -> (Node, Arc<Lossy>) {
    let id = NodeId::random();
    let engine = d.backplane(&id).await;
    let lossy = Arc::new(Lossy { inner: engine.broker, drop_delivery: Arc::default(), history_below: Mutex::new(None) });
    let backplane = Backplane { broker: lossy.clone(), presence: engine.presence, registry: engine.registry };
    (d.node_with(NodeOptions { id, backplane: Some(backplane), clock: d.clock.clone(), ..Default::default() }).await, lossy)
}

async fn next_publication(c: &mut Client) -> Arc<Publication> {
    loop {
        if let Some(Outgoing::Event(p)) = c.next_raw().await
            && p.event == chorus_protocol::EventType::Publication
        {
            return p;
        }
    }
}

fn ns(frames: &[Value]) -> Vec<u64> {
    frames.iter().filter(|f| f["type"] == "publication").filter_map(|f| f["data"]["n"].as_u64()).collect()
}

async fn a_lost_delivery_is_caught_up_from_history_in_order(d: Deployment) {
    let (n, lossy) = lossy_node(&d).await;
    let mut c = Client::open(&n, &token("alice", &["room:g"])).await;
    c.request(json!({"type": "subscribe", "channel": "room:g"})).await;
    // The third event's offset: after the subscriber's own `presence_joined`.
    let third = n.hub.history(&channel("room:g"), chorus_core::broker::HistoryQuery::Position).await.unwrap().current.offset + 3;
    lossy.drop_delivery.lock().insert(third);
    for i in 1..=6 {
        publish(&n.hub, "room:g", i).await;
    }
    let mut got = Vec::new();
    while got.len() < 6 {
        got.extend(ns(&[c.frame().await]));
    }
    assert_eq!(got, [1, 2, 3, 4, 5, 6], "offset 3 came from history, nothing twice");
    publish(&n.hub, "room:g", 7).await;
    assert_eq!(ns(&[c.frame().await]), [7], "live again after the catch-up");
}

async fn a_gap_history_cannot_fill_closes_with_4008(d: Deployment) {
    let (n, lossy) = lossy_node(&d).await;
    let mut c = Client::open(&n, &token("alice", &["room:h"])).await;
    c.request(json!({"type": "subscribe", "channel": "room:h"})).await;
    let first = publish(&n.hub, "room:h", 1).await;
    assert_eq!(ns(&c.until("publication").await), [1]);
    lossy.drop_delivery.lock().insert(first + 1);
    *lossy.history_below.lock() = Some(first + 1);
    publish(&n.hub, "room:h", 2).await;
    publish(&n.hub, "room:h", 3).await;
    loop {
        match c.next().await {
            Item::Closed(code) => break assert_eq!(code, CloseCode::InsufficientState),
            Item::Frame(f) => assert_ne!(f["type"], "publication", "no event may skip the gap: {f}"),
        }
    }
}

async fn after_the_unsubscribe_reply_nothing_of_the_channel_follows(d: Deployment) {
    let n = d.node().await;
    for i in 1..=300 {
        publish(&n.hub, "room:z", i).await;
    }
    let epoch = n.hub.history(&channel("room:z"), chorus_core::broker::HistoryQuery::Position).await.unwrap().current.epoch.to_string();
    let mut c = Client::open(&n, &token("alice", &["room:z", "room:y"])).await;
    c.request(json!({"type": "subscribe", "channel": "room:y"})).await;
    let r = c.request(json!({"type": "subscribe", "channel": "room:z", "since": {"offset": 0, "epoch": epoch}})).await;
    assert_eq!(r["result"]["recovered"], true);
    // The replay runs beside the session: the next command is handled at once.
    let (unsub_id, _) = c.send(json!({"type": "unsubscribe", "channel": "room:z"})).await;
    let mut replayed = Vec::new();
    loop {
        let f = c.frame().await;
        if f["id"] == json!(unsub_id) {
            break;
        }
        replayed.extend(ns(&[f]));
    }
    assert!(replayed.len() < 300, "the replay was still running when the unsubscribe came");
    assert!(replayed.iter().enumerate().all(|(i, n)| *n == i as u64 + 1), "a prefix, in order");
    publish(&n.hub, "room:y", 1000).await;
    let rest = c.until("publication").await;
    assert!(rest.iter().all(|f| f["channel"] == "room:y"), "nothing of room:z after the reply: {rest:?}");
    assert_eq!(ns(&rest), [1000]);
}

async fn every_subscriber_gets_the_same_encoded_frame(d: Deployment) {
    let n = d.node().await;
    let mut a = Client::open(&n, &token("a", &["room:f"])).await;
    let mut b = Client::open(&n, &token("b", &["room:f"])).await;
    a.request(json!({"type": "subscribe", "channel": "room:f"})).await;
    b.request(json!({"type": "subscribe", "channel": "room:f"})).await;
    // Both live first: an event that reaches a subscriber still catching up
    // (the engine's subscription was being set up) comes from history instead.
    publish(&n.hub, "room:f", 0).await;
    next_publication(&mut a).await;
    next_publication(&mut b).await;
    publish(&n.hub, "room:f", 1).await;
    let (pa, pb) = (next_publication(&mut a).await, next_publication(&mut b).await);
    assert!(Arc::ptr_eq(&pa, &pb), "one publication shared");
    assert_eq!(pa.frame().as_ptr(), pb.frame().as_ptr(), "encoded once");
}
