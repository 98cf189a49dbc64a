//! The router: every route and the layers around them.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use chorus_chat::Chat;
use axum::middleware::{from_fn, from_fn_with_state};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::rest::RestState;
use crate::rest::openapi::{self, ApiDoc};
use crate::state::AppState;
use crate::{error, firehose, health, metrics, origin, publish, request_id, rest, sse, ws};

/// Builds the whole HTTP application: the realtime edge on `state`, the
/// REST API (and the admin firehose) on `chat` beside it. Also fills in the
/// state's OpenAPI document, which is generated from the routes themselves.
pub fn app(state: AppState, chat: Chat) -> Router {
    let body_limit = state.config().body_limit_bytes;
    let cors = origin::cors(state.0.parts.origins.clone());
    let rest = rest::routes().routes(routes!(firehose::upgrade)).with_state(RestState::new(chat.clone(), state.clone()));
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(health::live))
        .routes(routes!(health::detailed))
        .routes(routes!(metrics::render))
        .routes(routes!(ws::upgrade))
        .routes(routes!(sse::stream))
        .routes(routes!(sse::command))
        .routes(routes!(publish::publish))
        .routes(routes!(publish::publish_batch))
        .routes(routes!(openapi::document))
        .merge(rest);
    let (router, doc) = api.split_for_parts();
    state.set_openapi(doc, &chat);
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .route_layer(from_fn(request_id::stash_route))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(cors)
        .layer(from_fn_with_state(state.clone(), request_id::outermost))
        .with_state(state)
}
