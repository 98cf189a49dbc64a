//! The composition root: builds every component in order and picks every
//! engine from the configuration. `chorus serve` runs it until a signal; the
//! integration tests start it the same way on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chorus_auth::{ApiKeys, HmacSecret, JwtVerifier};
use chorus_chat::channels::StoreMembership;
use chorus_chat::{Chat, ChatParts};
use chorus_clock::Clock;
use chorus_core::access::AccessPolicy;
use chorus_core::broker::Backplane;
use chorus_core::broker::memory::MemoryBroker;
use chorus_core::metrics::CoreMetrics;
use chorus_core::{Executor, Hub, HubConfig, HubParts, NodeId};
use chorus_server::health::StoreCheck;
use chorus_server::listener::{Listener, Peer};
use chorus_server::{ApiKeyCheck, ApiPrincipal, AppParts, AppState, HttpMetrics, KeyRights};
use chorus_store::Store;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerKind, Config};

/// API keys from the configuration file, then those created through the API.
struct ServerKeys {
    configured: ApiKeys,
    chat: Chat,
}

#[async_trait]
impl ApiKeyCheck for ServerKeys {
    async fn check(&self, key: &str) -> Option<ApiPrincipal> {
        if let Some(key_id) = self.configured.check(key) {
            return Some(ApiPrincipal::server(key_id));
        }
        self.chat.accounts.check_api_key(key).await.map(|k| ApiPrincipal { key_id: k.key_id.clone(), rights: KeyRights::User(k) })
    }

    async fn authorize_user_key(
        &self,
        key: &chorus_chat::accounts::UserKey,
        channel: &chorus_protocol::ChannelName,
        event: chorus_protocol::EventType,
        data: &chorus_protocol::Payload,
    ) -> Result<(), chorus_chat::ChatError> {
        self.chat.accounts.authorize_key_publish(key, channel, event, data).await
    }
}

/// Where the reloadable settings are changed.
pub struct Reloaders {
    pub limits: watch::Sender<chorus_core::config::Limits>,
    pub rates: watch::Sender<chorus_core::config::RateLimits>,
    pub origins: watch::Sender<chorus_server::OriginPolicy>,
}

/// A running server.
pub struct Server {
    addr: SocketAddr,
    hub: Hub,
    chat: Chat,
    store: Arc<dyn Store>,
    drain_limit: Duration,
    stop_accepting: CancellationToken,
    background: CancellationToken,
    background_tasks: tokio_util::task::TaskTracker,
    serving: JoinHandle<std::io::Result<()>>,
    pub reloaders: Reloaders,
}

