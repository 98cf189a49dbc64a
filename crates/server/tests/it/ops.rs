//! Health, metrics, origins, panic isolation and shutdown.

use serde_json::{Value, json};

use crate::common::{Options, TestServer, WsClient, metric};

#[tokio::test]
async fn health_endpoints() {
    let s = TestServer::start(Options::default()).await;
    let (status, body) = s.get_json("/health").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ok")));
    let _c = s.client("alice", &[]).await;
    let (status, body) = s.get_json("/health/detailed").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "healthy");
    assert_eq!(body["checks"]["broker"]["status"], "healthy");
    assert_eq!(body["checks"]["hub"]["connections"], 1);
    assert!(body["checks"]["memory"]["rss_bytes"].as_u64().unwrap() > 0);
    assert_eq!(body["checks"]["memory"]["status"], "healthy");
}

#[tokio::test]
async fn memory_above_its_budget_is_unhealthy() {
    let mut opts = Options::default();
    // Any process is larger than one megabyte.
    opts.server.memory_budget_bytes = 1024 * 1024;
    let s = TestServer::start(opts).await;
    let (status, body) = s.get_json("/health/detailed").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "unhealthy");
    let memory = &body["checks"]["memory"];
    assert_eq!(memory["status"], "unhealthy", "{memory}");
    assert_eq!(memory["budget_bytes"], 1024 * 1024);
    assert!(memory["rss_bytes"].as_u64().unwrap() > 1024 * 1024);
}

#[tokio::test]
async fn metrics_cover_connections_events_and_http() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &[]).await;
    c.request(json!({"type": "subscribe", "channel": "user:alice"})).await;
    s.publish("user:alice", "publication", json!({})).await;
    c.push_of("publication").await;
    let _ = s.get_json("/nope").await;
    drop(c);
    let m = s.metrics().await;
    for needle in [
        "chorus_connection_duration_seconds_bucket{le=\"60.0\",transport=\"websocket\"}",
        "le=\"86400.0\"",
        "chorus_connections{transport=\"websocket\"}",
        "chorus_events_in_total{type=\"publication\"} 1",
        "chorus_events_out_total{type=\"publication\"} 1",
        "chorus_http_requests_total{",
        "route=\"/api/v1/publish\"",
        "chorus_http_request_duration_seconds_bucket{",
        "chorus_errors_total{endpoint=\"http:unmatched\",kind=\"not_found\"} 1",
        "chorus_outbound_queued",
        "chorus_limiter_entries",
        "chorus_subscriptions",
    ] {
        assert!(m.contains(needle), "missing {needle} in\n{m}");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_get_the_standard_error() {
    let s = TestServer::start(Options::default()).await;
    let (status, body) = s.get_json("/api/v1/nothing").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let res = s.http().delete(s.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "method_not_allowed");
}

#[tokio::test]
async fn foreign_origins_are_refused_and_allowed_ones_pass() {
    let mut opts = Options::default();
    opts.origins.allowed_origins = vec!["https://app.example.com".into()];
    let s = TestServer::start(opts).await;
    let url = s.ws_url(Some(&s.token("alice", &[])));
    match WsClient::connect_with(&url, &[("origin", "https://evil.example")]).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(WsClient::connect_with(&url, &[("origin", "https://app.example.com")]).await.is_ok());
    let same = format!("http://{}", s.addr);
    assert!(WsClient::connect_with(&url, &[("origin", &same)]).await.is_ok(), "same origin is allowed");

    // CORS preflight.
    let res = s.http().request(reqwest::Method::OPTIONS, s.url("/api/v1/publish"))
        .header("origin", "https://app.example.com").header("access-control-request-method", "POST").send().await.unwrap();
    assert_eq!(res.headers().get("access-control-allow-origin").unwrap(), "https://app.example.com");
    let res = s.http().request(reqwest::Method::OPTIONS, s.url("/api/v1/publish"))
        .header("origin", "https://evil.example").header("access-control-request-method", "POST").send().await.unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());

    // The policy reloads.
    s.origins.send_replace(chorus_server::OriginPolicy { allowed_origins: vec!["https://evil.example".into()] });
    assert!(WsClient::connect_with(&url, &[("origin", "https://evil.example")]).await.is_ok());
}

