//! Connections: opening one (admission, the cluster-wide per-user limit),
//! the [`Lease`] that releases it, releasing everything it holds, and the
//! table of this node's connections.

use std::future::Future;
use std::sync::Arc;

use chorus_protocol::CloseCode;
use tracing::Instrument;

use super::{Hub, shard_index};
use crate::broker::{BrokerError, ConnectionCursor, ConnectionPage, Control, RegisteredConnection};
use crate::connection::{Connection, ConnectionInfo};
use crate::identity::Identity;
use crate::ids::{ConnId, Transport, UserId};
use crate::outbound::{Outbound, QueueLimits};
use crate::supervise::catch_panic;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error("this node is at its connection limit")]
    NodeFull,
    #[error("the server is shutting down")]
    ShuttingDown,
}

impl Hub {
    pub fn queue_limits(&self) -> QueueLimits {
        self.0.queue_bounds.get()
    }

    /// A new outbound queue, bounded by the current (reloadable) limits.
    pub fn new_outbound(&self) -> Arc<Outbound> {
        Arc::new(Outbound::new(self.0.queue_bounds.clone()))
    }

    /// Registers an authenticated connection. Past the per-user limit the
    /// user's oldest connection (on whatever node) is closed with 4004.
    /// The lease exists before the first `.await`, so a caller dropped
    /// midway (a client gone during an SSE handshake) still releases it.
    pub async fn open(&self, identity: Identity, transport: Transport, request_id: Arc<str>, outbound: Arc<Outbound>) -> Result<Lease, OpenError> {
        if self.is_shutting_down() {
            return Err(OpenError::ShuttingDown);
        }
        let admission = &self.0.admission;
        let per_user = admission.per_user();
        if !admission.take_slot() {
            return Err(OpenError::NodeFull);
        }
        let conn = Arc::new(Connection::new(identity, transport, request_id, outbound, self.now_ms()));
        self.0.conns[shard_index(conn.user.as_str())].lock().entry(conn.user.clone()).or_default().push(conn.clone());
        self.0.metrics.connections.get(transport).inc();
        self.0.metrics.connections_opened.get(transport).inc();
        let lease = Lease::new(self.clone(), conn.clone());

        let entry = RegisteredConnection { conn: conn.id, user: conn.user.clone(), node: self.0.node.clone(), since_ms: conn.opened_at_ms, transport };
        match self.0.backplane.registry.register(entry, per_user).await {
            Ok(evicted) => {
                for e in evicted {
                    if e.node == self.0.node {
                        self.close_local(&e.user, e.conn, CloseCode::ConnectionLimit);
                    } else {
                        let msg = Control::Disconnect { user: e.user.clone(), conn: e.conn, code: CloseCode::ConnectionLimit };
                        if let Err(err) = self.0.backplane.broker.control(Some(&e.node), msg).await {
                            self.0.metrics.broker_errors.inc();
                            tracing::warn!(error = %err, node = %e.node, "could not reach the node holding an evicted connection");
                        }
                    }
                }
            }
            Err(err) => {
                // Degraded: the per-user limit holds on this node only until the registry is back.
                self.0.metrics.broker_errors.inc();
                tracing::warn!(error = %err, "connection registry unavailable; per-user limit not enforced cluster-wide");
            }
        }
        Ok(lease)
    }

    /// Releases everything a connection holds: subscriptions, presence,
    /// typing, registry entry, counters. Idempotent; runs for every end.
    pub async fn release(&self, conn: &Arc<Connection>) {
        let (subs, typing, identity) = {
            let mut st = conn.state.lock();
            if st.released {
                return;
            }
            st.released = true;
            (std::mem::take(&mut st.subscriptions), std::mem::take(&mut st.typing), st.identity.clone())
        };
        conn.outbound.close(CloseCode::Normal);
        let last = {
            let mut shard = self.0.conns[shard_index(conn.user.as_str())].lock();
            match shard.get_mut(&conn.user) {
                Some(list) => {
                    list.retain(|c| c.id != conn.id);
                    let last = list.is_empty();
                    if last {
                        shard.remove(&conn.user);
                    }
                    last
                }
                None => true,
            }
        };
        self.0.admission.free_slot();
        // Typing stops before the user leaves.
        for channel in typing {
            self.stop_typing(&channel, &identity.user_id).await;
        }
        for (_, sub) in subs {
            self.detach(conn, &sub).await;
        }
        if let Err(e) = self.0.backplane.registry.unregister(&conn.user, conn.id).await {
            self.0.metrics.broker_errors.inc();
            tracing::warn!(error = %e, "could not unregister connection");
        }
        if last {
            self.forget_refilled_limits(&conn.user);
        }
        let m = &self.0.metrics;
        m.connections.get(conn.transport).dec();
        m.connection_duration.get(conn.transport).observe(conn.age().as_secs_f64());
        let code = conn.close_reason().unwrap_or(CloseCode::Normal);
        if code == CloseCode::SlowConsumer {
            // Said here because the client may never see the close code: it
            // stopped reading, so its socket is closed under it.
            let limits = self.queue_limits();
            tracing::info!(max_items = limits.max_items, max_bytes = limits.max_bytes, "slow consumer disconnected: its outbound queue overflowed");
        }
        m.disconnect(code);
    }

