//! Token verification with configured keys.

use std::sync::Arc;
use std::time::Duration;

use chorus_auth::{
    AuthConfig, AuthConfigError, HmacSecret, JwtVerifier, MAX_TOKEN_LEN, MintRequest, PublicKeyAlgorithm, PublicKeyConfig, mint_token,
};
use chorus_core::{TokenError, TokenVerifier};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::common::*;

fn public_keys_config(keys: Vec<PublicKeyConfig>) -> AuthConfig {
    AuthConfig { public_keys: keys, ..AuthConfig::default() }
}

#[track_caller]
fn assert_invalid(result: Result<chorus_core::Identity, TokenError>, needle: &str) {
    match result {
        Err(TokenError::Invalid(reason)) => assert!(reason.contains(needle), "reason {reason:?} does not mention {needle:?}"),
        other => panic!("expected Invalid({needle}), got {other:?}"),
    }
}

#[tokio::test]
async fn hs256_minted_token_round_trips() {
    let v = verifier(&hmac_config());
    let token = mint_token(
        &HmacSecret::new(SECRET),
        &MintRequest {
            user: "alice@example.com".into(),
            ttl: Duration::from_secs(3600),
            channels: vec!["room:*".into(), "user:alice@example.com".into()],
            audience: None,
            issuer: None,
            session_id: Some("sess-1".into()),
        },
        &SystemClock,
    )
    .unwrap();
    let id = v.verify(&token).await.unwrap();
    assert_eq!(id.user_id.as_str(), "alice@example.com");
    assert_eq!(id.grants, vec!["room:*".to_owned(), "user:alice@example.com".to_owned()]);
    assert_eq!(id.session_id.as_deref(), Some("sess-1"));
    let exp = id.expires_at_ms.unwrap();
    let expected = (now() as i64 + 3600) * 1000;
    assert!((exp - expected).abs() <= 2000, "exp {exp} vs {expected}");
}

#[tokio::test]
async fn minted_audience_and_issuer_are_checked() {
    let config = AuthConfig { audience: vec!["chorus".into()], issuer: Some("https://me".into()), ..hmac_config() };
    let v = verifier(&config);
    let req = |aud: &str, iss: &str| MintRequest {
        user: "u1".into(),
        ttl: Duration::from_secs(60),
        audience: Some(aud.into()),
        issuer: Some(iss.into()),
        ..MintRequest::default()
    };
    let secret = HmacSecret::new(SECRET);
    assert!(v.verify(&mint_token(&secret, &req("chorus", "https://me"), &SystemClock).unwrap()).await.is_ok());
    assert_invalid(v.verify(&mint_token(&secret, &req("other", "https://me"), &SystemClock).unwrap()).await, "audience");
    assert_invalid(v.verify(&mint_token(&secret, &req("chorus", "https://evil"), &SystemClock).unwrap()).await, "issuer");
}

#[test]
fn mint_refuses_what_the_verifier_would_refuse() {
    let secret = HmacSecret::new(SECRET);
    let ok = MintRequest { user: "bob".into(), ttl: Duration::from_secs(60), ..MintRequest::default() };
    assert!(mint_token(&secret, &ok, &SystemClock).is_ok());
    assert!(mint_token(&secret, &MintRequest { user: "bob smith".into(), ..ok.clone() }, &SystemClock).is_err());
    assert!(mint_token(&secret, &MintRequest { channels: vec!["*".into()], ..ok.clone() }, &SystemClock).is_err());
    assert!(mint_token(&secret, &MintRequest { ttl: Duration::ZERO, ..ok.clone() }, &SystemClock).is_err());
    assert!(mint_token(&HmacSecret::new(""), &ok, &SystemClock).is_err());
}

