//! `ToolRegistry`: every tool this server has (built-ins, tools the caller
//! adds, MCP servers from config), the names agents may list, and the
//! toolset each agent gets.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chorus_clock::Clock;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::builtin::{Calculator, ClockTool};
use crate::config::{ConfigError, ToolsConfig};
use crate::mcp::{McpServer, McpServerStatus, McpState, McpTool, Supervision, supervise};
use crate::metrics::ToolMetrics;
use crate::tool::Tool;
use crate::toolset::Toolset;

/// What the registry needs from the composition root.
pub struct ToolDeps {
    /// Time for the `clock` tool.
    pub clock: Arc<dyn Clock>,
    pub metrics: ToolMetrics,
    /// Tools besides the built-ins and MCP servers (e.g. tools a test injects).
    pub extra_tools: Vec<Arc<dyn Tool>>,
}

/// An agent names a tool this server does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name:?} is not a tool this server knows (known: {})", known.join(", "))]
pub struct UnknownTool {
    pub name: String,
    pub known: Vec<String>,
}

/// Cheap to clone; the MCP supervisors stop when the last clone is dropped
/// or on `shutdown`.
#[derive(Clone)]
pub struct ToolRegistry(Arc<Inner>);

struct Inner {
    local: BTreeMap<String, Arc<dyn Tool>>,
    servers: BTreeMap<String, Arc<McpServer>>,
    names: Vec<String>,
    max_result_bytes: usize,
    metrics: ToolMetrics,
    shutdown: CancellationToken,
    supervisors: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// How long `shutdown` waits for sessions to close.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

impl ToolRegistry {
    /// Validates `config`, builds the built-ins and starts one supervisor task
    /// per MCP server (they connect in the background; see `wait_for_mcp`).
    /// Must run inside a Tokio runtime.
    pub fn start(config: &ToolsConfig, deps: ToolDeps) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut local: BTreeMap<String, Arc<dyn Tool>> = BTreeMap::new();
        let builtins: [Arc<dyn Tool>; 2] = [Arc::new(ClockTool::new(deps.clock)), Arc::new(Calculator::new())];
        for tool in builtins.into_iter().chain(deps.extra_tools) {
            let name = tool.name().to_owned();
            let clashes = name.split_once('.').is_some_and(|(server, _)| {
                config.mcp_servers.iter().any(|s| s.name.eq_ignore_ascii_case(server))
            });
            if name.is_empty() || clashes || local.insert(name.clone(), tool).is_some() {
                return Err(ConfigError { key: "tools".into(), message: format!("the tool name {name:?} is used twice") });
            }
        }
        let mut names: Vec<String> = local.keys().cloned().collect();
        names.extend(config.tool_names().into_iter().filter(|n| n.contains('.')));
        let timing = Supervision {
            connect_timeout: config.mcp_connect_timeout,
            ping_interval: config.mcp_ping_interval,
            reconnect_min: config.mcp_reconnect_min,
            reconnect_max: config.mcp_reconnect_max,
        };
        let shutdown = CancellationToken::new();
        let mut servers = BTreeMap::new();
        let mut supervisors = Vec::new();
        for server_config in &config.mcp_servers {
            let server = Arc::new(McpServer::new(server_config.clone(), config));
            servers.insert(server_config.name.clone(), server.clone());
            supervisors.push(tokio::spawn(supervise(server, timing, deps.metrics.clone(), shutdown.clone())));
        }
        Ok(Self(Arc::new(Inner {
            local,
            servers,
            names,
            max_result_bytes: config.tool_result_max_bytes,
            metrics: deps.metrics,
            shutdown,
            supervisors: Mutex::new(supervisors),
        })))
    }

    /// Every name an agent's `tools` list may hold.
    pub fn tool_names(&self) -> &[String] {
        &self.0.names
    }

    /// `Ok` when every name is one this server has (for agent records).
    pub fn check<'a>(&self, names: impl IntoIterator<Item = &'a str>) -> Result<(), UnknownTool> {
        for name in names {
            if !self.0.names.iter().any(|n| n == name) {
                return Err(UnknownTool { name: name.to_owned(), known: self.0.names.clone() });
            }
        }
        Ok(())
    }

    /// The tools of `names` that can be called now, in that order: MCP tools
    /// of servers that are not connected (or do not offer them) and unknown
    /// names are left out. Build one per model call, so it follows
    /// reconnects and tool-list changes.
    pub fn toolset<S: AsRef<str>>(&self, names: &[S]) -> Toolset {
        let mut tools: Vec<Arc<dyn Tool>> = Vec::with_capacity(names.len());
        for name in names {
            let name = name.as_ref();
            if tools.iter().any(|t| t.name() == name) {
                continue;
            }
            if let Some(tool) = self.0.local.get(name) {
                tools.push(tool.clone());
            } else if let Some((server_name, remote)) = name.split_once('.')
                && let Some(server) = self.0.servers.get(server_name)
                && let Some(info) = server.tools().get(remote)
            {
                tools.push(Arc::new(McpTool { server: server.clone(), info: info.clone() }));
            }
        }
        Toolset::new(tools, self.0.max_result_bytes, self.0.metrics.clone())
    }

    /// Every configured MCP server, by name.
    pub fn mcp_servers(&self) -> Vec<McpServerStatus> {
        self.0.servers.values().map(|s| s.status()).collect()
    }

    /// Connected and configured MCP servers.
    pub fn mcp_connected(&self) -> (usize, usize) {
        let connected = self.0.servers.values().filter(|s| s.status().state == McpState::Connected).count();
        (connected, self.0.servers.len())
    }

    /// Status changes of one server.
    pub fn mcp_watch(&self, server: &str) -> Option<watch::Receiver<McpServerStatus>> {
        self.0.servers.get(server).map(|s| s.watch())
    }

    /// Waits until every MCP server has connected or failed once, at most `limit`.
    /// Returns whether all of them are connected.
    pub async fn wait_for_mcp(&self, limit: Duration) -> bool {
        let settled = async {
            for server in self.0.servers.values() {
                let mut rx = server.watch();
                let _ = rx.wait_for(|s| s.connects + s.failures > 0 || s.state == McpState::Stopped).await;
            }
        };
        let _ = tokio::time::timeout(limit, settled).await;
        let (connected, all) = self.mcp_connected();
        connected == all
    }

    /// Stops reconnecting and closes every MCP session (children are ended).
    pub async fn shutdown(&self) {
        self.0.shutdown.cancel();
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.0.supervisors.lock());
        let all = futures_util::future::join_all(tasks);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, all).await;
    }
}
