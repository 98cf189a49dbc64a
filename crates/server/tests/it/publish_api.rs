//! The server publish API: API keys, schemas, batches.

use serde_json::{Value, json};

use crate::common::{API_KEY, Options, TestServer};

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

    let run = json!({"run_id": "r1", "thread_id": "room:a", "agent_id": "g1"});
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
