//! HS256 connection tokens, minted here with the server's secret.

use std::path::Path;

use anyhow::{Context, bail};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
    #[serde(skip_serializing_if = "<[&str]>::is_empty")]
    channels: &'a [&'a str],
}

pub struct Minter {
    key: EncodingKey,
    header: Header,
    /// Token lifetime; longer than any scenario (the soak is 1 h by default).
    ttl_secs: u64,
}

impl Minter {
    pub fn new(secret: &[u8], ttl_secs: u64) -> anyhow::Result<Self> {
        if secret.is_empty() {
            bail!("the token secret is empty");
        }
        Ok(Self { key: EncodingKey::from_secret(secret), header: Header::new(Algorithm::HS256), ttl_secs })
    }

    /// The secret from `--secret`, else `--secret-file`, else `<data_dir>/jwt-secret`
    /// (the file the server writes on first start), read as the server reads it.
    pub fn from_sources(secret: Option<&str>, secret_file: Option<&Path>, data_dir: Option<&Path>, ttl_secs: u64) -> anyhow::Result<Self> {
        if let Some(s) = secret {
            return Self::new(s.as_bytes(), ttl_secs);
        }
        let path = match (secret_file, data_dir) {
            (Some(f), _) => f.to_owned(),
            (None, Some(d)) => d.join("jwt-secret"),
            (None, None) => bail!("no token secret: pass --secret, --secret-file or --data-dir"),
        };
        let raw = std::fs::read(&path).with_context(|| format!("reading the token secret {}", path.display()))?;
        Self::new(raw.trim_ascii(), ttl_secs)
    }

    /// A token for user `sub` with these channel grants.
    pub fn mint(&self, sub: &str, channels: &[&str]) -> anyhow::Result<String> {
        let now = crate::util::now_us() / 1_000_000;
        let claims = Claims { sub, exp: now + self.ttl_secs, iat: now, channels };
        jsonwebtoken::encode(&self.header, &claims, &self.key).context("minting a token")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation, decode};

    #[test]
    fn mints_verifiable_hs256_tokens_with_grants() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let m = Minter::new(secret, 3600).unwrap();
        let t = m.mint("u-1", &["room:bench"]).unwrap();
        let v = decode::<serde_json::Value>(&t, &DecodingKey::from_secret(secret), &Validation::new(Algorithm::HS256)).unwrap();
        assert_eq!(v.claims["sub"], "u-1");
        assert_eq!(v.claims["channels"][0], "room:bench");
        assert!(v.claims["exp"].as_u64().unwrap() > v.claims["iat"].as_u64().unwrap());
        let no_grants = m.mint("u-2", &[]).unwrap();
        let v = decode::<serde_json::Value>(&no_grants, &DecodingKey::from_secret(secret), &Validation::new(Algorithm::HS256)).unwrap();
        assert!(v.claims.get("channels").is_none());
    }

    #[test]
    fn secret_file_is_trimmed_like_the_server_does() {
        let dir = std::env::temp_dir().join(format!("chorus-bench-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("jwt-secret"), "abcdefghijabcdefghijabcdefghij12\n").unwrap();
        let m = Minter::from_sources(None, None, Some(&dir), 60).unwrap();
        let t = m.mint("x", &[]).unwrap();
        decode::<serde_json::Value>(&t, &DecodingKey::from_secret(b"abcdefghijabcdefghijabcdefghij12"), &Validation::new(Algorithm::HS256)).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert!(Minter::from_sources(None, None, None, 60).is_err());
    }
}
