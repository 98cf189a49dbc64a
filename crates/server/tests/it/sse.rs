//! The SSE transport: same events, `Last-Event-ID` resume, commands over HTTP.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::common::{Options, TestServer, WAIT};

/// One parsed SSE event (or a comment).
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub id: Option<String>,
    pub event: String,
    pub data: Value,
}

pub struct SseClient {
    body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    buf: String,
    pub comments: usize,
    pub last_id: Option<String>,
}

impl SseClient {
    pub async fn open(s: &TestServer, token: &str, query: &str, last_event_id: Option<&str>) -> Result<SseClient, (u16, Value)> {
        let mut req = s.http().get(s.url(&format!("/sse?{query}"))).bearer_auth(token);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let res = req.send().await.unwrap();
        if res.status() != 200 {
            let status = res.status().as_u16();
            return Err((status, res.json().await.unwrap_or_default()));
        }
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Ok(SseClient { body: res.bytes_stream().boxed(), buf: String::new(), comments: 0, last_id: None })
    }

    /// The next event, skipping comments.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ev = SseEvent { id: None, event: "message".into(), data: Value::Null };
                let mut is_event = false;
                for line in block.lines() {
                    if line.starts_with(':') {
                        self.comments += 1;
                    } else if let Some(v) = line.strip_prefix("id: ") {
                        ev.id = Some(v.to_owned());
                    } else if let Some(v) = line.strip_prefix("event: ") {
                        ev.event = v.to_owned();
                        is_event = true;
                    } else if let Some(v) = line.strip_prefix("data: ") {
                        ev.data = serde_json::from_str(v).unwrap();
                        is_event = true;
                    }
                }
                if let Some(id) = &ev.id {
                    self.last_id = Some(id.clone());
                }
                if is_event {
                    return Some(ev);
                }
                continue;
            }
            match tokio::time::timeout(WAIT, self.body.next()).await.expect("timed out waiting for an SSE event") {
                Some(Ok(chunk)) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
                Some(Err(e)) => panic!("stream error: {e}"),
                None => return None,
            }
        }
    }

    pub async fn next_of(&mut self, kind: &str) -> SseEvent {
        loop {
            let e = self.next().await.expect("stream ended");
            if e.event == kind {
                return e;
            }
        }
    }
}

#[tokio::test]
async fn streams_events_with_positions_and_keepalives() {
    let mut opts = Options::default();
    opts.timing.sse_keepalive = Duration::from_millis(200);
    let s = TestServer::start(opts).await;
    let token = s.token("alice", &["room:a"]);
    let mut sse = SseClient::open(&s, &token, "channel=room:a&channel=user:alice", None).await.unwrap();
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
    let mut sse = SseClient::open(&s, &token, "channel=room:a&channel=room:b", None).await.unwrap();
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
    let mut sse = SseClient::open(&s, &token, "channel=room:a", Some(&last)).await.unwrap();
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
    let mut sse = SseClient::open(&s, &token, "channel=room:a&channel=room:b", None).await.unwrap();
    s.publish("room:a", "publication", json!({"n": 0})).await;
    sse.next_of("publication").await;
    let last = sse.last_id.clone().unwrap();
    drop(sse);
    for n in 1..=10 {
        s.publish("room:a", "publication", json!({"n": n})).await;
    }
    s.publish("room:b", "publication", json!({"n": "b"})).await;
    let mut sse = SseClient::open(&s, &token, "", Some(&last)).await.unwrap();
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
    let mut sse = SseClient::open(&s, &token, "channel=room:a", None).await.unwrap();
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
    let (status, body) = SseClient::open(&s, &token, "channel=room:secret", None).await.err().unwrap();
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, body) = SseClient::open(&s, "bad", "channel=user:alice", None).await.err().unwrap();
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));
    let (status, _) = SseClient::open(&s, &token, "channel=user:alice", Some("garbage")).await.err().unwrap();
    assert_eq!(status, 400);
    let (status, _) = SseClient::open(&s, &token, "", None).await.err().unwrap();
    assert_eq!(status, 400);
    assert_eq!(s.hub.connection_count(), 0, "refused streams hold nothing");
}

#[tokio::test]
async fn sse_counts_toward_the_per_user_limit() {
    let s = TestServer::start(Options::default()).await;
    let mut ws1 = s.client("alice", &[]).await;
    let _ws2 = s.client("alice", &[]).await;
    let _ws3 = s.client("alice", &[]).await;
    let _sse = SseClient::open(&s, &s.token("alice", &[]), "channel=user:alice", None).await.unwrap();
    assert_eq!(ws1.closed().await.0, 4004);
}

#[tokio::test]
async fn shutdown_sends_reconnect_before_ending_the_stream() {
    let s = TestServer::start(Options::default()).await;
    let mut sse = SseClient::open(&s, &s.token("alice", &[]), "channel=user:alice", None).await.unwrap();
    sse.next_of("connected").await;
    s.hub.shutdown();
    let e = sse.next_of("reconnect").await;
    assert_eq!(e.data["data"]["retry_ms"], 1000);
    assert!(sse.next().await.is_none(), "the stream ends after reconnect");
}
