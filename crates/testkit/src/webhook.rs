//! A mock webhook service: an HTTP server on 127.0.0.1 that plays an
//! external agent's receiving end.
//!
//! It answers each delivery as scripted ([`Reply`]), checks the Standard
//! Webhooks signature of every request with its own implementation (HMAC
//! from the `hmac` crate, not Chorus's), and records what it received.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use tokio::sync::Notify;

/// How the mock answers one delivery.
#[derive(Debug, Clone)]
pub enum Reply {
    /// This status, at once.
    Status(u16),
    /// This status after a pause.
    Delayed(Duration, u16),
    /// Never answers (until the client gives up).
    Hang,
    /// A redirect to `location`.
    Redirect(u16, String),
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: Option<String>,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
    pub user_agent: Option<String>,
    pub content_type: Option<String>,
    /// The raw body.
    pub body: Bytes,
    /// The body as JSON (`Null` if it is not JSON).
    pub json: Value,
    /// Which of the mock's secrets verified the signature (index into the
    /// secrets it was given), if any.
    pub verified_by: Option<usize>,
    /// Whether the timestamp was within 5 minutes of the mock's clock.
    pub fresh: bool,
}

struct Inner {
    secrets: Vec<Vec<u8>>,
    script: VecDeque<Reply>,
    default: Reply,
    received: Vec<Received>,
}

/// The running mock. Dropping it stops the server.
pub struct MockWebhook {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockWebhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    arrived: Arc<Notify>,
}

impl MockWebhook {
    /// Starts on a free port, answering 200 unless scripted otherwise.
    /// `secrets` are `whsec_…` strings the signatures are checked against.
    pub async fn start(secrets: &[&str]) -> MockWebhook {
        let inner = Arc::new(Mutex::new(Inner {
            secrets: secrets.iter().map(|s| decode_secret(s)).collect(),
            script: VecDeque::new(),
            default: Reply::Status(200),
            received: Vec::new(),
        }));
        let arrived = Arc::new(Notify::new());
        let shared = Shared { inner: inner.clone(), arrived: arrived.clone() };
        let app = Router::new().fallback(receive).with_state(shared);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the mock webhook");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        MockWebhook { addr, inner, arrived, task }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Answers the next deliveries with these, in order, then with the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.inner.lock().expect("mock lock").script.extend(replies);
    }

    /// Answers every unscripted delivery with this.
    pub fn set_default(&self, reply: Reply) {
        self.inner.lock().expect("mock lock").default = reply;
    }

    /// Replaces the secrets signatures are checked against.
    pub fn set_secrets(&self, secrets: &[&str]) {
        self.inner.lock().expect("mock lock").secrets = secrets.iter().map(|s| decode_secret(s)).collect();
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("mock lock").received.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().expect("mock lock").received.len()
    }

    /// Waits until at least `n` requests arrived (at most [`crate::WAIT`]).
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + crate::WAIT;
        loop {
            let notified = self.arrived.notified();
            {
                let inner = self.inner.lock().expect("mock lock");
                if inner.received.len() >= n {
                    return inner.received.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("the mock webhook got {} request(s), expected {n}", self.count());
            }
        }
    }
}

/// The key bytes of a `whsec_…` secret.
pub fn decode_secret(secret: &str) -> Vec<u8> {
    STANDARD.decode(secret.strip_prefix("whsec_").expect("a whsec_ secret")).expect("base64 secret")
}

/// Standard Webhooks verification: the index of the secret that made one of
/// the header's `v1` signatures over `{id}.{timestamp}.{body}`.
pub fn verify_signature(secrets: &[Vec<u8>], id: &str, timestamp: &str, header: &str, body: &[u8]) -> Option<usize> {
    let content = [id.as_bytes(), b".", timestamp.as_bytes(), b".", body].concat();
    let sigs: Vec<Vec<u8>> =
        header.split(' ').filter_map(|s| s.strip_prefix("v1,")).filter_map(|b| STANDARD.decode(b).ok()).collect();
    secrets.iter().position(|key| {
        sigs.iter().any(|sig| {
            let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
            mac.update(&content);
            mac.verify_slice(sig).is_ok()
        })
    })
}

async fn receive(State(shared): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let (id, timestamp, signature) = (header("webhook-id"), header("webhook-timestamp"), header("webhook-signature"));
    let reply = {
        let mut inner = shared.inner.lock().expect("mock lock");
        let verified_by = match (&id, &timestamp, &signature) {
            (Some(i), Some(t), Some(s)) => verify_signature(&inner.secrets, i, t, s, &body),
            _ => None,
        };
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let fresh = timestamp.as_deref().and_then(|t| t.parse::<i64>().ok()).is_some_and(|t| (t - now).abs() <= 300);
        inner.received.push(Received {
            json: serde_json::from_slice(&body).unwrap_or(Value::Null),
            id,
            timestamp,
            signature,
            user_agent: header("user-agent"),
            content_type: header("content-type"),
            body,
            verified_by,
            fresh,
        });
        inner.script.pop_front().unwrap_or_else(|| inner.default.clone())
    };
    shared.arrived.notify_waiters();
    let status = |s: u16| StatusCode::from_u16(s).expect("a valid status");
    match reply {
        Reply::Status(s) => status(s).into_response(),
        Reply::Delayed(d, s) => {
            tokio::time::sleep(d).await;
            status(s).into_response()
        }
        Reply::Hang => std::future::pending().await,
        Reply::Redirect(s, location) => (status(s), [("location", location)]).into_response(),
    }
}
