//! Replies: `{"id":7,"result":{...}}` or `{"id":7,"error":{...}}`.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::error::ErrorObject;

/// A reply to one command. `id` is `None` only when the command's id could not be read.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub id: Option<u64>,
    pub outcome: Result<ReplyBody, ErrorObject>,
}

/// The result of each command.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ReplyBody {
    Connected(ConnectedResult),
    Refreshed { expires_at: Option<String> },
    Subscribed(SubscribedResult),
    Unsubscribed { channel: String },
    Published { channel: String, offset: u64, epoch: String },
    History(HistoryResult),
    Presence(PresenceResult),
    Typing { channel: String, active: bool },
    MessageSent(MessageSentResult),
    RunCancelled(RunCancelResult),
    Pong { pong: bool },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConnectedResult {
    pub connection_id: String,
    pub user_id: String,
    pub node: String,
    pub protocol_version: u32,
    /// When the token expires; send `refresh` before then. `None` for tokens without `exp`.
    pub expires_at: Option<String>,
    pub ping_interval_ms: u64,
    pub pong_timeout_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubscribedResult {
    pub channel: String,
    /// The stream's position when the subscription took effect.
    pub offset: u64,
    pub epoch: String,
    /// Present when `since` was given: `true` if missed events follow as pushes,
    /// `false` if a `recovery_failed` push follows instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    /// Present with `recovered`: how many missed events the replay pushes
    /// (offsets `since + 1` to `offset`) before live events; 0 when
    /// `recovered` is false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaying: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryResult {
    pub channel: String,
    pub offset: u64,
    pub epoch: String,
    /// Events in stream order, each exactly as it was pushed.
    pub events: RawFrames,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PresenceResult {
    pub channel: String,
    pub users: Vec<PresenceUser>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PresenceUser {
    pub user_id: String,
    pub connections: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageSentResult {
    pub message_id: String,
    pub channel: String,
    /// The message's place in the channel's stored history (1, 2, ...): the
    /// durable position, the same on every node and across restarts.
    pub seq: i64,
    /// Where `message_created` went on the channel's stream. Absent when this
    /// send did not publish it: a duplicate (the original send did), or a
    /// fan-out deferred to the outbox relay (the message is stored and will
    /// be delivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    pub created_at: String,
    /// True when an idempotency key matched an earlier send; the original is returned.
    pub duplicate: bool,
}

/// The reply to `cancel_run`: the run's status after the request (`cancelled`,
/// or the ending it already had: cancelling is idempotent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunCancelResult {
    pub run_id: String,
    pub status: String,
}

/// Already-encoded push frames embedded as JSON values.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RawFrames(pub Vec<Bytes>);

impl Serialize for RawFrames {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for frame in &self.0 {
            let raw: &RawValue = serde_json::from_slice(frame).map_err(serde::ser::Error::custom)?;
            seq.serialize_element(raw)?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct Wire<'a> {
    id: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a ReplyBody>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a ErrorObject>,
}

impl Reply {
    pub fn ok(id: u64, body: ReplyBody) -> Self {
        Self { id: Some(id), outcome: Ok(body) }
    }

    pub fn err(id: Option<u64>, error: ErrorObject) -> Self {
        Self { id, outcome: Err(error) }
    }

    pub fn encode(&self) -> Bytes {
        let wire = Wire { id: self.id, result: self.outcome.as_ref().ok(), error: self.outcome.as_ref().err() };
        match serde_json::to_vec(&wire) {
            Ok(v) => Bytes::from(v),
            // Only a corrupt raw frame can fail; report it instead of sending nothing.
            Err(e) => Bytes::from(
                serde_json::to_vec(&Wire {
                    id: self.id,
                    result: None,
                    error: Some(&ErrorObject::new(
                        crate::ErrorCode::Internal,
                        format!("reply could not be encoded: {e}"),
                        self.outcome.as_ref().err().map(|e| e.request_id.clone()).unwrap_or_default(),
                    )),
                })
                .unwrap_or_default(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn encodes_result_and_error() {
        let r = Reply::ok(3, ReplyBody::Pong { pong: true }).encode();
        assert_eq!(&r[..], br#"{"id":3,"result":{"pong":true}}"#);
        let e = Reply::err(None, ErrorObject::new(ErrorCode::MalformedJson, "bad", "rq")).encode();
        let v: serde_json::Value = serde_json::from_slice(&e).unwrap();
        assert!(v["id"].is_null());
        assert_eq!(v["error"]["error"], "malformed_json");
    }

    #[test]
    fn history_embeds_frames_verbatim() {
        let frame = Bytes::from_static(br#"{"type":"publication","channel":"x:y","offset":1,"epoch":"e","timestamp":"t","data":{}}"#);
        let body = ReplyBody::History(HistoryResult {
            channel: "x:y".into(),
            offset: 1,
            epoch: "e".into(),
            events: RawFrames(vec![frame]),
        });
        let v: serde_json::Value = serde_json::from_slice(&Reply::ok(1, body).encode()).unwrap();
        assert_eq!(v["result"]["events"][0]["type"], "publication");
    }
}
