//! Key sets: from a URL (served by a tiny local HTTP server) and from a file.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use chorus_auth::{AuthConfig, AuthConfigError, JwtVerifier, MAX_JWKS_KEYS};
use chorus_core::{Identity, TokenError, TokenVerifier};
use jsonwebtoken::Algorithm;
use serde_json::json;

use crate::common::*;

fn jwks_config(url: &str, refresh: Duration, min_refetch: Duration) -> AuthConfig {
    AuthConfig { jwks_url: Some(url.to_owned()), jwks_refresh: refresh, jwks_min_refetch: min_refetch, ..AuthConfig::default() }
}

const LONG: Duration = Duration::from_secs(3600);

fn rs(private: &str, kid: &str, user: &str) -> String {
    sign(Algorithm::RS256, private, Some(kid), &claims(user))
}

#[track_caller]
fn assert_invalid(result: Result<Identity, TokenError>, needle: &str) {
    match result {
        Err(TokenError::Invalid(reason)) => assert!(reason.contains(needle), "reason {reason:?} does not mention {needle:?}"),
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn verifies_with_fetched_keys_and_caches_them() {
    let server = JwksServer::start(vec![rsa_jwk("rsa-private.pem", "r1"), ed25519_jwk("e1")]).await;
    let v = verifier(&jwks_config(&server.url, LONG, LONG));
    assert_eq!(server.hits(), 0, "nothing is fetched before the first token");

    assert_eq!(v.verify(&rs("rsa-private.pem", "r1", "ann")).await.unwrap().user_id.as_str(), "ann");
    let ed = sign(Algorithm::EdDSA, "ed25519-private.pem", Some("e1"), &claims("bea"));
    assert_eq!(v.verify(&ed).await.unwrap().user_id.as_str(), "bea");
    // No kid: every key of the algorithm is tried.
    assert!(v.verify(&sign(Algorithm::RS256, "rsa-private.pem", None, &claims("cy"))).await.is_ok());
    for _ in 0..5 {
        assert!(v.verify(&rs("rsa-private.pem", "r1", "ann")).await.is_ok());
    }
    assert_eq!(server.hits(), 1, "the key set is cached");

    // A kid that exists with a key that did not sign: bad signature, no refetch.
    assert_invalid(v.verify(&rs("rsa2-private.pem", "r1", "eve")).await, "signature");
    // An HS256 token is never checked against the key set.
    assert_invalid(v.verify(&hs256(b"whatever-secret-0123456789abcdef-xyz", &claims("eve"))).await, "HS256 tokens are not accepted");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn rotation_is_picked_up_by_refetch_on_unknown_kid() {
    let server = JwksServer::start(vec![rsa_jwk("rsa-private.pem", "old")]).await;
    let v = verifier(&jwks_config(&server.url, LONG, Duration::from_millis(200)));
    assert!(v.verify(&rs("rsa-private.pem", "old", "u")).await.is_ok());
    assert_eq!(server.hits(), 1);

    // The provider rotates: a new key appears, the old one goes.
    server.set_keys(vec![rsa_jwk("rsa2-private.pem", "new")]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let id = v.verify(&rs("rsa2-private.pem", "new", "u")).await.unwrap();
    assert_eq!(id.user_id.as_str(), "u");
    assert_eq!(server.hits(), 2);
    // The refetched set replaced the cache: the old kid is gone.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_invalid(v.verify(&rs("rsa-private.pem", "old", "u")).await, "no RS256 key with id `old`");
    assert_eq!(server.hits(), 3);
}

#[tokio::test]
async fn unknown_kid_refetches_are_rate_limited() {
    let server = JwksServer::start(vec![rsa_jwk("rsa-private.pem", "r1")]).await;
    let v = verifier(&jwks_config(&server.url, LONG, LONG));
    assert!(v.verify(&rs("rsa-private.pem", "r1", "u")).await.is_ok());
    server.set_keys(vec![rsa_jwk("rsa-private.pem", "r1"), rsa_jwk("rsa2-private.pem", "r2")]);
    // Within the minimum interval: no fetch, however many forged kids arrive.
    for i in 0..20 {
        assert_invalid(v.verify(&rs("rsa2-private.pem", &format!("forged-{i}"), "u")).await, "no RS256 key with id");
    }
    assert_invalid(v.verify(&rs("rsa2-private.pem", "r2", "u")).await, "no RS256 key with id `r2`");
    assert_eq!(server.hits(), 1);
}

#[tokio::test]
async fn stale_keys_are_refreshed_in_the_background() {
    let server = JwksServer::start(vec![rsa_jwk("rsa-private.pem", "r1")]).await;
    let v = verifier(&jwks_config(&server.url, Duration::from_millis(200), LONG));
    assert!(v.verify(&rs("rsa-private.pem", "r1", "u")).await.is_ok());
    server.set_keys(vec![rsa_jwk("rsa2-private.pem", "r2")]);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Stale keys still answer while the refresh runs, then the new set takes over.
    let mut refreshed = false;
    for _ in 0..250 {
        match v.verify(&rs("rsa-private.pem", "r1", "u")).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(TokenError::Invalid(_)) => {
                refreshed = true;
                break;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(refreshed, "the key set was not refreshed");
    assert!(server.hits() >= 2);
    assert!(v.verify(&rs("rsa2-private.pem", "r2", "u")).await.is_ok());
}

#[tokio::test]
async fn fetch_failure_without_cached_keys_is_unavailable() {
    let server = JwksServer::start(vec![]).await;
    server.set(StatusCode::INTERNAL_SERVER_ERROR, "oops");
    let config = AuthConfig { hmac_secret: Some(SECRET.into()), ..jwks_config(&server.url, LONG, Duration::ZERO) };
    let v = verifier(&config);
    assert!(matches!(v.verify(&rs("rsa-private.pem", "r1", "u")).await, Err(TokenError::Unavailable(_))));
    assert!(matches!(v.refresh_jwks().await, Err(TokenError::Unavailable(_))));
    // HS256 keeps working while the identity provider is down.
    assert!(v.verify(&hs256(SECRET.as_bytes(), &claims("u"))).await.is_ok());

    // Garbage, or a set without a usable signing key, is a failure too.
    for body in [
        "not json".to_owned(),
        json!({"nokeys": []}).to_string(),
        json!({"keys": [{"kty": "oct", "k": b64(SECRET.as_bytes())}]}).to_string(),
    ] {
        server.set(StatusCode::OK, body.clone());
        assert!(matches!(v.verify(&rs("rsa-private.pem", "r1", "u")).await, Err(TokenError::Unavailable(_))), "{body}");
    }

    // Recovery.
    server.set_keys(vec![rsa_jwk("rsa-private.pem", "r1")]);
    assert!(v.verify(&rs("rsa-private.pem", "r1", "u")).await.is_ok());

    // Nothing listening at all.
    let down = verifier(&jwks_config(&dead_url().await, LONG, LONG));
    let e = down.verify(&rs("rsa-private.pem", "r1", "u")).await.unwrap_err();
    assert!(matches!(e, TokenError::Unavailable(_)), "{e:?}");
}

#[tokio::test]
async fn cached_keys_survive_a_failing_provider() {
    let server = JwksServer::start(vec![rsa_jwk("rsa-private.pem", "r1")]).await;
    let v = verifier(&jwks_config(&server.url, Duration::from_millis(100), LONG));
    assert!(v.verify(&rs("rsa-private.pem", "r1", "u")).await.is_ok());
    server.set(StatusCode::SERVICE_UNAVAILABLE, "down");
    tokio::time::sleep(Duration::from_millis(150)).await;
    // Triggers a background refresh that fails; the cached key keeps working.
    for _ in 0..10 {
        assert!(v.verify(&rs("rsa-private.pem", "r1", "u")).await.is_ok());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A kid we do not have, while the provider is failing: it may exist
    // upstream. (Polled: the failed refresh runs in the background.)
    let mut unavailable = false;
    for _ in 0..250 {
        match v.verify(&rs("rsa2-private.pem", "r2", "u")).await {
            Err(TokenError::Unavailable(_)) => {
                unavailable = true;
                break;
            }
            Err(TokenError::Invalid(_)) => tokio::time::sleep(Duration::from_millis(20)).await,
            other => panic!("{other:?}"),
        }
    }
    assert!(unavailable);
    assert_eq!(server.hits(), 2, "one failed refresh, then backing off");
}

#[tokio::test]
async fn symmetric_keys_from_a_key_set_are_never_used() {
    // An attacker-controlled or careless key set that publishes an `oct` key
    // next to a real one: HS256 tokens made with it are refused.
    let oct = json!({"kty": "oct", "k": b64(b"published-secret-0123456789abcdef"), "kid": "sym", "alg": "HS256"});
    let server = JwksServer::start(vec![rsa_jwk("rsa-private.pem", "r1"), oct]).await;
    let v = verifier(&jwks_config(&server.url, LONG, LONG));
    assert!(v.verify(&rs("rsa-private.pem", "r1", "u")).await.is_ok());
    let token = jsonwebtoken::encode(
        &header(Algorithm::HS256, Some("sym")),
        &claims("mallory"),
        &jsonwebtoken::EncodingKey::from_secret(b"published-secret-0123456789abcdef"),
    )
    .unwrap();
    assert_invalid(v.verify(&token).await, "HS256 tokens are not accepted");
}

#[tokio::test]
async fn the_number_of_cached_keys_is_bounded() {
    let keys: Vec<_> = (0..MAX_JWKS_KEYS + 6).map(|i| rsa_jwk("rsa-private.pem", &format!("k{i}"))).collect();
    let server = JwksServer::start(keys).await;
    let v = verifier(&jwks_config(&server.url, LONG, LONG));
    assert_eq!(v.refresh_jwks().await, Ok(MAX_JWKS_KEYS));
    assert!(v.verify(&rs("rsa-private.pem", &format!("k{}", MAX_JWKS_KEYS - 1), "u")).await.is_ok());
    assert_invalid(v.verify(&rs("rsa-private.pem", &format!("k{}", MAX_JWKS_KEYS), "u")).await, "no RS256 key with id");
}

#[tokio::test]
async fn unsupported_entries_are_skipped() {
    let server = JwksServer::start(vec![
        json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB", "kid": "enc"}),
        json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA", "kid": "p384"}),
        json!({"kty": "OKP", "crv": "X25519", "x": "AA", "kid": "x25519"}),
        {
            let mut k = rsa_jwk("rsa2-private.pem", "ps");
            k["alg"] = json!("PS256");
            k
        },
        json!({"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"}),
        rsa_jwk("rsa-private.pem", "good"),
    ])
    .await;
    let v = verifier(&jwks_config(&server.url, LONG, LONG));
    assert_eq!(v.refresh_jwks().await, Ok(1));
    assert!(v.verify(&rs("rsa-private.pem", "good", "u")).await.is_ok());
    // The PS256-only key is not used for RS256 either.
    assert_invalid(v.verify(&rs("rsa2-private.pem", "ps", "u")).await, "no RS256 key with id `ps`");
}

#[tokio::test]
async fn key_set_from_a_file() {
    let tmp = TempDir::new();
    let path = tmp.path().join("jwks.json");
    let ec = {
        let key = jsonwebtoken::EncodingKey::from_ec_pem(fixture("ec-private.pem").as_bytes()).unwrap();
        let mut v = serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap()).unwrap();
        v["kid"] = json!("ec1");
        v
    };
    std::fs::write(&path, json!({"keys": [rsa_jwk("rsa-private.pem", "f1"), ed25519_jwk("f2"), ec]}).to_string()).unwrap();
    let config = AuthConfig { jwks_file: Some(path.clone()), ..AuthConfig::default() };
    let (v, origin) = JwtVerifier::from_config(&config, tmp.path(), Arc::new(SystemClock)).unwrap();
    assert_eq!(origin, None, "no secret is generated when a key set is configured");
    assert!(v.verify(&rs("rsa-private.pem", "f1", "u")).await.is_ok());
    assert!(v.verify(&sign(Algorithm::EdDSA, "ed25519-private.pem", Some("f2"), &claims("u"))).await.is_ok());
    assert!(v.verify(&sign(Algorithm::ES256, "ec-private.pem", Some("ec1"), &claims("u"))).await.is_ok());
    assert_invalid(v.verify(&rs("rsa-private.pem", "f9", "u")).await, "no RS256 key with id `f9`");

    std::fs::write(&path, json!({"keys": [{"kty": "oct", "k": "AAAA"}]}).to_string()).unwrap();
    assert!(matches!(JwtVerifier::from_config(&config, tmp.path(), Arc::new(SystemClock)), Err(AuthConfigError::JwksFile { .. })));
    std::fs::write(&path, "{").unwrap();
    assert!(matches!(JwtVerifier::from_config(&config, tmp.path(), Arc::new(SystemClock)), Err(AuthConfigError::JwksFile { .. })));
}
