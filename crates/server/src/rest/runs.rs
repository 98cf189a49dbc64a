//! REST routes: agent runs.
//!
//! Access: runs are visible to the members of their channel (and
//! administrators); anyone else gets 404. Cancelling is for the person the
//! run is accountable to, the agent's owner, the channel's owners and
//! administrators (403 for other members), and is idempotent.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use chorus_agents::{Runtime, RunListFilter, RunView};
use chorus_protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::rest::{AuthUser, RestState};
use crate::rest::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<RestState> {
    OpenApiRouter::new()
        .routes(routes!(get_run))
        .routes(routes!(cancel_run))
        .routes(routes!(list_channel_runs))
        .routes(routes!(start_run))
        .routes(routes!(crate::rest::run_events::push_run_events))
}

/// The agent runtime, or 503 on a server running without one.
fn runtime(rest: &RestState) -> Result<&Runtime, ApiError> {
    rest.app().agents().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "this server runs no agent runtime"))
}

/// Starts a run of the agent in a channel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRunBody {
    /// A channel the caller and the agent are both members of.
    pub channel_id: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RunList {
    /// Active runs oldest first; all runs newest first.
    pub runs: Vec<RunView>,
}

/// Which runs to list.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RunListParams {
    /// `active` (queued and running: what a reconnecting UI needs to rebuild its live run
    /// cards) or `all`; `all` when absent.
    pub status: Option<String>,
    /// 1 to 200; 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

/// `GET /api/v1/runs/{id}`: one run.
#[utoipa::path(get, path = "/api/v1/runs/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run; while it is going, `text` holds the answer streamed so far", body = RunView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such run, or the caller is not a member of its channel", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "No agent runtime, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn get_run(State(rest): State<RestState>, AuthUser(caller): AuthUser, Path(id): Path<String>) -> Result<Json<RunView>, ApiError> {
    Ok(Json(runtime(&rest)?.get_run(&caller, &id).await?))
}

/// `POST /api/v1/runs/{id}/cancel`: cancels a run (idempotent). Its
/// `agent_error` with code `cancelled` follows on the channel; the answer
/// streamed so far is kept.
#[utoipa::path(post, path = "/api/v1/runs/{id}/cancel", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run after the request: `cancelled`, or the ending it already had", body = RunView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not who started the run, the agent's owner, a channel owner or an administrator", body = ErrorBody),
        (status = 404, description = "No such run, or the caller is not a member of its channel", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "No agent runtime, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn cancel_run(State(rest): State<RestState>, AuthUser(caller): AuthUser, Path(id): Path<String>) -> Result<Json<RunView>, ApiError> {
    Ok(Json(runtime(&rest)?.cancel_run(&caller, &id).await?))
}

/// `GET /api/v1/channels/{id}/runs?status=active`: a channel's runs.
#[utoipa::path(get, path = "/api/v1/channels/{id}/runs", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id"), RunListParams),
    responses(
        (status = 200, description = "The runs", body = RunList),
        (status = 400, description = "Unknown or invalid query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such channel, or the caller is not a member", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "No agent runtime, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn list_channel_runs(
    State(rest): State<RestState>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<RunList>, ApiError> {
    let mut filter = RunListFilter::All;
    let mut limit = 50;
    for (k, v) in form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        let bad = |what: &str| ApiError::new(ErrorCode::InvalidField, format!("{k}: {what}"));
        match k.as_ref() {
            "status" => {
                filter = match v.as_ref() {
                    "active" => RunListFilter::Active,
                    "all" => RunListFilter::All,
                    _ => return Err(bad("must be `active` or `all`")),
                }
            }
            "limit" => limit = v.parse().map_err(|_| bad("must be an integer from 1 to 200"))?,
            _ => return Err(bad("unknown query parameter (known: status, limit)")),
        }
    }
    let runs = runtime(&rest)?.list_runs(&caller, &id, filter, limit).await?;
    Ok(Json(RunList { runs }))
}

/// `POST /api/v1/agents/{id}/runs`: starts a run of the agent in a channel
/// explicitly (e.g. a `manual` agent), accountable to the caller. Its events
/// follow on the channel's stream, from `agent_queued`.
#[utoipa::path(post, path = "/api/v1/agents/{id}/runs", tag = "agents", request_body = StartRunBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 202, description = "Accepted: the run, usually `queued`; `failed` with `error.code` `queue_full` or `busy` when it could not be queued", body = RunView),
        (status = 400, description = "Malformed body", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such agent or channel, or the caller is not a member of the channel", body = ErrorBody),
        (status = 409, description = "The agent is not a member of the channel", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "Maintenance mode (`maintenance`), shutting down, no agent runtime, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn start_run(
    State(rest): State<RestState>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let body: StartRunBody = parse_json(&body)?;
    let run = runtime(&rest)?.start_run(&caller, &id, &body.channel_id).await?;
    Ok((StatusCode::ACCEPTED, Json(run)))
}
