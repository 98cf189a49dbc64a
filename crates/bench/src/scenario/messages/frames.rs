//! `message-rtt` frames: the fields of server frames the scenario reads and
//! the commands it writes.

use std::borrow::Cow;

use serde::Deserialize;

use crate::frame::ErrorBody;

/// The fields of server frames this scenario reads.
#[derive(Debug, Default, Deserialize)]
pub(super) struct In<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) id: Option<u64>,
    #[serde(borrow, default)]
    pub(super) channel: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) offset: Option<u64>,
    #[serde(borrow, default)]
    pub(super) epoch: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) data: Option<InData<'a>>,
    #[serde(borrow, default)]
    pub(super) result: Option<InResult<'a>>,
    #[serde(borrow, default)]
    pub(super) error: Option<ErrorBody<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct InData<'a> {
    #[serde(borrow, default)]
    pub(super) message: Option<InMessage<'a>>,
}

#[derive(Debug, Deserialize)]
pub(super) struct InMessage<'a> {
    #[serde(borrow)]
    pub(super) id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) channel_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) text: Cow<'a, str>,
}

/// The result of `subscribe` (`offset`, `epoch`) or `send_message`
/// (`message_id`, `offset`, `epoch`, `duplicate`).
#[derive(Debug, Default, Deserialize)]
pub(super) struct InResult<'a> {
    #[serde(borrow, default)]
    pub(super) message_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) offset: Option<u64>,
    #[serde(borrow, default)]
    pub(super) epoch: Option<Cow<'a, str>>,
    #[serde(default)]
    pub(super) duplicate: Option<bool>,
}

/// The sender index and send time (µs) in a text this scenario wrote:
/// `rtt <run> <sender> <k> <t_us> <padding>`.
pub(super) fn parse_text(text: &str, run: &str) -> Option<(usize, u64)> {
    let mut parts = text.split(' ');
    if parts.next()? != "rtt" || parts.next()? != run {
        return None;
    }
    let sender = parts.next()?.parse().ok()?;
    let _k = parts.next()?;
    let t = parts.next()?.parse().ok()?;
    Some((sender, t))
}

/// A `send_message` command. Channel ids come from the server; they are
/// JSON-quoted to be safe.
pub(super) fn send_command(id: u64, stream: &str, text: &str, key: &str) -> Vec<u8> {
    let q = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    format!(r#"{{"id":{id},"type":"send_message","channel":{},"text":{},"idempotency_key":{}}}"#, q(stream), q(text), q(key)).into_bytes()
}
