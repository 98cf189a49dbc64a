//! Who is on the other end of a connection, and the seam that decides it.

use async_trait::async_trait;

use crate::ids::UserId;

/// A verified token's meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user_id: UserId,
    /// The token's `exp`, Unix milliseconds; `None` for a token without one.
    pub expires_at_ms: Option<i64>,
    /// How long past `exp` the verifier still accepts the token (its clock
    /// skew leeway). A connection closes at `exp` plus this, so a token that
    /// was just accepted is never cut off a moment later.
    pub leeway_ms: i64,
    /// Channel grants from the token: exact names or `namespace:prefix*`.
    pub grants: Vec<String>,
    /// The login session the token belongs to, if any; revoking it closes the connection.
    pub session_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token verification is unavailable: {0}")]
    Unavailable(String),
}

/// Turns a bearer token into an [`Identity`]. Implemented by the auth crate.
#[async_trait]
pub trait TokenVerifier: Send + Sync + 'static {
    async fn verify(&self, token: &str) -> Result<Identity, TokenError>;
}
