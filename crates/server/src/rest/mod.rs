//! The REST API under `/api/v1`: accounts, channels (members, messages),
//! agents, administration. Handlers are thin: they parse, call the chat
//! domain, and shape the answer; every route is described in the OpenAPI
//! document generated from these annotations.

pub mod accounts;
pub mod admin;
pub mod agents;
pub mod channels;
pub mod openapi;
pub mod runs;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use chorus_chat::{Caller, Chat, ChatError};
use chorus_core::UserId;
use chorus_core::hub::UserLimiter;
use chorus_core::limiter::Refusal;
use chorus_protocol::ErrorCode;
use utoipa_axum::router::OpenApiRouter;

use crate::credentials::bearer;
use crate::error::ApiError;
use crate::state::AppState;

/// Every REST route of the chat domain.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(accounts::routes())
        .merge(channels::routes())
        .merge(agents::routes())
        .merge(runs::routes())
        .merge(admin::routes())
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        let retry = e.retry_after();
        let err = ApiError::new(e.code(), e.to_string());
        match retry {
            Some(d) => err.retry_after(d.as_secs()),
            None => err,
        }
    }
}

/// The chat domain, or 503 on a server running without one.
pub fn chat(app: &AppState) -> Result<&Chat, ApiError> {
    app.chat().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "this server runs without a store"))
}

/// The authenticated caller of a REST route (`Authorization: Bearer <access token>`),
/// after the per-user REST rate limit.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Caller);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let chat = chat(app)?;
        let token = bearer(&parts.headers).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Authorization: Bearer <token> is required"))?;
        let caller = chat.accounts.authenticate(token).await?;
        match app.hub().check_user_rate(UserLimiter::Rest, &UserId::new(&caller.user_id)) {
            Ok(()) => Ok(AuthUser(caller)),
            Err(Refusal::Rate(wait)) => Err(ApiError::new(ErrorCode::RateLimited, format!("request rate limit reached; retry in {} ms", wait.as_millis()))
                .retry_after(wait.as_secs() + 1)),
            Err(Refusal::Full) => Err(ApiError::new(ErrorCode::RateLimited, "rate limiter is full; retry later").retry_after(1)),
        }
    }
}

/// An administrator (`403` for anyone else).
#[derive(Debug, Clone)]
pub struct AdminUser(pub Caller);

impl FromRequestParts<AppState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let AuthUser(caller) = AuthUser::from_request_parts(parts, app).await?;
        caller.require_admin()?;
        Ok(AdminUser(caller))
    }
}
