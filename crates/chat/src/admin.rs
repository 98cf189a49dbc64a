//! Administration: connected sessions, disconnects, cleanup, maintenance.
//!
//! Every entry point but [`Admin::cleanup_pass`] (which the background loop
//! runs) takes the [`Caller`] and checks the admin role itself, so no front
//! end can forget it.

use chorus_core::broker::ConnectionCursor;
use chorus_core::{ConnId, UserId};
use chorus_core::maintenance::MaintenanceMode;
use chorus_protocol::CloseCode;
use chorus_protocol::timestamp::format_ms;
use serde::Serialize;
use utoipa::ToSchema;

use crate::accounts::LIMITER_IDLE;
use crate::{Accounts, Agents, Caller, ChatError, Deps, Messages, text};

/// Connections listed when no limit is asked for.
pub const CONNECTIONS_DEFAULT_LIMIT: usize = 100;
/// Largest page of connections.
pub const CONNECTIONS_MAX_LIMIT: usize = 1_000;
/// Longest maintenance message, in characters.
pub const MAINTENANCE_MESSAGE_MAX_CHARS: usize = 500;

/// What one cleanup pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct CleanupReport {
    /// Login sessions deleted (past their maximum age, idle, or revoked).
    pub sessions: u64,
    /// Idempotency keys deleted (older than 24 h).
    pub idempotency_keys: u64,
    /// Messages deleted by their channel's retention.
    pub messages: u64,
    /// Rate-limiter entries still held after idle ones were dropped (chat and hub).
    pub limiter_entries_left: u64,
    /// How long the pass took.
    pub duration_ms: u64,
}

/// One live connection, on whichever node holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConnectionView {
    pub id: String,
    pub user_id: String,
    /// `websocket` or `sse`.
    #[schema(example = "websocket")]
    pub transport: String,
    /// The node holding the connection.
    pub node: String,
    /// RFC 3339, UTC.
    pub connected_at: String,
    /// Channels it is subscribed to, sorted. Only the node holding a
    /// connection knows them: absent for connections on other nodes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscriptions: Option<Vec<String>>,
}

/// Whose connections a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionScope {
    /// Every node's (the connection registry answered).
    Cluster,
    /// Only the answering node's: the connection registry is unreachable
    /// (Redis is down), so other nodes' connections are not listed.
    Node,
}

/// A page of the connections of every node, oldest first (by opening
/// time, then id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ConnectionList {
    /// The node answering.
    pub node: String,
    pub scope: ConnectionScope,
    /// Connections in all, in the scope (may exceed the page).
    pub total: u64,
    pub connections: Vec<ConnectionView>,
    /// Present when more connections follow: pass it as `after` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// What a disconnect did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct DisconnectResult {
    pub user_id: String,
    /// Connections closed on this node; other nodes close theirs on their own.
    pub closed: u64,
    /// The close code the connections got (4009, `admin_disconnect`).
    #[schema(example = 4009)]
    pub code: u16,
}

/// Maintenance mode as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct MaintenanceView {
    pub enabled: bool,
    /// The administrator's message, shown in every refusal.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was switched on (RFC 3339); absent while off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl From<&MaintenanceMode> for MaintenanceView {
    fn from(m: &MaintenanceMode) -> Self {
        match m {
            MaintenanceMode::Off => Self { enabled: false, message: None, since: None },
            MaintenanceMode::On { message, since_ms } => Self { enabled: true, message: message.clone(), since: Some(format_ms(*since_ms)) },
        }
    }
}

#[derive(Clone)]
pub struct Admin {
    deps: Deps,
    accounts: Accounts,
    messages: Messages,
    agents: Agents,
}

impl Admin {
    pub fn new(deps: Deps, accounts: Accounts, messages: Messages, agents: Agents) -> Self {
        Self { deps, accounts, messages, agents }
    }

