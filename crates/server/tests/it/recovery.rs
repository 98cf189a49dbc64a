//! History and recovery: exactly the missed events, in order, no duplicates,
//! no gap at the seam; or an explicit `recovery_failed`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::{Engine, Options, TestServer, WsClient, every_engine};

every_engine!(
    missed_events_are_replayed_then_live_ones_follow,
    a_gap_beyond_history_is_reported_as_recovery_failed,
    recovery_under_concurrent_publishing_has_no_gap_or_duplicate_at_the_seam,
    no_event_of_a_channel_follows_its_unsubscribe_reply_even_mid_replay,
    a_replay_larger_than_the_queue_is_paced_not_punished,
    history_returns_retained_events_as_they_were_pushed,
    a_quiet_channel_dropped_while_nobody_listens_still_resumes_exactly,
);

async fn publish_n(s: &TestServer, channel: &str, from: u64, to: u64) {
    for n in from..=to {
        let (status, body) = s.publish(channel, "publication", json!({"n": n})).await;
        assert_eq!(status, 200, "{body}");
    }
}

fn position(p: &Value) -> Value {
    json!({"offset": p["offset"], "epoch": p["epoch"]})
}

async fn missed_events_are_replayed_then_live_ones_follow(engine: Engine) {
    let s = TestServer::start_on(engine, Options::default()).await;
    let mut c = s.client("alice", &["room:r"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "room:r"})).await;
    assert!(r["result"].get("recovered").is_none() && r["result"].get("replaying").is_none(), "{r}");
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
    // The reply says how many events the replay carries: everything after `since` up to its position.
    let replaying = r["result"]["offset"].as_u64().unwrap() - last["offset"].as_u64().unwrap();
    assert!(replaying >= 5, "{r}");
    assert_eq!(r["result"]["replaying"].as_u64(), Some(replaying), "{r}");
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

async fn a_gap_beyond_history_is_reported_as_recovery_failed(engine: Engine) {
    let mut opts = Options::default();
    if let Some(room) = opts.namespaces.0.get_mut("room") {
        room.history_size = 5;
    }
    let s = TestServer::start_on(engine, opts).await;
    let mut c = s.client("alice", &["room:r"]).await;
    c.request(json!({"type": "subscribe", "channel": "room:r"})).await;
    publish_n(&s, "room:r", 1, 1).await;
    let last = c.push_of("publication").await;
    drop(c);
    publish_n(&s, "room:r", 2, 20).await;

    let mut c = s.client("alice", &["room:r"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "room:r", "since": position(&last)})).await;
    assert_eq!(r["result"]["recovered"], false);
    assert_eq!(r["result"]["replaying"], 0, "{r}");
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

async fn recovery_under_concurrent_publishing_has_no_gap_or_duplicate_at_the_seam(engine: Engine) {
    let s = TestServer::start_on(engine, Options::default()).await;
    // `feed:` has no presence: every event of the stream is a publication.
    let mut c = s.client("alice", &["feed:seam"]).await;
    c.request(json!({"type": "subscribe", "channel": "feed:seam"})).await;
    publish_n(&s, "feed:seam", 1, 1).await;
    let last = c.push_of("publication").await;
    drop(c);

    // Publishes n = 2, 3, ... until told to stop; reports (n, offset) of each.
    let (progress_tx, mut progress) = watch::channel((1u64, last["offset"].as_u64().unwrap()));
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let http = s.http().clone();
        let url = s.url("/api/v1/publish");
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 1;
            while !stop.load(Ordering::Acquire) {
                n += 1;
                let body = json!({"channel": "feed:seam", "event": "publication", "data": {"n": n}});
                let r = http.post(&url).header("x-api-key", crate::common::API_KEY).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let offset = r.json::<Value>().await.unwrap()["offset"].as_u64().unwrap();
                progress_tx.send_replace((n, offset));
            }
            *progress_tx.borrow()
        })
    };
    // Resubscribe while events keep coming: some are missed before, more follow after.
    progress.wait_for(|&(n, _)| n >= 20).await.unwrap();
    let mut c = s.client("alice", &["feed:seam"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "feed:seam", "since": position(&last)})).await;
    assert_eq!(r["result"]["recovered"], true, "{r}");
    let at = r["result"]["offset"].as_u64().unwrap();
    progress.wait_for(|&(_, offset)| offset >= at + 20).await.unwrap();
    stop.store(true, Ordering::Release);
    let (last_n, last_offset) = publisher.await.unwrap();
    assert!(at < last_offset, "the subscription took effect while publishing went on ({at} < {last_offset})");
    assert!(at > last["offset"].as_u64().unwrap(), "and after events were missed");

    // Everything from the recovery position to the end, exactly once, in order.
    let mut offset = last["offset"].as_u64().unwrap();
    for n in 2..=last_n {
        let p = c.push().await;
        assert_eq!((p["type"].as_str(), p["data"]["n"].as_u64()), (Some("publication"), Some(n)), "{p}");
        assert_eq!(p["offset"].as_u64().unwrap(), offset + 1, "{p}");
        offset += 1;
    }
    assert_eq!(offset, last_offset);
    // And nothing more: the next event is a new one.
    s.publish("feed:seam", "publication", json!({"n": "marker"})).await;
    let p = c.push().await;
    assert_eq!((p["data"]["n"].as_str(), p["offset"].as_u64()), (Some("marker"), Some(last_offset + 1)), "{p}");
}