#[tokio::test]
async fn asymmetric_algorithms_verify() {
    let config = public_keys_config(vec![
        public_key(PublicKeyAlgorithm::RS256, "rsa-public.pem", None),
        public_key(PublicKeyAlgorithm::EdDSA, "ed25519-public.pem", None),
        public_key(PublicKeyAlgorithm::ES256, "ec-public.pem", None),
    ]);
    let v = verifier(&config);
    for (alg, private) in
        [(Algorithm::RS256, "rsa-private.pem"), (Algorithm::EdDSA, "ed25519-private.pem"), (Algorithm::ES256, "ec-private.pem")]
    {
        let token = sign(alg, private, None, &claims("carol"));
        let id = v.verify(&token).await.unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(id.user_id.as_str(), "carol");
        assert_eq!(id.grants, vec!["room:*".to_owned()]);
    }
    // Inline PEM works like pem_file.
    let inline = public_keys_config(vec![PublicKeyConfig {
        algorithm: PublicKeyAlgorithm::EdDSA,
        pem: Some(fixture("ed25519-public.pem")),
        pem_file: None,
        kid: None,
    }]);
    assert!(verifier(&inline).verify(&sign(Algorithm::EdDSA, "ed25519-private.pem", None, &claims("c"))).await.is_ok());
}

#[tokio::test]
async fn forged_and_tampered_tokens_are_refused() {
    let v = verifier(&AuthConfig { public_keys: vec![public_key(PublicKeyAlgorithm::RS256, "rsa-public.pem", None)], ..hmac_config() });
    for token in [hs256(SECRET.as_bytes(), &claims("dave")), sign(Algorithm::RS256, "rsa-private.pem", None, &claims("dave"))] {
        assert!(v.verify(&token).await.is_ok());
        let (signing_input, signature) = token.rsplit_once('.').unwrap();
        // Flip one character in the middle of the signature.
        let mut sig: Vec<u8> = signature.bytes().collect();
        let mid = sig.len() / 2;
        sig[mid] = if sig[mid] == b'A' { b'B' } else { b'A' };
        let forged = format!("{signing_input}.{}", String::from_utf8(sig).unwrap());
        assert_invalid(v.verify(&forged).await, "signature");

        // Same signature, different payload.
        let (header, _) = signing_input.split_once('.').unwrap();
        let tampered = format!("{header}.{}.{signature}", b64(claims("admin").to_string().as_bytes()));
        assert_invalid(v.verify(&tampered).await, "signature");
    }
}

#[tokio::test]
async fn wrong_keys_are_refused() {
    let v = verifier(&AuthConfig {
        public_keys: vec![
            public_key(PublicKeyAlgorithm::RS256, "rsa-public.pem", None),
            public_key(PublicKeyAlgorithm::EdDSA, "ed25519-public.pem", None),
        ],
        ..hmac_config()
    });
    assert_invalid(v.verify(&hs256(b"another-secret-0123456789abcdef-xyz", &claims("e"))).await, "signature");
    assert_invalid(v.verify(&sign(Algorithm::RS256, "rsa2-private.pem", None, &claims("e"))).await, "signature");
    // A valid ES256 token, but no ES256 key is configured.
    assert_invalid(v.verify(&sign(Algorithm::ES256, "ec-private.pem", None, &claims("e"))).await, "ES256 tokens are not accepted");
}

#[tokio::test]
async fn time_claims() {
    let v = verifier(&hmac_config());
    let t = now();
    let token = |c: serde_json::Value| hs256(SECRET.as_bytes(), &c);
    assert_eq!(v.verify(&token(json!({"sub": "f", "exp": t - 120}))).await, Err(TokenError::Expired));
    // Within the default 30 s leeway.
    assert!(v.verify(&token(json!({"sub": "f", "exp": t - 5}))).await.is_ok());
    assert_invalid(v.verify(&token(json!({"sub": "f", "exp": t + 600, "nbf": t + 300}))).await, "nbf");
    assert!(v.verify(&token(json!({"sub": "f", "exp": t + 600, "nbf": t + 5}))).await.is_ok());
    assert_invalid(v.verify(&token(json!({"sub": "f"}))).await, "exp");
    assert_invalid(v.verify(&token(json!({"sub": "f", "exp": "tomorrow"}))).await, "exp");

    let strict = verifier(&AuthConfig { leeway: Duration::ZERO, ..hmac_config() });
    assert_eq!(strict.verify(&token(json!({"sub": "f", "exp": t - 5}))).await, Err(TokenError::Expired));

    let lax = verifier(&AuthConfig { require_exp: false, ..hmac_config() });
    let id = lax.verify(&token(json!({"sub": "f"}))).await.unwrap();
    assert_eq!(id.expires_at_ms, None);
    // An exp that is present is still enforced.
    assert_eq!(lax.verify(&token(json!({"sub": "f", "exp": t - 120}))).await, Err(TokenError::Expired));
}

