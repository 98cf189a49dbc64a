//! Shared fixtures: models pointed at a mock provider, and stream collection.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers: a failure should stop the test where it happens.
#![allow(dead_code)]

use std::collections::HashMap;

use chorus_llm::{
    ChatRequest, EventStream, FaultInjection, FinishReason, Message, ModelConfig, Models,
    ModelsContext, ProviderError, ProviderKind, Resilience, SecretMap, StreamEvent, TokenCounter,
    ToolCall, ToolDefinition, Usage,
};
use chorus_llm_mock::{MockServer, Wire};
use futures_util::StreamExt;
use serde_json::json;

pub const API_KEY: &str = "sk-test-mock-0123456789";

pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().expect("http client")
}

/// Loaded once per test process.
pub fn tokens() -> TokenCounter {
    static TOKENS: std::sync::OnceLock<TokenCounter> = std::sync::OnceLock::new();
    TOKENS
        .get_or_init(|| TokenCounter::new().expect("tiktoken"))
        .clone()
}

pub fn kind(wire: Wire) -> ProviderKind {
    match wire {
        Wire::OpenAi => ProviderKind::Openai,
        Wire::Gemini => ProviderKind::Gemini,
        Wire::Anthropic => ProviderKind::Anthropic,
    }
}

pub fn remote_config(name: &str, model: &str, wire: Wire, mock: &MockServer) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        provider: kind(wire),
        model: model.into(),
        base_url: Some(mock.base_url(wire)),
        api_key_env: Some("MOCK_API_KEY".into()),
        context_window: 32_000,
        max_output_tokens: 1000,
        input_price_per_million: 2.0,
        output_price_per_million: 8.0,
        fallback: None,
        ..ModelConfig::demo()
    }
}

pub fn secrets() -> SecretMap {
    SecretMap(HashMap::from([(
        "MOCK_API_KEY".to_owned(),
        API_KEY.to_owned(),
    )]))
}

pub fn build(configs: &[ModelConfig], faults: FaultInjection) -> Models {
    let secrets = secrets();
    Models::build(
        configs,
        &ModelsContext {
            http: http(),
            tokens: tokens(),
            resilience: Resilience::default(),
            faults,
            secrets: &secrets,
        },
    )
    .expect("models")
}

/// `primary` on the mock (falling back to `backup`, also on the mock).
pub fn models_on(mock: &MockServer, wire: Wire) -> Models {
    let mut primary = remote_config("primary", "mock-model", wire, mock);
    primary.fallback = Some("backup".into());
    let backup = remote_config("backup", "backup-model", wire, mock);
    build(&[primary, backup], FaultInjection::Refused)
}

pub fn calculator() -> ToolDefinition {
    ToolDefinition {
        name: "calculator".into(),
        description: "Evaluates an arithmetic expression.".into(),
        input_schema: json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
    }
}

pub fn clock() -> ToolDefinition {
    ToolDefinition {
        name: "clock".into(),
        description: "Tells the current time.".into(),
        input_schema: json!({"type": "object", "properties": {"timezone": {"type": "string"}}}),
    }
}

pub fn request(models: &Models, name: &str, text: &str) -> ChatRequest {
    let mut request = models.get(name).expect("model").request();
    request.system = Some("You are a helpful test agent.".into());
    request.messages = vec![Message::user_named("Alice", text)];
    request
}

/// Everything a stream yielded, and the error it ended with.
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: Vec<StreamEvent>,
    pub error: Option<ProviderError>,
}

pub async fn collect(mut stream: EventStream) -> Outcome {
    let mut outcome = Outcome::default();
    while let Some(item) = stream.next().await {
        match item {
            Ok(event) => {
                assert!(outcome.error.is_none(), "event after an error: {event:?}");
                outcome.events.push(event);
            }
            Err(error) => {
                assert!(outcome.error.is_none(), "two errors");
                outcome.error = Some(error);
            }
        }
    }
    outcome
}

impl Outcome {
    pub fn text(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::TextDelta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn reasoning(&self) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ReasoningDelta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    pub fn usage(&self) -> Option<Usage> {
        self.events.iter().find_map(|e| match e {
            StreamEvent::Usage { usage } => Some(*usage),
            _ => None,
        })
    }

    pub fn finish(&self) -> Option<FinishReason> {
        match self.events.last() {
            Some(StreamEvent::Finished { reason }) => Some(reason.clone()),
            _ => None,
        }
    }

    pub fn completed_calls(&self) -> Vec<ToolCall> {
        self.events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallCompleted { call } => Some(call.clone()),
                _ => None,
            })
            .collect()
    }

    /// Argument text streamed for a call id.
    pub fn streamed_arguments(&self, id: &str) -> String {
        self.events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallArgumentsDelta { id: call, delta } if call == id => {
                    Some(delta.as_str())
                }
                _ => None,
            })
            .collect()
    }

    pub fn retries(&self) -> Vec<(u32, std::time::Duration, String)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                StreamEvent::Retrying {
                    attempt,
                    delay,
                    code,
                } => Some((*attempt, *delay, code.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn fell_back(&self) -> Option<String> {
        self.events.iter().find_map(|e| match e {
            StreamEvent::FellBack { model, .. } => Some(model.clone()),
            _ => None,
        })
    }

    /// The error or the outcome, for assertion messages.
    pub fn expect_ok(&self) {
        assert!(
            self.error.is_none(),
            "unexpected error {:?} after {:?}",
            self.error,
            self.events
        );
        assert!(self.finish().is_some(), "no finish: {:?}", self.events);
    }
}
