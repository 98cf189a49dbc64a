//! Each provider's streaming wire format, rendered from a [`Turn`].

pub mod anthropic;
pub mod gemini;
pub mod openai;

use bytes::Bytes;
use serde_json::Value;

use crate::script::Turn;

/// Which provider API a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Wire {
    /// `POST /v1/chat/completions`
    OpenAi,
    /// `POST /v1beta/models/{model}:streamGenerateContent?alt=sse`
    Gemini,
    /// `POST /v1/messages`
    Anthropic,
}

impl Wire {
    /// The stream's frames, in order.
    pub fn frames(self, turn: &Turn, model: &str, request: &Value) -> Vec<Bytes> {
        match self {
            Wire::OpenAi => {
                let include_usage = request
                    .pointer("/stream_options/include_usage")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                openai::frames(turn, model, include_usage)
            }
            Wire::Gemini => gemini::frames(turn, model),
            Wire::Anthropic => anthropic::frames(turn, model),
        }
    }

    /// The provider's in-stream error frame.
    pub fn error_frame(self) -> Bytes {
        match self {
            Wire::OpenAi => openai::error_frame(),
            Wire::Gemini => gemini::error_frame(),
            Wire::Anthropic => anthropic::error_frame(),
        }
    }

    /// A frame that is not valid JSON, framed like the provider's frames.
    pub fn malformed_frame(self) -> Bytes {
        match self {
            Wire::Anthropic => Bytes::from_static(
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\n\n",
            ),
            Wire::OpenAi | Wire::Gemini => {
                Bytes::from_static(b"data: {\"choices\":[{\"delta\":\n\n")
            }
        }
    }

    /// The JSON body of an HTTP error in the provider's shape.
    pub fn error_body(self, status: u16) -> String {
        match self {
            Wire::OpenAi => openai::error_body(status),
            Wire::Gemini => gemini::error_body(status),
            Wire::Anthropic => anthropic::error_body(status),
        }
    }
}

/// An SSE frame with only a `data:` line.
pub(crate) fn data(value: &Value) -> Bytes {
    Bytes::from(format!("data: {value}\n\n"))
}

/// An SSE frame with an `event:` line.
pub(crate) fn event(name: &str, value: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {value}\n\n"))
}

/// Text as streamed: word by word, spaces kept.
pub(crate) fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split_inclusive(' ')
}

/// JSON text in pieces of about `size` bytes, on character boundaries.
pub(crate) fn pieces(text: &str, size: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let mut end = (start + size).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        out.push(&text[start..end]);
        start = end;
    }
    out
}
