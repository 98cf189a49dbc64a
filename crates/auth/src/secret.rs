//! The HS256 secret: where it comes from, and generating one on first start.
//!
//! Shared by the server and `chorus token`, so that both find the same secret
//! from the same configuration and data directory.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use zeroize::Zeroizing;

use crate::config::AuthConfig;
use crate::error::AuthConfigError;

/// Name of the generated secret file inside the data directory.
pub const SECRET_FILE_NAME: &str = "jwt-secret";

/// Shortest accepted secret: HS256 keys shorter than the hash output make
/// brute force of the secret from one token cheaper (RFC 7518 §3.2).
pub const MIN_SECRET_LEN: usize = 32;

/// Random bytes in a generated secret (stored base64url-encoded).
const GENERATED_SECRET_BYTES: usize = 32;

/// An HS256 secret. Cheap to clone; `Debug` shows only its length; the bytes
/// are wiped when the last clone is dropped.
#[derive(Clone)]
pub struct HmacSecret(Arc<Zeroizing<Vec<u8>>>);

/// Constant-time, like every comparison of secret bytes should be.
impl PartialEq for HmacSecret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        bool::from(self.as_bytes().ct_eq(other.as_bytes()))
    }
}

impl Eq for HmacSecret {}

impl HmacSecret {
    /// A secret made of these bytes (a string's UTF-8 bytes, as configured).
    pub fn new(secret: impl AsRef<[u8]>) -> Self {
        Self(Arc::new(Zeroizing::new(secret.as_ref().to_vec())))
    }

    /// The bytes used as the HMAC key.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Finds the secret: `auth.hmac_secret`, else `auth.hmac_secret_file`,
    /// else `<data_dir>/jwt-secret`. When none exists and no public-key source
    /// is configured, generates 32 random bytes (base64url) into
    /// `<data_dir>/jwt-secret` with mode 0600 and says so in the origin.
    ///
    /// Fails with [`AuthConfigError::NoHmacSecret`] when there is no secret
    /// and tokens are verified with public keys only.
    pub fn resolve(config: &AuthConfig, data_dir: &Path) -> Result<ResolvedSecret, AuthConfigError> {
        Self::try_resolve(config, data_dir)?.ok_or(AuthConfigError::NoHmacSecret)
    }

    /// Finds the secret a server uses, without ever creating one: for tools
    /// (`chorus token`) that must sign exactly as the running server does.
    /// A missing `<data_dir>/jwt-secret` is [`AuthConfigError::SecretNotFound`],
    /// naming the absolute path looked at.
    pub fn find(config: &AuthConfig, data_dir: &Path) -> Result<ResolvedSecret, AuthConfigError> {
        if let Some(value) = &config.hmac_secret {
            return checked(HmacSecret::new(value), SecretOrigin::Config);
        }
        if let Some(path) = &config.hmac_secret_file {
            return checked(read_secret_file(path)?, SecretOrigin::File(path.clone()));
        }
        let path = data_dir.join(SECRET_FILE_NAME);
        match read_secret_file(&path) {
            Ok(secret) => checked(secret, SecretOrigin::DataDir(path)),
            Err(AuthConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Err(AuthConfigError::SecretNotFound { path: std::path::absolute(&path).unwrap_or(path) })
            }
            Err(e) => Err(e),
        }
    }

    /// Like [`HmacSecret::resolve`], but `None` when public-key sources are
    /// configured and no secret exists (HS256 is then simply not accepted).
    pub fn try_resolve(config: &AuthConfig, data_dir: &Path) -> Result<Option<ResolvedSecret>, AuthConfigError> {
        if let Some(value) = &config.hmac_secret {
            // Used exactly as given: an issuer elsewhere signs with the same string.
            return checked(HmacSecret::new(value), SecretOrigin::Config).map(Some);
        }
        if let Some(path) = &config.hmac_secret_file {
            let secret = read_secret_file(path)?;
            return checked(secret, SecretOrigin::File(path.clone())).map(Some);
        }
        let path = data_dir.join(SECRET_FILE_NAME);
        match read_secret_file(&path) {
            Ok(secret) => return checked(secret, SecretOrigin::DataDir(path)).map(Some),
            Err(AuthConfigError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if config.has_public_key_source() {
            return Ok(None);
        }
        let (secret, origin) = generate(data_dir, &path)?;
        checked(secret, origin).map(Some)
    }
}

impl fmt::Debug for HmacSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HmacSecret([redacted; {} bytes])", self.0.len())
    }
}

