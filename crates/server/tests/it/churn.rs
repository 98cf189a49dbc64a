//! Everything a connection holds is released when it ends, whatever the reason.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Options, TestServer, metric};

async fn settle(s: &TestServer, connections: usize) {
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    while s.hub.connection_count() != connections {
        assert!(std::time::Instant::now() < deadline, "{} connections left", s.hub.connection_count());
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn connect_subscribe_disconnect_cycles_return_every_count_to_baseline() {
    let mut opts = Options::default();
    // A stream whose client left is noticed at its next write: keep writes coming.
    opts.timing.sse_keepalive = Duration::from_millis(20);
    let s = TestServer::start(opts).await;
    // History for streams that leave in the middle of its replay.
    let pad = "x".repeat(4096);
    let mut first = Value::Null;
    for n in 0..100 {
        let (_, body) = s.publish("feed:history", "publication", json!({"n": n, "pad": pad})).await;
        if n == 0 {
            first = body;
        }
    }
    let behind = format!("feed:history={}:{}", first["epoch"].as_str().unwrap(), first["offset"]);
    let mut anchor = s.client("anchor", &["room:churn"]).await;
    anchor.request(json!({"type": "subscribe", "channel": "room:churn"})).await;
    settle(&s, 1).await;
    let base_tasks = s.hub.task_count();
    let base_subs = s.hub.subscription_count();
    let base_presence = s.broker.channels_with_presence();
    let pool = 60;

    for round in 0..20 {
        let mut clients = Vec::new();
        let mut streams = Vec::new();
        for i in 0..25 {
            let user = format!("u{}", (round * 25 + i) % pool);
            let grants = ["room:churn", "chat:*", "feed:history"];
            match i % 5 {
                // A stream on three channels, typing through a command.
                3 => {
                    let token = s.token(&user, &grants);
                    let query = format!("channel=room:churn&channel=user:{user}&channel=chat:lobby");
                    let mut sse = s.sse(&token, &query, None).await.unwrap();
                    let url = sse.next_of("connected").await.data["data"]["commands_url"].as_str().unwrap().to_owned();
                    let (status, reply, _) = s.sse_command(&url, &token, json!({"id": 1, "type": "typing", "channel": "chat:lobby", "active": true}).to_string()).await;
                    assert_eq!(status, 200, "{reply}");
                    if round % 2 == 0 {
                        let (status, _, _) = s.sse_command(&url, &token, json!({"id": 2, "type": "unsubscribe", "channel": "room:churn"}).to_string()).await;
                        assert_eq!(status, 200);
                    }
                    streams.push(sse);
                }
                // A stream resuming far behind, gone after its first replayed event.
                4 => {
                    let token = s.token(&user, &grants);
                    let mut sse = s.sse(&token, "channel=chat:lobby", Some(&behind)).await.unwrap();
                    sse.next_of("publication").await;
                    drop(sse);
                }
                _ => {
                    let mut c = s.client(&user, &grants).await;
                    c.request(json!({"type": "subscribe", "channel": "room:churn"})).await;
                    c.request(json!({"type": "subscribe", "channel": format!("user:{user}")})).await;
                    c.request(json!({"type": "subscribe", "channel": "chat:lobby"})).await;
                    if i % 3 == 0 {
                        c.request(json!({"type": "typing", "channel": "chat:lobby"})).await;
                    }
                    clients.push(c);
                }
            }
        }
        // End them in different ways: close frame, drop, unsubscribe first; streams by leaving.
        for (i, mut c) in clients.into_iter().enumerate() {
            match i % 3 {
                0 => c.send_message(tokio_tungstenite::tungstenite::Message::Close(None)).await,
                1 => {
                    c.request(json!({"type": "unsubscribe", "channel": "room:churn"})).await;
                }
                _ => {}
            }
        }
        drop(streams);
        settle(&s, 1).await;
    }
    settle(&s, 1).await;
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    loop {
        let done = s.hub.subscription_count() == base_subs
            && s.hub.task_count() == base_tasks
            && s.broker.channels_with_presence() == base_presence
            && s.hub.typing_count() == 0;
        if done {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not back to baseline: subs {} (base {base_subs}), tasks {} (base {base_tasks}), presence {} (base {base_presence}), typing {}",
            s.hub.subscription_count(),
            s.hub.task_count(),
            s.broker.channels_with_presence(),
            s.hub.typing_count()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Registry entries are gone too: no user but the anchor is registered.
    assert_eq!(s.broker.registered_users(), 1);
    // Limiter entries: at most one per user who sent something.
    assert!(s.hub.limiter_entries() <= pool + 1, "{} limiter entries for {} users", s.hub.limiter_entries(), pool + 1);
    // Empty channels are unlistened by the cleanup pass.
    s.hub.cleanup().await;
    assert_eq!(s.hub.channel_count(), 1, "only the anchor's channel remains");
    let m = s.metrics().await;
    assert_eq!(metric(&m, "chorus_connections{transport=\"websocket\"}"), Some(1.0));
    assert_eq!(metric(&m, "chorus_connections{transport=\"sse\"}"), Some(0.0));
    assert_eq!(metric(&m, "chorus_connections_opened_total{transport=\"sse\"}"), Some(200.0), "{m}");
    assert_eq!(metric(&m, "chorus_subscriptions"), Some(base_subs as f64));
    // The anchor saw all of it and is still served.
    assert_eq!(anchor.request(json!({"type": "ping"})).await["result"]["pong"], true);
}
