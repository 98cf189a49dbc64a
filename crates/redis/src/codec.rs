//! How events and control messages travel through Redis.
//!
//! An event's body is `time_ms \n event \n origin \n data` (data last, so it
//! may hold anything); the stream keeps the body under its offset and pub/sub
//! carries `offset \n epoch \n body`. Control messages are small JSON objects.

use std::sync::Arc;

use bytes::Bytes;
use chorus_core::broker::Control;
use chorus_core::maintenance::MaintenanceMode;
use chorus_core::publication::{Draft, Position, Publication};
use chorus_core::{ConnId, NodeId, UserId};
use chorus_protocol::{ChannelName, CloseCode, EventType, Payload};
use serde_json::{Value, json};

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("malformed {0} from Redis")]
    Malformed(&'static str),
    #[error("unknown event type `{0}` from Redis")]
    UnknownEvent(String),
}

/// The stored body of a draft.
pub fn encode_body(time_ms: i64, draft: &Draft) -> Bytes {
    let origin = draft.origin.as_ref().map_or("", NodeId::as_str);
    let data = draft.data.as_bytes();
    let mut out = Vec::with_capacity(32 + origin.len() + data.len());
    out.extend_from_slice(time_ms.to_string().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(draft.event.as_str().as_bytes());
    out.push(b'\n');
    out.extend_from_slice(origin.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(data);
    Bytes::from(out)
}

fn split_line(b: &Bytes, what: &'static str) -> Result<(Bytes, Bytes), CodecError> {
    let i = b.iter().position(|c| *c == b'\n').ok_or(CodecError::Malformed(what))?;
    Ok((b.slice(..i), b.slice(i + 1..)))
}

fn text(b: &Bytes, what: &'static str) -> Result<String, CodecError> {
    String::from_utf8(b.to_vec()).map_err(|_| CodecError::Malformed(what))
}

/// A publication from a stored body and its place in the stream.
pub fn decode_body(channel: ChannelName, position: Position, body: Bytes) -> Result<Publication, CodecError> {
    let (time, rest) = split_line(&body, "event time")?;
    let (event, rest) = split_line(&rest, "event type")?;
    let (origin, data) = split_line(&rest, "event origin")?;
    let time_ms: i64 = text(&time, "event time")?.parse().map_err(|_| CodecError::Malformed("event time"))?;
    let event_name = text(&event, "event type")?;
    let event = EventType::parse(&event_name).ok_or(CodecError::UnknownEvent(event_name))?;
    let origin = text(&origin, "event origin")?;
    let data = Payload::from_bytes(data).map_err(|_| CodecError::Malformed("event data"))?;
    let draft = Draft { event, data, origin: (!origin.is_empty()).then(|| NodeId::new(origin)) };
    Ok(Publication::new(channel, position, time_ms, draft))
}

/// A publication from a pub/sub message: `offset \n epoch \n body`.
pub fn decode_message(channel: ChannelName, message: Bytes) -> Result<Publication, CodecError> {
    let (offset, rest) = split_line(&message, "message offset")?;
    let (epoch, body) = split_line(&rest, "message epoch")?;
    let offset: u64 = text(&offset, "message offset")?.parse().map_err(|_| CodecError::Malformed("message offset"))?;
    let epoch: Arc<str> = Arc::from(text(&epoch, "message epoch")?);
    decode_body(channel, Position { offset, epoch }, body)
}

/// A stream entry id (`offset-0`) back to the offset.
pub fn offset_of_id(id: &str) -> Option<u64> {
    id.split_once('-').map_or(id, |(ms, _)| ms).parse().ok()
}

/// Control messages are addressed to one node (`to`) or all (`null`).
pub fn encode_control(target: Option<&NodeId>, control: &Control) -> String {
    let to = target.map(NodeId::as_str);
    let body = match control {
        Control::Disconnect { user, conn, code } => {
            json!({"k": "disconnect", "user": user.as_str(), "conn": conn.to_string(), "code": code.code()})
        }
        Control::DisconnectUser { user, code } => json!({"k": "disconnect_user", "user": user.as_str(), "code": code.code()}),
        Control::RevokeSession { session_id } => json!({"k": "revoke_session", "session": session_id}),
        Control::Unsubscribe { user, channel, reason } => {
            json!({"k": "unsubscribe", "user": user.as_str(), "channel": channel.as_str(), "reason": reason})
        }
        Control::Maintenance(mode) => json!({"k": "maintenance", "mode": encode_maintenance(mode)}),
        Control::PresenceExpired { channel, user } => json!({"k": "presence_expired", "channel": channel.as_str(), "user": user.as_str()}),
        Control::CancelRun { run_id } => json!({"k": "cancel_run", "run": run_id}),
    };
    json!({"to": to, "c": body}).to_string()
}

pub fn encode_maintenance(mode: &MaintenanceMode) -> Value {
    match mode {
        MaintenanceMode::Off => json!({"on": false}),
        MaintenanceMode::On { message, since_ms } => json!({"on": true, "message": message, "since_ms": since_ms}),
    }
}

pub fn decode_maintenance(v: &Value) -> Result<MaintenanceMode, CodecError> {
    match v["on"].as_bool() {
        Some(false) => Ok(MaintenanceMode::Off),
        Some(true) => Ok(MaintenanceMode::On {
            message: v["message"].as_str().map(str::to_owned),
            since_ms: v["since_ms"].as_i64().ok_or(CodecError::Malformed("maintenance"))?,
        }),
        None => Err(CodecError::Malformed("maintenance")),
    }
}

fn close_code(v: &Value) -> Result<CloseCode, CodecError> {
    let n = v["code"].as_u64().ok_or(CodecError::Malformed("close code"))?;
    CloseCode::ALL.into_iter().find(|c| u64::from(c.code()) == n).ok_or(CodecError::Malformed("close code"))
}

fn string(v: &Value, field: &str) -> Result<String, CodecError> {
    v[field].as_str().map(str::to_owned).ok_or(CodecError::Malformed("control message"))
}

fn channel(v: &Value) -> Result<ChannelName, CodecError> {
    ChannelName::parse(&string(v, "channel")?).map_err(|_| CodecError::Malformed("control channel"))
}

/// A control message and its target node (`None`: every node).
pub fn decode_control(text: &str) -> Result<(Option<NodeId>, Control), CodecError> {
    let v: Value = serde_json::from_str(text).map_err(|_| CodecError::Malformed("control message"))?;
    let to = v["to"].as_str().map(NodeId::new);
    let c = &v["c"];
    let user = || string(c, "user").map(UserId::new);
    let control = match c["k"].as_str() {
        Some("disconnect") => Control::Disconnect {
            user: user()?,
            conn: ConnId::parse(&string(c, "conn")?).ok_or(CodecError::Malformed("connection id"))?,
            code: close_code(c)?,
        },
        Some("disconnect_user") => Control::DisconnectUser { user: user()?, code: close_code(c)? },
        Some("revoke_session") => Control::RevokeSession { session_id: string(c, "session")? },
        Some("unsubscribe") => Control::Unsubscribe { user: user()?, channel: channel(c)?, reason: string(c, "reason")? },
        Some("maintenance") => Control::Maintenance(decode_maintenance(&c["mode"])?),
        Some("presence_expired") => Control::PresenceExpired { channel: channel(c)?, user: user()? },
        Some("cancel_run") => Control::CancelRun { run_id: string(c, "run")? },
        _ => return Err(CodecError::Malformed("control kind")),
    };
    Ok((to, control))
}

/// A stream id `ms-seq` as a comparable pair.
pub fn stream_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_a_message() {
        let ch = ChannelName::parse("room:a").unwrap();
        let mut draft = Draft::new(EventType::Publication, Payload::from_value(&json!({"text": "a\nb"})).unwrap());
        draft.origin = Some(NodeId::new("n-1"));
        let body = encode_body(1234, &draft);
        let mut msg = b"7\nEp0ch\n".to_vec();
        msg.extend_from_slice(&body);
        let p = decode_message(ch.clone(), Bytes::from(msg)).unwrap();
        assert_eq!((p.offset, &*p.epoch, p.time_ms, p.event), (7, "Ep0ch", 1234, EventType::Publication));
        assert_eq!(p.origin, Some(NodeId::new("n-1")));
        assert_eq!(p.data.as_bytes(), draft.data.as_bytes());
        assert!(decode_message(ch, Bytes::from_static(b"x\ny\n")).is_err());
    }

    #[test]
    fn controls_round_trip() {
        let all = [
            Control::Disconnect { user: UserId::new("u"), conn: ConnId::random(), code: CloseCode::ConnectionLimit },
            Control::DisconnectUser { user: UserId::new("u"), code: CloseCode::AdminDisconnect },
            Control::RevokeSession { session_id: "s".into() },
            Control::Unsubscribe { user: UserId::new("u"), channel: ChannelName::parse("room:a").unwrap(), reason: "r".into() },
            Control::Maintenance(MaintenanceMode::On { message: Some("m".into()), since_ms: 5 }),
            Control::Maintenance(MaintenanceMode::Off),
            Control::PresenceExpired { channel: ChannelName::parse("room:a").unwrap(), user: UserId::new("u") },
            Control::CancelRun { run_id: "r".into() },
        ];
        for c in all {
            let node = NodeId::new("n");
            assert_eq!(decode_control(&encode_control(Some(&node), &c)).unwrap(), (Some(node), c.clone()));
            assert_eq!(decode_control(&encode_control(None, &c)).unwrap(), (None, c));
        }
    }
}
