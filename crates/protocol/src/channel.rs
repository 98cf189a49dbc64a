//! Channel names: `namespace:id`.
//!
//! The syntax is part of the wire format; which namespaces exist and who may
//! use them is decided by the core.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// Longest namespace, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 32;
/// Longest id part of a channel name, in bytes.
pub const MAX_ID_LEN: usize = 128;

/// A syntactically valid channel name, cheap to clone.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    #[error("channel name must look like `namespace:id`")]
    MissingNamespace,
    #[error("channel namespace must be 1-32 characters of a-z, 0-9, `_` or `-`, starting with a letter")]
    BadNamespace,
    #[error("channel id must be 1-128 characters of A-Z, a-z, 0-9, `_`, `-`, `.`, `:` or `@`")]
    BadId,
}

impl ChannelName {
    pub fn parse(raw: &str) -> Result<Self, ChannelNameError> {
        let (ns, id) = raw.split_once(':').ok_or(ChannelNameError::MissingNamespace)?;
        if !valid_namespace(ns) {
            return Err(ChannelNameError::BadNamespace);
        }
        if id.is_empty() || id.len() > MAX_ID_LEN || !id.bytes().all(valid_id_byte) {
            return Err(ChannelNameError::BadId);
        }
        Ok(Self(Arc::from(raw)))
    }

    /// Builds `namespace:id`, validating both parts.
    pub fn from_parts(namespace: &str, id: &str) -> Result<Self, ChannelNameError> {
        Self::parse(&format!("{namespace}:{id}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn namespace(&self) -> &str {
        // Invariant: parse() guarantees a ':'.
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }

    pub fn id(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, id)| id)
    }
}

pub fn valid_namespace(ns: &str) -> bool {
    let bytes = ns.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAMESPACE_LEN
        && bytes[0].is_ascii_lowercase()
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_' || *b == b'-')
}

fn valid_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'@')
}

/// True when `pattern` grants `channel`: an exact name, or `ns:*` / `ns:prefix*`.
pub fn pattern_matches(pattern: &str, channel: &ChannelName) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => prefix.contains(':') && channel.as_str().starts_with(prefix),
        None => pattern == channel.as_str(),
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for ChannelName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl serde::Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_names() {
        let c = ChannelName::parse("room:general-1").unwrap();
        assert_eq!(c.namespace(), "room");
        assert_eq!(c.id(), "general-1");
        assert!(ChannelName::parse("user:alice@example.com").is_ok());
        assert!(ChannelName::parse("a:b:c").is_ok());
    }

    #[test]
    fn rejects_invalid_names() {
        assert_eq!(ChannelName::parse("general"), Err(ChannelNameError::MissingNamespace));
        assert_eq!(ChannelName::parse(":x"), Err(ChannelNameError::BadNamespace));
        assert_eq!(ChannelName::parse("Room:x"), Err(ChannelNameError::BadNamespace));
        assert_eq!(ChannelName::parse("room:"), Err(ChannelNameError::BadId));
        assert_eq!(ChannelName::parse("room:a b"), Err(ChannelNameError::BadId));
        assert_eq!(ChannelName::parse("room:a;b"), Err(ChannelNameError::BadId));
        assert_eq!(ChannelName::parse("room:a=b"), Err(ChannelNameError::BadId));
        let long = format!("room:{}", "x".repeat(MAX_ID_LEN + 1));
        assert_eq!(ChannelName::parse(&long), Err(ChannelNameError::BadId));
        let ok = format!("room:{}", "x".repeat(MAX_ID_LEN));
        assert!(ChannelName::parse(&ok).is_ok());
    }

    #[test]
    fn wildcard_patterns() {
        let c = ChannelName::parse("news:sport").unwrap();
        assert!(pattern_matches("news:*", &c));
        assert!(pattern_matches("news:sp*", &c));
        assert!(pattern_matches("news:sport", &c));
        assert!(!pattern_matches("news:sportx", &c));
        assert!(!pattern_matches("*", &c));
        assert!(!pattern_matches("room:*", &c));
    }
}