#[tokio::test]
async fn audience_and_issuer() {
    let v = verifier(&AuthConfig {
        audience: vec!["chorus".into(), "chat".into()],
        issuer: Some("https://idp.example".into()),
        ..hmac_config()
    });
    let t = now() + 600;
    let token = |c: serde_json::Value| hs256(SECRET.as_bytes(), &c);
    assert!(v.verify(&token(json!({"sub": "g", "exp": t, "aud": "chat", "iss": "https://idp.example"}))).await.is_ok());
    assert!(v.verify(&token(json!({"sub": "g", "exp": t, "aud": ["x", "chorus"], "iss": "https://idp.example"}))).await.is_ok());
    assert_invalid(v.verify(&token(json!({"sub": "g", "exp": t, "aud": "other", "iss": "https://idp.example"}))).await, "audience");
    assert_invalid(v.verify(&token(json!({"sub": "g", "exp": t, "iss": "https://idp.example"}))).await, "aud");
    assert_invalid(v.verify(&token(json!({"sub": "g", "exp": t, "aud": "chorus", "iss": "https://evil.example"}))).await, "issuer");
    assert_invalid(v.verify(&token(json!({"sub": "g", "exp": t, "aud": "chorus"}))).await, "iss");
}

#[tokio::test]
async fn alg_none_is_refused() {
    let v = verifier(&AuthConfig { public_keys: vec![public_key(PublicKeyAlgorithm::RS256, "rsa-public.pem", None)], ..hmac_config() });
    for alg in ["none", "None", "NONE"] {
        let unsigned = hand_token(&json!({"alg": alg, "typ": "JWT"}), &claims("mallory"), "");
        assert_invalid(v.verify(&unsigned).await, "alg: none");
        // With some signature bytes attached, too.
        let with_sig = hand_token(&json!({"alg": alg}), &claims("mallory"), &b64(b"whatever"));
        assert_invalid(v.verify(&with_sig).await, "alg: none");
    }
    // Unknown or unsupported algorithms.
    let hs512 = jsonwebtoken::encode(&Header::new(Algorithm::HS512), &claims("m"), &EncodingKey::from_secret(SECRET.as_bytes())).unwrap();
    assert_invalid(v.verify(&hs512).await, "HS512");
    assert_invalid(v.verify(&hand_token(&json!({"alg": "XY999"}), &claims("m"), "c2ln")).await, "XY999");
    assert_invalid(v.verify(&hand_token(&json!({"typ": "JWT"}), &claims("m"), "c2ln")).await, "alg");
    assert_invalid(v.verify(&hand_token(&json!({"alg": 5}), &claims("m"), "c2ln")).await, "alg");
}

