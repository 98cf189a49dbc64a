//! From Chorus run events to AG-UI events: one [`AguiMapper`] per run.
//!
//! The mapper is a pure state machine. Whatever order or mix of run events
//! it is fed (duplicates, a result without its call, events after the
//! ending, no ending at all), what it returns is a stream AG-UI clients
//! accept:
//! - `RUN_STARTED` comes first;
//! - no content without its start: text, reasoning and tool calls are opened
//!   before their content and closed before anything of another kind;
//! - everything open is closed before the ending;
//! - exactly one `RUN_FINISHED` or `RUN_ERROR`, and nothing after it.

use std::collections::VecDeque;

use serde::Deserialize;
use serde_json::Value;

use super::event::{
    AGUI_PROTOCOL_VERSION, AguiEvent, ReasoningRole, RunFinishedOutcome, TextRole, TokenUsage, ToolRole,
};
use crate::event::EventType;

/// Tool calls remembered per run (to pair results with calls and name the
/// calls left without one); past it the oldest is forgotten, which at worst
/// re-opens a call before its late result.
const MAX_TRACKED_CALLS: usize = 256;
/// Answer text kept to fill in what the ending has and the deltas did not;
/// past it the ending's text is not compared.
const MAX_TRACKED_TEXT: usize = 1024 * 1024;

/// Error codes of `agent_error` that AG-UI calls a cancellation, not a failure.
const CANCELLED_CODES: &[&str] = &["cancelled", "superseded"];

/// The ids one AG-UI run is known by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AguiRun {
    /// `threadId` as the client sent it.
    pub thread_id: String,
    /// `runId` as the client sent it.
    pub run_id: String,
    /// `parentRunId` as the client sent it.
    pub parent_run_id: Option<String>,
    /// Chorus's id of the run whose events are mapped (events of other runs are ignored).
    pub chorus_run_id: String,
    /// The agent that runs.
    pub agent_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Running,
    Ended,
}

#[derive(Debug, Default)]
struct Answer {
    message_id: Option<String>,
    text: String,
    /// Too long to compare with the ending's text.
    overflowed: bool,
}

/// Turns one run's Chorus events into AG-UI events. See the module docs.
#[derive(Debug)]
pub struct AguiMapper {
    run: AguiRun,
    phase: Phase,
    /// The text message being streamed, if open.
    open_text: Option<String>,
    /// The reasoning span (and its one message) being streamed, if open.
    open_reasoning: Option<String>,
    reasoning_spans: u32,
    answer: Answer,
    /// Calls opened, oldest first, with whether a result came.
    calls: VecDeque<(String, bool)>,
    provider: Option<String>,
    model: Option<String>,
}

#[derive(Deserialize)]
struct Header {
    run_id: Option<String>,
}

#[derive(Deserialize)]
struct Started {
    model: Option<String>,
    provider: Option<String>,
}

#[derive(Deserialize)]
struct Thinking {
    #[serde(default)]
    thought: String,
}

#[derive(Deserialize)]
struct TextDelta {
    message_id: Option<String>,
    delta: String,
}

#[derive(Deserialize)]
struct ToolExecuting {
    call_id: String,
    tool: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
struct ToolCompleted {
    call_id: String,
    tool: String,
    #[serde(default)]
    result: Value,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

#[derive(Deserialize)]
struct Completed {
    message_id: Option<String>,
    text: Option<String>,
    usage: Option<Usage>,
    model: Option<String>,
}

#[derive(Deserialize)]
struct Failed {
    code: Option<String>,
    /// The field's name before run events carried `code`.
    error: Option<String>,
    #[serde(default)]
    message: String,
    usage: Option<Usage>,
}

impl AguiMapper {
    pub fn new(run: AguiRun) -> Self {
        Self {
            run,
            phase: Phase::Idle,
            open_text: None,
            open_reasoning: None,
            reasoning_spans: 0,
            answer: Answer::default(),
            calls: VecDeque::new(),
            provider: None,
            model: None,
        }
    }

    pub fn run(&self) -> &AguiRun {
        &self.run
    }

    /// True once `RUN_FINISHED` or `RUN_ERROR` was returned.
    pub fn is_ended(&self) -> bool {
        self.phase == Phase::Ended
    }

    /// `RUN_STARTED`, unless already sent. Call it as soon as the run is accepted.
    pub fn start(&mut self) -> Vec<AguiEvent> {
        let mut out = Vec::new();
        self.ensure_started(&mut out);
        out
    }

