//! Connection limits, backpressure and heartbeats.

use std::time::{Duration, Instant};

use chorus_core::UserId;
use chorus_protocol::CloseCode;
use serde_json::{Value, json};

use crate::common::{Engine, Options, SilentClient, TestServer, WsClient, every_engine, metric};

every_engine!(
    a_fourth_connection_closes_the_oldest_with_4004,
    a_slow_consumer_recovers_exactly_after_reconnecting,
);

async fn a_fourth_connection_closes_the_oldest_with_4004(engine: Engine) {
    let s = TestServer::start_on(engine, Options::default()).await;
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
    // Measured when the close arrives, not when the test gets round to it.
    let silent = tokio::spawn(async move {
        let (code, pings) = silent.close_code().await;
        (code, pings, started.elapsed())
    });
    // Meanwhile a client that keeps reading (tungstenite answers pings while it reads) stays up.
    let mut silent = std::pin::pin!(silent);
    let (code, pings, elapsed) = loop {
        tokio::select! {
            r = &mut silent => break r.unwrap(),
            _ = tokio::time::sleep(Duration::from_millis(50)) => {
                assert_eq!(alive.request(json!({"type": "ping"})).await["result"]["pong"], true);
            }
        }
    };
    assert_eq!(alive.request(json!({"type": "ping"})).await["result"]["pong"], true);
    assert_eq!(code, 4006);
    assert!(pings >= 1, "closed after an unanswered ping");
    assert!(elapsed >= Duration::from_millis(500), "not before ping interval + pong timeout ({elapsed:?})");
    assert!(elapsed < Duration::from_secs(3), "soon after ping interval + pong timeout ({elapsed:?})");
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

#[tokio::test]
async fn a_refused_connect_command_closes_1013_when_the_node_is_full() {
    let mut opts = Options::default();
    opts.limits.connections_per_node = 1;
    let s = TestServer::start(opts).await;
    // Admitted while the node is empty, but not in the hub until `connect`.
    let mut late = WsClient::connect(&s.ws_url(None)).await.unwrap();
    assert_eq!(late.request(json!({"type": "ping"})).await["result"]["pong"], true);
    let mut first = s.client("bob", &[]).await;
    assert_eq!(s.hub.connection_count(), 1);

    let r = late.request(json!({"type": "connect", "token": s.token("alice", &[])})).await;
    assert_eq!(r["error"]["error"], "unavailable", "{r}");
    let (code, reason) = late.closed().await;
    assert_eq!(code, 1013, "a full node is worth retrying, not a token problem ({reason})");
    assert_eq!(first.request(json!({"type": "ping"})).await["result"]["pong"], true);
    assert_eq!(s.hub.connection_count(), 1);
}

#[tokio::test]
async fn a_socket_that_never_sent_connect_gets_1012_on_shutdown() {
    let s = TestServer::start(Options::default()).await;
    let mut bare = WsClient::connect(&s.ws_url(None)).await.unwrap();
    // Its session is running (and not in the hub's table).
    assert_eq!(bare.request(json!({"type": "ping"})).await["result"]["pong"], true);
    assert_eq!(s.hub.connection_count(), 0);
    s.shutdown();
    assert_eq!(bare.closed().await.0, 1012);
}

async fn a_slow_consumer_recovers_exactly_after_reconnecting(engine: Engine) {
    let s = TestServer::start_on(engine, Options::default()).await;
    let pad = "x".repeat(16 * 1024);
    let mut normal = Vec::new();
    for i in 0..3 {
        let mut c = s.client(&format!("n{i}"), &["feed:hot"]).await;
        assert!(c.request(json!({"type": "subscribe", "channel": "feed:hot"})).await["result"].is_object());
        normal.push(c);
    }
    let mut slow = s.client("slow", &["feed:hot"]).await;
    assert!(slow.request(json!({"type": "subscribe", "channel": "feed:hot"})).await["result"].is_object());
    // The normal ones read everything up to the end marker, as it comes.
    let readers: Vec<_> = normal
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let mut got = Vec::new();
                loop {
                    let p = c.push_of("publication").await;
                    if p["data"]["end"] == true {
                        return got;
                    }
                    got.push(p["data"]["n"].as_u64().unwrap());
                }
            })
        })
        .collect();

    // The slow one processes a few events, then stops reading.
    let mut n = 0u64;
    for _ in 0..5 {
        s.publish("feed:hot", "publication", json!({"n": n, "pad": pad})).await;
        n += 1;
    }
    let mut last = Value::Null;
    for expected in 0..5 {
        last = slow.push_of("publication").await;
        assert_eq!(last["data"]["n"], expected);
    }
    let slow_ws = slow.into_inner();
    let conn = s.hub.user_connections(&UserId::new("slow")).pop().unwrap();
    while conn.close_reason().is_none() {
        assert!(n < 5000, "never closed as a slow consumer");
        assert_eq!(s.publish("feed:hot", "publication", json!({"n": n, "pad": pad})).await.0, 200);
        n += 1;
    }
    assert_eq!(conn.close_reason(), Some(CloseCode::SlowConsumer));
    // Missed while it is away.
    for _ in 0..20 {
        s.publish("feed:hot", "publication", json!({"n": n, "pad": pad})).await;
        n += 1;
    }
    let total = n;
    s.publish("feed:hot", "publication", json!({"end": true})).await;
    for r in readers {
        assert_eq!(r.await.unwrap(), (0..total).collect::<Vec<_>>(), "normal clients get everything, in order");
    }

    // It reads again: what was flushed before the close (processed), then 4005.
    let mut slow = WsClient::from_inner(slow_ws);
    let code = loop {
        match slow.frame_or_close().await {
            Ok(p) => {
                assert_eq!(p["data"]["n"].as_u64(), Some(last["data"]["n"].as_u64().unwrap() + 1), "{p}");
                last = p;
            }
            Err(code) => break code,
        }
    };
    assert_eq!(code, 4005);
    let processed = last["data"]["n"].as_u64().unwrap();
    assert!(processed < total - 20, "events were lost by the slow consumer ({processed} of {total})");

    // Back with its last processed position: exactly the rest, then live.
    let mut back = s.client("slow", &["feed:hot"]).await;
    let since = json!({"offset": last["offset"], "epoch": last["epoch"]});
    let r = back.request(json!({"type": "subscribe", "channel": "feed:hot", "since": since})).await;
    assert_eq!(r["result"]["recovered"], true, "{r}");
    let from = last["offset"].as_u64().unwrap();
    for (offset, expected) in (from + 1..).zip(processed + 1..total) {
        let p = back.push().await;
        assert_eq!((p["data"]["n"].as_u64(), p["offset"].as_u64()), (Some(expected), Some(offset)), "no gap, no duplicate");
    }
    assert_eq!(back.push().await["data"]["end"], true);
    let m = s.metrics().await;
    assert_eq!(metric(&m, "chorus_disconnects_total{reason=\"slow_consumer\"}"), Some(1.0), "only the slow one");
}

