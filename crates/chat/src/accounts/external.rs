//! Users of external identity providers.
//!
//! A token that verified against a configured public key or JWKS (any
//! algorithm but HS256, which only ever verifies against the server's own
//! secret) comes from an identity provider. Its user claim is the provider's
//! subject, not a Chorus user id: the user is found by (issuer, subject), and
//! created on first sight with a username derived from the token. From then
//! on the local id is the user's identity everywhere (REST, `user:<id>`).

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chorus_store::{ExternalIdentity, NewUser, Store, User, UserRole};
use serde_json::{Map, Value};

use super::cache::BoundedMap;
use super::validate;
use crate::ChatError;

/// The issuer recorded for providers whose tokens carry no `iss`.
pub const UNNAMED_ISSUER: &str = "external";
/// (issuer, subject) pairs remembered.
const CAPACITY: usize = 10_000;
/// Usernames tried before giving up on creating the user.
const NAME_ATTEMPTS: usize = 6;

/// Who signed a verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    /// This server (HS256 with its secret): the user claim is a local user id.
    Local,
    /// An identity provider.
    Provider(ProviderClaims),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderClaims {
    pub issuer: String,
    /// A name to derive the username from (`preferred_username`, the
    /// email's local part, `name`), if the token has one.
    pub name_hint: Option<String>,
}

fn json_part(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Tells who signed a token. Call only once the token verified: the header
/// then says which key checked it.
pub fn signer(token: &str) -> Signer {
    let mut parts = token.split('.');
    let header = parts.next().and_then(json_part);
    if header.as_ref().and_then(|h| h.get("alg")).and_then(Value::as_str) == Some("HS256") {
        return Signer::Local;
    }
    let claims = parts.next().and_then(json_part).unwrap_or_default();
    let text = |k: &str| claims.get(k).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let issuer = text("iss").unwrap_or_else(|| UNNAMED_ISSUER.to_owned());
    let email_name = text("email").and_then(|e| e.split_once('@').map(|(l, _)| l.to_owned()));
    let name_hint = text("preferred_username").or(email_name).or_else(|| text("name")).or_else(|| text("nickname"));
    Signer::Provider(ProviderClaims { issuer, name_hint })
}

pub(crate) struct Providers {
    store: Arc<dyn Store>,
    /// (issuer, subject) → local user id; the link never changes once made.
    known: BoundedMap<(String, String), String>,
}

impl Providers {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store, known: BoundedMap::new(CAPACITY) }
    }

    /// The local user id of a provider's user, creating the user on first sight.
    pub async fn local_id(&self, claims: &ProviderClaims, subject: &str) -> Result<String, ChatError> {
        let key = (claims.issuer.clone(), subject.to_owned());
        if let Some(id) = self.known.get(&key) {
            return Ok(id);
        }
        let user = self.local_user(claims, subject).await?;
        self.known.insert(key, user.id.clone(), |_| false);
        Ok(user.id)
    }

    /// The local user of a provider's user, creating it on first sight.
    async fn local_user(&self, claims: &ProviderClaims, subject: &str) -> Result<User, ChatError> {
        if let Some(user) = self.store.get_user_by_external(&claims.issuer, subject).await? {
            return Ok(user);
        }
        let base = validate::derive_username(claims.name_hint.as_deref().unwrap_or(subject));
        for attempt in 0..NAME_ATTEMPTS {
            let username = if attempt == 0 { base.clone() } else { format!("{base}-{:06x}", rand::random::<u32>() & 0xff_ffff) };
            let new = NewUser {
                username,
                email: None,
                password_hash: None,
                role: UserRole::User,
                external: Some(ExternalIdentity { issuer: claims.issuer.clone(), subject: subject.to_owned() }),
            };
            match self.store.create_user(new).await {
                Ok(user) => {
                    tracing::info!(user = %user.id, username = %user.username, issuer = %claims.issuer, "user created for an identity provider account");
                    return Ok(user);
                }
                Err(chorus_store::StoreError::Conflict(_)) => {
                    // Either the name is taken, or a concurrent request created this very user.
                    if let Some(user) = self.store.get_user_by_external(&claims.issuer, subject).await? {
                        return Ok(user);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ChatError::Unavailable("could not pick a free username for this account; retry".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(header: Value, claims: Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.sig", enc(&header), enc(&claims))
    }

    #[test]
    fn tells_local_from_provider_tokens() {
        assert_eq!(signer(&token(serde_json::json!({"alg": "HS256"}), serde_json::json!({"sub": "u"}))), Signer::Local);
        let t = token(
            serde_json::json!({"alg": "RS256", "kid": "k"}),
            serde_json::json!({"sub": "s", "iss": "https://idp", "email": "ann.lee@x.org", "name": "Ann"}),
        );
        assert_eq!(
            signer(&t),
            Signer::Provider(ProviderClaims { issuer: "https://idp".into(), name_hint: Some("ann.lee".into()) })
        );
        let t = token(serde_json::json!({"alg": "EdDSA"}), serde_json::json!({"sub": "s", "preferred_username": "annie"}));
        assert_eq!(signer(&t), Signer::Provider(ProviderClaims { issuer: UNNAMED_ISSUER.into(), name_hint: Some("annie".into()) }));
    }
}
