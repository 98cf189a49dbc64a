//! Keeps one MCP server connected: connect, watch the session (its end, a
//! failed ping, a call that found it broken, a changed tool list), and
//! reconnect after a growing, jittered delay.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use rmcp::ServiceError;
use rmcp::model::{ClientRequest, PingRequest};
use tokio::sync::Notify;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::{LiveSession, McpServer};
use super::client::McpClient;
use super::connect::{LastStderr, Opened, open};
use crate::metrics::ToolMetrics;

/// Timing of the supervision, from `ToolsConfig`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Supervision {
    pub(crate) connect_timeout: Duration,
    pub(crate) ping_interval: Duration,
    pub(crate) reconnect_min: Duration,
    pub(crate) reconnect_max: Duration,
}

/// How long a closing session may take to end its child or HTTP session.
const CLOSE_GRACE: Duration = Duration::from_secs(5);

pub(crate) async fn supervise(
    server: Arc<McpServer>,
    timing: Supervision,
    metrics: ToolMetrics,
    shutdown: CancellationToken,
) {
    let mut delay = timing.reconnect_min;
    while !shutdown.is_cancelled() {
        server.set_connecting();
        let tools_changed = Arc::new(Notify::new());
        let client = McpClient { progress: server.progress.clone(), tools_changed: tools_changed.clone() };
        let stderr = LastStderr::default();
        let attempt = tokio::select! {
            r = tokio::time::timeout(timing.connect_timeout, open(&server, client, &stderr)) => r,
            _ = shutdown.cancelled() => break,
        };
        match attempt {
            Ok(Ok(opened)) => {
                metrics.record_connect(server.name(), true);
                metrics.mcp_connected.inc();
                tracing::info!(server = %server.name(), tools = opened.tools.len(), "MCP server connected");
                let started = Instant::now();
                let why = run(&server, opened, &tools_changed, timing, &shutdown).await;
                metrics.mcp_connected.dec();
                if shutdown.is_cancelled() {
                    break;
                }
                tracing::warn!(server = %server.name(), reason = %why, "MCP server disconnected; reconnecting");
                server.set_disconnected(why, false);
                // A session that lived a while starts the backoff over.
                if started.elapsed() >= timing.reconnect_max {
                    delay = timing.reconnect_min;
                }
            }
            Ok(Err(error)) => {
                metrics.record_connect(server.name(), false);
                tracing::warn!(server = %server.name(), %error, "MCP server connection failed");
                server.set_disconnected(error, true);
            }
            Err(_) => {
                metrics.record_connect(server.name(), false);
                let error = format!("no connection within {:?}", timing.connect_timeout);
                tracing::warn!(server = %server.name(), %error, "MCP server connection failed");
                server.set_disconnected(error, true);
            }
        }
        let wait = delay.mul_f64(rand::rng().random_range(0.8..1.2));
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
        delay = (delay * 2).min(timing.reconnect_max);
    }
    server.set_stopped();
}

/// Serves one session until it ends; says why.
async fn run(
    server: &McpServer,
    opened: Opened,
    tools_changed: &Notify,
    timing: Supervision,
    shutdown: &CancellationToken,
) -> String {
    let Opened { session, tools, process_id } = opened;
    let peer = session.peer().clone();
    let stop = session.cancellation_token();
    let broken = Arc::new(Notify::new());
    server.set_connected(LiveSession { peer: peer.clone(), broken: broken.clone() }, tools, process_id);
    let ended = session.waiting();
    tokio::pin!(ended);
    let mut ping = tokio::time::interval_at(Instant::now() + timing.ping_interval, timing.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let why = loop {
        tokio::select! {
            quit = &mut ended => return format!("the session ended ({quit:?})"),
            _ = shutdown.cancelled() => break "shutting down".to_owned(),
            _ = broken.notified() => break "a call found the connection broken".to_owned(),
            _ = tools_changed.notified() => {
                match tokio::time::timeout(timing.connect_timeout, peer.list_all_tools()).await {
                    Ok(Ok(listed)) => server.set_tools(server.select_tools(listed)),
                    Ok(Err(e)) => tracing::warn!(server = %server.name(), error = %e, "refreshing MCP tools failed"),
                    Err(_) => tracing::warn!(server = %server.name(), "refreshing MCP tools timed out"),
                }
            }
            _ = ping.tick() => {
                let request = ClientRequest::PingRequest(PingRequest::default());
                match tokio::time::timeout(timing.connect_timeout, peer.send_request(request)).await {
                    // An error answer still proves the server is there.
                    Ok(Ok(_)) | Ok(Err(ServiceError::McpError(_))) => {}
                    Ok(Err(e)) => break format!("ping failed: {e}"),
                    Err(_) => break format!("no answer to a ping within {:?}", timing.connect_timeout),
                }
            }
        }
    };
    // Calls see "not connected" from here on, while the session closes.
    server.set_disconnected(why.clone(), false);
    stop.cancel();
    let _ = tokio::time::timeout(CLOSE_GRACE, ended).await;
    why
}
