//! The SSE transport: same events, `Last-Event-ID` resume, commands over HTTP.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use chorus_core::UserId;
use chorus_protocol::CloseCode;

use crate::common::{Engine, Options, RawSseClient, TestServer, eventually, every_engine, metric};

every_engine!(
    last_event_id_resumes_every_channel,
    a_channel_that_cannot_resume_gets_its_own_recovery_failed,
    sse_counts_toward_the_per_user_limit,
    a_client_leaving_mid_replay_releases_its_connection_subscriptions_and_presence,
);

/// An event id as a map: channel -> (epoch, offset).
fn positions(id: &str) -> BTreeMap<String, (String, u64)> {
    id.split(';')
        .map(|entry| {
            let (ch, pos) = entry.split_once('=').unwrap();
            let (epoch, offset) = pos.rsplit_once(':').unwrap();
            (ch.to_owned(), (epoch.to_owned(), offset.parse().unwrap()))
        })
        .collect()
}

fn channels_of(id: &str) -> Vec<String> {
    positions(id).into_keys().collect()
}

/// `Last-Event-ID` entry for a publish result.
fn entry(channel: &str, published: &Value) -> String {
    format!("{channel}={}:{}", published["epoch"].as_str().unwrap(), published["offset"])
}

#[tokio::test]
async fn streams_events_with_positions_and_keepalives() {
    let mut opts = Options::default();
    opts.timing.sse_keepalive = Duration::from_millis(200);
    let s = TestServer::start(opts).await;
    let token = s.token("alice", &["room:a"]);
    let mut sse = s.sse(&token, "channel=room:a&channel=user:alice", None).await.unwrap();
    let connected = sse.next().await.unwrap();
    assert_eq!(connected.event, "connected");
    assert!(connected.data["data"]["commands_url"].as_str().unwrap().starts_with("/api/v1/connections/"));
    s.publish("room:a", "publication", json!({"n": 1})).await;
    let e = sse.next_of("publication").await;
    assert_eq!(e.data["data"]["n"], 1);
    assert_eq!(e.data["channel"], "room:a");
    let id = e.id.unwrap();
    assert!(id.contains("room:a=") && id.contains("user:alice="), "{id}");
    // Idle: a keep-alive comment arrives, and nothing else meanwhile.
    let (comment, before) = sse.next_comment().await;
    assert_eq!(comment, "keep-alive");
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(sse.comments, 1);
    // The stream goes on after it.
    s.publish("room:a", "publication", json!({"n": 2})).await;
    assert_eq!(sse.next_of("publication").await.data["data"]["n"], 2);
}

async fn last_event_id_resumes_every_channel(engine: Engine) {
    let s = TestServer::start_on(engine, Options::default()).await;
    let token = s.token("alice", &["room:a", "room:b"]);
    let mut sse = s.sse(&token, "channel=room:a&channel=room:b", None).await.unwrap();
    s.publish("room:a", "publication", json!({"n": "a1"})).await;
    s.publish("room:b", "publication", json!({"n": "b1"})).await;
    sse.next_of("publication").await;
    sse.next_of("publication").await;
    let last = sse.last_id.clone().unwrap();
    drop(sse);
    s.publish("room:a", "publication", json!({"n": "a2"})).await;
    s.publish("room:b", "publication", json!({"n": "b2"})).await;
    s.publish("room:a", "publication", json!({"n": "a3"})).await;

    // Only one channel in the query: the other comes back from the id.
    let mut sse = s.sse(&token, "channel=room:a", Some(&last)).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(sse.next_of("publication").await.data["data"]["n"].as_str().unwrap().to_owned());
    }
    let a: Vec<_> = got.iter().filter(|n| n.starts_with('a')).cloned().collect();
    let b: Vec<_> = got.iter().filter(|n| n.starts_with('b')).cloned().collect();
    assert_eq!(a, vec!["a2", "a3"]);
    assert_eq!(b, vec!["b2"]);
}

