//! REST routes: sign-up, login, token refresh, logout, login sessions, API
//! keys, and the caller's own user.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::header::USER_AGENT;
use axum::http::request::Parts;
use chorus_chat::Chat;
use chorus_chat::accounts::{ApiKeyCreated, ClientInfo, NewAccount, TokenGrant};
use chorus_chat::keys::KeyScope;
use chorus_chat::views::{ApiKeyView, PublicUserView, SessionView, UserView};
use chorus_protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{AuthUser, RestState};
use crate::error::ApiError;
use crate::extract::parse_json;
use crate::listener::Peer;
use crate::rest::openapi::ErrorBody;

pub fn routes() -> OpenApiRouter<RestState> {
    OpenApiRouter::new()
        .routes(routes!(signup))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(list_sessions))
        .routes(routes!(revoke_session))
        .routes(routes!(me))
        .routes(routes!(find_user))
        .routes(routes!(create_api_key, list_api_keys))
        .routes(routes!(revoke_api_key))
}

/// The client's address (from the connection; no proxy headers are
/// trusted) and `User-Agent`.
pub struct Client(pub ClientInfo);

impl<S: Send + Sync> FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts.extensions.get::<ConnectInfo<Peer>>().map(|c| c.0.addr.ip());
        let user_agent = parts.headers.get(USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
        Ok(Client(ClientInfo { ip, user_agent }))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    /// 3-32 characters of `A-Z a-z 0-9 _ . -`; unique ignoring case.
    #[schema(example = "ann", min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.-]+$")]
    pub username: String,
    /// 8-128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    /// Optional; at most 254 characters, an address with one `@`.
    #[serde(default)]
    #[schema(max_length = 254, pattern = "^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+([.][A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?[.])+[A-Za-z][A-Za-z0-9]{0,61}[A-Za-z0-9]$")]
    pub email: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    #[schema(min_length = 1, max_length = 32)]
    pub username: String,
    #[schema(min_length = 1, max_length = 128)]
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    /// The refresh token of the last login or refresh; it works once.
    pub refresh_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyBody {
    /// 1-64 characters, to recognise the key by.
    #[schema(example = "agent backend", min_length = 1, max_length = 64)]
    pub name: String,
    /// Narrows the key to these channels (1 to 32 names or `namespace:prefix*`
    /// patterns), within what its owner may read. Not with `agent_id`.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 32, example = json!(["room:0193a5b2-4c1d-7e00-8000-000000000001"]))]
    pub channels: Option<Vec<String>>,
    /// Narrows the key to one of the caller's agents: it publishes only that
    /// agent's run events, into channels the agent is a member of. Not with `channels`.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    pub agent_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    /// Live sessions, newest first.
    pub sessions: Vec<SessionView>,
}

#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    /// All keys, revoked ones included, newest first.
    pub api_keys: Vec<ApiKeyView>,
}

/// `POST /api/v1/auth/signup`.
#[utoipa::path(post, path = "/api/v1/auth/signup", tag = "auth", request_body = SignupBody,
    responses(
        (status = 201, description = "The user was created; log in next", body = UserView),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 409, description = "The username is taken (ignoring case)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Too many sign-ups from this address (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store or password hashing unavailable", body = ErrorBody),
    ))]
pub async fn signup(State(chat): State<Arc<Chat>>, Client(client): Client, body: Bytes) -> Result<(StatusCode, Json<UserView>), ApiError> {
    let b: SignupBody = parse_json(&body)?;
    let user = chat.accounts.sign_up(NewAccount { username: b.username, password: b.password, email: b.email }, &client).await?;
    Ok((StatusCode::CREATED, Json(user)))
}

/// `POST /api/v1/auth/login`.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginBody,
    responses(
        (status = 200, description = "A new login session with its tokens", body = TokenGrant),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Wrong username or password (the same answer for both)", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Too many attempts for this account or from this address (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store or password hashing unavailable, or local sign-in disabled (no HMAC secret configured)", body = ErrorBody),
    ))]
pub async fn login(State(chat): State<Arc<Chat>>, Client(client): Client, body: Bytes) -> Result<Json<TokenGrant>, ApiError> {
    let b: LoginBody = parse_json(&body)?;
    Ok(Json(chat.accounts.login(&b.username, b.password, &client).await?))
}

/// `POST /api/v1/auth/refresh`.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshBody,
    responses(
        (status = 200, description = "A new access token and a new refresh token; the old refresh token stops working", body = TokenGrant),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Unknown or already used refresh token, or the session ended", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Too many refreshes from this address (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable, or local sign-in disabled", body = ErrorBody),
    ))]
