//! Authentication for Chorus.
//!
//! - [`JwtVerifier`] implements [`chorus_core::TokenVerifier`]: HS256 with the
//!   server's secret, RS256/EdDSA/ES256 with configured public keys, a JWKS
//!   file or a JWKS URL (cached, refreshed, refetched on an unknown `kid`).
//! - [`HmacSecret::resolve`] finds the HS256 secret the same way for the
//!   server and `chorus token`, generating `<data_dir>/jwt-secret` on first
//!   use when nothing else is configured.
//! - [`mint_token`] signs HS256 tokens.
//! - [`ApiKeys`] checks server-side publisher keys.
//!
//! All settings live in [`AuthConfig`] (`[auth]` in the configuration file).

#![warn(missing_docs)]

mod api_keys;
mod claims;
mod config;
mod error;
mod jwks;
mod keys;
mod mint;
mod secret;
mod verifier;

pub use api_keys::ApiKeys;
pub use claims::{MAX_SESSION_ID_LEN, MAX_USER_ID_LEN, valid_user_id, validate_grant};
pub use config::{AuthConfig, PublicKeyAlgorithm, PublicKeyConfig};
pub use error::{AuthConfigError, MintError};
pub use jwks::MAX_JWKS_KEYS;
pub use mint::{MintRequest, mint_token};
pub use secret::{HmacSecret, MIN_SECRET_LEN, ResolvedSecret, SECRET_FILE_NAME, SecretOrigin};
pub use verifier::{JwtVerifier, MAX_TOKEN_LEN, MIN_API_KEY_LEN};
