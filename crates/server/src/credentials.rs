//! Credentials on HTTP requests: bearer tokens for users, API keys for
//! server-side publishers.

use async_trait::async_trait;
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;

/// Who an API key belongs to, and so what it may publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiPrincipal {
    /// A non-secret identifier of the key, for logs and its rate limit.
    pub key_id: String,
    pub rights: KeyRights,
}

/// What a key may publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyRights {
    /// A key from `[auth] api_keys`: anywhere.
    Server,
    /// A key a user created: never more than its owner may (see `chorus_chat::keys`).
    User(chorus_chat::accounts::UserKey),
}

impl ApiPrincipal {
    /// A server key (from the configuration).
    pub fn server(key_id: impl Into<String>) -> Self {
        Self { key_id: key_id.into(), rights: KeyRights::Server }
    }
}

/// Checks API keys of server-side callers. Implemented by the composition
/// root over the configured keys (and, later, the store).
#[async_trait]
pub trait ApiKeyCheck: Send + Sync + 'static {
    async fn check(&self, key: &str) -> Option<ApiPrincipal>;

    /// Whether a user's key may publish `event` into `channel` (never more
    /// than its owner may). Without a chat domain no user key exists, so
    /// the default refuses.
    async fn authorize_user_key(
        &self,
        key: &chorus_chat::accounts::UserKey,
        channel: &chorus_protocol::ChannelName,
        event: chorus_protocol::EventType,
        data: &chorus_protocol::Payload,
    ) -> Result<(), chorus_chat::ChatError> {
        let _ = (key, channel, event, data);
        Err(chorus_chat::ChatError::Unavailable("this server runs without a chat domain".into()))
    }
}

/// `Authorization: Bearer <token>`.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim()).filter(|t| !t.is_empty())
}

/// An API key from `X-API-Key` or `Authorization: Bearer`.
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim).filter(|k| !k.is_empty()).or_else(|| bearer(headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_bearer_and_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        assert_eq!(api_key(&h), Some("abc"));
        h.insert("x-api-key", "k1".parse().unwrap());
        assert_eq!(api_key(&h), Some("k1"));
        h.insert(AUTHORIZATION, "Basic xyz".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
