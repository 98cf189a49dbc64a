//! Protocol v1 frames: replies, pushes, and every kind of bad input.

use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Options, TestServer};

#[tokio::test]
async fn replies_carry_the_command_id_and_pushes_carry_none() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &["room:a"]).await;
    let r = c.request(json!({"type": "ping"})).await;
    assert_eq!(r["result"]["pong"], true);
    assert!(r["id"].is_u64());
    let r = c.request(json!({"type": "subscribe", "channel": "room:a"})).await;
    assert_eq!(r["result"]["channel"], "room:a");
    assert!(r["result"]["epoch"].is_string());
    assert_eq!(s.publish("room:a", "publication", json!({"n": 1})).await.0, 200);
    let p = c.push_of("publication").await;
    assert!(p.get("id").is_none());
    assert_eq!(p["channel"], "room:a");
    assert_eq!(p["data"]["n"], 1);
    assert!(p["offset"].as_u64().unwrap() >= 1);
    assert!(p["epoch"].is_string());
    assert!(chorus_protocol::timestamp::parse_ms(p["timestamp"].as_str().unwrap()).is_some());
}

#[tokio::test]
async fn connect_command_authenticates_a_bare_socket() {
    let s = TestServer::start(Options::default()).await;
    let mut c = crate::common::WsClient::connect(&s.ws_url(None)).await.unwrap();
    let r = c.request(json!({"type": "subscribe", "channel": "user:bob"})).await;
    assert_eq!(r["error"]["error"], "unauthorized");
    let r = c.request(json!({"type": "ping"})).await;
    assert_eq!(r["result"]["pong"], true, "ping works before connect");
    let r = c.request(json!({"type": "connect", "token": s.token("bob", &[])})).await;
    assert_eq!(r["result"]["user_id"], "bob");
    assert_eq!(r["result"]["protocol_version"], 1);
    assert!(r["result"]["connection_id"].is_string());
    let r = c.request(json!({"type": "subscribe", "channel": "user:bob"})).await;
    assert!(r["result"].is_object(), "{r}");
    let r = c.request(json!({"type": "connect", "token": s.token("bob", &[])})).await;
    assert_eq!(r["error"]["error"], "conflict");
}

#[tokio::test]
async fn no_connect_in_time_closes_with_4001() {
    let mut opts = Options::default();
    opts.timing.connect_timeout = std::time::Duration::from_millis(300);
    let s = TestServer::start(opts).await;
    let mut c = crate::common::WsClient::connect(&s.ws_url(None)).await.unwrap();
    assert_eq!(c.closed().await.0, 4001);
}

#[tokio::test]
async fn malformed_input_gets_error_replies_and_the_connection_stays() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &[]).await;

    c.send_text("{not json").await;
    let r = c.reply(None).await;
    assert_eq!(r["error"]["error"], "malformed_json");
    assert!(r["error"]["request_id"].is_string());
    assert!(r["error"]["timestamp"].is_string());
    assert!(r["error"]["message"].as_str().unwrap().contains("JSON"));

    c.send_text(r#"{"id": 41, "type": "teleport"}"#).await;
    let r = c.reply(Some(41)).await;
    assert_eq!(r["error"]["error"], "unknown_command");

    c.send_text(r#"{"id": 42, "type": "subscribe", "channel": 17}"#).await;
    let r = c.reply(Some(42)).await;
    assert_eq!(r["error"]["error"], "invalid_field");
    assert!(r["error"]["message"].as_str().unwrap().starts_with("channel"), "{r}");

    c.send_text(r#"{"id": "x", "type": "ping"}"#).await;
    assert_eq!(c.reply(None).await["error"]["error"], "bad_request");

    c.send_text(r#"[1,2,3]"#).await;
    assert_eq!(c.reply(None).await["error"]["error"], "bad_request");

    // Still alive.
    assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true);
}

#[tokio::test]
async fn oversize_frames_get_an_error_with_their_id_and_huge_ones_close_1009() {
    let mut opts = Options::default();
    opts.limits.frame_bytes = 1024;
    opts.limits.frame_hard_cap_bytes = 16 * 1024;
    let s = TestServer::start(opts).await;
    let mut c = s.client("alice", &["chat:x"]).await;
    let big = format!(r#"{{"id": 77, "type": "publish", "channel": "chat:x", "data": {{"pad": "{}"}}}}"#, "x".repeat(2000));
    c.send_text(big).await;
    let r = c.reply(Some(77)).await;
    assert_eq!(r["error"]["error"], "frame_too_large");
    assert_eq!(c.request(json!({"type": "ping"})).await["result"]["pong"], true);
    c.send_text("x".repeat(20 * 1024)).await;
    assert_eq!(c.closed().await.0, 1009);
}

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &[]).await;
    c.send_message(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(c.closed().await.0, 1003);
}

#[tokio::test]
async fn repeated_malformed_frames_close_with_4000() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &[]).await;
    for _ in 0..30 {
        c.send_text("garbage").await;
    }
    let mut errors = 0;
    let code = loop {
        match c.frame_or_close().await {
            Ok(v) => {
                assert_eq!(v["error"]["error"], "malformed_json");
                errors += 1;
            }
            Err(code) => break code,
        }
    };
    assert_eq!(code, 4000);
    assert!((20..=21).contains(&errors), "a burst of 20 malformed frames is answered, then the connection closes ({errors})");
}

#[tokio::test]
async fn flooding_past_the_frame_rate_is_refused_then_closed_with_4007() {
    let mut opts = Options::default();
    // A refill too slow to matter while the test runs, so the count is exact.
    opts.rates.frames_per_second = 0.01;
    opts.rates.frames_burst = 5;
    opts.rates.flood_strikes = 10;
    let s = TestServer::start(opts).await;
    let mut c = s.client("alice", &[]).await;
    for i in 0..40u64 {
        c.send_text(json!({"id": i, "type": "ping"}).to_string()).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    let code = loop {
        match tokio::time::timeout(crate::common::WAIT, c.frame_or_close()).await.expect("no close") {
            Ok(v) if v["result"]["pong"] == true => pongs += 1,
            Ok(v) if v["error"]["error"] == "rate_limited" => limited += 1,
            Ok(v) => panic!("unexpected {v}"),
            Err(code) => break code,
        }
    };
    assert_eq!(code, 4007);
    assert_eq!(pongs, 5, "the burst is served");
    assert_eq!(limited, 9, "refusals are answered until the strike limit closes the connection");
}

#[tokio::test]
async fn repeated_oversize_frames_are_answered_then_closed_with_4000() {
    let mut opts = Options::default();
    opts.limits.frame_bytes = 1024;
    opts.limits.frame_hard_cap_bytes = 16 * 1024;
    let s = TestServer::start(opts).await;
    let mut c = s.client("alice", &[]).await;
    let pad = "x".repeat(2000);
    for id in 0..30u64 {
        c.send_text(format!(r#"{{"id": {id}, "type": "ping", "pad": "{pad}"}}"#)).await;
    }
    let mut answered = 0u64;
    let code = loop {
        match c.frame_or_close().await {
            Ok(v) => {
                assert_eq!(v["error"]["error"], "frame_too_large", "{v}");
                assert_eq!(v["id"], answered, "each refusal carries its frame's id, in order");
                answered += 1;
            }
            Err(code) => break code,
        }
    };
    assert_eq!(code, 4000);
    assert!((20..=21).contains(&answered), "the malformed-frame burst (20) is answered, then the connection closes ({answered})");
}
