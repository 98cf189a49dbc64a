//! The server publish API: API keys, schemas, batches.

use serde_json::{Value, json};

use crate::common::{API_KEY, Options, TestServer, metric};

async fn post(s: &TestServer, path: &str, key: Option<&str>, body: Value) -> (u16, Value, Option<String>) {
    let mut req = s.http().post(s.url(path)).json(&body);
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let rid = res.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned());
    (status, res.json().await.unwrap_or(Value::Null), rid)
}

#[tokio::test]
async fn api_key_is_required() {
    let s = TestServer::start(Options::default()).await;
    let body = json!({"channel": "room:a", "data": {}});
    let (status, err, rid) = post(&s, "/api/v1/publish", None, body.clone()).await;
    assert_eq!(status, 401);
    assert_eq!(err["error"], "unauthorized");
    assert_eq!(err["request_id"].as_str(), rid.as_deref(), "request_id matches the response header");
    assert_eq!(post(&s, "/api/v1/publish", Some("wrong"), body.clone()).await.0, 401);
    assert_eq!(post(&s, "/api/v1/publish", Some(API_KEY), body).await.0, 200);
}

#[tokio::test]
async fn events_are_validated_against_their_schema() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &[]).await;
    c.request(json!({"type": "subscribe", "channel": "user:alice"})).await;

    let run = json!({"run_id": "r1", "thread_id": "room:a", "agent_id": "g1", "seq": 1});
    let mut thinking = run.clone();
    thinking["thought"] = json!("checking the weather");
    let (status, body, _) = post(&s, "/api/v1/publish", Some(API_KEY), json!({"channel": "user:alice", "event": "agent_thinking", "data": thinking})).await;
    assert_eq!(status, 200, "{body}");
    let p = c.push_of("agent_thinking").await;
    assert_eq!(p["data"]["thought"], "checking the weather");
    assert_eq!(p["data"]["run_id"], "r1");

    let cases = [
        (json!({"channel": "user:alice", "event": "agent_thinking", "data": {"run_id": "r1"}}), 422, "invalid_event"),
        (json!({"channel": "user:alice", "event": "agent_started", "data": {"run_id": 5, "thread_id": "t", "agent_id": "a"}}), 422, "invalid_event"),
        (json!({"channel": "user:alice", "event": "presence_joined", "data": {"user_id": "x"}}), 422, "invalid_event"),
        (json!({"channel": "user:alice", "event": "channel_event", "data": {}}), 422, "invalid_event"),
        (json!({"channel": "user:alice", "data": [1, 2]}), 400, "invalid_field"),
        (json!({"channel": "nope:x", "data": {}}), 400, "invalid_field"),
        (json!({"channel": "no namespace", "data": {}}), 400, "invalid_field"),
        (json!({"data": {}}), 400, "invalid_field"),
    ];
    for (body, status, code) in cases {
        let (got, err, _) = post(&s, "/api/v1/publish", Some(API_KEY), body.clone()).await;
        assert_eq!((got, err["error"].as_str()), (status, Some(code)), "{body} -> {err}");
    }
    let res = s.http().post(s.url("/api/v1/publish")).header("x-api-key", API_KEY).header("content-type", "application/json").body("{oops").send().await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "malformed_json");
}

#[tokio::test]
async fn batches_publish_in_order_with_per_item_results() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &[]).await;
    c.request(json!({"type": "subscribe", "channel": "user:alice"})).await;
    let items = json!([
        {"channel": "user:alice", "data": {"n": 1}},
        {"channel": "user:alice", "event": "agent_error", "data": {"run_id": "r"}},
        {"channel": "user:alice", "data": {"n": 2}},
    ]);
    let (status, body, rid) = post(&s, "/api/v1/publish/batch", Some(API_KEY), json!({"items": items})).await;
    assert_eq!(status, 200);
    let results = body["results"].as_array().unwrap();
    assert!(results[0]["offset"].is_u64());
    assert_eq!(results[1]["error"]["error"], "invalid_event");
    assert_eq!(results[1]["error"]["request_id"], format!("{}:1", rid.unwrap()));
    assert_eq!(results[2]["offset"].as_u64(), results[0]["offset"].as_u64().map(|o| o + 1));
    assert_eq!(c.push_of("publication").await["data"]["n"], 1);
    assert_eq!(c.push_of("publication").await["data"]["n"], 2);

    let (status, body, _) = post(&s, "/api/v1/publish/batch", Some(API_KEY), json!({"items": []})).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_field")));
    let many: Vec<Value> = (0..1001).map(|_| json!({"channel": "user:alice", "data": {}})).collect();
    let (status, _, _) = post(&s, "/api/v1/publish/batch", Some(API_KEY), json!({"items": many})).await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn oversize_bodies_are_refused_with_the_standard_error() {
    let mut opts = Options::default();
    opts.server.body_limit_bytes = 4096;
    let s = TestServer::start(opts).await;
    let (status, body, _) = post(&s, "/api/v1/publish", Some(API_KEY), json!({"channel": "room:a", "data": {"pad": "x".repeat(8000)}})).await;
    assert_eq!(status, 413);
    assert_eq!(body["error"], "payload_too_large");
    assert!(body["request_id"].is_string());
}

