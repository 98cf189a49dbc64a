//! Error codes and the standard error object `{error, message, timestamp, request_id}`.

use serde::{Deserialize, Serialize};

/// Every error code a client can see, over WebSocket, SSE commands or REST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is not well formed (missing `id`, bad query, ...).
    BadRequest,
    /// The frame or body is not valid JSON.
    MalformedJson,
    /// The command `type` is not one the server knows.
    UnknownCommand,
    /// A field is missing, has the wrong type or fails validation.
    InvalidField,
    /// An event's `data` does not match the schema of its event type.
    InvalidEvent,
    /// A WebSocket frame is larger than the frame limit.
    FrameTooLarge,
    /// An HTTP body is larger than the body limit.
    PayloadTooLarge,
    /// No credentials, or credentials that do not verify.
    Unauthorized,
    /// The token has expired.
    TokenExpired,
    /// Authenticated, but not allowed to do this.
    Forbidden,
    /// The thing does not exist (or is not visible to the caller).
    NotFound,
    /// The HTTP method is not allowed on this route.
    MethodNotAllowed,
    /// The request conflicts with current state (e.g. already subscribed, name taken).
    Conflict,
    /// The connection is not subscribed to that channel.
    NotSubscribed,
    /// A rate limit was hit; retry later.
    RateLimited,
    /// A count limit was hit (subscriptions per connection, channels per user, ...).
    LimitExceeded,
    /// The server is in maintenance mode; content creation is refused.
    Maintenance,
    /// A dependency (broker, store) or capacity is not available right now.
    Unavailable,
    /// An agent run's events were pushed to a node that does not own the
    /// run; push again (behind a load balancer, another node answers).
    RunElsewhere,
    /// An internal error; the `request_id` finds it in the logs.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::MalformedJson => "malformed_json",
            ErrorCode::UnknownCommand => "unknown_command",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::InvalidEvent => "invalid_event",
            ErrorCode::FrameTooLarge => "frame_too_large",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Conflict => "conflict",
            ErrorCode::NotSubscribed => "not_subscribed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::LimitExceeded => "limit_exceeded",
            ErrorCode::Maintenance => "maintenance",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::RunElsewhere => "run_elsewhere",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status that carries this code on REST routes.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::BadRequest
            | ErrorCode::MalformedJson
            | ErrorCode::UnknownCommand
            | ErrorCode::InvalidField
            | ErrorCode::FrameTooLarge => 400,
            ErrorCode::InvalidEvent => 422,
            ErrorCode::Unauthorized | ErrorCode::TokenExpired => 401,
            ErrorCode::Forbidden => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::Conflict | ErrorCode::NotSubscribed => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::LimitExceeded => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Maintenance | ErrorCode::Unavailable | ErrorCode::RunElsewhere => 503,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The standard error object, identical on every front end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub error: ErrorCode,
    pub message: String,
    /// RFC 3339, UTC.
    pub timestamp: String,
    pub request_id: String,
}

impl ErrorObject {
    pub fn new(error: ErrorCode, message: impl Into<String>, request_id: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            timestamp: crate::timestamp::format_ms(crate::timestamp::now_ms()),
            request_id: request_id.into(),
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing a struct of strings cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_standard_shape() {
        let e = ErrorObject::new(ErrorCode::RateLimited, "slow down", "req-1");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["error"], "rate_limited");
        assert_eq!(v["message"], "slow down");
        assert_eq!(v["request_id"], "req-1");
        assert!(crate::timestamp::parse_ms(v["timestamp"].as_str().unwrap()).is_some());
        assert_eq!(serde_json::to_value(ErrorCode::NotSubscribed).unwrap(), "not_subscribed");
    }
}
