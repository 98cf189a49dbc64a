//! How signing secrets are kept: derived, not stored.
//!
//! Chorus must be able to sign with an agent's secret at every delivery,
//! so it cannot keep only a hash of it (as it does for API keys). Instead
//! the store holds a random *salt* per secret, and the secret is
//! HMAC-SHA256(server key, agent id ‖ salt). A copy of the database alone
//! reveals no secret; rotating draws a new salt. The server key comes from
//! `external_agents.secret_key` / `secret_key_file`, or is generated once
//! into `<data_dir>/webhook-secret-key` (mode 0600). Every node of a
//! cluster needs the same key, and changing it changes every agent's secret.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use ring::hmac;
use zeroize::Zeroizing;

use crate::signing::{SECRET_BYTES, SigningSecret};

/// Name of the generated key file inside the data directory.
pub const KEY_FILE_NAME: &str = "webhook-secret-key";
/// Shortest server key accepted, in bytes.
pub const MIN_KEY_LEN: usize = 32;
/// Random bytes in a salt.
const SALT_BYTES: usize = 16;
/// Separates this use of the key from any other.
const DERIVATION_LABEL: &[u8] = b"chorus webhook signing secret v1\0";

/// The server key secrets are derived from. `Debug` never shows it.
pub struct SecretKey(hmac::Key);

/// A stored salt (base64url of 16 random bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSalt(String);

/// Where the server key came from, for the startup log (never the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOrigin {
    Config,
    File(PathBuf),
    DataDir(PathBuf),
    Generated(PathBuf),
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the webhook secret key from {origin} is {len} bytes; at least {MIN_KEY_LEN} are required")]
    TooShort { origin: String, len: usize },
    #[error("could not read the webhook secret key {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("could not write a new webhook secret key into {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
}

impl fmt::Display for KeyOrigin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyOrigin::Config => f.write_str("external_agents.secret_key"),
            KeyOrigin::File(p) => write!(f, "external_agents.secret_key_file {}", p.display()),
            KeyOrigin::DataDir(p) => write!(f, "{}", p.display()),
            KeyOrigin::Generated(p) => write!(f, "generated into {}", p.display()),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8], origin: &KeyOrigin) -> Result<Self, KeyError> {
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort { origin: origin.to_string(), len: bytes.len() });
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, bytes)))
    }

    /// The configured key (`inline`, else `file`), else `<data_dir>/webhook-secret-key`,
    /// generated there on first use.
    pub fn resolve(inline: Option<&str>, file: Option<&Path>, data_dir: &Path) -> Result<(Self, KeyOrigin), KeyError> {
        if let Some(value) = inline {
            let origin = KeyOrigin::Config;
            return Ok((Self::from_bytes(value.as_bytes(), &origin)?, origin));
        }
        if let Some(path) = file {
            let origin = KeyOrigin::File(path.to_owned());
            let bytes = read_key(path)?;
            return Ok((Self::from_bytes(&bytes, &origin)?, origin));
        }
        let path = data_dir.join(KEY_FILE_NAME);
        match read_key(&path) {
            Ok(bytes) => {
                let origin = KeyOrigin::DataDir(path);
                Ok((Self::from_bytes(&bytes, &origin)?, origin))
            }
            Err(KeyError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                let bytes = generate(data_dir, &path)?;
                let origin = KeyOrigin::Generated(path);
                Ok((Self::from_bytes(&bytes, &origin)?, origin))
            }
            Err(e) => Err(e),
        }
    }

    /// The signing secret of `agent_id` with `salt`.
    pub fn derive(&self, agent_id: &str, salt: &SecretSalt) -> SigningSecret {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(DERIVATION_LABEL);
        ctx.update(agent_id.as_bytes());
        ctx.update(b"\0");
        ctx.update(salt.0.as_bytes());
        let tag = ctx.sign();
        let mut bytes = [0u8; SECRET_BYTES];
        bytes.copy_from_slice(&tag.as_ref()[..SECRET_BYTES]);
        let secret = SigningSecret::from_bytes(bytes);
        zeroize::Zeroize::zeroize(&mut bytes);
        secret
    }
}

impl SecretSalt {
    /// A fresh random salt (a new secret).
    pub fn generate() -> Self {
        let mut bytes = [0u8; SALT_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A salt as stored.
    pub fn from_stored(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn read_key(path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let text = Zeroizing::new(std::fs::read(path).map_err(|source| KeyError::Read { path: path.to_owned(), source })?);
    Ok(Zeroizing::new(text.trim_ascii().to_vec()))
}

fn generate(data_dir: &Path, path: &Path) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let write_err = |source| KeyError::Write { path: path.to_owned(), source };
    std::fs::create_dir_all(data_dir).map_err(write_err)?;
    let mut raw = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(raw.as_mut_slice());
    let text = Zeroizing::new(URL_SAFE_NO_PAD.encode(raw.as_slice()).into_bytes());
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(&text).and_then(|()| file.sync_all()).map_err(write_err)?;
            Ok(text)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => read_key(path),
        Err(e) => Err(write_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_depend_on_key_agent_and_salt() {
        let key = SecretKey::from_bytes(&[9; 32], &KeyOrigin::Config).unwrap();
        let salt = SecretSalt::from_stored("abc");
        let a = key.derive("agent-1", &salt);
        assert_eq!(a, key.derive("agent-1", &salt), "derivation is stable");
        assert_ne!(a, key.derive("agent-2", &salt), "a salt copied to another agent gives another secret");
        assert_ne!(a, key.derive("agent-1", &SecretSalt::from_stored("abd")));
        let other = SecretKey::from_bytes(&[8; 32], &KeyOrigin::Config).unwrap();
        assert_ne!(a, other.derive("agent-1", &salt));
        assert_ne!(SecretSalt::generate(), SecretSalt::generate());
        assert!(matches!(SecretKey::from_bytes(&[1; 31], &KeyOrigin::Config), Err(KeyError::TooShort { len: 31, .. })));
        assert!(!format!("{key:?}").contains('9'));
    }

    #[test]
    fn generates_the_key_once_and_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let (k1, origin) = SecretKey::resolve(None, None, dir.path()).unwrap();
        assert!(matches!(origin, KeyOrigin::Generated(_)));
        let path = dir.path().join(KEY_FILE_NAME);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let (k2, origin) = SecretKey::resolve(None, None, dir.path()).unwrap();
        assert_eq!(origin, KeyOrigin::DataDir(path.clone()));
        let salt = SecretSalt::generate();
        assert_eq!(k1.derive("a", &salt), k2.derive("a", &salt));

        let file = dir.path().join("mine");
        std::fs::write(&file, format!("{}\n", "k".repeat(40))).unwrap();
        let (k3, origin) = SecretKey::resolve(None, Some(&file), dir.path()).unwrap();
        assert_eq!(origin, KeyOrigin::File(file));
        let (k4, _) = SecretKey::resolve(Some(&"k".repeat(40)), None, dir.path()).unwrap();
        assert_eq!(k3.derive("a", &salt), k4.derive("a", &salt), "surrounding whitespace of a file is ignored");
        assert!(matches!(SecretKey::resolve(Some("short"), None, dir.path()), Err(KeyError::TooShort { .. })));
        assert!(matches!(
            SecretKey::resolve(None, Some(&dir.path().join("missing")), dir.path()),
            Err(KeyError::Read { .. })
        ));
    }
}
