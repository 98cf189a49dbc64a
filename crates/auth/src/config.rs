//! The `[auth]` section of the configuration.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How tokens are verified and which server-side API keys exist.
///
/// `Debug` never shows `hmac_secret` or `api_keys`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// HS256 secret, used as given (its UTF-8 bytes). Takes precedence over
    /// `hmac_secret_file` and `<data_dir>/jwt-secret`.
    pub hmac_secret: Option<String>,
    /// A file holding the HS256 secret (surrounding whitespace is ignored).
    pub hmac_secret_file: Option<PathBuf>,
    /// Public keys of token issuers, each bound to one algorithm.
    pub public_keys: Vec<PublicKeyConfig>,
    /// A JSON Web Key Set fetched over HTTP(S), cached and refreshed.
    pub jwks_url: Option<String>,
    /// How often the key set at `jwks_url` is refetched.
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
    /// The shortest time between two fetches of `jwks_url` caused by a token
    /// with an unknown `kid` or by a failed fetch, so that forged `kid`s cannot
    /// turn the server into a load generator against the identity provider.
    #[serde(with = "humantime_serde")]
    pub jwks_min_refetch: Duration,
    /// A JSON Web Key Set read from a file once at start.
    pub jwks_file: Option<PathBuf>,
    /// When non-empty, a token's `aud` must contain one of these.
    pub audience: Vec<String>,
    /// When set, a token's `iss` must equal it.
    pub issuer: Option<String>,
    /// Clock skew tolerated for `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// Refuse tokens without `exp`.
    pub require_exp: bool,
    /// The claim holding the user id (a string, or an integer).
    pub user_claim: String,
    /// The claim holding channel grants (an array of strings).
    pub channels_claim: String,
    /// The claim holding the login session id (an optional string).
    pub session_claim: String,
    /// API keys of server-side publishers.
    pub api_keys: Vec<String>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            hmac_secret: None,
            hmac_secret_file: None,
            public_keys: Vec::new(),
            jwks_url: None,
            jwks_refresh: Duration::from_secs(600),
            jwks_min_refetch: Duration::from_secs(30),
            jwks_file: None,
            audience: Vec::new(),
            issuer: None,
            leeway: Duration::from_secs(30),
            require_exp: true,
            user_claim: "sub".to_owned(),
            channels_claim: "channels".to_owned(),
            session_claim: "sid".to_owned(),
            api_keys: Vec::new(),
        }
    }
}

impl AuthConfig {
    /// True when tokens can be verified without an HMAC secret: public keys,
    /// a JWKS URL or a JWKS file are configured.
    pub fn has_public_key_source(&self) -> bool {
        !self.public_keys.is_empty() || self.jwks_url.is_some() || self.jwks_file.is_some()
    }
}

impl fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthConfig")
            .field("hmac_secret", &self.hmac_secret.as_ref().map(|_| "[redacted]"))
            .field("hmac_secret_file", &self.hmac_secret_file)
            .field("public_keys", &self.public_keys)
            .field("jwks_url", &self.jwks_url)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("jwks_min_refetch", &self.jwks_min_refetch)
            .field("jwks_file", &self.jwks_file)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .field("leeway", &self.leeway)
            .field("require_exp", &self.require_exp)
            .field("user_claim", &self.user_claim)
            .field("channels_claim", &self.channels_claim)
            .field("session_claim", &self.session_claim)
            .field("api_keys", &format_args!("[{} redacted]", self.api_keys.len()))
            .finish()
    }
}

/// One public key of a token issuer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublicKeyConfig {
    /// The only algorithm this key verifies.
    pub algorithm: PublicKeyAlgorithm,
    /// The key as PEM text (`-----BEGIN PUBLIC KEY-----`).
    #[serde(default)]
    pub pem: Option<String>,
    /// A file holding the PEM text.
    #[serde(default)]
    pub pem_file: Option<PathBuf>,
    /// Key id: a token with a `kid` header is checked only against keys with
    /// that id (or without one).
    #[serde(default)]
    pub kid: Option<String>,
}

/// Asymmetric algorithms a configured public key can be bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PublicKeyAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// Ed25519.
    EdDSA,
    /// ECDSA on P-256 with SHA-256.
    ES256,
}

impl PublicKeyAlgorithm {
    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_toml_shape() {
        let c: AuthConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, AuthConfig::default());
        assert_eq!(c.jwks_refresh, Duration::from_secs(600));
        assert_eq!(c.leeway, Duration::from_secs(30));
        assert!(c.require_exp);
        assert_eq!((c.user_claim.as_str(), c.channels_claim.as_str(), c.session_claim.as_str()), ("sub", "channels", "sid"));

        let c: AuthConfig = serde_json::from_value(serde_json::json!({
            "leeway": "5s",
            "jwks_refresh": "1m",
            "public_keys": [{"algorithm": "EdDSA", "pem_file": "k.pem", "kid": "k1"}],
        }))
        .unwrap();
        assert_eq!(c.leeway, Duration::from_secs(5));
        assert_eq!(c.jwks_refresh, Duration::from_secs(60));
        assert_eq!(c.public_keys[0].algorithm, PublicKeyAlgorithm::EdDSA);

        // Round trip (the binary diffs serialized sections on reload).
        let back: AuthConfig = serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_fields_and_algorithms_are_refused() {
        assert!(serde_json::from_str::<AuthConfig>(r#"{"hmac_secrett":"x"}"#).is_err());
        let bad_alg = serde_json::json!({"public_keys": [{"algorithm": "HS256", "pem": "x"}]});
        assert!(serde_json::from_value::<AuthConfig>(bad_alg).is_err());
        let none = serde_json::json!({"public_keys": [{"algorithm": "none", "pem": "x"}]});
        assert!(serde_json::from_value::<AuthConfig>(none).is_err());
    }

    #[test]
    fn debug_hides_secrets() {
        let c = AuthConfig {
            hmac_secret: Some("super-secret-value-0123456789abcdef".into()),
            api_keys: vec!["publisher-key-0123456789".into()],
            ..AuthConfig::default()
        };
        let shown = format!("{c:?}");
        assert!(!shown.contains("super-secret-value"), "{shown}");
        assert!(!shown.contains("publisher-key"), "{shown}");
        assert!(shown.contains("[1 redacted]"), "{shown}");
    }
}
