//! Tool metrics, registered by the composition root into the server's registry
//! (whose `chorus_` prefix they get).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::tool::Outcome;

type Labels = Vec<(&'static str, String)>;

/// Tool-call durations, seconds: 10 ms to 2 minutes.
pub const CALL_DURATION_BUCKETS: [f64; 11] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];

/// The label used for a name that is not a configured tool, so a model
/// inventing names cannot grow the label set.
pub const UNKNOWN_TOOL_LABEL: &str = "unknown";

#[derive(Debug, Clone)]
pub struct ToolMetrics {
    calls: Family<Labels, Counter>,
    duration: Family<Labels, Histogram>,
    pub(crate) mcp_connected: Gauge,
    mcp_connects: Family<Labels, Counter>,
}

impl ToolMetrics {
    /// Registers `tool_calls` (by `tool` and `outcome`),
    /// `tool_call_duration_seconds` (by `tool`), `mcp_servers_connected` and
    /// `mcp_connects` (by `server` and `result`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::unregistered();
        registry.register("tool_calls", "Tool calls by tool and outcome", m.calls.clone());
        registry.register("tool_call_duration_seconds", "How long tool calls took, by tool", m.duration.clone());
        registry.register("mcp_servers_connected", "MCP servers connected now", m.mcp_connected.clone());
        registry.register("mcp_connects", "MCP connection attempts by server and result", m.mcp_connects.clone());
        m
    }

    /// Metrics nobody scrapes (tests, tools run outside a server).
    pub fn unregistered() -> Self {
        Self {
            calls: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(CALL_DURATION_BUCKETS)),
            mcp_connected: Gauge::default(),
            mcp_connects: Family::default(),
        }
    }

    pub(crate) fn record_call(&self, tool: &str, outcome: Outcome, seconds: f64) {
        self.calls.get_or_create(&vec![("tool", tool.to_owned()), ("outcome", outcome.as_str().to_owned())]).inc();
        self.duration.get_or_create(&vec![("tool", tool.to_owned())]).observe(seconds);
    }

    pub(crate) fn record_connect(&self, server: &str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        self.mcp_connects.get_or_create(&vec![("server", server.to_owned()), ("result", result.to_owned())]).inc();
    }

    /// Calls counted for `tool` ending with `outcome` (for tests and health pages).
    pub fn calls(&self, tool: &str, outcome: Outcome) -> u64 {
        self.calls.get_or_create(&vec![("tool", tool.to_owned()), ("outcome", outcome.as_str().to_owned())]).get()
    }

    pub fn mcp_servers_connected(&self) -> i64 {
        self.mcp_connected.get()
    }
}
