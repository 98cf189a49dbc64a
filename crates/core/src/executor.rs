//! The one command executor behind every transport.
//!
//! WebSocket frames and SSE command requests both end up here, as decoded
//! [`Request`]s against a [`Connection`]. Nothing here knows how bytes reach
//! the server.

use std::sync::Arc;

use async_trait::async_trait;
use chorus_protocol::reply::{ConnectedResult, HistoryResult, MessageSentResult, PresenceResult, RawFrames};
use chorus_protocol::push::ConnectedData;
use chorus_protocol::{ChannelName, Command, ControlPush, ErrorCode, ErrorObject, EventType, PROTOCOL_VERSION, Reply, ReplyBody, Request, timestamp};

use crate::access::AccessError;
use crate::broker::{BrokerError, HistoryQuery};
use crate::connection::Connection;
use crate::hub::{FollowUp, Hub, Lease, OpenError, PublishError, SubscribeError, TypingError, UserLimiter};
use crate::identity::{Identity, TokenError, TokenVerifier};
use crate::ids::Transport;
use crate::limiter::RateLimited;
use crate::maintenance::MaintenanceRefusal;
use crate::outbound::Outbound;
use crate::publication::{Draft, Position};

/// A command failure: an error code and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct CommandError {
    pub code: ErrorCode,
    pub message: String,
}

impl CommandError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }
}

impl From<TokenError> for CommandError {
    fn from(e: TokenError) -> Self {
        match e {
            TokenError::Expired => Self::new(ErrorCode::TokenExpired, "token expired"),
            TokenError::Invalid(m) => Self::new(ErrorCode::Unauthorized, format!("invalid token: {m}")),
            TokenError::Unavailable(m) => Self::new(ErrorCode::Unavailable, m),
        }
    }
}

impl From<AccessError> for CommandError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::UnknownNamespace(_) | AccessError::Denied(_) => Self::new(ErrorCode::Forbidden, e.to_string()),
            AccessError::Unavailable(_) => Self::new(ErrorCode::Unavailable, e.to_string()),
        }
    }
}

impl From<BrokerError> for CommandError {
    fn from(e: BrokerError) -> Self {
        Self::new(ErrorCode::Unavailable, e.to_string())
    }
}

impl From<PublishError> for CommandError {
    fn from(e: PublishError) -> Self {
        match e {
            PublishError::Access(a) => a.into(),
            PublishError::Broker(b) => b.into(),
        }
    }
}

impl From<SubscribeError> for CommandError {
    fn from(e: SubscribeError) -> Self {
        match e {
            SubscribeError::AlreadySubscribed(_) => Self::new(ErrorCode::Conflict, e.to_string()),
            SubscribeError::TooMany(_) => Self::new(ErrorCode::LimitExceeded, e.to_string()),
            SubscribeError::Closed => Self::new(ErrorCode::Unavailable, e.to_string()),
            SubscribeError::Access(a) => a.into(),
            SubscribeError::Broker(b) => b.into(),
        }
    }
}

impl From<MaintenanceRefusal> for CommandError {
    fn from(e: MaintenanceRefusal) -> Self {
        Self::new(ErrorCode::Maintenance, e.to_string())
    }
}

impl From<RateLimited> for CommandError {
    fn from(e: RateLimited) -> Self {
        Self::new(ErrorCode::RateLimited, e.to_string())
    }
}

impl From<OpenError> for CommandError {
    fn from(e: OpenError) -> Self {
        Self::new(ErrorCode::Unavailable, e.to_string())
    }
}

/// Commands whose meaning lives outside the realtime core: chat messages,
/// stored by the chat domain.
#[async_trait]
pub trait ChatCommands: Send + Sync + 'static {
    async fn send_message(
        &self,
        who: &Identity,
        channel: &ChannelName,
        text: String,
        idempotency_key: Option<String>,
    ) -> Result<MessageSentResult, CommandError>;
}

/// A reply and, for `subscribe`, the replay to run after it is sent.
pub struct Executed {
    pub reply: Reply,
    pub follow_up: Option<FollowUp>,
}

pub struct Executor {
    hub: Hub,
    verifier: Arc<dyn TokenVerifier>,
    chat: Arc<dyn ChatCommands>,
}

impl Executor {
    pub fn new(hub: Hub, verifier: Arc<dyn TokenVerifier>, chat: Arc<dyn ChatCommands>) -> Self {
        Self { hub, verifier, chat }
    }

