//! Channels and their members.
//!
//! Who may do what:
//! - any signed-in user creates channels (at most `chat.channels_per_user`
//!   owned, archived ones included) and becomes their first owner;
//! - members read a channel, its members and its messages; to anyone else a
//!   channel does not exist (`not_found`), so ids cannot be probed;
//! - owners rename, archive, delete, and add or remove members (users, and
//!   agents they own); any member may leave; the creator cannot leave (they
//!   delete the channel instead);
//! - an archived channel is read-only: no messages sent, edited or deleted,
//!   no members added. Owners can still change its settings, unarchive it,
//!   remove members or delete it.
//!
//! Every change is announced to the members concerned, on each user member's
//! personal channel `user:<id>` and on the channel's stream `room:<id>`. A
//! removed member (every member, when the channel is deleted) loses its
//! `room:` subscription on every connection at once; from then on the store
//! refuses its subscribe (see [`StoreMembership`]).

use chorus_core::UserId;
use chorus_protocol::{ChannelName, EventType};
use chorus_store::{Channel, ChannelMember, ChannelUpdate, MemberKind, MemberRef, MemberRole, NewChannel};
use serde::Serialize;
use utoipa::ToSchema;

use crate::events::{publish_all, room_channel, user_channel};
use crate::views::{ChannelView, MemberView};
use crate::{ChatError, Deps, text};

/// Longest channel name, in characters (after trimming).
pub const NAME_MAX_CHARS: usize = 80;
/// Longest topic, in characters (after trimming).
pub const TOPIC_MAX_CHARS: usize = 250;
/// Shortest message retention: one second.
pub const RETENTION_MIN_MS: i64 = 1_000;
/// Longest message retention: ten years of 365 days.
pub const RETENTION_MAX_MS: i64 = 10 * 365 * 24 * 3600 * 1000;
/// Longest member id accepted (store ids are 36-character UUIDs).
pub const MEMBER_ID_MAX_CHARS: usize = 64;

/// Why a member lost its `room:` subscription, as shown in `unsubscribed`.
const REMOVED_REASON: &str = "removed from the channel";
const DELETED_REASON: &str = "the channel was deleted";

/// A new channel, as asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewChannelInput {
    pub name: String,
    pub topic: Option<String>,
    /// `None`: keep messages forever.
    pub retention_ms: Option<i64>,
}

/// A partial update: `None` leaves a field as it is; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelPatch {
    pub name: Option<String>,
    pub topic: Option<Option<String>>,
    pub archived: Option<bool>,
    pub retention_ms: Option<Option<i64>>,
}

impl ChannelPatch {
    fn is_empty(&self) -> bool {
        self.name.is_none() && self.topic.is_none() && self.archived.is_none() && self.retention_ms.is_none()
    }

    /// Whether the change writes new text (refused in maintenance mode).
    fn writes_content(&self) -> bool {
        self.name.is_some() || matches!(self.topic, Some(Some(_)))
    }
}

/// A channel as one of its user members sees it in their list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MyChannelView {
    pub channel: ChannelView,
    /// The caller's role here: `owner` or `member`.
    pub role: String,
}

#[derive(Serialize)]
struct ChannelEvent<'a> {
    channel: &'a ChannelView,
}

#[derive(Serialize)]
struct MemberEvent<'a> {
    channel_id: &'a str,
    member: &'a MemberView,
}

#[derive(Serialize)]
struct DeletedEvent<'a> {
    channel_id: &'a str,
}

#[derive(Clone)]
pub struct Channels {
    deps: Deps,
}

impl Channels {
    pub fn new(deps: Deps) -> Self {
        Self { deps }
    }

