//! Fan-out, recovery, presence, the per-user limit and Redis failures
//! across hubs that share one Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::access::AccessPolicy;
use chorus_core::clock::{ManualClock, SystemClock};
use chorus_core::config::{Limits, NamespaceConfig, RateLimits, SubscribeRule, Timing};
use chorus_core::metrics::CoreMetrics;
use chorus_core::{Executor, Hub, HubConfig, HubParts, NodeId};
use chorus_protocol::CloseCode;
use chorus_redis::{RedisBroker, RedisMetrics};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::{Client, Item, Node, TestVerifier, namespaces, publish, token};
use crate::support::{RedisServer, config};

/// A hub over its own Redis engine; `wide:` is open to everyone without
/// presence (so big fan-outs carry only the events under test).
async fn hub(name: &str, url: &str) -> (Node, RedisBroker) {
    let id = NodeId::new(name);
    let engine = RedisBroker::connect(config(url), id.clone(), Arc::new(SystemClock), RedisMetrics::default()).await.unwrap();
    let mut ns = namespaces();
    ns.0.insert("wide".into(), NamespaceConfig { subscribe: SubscribeRule::Authenticated, ..Default::default() });
    let limits = Limits { connects_per_second: 100_000, ..Limits::default() };
    let (limits_tx, limits_rx) = watch::channel(limits);
    let (_, rates_rx) = watch::channel(RateLimits::default());
    let hub = Hub::start(HubParts {
        config: HubConfig { node: id, timing: Timing::default() },
        access: AccessPolicy::new(ns, None),
        limits: limits_rx,
        rates: rates_rx,
        backplane: engine.backplane(),
        metrics: CoreMetrics::unregistered(),
        clock: Arc::new(SystemClock),
    })
    .await
    .unwrap();
    assert!(engine.until_up(Duration::from_secs(5)).await, "{name} up");
    let executor = Arc::new(Executor::new(hub.clone(), Arc::new(TestVerifier), None));
    (Node { hub, executor, clock: ManualClock::starting_at(0), limits: limits_tx }, engine)
}

fn n_of(f: &Value) -> Option<u64> {
    (f["type"] == "publication").then(|| f["data"]["n"].as_u64()).flatten()
}