    pub fn hub(&self) -> &Hub {
        &self.hub
    }

    pub async fn authenticate(&self, token: &str) -> Result<Identity, CommandError> {
        Ok(self.verifier.verify(token).await?)
    }

    /// Opens a connection for a verified identity.
    pub async fn open(&self, identity: Identity, transport: Transport, request_id: Arc<str>, outbound: Arc<Outbound>) -> Result<Lease, CommandError> {
        Ok(self.hub.open(identity, transport, request_id, outbound).await?)
    }

    pub fn connected(&self, conn: &Connection) -> ConnectedResult {
        let t = self.hub.timing();
        ConnectedResult {
            connection_id: conn.id.to_string(),
            user_id: conn.user.to_string(),
            node: self.hub.node().to_string(),
            protocol_version: PROTOCOL_VERSION,
            expires_at: conn.expires_at_ms().map(timestamp::format_ms),
            ping_interval_ms: u64::try_from(t.ping_interval.as_millis()).unwrap_or(u64::MAX),
            pong_timeout_ms: u64::try_from(t.pong_timeout.as_millis()).unwrap_or(u64::MAX),
        }
    }

    /// The `connected` push for `conn`; `commands_url` is where an SSE
    /// stream's commands go (none for a WebSocket).
    pub fn connected_push(&self, conn: &Connection, commands_url: Option<String>) -> ControlPush {
        ControlPush::Connected {
            connection_id: conn.id.to_string(),
            user_id: conn.user.to_string(),
            timestamp: timestamp::format_ms(self.hub.now_ms()),
            data: ConnectedData {
                protocol_version: PROTOCOL_VERSION,
                node: self.hub.node().to_string(),
                commands_url,
                expires_at: conn.expires_at_ms().map(timestamp::format_ms),
            },
        }
    }

    /// The standard error object for a failed command of `conn`.
    pub fn error_object(&self, conn_request_id: &str, command_id: Option<u64>, code: ErrorCode, message: impl Into<String>) -> ErrorObject {
        let request_id = match command_id {
            Some(id) => format!("{conn_request_id}:{id}"),
            None => conn_request_id.to_owned(),
        };
        ErrorObject::new(code, message, request_id)
    }

    /// Runs one command. Errors become error replies; nothing here closes the connection.
    pub async fn execute(&self, conn: &Arc<Connection>, request: Request) -> Executed {
        let name = request.command.name();
        let started = tokio::time::Instant::now();
        let outcome = self.run(conn, request.command).await;
        self.hub.metrics().command_duration(name, started.elapsed());
        match outcome {
            Ok((body, follow_up)) => Executed { reply: Reply::ok(request.id, body), follow_up },
            Err(e) => {
                self.hub.metrics().error(&format!("{}:{name}", conn.transport.as_str()), e.code.as_str());
                let err = self.error_object(&conn.request_id, Some(request.id), e.code, e.message);
                Executed { reply: Reply::err(Some(request.id), err), follow_up: None }
            }
        }
    }

