//! [`JwtVerifier`]: the [`TokenVerifier`] of Chorus.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chorus_clock::Clock;
use chorus_core::{Identity, TokenError, TokenVerifier};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::claims::ClaimRules;
use crate::config::AuthConfig;
use crate::error::AuthConfigError;
use crate::jwks::{JwksSource, MAX_JWKS_KEYS};
use crate::keys::{VerifyKey, alg_name, parse_key_set, shown};
use crate::secret::{HmacSecret, SecretOrigin};

/// Longest token accepted, in bytes; longer ones are refused before any
/// decoding or cryptography.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Shortest accepted API key, in characters.
pub const MIN_API_KEY_LEN: usize = 16;

/// Verifies connection tokens: HS256 with the server's secret, RS256, EdDSA
/// and ES256 with configured public keys, a JWKS file or a JWKS URL.
///
/// Every key is bound to one algorithm; a token's `alg` header selects among
/// the keys of that algorithm only (narrowed by `kid` when present), so an
/// HS256 token is only ever checked against the HMAC secret.
#[derive(Clone)]
pub struct JwtVerifier {
    inner: Arc<Inner>,
}

struct Inner {
    /// The HMAC secret, configured public keys and the JWKS file.
    static_keys: Vec<VerifyKey>,
    jwks: Option<Arc<JwksSource>>,
    rules: ClaimRules,
    /// What `exp` and `nbf` are compared with.
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("static_keys", &self.inner.static_keys)
            .field("jwks_url", &self.inner.jwks.is_some())
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// Builds the verifier from `[auth]`, resolving the HMAC secret as
    /// [`HmacSecret::try_resolve`] does (which may generate
    /// `<data_dir>/jwt-secret`). Returns where the HMAC secret came from, or
    /// `None` when HS256 is not accepted, so the caller can log it.
    ///
    /// Reads key files now; the JWKS URL is first fetched by the first
    /// verification (or [`JwtVerifier::refresh_jwks`]). With a JWKS URL, a
    /// rustls crypto provider must already be installed. `exp` and `nbf`
    /// are checked against `clock`.
    pub fn from_config(
        config: &AuthConfig,
        data_dir: &Path,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, Option<SecretOrigin>), AuthConfigError> {
        let rules = claim_rules(config)?;
        check_api_keys(&config.api_keys)?;

        let mut static_keys = Vec::new();
        let origin = match HmacSecret::try_resolve(config, data_dir)? {
            Some(resolved) => {
                static_keys.push(VerifyKey::hmac(&resolved.secret));
                Some(resolved.origin)
            }
            None => None,
        };

        for (index, pk) in config.public_keys.iter().enumerate() {
            let err = |reason: String| AuthConfigError::PublicKey { index, reason };
            let pem = match (&pk.pem, &pk.pem_file) {
                (Some(pem), None) => pem.clone(),
                (None, Some(path)) => {
                    std::fs::read_to_string(path).map_err(|source| AuthConfigError::Read { path: path.clone(), source })?
                }
                (Some(_), Some(_)) => return Err(err("set `pem` or `pem_file`, not both".into())),
                (None, None) => return Err(err("set `pem` or `pem_file`".into())),
            };
            if let Some(kid) = &pk.kid {
                if kid.is_empty() {
                    return Err(err("`kid` is empty".into()));
                }
                if static_keys.iter().any(|k| k.kid.as_deref() == Some(kid.as_str())) {
                    return Err(err(format!("`kid` {kid:?} is used by another key")));
                }
            }
            static_keys.push(VerifyKey::from_pem(pk.algorithm, &pem, pk.kid.clone()).map_err(err)?);
        }

        if let Some(path) = &config.jwks_file {
            let err = |reason: String| AuthConfigError::JwksFile { path: path.clone(), reason };
            let body = std::fs::read(path).map_err(|source| AuthConfigError::Read { path: path.clone(), source })?;
            let set = parse_key_set(&body, MAX_JWKS_KEYS).map_err(err)?;
            if set.keys.is_empty() {
                return Err(err(format!("no usable signing key ({})", set.skipped.join("; "))));
            }
            if !set.skipped.is_empty() {
                tracing::info!(path = %path.display(), skipped = ?set.skipped, "JWKS file entries ignored");
            }
            if set.over_limit > 0 {
                tracing::warn!(path = %path.display(), ignored = set.over_limit, "the JWKS file has more keys than are kept");
            }
            static_keys.extend(set.keys);
        }

        let jwks = match &config.jwks_url {
            Some(url) => Some(Arc::new(JwksSource::new(url, config.jwks_refresh, config.jwks_min_refetch)?)),
            None => None,
        };
        let verifier = Self { inner: Arc::new(Inner { static_keys, jwks, rules, clock }) };
        Ok((verifier, origin))
    }