async fn no_event_of_a_channel_follows_its_unsubscribe_reply_even_mid_replay(engine: Engine) {
    let mut opts = Options::default();
    opts.server.body_limit_bytes = 16 << 20;
    // Small queue bytes: the replay is paced a couple of events at a time.
    opts.limits.outbound_queue_bytes = 128 * 1024;
    let s = TestServer::start_on(engine, opts).await;
    // ~10 MB of history: far more than the buffers between server and client hold.
    let total = 300u64;
    let pad = "x".repeat(32 * 1024);
    let items: Vec<Value> = (1..=total).map(|n| json!({"channel": "feed:x", "data": {"n": n, "pad": pad}})).collect();
    let (status, body) = s.publish_batch(items).await;
    assert_eq!(status, 200);
    let first = &body["results"][0];
    let token = s.token("alice", &["feed:x", "feed:y"]);
    let mut c = WsClient::connect_with_recv_buffer(&s.ws_url(Some(&token)), 4096).await.unwrap();
    assert_eq!(c.push().await["type"], "connected");
    c.request(json!({"type": "subscribe", "channel": "feed:y"})).await;

    // The replay of everything begins; once it is under way, unsubscribe.
    let since = json!({"offset": first["offset"].as_u64().unwrap() - 1, "epoch": first["epoch"]});
    let r = c.request(json!({"type": "subscribe", "channel": "feed:x", "since": since})).await;
    assert_eq!(r["result"]["recovered"], true, "{r}");
    let mut replayed = 0u64;
    while replayed < 3 {
        let p = c.push().await;
        replayed += 1;
        assert_eq!((p["channel"].as_str(), p["data"]["n"].as_u64()), (Some("feed:x"), Some(replayed)), "{p}");
    }
    c.send_text(json!({"id": 100, "type": "unsubscribe", "channel": "feed:x"}).to_string()).await;
    loop {
        let f = c.frame().await;
        if f["id"] == 100 {
            assert_eq!(f["result"]["channel"], "feed:x", "{f}");
            break;
        }
        replayed += 1;
        assert_eq!((f["channel"].as_str(), f["data"]["n"].as_u64()), (Some("feed:x"), Some(replayed)), "replayed in order: {f}");
    }
    assert!(replayed < total, "the replay was cut short by the unsubscribe ({replayed} of {total} came first)");
    // Up to a live event of the other channel, nothing of feed:x.
    s.publish("feed:y", "publication", json!({"n": "marker"})).await;
    loop {
        let f = c.frame().await;
        assert_ne!(f["channel"], "feed:x", "an event of feed:x after its unsubscribe reply ({replayed} came before): {f}");
        if f["data"]["n"] == "marker" {
            break;
        }
    }
    assert_eq!(s.hub.subscription_count(), 1);
    assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true);
}

