//! Fixtures and helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chorus_auth::{AuthConfig, JwtVerifier, PublicKeyAlgorithm, PublicKeyConfig};
pub use chorus_clock::SystemClock;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use parking_lot::Mutex;
use serde_json::{Value, json};

pub const SECRET: &str = "test-hmac-secret-0123456789abcdef-xyz";

pub fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("chorus-auth-test-{}-{:016x}", std::process::id(), rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A verifier from `config` with a fresh, empty data directory.
pub fn verifier(config: &AuthConfig) -> JwtVerifier {
    let dir = TempDir::new();
    JwtVerifier::from_config(config, dir.path(), Arc::new(SystemClock)).unwrap().0
}

pub fn hmac_config() -> AuthConfig {
    AuthConfig { hmac_secret: Some(SECRET.into()), ..AuthConfig::default() }
}

pub fn public_key(algorithm: PublicKeyAlgorithm, file: &str, kid: Option<&str>) -> PublicKeyConfig {
    PublicKeyConfig { algorithm, pem: None, pem_file: Some(fixture_path(file)), kid: kid.map(str::to_owned) }
}

/// Claims of a valid token for `user`, expiring in ten minutes.
pub fn claims(user: &str) -> Value {
    json!({"sub": user, "iat": now(), "exp": now() + 600, "channels": ["room:*"]})
}

pub fn header(alg: Algorithm, kid: Option<&str>) -> Header {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    h
}

pub fn hs256(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret)).unwrap()
}

/// Signs with a private key fixture.
pub fn sign(alg: Algorithm, private_pem: &str, kid: Option<&str>, claims: &Value) -> String {
    let pem = fixture(private_pem);
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(pem.as_bytes()),
        Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
        other => panic!("no fixture for {other:?}"),
    }
    .unwrap();
    jsonwebtoken::encode(&header(alg, kid), claims, &key).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A token assembled by hand: `b64(header).b64(payload).signature`.
pub fn hand_token(header: &Value, payload: &Value, signature: &str) -> String {
    format!("{}.{}.{signature}", b64(header.to_string().as_bytes()), b64(payload.to_string().as_bytes()))
}

/// The public JWK of an RSA private key fixture.
pub fn rsa_jwk(private_pem: &str, kid: &str) -> Value {
    let key = EncodingKey::from_rsa_pem(fixture(private_pem).as_bytes()).unwrap();
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    let mut v = serde_json::to_value(jwk).unwrap();
    v["kid"] = json!(kid);
    v["use"] = json!("sig");
    v
}

/// The public JWK of the Ed25519 fixture (the raw key is the last 32 bytes
/// of the SPKI DER).
pub fn ed25519_jwk(kid: &str) -> Value {
    let pem = fixture("ed25519-public.pem");
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = STANDARD.decode(body).unwrap();
    json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&der[der.len() - 32..]), "kid": kid})
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A JWKS endpoint on 127.0.0.1 whose answer the test changes at will.
pub struct JwksServer {
    pub url: String,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

struct ServerState {
    answer: Mutex<(StatusCode, String)>,
    hits: AtomicUsize,
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> Self {
        install_crypto();
        let state = Arc::new(ServerState { answer: Mutex::new((StatusCode::OK, String::new())), hits: AtomicUsize::new(0) });
        async fn serve(State(state): State<Arc<ServerState>>) -> (StatusCode, String) {
            state.hits.fetch_add(1, Ordering::SeqCst);
            state.answer.lock().clone()
        }
        let app = axum::Router::new().route("/jwks.json", get(serve)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let server = Self { url, state, task };
        server.set_keys(keys);
        server
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        self.set(StatusCode::OK, json!({ "keys": keys }).to_string());
    }

    pub fn set(&self, status: StatusCode, body: impl Into<String>) {
        *self.state.answer.lock() = (status, body.into());
    }

    pub fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A URL on which nothing listens.
pub async fn dead_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/jwks.json")
}
