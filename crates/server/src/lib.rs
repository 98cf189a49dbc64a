//! The HTTP edge of Chorus: transports (WebSocket, SSE) as thin adapters over
//! the core's session and executor, the server publish API, health, metrics,
//! and the middleware every request passes through (request id, errors as the
//! standard object, CORS, metrics, logs). This crate and `chorus-protocol`
//! are the only ones that know the wire format.

pub mod admission;
pub mod app;
pub mod config;
pub mod credentials;
pub mod error;
pub mod extract;
pub mod firehose;
pub mod health;
pub mod health_check;
pub mod listener;
pub mod metrics;
pub mod origin;
pub mod publish;
pub mod request_id;
pub mod rest;
pub mod sse;
pub mod state;
pub mod ws;
pub mod ws_close;

pub use app::app;
pub use config::{OriginPolicy, ServerConfig};
pub use credentials::{ApiKeyCheck, ApiPrincipal, KeyRights};
pub use error::ApiError;
pub use health::{ComponentReport, HealthCheck, Status};
pub use state::{AppParts, AppState, HttpMetrics};
