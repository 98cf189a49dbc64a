//! Anthropic messages streaming: `event:` + `data:` frames — `message_start`,
//! `ping`, per block `content_block_start`/`_delta`/`_stop` (`text_delta`,
//! `thinking_delta`, `input_json_delta`), `message_delta` with the stop
//! reason and output tokens, `message_stop`; errors as `event: error`.

use bytes::Bytes;
use serde_json::json;

use super::{event, pieces, words};
use crate::script::{Finish, Part, Turn};

pub fn frames(turn: &Turn, model: &str) -> Vec<Bytes> {
    let start_usage = match turn.usage {
        Some(u) => json!({ "input_tokens": u.input, "output_tokens": 1 }),
        None => json!({}),
    };
    let mut out = vec![
        event(
            "message_start",
            &json!({ "type": "message_start", "message": {
                "id": "msg_mock", "type": "message", "role": "assistant", "model": model, "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": start_usage,
            }}),
        ),
        event("ping", &json!({ "type": "ping" })),
    ];
    for (index, part) in turn.parts.iter().enumerate() {
        let start = |block: serde_json::Value| {
            event(
                "content_block_start",
                &json!({ "type": "content_block_start", "index": index, "content_block": block }),
            )
        };
        let delta = |delta: serde_json::Value| {
            event(
                "content_block_delta",
                &json!({ "type": "content_block_delta", "index": index, "delta": delta }),
            )
        };
        match part {
            Part::Text(text) => {
                out.push(start(json!({ "type": "text", "text": "" })));
                out.extend(words(text).map(|w| delta(json!({ "type": "text_delta", "text": w }))));
            }
            Part::Reasoning(text) => {
                out.push(start(
                    json!({ "type": "thinking", "thinking": "", "signature": "" }),
                ));
                out.extend(
                    words(text).map(|w| delta(json!({ "type": "thinking_delta", "thinking": w }))),
                );
                out.push(delta(
                    json!({ "type": "signature_delta", "signature": "bW9jay1zaWduYXR1cmU=" }),
                ));
            }
            Part::ToolCall {
                id,
                name,
                arguments,
            } => {
                out.push(start(
                    json!({ "type": "tool_use", "id": id, "name": name, "input": {} }),
                ));
                let text = arguments.to_string();
                out.extend(
                    pieces(&text, 8)
                        .into_iter()
                        .map(|p| delta(json!({ "type": "input_json_delta", "partial_json": p }))),
                );
            }
        }
        out.push(event(
            "content_block_stop",
            &json!({ "type": "content_block_stop", "index": index }),
        ));
    }
    let stop = match turn.finish_reason() {
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
        Finish::ToolCalls => "tool_use",
        Finish::ContentFilter => "refusal",
    };
    let mut message_delta =
        json!({ "type": "message_delta", "delta": { "stop_reason": stop, "stop_sequence": null } });
    if let Some(u) = turn.usage {
        message_delta["usage"] = json!({ "output_tokens": u.output });
    }
    out.push(event("message_delta", &message_delta));
    out.push(event("message_stop", &json!({ "type": "message_stop" })));
    out
}

pub fn error_frame() -> Bytes {
    event(
        "error",
        &json!({ "type": "error", "error": { "type": "overloaded_error", "message": "Overloaded" } }),
    )
}

pub fn error_body(status: u16) -> String {
    let (kind, message) = match status {
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit",
        ),
        401 => ("authentication_error", "invalid x-api-key"),
        400 => (
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
        ),
        529 => ("overloaded_error", "Overloaded"),
        _ => ("api_error", "Internal server error"),
    };
    json!({ "type": "error", "error": { "type": kind, "message": message } }).to_string()
}
