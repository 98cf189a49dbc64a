//! Every HTTP error is the standard object `{error, message, timestamp, request_id}`.
//!
//! Handlers return [`ApiError`]; it travels as a response extension and the
//! outermost middleware renders it with the request's id, so no handler has
//! to thread the id through. Responses that failed inside axum or tower (an
//! unknown route, a body over the limit) are turned into the same shape.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use chorus_core::CommandError;
use chorus_core::limiter::RateLimited;
use chorus_protocol::ErrorCode;

/// An error for an HTTP client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), retry_after: None }
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs.max(1));
        self
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<CommandError> for ApiError {
    fn from(e: CommandError) -> Self {
        Self::new(e.code, e.message)
    }
}

impl From<RateLimited> for ApiError {
    fn from(e: RateLimited) -> Self {
        let secs = e.retry_after_secs();
        Self::new(ErrorCode::RateLimited, e.to_string()).retry_after(secs)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status().into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = secs.to_string().parse()
        {
            res.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
        }
        res.extensions_mut().insert(self);
        res
    }
}

/// The code for an error response that carries no [`ApiError`].
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::BadRequest,
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        405 => ErrorCode::MethodNotAllowed,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::PayloadTooLarge,
        415 | 422 => ErrorCode::InvalidField,
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// Fallback for known routes called with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "method not allowed on this route")
}
