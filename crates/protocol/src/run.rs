//! Agent runs on the wire: the codes a terminal `agent_error` carries, and
//! the status each leaves the run in.

/// Why a run ended without completing (`agent_error.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunErrorCode {
    /// Someone allowed to stopped it (`cancel_run`, `POST /api/v1/runs/{id}/cancel`).
    Cancelled,
    /// A newer message to the same agent in the channel interrupted it (`on_busy = "interrupt"`).
    Superseded,
    /// The agent was busy in the channel and refuses new work meanwhile (`on_busy = "reject"`).
    Busy,
    /// The person behind it already has as many runs waiting as allowed; no model was called.
    QueueFull,
    /// No event for the silence deadline (120 s).
    Timeout,
    /// The server shut down before the run finished.
    Shutdown,
    /// The server stopped (crashed) while the run was going; found at the next start.
    Interrupted,
    /// A bug; the logs have the run id.
    Internal,
    /// The model asked for the same tool call (tool and arguments) a third time.
    ToolLoop,
    /// The model kept calling tools past the allowed rounds.
    ToolRounds,
    /// The person's daily budget is spent.
    BudgetExceeded,
    /// Maintenance mode refused the run.
    Maintenance,
    /// The provider rate-limited the call and retries ran out.
    RateLimited,
    /// The prompt did not fit the model.
    ContextLength,
    /// The provider refused the configured credentials.
    Auth,
    /// The provider failed, or its answer was cut off or malformed.
    ProviderError,
    /// The agent was deleted before the run started.
    AgentUnavailable,
    /// The agent's model is not configured on this server.
    ModelUnavailable,
}

/// A run's terminal status, as stored and shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunOutcome {
    Completed,
    Failed,
    Cancelled,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Completed => "completed",
            RunOutcome::Failed => "failed",
            RunOutcome::Cancelled => "cancelled",
        }
    }
}

impl RunErrorCode {
    pub const ALL: &'static [RunErrorCode] = &[
        RunErrorCode::Cancelled,
        RunErrorCode::Superseded,
        RunErrorCode::Busy,
        RunErrorCode::QueueFull,
        RunErrorCode::Timeout,
        RunErrorCode::Shutdown,
        RunErrorCode::Interrupted,
        RunErrorCode::Internal,
        RunErrorCode::ToolLoop,
        RunErrorCode::ToolRounds,
        RunErrorCode::BudgetExceeded,
        RunErrorCode::Maintenance,
        RunErrorCode::RateLimited,
        RunErrorCode::ContextLength,
        RunErrorCode::Auth,
        RunErrorCode::ProviderError,
        RunErrorCode::AgentUnavailable,
        RunErrorCode::ModelUnavailable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunErrorCode::Cancelled => "cancelled",
            RunErrorCode::Superseded => "superseded",
            RunErrorCode::Busy => "busy",
            RunErrorCode::QueueFull => "queue_full",
            RunErrorCode::Timeout => "timeout",
            RunErrorCode::Shutdown => "shutdown",
            RunErrorCode::Interrupted => "interrupted",
            RunErrorCode::Internal => "internal",
            RunErrorCode::ToolLoop => "tool_loop",
            RunErrorCode::ToolRounds => "tool_rounds",
            RunErrorCode::BudgetExceeded => "budget_exceeded",
            RunErrorCode::Maintenance => "maintenance",
            RunErrorCode::RateLimited => "rate_limited",
            RunErrorCode::ContextLength => "context_length",
            RunErrorCode::Auth => "auth",
            RunErrorCode::ProviderError => "provider_error",
            RunErrorCode::AgentUnavailable => "agent_unavailable",
            RunErrorCode::ModelUnavailable => "model_unavailable",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }

    /// Whether sending the message again later may succeed (`agent_error.retryable`).
    pub fn retryable(self) -> bool {
        matches!(
            self,
            RunErrorCode::Busy
                | RunErrorCode::QueueFull
                | RunErrorCode::Timeout
                | RunErrorCode::Shutdown
                | RunErrorCode::Interrupted
                | RunErrorCode::Maintenance
                | RunErrorCode::RateLimited
                | RunErrorCode::ProviderError
        )
    }

    /// The status a run ending with this code is left in.
    pub fn outcome(self) -> RunOutcome {
        match self {
            RunErrorCode::Cancelled | RunErrorCode::Superseded => RunOutcome::Cancelled,
            _ => RunOutcome::Failed,
        }
    }
}

impl std::fmt::Display for RunErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_cancels_are_cancelled() {
        for code in RunErrorCode::ALL {
            assert_eq!(RunErrorCode::parse(code.as_str()), Some(*code));
        }
        assert_eq!(RunErrorCode::Cancelled.outcome(), RunOutcome::Cancelled);
        assert_eq!(RunErrorCode::Superseded.outcome(), RunOutcome::Cancelled);
        assert_eq!(RunErrorCode::ToolLoop.outcome(), RunOutcome::Failed);
        assert!(RunErrorCode::QueueFull.retryable() && !RunErrorCode::BudgetExceeded.retryable());
    }
}
