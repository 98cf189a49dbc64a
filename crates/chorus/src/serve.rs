//! `chorus serve`: the composition root. Starts components in order
//! (config, auth, metrics, broker, hub, executor, HTTP), serves, reloads on
//! SIGHUP, and on SIGTERM/SIGINT stops accepting, asks clients to reconnect
//! (1012), drains within the limit and flushes logs.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use chorus_auth::{ApiKeys, JwtVerifier};
use chorus_core::access::AccessPolicy;
use chorus_core::broker::memory::MemoryBroker;
use chorus_core::broker::Backplane;
use chorus_core::clock::SystemClock;
use chorus_core::metrics::CoreMetrics;
use chorus_core::{Executor, Hub, HubConfig, HubParts, NodeId};
use chorus_server::{ApiKeyCheck, ApiPrincipal, AppParts, AppState, HttpMetrics};
use prometheus_client::registry::Registry;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{BrokerKind, Config};
use crate::logging::Logging;

/// API keys from the configuration file.
struct ConfiguredKeys(ApiKeys);

#[async_trait]
impl ApiKeyCheck for ConfiguredKeys {
    async fn check(&self, key: &str) -> Option<ApiPrincipal> {
        self.0.check(key).map(|key_id| ApiPrincipal { key_id })
    }
}

/// Where the running configuration can be changed.
struct Reloadable {
    path: Option<PathBuf>,
    current: Config,
    limits: watch::Sender<chorus_core::config::Limits>,
    rates: watch::Sender<chorus_core::config::RateLimits>,
    origins: watch::Sender<chorus_server::OriginPolicy>,
}

impl Reloadable {
    fn reload(&mut self, logging: &Logging) {
        let new = match Config::load(self.path.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "configuration reload refused; the running configuration is kept");
                return;
            }
        };
        let changed = self.current.reloadable_changes(&new);
        let restart_only = self.current.restart_only_changes(&new);
        if let Err(e) = logging.set_level(&new.log.level) {
            tracing::error!(error = %e, "log level not changed");
        }
        self.limits.send_replace(new.limits.clone());
        self.rates.send_replace(new.rate_limits.clone());
        self.origins.send_replace(new.cors.clone());
        self.current.limits = new.limits;
        self.current.rate_limits = new.rate_limits;
        self.current.cors = new.cors;
        self.current.log.level = new.log.level;
        if changed.is_empty() {
            tracing::info!("configuration reloaded; nothing changed");
        } else {
            tracing::info!(changed = ?changed, "configuration reloaded");
        }
        if !restart_only.is_empty() {
            tracing::warn!(sections = ?restart_only, "these changes take effect only after a restart");
        }
    }
}

pub async fn run(path: Option<PathBuf>, config: Config, logging: &Logging) -> anyhow::Result<()> {
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting");
    std::fs::create_dir_all(&config.data_dir).with_context(|| format!("creating data directory {}", config.data_dir.display()))?;

    // Auth.
    let (verifier, secret_origin) = JwtVerifier::from_config(&config.auth, &config.data_dir).context("auth")?;
    if let Some(origin) = secret_origin {
        tracing::info!(secret = %origin, "token signing secret");
    }
    let api_keys = Arc::new(ConfiguredKeys(ApiKeys::new(&config.auth.api_keys)));

    // Metrics.
    let mut registry = Registry::with_prefix("chorus");
    let core_metrics = CoreMetrics::register(&mut registry);
    let http_metrics = HttpMetrics::register(&mut registry);

    // Broker.
    let node = config.node_id.as_deref().map_or_else(NodeId::random, NodeId::new);
    let backplane = match config.broker.kind {
        BrokerKind::Memory => Backplane::memory(Arc::new(MemoryBroker::new(config.broker.memory.clone()))),
    };
    tracing::info!(kind = ?config.broker.kind, "broker ready");

    // Hub.
    let (limits_tx, limits_rx) = watch::channel(config.limits.clone());
    let (rates_tx, rates_rx) = watch::channel(config.rate_limits.clone());
    let (origins_tx, origins_rx) = watch::channel(config.cors.clone());
    let hub = Hub::start(HubParts {
        config: HubConfig { node: node.clone(), timing: config.timing.clone() },
        access: AccessPolicy::new(config.namespaces.clone(), None),
        limits: limits_rx,
        rates: rates_rx,
        backplane: backplane.clone(),
        metrics: core_metrics,
        clock: Arc::new(SystemClock),
    })
    .await
    .context("starting the hub")?;
    hub.register_gauges(&mut registry);
    tracing::info!(node = %node, "hub ready");

    let executor = Arc::new(Executor::new(hub.clone(), Arc::new(verifier), None));
    let state = AppState::new(AppParts {
        config: config.server.clone(),
        hub: hub.clone(),
        executor,
        api_keys,
        origins: origins_rx,
        registry: Arc::new(registry),
        http_metrics,
        health: Vec::new(),
    });
    let app = chorus_server::app(state, axum::Router::new());

    let listener = tokio::net::TcpListener::bind(config.server.bind).await.with_context(|| format!("binding {}", config.server.bind))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "listening");

    let stop_accepting = CancellationToken::new();
    let server = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop_accepting.clone().cancelled_owned());
    let mut server_task = tokio::spawn(async move { server.await });

    let mut reloadable = Reloadable { path, current: config, limits: limits_tx, rates: rates_tx, origins: origins_tx };
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = hup.recv() => reloadable.reload(logging),
            _ = term.recv() => { tracing::info!(signal = "SIGTERM", "shutting down"); break; }
            _ = int.recv() => { tracing::info!(signal = "SIGINT", "shutting down"); break; }
            r = &mut server_task => {
                r.context("server task")?.context("server")?;
                anyhow::bail!("server stopped unexpectedly");
            }
        }
    }

    // Stop accepting, ask everyone to reconnect elsewhere, then drain.
    let drain_limit = reloadable.current.timing.drain_limit;
    stop_accepting.cancel();
    hub.shutdown();
    let drained = tokio::time::timeout(drain_limit, async {
        let _ = (&mut server_task).await;
        hub.drained().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("stopped cleanly"),
        Err(_) => tracing::warn!(limit = ?drain_limit, "drain limit reached; stopping with work still open"),
    }
    Ok(())
}
