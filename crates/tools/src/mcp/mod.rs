//! MCP servers as tool sources: one `McpServer` per configured server holds
//! its live session (if any) and the tools it offers; a supervisor task keeps
//! it connected; `McpTool` calls one of its tools.

mod call;
mod client;
mod connect;
mod content;
mod supervisor;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rmcp::Peer;
use rmcp::service::RoleClient;
use serde::Serialize;
use tokio::sync::{Notify, watch};

use crate::config::{McpServerConfig, McpTransport, ToolsConfig};
use crate::tool::ToolSchema;

pub(crate) use call::McpTool;
pub(crate) use client::ProgressRoutes;
pub(crate) use supervisor::{Supervision, supervise};

/// Longest tool description passed on to a model; longer ones are cut.
const DESCRIPTION_MAX: usize = 2048;

/// Where a server's connection stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum McpState {
    Connecting,
    Connected,
    /// Not connected; the supervisor retries after a backoff.
    Disconnected,
    /// The registry shut down.
    Stopped,
}

/// One server as `/health/detailed` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct McpServerStatus {
    pub name: String,
    pub transport: &'static str,
    pub state: McpState,
    /// Allowed tools the server offers now (its names, without the prefix).
    pub tools: Vec<String>,
    /// Allowed tools the server does not offer (or offers with an unusable schema).
    pub missing_tools: Vec<String>,
    pub last_error: Option<String>,
    /// Sessions opened and connection attempts that failed, since start.
    pub connects: u64,
    pub failures: u64,
    /// The child's process id, for stdio servers while connected.
    pub process_id: Option<u32>,
}

/// One tool of a server, as configured and described by the server.
#[derive(Debug)]
pub(crate) struct RemoteTool {
    /// `<server>.<tool>`.
    pub(crate) name: String,
    /// The server's own name for it.
    pub(crate) remote: String,
    pub(crate) description: String,
    pub(crate) schema: ToolSchema,
}

pub(crate) type RemoteTools = Arc<BTreeMap<String, Arc<RemoteTool>>>;

/// The open session calls go through, and how they report it broken (per
/// session, so a late report never ends the next session).
#[derive(Clone)]
pub(crate) struct LiveSession {
    pub(crate) peer: Peer<RoleClient>,
    pub(crate) broken: Arc<Notify>,
}

#[derive(Default)]
struct Live {
    session: Option<LiveSession>,
    tools: RemoteTools,
}

pub(crate) struct McpServer {
    pub(crate) config: McpServerConfig,
    pub(crate) call_timeout: Duration,
    pub(crate) call_max: Duration,
    pub(crate) progress: ProgressRoutes,
    live: RwLock<Live>,
    status: watch::Sender<McpServerStatus>,
}

impl McpServer {
    pub(crate) fn new(config: McpServerConfig, defaults: &ToolsConfig) -> Self {
        let status = McpServerStatus {
            name: config.name.clone(),
            transport: config.transport.as_str(),
            state: McpState::Connecting,
            tools: Vec::new(),
            missing_tools: config.tools.clone(),
            last_error: None,
            connects: 0,
            failures: 0,
            process_id: None,
        };
        Self {
            call_timeout: config.call_timeout(defaults),
            call_max: config.call_max(defaults),
            config,
            progress: ProgressRoutes::default(),
            live: RwLock::new(Live::default()),
            status: watch::Sender::new(status),
        }
    }

    pub(crate) fn name(&self) -> &str {
        &self.config.name
    }

    pub(crate) fn transport(&self) -> McpTransport {
        self.config.transport
    }

    pub(crate) fn session(&self) -> Option<LiveSession> {
        self.live.read().session.clone()
    }

    /// The tools offered now; empty while not connected.
    pub(crate) fn tools(&self) -> RemoteTools {
        let live = self.live.read();
        if live.session.is_some() { live.tools.clone() } else { RemoteTools::default() }
    }

    pub(crate) fn status(&self) -> McpServerStatus {
        self.status.borrow().clone()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<McpServerStatus> {
        self.status.subscribe()
    }

    /// Keeps the allowed tools among those the server lists; a tool whose
    /// schema does not compile is left out (and logged).
    pub(crate) fn select_tools(&self, listed: Vec<rmcp::model::Tool>) -> RemoteTools {
        let mut tools = BTreeMap::new();
        for tool in listed {
            let remote = tool.name.to_string();
            if !self.config.tools.contains(&remote) || tools.contains_key(&remote) {
                continue;
            }
            let schema = match ToolSchema::new(serde_json::Value::Object((*tool.input_schema).clone())) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(server = %self.name(), tool = %remote, error = %e, "MCP tool left out: its input schema does not compile");
                    continue;
                }
            };
            let mut description =
                tool.description.as_deref().map(str::to_owned).or(tool.title.clone()).unwrap_or_default();
            if description.len() > DESCRIPTION_MAX {
                let mut end = DESCRIPTION_MAX;
                while !description.is_char_boundary(end) {
                    end -= 1;
                }
                description.truncate(end);
            }
            let name = format!("{}.{remote}", self.name());
            tools.insert(remote.clone(), Arc::new(RemoteTool { name, remote, description, schema }));
        }
        Arc::new(tools)
    }

    fn update_status(&self, change: impl FnOnce(&mut McpServerStatus)) {
        self.status.send_modify(change);
    }

    pub(crate) fn set_connecting(&self) {
        self.update_status(|s| s.state = McpState::Connecting);
    }

    pub(crate) fn set_connected(&self, session: LiveSession, tools: RemoteTools, process_id: Option<u32>) {
        self.set_tools_inner(&tools);
        {
            let mut live = self.live.write();
            live.session = Some(session);
            live.tools = tools;
        }
        self.update_status(|s| {
            s.state = McpState::Connected;
            s.connects += 1;
            s.last_error = None;
            s.process_id = process_id;
        });
    }

    /// A refreshed tool list (after `notifications/tools/list_changed`).
    pub(crate) fn set_tools(&self, tools: RemoteTools) {
        self.set_tools_inner(&tools);
        self.live.write().tools = tools;
    }

    fn set_tools_inner(&self, tools: &RemoteTools) {
        let offered: Vec<String> = tools.keys().cloned().collect();
        let missing: Vec<String> = self.config.tools.iter().filter(|t| !tools.contains_key(*t)).cloned().collect();
        self.update_status(|s| {
            s.tools = offered;
            s.missing_tools = missing;
        });
    }

    /// After a failed attempt (`failed`) or the end of a session.
    pub(crate) fn set_disconnected(&self, error: String, failed: bool) {
        self.live.write().session = None;
        self.update_status(|s| {
            s.state = McpState::Disconnected;
            s.last_error = Some(error);
            s.process_id = None;
            if failed {
                s.failures += 1;
            }
        });
    }

    pub(crate) fn set_stopped(&self) {
        self.live.write().session = None;
        self.update_status(|s| {
            s.state = McpState::Stopped;
            s.process_id = None;
        });
    }
}