async fn a_channel_that_cannot_resume_gets_its_own_recovery_failed(engine: Engine) {
    let mut opts = Options::default();
    if let Some(room) = opts.namespaces.0.get_mut("room") {
        room.history_size = 3;
    }
    let s = TestServer::start_on(engine, opts).await;
    let token = s.token("alice", &["room:a", "room:b"]);
    let mut sse = s.sse(&token, "channel=room:a&channel=room:b", None).await.unwrap();
    s.publish("room:a", "publication", json!({"n": 0})).await;
    sse.next_of("publication").await;
    let last = sse.last_id.clone().unwrap();
    drop(sse);
    for n in 1..=10 {
        s.publish("room:a", "publication", json!({"n": n})).await;
    }
    s.publish("room:b", "publication", json!({"n": "b"})).await;
    let mut sse = s.sse(&token, "", Some(&last)).await.unwrap();
    let mut failed = Vec::new();
    let mut received = Vec::new();
    while received.is_empty() || failed.is_empty() {
        let e = sse.next().await.unwrap();
        match e.event.as_str() {
            "recovery_failed" => failed.push(e.data["channel"].as_str().unwrap().to_owned()),
            "publication" => received.push(e.data["channel"].as_str().unwrap().to_owned()),
            _ => {}
        }
    }
    assert_eq!(failed, vec!["room:a"]);
    assert_eq!(received, vec!["room:b"]);
}

#[tokio::test]
async fn commands_over_http_drive_the_stream() {
    let s = TestServer::start(Options::default()).await;
    let token = s.token("alice", &["room:a", "room:c"]);
    let mut sse = s.sse(&token, "channel=room:a", None).await.unwrap();
    let connected = sse.next().await.unwrap();
    let url = connected.data["data"]["commands_url"].as_str().unwrap().to_owned();
    let post = |body: Value, tok: String| {
        let req = s.http().post(s.url(&url)).bearer_auth(tok).json(&body);
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.json::<Value>().await.unwrap())
        }
    };
    let (status, reply) = post(json!({"id": 1, "type": "subscribe", "channel": "room:c"}), token.clone()).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["id"], 1);
    assert_eq!(reply["result"]["channel"], "room:c");
    s.publish("room:c", "publication", json!({"via": "command"})).await;
    assert_eq!(sse.next_of("publication").await.data["data"]["via"], "command");

    let (status, reply) = post(json!({"id": 2, "type": "subscribe", "channel": "room:zzz"}), token.clone()).await;
    assert_eq!((status, reply["error"]["error"].as_str()), (403, Some("forbidden")));
    let (status, reply) = post(json!({"id": 3, "type": "connect", "token": "x"}), token.clone()).await;
    assert_eq!((status, reply["error"].as_str()), (409, Some("conflict")));
    let (status, _) = post(json!({"id": 4, "type": "ping"}), s.token("mallory", &[])).await;
    assert_eq!(status, 404, "another user's connection is not found");
    let res = s.http().post(s.url("/api/v1/connections/not-a-uuid/commands")).bearer_auth(&token).json(&json!({"id": 1, "type": "ping"})).send().await.unwrap();
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn refusals_before_streaming_are_http_errors() {
    let s = TestServer::start(Options::default()).await;
    let token = s.token("alice", &[]);
    let (status, body) = s.sse(&token, "channel=room:secret", None).await.err().unwrap();
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, body) = s.sse("bad", "channel=user:alice", None).await.err().unwrap();
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    let (status, _) = s.sse(&token, "channel=user:alice", Some("garbage")).await.err().unwrap();
    assert_eq!(status, 400);
    let (status, _) = s.sse(&token, "", None).await.err().unwrap();
    assert_eq!(status, 400);
    assert_eq!(s.hub.connection_count(), 0, "refused streams hold nothing");
}

async fn sse_counts_toward_the_per_user_limit(engine: Engine) {
    let s = TestServer::start_on(engine, Options::default()).await;
    let mut ws1 = s.client("alice", &[]).await;
    let _ws2 = s.client("alice", &[]).await;
    let _ws3 = s.client("alice", &[]).await;
    let _sse = s.sse(&s.token("alice", &[]), "channel=user:alice", None).await.unwrap();
    assert_eq!(ws1.closed().await.0, 4004);
}

#[tokio::test]
async fn shutdown_sends_reconnect_before_ending_the_stream() {
    let s = TestServer::start(Options::default()).await;
    let mut sse = s.sse(&s.token("alice", &[]), "channel=user:alice", None).await.unwrap();
    sse.next_of("connected").await;
    s.hub.shutdown();
    let e = sse.next_of("reconnect").await;
    assert_eq!(e.data["data"]["retry_ms"], 1000);
    assert!(sse.next().await.is_none(), "the stream ends after reconnect");
}

