//! `RunAgentInput`: what an AG-UI client POSTs to run an agent.
//!
//! Parsed into typed values and checked once here, so the endpoint gets
//! either a usable input or an error naming the offending field.

use serde::Deserialize;
use serde_json::Value;

/// Most messages one input may carry.
pub const MAX_INPUT_MESSAGES: usize = 1_000;
/// Most frontend tools one input may offer.
pub const MAX_INPUT_TOOLS: usize = 32;
/// Longest `threadId`, `runId`, message id or tool call id.
const MAX_ID_LEN: usize = 200;
/// Longest frontend tool description.
const MAX_TOOL_DESCRIPTION: usize = 1_024;
/// Longest frontend tool name (what providers accept).
const MAX_TOOL_NAME: usize = 64;

/// A checked `RunAgentInput`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunAgentInput {
    pub thread_id: String,
    pub run_id: String,
    pub parent_run_id: Option<String>,
    /// The client's agent state; Chorus passes it on untouched.
    pub state: Option<Value>,
    pub messages: Vec<InputMessage>,
    /// Frontend tools: offered to the model, executed by the client.
    pub tools: Vec<FrontendTool>,
    /// Ambient information (`description`, `value`) for the run.
    pub context: Vec<(String, String)>,
    pub forwarded_props: Option<Value>,
}

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputRole {
    Developer,
    System,
    Assistant,
    User,
    Tool,
    Reasoning,
}

/// One message of the conversation, as text.
#[derive(Debug, Clone, PartialEq)]
pub struct InputMessage {
    pub id: String,
    pub role: InputRole,
    /// The text content (text parts joined); empty for an assistant turn of only tool calls.
    pub text: String,
    /// Calls an assistant message made.
    pub tool_calls: Vec<ToolCallInput>,
    /// For `tool` messages: the call answered.
    pub tool_call_id: Option<String>,
    /// For `tool` messages: the client's error, if the tool failed.
    pub error: Option<String>,
}

/// A call recorded in an assistant message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCallInput {
    pub id: String,
    pub name: String,
    /// JSON text, as the model produced it.
    pub arguments: String,
}

/// A tool the client executes.
#[derive(Debug, Clone, PartialEq)]
pub struct FrontendTool {
    pub name: String,
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
}

/// Why an input was refused: the field (a JSON path) and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    #[error("{field}: {reason}")]
    Field { field: String, reason: String },
}

impl InputError {
    fn field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        InputError::Field { field: field.into(), reason: reason.into() }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInput {
    thread_id: String,
    run_id: String,
    #[serde(default)]
    parent_run_id: Option<String>,
    #[serde(default)]
    state: Option<Value>,
    messages: Vec<RawMessage>,
    #[serde(default)]
    tools: Vec<RawTool>,
    #[serde(default)]
    context: Vec<RawContext>,
    #[serde(default)]
    forwarded_props: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMessage {
    id: String,
    role: String,
    #[serde(default)]
    content: Option<Value>,
    #[serde(default)]
    tool_calls: Option<Vec<RawToolCall>>,
    #[serde(default)]
    tool_call_id: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct RawToolCall {
    id: String,
    function: RawFunction,
}

#[derive(Deserialize)]
struct RawFunction {
    name: String,
    arguments: String,
}

#[derive(Deserialize)]
struct RawTool {
    name: String,
    description: String,
    #[serde(default)]
    parameters: Option<Value>,
}

#[derive(Deserialize)]
struct RawContext {
    description: String,
    value: String,
}

impl RunAgentInput {
    /// Parses and checks a request body.
    pub fn parse(body: &[u8]) -> Result<Self, InputError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| InputError::Malformed(e.to_string()))?;
        if !value.is_object() {
            return Err(InputError::field("body", "must be a RunAgentInput object"));
        }
        let raw: RawInput = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            InputError::field(if path == "." { "body".to_owned() } else { path }, e.into_inner().to_string())
        })?;
        raw.check()
    }
}

fn check_id(field: &str, id: &str) -> Result<(), InputError> {
    if id.is_empty() || id.len() > MAX_ID_LEN || id.chars().any(char::is_control) {
        return Err(InputError::field(field, format!("must be 1 to {MAX_ID_LEN} bytes without control characters")));
    }
    Ok(())
}

