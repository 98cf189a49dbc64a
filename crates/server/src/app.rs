//! The router: every route and the layers around them.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};

use crate::state::AppState;
use crate::{error, health, metrics, origin, publish, request_id, sse, ws};

/// Builds the whole HTTP application. `extra` carries routes of other crates
/// (the chat REST API) so they share the same layers.
pub fn app(state: AppState, extra: Router<AppState>) -> Router {
    let body_limit = state.config().body_limit_bytes;
    let cors = origin::cors(state.0.parts.origins.clone());
    Router::new()
        .route("/health", get(health::live))
        .route("/health/detailed", get(health::detailed))
        .route("/metrics", get(metrics::render))
        .route("/ws", get(ws::upgrade))
        .route("/sse", get(sse::stream))
        .route("/api/v1/publish", post(publish::publish))
        .route("/api/v1/publish/batch", post(publish::publish_batch))
        .route("/api/v1/connections/{id}/commands", post(sse::command))
        .merge(extra)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(from_fn(request_id::stash_route))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors)
        .layer(from_fn_with_state(state.clone(), request_id::outermost))
        .with_state(state)
}