impl Server {
    /// Starts every component in order; the listener binds last, so `/health`
    /// answers only once everything is up. `clock` is the one clock every
    /// component reads the time of day from (`chorus serve`: the system
    /// clock; tests move theirs by hand).
    pub async fn start(config: &Config, clock: Arc<dyn Clock>) -> anyhow::Result<Server> {
        crate::cli::prepare_data_dir(&config.data_dir)?;

        // Auth.
        let (jwt, secret_origin) = JwtVerifier::from_config(&config.auth, &config.data_dir, clock.clone()).context("auth")?;
        if let Some(origin) = &secret_origin {
            tracing::info!(secret = %origin, "token signing secret");
        }
        // None with public keys only: tokens come from the identity provider, local sign-in is off.
        let secret: Option<HmacSecret> = HmacSecret::try_resolve(&config.auth, &config.data_dir).context("auth secret")?.map(|r| r.secret);
        if secret.is_none() {
            tracing::warn!("no HMAC secret: local sign-in is off; only tokens signed by the configured public keys are accepted");
        }

        // Store.
        let store = chorus_store::open_store_with_clock(&config.store, &config.data_dir, clock.clone()).await.context("opening the store")?;
        store.migrate().await.context("migrating the store")?;
        tracing::info!(engine = ?store.engine(), "store ready");

        // Metrics.
        let mut registry = Registry::with_prefix("chorus");
        let core_metrics = CoreMetrics::register(&mut registry);
        let http_metrics = HttpMetrics::register(&mut registry);

        // Broker.
        let node = config.node_id.as_deref().map_or_else(NodeId::random, NodeId::new);
        let backplane = match config.broker.kind {
            BrokerKind::Memory => Backplane::memory(Arc::new(MemoryBroker::with_clock(config.broker.memory.clone(), clock.clone()))),
            BrokerKind::Redis => {
                let metrics = chorus_redis::RedisMetrics::default();
                let redis = chorus_redis::RedisBroker::connect(config.broker.redis.clone(), node.clone(), clock.clone(), metrics)
                    .await
                    .context("configuring the Redis broker")?;
                redis.register_metrics(&mut registry);
                if let chorus_redis::Mode::Degraded { reason, .. } = redis.mode() {
                    tracing::warn!(%reason, "Redis is not reachable yet; starting degraded and retrying");
                }
                redis.backplane()
            }
        };
        tracing::info!(kind = ?config.broker.kind, "broker ready");

        // Hub.
        let (limits_tx, limits_rx) = watch::channel(config.limits.clone());
        let (rates_tx, rates_rx) = watch::channel(config.rate_limits.clone());
        let (origins_tx, origins_rx) = watch::channel(config.cors.clone());
        let membership = Arc::new(StoreMembership::new(store.clone()));
        let hub = Hub::start(HubParts {
            config: HubConfig { node: node.clone(), timing: config.timing.clone() },
            access: AccessPolicy::new(config.namespaces.clone(), Some(membership)),
            limits: limits_rx,
            rates: rates_rx,
            backplane,
            metrics: core_metrics,
            clock: clock.clone(),
        })
        .await
        .context("starting the hub")?;
        hub.register_gauges(&mut registry);
        let store_check = Arc::new(chorus_server::health::register_store_metrics(&mut registry, store.clone()));
        tracing::info!(node = %node, "hub ready");

        // Chat domain.
        let chat = Chat::new(ChatParts { store: store.clone(), hub: hub.clone(), config: config.chat.clone(), clock, secret, jwt });
        chat.accounts.password_checks().register(&mut registry);
        chat.accounts.bootstrap().await.context("bootstrapping accounts")?;
        let background = CancellationToken::new();
        let background_tasks = tokio_util::task::TaskTracker::new();
        chat.spawn_background(&background_tasks, background.clone());
        spawn_store_probe(&background_tasks, background.clone(), hub.metrics().clone(), store_check.clone());
        tracing::info!("chat domain ready");

        // Edge.
        let executor = Arc::new(Executor::new(hub.clone(), chat.accounts.token_verifier(), Arc::new(chat.messages.clone())));
        let state = AppState::new(AppParts {
            config: config.server.clone(),
            hub: hub.clone(),
            executor,
            api_keys: Arc::new(ServerKeys { configured: ApiKeys::new(&config.auth.api_keys), chat: chat.clone() }),
            origins: origins_rx,
            registry: Arc::new(registry),
            http_metrics,
            health: vec![store_check],
        });
        let app = chorus_server::app(state, chat.clone());
        let listener = listen(config.server.bind).with_context(|| format!("binding {}", config.server.bind))?;
        let addr = listener.local_addr()?;
        let stop_accepting = CancellationToken::new();
        let serving = tokio::spawn(
            axum::serve(Listener::new(listener), app.into_make_service_with_connect_info::<Peer>())
                .with_graceful_shutdown(stop_accepting.clone().cancelled_owned())
                .into_future(),
        );
        tracing::info!(%addr, "listening");
        Ok(Server {
            addr,
            hub,
            chat,
            store,
            drain_limit: config.timing.drain_limit,
            stop_accepting,
            background,
            background_tasks,
            serving,
            reloaders: Reloaders { limits: limits_tx, rates: rates_tx, origins: origins_tx },
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Resolves if the HTTP server stops by itself (it should not).
    pub async fn stopped(&mut self) -> anyhow::Result<()> {
        (&mut self.serving).await.context("server task")?.context("server")?;
        anyhow::bail!("server stopped unexpectedly")
    }

    /// Stops accepting, asks every client to reconnect (1012 / SSE
    /// `reconnect`), drains within the limit, flushes and closes the store.
    pub async fn shutdown(self) -> bool {
        self.stop_accepting.cancel();
        self.hub.shutdown();
        let hub = self.hub.clone();
        let background = self.background.clone();
        let tasks = self.background_tasks.clone();
        let serving = self.serving;
        let drained = tokio::time::timeout(self.drain_limit, async move {
            let _ = serving.await;
            hub.drained().await;
            background.cancel();
            tasks.close();
            tasks.wait().await;
        })
        .await
        .is_ok();
        self.store.close().await;
        drained
    }
}

/// Probes the store every 15 s so its latency shows in `/metrics` even when
/// nobody asks `/health/detailed`. Supervised like every background task.
fn spawn_store_probe(tasks: &tokio_util::task::TaskTracker, stop: CancellationToken, metrics: CoreMetrics, check: Arc<StoreCheck>) {
    chorus_core::supervise::spawn_background(tasks, stop, metrics, "store_probe", Duration::from_secs(1), move || {
        let check = check.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tick.tick().await;
                if let Err(e) = check.probe().await {
                    tracing::warn!(error = %e, "store probe failed");
                }
            }
        }
    });
}

/// Pending connections the kernel queues before `accept` (capped by
/// `net.core.somaxconn`). A reconnect storm after a restart or a network cut
/// arrives at once; a short queue would drop SYNs and cost each dropped
/// client a one-second retransmission.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
