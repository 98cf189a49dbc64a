//! Two hubs in one process sharing one broker behave like two nodes: once
//! over the in-memory engine, once over Redis (`CHORUS_TEST_REDIS_URL`, as
//! `scripts/test.sh` sets it; see `common::Engine`), with the same assertions: the conformance
//! suite of the broker seam at the level of whole nodes (fan-out, history,
//! recovery, presence, the per-user limit, revocations, maintenance, run
//! cancels and live nodes).

use std::sync::Arc;
use std::time::Duration;

use chorus_core::broker::memory::MemoryBroker;
use chorus_core::config::MemoryBrokerConfig;
use chorus_core::UserId;
use chorus_protocol::ChannelName;
use serde_json::json;

use crate::common::{Engine, Options, TestServer, eventually, every_engine, redis_prefix};

async fn pair(engine: Engine) -> (TestServer, TestServer) {
    let (a, b) = match engine {
        Engine::Memory => {
            let broker = Arc::new(MemoryBroker::new(MemoryBrokerConfig::default()));
            let a = TestServer::start(Options { broker: Some(broker.clone()), ..Options::default() }).await;
            let b = TestServer::start(Options { broker: Some(broker), ..Options::default() }).await;
            (a, b)
        }
        Engine::Redis => {
            // Its own deployment: tests share the suite's Redis.
            let prefix = redis_prefix();
            (TestServer::start_in(&prefix, Options::default()).await, TestServer::start_in(&prefix, Options::default()).await)
        }
    };
    assert_ne!(a.hub.node(), b.hub.node());
    (a, b)
}

every_engine!(
    a_publish_on_one_node_reaches_subscribers_on_the_other,
    recovery_works_across_nodes,
    the_per_user_limit_holds_across_nodes_and_evicts_on_the_right_node,
    presence_is_shared_across_nodes,
    a_revoked_subscription_ends_on_every_node,
    history_written_on_one_node_is_read_on_the_other,
    maintenance_set_on_one_node_applies_on_the_other,
    a_run_cancel_reaches_only_the_node_it_is_sent_to_and_live_nodes_follow_the_nodes,
);

