//! Presence per user (not per connection) and typing indicators.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Engine, Options, TestServer, WsClient, every_engine};

every_engine!(
    presence_joins_and_leaves_once_per_user,
    racing_connections_of_one_user_leave_presence_matching_the_store,
);

/// Publishes a marker on `channel` and returns every push `c` gets before it.
async fn until_marker(s: &TestServer, c: &mut WsClient, channel: &str, marker: &str) -> Vec<Value> {
    assert_eq!(s.publish(channel, "publication", json!({"marker": marker})).await.0, 200);
    let mut seen = Vec::new();
    loop {
        let p = c.push().await;
        if p["type"] == "publication" && p["data"]["marker"] == marker {
            return seen;
        }
        seen.push(p);
    }
}

/// `(type, user_id)` of the presence and typing events among `events`.
fn user_events(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("presence_") || t.starts_with("typing_")))
        .map(|e| (e["type"].as_str().unwrap().to_owned(), e["data"]["user_id"].as_str().unwrap().to_owned()))
        .collect()
}

fn count(events: &[(String, String)], kind: &str, user: &str) -> usize {
    events.iter().filter(|(k, u)| k == kind && u == user).count()
}

/// A WebSocket close from our side, waited for until the server's close frame:
/// the server releases the connection (presence, typing) before sending it.
async fn close(c: &mut WsClient) {
    c.send_message(Message::Close(None)).await;
    c.closed().await;
}

async fn presence_joins_and_leaves_once_per_user(engine: Engine) {
    let s = TestServer::start_on(engine, Options::default()).await;
    let mut watcher = s.client("watcher", &["room:p"]).await;
    watcher.request(json!({"type": "subscribe", "channel": "room:p"})).await;

    let mut a1 = s.client("alice", &["room:p"]).await;
    a1.request(json!({"type": "subscribe", "channel": "room:p"})).await;
    let mut a2 = s.client("alice", &["room:p"]).await;
    a2.request(json!({"type": "subscribe", "channel": "room:p"})).await;
    let r = watcher.request(json!({"type": "presence", "channel": "room:p"})).await;
    let users = r["result"]["users"].as_array().unwrap().clone();
    assert!(users.contains(&json!({"user_id": "alice", "connections": 2})), "{r}");
    assert!(users.contains(&json!({"user_id": "watcher", "connections": 1})), "{r}");

    // Alice's first connection goes, her second stays: no leave yet.
    close(&mut a1).await;
    let r = watcher.request(json!({"type": "presence", "channel": "room:p"})).await;
    assert!(r["result"]["users"].as_array().unwrap().contains(&json!({"user_id": "alice", "connections": 1})), "{r}");
    // Her second leaves by unsubscribing (replied once presence is settled).
    a2.request(json!({"type": "unsubscribe", "channel": "room:p"})).await;

    let events = user_events(&until_marker(&s, &mut watcher, "room:p", "end").await);
    assert_eq!(
        events,
        vec![
            ("presence_joined".to_owned(), "watcher".to_owned()),
            ("presence_joined".to_owned(), "alice".to_owned()),
            ("presence_left".to_owned(), "alice".to_owned()),
        ],
        "exactly one join and one leave per user"
    );
    let r = watcher.request(json!({"type": "presence", "channel": "room:p"})).await;
    assert_eq!(r["result"]["users"], json!([{"user_id": "watcher", "connections": 1}]));
}

