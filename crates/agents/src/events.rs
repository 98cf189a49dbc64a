//! A run's events as they go on the channel's `room:` stream: what each one
//! says, and the header every one carries (`run_id`, `thread_id`,
//! `agent_id`, `seq`). The field lists are the event catalog's
//! (`chorus_protocol::EventType::schema`); a test checks every shape here
//! against it.

use chorus_protocol::{EventType, Payload, RunErrorCode};
use serde::Serialize;
use serde_json::Value;

/// Tokens and cost on an ending.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct UsageView {
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Counted with a tokenizer because the provider reported none.
    pub estimated: bool,
}

/// A non-terminal event of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// Accepted; `position` counts the person's waiting runs up to this one.
    Queued { position: u32, trigger_message_id: Option<String> },
    Started {
        model: String,
        provider: String,
        trigger_message_id: Option<String>,
        triggered_by: Option<String>,
        parent_run_id: Option<String>,
        hop: i64,
    },
    /// The next piece of visible reasoning.
    Thinking { thought: String },
    /// The next piece of the answer; `message_id` is the id the stored answer will have.
    TextDelta { message_id: String, delta: String },
    ToolExecuting { call_id: String, tool: String, arguments: Value },
    ToolCompleted { call_id: String, tool: String, result: Value, is_error: bool, duration_ms: u64 },
}

/// How a run ends: exactly one of these per run.
#[derive(Debug, Clone, PartialEq)]
pub enum Ending {
    Completed { text: String, finish_reason: String, usage: UsageView, cost_usd: f64, model: String },
    Failed { code: RunErrorCode, message: String, usage: Option<UsageView>, cost_usd: Option<f64> },
}

impl Ending {
    pub fn failed(code: RunErrorCode, message: impl Into<String>) -> Self {
        Ending::Failed { code, message: message.into(), usage: None, cost_usd: None }
    }

    pub fn code(&self) -> Option<RunErrorCode> {
        match self {
            Ending::Completed { .. } => None,
            Ending::Failed { code, .. } => Some(*code),
        }
    }

    /// The label of metrics and logs: `completed` or the error code.
    pub fn label(&self) -> &'static str {
        match self {
            Ending::Completed { .. } => "completed",
            Ending::Failed { code, .. } => code.as_str(),
        }
    }
}

/// The header of every run event.
#[derive(Debug, Clone, Copy)]
pub struct RunHeader<'a> {
    pub run_id: &'a str,
    /// The channel's stream name (`room:<channel id>`).
    pub thread_id: &'a str,
    pub agent_id: &'a str,
    pub seq: i64,
}

/// `seq` comes last: a run's events then share their header and most of
/// their body as one prefix, which channel history keeps once (a delta then
/// costs its piece and its number).
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    run_id: &'a str,
    thread_id: &'a str,
    agent_id: &'a str,
    #[serde(flatten)]
    body: T,
    seq: i64,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    Queued {
        position: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        trigger_message_id: Option<&'a str>,
    },
    Started {
        model: &'a str,
        provider: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        trigger_message_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        triggered_by: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        parent_run_id: Option<&'a str>,
        hop: i64,
    },
    Thinking {
        thought: &'a str,
    },
    TextDelta {
        message_id: &'a str,
        delta: &'a str,
    },
    ToolExecuting {
        call_id: &'a str,
        tool: &'a str,
        arguments: &'a Value,
    },
    ToolCompleted {
        call_id: &'a str,
        tool: &'a str,
        result: &'a Value,
        is_error: bool,
        duration_ms: u64,
    },
    Completed {
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
        text: &'a str,
        finish_reason: &'a str,
        usage: UsageView,
        cost_usd: f64,
        model: &'a str,
    },
    Error {
        code: &'a str,
        message: &'a str,
        retryable: bool,
        /// The answer streamed before the ending, kept as a message.
        #[serde(skip_serializing_if = "Option::is_none")]
        message_id: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        usage: Option<UsageView>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
    },
}

impl RunEvent {
    pub fn event_type(&self) -> EventType {
        match self {
            RunEvent::Queued { .. } => EventType::AgentQueued,
            RunEvent::Started { .. } => EventType::AgentStarted,
            RunEvent::Thinking { .. } => EventType::AgentThinking,
            RunEvent::TextDelta { .. } => EventType::AgentTextDelta,
            RunEvent::ToolExecuting { .. } => EventType::ToolExecuting,
            RunEvent::ToolCompleted { .. } => EventType::ToolCompleted,
        }
    }

    fn body(&self) -> Body<'_> {
        match self {
            RunEvent::Queued { position, trigger_message_id } => {
                Body::Queued { position: *position, trigger_message_id: trigger_message_id.as_deref() }
            }
            RunEvent::Started { model, provider, trigger_message_id, triggered_by, parent_run_id, hop } => Body::Started {
                model,
                provider,
                trigger_message_id: trigger_message_id.as_deref(),
                triggered_by: triggered_by.as_deref(),
                parent_run_id: parent_run_id.as_deref(),
                hop: *hop,
            },
            RunEvent::Thinking { thought } => Body::Thinking { thought },
            RunEvent::TextDelta { message_id, delta } => Body::TextDelta { message_id, delta },
            RunEvent::ToolExecuting { call_id, tool, arguments } => Body::ToolExecuting { call_id, tool, arguments },
            RunEvent::ToolCompleted { call_id, tool, result, is_error, duration_ms } => {
                Body::ToolCompleted { call_id, tool, result, is_error: *is_error, duration_ms: *duration_ms }
            }
        }
    }

    /// The event's `data`.
    pub fn payload(&self, header: RunHeader<'_>) -> Payload {
        encode(header, self.body())
    }
}

