//! What a component reports into `/health/detailed`: the [`HealthCheck`]
//! seam the composition root fills (the store, ...) and the
//! report's shape. Its own file, so the app state that holds the checks and
//! the handlers that run them both depend on it, not on each other.

use async_trait::async_trait;
use serde::Serialize;

/// The state of one component, or of the whole node (the worst of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = HealthStatus)]
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
