//! The `Tool` seam: what every tool (built-in, MCP, or one a caller adds)
//! offers to a model, and what a call gives back.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// A tool a model can call.
///
/// `call` receives arguments that already passed `schema()`; it answers with a
/// [`ToolResult`] for every outcome, errors included, because a failed call is
/// something the model reads and reacts to, not a reason to stop the run.
/// A tool that waits on something must stop when `cancel` fires.
#[async_trait]
pub trait Tool: Send + Sync + 'static {
    /// The name agents list and models call, e.g. `clock` or `everything.echo`.
    fn name(&self) -> &str;
    /// What the tool does, for the model.
    fn description(&self) -> &str;
    /// The JSON Schema of the arguments object.
    fn schema(&self) -> &ToolSchema;
    async fn call(&self, arguments: Map<String, Value>, cancel: CancellationToken) -> ToolResult;
}

/// A JSON Schema for a tool's arguments, compiled once.
#[derive(Clone)]
pub struct ToolSchema {
    value: Arc<Value>,
    validator: Arc<jsonschema::Validator>,
}

/// A schema that is not a usable JSON Schema object.
#[derive(Debug, thiserror::Error)]
#[error("invalid tool schema: {0}")]
pub struct SchemaError(String);

/// Most validation problems listed back to the model for one call.
const ERRORS_SHOWN: usize = 5;

impl ToolSchema {
    /// Compiles `value`; its `$schema` picks the draft (2020-12 when absent).
    /// References outside the document are not fetched.
    pub fn new(value: Value) -> Result<Self, SchemaError> {
        if !value.is_object() {
            return Err(SchemaError("a tool schema must be a JSON object".into()));
        }
        let validator = jsonschema::options().build(&value).map_err(|e| SchemaError(e.to_string()))?;
        Ok(Self { value: Arc::new(value), validator: Arc::new(validator) })
    }

    pub fn value(&self) -> &Arc<Value> {
        &self.value
    }

    /// `Err` carries a short description of every problem (at most a few),
    /// each with the JSON pointer of the offending argument.
    pub fn validate(&self, arguments: &Value) -> Result<(), String> {
        let mut problems = Vec::new();
        let mut more = 0usize;
        for error in self.validator.iter_errors(arguments) {
            if problems.len() < ERRORS_SHOWN {
                let at = error.instance_path().to_string();
                let at = if at.is_empty() { "arguments".to_owned() } else { at };
                problems.push(format!("{at}: {error}"));
            } else {
                more += 1;
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        if more > 0 {
            problems.push(format!("and {more} more"));
        }
        Err(problems.join("; "))
    }
}

impl fmt::Debug for ToolSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ToolSchema").field(&self.value).finish()
    }
}

/// How a call ended. Every variant but `Ok` is an error result for the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    /// The tool ran and reported a failure (an MCP result with `isError`,
    /// a calculator division by zero).
    ToolError,
    /// The arguments did not match the tool's schema; the tool did not run.
    InvalidArguments,
    /// No tool of that name is offered to this agent.
    UnknownTool,
    /// The tool exists but cannot be reached now (its MCP server is not connected).
    Unavailable,
    /// No answer in time (no progress within the idle timeout, or past the cap).
    Timeout,
    /// The caller cancelled the call.
    Cancelled,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Ok,
        Outcome::ToolError,
        Outcome::InvalidArguments,
        Outcome::UnknownTool,
        Outcome::Unavailable,
        Outcome::Timeout,
        Outcome::Cancelled,
    ];

    pub fn is_error(self) -> bool {
        self != Outcome::Ok
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::ToolError => "tool_error",
            Outcome::InvalidArguments => "invalid_arguments",
            Outcome::UnknownTool => "unknown_tool",
            Outcome::Unavailable => "unavailable",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// What a call gives back: the content for the model and how the call ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolResult {
    pub outcome: Outcome,
    /// The result: any JSON value for a success, a message string for an error.
    pub content: Value,
    /// The content was cut to the configured size; the text ends with a marker.
    pub truncated: bool,
}

impl ToolResult {
    pub fn ok(content: impl Into<Value>) -> Self {
        Self { outcome: Outcome::Ok, content: content.into(), truncated: false }
    }

    /// An error result; `outcome` should not be `Ok`.
    pub fn error(outcome: Outcome, message: impl Into<String>) -> Self {
        Self { outcome, content: Value::String(message.into()), truncated: false }
    }

    pub fn is_error(&self) -> bool {
        self.outcome.is_error()
    }

    /// The content as the text a model reads: a string as it is, any other
    /// value as compact JSON.
    pub fn text(&self) -> Cow<'_, str> {
        match &self.content {
            Value::String(s) => Cow::Borrowed(s),
            other => Cow::Owned(other.to_string()),
        }
    }

    /// Cuts the content to at most `max_bytes` of text (plus a marker saying
    /// how much was kept); a cut JSON value becomes a string.
    pub fn bounded(mut self, max_bytes: usize) -> Self {
        let text = self.text();
        let total = text.len();
        if total <= max_bytes {
            return self;
        }
        let mut end = max_bytes;
        while end > 0 && !text.is_char_boundary(end) {
            end -= 1;
        }
        let cut = format!("{}\n[truncated: {end} of {total} bytes shown]", &text[..end]);
        self.content = Value::String(cut);
        self.truncated = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounded_cuts_on_a_char_boundary_with_a_marker() {
        let r = ToolResult::ok("héllo wörld").bounded(2);
        assert!(r.truncated);
        assert_eq!(r.content, json!("h\n[truncated: 1 of 13 bytes shown]"));
        let r = ToolResult::ok(json!({"a": [1, 2, 3]})).bounded(5);
        assert_eq!(r.content, json!("{\"a\":\n[truncated: 5 of 13 bytes shown]"));
        let small = ToolResult::ok(json!({"a": 1}));
        assert_eq!(small.clone().bounded(100), small);
    }

    #[test]
    fn schema_errors_name_the_argument() {
        let schema = ToolSchema::new(json!({
            "type": "object",
            "properties": {"a": {"type": "number"}},
            "required": ["a"],
            "additionalProperties": false
        }))
        .unwrap();
        assert!(schema.validate(&json!({"a": 1.5})).is_ok());
        let e = schema.validate(&json!({"a": "x"})).unwrap_err();
        assert!(e.starts_with("/a: "), "{e}");
        let e = schema.validate(&json!({"b": 1})).unwrap_err();
        assert!(e.contains("\"a\" is a required property"), "{e}");
        assert!(ToolSchema::new(json!(true)).is_err());
        assert!(ToolSchema::new(json!({"type": 12})).is_err());
    }
}
