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
    let mut out = String::with_capacity(96 + header.channel.len() + data.len());
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
    // Invariant: Payload bytes are valid UTF-8 JSON (checked on construction).
    out.push_str(std::str::from_utf8(data.as_bytes()).unwrap_or("{}"));
    out.push('}');
    Bytes::from(out)
}

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
    fn control_pushes_are_tagged() {
        let v: serde_json::Value =
            serde_json::from_slice(&encode_control(&ControlPush::disconnect(crate::CloseCode::SlowConsumer))).unwrap();
        assert_eq!(v["type"], "disconnect");
        assert_eq!(v["data"]["code"], 4005);
        assert_eq!(v["data"]["reconnect"], true);
    }
}
