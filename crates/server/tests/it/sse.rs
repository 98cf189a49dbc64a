//! The SSE transport: same events, `Last-Event-ID` resume, commands over HTTP.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Options, TestServer};

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
    // Idle: keep-alive comments arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.publish("room:a", "publication", json!({"n": 2})).await;
    sse.next_of("publication").await;
    assert!(sse.comments >= 1);
}

#[tokio::test]
async fn last_event_id_resumes_every_channel() {
    let s = TestServer::start(Options::default()).await;
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

#[tokio::test]
async fn a_channel_that_cannot_resume_gets_its_own_recovery_failed() {
    let mut opts = Options::default();
    if let Some(room) = opts.namespaces.0.get_mut("room") {
        room.history_size = 3;
    }
    let s = TestServer::start(opts).await;
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

#[tokio::test]
async fn sse_counts_toward_the_per_user_limit() {
    let s = TestServer::start(Options::default()).await;
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