// Several workers, as in production: the replay task and the reader race for the queue.
// In-memory engine only: it measures the session's pacing against socket
// buffers (16 MB of history), which is the same whichever engine keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_does_not_hold_up_the_clients_commands() {
    let mut opts = Options::default();
    opts.server.body_limit_bytes = 4 << 20;
    let s = TestServer::start(opts).await;
    // 16 MB of history: several times what the kernel buffers between the
    // two sockets hold (a 4 MB send buffer at most here), so the replay is
    // still being paced when the pings are read.
    let pad = "x".repeat(16 * 1024);
    let total = 1000u64;
    let mut first = Value::Null;
    for chunk in (1..=total).collect::<Vec<u64>>().chunks(200) {
        let items: Vec<Value> = chunk.iter().map(|n| json!({"channel": "feed:big", "data": {"n": n, "pad": pad}})).collect();
        let (status, body) = s.publish_batch(items).await;
        assert_eq!(status, 200);
        if first.is_null() {
            first = body["results"][0].clone();
        }
    }
    let mut c = WsClient::connect_with_recv_buffer(&s.ws_url(Some(&s.token("alice", &["feed:big"]))), 16 * 1024).await.unwrap();
    assert_eq!(c.push().await["type"], "connected");

    // Subscribe and ping at once; ping again once 50 events are in: each ping
    // is answered while the replay is still going (behind at most what the
    // socket buffers already held), and the replay arrives whole and in order.
    let since = json!({"offset": first["offset"].as_u64().unwrap() - 1, "epoch": first["epoch"]});
    c.send_text(json!({"id": 1, "type": "subscribe", "channel": "feed:big", "since": since}).to_string()).await;
    c.send_text(json!({"id": 2, "type": "ping"}).to_string()).await;
    let mut replayed = 0u64;
    let mut pongs: Vec<(u64, u64)> = Vec::new();
    while replayed < total || pongs.len() < 2 {
        let f = c.frame().await;
        match f["id"].as_u64() {
            Some(1) => assert_eq!(f["result"]["recovered"], true, "{f}"),
            Some(id @ (2 | 3)) => {
                assert_eq!(f["result"]["pong"], true, "{f}");
                pongs.push((id, replayed));
            }
            Some(other) => panic!("unexpected reply {other}: {f}"),
            None => {
                replayed += 1;
                assert_eq!(f["data"]["n"], replayed, "events arrive in order");
                if replayed == 50 {
                    c.send_text(json!({"id": 3, "type": "ping"}).to_string()).await;
                }
            }
        }
    }
    let at = |id| pongs.iter().find(|(i, _)| *i == id).map(|(_, at)| *at).unwrap_or(total);
    assert!(at(2) < total / 2, "the first ping waited behind {} of {total} replayed events", at(2));
    assert!(at(3) < 50 + total / 2, "the second ping waited behind {} of {total} replayed events", at(3));
    assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true);
    s.publish("feed:big", "publication", json!({"n": total + 1})).await;
    assert_eq!(c.push().await["data"]["n"], total + 1, "live after the replay");
}

async fn a_replay_larger_than_the_queue_is_paced_not_punished(engine: Engine) {
    let mut opts = Options::default();
    opts.limits.outbound_queue_messages = 10;
    let s = TestServer::start_on(engine, opts).await;
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

async fn history_returns_retained_events_as_they_were_pushed(engine: Engine) {
    let s = TestServer::start_on(engine, Options::default()).await;
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

async fn a_quiet_channel_dropped_while_nobody_listens_still_resumes_exactly(engine: Engine) {
    let s = TestServer::start_on(engine, Options::default()).await;
    let before = s.hub.backplane().broker.streams();
    let mut c = s.client("alice", &["feed:quiet"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "feed:quiet"})).await;
    let at = position(&r["result"]);
    assert_eq!(at["offset"], 0, "{r}");
    drop(c);
    // Nobody listens and nothing was ever published there: the cleanup pass drops it.
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    while s.hub.connection_count() > 0 {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    s.hub.cleanup().await;
    assert_eq!(s.hub.backplane().broker.streams(), before, "the quiet channel's stream is gone");
    publish_n(&s, "feed:quiet", 1, 2).await;
    let mut c = s.client("alice", &["feed:quiet"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "feed:quiet", "since": at})).await;
    assert_eq!(r["result"]["recovered"], true, "{r}");
    for n in 1..=2u64 {
        let p = c.push_of("publication").await;
        assert_eq!((p["offset"].as_u64(), p["data"]["n"].as_u64()), (Some(n), Some(n)), "{p}");
    }
}
