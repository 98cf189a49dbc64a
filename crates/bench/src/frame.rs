//! Minimal decoding of server frames: only the fields the accounting needs,
//! borrowed from the frame where possible (serde skips everything else).

use std::borrow::Cow;

use serde::Deserialize;

/// A push or a reply. Pushes have `type`; replies have `id` and `result` or `error`.
#[derive(Debug, Default, Deserialize)]
pub struct Frame<'a> {
    #[serde(rename = "type", borrow, default)]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(borrow, default)]
    pub channel: Option<Cow<'a, str>>,
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(borrow, default)]
    pub epoch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub data: Option<Data<'a>>,
    #[serde(borrow, default)]
    pub result: Option<ReplyResult<'a>>,
    #[serde(borrow, default)]
    pub error: Option<ErrorBody<'a>>,
}

/// The fields the load generator puts into every event's `data`, plus the
/// close code of an SSE `disconnect`.
#[derive(Debug, Default, Deserialize)]
pub struct Data<'a> {
    /// Sequence number within the publisher's stream for this channel.
    #[serde(default)]
    pub s: Option<u64>,
    /// Publisher's send time, µs since the epoch.
    #[serde(default)]
    pub t: Option<u64>,
    /// The user the event was meant for (agent-streams isolation check).
    #[serde(borrow, default)]
    pub u: Option<Cow<'a, str>>,
    #[serde(default)]
    pub code: Option<u16>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ReplyResult<'a> {
    #[serde(default)]
    pub offset: Option<u64>,
    #[serde(borrow, default)]
    pub epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    pub recovered: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody<'a> {
    #[serde(borrow, default)]
    pub error: Option<Cow<'a, str>>,
}

impl<'a> Frame<'a> {
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    pub fn kind(&self) -> &str {
        self.kind.as_deref().unwrap_or("")
    }

    pub fn is_reply(&self) -> bool {
        self.kind.is_none() && (self.result.is_some() || self.error.is_some())
    }

    /// A channel event (it has a channel and an offset in the stream).
    pub fn is_channel_event(&self) -> bool {
        self.kind.is_some() && self.channel.is_some() && self.offset.is_some() && self.epoch.is_some()
    }
}

/// A `subscribe` command, optionally recovering from a position.
pub fn subscribe_command(id: u64, channel: &str, since: Option<(&str, u64)>) -> Vec<u8> {
    match since {
        Some((epoch, offset)) => format!(r#"{{"id":{id},"type":"subscribe","channel":"{channel}","since":{{"offset":{offset},"epoch":"{epoch}"}}}}"#),
        None => format!(r#"{{"id":{id},"type":"subscribe","channel":"{channel}"}}"#),
    }
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_channel_event() {
        let raw = br#"{"type":"agent_text_delta","channel":"user:u-7","offset":42,"epoch":"Xk3fQ2aa","timestamp":"2026-11-22T10:20:00.123Z","data":{"run_id":"r1","thread_id":"user:u-7","agent_id":"a","delta":"hi \"there\"","s":9,"t":1700000000000123,"u":"u-7"}}"#;
        let f = Frame::parse(raw).unwrap();
        assert!(f.is_channel_event() && !f.is_reply());
        assert_eq!(f.kind(), "agent_text_delta");
        assert_eq!(f.channel.as_deref(), Some("user:u-7"));
        assert_eq!((f.offset, f.epoch.as_deref()), (Some(42), Some("Xk3fQ2aa")));
        let d = f.data.unwrap();
        assert_eq!((d.s, d.t, d.u.as_deref()), (Some(9), Some(1_700_000_000_000_123), Some("u-7")));
    }

    #[test]
    fn decodes_replies_and_control_pushes() {
        let ok = br#"{"id":1,"result":{"channel":"room:x","offset":57,"epoch":"E1","recovered":true}}"#;
        let f = Frame::parse(ok).unwrap();
        assert!(f.is_reply());
        assert_eq!(f.id, Some(1));
        let r = f.result.unwrap();
        assert_eq!((r.offset, r.epoch.as_deref(), r.recovered), (Some(57), Some("E1"), Some(true)));

        let err = br#"{"id":null,"error":{"error":"forbidden","message":"no","timestamp":"t","request_id":"r"}}"#;
        let f = Frame::parse(err).unwrap();
        assert!(f.is_reply() && f.id.is_none());
        assert_eq!(f.error.unwrap().error.as_deref(), Some("forbidden"));

        let c = br#"{"type":"connected","connection_id":"c","user_id":"u","timestamp":"t","data":{"protocol_version":1,"node":"n","expires_at":null}}"#;
        let f = Frame::parse(c).unwrap();
        assert_eq!(f.kind(), "connected");
        assert!(!f.is_channel_event());

        let d = br#"{"type":"disconnect","timestamp":"t","data":{"code":4005,"reason":"slow consumer","reconnect":true}}"#;
        assert_eq!(Frame::parse(d).unwrap().data.unwrap().code, Some(4005));
        assert!(Frame::parse(b"not json").is_none());
    }

    #[test]
    fn subscribe_commands() {
        let c = subscribe_command(3, "user:a", Some(("E", 41)));
        let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["since"]["offset"], 41);
        assert_eq!(v["since"]["epoch"], "E");
        let c = subscribe_command(4, "room:b", None);
        let v: serde_json::Value = serde_json::from_slice(&c).unwrap();
        assert_eq!(v["channel"], "room:b");
        assert!(v.get("since").is_none());
    }
}
