//! Chat messages: send, edit, delete, history, and the outbox that makes a
//! committed message reach its channel even if the process dies right after
//! the commit.
//!
//! A write commits the message and its event (an outbox row) in one
//! transaction, publishes the event on `room:<channel id>`, then deletes the
//! row. If the process dies between commit and publish, the row stays and the
//! relay ([`Messages::relay_pending`]) publishes it after restart. The relay
//! leaves rows younger than `chat.relay_grace` to the request that wrote them,
//! except rows written before this process started, which it takes at once;
//! so in normal operation an event is published exactly once. After a crash
//! (or a store failure between publish and delete) delivery is at least once:
//! a `message_created` may come twice, with the same `message.id`, and clients
//! deduplicate by it.
//!
//! Events carry the message as [`MessageView`]; its `seq` is the durable
//! order of a channel's messages (realtime offsets may interleave concurrent
//! sends differently, and change epoch on restart).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chorus_core::UserId;
use chorus_core::hub::{PublishError, UserLimiter};
use chorus_core::publication::{Draft, Publication};
use chorus_protocol::{ChannelName, EventType, Payload};
use chorus_store::{
    IDEMPOTENCY_WINDOW_MS, InsertOutcome, MemberKind, MemberRef, Message, MessagePage, MessageWrite, NewMessage, OutboxEvent,
    OutboxClaim, OutboxRecord, StoreError,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::channels::channel_not_found;
use crate::events::room_channel;
use crate::triggers::{Speaker, Triggers};
use crate::views::MessageView;
use crate::{ChatError, Deps};

/// Longest idempotency key, in characters.
pub const IDEMPOTENCY_KEY_MAX_CHARS: usize = 128;
/// History page size when none is asked for.
pub const HISTORY_DEFAULT_LIMIT: u32 = 50;
/// Largest history page.
pub const HISTORY_MAX_LIMIT: u32 = 200;
/// Batches per relay pass and per cleanup kind, so one pass always ends.
const MAX_BATCHES_PER_PASS: u32 = 1_000;
/// How long a relay holds the rows it claimed: long enough to publish a
/// batch; a node that dies mid-pass leaves them to others after it.
const RELAY_LEASE: Duration = Duration::from_secs(60);
/// Usernames of message authors remembered at once.
const USERNAME_CACHE: usize = 10_000;

/// A sent message and where its `message_created` went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct SentMessage {
    pub message: MessageView,
    /// Offset of `message_created` on the channel's stream. Absent for a
    /// duplicate (the original send published it) and when the fan-out was
    /// left to the outbox relay (the message is stored and will be delivered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// Epoch of that offset; absent with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    /// True when the idempotency key matched an earlier send: `message` is
    /// that original (as it is now), and nothing new was stored.
    pub duplicate: bool,
}

/// A message sent to one agent, and that agent's run.
#[derive(Debug, Clone)]
pub struct AddressedSend {
    pub sent: SentMessage,
    /// The addressed agent's run, committed `queued` with the message and not
    /// yet handed to the runtime; `None` when the channel's run rate stopped it.
    pub run: Option<chorus_store::Run>,
    /// The channel's run rate stopped the addressed agent's run.
    pub limited: bool,
}

/// A page of history, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MessagePageView {
    pub messages: Vec<MessageView>,
    /// Pass as `before` for the next older page; absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<i64>,
    /// Pass as `after` for the next newer page (when paging forward with
    /// `after` alone); absent when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<i64>,
}

/// Which page of history to read; cursors are message `seq` numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    pub before: Option<i64>,
    pub after: Option<i64>,
    pub limit: Option<u32>,
}

#[derive(Serialize)]
struct MessageEvent<'a> {
    message: &'a MessageView,
}

#[derive(Serialize)]
struct MessageDeletedEvent<'a> {
    message_id: &'a str,
    channel_id: &'a str,
}

