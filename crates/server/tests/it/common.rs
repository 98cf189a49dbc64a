//! A real server on 127.0.0.1:0 with real clients, for integration tests.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_auth::{ApiKeys, AuthConfig, HmacSecret, JwtVerifier, MintRequest, mint_token};
use chorus_chat::{Chat, ChatConfig, ChatParts};
use chorus_clock::{Clock, SystemClock};
use chorus_core::access::AccessPolicy;
use chorus_core::broker::memory::MemoryBroker;
use chorus_core::broker::Backplane;
use chorus_core::config::{Limits, MemoryBrokerConfig, Namespaces, RateLimits, Timing};
use chorus_core::metrics::CoreMetrics;
use chorus_core::{Executor, Hub, HubConfig, HubParts, NodeId};
use chorus_server::{ApiKeyCheck, ApiPrincipal, AppParts, AppState, HttpMetrics, OriginPolicy, ServerConfig};
use chorus_store::StoreConfig;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use chorus_testkit::{RawSseClient, SilentClient, SseClient, WAIT, WsClient, metric};

pub const SECRET: &str = "integration-test-secret-0123456789abcdef";
pub const API_KEY: &str = "test-api-key-0123456789";

pub struct Options {
    pub limits: Limits,
    pub rates: RateLimits,
    pub timing: Timing,
    pub namespaces: Namespaces,
    pub origins: OriginPolicy,
    pub server: ServerConfig,
    /// Share one broker between servers (multi-node tests).
    pub broker: Option<Arc<MemoryBroker>>,
    /// Another engine and the node it serves (multi-node tests over Redis);
    /// takes the place of `broker`.
    pub backplane: Option<(NodeId, Backplane)>,
    /// The `[auth]` the verifier and API keys are built from (auth tests).
    /// Default: HS256 with [`SECRET`], [`API_KEY`], no leeway.
    pub auth: Option<AuthConfig>,
}

impl Default for Options {
    fn default() -> Self {
        let mut namespaces = Namespaces::default();
        // `room:` channels are granted by tokens here: the hub gets no store membership check.
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
        // Granted by tokens like `room:`, but without presence: a stream of nothing but what is published.
        namespaces.0.insert(
            "feed".into(),
            chorus_core::config::NamespaceConfig { subscribe: chorus_core::config::SubscribeRule::Grants, ..Default::default() },
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
            backplane: None,
            auth: None,
        }
    }
}

struct TestKeys(ApiKeys);

