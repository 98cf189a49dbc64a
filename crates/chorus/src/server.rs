//! The composition root: builds every component in order and picks every
//! engine from the configuration. `chorus serve` runs it until a signal; the
//! integration tests start it the same way on `127.0.0.1:0`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chorus_agents::{AgentMetrics, INTAKE_CAPACITY, Intake, Runtime, RuntimeParts};
use chorus_auth::{ApiKeys, HmacSecret, JwtVerifier};
use chorus_chat::channels::StoreMembership;
use chorus_chat::agents::WebhookRules;
use chorus_chat::{Chat, ChatParts};
use chorus_clock::Clock;
use chorus_external::SecretKey;
use chorus_core::access::AccessPolicy;
use chorus_core::broker::Backplane;
use chorus_core::broker::memory::MemoryBroker;
use chorus_core::metrics::CoreMetrics;
use chorus_core::{Executor, Hub, HubConfig, HubParts, NodeId};
use chorus_llm::{FaultInjection, Models, ModelsContext, ProcessEnv, TokenCounter};
use chorus_server::health::{AgentsCheck, StoreCheck};
use chorus_tools::{ToolDeps, ToolMetrics, ToolRegistry};
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
    agents: Runtime,
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

        // External agents: the address policy their webhooks are held to and the key their secrets derive from.
        let external = &config.external_agents;
        let (webhook_key, key_origin) =
            SecretKey::resolve(external.secret_key.as_deref(), external.secret_key_file.as_deref(), &config.data_dir).context("external_agents secret key")?;
        tracing::info!(key = %key_origin, "webhook signing key");
        let webhook_policy = Arc::new(external.address_policy().context("external_agents.allowed_networks")?);
        let webhook_client = chorus_external::WebhookClient::new(
            external,
            webhook_policy.clone(),
            clock.clone(),
            chorus_external::WebhookMetrics::register(&mut registry),
        )
        .context("external_agents: the webhook client")?;
        let webhooks = WebhookRules {
            policy: webhook_policy,
            key: Arc::new(webhook_key),
            previous_secret_ttl: external.previous_secret_ttl,
        };

        // Agents' models and tools (the chat domain validates agent records against them).
        let agent_metrics = AgentMetrics::register(&mut registry);
        let tool_metrics = ToolMetrics::register(&mut registry);
        let tokens = TokenCounter::new().context("loading the tokenizer")?;
        // One client for every model (shared pools and TLS). Each streaming
        // call holds its own HTTP/1.1 connection (tens of KiB of buffers);
        // the idle ones a burst of runs leaves behind are bounded and closed
        // soon, not kept by the thousand for the default 90 s.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(PROVIDER_IDLE_CONNECTIONS_PER_HOST)
            .pool_idle_timeout(PROVIDER_IDLE_TIMEOUT)
            .build()
            .context("building the HTTP client for model providers")?;
        let faults = if cfg!(feature = "fault-injection") { FaultInjection::Allowed } else { FaultInjection::Refused };
        let models = Models::build(
            &config.agents.models,
            &ModelsContext { http, tokens: tokens.clone(), resilience: config.agents.resilience.clone(), faults, secrets: &ProcessEnv },
        )
        .context("agents.models")?;
        let tools_config = config.agents.tools_config().context("agents")?;
        let tools = ToolRegistry::start(
            &tools_config,
            ToolDeps { clock: clock.clone(), metrics: tool_metrics, extra_tools: Vec::new() },
        )
        .context("agents: tools")?;
        // Ordered start: MCP servers connected (or failed once) before agents may run.
        if !tools.wait_for_mcp(config.agents.mcp_connect_timeout).await {
            let (connected, all) = tools.mcp_connected();
            tracing::warn!(connected, all, "not every MCP server is connected; their tools are left out until they are");
        }
        let mut chat_config = config.chat.clone();
        // Agents may name exactly what this server runs.
        chat_config.allowed_models = models.names();
        chat_config.allowed_tools = tools.tool_names().to_vec();
        tracing::info!(models = ?chat_config.allowed_models, tools = ?chat_config.allowed_tools, "agent models and tools");

        // Chat domain.
        let (intake, intake_rx) = Intake::channel(INTAKE_CAPACITY, agent_metrics.clone());
        let chat = Chat::new(ChatParts {
            store: store.clone(),
            hub: hub.clone(),
            config: chat_config,
            clock: clock.clone(),
            secret,
            jwt,
            run_guard: config.agents.run_guard(),
            run_intake: Some(Arc::new(intake)),
            webhooks,
        });
        chat.accounts.password_checks().register(&mut registry);
        chat.accounts.bootstrap().await.context("bootstrapping accounts")?;
        let background = CancellationToken::new();
        let background_tasks = tokio_util::task::TaskTracker::new();
        chat.spawn_background(&background_tasks, background.clone());
        spawn_store_probe(&background_tasks, background.clone(), hub.metrics().clone(), store_check.clone());
        tracing::info!("chat domain ready");

        // Agent runtime: ends what a crash left running, resumes what is queued.
        let agents = Runtime::start(RuntimeParts {
            store: store.clone(),
            hub: hub.clone(),
            chat: chat.clone(),
            models,
            tools,
            tokens,
            config: config.agents.clone(),
            metrics: agent_metrics,
            core_metrics: hub.metrics().clone(),
            intake: intake_rx,
            webhooks: Some(webhook_client),
        })
        .await
        .context("starting the agent runtime")?;
        tracing::info!(enabled = config.agents.enabled, "agent runtime ready");

        // Edge.
        let executor = Arc::new(Executor::new(hub.clone(), chat.accounts.token_verifier(), Arc::new(chat.messages.clone()), Some(Arc::new(agents.clone()))));
        let state = AppState::new(AppParts {
            config: config.server.clone(),
            hub: hub.clone(),
            executor,
            api_keys: Arc::new(ServerKeys { configured: ApiKeys::new(&config.auth.api_keys), chat: chat.clone() }),
            origins: origins_rx,
            registry: Arc::new(registry),
            http_metrics,
            health: vec![store_check, Arc::new(AgentsCheck(agents.clone()))],
            agents: Some(agents.clone()),
            web: config.web.clone(),
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
            agents,
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

    pub fn agents(&self) -> &Runtime {
        &self.agents
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
        // Runs finish (or end with `shutdown`) while clients are still connected to see it.
        let started = tokio::time::Instant::now();
        self.agents.shutdown(self.drain_limit).await;
        let drain_limit = self.drain_limit.saturating_sub(started.elapsed());
        self.hub.shutdown();
        let hub = self.hub.clone();
        let background = self.background.clone();
        let tasks = self.background_tasks.clone();
        let serving = self.serving;
        let drained = tokio::time::timeout(drain_limit, async move {
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

/// Idle connections kept per model provider host, and for how long.
const PROVIDER_IDLE_CONNECTIONS_PER_HOST: usize = 32;
const PROVIDER_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}
