//! Refresh tokens and API keys: random, shown once, stored as digests.
//!
//! They carry 256 bits of randomness, so a plain SHA-256 digest is enough to
//! store them (no salt or slow hash needed), and the digest is what the
//! store looks them up by.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "chr_";
/// Prefix of API keys created through the API; lets the server skip the
/// store for keys that cannot be one of them.
pub const API_KEY_PREFIX: &str = "chk_";
/// Characters of an API key kept for display.
pub const API_KEY_DISPLAY_LEN: usize = 12;
/// Longest token looked up; anything longer is refused unread.
pub const MAX_SECRET_LEN: usize = 128;

/// `prefix` and 32 random bytes in base64url.
pub fn generate(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256.
pub fn digest(secret: &str) -> String {
    let d = Sha256::digest(secret.as_bytes());
    let mut out = String::with_capacity(64);
    for b in d {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_are_distinct_and_digested() {
        let a = generate(API_KEY_PREFIX);
        let b = generate(API_KEY_PREFIX);
        assert_ne!(a, b);
        assert!(a.starts_with(API_KEY_PREFIX) && a.len() == 4 + 43, "{a}");
        assert_eq!(digest(&a), digest(&a));
        assert_ne!(digest(&a), digest(&b));
        assert_eq!(digest("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
