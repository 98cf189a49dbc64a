//! What every handler can reach.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chorus_core::{Executor, Hub};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio::sync::watch;

use crate::config::{OriginPolicy, ServerConfig};
use crate::credentials::ApiKeyCheck;
use crate::health_check::HealthCheck;

type Labels = Vec<(&'static str, String)>;
type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(chorus_core::metrics::LATENCY_BUCKETS)
}

/// HTTP request metrics: count by route, method and status; latency by route.
#[derive(Debug, Clone)]
pub struct HttpMetrics {
    requests: Family<Labels, Counter>,
    latency: HistogramFamily,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<Labels, Counter>::default();
        registry.register("http_requests", "HTTP requests by route, method and status", requests.clone());
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register("http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        Self { requests, latency }
    }

    pub fn observe(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        // Clients choose methods: anything outside the standard ones is one label.
        let method = match method {
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS" => method,
            _ => "OTHER",
        };
        self.requests
            .get_or_create(&vec![("route", route.to_owned()), ("method", method.to_owned()), ("status", status.to_string())])
            .inc();
        self.latency.get_or_create(&vec![("route", route.to_owned())]).observe(elapsed.as_secs_f64());
    }
}

/// Everything the composition root wires into the edge.
pub struct AppParts {
    pub config: ServerConfig,
    pub hub: Hub,
    pub executor: Arc<Executor>,
    pub api_keys: Arc<dyn ApiKeyCheck>,
    pub origins: watch::Receiver<OriginPolicy>,
    /// The registry every metric was registered in; rendered at `/metrics`.
    pub registry: Arc<Registry>,
    pub http_metrics: HttpMetrics,
    /// Extra components for `/health/detailed` (the store, ...).
    pub health: Vec<Arc<dyn HealthCheck>>,
}

pub(crate) struct Inner {
    pub parts: AppParts,
    pub started: Instant,
    pub openapi: OnceLock<serde_json::Value>,
    /// Publications per API key (server publish API).
    pub publish_limiter: chorus_core::limiter::KeyedLimiter<String>,
}

/// Cheap to clone; shared by every handler.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(Inner { parts, started: Instant::now(), openapi: OnceLock::new(), publish_limiter: chorus_core::limiter::KeyedLimiter::new() }))
    }

    pub fn hub(&self) -> &Hub {
        &self.0.parts.hub
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.0.parts.executor
    }

    pub fn config(&self) -> &ServerConfig {
        &self.0.parts.config
    }

    pub fn origins(&self) -> OriginPolicy {
        self.0.parts.origins.borrow().clone()
    }

    pub fn api_keys(&self) -> &Arc<dyn ApiKeyCheck> {
        &self.0.parts.api_keys
    }

    pub fn registry(&self) -> &Registry {
        &self.0.parts.registry
    }

    pub fn http_metrics(&self) -> &HttpMetrics {
        &self.0.parts.http_metrics
    }

    pub fn health_checks(&self) -> &[Arc<dyn HealthCheck>] {
        &self.0.parts.health
    }

    /// The OpenAPI document of this server's routes.
    pub fn openapi(&self) -> &serde_json::Value {
        static EMPTY: serde_json::Value = serde_json::Value::Null;
        self.0.openapi.get().unwrap_or(&EMPTY)
    }

    pub(crate) fn set_openapi(&self, doc: utoipa::openapi::OpenApi, chat: &chorus_chat::Chat) {
        let mut value = serde_json::to_value(&doc).unwrap_or_default();
        crate::rest::openapi::refine(&mut value, &chat.deps().config);
        let _ = self.0.openapi.set(value);
    }

    /// Takes one publication from the key's budget: `Err` says how long until one is available.
    /// Bounded like every keyed limiter (`limits.limiter_entries`); refilled entries make room.
    pub fn check_publish_rate(&self, principal: &crate::credentials::ApiPrincipal) -> Result<(), chorus_core::limiter::Refusal> {
        let r = self.hub().rates();
        let rate = match principal.rights {
            crate::credentials::KeyRights::Server => chorus_core::limiter::Rate { per_second: r.server_key_publishes_per_second, burst: r.server_key_publish_burst },
            crate::credentials::KeyRights::User(_) => chorus_core::limiter::Rate { per_second: r.api_key_publishes_per_second, burst: r.api_key_publish_burst },
        };
        let cap = self.hub().limits().limiter_entries;
        self.0.publish_limiter.check(&principal.key_id, rate, cap, tokio::time::Instant::now())
    }

    /// Keys tracked by the publish limiter.
    pub fn publish_limiter_entries(&self) -> usize {
        self.0.publish_limiter.len()
    }

    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }
}
