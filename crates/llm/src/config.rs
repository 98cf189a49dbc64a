//! Model configuration: what the binary's `[[agents.models]]` entries hold,
//! and the call policy (timeouts, retries) for every provider.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::event::Usage;

/// The wire protocol a configured model speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// OpenAI chat completions, and every server that speaks it (vLLM,
    /// llama.cpp, LM Studio, ...): set `base_url`.
    Openai,
    /// Ollama through its OpenAI-compatible endpoint (`base_url` defaults to
    /// the local Ollama on port 11434); no API key needed.
    Ollama,
    Gemini,
    Anthropic,
    /// The offline demo model: deterministic, no network, costs nothing.
    Demo,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Openai => "openai",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Demo => "demo",
        }
    }
}

/// One model agents may use (`[[agents.models]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// What agents name in their `model` field (`allowed_models`).
    pub name: String,
    pub provider: ProviderKind,
    /// The provider's model id, e.g. `gpt-4o-mini`. Optional for `demo`.
    #[serde(default)]
    pub model: String,
    /// Where the provider listens; the provider's public endpoint when unset.
    /// OpenAI-compatible URLs end in `/v1/`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// The environment variable that holds the API key (the key itself never
    /// goes in the file). Unset: no key is sent (local servers).
    #[serde(default)]
    pub api_key_env: Option<String>,
    #[serde(default = "default_context_window")]
    pub context_window: u32,
    #[serde(default = "default_max_output_tokens")]
    pub max_output_tokens: u32,
    /// US dollars per million input tokens.
    #[serde(default)]
    pub input_price_per_million: f64,
    /// US dollars per million output tokens (reasoning included).
    #[serde(default)]
    pub output_price_per_million: f64,
    /// The configured name of the model to switch to once retries run out.
    #[serde(default)]
    pub fallback: Option<String>,
    /// `low`, `medium`, `high` (or a provider's other keyword): asks models
    /// that can reason to do so, and to show it where the provider allows.
    #[serde(default)]
    pub reasoning_effort: Option<String>,
    /// Demo only: how fast it streams.
    #[serde(default = "default_tokens_per_second")]
    pub tokens_per_second: f64,
    /// Demo only, tests only: obey fault directives such as `[fault:429]` in
    /// the last user message. Refused unless the server allows fault injection.
    #[serde(default)]
    pub faults: bool,
}

fn default_context_window() -> u32 {
    128_000
}
fn default_max_output_tokens() -> u32 {
    1024
}
fn default_tokens_per_second() -> f64 {
    20.0
}

impl ModelConfig {
    /// The built-in demo model, used when no model is configured.
    pub fn demo() -> Self {
        ModelConfig {
            name: "demo".into(),
            provider: ProviderKind::Demo,
            model: "demo".into(),
            base_url: None,
            api_key_env: None,
            context_window: 8192,
            max_output_tokens: 512,
            input_price_per_million: 0.0,
            output_price_per_million: 0.0,
            fallback: None,
            reasoning_effort: None,
            tokens_per_second: default_tokens_per_second(),
            faults: false,
        }
    }

    pub fn prices(&self) -> Prices {
        Prices {
            input_per_million: self.input_price_per_million,
            output_per_million: self.output_price_per_million,
        }
    }
}

/// What a model's tokens cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

impl Prices {
    /// The cost of `usage` in US dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.input_tokens as f64 * self.input_per_million
            + usage.output_tokens as f64 * self.output_per_million)
            / 1_000_000.0
    }
}

/// Timeouts and retries around every model call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resilience {
    /// From sending the request to the first event of the answer.
    #[serde(with = "humantime_serde")]
    pub first_byte_timeout: Duration,
    /// Longest silence between two events of an answer (not a total limit).
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Retries after the first attempt, for retryable errors before any
    /// content; then the fallback model (with retries of its own).
    pub max_retries: u32,
    /// Backoff before retry n is a random wait up to `min(max, base * 2^n)`.
    #[serde(with = "humantime_serde")]
    pub retry_base_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub retry_max_delay: Duration,
    /// A `Retry-After` longer than this is not waited for: the fallback (or
    /// the error) comes at once.
    #[serde(with = "humantime_serde")]
    pub max_retry_after: Duration,
}

impl Default for Resilience {
    fn default() -> Self {
        Resilience {
            first_byte_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(30),
            max_retries: 3,
            retry_base_delay: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(8),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Whether demo models may be configured with `faults = true`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultInjection {
    #[default]
    Refused,
    /// Tests and builds with the `fault-injection` feature only.
    Allowed,
}

/// A model configuration that cannot work.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelConfigError {
    #[error("agents.models: the model name {0:?} is used twice")]
    DuplicateName(String),
    #[error("agents.models: a model needs a name of 1 to 100 characters")]
    BadName,
    #[error("agents.models {model:?}: fallback {fallback:?} is not a configured model")]
    UnknownFallback { model: String, fallback: String },
    #[error("agents.models {0:?}: a model cannot be its own fallback")]
    FallbackToSelf(String),
    #[error("agents.models {0:?}: `model` (the provider's model id) is required")]
    MissingModelId(String),
    #[error("agents.models {model:?}: the environment variable {env} (api_key_env) is not set")]
    MissingApiKey { model: String, env: String },
    #[error("agents.models {0:?}: faults = true needs a build that allows fault injection")]
    FaultsNotAllowed(String),
    #[error("agents.models {model:?}: {field} {problem}")]
    Invalid {
        model: String,
        field: &'static str,
        problem: String,
    },
    #[error("could not build the HTTP client for model providers: {0}")]
    Http(String),
}
