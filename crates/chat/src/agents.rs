//! Agent records: their owners, validation, limits and events.
//!
//! Who may do what:
//! - any signed-in user creates agents (at most `chat.agents_per_user`, at
//!   most `chat.agent_creates_per_minute`) and lists, reads, changes and
//!   deletes their own;
//! - administrators may also read and delete anyone's agent (moderation),
//!   but not change it (403): its persona is its owner's words;
//! - to anyone else an agent does not exist (`not_found`).
//!
//! Rules are in [`validate`] and `docs/decisions.md` ("Content rules"). Creating and changing
//! write content, so maintenance mode refuses them; deleting stays allowed.
//!
//! Events: `agent_spawned`, `agent_updated` and `agent_despawned` go to the
//! owner's `user:<id>`; `agent_updated` and `agent_despawned` also go to the
//! `room:<id>` of every channel the agent is a member of. A deleted agent
//! leaves its channels, announced like any member removal
//! (`channel_member_removed` on the room and each user member's `user:`).

pub mod validate;

use std::sync::Arc;
use std::time::Duration;

use chorus_core::limiter::{KeyedLimiter, Rate, RateLimited};
use chorus_protocol::{ChannelName, EventType};
use chorus_store::{Agent, AgentUpdate, ChannelMember, MemberKind, MemberRef, NewAgent, StoreError};
use serde::Serialize;
use tokio::time::Instant;

pub use crate::response_policy::ResponsePolicy;
use crate::events::{publish_all, room_channel, user_channel};
use crate::views::{AgentView, MemberView};
use crate::{Caller, ChatError, Deps};

/// Users the creation limiter tracks; past it (after dropping entries that
/// have refilled) new users are refused with 429 rather than forgetting limits.
const LIMITER_CAPACITY: usize = 50_000;

/// A new agent, as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAgentInput {
    pub name: String,
    pub persona: String,
    pub quirks: Vec<String>,
    /// `None`: the server's first allowed model.
    pub model: Option<String>,
    pub tools: Vec<String>,
    pub response_policy: ResponsePolicy,
}

/// A partial update: `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentPatch {
    pub name: Option<String>,
    pub persona: Option<String>,
    pub quirks: Option<Vec<String>>,
    pub model: Option<String>,
    pub tools: Option<Vec<String>>,
    pub response_policy: Option<ResponsePolicy>,
}

impl AgentPatch {
    fn is_empty(&self) -> bool {
        self == &AgentPatch::default()
    }
}

#[derive(Serialize)]
struct AgentEvent<'a> {
    agent: &'a AgentView,
}

#[derive(Serialize)]
struct DespawnedEvent<'a> {
    agent_id: &'a str,
}

#[derive(Serialize)]
struct MemberEvent<'a> {
    channel_id: &'a str,
    member: &'a MemberView,
}

/// Agent records. Cheap to clone.
#[derive(Clone)]
pub struct Agents {
    deps: Deps,
    /// Creations per user, bounded to [`LIMITER_CAPACITY`] users.
    creates: Arc<KeyedLimiter<String>>,
}

impl Agents {
    pub fn new(deps: Deps) -> Self {
        Self { deps, creates: Arc::new(KeyedLimiter::new()) }
    }

    /// Creates an agent owned by the caller and announces `agent_spawned`.
    pub async fn create(&self, caller: &Caller, input: NewAgentInput) -> Result<AgentView, ChatError> {
        self.deps.check_maintenance("creating agents")?;
        let cfg = &self.deps.config;
        let new = NewAgent {
            owner_id: caller.user_id.clone(),
            name: validate::name(cfg, &input.name)?,
            persona: validate::persona(cfg, &input.persona)?,
            quirks: validate::quirks(cfg, &input.quirks)?,
            model: validate::model(cfg, input.model.as_deref())?,
            tools: validate::tools(cfg, &input.tools)?,
            response_policy: input.response_policy.as_str().to_owned(),
        };
        // After validation, so a typo costs no creation.
        self.check_rate(&caller.user_id)?;
        let name = new.name.clone();
        let limit = cfg.agents_per_user;
        let agent = self.deps.store.create_agent(new, limit).await.map_err(|e| match e {
            StoreError::LimitExceeded(_) => {
                ChatError::LimitExceeded(format!("a user may own at most {limit} agents; delete one first"))
            }
            StoreError::NotFound => ChatError::Unauthorized("unknown user".into()),
            StoreError::Conflict(_) => name_taken(&name),
            other => other.into(),
        })?;
        let view = AgentView::from(&agent);
        let targets: Vec<ChannelName> = user_channel(&agent.owner_id).into_iter().collect();
        publish_all(&self.deps.hub, &targets, EventType::AgentSpawned, &AgentEvent { agent: &view }).await;
        Ok(view)
    }

    /// The caller's own agents, oldest first.
    pub async fn list(&self, caller: &Caller) -> Result<Vec<AgentView>, ChatError> {
        Ok(self.deps.store.list_agents(&caller.user_id).await?.iter().map(AgentView::from).collect())
    }

