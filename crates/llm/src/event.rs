//! What a model stream yields.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use serde::{Deserialize, Serialize};

use crate::ProviderError;
use crate::request::ToolCall;

/// A model's answer as it arrives. Ends after `Finished` or after the first
/// `Err`. Dropping it drops the HTTP request.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<StreamEvent, ProviderError>> + Send>>;

/// One step of a model's answer.
///
/// Order: content events (`TextDelta`, `ReasoningDelta`, `ToolCallStarted`,
/// `ToolCallArgumentsDelta`) as they come; then one `ToolCallCompleted` per
/// call; then exactly one `Usage`; then `Finished`, always last.
/// `Retrying` and `FellBack` come only from [`crate::Model::stream`] and only
/// before any content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    TextDelta {
        text: String,
    },
    /// Reasoning ("thinking") text, from models that show it.
    ReasoningDelta {
        text: String,
    },
    ToolCallStarted {
        id: String,
        name: String,
    },
    /// A piece of a call's arguments (JSON text, in order).
    ToolCallArgumentsDelta {
        id: String,
        delta: String,
    },
    /// A call with its whole arguments.
    ToolCallCompleted {
        call: ToolCall,
    },
    Usage {
        usage: Usage,
    },
    Finished {
        reason: FinishReason,
    },
    /// The provider is alive but sent no content (e.g. a ping). Resets the
    /// idle timeout; [`crate::Model::stream`] does not pass it on.
    KeepAlive,
    /// An attempt failed before any content; the next starts after `delay`.
    Retrying {
        attempt: u32,
        delay: Duration,
        code: String,
    },
    /// Retries ran out: the rest of the answer comes from the configured
    /// fallback model (its configured name). Cost it with that model's prices.
    FellBack {
        model: String,
        code: String,
    },
}

impl StreamEvent {
    /// Whether this event carries part of the answer (after it, no retry).
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            StreamEvent::TextDelta { .. }
                | StreamEvent::ReasoningDelta { .. }
                | StreamEvent::ToolCallStarted { .. }
                | StreamEvent::ToolCallArgumentsDelta { .. }
                | StreamEvent::ToolCallCompleted { .. }
        )
    }
}

/// Tokens one model call used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    /// All output, reasoning included.
    pub output_tokens: u64,
    /// The reasoning share of `output_tokens`, when the provider says.
    pub reasoning_tokens: Option<u64>,
    /// Counted by us with tiktoken because the provider reported none.
    pub estimated: bool,
}

/// The sum of two calls' usage (a run makes several); estimated if either is.
impl std::ops::Add for Usage {
    type Output = Usage;

    fn add(self, other: Usage) -> Usage {
        Usage {
            input_tokens: self.input_tokens + other.input_tokens,
            output_tokens: self.output_tokens + other.output_tokens,
            reasoning_tokens: match (self.reasoning_tokens, other.reasoning_tokens) {
                (None, None) => None,
                (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
            },
            estimated: self.estimated || other.estimated,
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    /// The output budget ran out.
    Length,
    /// The model wants its tool calls run.
    ToolCalls,
    ContentFilter,
    /// Anything else the provider said, as it said it.
    Other(String),
}

impl FinishReason {
    /// The wire name, e.g. for `agent_completed.finish_reason`.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::Other(s) => s,
        }
    }
}
