//! Redis failures under hubs that share one Redis: what only a real
//! `redis-server` of the test's own (killed, restarted) can show. Fan-out,
//! recovery, presence, the per-user limit and control across hubs run on
//! every engine in chorus-core's hub tests (`tests/hub/cluster.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::access::AccessPolicy;
use chorus_clock::{ManualClock, SystemClock};
use chorus_core::config::{Limits, RateLimits, Timing};
use chorus_core::metrics::CoreMetrics;
use chorus_core::{Executor, Hub, HubConfig, HubParts, NodeId};

use chorus_redis::{RedisBroker, RedisMetrics};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::{Client, NoChat, Node, TestVerifier, namespaces, token};
use crate::support::{RedisServer, config};

/// A hub over its own Redis engine.
async fn hub(name: &str, url: &str) -> (Node, RedisBroker) {
    let id = NodeId::new(name);
    let engine = RedisBroker::connect(config(url), id.clone(), Arc::new(SystemClock), RedisMetrics::default()).await.unwrap();
    let ns = namespaces();
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