    /// Creates a channel owned by `user_id` and announces `channel_created`.
    pub async fn create(&self, user_id: &str, input: NewChannelInput) -> Result<ChannelView, ChatError> {
        self.deps.check_maintenance("creating channels")?;
        let name = valid_name(&input.name)?;
        let topic = input.topic.as_deref().map(valid_topic).transpose()?.flatten();
        let retention_ms = input.retention_ms.map(valid_retention).transpose()?;
        let limit = self.deps.config.channels_per_user;
        let channel = self
            .deps
            .store
            .create_channel(NewChannel { name, topic, owner_id: user_id.to_owned(), retention_ms }, limit)
            .await
            .map_err(|e| match ChatError::from(e) {
                ChatError::LimitExceeded(_) => {
                    ChatError::LimitExceeded(format!("a user may own at most {limit} channels (archived ones count)"))
                }
                ChatError::NotFound(_) => ChatError::Unauthorized("unknown user".into()),
                other => other,
            })?;
        let view = ChannelView::from(&channel);
        let targets = self.targets(&channel.id, &[user_id.to_owned()]);
        publish_all(&self.deps.hub, &targets, EventType::ChannelCreated, &ChannelEvent { channel: &view }).await;
        Ok(view)
    }

    /// The caller's channels with their role, oldest first.
    pub async fn list(&self, user_id: &str) -> Result<Vec<MyChannelView>, ChatError> {
        let channels = self.deps.store.list_channels_for_user(user_id).await?;
        Ok(channels
            .iter()
            .map(|c| MyChannelView { channel: ChannelView::from(&c.channel), role: c.role.as_str().to_owned() })
            .collect())
    }

    /// One channel, for its members.
    pub async fn get(&self, user_id: &str, channel_id: &str) -> Result<ChannelView, ChatError> {
        let (channel, _) = self.access(user_id, channel_id).await?;
        Ok(ChannelView::from(&channel))
    }

    /// Changes settings (owners). An empty patch changes nothing and announces nothing.
    pub async fn update(&self, user_id: &str, channel_id: &str, patch: ChannelPatch) -> Result<ChannelView, ChatError> {
        let (mut channel, role) = self.access(user_id, channel_id).await?;
        require_owner(role, "change a channel")?;
        if patch.writes_content() {
            self.deps.check_maintenance("renaming channels or changing topics")?;
        }
        let update = ChannelUpdate {
            name: patch.name.as_deref().map(valid_name).transpose()?,
            topic: match &patch.topic {
                Some(Some(t)) => Some(valid_topic(t)?),
                Some(None) => Some(None),
                None => None,
            },
            retention_ms: match patch.retention_ms {
                Some(Some(ms)) => Some(Some(valid_retention(ms)?)),
                Some(None) => Some(None),
                None => None,
            },
        };
        if patch.is_empty() {
            return Ok(ChannelView::from(&channel));
        }
        if update.name.is_some() || update.topic.is_some() || update.retention_ms.is_some() {
            channel = self.deps.store.update_channel(channel_id, update).await.map_err(not_found_as_channel)?;
        }
        if let Some(archived) = patch.archived {
            channel = self.deps.store.set_channel_archived(channel_id, archived).await.map_err(not_found_as_channel)?;
        }
        let view = ChannelView::from(&channel);
        let members = self.user_members(channel_id).await?;
        let targets = self.targets(channel_id, &members);
        publish_all(&self.deps.hub, &targets, EventType::ChannelUpdated, &ChannelEvent { channel: &view }).await;
        Ok(view)
    }

    /// Deletes a channel with its members and messages (owners), announces
    /// `channel_deleted`, and ends every member's subscription to it.
    pub async fn delete(&self, user_id: &str, channel_id: &str) -> Result<(), ChatError> {
        let (_, role) = self.access(user_id, channel_id).await?;
        require_owner(role, "delete a channel")?;
        let members = self.deps.store.delete_channel(channel_id).await.map_err(not_found_as_channel)?;
        let users = user_ids(&members);
        // The room hears it first, so open views learn why their subscription ends.
        let targets = self.targets(channel_id, &users);
        publish_all(&self.deps.hub, &targets, EventType::ChannelDeleted, &DeletedEvent { channel_id }).await;
        self.revoke(channel_id, &users, DELETED_REASON).await;
        Ok(())
    }

    /// The members, in the order they were added (members only).
    pub async fn members(&self, user_id: &str, channel_id: &str) -> Result<Vec<MemberView>, ChatError> {
        self.access(user_id, channel_id).await?;
        Ok(self.deps.store.list_member_profiles(channel_id).await?.iter().map(MemberView::from).collect())
    }