/// The text of a message's `content`: a string, or the text parts of an array.
fn content_text(field: &str, content: Option<Value>) -> Result<String, InputError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match (part.get("type").and_then(Value::as_str), part.get("text").and_then(Value::as_str)) {
                    (Some("text"), Some(t)) => text.push_str(t),
                    (Some(kind), _) => {
                        return Err(InputError::field(
                            format!("{field}[{i}]"),
                            format!("`{kind}` parts are not supported; send text"),
                        ));
                    }
                    _ => {
                        return Err(InputError::field(format!("{field}[{i}]"), "must be a content part with a `type`"));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(InputError::field(field, "must be a string or an array of content parts")),
    }
}

fn valid_tool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOOL_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

impl RawInput {
    fn check(self) -> Result<RunAgentInput, InputError> {
        check_id("threadId", &self.thread_id)?;
        check_id("runId", &self.run_id)?;
        if let Some(parent) = &self.parent_run_id {
            check_id("parentRunId", parent)?;
        }
        if self.messages.len() > MAX_INPUT_MESSAGES {
            return Err(InputError::field("messages", format!("at most {MAX_INPUT_MESSAGES} messages")));
        }
        if self.tools.len() > MAX_INPUT_TOOLS {
            return Err(InputError::field("tools", format!("at most {MAX_INPUT_TOOLS} tools")));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in self.messages.into_iter().enumerate() {
            let at = |f: &str| format!("messages[{i}].{f}");
            check_id(&at("id"), &m.id)?;
            let role = match m.role.as_str() {
                "developer" => InputRole::Developer,
                "system" => InputRole::System,
                "assistant" => InputRole::Assistant,
                "user" => InputRole::User,
                "tool" => InputRole::Tool,
                "reasoning" => InputRole::Reasoning,
                // UI-only progress; not part of the conversation a model sees.
                "activity" => continue,
                other => {
                    return Err(InputError::field(at("role"), format!("unknown role `{other}`")));
                }
            };
            let text = content_text(&at("content"), m.content)?;
            let mut tool_calls = Vec::new();
            for (j, c) in m.tool_calls.unwrap_or_default().into_iter().enumerate() {
                check_id(&format!("messages[{i}].toolCalls[{j}].id"), &c.id)?;
                tool_calls.push(ToolCallInput { id: c.id, name: c.function.name, arguments: c.function.arguments });
            }
            if role == InputRole::Tool {
                match &m.tool_call_id {
                    Some(id) => check_id(&at("toolCallId"), id)?,
                    None => {
                        return Err(InputError::field(at("toolCallId"), "is required for a tool message"));
                    }
                }
            }
            messages.push(InputMessage {
                id: m.id,
                role,
                text,
                tool_calls,
                tool_call_id: m.tool_call_id,
                error: m.error,
            });
        }
        let mut tools: Vec<FrontendTool> = Vec::with_capacity(self.tools.len());
        for (i, t) in self.tools.into_iter().enumerate() {
            if !valid_tool_name(&t.name) {
                return Err(InputError::field(
                    format!("tools[{i}].name"),
                    format!("must be 1 to {MAX_TOOL_NAME} ASCII letters, digits, `_` or `-`"),
                ));
            }
            if tools.iter().any(|x| x.name == t.name) {
                return Err(InputError::field(format!("tools[{i}].name"), format!("`{}` is offered twice", t.name)));
            }
            if t.description.chars().count() > MAX_TOOL_DESCRIPTION {
                return Err(InputError::field(
                    format!("tools[{i}].description"),
                    format!("at most {MAX_TOOL_DESCRIPTION} characters"),
                ));
            }
            let parameters = match t.parameters {
                None | Some(Value::Null) => serde_json::json!({"type": "object", "properties": {}}),
                Some(p @ Value::Object(_)) => p,
                Some(_) => {
                    return Err(InputError::field(format!("tools[{i}].parameters"), "must be a JSON Schema object"));
                }
            };
            tools.push(FrontendTool { name: t.name, description: t.description, parameters });
        }
        let context = self.context.into_iter().map(|c| (c.description, c.value)).collect();
        Ok(RunAgentInput {
            thread_id: self.thread_id,
            run_id: self.run_id,
            parent_run_id: self.parent_run_id,
            state: self.state.filter(|s| !s.is_null()),
            messages,
            tools,
            context,
            forwarded_props: self.forwarded_props.filter(|p| !p.is_null()),
        })
    }
}

impl RunAgentInput {
    /// The newest user message: the one this run answers.
    pub fn last_user_message(&self) -> Option<&InputMessage> {
        self.messages.iter().rev().find(|m| m.role == InputRole::User)
    }

