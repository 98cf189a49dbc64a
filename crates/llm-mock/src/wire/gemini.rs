//! Gemini `streamGenerateContent?alt=sse`: every frame a whole
//! `GenerateContentResponse`; thoughts are parts with `thought: true`, calls
//! are whole `functionCall` parts, the last frame has `finishReason` and
//! `usageMetadata`; no `[DONE]`.

use bytes::Bytes;
use serde_json::{Value, json};

use super::{data, words};
use crate::script::{Finish, Part, Turn};

fn response(model: &str, parts: Value, finish: Option<&str>, usage: Option<Value>) -> Bytes {
    let mut candidate = json!({ "content": { "parts": parts, "role": "model" }, "index": 0 });
    if let Some(finish) = finish {
        candidate["finishReason"] = json!(finish);
    }
    let mut body = json!({ "candidates": [candidate], "modelVersion": model });
    if let Some(usage) = usage {
        body["usageMetadata"] = usage;
    }
    data(&body)
}

pub fn frames(turn: &Turn, model: &str) -> Vec<Bytes> {
    let mut out = Vec::new();
    for part in &turn.parts {
        match part {
            Part::Text(text) => {
                out.extend(words(text).map(|w| response(model, json!([{ "text": w }]), None, None)))
            }
            Part::Reasoning(text) => out.extend(
                words(text)
                    .map(|w| response(model, json!([{ "text": w, "thought": true }]), None, None)),
            ),
            Part::ToolCall {
                name, arguments, ..
            } => out.push(response(
                model,
                json!([{ "functionCall": { "name": name, "args": arguments } }]),
                None,
                None,
            )),
        }
    }
    let finish = match turn.finish_reason() {
        Finish::Stop | Finish::ToolCalls => "STOP",
        Finish::Length => "MAX_TOKENS",
        Finish::ContentFilter => "SAFETY",
    };
    let usage = turn.usage.map(|u| {
        json!({
            "promptTokenCount": u.input,
            "candidatesTokenCount": u.output - u.reasoning.min(u.output),
            "thoughtsTokenCount": u.reasoning,
            "totalTokenCount": u.input + u.output,
        })
    });
    out.push(response(
        model,
        json!([{ "text": "" }]),
        Some(finish),
        usage,
    ));
    out
}

pub fn error_frame() -> Bytes {
    data(
        &json!({ "error": { "code": 500, "message": "An internal error has occurred.", "status": "INTERNAL" } }),
    )
}

pub fn error_body(status: u16) -> String {
    let (state, message) = match status {
        429 => (
            "RESOURCE_EXHAUSTED",
            "Resource has been exhausted (e.g. check quota).",
        ),
        401 | 403 => ("PERMISSION_DENIED", "API key not valid."),
        400 => (
            "INVALID_ARGUMENT",
            "The input token count exceeds the maximum number of tokens allowed.",
        ),
        503 => (
            "UNAVAILABLE",
            "The model is overloaded. Please try again later.",
        ),
        _ => ("INTERNAL", "An internal error has occurred."),
    };
    json!({ "error": { "code": status, "message": message, "status": state } }).to_string()
}
