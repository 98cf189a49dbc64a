//! Event data: a JSON object kept as bytes.
//!
//! The core moves payloads around without looking inside; only this crate
//! parses or builds them.

use bytes::Bytes;
use serde_json::value::RawValue;

/// A JSON object, validated once at the edge and then passed around as bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Payload(Bytes);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("`data` must be a JSON object")]
    NotAnObject,
    #[error("`data` is not valid JSON: {0}")]
    Malformed(String),
}

impl Payload {
    /// The empty object `{}`.
    pub fn empty() -> Self {
        Self(Bytes::from_static(b"{}"))
    }

    /// Takes a raw JSON value already parsed by serde; it must be an object.
    pub fn from_raw(raw: &RawValue) -> Result<Self, PayloadError> {
        let text = raw.get();
        if !text.trim_start().starts_with('{') {
            return Err(PayloadError::NotAnObject);
        }
        Ok(Self(Bytes::copy_from_slice(text.as_bytes())))
    }

    /// Parses untrusted bytes (e.g. from a broker) and checks they form an object.
    pub fn from_bytes(bytes: Bytes) -> Result<Self, PayloadError> {
        let raw: &RawValue =
            serde_json::from_slice(&bytes).map_err(|e| PayloadError::Malformed(e.to_string()))?;
        if !raw.get().starts_with('{') {
            return Err(PayloadError::NotAnObject);
        }
        Ok(Self(bytes))
    }

    /// Serializes a value the server itself builds; it must serialize to an object.
    pub fn from_value<T: serde::Serialize>(value: &T) -> Result<Self, PayloadError> {
        let mut v = serde_json::to_vec(value).map_err(|e| PayloadError::Malformed(e.to_string()))?;
        if v.first() != Some(&b'{') {
            return Err(PayloadError::NotAnObject);
        }
        // The buffer grew by doubling; a payload may be kept (in history) for
        // as long as its channel keeps events, so it keeps only its bytes.
        v.shrink_to_fit();
        Ok(Self(Bytes::from(v)))
    }

    /// Bytes this crate cut from JSON it wrote itself (a slice of a push
    /// frame around a payload it was given): already an object.
    pub(crate) fn from_trusted(bytes: Bytes) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the object for inspection (schema checks, tests).
    pub fn to_map(&self) -> Result<serde_json::Map<String, serde_json::Value>, PayloadError> {
        serde_json::from_slice(&self.0).map_err(|e| PayloadError::Malformed(e.to_string()))
    }
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Payload({})", String::from_utf8_lossy(&self.0))
    }
}

impl serde::Serialize for Payload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Invariant: the bytes are valid JSON, checked on construction.
        let text = std::str::from_utf8(&self.0).map_err(serde::ser::Error::custom)?;
        let raw: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_objects_only() {
        assert!(Payload::from_bytes(Bytes::from_static(b"{\"a\":1}")).is_ok());
        assert_eq!(Payload::from_bytes(Bytes::from_static(b"[1]")), Err(PayloadError::NotAnObject));
        assert!(matches!(Payload::from_bytes(Bytes::from_static(b"{")), Err(PayloadError::Malformed(_))));
        assert_eq!(Payload::from_value(&1), Err(PayloadError::NotAnObject));
        assert_eq!(Payload::from_value(&serde_json::json!({"x": "y"})).unwrap().as_bytes(), "{\"x\":\"y\"}");
    }
}
