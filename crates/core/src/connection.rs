//! A connection as the core sees it: who, over what, its subscriptions and
//! its outbound queue. Transports hold an `Arc<Connection>`; the hub indexes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chorus_protocol::{ChannelName, CloseCode};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::identity::Identity;
use crate::ids::{ConnId, Transport, UserId};
use crate::outbound::Outbound;
use crate::subscription::Subscription;

pub(crate) struct ConnState {
    pub identity: Identity,
    pub subscriptions: HashMap<ChannelName, Arc<Subscription>>,
    /// Channels where this connection has a typing indicator running.
    pub typing: Vec<ChannelName>,
    pub released: bool,
}

pub struct Connection {
    pub id: ConnId,
    pub user: UserId,
    pub transport: Transport,
    /// The id of the request that opened the connection; logs and errors carry it.
    pub request_id: Arc<str>,
    /// Unix milliseconds.
    pub opened_at_ms: i64,
    opened: Instant,
    pub outbound: Arc<Outbound>,
    pub(crate) state: Mutex<ConnState>,
    /// The token's `exp` in Unix ms, or 0 for none (what clients are told).
    expires_at_ms: AtomicI64,
    /// When the hub's sweeper closes the connection: `exp` plus the
    /// verifier's leeway, or 0 for never.
    deadline_ms: AtomicI64,
}

/// What an admin or test sees of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    pub id: ConnId,
    pub user: UserId,
    pub transport: Transport,
    pub opened_at_ms: i64,
    pub subscriptions: Vec<ChannelName>,
}

impl Connection {
    pub(crate) fn new(identity: Identity, transport: Transport, request_id: Arc<str>, outbound: Arc<Outbound>, now_ms: i64) -> Self {
        let (expires, deadline) = expiry(&identity);
        Self {
            id: ConnId::random(),
            user: identity.user_id.clone(),
            transport,
            request_id,
            opened_at_ms: now_ms,
            opened: Instant::now(),
            outbound,
            state: Mutex::new(ConnState { identity, subscriptions: HashMap::new(), typing: Vec::new(), released: false }),
            expires_at_ms: AtomicI64::new(expires),
            deadline_ms: AtomicI64::new(deadline),
        }
    }

    pub fn identity(&self) -> Identity {
        self.state.lock().identity.clone()
    }

    pub(crate) fn set_identity(&self, identity: Identity) {
        let (expires, deadline) = expiry(&identity);
        self.expires_at_ms.store(expires, Ordering::Release);
        self.deadline_ms.store(deadline, Ordering::Release);
        self.state.lock().identity = identity;
    }

    pub fn session_id(&self) -> Option<String> {
        self.state.lock().identity.session_id.clone()
    }

    pub fn expires_at_ms(&self) -> Option<i64> {
        match self.expires_at_ms.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    /// When the token stops being accepted and the connection must close.
    pub(crate) fn deadline_ms(&self) -> Option<i64> {
        match self.deadline_ms.load(Ordering::Acquire) {
            0 => None,
            t => Some(t),
        }
    }

    pub fn subscription(&self, channel: &str) -> Option<Arc<Subscription>> {
        self.state.lock().subscriptions.get(channel).cloned()
    }

    /// The channels subscribed to now.
    pub fn channels(&self) -> Vec<ChannelName> {
        self.state.lock().subscriptions.keys().cloned().collect()
    }

    pub fn subscription_count(&self) -> usize {
        self.state.lock().subscriptions.len()
    }

    pub fn info(&self) -> ConnectionInfo {
        let state = self.state.lock();
        let mut subscriptions: Vec<ChannelName> = state.subscriptions.keys().cloned().collect();
        subscriptions.sort();
        ConnectionInfo { id: self.id, user: self.user.clone(), transport: self.transport, opened_at_ms: self.opened_at_ms, subscriptions }
    }

    /// Asks the transport to close with `code`. The first reason wins.
    pub fn close(&self, code: CloseCode) -> bool {
        self.outbound.close(code)
    }

    pub fn close_reason(&self) -> Option<CloseCode> {
        self.outbound.closed()
    }

    pub fn age(&self) -> std::time::Duration {
        self.opened.elapsed()
    }
}

/// The `exp` shown to clients and the closing deadline, 0 meaning none.
fn expiry(identity: &Identity) -> (i64, i64) {
    match identity.expires_at_ms {
        Some(exp) => (exp, exp.saturating_add(identity.leeway_ms.max(0)).max(1)),
        None => (0, 0),
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection").field("id", &self.id).field("user", &self.user).field("transport", &self.transport).finish()
    }
}