async fn a_client_leaving_mid_replay_releases_its_connection_subscriptions_and_presence(engine: Engine) {
    let mut opts = Options::default();
    // Small queue bytes: the replay is paced one event at a time, so little of it is buffered.
    opts.limits.outbound_queue_bytes = 128 * 1024;
    let s = TestServer::start_on(engine, opts).await;
    let base_tasks = s.hub.task_count();
    // Events too big for the socket buffers: a replay of them waits on the client.
    let pad = "x".repeat(60 * 1024);
    let mut first = Value::Null;
    for n in 0..200 {
        let (status, body) = s.publish("chat:replay", "publication", json!({"n": n, "pad": pad})).await;
        assert_eq!(status, 200, "{body}");
        if n == 0 {
            first = body;
        }
    }
    let token = s.token("alice", &[]);
    let mut sse = RawSseClient::open(s.addr, "/sse?channel=chat:replay", &token, Some(&entry("chat:replay", &first)), 4096).await.unwrap();
    assert_eq!(sse.next().await.unwrap().event, "connected");
    let e = sse.next().await.unwrap();
    assert_eq!((e.event.as_str(), e.data["data"]["n"].as_u64()), ("publication", Some(1)));
    assert_eq!(s.hub.connection_count(), 1);
    assert_eq!(s.hub.backplane().presence.channels(), 1, "alice is present in chat:replay");
    let replayed = metric(&s.metrics().await, "chorus_events_out_total{type=\"publication\"}").unwrap();
    assert!(replayed < 199.0, "the replay is still under way when the client leaves ({replayed} queued)");
    drop(sse);

    eventually("the stream's connection, subscription and presence are released", || {
        s.hub.connection_count() == 0
            && s.hub.subscription_count() == 0
            && s.hub.backplane().presence.channels() == 0
            && s.hub.backplane().registry.users() == 0
    })
    .await;
    eventually("the stream's tasks end", || s.hub.task_count() == base_tasks).await;
    let (_, health) = s.get_json("/health/detailed").await;
    assert_eq!(health["checks"]["hub"]["connections"], 0, "{health}");
    assert_eq!(health["checks"]["hub"]["subscriptions"], 0, "{health}");
    assert_eq!(s.broker.registered_users(), 0);
}

#[tokio::test]
async fn event_ids_follow_subscribes_and_unsubscribes_made_by_command() {
    let s = TestServer::start(Options::default()).await;
    let token = s.token("alice", &["feed:a", "feed:b"]);
    let mut sse = s.sse(&token, "channel=feed:a", None).await.unwrap();
    let url = sse.next_of("connected").await.data["data"]["commands_url"].as_str().unwrap().to_owned();
    let command = |body: Value| s.sse_command(&url, &token, body.to_string());

    // Subscribed by command: in the next id at once, at the reply's position.
    let (status, reply, _) = command(json!({"id": 1, "type": "subscribe", "channel": "feed:b"})).await;
    assert_eq!(status, 200, "{reply}");
    let at_b = (reply["result"]["epoch"].as_str().unwrap().to_owned(), reply["result"]["offset"].as_u64().unwrap());
    s.publish("feed:a", "publication", json!({"n": "a1"})).await;
    let e = sse.next_of("publication").await;
    assert_eq!(e.data["data"]["n"], "a1");
    let ids = positions(e.id.as_deref().unwrap());
    assert_eq!(ids.get("feed:b"), Some(&at_b), "{ids:?}");
    assert_eq!(ids["feed:a"].1, e.data["offset"].as_u64().unwrap());

    let (_, b1) = s.publish("feed:b", "publication", json!({"n": "b1"})).await;
    let e = sse.next_of("publication").await;
    assert_eq!(e.data["data"]["n"], "b1");
    let ids = positions(e.id.as_deref().unwrap());
    assert_eq!(channels_of(e.id.as_deref().unwrap()), vec!["feed:a", "feed:b"]);
    assert_eq!(ids["feed:b"].1, b1["offset"].as_u64().unwrap());

    // Unsubscribed by command: gone from ids.
    let (status, _, _) = command(json!({"id": 2, "type": "unsubscribe", "channel": "feed:b"})).await;
    assert_eq!(status, 200);
    s.publish("feed:b", "publication", json!({"n": "b2"})).await;
    s.publish("feed:a", "publication", json!({"n": "a2"})).await;
    let e = sse.next_of("publication").await;
    assert_eq!(e.data["data"]["n"], "a2", "nothing of feed:b after its unsubscribe");
    assert_eq!(channels_of(e.id.as_deref().unwrap()), vec!["feed:a"]);

    // Subscribed again with `since`: the id starts there and the missed b2 is replayed.
    let since = json!({"offset": b1["offset"], "epoch": b1["epoch"]});
    let (status, reply, _) = command(json!({"id": 3, "type": "subscribe", "channel": "feed:b", "since": since})).await;
    assert_eq!((status, reply["result"]["recovered"].as_bool()), (200, Some(true)), "{reply}");
    let e = sse.next_of("publication").await;
    assert_eq!(e.data["data"]["n"], "b2");
    assert_eq!(channels_of(e.id.as_deref().unwrap()), vec!["feed:a", "feed:b"]);
    s.publish("feed:b", "publication", json!({"n": "b3"})).await;
    assert_eq!(sse.next_of("publication").await.data["data"]["n"], "b3");
    let last = sse.last_id.clone().unwrap();
    drop(sse);

    // Missed while away, on both channels; only feed:a is in the query.
    s.publish("feed:b", "publication", json!({"n": "b4"})).await;
    s.publish("feed:a", "publication", json!({"n": "a3"})).await;
    s.publish("feed:b", "publication", json!({"n": "b5"})).await;
    let mut sse = s.sse(&token, "channel=feed:a", Some(&last)).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let e = sse.next_of("publication").await;
        got.push(e.data["data"]["n"].as_str().unwrap().to_owned());
    }
    let b: Vec<_> = got.iter().filter(|n| n.starts_with('b')).cloned().collect();
    assert_eq!(b, vec!["b4", "b5"], "{got:?}");
    assert!(got.contains(&"a3".to_owned()), "{got:?}");
    // Nothing more was replayed: the next event is a live one.
    s.publish("feed:a", "publication", json!({"n": "a4"})).await;
    assert_eq!(sse.next_of("publication").await.data["data"]["n"], "a4");
}

