//! AG-UI events as Chorus sends them: a small, closed set of the protocol's
//! event types, serialized the way the AG-UI 1.0 schemas expect.
//!
//! Field names are camelCase and the discriminator is `type` in
//! SCREAMING_SNAKE_CASE. Optional fields are omitted when absent, never
//! written as `null`: AG-UI clients reject `null` in optional fields.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The AG-UI protocol version these events follow (`RUN_STARTED.protocolVersion`).
pub const AGUI_PROTOCOL_VERSION: &str = "1.0";

/// One AG-UI event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AguiEvent {
    #[serde(rename_all = "camelCase")]
    RunStarted {
        thread_id: String,
        run_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        protocol_version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_run_id: Option<String>,
        /// `{"chorus": {"run_id": …, "agent_id": …}}`: Chorus's own ids for the run.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        metadata: Option<Value>,
    },
    #[serde(rename_all = "camelCase")]
    RunFinished {
        thread_id: String,
        run_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        outcome: Option<RunFinishedOutcome>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Vec<TokenUsage>>,
    },
    #[serde(rename_all = "camelCase")]
    RunError {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Vec<TokenUsage>>,
    },
    #[serde(rename_all = "camelCase")]
    TextMessageStart { message_id: String, role: TextRole },
    #[serde(rename_all = "camelCase")]
    TextMessageContent { message_id: String, delta: String },
    #[serde(rename_all = "camelCase")]
    TextMessageEnd { message_id: String },
    #[serde(rename_all = "camelCase")]
    ToolCallStart {
        tool_call_id: String,
        tool_call_name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parent_message_id: Option<String>,
    },
    #[serde(rename_all = "camelCase")]
    ToolCallArgs { tool_call_id: String, delta: String },
    #[serde(rename_all = "camelCase")]
    ToolCallEnd { tool_call_id: String },
    #[serde(rename_all = "camelCase")]
    ToolCallResult { message_id: String, tool_call_id: String, content: String, role: ToolRole },
    #[serde(rename_all = "camelCase")]
    ReasoningStart { message_id: String },
    #[serde(rename_all = "camelCase")]
    ReasoningMessageStart { message_id: String, role: ReasoningRole },
    #[serde(rename_all = "camelCase")]
    ReasoningMessageContent { message_id: String, delta: String },
    #[serde(rename_all = "camelCase")]
    ReasoningMessageEnd { message_id: String },
    #[serde(rename_all = "camelCase")]
    ReasoningEnd { message_id: String },
}

/// The role of a streamed text message; Chorus streams only the agent's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TextRole {
    Assistant,
}

/// `TOOL_CALL_RESULT.role`: always `tool`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolRole {
    Tool,
}

/// `REASONING_MESSAGE_START.role`: always `reasoning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningRole {
    Reasoning,
}

/// Why a run that did not fail ended (`RUN_FINISHED.outcome`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RunFinishedOutcome {
    /// Completed; `pendingToolCallIds` names frontend tool calls the client must answer.
    #[serde(rename_all = "camelCase")]
    Success {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pending_tool_call_ids: Option<Vec<String>>,
    },
    /// Stopped before it completed, without failing.
    Cancelled,
}

/// Token counts of one model (`usage[]` on the ending event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenUsage {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
}

/// An event with the time it was sent (`timestamp`, Unix milliseconds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AguiFrame {
    #[serde(flatten)]
    pub event: AguiEvent,
    pub timestamp: i64,
}

