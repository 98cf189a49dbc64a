//! Presence per user (not per connection) and typing indicators.

use std::time::Duration;

use serde_json::json;

use crate::common::{Options, TestServer};

#[tokio::test]
async fn presence_joins_and_leaves_once_per_user() {
    let s = TestServer::start(Options::default()).await;
    let mut watcher = s.client("watcher", &["room:p"]).await;
    watcher.request(json!({"type": "subscribe", "channel": "room:p"})).await;
    assert_eq!(watcher.push_of("presence_joined").await["data"]["user_id"], "watcher");

    let mut a1 = s.client("alice", &["room:p"]).await;
    a1.request(json!({"type": "subscribe", "channel": "room:p"})).await;
    assert_eq!(watcher.push_of("presence_joined").await["data"]["user_id"], "alice");
    let mut a2 = s.client("alice", &["room:p"]).await;
    a2.request(json!({"type": "subscribe", "channel": "room:p"})).await;

    let r = watcher.request(json!({"type": "presence", "channel": "room:p"})).await;
    let users = r["result"]["users"].as_array().unwrap().clone();
    assert!(users.contains(&json!({"user_id": "alice", "connections": 2})), "{r}");
    assert!(users.contains(&json!({"user_id": "watcher", "connections": 1})), "{r}");

    drop(a1);
    // Alice still has a connection: no leave yet. Her second leaves by unsubscribing.
    a2.request(json!({"type": "unsubscribe", "channel": "room:p"})).await;
    let left = watcher.push_of("presence_left").await;
    assert_eq!(left["data"]["user_id"], "alice");
    // Exactly one join and one leave for alice reached the watcher: the next presence event is ours.
    let r = watcher.request(json!({"type": "presence", "channel": "room:p"})).await;
    assert_eq!(r["result"]["users"], json!([{"user_id": "watcher", "connections": 1}]));
}

#[tokio::test]
async fn typing_starts_and_expires() {
    let mut opts = Options::default();
    opts.timing.typing_ttl = Duration::from_millis(600);
    let s = TestServer::start(opts).await;
    let mut watcher = s.client("watcher", &["room:t"]).await;
    watcher.request(json!({"type": "subscribe", "channel": "room:t"})).await;
    let mut typist = s.client("typist", &["room:t"]).await;
    let r = typist.request(json!({"type": "typing", "channel": "room:t"})).await;
    assert_eq!(r["error"]["error"], "not_subscribed");
    typist.request(json!({"type": "subscribe", "channel": "room:t"})).await;
    assert!(typist.request(json!({"type": "typing", "channel": "room:t"})).await["result"].is_object());
    let started = watcher.push_of("typing_started").await;
    assert_eq!(started["data"]["user_id"], "typist");
    assert!(started["data"]["expires_at"].is_string());
    let stopped = watcher.push_of("typing_stopped").await;
    assert_eq!(stopped["data"]["user_id"], "typist");
    assert_eq!(s.hub.typing_count(), 0);

    typist.request(json!({"type": "typing", "channel": "room:t"})).await;
    watcher.push_of("typing_started").await;
    typist.request(json!({"type": "typing", "channel": "room:t", "active": false})).await;
    watcher.push_of("typing_stopped").await;
}