#[tokio::test]
async fn a_resumed_stream_goes_on_without_a_channel_no_longer_allowed() {
    let s = TestServer::start(Options::default()).await;
    let both = s.token("alice", &["room:a", "room:b"]);
    let mut sse = s.sse(&both, "channel=room:a&channel=room:b", None).await.unwrap();
    s.publish("room:a", "publication", json!({"n": "a1"})).await;
    s.publish("room:b", "publication", json!({"n": "b1"})).await;
    sse.next_of("publication").await;
    sse.next_of("publication").await;
    let last = sse.last_id.clone().unwrap();
    assert_eq!(channels_of(&last), vec!["room:a", "room:b"]);
    drop(sse);
    s.publish("room:a", "publication", json!({"n": "a2"})).await;
    s.publish("room:b", "publication", json!({"n": "b2"})).await;

    let only_a = s.token("alice", &["room:a"]);
    let mut sse = s.sse(&only_a, "", Some(&last)).await.expect("a resumed stream opens");
    let mut unsubscribed = Vec::new();
    let mut received = Vec::new();
    while received.is_empty() {
        let e = sse.next().await.unwrap();
        match e.event.as_str() {
            "unsubscribed" => {
                assert_eq!(channels_of(e.id.as_deref().unwrap()), vec!["room:a"], "room:b is gone from ids");
                unsubscribed.push(e.data["channel"].as_str().unwrap().to_owned());
            }
            "publication" => received.push(e.data["data"]["n"].as_str().unwrap().to_owned()),
            _ => {}
        }
    }
    assert_eq!(unsubscribed, vec!["room:b"]);
    assert_eq!(received, vec!["a2"], "room:a resumes where it was");
    assert_eq!(s.hub.subscription_count(), 1);
    s.publish("room:b", "publication", json!({"n": "b3"})).await;
    s.publish("room:a", "publication", json!({"n": "a3"})).await;
    assert_eq!(sse.next_of("publication").await.data["data"]["n"], "a3");
}

#[tokio::test]
async fn a_refused_fresh_stream_is_403_and_evicts_nobody() {
    let s = TestServer::start(Options::default()).await;
    let mut ws = Vec::new();
    for _ in 0..3 {
        ws.push(s.client("alice", &[]).await);
    }
    let (status, body) = s.sse(&s.token("alice", &[]), "channel=user:alice&channel=room:secret", None).await.err().unwrap();
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")), "{body}");
    assert_eq!(s.hub.connection_count(), 3);
    for c in &mut ws {
        assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true, "no connection was evicted");
    }
    let m = s.metrics().await;
    assert_eq!(metric(&m, "chorus_disconnects_total{reason=\"connection_limit\"}").unwrap_or(0.0), 0.0, "{m}");
}

#[tokio::test]
async fn an_expired_token_ends_the_stream_with_disconnect_4002() {
    let s = TestServer::start(Options::default()).await;
    let token = s.token_ttl("alice", &[], Duration::from_secs(1));
    let mut sse = s.sse(&token, "channel=user:alice", None).await.unwrap();
    let e = sse.next_of("disconnect").await;
    assert_eq!(e.data["data"]["code"], 4002, "{:?}", e.data);
    assert_eq!(e.data["data"]["reconnect"], true);
    assert!(sse.next().await.is_none(), "the stream ends after disconnect");
    assert_eq!(s.hub.connection_count(), 0);
}

