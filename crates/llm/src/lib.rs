//! Chorus's LLM providers: one streaming [`Provider`] trait, implementations
//! for Gemini, OpenAI-compatible servers and Anthropic (through the `genai`
//! crate) and the offline demo model, the resilience layer (timeouts,
//! retries, fallback), model configuration, token counting and cost.
//!
//! The runtime uses it like this:
//!
//! ```ignore
//! let models = Models::build(&config.models, &ModelsContext { http, tokens, resilience, faults, secrets: &ProcessEnv })?;
//! let model = models.get(&agent.model).unwrap_or(models.default_model());
//! let mut request = model.request();
//! request.system = Some(persona);
//! request.messages = history;
//! request.tools = tool_definitions;
//! let mut stream = model.stream(request); // drop it to cancel
//! while let Some(event) = stream.next().await { /* StreamEvent or ProviderError */ }
//! ```

mod config;
mod demo;
mod error;
mod event;
mod models;
mod provider;
mod remote;
mod request;
mod resilience;
mod secret;
mod tokens;

pub use config::{FaultInjection, ModelConfig, ModelConfigError, Prices, ProviderKind, Resilience};
pub use demo::{DemoFaults, DemoProvider};
pub use error::ProviderError;
pub use event::{EventStream, FinishReason, StreamEvent, Usage};
pub use models::{Model, Models, ModelsContext};
pub use provider::Provider;
pub use remote::{RemoteProvider, RemoteSettings, RemoteSetupError};
pub use request::{ChatRequest, Message, ToolCall, ToolDefinition, ToolResult};
pub use secret::{ApiKey, ProcessEnv, SecretMap, SecretSource};
pub use tokens::{TokenCounter, TokenizerError};
