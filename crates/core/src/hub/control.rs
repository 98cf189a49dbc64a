//! Control messages between nodes: what this node asks of every node
//! (disconnects, revocations) and what it does when asked.

use std::sync::Arc;

use chorus_protocol::{ChannelName, CloseCode};

use super::Hub;
use crate::broker::{BrokerError, Control};
use crate::connection::Connection;
use crate::ids::{NodeId, UserId};
use crate::outbound::Outgoing;

/// What a node does with the run controls other nodes send it: the agent
/// runtime, which owns the runs (the hub knows nothing of them).
pub trait RunControls: Send + Sync + 'static {
    /// Cancels a run this node owns (idempotent; unknown runs are ignored).
    fn cancel_run(&self, run_id: String);
}

impl Hub {
    /// Closes every connection of `user` on every node.
    pub async fn disconnect_user(&self, user: &UserId, code: CloseCode) -> Result<(), BrokerError> {
        self.0.backplane.broker.control(None, Control::DisconnectUser { user: user.clone(), code }).await
    }

    /// Closes, on every node, the connections opened with tokens of this login session.
    pub async fn revoke_session(&self, session_id: &str) -> Result<(), BrokerError> {
        self.0.backplane.broker.control(None, Control::RevokeSession { session_id: session_id.to_owned() }).await
    }

    /// Removes `user`'s subscriptions to `channel` on every node (membership revoked).
    pub async fn revoke_subscription(&self, user: &UserId, channel: &ChannelName, reason: &str) -> Result<(), BrokerError> {
        let msg = Control::Unsubscribe { user: user.clone(), channel: channel.clone(), reason: reason.to_owned() };
        self.0.backplane.broker.control(None, msg).await
    }

    /// Routes the run controls this node receives to `controls` (the agent
    /// runtime, once it has started). Held weakly: a runtime that is gone
    /// simply receives nothing.
    pub fn route_run_controls(&self, controls: std::sync::Weak<dyn RunControls>) {
        *self.0.run_controls.write() = Some(controls);
    }

    /// Asks `node`, the owner of a run, to cancel it.
    pub async fn cancel_run_on(&self, node: &NodeId, run_id: &str) -> Result<(), BrokerError> {
        let control = Control::CancelRun { run_id: run_id.to_owned() };
        if node == self.node() {
            self.on_control(control);
            return Ok(());
        }
        self.0.backplane.broker.control(Some(node), control).await
    }

    /// The nodes alive now (see [`crate::broker::Broker::live_nodes`]).
    pub async fn live_nodes(&self) -> Result<Vec<NodeId>, BrokerError> {
        self.0.backplane.broker.live_nodes().await
    }

    pub(super) fn on_control(&self, control: Control) {
        match control {
            Control::CancelRun { run_id } => {
                let controls = self.0.run_controls.read().as_ref().and_then(std::sync::Weak::upgrade);
                match controls {
                    Some(controls) => controls.cancel_run(run_id),
                    None => tracing::warn!(%run_id, "a cancel for a run reached a node without an agent runtime"),
                }
            }
            Control::Disconnect { user, conn, code } => {
                self.close_local(&user, conn, code);
            }
            Control::DisconnectUser { user, code } => {
                for c in self.user_connections(&user) {
                    c.close(code);
                }
            }
            Control::RevokeSession { session_id } => {
                for c in self.all_connections() {
                    if c.session_id().as_deref() == Some(session_id.as_str()) {
                        c.close(CloseCode::Revoked);
                    }
                }
            }
            Control::Maintenance(mode) => self.apply_maintenance(mode),
            Control::PresenceExpired { channel, user } => {
                let hub = self.clone();
                self.spawn_task("presence_expired", async move {
                    match hub.0.backplane.presence.is_present(&channel, &user).await {
                        Ok(false) => hub.settle_presence(&channel, &user, false).await,
                        Ok(true) => {}
                        Err(e) => {
                            hub.0.metrics.broker_errors.inc();
                            tracing::warn!(error = %e, %channel, "presence check failed");
                        }
                    }
                });
            }
            Control::Unsubscribe { user, channel, reason } => {
                let targets: Vec<_> = self.user_connections(&user).into_iter().filter(|c| c.subscription(channel.as_str()).is_some()).collect();
                if targets.is_empty() {
                    return;
                }
                let hub = self.clone();
                self.spawn_task("unsubscribe", async move {
                    for conn in targets {
                        hub.server_unsubscribe(&conn, &channel, &reason).await;
                    }
                });
            }
        }
    }

    /// Ends a subscription from the server's side and tells the client why.
    pub(crate) async fn server_unsubscribe(&self, conn: &Arc<Connection>, channel: &ChannelName, reason: &str) {
        if self.unsubscribe(conn, channel).await {
            // A full queue here means a slow consumer; it is closing anyway.
            let _ = conn.outbound.try_push(Outgoing::unsubscribed(channel.clone(), reason.to_owned(), self.now_ms()));
        }
    }
}