    /// Adds a user, or an agent the caller owns (owners; not in archived channels).
    pub async fn add_member(
        &self,
        user_id: &str,
        channel_id: &str,
        member: MemberRef,
        role: MemberRole,
    ) -> Result<MemberView, ChatError> {
        let (channel, caller_role) = self.access(user_id, channel_id).await?;
        require_owner(caller_role, "add members")?;
        if channel.archived_at.is_some() {
            return Err(ChatError::Conflict("channel is archived; unarchive it to add members".into()));
        }
        valid_member_id(&member.id)?;
        if member.kind == MemberKind::Agent {
            if role == MemberRole::Owner {
                return Err(ChatError::invalid("role", "an agent can only be a member"));
            }
            // Someone else's agent and no agent at all get the same answer:
            // an id that cannot be used says nothing about whether it exists.
            let agent = self.deps.store.get_agent(&member.id).await?;
            if agent.is_none_or(|a| a.owner_id != user_id) {
                return Err(not_addable(member.kind));
            }
        }
        let added = self.deps.store.add_member(channel_id, &member, role).await.map_err(|e| match e {
            chorus_store::StoreError::NotFound => not_addable(member.kind),
            other => other.into(),
        })?;
        let view = MemberView::from(&added);
        let members = self.user_members(channel_id).await?;
        let targets = self.targets(channel_id, &members);
        publish_all(&self.deps.hub, &targets, EventType::ChannelMemberAdded, &MemberEvent { channel_id, member: &view })
            .await;
        Ok(view)
    }

    /// Removes a member: owners remove anyone but the creator; any member may
    /// remove themselves. The removed user's `room:` subscriptions end at once.
    pub async fn remove_member(&self, user_id: &str, channel_id: &str, member: MemberRef) -> Result<(), ChatError> {
        let (channel, caller_role) = self.access(user_id, channel_id).await?;
        let is_self = member.kind == MemberKind::User && member.id == user_id;
        if !is_self {
            require_owner(caller_role, "remove other members")?;
        }
        if member.kind == MemberKind::User && member.id == channel.owner_id {
            return Err(ChatError::Conflict("the channel's creator cannot be removed; delete the channel instead".into()));
        }
        let members = self.deps.store.list_members(channel_id).await?;
        let Some(removed) = members.iter().find(|m| m.member == member) else {
            return Err(ChatError::NotFound("no such member in this channel".into()));
        };
        let view = MemberView::from(removed);
        if !self.deps.store.remove_member(channel_id, &member).await? {
            return Err(ChatError::NotFound("no such member in this channel".into()));
        }
        if member.kind == MemberKind::User {
            self.revoke(channel_id, std::slice::from_ref(&member.id), REMOVED_REASON).await;
        }
        // The remaining members and the removed user.
        let users = user_ids(&members);
        let targets = self.targets(channel_id, &users);
        publish_all(&self.deps.hub, &targets, EventType::ChannelMemberRemoved, &MemberEvent { channel_id, member: &view })
            .await;
        Ok(())
    }

    /// The channel and the caller's role in it; `not_found` for non-members.
    async fn access(&self, user_id: &str, channel_id: &str) -> Result<(Channel, MemberRole), ChatError> {
        let role = self.deps.store.member_role(channel_id, &MemberRef::user(user_id)).await?;
        let channel = match role {
            Some(_) => self.deps.store.get_channel(channel_id).await?,
            None => None,
        };
        match (channel, role) {
            (Some(c), Some(r)) => Ok((c, r)),
            _ => Err(channel_not_found()),
        }
    }

    async fn user_members(&self, channel_id: &str) -> Result<Vec<String>, ChatError> {
        Ok(user_ids(&self.deps.store.list_members(channel_id).await?))
    }

    /// The channel's stream, then each user's personal channel.
    fn targets(&self, channel_id: &str, users: &[String]) -> Vec<ChannelName> {
        room_channel(channel_id).into_iter().chain(users.iter().filter_map(|u| user_channel(u))).collect()
    }

