//! `/health` (cheap liveness) and `/health/detailed` (per component).

use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chorus_core::broker::Health;
use serde::Serialize;
use serde_json::json;

pub use crate::health_check::{ComponentReport, HealthCheck, Status};
use crate::state::AppState;

/// `/health`: `ok` while serving, `draining` before shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    Ok,
    Draining,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Live {
    pub status: Liveness,
}

/// The body of `/health/detailed`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HealthReport {
    /// The worst status of any component.
    pub status: Status,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub uptime_seconds: u64,
    pub version: String,
    /// One report per component: `broker`, `hub`, `memory`, `store`, ...
    #[schema(schema_with = component_reports)]
    pub checks: serde_json::Map<String, serde_json::Value>,
}

/// `checks`: component name -> `{status, ...details}`; the details differ per component.
fn component_reports() -> utoipa::openapi::schema::Object {
    use utoipa::PartialSchema;
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
    let report = ObjectBuilder::new()
        .schema_type(Type::Object)
        .property("status", Status::schema())
        .required("status")
        .additional_properties(Some(AdditionalProperties::FreeForm(true)));
    ObjectBuilder::new().schema_type(Type::Object).additional_properties(Some(report)).build()
}

/// Liveness: answers without touching any dependency.
#[utoipa::path(get, path = "/health", tag = "ops", responses(
    (status = 200, description = "Serving", body = Live, example = json!({"status": "ok"})),
    (status = 503, description = "Draining before shutdown", body = Live, example = json!({"status": "draining"})),
))]
pub async fn live(State(app): State<AppState>) -> impl IntoResponse {
    if app.hub().is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Live { status: Liveness::Draining }))
    } else {
        (StatusCode::OK, Json(Live { status: Liveness::Ok }))
    }
}

