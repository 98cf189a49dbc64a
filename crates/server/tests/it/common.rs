//! A real server on 127.0.0.1:0 with real clients, for integration tests.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_auth::{ApiKeys, AuthConfig, JwtVerifier, MintRequest, mint_token};
use chorus_core::access::AccessPolicy;
use chorus_core::broker::memory::MemoryBroker;
use chorus_core::broker::Backplane;
use chorus_core::clock::SystemClock;
use chorus_core::config::{Limits, MemoryBrokerConfig, Namespaces, RateLimits, Timing};
use chorus_core::metrics::CoreMetrics;
use chorus_core::{Executor, Hub, HubConfig, HubParts, NodeId};
use chorus_server::{ApiKeyCheck, ApiPrincipal, AppParts, AppState, HttpMetrics, OriginPolicy, ServerConfig};
use futures_util::{SinkExt, StreamExt};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const API_KEY: &str = "test-api-key-0123456789";
/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Options {
    pub limits: Limits,
    pub rates: RateLimits,
    pub timing: Timing,
    pub namespaces: Namespaces,
    pub origins: OriginPolicy,
    pub server: ServerConfig,
    /// Share one broker between servers (multi-node tests).
    pub broker: Option<Arc<MemoryBroker>>,
}

impl Default for Options {
    fn default() -> Self {
        let mut namespaces = Namespaces::default();
        // These tests run without a store: `room:` channels are granted by tokens.
        if let Some(room) = namespaces.0.get_mut("room") {
            room.subscribe = chorus_core::config::SubscribeRule::Grants;
        }
        namespaces.0.insert(
            "chat".into(),
            chorus_core::config::NamespaceConfig {
                subscribe: chorus_core::config::SubscribeRule::Authenticated,
                publish: chorus_core::config::PublishRule::Subscribers,
                presence: true,
                typing: true,
                ..Default::default()
            },
        );
        namespaces.0.insert(
            "fault".into(),
            chorus_core::config::NamespaceConfig { subscribe: chorus_core::config::SubscribeRule::Authenticated, ..Default::default() },
        );
        Self {
            limits: Limits::default(),
            rates: RateLimits::default(),
            timing: Timing::default(),
            namespaces,
            origins: OriginPolicy::default(),
            server: ServerConfig { bind: SocketAddr::from(([127, 0, 0, 1], 0)), ..ServerConfig::default() },
            broker: None,
        }
    }
}

struct TestKeys(ApiKeys);