async fn a_publish_on_one_node_reaches_subscribers_on_the_other(engine: Engine) {
    let (a, b) = pair(engine).await;
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

async fn recovery_works_across_nodes(engine: Engine) {
    let (a, b) = pair(engine).await;
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

async fn the_per_user_limit_holds_across_nodes_and_evicts_on_the_right_node(engine: Engine) {
    let (a, b) = pair(engine).await;
    let mut oldest = a.client("alice", &[]).await;
    let mut second = a.client("alice", &[]).await;
    let _third = b.client("alice", &[]).await;
    let _fourth = b.client("alice", &[]).await;
    assert_eq!(oldest.closed().await.0, 4004);
    assert_eq!(second.request(json!({"type": "ping"})).await["result"]["pong"], true);
}

async fn presence_is_shared_across_nodes(engine: Engine) {
    let (a, b) = pair(engine).await;
    let mut watcher = b.client("watcher", &[]).await;
    watcher.request(json!({"type": "subscribe", "channel": "chat:x"})).await;
    assert_eq!(watcher.push_of("presence_joined").await["data"]["user_id"], "watcher");

    let mut alice = a.client("alice", &[]).await;
    alice.request(json!({"type": "subscribe", "channel": "chat:x"})).await;
    let joined = watcher.push().await;
    assert_eq!((joined["type"].as_str(), joined["data"]["user_id"].as_str()), (Some("presence_joined"), Some("alice")), "{joined}");
    // Either node lists both users.
    for (node, c) in [("b", &mut watcher), ("a", &mut alice)] {
        let r = c.request(json!({"type": "presence", "channel": "chat:x"})).await;
        let users = r["result"]["users"].as_array().unwrap();
        assert_eq!(users.len(), 2, "node {node}: {r}");
        assert!(users.contains(&json!({"user_id": "alice", "connections": 1})), "node {node}: {r}");
        assert!(users.contains(&json!({"user_id": "watcher", "connections": 1})), "node {node}: {r}");
    }
    // A second connection of alice, on the other node, is no new join; her last leaving is a leave.
    let mut alice_b = b.client("alice", &[]).await;
    alice_b.request(json!({"type": "subscribe", "channel": "chat:x"})).await;
    alice.request(json!({"type": "unsubscribe", "channel": "chat:x"})).await;
    alice_b.request(json!({"type": "unsubscribe", "channel": "chat:x"})).await;
    let left = watcher.push().await;
    assert_eq!((left["type"].as_str(), left["data"]["user_id"].as_str()), (Some("presence_left"), Some("alice")), "{left}");
    let r = watcher.request(json!({"type": "presence", "channel": "chat:x"})).await;
    assert_eq!(r["result"]["users"], json!([{"user_id": "watcher", "connections": 1}]));
}

async fn a_revoked_subscription_ends_on_every_node(engine: Engine) {
    let (a, b) = pair(engine).await;
    let mut alice_a = a.client("alice", &["feed:r"]).await;
    alice_a.request(json!({"type": "subscribe", "channel": "feed:r"})).await;
    let mut alice_b = b.client("alice", &["feed:r"]).await;
    alice_b.request(json!({"type": "subscribe", "channel": "feed:r"})).await;
    let mut bob = a.client("bob", &["feed:r"]).await;
    bob.request(json!({"type": "subscribe", "channel": "feed:r"})).await;
    assert_eq!((a.hub.subscription_count(), b.hub.subscription_count()), (2, 1));

    // Revoked from node b: alice's subscriptions on both nodes end, with a push.
    b.hub.revoke_subscription(&UserId::new("alice"), &ChannelName::parse("feed:r").unwrap(), "removed from the channel").await.unwrap();
    for c in [&mut alice_a, &mut alice_b] {
        let u = c.push().await;
        assert_eq!((u["type"].as_str(), u["channel"].as_str()), (Some("unsubscribed"), Some("feed:r")), "{u}");
        assert_eq!(u["data"]["reason"], "removed from the channel");
    }
    assert_eq!((a.hub.subscription_count(), b.hub.subscription_count()), (1, 0));
    // Bob keeps receiving; alice gets nothing more of the channel.
    b.publish("feed:r", "publication", json!({"n": 1})).await;
    assert_eq!(bob.push_of("publication").await["data"]["n"], 1);
    for c in [&mut alice_a, &mut alice_b] {
        assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true);
    }
    alice_a.request(json!({"type": "subscribe", "channel": "user:alice"})).await;
    b.publish("user:alice", "publication", json!({"n": "after"})).await;
    let p = alice_a.push().await;
    assert_eq!((p["channel"].as_str(), p["data"]["n"].as_str()), (Some("user:alice"), Some("after")), "nothing of feed:r came first: {p}");
}

async fn history_written_on_one_node_is_read_on_the_other(engine: Engine) {
    let (a, b) = pair(engine).await;
    for n in 1..=3 {
        assert_eq!(a.publish("room:h", "publication", json!({"n": n})).await.0, 200);
    }
    let mut c = b.client("alice", &["room:h"]).await;
    let r = c.request(json!({"type": "history", "channel": "room:h", "limit": 10})).await;
    let ns: Vec<_> = r["result"]["events"].as_array().unwrap().iter().map(|e| e["data"]["n"].clone()).collect();
    assert_eq!(ns, vec![json!(1), json!(2), json!(3)], "{r}");
}

async fn maintenance_set_on_one_node_applies_on_the_other(engine: Engine) {
    use chorus_core::maintenance::MaintenanceMode;
    let (a, b) = pair(engine).await;
    a.hub.set_maintenance(MaintenanceMode::On { message: Some("upgrading".into()), since_ms: 1 }).await.unwrap();
    eventually("maintenance on node b", || b.hub.in_maintenance()).await;
    a.hub.set_maintenance(MaintenanceMode::Off).await.unwrap();
    eventually("maintenance off on node b", || !b.hub.in_maintenance()).await;
}

/// Records the run cancels a node receives.
#[derive(Default)]
struct Cancels(parking_lot::Mutex<Vec<String>>, tokio::sync::Notify);

impl chorus_core::RunControls for Cancels {
    fn cancel_run(&self, run_id: String) {
        self.0.lock().push(run_id);
        self.1.notify_waiters();
    }
}

async fn a_run_cancel_reaches_only_the_node_it_is_sent_to_and_live_nodes_follow_the_nodes(engine: Engine) {
    let (a, b) = pair(engine).await;
    let (on_a, on_b) = (Arc::new(Cancels::default()), Arc::new(Cancels::default()));
    let (weak_a, weak_b): (std::sync::Weak<dyn chorus_core::RunControls>, std::sync::Weak<dyn chorus_core::RunControls>) = {
        let (x, y): (Arc<dyn chorus_core::RunControls>, Arc<dyn chorus_core::RunControls>) = (on_a.clone(), on_b.clone());
        (Arc::downgrade(&x), Arc::downgrade(&y))
    };
    a.hub.route_run_controls(weak_a);
    b.hub.route_run_controls(weak_b);
    let heard = on_b.1.notified();
    a.hub.cancel_run_on(b.hub.node(), "r1").await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), heard).await.expect("node b heard the cancel");
    assert_eq!(*on_b.0.lock(), vec!["r1".to_owned()]);
    // Sent to itself, a node applies it at once; the other node hears nothing of either.
    a.hub.cancel_run_on(a.hub.node(), "r2").await.unwrap();
    assert_eq!(*on_a.0.lock(), vec!["r2".to_owned()]);
    assert_eq!(on_b.0.lock().len(), 1);

    let live = a.hub.live_nodes().await.unwrap();
    assert!(live.contains(a.hub.node()) && live.contains(b.hub.node()), "{live:?}");
    let gone = b.hub.node().clone();
    b.shutdown();
    b.hub.drained().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while a.hub.live_nodes().await.unwrap().contains(&gone) {
        assert!(tokio::time::Instant::now() < deadline, "node b still alive after its shutdown");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