#[tokio::test]
async fn a_panic_in_one_connection_affects_only_that_connection() {
    let s = TestServer::start(Options::default()).await;
    let mut bystander = s.client("bob", &[]).await;
    bystander.request(json!({"type": "subscribe", "channel": "user:bob"})).await;
    let mut victim = s.client("alice", &[]).await;
    victim.send_text(json!({"id": 9, "type": "subscribe", "channel": "fault:boom"}).to_string()).await;
    let r = victim.reply(Some(9)).await;
    assert_eq!(r["error"]["error"], "internal");
    assert_eq!(victim.closed().await.0, 1011);

    assert_eq!(bystander.request(json!({"type": "ping"})).await["result"]["pong"], true);
    s.publish("user:bob", "publication", json!({"still": "here"})).await;
    assert_eq!(bystander.push_of("publication").await["data"]["still"], "here");
    let m = s.metrics().await;
    assert_eq!(metric(&m, "chorus_panics_total{task=\"connection\"}"), Some(1.0), "{m}");
    // The victim's resources were released.
    let deadline = std::time::Instant::now() + crate::common::WAIT;
    while s.hub.connection_count() != 1 {
        assert!(std::time::Instant::now() < deadline, "connection not released");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(s.get_json("/health").await.0, 200);
}

#[tokio::test]
async fn shutdown_tells_clients_to_reconnect_with_1012() {
    let s = TestServer::start(Options::default()).await;
    let mut a = s.client("alice", &[]).await;
    let mut b = s.client("bob", &[]).await;
    s.stop_accepting();
    s.hub.shutdown();
    assert_eq!(a.closed().await.0, 1012);
    assert_eq!(b.closed().await.0, 1012);
    tokio::time::timeout(crate::common::WAIT, s.hub.drained()).await.expect("drained");
    assert_eq!(s.hub.connection_count(), 0);
}

fn sample(m: &str, name: &str) -> f64 {
    metric(m, name).unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_follow_what_happens() {
    let s = TestServer::start(Options::default()).await;
    let m0 = s.metrics().await;

    // A WebSocket connection that ends is one more duration sample.
    let mut c = s.client("alice", &[]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "user:alice"})).await;
    assert!(r["result"].is_object());
    let r = c.request(json!({"type": "subscribe", "channel": "room:secret"})).await;
    assert_eq!(r["error"]["error"], "forbidden");
    c.send_message(tokio_tungstenite::tungstenite::Message::Close(None)).await;
    c.closed().await;
    let m1 = s.metrics().await;
    let ws_count = "chorus_connection_duration_seconds_count{transport=\"websocket\"}";
    assert_eq!(sample(&m1, ws_count), sample(&m0, ws_count) + 1.0, "{m1}");
    let subscribes = "chorus_command_duration_seconds_count{command=\"subscribe\"}";
    assert_eq!(sample(&m1, subscribes), sample(&m0, subscribes) + 2.0, "{m1}");
    let errors = "chorus_errors_total{endpoint=\"websocket:subscribe\",kind=\"forbidden\"}";
    assert_eq!(sample(&m1, errors), sample(&m0, errors) + 1.0, "{m1}");
    assert_eq!(sample(&m1, "chorus_connections{transport=\"websocket\"}"), 0.0);

    // An SSE stream is counted while it is open.
    let mut sse = s.sse(&s.token("bob", &[]), "channel=user:bob", None).await.unwrap();
    sse.next_of("connected").await;
    let m2 = s.metrics().await;
    assert_eq!(sample(&m2, "chorus_connections{transport=\"sse\"}"), 1.0, "{m2}");
    // Ended by the server: released before its last event, so counted out once the stream ends.
    s.hub.disconnect_user(&chorus_core::UserId::new("bob"), chorus_protocol::CloseCode::AdminDisconnect).await.unwrap();
    assert_eq!(sse.next_of("disconnect").await.data["data"]["code"], 4009);
    assert!(sse.next().await.is_none());
    let m3 = s.metrics().await;
    assert_eq!(sample(&m3, "chorus_connections{transport=\"sse\"}"), 0.0, "{m3}");
    let sse_count = "chorus_connection_duration_seconds_count{transport=\"sse\"}";
    assert_eq!(sample(&m3, sse_count), sample(&m0, sse_count) + 1.0, "{m3}");
    assert_eq!(sample(&m3, "chorus_disconnects_total{reason=\"admin_disconnect\"}"), 1.0, "{m3}");

    // A method no route knows is counted as OTHER.
    let brew = reqwest::Method::from_bytes(b"BREW").unwrap();
    let res = s.http().request(brew, s.url("/health")).send().await.unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(res.json::<Value>().await.unwrap()["error"], "method_not_allowed");
    let m4 = s.metrics().await;
    let line = m4.lines().find(|l| l.starts_with("chorus_http_requests_total{") && l.contains("method=\"OTHER\"")).unwrap_or_else(|| panic!("{m4}"));
    assert!(line.contains("route=\"/health\"") && line.contains("status=\"405\"") && line.ends_with(" 1"), "{line}");
    assert!(!m4.contains("method=\"BREW\""), "client-chosen methods are not labels");
}
