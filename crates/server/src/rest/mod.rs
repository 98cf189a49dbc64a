//! The REST API under `/api/v1`: accounts, channels (members, messages),
//! agents, administration. Handlers are thin: they parse, call the chat
//! domain, and shape the answer; every route is described in the OpenAPI
//! document generated from these annotations. The routes run on their own
//! state, [`RestState`]: the chat domain's services beside the edge's state.

pub mod accounts;
pub mod admin;
pub mod agents;
pub mod agui;
pub mod channels;
pub mod openapi;
pub mod run_events;
pub mod runs;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use chorus_chat::{Caller, Chat, ChatError};
use chorus_core::UserId;
use chorus_core::hub::UserLimiter;
use chorus_protocol::ErrorCode;
use utoipa_axum::router::OpenApiRouter;

use crate::credentials::bearer;
use crate::error::ApiError;
use crate::state::AppState;

/// What the REST routes reach: the chat domain's services (what handlers
/// extract, as `State<Arc<Chat>>`), and the edge's state, which
/// authentication (the per-user REST rate) and the firehose (origin policy,
/// hub) need too. Cheap to clone.
#[derive(Clone)]
pub struct RestState {
    chat: Arc<Chat>,
    app: AppState,
}

impl RestState {
    pub fn new(chat: Chat, app: AppState) -> Self {
        Self { chat: Arc::new(chat), app }
    }

    /// The agent runtime (runs over REST); `None` answers those routes 503.
    pub fn agents(&self) -> Option<&chorus_agents::Runtime> {
        self.app.agents()
    }

    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    pub fn app(&self) -> &AppState {
        &self.app
    }
}

impl FromRef<RestState> for Arc<Chat> {
    fn from_ref(state: &RestState) -> Self {
        state.chat.clone()
    }
}

/// Every REST route of the chat domain.
pub fn routes() -> OpenApiRouter<RestState> {
    OpenApiRouter::new()
        .merge(accounts::routes())
        .merge(channels::routes())
        .merge(agents::routes())
        .merge(runs::routes())
        .routes(utoipa_axum::routes!(agui::run_agent))
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

/// The authenticated caller of a REST route (`Authorization: Bearer <access token>`),
/// after the per-user REST rate limit.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Caller);

impl FromRequestParts<RestState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &RestState) -> Result<Self, Self::Rejection> {
        let token = bearer(&parts.headers).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Authorization: Bearer <token> is required"))?;
        let caller = state.chat.accounts.authenticate(token).await?;
        state.app.hub().check_user_rate(UserLimiter::Rest, &UserId::new(&caller.user_id))?;
        Ok(AuthUser(caller))
    }
}

/// An administrator (`403` for anyone else).
#[derive(Debug, Clone)]
pub struct AdminUser(pub Caller);

impl FromRequestParts<RestState> for AdminUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &RestState) -> Result<Self, Self::Rejection> {
        let AuthUser(caller) = AuthUser::from_request_parts(parts, state).await?;
        caller.require_admin()?;
        Ok(AdminUser(caller))
    }
}