/// Why an outbox row could not be published.
enum RelayFailure {
    /// The row can never be published (bad channel, type or payload): drop it.
    Poison(String),
    /// The broker refused; try again on a later pass.
    Retry(String),
}

#[derive(Clone)]
pub struct Messages {
    deps: Deps,
    triggers: Triggers,
    /// User id → username (usernames never change), for message authors.
    usernames: Arc<crate::accounts::cache::BoundedMap<String, String>>,
    /// Rows written before this instant come from an earlier run (Unix ms).
    started_ms: i64,
    /// One relay pass at a time.
    relaying: Arc<AtomicBool>,
}

impl Messages {
    pub fn new(deps: Deps, triggers: Triggers) -> Self {
        let started_ms = deps.now_ms();
        Self { deps, triggers, started_ms, relaying: Arc::new(AtomicBool::new(false)), usernames: Arc::new(crate::accounts::cache::BoundedMap::new(USERNAME_CACHE)) }
    }

    /// Sends a message as a user: checks, commits it with its event, publishes
    /// `message_created`, and acknowledges. REST and the WebSocket
    /// `send_message` command both come here.
    pub async fn send(
        &self,
        user_id: &str,
        channel_id: &str,
        text: &str,
        idempotency_key: Option<&str>,
    ) -> Result<SentMessage, ChatError> {
        Ok(self.send_inner(user_id, channel_id, text, idempotency_key, None).await?.sent)
    }

    /// Sends a message addressed to one agent (an AG-UI run): the same
    /// checks, rules and transaction as [`Messages::send`], and the agent
    /// answers it whatever its response policy. Its run is handed back to
    /// the caller, which admits it, instead of to the runtime's intake; the
    /// other runs the message triggers go the usual way. The caller checks
    /// that the agent is a member of the channel.
    pub async fn send_to_agent(&self, user_id: &str, channel_id: &str, text: &str, agent_id: &str) -> Result<AddressedSend, ChatError> {
        self.send_inner(user_id, channel_id, text, None, Some(agent_id)).await
    }

    async fn send_inner(
        &self,
        user_id: &str,
        channel_id: &str,
        text: &str,
        idempotency_key: Option<&str>,
        addressed: Option<&str>,
    ) -> Result<AddressedSend, ChatError> {
        self.deps.check_maintenance("sending messages")?;
        let text = self.valid_text(text)?;
        if let Some(key) = idempotency_key {
            valid_idempotency_key(key)?;
        }
        self.require_member(user_id, channel_id).await?;
        self.check_rate(user_id)?;
        // Decided before the transaction, committed in it: the runs exist if the message does.
        let mut decision = self.triggers.decide(channel_id, Speaker::Person { user_id }, &text).await?;
        if let Some(agent_id) = addressed
            && !decision.triggers.runs.iter().any(|r| r.agent_id == agent_id)
        {
            decision.triggers.runs.push(chorus_store::RunTrigger {
                agent_id: agent_id.to_owned(),
                triggered_by: Some(user_id.to_owned()),
                parent_run_id: None,
                hop: 0,
            });
        }
        let new = NewMessage { channel_id: channel_id.to_owned(), author: MemberRef::user(user_id), text };
        let name = self.username(user_id).await?;
        let event_name = name.clone();
        let outcome = self
            .deps
            .store
            .insert_message_with_runs(
                new,
                idempotency_key,
                &move |m| outbox_event(m, EventType::MessageCreated, event_name.clone()),
                &decision.triggers,
            )
            .await
            .map_err(message_store_error)?;
        match outcome {
            InsertOutcome::Duplicate(original) => {
                if original.channel_id != channel_id {
                    return Err(ChatError::Conflict(
                        "idempotency_key: already used for a message in another channel".into(),
                    ));
                }
                let sent = SentMessage { message: MessageView::named(&original, name), offset: None, epoch: None, duplicate: true };
                Ok(AddressedSend { sent, run: None, limited: false })
            }
            InsertOutcome::Inserted(write) => {
                let view = MessageView::named(&write.message, name);
                let published = self.deliver(&write, EventType::MessageCreated, &MessageEvent { message: &view }).await;
                if let Some(room) = room_channel(channel_id) {
                    self.deps.hub.stop_typing(&room, &UserId::new(user_id)).await;
                }
                // The addressed agent's run goes back to the caller, the others to the runtime.
                let (addressed_runs, others): (Vec<_>, Vec<_>) =
                    write.runs.iter().cloned().partition(|r| Some(r.agent_id.as_str()) == addressed);
                let limited = addressed.is_some_and(|a| write.limited.iter().any(|l| l == a));
                // After `message_created`, so a run's events follow the message that started it.
                self.triggers.committed(channel_id, &write.message.id, &decision, &others, &write.limited).await;
                let sent = SentMessage {
                    message: view,
                    offset: published.as_ref().map(|p| p.offset),
                    epoch: published.as_ref().map(|p| p.epoch.to_string()),
                    duplicate: false,
                };
                Ok(AddressedSend { sent, run: addressed_runs.into_iter().next(), limited })
            }
        }
    }

