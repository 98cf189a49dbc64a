//! Shutdown: stop accepting, ask every connection to reconnect, then wait
//! for connection and background tasks to end.

use chorus_protocol::CloseCode;

use super::Hub;
impl Hub {
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutdown.is_cancelled()
    }

    /// Resolves when the hub starts shutting down (for tasks outside the
    /// connection table, e.g. the admin firehose).
    pub async fn stopping(&self) {
        self.0.shutdown.cancelled().await;
    }

    /// Stops accepting, asks every connection to reconnect (1012), and stops
    /// background tasks. Await [`Hub::drained`] afterwards.
    pub fn shutdown(&self) {
        self.0.shutdown.cancel();
        for c in self.all_connections() {
            c.close(CloseCode::ServiceRestart);
        }
    }

    /// Waits until every connection task and background task has ended.
    pub async fn drained(&self) {
        self.0.connections.close();
        self.0.background.close();
        self.0.connections.wait().await;
        self.0.background.wait().await;
        self.0.backplane.broker.detach(&self.0.node).await;
    }

    /// Tasks still running (connections plus background), for metrics and tests.
    pub fn task_count(&self) -> usize {
        self.0.connections.len() + self.0.background.len()
    }
}
