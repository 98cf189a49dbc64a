//! OpenAI chat completions streaming: `data: {chunk}` frames with
//! `choices[0].delta`, tool calls as deltas by `index`, a finish chunk, a
//! usage chunk with empty `choices` when asked for, then `data: [DONE]`.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{data, pieces, words};
use crate::script::{Finish, Part, Turn};

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> Bytes {
    data(&json!({
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    }))
}

pub fn frames(turn: &Turn, model: &str, include_usage: bool) -> Vec<Bytes> {
    let mut out = vec![chunk(
        model,
        json!({ "role": "assistant", "content": "" }),
        None,
    )];
    let mut call_index = 0;
    for part in &turn.parts {
        match part {
            Part::Text(text) => {
                out.extend(words(text).map(|w| chunk(model, json!({ "content": w }), None)))
            }
            Part::Reasoning(text) => out
                .extend(words(text).map(|w| chunk(model, json!({ "reasoning_content": w }), None))),
            Part::ToolCall {
                id,
                name,
                arguments,
            } => {
                out.push(chunk(
                    model,
                    json!({ "tool_calls": [{
                        "index": call_index, "id": id, "type": "function",
                        "function": { "name": name, "arguments": "" },
                    }]}),
                    None,
                ));
                let text = arguments.to_string();
                for piece in pieces(&text, 8) {
                    out.push(chunk(
                        model,
                        json!({ "tool_calls": [{ "index": call_index, "function": { "arguments": piece } }] }),
                        None,
                    ));
                }
                call_index += 1;
            }
        }
    }
    let finish = match turn.finish_reason() {
        Finish::Stop => "stop",
        Finish::Length => "length",
        Finish::ToolCalls => "tool_calls",
        Finish::ContentFilter => "content_filter",
    };
    out.push(chunk(model, json!({}), Some(finish)));
    if let Some(u) = turn.usage.filter(|_| include_usage) {
        out.push(data(&json!({
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": model,
            "choices": [],
            "usage": {
                "prompt_tokens": u.input,
                "completion_tokens": u.output,
                "total_tokens": u.input + u.output,
                "completion_tokens_details": { "reasoning_tokens": u.reasoning },
            },
        })));
    }
    out.push(Bytes::from_static(b"data: [DONE]\n\n"));
    out
}

pub fn error_frame() -> Bytes {
    data(
        &json!({ "error": { "message": "The server had an error while processing your request.", "type": "server_error" } }),
    )
}

pub fn error_body(status: u16) -> String {
    let (kind, message) = match status {
        429 => ("rate_limit_exceeded", "Rate limit reached for requests"),
        401 => ("invalid_api_key", "Incorrect API key provided"),
        400 => (
            "invalid_request_error",
            "This model's maximum context length is 8192 tokens",
        ),
        _ => (
            "server_error",
            "The server had an error while processing your request.",
        ),
    };
    json!({ "error": { "message": message, "type": kind, "code": kind } }).to_string()
}
