//! genai's stream events as ours: argument deltas computed from the
//! accumulated calls genai hands out, completed calls and usage at the end,
//! a finish reason always last, and a stream that stops early as an error.

use std::collections::VecDeque;
use std::sync::Arc;

use futures_util::FutureExt;
use tokio::sync::Notify;

use futures_util::StreamExt;
use genai::chat::{ChatStream, ChatStreamEvent, StopReason, StreamEnd, ToolCall as GenaiToolCall};
use serde_json::Value;

use super::Redactor;
use super::classify;
use crate::ProviderError;
use crate::event::{EventStream, FinishReason, StreamEvent, Usage};
use crate::request::{ChatRequest, ToolCall};
use crate::tokens::TokenCounter;

/// A call being streamed: what has been passed on so far.
struct CallProgress {
    id: String,
    name: String,
    arguments: String,
}

pub(super) struct Translation {
    inner: ChatStream,
    /// Signalled by genai for every wire frame.
    frames: Arc<Notify>,
    request: ChatRequest,
    tokens: TokenCounter,
    redactor: Redactor,
    calls: Vec<CallProgress>,
    /// Text and reasoning streamed, for a usage estimate when the provider gives none.
    output: String,
    pending: VecDeque<Result<StreamEvent, ProviderError>>,
    finished: bool,
}

impl Translation {
    pub(super) fn new(
        inner: ChatStream,
        frames: Arc<Notify>,
        request: ChatRequest,
        tokens: TokenCounter,
        redactor: Redactor,
    ) -> Self {
        Translation {
            inner,
            frames,
            request,
            tokens,
            redactor,
            calls: Vec::new(),
            output: String::new(),
            pending: VecDeque::new(),
            finished: false,
        }
    }

    pub(super) fn into_stream(self) -> EventStream {
        futures_util::stream::unfold(self, |mut this| async move {
            let item = this.next().await?;
            Some((item, this))
        })
        .boxed()
    }

