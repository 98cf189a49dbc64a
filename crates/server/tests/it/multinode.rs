//! Two hubs in one process sharing one broker behave like two nodes.

use std::sync::Arc;

use chorus_core::broker::memory::MemoryBroker;
use chorus_core::config::MemoryBrokerConfig;
use serde_json::json;

use crate::common::{Options, TestServer};

async fn pair() -> (TestServer, TestServer) {
    let broker = Arc::new(MemoryBroker::new(MemoryBrokerConfig::default()));
    let a = TestServer::start(Options { broker: Some(broker.clone()), ..Options::default() }).await;
    let b = TestServer::start(Options { broker: Some(broker), ..Options::default() }).await;
    assert_ne!(a.hub.node(), b.hub.node());
    (a, b)
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_subscribers_on_the_other() {
    let (a, b) = pair().await;
    let mut on_a = a.client("alice", &["room:x"]).await;
    on_a.request(json!({"type": "subscribe", "channel": "room:x"})).await;
    let mut on_b = b.client("bob", &["room:x"]).await;
    on_b.request(json!({"type": "subscribe", "channel": "room:x"})).await;
    assert_eq!(a.publish("room:x", "publication", json!({"from": "a"})).await.0, 200);
    assert_eq!(on_b.push_of("publication").await["data"]["from"], "a");
    assert_eq!(on_a.push_of("publication").await["data"]["from"], "a");
    b.publish("room:x", "publication", json!({"from": "b"})).await;
    assert_eq!(on_a.push_of("publication").await["data"]["from"], "b");
}

#[tokio::test]
async fn recovery_works_across_nodes() {
    let (a, b) = pair().await;
    let mut c = a.client("alice", &["room:y"]).await;
    c.request(json!({"type": "subscribe", "channel": "room:y"})).await;
    a.publish("room:y", "publication", json!({"n": 1})).await;
    let last = c.push_of("publication").await;
    drop(c);
    for n in 2..=4 {
        b.publish("room:y", "publication", json!({"n": n})).await;
    }
    let mut c = b.client("alice", &["room:y"]).await;
    let since = json!({"offset": last["offset"], "epoch": last["epoch"]});
    let r = c.request(json!({"type": "subscribe", "channel": "room:y", "since": since})).await;
    assert_eq!(r["result"]["recovered"], true);
    for n in 2..=4 {
        assert_eq!(c.push_of("publication").await["data"]["n"], n);
    }
}

#[tokio::test]
async fn the_per_user_limit_holds_across_nodes_and_evicts_on_the_right_node() {
    let (a, b) = pair().await;
    let mut oldest = a.client("alice", &[]).await;
    let mut second = a.client("alice", &[]).await;
    let _third = b.client("alice", &[]).await;
    let _fourth = b.client("alice", &[]).await;
    assert_eq!(oldest.closed().await.0, 4004);
    assert_eq!(second.request(json!({"type": "ping"})).await["result"]["pong"], true);
}
