//! WebSocket close codes a client can see.
//!
//! 1xxx codes are the standard ones; 4xxx are Chorus's own. Each has a fixed
//! short reason string sent in the close frame and a reconnect advice.

/// Why the server closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the client asked to close, or the server ended the session normally.
    Normal,
    /// 1003: the client sent a binary frame; only text frames are spoken.
    UnsupportedData,
    /// 1009: a frame was larger than the hard frame cap and could not be read.
    MessageTooBig,
    /// 1011: an internal error (including a caught panic) ended this connection only.
    InternalError,
    /// 1012: the server is restarting or shutting down; reconnect (with recovery).
    ServiceRestart,
    /// 1013: the node is full, or a dependency (e.g. the key set) is unreachable; try again later.
    TryAgainLater,
    /// 4000: too many malformed frames; fix the client before reconnecting.
    ProtocolViolation,
    /// 4001: no valid credentials (no `connect` in time, or a bad token in it).
    Unauthorized,
    /// 4002: the connection's token expired without a `refresh`; reconnect with a new token.
    TokenExpired,
    /// 4003: the session or API key behind this connection was revoked.
    Revoked,
    /// 4004: the user opened more connections than allowed; this, the oldest, was closed.
    ConnectionLimit,
    /// 4005: the client did not read fast enough; reconnect and recover.
    SlowConsumer,
    /// 4006: no pong in time, or no successful read or write for too long.
    Stale,
    /// 4007: the client kept sending past its rate limit.
    Flood,
    /// 4008: the server lost track of a subscription's stream; reconnect and recover.
    InsufficientState,
    /// 4009: an administrator disconnected this user.
    AdminDisconnect,
}

impl CloseCode {
    pub const ALL: [CloseCode; 16] = [
        CloseCode::Normal,
        CloseCode::UnsupportedData,
        CloseCode::MessageTooBig,
        CloseCode::InternalError,
        CloseCode::ServiceRestart,
        CloseCode::TryAgainLater,
        CloseCode::ProtocolViolation,
        CloseCode::Unauthorized,
        CloseCode::TokenExpired,
        CloseCode::Revoked,
        CloseCode::ConnectionLimit,
        CloseCode::SlowConsumer,
        CloseCode::Stale,
        CloseCode::Flood,
        CloseCode::InsufficientState,
        CloseCode::AdminDisconnect,
    ];

    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::UnsupportedData => 1003,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::ServiceRestart => 1012,
            CloseCode::TryAgainLater => 1013,
            CloseCode::ProtocolViolation => 4000,
            CloseCode::Unauthorized => 4001,
            CloseCode::TokenExpired => 4002,
            CloseCode::Revoked => 4003,
            CloseCode::ConnectionLimit => 4004,
            CloseCode::SlowConsumer => 4005,
            CloseCode::Stale => 4006,
            CloseCode::Flood => 4007,
            CloseCode::InsufficientState => 4008,
            CloseCode::AdminDisconnect => 4009,
        }
    }

    /// Short machine-readable reason, sent in the close frame (at most 123 bytes).
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::UnsupportedData => "binary frames are not supported",
            CloseCode::MessageTooBig => "frame too large",
            CloseCode::InternalError => "internal error",
            CloseCode::ServiceRestart => "server restarting, reconnect",
            CloseCode::TryAgainLater => "unavailable, try again later",
            CloseCode::ProtocolViolation => "too many malformed frames",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::TokenExpired => "token expired",
            CloseCode::Revoked => "session revoked",
            CloseCode::ConnectionLimit => "connection limit: replaced by a newer connection",
            CloseCode::SlowConsumer => "slow consumer",
            CloseCode::Stale => "stale connection",
            CloseCode::Flood => "rate limit exceeded repeatedly",
            CloseCode::InsufficientState => "insufficient state, reconnect",
            CloseCode::AdminDisconnect => "disconnected by administrator",
        }
    }

    /// Label used in metrics and logs.
    pub fn label(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::UnsupportedData => "unsupported_data",
            CloseCode::MessageTooBig => "message_too_big",
            CloseCode::InternalError => "internal_error",
            CloseCode::ServiceRestart => "service_restart",
            CloseCode::TryAgainLater => "try_again_later",
            CloseCode::ProtocolViolation => "protocol_violation",
            CloseCode::Unauthorized => "unauthorized",
            CloseCode::TokenExpired => "token_expired",
            CloseCode::Revoked => "revoked",
            CloseCode::ConnectionLimit => "connection_limit",
            CloseCode::SlowConsumer => "slow_consumer",
            CloseCode::Stale => "stale",
            CloseCode::Flood => "flood",
            CloseCode::InsufficientState => "insufficient_state",
            CloseCode::AdminDisconnect => "admin_disconnect",
        }
    }

    /// Whether a client should reconnect after this close.
    pub fn should_reconnect(self) -> bool {
        !matches!(
            self,
            CloseCode::UnsupportedData
                | CloseCode::MessageTooBig
                | CloseCode::ProtocolViolation
                | CloseCode::Unauthorized
                | CloseCode::Revoked
                | CloseCode::ConnectionLimit
                | CloseCode::AdminDisconnect
        )
    }

    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_reasons_fit_a_close_frame() {
        let mut seen = std::collections::HashSet::new();
        for c in CloseCode::ALL {
            assert!(seen.insert(c.code()), "duplicate code {}", c.code());
            assert!(c.reason().len() <= 123);
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
        }
    }
}
