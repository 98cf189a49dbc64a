//! Chorus's side of an MCP session: it routes progress notifications to the
//! call waiting on them and tells the supervisor when the tool list changed.
//! It declares no client capabilities (no sampling, roots or elicitation).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use rmcp::ClientHandler;
use rmcp::model::{ClientCapabilities, ClientConfig, Implementation, ProgressNotificationParam, ProgressToken};
use rmcp::service::{NotificationContext, RoleClient};
use tokio::sync::{Notify, mpsc};

/// Calls waiting for progress, by progress token. An entry lives exactly as
/// long as its call (removed by the guard's drop), so the map is bounded by
/// the calls in flight.
#[derive(Debug, Default, Clone)]
pub(crate) struct ProgressRoutes(Arc<Mutex<HashMap<ProgressToken, mpsc::Sender<()>>>>);

pub(crate) struct ProgressWatch {
    routes: ProgressRoutes,
    token: ProgressToken,
    pub(crate) rx: mpsc::Receiver<()>,
}

impl ProgressRoutes {
    pub(crate) fn watch(&self, token: ProgressToken) -> ProgressWatch {
        // One pending signal is enough: it only says "progress happened".
        let (tx, rx) = mpsc::channel(1);
        self.0.lock().insert(token.clone(), tx);
        ProgressWatch { routes: self.clone(), token, rx }
    }

    fn signal(&self, token: &ProgressToken) {
        if let Some(tx) = self.0.lock().get(token) {
            let _ = tx.try_send(());
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.lock().len()
    }
}

impl Drop for ProgressWatch {
    fn drop(&mut self) {
        self.routes.0.lock().remove(&self.token);
    }
}

pub(crate) struct McpClient {
    pub(crate) progress: ProgressRoutes,
    pub(crate) tools_changed: Arc<Notify>,
}

impl ClientHandler for McpClient {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("chorus", env!("CARGO_PKG_VERSION")))
    }

    async fn on_progress(&self, params: ProgressNotificationParam, _context: NotificationContext<RoleClient>) {
        self.progress.signal(&params.progress_token);
    }

    async fn on_tool_list_changed(&self, _context: NotificationContext<RoleClient>) {
        self.tools_changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::NumberOrString;

    #[tokio::test]
    async fn a_route_lives_as_long_as_its_watch() {
        let routes = ProgressRoutes::default();
        let token = ProgressToken(NumberOrString::Number(7));
        let mut watch = routes.watch(token.clone());
        assert_eq!(routes.len(), 1);
        // Signals coalesce: two before a read are one wake-up.
        routes.signal(&token);
        routes.signal(&token);
        routes.signal(&ProgressToken(NumberOrString::Number(8)));
        assert_eq!(watch.rx.recv().await, Some(()));
        assert!(watch.rx.try_recv().is_err());
        drop(watch);
        assert_eq!(routes.len(), 0);
        routes.signal(&token);
    }
}
