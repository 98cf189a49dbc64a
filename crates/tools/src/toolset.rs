//! The tools one agent may use in one run: their specs for the model, and
//! the one way to call them (lookup, argument validation, size bound,
//! metrics, panic containment).

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use futures_util::FutureExt;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::metrics::{ToolMetrics, UNKNOWN_TOOL_LABEL};
use crate::tool::{Outcome, Tool, ToolResult};

/// What a model is told about one tool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolSpec {
    /// The name agents list, e.g. `everything.echo`.
    pub name: String,
    /// The same tool under a name every provider accepts (`[A-Za-z0-9_-]`,
    /// at most 64 characters, unique in this set), e.g. `everything__echo`.
    /// Send this one to the model; `Toolset::call` takes either.
    pub model_name: String,
    pub description: String,
    /// JSON Schema of the arguments object.
    pub parameters: Arc<Value>,
}

/// Longest name providers accept for a function.
pub const MODEL_NAME_MAX: usize = 64;

#[derive(Clone)]
pub struct Toolset {
    specs: Arc<[ToolSpec]>,
    tools: Arc<[Arc<dyn Tool>]>,
    max_result_bytes: usize,
    metrics: ToolMetrics,
}

impl std::fmt::Debug for Toolset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toolset").field("specs", &self.specs).finish()
    }
}

/// `server.tool` → `server__tool`; anything outside `[A-Za-z0-9_-]` → `_`.
fn model_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 1);
    for c in name.chars() {
        match c {
            '.' => out.push_str("__"),
            c if c.is_ascii_alphanumeric() || c == '_' || c == '-' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.truncate(MODEL_NAME_MAX);
    out
}

impl Toolset {
    pub(crate) fn new(tools: Vec<Arc<dyn Tool>>, max_result_bytes: usize, metrics: ToolMetrics) -> Self {
        let mut taken = HashSet::new();
        let specs: Vec<ToolSpec> = tools
            .iter()
            .map(|tool| {
                let base = model_name(tool.name());
                let mut candidate = base.clone();
                let mut n = 2;
                while !taken.insert(candidate.clone()) {
                    let suffix = format!("_{n}");
                    let mut stem = base.clone();
                    stem.truncate(MODEL_NAME_MAX - suffix.len());
                    candidate = stem + &suffix;
                    n += 1;
                }
                ToolSpec {
                    name: tool.name().to_owned(),
                    model_name: candidate,
                    description: tool.description().to_owned(),
                    parameters: tool.schema().value().clone(),
                }
            })
            .collect();
        Self { specs: specs.into(), tools: tools.into(), max_result_bytes, metrics }
    }

    /// The tools, in the order the agent lists them.
    pub fn specs(&self) -> &[ToolSpec] {
        &self.specs
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    /// A tool by its name or its model name.
    pub fn spec(&self, name: &str) -> Option<&ToolSpec> {
        self.position(name).map(|i| &self.specs[i])
    }

    fn position(&self, name: &str) -> Option<usize> {
        self.specs.iter().position(|s| s.model_name == name || s.name == name)
    }

    /// Calls a tool by its name or model name. Never fails: an unknown tool,
    /// arguments that do not match the schema, a timeout, a cancel or a tool
    /// that panics all come back as an error result for the model.
    ///
    /// `arguments` should be a JSON object; `null` counts as `{}`, and a
    /// string holding a JSON object (as some providers send) is parsed.
    pub async fn call(&self, name: &str, arguments: Value, cancel: &CancellationToken) -> ToolResult {
        let started = Instant::now();
        let Some(i) = self.position(name) else {
            let known: Vec<&str> = self.specs.iter().map(|s| s.model_name.as_str()).collect();
            let message = if known.is_empty() {
                format!("there is no tool named {name:?}; no tools are available")
            } else {
                format!("there is no tool named {name:?}; the tools are: {}", known.join(", "))
            };
            let result = ToolResult::error(Outcome::UnknownTool, message).bounded(self.max_result_bytes);
            self.metrics.record_call(UNKNOWN_TOOL_LABEL, result.outcome, started.elapsed().as_secs_f64());
            return result;
        };
        let tool = &self.tools[i];
        let result = match self.prepare(tool.as_ref(), arguments) {
            Err(result) => result,
            Ok(_) if cancel.is_cancelled() => ToolResult::error(Outcome::Cancelled, "the call was cancelled"),
            Ok(args) => AssertUnwindSafe(tool.call(args, cancel.clone())).catch_unwind().await.unwrap_or_else(|_| {
                tracing::error!(tool = %tool.name(), "tool panicked");
                ToolResult::error(Outcome::ToolError, "the tool failed unexpectedly")
            }),
        };
        let result = result.bounded(self.max_result_bytes);
        self.metrics.record_call(&self.specs[i].name, result.outcome, started.elapsed().as_secs_f64());
        result
    }

    fn prepare(&self, tool: &dyn Tool, arguments: Value) -> Result<Map<String, Value>, ToolResult> {
        let invalid = |message: String| ToolResult::error(Outcome::InvalidArguments, message);
        let arguments = match arguments {
            Value::Null => Value::Object(Map::new()),
            Value::String(s) if s.trim().is_empty() => Value::Object(Map::new()),
            Value::String(s) => serde_json::from_str(&s)
                .map_err(|e| invalid(format!("the arguments are not valid JSON: {e}")))?,
            other => other,
        };
        tool.schema()
            .validate(&arguments)
            .map_err(|problems| invalid(format!("the arguments do not match the tool's schema: {problems}")))?;
        match arguments {
            Value::Object(map) => Ok(map),
            _ => Err(invalid("the arguments must be a JSON object".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_safe_and_short() {
        assert_eq!(model_name("clock"), "clock");
        assert_eq!(model_name("everything.get-sum"), "everything__get-sum");
        assert_eq!(model_name("fs.read/file é"), "fs__read_file__");
        assert_eq!(model_name(&format!("s.{}", "x".repeat(100))).len(), MODEL_NAME_MAX);
    }
}
