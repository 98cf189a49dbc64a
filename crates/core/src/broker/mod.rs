//! The seam between one node's hub and everything shared between nodes:
//! fan-out and history ([`Broker`]), presence ([`PresenceStore`]) and the
//! per-user connection count ([`ConnectionRegistry`]).
//!
//! The in-memory implementation serves a single process (and tests with
//! several hubs in one process); the Redis engine (`chorus-redis`) serves
//! several processes. The hub only ever sees these traits.

mod history;
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_protocol::{ChannelName, CloseCode};

use crate::ids::{ConnId, NodeId, Transport, UserId};
use crate::maintenance::MaintenanceMode;
use crate::publication::{Draft, Position, Publication};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The requested position cannot be served: wrong epoch, or events were trimmed.
    #[error("stream position cannot be recovered")]
    Unrecoverable { current: Position },
    #[error("broker unavailable: {0}")]
    Unavailable(String),
}

/// How much of a channel's stream to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_events: usize,
    pub ttl: Duration,
}

/// What to read from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryQuery {
    /// Only the current position.
    Position,
    /// Events after this position, oldest first, at most `limit`.
    Since { position: Position, limit: usize },
    /// The latest `limit` events, oldest first.
    Latest { limit: usize },
}

/// A slice of a stream and the stream's position when it was read.
#[derive(Debug, Clone)]
pub struct HistoryPage {
    pub current: Position,
    pub publications: Vec<Arc<Publication>>,
}

/// Messages between nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Close one connection.
    Disconnect { user: UserId, conn: ConnId, code: CloseCode },
    /// Close every connection of a user.
    DisconnectUser { user: UserId, code: CloseCode },
    /// Close every connection opened with a token of this login session.
    RevokeSession { session_id: String },
    /// Remove a user's subscriptions to a channel (membership revoked).
    Unsubscribe { user: UserId, channel: ChannelName, reason: String },
    /// Maintenance mode changed; every node refuses (or accepts again) content creation.
    Maintenance(MaintenanceMode),
    /// A user's presence entries in a channel expired without a leave (their
    /// node died; an engine shared between nodes keeps entries alive with TTLs). The node it
    /// is sent to announces `presence_left` if the user is gone indeed; an
    /// engine sends it to one live node.
    PresenceExpired { channel: ChannelName, user: UserId },
    /// Cancel an agent run; sent to the node that owns it (the only one that
    /// produces its events), which cancels it as if asked locally.
    CancelRun { run_id: String },
}

/// Where a node receives what the broker delivers. Implementations must not
/// block: they are called from the broker's delivery path.
pub trait NodeSink: Send + Sync + 'static {
    /// A publication on a channel this node listens to, in stream order.
    fn publication(&self, publication: Arc<Publication>);
    fn control(&self, control: Control);
}

/// Component health as reported to `/health/detailed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Up { detail: String },
    Degraded { detail: String },
    Down { detail: String },
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Appends to the channel's stream and delivers to every node listening to it.
    async fn publish(&self, channel: &ChannelName, draft: Draft, retention: Retention) -> Result<Arc<Publication>, BrokerError>;
    async fn history(&self, channel: &ChannelName, query: HistoryQuery, retention: Retention) -> Result<HistoryPage, BrokerError>;
    /// Registers where this node receives deliveries.
    async fn attach(&self, node: &NodeId, sink: Arc<dyn NodeSink>) -> Result<(), BrokerError>;
    async fn detach(&self, node: &NodeId);
    /// This node has local subscribers on `channel`. In effect when it
    /// returns: every publication after that reaches the node's sink (the
    /// hub reads history only afterwards, so nothing falls between the two).
    async fn listen(&self, node: &NodeId, channel: &ChannelName) -> Result<(), BrokerError>;
    /// This node has no local subscribers on `channel` any more.
    async fn unlisten(&self, node: &NodeId, channel: &ChannelName) -> Result<(), BrokerError>;
    /// Sends a control message to one node, or to all when `target` is `None`.
    async fn control(&self, target: Option<&NodeId>, control: Control) -> Result<(), BrokerError>;
    /// The nodes alive now: for an engine shared between processes, those
    /// whose heartbeat has not expired; for the in-memory one, the attached
    /// nodes. `Unavailable` when the engine cannot tell (degraded): callers
    /// must then judge no node dead.
    async fn live_nodes(&self) -> Result<Vec<NodeId>, BrokerError>;
    /// Drops idle streams and other expired state; called by the hub's cleanup task.
    async fn sweep(&self);
    fn health(&self) -> Health;
    /// Streams held, for metrics.
    fn streams(&self) -> usize;
}