    /// Ends `users`' subscriptions to the channel's stream on every node.
    /// A failure is logged: the store already refuses their next subscribe.
    async fn revoke(&self, channel_id: &str, users: &[String], reason: &str) {
        let Some(room) = room_channel(channel_id) else { return };
        for user in users {
            if let Err(e) = self.deps.hub.revoke_subscription(&UserId::new(user), &room, reason).await {
                tracing::warn!(error = %e, channel = %room, user = %user, "subscription not revoked");
            }
        }
    }
}

/// The one answer for a member id the caller cannot add, whatever the reason.
fn not_addable(kind: MemberKind) -> ChatError {
    match kind {
        MemberKind::User => ChatError::NotFound("id: no user with this id".into()),
        MemberKind::Agent => ChatError::NotFound("id: no agent of yours with this id".into()),
    }
}

pub(crate) fn channel_not_found() -> ChatError {
    ChatError::NotFound("channel not found".into())
}

fn not_found_as_channel(e: chorus_store::StoreError) -> ChatError {
    match e {
        chorus_store::StoreError::NotFound => channel_not_found(),
        other => other.into(),
    }
}

fn require_owner(role: MemberRole, what: &str) -> Result<(), ChatError> {
    match role {
        MemberRole::Owner => Ok(()),
        MemberRole::Member => Err(ChatError::Forbidden(format!("only channel owners may {what}"))),
    }
}

fn user_ids(members: &[ChannelMember]) -> Vec<String> {
    members.iter().filter(|m| m.member.kind == MemberKind::User).map(|m| m.member.id.clone()).collect()
}

/// 1 to [`NAME_MAX_CHARS`] characters once trimmed, no control characters.
pub fn valid_name(raw: &str) -> Result<String, ChatError> {
    let name = text::line("name", raw, NAME_MAX_CHARS)?;
    if name.is_empty() {
        return Err(ChatError::invalid("name", "must not be empty"));
    }
    Ok(name.to_owned())
}

/// At most [`TOPIC_MAX_CHARS`] characters once trimmed, no control
/// characters; an empty topic means none.
pub fn valid_topic(raw: &str) -> Result<Option<String>, ChatError> {
    text::optional_line("topic", raw, TOPIC_MAX_CHARS)
}

/// From [`RETENTION_MIN_MS`] to [`RETENTION_MAX_MS`].
pub fn valid_retention(ms: i64) -> Result<i64, ChatError> {
    if (RETENTION_MIN_MS..=RETENTION_MAX_MS).contains(&ms) {
        Ok(ms)
    } else {
        Err(ChatError::invalid(
            "retention_ms",
            format!("must be from {RETENTION_MIN_MS} to {RETENTION_MAX_MS} (or null to keep messages forever)"),
        ))
    }
}

fn valid_member_id(id: &str) -> Result<(), ChatError> {
    if id.is_empty() || id.chars().count() > MEMBER_ID_MAX_CHARS || id.chars().any(char::is_control) {
        return Err(ChatError::invalid("id", format!("must be 1 to {MEMBER_ID_MAX_CHARS} characters")));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_topics_and_retention_have_bounds() {
        assert!(valid_name("").is_err());
        assert!(valid_name("   ").is_err());
        assert_eq!(valid_name(" general ").unwrap(), "general");
        assert!(valid_name(&"é".repeat(NAME_MAX_CHARS)).is_ok());
        assert!(valid_name(&"é".repeat(NAME_MAX_CHARS + 1)).is_err());
        assert!(valid_name("a\u{0}b").is_err());
        assert_eq!(valid_topic("").unwrap(), None);
        assert!(valid_topic(&"t".repeat(TOPIC_MAX_CHARS)).is_ok());
        assert!(valid_topic(&"t".repeat(TOPIC_MAX_CHARS + 1)).is_err());
        assert!(valid_retention(RETENTION_MIN_MS).is_ok());
        assert!(valid_retention(RETENTION_MIN_MS - 1).is_err());
        assert!(valid_retention(RETENTION_MAX_MS).is_ok());
        assert!(valid_retention(RETENTION_MAX_MS + 1).is_err());
    }
}
