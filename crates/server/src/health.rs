//! `/health` (cheap liveness) and `/health/detailed` (per component).

use async_trait::async_trait;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use chorus_core::broker::Health;
use serde::Serialize;
use serde_json::json;

use crate::state::AppState;

/// The state of one component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    pub status: Status,
    #[serde(flatten)]
    pub details: serde_json::Value,
}

/// A component that reports into `/health/detailed`.
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn check(&self) -> ComponentReport;
}

/// Liveness: answers without touching any dependency.
pub async fn live(State(app): State<AppState>) -> impl IntoResponse {
    if app.hub().is_shutting_down() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "draining" })))
    } else {
        (StatusCode::OK, Json(json!({ "status": "ok" })))
    }
}

/// Every component, and an overall status that is the worst of them.
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
        }),
    };
    let memory = ComponentReport { status: Status::Healthy, details: json!({ "rss_bytes": rss_bytes() }) };
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
    let body = json!({
        "status": overall,
        "timestamp": chorus_protocol::timestamp::format_ms(chorus_protocol::timestamp::now_ms()),
        "uptime_seconds": app.uptime().as_secs(),
        "version": env!("CARGO_PKG_VERSION"),
        "checks": checks,
    });
    (code, Json(body))
}

/// Resident set size of this process, from `/proc/self/statm` (Linux).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
