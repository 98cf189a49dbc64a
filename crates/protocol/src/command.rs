//! Client commands: `{"id": 7, "type": "subscribe", ...fields}`.
//!
//! Decoding happens in two steps so that an error reply can carry the
//! command's `id` whenever the frame is JSON and has a readable `id`, even if
//! the rest of the command is wrong.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::channel::ChannelName;
use crate::error::ErrorCode;
use crate::payload::Payload;

/// A decoded command with the id its reply must carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: u64,
    pub command: Command,
}

/// A position in a channel's stream: the offset of the last event seen and
/// the epoch it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// Every command a client can send.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Authenticate a connection opened without a token.
    Connect { token: String },
    /// Replace the connection's token before it expires.
    Refresh { token: String },
    /// Start receiving a channel's events; with `since`, first replay what was missed.
    Subscribe { channel: ChannelName, since: Option<StreamPosition> },
    Unsubscribe { channel: ChannelName },
    /// Publish a `publication` event where the namespace allows client publishing.
    Publish { channel: ChannelName, data: Payload },
    /// Read retained events: those after `since`, or the latest `limit`.
    History { channel: ChannelName, since: Option<StreamPosition>, limit: Option<u32> },
    /// Who is in the channel now.
    Presence { channel: ChannelName },
    /// Start (`active: true`, the default) or stop a typing indicator.
    Typing { channel: ChannelName, active: bool },
    /// Send a chat message to a `room:` channel; stored, then pushed as `message_created`.
    SendMessage { channel: ChannelName, text: String, idempotency_key: Option<String> },
    Ping,
}

impl Command {
    /// The command's `type` on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Connect { .. } => "connect",
            Command::Refresh { .. } => "refresh",
            Command::Subscribe { .. } => "subscribe",
            Command::Unsubscribe { .. } => "unsubscribe",
            Command::Publish { .. } => "publish",
            Command::History { .. } => "history",
            Command::Presence { .. } => "presence",
            Command::Typing { .. } => "typing",
            Command::SendMessage { .. } => "send_message",
            Command::Ping => "ping",
        }
    }
}

/// Every command `type` the server knows.
pub const COMMAND_NAMES: &[&str] = &[
    "connect",
    "refresh",
    "subscribe",
    "unsubscribe",
    "publish",
    "history",
    "presence",
    "typing",
    "send_message",
    "ping",
];

/// Why a frame could not be decoded; `id` is set when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    pub id: Option<u64>,
    pub code: ErrorCode,
    pub message: String,
}

impl DecodeError {
    fn new(id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> Self {
        Self { id, code, message: message.into() }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    id: Option<serde_json::Value>,
    #[serde(default, rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
struct TokenParams {
    token: String,
}

#[derive(Deserialize)]
struct SubscribeParams {
    channel: ChannelName,
    #[serde(default)]
    since: Option<StreamPosition>,
}

#[derive(Deserialize)]
struct ChannelParams {
    channel: ChannelName,
}

#[derive(Deserialize)]
struct PublishParams<'a> {
    channel: ChannelName,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct HistoryParams {
    channel: ChannelName,
    #[serde(default)]
    since: Option<StreamPosition>,
    #[serde(default)]
    limit: Option<u32>,
}

#[derive(Deserialize)]
struct TypingParams {
    channel: ChannelName,
    #[serde(default = "default_true")]
    active: bool,
}

#[derive(Deserialize)]
struct SendMessageParams {
    channel: ChannelName,
    text: String,
    #[serde(default)]
    idempotency_key: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Decodes one text frame (or HTTP command body).
pub fn decode_request(frame: &[u8]) -> Result<Request, DecodeError> {
    if crate::depth::exceeds_max_depth(frame) {
        return Err(DecodeError::new(peek_id(frame), ErrorCode::BadRequest, crate::depth::too_deep_message()));
    }
    let envelope: Envelope<'_> = serde_json::from_slice(frame).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Syntax | Category::Eof | Category::Io => {
                DecodeError::new(None, ErrorCode::MalformedJson, format!("frame is not valid JSON: {e}"))
            }
            Category::Data => DecodeError::new(
                None,
                ErrorCode::BadRequest,
                "a command must be a JSON object with `id` and `type`",
            ),
        }
    })?;
    let id = match envelope.id {
        None => return Err(DecodeError::new(None, ErrorCode::BadRequest, "missing `id`")),
        Some(v) => v
            .as_u64()
            .filter(|n| *n <= MAX_SAFE_ID)
            .ok_or_else(|| DecodeError::new(None, ErrorCode::BadRequest, "`id` must be an integer from 0 to 2^53-1"))?,
    };
    let kind = envelope.kind.ok_or_else(|| DecodeError::new(Some(id), ErrorCode::BadRequest, "missing `type`"))?;
    let command = decode_command(&kind, frame).map_err(|(code, message)| DecodeError::new(Some(id), code, message))?;
    Ok(Request { id, command })
}

/// Largest id a JavaScript client can represent exactly.
pub const MAX_SAFE_ID: u64 = (1 << 53) - 1;

fn params<'a, T: Deserialize<'a>>(frame: &'a [u8]) -> Result<T, (ErrorCode, String)> {
    let de = &mut serde_json::Deserializer::from_slice(frame);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = match path.as_str() {
            "." | "" => inner.to_string(),
            _ => format!("{path}: {inner}"),
        };
        (ErrorCode::InvalidField, strip_position(&message))
    })
}

// serde_json appends " at line 1 column 42"; the field path says more.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

