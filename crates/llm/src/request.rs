//! What a caller asks a model: the conversation, the tools it may call and
//! the output budget. Provider-neutral; each provider maps it to its wire format.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One call to a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The provider's model id (e.g. `gpt-4o-mini`). [`crate::Model::request`]
    /// fills it from the configuration; the fallback switch replaces it.
    pub model: String,
    /// Persona, quirks and summary: everything that is not a turn.
    pub system: Option<String>,
    /// The turns, oldest first.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<ToolDefinition>,
    /// Most tokens the model may produce in this call.
    pub max_output_tokens: u32,
}

impl ChatRequest {
    /// The last message a user wrote, if any.
    pub fn last_user_text(&self) -> Option<&str> {
        self.messages.iter().rev().find_map(|m| match m {
            Message::User { text, .. } => Some(text.as_str()),
            _ => None,
        })
    }
}

/// One turn of the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// Someone other than the model: a person or another agent. A `name` is
    /// put in front of the text as `name: text` for every provider (not all of
    /// them have a field for it), so callers must not prefix it themselves.
    User { name: Option<String>, text: String },
    /// What the model said earlier: text and the tool calls it made.
    Assistant {
        text: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    /// The answer to one of the model's tool calls.
    ToolResult(ToolResult),
}

impl Message {
    /// A user message without a speaker name.
    pub fn user(text: impl Into<String>) -> Self {
        Message::User {
            name: None,
            text: text.into(),
        }
    }

    /// A user message from a named speaker.
    pub fn user_named(name: impl Into<String>, text: impl Into<String>) -> Self {
        Message::User {
            name: Some(name.into()),
            text: text.into(),
        }
    }

    /// What the model said, without tool calls.
    pub fn assistant(text: impl Into<String>) -> Self {
        Message::Assistant {
            text: text.into(),
            tool_calls: Vec::new(),
        }
    }

    /// The user text with the speaker's name in front, as providers see it.
    pub(crate) fn user_text_with_name(name: Option<&str>, text: &str) -> String {
        match name {
            Some(name) if !name.is_empty() => format!("{name}: {text}"),
            _ => text.to_owned(),
        }
    }
}

/// A call the model made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The provider's id for the call; a result must name it.
    pub id: String,
    pub name: String,
    /// The arguments as JSON (an object when the model produced valid JSON,
    /// else the raw text as a JSON string).
    pub arguments: Value,
}

/// The outcome of a tool call, sent back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    pub call_id: String,
    /// The tool's name (Gemini needs it to match the call).
    pub name: String,
    pub content: String,
    /// The tool failed; `content` says why. The model sees it and goes on.
    #[serde(default)]
    pub is_error: bool,
}

/// A tool the model may call: its name, what it does, and its arguments as a
/// JSON Schema object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolDefinition {
    pub name: String,
    pub description: String,
    pub input_schema: Value,
}
