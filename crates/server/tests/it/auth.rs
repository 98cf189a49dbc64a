//! Tokens at the transport edge: refusals are clear errors, never hangs.

use std::time::Duration;

use base64::Engine;
use serde_json::json;

use crate::common::{Options, TestServer, WsClient};

async fn upgrade_status(s: &TestServer, token: &str) -> (u16, serde_json::Value) {
    // A plain GET with upgrade headers shows the HTTP answer to a refused upgrade.
    let res = s
        .http()
        .get(s.url(&format!("/ws?token={token}")))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or_default())
}

fn b64(v: &serde_json::Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

#[tokio::test]
async fn forged_expired_and_unsigned_tokens_are_refused_at_upgrade() {
    let s = TestServer::start(Options::default()).await;
    let good = s.token("alice", &[]);

    // Forged: payload changed, signature kept.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = b64(&json!({"sub": "mallory", "exp": 4_102_444_800u64}));
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    let (status, body) = upgrade_status(&s, &forged).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "unauthorized");
    assert!(body["request_id"].is_string());

    // alg: none.
    let none = format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(&json!({"sub": "mallory", "exp": 4_102_444_800u64})));
    let (status, body) = upgrade_status(&s, &none).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")));

    // Expired.
    // JWT times have one-second resolution: wait until this one is surely past.
    let expired = s.token_ttl("alice", &[], Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = upgrade_status(&s, &expired).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_expired")));

    // The good one upgrades.
    assert!(WsClient::connect(&s.ws_url(Some(&good))).await.is_ok());
}

#[tokio::test]
async fn connect_with_a_bad_token_replies_then_closes_4001() {
    let s = TestServer::start(Options::default()).await;
    let mut c = WsClient::connect(&s.ws_url(None)).await.unwrap();
    let r = c.request(json!({"type": "connect", "token": "not.a.token"})).await;
    assert_eq!(r["error"]["error"], "unauthorized");
    assert_eq!(c.closed().await.0, 4001);
}

#[tokio::test]
async fn another_users_personal_channel_is_forbidden() {
    let s = TestServer::start(Options::default()).await;
    let mut c = s.client("alice", &["user:*"]).await;
    let r = c.request(json!({"type": "subscribe", "channel": "user:bob"})).await;
    assert_eq!(r["error"]["error"], "forbidden");
    let r = c.request(json!({"type": "subscribe", "channel": "room:secret"})).await;
    assert_eq!(r["error"]["error"], "forbidden");
    let r = c.request(json!({"type": "subscribe", "channel": "nowhere:1"})).await;
    assert_eq!(r["error"]["error"], "forbidden");
    let r = c.request(json!({"type": "subscribe", "channel": "user:alice"})).await;
    assert!(r["result"].is_object());
}

#[tokio::test]
async fn an_expiring_token_closes_the_connection_with_4002_unless_refreshed() {
    let s = TestServer::start(Options::default()).await;
    let short = s.token_ttl("alice", &[], Duration::from_secs(2));

    let mut lapsed = WsClient::connect(&s.ws_url(Some(&short))).await.unwrap();
    let mut kept = WsClient::connect(&s.ws_url(Some(&short))).await.unwrap();
    assert_eq!(kept.push().await["type"], "connected");
    let r = kept.request(json!({"type": "refresh", "token": s.token("alice", &[])})).await;
    assert!(r["result"]["expires_at"].is_string(), "{r}");
    let r = kept.request(json!({"type": "refresh", "token": s.token("bob", &[])})).await;
    assert_eq!(r["error"]["error"], "forbidden", "a refresh cannot switch users");

    assert_eq!(lapsed.closed().await.0, 4002);
    // The refreshed one outlived the first token.
    assert_eq!(kept.request(json!({"type": "ping"})).await["result"]["pong"], true);
}