impl AguiEvent {
    /// The `type` as sent.
    pub fn type_name(&self) -> &'static str {
        match self {
            AguiEvent::RunStarted { .. } => "RUN_STARTED",
            AguiEvent::RunFinished { .. } => "RUN_FINISHED",
            AguiEvent::RunError { .. } => "RUN_ERROR",
            AguiEvent::TextMessageStart { .. } => "TEXT_MESSAGE_START",
            AguiEvent::TextMessageContent { .. } => "TEXT_MESSAGE_CONTENT",
            AguiEvent::TextMessageEnd { .. } => "TEXT_MESSAGE_END",
            AguiEvent::ToolCallStart { .. } => "TOOL_CALL_START",
            AguiEvent::ToolCallArgs { .. } => "TOOL_CALL_ARGS",
            AguiEvent::ToolCallEnd { .. } => "TOOL_CALL_END",
            AguiEvent::ToolCallResult { .. } => "TOOL_CALL_RESULT",
            AguiEvent::ReasoningStart { .. } => "REASONING_START",
            AguiEvent::ReasoningMessageStart { .. } => "REASONING_MESSAGE_START",
            AguiEvent::ReasoningMessageContent { .. } => "REASONING_MESSAGE_CONTENT",
            AguiEvent::ReasoningMessageEnd { .. } => "REASONING_MESSAGE_END",
            AguiEvent::ReasoningEnd { .. } => "REASONING_END",
        }
    }

    /// `RUN_FINISHED` or `RUN_ERROR`: nothing may follow it.
    pub fn is_terminal(&self) -> bool {
        matches!(self, AguiEvent::RunFinished { .. } | AguiEvent::RunError { .. })
    }

    /// The event as one SSE frame: `data: <json>` and a blank line.
    pub fn sse_frame(&self, timestamp_ms: i64) -> bytes::Bytes {
        let frame = AguiFrame { event: self.clone(), timestamp: timestamp_ms };
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(b"data: ");
        // Every field is a string, number, array or object of those: this cannot fail.
        if serde_json::to_writer(&mut out, &frame).is_err() {
            out.truncate(6);
            out.extend_from_slice(br#"{"type":"RUN_ERROR","message":"event could not be encoded","code":"internal"}"#);
        }
        out.extend_from_slice(b"\n\n");
        bytes::Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_nulls(v: &Value) -> bool {
        match v {
            Value::Null => false,
            Value::Array(a) => a.iter().all(no_nulls),
            Value::Object(o) => o.values().all(no_nulls),
            _ => true,
        }
    }

    #[test]
    fn serializes_as_agui_expects_and_omits_absent_fields() {
        let start = AguiEvent::RunStarted {
            thread_id: "room:c1".into(),
            run_id: "r1".into(),
            protocol_version: None,
            parent_run_id: None,
            metadata: None,
        };
        assert_eq!(
            serde_json::to_value(&start).unwrap(),
            json!({"type":"RUN_STARTED","threadId":"room:c1","runId":"r1"})
        );

        let tool = AguiEvent::ToolCallStart {
            tool_call_id: "c1".into(),
            tool_call_name: "clock".into(),
            parent_message_id: None,
        };
        assert_eq!(
            serde_json::to_value(&tool).unwrap(),
            json!({"type":"TOOL_CALL_START","toolCallId":"c1","toolCallName":"clock"})
        );

        let done = AguiEvent::RunFinished {
            thread_id: "t".into(),
            run_id: "r".into(),
            outcome: Some(RunFinishedOutcome::Success { pending_tool_call_ids: Some(vec!["c9".into()]) }),
            usage: Some(vec![TokenUsage {
                provider: None,
                model: Some("demo".into()),
                input_tokens: 3,
                output_tokens: 4,
                total_tokens: 7,
            }]),
        };
        assert_eq!(
            serde_json::to_value(&done).unwrap(),
            json!({"type":"RUN_FINISHED","threadId":"t","runId":"r",
                   "outcome":{"type":"success","pendingToolCallIds":["c9"]},
                   "usage":[{"model":"demo","inputTokens":3,"outputTokens":4,"totalTokens":7}]})
        );
        let cancelled = AguiEvent::RunFinished {
            thread_id: "t".into(),
            run_id: "r".into(),
            outcome: Some(RunFinishedOutcome::Cancelled),
            usage: None,
        };
        assert_eq!(serde_json::to_value(&cancelled).unwrap()["outcome"], json!({"type":"cancelled"}));

        let err = AguiEvent::RunError { message: "busy".into(), code: None, usage: None };
        assert_eq!(serde_json::to_value(&err).unwrap(), json!({"type":"RUN_ERROR","message":"busy"}));

        let reasoning = AguiEvent::ReasoningMessageStart { message_id: "m".into(), role: ReasoningRole::Reasoning };
        assert_eq!(
            serde_json::to_value(&reasoning).unwrap(),
            json!({"type":"REASONING_MESSAGE_START","messageId":"m","role":"reasoning"})
        );
        let result = AguiEvent::ToolCallResult {
            message_id: "m".into(),
            tool_call_id: "c".into(),
            content: "12:00".into(),
            role: ToolRole::Tool,
        };
        assert_eq!(
            serde_json::to_value(&result).unwrap(),
            json!({"type":"TOOL_CALL_RESULT","messageId":"m","toolCallId":"c","content":"12:00","role":"tool"})
        );

        for e in [start, tool, done, cancelled, err, reasoning, result] {
            let v = serde_json::to_value(&e).unwrap();
            assert!(no_nulls(&v), "{v}");
            assert_eq!(v["type"], e.type_name());
            let back: AguiEvent = serde_json::from_value(v).unwrap();
            assert_eq!(back, e);
        }
    }

    #[test]
    fn sse_frame_is_one_data_line_with_a_timestamp() {
        let e = AguiEvent::TextMessageContent { message_id: "m".into(), delta: "a\nb".into() };
        let frame = e.sse_frame(1_700_000_000_123);
        let text = std::str::from_utf8(&frame).unwrap();
        assert!(text.starts_with("data: {") && text.ends_with("}\n\n"), "{text}");
        assert_eq!(text.matches('\n').count(), 2, "newlines inside the JSON are escaped");
        let v: Value = serde_json::from_str(&text[6..text.len() - 2]).unwrap();
        assert_eq!(
            v,
            json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"a\nb","timestamp":1_700_000_000_123_i64})
        );
    }
}