    /// Wraps a connection's future (already running in its own task, e.g.
    /// axum's upgrade task): tracked for shutdown, panics caught.
    pub fn supervise_connection<F>(&self, task: &'static str, fut: F) -> impl Future<Output = ()> + Send + 'static + use<F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let metrics = self.0.metrics.clone();
        self.0.connections.track_future(async move {
            catch_panic(&metrics, task, fut).await;
        })
    }

    /// Spawns a connection's task in its span: tracked for shutdown, panics
    /// caught (and logged in the span).
    pub fn spawn_connection<F>(&self, task: &'static str, span: tracing::Span, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let metrics = self.0.metrics.clone();
        self.0.connections.spawn(
            async move {
                catch_panic(&metrics, task, fut).await;
            }
            .instrument(span),
        );
    }

    /// Sum and maximum of the outbound queue lengths.
    pub fn queue_depths(&self) -> (usize, usize) {
        let mut sum = 0;
        let mut max = 0;
        for shard in self.0.conns.iter() {
            for list in shard.lock().values() {
                for c in list {
                    let n = c.outbound.len();
                    sum += n;
                    max = max.max(n);
                }
            }
        }
        (sum, max)
    }

    pub fn connection(&self, user: &UserId, id: ConnId) -> Option<Arc<Connection>> {
        self.0.conns[shard_index(user.as_str())].lock().get(user)?.iter().find(|c| c.id == id).cloned()
    }

    pub fn user_connections(&self, user: &UserId) -> Vec<Arc<Connection>> {
        self.0.conns[shard_index(user.as_str())].lock().get(user).cloned().unwrap_or_default()
    }

    pub(super) fn all_connections(&self) -> Vec<Arc<Connection>> {
        let mut out = Vec::with_capacity(self.connection_count());
        for shard in self.0.conns.iter() {
            for list in shard.lock().values() {
                out.extend(list.iter().cloned());
            }
        }
        out
    }

    pub fn connection_infos(&self) -> Vec<ConnectionInfo> {
        let mut v: Vec<ConnectionInfo> = self.all_connections().iter().map(|c| c.info()).collect();
        v.sort_by_key(|c| c.opened_at_ms);
        v
    }

    /// A page of every node's connections, as the connection registry knows
    /// them (ordered by opening time, then id).
    pub async fn cluster_connection_page(&self, after: Option<&ConnectionCursor>, limit: usize) -> Result<ConnectionPage, BrokerError> {
        self.0.backplane.registry.page(after, limit).await
    }

    /// The same page over this node's connections only (for when the
    /// registry cannot answer).
    pub fn local_connection_page(&self, after: Option<&ConnectionCursor>, limit: usize) -> ConnectionPage {
        let entries = self
            .all_connections()
            .iter()
            .map(|c| RegisteredConnection { conn: c.id, user: c.user.clone(), node: self.0.node.clone(), since_ms: c.opened_at_ms, transport: c.transport })
            .collect();
        ConnectionPage::of(entries, after, limit)
    }

    pub(super) fn close_local(&self, user: &UserId, id: ConnId, code: CloseCode) -> bool {
        match self.connection(user, id) {
            Some(c) => c.close(code),
            None => false,
        }
    }
}

/// Holds a connection open in the hub; releasing it (explicitly with
/// [`Lease::end`], or by dropping it, e.g. when a task unwinds) frees
/// everything the connection holds.
pub struct Lease {
    hub: Hub,
    conn: Option<Arc<Connection>>,
}

impl Lease {
    pub fn new(hub: Hub, conn: Arc<Connection>) -> Self {
        Self { hub, conn: Some(conn) }
    }

    pub fn connection(&self) -> Option<&Arc<Connection>> {
        self.conn.as_ref()
    }

    pub async fn end(mut self) {
        if let Some(conn) = self.conn.take() {
            self.hub.release(&conn).await;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let hub = self.hub.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                let span = tracing::info_span!(parent: None, "release", request_id = %conn.request_id);
                handle.spawn(async move { hub.release(&conn).await }.instrument(span));
            }
        }
    }
}