#[tokio::test]
async fn data_larger_than_a_frame_is_refused_413() {
    let mut opts = Options::default();
    opts.limits.frame_bytes = 1024;
    let s = TestServer::start(opts).await;
    let big = json!({"pad": "x".repeat(2000)});
    let (status, err, rid) = post(&s, "/api/v1/publish", Some(API_KEY), json!({"channel": "feed:a", "data": big})).await;
    assert_eq!(status, 413, "{err}");
    assert_eq!(err["error"], "payload_too_large");
    assert!(err["message"].as_str().unwrap().contains("1024"), "{err}");
    assert!(err["timestamp"].is_string(), "{err}");
    assert_eq!(err["request_id"].as_str(), rid.as_deref());
    // In a batch only that item is refused.
    let items = json!([{"channel": "feed:a", "data": {"n": 1}}, {"channel": "feed:a", "data": big}, {"channel": "feed:a", "data": {"n": 2}}]);
    let (status, body, rid) = post(&s, "/api/v1/publish/batch", Some(API_KEY), json!({"items": items})).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert!(results[0]["offset"].is_u64());
    assert_eq!(results[1]["error"]["error"], "payload_too_large");
    assert_eq!(results[1]["error"]["request_id"], format!("{}:1", rid.unwrap()));
    assert_eq!(results[2]["offset"].as_u64(), results[0]["offset"].as_u64().map(|o| o + 1), "nothing was published for it");
    // Just under the limit goes through.
    let fits = json!({"pad": "x".repeat(1000)});
    assert_eq!(post(&s, "/api/v1/publish", Some(API_KEY), json!({"channel": "feed:a", "data": fits})).await.0, 200);
}

#[tokio::test]
async fn a_batch_into_one_channel_reaches_every_reader_without_making_them_slow() {
    let s = TestServer::start(Options::default()).await;
    let total = 200u64;
    let mut readers = Vec::new();
    for i in 0..20 {
        let mut c = s.client(&format!("r{i}"), &["feed:fan"]).await;
        assert!(c.request(json!({"type": "subscribe", "channel": "feed:fan"})).await["result"].is_object());
        readers.push(tokio::spawn(async move {
            for n in 0..total {
                let p = c.push_of("publication").await;
                assert_eq!(p["data"]["n"], n, "in order");
            }
            assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true, "still connected");
        }));
    }
    // More events than an outbound queue holds (50), in one request.
    let items: Vec<Value> = (0..total).map(|n| json!({"channel": "feed:fan", "data": {"n": n}})).collect();
    let (status, body, _) = post(&s, "/api/v1/publish/batch", Some(API_KEY), json!({"items": items})).await;
    assert_eq!(status, 200);
    assert!(body["results"].as_array().unwrap().iter().all(|r| r["offset"].is_u64()), "{body}");
    for r in readers {
        r.await.unwrap();
    }
    let m = s.metrics().await;
    assert_eq!(metric(&m, "chorus_disconnects_total{reason=\"slow_consumer\"}").unwrap_or(0.0), 0.0, "{m}");
}

#[tokio::test]
async fn client_publish_is_refused_where_server_published_and_rate_limited_per_user() {
    let s = TestServer::start(Options::default()).await;
    let mut reader = s.client("bob", &[]).await;
    reader.request(json!({"type": "subscribe", "channel": "chat:pub"})).await;
    let mut c = s.client("alice", &["room:a"]).await;
    c.request(json!({"type": "subscribe", "channel": "room:a"})).await;
    for channel in ["user:alice", "room:a"] {
        let r = c.request(json!({"type": "publish", "channel": channel, "data": {"x": 1}})).await;
        assert_eq!(r["error"]["error"], "forbidden", "{channel}: {r}");
    }
    // `chat:` is published by subscribers: a burst of 5 per user, then `rate_limited`
    // (the refusals above took none of it).
    for n in 0..5 {
        let r = c.request(json!({"type": "publish", "channel": "chat:pub", "data": {"n": n}})).await;
        assert_eq!(r["result"]["channel"], "chat:pub", "{r}");
        assert!(r["result"]["offset"].is_u64(), "{r}");
    }
    let r = c.request(json!({"type": "publish", "channel": "chat:pub", "data": {"n": 5}})).await;
    assert_eq!(r["error"]["error"], "rate_limited", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("retry in"), "{r}");
    // Another connection of the same user shares the limit; another user does not.
    let mut c2 = s.client("alice", &[]).await;
    let r = c2.request(json!({"type": "publish", "channel": "chat:pub", "data": {"n": 6}})).await;
    assert_eq!(r["error"]["error"], "rate_limited", "{r}");
    let r = reader.request(json!({"type": "publish", "channel": "chat:pub", "data": {"n": "bob"}})).await;
    assert!(r["result"].is_object(), "{r}");
    // Exactly what was accepted was published.
    let got: Vec<Value> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(reader.push_of("publication").await["data"]["n"].clone());
        }
        v
    };
    assert_eq!(got, vec![json!(0), json!(1), json!(2), json!(3), json!(4), json!("bob")]);
    let r = c.request(json!({"type": "publish", "channel": "chat:pub", "data": [1]})).await;
    assert_eq!(r["error"]["error"], "invalid_field", "data must be an object: {r}");
}