    /// Results the client sends for frontend tool calls of an earlier run:
    /// the `tool` messages that end the conversation (a client runs the
    /// agent again right after executing them).
    pub fn tool_results(&self) -> &[InputMessage] {
        let start = self.messages.iter().rposition(|m| m.role != InputRole::Tool).map_or(0, |i| i + 1);
        &self.messages[start..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<RunAgentInput, InputError> {
        RunAgentInput::parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn parses_what_http_agent_sends() {
        let input = parse(json!({
            "threadId": "room:c1", "runId": "run-1", "protocolVersion": "1.0",
            "state": {}, "forwardedProps": {}, "context": [{"description":"page","value":"settings"}],
            "tools": [{"name":"change_background","description":"Change the page background","parameters":{"type":"object","properties":{"color":{"type":"string"}}}}],
            "messages": [
                {"id":"u1","role":"user","content":"What time is it?"},
                {"id":"a1","role":"assistant","toolCalls":[{"id":"c1","type":"function","function":{"name":"change_background","arguments":"{\"color\":\"blue\"}"}}]},
                {"id":"t1","role":"tool","toolCallId":"c1","content":"done"},
                {"id":"u2","role":"user","content":[{"type":"text","text":"And "},{"type":"text","text":"now?"}]},
                {"id":"x1","role":"activity","activityType":"progress","content":{"pct":50}}
            ]
        }))
        .unwrap();
        assert_eq!(input.thread_id, "room:c1");
        assert_eq!(input.messages.len(), 4, "activity messages are left out");
        assert_eq!(input.last_user_message().unwrap().text, "And now?");
        assert_eq!(input.messages[1].tool_calls[0].arguments, r#"{"color":"blue"}"#);
        assert_eq!(input.tools[0].name, "change_background");
        assert_eq!(input.context, vec![("page".to_owned(), "settings".to_owned())]);
        assert!(input.tool_results().is_empty(), "a user turn came after the tool message");
        let resumed = parse(json!({"threadId":"t","runId":"r","messages":[
            {"id":"a1","role":"assistant","toolCalls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
            {"id":"t1","role":"tool","toolCallId":"c1","content":"ok"}]}))
        .unwrap();
        assert_eq!(resumed.tool_results().iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["ok"]);
        assert!(resumed.last_user_message().is_none());
        let minimal = parse(json!({"threadId":"t","runId":"r","messages":[],"state":null})).unwrap();
        assert!(minimal.state.is_none() && minimal.tools.is_empty());
    }

    #[test]
    fn names_the_field_at_fault() {
        let field = |v: Value| match parse(v) {
            Err(InputError::Field { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(json!({"runId":"r","messages":[]})), "body");
        assert_eq!(field(json!({"threadId":"","runId":"r","messages":[]})), "threadId");
        assert_eq!(field(json!({"threadId":"t","runId":7,"messages":[]})), "runId");
        assert_eq!(
            field(json!({"threadId":"t","runId":"r","messages":[{"id":"m","role":"robot","content":"x"}]})),
            "messages[0].role"
        );
        assert_eq!(
            field(
                json!({"threadId":"t","runId":"r","messages":[{"id":"m","role":"user","content":[{"type":"image","source":{}}]}]})
            ),
            "messages[0].content[0]"
        );
        assert_eq!(
            field(json!({"threadId":"t","runId":"r","messages":[{"id":"m","role":"tool","content":"x"}]})),
            "messages[0].toolCallId"
        );
        assert_eq!(
            field(json!({"threadId":"t","runId":"r","messages":[],"tools":[{"name":"a b","description":""}]})),
            "tools[0].name"
        );
        assert_eq!(
            field(
                json!({"threadId":"t","runId":"r","messages":[],"tools":[{"name":"a","description":""},{"name":"a","description":""}]})
            ),
            "tools[1].name"
        );
        assert_eq!(
            field(
                json!({"threadId":"t","runId":"r","messages":[],"tools":[{"name":"a","description":"","parameters":[1]}]})
            ),
            "tools[0].parameters"
        );
        let many: Vec<Value> =
            (0..=MAX_INPUT_TOOLS).map(|i| json!({"name": format!("t{i}"), "description": ""})).collect();
        assert_eq!(field(json!({"threadId":"t","runId":"r","messages":[],"tools":many})), "tools");
        assert!(matches!(RunAgentInput::parse(b"{not json"), Err(InputError::Malformed(_))));
        assert!(matches!(RunAgentInput::parse(b"[]"), Err(InputError::Field { .. })));
    }
}
