//! Everything a connection holds is released when it ends, whatever the reason.

use serde_json::json;

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
    let s = TestServer::start(Options::default()).await;
    let mut anchor = s.client("anchor", &["room:churn"]).await;
    anchor.request(json!({"type": "subscribe", "channel": "room:churn"})).await;
    settle(&s, 1).await;
    let base_tasks = s.hub.task_count();
    let base_subs = s.hub.subscription_count();
    let base_presence = s.broker.channels_with_presence();

    for round in 0..40 {
        let mut clients = Vec::new();
        for i in 0..25 {
            let user = format!("u{}", (round * 25 + i) % 60);
            let mut c = s.client(&user, &["room:churn", "chat:*"]).await;
            c.request(json!({"type": "subscribe", "channel": "room:churn"})).await;
            c.request(json!({"type": "subscribe", "channel": format!("user:{user}")})).await;
            c.request(json!({"type": "subscribe", "channel": "chat:lobby"})).await;
            if i % 3 == 0 {
                c.request(json!({"type": "typing", "channel": "chat:lobby"})).await;
            }
            clients.push(c);
        }
        // End them in different ways: close frame, drop, unsubscribe first.
        for (i, mut c) in clients.into_iter().enumerate() {
            match i % 3 {
                0 => c.send_message(tokio_tungstenite::tungstenite::Message::Close(None)).await,
                1 => {
                    c.request(json!({"type": "unsubscribe", "channel": "room:churn"})).await;
                }
                _ => {}
            }
        }
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
    // Empty channels are unlistened by the cleanup pass.
    s.hub.cleanup().await;
    assert_eq!(s.hub.channel_count(), 1, "only the anchor's channel remains");
    let m = s.metrics().await;
    assert_eq!(metric(&m, "chorus_connections{transport=\"websocket\"}"), Some(1.0));
    assert_eq!(metric(&m, "chorus_subscriptions"), Some(base_subs as f64));
}
