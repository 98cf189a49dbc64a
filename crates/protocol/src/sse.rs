//! Server-Sent Events framing and the stream position carried in event ids.
//!
//! An SSE stream can carry several channels, so each event's `id` lists the
//! position of every channel of the stream: `room:a=Xk3f:42;user:7=p0Q1:3`.
//! A client (or the browser's `EventSource`) sends the last one back as
//! `Last-Event-ID` and every channel resumes from its own position.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::channel::ChannelName;
use crate::command::StreamPosition;

/// Longest `Last-Event-ID` accepted, in bytes.
pub const MAX_EVENT_ID_LEN: usize = 16 * 1024;

/// Per-channel positions of one SSE stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SsePositions(BTreeMap<ChannelName, StreamPosition>);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventIdError {
    #[error("Last-Event-ID is longer than {MAX_EVENT_ID_LEN} bytes")]
    TooLong,
    #[error("Last-Event-ID entry `{0}` is not `channel=epoch:offset`")]
    BadEntry(String),
}

impl SsePositions {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn set(&mut self, channel: ChannelName, position: StreamPosition) {
        self.0.insert(channel, position);
    }

    pub fn remove(&mut self, channel: &str) {
        self.0.remove(channel);
    }

    pub fn get(&self, channel: &str) -> Option<&StreamPosition> {
        self.0.get(channel)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&ChannelName, &StreamPosition)> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The event id form.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.0.len() * 32);
        for (i, (ch, pos)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(';');
            }
            out.push_str(ch.as_str());
            out.push('=');
            out.push_str(&pos.epoch);
            out.push(':');
            out.push_str(&pos.offset.to_string());
        }
        out
    }

    /// Parses a `Last-Event-ID`; an empty id means "no positions".
    pub fn parse(id: &str) -> Result<Self, EventIdError> {
        if id.len() > MAX_EVENT_ID_LEN {
            return Err(EventIdError::TooLong);
        }
        let mut out = Self::new();
        for entry in id.split(';').filter(|e| !e.is_empty()) {
            let bad = || EventIdError::BadEntry(entry.chars().take(80).collect());
            let (ch, pos) = entry.split_once('=').ok_or_else(bad)?;
            let (epoch, offset) = pos.rsplit_once(':').ok_or_else(bad)?;
            let channel = ChannelName::parse(ch).map_err(|_| bad())?;
            let offset: u64 = offset.parse().map_err(|_| bad())?;
            if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(bad());
            }
            out.set(channel, StreamPosition { offset, epoch: epoch.to_owned() });
        }
        Ok(out)
    }
}

/// One SSE event: `id:` (optional), `event:`, `data:` and a blank line.
pub fn encode_event(id: Option<&str>, event: &str, data: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(data.len() + event.len() + id.map_or(0, str::len) + 24);
    if let Some(id) = id {
        out.extend_from_slice(b"id: ");
        out.extend_from_slice(id.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Our JSON has no raw newlines (serde escapes them), so one data line suffices.
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The keep-alive comment sent when the stream is otherwise idle.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// Sets the browser's reconnect delay.
pub fn encode_retry(ms: u64) -> Bytes {
    Bytes::from(format!("retry: {ms}\n\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip() {
        let mut p = SsePositions::new();
        p.set(ChannelName::parse("room:a").unwrap(), StreamPosition { offset: 42, epoch: "Xk3f".into() });
        p.set(ChannelName::parse("user:u:1").unwrap(), StreamPosition { offset: 0, epoch: "p0Q1".into() });
        let id = p.encode();
        assert_eq!(id, "room:a=Xk3f:42;user:u:1=p0Q1:0");
        assert_eq!(SsePositions::parse(&id).unwrap(), p);
        assert!(SsePositions::parse("").unwrap().is_empty());
    }

    #[test]
    fn rejects_bad_ids() {
        assert!(SsePositions::parse("room:a").is_err());
        assert!(SsePositions::parse("room:a=x:y").is_err());
        assert!(SsePositions::parse("room:a=:1").is_err());
        assert!(SsePositions::parse("bad=e:1").is_err());
        assert!(SsePositions::parse("room:a=e-f:1").is_err());
        assert_eq!(SsePositions::parse(&"x".repeat(MAX_EVENT_ID_LEN + 1)), Err(EventIdError::TooLong));
    }

    #[test]
    fn event_framing() {
        assert_eq!(&encode_event(Some("a=b:1"), "publication", b"{}")[..], b"id: a=b:1\nevent: publication\ndata: {}\n\n");
        assert_eq!(&encode_event(None, "reconnect", b"{}")[..], b"event: reconnect\ndata: {}\n\n");
    }
}
