//! The runtime's part of `/health/detailed`.

use serde::Serialize;

use crate::runtime::Runtime;

/// One configured MCP server, as health shows it.
#[derive(Debug, Clone, Serialize)]
pub struct McpHealth {
    pub name: String,
    pub state: String,
}

/// What `/health/detailed` shows under `checks.agents`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentsHealth {
    pub enabled: bool,
    /// Configured models by name, with their provider kind.
    pub models: Vec<ModelHealth>,
    pub mcp_servers_connected: usize,
    pub mcp_servers: usize,
    pub mcp: Vec<McpHealth>,
    pub active_runs: usize,
    pub queued_runs: usize,
    pub max_concurrent_runs: usize,
    pub events_dropped_after_ending: u64,
    pub closing: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelHealth {
    pub name: String,
    pub provider: String,
}

impl AgentsHealth {
    /// Healthy unless an MCP server is down (degraded: its tools are missing).
    pub fn degraded(&self) -> bool {
        self.mcp_servers_connected < self.mcp_servers
    }
}

impl Runtime {
    pub fn health(&self) -> AgentsHealth {
        let (running, waiting) = self.counts();
        let (connected, servers) = self.0.tools.mcp_connected();
        AgentsHealth {
            enabled: self.0.config.enabled,
            models: self
                .0
                .models
                .iter()
                .map(|m| ModelHealth { name: m.name().to_owned(), provider: m.provider_kind().as_str().to_owned() })
                .collect(),
            mcp_servers_connected: connected,
            mcp_servers: servers,
            mcp: self
                .0
                .tools
                .mcp_servers()
                .into_iter()
                .map(|s| McpHealth { name: s.name.clone(), state: format!("{:?}", s.state).to_lowercase() })
                .collect(),
            active_runs: running,
            queued_runs: waiting,
            max_concurrent_runs: self.0.config.max_concurrent_runs,
            events_dropped_after_ending: self.0.metrics.events_dropped(),
            closing: self.is_closing(),
        }
    }
}