/// A secret and where it was found.
#[derive(Debug, Clone)]
pub struct ResolvedSecret {
    /// The secret.
    pub secret: HmacSecret,
    /// Where it came from, for the startup log.
    pub origin: SecretOrigin,
}

/// Where the HMAC secret came from. `Display` is meant for logs and never
/// includes the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretOrigin {
    /// `auth.hmac_secret`.
    Config,
    /// `auth.hmac_secret_file`.
    File(PathBuf),
    /// An existing `<data_dir>/jwt-secret`.
    DataDir(PathBuf),
    /// Freshly generated into this file (mode 0600).
    Generated(PathBuf),
}

impl SecretOrigin {
    /// True when the secret was created just now.
    pub fn is_generated(&self) -> bool {
        matches!(self, SecretOrigin::Generated(_))
    }
}

impl fmt::Display for SecretOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretOrigin::Config => f.write_str("auth.hmac_secret"),
            SecretOrigin::File(p) => write!(f, "auth.hmac_secret_file {}", p.display()),
            SecretOrigin::DataDir(p) => write!(f, "{}", p.display()),
            SecretOrigin::Generated(p) => write!(f, "generated into {}", p.display()),
        }
    }
}

fn checked(secret: HmacSecret, origin: SecretOrigin) -> Result<ResolvedSecret, AuthConfigError> {
    let len = secret.as_bytes().len();
    if len == 0 {
        return Err(AuthConfigError::BadSecret { origin: origin.to_string(), reason: "is empty".into() });
    }
    if len < MIN_SECRET_LEN {
        return Err(AuthConfigError::BadSecret {
            origin: origin.to_string(),
            reason: format!("is {len} bytes; at least {MIN_SECRET_LEN} are required"),
        });
    }
    Ok(ResolvedSecret { secret, origin })
}

fn read_secret_file(path: &Path) -> Result<HmacSecret, AuthConfigError> {
    let raw = Zeroizing::new(std::fs::read(path).map_err(|source| AuthConfigError::Read { path: path.to_owned(), source })?);
    warn_if_readable_by_others(path);
    Ok(HmacSecret::new(raw.trim_ascii()))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(path = %path.display(), "the token signing secret file is accessible to other users; chmod 600 it");
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_path: &Path) {}

/// Writes a fresh secret to `path` atomically: a private temporary file is
/// filled and synced, then hard-linked into place, which fails if another
/// process (a concurrent `chorus token`) won the race; its secret is used.
fn generate(data_dir: &Path, path: &Path) -> Result<(HmacSecret, SecretOrigin), AuthConfigError> {
    create_private_dir(data_dir)?;
    let mut bytes = Zeroizing::new([0u8; GENERATED_SECRET_BYTES]);
    rand::rng().fill_bytes(bytes.as_mut());
    let encoded = Zeroizing::new(URL_SAFE_NO_PAD.encode(bytes.as_ref()));

    let tmp = data_dir.join(format!(".{SECRET_FILE_NAME}.{:016x}.tmp", rand::random::<u64>()));
    let write_err = |source| AuthConfigError::Write { path: tmp.clone(), source };
    let written = (|| {
        let mut file = create_private_file(&tmp)?;
        file.write_all(encoded.as_bytes())?;
        file.write_all(b"\n")?;
        file.sync_all()
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok((HmacSecret::new(encoded.as_bytes()), SecretOrigin::Generated(path.to_owned()))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok((read_secret_file(path)?, SecretOrigin::DataDir(path.to_owned()))),
        Err(source) => Err(AuthConfigError::Write { path: path.to_owned(), source }),
    }
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> Result<(), AuthConfigError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AuthConfigError::Write { path: dir.to_owned(), source })
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> Result<(), AuthConfigError> {
    std::fs::create_dir_all(dir).map_err(|source| AuthConfigError::Write { path: dir.to_owned(), source })
}

#[cfg(unix)]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn create_private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}
