//! Webhook signatures, in the Standard Webhooks scheme so receivers can use
//! an existing library to check them.
//!
//! Every delivery carries three headers:
//! - `webhook-id`: the delivery's id (the run id; the same on the retry);
//! - `webhook-timestamp`: Unix seconds when this attempt was signed;
//! - `webhook-signature`: `v1,<base64 HMAC-SHA256>` of `{id}.{timestamp}.{body}`
//!   under the agent's signing secret; several space-separated while a
//!   rotated secret is still honoured.
//!
//! Receivers reject a timestamp more than [`REPLAY_WINDOW`] away from their
//! clock, and a signature none of their secrets produces.

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;
use zeroize::Zeroizing;

/// The prefix of a signing secret as shown to its owner.
pub const SECRET_PREFIX: &str = "whsec_";
/// Bytes of key material in a signing secret.
pub const SECRET_BYTES: usize = 32;
pub const HEADER_ID: &str = "webhook-id";
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
pub const HEADER_SIGNATURE: &str = "webhook-signature";
/// How far a delivery's timestamp may be from the receiver's clock.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(5 * 60);

/// An agent's webhook signing secret. `Debug` never shows it; the bytes are
/// wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningSecret(Zeroizing<Vec<u8>>);

/// Why a signature check failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("webhook-timestamp is not a number of seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is outside the replay window")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
    #[error("not a signing secret (expected whsec_ and base64)")]
    BadSecret,
}

impl SigningSecret {
    pub fn from_bytes(bytes: [u8; SECRET_BYTES]) -> Self {
        Self(Zeroizing::new(bytes.to_vec()))
    }

    /// Reads the `whsec_…` form (Chorus makes 32-byte secrets; 24 to 64 bytes are read).
    pub fn parse(text: &str) -> Result<Self, VerifyError> {
        let b64 = text.strip_prefix(SECRET_PREFIX).ok_or(VerifyError::BadSecret)?;
        let bytes = Zeroizing::new(STANDARD.decode(b64).map_err(|_| VerifyError::BadSecret)?);
        if !(24..=64).contains(&bytes.len()) {
            return Err(VerifyError::BadSecret);
        }
        Ok(Self(bytes))
    }

    /// The `whsec_…` form, shown to the agent's owner once (at creation and rotation).
    pub fn reveal(&self) -> String {
        format!("{SECRET_PREFIX}{}", STANDARD.encode(self.0.as_slice()))
    }

    fn key(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, self.0.as_slice())
    }

    /// `v1,<base64>` for one delivery attempt.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = hmac::sign(&self.key(), &signed_content(id, timestamp, body));
        format!("v1,{}", STANDARD.encode(tag.as_ref()))
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningSecret([redacted])")
    }
}

fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let ts = timestamp.to_string();
    let mut msg = Vec::with_capacity(id.len() + ts.len() + body.len() + 2);
    msg.extend_from_slice(id.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(ts.as_bytes());
    msg.push(b'.');
    msg.extend_from_slice(body);
    msg
}

/// The `webhook-signature` value: one signature per secret, current first.
pub fn signature_header(secrets: &[SigningSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// What a receiver does: checks the timestamp against `now_secs` and that
/// one of the header's `v1` signatures was made with `secret`.
pub fn verify(
    secret: &SigningSecret,
    id: &str,
    timestamp: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
) -> Result<(), VerifyError> {
    let ts: i64 = timestamp.trim().parse().map_err(|_| VerifyError::BadTimestamp)?;
    if ts.abs_diff(now_secs) > REPLAY_WINDOW.as_secs() {
        return Err(VerifyError::Stale);
    }
    let content = signed_content(id, ts, body);
    let key = secret.key();
    let matches = signature_header
        .split_whitespace()
        .filter_map(|s| s.strip_prefix("v1,"))
        .any(|b64| STANDARD.decode(b64).is_ok_and(|tag| hmac::verify(&key, &content, &tag).is_ok()));
    if matches { Ok(()) } else { Err(VerifyError::Mismatch) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_test_vector() {
        // The reference example of the Standard Webhooks specification.
        let secret = SigningSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let signature = secret.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            verify(&secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", &signature, body, 1_614_265_330),
            Ok(())
        );
        assert_eq!(SigningSecret::parse("whsec_c2hvcnQ="), Err(VerifyError::BadSecret));
        assert_eq!(SigningSecret::parse("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), Err(VerifyError::BadSecret));
        let bytes: [u8; 32] = *b"0123456789abcdef0123456789abcdef";
        let s = SigningSecret::from_bytes(bytes);
        let shown = s.reveal();
        assert!(shown.starts_with("whsec_"));
        assert_eq!(SigningSecret::parse(&shown).unwrap(), s);
        assert!(!format!("{s:?}").contains("0123"));
    }

    #[test]
    fn signs_id_timestamp_and_body() {
        let s = SigningSecret::from_bytes([7; 32]);
        let body = br#"{"type":"run_requested"}"#;
        let header = s.sign("run-1", 1_700_000_000, body);
        assert!(header.starts_with("v1,"));
        assert_eq!(verify(&s, "run-1", "1700000000", &header, body, 1_700_000_100), Ok(()));
        assert_eq!(verify(&s, "run-2", "1700000000", &header, body, 1_700_000_100), Err(VerifyError::Mismatch));
        assert_eq!(verify(&s, "run-1", "1700000001", &header, body, 1_700_000_100), Err(VerifyError::Mismatch));
        assert_eq!(verify(&s, "run-1", "1700000000", &header, b"{}", 1_700_000_100), Err(VerifyError::Mismatch));
        assert_eq!(
            verify(&SigningSecret::from_bytes([8; 32]), "run-1", "1700000000", &header, body, 1_700_000_000),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(verify(&s, "run-1", "1700000000", &header, body, 1_700_000_301), Err(VerifyError::Stale));
        assert_eq!(verify(&s, "run-1", "1700000000", &header, body, 1_699_999_699), Err(VerifyError::Stale));
        assert_eq!(verify(&s, "run-1", "soon", &header, body, 1_700_000_000), Err(VerifyError::BadTimestamp));
    }

    #[test]
    fn either_secret_verifies_while_both_sign() {
        let new = SigningSecret::from_bytes([1; 32]);
        let old = SigningSecret::from_bytes([2; 32]);
        let header = signature_header(&[new.clone(), old.clone()], "r", 10, b"x");
        assert_eq!(header.split(' ').count(), 2);
        assert_eq!(verify(&new, "r", "10", &header, b"x", 10), Ok(()));
        assert_eq!(verify(&old, "r", "10", &header, b"x", 10), Ok(()));
        assert_eq!(
            verify(&SigningSecret::from_bytes([3; 32]), "r", "10", &header, b"x", 10),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(verify(&new, "r", "10", "v2,abc v1,!!", b"x", 10), Err(VerifyError::Mismatch));
    }
}
