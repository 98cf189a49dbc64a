//! REST routes: agents.
//!
//! Access: an agent is visible to its owner and to administrators; anyone
//! else gets 404, so ids cannot be probed. Administrators may delete others'
//! agents but get 403 when they try to change one.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chorus_chat::Chat;
use chorus_chat::agents::{AgentPatch, NewAgentInput, ResponsePolicy};
use chorus_chat::views::AgentView;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::rest::openapi::ErrorBody;
use crate::rest::{AuthUser, RestState};

pub fn routes() -> OpenApiRouter<RestState> {
    OpenApiRouter::new()
        .routes(routes!(list_agents, create_agent))
        .routes(routes!(get_agent, update_agent, delete_agent))
}

// ---------------------------------------------------------------- bodies

/// A new agent. Bounds are the server's defaults (`chat.agent_*` settings).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgentBody {
    /// 1 to 50 characters once trimmed: ASCII letters, digits, `_`, `-`,
    /// space. Unique among the caller's agents, ignoring case.
    #[schema(min_length = 1, max_length = 50, pattern = "^[A-Za-z0-9_ -]+$", example = "Helper Bot")]
    pub name: String,
    /// The base personality: 10 to 500 characters once trimmed.
    #[schema(min_length = 10, max_length = 500, example = "A patient tutor who explains with small examples.")]
    pub persona: String,
    /// At most 10, each 1 to 100 characters once trimmed. None when absent.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub quirks: Option<Vec<String>>,
    /// One of the server's models (`chat.allowed_models`); its first when absent.
    #[serde(default)]
    #[schema(example = "demo")]
    pub model: Option<String>,
    /// Tools from the server's list (`chat.allowed_tools`), each at most once. None when absent.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    /// `mention` when absent.
    #[serde(default)]
    pub response_policy: Option<ResponsePolicy>,
}

/// A partial update: absent (or null) fields are left as they are; rules as on create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateAgentBody {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 50, pattern = "^[A-Za-z0-9_ -]+$")]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(min_length = 10, max_length = 500)]
    pub persona: Option<String>,
    /// Replaces the list; `[]` removes every quirk.
    #[serde(default)]
    #[schema(max_items = 10)]
    pub quirks: Option<Vec<String>>,
    #[serde(default)]
    pub model: Option<String>,
    /// Replaces the list; `[]` removes every tool.
    #[serde(default)]
    pub tools: Option<Vec<String>>,
    #[serde(default)]
    pub response_policy: Option<ResponsePolicy>,
}

// ---------------------------------------------------------------- responses

#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    /// The caller's agents, oldest first.
    pub agents: Vec<AgentView>,
}

// ---------------------------------------------------------------- routes

/// `POST /api/v1/agents`: creates an agent owned by the caller.
#[utoipa::path(post, path = "/api/v1/agents", tag = "agents", request_body = CreateAgentBody, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `agent_spawned` goes to the owner's `user:` channel", body = AgentView),
        (status = 400, description = "Malformed body or invalid field (name, persona, quirks, model, tools, response_policy)", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 409, description = "The caller already has an agent with this name (ignoring case)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Agent limit per user (`limit_exceeded`), agent creations per minute or request rate (`rate_limited`, with `Retry-After`)", body = ErrorBody),
        (status = 503, description = "Maintenance mode, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn create_agent(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<AgentView>), ApiError> {
    let body: CreateAgentBody = parse_json(&body)?;
    let input = NewAgentInput {
        name: body.name,
        persona: body.persona,
        quirks: body.quirks.unwrap_or_default(),
        model: body.model,
        tools: body.tools.unwrap_or_default(),
        response_policy: body.response_policy.unwrap_or_default(),
    };
    let view = chat.agents.create(&caller, input).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /api/v1/agents`: the caller's own agents.
#[utoipa::path(get, path = "/api/v1/agents", tag = "agents", security(("bearer" = [])),
    responses(
        (status = 200, description = "The agents the caller owns", body = AgentList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn list_agents(State(chat): State<Arc<Chat>>, AuthUser(caller): AuthUser) -> Result<Json<AgentList>, ApiError> {
    let agents = chat.agents.list(&caller).await?;
    Ok(Json(AgentList { agents }))
}

/// `GET /api/v1/agents/{id}`: one agent (its owner, or an administrator).
#[utoipa::path(get, path = "/api/v1/agents/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The agent", body = AgentView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such agent, or it belongs to someone else", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn get_agent(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<AgentView>, ApiError> {
    Ok(Json(chat.agents.get(&caller, &id).await?))
}

/// `PATCH /api/v1/agents/{id}`: changes the given fields (its owner).
/// Announced as `agent_updated` on the owner's `user:` channel and the
/// stream of every channel the agent is a member of.
#[utoipa::path(patch, path = "/api/v1/agents/{id}", tag = "agents", request_body = UpdateAgentBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 200, description = "The agent as it is now", body = AgentView),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "An administrator changing someone else's agent", body = ErrorBody),
        (status = 404, description = "No such agent, or it belongs to someone else", body = ErrorBody),
        (status = 409, description = "The owner already has another agent with this name (ignoring case)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "Maintenance mode, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn update_agent(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AgentView>, ApiError> {
    let body: UpdateAgentBody = parse_json(&body)?;
    let patch = AgentPatch {
        name: body.name,
        persona: body.persona,
        quirks: body.quirks,
        model: body.model,
        tools: body.tools,
        response_policy: body.response_policy,
    };
    Ok(Json(chat.agents.update(&caller, &id, patch).await?))
}

/// `DELETE /api/v1/agents/{id}`: deletes the agent and its channel
/// memberships (its owner, or an administrator). Announced as
/// `agent_despawned` on the owner's `user:` channel and the stream of every
/// channel it was in, and as `channel_member_removed` in each such channel.
#[utoipa::path(delete, path = "/api/v1/agents/{id}", tag = "agents", security(("bearer" = [])),
    params(("id" = String, Path, description = "Agent id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such agent, or it belongs to someone else", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn delete_agent(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    chat.agents.delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
