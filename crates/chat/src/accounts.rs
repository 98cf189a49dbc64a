//! Users, passwords, login sessions, access tokens, API keys.

use chorus_auth::{HmacSecret, JwtVerifier};
use chorus_core::TokenVerifier;

use crate::{Caller, ChatError, Deps};

/// Accounts and authentication.
#[derive(Clone)]
pub struct Accounts {
    deps: Deps,
    #[allow(dead_code)]
    secret: HmacSecret,
    jwt: JwtVerifier,
}

impl Accounts {
    pub fn new(deps: Deps, secret: HmacSecret, jwt: JwtVerifier) -> Self {
        Self { deps, secret, jwt }
    }

    /// Creates the configured bootstrap administrator if no administrator exists.
    pub async fn bootstrap(&self) -> Result<(), ChatError> {
        Ok(())
    }

    /// The verifier for realtime connections.
    pub fn token_verifier(&self) -> std::sync::Arc<dyn TokenVerifier> {
        std::sync::Arc::new(self.jwt.clone())
    }

    /// A key id for a live API key created through the API.
    pub async fn check_api_key(&self, _key: &str) -> Option<String> {
        None
    }

    /// Resolves a bearer token to the calling user.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, ChatError> {
        let identity = self.jwt.verify(token).await.map_err(|e| ChatError::Unauthorized(e.to_string()))?;
        let user = self
            .deps
            .store
            .get_user(identity.user_id.as_str())
            .await?
            .ok_or_else(|| ChatError::Unauthorized("unknown user".into()))?;
        Ok(Caller { user_id: user.id, role: user.role, session_id: identity.session_id })
    }
}
