//! Events on a channel's stream.

use std::sync::Arc;

use bytes::Bytes;
use chorus_protocol::{ChannelName, EventType, Payload, PushHeader};

use crate::ids::NodeId;

/// Identifies one incarnation of a channel's stream. It changes whenever the
/// stream's history may have been lost (restart, eviction, reset), so offsets
/// from different epochs are never compared.
pub type Epoch = Arc<str>;

/// A fresh random epoch: 8 alphanumeric characters.
pub fn new_epoch() -> Epoch {
    use rand::Rng;
    use rand::distr::Alphanumeric;
    let s: String = rand::rng().sample_iter(&Alphanumeric).take(8).map(char::from).collect();
    Arc::from(s)
}

/// Where a stream stands: the offset of its latest event and its epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: Epoch,
}

/// What a publisher hands to the broker; the broker assigns offset, epoch and time.
#[derive(Debug, Clone)]
pub struct Draft {
    pub event: EventType,
    pub data: Payload,
    /// The node that published it (set by the hub). A cluster broker carries
    /// it along, so a node's firehose can tell its own events from deliveries.
    pub origin: Option<NodeId>,
}

impl Draft {
    pub fn new(event: EventType, data: Payload) -> Self {
        Self { event, data, origin: None }
    }
}

/// An event with its place in a channel's stream.
#[derive(Debug)]
pub struct Publication {
    pub channel: ChannelName,
    pub offset: u64,
    pub epoch: Epoch,
    /// Server time, Unix milliseconds.
    pub time_ms: i64,
    pub event: EventType,
    /// A slice of `frame`: an event kept in history holds its data once.
    pub data: Payload,
    /// The node that published it, when known.
    pub origin: Option<NodeId>,
    frame: Bytes,
}

impl Publication {
    /// Encodes the push frame at once: every publication is delivered or
    /// kept, and its data then lives inside the frame.
    pub fn new(channel: ChannelName, position: Position, time_ms: i64, draft: Draft) -> Self {
        let (frame, data) = chorus_protocol::encode_push_shared(
            PushHeader {
                event: draft.event.as_str(),
                channel: channel.as_str(),
                offset: position.offset,
                epoch: &position.epoch,
                time_ms,
            },
            &draft.data,
        );
        Self {
            channel,
            offset: position.offset,
            epoch: position.epoch,
            time_ms,
            event: draft.event,
            data,
            origin: draft.origin,
            frame,
        }
    }

    /// The encoded push, built once and shared by every subscriber.
    pub fn frame(&self) -> &Bytes {
        &self.frame
    }

    pub fn position(&self) -> Position {
        Position { offset: self.offset, epoch: self.epoch.clone() }
    }
}
