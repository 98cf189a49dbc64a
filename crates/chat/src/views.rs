//! The JSON shape of every domain object, shared by REST responses and event
//! payloads so a client sees one shape everywhere. Times are RFC 3339.

use chorus_protocol::timestamp::format_ms;
use chorus_store::{Agent, ApiKey, AuthSession, Channel, ChannelMember, MemberProfile, Message, User};
use serde::Serialize;
use utoipa::ToSchema;

use crate::agents::{AgentKind, OnBusy};
use crate::response_policy::ResponsePolicy;

fn time(ms: i64) -> String {
    format_ms(ms)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct UserView {
    pub id: String,
    pub username: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// `user` or `admin`.
    pub role: String,
    pub created_at: String,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        Self { id: u.id.clone(), username: u.username.clone(), email: u.email.clone(), role: u.role.as_str().into(), created_at: time(u.created_at) }
    }
}

/// What any signed-in user may see of another: enough to add them to a channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PublicUserView {
    pub id: String,
    pub username: String,
}

impl From<&User> for PublicUserView {
    fn from(u: &User) -> Self {
        Self { id: u.id.clone(), username: u.username.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SessionView {
    pub id: String,
    pub created_at: String,
    pub last_seen_at: String,
    pub expires_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// True for the session the request itself belongs to.
    pub current: bool,
}

impl SessionView {
    pub fn new(s: &AuthSession, current_session: Option<&str>) -> Self {
        Self {
            id: s.id.clone(),
            created_at: time(s.created_at),
            last_seen_at: time(s.last_seen_at),
            expires_at: time(s.expires_at),
            user_agent: s.user_agent.clone(),
            ip: s.ip.clone(),
            current: current_session == Some(s.id.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ApiKeyView {
    pub id: String,
    pub name: String,
    /// The first characters of the key, to recognise it; the key itself is shown only once.
    pub prefix: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// What the key may publish beyond its owner's rights narrowing them.
    pub scope: crate::keys::ScopeView,
}

impl From<&ApiKey> for ApiKeyView {
    fn from(k: &ApiKey) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            created_at: time(k.created_at),
            last_used_at: k.last_used_at.map(time),
            revoked_at: k.revoked_at.map(time),
            // A scope that does not read back is shown as the narrowest.
            scope: crate::keys::KeyScope::decode(k.scope.as_deref())
                .map(|s| s.view())
                .unwrap_or_else(|_| crate::keys::ScopeView { kind: "unreadable".into(), channels: None, agent_id: None }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ChannelView {
    pub id: String,
    /// The channel to subscribe to for its events: `room:<id>`.
    pub stream: String,
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    pub owner_id: String,
    pub archived: bool,
    /// Milliseconds messages are kept; absent: forever.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_ms: Option<i64>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Channel> for ChannelView {
    fn from(c: &Channel) -> Self {
        Self {
            id: c.id.clone(),
            stream: format!("room:{}", c.id),
            name: c.name.clone(),
            topic: c.topic.clone(),
            owner_id: c.owner_id.clone(),
            archived: c.archived_at.is_some(),
            retention_ms: c.retention_ms,
            created_at: time(c.created_at),
            updated_at: time(c.updated_at),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MemberView {
    /// `user` or `agent`.
    pub kind: String,
    pub id: String,
    /// `owner` or `member`.
    pub role: String,
    pub added_at: String,
    /// What to show for the member: a user's username, an agent's name (in
    /// member listings; absent where a membership is returned on its own).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Agents: the model it answers with (its public profile; the persona,
    /// tools and webhook stay with the owner).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Agents: the user the agent belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<String>,
}

impl From<&ChannelMember> for MemberView {
    fn from(m: &ChannelMember) -> Self {
        Self {
            kind: m.member.kind.as_str().into(),
            id: m.member.id.clone(),
            role: m.role.as_str().into(),
            added_at: time(m.added_at),
            name: None,
            model: None,
            owner_id: None,
        }
    }
}

impl From<&MemberProfile> for MemberView {
    fn from(p: &MemberProfile) -> Self {
        Self {
            name: Some(p.name.clone()),
            model: p.agent_model.clone().filter(|m| !m.is_empty()),
            owner_id: p.agent_owner_id.clone(),
            ..MemberView::from(&p.member)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AuthorView {
    /// `user` or `agent`.
    pub kind: String,
    pub id: String,
    /// What to show for the author: a user's username, an agent's name.
    /// Absent when the author no longer exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MessageView {
    pub id: String,
    pub channel_id: String,
    /// Position in the channel's message history; increases by one per message.
    pub seq: i64,
    pub author: AuthorView,
    /// Empty once deleted.
    pub text: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_at: Option<String>,
    /// The agent run this message answers (agents' messages only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        Self {
            id: m.id.clone(),
            channel_id: m.channel_id.clone(),
            seq: m.seq,
            author: AuthorView { kind: m.author.kind.as_str().into(), id: m.author.id.clone(), name: None },
            text: m.text.clone(),
            created_at: time(m.created_at),
            edited_at: m.edited_at.map(time),
            deleted_at: m.deleted_at.map(time),
            run_id: m.run_id.clone(),
        }
    }
}

impl MessageView {
    /// The view with its author's display name.
    pub fn named(m: &Message, name: Option<String>) -> Self {
        let mut view = Self::from(m);
        view.author.name = name;
        view
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub owner_id: String,
    /// Unique among its owner's agents, ignoring case.
    pub name: String,
    /// Its base personality.
    pub persona: String,
    pub quirks: Vec<String>,
    pub model: String,
    pub tools: Vec<String>,
    pub response_policy: ResponsePolicy,
    /// What a new trigger does while the agent is busy in the channel.
    pub on_busy: OnBusy,
    /// `hosted` (Chorus runs it) or `external` (its owner's service does, reached by `webhook_url`).
    pub kind: AgentKind,
    /// Where an external agent's runs are sent; absent for a hosted agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

impl From<&Agent> for AgentView {
    fn from(a: &Agent) -> Self {
        Self {
            id: a.id.clone(),
            owner_id: a.owner_id.clone(),
            name: a.name.clone(),
            persona: a.persona.clone(),
            quirks: a.quirks.clone(),
            model: a.model.clone(),
            tools: a.tools.clone(),
            response_policy: ResponsePolicy::from_stored(&a.response_policy),
            on_busy: OnBusy::from_stored(&a.on_busy),
            kind: AgentKind::of(a),
            webhook_url: a.webhook.as_ref().map(|w| w.url.clone()),
            created_at: time(a.created_at),
            updated_at: time(a.updated_at),
        }
    }
}
