//! Tokens presented to the server: the JWT checks, then the login session
//! (tokens with `sid`) or the mapping of an identity provider's user to a
//! local one. REST callers and realtime connections alike.

use std::sync::Arc;

use async_trait::async_trait;
use chorus_core::{Identity, TokenError, TokenVerifier, UserId};

use super::Accounts;
use super::external::{self, Signer};
use super::sessions::Activity;
use crate::{Caller, ChatError};

impl Accounts {
    /// The verifier for realtime connections: the JWT checks, then the login
    /// session (for tokens with `sid`), and the mapping of identity-provider
    /// users to local ids.
    pub fn token_verifier(&self) -> Arc<dyn TokenVerifier> {
        Arc::new(AccountTokens(self.clone()))
    }

    /// Verifies a token and resolves its local user id and session; a
    /// session check counts as activity.
    async fn identity(&self, token: &str) -> Result<Identity, Refused> {
        let mut identity = self.inner.jwt.verify(token).await.map_err(Refused::Token)?;
        match external::signer(token) {
            Signer::Local => {
                if let Some(sid) = &identity.session_id {
                    let verdict = self.inner.sessions.check(sid, identity.user_id.as_str(), Activity::Use).await?;
                    verdict.map_err(|ended| Refused::Chat(ended.error()))?;
                }
            }
            Signer::Provider(claims) => {
                let id = self.inner.providers.local_id(&claims, identity.user_id.as_str()).await?;
                identity.user_id = UserId::new(id);
                // A provider's session ids mean nothing here.
                identity.session_id = None;
            }
        }
        Ok(identity)
    }

    /// Resolves a bearer token to the calling user.
    pub async fn authenticate(&self, token: &str) -> Result<Caller, ChatError> {
        let identity = self.identity(token).await.map_err(|r| match r {
            Refused::Token(TokenError::Unavailable(m)) => ChatError::Unavailable(m),
            // The same code as on `/ws` and `/sse`: the client knows to refresh.
            Refused::Token(TokenError::Expired) => ChatError::TokenExpired("token expired; refresh it".into()),
            Refused::Token(other) => ChatError::Unauthorized(other.to_string()),
            Refused::Chat(e) => e,
        })?;
        let user = self.store().get_user(identity.user_id.as_str()).await?.ok_or_else(|| ChatError::Unauthorized("unknown user".into()))?;
        Ok(Caller { user_id: user.id, role: user.role, session_id: identity.session_id })
    }
}

/// Why a token was not accepted: by the JWT checks, or by the accounts.
enum Refused {
    Token(TokenError),
    Chat(ChatError),
}

impl From<ChatError> for Refused {
    fn from(e: ChatError) -> Self {
        Refused::Chat(e)
    }
}

/// [`Accounts::token_verifier`].
struct AccountTokens(Accounts);

#[async_trait]
impl TokenVerifier for AccountTokens {
    async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        match self.0.identity(token).await {
            Ok(identity) => Ok(identity),
            Err(Refused::Token(e)) => Err(e),
            Err(Refused::Chat(ChatError::Unavailable(m) | ChatError::Internal(m))) => Err(TokenError::Unavailable(m)),
            Err(Refused::Chat(other)) => Err(TokenError::Invalid(other.to_string())),
        }
    }
}