#[tokio::test]
async fn refresh_with_fewer_grants_ends_the_subscriptions_it_no_longer_allows() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &["feed:a", "feed:b"]).await;
    c.request(json!({"type": "subscribe", "channel": "feed:a"})).await;
    c.request(json!({"type": "subscribe", "channel": "feed:b"})).await;
    let r = c.request(json!({"type": "refresh", "token": s.token("alice", &["feed:a"])})).await;
    assert!(r["result"]["expires_at"].is_string(), "{r}");
    let u = c.push().await;
    assert_eq!((u["type"].as_str(), u["channel"].as_str()), (Some("unsubscribed"), Some("feed:b")), "{u}");
    assert_eq!(u["data"]["reason"], "the refreshed token does not allow this channel");
    assert_eq!(s.hub.subscription_count(), 1);

    s.publish("feed:b", "publication", json!({"n": "b"})).await;
    s.publish("feed:a", "publication", json!({"n": "a"})).await;
    let p = c.push().await;
    assert_eq!((p["channel"].as_str(), p["data"]["n"].as_str()), (Some("feed:a"), Some("a")), "the granted channel keeps delivering, the other does not: {p}");
    // And feed:b can no longer be subscribed to with this token.
    let r = c.request(json!({"type": "subscribe", "channel": "feed:b"})).await;
    assert_eq!(r["error"]["error"], "forbidden");
}

#[tokio::test]
async fn a_token_within_the_leeway_is_accepted_and_not_cut_off() {
    let auth = chorus_auth::AuthConfig {
        hmac_secret: Some(crate::common::SECRET.into()),
        api_keys: vec![crate::common::API_KEY.into()],
        leeway: Duration::from_secs(30),
        ..chorus_auth::AuthConfig::default()
    };
    let s = TestServer::start(Options { auth: Some(auth), ..Options::default() }).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let lapsed = s.token_with_exp("alice", &["feed:l"], now - 1);
    let mut c = WsClient::connect(&s.ws_url(Some(&lapsed))).await.expect("accepted within the leeway");
    let connected = c.push().await;
    assert_eq!(connected["type"], "connected");
    // Clients are still told the token's own `exp`.
    let exp_ms = chorus_protocol::timestamp::parse_ms(connected["data"]["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(exp_ms, i64::try_from(now - 1).unwrap() * 1000);
    c.request(json!({"type": "subscribe", "channel": "feed:l"})).await;
    // Across more than one pass of the 1 s expiry sweep, events keep arriving.
    let started = Instant::now();
    let mut n = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        s.publish("feed:l", "publication", json!({"n": n})).await;
        assert_eq!(c.push().await["data"]["n"], n);
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true, "not closed with 4002");
    assert_eq!(s.hub.connection_count(), 1);
    // Without the leeway the same token is refused.
    let strict = TestServer::start(Options::default()).await;
    let lapsed = strict.token_with_exp("alice", &[], now - 1);
    match WsClient::connect(&strict.ws_url(Some(&lapsed))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => assert_eq!(r.status(), 401),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
}
