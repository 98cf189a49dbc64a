//! Tokens at the transport edge: refusals are clear errors, never hangs.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use chorus_auth::{AuthConfig, JwtVerifier, PublicKeyAlgorithm, PublicKeyConfig};
use chorus_core::TokenVerifier;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::common::{API_KEY, Options, SECRET, TestServer, WsClient};

async fn upgrade_status(s: &TestServer, token: &str) -> (u16, Value) {
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

/// Asserts the upgrade is refused 401 `unauthorized` with a message naming `why`.
#[track_caller]
fn assert_unauthorized((status, body): (u16, Value), why: &str) {
    assert_eq!((status, body["error"].as_str()), (401, Some("unauthorized")), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains(why), "message {message:?} does not say {why:?}");
    assert!(body["request_id"].is_string(), "{body}");
}

/// Upgrades with the token in the query string and returns the `connected` push.
async fn connected(s: &TestServer, token: &str) -> (WsClient, Value) {
    let mut c = WsClient::connect(&s.ws_url(Some(token))).await.expect("upgrade");
    let first = c.push().await;
    assert_eq!(first["type"], "connected", "{first}");
    (c, first)
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn now_ms() -> i64 {
    i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

fn fixture_path(name: &str) -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../auth/tests/fixtures")).join(name)
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

/// Claims of a valid token for `user`, expiring in ten minutes.
fn claims(user: &str) -> Value {
    json!({"sub": user, "iat": now(), "exp": now() + 600})
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs256(secret: &[u8], claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(secret), claims)
}

fn rsa_key(private_pem: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture(private_pem).as_bytes()).unwrap()
}

fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(fixture("ed25519-private.pem").as_bytes()).unwrap()
}

/// An `alg: none` token.
fn unsigned(claims: &Value) -> String {
    format!("{}.{}.", b64(&json!({"alg": "none", "typ": "JWT"})), b64(claims))
}

/// A server that accepts only tokens signed by this public key (no HMAC secret).
async fn public_key_server(algorithm: PublicKeyAlgorithm, public_pem: &str) -> TestServer {
    let auth = AuthConfig {
        public_keys: vec![PublicKeyConfig { algorithm, pem: None, pem_file: Some(fixture_path(public_pem)), kid: None }],
        api_keys: vec![API_KEY.into()],
        leeway: Duration::ZERO,
        ..AuthConfig::default()
    };
    TestServer::start(Options { auth: Some(auth), ..Options::default() }).await
}

fn hmac_auth(leeway: Duration) -> AuthConfig {
    AuthConfig { hmac_secret: Some(SECRET.into()), api_keys: vec![API_KEY.into()], leeway, ..AuthConfig::default() }
}

#[tokio::test]
async fn forged_expired_and_unsigned_tokens_are_refused_at_upgrade() {
    let s = TestServer::start(Options::default()).await;
    let good = s.token("alice", &[]);

    // Forged: payload changed, signature kept.
    let parts: Vec<&str> = good.split('.').collect();
    let forged_payload = b64(&json!({"sub": "mallory", "exp": 4_102_444_800u64}));
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert_unauthorized(upgrade_status(&s, &forged).await, "signature");

    // alg: none.
    assert_unauthorized(upgrade_status(&s, &unsigned(&json!({"sub": "mallory", "exp": 4_102_444_800u64}))).await, "none");

    // Expired ten seconds ago (the harness has no leeway).
    let expired = hs256(SECRET.as_bytes(), &json!({"sub": "alice", "iat": now() - 60, "exp": now() - 10}));
    let (status, body) = upgrade_status(&s, &expired).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("token_expired")), "{body}");

    // The good one upgrades.
    let (_c, first) = connected(&s, &good).await;
    assert_eq!(first["user_id"], "alice");
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
async fn an_rs256_server_accepts_its_issuer_and_refuses_algorithm_confusion_other_keys_and_none() {
    let s = public_key_server(PublicKeyAlgorithm::RS256, "rsa-public.pem").await;

    // Signed by the configured key: upgrades, in the query string or as a bearer header.
    let good = sign(Algorithm::RS256, &rsa_key("rsa-private.pem"), &claims("alice"));
    let (_a, first) = connected(&s, &good).await;
    assert_eq!(first["user_id"], "alice");
    let mut b = WsClient::connect_with(&s.ws_url(None), &[("authorization", &format!("Bearer {good}"))]).await.unwrap();
    assert_eq!(b.push().await["type"], "connected");

    // Algorithm confusion: HS256 "signed" with the public key as the HMAC secret,
    // as the PEM file reads and trimmed. Such a token does verify for a server that
    // takes that text as its secret, so it is a real forgery, not noise.
    let pem = fixture("rsa-public.pem");
    for secret in [pem.as_str(), pem.trim()] {
        let confused = hs256(secret.as_bytes(), &claims("mallory"));
        let naive = AuthConfig { hmac_secret: Some(secret.to_owned()), ..AuthConfig::default() };
        let (naive, _) = JwtVerifier::from_config(&naive, &std::env::temp_dir(), std::sync::Arc::new(chorus_clock::SystemClock)).unwrap();
        assert!(naive.verify(&confused).await.is_ok(), "the forged token is well made");
        assert_unauthorized(upgrade_status(&s, &confused).await, "HS256 tokens are not accepted");
    }

    // Signed by another RSA key.
    let other = sign(Algorithm::RS256, &rsa_key("rsa2-private.pem"), &claims("mallory"));
    assert_unauthorized(upgrade_status(&s, &other).await, "signature does not verify");

    // alg: none.
    assert_unauthorized(upgrade_status(&s, &unsigned(&claims("mallory"))).await, "none");

    // The confused token given to `connect` after the upgrade: an error reply, then 4001.
    let confused = hs256(pem.as_bytes(), &claims("mallory"));
    let mut c = WsClient::connect(&s.ws_url(None)).await.unwrap();
    let r = c.request(json!({"type": "connect", "token": confused})).await;
    assert_eq!(r["error"]["error"], "unauthorized", "{r}");
    assert_eq!(c.closed().await.0, 4001);
}