    /// Replaces a message's text (its author only) and announces `message_updated`.
    pub async fn edit(&self, user_id: &str, channel_id: &str, message_id: &str, text: &str) -> Result<MessageView, ChatError> {
        self.deps.check_maintenance("editing messages")?;
        let text = self.valid_text(text)?;
        self.require_message(user_id, channel_id, message_id).await?;
        self.check_rate(user_id)?;
        let name = self.username(user_id).await?;
        let event_name = name.clone();
        let write = self
            .deps
            .store
            .edit_message(message_id, &MemberRef::user(user_id), &text, &move |m| outbox_event(m, EventType::MessageUpdated, event_name.clone()))
            .await
            .map_err(message_store_error)?;
        let view = MessageView::named(&write.message, name);
        self.deliver(&write, EventType::MessageUpdated, &MessageEvent { message: &view }).await;
        Ok(view)
    }

    /// Deletes a message (its author or a channel owner) and announces `message_deleted`.
    pub async fn delete(&self, user_id: &str, channel_id: &str, message_id: &str) -> Result<(), ChatError> {
        self.require_message(user_id, channel_id, message_id).await?;
        let write = self
            .deps
            .store
            .delete_message(message_id, &MemberRef::user(user_id), &|m| outbox_event(m, EventType::MessageDeleted, None))
            .await
            .map_err(message_store_error)?;
        let event = MessageDeletedEvent { message_id: &write.message.id, channel_id: &write.message.channel_id };
        self.deliver(&write, EventType::MessageDeleted, &event).await;
        Ok(())
    }

