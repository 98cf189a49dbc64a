//! Publishing domain events into channels.

use chorus_core::Hub;
use chorus_core::publication::Draft;
use chorus_protocol::{ChannelName, EventType, Payload};
use serde::Serialize;

/// `user:<id>`: where a user hears about things that concern them.
pub fn user_channel(user_id: &str) -> Option<ChannelName> {
    ChannelName::from_parts("user", user_id).ok()
}

/// `room:<id>`: a chat channel's stream.
pub fn room_channel(channel_id: &str) -> Option<ChannelName> {
    ChannelName::from_parts("room", channel_id).ok()
}

/// Publishes an event built by the server. Failures are logged: the change
/// they announce is already committed, and clients recover state over REST.
pub async fn publish<T: Serialize>(hub: &Hub, channel: &ChannelName, event: EventType, data: &T) {
    let payload = match Payload::from_value(data) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, event = event.as_str(), "event payload is not an object");
            return;
        }
    };
    if let Err(e) = hub.publish(channel, Draft::new(event, payload)).await {
        tracing::warn!(error = %e, %channel, event = event.as_str(), "event not published");
    }
}

/// Publishes the same event to several channels.
pub async fn publish_all<T: Serialize>(hub: &Hub, channels: &[ChannelName], event: EventType, data: &T) {
    for channel in channels {
        publish(hub, channel, event, data).await;
    }
}
