//! API keys of server-side publishers, from the configuration.

use std::fmt;

use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// The configured API keys. Only SHA-256 digests are kept; a presented key
/// is compared against every digest in constant time. `Debug` shows a count.
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl ApiKeys {
    /// Keeps the digests of `keys`; empty strings are ignored (they would
    /// match an empty header).
    pub fn new(keys: &[String]) -> Self {
        Self { digests: keys.iter().filter(|k| !k.is_empty()).map(|k| digest(k)).collect() }
    }

    /// A non-secret id of the matching key (`sha256:` and the first 8 hex
    /// digits of its digest, for logs), or `None`.
    pub fn check(&self, presented: &str) -> Option<String> {
        if presented.is_empty() {
            return None;
        }
        let d = digest(presented);
        // No early exit: the time taken does not depend on which key matched.
        let mut found: Option<&[u8; 32]> = None;
        for stored in &self.digests {
            if bool::from(stored.ct_eq(&d)) {
                found = Some(stored);
            }
        }
        found.map(|d| format!("sha256:{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3]))
    }

    /// How many keys are configured.
    pub fn len(&self) -> usize {
        self.digests.len()
    }

    /// True when no key is configured (every presented key is refused).
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKeys({} configured)", self.digests.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_keys_and_hides_them() {
        let keys = ApiKeys::new(&["publisher-key-aaaaaaaa".into(), "publisher-key-bbbbbbbb".into(), String::new()]);
        assert_eq!(keys.len(), 2);
        let a = keys.check("publisher-key-aaaaaaaa").unwrap();
        let b = keys.check("publisher-key-bbbbbbbb").unwrap();
        assert!(a.starts_with("sha256:") && a.len() == "sha256:".len() + 8, "{a}");
        assert_ne!(a, b);
        assert_eq!(keys.check("publisher-key-aaaaaaaa"), Some(a));
        for wrong in ["", "publisher-key-aaaaaaa", "publisher-key-aaaaaaaaa", "PUBLISHER-KEY-AAAAAAAA"] {
            assert_eq!(keys.check(wrong), None, "{wrong:?}");
        }
        assert_eq!(ApiKeys::new(&[]).check("anything"), None);
        let shown = format!("{keys:?}");
        assert_eq!(shown, "ApiKeys(2 configured)");
        assert!(!shown.contains("publisher"));
    }
}
