//! Messages.

use crate::Deps;

#[derive(Clone)]
pub struct Messages {
    #[allow(dead_code)]
    deps: Deps,
}

impl Messages {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    /// Publishes outbox events that were committed but not yet delivered; returns how many.
    pub async fn relay_pending(&self) -> Result<u64, crate::ChatError> {
        Ok(0)
    }
}

#[async_trait::async_trait]
impl chorus_core::ChatCommands for Messages {
    async fn send_message(
        &self,
        _who: &chorus_core::Identity,
        _channel: &chorus_protocol::ChannelName,
        _text: String,
        _idempotency_key: Option<String>,
    ) -> Result<chorus_protocol::reply::MessageSentResult, chorus_core::CommandError> {
        Err(crate::ChatError::Unavailable("messages are not wired yet".into()).into())
    }
}
