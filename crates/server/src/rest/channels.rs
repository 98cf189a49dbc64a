//! REST routes: channels, their members and their messages.
//!
//! Access: a channel is visible only to its members; anyone else gets 404
//! for it and everything under it, so ids cannot be probed. Members who lack
//! a right (owner actions, editing another's message) get 403.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use chorus_chat::Chat;
use chorus_chat::channels::{ChannelPatch, MyChannelView, NewChannelInput};
use chorus_chat::messages::{HistoryQuery, MessagePageView, SentMessage};
use chorus_chat::views::{ChannelView, MemberView, MessageView};
use chorus_protocol::ErrorCode;
use chorus_store::{MemberKind, MemberRef, MemberRole};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;
use crate::extract::parse_json;
use crate::rest::openapi::ErrorBody;
use crate::rest::{AuthUser, RestState};

pub fn routes() -> OpenApiRouter<RestState> {
    OpenApiRouter::new()
        .routes(routes!(list_channels, create_channel))
        .routes(routes!(get_channel, update_channel, delete_channel))
        .routes(routes!(list_members, add_member))
        .routes(routes!(remove_member))
        .routes(routes!(list_messages, send_message))
        .routes(routes!(edit_message, delete_message))
}

// ---------------------------------------------------------------- bodies

/// A new channel.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChannelBody {
    /// 1 to 80 characters once trimmed; no control characters.
    #[schema(min_length = 1, max_length = 80, example = "general")]
    pub name: String,
    /// At most 250 characters once trimmed; no control characters; empty means none.
    #[serde(default)]
    #[schema(max_length = 250, example = "Everything and nothing")]
    pub topic: Option<String>,
    /// How long messages are kept, in ms: 1000 (1 s) to 315360000000 (10
    /// years). Absent or null keeps them forever.
    #[serde(default)]
    #[schema(minimum = 1000, maximum = 315360000000.0)]
    pub retention_ms: Option<i64>,
}

/// A partial update: absent fields are left as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateChannelBody {
    /// 1 to 80 characters once trimmed.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 80)]
    pub name: Option<String>,
    /// At most 250 characters; null or empty clears it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 250)]
    pub topic: Option<Option<String>>,
    /// True archives (read-only: no messages sent, edited or deleted, no
    /// members added); false unarchives.
    #[serde(default)]
    pub archived: Option<bool>,
    /// 1000 to 315360000000 ms; null keeps messages forever.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>, minimum = 1000, maximum = 315360000000.0)]
    pub retention_ms: Option<Option<i64>>,
}

/// Distinguishes an explicit `null` (`Some(None)`) from an absent field (`None`, by `default`).
fn present<'de, T: Deserialize<'de>, D: Deserializer<'de>>(d: D) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberKindBody {
    User,
    Agent,
}

#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberRoleBody {
    Owner,
    Member,
}

/// A member to add: a user, or an agent the caller owns (agents are always `member`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberBody {
    pub kind: MemberKindBody,
    /// The user's or agent's id (1 to 64 characters).
    #[schema(min_length = 1, max_length = 64)]
    pub id: String,
    /// `member` when absent.
    #[serde(default)]
    pub role: Option<MemberRoleBody>,
}

/// A message to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendMessageBody {
    /// 1 to `chat.message_max_chars` (default 2000) characters, not blank, no NUL.
    #[schema(min_length = 1, max_length = 2000, example = "hello")]
    pub text: String,
    /// Makes a retried send return the original message instead of a new one
    /// (per user, for 24 h): 1 to 128 visible ASCII characters. The
    /// `Idempotency-Key` header does the same; if both are given they must match.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128, example = "c7a4-0001")]
    pub idempotency_key: Option<String>,
}

/// A new text for a message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EditMessageBody {
    /// 1 to `chat.message_max_chars` (default 2000) characters, not blank, no NUL.
    #[schema(min_length = 1, max_length = 2000)]
    pub text: String,
}