/// Every component, and an overall status that is the worst of them.
#[utoipa::path(get, path = "/health/detailed", tag = "ops", responses(
    (status = 200, description = "Healthy or degraded; `checks` has one entry per component (broker, hub, memory, store, ...)", body = HealthReport),
    (status = 503, description = "A component is unhealthy", body = HealthReport),
))]
pub async fn detailed(State(app): State<AppState>) -> impl IntoResponse {
    let hub = app.hub();
    let mut checks = serde_json::Map::new();
    let mut overall = Status::Healthy;

    let broker = match hub.broker_health() {
        Health::Up { detail } => ComponentReport { status: Status::Healthy, details: json!({ "detail": detail }) },
        Health::Degraded { detail } => ComponentReport { status: Status::Degraded, details: json!({ "detail": detail }) },
        Health::Down { detail } => ComponentReport { status: Status::Unhealthy, details: json!({ "detail": detail }) },
    };
    let (queued, max_queue) = hub.queue_depths();
    let hub_report = ComponentReport {
        status: if hub.is_shutting_down() { Status::Degraded } else { Status::Healthy },
        details: json!({
            "node": hub.node().as_str(),
            "connections": hub.connection_count(),
            "subscriptions": hub.subscription_count(),
            "channels": hub.channel_count(),
            "typing": hub.typing_count(),
            "limiter_entries": hub.limiter_entries(),
            "outbound_queued": queued,
            "outbound_queue_max": max_queue,
            "tasks": hub.task_count(),
            // Content creation is refused while on; not a health problem.
            "maintenance": hub.in_maintenance(),
            "firehose_readers": hub.firehose_readers(),
        }),
    };
    let memory = memory_report(rss_bytes(), app.config().memory_budget_bytes);
    for (name, report) in [("broker", broker), ("hub", hub_report), ("memory", memory)] {
        overall = overall.max(report.status);
        checks.insert(name.to_owned(), serde_json::to_value(report).unwrap_or_default());
    }
    for check in app.health_checks() {
        let report = check.check().await;
        overall = overall.max(report.status);
        checks.insert(check.name().to_owned(), serde_json::to_value(report).unwrap_or_default());
    }
    let code = if overall == Status::Unhealthy { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    let body = HealthReport {
        status: overall,
        timestamp: chorus_protocol::timestamp::format_ms(app.hub().now_ms()),
        uptime_seconds: app.uptime().as_secs(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        checks,
    };
    (code, Json(body))
}

/// Memory against its budget: degraded from 90 % of it, unhealthy above it.
/// A node that cannot read its RSS says so (degraded) rather than claiming health.
pub fn memory_report(rss: Option<u64>, budget: u64) -> ComponentReport {
    let Some(rss) = rss else {
        return ComponentReport { status: Status::Degraded, details: json!({ "rss_bytes": null, "budget_bytes": budget, "detail": "resident memory could not be read" }) };
    };
    let used = if budget == 0 { f64::INFINITY } else { rss as f64 / budget as f64 };
    let (status, detail) = if used > 1.0 {
        (Status::Unhealthy, "resident memory is above its budget (server.memory_budget_bytes)")
    } else if used >= 0.9 {
        (Status::Degraded, "resident memory is above 90% of its budget (server.memory_budget_bytes)")
    } else {
        (Status::Healthy, "within budget")
    };
    let percent = (used * 1000.0).round() / 10.0;
    ComponentReport { status, details: json!({ "rss_bytes": rss, "budget_bytes": budget, "budget_used_pct": if percent.is_finite() { json!(percent) } else { json!(null) }, "detail": detail }) }
}

/// Resident set size of this process, from `/proc/self/statm` (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The store in `/health/detailed`: a cheap query, its latency, the pool.
pub struct StoreCheck {
    store: std::sync::Arc<dyn chorus_store::Store>,
    latency: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl StoreCheck {
    pub fn new(store: std::sync::Arc<dyn chorus_store::Store>) -> Self {
        Self { store, latency: None }
    }

    /// Also records each probe's latency in `histogram`.
    pub fn with_latency(mut self, histogram: prometheus_client::metrics::histogram::Histogram) -> Self {
        self.latency = Some(histogram);
        self
    }

    /// Runs the probe once, recording its latency; `Err` carries the failure.
    pub async fn probe(&self) -> Result<std::time::Duration, String> {
        match self.store.health().await {
            Ok(h) => {
                if let Some(hist) = &self.latency {
                    hist.observe(h.latency.as_secs_f64());
                }
                Ok(h.latency)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

#[async_trait]
impl HealthCheck for StoreCheck {
    fn name(&self) -> &'static str {
        "store"
    }

    async fn check(&self) -> ComponentReport {
        let pool = self.store.pool_stats();
        let engine = format!("{:?}", self.store.engine()).to_lowercase();
        match self.probe().await {
            Ok(latency) => ComponentReport {
                status: Status::Healthy,
                details: json!({
                    "engine": engine,
                    "latency_ms": latency.as_secs_f64() * 1000.0,
                    "pool": {"size": pool.size, "idle": pool.idle, "max": pool.max},
                }),
            },
            Err(e) => ComponentReport {
                status: Status::Unhealthy,
                details: json!({"engine": engine, "error": e, "pool": {"size": pool.size, "idle": pool.idle, "max": pool.max}}),
            },
        }
    }
}

/// Store pool gauges (computed at scrape time) and the store latency
/// histogram, which the returned check fills on every probe.
pub fn register_store_metrics(
    registry: &mut prometheus_client::registry::Registry,
    store: std::sync::Arc<dyn chorus_store::Store>,
) -> StoreCheck {
    let latency = prometheus_client::metrics::histogram::Histogram::new(chorus_core::metrics::LATENCY_BUCKETS);
    registry.register("store_latency_seconds", "Latency of store health probes", latency.clone());
    let (s1, s2, s3) = (store.clone(), store.clone(), store.clone());
    chorus_core::metrics::ScrapeGauges::default()
        .with("store_pool_size", "Store connections open", move || i64::from(s1.pool_stats().size))
        .with("store_pool_idle", "Store connections idle", move || i64::from(s2.pool_stats().idle))
        .with("store_pool_max", "Store connections allowed", move || i64::from(s3.pool_stats().max))
        .register(registry);
    StoreCheck::new(store).with_latency(latency)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_judged_against_its_budget() {
        let mib = 1024 * 1024;
        assert_eq!(memory_report(Some(100 * mib), 1000 * mib).status, Status::Healthy);
        assert_eq!(memory_report(Some(950 * mib), 1000 * mib).status, Status::Degraded);
        let over = memory_report(Some(1001 * mib), 1000 * mib);
        assert_eq!(over.status, Status::Unhealthy);
        assert_eq!(over.details["budget_bytes"], 1000 * mib);
        assert_eq!(over.details["rss_bytes"], 1001 * mib);
        assert_eq!(memory_report(None, 1000 * mib).status, Status::Degraded);
    }
}
