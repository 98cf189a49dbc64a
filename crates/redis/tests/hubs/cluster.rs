//! Fan-out, recovery, presence, the per-user limit and Redis failures
//! across hubs that share one Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::access::AccessPolicy;
use chorus_clock::{ManualClock, SystemClock};
use chorus_core::config::{Limits, NamespaceConfig, RateLimits, SubscribeRule, Timing};
use chorus_core::metrics::CoreMetrics;
use chorus_core::{Executor, Hub, HubConfig, HubParts, NodeId};

use chorus_protocol::CloseCode;
use chorus_redis::{RedisBroker, RedisMetrics};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::{Client, Item, NoChat, Node, TestVerifier, namespaces, publish, token};
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
    let executor = Arc::new(Executor::new(hub.clone(), Arc::new(TestVerifier), Arc::new(NoChat), None));
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

/// Waits for a presence event about `user` (others, e.g. one's own join, pass by).
async fn presence_event(c: &mut Client, kind: &str, user: &str) {
    loop {
        let f = c.frame().await;
        if f["type"] == kind && f["data"]["user_id"] == user {
            return;
        }
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
    presence_event(&mut watcher, "presence_joined", "alice").await;
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
    presence_event(&mut watcher, "presence_left", "alice").await;
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
                let prev = last.get(&e).copied().unwrap_or(o.saturating_sub(1));
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

/// Reads frames until `done` says the client holds `target`: the event
/// itself, or a `recovery_failed` at or past it (then it refetches).
async fn read_until_covered(c: &mut Client, frames: &mut Vec<Value>, target: &chorus_core::publication::Publication) {
    loop {
        let f = c.frame().await;
        let covered = match f["type"].as_str() {
            Some("recovery_failed") => f["epoch"] == *target.epoch && f["offset"].as_u64().is_some_and(|o| o >= target.offset),
            _ => f["epoch"] == *target.epoch && f["offset"] == target.offset,
        };
        frames.push(f);
        if covered {
            return;
        }
    }
}

async fn publish_one(hub: &Hub, n: u64) -> Arc<chorus_core::publication::Publication> {
    let ch = chorus_protocol::ChannelName::parse("wide:s").unwrap();
    let data = chorus_protocol::Payload::from_value(&json!({ "n": n })).unwrap();
    hub.publish(&ch, chorus_core::publication::Draft::new(chorus_protocol::EventType::Publication, data)).await.unwrap()
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
    let (mut frames_a, mut frames_b) = (Vec::new(), Vec::new());
    let mut last = None;
    for n in 1..=5 {
        last = Some(publish_one(&a.0.hub, n).await);
    }
    let last = last.unwrap();
    read_until_covered(&mut on_a, &mut frames_a, &last).await;
    read_until_covered(&mut on_b, &mut frames_b, &last).await;

    redis.kill();
    assert!(a.1.until_degraded(Duration::from_secs(10)).await, "not degraded");
    // Local delivery goes on, on a local epoch: the client is told to
    // refetch once (the epoch changed), then gets the local events live.
    let local = publish_one(&a.0.hub, 6).await;
    assert_ne!(local.epoch, last.epoch);
    read_until_covered(&mut on_a, &mut frames_a, &local).await;
    let next = publish_one(&a.0.hub, 7).await;
    read_until_covered(&mut on_a, &mut frames_a, &next).await;
    assert_eq!(frames_a.last().and_then(n_of), Some(7), "a live local event: {:?}", frames_a.last());

    redis.restart();
    assert!(a.1.until_up(Duration::from_secs(5)).await && b.1.until_up(Duration::from_secs(5)).await);
    publish_one(&a.0.hub, 8).await;
    let end = publish_one(&a.0.hub, 9).await;
    read_until_covered(&mut on_a, &mut frames_a, &end).await;
    read_until_covered(&mut on_b, &mut frames_b, &end).await;
    for frames in [&frames_a, &frames_b] {
        check_no_silent_gap(frames).unwrap_or_else(|e| panic!("{e}: {frames:?}"));
        assert!(frames.iter().any(|f| f["type"] == "recovery_failed"), "Redis restarted empty: the client must be told to refetch");
    }
}