/// The terminal event's type and `data`. `answer` is the stored answer's id
/// and text (the whole answer when completed; what was streamed otherwise).
pub fn terminal_payload(header: RunHeader<'_>, ending: &Ending, answer: Option<(&str, &str)>) -> (EventType, Payload) {
    match ending {
        Ending::Completed { text, finish_reason, usage, cost_usd, model } => {
            let body = Body::Completed {
                message_id: answer.map(|(id, _)| id),
                text,
                finish_reason,
                usage: *usage,
                cost_usd: *cost_usd,
                model,
            };
            (EventType::AgentCompleted, encode(header, body))
        }
        Ending::Failed { code, message, usage, cost_usd } => {
            let body = Body::Error {
                code: code.as_str(),
                message,
                retryable: code.retryable(),
                message_id: answer.map(|(id, _)| id),
                text: answer.map(|(_, text)| text),
                usage: *usage,
                cost_usd: *cost_usd,
            };
            (EventType::AgentError, encode(header, body))
        }
    }
}

fn encode(header: RunHeader<'_>, body: Body<'_>) -> Payload {
    let envelope = Envelope { run_id: header.run_id, thread_id: header.thread_id, agent_id: header.agent_id, seq: header.seq, body };
    match Payload::from_value(&envelope) {
        Ok(p) => p,
        // Plain structs of strings and numbers always serialize to an object.
        Err(e) => {
            tracing::error!(error = %e, run_id = header.run_id, "run event did not serialize");
            Payload::from_value(&serde_json::json!({
                "run_id": header.run_id, "thread_id": header.thread_id, "agent_id": header.agent_id, "seq": header.seq
            }))
            .unwrap_or_else(|_| Payload::empty())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const H: RunHeader<'static> = RunHeader { run_id: "r1", thread_id: "room:c1", agent_id: "a1", seq: 3 };

    fn check(event_type: EventType, payload: &Payload) -> Value {
        event_type.validate(payload).unwrap_or_else(|e| panic!("{}: {e}", event_type.as_str()));
        let v: Value = serde_json::from_slice(payload.as_bytes()).unwrap();
        assert_eq!((v["run_id"].as_str(), v["thread_id"].as_str(), v["agent_id"].as_str(), v["seq"].as_i64()), (Some("r1"), Some("room:c1"), Some("a1"), Some(3)));
        assert!(v.as_object().unwrap().values().all(|x| !x.is_null()), "no nulls: {v}");
        v
    }

    #[test]
    fn every_event_matches_the_catalog() {
        let events = [
            RunEvent::Queued { position: 2, trigger_message_id: Some("m1".into()) },
            RunEvent::Started {
                model: "demo".into(),
                provider: "demo".into(),
                trigger_message_id: None,
                triggered_by: Some("u1".into()),
                parent_run_id: None,
                hop: 0,
            },
            RunEvent::Thinking { thought: "hm".into() },
            RunEvent::TextDelta { message_id: "m2".into(), delta: "Hel".into() },
            RunEvent::ToolExecuting { call_id: "c".into(), tool: "clock".into(), arguments: json!({}) },
            RunEvent::ToolCompleted { call_id: "c".into(), tool: "clock".into(), result: json!("12:00"), is_error: false, duration_ms: 4 },
        ];
        for e in &events {
            check(e.event_type(), &e.payload(H));
        }
        let v = check(EventType::AgentTextDelta, &events[3].payload(H));
        assert_eq!((v["message_id"].as_str(), v["delta"].as_str()), (Some("m2"), Some("Hel")));

        let usage = UsageView { input_tokens: 10, output_tokens: 5, estimated: false };
        let done = Ending::Completed { text: "hi".into(), finish_reason: "stop".into(), usage, cost_usd: 0.5, model: "demo".into() };
        let (t, p) = terminal_payload(H, &done, Some(("m2", "hi")));
        assert_eq!(t, EventType::AgentCompleted);
        let v = check(t, &p);
        assert_eq!((v["message_id"].as_str(), v["usage"]["output_tokens"].as_i64()), (Some("m2"), Some(5)));

        let (t, p) = terminal_payload(H, &Ending::failed(RunErrorCode::Cancelled, "stopped"), Some(("m3", "He")));
        assert_eq!(t, EventType::AgentError);
        let v = check(t, &p);
        assert_eq!((v["code"].as_str(), v["retryable"].as_bool(), v["text"].as_str()), (Some("cancelled"), Some(false), Some("He")));
        let (_, p) = terminal_payload(H, &Ending::failed(RunErrorCode::QueueFull, "full"), None);
        let v = check(EventType::AgentError, &p);
        assert!(v.get("text").is_none() && v.get("message_id").is_none());
        assert_eq!(v["retryable"], true);
    }
}
