//! Token expiry and typing indicators against paused time, over the
//! in-memory engine only: they test the hub's own timers (typing lives in
//! the hub, not the engine), which a real Redis cannot run under paused time.

use std::time::Duration;

use chorus_protocol::CloseCode;
use serde_json::json;

use crate::common::*;

#[tokio::test(start_paused = true)]
async fn a_token_closes_at_exp_plus_leeway_unless_refreshed() {
    let n = node(NodeOptions::default()).await;
    let exp = T0 + 2_000;
    let a = Client::open(&n, &token_expiring("alice", &[], exp, 1_000)).await;
    let mut b = Client::open(&n, &token_expiring("bob", &[], exp, 1_000)).await;
    let r = b.request(json!({"type": "refresh", "token": token_expiring("bob", &[], T0 + 60_000, 1_000)})).await;
    assert!(r["result"]["expires_at"].is_string(), "{r}");
    assert_eq!(a.connection().expires_at_ms(), Some(exp), "clients are told `exp`");

    // Past `exp` but inside the leeway: the verifier would still accept it, so it stays.
    n.clock.advance_ms(2_500);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(a.outbound.closed(), None);

    n.clock.advance_ms(600);
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert_eq!(a.outbound.closed(), Some(CloseCode::TokenExpired));
    assert_eq!(b.outbound.closed(), None, "refreshed in time");
}

#[tokio::test(start_paused = true)]
async fn a_refreshed_token_that_grants_less_ends_those_subscriptions() {
    let n = node(NodeOptions::default()).await;
    let mut c = Client::open(&n, &token("alice", &["room:a", "room:b"])).await;
    for ch in ["room:a", "room:b"] {
        assert_eq!(c.request(json!({"type": "subscribe", "channel": ch})).await["result"]["channel"], ch);
    }
    let r = c.request(json!({"type": "refresh", "token": token("alice", &["room:a"])})).await;
    assert!(r["result"].is_object(), "{r}");
    let f = c.frame().await;
    assert_eq!((f["type"].as_str(), f["channel"].as_str()), (Some("unsubscribed"), Some("room:b")), "{f}");
    assert_eq!(c.connection().channels(), vec![channel("room:a")]);
    publish(&n.hub, "room:b", 1).await;
    publish(&n.hub, "room:a", 2).await;
    let f = c.until("publication").await.pop().unwrap();
    assert_eq!((f["channel"].as_str(), f["data"]["n"].as_u64()), (Some("room:a"), Some(2)), "room:b delivers nothing now");
}

#[tokio::test(start_paused = true)]
async fn typing_renews_expires_and_stops_with_its_connection() {
    let n = node(NodeOptions::default()).await;
    let mut watcher = Client::open(&n, &token("wendy", &[])).await;
    watcher.request(json!({"type": "subscribe", "channel": "chat:t"})).await;
    let mut typist = Client::open(&n, &token("tom", &[])).await;
    typist.request(json!({"type": "subscribe", "channel": "chat:t"})).await;
    watcher.until("presence_joined").await;
    assert_eq!(watcher.until("presence_joined").await.last().unwrap()["data"]["user_id"], "tom");

    let r = typist.request(json!({"type": "typing", "channel": "chat:t", "active": true})).await;
    assert_eq!(r["result"]["active"], true);
    let started = watcher.frame().await;
    assert_eq!((started["type"].as_str(), started["data"]["user_id"].as_str()), (Some("typing_started"), Some("tom")));
    assert_eq!(started["data"]["expires_at"], chorus_protocol::timestamp::format_ms(T0 + 5_000));

    // Renewed past half its life: announced again with the new expiry, and it
    // outlives the first one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    n.clock.advance_ms(3_000);
    typist.request(json!({"type": "typing", "channel": "chat:t"})).await;
    let renewed = watcher.frame().await;
    assert_eq!(renewed["type"], "typing_started");
    assert_eq!(renewed["data"]["expires_at"], chorus_protocol::timestamp::format_ms(T0 + 8_000));
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    publish(&n.hub, "chat:t", 1).await;
    assert_eq!(watcher.frame().await["type"], "publication", "no typing_stopped while renewed");

    // Unrenewed: stops by itself after the ttl.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = watcher.frame().await;
    assert_eq!((stopped["type"].as_str(), stopped["data"]["user_id"].as_str()), (Some("typing_stopped"), Some("tom")));
    assert_eq!(n.hub.typing_count(), 0);

    // Stops when its connection ends, before the user leaves.
    typist.request(json!({"type": "typing", "channel": "chat:t"})).await;
    assert_eq!(watcher.frame().await["type"], "typing_started");
    typist.close().await;
    let events: Vec<String> = watcher.until("presence_left").await.iter().map(|f| f["type"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(events, ["typing_stopped", "presence_left"]);
    assert_eq!(n.hub.typing_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn typing_stops_on_unsubscribe_and_on_request() {
    let n = node(NodeOptions::default()).await;
    let mut watcher = Client::open(&n, &token("wendy", &[])).await;
    watcher.request(json!({"type": "subscribe", "channel": "chat:u"})).await;
    let mut typist = Client::open(&n, &token("tom", &[])).await;
    typist.request(json!({"type": "subscribe", "channel": "chat:u"})).await;
    watcher.until("presence_joined").await;
    watcher.until("presence_joined").await;

    typist.request(json!({"type": "typing", "channel": "chat:u"})).await;
    assert_eq!(watcher.frame().await["type"], "typing_started");
    typist.request(json!({"type": "typing", "channel": "chat:u", "active": false})).await;
    assert_eq!(watcher.frame().await["type"], "typing_stopped");

    typist.request(json!({"type": "typing", "channel": "chat:u"})).await;
    assert_eq!(watcher.frame().await["type"], "typing_started");
    typist.request(json!({"type": "unsubscribe", "channel": "chat:u"})).await;
    let events: Vec<String> = watcher.until("presence_left").await.iter().map(|f| f["type"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(events, ["typing_stopped", "presence_left"]);
    let r = typist.request(json!({"type": "typing", "channel": "chat:u"})).await;
    assert_eq!(r["error"]["error"], "not_subscribed");
}
