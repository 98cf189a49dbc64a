//! One MCP tool as a `Tool`: a `tools/call` with an idle timeout that each
//! progress notification resets, a total cap, and `notifications/cancelled`
//! whenever Chorus stops waiting (timeout or cancel).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rmcp::ServiceError;
use rmcp::model::{CallToolRequest, CallToolRequestParams, ClientRequest, ServerResult};
use rmcp::service::{PeerRequestOptions, RequestHandle, RoleClient};
use serde_json::{Map, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::content::to_tool_result;
use super::{McpServer, RemoteTool};
use crate::tool::{Outcome, Tool, ToolResult, ToolSchema};

/// How long the cancel notification of an abandoned call may take to leave.
const CANCEL_SEND_LIMIT: Duration = Duration::from_secs(5);

pub(crate) struct McpTool {
    pub(crate) server: Arc<McpServer>,
    pub(crate) info: Arc<RemoteTool>,
}

/// Tells the server to stop, without making the caller wait for the send.
fn abandon(handle: RequestHandle<RoleClient>, reason: &'static str) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(CANCEL_SEND_LIMIT, handle.cancel(Some(reason.to_owned()))).await;
    });
}

fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[async_trait]
impl Tool for McpTool {
    fn name(&self) -> &str {
        &self.info.name
    }

    fn description(&self) -> &str {
        &self.info.description
    }

    fn schema(&self) -> &ToolSchema {
        &self.info.schema
    }

    async fn call(&self, arguments: Map<String, Value>, cancel: CancellationToken) -> ToolResult {
        let server = self.server.name();
        let Some(session) = self.server.session() else {
            return ToolResult::error(
                Outcome::Unavailable,
                format!("the MCP server {server:?} is not connected right now; try again later"),
            );
        };
        let params = CallToolRequestParams::new(self.info.remote.clone()).with_arguments(arguments);
        let request = ClientRequest::CallToolRequest(CallToolRequest::new(params));
        // The timeouts are ours (below), so rmcp gets none.
        let mut handle = match session.peer.send_request_with_option(request, PeerRequestOptions::no_options()).await {
            Ok(h) => h,
            Err(e) => {
                session.broken.notify_one();
                return ToolResult::error(Outcome::Unavailable, format!("the MCP server {server:?} is unreachable: {e}"));
            }
        };
        let mut progress = self.server.progress.watch(handle.progress_token.clone());
        let (idle, cap) = (self.server.call_timeout, self.server.call_max);
        let idle_timer = tokio::time::sleep(idle);
        let cap_timer = tokio::time::sleep(cap);
        tokio::pin!(idle_timer, cap_timer);
        let answer = loop {
            tokio::select! {
                biased;
                answer = &mut handle.rx => break answer,
                _ = cancel.cancelled() => {
                    abandon(handle, "cancelled by the caller");
                    return ToolResult::error(Outcome::Cancelled, "the call was cancelled");
                }
                _ = &mut cap_timer => {
                    abandon(handle, "maximum total timeout exceeded");
                    return ToolResult::error(Outcome::Timeout, format!("no result within {}", seconds(cap)));
                }
                _ = &mut idle_timer => {
                    abandon(handle, "request timeout");
                    return ToolResult::error(Outcome::Timeout, format!("no result or progress for {}", seconds(idle)));
                }
                Some(()) = progress.rx.recv() => idle_timer.as_mut().reset(Instant::now() + idle),
            }
        };
        match answer {
            Ok(Ok(ServerResult::CallToolResult(result))) => to_tool_result(result),
            Ok(Ok(ServerResult::InputRequiredResult(_))) => ToolResult::error(
                Outcome::ToolError,
                "the tool asked for input from a person, which Chorus does not support",
            ),
            Ok(Ok(_)) => ToolResult::error(Outcome::ToolError, "the MCP server answered with something other than a tool result"),
            Ok(Err(ServiceError::McpError(e))) => ToolResult::error(Outcome::ToolError, e.message.to_string()),
            Ok(Err(e @ (ServiceError::TransportSend(_) | ServiceError::TransportClosed))) => {
                session.broken.notify_one();
                ToolResult::error(Outcome::Unavailable, format!("the connection to {server:?} failed during the call: {e}"))
            }
            Ok(Err(e)) => ToolResult::error(Outcome::ToolError, e.to_string()),
            Err(_) => {
                session.broken.notify_one();
                ToolResult::error(Outcome::Unavailable, format!("the connection to {server:?} closed during the call"))
            }
        }
    }
}