/// History paging. Cursors are message `seq` numbers; results are newest first.
#[derive(Debug, Default, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistoryParams {
    /// Only messages with a lower seq (page back with the previous page's `next_before`).
    #[param(minimum = 0)]
    pub before: Option<i64>,
    /// Only messages with a higher seq. Alone, the page holds the oldest
    /// messages after it (page forward with `next_after`).
    #[param(minimum = 0)]
    pub after: Option<i64>,
    /// 1 to 200; 50 when absent.
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
}

// ---------------------------------------------------------------- responses

#[derive(Debug, Serialize, ToSchema)]
pub struct ChannelList {
    /// Oldest first.
    pub channels: Vec<MyChannelView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberList {
    /// In the order they were added.
    pub members: Vec<MemberView>,
}

// ---------------------------------------------------------------- channels

/// `POST /api/v1/channels`: creates a channel; the caller becomes its owner.
#[utoipa::path(post, path = "/api/v1/channels", tag = "channels", request_body = CreateChannelBody, security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `channel_created` goes to the owner's `user:` channel and the channel's stream", body = ChannelView),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Channel limit per user (`limit_exceeded`) or request rate (`rate_limited`)", body = ErrorBody),
        (status = 503, description = "Maintenance mode, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn create_channel(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<ChannelView>), ApiError> {
    let body: CreateChannelBody = parse_json(&body)?;
    let input = NewChannelInput { name: body.name, topic: body.topic, retention_ms: body.retention_ms };
    let view = chat.channels.create(&caller.user_id, input).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /api/v1/channels`: the caller's channels, with the caller's role in each.
#[utoipa::path(get, path = "/api/v1/channels", tag = "channels", security(("bearer" = [])),
    responses(
        (status = 200, description = "The channels the caller is a member of", body = ChannelList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn list_channels(State(chat): State<Arc<Chat>>, AuthUser(caller): AuthUser) -> Result<Json<ChannelList>, ApiError> {
    let channels = chat.channels.list(&caller.user_id).await?;
    Ok(Json(ChannelList { channels }))
}

/// `GET /api/v1/channels/{id}`: one channel (members only).
#[utoipa::path(get, path = "/api/v1/channels/{id}", tag = "channels", security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel", body = ChannelView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such channel, or the caller is not a member", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn get_channel(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ChannelView>, ApiError> {
    Ok(Json(chat.channels.get(&caller.user_id, &id).await?))
}

/// `PATCH /api/v1/channels/{id}`: renames, changes the topic or retention,
/// archives or unarchives (owners). Announced as `channel_updated`.
#[utoipa::path(patch, path = "/api/v1/channels/{id}", tag = "channels", request_body = UpdateChannelBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The channel as it is now", body = ChannelView),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The caller is a member but not an owner", body = ErrorBody),
        (status = 404, description = "No such channel, or the caller is not a member", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "Maintenance mode (renames and topics), or the store is unavailable", body = ErrorBody),
    ))]
pub async fn update_channel(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ChannelView>, ApiError> {
    let body: UpdateChannelBody = parse_json(&body)?;
    let patch = ChannelPatch { name: body.name, topic: body.topic, archived: body.archived, retention_ms: body.retention_ms };
    Ok(Json(chat.channels.update(&caller.user_id, &id, patch).await?))
}

/// `DELETE /api/v1/channels/{id}`: deletes the channel, its members and
/// messages (owners). Every member gets `channel_deleted` and loses its
/// subscription to the channel's stream at once.
#[utoipa::path(delete, path = "/api/v1/channels/{id}", tag = "channels", security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "The caller is a member but not an owner", body = ErrorBody),
        (status = 404, description = "No such channel, or the caller is not a member", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn delete_channel(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    chat.channels.delete(&caller.user_id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- members

/// `GET /api/v1/channels/{id}/members` (members only): each member with its
/// public profile, so members can name one another and one another's agents
/// (a user's username; an agent's name, model and owner, not its persona,
/// tools or webhook).
#[utoipa::path(get, path = "/api/v1/channels/{id}/members", tag = "channels", security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 200, description = "The members, with `name` (and `model`, `owner_id` for agents)", body = MemberList),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such channel, or the caller is not a member", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn list_members(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<MemberList>, ApiError> {
    let members = chat.channels.members(&caller.user_id, &id).await?;
    Ok(Json(MemberList { members }))
}

/// `POST /api/v1/channels/{id}/members`: adds a user or an agent the caller
/// owns (owners). Announced as `channel_member_added`.
#[utoipa::path(post, path = "/api/v1/channels/{id}/members", tag = "channels", request_body = AddMemberBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id")),
    responses(
        (status = 201, description = "Added", body = MemberView),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an owner, or the agent belongs to someone else", body = ErrorBody),
        (status = 404, description = "No such channel (or not a member), user or agent", body = ErrorBody),
        (status = 409, description = "Already a member, or the channel is archived", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn add_member(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<MemberView>), ApiError> {
    let body: AddMemberBody = parse_json(&body)?;
    let member = member_ref(body.kind, body.id);
    let role = match body.role {
        Some(MemberRoleBody::Owner) => MemberRole::Owner,
        Some(MemberRoleBody::Member) | None => MemberRole::Member,
    };
    let view = chat.channels.add_member(&caller.user_id, &id, member, role).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `DELETE /api/v1/channels/{id}/members/{kind}/{member_id}`: owners remove
/// members; any member removes itself (leaves). The removed user's
/// subscriptions to the channel's stream end at once (`unsubscribed`).
#[utoipa::path(delete, path = "/api/v1/channels/{id}/members/{kind}/{member_id}", tag = "channels", security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("kind" = String, Path, description = "`user` or `agent`"),
        ("member_id" = String, Path, description = "The user's or agent's id"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Unknown member kind", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an owner (and not removing oneself)", body = ErrorBody),
        (status = 404, description = "No such channel (or not a member), or no such member in it", body = ErrorBody),
        (status = 409, description = "The channel's creator cannot be removed", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn remove_member(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path((id, kind, member_id)): Path<(String, String, String)>,
) -> Result<StatusCode, ApiError> {
    let kind = match kind.as_str() {
        "user" => MemberKindBody::User,
        "agent" => MemberKindBody::Agent,
        _ => return Err(ApiError::new(ErrorCode::InvalidField, "kind: must be `user` or `agent`")),
    };
    chat.channels.remove_member(&caller.user_id, &id, member_ref(kind, member_id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn member_ref(kind: MemberKindBody, id: String) -> MemberRef {
    MemberRef {
        kind: match kind {
            MemberKindBody::User => MemberKind::User,
            MemberKindBody::Agent => MemberKind::Agent,
        },
        id,
    }
}

// ---------------------------------------------------------------- messages

/// `POST /api/v1/channels/{id}/messages`: sends a message (members). It is
/// stored with its event, published as `message_created` on the channel's
/// stream, then acknowledged. With an idempotency key (body or
/// `Idempotency-Key` header), a retry returns the original with 200 and
/// `duplicate: true`.
#[utoipa::path(post, path = "/api/v1/channels/{id}/messages", tag = "channels", request_body = SendMessageBody, security(("bearer" = [])),
    params(
        ("id" = String, Path, description = "Channel id"),
        ("Idempotency-Key" = Option<String>, Header, description = "Same as `idempotency_key` in the body"),
    ),
    responses(
        (status = 201, description = "Stored and published", body = SentMessage),
        (status = 200, description = "A retry: the original message (`duplicate: true`); nothing new stored", body = SentMessage),
        (status = 400, description = "Malformed body or invalid field (text length, key)", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such channel, or the caller is not a member", body = ErrorBody),
        (status = 409, description = "The channel is archived, or the key was used in another channel", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Message rate limit per user, or request rate", body = ErrorBody),
        (status = 503, description = "Maintenance mode, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn send_message(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<SentMessage>), ApiError> {
    let body: SendMessageBody = parse_json(&body)?;
    let header = match headers.get("idempotency-key") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::new(ErrorCode::InvalidField, "Idempotency-Key: must be visible ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    let key = match (body.idempotency_key, header) {
        (Some(b), Some(h)) if b != h => {
            return Err(ApiError::new(ErrorCode::InvalidField, "idempotency_key: differs from the Idempotency-Key header"));
        }
        (b, h) => b.or(h),
    };
    let sent = chat.messages.send(&caller.user_id, &id, &body.text, key.as_deref()).await?;
    let status = if sent.duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(sent)))
}

/// `GET /api/v1/channels/{id}/messages`: history, newest first (members only).
/// Deleted messages stay in place with empty text and `deleted_at`.
#[utoipa::path(get, path = "/api/v1/channels/{id}/messages", tag = "channels", security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id"), HistoryParams),
    responses(
        (status = 200, description = "A page of messages, newest first, with cursors to the next pages", body = MessagePageView),
        (status = 400, description = "Invalid query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 404, description = "No such channel, or the caller is not a member", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn list_messages(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<MessagePageView>, ApiError> {
    let query = history_query(query.as_deref().unwrap_or(""))?;
    Ok(Json(chat.messages.history(&caller.user_id, &id, query).await?))
}

/// Reads `before`, `after` and `limit`; anything else is refused so typos show.
fn history_query(raw: &str) -> Result<HistoryQuery, ApiError> {
    let mut q = HistoryQuery::default();
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let bad = |what: &str| ApiError::new(ErrorCode::InvalidField, format!("{k}: {what}"));
        match k.as_ref() {
            "before" => q.before = Some(v.parse().map_err(|_| bad("must be an integer"))?),
            "after" => q.after = Some(v.parse().map_err(|_| bad("must be an integer"))?),
            "limit" => q.limit = Some(v.parse().map_err(|_| bad("must be an integer from 1 to 200"))?),
            _ => return Err(bad("unknown query parameter (known: before, after, limit)")),
        }
    }
    Ok(q)
}

/// `PATCH /api/v1/channels/{id}/messages/{message_id}`: edits the text (the
/// author only). Announced as `message_updated`.
#[utoipa::path(patch, path = "/api/v1/channels/{id}/messages/{message_id}", tag = "channels", request_body = EditMessageBody, security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id"), ("message_id" = String, Path, description = "Message id")),
    responses(
        (status = 200, description = "The edited message", body = MessageView),
        (status = 400, description = "Malformed body or invalid field", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not the author", body = ErrorBody),
        (status = 404, description = "No such channel (or not a member), or no such message in it (or deleted)", body = ErrorBody),
        (status = 409, description = "The channel is archived", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Message rate limit per user, or request rate", body = ErrorBody),
        (status = 503, description = "Maintenance mode, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn edit_message(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path((id, message_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<MessageView>, ApiError> {
    let body: EditMessageBody = parse_json(&body)?;
    Ok(Json(chat.messages.edit(&caller.user_id, &id, &message_id, &body.text).await?))
}

/// `DELETE /api/v1/channels/{id}/messages/{message_id}`: deletes a message
/// (its author or a channel owner); it stays in history with empty text.
/// Announced as `message_deleted`.
#[utoipa::path(delete, path = "/api/v1/channels/{id}/messages/{message_id}", tag = "channels", security(("bearer" = [])),
    params(("id" = String, Path, description = "Channel id"), ("message_id" = String, Path, description = "Message id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Neither the author nor a channel owner", body = ErrorBody),
        (status = 404, description = "No such channel (or not a member), or no such message in it (or already deleted)", body = ErrorBody),
        (status = 409, description = "The channel is archived", body = ErrorBody),
        (status = 429, description = "Request rate limit", body = ErrorBody),
        (status = 503, description = "The store is unavailable", body = ErrorBody),
    ))]
pub async fn delete_message(
    State(chat): State<Arc<Chat>>,
    AuthUser(caller): AuthUser,
    Path((id, message_id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    chat.messages.delete(&caller.user_id, &id, &message_id).await?;
    Ok(StatusCode::NO_CONTENT)
}