    /// One pass of every cleanup: expired sessions, old idempotency keys,
    /// message retention, idle limiter entries (chat and hub). Store work
    /// runs in batches of `chat.cleanup_batch` with `chat.cleanup_pause`
    /// between them, so requests always get the database in between.
    pub async fn cleanup_pass(&self) -> Result<CleanupReport, ChatError> {
        let started = tokio::time::Instant::now();
        // Also sweeps the login and sign-up limiters.
        let sessions = self.accounts.cleanup().await?;
        let (idempotency_keys, messages) = self.messages.cleanup().await?;
        let hub_left = self.deps.hub.sweep_limiters();
        let chat_left = self.accounts.limiter_entries() + self.agents.sweep_limiter(LIMITER_IDLE);
        Ok(CleanupReport {
            sessions,
            idempotency_keys,
            messages,
            limiter_entries_left: u64::try_from(hub_left + chat_left).unwrap_or(u64::MAX),
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// [`cleanup_pass`](Self::cleanup_pass) on an administrator's request.
    pub async fn force_cleanup(&self, caller: &Caller) -> Result<CleanupReport, ChatError> {
        caller.require_admin()?;
        let report = self.cleanup_pass().await?;
        tracing::info!(admin = %caller.user_id, ?report, "cleanup pass forced");
        Ok(report)
    }

    /// A page of every node's connections, oldest first: at most `limit`
    /// (1 to [`CONNECTIONS_MAX_LIMIT`], default [`CONNECTIONS_DEFAULT_LIMIT`])
    /// after the `after` cursor of a previous page, and their total. When
    /// the registry cannot answer, this node's connections alone.
    pub async fn connections(&self, caller: &Caller, limit: Option<u32>, after: Option<&str>) -> Result<ConnectionList, ChatError> {
        caller.require_admin()?;
        let limit = match limit.map(|l| usize::try_from(l).unwrap_or(usize::MAX)) {
            None => CONNECTIONS_DEFAULT_LIMIT,
            Some(l) if (1..=CONNECTIONS_MAX_LIMIT).contains(&l) => l,
            Some(_) => return Err(ChatError::invalid("limit", format_args!("must be from 1 to {CONNECTIONS_MAX_LIMIT}"))),
        };
        let after = after.map(parse_cursor).transpose()?;
        let hub = &self.deps.hub;
        let (scope, page) = match hub.cluster_connection_page(after.as_ref(), limit).await {
            Ok(page) => (ConnectionScope::Cluster, page),
            Err(e) => {
                tracing::warn!(error = %e, "the connection registry did not answer; listing this node's connections only");
                (ConnectionScope::Node, hub.local_connection_page(after.as_ref(), limit))
            }
        };
        let here = hub.node().clone();
        let connections = page
            .connections
            .into_iter()
            .map(|c| {
                // Only this node knows its connections' subscriptions.
                let subscriptions = (c.node == here).then(|| {
                    hub.connection(&c.user, c.conn).map(|live| live.info().subscriptions.iter().map(ToString::to_string).collect()).unwrap_or_default()
                });
                ConnectionView {
                    id: c.conn.to_string(),
                    user_id: c.user.to_string(),
                    transport: c.transport.as_str().to_owned(),
                    node: c.node.to_string(),
                    connected_at: format_ms(c.since_ms),
                    subscriptions,
                }
            })
            .collect();
        Ok(ConnectionList { node: here.to_string(), scope, total: page.total, connections, next_after: page.next.map(|c| format_cursor(&c)) })
    }

    /// Closes every connection of a user, on every node, with 4009
    /// (`admin_disconnect`). Returns how many closed on this node.
    pub async fn disconnect_user(&self, caller: &Caller, user_id: &str) -> Result<DisconnectResult, ChatError> {
        caller.require_admin()?;
        if self.deps.store.get_user(user_id).await?.is_none() {
            return Err(ChatError::NotFound("user not found".into()));
        }
        let user = UserId::new(user_id);
        let code = CloseCode::AdminDisconnect;
        // Closed here directly so the count is exact; `close` is true only for
        // connections not already closing.
        let closed = self.deps.hub.user_connections(&user).iter().filter(|c| c.close(code)).count();
        // Then every node (this one again, a no-op: the first reason wins).
        self.deps.hub.disconnect_user(&user, code).await.map_err(|e| {
            tracing::warn!(error = %e, user = %user, "admin disconnect did not reach every node");
            ChatError::Unavailable(format!("closed {closed} connection(s) on this node, but other nodes could not be told: {e}"))
        })?;
        tracing::info!(admin = %caller.user_id, user = %user, closed, "user disconnected by an administrator");
        Ok(DisconnectResult { user_id: user_id.to_owned(), closed: u64::try_from(closed).unwrap_or(u64::MAX), code: code.code() })
    }

    pub fn maintenance(&self, caller: &Caller) -> Result<MaintenanceView, ChatError> {
        caller.require_admin()?;
        Ok(MaintenanceView::from(&self.deps.hub.maintenance()))
    }

    /// Switches maintenance mode on every node. `message` (at most
    /// [`MAINTENANCE_MESSAGE_MAX_CHARS`], trimmed; empty means none) is shown
    /// in every refusal. Switching on while on replaces the message and keeps
    /// the original start.
    pub async fn set_maintenance(&self, caller: &Caller, enabled: bool, message: Option<String>) -> Result<MaintenanceView, ChatError> {
        caller.require_admin()?;
        let message = valid_message(message)?;
        let hub = &self.deps.hub;
        let mode = match (enabled, hub.maintenance()) {
            (false, _) => MaintenanceMode::Off,
            (true, MaintenanceMode::On { since_ms, .. }) => MaintenanceMode::On { message, since_ms },
            (true, MaintenanceMode::Off) => MaintenanceMode::On { message, since_ms: self.deps.now_ms() },
        };
        tracing::info!(admin = %caller.user_id, enabled, "maintenance mode set by an administrator");
        hub.set_maintenance(mode.clone()).await.map_err(|e| {
            tracing::warn!(error = %e, "maintenance mode did not reach every node");
            ChatError::Unavailable(format!("maintenance mode changed on this node, but other nodes could not be told: {e}"))
        })?;
        Ok(MaintenanceView::from(&mode))
    }
}

/// A cursor as clients see it: `<since_ms>_<connection id>`.
fn format_cursor(c: &ConnectionCursor) -> String {
    format!("{}_{}", c.since_ms, c.conn)
}

fn parse_cursor(s: &str) -> Result<ConnectionCursor, ChatError> {
    let bad = || ChatError::invalid("after", "must be a `next_after` value of a previous page");
    let (since, conn) = s.split_once('_').ok_or_else(bad)?;
    Ok(ConnectionCursor { since_ms: since.parse().map_err(|_| bad())?, conn: ConnId::parse(conn).ok_or_else(bad)? })
}

/// The notice ends up in every refusal's message: one clean line.
fn valid_message(message: Option<String>) -> Result<Option<String>, ChatError> {
    let Some(m) = message else { return Ok(None) };
    text::optional_line("message", &m, MAINTENANCE_MESSAGE_MAX_CHARS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_bad_ones_are_refused() {
        let c = ConnectionCursor { since_ms: 1_733_000_000_123, conn: ConnId::random() };
        assert_eq!(parse_cursor(&format_cursor(&c)), Ok(c));
        for bad in ["", "12", "x_00000000-0000-0000-0000-000000000000", "12_nope", "_"] {
            assert!(matches!(parse_cursor(bad), Err(ChatError::Invalid(m)) if m.starts_with("after")), "{bad}");
        }
    }

    #[test]
    fn maintenance_message_bounds() {
        assert_eq!(valid_message(None), Ok(None));
        assert_eq!(valid_message(Some("   ".into())), Ok(None));
        assert_eq!(valid_message(Some(" back soon ".into())), Ok(Some("back soon".into())));
        assert_eq!(valid_message(Some("é".repeat(500))), Ok(Some("é".repeat(500))));
        assert!(matches!(valid_message(Some("é".repeat(501))), Err(ChatError::Invalid(m)) if m.starts_with("message")));
        assert!(matches!(valid_message(Some("a\nb".into())), Err(ChatError::Invalid(_))));
    }
}
