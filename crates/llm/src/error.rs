//! Typed provider errors with the stable codes a run's `agent_error` carries.

use std::time::Duration;

/// Why a model call failed. Messages never contain an API key: provider
/// bodies are cut to a short excerpt with the key removed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    #[error("the provider rate-limited the request (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, and Anthropic's 529 "overloaded".
    #[error("the provider failed (HTTP {status}): {message}")]
    Server {
        status: u16,
        retry_after: Option<Duration>,
        message: String,
    },
    #[error("could not reach the provider: {0}")]
    Connection(String),
    #[error("no answer from the provider within {0:?}")]
    FirstByteTimeout(Duration),
    #[error("the provider's stream was silent for {0:?}")]
    IdleTimeout(Duration),
    #[error("the request does not fit the model's context window: {0}")]
    ContextLength(String),
    #[error("the provider refused the credentials (HTTP {status})")]
    Auth { status: u16 },
    #[error("the provider rejected the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("the provider's stream ended before the answer was complete")]
    Interrupted,
    #[error("the provider sent a malformed chunk: {0}")]
    Malformed(String),
    /// An error event inside a stream (OpenAI `error` chunk, Anthropic
    /// `event: error`). Overload errors are retryable.
    #[error("the provider reported an error: {message}")]
    Stream { message: String, overloaded: bool },
    #[error("the model configuration is unusable: {0}")]
    Config(String),
    /// Only from the demo provider with fault directives enabled.
    #[error("injected fault: {0}")]
    Injected(String),
}

impl ProviderError {
    /// The stable code for `agent_error.code` and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "rate_limited",
            ProviderError::FirstByteTimeout(_) | ProviderError::IdleTimeout(_) => "timeout",
            ProviderError::ContextLength(_) => "context_length",
            ProviderError::Auth { .. } => "auth",
            ProviderError::Server { .. }
            | ProviderError::Connection(_)
            | ProviderError::Rejected { .. }
            | ProviderError::Interrupted
            | ProviderError::Malformed(_)
            | ProviderError::Stream { .. }
            | ProviderError::Config(_)
            | ProviderError::Injected(_) => "provider_error",
        }
    }

    /// Whether trying again (before any content was streamed) may help:
    /// connection errors, timeouts, 429, 5xx/529 and overload events.
    pub fn is_retryable(&self) -> bool {
        match self {
            ProviderError::RateLimited { .. }
            | ProviderError::Server { .. }
            | ProviderError::Connection(_)
            | ProviderError::FirstByteTimeout(_)
            | ProviderError::IdleTimeout(_)
            | ProviderError::Interrupted => true,
            ProviderError::Stream { overloaded, .. } => *overloaded,
            _ => false,
        }
    }

    /// How long the provider asked us to wait (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after }
            | ProviderError::Server { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}
