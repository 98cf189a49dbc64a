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
}

/// Cheap to clone; shared by every handler.
#[derive(Clone)]
pub struct AppState(pub(crate) Arc<Inner>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(Inner { parts, started: Instant::now(), openapi: OnceLock::new() }))
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

    pub(crate) fn set_openapi(&self, doc: utoipa::openapi::OpenApi) {
        let _ = self.0.openapi.set(serde_json::to_value(&doc).unwrap_or_default());
    }

    pub fn uptime(&self) -> Duration {
        self.0.started.elapsed()
    }
}