    /// The audiences a token must name (`auth.audience`); tokens minted by
    /// the server carry the first, so that they verify.
    pub fn audience(&self) -> &[String] {
        &self.inner.rules.audience
    }

    /// The issuer a token must name (`auth.issuer`), if any.
    pub fn issuer(&self) -> Option<&str> {
        self.inner.rules.issuer.as_deref()
    }

    /// Fetches the JWKS URL now (for example at start, to fail early in the
    /// log). `Ok(0)` without a JWKS URL; otherwise the number of keys cached.
    pub async fn refresh_jwks(&self) -> Result<usize, TokenError> {
        match &self.inner.jwks {
            Some(jwks) => jwks.fetch().await.map_err(|e| TokenError::Unavailable(format!("fetching the JWKS failed: {e}"))),
            None => Ok(0),
        }
    }

    async fn check_signature(&self, token: &Parsed<'_>) -> Result<(), TokenError> {
        let inner = &self.inner;
        let mut mismatched = match try_keys(&inner.static_keys, token) {
            Outcome::Verified => return Ok(()),
            Outcome::Mismatch => true,
            Outcome::NoCandidate => false,
        };
        let mut alg_known = inner.static_keys.iter().any(|k| k.alg == token.alg);
        // Key sets never hold HMAC keys.
        if let Some(jwks) = inner.jwks.as_ref().filter(|_| token.alg != Algorithm::HS256) {
            let mut snapshot = jwks.current().await;
            let mut outcome = try_keys(&snapshot.keys, token);
            if matches!(outcome, Outcome::NoCandidate) && jwks.refetch_for_unknown_kid().await {
                snapshot = jwks.snapshot();
                outcome = try_keys(&snapshot.keys, token);
            }
            alg_known |= snapshot.keys.iter().any(|k| k.alg == token.alg);
            match outcome {
                Outcome::Verified => return Ok(()),
                Outcome::Mismatch => mismatched = true,
                // The key may well exist upstream: we could not look.
                Outcome::NoCandidate if snapshot.failing && !mismatched => {
                    return Err(TokenError::Unavailable("the identity provider's signing keys could not be fetched".into()));
                }
                Outcome::NoCandidate => {}
            }
        }
        let alg = alg_name(token.alg);
        Err(TokenError::Invalid(match &token.kid {
            _ if mismatched => "signature does not verify".to_owned(),
            Some(kid) if alg_known => format!("no {alg} key with id `{}`", shown(kid)),
            _ => format!("{alg} tokens are not accepted by this server"),
        }))
    }
}

#[async_trait]
impl TokenVerifier for JwtVerifier {
    async fn verify(&self, token: &str) -> Result<Identity, TokenError> {
        let parsed = Parsed::parse(token)?;
        self.check_signature(&parsed).await?;
        let claims = parsed.claims()?;
        self.inner.rules.identity(&claims, self.inner.clock.now_ms())
    }
}

fn claim_rules(config: &AuthConfig) -> Result<ClaimRules, AuthConfigError> {
    let setting = |field, reason: &str| AuthConfigError::Setting { field, reason: reason.to_owned() };
    for (field, name) in
        [("user_claim", &config.user_claim), ("channels_claim", &config.channels_claim), ("session_claim", &config.session_claim)]
    {
        if name.is_empty() {
            return Err(setting(field, "must not be empty"));
        }
    }
    if config.audience.iter().any(String::is_empty) {
        return Err(setting("audience", "entries must not be empty"));
    }
    if config.issuer.as_deref() == Some("") {
        return Err(setting("issuer", "must not be empty"));
    }
    if config.jwks_refresh.is_zero() {
        return Err(setting("jwks_refresh", "must be positive"));
    }
    let leeway_ms = i64::try_from(config.leeway.as_millis()).map_err(|_| setting("leeway", "is too large"))?;
    Ok(ClaimRules {
        audience: config.audience.clone(),
        issuer: config.issuer.clone(),
        leeway_ms,
        require_exp: config.require_exp,
        user_claim: config.user_claim.clone(),
        channels_claim: config.channels_claim.clone(),
        session_claim: config.session_claim.clone(),
    })
}