    async fn next(&mut self) -> Option<Result<StreamEvent, ProviderError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.finished {
                return None;
            }
            let polled = tokio::select! {
                biased;
                item = self.inner.next() => Some(item),
                // Frames arrived but genai made no event of them yet.
                () = self.frames.notified() => None,
            };
            let Some(item) = polled else {
                return Some(Ok(StreamEvent::KeepAlive));
            };
            // The frames behind this item are accounted for by the item itself.
            let _ = self.frames.notified().now_or_never();
            match item {
                None => {
                    // genai ends some streams without an end event when the
                    // connection closes early.
                    self.finished = true;
                    return Some(Err(ProviderError::Interrupted));
                }
                Some(Err(error)) => {
                    self.finished = true;
                    return Some(Err(classify::error(&error, &self.redactor)));
                }
                Some(Ok(event)) => self.on_event(event),
            }
        }
    }

    fn on_event(&mut self, event: ChatStreamEvent) {
        match event {
            // genai emits `Start` before the request is even sent: not a byte from the provider.
            ChatStreamEvent::Start => {}
            ChatStreamEvent::Chunk(chunk) if !chunk.content.is_empty() => {
                self.output.push_str(&chunk.content);
                self.pending.push_back(Ok(StreamEvent::TextDelta {
                    text: chunk.content,
                }));
            }
            ChatStreamEvent::ReasoningChunk(chunk) if !chunk.content.is_empty() => {
                self.output.push_str(&chunk.content);
                self.pending.push_back(Ok(StreamEvent::ReasoningDelta {
                    text: chunk.content,
                }));
            }
            ChatStreamEvent::Chunk(_)
            | ChatStreamEvent::ReasoningChunk(_)
            | ChatStreamEvent::ThoughtSignatureChunk(_)
            | ChatStreamEvent::Heartbeat => self.pending.push_back(Ok(StreamEvent::KeepAlive)),
            ChatStreamEvent::ToolCallChunk(chunk) => self.on_tool_chunk(chunk.tool_call),
            ChatStreamEvent::End(end) => self.on_end(end),
        }
    }

    /// genai hands out each call accumulated so far (OpenAI, Anthropic) or
    /// whole (Gemini); we pass on what is new.
    fn on_tool_chunk(&mut self, call: GenaiToolCall) {
        let index = match self.calls.iter().position(|c| c.id == call.call_id) {
            Some(index) => index,
            None => {
                self.pending.push_back(Ok(StreamEvent::ToolCallStarted {
                    id: call.call_id.clone(),
                    name: call.fn_name.clone(),
                }));
                self.calls.push(CallProgress {
                    id: call.call_id.clone(),
                    name: call.fn_name.clone(),
                    arguments: String::new(),
                });
                self.calls.len() - 1
            }
        };
        let progress = &mut self.calls[index];
        if progress.name.is_empty() && !call.fn_name.is_empty() {
            progress.name = call.fn_name.clone();
        }
        let so_far = match call.fn_arguments {
            Value::String(text) => text,
            Value::Null => String::new(),
            whole => whole.to_string(),
        };
        let delta = match so_far.strip_prefix(progress.arguments.as_str()) {
            Some(rest) => rest.to_owned(),
            // Not an extension of what we sent (a provider resending a call):
            // keep the latest whole text and send nothing twice.
            None => {
                progress.arguments = so_far;
                return;
            }
        };
        if !delta.is_empty() {
            progress.arguments.push_str(&delta);
            self.pending
                .push_back(Ok(StreamEvent::ToolCallArgumentsDelta {
                    id: progress.id.clone(),
                    delta,
                }));
        }
    }

    fn on_end(&mut self, end: StreamEnd) {
        self.finished = true;
        let Some(stop) = end.captured_stop_reason.clone() else {
            // Gemini's stream ends the same way whether or not it finished:
            // without a finish reason the answer was cut off.
            self.pending.push_back(Err(ProviderError::Interrupted));
            return;
        };
        let calls = std::mem::take(&mut self.calls);
        let has_calls = !calls.is_empty();
        for call in calls {
            let arguments = parse_arguments(&call.arguments);
            self.pending.push_back(Ok(StreamEvent::ToolCallCompleted {
                call: ToolCall {
                    id: call.id,
                    name: call.name,
                    arguments,
                },
            }));
        }
        let usage = self.usage(&end);
        self.pending.push_back(Ok(StreamEvent::Usage { usage }));
        let reason = match stop {
            StopReason::Completed(_) | StopReason::StopSequence(_) if has_calls => {
                FinishReason::ToolCalls
            }
            StopReason::Completed(_) | StopReason::StopSequence(_) => FinishReason::Stop,
            StopReason::MaxTokens(_) => FinishReason::Length,
            StopReason::ToolCall(_) => FinishReason::ToolCalls,
            StopReason::ContentFilter(_) => FinishReason::ContentFilter,
            StopReason::Other(other) => FinishReason::Other(other),
        };
        self.pending.push_back(Ok(StreamEvent::Finished { reason }));
    }

    /// The provider's numbers, or a tiktoken estimate marked as such.
    fn usage(&self, end: &StreamEnd) -> Usage {
        let reported = end.captured_usage.as_ref().and_then(|u| {
            let input = u.prompt_tokens?;
            let output = u.completion_tokens.unwrap_or(0);
            let reasoning = u
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens);
            Some(Usage {
                input_tokens: input.max(0) as u64,
                output_tokens: output.max(0) as u64,
                reasoning_tokens: reasoning.map(|r| r.max(0) as u64),
                estimated: false,
            })
        });
        reported.unwrap_or_else(|| {
            let arguments: usize = end
                .captured_tool_calls()
                .unwrap_or_default()
                .iter()
                .map(|c| self.tokens.text(&c.fn_arguments.to_string()))
                .sum();
            Usage {
                input_tokens: self.tokens.request(&self.request) as u64,
                output_tokens: (self.tokens.text(&self.output) + arguments) as u64,
                reasoning_tokens: None,
                estimated: true,
            }
        })
    }
}

fn parse_arguments(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Object(Default::default());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}