#[tokio::test]
async fn algorithm_confusion_is_refused() {
    for (alg, public, name) in [
        (PublicKeyAlgorithm::RS256, "rsa-public.pem", "RS256"),
        (PublicKeyAlgorithm::EdDSA, "ed25519-public.pem", "EdDSA"),
        (PublicKeyAlgorithm::ES256, "ec-public.pem", "ES256"),
    ] {
        let pem = fixture(public);
        // The attack: an HS256 token whose HMAC key is the public key's PEM text.
        let forged = hs256(pem.as_bytes(), &claims("mallory"));
        // The token is well-formed: a server that really used this PEM text
        // as its HMAC secret would accept it, so the refusals below are real.
        let naive = verifier(&AuthConfig { hmac_secret: Some(pem.clone()), ..AuthConfig::default() });
        assert!(naive.verify(&forged).await.is_ok(), "{name}: the attack token is malformed");

        // Only the public key configured: HS256 is not accepted at all.
        let v = verifier(&public_keys_config(vec![public_key(alg, public, None)]));
        assert_invalid(v.verify(&forged).await, "HS256 tokens are not accepted");
        // The public key still verifies tokens of its own algorithm.
        let own = match alg {
            PublicKeyAlgorithm::RS256 => sign(Algorithm::RS256, "rsa-private.pem", None, &claims("ok")),
            PublicKeyAlgorithm::EdDSA => sign(Algorithm::EdDSA, "ed25519-private.pem", None, &claims("ok")),
            PublicKeyAlgorithm::ES256 => sign(Algorithm::ES256, "ec-private.pem", None, &claims("ok")),
        };
        assert!(v.verify(&own).await.is_ok(), "{name}");

        // Public key and an HMAC secret: HS256 checks the secret only.
        let both = verifier(&AuthConfig { public_keys: vec![public_key(alg, public, None)], ..hmac_config() });
        assert_invalid(both.verify(&forged).await, "signature");
        // Same with a kid that names the public key.
        let both_kid = verifier(&AuthConfig { public_keys: vec![public_key(alg, public, Some("pk"))], ..hmac_config() });
        let forged_kid =
            jsonwebtoken::encode(&header(Algorithm::HS256, Some("pk")), &claims("mallory"), &EncodingKey::from_secret(pem.as_bytes()))
                .unwrap();
        assert_invalid(both_kid.verify(&forged_kid).await, "signature");
    }
}

#[tokio::test]
async fn kid_selects_the_key() {
    let v = verifier(&public_keys_config(vec![
        public_key(PublicKeyAlgorithm::RS256, "rsa-public.pem", Some("k1")),
        public_key(PublicKeyAlgorithm::RS256, "rsa2-public.pem", Some("k2")),
    ]));
    assert!(v.verify(&sign(Algorithm::RS256, "rsa-private.pem", Some("k1"), &claims("h"))).await.is_ok());
    assert!(v.verify(&sign(Algorithm::RS256, "rsa2-private.pem", Some("k2"), &claims("h"))).await.is_ok());
    // No kid: every RS256 key is a candidate.
    assert!(v.verify(&sign(Algorithm::RS256, "rsa2-private.pem", None, &claims("h"))).await.is_ok());
    // A kid naming the other key.
    assert_invalid(v.verify(&sign(Algorithm::RS256, "rsa2-private.pem", Some("k1"), &claims("h"))).await, "signature");
    // An unknown kid.
    assert_invalid(v.verify(&sign(Algorithm::RS256, "rsa-private.pem", Some("k3"), &claims("h"))).await, "no RS256 key with id `k3`");
}

#[tokio::test]
async fn malformed_tokens() {
    let v = verifier(&hmac_config());
    let good = hs256(SECRET.as_bytes(), &claims("i"));
    let (h, rest) = good.split_once('.').unwrap();
    for (token, needle) in [
        (String::new(), "empty"),
        ("abc".to_owned(), "not a JWT"),
        ("a.b".to_owned(), "not a JWT"),
        (format!("{good}.x"), "not a JWT"),
        ("a.b.c.d.e".to_owned(), "JWE"),
        (format!("!!!.{rest}"), "header is not base64url"),
        (format!("{}.{rest}", b64(b"[1,2]")), "header is not a JSON object"),
        (format!("{h}.{}.", rest.split_once('.').unwrap().0), "no signature"),
        (format!("{h}.{}.***", rest.split_once('.').unwrap().0), "signature is not base64url"),
        (hand_token(&json!({"alg": "HS256", "crit": ["exp"]}), &claims("i"), "c2ln"), "critical"),
        (hand_token(&json!({"alg": "HS256", "kid": 7}), &claims("i"), "c2ln"), "kid"),
        ("x".repeat(MAX_TOKEN_LEN + 1), "longer than"),
    ] {
        assert_invalid(v.verify(&token).await, needle);
    }
    // A correctly signed payload that is not a JSON object.
    let header = b64(json!({"alg": "HS256"}).to_string().as_bytes());
    let payload = b64(b"[\"not\", \"an object\"]");
    let signing_input = format!("{header}.{payload}");
    let sig = jsonwebtoken::crypto::sign(signing_input.as_bytes(), &EncodingKey::from_secret(SECRET.as_bytes()), Algorithm::HS256).unwrap();
    assert_invalid(v.verify(&format!("{signing_input}.{sig}")).await, "payload is not a JSON object");
}