    /// A page of a channel's history, newest first (members only).
    pub async fn history(&self, user_id: &str, channel_id: &str, query: HistoryQuery) -> Result<MessagePageView, ChatError> {
        let limit = query.limit.unwrap_or(HISTORY_DEFAULT_LIMIT);
        if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
            return Err(ChatError::invalid("limit", format!("must be from 1 to {HISTORY_MAX_LIMIT}")));
        }
        for (field, v) in [("before", query.before), ("after", query.after)] {
            if v.is_some_and(|v| v < 0) {
                return Err(ChatError::invalid(field, "must be a message seq (0 or more)"));
            }
        }
        self.require_member(user_id, channel_id).await?;
        // One more than asked tells whether another page follows.
        let page = MessagePage { before: query.before, after: query.after, limit: limit + 1 };
        let mut rows = self.deps.store.list_messages(channel_id, page).await?;
        let more = rows.len() > limit as usize;
        let forward = query.before.is_none() && query.after.is_some();
        let (mut next_before, mut next_after) = (None, None);
        if more {
            if forward {
                // Newest first: the extra one is the newest, beyond this page.
                rows.remove(0);
                next_after = rows.first().map(|m| m.seq);
            } else {
                rows.pop();
                next_before = rows.last().map(|m| m.seq);
            }
        }
        let mut names: std::collections::HashMap<(MemberKind, String), Option<String>> = std::collections::HashMap::new();
        for m in &rows {
            let key = (m.author.kind, m.author.id.clone());
            if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(key) {
                slot.insert(self.author_name(&m.author).await?);
            }
        }
        let messages = rows.iter().map(|m| MessageView::named(m, names.get(&(m.author.kind, m.author.id.clone())).cloned().flatten())).collect();
        Ok(MessagePageView { messages, next_before, next_after })
    }

    /// A user's username, remembered (usernames never change).
    async fn username(&self, user_id: &str) -> Result<Option<String>, ChatError> {
        if let Some(name) = self.usernames.get(user_id) {
            return Ok(Some(name));
        }
        let name = self.deps.store.get_user(user_id).await?.map(|u| u.username);
        if let Some(n) = &name {
            self.usernames.insert(user_id.to_owned(), n.clone(), |_| false);
        }
        Ok(name)
    }

    /// What to show for a message's author: a username, or an agent's current name.
    async fn author_name(&self, author: &MemberRef) -> Result<Option<String>, ChatError> {
        match author.kind {
            MemberKind::User => self.username(&author.id).await,
            MemberKind::Agent => Ok(self.deps.store.get_agent(&author.id).await?.map(|a| a.name)),
        }
    }

    /// Publishes outbox events that were committed but not delivered (oldest
    /// first, in batches of `chat.relay_batch`) and deletes them; returns how
    /// many were published. Rows younger than `chat.relay_grace` belong to a
    /// request still in flight, unless they predate this process.
    pub async fn relay_pending(&self) -> Result<u64, ChatError> {
        if self.relaying.swap(true, Ordering::AcqRel) {
            return Ok(0);
        }
        let result = self.relay_pass().await;
        self.relaying.store(false, Ordering::Release);
        result
    }

    async fn relay_pass(&self) -> Result<u64, ChatError> {
        let grace = i64::try_from(self.deps.config.relay_grace.as_millis()).unwrap_or(i64::MAX);
        let lease = i64::try_from(RELAY_LEASE.as_millis()).unwrap_or(i64::MAX);
        let batch = self.deps.config.relay_batch.max(1);
        let mut published = 0;
        for _ in 0..MAX_BATCHES_PER_PASS {
            let now = self.deps.now_ms();
            // Ready: past the grace of the request that wrote it, or written
            // before this process started (left by an earlier run).
            let created_until_ms = now.saturating_sub(grace).max(self.started_ms.saturating_sub(1));
            let claim = OutboxClaim {
                owner: self.deps.hub.node().to_string(),
                now_ms: now,
                created_until_ms,
                lease_until_ms: now.saturating_add(lease),
                limit: batch,
            };
            // Claimed rows are this relay's alone until the lease ends, so
            // another node relaying from the same database skips them.
            let rows = self.deps.store.claim_outbox(claim).await?;
            let full = rows.len() >= batch as usize;
            let mut done = Vec::with_capacity(rows.len());
            let mut unpublished = Vec::new();
            for row in &rows {
                if !unpublished.is_empty() {
                    unpublished.push(row.id);
                    continue;
                }
                // As in a publish batch: subscribers' writers drain between events.
                tokio::task::yield_now().await;
                match self.publish_row(row).await {
                    Ok(()) => {
                        published += 1;
                        done.push(row.id);
                    }
                    Err(RelayFailure::Poison(why)) => {
                        tracing::error!(outbox_id = row.id, channel = %row.channel, event = %row.event_type, error = %why, "outbox row cannot be published; dropped");
                        done.push(row.id);
                    }
                    Err(RelayFailure::Retry(why)) => {
                        tracing::warn!(outbox_id = row.id, error = %why, "outbox relay paused: publish failed");
                        unpublished.push(row.id);
                    }
                }
            }
            if !done.is_empty() {
                self.deps.store.delete_outbox(&done).await?;
            }
            if !unpublished.is_empty() {
                // Free at once for whichever relay succeeds first.
                self.deps.store.release_outbox(&unpublished).await?;
                break;
            }
            if !full {
                break;
            }
        }
        if published > 0 {
            tracing::info!(published, "outbox relay delivered events left undelivered");
        }
        Ok(published)
    }

    async fn publish_row(&self, row: &OutboxRecord) -> Result<(), RelayFailure> {
        let channel = ChannelName::parse(&row.channel).map_err(|e| RelayFailure::Poison(e.to_string()))?;
        let event = EventType::parse(&row.event_type)
            .ok_or_else(|| RelayFailure::Poison(format!("unknown event type `{}`", row.event_type)))?;
        let data = Payload::from_bytes(Bytes::from(row.payload.clone())).map_err(|e| RelayFailure::Poison(e.to_string()))?;
        match self.deps.hub.publish(&channel, Draft::new(event, data)).await {
            Ok(_) => Ok(()),
            Err(PublishError::Access(e)) => Err(RelayFailure::Poison(e.to_string())),
            Err(PublishError::Broker(e)) => Err(RelayFailure::Retry(e.to_string())),
        }
    }

    /// Deletes idempotency keys past their 24 h and messages past their
    /// channel's retention, in batches of `chat.cleanup_batch` with
    /// `chat.cleanup_pause` between them, so requests keep the writer.
    /// Returns (keys, messages) deleted.
    pub async fn cleanup(&self) -> Result<(u64, u64), ChatError> {
        let batch = self.deps.config.cleanup_batch.max(1);
        let pause = self.deps.config.cleanup_pause;
        let store = &self.deps.store;
        let cutoff = self.deps.now_ms().saturating_sub(IDEMPOTENCY_WINDOW_MS);
        let keys = in_batches(batch, pause, || store.delete_idempotency_keys_before(cutoff, batch)).await?;
        let messages = in_batches(batch, pause, || store.delete_expired_messages(batch)).await?;
        Ok((keys, messages))
    }

    /// Publishes the event of a committed write, then deletes its outbox
    /// row. A failed publish leaves the row to the relay; a failed delete
    /// means the relay may publish it again (clients deduplicate by id).
    async fn deliver<T: Serialize>(&self, write: &MessageWrite, event: EventType, data: &T) -> Option<Arc<Publication>> {
        let room = room_channel(&write.message.channel_id)?;
        let payload = match Payload::from_value(data) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, event = event.as_str(), "event payload is not an object");
                return None;
            }
        };
        let published = match self.deps.hub.publish(&room, Draft::new(event, payload)).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, channel = %room, event = event.as_str(), "event left to the outbox relay");
                return None;
            }
        };
        if let Err(e) = self.deps.store.delete_outbox(&[write.outbox_id]).await {
            tracing::warn!(error = %e, outbox_id = write.outbox_id, "outbox row not deleted; the relay may publish it again");
        }
        Some(published)
    }

    fn valid_text(&self, text: &str) -> Result<String, ChatError> {
        let max = self.deps.config.message_max_chars;
        let n = text.chars().count();
        if n == 0 || text.trim().is_empty() {
            return Err(ChatError::invalid("text", "must not be empty or blank"));
        }
        if n > max {
            return Err(ChatError::invalid("text", format!("must be at most {max} characters (got {n})")));
        }
        // PostgreSQL text cannot hold NUL; no client means to send one.
        if text.contains('\0') {
            return Err(ChatError::invalid("text", "must not contain NUL characters"));
        }
        Ok(text.to_owned())
    }

    fn check_rate(&self, user_id: &str) -> Result<(), ChatError> {
        Ok(self.deps.hub.check_user_rate(UserLimiter::Messages, &UserId::new(user_id))?)
    }

    /// `not_found` unless the user is a member (channels are invisible to others).
    async fn require_member(&self, user_id: &str, channel_id: &str) -> Result<(), ChatError> {
        match self.deps.store.member_role(channel_id, &MemberRef::user(user_id)).await? {
            Some(_) => Ok(()),
            None => Err(channel_not_found()),
        }
    }

    /// The message must exist in this channel, and the user be a member.
    async fn require_message(&self, user_id: &str, channel_id: &str, message_id: &str) -> Result<Message, ChatError> {
        self.require_member(user_id, channel_id).await?;
        match self.deps.store.get_message(message_id).await? {
            Some(m) if m.channel_id == channel_id && m.deleted_at.is_none() => Ok(m),
            _ => Err(ChatError::NotFound("message not found".into())),
        }
    }
}