    /// The AG-UI events for one Chorus run event (`event` and its `data`).
    /// Events of other runs, of unknown types, malformed ones and anything
    /// after the ending give nothing.
    pub fn map(&mut self, event: EventType, data: &Value) -> Vec<AguiEvent> {
        let mut out = Vec::new();
        if self.phase == Phase::Ended || !self.is_this_run(data) {
            return out;
        }
        match event {
            EventType::AgentStarted => {
                if let Ok(s) = Started::deserialize(data) {
                    self.provider = s.provider.or(self.provider.take());
                    self.model = s.model.or(self.model.take());
                }
                self.ensure_started(&mut out);
            }
            EventType::AgentThinking => {
                let Ok(t) = Thinking::deserialize(data) else {
                    return out;
                };
                self.ensure_started(&mut out);
                if t.thought.is_empty() {
                    return out;
                }
                self.close_text(&mut out);
                let id = self.open_reasoning(&mut out);
                out.push(AguiEvent::ReasoningMessageContent { message_id: id, delta: t.thought });
            }
            EventType::AgentTextDelta => {
                let Ok(t) = TextDelta::deserialize(data) else {
                    return out;
                };
                self.ensure_started(&mut out);
                let id = t.message_id.unwrap_or_else(|| self.default_message_id());
                self.stream_text(&mut out, id, t.delta);
            }
            EventType::ToolExecuting => {
                let Ok(t) = ToolExecuting::deserialize(data) else {
                    return out;
                };
                self.ensure_started(&mut out);
                if self.call_state(&t.call_id).is_some() {
                    return out; // a repeated announcement of a call already sent
                }
                self.open_call(&mut out, t.call_id, t.tool, Some(&t.arguments));
            }
            EventType::ToolCompleted => {
                let Ok(t) = ToolCompleted::deserialize(data) else {
                    return out;
                };
                self.ensure_started(&mut out);
                match self.call_state(&t.call_id) {
                    Some(true) => return out, // a repeated result
                    Some(false) => {}
                    None => self.open_call(&mut out, t.call_id.clone(), t.tool, None),
                }
                self.mark_answered(&t.call_id);
                let content = match t.result {
                    Value::String(s) => s,
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                out.push(AguiEvent::ToolCallResult {
                    message_id: format!("{}-result", t.call_id),
                    tool_call_id: t.call_id,
                    content,
                    role: ToolRole::Tool,
                });
            }
            EventType::AgentCompleted => {
                let Ok(c) = Completed::deserialize(data) else {
                    return self.fail("internal", "the run ended with a malformed completion");
                };
                self.ensure_started(&mut out);
                if let Some(text) = c.text {
                    self.fill_in_answer(&mut out, c.message_id, text);
                }
                self.close_all(&mut out);
                let model = c.model.or(self.model.clone());
                let pending: Vec<String> =
                    self.calls.iter().filter(|(_, done)| !done).map(|(id, _)| id.clone()).collect();
                out.push(AguiEvent::RunFinished {
                    thread_id: self.run.thread_id.clone(),
                    run_id: self.run.run_id.clone(),
                    outcome: Some(RunFinishedOutcome::Success {
                        pending_tool_call_ids: (!pending.is_empty()).then_some(pending),
                    }),
                    usage: c.usage.map(|u| vec![self.token_usage(model, u)]),
                });
                self.phase = Phase::Ended;
            }
            EventType::AgentError => {
                let Ok(f) = Failed::deserialize(data) else {
                    return self.fail("internal", "the run ended with a malformed error");
                };
                let code = f.code.or(f.error).unwrap_or_else(|| "internal".to_owned());
                self.ensure_started(&mut out);
                self.close_all(&mut out);
                if CANCELLED_CODES.contains(&code.as_str()) {
                    out.push(AguiEvent::RunFinished {
                        thread_id: self.run.thread_id.clone(),
                        run_id: self.run.run_id.clone(),
                        outcome: Some(RunFinishedOutcome::Cancelled),
                        usage: None,
                    });
                } else {
                    let model = self.model.clone();
                    let message = if f.message.is_empty() { code.clone() } else { f.message };
                    out.push(AguiEvent::RunError {
                        message,
                        code: Some(code),
                        usage: f.usage.map(|u| vec![self.token_usage(model, u)]),
                    });
                }
                self.phase = Phase::Ended;
            }
            _ => {
                // agent_queued and anything else of the run only open it.
                if event.as_str().starts_with("agent_") {
                    self.ensure_started(&mut out);
                }
            }
        }
        out
    }

    /// Ends the run with `RUN_ERROR` (`code`, `message`) when the stream must
    /// stop without a Chorus ending (e.g. the server shuts down). Nothing if
    /// the run already ended.
    pub fn fail(&mut self, code: &str, message: &str) -> Vec<AguiEvent> {
        let mut out = Vec::new();
        if self.phase == Phase::Ended {
            return out;
        }
        self.ensure_started(&mut out);
        self.close_all(&mut out);
        out.push(AguiEvent::RunError { message: message.to_owned(), code: Some(code.to_owned()), usage: None });
        self.phase = Phase::Ended;
        out
    }

    fn is_this_run(&self, data: &Value) -> bool {
        match Header::deserialize(data) {
            Ok(Header { run_id: Some(id) }) => id == self.run.chorus_run_id,
            _ => false,
        }
    }

    fn ensure_started(&mut self, out: &mut Vec<AguiEvent>) {
        if self.phase != Phase::Idle {
            return;
        }
        self.phase = Phase::Running;
        out.push(AguiEvent::RunStarted {
            thread_id: self.run.thread_id.clone(),
            run_id: self.run.run_id.clone(),
            protocol_version: Some(AGUI_PROTOCOL_VERSION.to_owned()),
            parent_run_id: self.run.parent_run_id.clone(),
            metadata: Some(serde_json::json!({
                "chorus": {"run_id": self.run.chorus_run_id, "agent_id": self.run.agent_id}
            })),
        });
    }

    fn default_message_id(&self) -> String {
        self.answer.message_id.clone().unwrap_or_else(|| format!("{}-answer", self.run.chorus_run_id))
    }

    fn stream_text(&mut self, out: &mut Vec<AguiEvent>, message_id: String, delta: String) {
        if delta.is_empty() {
            return;
        }
        self.close_reasoning(out);
        if self.open_text.as_deref() != Some(message_id.as_str()) {
            self.close_text(out);
            // The same id may open again after a tool call; clients append to it.
            out.push(AguiEvent::TextMessageStart { message_id: message_id.clone(), role: TextRole::Assistant });
            self.open_text = Some(message_id.clone());
        }
        if self.answer.message_id.as_deref() != Some(message_id.as_str()) {
            self.answer = Answer { message_id: Some(message_id.clone()), ..Answer::default() };
        }
        if !self.answer.overflowed {
            if self.answer.text.len() + delta.len() > MAX_TRACKED_TEXT {
                self.answer.overflowed = true;
                self.answer.text = String::new();
            } else {
                self.answer.text.push_str(&delta);
            }
        }
        out.push(AguiEvent::TextMessageContent { message_id, delta });
    }

    /// Streams what the ending's full text has beyond the deltas seen (all of
    /// it when no delta came, e.g. an external agent that sent only its ending).
    fn fill_in_answer(&mut self, out: &mut Vec<AguiEvent>, message_id: Option<String>, text: String) {
        let same_message = match (&message_id, &self.answer.message_id) {
            (Some(a), Some(b)) => a == b,
            (None, Some(_)) => true,
            (_, None) => self.answer.text.is_empty(),
        };
        if !same_message || self.answer.overflowed {
            return;
        }
        let Some(rest) = text.strip_prefix(self.answer.text.as_str()) else {
            return;
        };
        if rest.is_empty() {
            return;
        }
        let id = message_id.unwrap_or_else(|| self.default_message_id());
        self.stream_text(out, id, rest.to_owned());
    }

    fn open_reasoning(&mut self, out: &mut Vec<AguiEvent>) -> String {
        if let Some(id) = &self.open_reasoning {
            return id.clone();
        }
        self.reasoning_spans += 1;
        let id = format!("{}-reasoning-{}", self.run.chorus_run_id, self.reasoning_spans);
        out.push(AguiEvent::ReasoningStart { message_id: id.clone() });
        out.push(AguiEvent::ReasoningMessageStart { message_id: id.clone(), role: ReasoningRole::Reasoning });
        self.open_reasoning = Some(id.clone());
        id
    }

    fn close_reasoning(&mut self, out: &mut Vec<AguiEvent>) {
        if let Some(id) = self.open_reasoning.take() {
            out.push(AguiEvent::ReasoningMessageEnd { message_id: id.clone() });
            out.push(AguiEvent::ReasoningEnd { message_id: id });
        }
    }

    fn close_text(&mut self, out: &mut Vec<AguiEvent>) {
        if let Some(id) = self.open_text.take() {
            out.push(AguiEvent::TextMessageEnd { message_id: id });
        }
    }

    fn close_all(&mut self, out: &mut Vec<AguiEvent>) {
        self.close_reasoning(out);
        self.close_text(out);
    }

    /// A whole tool call: start, its arguments (when known), end. Chorus
    /// announces calls with complete arguments, so none stays open.
    fn open_call(&mut self, out: &mut Vec<AguiEvent>, call_id: String, tool: String, arguments: Option<&Value>) {
        self.close_all(out);
        out.push(AguiEvent::ToolCallStart {
            tool_call_id: call_id.clone(),
            tool_call_name: tool,
            parent_message_id: self.answer.message_id.clone(),
        });
        if let Some(args) = arguments {
            let delta = match args {
                Value::Null => "{}".to_owned(),
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push(AguiEvent::ToolCallArgs { tool_call_id: call_id.clone(), delta });
        }
        out.push(AguiEvent::ToolCallEnd { tool_call_id: call_id.clone() });
        if self.calls.len() == MAX_TRACKED_CALLS {
            self.calls.pop_front();
        }
        self.calls.push_back((call_id, false));
    }

    fn call_state(&self, call_id: &str) -> Option<bool> {
        self.calls.iter().find(|(id, _)| id == call_id).map(|(_, done)| *done)
    }

    fn mark_answered(&mut self, call_id: &str) {
        if let Some(entry) = self.calls.iter_mut().find(|(id, _)| id == call_id) {
            entry.1 = true;
        }
    }

    fn token_usage(&self, model: Option<String>, usage: Usage) -> TokenUsage {
        TokenUsage {
            provider: self.provider.clone(),
            model,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            total_tokens: usage.input_tokens.saturating_add(usage.output_tokens),
        }
    }
}

#[cfg(test)]
#[path = "mapper_tests.rs"]
mod tests;