#[async_trait]
impl ApiKeyCheck for TestKeys {
    async fn check(&self, key: &str) -> Option<ApiPrincipal> {
        self.0.check(key).map(|key_id| ApiPrincipal { key_id })
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    pub broker: Arc<MemoryBroker>,
    pub registry: Arc<Registry>,
    pub limits: watch::Sender<Limits>,
    pub rates: watch::Sender<RateLimits>,
    pub origins: watch::Sender<OriginPolicy>,
    stop: CancellationToken,
    http: reqwest::Client,
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TestServer {
    pub async fn start(opts: Options) -> TestServer {
        install_crypto();
        // No leeway, so expiry tests need not wait half a minute.
        let auth = AuthConfig {
            hmac_secret: Some(SECRET.into()),
            api_keys: vec![API_KEY.into()],
            leeway: Duration::ZERO,
            ..AuthConfig::default()
        };
        let dir = std::env::temp_dir();
        let (verifier, _) = JwtVerifier::from_config(&auth, &dir).expect("verifier");
        let mut registry = Registry::with_prefix("chorus");
        let core_metrics = CoreMetrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        let broker = opts.broker.clone().unwrap_or_else(|| Arc::new(MemoryBroker::new(MemoryBrokerConfig::default())));
        let (limits_tx, limits_rx) = watch::channel(opts.limits.clone());
        let (rates_tx, rates_rx) = watch::channel(opts.rates.clone());
        let (origins_tx, origins_rx) = watch::channel(opts.origins.clone());
        let hub = Hub::start(HubParts {
            config: HubConfig { node: NodeId::random(), timing: opts.timing.clone() },
            access: AccessPolicy::new(opts.namespaces.clone(), None),
            limits: limits_rx,
            rates: rates_rx,
            backplane: Backplane::memory(broker.clone()),
            metrics: core_metrics,
            clock: Arc::new(SystemClock),
        })
        .await
        .expect("hub");
        hub.register_gauges(&mut registry);
        let registry = Arc::new(registry);
        let executor = Arc::new(Executor::new(hub.clone(), Arc::new(verifier), None));
        let state = AppState::new(AppParts {
            config: opts.server.clone(),
            hub: hub.clone(),
            executor,
            api_keys: Arc::new(TestKeys(ApiKeys::new(&auth.api_keys))),
            origins: origins_rx,
            registry: registry.clone(),
            http_metrics,
            health: Vec::new(),
            chat: None,
        });
        let app = chorus_server::app(state);
        let listener = tokio::net::TcpListener::bind(opts.server.bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        TestServer {
            addr,
            hub,
            broker,
            registry,
            limits: limits_tx,
            rates: rates_tx,
            origins: origins_tx,
            stop,
            http: reqwest::Client::builder().build().expect("http client"),
        }
    }

    pub fn token(&self, user: &str, channels: &[&str]) -> String {
        self.token_ttl(user, channels, Duration::from_secs(3600))
    }

    pub fn token_ttl(&self, user: &str, channels: &[&str], ttl: Duration) -> String {
        mint_token(
            &chorus_auth::HmacSecret::new(SECRET),
            &MintRequest {
                user: user.into(),
                ttl,
                channels: channels.iter().map(|s| s.to_string()).collect(),
                audience: None,
                issuer: None,
                session_id: None,
            },
        )
        .expect("mint")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("ws://{}/ws?token={t}", self.addr),
            None => format!("ws://{}/ws", self.addr),
        }
    }

    /// A connected, authenticated client (token at upgrade), past its `connected` push.
    pub async fn client(&self, user: &str, channels: &[&str]) -> WsClient {
        let mut c = WsClient::connect(&self.ws_url(Some(&self.token(user, channels)))).await.expect("connect");
        let first = c.push().await;
        assert_eq!(first["type"], "connected", "{first}");
        c
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// `POST /api/v1/publish` with the test API key.
    pub async fn publish(&self, channel: &str, event: &str, data: Value) -> (u16, Value) {
        let res = self
            .http
            .post(self.url("/api/v1/publish"))
            .header("x-api-key", API_KEY)
            .json(&json!({"channel": channel, "event": event, "data": data}))
            .send()
            .await
            .expect("publish");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let res = self.http.get(self.url(path)).send().await.expect("get");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn metrics(&self) -> String {
        self.http.get(self.url("/metrics")).send().await.expect("metrics").text().await.expect("text")
    }

    pub fn stop_accepting(&self) {
        self.stop.cancel();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Finds a metric sample's value in Prometheus text, e.g. `chorus_panics_total{task="connection"}`.
pub fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().split(' ').next()?.parse().ok()))
}

pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
    pushes: VecDeque<Value>,
}

impl WsClient {
    pub async fn connect(url: &str) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        Self::connect_with(url, &[]).await
    }

    pub async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        for (k, v) in headers {
            req.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(k.as_bytes()).expect("header name"),
                v.parse().expect("header value"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(WsClient { ws, next_id: 1, pushes: VecDeque::new() })
    }

    pub async fn send_text(&mut self, text: impl Into<String>) {
        self.ws.send(Message::Text(text.into().into())).await.expect("send");
    }

    pub async fn send_message(&mut self, m: Message) {
        self.ws.send(m).await.expect("send");
    }

    /// Sends a command (assigning an `id`) and returns the whole reply.
    pub async fn request(&mut self, mut cmd: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        cmd["id"] = json!(id);
        self.send_text(cmd.to_string()).await;
        self.reply(Some(id)).await
    }

    /// Waits for the reply with this id (`None`: the next reply with `id: null`).
    pub async fn reply(&mut self, id: Option<u64>) -> Value {
        loop {
            let v = self.frame().await;
            if v.get("type").is_some() && v.get("id").is_none() {
                self.pushes.push_back(v);
                continue;
            }
            if v.get("id").map(|x| x.as_u64()) == Some(id) || (id.is_none() && v["id"].is_null()) {
                return v;
            }
            panic!("unexpected reply {v} while waiting for id {id:?}");
        }
    }

    /// The next push.
    pub async fn push(&mut self) -> Value {
        if let Some(p) = self.pushes.pop_front() {
            return p;
        }
        loop {
            let v = self.frame().await;
            if v.get("id").is_none() {
                return v;
            }
            panic!("unexpected reply {v} while waiting for a push");
        }
    }

    /// The next push of this type, dropping others.
    pub async fn push_of(&mut self, kind: &str) -> Value {
        loop {
            let p = self.push().await;
            if p["type"] == kind {
                return p;
            }
        }
    }

    /// Reads one text frame as JSON, failing the test on close or timeout.
    pub async fn frame(&mut self) -> Value {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame");
            match next {
                Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("json frame"),
                Some(Ok(Message::Close(c))) => panic!("closed while waiting for a frame: {c:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error while waiting for a frame: {e}"),
                None => panic!("socket ended while waiting for a frame"),
            }
        }
    }

    /// The next text frame as JSON, or the close code if the server closed.
    pub async fn frame_or_close(&mut self) -> Result<Value, u16> {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for a frame");
            match next {
                Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("json frame")),
                Some(Ok(Message::Close(Some(f)))) => return Err(u16::from(f.code)),
                Some(Ok(Message::Close(None))) => return Err(1005),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// Reads until the server's close frame; returns its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            let next = tokio::time::timeout(WAIT, self.ws.next()).await.expect("timed out waiting for close");
            match next {
                Some(Ok(Message::Close(Some(f)))) => return (u16::from(f.code), f.reason.to_string()),
                Some(Ok(Message::Close(None))) => return (1005, String::new()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before a close frame: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// Stops reading and writing for a while without closing.
    pub fn into_inner(self) -> WebSocketStream<MaybeTlsStream<TcpStream>> {
        self.ws
    }

    pub fn from_inner(ws: WebSocketStream<MaybeTlsStream<TcpStream>>) -> Self {
        WsClient { ws, next_id: 1000, pushes: VecDeque::new() }
    }
}

/// A bare-bones WebSocket client over TCP that reads the server's frames but
/// never answers: the way to be a client that misses its pongs.
pub struct SilentClient {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl SilentClient {
    pub async fn connect(addr: SocketAddr, path: &str) -> SilentClient {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await.expect("tcp connect");
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("write upgrade");
        let mut buf = Vec::new();
        let end = loop {
            let mut chunk = [0u8; 1024];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk)).await.expect("upgrade timeout").expect("read");
            assert!(n > 0, "closed during upgrade");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        buf.drain(..end);
        SilentClient { stream, buf }
    }

    /// Reads frames until the server's close frame; returns its code and how many pings came first.
    pub async fn close_code(&mut self) -> (u16, usize) {
        use tokio::io::AsyncReadExt;
        let mut pings = 0;
        loop {
            if let Some((opcode, payload, used)) = parse_frame(&self.buf) {
                self.buf.drain(..used);
                match opcode {
                    0x9 => pings += 1,
                    0x8 => {
                        let code = if payload.len() >= 2 { u16::from_be_bytes([payload[0], payload[1]]) } else { 1005 };
                        return (code, pings);
                    }
                    _ => {}
                }
                continue;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await.expect("read timeout").expect("read");
            assert!(n > 0, "socket ended without a close frame");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

/// One unmasked server frame: (opcode, payload, bytes used), if complete.
fn parse_frame(buf: &[u8]) -> Option<(u8, Vec<u8>, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, header) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (usize::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => (usize::try_from(u64::from_be_bytes(buf[2..10].try_into().ok()?)).ok()?, 10),
        126 | 127 => return None,
        n => (usize::from(n), 2),
    };
    if buf.len() < header + len {
        return None;
    }
    Some((opcode, buf[header..header + len].to_vec(), header + len))
}
