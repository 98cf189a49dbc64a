//! Errors of configuration and minting. Verification failures are
//! [`chorus_core::TokenError`]s.

use std::path::PathBuf;

/// The `[auth]` configuration cannot be turned into a working verifier.
///
/// Messages name the offending setting or file; they never contain secrets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthConfigError {
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The generated secret could not be written.
    #[error("writing {}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The HMAC secret is unusable (empty or too short).
    #[error("the HMAC secret from {origin} {reason}")]
    BadSecret {
        /// Where it came from.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// HS256 is not set up: no secret was found and tokens are verified with
    /// public keys only, so none is generated.
    #[error(
        "no HMAC secret is configured (auth.hmac_secret, auth.hmac_secret_file or <data_dir>/jwt-secret); this server verifies tokens with public keys only"
    )]
    NoHmacSecret,
    /// Only a server creates the secret; a tool that needs it found none.
    #[error(
        "no token signing secret: auth.hmac_secret and auth.hmac_secret_file are not set and {} does not exist; \
         it is created by the first `chorus serve` with this configuration and data directory",
        path.display()
    )]
    SecretNotFound {
        /// Where the generated secret was looked for.
        path: PathBuf,
    },
    /// An entry of `auth.public_keys` is unusable.
    #[error("auth.public_keys[{index}]: {reason}")]
    PublicKey {
        /// Position in the list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// `auth.jwks_file` is unusable.
    #[error("auth.jwks_file {}: {reason}", path.display())]
    JwksFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// `auth.jwks_url` is unusable.
    #[error("auth.jwks_url: {0}")]
    JwksUrl(String),
    /// An entry of `auth.api_keys` is unusable.
    #[error("auth.api_keys[{index}]: {reason}")]
    ApiKey {
        /// Position in the list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Another setting is out of range.
    #[error("auth.{field}: {reason}")]
    Setting {
        /// The key under `[auth]`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

/// A token cannot be minted from this request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MintError {
    /// The user id would be refused by the verifier.
    #[error("user id must be 1-128 characters of A-Z, a-z, 0-9, `_`, `.`, `:`, `@` or `-`")]
    BadUser,
    /// A channel grant is not a channel name or `namespace:prefix*`.
    #[error("channel grant `{grant}`: {reason}")]
    BadGrant {
        /// The grant as given.
        grant: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The lifetime is zero or does not fit a timestamp.
    #[error("token lifetime must be between 1 second and 100 years")]
    BadTtl,
    /// The HMAC secret is unusable.
    #[error("the HMAC secret is empty")]
    EmptySecret,
    /// Signing failed.
    #[error("signing the token failed: {0}")]
    Sign(String),
}