fn check_api_keys(keys: &[String]) -> Result<(), AuthConfigError> {
    for (index, key) in keys.iter().enumerate() {
        let reason = if key.chars().count() < MIN_API_KEY_LEN {
            format!("API keys must be at least {MIN_API_KEY_LEN} characters")
        } else if key.trim() != key {
            "API keys must not start or end with whitespace".to_owned()
        } else {
            continue;
        };
        return Err(AuthConfigError::ApiKey { index, reason });
    }
    Ok(())
}

enum Outcome {
    Verified,
    /// Keys of the token's algorithm and `kid` exist; none verified it.
    Mismatch,
    NoCandidate,
}

fn try_keys(keys: &[VerifyKey], token: &Parsed<'_>) -> Outcome {
    let mut outcome = Outcome::NoCandidate;
    let candidates = keys.iter().filter(|k| {
        // The binding that rules out algorithm confusion.
        k.alg == token.alg && (k.kid.is_none() || token.kid.is_none() || k.kid == token.kid)
    });
    for key in candidates {
        // Err means the key cannot be used for this algorithm; treated as a mismatch.
        if let Ok(true) = jsonwebtoken::crypto::verify(token.signature, token.signing_input.as_bytes(), &key.key, token.alg) {
            return Outcome::Verified;
        }
        outcome = Outcome::Mismatch;
    }
    outcome
}

/// A compact JWS split into its parts, with the header checked.
struct Parsed<'a> {
    alg: Algorithm,
    kid: Option<String>,
    /// `header.payload`: the signed bytes.
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

fn invalid(reason: impl Into<String>) -> TokenError {
    TokenError::Invalid(reason.into())
}

impl<'a> Parsed<'a> {
    fn parse(token: &'a str) -> Result<Parsed<'a>, TokenError> {
        if token.is_empty() {
            return Err(invalid("empty token"));
        }
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(format!("token is longer than {MAX_TOKEN_LEN} bytes")));
        }
        let parts: Vec<&str> = token.splitn(6, '.').collect();
        let [header_b64, payload, signature] = parts[..] else {
            return Err(invalid(if parts.len() == 5 {
                "encrypted tokens (JWE) are not supported"
            } else {
                "not a JWT (expected three base64url parts separated by dots)"
            }));
        };
        let header_json = URL_SAFE_NO_PAD.decode(header_b64).map_err(|_| invalid("header is not base64url"))?;
        let header: Map<String, Value> = serde_json::from_slice(&header_json).map_err(|_| invalid("header is not a JSON object"))?;
        let alg = match header.get("alg") {
            None => return Err(invalid("header has no `alg`")),
            Some(Value::String(alg)) => parse_alg(alg)?,
            Some(_) => return Err(invalid("header `alg` is not a string")),
        };
        // No extension is understood, so any critical one must be refused (RFC 7515 §4.1.11).
        if header.contains_key("crit") {
            return Err(invalid("critical header parameters are not supported"));
        }
        let kid = match header.get("kid") {
            None | Some(Value::Null) => None,
            Some(Value::String(kid)) => Some(kid.clone()),
            Some(_) => return Err(invalid("header `kid` is not a string")),
        };
        if signature.is_empty() {
            return Err(invalid("token has no signature"));
        }
        if URL_SAFE_NO_PAD.decode(signature).is_err() {
            return Err(invalid("signature is not base64url"));
        }
        let signing_input = &token[..header_b64.len() + 1 + payload.len()];
        Ok(Parsed { alg, kid, signing_input, payload, signature })
    }

    /// The payload as a JSON object. Only called once the signature verified.
    fn claims(&self) -> Result<Map<String, Value>, TokenError> {
        let json = URL_SAFE_NO_PAD.decode(self.payload).map_err(|_| invalid("payload is not base64url"))?;
        serde_json::from_slice(&json).map_err(|_| invalid("payload is not a JSON object"))
    }
}

fn parse_alg(alg: &str) -> Result<Algorithm, TokenError> {
    match alg {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "EdDSA" => Ok(Algorithm::EdDSA),
        "ES256" => Ok(Algorithm::ES256),
        a if a.eq_ignore_ascii_case("none") => Err(invalid("unsigned tokens (`alg: none`) are not accepted")),
        other => Err(invalid(format!("algorithm `{}` is not supported", shown(other)))),
    }
}
