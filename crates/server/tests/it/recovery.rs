//! History and recovery: exactly the missed events, in order, no duplicates,
//! no gap at the seam; or an explicit `recovery_failed`.

use serde_json::{Value, json};

use crate::common::{Options, TestServer};

async fn publish_n(s: &TestServer, channel: &str, from: u64, to: u64) {
    for n in from..=to {
        let (status, body) = s.publish(channel, "publication", json!({"n": n})).await;
        assert_eq!(status, 200, "{body}");
    }
}

fn position(p: &Value) -> Value {
    json!({"offset": p["offset"], "epoch": p["epoch"]})
}

#[tokio::test]
async fn missed_events_are_replayed_then_live_ones_follow() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &["room:r"]).await;
    c.request(json!({"type": "subscribe", "channel": "room:r"})).await;
    publish_n(&s, "room:r", 1, 3).await;
    let mut last = Value::Null;
    for n in 1..=3 {
        last = c.push_of("publication").await;
        assert_eq!(last["data"]["n"], n);
    }
    drop(c);

    publish_n(&s, "room:r", 4, 8).await;
    let mut c = s.client("alice", &["room:r"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "room:r", "since": position(&last)})).await;
    assert_eq!(r["result"]["recovered"], true, "{r}");
    // Every event of the channel (presence included) arrives once, with consecutive offsets.
    let mut offset = last["offset"].as_u64().unwrap();
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let p = c.push().await;
        assert_eq!(p["offset"].as_u64().unwrap(), offset + 1, "{p}");
        offset += 1;
        if p["type"] == "publication" {
            seen.push(p["data"]["n"].as_u64().unwrap());
        }
    }
    assert_eq!(seen, vec![4, 5, 6, 7, 8]);
    publish_n(&s, "room:r", 9, 9).await;
    loop {
        let p = c.push().await;
        assert_eq!(p["offset"].as_u64().unwrap(), offset + 1, "{p}");
        offset += 1;
        if p["type"] == "publication" {
            assert_eq!(p["data"]["n"], 9);
            break;
        }
    }
}

#[tokio::test]
async fn a_gap_beyond_history_is_reported_as_recovery_failed() {
    let mut opts = Options::default();
    if let Some(room) = opts.namespaces.0.get_mut("room") {
        room.history_size = 5;
    }
    let s = TestServer::start(opts).await;
    let mut c = s.client("alice", &["room:r"]).await;
    c.request(json!({"type": "subscribe", "channel": "room:r"})).await;
    publish_n(&s, "room:r", 1, 1).await;
    let last = c.push_of("publication").await;
    drop(c);
    publish_n(&s, "room:r", 2, 20).await;

    let mut c = s.client("alice", &["room:r"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "room:r", "since": position(&last)})).await;
    assert_eq!(r["result"]["recovered"], false);
    let f = c.push().await;
    assert_eq!(f["type"], "recovery_failed");
    assert_eq!(f["channel"], "room:r");
    let current = f["offset"].as_u64().unwrap();
    assert_eq!(current, r["result"]["offset"].as_u64().unwrap());
    publish_n(&s, "room:r", 21, 21).await;
    // Live events continue right after the announced position (our own presence_joined first).
    let joined = c.push().await;
    assert_eq!((joined["type"].as_str(), joined["offset"].as_u64()), (Some("presence_joined"), Some(current + 1)));
    let p = c.push().await;
    assert_eq!(p["data"]["n"], 21);
    assert_eq!(p["offset"].as_u64().unwrap(), current + 2);

    // A position from another epoch cannot be recovered either.
    let r = c.request(json!({"type": "unsubscribe", "channel": "room:r"})).await;
    assert!(r["result"].is_object());
    let r = c.request(json!({"type": "subscribe", "channel": "room:r", "since": {"offset": 1, "epoch": "zzzzzzzz"}})).await;
    assert_eq!(r["result"]["recovered"], false);
    assert_eq!(c.push().await["type"], "recovery_failed");
}

#[tokio::test]
async fn recovery_under_concurrent_publishing_has_no_gap_or_duplicate_at_the_seam() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &["room:seam"]).await;
    c.request(json!({"type": "subscribe", "channel": "room:seam"})).await;
    publish_n(&s, "room:seam", 1, 1).await;
    let last = c.push_of("publication").await;
    drop(c);

    let total = 400u64;
    let publisher = {
        let http = s.http().clone();
        let url = s.url("/api/v1/publish");
        tokio::spawn(async move {
            for n in 2..=total {
                let body = json!({"channel": "room:seam", "event": "publication", "data": {"n": n}});
                let r = http.post(&url).header("x-api-key", crate::common::API_KEY).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    // Resubscribe while events keep coming.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut c = s.client("alice", &["room:seam"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "room:seam", "since": position(&last)})).await;
    assert_eq!(r["result"]["recovered"], true);
    let mut expected = 2;
    while expected <= total {
        let p = c.push_of("publication").await;
        assert_eq!(p["data"]["n"], expected, "events arrive exactly once and in order");
        expected += 1;
    }
    publisher.await.unwrap();
}

#[tokio::test]
async fn a_replay_larger_than_the_queue_is_paced_not_punished() {
    let mut opts = Options::default();
    opts.limits.outbound_queue_messages = 10;
    let s = TestServer::start(opts).await;
    let mut c = s.client("alice", &["room:big"]).await;
    c.request(json!({"type": "subscribe", "channel": "room:big"})).await;
    publish_n(&s, "room:big", 1, 1).await;
    let last = c.push_of("publication").await;
    drop(c);
    // Batch-publish many events while nobody listens.
    let items: Vec<Value> = (2..=300).map(|n| json!({"channel": "room:big", "data": {"n": n}})).collect();
    let res = s.http().post(s.url("/api/v1/publish/batch")).header("x-api-key", crate::common::API_KEY).json(&json!({"items": items})).send().await.unwrap();
    assert_eq!(res.status(), 200);

    let mut c = s.client("alice", &["room:big"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "room:big", "since": position(&last)})).await;
    assert_eq!(r["result"]["recovered"], true);
    for n in 2..=300 {
        assert_eq!(c.push_of("publication").await["data"]["n"], n);
    }
    assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true, "still connected after a replay 30x the queue");
}

#[tokio::test]
async fn history_returns_retained_events_as_they_were_pushed() {
    let s = TestServer::start(Options::default()).await;
    publish_n(&s, "room:h", 1, 5).await;
    let mut c = s.client("alice", &["room:h"]).await;
    let r = c.request(json!({"type": "history", "channel": "room:h", "limit": 3})).await;
    let events = r["result"]["events"].as_array().unwrap();
    assert_eq!(events.iter().map(|e| e["data"]["n"].as_u64().unwrap()).collect::<Vec<_>>(), vec![3, 4, 5]);
    assert_eq!(events[0]["type"], "publication");
    let since = json!({"offset": events[0]["offset"], "epoch": events[0]["epoch"]});
    let r = c.request(json!({"type": "history", "channel": "room:h", "since": since})).await;
    assert_eq!(r["result"]["events"].as_array().unwrap().len(), 2);
    let r = c.request(json!({"type": "history", "channel": "room:h", "limit": 5000})).await;
    assert_eq!(r["error"]["error"], "invalid_field");
    let r = c.request(json!({"type": "history", "channel": "room:other"})).await;
    assert_eq!(r["error"]["error"], "forbidden");
}
