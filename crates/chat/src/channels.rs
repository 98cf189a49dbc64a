//! Channels.

use crate::Deps;

#[derive(Clone)]
pub struct Channels {
    #[allow(dead_code)]
    deps: Deps,
}

impl Channels {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }
}

/// Membership in the store decides who may subscribe to `room:<channel id>`.
pub struct StoreMembership(std::sync::Arc<dyn chorus_store::Store>);

impl StoreMembership {
    pub fn new(store: std::sync::Arc<dyn chorus_store::Store>) -> Self {
        Self(store)
    }
}

#[async_trait::async_trait]
impl chorus_core::access::MembershipCheck for StoreMembership {
    async fn is_member(&self, user: &chorus_core::UserId, channel: &chorus_protocol::ChannelName) -> Result<bool, String> {
        self.0.is_member(channel.id(), user.as_str()).await.map_err(|e| e.to_string())
    }
}
