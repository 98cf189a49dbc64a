//! Minting HS256 tokens: `chorus token`, tests and the benchmark.

use std::time::Duration;

use chorus_clock::Clock;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

use crate::claims::{valid_user_id, validate_grant};
use crate::error::MintError;
use crate::secret::HmacSecret;

/// Longest lifetime a minted token may have.
const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// What a minted token says. Claims use the default names (`sub`,
/// `channels`, `sid`), whatever `auth.*_claim` say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MintRequest {
    /// The user id (`sub`).
    pub user: String,
    /// Lifetime: `exp` is now plus this (whole seconds, at least one).
    pub ttl: Duration,
    /// Channel grants: exact names or `namespace:prefix*`.
    pub channels: Vec<String>,
    /// `aud`, if any.
    pub audience: Option<String>,
    /// `iss`, if any.
    pub issuer: Option<String>,
    /// `sid`, if any.
    pub session_id: Option<String>,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    channels: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<&'a str>,
}

/// Signs an HS256 token for `req` with `secret`, setting `iat` to `clock`'s
/// time and `exp` from it. Refuses what the verifier would refuse (bad user
/// id or grant).
pub fn mint_token(secret: &HmacSecret, req: &MintRequest, clock: &dyn Clock) -> Result<String, MintError> {
    if secret.as_bytes().is_empty() {
        return Err(MintError::EmptySecret);
    }
    if !valid_user_id(&req.user) {
        return Err(MintError::BadUser);
    }
    for grant in &req.channels {
        validate_grant(grant).map_err(|reason| MintError::BadGrant { grant: grant.clone(), reason })?;
    }
    if req.ttl.as_secs() == 0 || req.ttl > MAX_TTL {
        return Err(MintError::BadTtl);
    }
    // Whole seconds; a time before 1970 reads as 1970.
    let now = u64::try_from(clock.now_ms() / 1000).unwrap_or(0);
    let claims = Claims {
        sub: &req.user,
        iat: now,
        exp: now + req.ttl.as_secs(),
        channels: &req.channels,
        aud: req.audience.as_deref(),
        iss: req.issuer.as_deref(),
        sid: req.session_id.as_deref(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
        .map_err(|e| MintError::Sign(e.to_string()))
}