#[tokio::test]
async fn an_eddsa_server_accepts_its_issuer_and_refuses_a_tampered_payload() {
    let s = public_key_server(PublicKeyAlgorithm::EdDSA, "ed25519-public.pem").await;
    let good = sign(Algorithm::EdDSA, &ed_key(), &claims("alice"));
    let (_a, first) = connected(&s, &good).await;
    assert_eq!(first["user_id"], "alice");

    // Same header and signature, another user in the payload.
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&claims("mallory")), parts[2]);
    assert_unauthorized(upgrade_status(&s, &tampered).await, "signature does not verify");
    // Same claims with one more second of life.
    let mut longer = claims("alice");
    longer["exp"] = json!(longer["exp"].as_u64().unwrap() + 1);
    let tampered = format!("{}.{}.{}", parts[0], b64(&longer), parts[2]);
    assert_unauthorized(upgrade_status(&s, &tampered).await, "signature does not verify");

    // Other algorithms are not accepted by an EdDSA-only server, whatever the key.
    let rs = sign(Algorithm::RS256, &rsa_key("rsa-private.pem"), &claims("alice"));
    assert_unauthorized(upgrade_status(&s, &rs).await, "RS256 tokens are not accepted");
    let confused = hs256(fixture("ed25519-public.pem").as_bytes(), &claims("mallory"));
    assert_unauthorized(upgrade_status(&s, &confused).await, "HS256 tokens are not accepted");
}

