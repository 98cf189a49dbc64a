//! What an API key a user created may publish.
//!
//! Keys from `[auth] api_keys` belong to the server and publish anywhere.
//! A key a user creates never does more than its owner may: it publishes
//! only into channels its owner may read (the namespace's subscribe rule,
//! with no token grants: `user:<owner>`, `room:<id>` of channels the owner
//! is a member of, namespaces open to every authenticated user), and its
//! scope may narrow that further:
//! - [`KeyScope::Channels`]: only channels matching one of its names or
//!   `namespace:prefix*` patterns;
//! - [`KeyScope::Agent`]: only run events (`agent_started` … `agent_error`)
//!   whose `data.agent_id` is that agent, into `room:` channels the agent is
//!   a member of, while the agent is still the owner's.
//!
//! No endpoint reads with an API key, so a key reads nothing at all.

use chorus_core::access::AccessError;
use chorus_core::{Identity, UserId};
use chorus_protocol::channel::pattern_matches;
use chorus_protocol::{ChannelName, EventType, Payload};
use chorus_store::MemberRef;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{ChatError, Deps};

/// Channel patterns a key may be narrowed to.
pub const MAX_SCOPE_CHANNELS: usize = 32;

/// What narrows a user's key below its owner's rights.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyScope {
    /// Everything its owner may.
    #[default]
    Owner,
    /// Only these channels (exact names or `namespace:prefix*`).
    Channels(Vec<String>),
    /// Only run events of this agent, in its channels.
    Agent(String),
}

/// The stored form (the `scope` column).
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Stored {
    Channels(Vec<String>),
    Agent(String),
}

/// A key's scope as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ScopeView {
    /// `owner` (whatever its owner may), `channels` or `agent`.
    #[schema(example = "channels")]
    pub kind: String,
    /// For `channels`: the names or `namespace:prefix*` patterns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
    /// For `agent`: the agent's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

impl KeyScope {
    pub fn encode(&self) -> Option<String> {
        let stored = match self {
            KeyScope::Owner => return None,
            KeyScope::Channels(c) => Stored::Channels(c.clone()),
            KeyScope::Agent(a) => Stored::Agent(a.clone()),
        };
        serde_json::to_string(&stored).ok()
    }

    /// A scope that does not read back (a newer server wrote it?) allows nothing.
    pub fn decode(stored: Option<&str>) -> Result<Self, ChatError> {
        match stored {
            None => Ok(KeyScope::Owner),
            Some(text) => match serde_json::from_str::<Stored>(text) {
                Ok(Stored::Channels(c)) => Ok(KeyScope::Channels(c)),
                Ok(Stored::Agent(a)) => Ok(KeyScope::Agent(a)),
                Err(e) => Err(ChatError::Internal(format!("an API key's scope does not read back: {e}"))),
            },
        }
    }

    pub fn view(&self) -> ScopeView {
        match self {
            KeyScope::Owner => ScopeView { kind: "owner".into(), channels: None, agent_id: None },
            KeyScope::Channels(c) => ScopeView { kind: "channels".into(), channels: Some(c.clone()), agent_id: None },
            KeyScope::Agent(a) => ScopeView { kind: "agent".into(), channels: None, agent_id: Some(a.clone()) },
        }
    }
}

/// Checks a requested channel list: 1 to [`MAX_SCOPE_CHANNELS`] entries,
/// each a channel name or `namespace:prefix*`.
pub fn valid_channels(channels: &[String]) -> Result<(), ChatError> {
    if channels.is_empty() || channels.len() > MAX_SCOPE_CHANNELS {
        return Err(ChatError::invalid("channels", format_args!("must hold 1 to {MAX_SCOPE_CHANNELS} channel names or patterns")));
    }
    for (i, c) in channels.iter().enumerate() {
        // A pattern's prefix, completed by one character, must make a channel name.
        let candidate = match c.strip_suffix('*') {
            Some(prefix) if prefix.contains(':') => format!("{prefix}x"),
            _ => c.clone(),
        };
        if c.len() > 200 || ChannelName::parse(&candidate).is_err() {
            return Err(ChatError::invalid(&format!("channels[{i}]"), "must be a channel name (`namespace:id`) or `namespace:prefix*`"));
        }
    }
    Ok(())
}

/// Run events: what an agent's key may publish.
fn is_run_event(event: EventType) -> bool {
    matches!(
        event,
        EventType::AgentStarted
            | EventType::AgentThinking
            | EventType::AgentTextDelta
            | EventType::ToolExecuting
            | EventType::ToolCompleted
            | EventType::AgentCompleted
            | EventType::AgentError
    )
}

fn denied(message: String) -> ChatError {
    ChatError::Forbidden(message)
}

/// Whether a key of `owner` with `scope` may publish `event` with `data` into `channel`.
pub async fn authorize_publish(deps: &Deps, owner: &str, scope: &KeyScope, channel: &ChannelName, event: EventType, data: &Payload) -> Result<(), ChatError> {
    let who = Identity { user_id: UserId::new(owner), expires_at_ms: None, leeway_ms: 0, grants: Vec::new(), session_id: None };
    deps.hub.access().check_subscribe(&who, channel).await.map_err(|e| match e {
        AccessError::UnknownNamespace(ns) => ChatError::invalid("channel", format_args!("unknown namespace `{ns}`")),
        AccessError::Denied(_) => denied(format!("this API key's owner may not read `{channel}`, so the key may not publish there")),
        AccessError::Unavailable(m) => ChatError::Unavailable(m),
    })?;
    match scope {
        KeyScope::Owner => Ok(()),
        KeyScope::Channels(allowed) => {
            if allowed.iter().any(|p| pattern_matches(p, channel)) {
                Ok(())
            } else {
                Err(denied(format!("this API key is limited to {}", allowed.join(", "))))
            }
        }
        KeyScope::Agent(agent_id) => {
            if !is_run_event(event) {
                return Err(denied(format!("an agent's API key publishes only run events, not `{}`", event.as_str())));
            }
            let fields = data.to_map().map_err(|e| ChatError::invalid("data", e))?;
            if fields.get("agent_id").and_then(|v| v.as_str()) != Some(agent_id.as_str()) {
                return Err(denied(format!("this API key publishes only events whose data.agent_id is `{agent_id}`")));
            }
            let agent = deps.store.get_agent(agent_id).await?;
            if agent.is_none_or(|a| a.owner_id != owner) {
                return Err(denied("this API key's agent no longer exists".into()));
            }
            let member = match channel.namespace() {
                "room" => deps.store.member_role(channel.id(), &MemberRef::agent(agent_id)).await?.is_some(),
                _ => false,
            };
            if member { Ok(()) } else { Err(denied(format!("agent `{agent_id}` is not a member of `{channel}`"))) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_channel_lists_are_checked() {
        for scope in [KeyScope::Owner, KeyScope::Channels(vec!["room:a".into(), "feed:x*".into()]), KeyScope::Agent("a1".into())] {
            assert_eq!(KeyScope::decode(scope.encode().as_deref()).unwrap(), scope);
        }
        assert!(KeyScope::decode(Some("{\"nope\":1}")).is_err());
        assert!(valid_channels(&["room:a".into(), "user:*".into(), "feed:x*".into()]).is_ok());
        for bad in [vec![], vec!["nonamespace".to_owned()], vec!["room:".to_owned()], vec!["*".to_owned()], vec!["room:a b".to_owned()]] {
            assert!(valid_channels(&bad).is_err(), "{bad:?}");
        }
        assert!(valid_channels(&vec!["room:a".to_owned(); MAX_SCOPE_CHANNELS + 1]).is_err());
    }
}
