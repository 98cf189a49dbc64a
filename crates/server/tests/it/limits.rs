//! Connection limits, backpressure and heartbeats.

use std::time::{Duration, Instant};

use serde_json::json;
use crate::common::{Options, SilentClient, TestServer, WsClient};

#[tokio::test]
async fn a_fourth_connection_closes_the_oldest_with_4004() {
    let s = TestServer::start(Options::default()).await;
    let mut first = s.client("alice", &[]).await;
    let _second = s.client("alice", &[]).await;
    let mut third = s.client("alice", &[]).await;
    let _fourth = s.client("alice", &[]).await;
    let (code, reason) = first.closed().await;
    assert_eq!(code, 4004);
    assert!(reason.contains("connection limit"), "{reason}");
    assert_eq!(third.request(json!({"type": "ping"})).await["result"]["pong"], true);
    // Other users are not affected.
    let _bob = s.client("bob", &[]).await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_slow_and_others_are_not_delayed() {
    let mut opts = Options::default();
    opts.limits.outbound_queue_messages = 50;
    let s = TestServer::start(opts).await;
    let mut normal = Vec::new();
    for i in 0..5 {
        let mut c = s.client(&format!("n{i}"), &["room:hot"]).await;
        assert!(c.request(json!({"type": "subscribe", "channel": "room:hot"})).await["result"].is_object());
        normal.push(c);
    }
    let mut slow = s.client("slow", &["room:hot"]).await;
    assert!(slow.request(json!({"type": "subscribe", "channel": "room:hot"})).await["result"].is_object());
    let slow_ws = slow.into_inner();

    // Fill the slow client's socket buffers and queue while the normal ones keep reading.
    let pad = "x".repeat(8 * 1024);
    let total = 600;
    let publisher = {
        let http = s.http().clone();
        let url = s.url("/api/v1/publish");
        let pad = pad.clone();
        tokio::spawn(async move {
            for n in 0..total {
                let sent = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
                let body = json!({"channel": "room:hot", "event": "publication", "data": {"n": n, "sent_us": sent, "pad": pad}});
                let r = http.post(&url).header("x-api-key", crate::common::API_KEY).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    let mut worst = Duration::ZERO;
    // Every normal client receives everything, in order, promptly.
    let mut readers = Vec::new();
    for mut c in normal {
        readers.push(tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            for n in 0..total {
                let p = c.push_of("publication").await;
                assert_eq!(p["data"]["n"], n);
                let sent = p["data"]["sent_us"].as_u64().unwrap();
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_micros() as u64;
                worst = worst.max(Duration::from_micros(now.saturating_sub(sent)));
            }
            worst
        }));
    }
    publisher.await.unwrap();
    for r in readers {
        worst = worst.max(r.await.unwrap());
    }
    // Generous bound: this is a correctness test on a shared machine, not a benchmark.
    assert!(worst < Duration::from_secs(2), "normal clients were delayed by {worst:?}");

    // The slow one resumes reading: what was flushed, then the close frame.
    let mut slow = WsClient::from_inner(slow_ws);
    let code = loop {
        match slow.frame_or_close().await {
            Ok(_) => continue,
            Err(code) => break code,
        }
    };
    assert_eq!(code, 4005);
    let m = s.metrics().await;
    assert!(crate::common::metric(&m, "chorus_disconnects_total{reason=\"slow_consumer\"}").unwrap_or(0.0) >= 1.0, "{m}");
}

#[tokio::test]
async fn a_missed_pong_closes_with_4006() {
    let mut opts = Options::default();
    opts.timing.ping_interval = Duration::from_millis(200);
    opts.timing.pong_timeout = Duration::from_millis(300);
    let s = TestServer::start(opts).await;
    let mut alive = s.client("alive", &[]).await;
    let started = Instant::now();
    let mut silent = SilentClient::connect(s.addr, &format!("/ws?token={}", s.token("silent", &[]))).await;
    let silent = tokio::spawn(async move { silent.close_code().await });
    // Meanwhile a client that keeps reading (tungstenite answers pings while it reads) stays up.
    let deadline = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < deadline {
        assert_eq!(alive.request(json!({"type": "ping"})).await["result"]["pong"], true);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, pings) = silent.await.unwrap();
    assert_eq!(code, 4006);
    assert!(pings >= 1, "closed after an unanswered ping");
    assert!(started.elapsed() >= Duration::from_millis(500), "not before ping interval + pong timeout");
}

#[tokio::test]
async fn node_limits_refuse_upgrades_with_clear_errors() {
    let mut opts = Options::default();
    opts.limits.connections_per_node = 2;
    let s = TestServer::start(opts).await;
    let _a = s.client("a", &[]).await;
    let _b = s.client("b", &[]).await;
    let res = s.http().get(s.url("/ws")).header("connection", "upgrade").header("upgrade", "websocket")
        .header("sec-websocket-version", "13").header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==").send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert!(res.headers().get("retry-after").is_some());
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "unavailable");
}

#[tokio::test]
async fn connect_rate_is_limited_per_node() {
    let mut opts = Options::default();
    opts.limits.connects_per_second = 3;
    let s = TestServer::start(opts).await;
    let mut refused = 0;
    for i in 0..10 {
        match WsClient::connect(&s.ws_url(Some(&s.token(&format!("u{i}"), &[])))).await {
            Ok(_) => {}
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                assert_eq!(r.status(), 429);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 6, "only the burst gets through ({refused} refused)");
}