/// Reads publications until `count` arrived (or panics after 10 s).
async fn read_ns(c: &mut Client, count: usize) -> Vec<u64> {
    let mut got = Vec::new();
    while got.len() < count {
        if let Some(n) = n_of(&c.frame().await) {
            got.push(n);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_deliver_every_event_in_order_to_a_thousand_subscribers() {
    let redis = RedisServer::start();
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(hub(name, &redis.url()).await);
    }
    let mut clients = Vec::new();
    for i in 0..1000 {
        let (node, _) = &nodes[i % 3];
        let mut c = Client::open(node, &token(&format!("u{i}"), &[])).await;
        assert_eq!(c.request(json!({"type": "subscribe", "channel": "wide:all"})).await["result"]["channel"], "wide:all");
        clients.push(c);
    }
    for n in 1..=20 {
        publish(&nodes[0].0.hub, "wide:all", n).await;
    }
    for c in &mut clients {
        assert_eq!(read_ns(c, 20).await, (1..=20).collect::<Vec<_>>());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_storm_onto_other_nodes_recovers_exactly() {
    let redis = RedisServer::start();
    let a = hub("a", &redis.url()).await;
    let b = hub("b", &redis.url()).await;
    let users = 200;
    let mut positions = Vec::new();
    for i in 0..users {
        let channel = format!("wide:u{i}");
        let mut c = Client::open(&a.0, &token(&format!("u{i}"), &[])).await;
        c.request(json!({"type": "subscribe", "channel": channel})).await;
        publish(&a.0.hub, &channel, 1).await;
        let f = c.until("publication").await.pop().unwrap();
        positions.push((f["offset"].as_u64().unwrap(), f["epoch"].as_str().unwrap().to_owned()));
        c.close().await;
    }
    // Missed while away: 5 events per channel, published on the other node.
    for i in 0..users {
        for n in 2..=6 {
            publish(&b.0.hub, &format!("wide:u{i}"), n).await;
        }
    }
    for (i, (offset, epoch)) in positions.into_iter().enumerate() {
        let mut c = Client::open(&b.0, &token(&format!("u{i}"), &[])).await;
        let r = c.request(json!({"type": "subscribe", "channel": format!("wide:u{i}"), "since": {"offset": offset, "epoch": epoch}})).await;
        assert_eq!(r["result"]["recovered"], true, "{r}");
        assert_eq!(read_ns(&mut c, 5).await, vec![2, 3, 4, 5, 6]);
        publish(&a.0.hub, &format!("wide:u{i}"), 7).await;
        assert_eq!(read_ns(&mut c, 1).await, vec![7], "live again after the replay");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_and_the_per_user_limit_span_the_nodes() {
    let redis = RedisServer::start();
    let a = hub("a", &redis.url()).await;
    let b = hub("b", &redis.url()).await;
    let mut watcher = Client::open(&b.0, &token("wendy", &[])).await;
    watcher.request(json!({"type": "subscribe", "channel": "chat:p"})).await;
    let mut first = Client::open(&a.0, &token("alice", &[])).await;
    first.request(json!({"type": "subscribe", "channel": "chat:p"})).await;
    let joined = watcher.until("presence_joined").await.pop().unwrap();
    assert_eq!(joined["data"]["user_id"], "alice");
    let r = watcher.request(json!({"type": "presence", "channel": "chat:p"})).await;
    assert_eq!(r["result"]["users"], json!([{"user_id": "alice", "connections": 1}, {"user_id": "wendy", "connections": 1}]));

    // Three more of alice's connections, on the other node: the oldest (on a) goes.
    let _second = Client::open(&a.0, &token("alice", &[])).await;
    let _third = Client::open(&b.0, &token("alice", &[])).await;
    let _fourth = Client::open(&b.0, &token("alice", &[])).await;
    loop {
        match first.next().await {
            Item::Closed(code) => break assert_eq!(code, CloseCode::ConnectionLimit),
            Item::Frame(_) => {}
        }
    }
    drop(first);
    let left = watcher.until("presence_left").await.pop().unwrap();
    assert_eq!(left["data"]["user_id"], "alice");
}

/// Every client ends with each published event, or with an explicit
/// `recovery_failed` covering it (then it refetches): never a silent gap.
fn check_no_silent_gap(frames: &[Value]) -> Result<(), String> {
    let mut last: HashMap<String, u64> = HashMap::new();
    let mut epoch = String::new();
    for f in frames {
        match f["type"].as_str() {
            Some("recovery_failed") => {
                epoch = f["epoch"].as_str().unwrap_or_default().to_owned();
                last.insert(epoch.clone(), f["offset"].as_u64().unwrap_or(0));
            }
            Some(_) if f["offset"].is_u64() => {
                let (e, o) = (f["epoch"].as_str().unwrap_or_default().to_owned(), f["offset"].as_u64().unwrap_or(0));
                if e != epoch {
                    if !last.contains_key(&e) && !epoch.is_empty() {
                        return Err(format!("epoch changed to {e} at offset {o} without recovery_failed"));
                    }
                    epoch = e.clone();
                }
                let prev = last.get(&e).copied().unwrap_or(o - 1);
                if o != prev + 1 {
                    return Err(format!("gap in epoch {e}: {prev} then {o}"));
                }
                last.insert(e, o);
            }
            _ => {}
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_stream_local_delivery_goes_on_and_nothing_is_lost_silently() {
    let mut redis = RedisServer::start();
    let a = hub("a", &redis.url()).await;
    let b = hub("b", &redis.url()).await;
    let mut on_a = Client::open(&a.0, &token("x", &[])).await;
    let mut on_b = Client::open(&b.0, &token("y", &[])).await;
    for c in [&mut on_a, &mut on_b] {
        c.request(json!({"type": "subscribe", "channel": "wide:s"})).await;
    }
    for n in 1..=5 {
        publish(&a.0.hub, "wide:s", n).await;
    }
    assert_eq!(read_ns(&mut on_a, 5).await, [1, 2, 3, 4, 5]);
    assert_eq!(read_ns(&mut on_b, 5).await, [1, 2, 3, 4, 5]);

    redis.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(matches!(a.0.hub.broker_health(), chorus_core::broker::Health::Degraded { .. }));
    for n in 6..=8 {
        publish(&a.0.hub, "wide:s", n).await;
    }
    assert_eq!(read_ns(&mut on_a, 3).await, [6, 7, 8], "local delivery goes on");
    redis.restart();
    assert!(a.1.until_up(Duration::from_secs(5)).await && b.1.until_up(Duration::from_secs(5)).await);
    for n in 9..=10 {
        publish(&a.0.hub, "wide:s", n).await;
    }
    for c in [&mut on_a, &mut on_b] {
        let mut frames = Vec::new();
        loop {
            let f = c.frame().await;
            let done = n_of(&f) == Some(10);
            frames.push(f);
            if done {
                break;
            }
        }
        check_no_silent_gap(&frames).unwrap();
        // What the client holds afterwards: every event it saw, and for the
        // rest a `recovery_failed` telling it to refetch.
        let failed = frames.iter().any(|f| f["type"] == "recovery_failed");
        let seen: Vec<u64> = frames.iter().filter_map(n_of).collect();
        assert!(failed || seen.windows(2).all(|w| w[1] == w[0] + 1), "{seen:?}");
        assert!(failed, "the epoch changed (Redis restarted empty): the client must be told to refetch");
    }
}