    async fn run(&self, conn: &Arc<Connection>, command: Command) -> Result<(ReplyBody, Option<FollowUp>), CommandError> {
        let hub = &self.hub;
        let body = match command {
            Command::Connect { .. } => return Err(CommandError::new(ErrorCode::Conflict, "already connected")),
            Command::Refresh { token } => {
                let identity = self.authenticate(&token).await?;
                if identity.user_id != conn.user {
                    return Err(CommandError::new(ErrorCode::Forbidden, "the new token is for another user"));
                }
                let expires_at = identity.expires_at_ms.map(timestamp::format_ms);
                conn.set_identity(identity);
                self.recheck_subscriptions(conn).await;
                ReplyBody::Refreshed { expires_at }
            }
            Command::Subscribe { channel, since } => {
                #[cfg(feature = "fault-injection")]
                if channel.namespace() == "fault" {
                    panic!("fault injected by subscribing to {channel}");
                }
                hub.access().check_subscribe(&conn.identity(), &channel).await?;
                let (result, follow_up) = hub.subscribe(conn, channel.clone(), since).await?;
                // Membership can be revoked meanwhile: checked again now that the subscription
                // is registered, a racing revocation either shows here or reaches it.
                let members = hub.access().namespace(&channel).is_ok_and(|ns| ns.subscribe == crate::config::SubscribeRule::Members);
                if let Err(e) = if members { hub.access().check_subscribe(&conn.identity(), &channel).await } else { Ok(()) } {
                    hub.unsubscribe(conn, &channel).await;
                    return Err(e.into());
                }
                return Ok((ReplyBody::Subscribed(result), Some(follow_up)));
            }
            Command::Unsubscribe { channel } => {
                hub.unsubscribe(conn, &channel).await;
                ReplyBody::Unsubscribed { channel: channel.to_string() }
            }
            Command::Publish { channel, data } => {
                hub.access().check_publish(&conn.identity(), &channel).await?;
                hub.check_maintenance("publishing")?;
                hub.check_user_rate(UserLimiter::Messages, &conn.user)?;
                let p = hub.publish(&channel, Draft::new(EventType::Publication, data)).await?;
                ReplyBody::Published { channel: channel.to_string(), offset: p.offset, epoch: p.epoch.to_string() }
            }
            Command::History { channel, since, limit } => {
                hub.access().check_subscribe(&conn.identity(), &channel).await?;
                let max = hub.limits().history_page;
                let limit = usize::try_from(limit.unwrap_or(100)).unwrap_or(usize::MAX);
                if limit == 0 || limit > max {
                    return Err(CommandError::new(ErrorCode::InvalidField, format!("limit: must be from 1 to {max}")));
                }
                let query = match since {
                    Some(s) => HistoryQuery::Since { position: Position { offset: s.offset, epoch: Arc::from(s.epoch.as_str()) }, limit },
                    None => HistoryQuery::Latest { limit },
                };
                let page = match hub.history(&channel, query).await {
                    Ok(page) => page,
                    Err(PublishError::Broker(BrokerError::Unrecoverable { current })) => {
                        return Err(CommandError::new(
                            ErrorCode::Conflict,
                            format!("since: position is no longer in history; the stream is at epoch {} offset {}", current.epoch, current.offset),
                        ));
                    }
                    Err(e) => return Err(e.into()),
                };
                ReplyBody::History(HistoryResult {
                    channel: channel.to_string(),
                    offset: page.current.offset,
                    epoch: page.current.epoch.to_string(),
                    events: RawFrames(page.publications.iter().map(|p| p.frame().clone()).collect()),
                })
            }
            Command::Presence { channel } => {
                hub.access().check_subscribe(&conn.identity(), &channel).await?;
                if !hub.access().namespace(&channel)?.presence {
                    return Err(CommandError::new(ErrorCode::Forbidden, format!("presence is not enabled in namespace `{}`", channel.namespace())));
                }
                let users = hub.presence(&channel).await?;
                ReplyBody::Presence(PresenceResult { channel: channel.to_string(), users })
            }
            Command::Typing { channel, active } => {
                hub.typing(conn, &channel, active).await.map_err(|e| match e {
                    TypingError::Disabled(_) => CommandError::new(ErrorCode::Forbidden, e.to_string()),
                    TypingError::NotSubscribed(_) => CommandError::new(ErrorCode::NotSubscribed, e.to_string()),
                    TypingError::Full => CommandError::new(ErrorCode::LimitExceeded, e.to_string()),
                    TypingError::Publish(p) => p.into(),
                })?;
                ReplyBody::Typing { channel: channel.to_string(), active }
            }
            Command::SendMessage { channel, text, idempotency_key } => {
                // Checked here too, so no chat implementation can forget it.
                hub.check_maintenance("sending messages")?;
                let result = self.chat.send_message(&conn.identity(), &channel, text, idempotency_key).await?;
                hub.stop_typing(&channel, &conn.user).await;
                ReplyBody::MessageSent(result)
            }
            Command::Ping => ReplyBody::Pong { pong: true },
        };
        Ok((body, None))
    }

    /// After `refresh`: a new token may grant less. Subscriptions it no longer
    /// allows end with an `unsubscribed` push. (An unreachable membership
    /// check keeps the subscription; the check at subscribe time stood.)
    async fn recheck_subscriptions(&self, conn: &Arc<Connection>) {
        let identity = conn.identity();
        for channel in conn.channels() {
            if let Err(AccessError::Denied(_) | AccessError::UnknownNamespace(_)) = self.hub.access().check_subscribe(&identity, &channel).await {
                self.hub.server_unsubscribe(conn, &channel, "the refreshed token does not allow this channel").await;
            }
        }
    }
}