#[tokio::test]
async fn audience_issuer_and_not_before_are_checked_at_upgrade() {
    let auth = AuthConfig {
        audience: vec!["chorus".into()],
        issuer: Some("https://idp.example".into()),
        ..hmac_auth(Duration::from_secs(5))
    };
    let s = TestServer::start(Options { auth: Some(auth), ..Options::default() }).await;
    let token = |patch: Value| {
        let mut c = json!({"sub": "alice", "iat": now(), "exp": now() + 600, "aud": "chorus", "iss": "https://idp.example"});
        for (k, v) in patch.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        hs256(SECRET.as_bytes(), &c)
    };

    // Right audience and issuer; an audience list naming ours; `nbf` inside the leeway.
    connected(&s, &token(json!({}))).await;
    connected(&s, &token(json!({"aud": ["other", "chorus"]}))).await;
    connected(&s, &token(json!({"nbf": now() + 2}))).await;

    assert_unauthorized(upgrade_status(&s, &token(json!({"aud": "other"}))).await, "audience is not accepted");
    assert_unauthorized(upgrade_status(&s, &token(json!({"aud": ["other", "more"]}))).await, "audience is not accepted");
    assert_unauthorized(upgrade_status(&s, &token(json!({"aud": null}))).await, "no `aud`");
    assert_unauthorized(upgrade_status(&s, &token(json!({"iss": "https://evil.example"}))).await, "issuer is not accepted");
    assert_unauthorized(upgrade_status(&s, &token(json!({"iss": null}))).await, "no `iss`");
    // Not valid for another minute: beyond the five seconds of leeway.
    assert_unauthorized(upgrade_status(&s, &token(json!({"nbf": now() + 60}))).await, "nbf");
    // The harness's own tokens carry neither.
    assert_unauthorized(upgrade_status(&s, &s.token("alice", &[])).await, "no `aud`");
}

#[tokio::test]
async fn an_expiring_token_closes_the_connection_with_4002_unless_refreshed() {
    let s = TestServer::start(Options::default()).await;
    // The refreshed connection's first token expires a second before the other's:
    // when the other is closed, the first has been expired for a second.
    let now = now();
    let kept_token = hs256(SECRET.as_bytes(), &json!({"sub": "alice", "exp": now + 2}));
    let lapsed_token = hs256(SECRET.as_bytes(), &json!({"sub": "alice", "exp": now + 3}));

    let (mut lapsed, _) = connected(&s, &lapsed_token).await;
    let (mut kept, first) = connected(&s, &kept_token).await;
    let old_expiry = chorus_protocol::timestamp::parse_ms(first["data"]["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(old_expiry, i64::try_from(now + 2).unwrap() * 1000, "expires_at is the token's exp");
    let r = kept.request(json!({"type": "refresh", "token": s.token("alice", &[])})).await;
    let new_expiry = chorus_protocol::timestamp::parse_ms(r["result"]["expires_at"].as_str().unwrap_or_default());
    assert!(new_expiry.is_some_and(|t| t > old_expiry + 3_000_000), "{r}");
    let r = kept.request(json!({"type": "refresh", "token": s.token("bob", &[])})).await;
    assert_eq!(r["error"]["error"], "forbidden", "a refresh cannot switch users");

    assert_eq!(lapsed.closed().await.0, 4002);
    assert!(now_ms() >= old_expiry + 1000);
    // The refreshed one outlived its first token by a second at least.
    assert_eq!(kept.request(json!({"type": "ping"})).await["result"]["pong"], true);
}

#[tokio::test]
async fn a_live_connection_closes_at_exp_plus_leeway_not_at_exp() {
    let leeway = Duration::from_secs(2);
    let s = TestServer::start(Options { auth: Some(hmac_auth(leeway)), ..Options::default() }).await;
    let exp = now() + 1;
    let (mut c, first) = connected(&s, &hs256(SECRET.as_bytes(), &json!({"sub": "alice", "exp": exp}))).await;
    let exp_ms = i64::try_from(exp).unwrap() * 1000;
    // Clients are told `exp`, not the leeway-extended deadline.
    assert_eq!(chorus_protocol::timestamp::parse_ms(first["data"]["expires_at"].as_str().unwrap()), Some(exp_ms), "{first}");

    assert_eq!(c.closed().await.0, 4002);
    let closed_ms = now_ms();
    let deadline_ms = exp_ms + i64::try_from(leeway.as_millis()).unwrap();
    assert!(closed_ms >= deadline_ms, "closed {} ms before exp + leeway", deadline_ms - closed_ms);
    // The expiry pass runs every second.
    assert!(closed_ms < deadline_ms + 2000, "closed {} ms after exp + leeway", closed_ms - deadline_ms);
}