/// A connection as the presence store sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceEntry {
    pub conn: ConnId,
    pub user: UserId,
    pub node: NodeId,
}

/// A user present in a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentUser {
    pub user: UserId,
    pub connections: u32,
}

#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Adds a connection; true if it is the user's first in the channel.
    async fn join(&self, channel: &ChannelName, entry: PresenceEntry) -> Result<bool, BrokerError>;
    /// Removes a connection; true if it was the user's last in the channel.
    async fn leave(&self, channel: &ChannelName, conn: ConnId, user: &UserId) -> Result<bool, BrokerError>;
    async fn list(&self, channel: &ChannelName) -> Result<Vec<PresentUser>, BrokerError>;
    /// Whether the user has any connection in the channel now.
    async fn is_present(&self, channel: &ChannelName, user: &UserId) -> Result<bool, BrokerError>;
    /// Channels with presence entries, for metrics.
    fn channels(&self) -> usize;
}

/// A connection as the registry sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredConnection {
    pub conn: ConnId,
    pub user: UserId,
    pub node: NodeId,
    /// Unix milliseconds.
    pub since_ms: i64,
    pub transport: Transport,
}

impl RegisteredConnection {
    /// Where this entry sits in the cluster's connection list.
    pub fn cursor(&self) -> ConnectionCursor {
        ConnectionCursor { since_ms: self.since_ms, conn: self.conn }
    }
}

/// A place in the cluster's connection list, which is ordered by opening
/// time (`since_ms`), then connection id; a page starts after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConnectionCursor {
    pub since_ms: i64,
    pub conn: ConnId,
}

/// A page of every node's connections, in the list's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionPage {
    /// Connections in all, on every node (the page may hold fewer).
    pub total: u64,
    pub connections: Vec<RegisteredConnection>,
    /// Set when more follow: the next page starts after it.
    pub next: Option<ConnectionCursor>,
}

impl ConnectionPage {
    /// The page of `entries` (any order) after `after`, at most `limit`
    /// (at least 1) long; only the page is sorted.
    pub fn of(entries: Vec<RegisteredConnection>, after: Option<&ConnectionCursor>, limit: usize) -> Self {
        let total = u64::try_from(entries.len()).unwrap_or(u64::MAX);
        let limit = limit.max(1);
        let mut rest: Vec<RegisteredConnection> = entries.into_iter().filter(|e| after.is_none_or(|a| e.cursor() > *a)).collect();
        let more = rest.len() > limit;
        if more {
            rest.select_nth_unstable_by_key(limit, RegisteredConnection::cursor);
            rest.truncate(limit);
        }
        rest.sort_unstable_by_key(RegisteredConnection::cursor);
        let next = if more { rest.last().map(RegisteredConnection::cursor) } else { None };
        Self { total, connections: rest, next }
    }
}

#[async_trait]
pub trait ConnectionRegistry: Send + Sync + 'static {
    /// Adds a connection and returns the ones that must now close because the
    /// user has more than `limit`, oldest first. "Oldest" is the order of
    /// registration as the registry saw it, never the nodes' clocks.
    async fn register(&self, entry: RegisteredConnection, limit: usize) -> Result<Vec<RegisteredConnection>, BrokerError>;
    async fn unregister(&self, user: &UserId, conn: ConnId) -> Result<(), BrokerError>;
    async fn connections(&self, user: &UserId) -> Result<Vec<RegisteredConnection>, BrokerError>;
    /// Every node's connections, `limit` (at least 1) at a time after
    /// `after`, in the list's order (see [`ConnectionCursor`]). A registry
    /// that cannot see other nodes answers `Unavailable` (the default).
    async fn page(&self, after: Option<&ConnectionCursor>, limit: usize) -> Result<ConnectionPage, BrokerError> {
        let _ = (after, limit);
        Err(BrokerError::Unavailable("this connection registry cannot list every node's connections".into()))
    }
    /// Users with registered connections, for metrics.
    fn users(&self) -> usize;
}

/// The three shared engines a hub needs, chosen by the composition root.
#[derive(Clone)]
pub struct Backplane {
    pub broker: Arc<dyn Broker>,
    pub presence: Arc<dyn PresenceStore>,
    pub registry: Arc<dyn ConnectionRegistry>,
}

impl Backplane {
    /// All three engines from one in-memory broker.
    pub fn memory(broker: Arc<memory::MemoryBroker>) -> Self {
        Self { broker: broker.clone(), presence: broker.clone(), registry: broker }
    }
}
