//! Server pushes: frames without an `id`.
//!
//! A channel event looks like
//! `{"type":"agent_thinking","channel":"room:a","offset":42,"epoch":"Xk3f","timestamp":"...","data":{...}}`.
//! It is encoded once per channel and the same bytes go to every subscriber.

use bytes::Bytes;
use serde::Serialize;

use crate::payload::Payload;
use crate::timestamp;

/// The envelope fields of a channel event.
#[derive(Debug, Clone, Copy)]
pub struct PushHeader<'a> {
    pub event: &'a str,
    pub channel: &'a str,
    pub offset: u64,
    pub epoch: &'a str,
    pub time_ms: i64,
}

/// Encodes a channel event.
pub fn encode_push(header: PushHeader<'_>, data: &Payload) -> Bytes {
    Bytes::from(push_text(header, data).0)
}

/// Encodes a channel event and returns, with the frame, its `data` as a
/// slice of that frame: an event kept in history holds its data once.
pub fn encode_push_shared(header: PushHeader<'_>, data: &Payload) -> (Bytes, Payload) {
    let (text, at) = push_text(header, data);
    let frame = Bytes::from(text);
    let shared = Payload::from_trusted(frame.slice(at..at + data.len()));
    (frame, shared)
}

/// The frame's text and where `data` starts in it.
fn push_text(header: PushHeader<'_>, data: &Payload) -> (String, usize) {
    // Sized for the whole frame: it is kept in the channel's history, and a
    // buffer that grew by doubling would keep up to twice its length there.
    let mut out = String::with_capacity(ENVELOPE_BYTES + header.event.len() + header.channel.len() + header.epoch.len() + data.len());
    out.push_str("{\"type\":");
    push_json_str(&mut out, header.event);
    out.push_str(",\"channel\":");
    push_json_str(&mut out, header.channel);
    out.push_str(",\"offset\":");
    out.push_str(&header.offset.to_string());
    out.push_str(",\"epoch\":");
    push_json_str(&mut out, header.epoch);
    out.push_str(",\"timestamp\":\"");
    timestamp::write_ms(&mut out, header.time_ms);
    out.push_str("\",\"data\":");
    let at = out.len();
    // Invariant: Payload bytes are valid UTF-8 JSON (checked on construction).
    out.push_str(std::str::from_utf8(data.as_bytes()).unwrap_or("{}"));
    out.push('}');
    if out.capacity() > out.len() + 64 {
        // Only when a name needed escaping: trim what the growth left over.
        out.shrink_to_fit();
    }
    (out, at)
}

/// The envelope's fixed text (62 bytes), the quotes of three names, the
/// longest offset (20 digits) and a timestamp (24 characters; 27 past 9999).
const ENVELOPE_BYTES: usize = 62 + 6 + 20 + 27;

fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // Rare: fall back to serde's escaping.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// Pushes that are not events of a channel's stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlPush {
    /// First push of a connection authenticated at upgrade (WebSocket) or of an SSE stream.
    Connected { connection_id: String, user_id: String, timestamp: String, data: ConnectedData },
    /// Missed events of `channel` cannot be replayed; refetch state, then continue from `offset`/`epoch`.
    RecoveryFailed { channel: String, offset: u64, epoch: String, timestamp: String, data: ReasonData },
    /// The server removed a subscription (e.g. membership was revoked).
    Unsubscribed { channel: String, timestamp: String, data: ReasonData },
    /// SSE only: the server is going away; reconnect after `retry_ms` with `Last-Event-ID`.
    Reconnect { timestamp: String, data: ReconnectData },
    /// SSE only: the stream is being closed; `code` is the WebSocket close code that would apply.
    Disconnect { timestamp: String, data: DisconnectData },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectedData {
    pub protocol_version: u32,
    pub node: String,
    /// SSE only: where this connection's commands are sent (`POST`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commands_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReasonData {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReconnectData {
    pub reason: String,
    pub retry_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DisconnectData {
    pub code: u16,
    pub reason: String,
    pub reconnect: bool,
}

impl ControlPush {
    pub fn name(&self) -> &'static str {
        match self {
            ControlPush::Connected { .. } => "connected",
            ControlPush::RecoveryFailed { .. } => "recovery_failed",
            ControlPush::Unsubscribed { .. } => "unsubscribed",
            ControlPush::Reconnect { .. } => "reconnect",
            ControlPush::Disconnect { .. } => "disconnect",
        }
    }

    pub fn disconnect(code: crate::CloseCode) -> Self {
        ControlPush::Disconnect {
            timestamp: timestamp::format_ms(timestamp::now_ms()),
            data: DisconnectData { code: code.code(), reason: code.reason().into(), reconnect: code.should_reconnect() },
        }
    }
}

/// Encodes a control push.
pub fn encode_control(push: &ControlPush) -> Bytes {
    // A tagged enum of strings and numbers always serializes.
    Bytes::from(serde_json::to_vec(push).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_is_valid_json_with_every_envelope_field() {
        let data = Payload::from_value(&serde_json::json!({"thought": "hm \"quoted\""})).unwrap();
        let b = encode_push(
            PushHeader { event: "agent_thinking", channel: "room:a", offset: 42, epoch: "Xk3f", time_ms: 1_795_342_800_123 },
            &data,
        );
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["type"], "agent_thinking");
        assert_eq!(v["channel"], "room:a");
        assert_eq!(v["offset"], 42);
        assert_eq!(v["epoch"], "Xk3f");
        assert_eq!(v["timestamp"], "2026-11-22T10:20:00.123Z");
        assert_eq!(v["data"]["thought"], "hm \"quoted\"");
        assert!(v.get("id").is_none());
    }

    #[test]
    fn a_push_is_built_in_one_buffer_of_about_its_size() {
        let data = Payload::from_value(&serde_json::json!({"delta": "x".repeat(300), "seq": 7})).unwrap();
        for (event, offset, time_ms) in [("agent_text_delta", u64::MAX, 253_402_300_799_999), ("a", 0, 0)] {
            let header = PushHeader { event, channel: "room:0123456789abcdef", offset, epoch: "e-0123456789", time_ms };
            let (text, _) = push_text(header, &data);
            // No growth (which doubles) and little slack: it is kept in history.
            assert!(text.capacity() <= text.len() + 64, "{} bytes in {}", text.len(), text.capacity());
            assert!(serde_json::from_str::<serde_json::Value>(&text).is_ok());
        }
    }

    #[test]
    fn a_shared_push_holds_its_data_as_a_slice_of_the_frame() {
        let data = Payload::from_value(&serde_json::json!({"delta": "hello", "seq": 3})).unwrap();
        let header = PushHeader { event: "agent_text_delta", channel: "room:a", offset: 9, epoch: "E", time_ms: 0 };
        let (frame, shared) = encode_push_shared(header, &data);
        assert_eq!(frame, encode_push(header, &data));
        assert_eq!(shared, data);
        let inside = frame.as_ptr_range();
        assert!(inside.contains(&shared.as_bytes().as_ptr()), "no second copy of the data");
    }

    #[test]
    fn control_pushes_are_tagged() {
        let v: serde_json::Value =
            serde_json::from_slice(&encode_control(&ControlPush::disconnect(crate::CloseCode::SlowConsumer))).unwrap();
        assert_eq!(v["type"], "disconnect");
        assert_eq!(v["data"]["code"], 4005);
        assert_eq!(v["data"]["reconnect"], true);
    }
}
