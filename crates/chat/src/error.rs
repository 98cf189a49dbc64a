//! The chat domain's errors. Each maps to one protocol error code, so REST
//! and WebSocket callers see the same thing.

use std::time::Duration;

use chorus_core::CommandError;
use chorus_core::limiter::RateLimited;
use chorus_protocol::ErrorCode;
use chorus_store::StoreError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChatError {
    /// Input fails validation; the message names the field (`name: ...`).
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The bearer token's `exp` (plus the leeway) has passed: refresh it.
    #[error("{0}")]
    TokenExpired(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// A count limit (channels per user, agents per user, ...).
    #[error("{0}")]
    LimitExceeded(String),
    #[error(transparent)]
    RateLimited(#[from] RateLimited),
    /// Maintenance mode refuses content creation; the string names what was refused.
    #[error("the server is in maintenance mode: {0} is refused until it ends")]
    Maintenance(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ChatError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ChatError::Invalid(_) => ErrorCode::InvalidField,
            ChatError::Unauthorized(_) => ErrorCode::Unauthorized,
            ChatError::TokenExpired(_) => ErrorCode::TokenExpired,
            ChatError::Forbidden(_) => ErrorCode::Forbidden,
            ChatError::NotFound(_) => ErrorCode::NotFound,
            ChatError::Conflict(_) => ErrorCode::Conflict,
            ChatError::LimitExceeded(_) => ErrorCode::LimitExceeded,
            ChatError::RateLimited(_) => ErrorCode::RateLimited,
            ChatError::Maintenance(_) => ErrorCode::Maintenance,
            ChatError::Unavailable(_) => ErrorCode::Unavailable,
            ChatError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// For 429 and 503 answers, in whole seconds.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ChatError::RateLimited(r) => Some(Duration::from_secs(r.retry_after_secs())),
            ChatError::Maintenance(_) | ChatError::Unavailable(_) => Some(Duration::from_secs(5)),
            _ => None,
        }
    }

    pub fn invalid(field: &str, message: impl std::fmt::Display) -> Self {
        ChatError::Invalid(format!("{field}: {message}"))
    }
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ChatError::NotFound("not found".into()),
            StoreError::Conflict(m) => ChatError::Conflict(m),
            StoreError::LimitExceeded(m) => ChatError::LimitExceeded(m),
            StoreError::Forbidden(m) => ChatError::Forbidden(m),
            StoreError::Unavailable(m) => ChatError::Unavailable(format!("store unavailable: {m}")),
            other => {
                tracing::error!(error = %other, "store error");
                ChatError::Internal("internal store error".into())
            }
        }
    }
}

impl From<ChatError> for CommandError {
    fn from(e: ChatError) -> Self {
        CommandError::new(e.code(), e.to_string())
    }
}