#[async_trait]
impl ApiKeyCheck for TestKeys {
    async fn check(&self, key: &str) -> Option<ApiPrincipal> {
        self.0.check(key).map(ApiPrincipal::server)
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub hub: Hub,
    pub broker: Arc<MemoryBroker>,
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
        let auth = opts.auth.clone().unwrap_or_else(|| AuthConfig {
            hmac_secret: Some(SECRET.into()),
            api_keys: vec![API_KEY.into()],
            leeway: Duration::ZERO,
            ..AuthConfig::default()
        });
        let dir = std::env::temp_dir();
        // One clock for every component, as in the composition root.
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let (verifier, _) = JwtVerifier::from_config(&auth, &dir, clock.clone()).expect("verifier");
        let mut registry = Registry::with_prefix("chorus");
        let core_metrics = CoreMetrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);
        let broker = opts.broker.clone().unwrap_or_else(|| Arc::new(MemoryBroker::new(MemoryBrokerConfig::default())));
        let (_limits_tx, limits_rx) = watch::channel(opts.limits.clone());
        let (_rates_tx, rates_rx) = watch::channel(opts.rates.clone());
        let (origins_tx, origins_rx) = watch::channel(opts.origins.clone());
        let (node, backplane) = opts.backplane.clone().unwrap_or_else(|| (NodeId::random(), Backplane::memory(broker.clone())));
        let hub = Hub::start(HubParts {
            config: HubConfig { node, timing: opts.timing.clone() },
            access: AccessPolicy::new(opts.namespaces.clone(), None),
            limits: limits_rx,
            rates: rates_rx,
            backplane,
            metrics: core_metrics,
            clock: clock.clone(),
        })
        .await
        .expect("hub");
        hub.register_gauges(&mut registry);
        let registry = Arc::new(registry);
        // The chat domain on an in-memory SQLite database: the REST routes and `send_message` work.
        let store_config = StoreConfig { url: Some("sqlite::memory:".into()), ..StoreConfig::default() };
        let store = chorus_store::open_store_with_clock(&store_config, &dir, clock.clone()).await.expect("store");
        store.migrate().await.expect("migrations");
        let chat = Chat::new(ChatParts {
            store,
            hub: hub.clone(),
            config: ChatConfig::default(),
            clock,
            secret: auth.hmac_secret.as_deref().map(HmacSecret::new),
            jwt: verifier.clone(),
            run_guard: chorus_chat::RunGuard::default(),
            run_intake: None,
            webhooks: chorus_chat::agents::WebhookRules {
                policy: Arc::new(chorus_external::AddressPolicy::default()),
                key: Arc::new(chorus_external::SecretKey::from_bytes(&[7; 32], &chorus_external::KeyOrigin::Config).expect("key")),
                previous_secret_ttl: std::time::Duration::from_secs(60),
            },
        });
        let executor = Arc::new(Executor::new(hub.clone(), Arc::new(verifier), Arc::new(chat.messages.clone()), None));
        let state = AppState::new(AppParts {
            config: opts.server.clone(),
            hub: hub.clone(),
            executor,
            api_keys: Arc::new(TestKeys(ApiKeys::new(&auth.api_keys))),
            origins: origins_rx,
            registry,
            http_metrics,
            health: Vec::new(),
            agents: None,
            web: Default::default(),
        });
        let app = chorus_server::app(state, chat);
        let listener = tokio::net::TcpListener::bind(opts.server.bind).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(chorus_server::listener::Listener::new(listener), app.into_make_service_with_connect_info::<chorus_server::listener::Peer>())
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        TestServer {
            addr,
            hub,
            broker,
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
            &SystemClock,
        )
        .expect("mint")
    }

    /// An HS256 token with an explicit `exp` (Unix seconds), e.g. one already expired.
    pub fn token_with_exp(&self, user: &str, channels: &[&str], exp: u64) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let claims = json!({"sub": user, "iat": now.min(exp), "exp": exp, "channels": channels});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256), &claims, &key).unwrap()
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

    /// Opens an SSE stream (`GET /sse?{query}`).
    pub async fn sse(&self, token: &str, query: &str, last_event_id: Option<&str>) -> Result<SseClient, (u16, Value)> {
        SseClient::open(&self.http, &format!("http://{}", self.addr), token, query, last_event_id).await
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

    /// `POST /api/v1/publish/batch` of `items` with the test API key.
    pub async fn publish_batch(&self, items: Vec<Value>) -> (u16, Value) {
        let res = self
            .http
            .post(self.url("/api/v1/publish/batch"))
            .header("x-api-key", API_KEY)
            .json(&json!({"items": items}))
            .send()
            .await
            .expect("publish batch");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// A command for an SSE connection, to its `commands_url`: (status, reply, x-request-id).
    pub async fn sse_command(&self, commands_url: &str, token: &str, body: impl Into<reqwest::Body>) -> (u16, Value, String) {
        let res = self
            .http
            .post(self.url(commands_url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("command");
        let status = res.status().as_u16();
        let rid = res.headers().get("x-request-id").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
        (status, res.json().await.unwrap_or(Value::Null), rid)
    }

    pub fn stop_accepting(&self) {
        self.stop.cancel();
    }

    /// What a SIGTERM does: stop accepting, then close every connection with 1012.
    pub fn shutdown(&self) {
        self.stop_accepting();
        self.hub.shutdown();
    }
}

/// The broker engines a server test runs on. As the store tests run one
/// body on SQLite and PostgreSQL, the tests that exercise the broker run one
/// body on each engine (see [`every_engine`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Memory,
    Redis,
}

pub const REDIS_ENV: &str = "CHORUS_TEST_REDIS_URL";

/// The Redis engine of one node, on the server named by `CHORUS_TEST_REDIS_URL`
/// (`scripts/test.sh` sets it; without it the test fails). Nodes that share
/// `prefix` form one deployment; each test takes its own prefix, so tests
/// share the one server.
pub async fn redis_node(prefix: &str) -> (NodeId, Backplane) {
    let url = std::env::var(REDIS_ENV).unwrap_or_default();
    assert!(
        !url.trim().is_empty(),
        "{REDIS_ENV} is not set: the Redis server tests need a server. \
         Run `eval \"$(scripts/test-services.sh start)\"` first (scripts/test.sh does)."
    );
    let node = NodeId::random();
    let config = chorus_redis::RedisBrokerConfig { url, key_prefix: prefix.to_owned(), ..chorus_redis::RedisBrokerConfig::default() };
    let engine = chorus_redis::RedisBroker::connect(config, node.clone(), Arc::new(SystemClock), chorus_redis::RedisMetrics::default())
        .await
        .unwrap_or_else(|e| panic!("connecting to {REDIS_ENV}: {e}"));
    (node, engine.backplane())
}

/// A fresh key prefix: one deployment on the shared test Redis.
pub fn redis_prefix() -> String {
    format!("t{}", NodeId::random())
}

impl TestServer {
    /// A server on `engine`: the in-memory one, or a node of its own
    /// deployment on the test Redis (up before this returns).
    pub async fn start_on(engine: Engine, opts: Options) -> TestServer {
        match engine {
            Engine::Memory => TestServer::start(opts).await,
            Engine::Redis => TestServer::start_in(&redis_prefix(), opts).await,
        }
    }

    /// A Redis node of the deployment `prefix`, up before this returns.
    pub async fn start_in(prefix: &str, opts: Options) -> TestServer {
        let s = TestServer::start(Options { backplane: Some(redis_node(prefix).await), ..opts }).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        while !matches!(s.hub.broker_health(), chorus_core::broker::Health::Up { .. }) {
            assert!(tokio::time::Instant::now() < deadline, "Redis engine not up: {:?}", s.hub.broker_health());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        s
    }
}

/// Declares each named `async fn(Engine)` as two tests, `<name>::memory`
/// and `<name>::redis`.
macro_rules! every_engine {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    super::$name($crate::common::Engine::Memory).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name($crate::common::Engine::Redis).await
                }
            }
        )+
    };
}
pub(crate) use every_engine;

/// Polls `cond` until it holds; for states with no event to wait for. Fails after [`WAIT`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + WAIT;
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// HMAC-SHA256 through the TLS provider's HKDF (the tests have no other HMAC at hand).
impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