#[tokio::test]
async fn user_id_charset() {
    let v = verifier(&hmac_config());
    let t = now() + 600;
    for bad in ["alice bob", "a/b", "a|b", "", "ünïcode", "semi;colon", &"x".repeat(129)] {
        assert_invalid(v.verify(&hs256(SECRET.as_bytes(), &json!({"sub": bad, "exp": t}))).await, "user id");
    }
    assert_invalid(v.verify(&hs256(SECRET.as_bytes(), &json!({"exp": t}))).await, "user id");
    assert_invalid(v.verify(&hs256(SECRET.as_bytes(), &json!({"sub": true, "exp": t}))).await, "user id");
    for good in ["a", "auth0:abc123", "alice@example.com", "A.B_C-D", &"x".repeat(128)] {
        let id = v.verify(&hs256(SECRET.as_bytes(), &json!({"sub": good, "exp": t}))).await.unwrap();
        assert_eq!(id.user_id.as_str(), good);
    }
    let id = v.verify(&hs256(SECRET.as_bytes(), &json!({"sub": 12345, "exp": t}))).await.unwrap();
    assert_eq!(id.user_id.as_str(), "12345");
}

#[tokio::test]
async fn invalid_grants() {
    let v = verifier(&hmac_config());
    let t = now() + 600;
    for bad in [
        json!(["*"]),
        json!(["room:ok", "Room:x"]),
        json!(["room:a b"]),
        json!(["room:*x"]),
        json!([1]),
        json!("room:*"),
        json!({"room": 1}),
    ] {
        let token = hs256(SECRET.as_bytes(), &json!({"sub": "j", "exp": t, "channels": bad}));
        assert_invalid(v.verify(&token).await, "channels");
    }
    let id = v.verify(&hs256(SECRET.as_bytes(), &json!({"sub": "j", "exp": t}))).await.unwrap();
    assert!(id.grants.is_empty());
}

#[tokio::test]
async fn claim_mapping_for_external_providers() {
    let config = AuthConfig {
        user_claim: "email".into(),
        channels_claim: "https://chorus.example/channels".into(),
        session_claim: "session_state".into(),
        ..hmac_config()
    };
    let v = verifier(&config);
    let token = hs256(
        SECRET.as_bytes(),
        &json!({
            "sub": "ignored here",
            "email": "kim@example.com",
            "https://chorus.example/channels": ["team:acme-*"],
            "channels": ["*"],
            "session_state": "0f9e-77",
            "exp": now() + 600,
        }),
    );
    let id = v.verify(&token).await.unwrap();
    assert_eq!(id.user_id.as_str(), "kim@example.com");
    assert_eq!(id.grants, vec!["team:acme-*".to_owned()]);
    assert_eq!(id.session_id.as_deref(), Some("0f9e-77"));
}

