//! What the mock answers to one request, provider-neutral: the server
//! renders it in the wire format of the endpoint that was called.

use std::time::Duration;

use serde_json::Value;

/// One response, with its faults.
#[derive(Debug, Clone)]
pub struct Script {
    pub reply: Reply,
    /// Wait between two frames of the stream.
    pub chunk_delay: Duration,
    /// Wait before the response headers.
    pub header_delay: Duration,
    /// After this many frames, send nothing more but keep the connection open.
    pub stall_after: Option<usize>,
    /// After this many frames, end the body (no finish, no `[DONE]`).
    pub close_after: Option<usize>,
    /// Replace the frame at this index (0-based) with invalid JSON.
    pub malformed_at: Option<usize>,
    /// After this many frames, send the provider's in-stream error event and end.
    pub error_after: Option<usize>,
}

/// The body: a streamed answer or an HTTP error.
#[derive(Debug, Clone)]
pub enum Reply {
    Stream(Turn),
    Status {
        status: u16,
        retry_after: Option<u64>,
        body: Option<String>,
    },
}

/// A streamed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Turn {
    pub parts: Vec<Part>,
    /// `None`: the stream reports no usage (a server that ignores the request for it).
    pub usage: Option<MockUsage>,
    /// `None`: `tool_calls` when the turn has calls, else `stop`.
    pub finish: Option<Finish>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    /// Streamed word by word.
    Text(String),
    /// Reasoning ("thinking"), streamed word by word.
    Reasoning(String),
    /// A call; OpenAI and Anthropic stream its arguments in pieces, Gemini sends it whole.
    ToolCall {
        id: String,
        name: String,
        arguments: Value,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MockUsage {
    pub input: u64,
    pub output: u64,
    pub reasoning: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
}

impl Default for MockUsage {
    fn default() -> Self {
        MockUsage {
            input: 21,
            output: 9,
            reasoning: 0,
        }
    }
}

impl Turn {
    pub fn new() -> Self {
        Turn {
            parts: Vec::new(),
            usage: Some(MockUsage::default()),
            finish: None,
        }
    }

    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.parts.push(Part::Text(text.into()));
        self
    }

    pub fn reasoning(mut self, text: impl Into<String>) -> Self {
        self.parts.push(Part::Reasoning(text.into()));
        self
    }

    pub fn tool_call(
        mut self,
        id: impl Into<String>,
        name: impl Into<String>,
        arguments: Value,
    ) -> Self {
        self.parts.push(Part::ToolCall {
            id: id.into(),
            name: name.into(),
            arguments,
        });
        self
    }

    pub fn usage(mut self, input: u64, output: u64, reasoning: u64) -> Self {
        self.usage = Some(MockUsage {
            input,
            output,
            reasoning,
        });
        self
    }

    pub fn without_usage(mut self) -> Self {
        self.usage = None;
        self
    }

    pub fn finish(mut self, finish: Finish) -> Self {
        self.finish = Some(finish);
        self
    }

    pub(crate) fn finish_reason(&self) -> Finish {
        self.finish.unwrap_or_else(|| {
            if self
                .parts
                .iter()
                .any(|p| matches!(p, Part::ToolCall { .. }))
            {
                Finish::ToolCalls
            } else {
                Finish::Stop
            }
        })
    }
}

impl Default for Turn {
    fn default() -> Self {
        Turn::new()
    }
}

impl Script {
    pub fn turn(turn: Turn) -> Self {
        Script {
            reply: Reply::Stream(turn),
            chunk_delay: Duration::ZERO,
            header_delay: Duration::ZERO,
            stall_after: None,
            close_after: None,
            malformed_at: None,
            error_after: None,
        }
    }

    /// A plain text answer.
    pub fn text(text: impl Into<String>) -> Self {
        Script::turn(Turn::new().text(text))
    }

    /// An HTTP error with a JSON error body in the provider's shape.
    pub fn status(status: u16) -> Self {
        Script {
            reply: Reply::Status {
                status,
                retry_after: None,
                body: None,
            },
            ..Script::text("")
        }
    }

    /// Sets `Retry-After` (seconds) on a status reply.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        if let Reply::Status { retry_after, .. } = &mut self.reply {
            *retry_after = Some(seconds);
        }
        self
    }

    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.chunk_delay = delay;
        self
    }

    pub fn header_delay(mut self, delay: Duration) -> Self {
        self.header_delay = delay;
        self
    }

    pub fn stall_after(mut self, frames: usize) -> Self {
        self.stall_after = Some(frames);
        self
    }

    pub fn close_after(mut self, frames: usize) -> Self {
        self.close_after = Some(frames);
        self
    }

    pub fn malformed_at(mut self, frame: usize) -> Self {
        self.malformed_at = Some(frame);
        self
    }

    pub fn error_after(mut self, frames: usize) -> Self {
        self.error_after = Some(frames);
        self
    }
}