/// Runs `step` (deleting up to `batch` rows) until it deletes fewer, pausing between calls.
async fn in_batches<F, Fut>(batch: u32, pause: Duration, mut step: F) -> Result<u64, ChatError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    let mut total = 0;
    for _ in 0..MAX_BATCHES_PER_PASS {
        let n = step().await?;
        total += n;
        if n < u64::from(batch) {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    Ok(total)
}

/// The outbox row committed with a message write: the event exactly as the
/// request path publishes it.
pub fn outbox_event(m: &Message, event: EventType, author_name: Option<String>) -> OutboxEvent {
    let view = MessageView::named(m, author_name);
    let payload = match event {
        EventType::MessageDeleted => {
            serde_json::to_string(&MessageDeletedEvent { message_id: &m.id, channel_id: &m.channel_id })
        }
        _ => serde_json::to_string(&MessageEvent { message: &view }),
    };
    OutboxEvent {
        channel: format!("room:{}", m.channel_id),
        event_type: event.as_str().to_owned(),
        // Serializing these plain structs cannot fail; `{}` keeps the row publishable if it ever did.
        payload: payload.unwrap_or_else(|_| "{}".to_owned()),
    }
}

fn message_store_error(e: StoreError) -> ChatError {
    match e {
        StoreError::NotFound => ChatError::NotFound("message or channel not found".into()),
        StoreError::Conflict(m) if m.contains("archived") => {
            ChatError::Conflict("channel is archived (read-only)".into())
        }
        other => other.into(),
    }
}

/// 1 to [`IDEMPOTENCY_KEY_MAX_CHARS`] visible ASCII characters.
pub fn valid_idempotency_key(key: &str) -> Result<(), ChatError> {
    if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX_CHARS || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ChatError::invalid(
            "idempotency_key",
            format!("must be 1 to {IDEMPOTENCY_KEY_MAX_CHARS} visible ASCII characters"),
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl chorus_core::ChatCommands for Messages {
    async fn send_message(
        &self,
        who: &chorus_core::Identity,
        channel: &ChannelName,
        text: String,
        idempotency_key: Option<String>,
    ) -> Result<chorus_protocol::reply::MessageSentResult, chorus_core::CommandError> {
        if channel.namespace() != "room" {
            return Err(ChatError::invalid("channel", "chat messages go to `room:<channel id>`").into());
        }
        let sent = self.send(who.user_id.as_str(), channel.id(), &text, idempotency_key.as_deref()).await?;
        Ok(chorus_protocol::reply::MessageSentResult {
            message_id: sent.message.id,
            channel: channel.to_string(),
            seq: sent.message.seq,
            offset: sent.offset,
            epoch: sent.epoch,
            created_at: sent.message.created_at,
            duplicate: sent.duplicate,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_keys_are_bounded() {
        assert!(valid_idempotency_key("").is_err());
        assert!(valid_idempotency_key("k-1").is_ok());
        assert!(valid_idempotency_key(&"k".repeat(IDEMPOTENCY_KEY_MAX_CHARS)).is_ok());
        assert!(valid_idempotency_key(&"k".repeat(IDEMPOTENCY_KEY_MAX_CHARS + 1)).is_err());
        assert!(valid_idempotency_key("a b").is_err());
    }
}