#[test]
fn bad_configurations_are_refused() {
    let dir = TempDir::new();
    let build = |config: AuthConfig| JwtVerifier::from_config(&config, dir.path(), Arc::new(SystemClock)).map(|_| ());

    let private = AuthConfig {
        public_keys: vec![PublicKeyConfig {
            algorithm: PublicKeyAlgorithm::RS256,
            pem: Some(fixture("rsa-private.pem")),
            pem_file: None,
            kid: None,
        }],
        ..hmac_config()
    };
    let e = build(private).unwrap_err();
    assert!(matches!(&e, AuthConfigError::PublicKey { index: 0, reason } if reason.contains("private key")), "{e}");
    // The error never carries key material.
    assert!(!e.to_string().contains("MII"), "{e}");

    let both = AuthConfig {
        public_keys: vec![PublicKeyConfig {
            pem: Some(fixture("rsa-public.pem")),
            ..public_key(PublicKeyAlgorithm::RS256, "rsa-public.pem", None)
        }],
        ..hmac_config()
    };
    assert!(matches!(build(both), Err(AuthConfigError::PublicKey { .. })));
    let neither = AuthConfig {
        public_keys: vec![PublicKeyConfig { algorithm: PublicKeyAlgorithm::RS256, pem: None, pem_file: None, kid: None }],
        ..hmac_config()
    };
    assert!(matches!(build(neither), Err(AuthConfigError::PublicKey { .. })));
    // A key of another type than declared.
    let mismatch = AuthConfig { public_keys: vec![public_key(PublicKeyAlgorithm::RS256, "ed25519-public.pem", None)], ..hmac_config() };
    assert!(matches!(build(mismatch), Err(AuthConfigError::PublicKey { .. })));
    let mismatch = AuthConfig { public_keys: vec![public_key(PublicKeyAlgorithm::EdDSA, "ec-public.pem", None)], ..hmac_config() };
    assert!(matches!(build(mismatch), Err(AuthConfigError::PublicKey { .. })));
    let small = AuthConfig { public_keys: vec![public_key(PublicKeyAlgorithm::RS256, "rsa1024-public.pem", None)], ..hmac_config() };
    let e = build(small).unwrap_err();
    assert!(e.to_string().contains("too small"), "{e}");
    let dup = AuthConfig {
        public_keys: vec![
            public_key(PublicKeyAlgorithm::RS256, "rsa-public.pem", Some("k")),
            public_key(PublicKeyAlgorithm::RS256, "rsa2-public.pem", Some("k")),
        ],
        ..hmac_config()
    };
    assert!(matches!(build(dup), Err(AuthConfigError::PublicKey { index: 1, .. })));
    let missing = AuthConfig { public_keys: vec![public_key(PublicKeyAlgorithm::RS256, "nope.pem", None)], ..hmac_config() };
    assert!(matches!(build(missing), Err(AuthConfigError::Read { .. })));

    let e = build(AuthConfig { hmac_secret: Some("short-secret".into()), ..AuthConfig::default() }).unwrap_err();
    assert!(matches!(e, AuthConfigError::BadSecret { .. }), "{e}");
    assert!(!e.to_string().contains("short-secret"), "{e}");
    assert!(matches!(build(AuthConfig { api_keys: vec!["short".into()], ..hmac_config() }), Err(AuthConfigError::ApiKey { index: 0, .. })));
    assert!(matches!(build(AuthConfig { user_claim: String::new(), ..hmac_config() }), Err(AuthConfigError::Setting { .. })));
    assert!(matches!(build(AuthConfig { jwks_url: Some("ftp://x/keys".into()), ..hmac_config() }), Err(AuthConfigError::JwksUrl(_))));
    assert!(matches!(build(AuthConfig { jwks_url: Some("not a url".into()), ..hmac_config() }), Err(AuthConfigError::JwksUrl(_))));
}

#[test]
fn debug_output_hides_secrets() {
    let dir = TempDir::new();
    let (v, origin) = JwtVerifier::from_config(&hmac_config(), dir.path(), Arc::new(SystemClock)).unwrap();
    assert_eq!(origin.unwrap().to_string(), "auth.hmac_secret");
    for shown in [format!("{v:?}"), format!("{:?}", HmacSecret::new(SECRET)), format!("{:?}", hmac_config())] {
        assert!(!shown.contains(SECRET), "{shown}");
    }
}