async fn racing_connections_of_one_user_leave_presence_matching_the_store(engine: Engine) {
    let mut opts = Options::default();
    // A closing connection may still count for a moment while its successor opens.
    opts.limits.connections_per_user = 10;
    let s = TestServer::start_on(engine, opts).await;
    let channel = "chat:race";
    let mut watcher = s.client("watcher", &[]).await;
    watcher.request(json!({"type": "subscribe", "channel": channel})).await;

    // Each racer hands its presence from one connection to the next, both at
    // once, again and again: their events can be published out of order.
    let racers: Vec<String> = (0..5).map(|i| format!("racer{i}")).collect();
    let tasks: Vec<_> = racers
        .iter()
        .map(|user| {
            let url = s.ws_url(Some(&s.token(user, &[])));
            tokio::spawn(async move {
                let connect = || async {
                    let mut c = WsClient::connect(&url).await.unwrap();
                    assert_eq!(c.push().await["type"], "connected");
                    c
                };
                let join = |mut c: WsClient| async move {
                    assert!(c.request(json!({"type": "subscribe", "channel": channel})).await["result"].is_object());
                    c
                };
                let mut current = join(connect().await).await;
                for round in 0..20 {
                    let next = connect().await;
                    let leave = async move {
                        if round % 2 == 0 {
                            close(&mut current).await;
                        } else {
                            current.request(json!({"type": "unsubscribe", "channel": channel})).await;
                        }
                    };
                    // The old one leaves as the new one joins.
                    let ((), next) = tokio::join!(leave, join(next));
                    current = next;
                }
                current
            })
        })
        .collect();
    let mut remaining = Vec::new();
    for t in tasks {
        remaining.push(t.await.unwrap());
    }

    // Each racer is present now: the channel's last word on each must say so.
    let events = user_events(&until_marker(&s, &mut watcher, channel, "present").await);
    for user in &racers {
        let last = events.iter().rev().find(|(_, u)| u == user).map(|(k, _)| k.as_str());
        assert_eq!(last, Some("presence_joined"), "{user}: {events:?}");
    }
    let r = watcher.request(json!({"type": "presence", "channel": channel})).await;
    let users = r["result"]["users"].as_array().unwrap();
    assert_eq!(users.len(), racers.len() + 1, "{r}");
    for user in &racers {
        assert!(users.contains(&json!({"user_id": user, "connections": 1})), "{user}: {r}");
    }

    // All of them go: the last word on each is a leave.
    for c in &mut remaining {
        close(c).await;
    }
    let events = user_events(&until_marker(&s, &mut watcher, channel, "gone").await);
    for user in &racers {
        let last = events.iter().rev().find(|(_, u)| u == user).map(|(k, _)| k.as_str());
        assert_eq!(last, Some("presence_left"), "{user}: {events:?}");
    }
    let r = watcher.request(json!({"type": "presence", "channel": channel})).await;
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

#[tokio::test]
async fn typing_renewals_extend_it_and_unsubscribe_or_disconnect_stop_it() {
    let mut opts = Options::default();
    opts.timing.typing_ttl = Duration::from_millis(400);
    let s = TestServer::start(opts).await;
    let channel = "chat:t";
    let mut watcher = s.client("watcher", &[]).await;
    watcher.request(json!({"type": "subscribe", "channel": channel})).await;
    let mut typist = s.client("typist", &[]).await;
    typist.request(json!({"type": "subscribe", "channel": channel})).await;

    // Renewed well within its life for longer than its life and one expiry sweep: never stopped.
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_millis(1200) {
        let r = typist.request(json!({"type": "typing", "channel": channel, "active": true})).await;
        assert_eq!(r["result"]["active"], true, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = user_events(&until_marker(&s, &mut watcher, channel, "renewed").await);
    assert_eq!(count(&events, "typing_stopped", "typist"), 0, "{events:?}");
    assert!(count(&events, "typing_started", "typist") >= 2, "renewals past half its life are announced: {events:?}");
    assert_eq!(s.hub.typing_count(), 1);

    // Unsubscribing stops it.
    typist.request(json!({"type": "unsubscribe", "channel": channel})).await;
    let events = user_events(&until_marker(&s, &mut watcher, channel, "unsubscribed").await);
    assert_eq!(
        events,
        vec![("typing_stopped".to_owned(), "typist".to_owned()), ("presence_left".to_owned(), "typist".to_owned())],
        "typing stops before the user leaves"
    );
    assert_eq!(s.hub.typing_count(), 0);

    // So does disconnecting.
    typist.request(json!({"type": "subscribe", "channel": channel})).await;
    typist.request(json!({"type": "typing", "channel": channel, "active": true})).await;
    close(&mut typist).await;
    let events = user_events(&until_marker(&s, &mut watcher, channel, "disconnected").await);
    assert_eq!(
        events,
        vec![
            ("presence_joined".to_owned(), "typist".to_owned()),
            ("typing_started".to_owned(), "typist".to_owned()),
            ("typing_stopped".to_owned(), "typist".to_owned()),
            ("presence_left".to_owned(), "typist".to_owned()),
        ],
        "typing stops before the user leaves"
    );
    assert_eq!(s.hub.typing_count(), 0);

    // Namespaces without typing or presence refuse them.
    let r = watcher.request(json!({"type": "subscribe", "channel": "user:watcher"})).await;
    assert!(r["result"].is_object());
    let r = watcher.request(json!({"type": "typing", "channel": "user:watcher", "active": true})).await;
    assert_eq!(r["error"]["error"], "forbidden", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("typing is not enabled"), "{r}");
    let r = watcher.request(json!({"type": "presence", "channel": "user:watcher"})).await;
    assert_eq!(r["error"]["error"], "forbidden", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("presence is not enabled"), "{r}");
}