fn decode_command(kind: &str, frame: &[u8]) -> Result<Command, (ErrorCode, String)> {
    Ok(match kind {
        "connect" => Command::Connect { token: params::<TokenParams>(frame)?.token },
        "refresh" => Command::Refresh { token: params::<TokenParams>(frame)?.token },
        "subscribe" => {
            let p: SubscribeParams = params(frame)?;
            Command::Subscribe { channel: p.channel, since: p.since }
        }
        "unsubscribe" => Command::Unsubscribe { channel: params::<ChannelParams>(frame)?.channel },
        "publish" => {
            let p: PublishParams<'_> = params(frame)?;
            let data = Payload::from_raw(p.data).map_err(|e| (ErrorCode::InvalidField, e.to_string()))?;
            Command::Publish { channel: p.channel, data }
        }
        "history" => {
            let p: HistoryParams = params(frame)?;
            Command::History { channel: p.channel, since: p.since, limit: p.limit }
        }
        "presence" => Command::Presence { channel: params::<ChannelParams>(frame)?.channel },
        "typing" => {
            let p: TypingParams = params(frame)?;
            Command::Typing { channel: p.channel, active: p.active }
        }
        "send_message" => {
            let p: SendMessageParams = params(frame)?;
            Command::SendMessage { channel: p.channel, text: p.text, idempotency_key: p.idempotency_key }
        }
        "ping" => Command::Ping,
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err((
                ErrorCode::UnknownCommand,
                format!("unknown command type `{shown}`; known: {}", COMMAND_NAMES.join(", ")),
            ));
        }
    })
}

/// Reads just the `id` of a frame too large to decode fully, if it has one.
pub fn peek_id(frame: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    serde_json::from_slice::<IdOnly>(frame).ok()?.id.filter(|n| *n <= MAX_SAFE_ID)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Result<Request, DecodeError> {
        decode_request(s.as_bytes())
    }

    #[test]
    fn frames_nested_too_deeply_are_refused_with_their_id() {
        let data = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        let frame = format!(r#"{{"id":7,"type":"publish","channel":"chat:x","data":{data}}}"#);
        let e = decode(&frame).unwrap_err();
        assert_eq!((e.id, e.code), (Some(7), ErrorCode::BadRequest), "{}", e.message);
        assert!(e.message.contains("128"), "{}", e.message);
        let ok = format!("{}1{}", r#"{"a":"#.repeat(100), "}".repeat(100));
        assert!(decode(&format!(r#"{{"id":8,"type":"publish","channel":"chat:x","data":{ok}}}"#)).is_ok());
    }

    #[test]
    fn decodes_each_command() {
        let r = decode(r#"{"id":1,"type":"subscribe","channel":"room:a","since":{"offset":4,"epoch":"xy"}}"#).unwrap();
        assert_eq!(r.id, 1);
        assert_eq!(
            r.command,
            Command::Subscribe {
                channel: ChannelName::parse("room:a").unwrap(),
                since: Some(StreamPosition { offset: 4, epoch: "xy".into() })
            }
        );
        assert!(matches!(decode(r#"{"id":2,"type":"ping"}"#).unwrap().command, Command::Ping));
        assert!(matches!(
            decode(r#"{"id":3,"type":"typing","channel":"room:a"}"#).unwrap().command,
            Command::Typing { active: true, .. }
        ));
        let p = decode(r#"{"id":4,"type":"publish","channel":"room:a","data":{"x":[1,2]}}"#).unwrap();
        match p.command {
            Command::Publish { data, .. } => assert_eq!(data.as_bytes(), r#"{"x":[1,2]}"#),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            decode(r#"{"id":5,"type":"send_message","channel":"room:a","text":"hi"}"#).unwrap().command,
            Command::SendMessage { idempotency_key: None, .. }
        ));
    }

    #[test]
    fn malformed_json_has_no_id() {
        let e = decode("{not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedJson);
        assert_eq!(e.id, None);
        let e = decode("[1,2]").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
    }

    #[test]
    fn errors_keep_the_id_when_readable() {
        let e = decode(r#"{"id":9,"type":"launch"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(9), ErrorCode::UnknownCommand));
        let e = decode(r#"{"id":9,"type":"subscribe","channel":5}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(9), ErrorCode::InvalidField));
        assert!(e.message.starts_with("channel:"), "{}", e.message);
        let e = decode(r#"{"id":9,"type":"subscribe"}"#).unwrap_err();
        assert!(e.message.contains("missing field `channel`"), "{}", e.message);
        let e = decode(r#"{"id":9,"type":"subscribe","channel":"nonamespace"}"#).unwrap_err();
        assert!(e.message.contains("namespace"), "{}", e.message);
        let e = decode(r#"{"id":9,"type":"publish","channel":"room:a","data":[1]}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidField);
        let e = decode(r#"{"id":9,"type":"subscribe","channel":"room:a","since":{"offset":"x","epoch":"e"}}"#).unwrap_err();
        assert!(e.message.starts_with("since.offset"), "{}", e.message);
    }

    #[test]
    fn id_must_be_a_safe_integer() {
        assert_eq!(decode(r#"{"type":"ping"}"#).unwrap_err().message, "missing `id`");
        assert_eq!(decode(r#"{"id":"a","type":"ping"}"#).unwrap_err().id, None);
        assert_eq!(decode(r#"{"id":-1,"type":"ping"}"#).unwrap_err().id, None);
        assert!(decode(r#"{"id":9007199254740992,"type":"ping"}"#).is_err());
        assert_eq!(decode(r#"{"id":7}"#).unwrap_err(), DecodeError::new(Some(7), ErrorCode::BadRequest, "missing `type`"));
    }

    #[test]
    fn peeks_id_of_big_frames() {
        assert_eq!(peek_id(br#"{"id":12,"type":"publish","data":{"x":"yyyy"}}"#), Some(12));
        assert_eq!(peek_id(b"garbage"), None);
    }
}
