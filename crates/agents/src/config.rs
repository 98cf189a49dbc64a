//! The `[agents]` section: models, tools (MCP servers), limits and budgets.
//! Defaults are the ones `docs/decisions.md` records; every key is in `chorus.example.toml`.

use std::time::Duration;

use chorus_llm::{ModelConfig, Resilience};
use chorus_tools::ToolsConfig;
use serde::{Deserialize, Serialize};

/// `[agents]`. The tool keys (`tool_call_timeout` ... `mcp_servers`) are
/// `chorus-tools`' own, read here and handed over by [`AgentsConfig::tools_config`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsConfig {
    /// Run hosted agents on this node. Several nodes on one store share the
    /// runs: each run is claimed by one node (recorded with the run), which
    /// alone produces its events.
    pub enabled: bool,
    /// The models agents may use (`allowed_models` follows from their
    /// names). None: the offline demo model, named `demo`.
    pub models: Vec<ModelConfig>,
    /// Timeouts and retries around every model call.
    pub resilience: Resilience,
    /// A tool call with no answer and no progress for this long times out.
    #[serde(with = "humantime_serde")]
    pub tool_call_timeout: Duration,
    /// No tool call runs longer than this, progress or not.
    #[serde(with = "humantime_serde")]
    pub tool_call_max: Duration,
    /// Longer tool results are cut (with a marker).
    pub tool_result_max_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub mcp_connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub mcp_ping_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub mcp_reconnect_min: Duration,
    #[serde(with = "humantime_serde")]
    pub mcp_reconnect_max: Duration,
    /// `[[agents.mcp_servers]]` entries, as written (`chorus-tools` reads them).
    pub mcp_servers: Vec<serde_json::Value>,
    /// Runs executing at once on this node (all users together).
    pub max_concurrent_runs: usize,
    /// Runs waiting on this node (all users together); past it a new run
    /// ends at once with `queue_full`.
    pub max_queued_runs: usize,
    /// Runs one person may have outstanding (waiting or running); past it a
    /// new run ends at once with `queue_full`.
    pub runs_per_user: usize,
    /// Runs of one person executing at once.
    pub running_per_user: usize,
    /// Most hops in a chain of agents answering agents.
    pub max_hops: u32,
    /// Most runs created in one channel per minute (0: no limit).
    pub channel_runs_per_minute: u32,
    /// Tool rounds (model turns that call tools) per run.
    pub tool_rounds: u32,
    /// Tool calls of one model turn that run at once.
    pub parallel_tool_calls: usize,
    /// How often the node looks in the store for queued runs no node took
    /// (another node's messages, a full intake) and for runs whose node
    /// stopped (its heartbeat expired in the broker): their queued runs are
    /// taken over, their running ones end as `interrupted`.
    #[serde(with = "humantime_serde")]
    pub rescan_interval: Duration,
    /// A run with no event for this long ends with `timeout`.
    #[serde(with = "humantime_serde")]
    pub silence_timeout: Duration,
    /// At most one `agent_text_delta` (and one `agent_thinking`) per run per interval.
    #[serde(with = "humantime_serde")]
    pub delta_interval: Duration,
    /// How long a cancel waits for the run to stop by itself (keeping its
    /// partial answer) before ending it directly.
    #[serde(with = "humantime_serde")]
    pub cancel_grace: Duration,
    /// US dollars one person's runs may cost per UTC day; unset: no limit.
    pub daily_budget_usd: Option<f64>,
    /// Channel messages read for a prompt, newest first, at most.
    pub history_max_messages: u32,
    /// Output tokens a rolling summary may take.
    pub summary_max_tokens: u32,
}

impl Default for AgentsConfig {
    fn default() -> Self {
        let tools = ToolsConfig::default();
        AgentsConfig {
            enabled: true,
            models: Vec::new(),
            resilience: Resilience::default(),
            tool_call_timeout: tools.tool_call_timeout,
            tool_call_max: tools.tool_call_max,
            tool_result_max_bytes: tools.tool_result_max_bytes,
            mcp_connect_timeout: tools.mcp_connect_timeout,
            mcp_ping_interval: tools.mcp_ping_interval,
            mcp_reconnect_min: tools.mcp_reconnect_min,
            mcp_reconnect_max: tools.mcp_reconnect_max,
            mcp_servers: Vec::new(),
            max_concurrent_runs: 256,
            max_queued_runs: 10_000,
            runs_per_user: 10,
            running_per_user: 2,
            max_hops: 3,
            channel_runs_per_minute: 20,
            tool_rounds: 8,
            parallel_tool_calls: 4,
            rescan_interval: Duration::from_secs(5),
            silence_timeout: Duration::from_secs(120),
            delta_interval: Duration::from_millis(100),
            cancel_grace: Duration::from_millis(200),
            daily_budget_usd: None,
            history_max_messages: 1_000,
            summary_max_tokens: 400,
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agents.{key}: {message}")]
pub struct AgentsConfigError {
    pub key: &'static str,
    pub message: String,
}

impl AgentsConfig {
    pub fn validate(&self) -> Result<(), AgentsConfigError> {
        let positive = |key: &'static str, ok: bool| {
            if ok { Ok(()) } else { Err(AgentsConfigError { key, message: "must be at least 1".into() }) }
        };
        positive("max_concurrent_runs", self.max_concurrent_runs > 0)?;
        positive("max_queued_runs", self.max_queued_runs > 0)?;
        positive("runs_per_user", self.runs_per_user > 0)?;
        positive("running_per_user", self.running_per_user > 0)?;
        positive("parallel_tool_calls", self.parallel_tool_calls > 0)?;
        positive("history_max_messages", self.history_max_messages > 0)?;
        positive("summary_max_tokens", self.summary_max_tokens > 0)?;
        if self.running_per_user > self.runs_per_user {
            return Err(AgentsConfigError { key: "running_per_user", message: "must not exceed runs_per_user".into() });
        }
        if self.rescan_interval.is_zero() {
            return Err(AgentsConfigError { key: "rescan_interval", message: "must be positive".into() });
        }
        if self.silence_timeout.is_zero() {
            return Err(AgentsConfigError { key: "silence_timeout", message: "must be positive".into() });
        }
        if let Some(budget) = self.daily_budget_usd
            && (!budget.is_finite() || budget < 0.0)
        {
            return Err(AgentsConfigError { key: "daily_budget_usd", message: "must be a non-negative number".into() });
        }
        Ok(())
    }

    /// The tool settings as `chorus-tools` reads them (it validates them at start).
    pub fn tools_config(&self) -> Result<ToolsConfig, AgentsConfigError> {
        let duration = |d: Duration| serde_json::Value::String(humantime_serde::re::humantime::format_duration(d).to_string());
        let value = serde_json::json!({
            "tool_call_timeout": duration(self.tool_call_timeout),
            "tool_call_max": duration(self.tool_call_max),
            "tool_result_max_bytes": self.tool_result_max_bytes,
            "mcp_connect_timeout": duration(self.mcp_connect_timeout),
            "mcp_ping_interval": duration(self.mcp_ping_interval),
            "mcp_reconnect_min": duration(self.mcp_reconnect_min),
            "mcp_reconnect_max": duration(self.mcp_reconnect_max),
            "mcp_servers": self.mcp_servers,
        });
        serde_json::from_value(value).map_err(|e| AgentsConfigError { key: "mcp_servers", message: e.to_string() })
    }

    /// The loop guard the chat domain applies.
    pub fn run_guard(&self) -> chorus_chat::RunGuard {
        chorus_chat::RunGuard { max_hops: self.max_hops, channel_runs_per_minute: self.channel_runs_per_minute }
    }
}