    /// One agent, for its owner and administrators.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<AgentView, ChatError> {
        Ok(AgentView::from(&self.visible(caller, id).await?))
    }

    /// Changes the given fields (the owner only) and announces
    /// `agent_updated`. An empty patch changes nothing and announces nothing.
    pub async fn update(&self, caller: &Caller, id: &str, patch: AgentPatch) -> Result<AgentView, ChatError> {
        self.deps.check_maintenance("changing agents")?;
        let agent = self.visible(caller, id).await?;
        if agent.owner_id != caller.user_id {
            return Err(ChatError::Forbidden("only its owner may change an agent".into()));
        }
        let cfg = &self.deps.config;
        let update = AgentUpdate {
            name: patch.name.as_deref().map(|n| validate::name(cfg, n)).transpose()?,
            persona: patch.persona.as_deref().map(|p| validate::persona(cfg, p)).transpose()?,
            quirks: patch.quirks.as_deref().map(|q| validate::quirks(cfg, q)).transpose()?,
            model: patch.model.as_deref().map(|m| validate::model(cfg, Some(m))).transpose()?,
            tools: patch.tools.as_deref().map(|t| validate::tools(cfg, t)).transpose()?,
            response_policy: patch.response_policy.map(|p| p.as_str().to_owned()),
        };
        if patch.is_empty() {
            return Ok(AgentView::from(&agent));
        }
        let name = update.name.clone();
        let agent = self.deps.store.update_agent(id, update).await.map_err(|e| match (e, &name) {
            (StoreError::NotFound, _) => agent_not_found(),
            (StoreError::Conflict(_), Some(n)) => name_taken(n),
            (other, _) => other.into(),
        })?;
        let view = AgentView::from(&agent);
        let rooms = self.deps.store.list_agent_memberships(id).await?;
        let targets = targets(&agent.owner_id, rooms.iter().map(|m| m.channel_id.as_str()));
        publish_all(&self.deps.hub, &targets, EventType::AgentUpdated, &AgentEvent { agent: &view }).await;
        Ok(view)
    }

    /// Deletes an agent (its owner or an administrator) with its channel
    /// memberships; announces `agent_despawned`, then each membership's end.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<(), ChatError> {
        let agent = self.visible(caller, id).await?;
        // Read first: the store's answer holds only channel ids, the events need the memberships.
        let memberships = self.deps.store.list_agent_memberships(id).await?;
        let channels = self.deps.store.delete_agent(id).await.map_err(|e| match e {
            StoreError::NotFound => agent_not_found(),
            other => other.into(),
        })?;
        let targets = targets(&agent.owner_id, channels.iter().map(String::as_str));
        publish_all(&self.deps.hub, &targets, EventType::AgentDespawned, &DespawnedEvent { agent_id: id }).await;
        for channel_id in &channels {
            self.announce_left(channel_id, id, &memberships).await;
        }
        Ok(())
    }

    /// Drops limiter entries idle for `idle`; returns how many remain. The
    /// limiter also reclaims refilled entries by itself when it fills up.
    pub fn sweep_limiter(&self, idle: Duration) -> usize {
        self.creates.sweep(idle, Instant::now())
    }

    /// The agent, if the caller owns it or is an administrator; `not_found` otherwise.
    async fn visible(&self, caller: &Caller, id: &str) -> Result<Agent, ChatError> {
        match self.deps.store.get_agent(id).await? {
            Some(a) if a.owner_id == caller.user_id || caller.is_admin() => Ok(a),
            _ => Err(agent_not_found()),
        }
    }

    fn check_rate(&self, user_id: &str) -> Result<(), ChatError> {
        let n = self.deps.config.agent_creates_per_minute.max(1);
        let rate = Rate::per_minute(f64::from(n), n);
        let refused = |r| RateLimited::refused(format!("agent creations (at most {n} per minute)"), r, rate).into();
        self.creates.check(&user_id.to_owned(), rate, LIMITER_CAPACITY, Instant::now()).map_err(refused)
    }

    /// `channel_member_removed` for the agent in one channel, to the room and
    /// each remaining user member, as `Channels::remove_member` announces it.
    async fn announce_left(&self, channel_id: &str, agent_id: &str, memberships: &[ChannelMember]) {
        let view = match memberships.iter().find(|m| m.channel_id == channel_id) {
            Some(m) => MemberView::from(m),
            // Added between our read and the delete: agents are always plain members.
            None => MemberView::from(&ChannelMember {
                channel_id: channel_id.to_owned(),
                member: MemberRef::agent(agent_id),
                role: chorus_store::MemberRole::Member,
                added_at: self.deps.now_ms(),
            }),
        };
        let users = match self.deps.store.list_members(channel_id).await {
            Ok(members) => members.into_iter().filter(|m| m.member.kind == MemberKind::User).map(|m| m.member.id).collect(),
            Err(e) => {
                // The room still hears it; user channels are a convenience.
                tracing::warn!(error = %e, channel = %channel_id, "members not listed for an agent's removal");
                Vec::new()
            }
        };
        let targets: Vec<ChannelName> =
            room_channel(channel_id).into_iter().chain(users.iter().filter_map(|u| user_channel(u))).collect();
        publish_all(&self.deps.hub, &targets, EventType::ChannelMemberRemoved, &MemberEvent { channel_id, member: &view })
            .await;
    }
}

/// The owner's personal channel, then each channel's room.
fn targets<'a>(owner_id: &str, channels: impl Iterator<Item = &'a str>) -> Vec<ChannelName> {
    user_channel(owner_id).into_iter().chain(channels.filter_map(room_channel)).collect()
}

pub(crate) fn agent_not_found() -> ChatError {
    ChatError::NotFound("agent not found".into())
}

fn name_taken(name: &str) -> ChatError {
    ChatError::Conflict(format!("name: you already have an agent named {name:?} (names ignore case)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_know_when_they_are_empty() {
        assert!(AgentPatch::default().is_empty());
        assert!(!AgentPatch { quirks: Some(vec![]), ..AgentPatch::default() }.is_empty());
    }
}