pub async fn refresh(State(chat): State<Arc<Chat>>, Client(client): Client, body: Bytes) -> Result<Json<TokenGrant>, ApiError> {
    let b: RefreshBody = parse_json(&body)?;
    Ok(Json(chat.accounts.refresh(&b.refresh_token, &client).await?))
}

/// `POST /api/v1/auth/logout`.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 204, description = "The caller's session was revoked; its tokens and live connections end"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 409, description = "The token is not tied to a login session", body = ErrorBody),
        (status = 429, description = "Request rate limit (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn logout(State(chat): State<Arc<Chat>>, AuthUser(caller): AuthUser) -> Result<StatusCode, ApiError> {
    chat.accounts.logout(&caller).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/auth/sessions`.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's live login sessions; `current` marks the one of this request", body = SessionList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Request rate limit (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn list_sessions(State(chat): State<Arc<Chat>>, AuthUser(caller): AuthUser) -> Result<Json<SessionList>, ApiError> {
    let sessions = chat.accounts.sessions(&caller).await?;
    Ok(Json(SessionList { sessions }))
}

/// `DELETE /api/v1/auth/sessions/{id}`.
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path, description = "A session id from the list")),
    responses(
        (status = 204, description = "Revoked (or already ended); its tokens and live connections end at once"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such session of the caller", body = ErrorBody),
        (status = 429, description = "Request rate limit (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn revoke_session(State(chat): State<Arc<Chat>>, AuthUser(caller): AuthUser, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    chat.accounts.revoke_session(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/me`.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller", body = UserView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "The caller's user no longer exists", body = ErrorBody),
        (status = 429, description = "Request rate limit (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn me(State(chat): State<Arc<Chat>>, AuthUser(caller): AuthUser) -> Result<Json<UserView>, ApiError> {
    Ok(Json(chat.accounts.me(&caller).await?))
}

/// `GET /api/v1/users/by-username/{username}`: finds a user to add as a member.
#[utoipa::path(get, path = "/api/v1/users/by-username/{username}", tag = "auth", security(("bearer" = [])),
    params(("username" = String, Path, description = "The exact username (case does not matter)", min_length = 1, max_length = 32)),
    responses(
        (status = 200, description = "The user's id and username", body = PublicUserView),
        (status = 400, description = "Not a possible username", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No user has this username", body = ErrorBody),
        (status = 429, description = "Request rate limit (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn find_user(State(chat): State<Arc<Chat>>, AuthUser(_caller): AuthUser, Path(username): Path<String>) -> Result<Json<PublicUserView>, ApiError> {
    Ok(Json(chat.accounts.find_user(&username).await?))
}

/// `POST /api/v1/api-keys`.
#[utoipa::path(post, path = "/api/v1/api-keys", tag = "auth", security(("bearer" = [])), request_body = ApiKeyBody,
    responses(
        (status = 201, description = "The key, shown this once, and its record", body = ApiKeyCreated),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "`agent_id` is not one of the caller's agents", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Too many keys (`limit_exceeded`), or request rate limit (`rate_limited`, `Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn create_api_key(State(chat): State<Arc<Chat>>, AuthUser(caller): AuthUser, body: Bytes) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    let b: ApiKeyBody = parse_json(&body)?;
    let scope = match (b.channels, b.agent_id) {
        (Some(_), Some(_)) => return Err(ApiError::new(ErrorCode::InvalidField, "channels, agent_id: give at most one of them")),
        (Some(channels), None) => KeyScope::Channels(channels),
        (None, Some(agent)) => KeyScope::Agent(agent),
        (None, None) => KeyScope::Owner,
    };
    Ok((StatusCode::CREATED, Json(chat.accounts.create_api_key(&caller, &b.name, scope).await?)))
}

/// `GET /api/v1/api-keys`.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "auth", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's API keys (never the keys themselves)", body = ApiKeyList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Request rate limit (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn list_api_keys(State(chat): State<Arc<Chat>>, AuthUser(caller): AuthUser) -> Result<Json<ApiKeyList>, ApiError> {
    let api_keys = chat.accounts.api_keys(&caller).await?;
    Ok(Json(ApiKeyList { api_keys }))
}

/// `DELETE /api/v1/api-keys/{id}`.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path, description = "An API key id from the list")),
    responses(
        (status = 204, description = "Revoked (or already revoked); the key stops working at once"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such key of the caller", body = ErrorBody),
        (status = 429, description = "Request rate limit (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Store unavailable", body = ErrorBody),
    ))]
pub async fn revoke_api_key(State(chat): State<Arc<Chat>>, AuthUser(caller): AuthUser, Path(id): Path<String>) -> Result<StatusCode, ApiError> {
    chat.accounts.revoke_api_key(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