#[tokio::test]
async fn a_slow_sse_consumer_gets_disconnect_4005() {
    let mut opts = Options::default();
    opts.limits.outbound_queue_messages = 10;
    let s = TestServer::start(opts).await;
    let token = s.token("slow", &["room:slow"]);
    let mut sse = RawSseClient::open(s.addr, "/sse?channel=room:slow", &token, None, 4096).await.unwrap();
    assert_eq!(sse.next().await.unwrap().event, "connected");
    let mut normal = s.client("normal", &["room:slow"]).await;
    normal.request(json!({"type": "subscribe", "channel": "room:slow"})).await;
    // A WebSocket reader beside it reads everything as it comes, up to the end marker.
    let normal = tokio::spawn(async move {
        let mut got = Vec::new();
        loop {
            let p = normal.push_of("publication").await;
            if p["data"]["end"] == true {
                return (got, normal);
            }
            got.push(p["data"]["n"].as_u64().unwrap());
        }
    });

    // The stream is not read: publish until the server gives up on it.
    let slow = s.hub.user_connections(&UserId::new("slow")).pop().unwrap();
    let pad = "x".repeat(16 * 1024);
    let mut published = 0u64;
    while slow.close_reason().is_none() {
        assert!(published < 3000, "never closed as a slow consumer");
        let (status, _) = s.publish("room:slow", "publication", json!({"n": published, "pad": pad})).await;
        assert_eq!(status, 200);
        published += 1;
    }
    assert_eq!(slow.close_reason(), Some(CloseCode::SlowConsumer));
    s.publish("room:slow", "publication", json!({"end": true})).await;
    let (got, mut normal) = normal.await.unwrap();
    assert_eq!(got, (0..published).collect::<Vec<_>>(), "the WebSocket reader got everything");

    // Reading again: what was flushed, in order, then `disconnect` with 4005.
    let mut next_n = 0;
    let disconnect = loop {
        let e = sse.next().await.expect("the stream ended without a disconnect event");
        match e.event.as_str() {
            "publication" => {
                assert_eq!(e.data["data"]["n"], next_n);
                next_n += 1;
            }
            "disconnect" => break e,
            "presence_joined" => {}
            other => panic!("unexpected {other}"),
        }
    };
    assert_eq!(disconnect.data["data"]["code"], 4005, "{:?}", disconnect.data);
    assert_eq!(disconnect.data["data"]["reason"], "slow consumer");
    assert_eq!(disconnect.data["data"]["reconnect"], true);
    assert!(sse.next().await.is_none(), "the stream ends after disconnect");
    assert_eq!(s.hub.connection_count(), 1);
    assert_eq!(normal.request(json!({"type": "ping"})).await["result"]["pong"], true);
}

#[tokio::test]
async fn a_malformed_command_body_gets_a_400_reply_with_the_request_id() {
    let s = TestServer::start(Options::default()).await;
    let token = s.token("alice", &[]);
    let mut sse = s.sse(&token, "channel=user:alice", None).await.unwrap();
    let url = sse.next_of("connected").await.data["data"]["commands_url"].as_str().unwrap().to_owned();
    let cases: [(&str, Value, &str); 5] = [
        ("{not json", Value::Null, "malformed_json"),
        ("[1, 2]", Value::Null, "bad_request"),
        (r#"{"id": "x", "type": "ping"}"#, Value::Null, "bad_request"),
        (r#"{"id": 5, "type": "teleport"}"#, json!(5), "unknown_command"),
        (r#"{"id": 6, "type": "subscribe", "channel": 17}"#, json!(6), "invalid_field"),
    ];
    for (body, id, code) in cases {
        let (status, reply, rid) = s.sse_command(&url, &token, body).await;
        assert_eq!(status, 400, "{body} -> {reply}");
        assert_eq!(reply["id"], id, "{body} -> {reply}");
        assert_eq!(reply["error"]["error"], code, "{body} -> {reply}");
        assert_eq!(reply["error"]["request_id"].as_str(), Some(rid.as_str()), "the HTTP request's id: {reply}");
        assert!(reply["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{reply}");
        assert!(reply["error"]["timestamp"].is_string(), "{reply}");
        assert_eq!(reply.as_object().unwrap().len(), 2, "only id and error: {reply}");
    }
    // The stream is unaffected.
    let (status, reply, _) = s.sse_command(&url, &token, r#"{"id": 7, "type": "ping"}"#).await;
    assert_eq!((status, reply["result"]["pong"].as_bool()), (200, Some(true)), "{reply}");
    drop(sse);
}
