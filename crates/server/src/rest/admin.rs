//! REST routes: administration (administrators only: 401 without a token,
//! 403 for anyone else). Connections, disconnects, the cleanup pass,
//! maintenance mode. (The admin firehose WebSocket is `crate::firehose`.)

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use chorus_chat::Chat;
use chorus_chat::admin::{CleanupReport, ConnectionList, DisconnectResult, MaintenanceView};
use chorus_protocol::ErrorCode;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::rest::openapi::ErrorBody;
use crate::rest::{AdminUser, RestState};

pub fn routes() -> OpenApiRouter<RestState> {
    OpenApiRouter::new()
        .routes(routes!(list_connections))
        .routes(routes!(disconnect_user))
        .routes(routes!(cleanup))
        .routes(routes!(get_maintenance, set_maintenance))
}

/// Maintenance mode on or off.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceBody {
    /// True refuses everything that creates content (messages, channels,
    /// agents, publications) on every node; false accepts it again.
    pub enabled: bool,
    /// Shown in every refusal: at most 500 characters once trimmed, no
    /// control characters; empty or absent means none.
    #[serde(default)]
    #[schema(max_length = 500, example = "upgrading the database, back at 10:30 UTC")]
    pub message: Option<String>,
}

/// Paging of the connection list.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ConnectionsParams {
    /// 1 to 1000; 100 when absent. The oldest connections come first.
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// The `next_after` of the previous page: this page starts after it.
    pub after: Option<String>,
}

/// `GET /api/v1/admin/connections`: the live connections (WebSocket and
/// SSE) of every node, oldest first, each with the node holding it (and its
/// subscriptions when that is the answering node). Paged with `limit` and
/// `after`; `total` counts them all. While the broker cannot be reached,
/// `scope` is `node` and only the answering node's connections are listed.
#[utoipa::path(get, path = "/api/v1/admin/connections", tag = "admin", params(ConnectionsParams), security(("bearer" = [])),
    responses(
        (status = 200, description = "A page of every node's connections and their total", body = ConnectionList),
        (status = 400, description = "Invalid or unknown query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn list_connections(State(chat): State<Arc<Chat>>, AdminUser(caller): AdminUser, RawQuery(query): RawQuery) -> Result<Json<ConnectionList>, ApiError> {
    let (mut limit, mut after) = (None, None);
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "limit" => limit = Some(v.parse().map_err(|_| ApiError::new(ErrorCode::InvalidField, "limit: must be an integer from 1 to 1000"))?),
            "after" => after = Some(v.into_owned()),
            _ => return Err(ApiError::new(ErrorCode::InvalidField, format!("{k}: unknown query parameter (known: limit, after)"))),
        }
    }
    Ok(Json(chat.admin.connections(&caller, limit, after.as_deref()).await?))
}

/// `POST /api/v1/admin/users/{id}/disconnect`: closes every connection of the
/// user on every node with close code 4009 (`admin_disconnect`).
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/disconnect", tag = "admin", security(("bearer" = [])),
    params(("id" = String, Path, description = "User id")),
    responses(
        (status = 200, description = "Disconnected; `closed` counts this node's connections", body = DisconnectResult),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 404, description = "No such user", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store or the broker is unavailable (this node's connections are closed all the same)", body = ErrorBody),
    ))]
pub async fn disconnect_user(State(chat): State<Arc<Chat>>, AdminUser(caller): AdminUser, Path(id): Path<String>) -> Result<Json<DisconnectResult>, ApiError> {
    Ok(Json(chat.admin.disconnect_user(&caller, &id).await?))
}

/// `POST /api/v1/admin/cleanup`: runs a cleanup pass now (expired sessions,
/// idempotency keys past 24 h, message retention, idle rate-limiter
/// entries) and reports what it removed. The same pass runs in the
/// background every `chat.cleanup_interval`.
#[utoipa::path(post, path = "/api/v1/admin/cleanup", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "What the pass removed", body = CleanupReport),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn cleanup(State(chat): State<Arc<Chat>>, AdminUser(caller): AdminUser) -> Result<Json<CleanupReport>, ApiError> {
    Ok(Json(chat.admin.force_cleanup(&caller).await?))
}

/// `GET /api/v1/admin/maintenance`: whether maintenance mode is on.
#[utoipa::path(get, path = "/api/v1/admin/maintenance", tag = "admin", security(("bearer" = [])),
    responses(
        (status = 200, description = "Maintenance mode as this node sees it", body = MaintenanceView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn get_maintenance(State(chat): State<Arc<Chat>>, AdminUser(caller): AdminUser) -> Result<Json<MaintenanceView>, ApiError> {
    Ok(Json(chat.admin.maintenance(&caller)?))
}

/// `PUT /api/v1/admin/maintenance`: switches maintenance mode on every node.
/// While on, creating content answers 503 `maintenance` (WebSocket: the
/// `maintenance` error) with the message; sign-in, reads and administration
/// keep working.
#[utoipa::path(put, path = "/api/v1/admin/maintenance", tag = "admin", request_body = MaintenanceBody, security(("bearer" = [])),
    responses(
        (status = 200, description = "The new state", body = MaintenanceView),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an administrator", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "Applied on this node but other nodes could not be told, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn set_maintenance(State(chat): State<Arc<Chat>>, AdminUser(caller): AdminUser, body: Bytes) -> Result<Json<MaintenanceView>, ApiError> {
    let body: MaintenanceBody = parse_json(&body)?;
    Ok(Json(chat.admin.set_maintenance(&caller, body.enabled, body.message).await?))
}
