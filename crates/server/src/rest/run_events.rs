//! `POST /api/v1/runs/{id}/events`: an external agent's service pushes its
//! run's events, with an API key scoped to that agent. The run state
//! machine's rules (order, `seq`, one ending) are the runtime's
//! (`chorus_agents::Runtime::push_events`); this parses and authenticates.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use chorus_agents::{PushError, PushReport, PushedEvent, PushedKind, UsageView};
use chorus_chat::keys::KeyScope;
use chorus_protocol::{ErrorCode, RunErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::credentials::{KeyRights, api_key};
use crate::error::ApiError;
use crate::extract::parse_json;
use crate::rest::RestState;
use crate::rest::openapi::ErrorBody;

/// Events one push may carry.
pub const MAX_PUSHED_EVENTS: usize = 100;

/// One event of a run, as the service sends it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushedEventBody {
    /// The service's count for the run: 1, 2, 3… (a repeat is ignored, a gap refused).
    pub seq: i64,
    /// `agent_started`, `agent_thinking`, `agent_text_delta`, `tool_executing`,
    /// `tool_completed`, `agent_completed` or `agent_error`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event's fields (see PROTOCOL.md, "Events back in").
    #[serde(default)]
    pub data: Value,
}

/// A batch of events, in order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushedBatchBody {
    /// 1 to 100 events.
    pub events: Vec<PushedEventBody>,
}

/// What a push did.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushResult {
    /// Events taken.
    pub accepted: usize,
    /// Events whose `seq` was already taken (repeats).
    pub ignored: usize,
    /// The highest `seq` taken so far.
    pub last_seq: i64,
    /// The run has had its terminal event.
    pub ended: bool,
}

impl From<PushReport> for PushResult {
    fn from(r: PushReport) -> Self {
        PushResult { accepted: r.accepted, ignored: r.ignored, last_seq: r.last_seq, ended: r.ended }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StartedData {
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThinkingData {
    thought: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeltaData {
    delta: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutingData {
    call_id: String,
    tool: String,
    #[serde(default)]
    arguments: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletedToolData {
    call_id: String,
    tool: String,
    #[serde(default)]
    result: Value,
    #[serde(default)]
    is_error: bool,
    #[serde(default)]
    duration_ms: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageData {
    input_tokens: i64,
    output_tokens: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CompletedData {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    usage: Option<UsageData>,
    #[serde(default)]
    model: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ErrorData {
    code: String,
    message: String,
}

/// Longest text field of a pushed event, in bytes.
const MAX_TEXT: usize = 64 * 1024;

fn invalid(field: &str, what: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::InvalidField, format!("{field}: {what}"))
}

fn data<T: serde::de::DeserializeOwned>(at: &str, v: Value) -> Result<T, ApiError> {
    // An absent `data` reads as `{}`.
    let v = if v.is_null() { Value::Object(serde_json::Map::new()) } else { v };
    serde_json::from_value(v).map_err(|e| invalid(&format!("{at}.data"), e))
}

fn text(at: &str, field: &str, s: String) -> Result<String, ApiError> {
    if s.len() > MAX_TEXT {
        return Err(invalid(&format!("{at}.data.{field}"), format_args!("at most {MAX_TEXT} bytes")));
    }
    Ok(s)
}

fn event(at: &str, body: PushedEventBody) -> Result<PushedEvent, ApiError> {
    if body.seq < 1 {
        return Err(invalid(&format!("{at}.seq"), "must be 1 or more"));
    }
    let kind = match body.kind.as_str() {
        "agent_started" => PushedKind::Started { model: data::<StartedData>(at, body.data)?.model },
        "agent_thinking" => PushedKind::Thinking { thought: text(at, "thought", data::<ThinkingData>(at, body.data)?.thought)? },
        "agent_text_delta" => PushedKind::TextDelta { delta: text(at, "delta", data::<DeltaData>(at, body.data)?.delta)? },
        "tool_executing" => {
            let d: ExecutingData = data(at, body.data)?;
            PushedKind::ToolExecuting { call_id: d.call_id, tool: d.tool, arguments: d.arguments }
        }
        "tool_completed" => {
            let d: CompletedToolData = data(at, body.data)?;
            PushedKind::ToolCompleted { call_id: d.call_id, tool: d.tool, result: d.result, is_error: d.is_error, duration_ms: d.duration_ms }
        }
        "agent_completed" => {
            let d: CompletedData = data(at, body.data)?;
            PushedKind::Completed {
                text: d.text.map(|t| text(at, "text", t)).transpose()?,
                finish_reason: d.finish_reason,
                usage: d.usage.map(|u| UsageView { input_tokens: u.input_tokens, output_tokens: u.output_tokens, estimated: false }),
                model: d.model,
            }
        }
        "agent_error" => {
            let d: ErrorData = data(at, body.data)?;
            let code = RunErrorCode::parse(&d.code).ok_or_else(|| invalid(&format!("{at}.data.code"), "not an agent_error code (see PROTOCOL.md)"))?;
            PushedKind::Failed { code, message: text(at, "message", d.message)? }
        }
        other => {
            return Err(invalid(
                &format!("{at}.type"),
                format_args!("unknown event type {other:?} (agent_started, agent_thinking, agent_text_delta, tool_executing, tool_completed, agent_completed, agent_error)"),
            ));
        }
    };
    Ok(PushedEvent { seq: body.seq, kind })
}

/// One event object, or `{"events": [...]}`.
fn parse(body: &[u8]) -> Result<Vec<PushedEvent>, ApiError> {
    // Depth and shape checked as for every body.
    let value: Value = parse_json(body)?;
    if value.get("events").is_some() {
        let batch: PushedBatchBody = serde_json::from_value(value).map_err(|e| invalid("events", e))?;
        if batch.events.is_empty() || batch.events.len() > MAX_PUSHED_EVENTS {
            return Err(invalid("events", format_args!("must hold 1 to {MAX_PUSHED_EVENTS} events")));
        }
        batch.events.into_iter().enumerate().map(|(i, e)| event(&format!("events[{i}]"), e)).collect()
    } else {
        let one: PushedEventBody = serde_json::from_value(value).map_err(|e| ApiError::new(ErrorCode::InvalidField, e.to_string()))?;
        Ok(vec![event("event", one)?])
    }
}

/// The agent the caller's key is scoped to.
async fn key_agent(rest: &RestState, headers: &HeaderMap) -> Result<String, ApiError> {
    let key = api_key(headers).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "an API key scoped to the run's agent is required (X-API-Key)"))?;
    let principal =
        rest.app().api_keys().check(key).await.ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown or revoked API key"))?;
    match principal.rights {
        KeyRights::User(user_key) => match user_key.scope {
            KeyScope::Agent(agent_id) => Ok(agent_id),
            _ => Err(ApiError::new(ErrorCode::Forbidden, "this API key is not scoped to an agent; create one with scope agent")),
        },
        KeyRights::Server => Err(ApiError::new(ErrorCode::Forbidden, "a server key pushes no run events; use a key scoped to the agent")),
    }
}

/// `POST /api/v1/runs/{id}/events`: the run's events from its external
/// agent's service, one object or `{"events": [...]}` in order.
#[utoipa::path(post, path = "/api/v1/runs/{id}/events", tag = "agents", request_body = PushedBatchBody,
    params(("id" = String, Path, description = "Run id")),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "Taken (repeats of a `seq` already taken are counted as ignored)", body = PushResult),
        (status = 400, description = "Malformed event (the field at fault named) or more than 100 events", body = ErrorBody),
        (status = 401, description = "No or an unknown API key", body = ErrorBody),
        (status = 403, description = "A key not scoped to the run's agent", body = ErrorBody),
        (status = 404, description = "No such run", body = ErrorBody),
        (status = 409, description = "A `seq` gap, an event out of order (not agent_started first, a second agent_started), or the run has ended", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 503, description = "`run_elsewhere` (with Retry-After): another node of the deployment owns the run, push again; `unavailable`: the run is not being delivered, no agent runtime, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn push_run_events(
    State(rest): State<RestState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PushResult>, ApiError> {
    let agent_id = key_agent(&rest, &headers).await?;
    let events = parse(&body)?;
    let runtime = rest.agents().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "this server runs no agent runtime"))?;
    let report = runtime.push_events(&id, &agent_id, events).await.map_err(|e| {
        let code = match &e {
            PushError::NotFound => ErrorCode::NotFound,
            PushError::Forbidden => ErrorCode::Forbidden,
            PushError::Gap { .. } | PushError::State { .. } | PushError::Ended { .. } => ErrorCode::Conflict,
            PushError::NotExternal | PushError::Unavailable => ErrorCode::Unavailable,
            // Retried at once: a load balancer sends the retry to any node.
            PushError::Elsewhere => return ApiError::new(ErrorCode::RunElsewhere, e.to_string()).retry_after(1),
        };
        ApiError::new(code, e.to_string())
    })?;
    Ok(Json(report.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_parse_one_or_a_batch_and_name_the_field_at_fault() {
        let one = parse(br#"{"seq":1,"type":"agent_started","data":{"model":"m"}}"#).unwrap();
        assert_eq!(one, vec![PushedEvent { seq: 1, kind: PushedKind::Started { model: Some("m".into()) } }]);
        let batch = parse(br#"{"events":[{"seq":2,"type":"agent_text_delta","data":{"delta":"Hi"}},{"seq":3,"type":"agent_completed"}]}"#).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[1].kind, PushedKind::Completed { text: None, finish_reason: None, usage: None, model: None });

        let msg = |b: &[u8]| parse(b).unwrap_err().message;
        assert!(msg(br#"{"events":[{"seq":2,"type":"agent_text_delta","data":{}}]}"#).starts_with("events[0].data: missing field `delta`"));
        assert!(msg(br#"{"seq":0,"type":"agent_started"}"#).starts_with("event.seq"));
        assert!(msg(br#"{"seq":1,"type":"agent_error","data":{"code":"oops","message":"x"}}"#).starts_with("event.data.code"));
        assert!(msg(br#"{"seq":1,"type":"agent_dancing"}"#).starts_with("event.type"));
        assert!(msg(br#"{"events":[]}"#).starts_with("events: must hold 1 to 100"));
        assert!(msg(br#"{"seq":1,"type":"agent_started","extra":1}"#).contains("unknown field"));
    }
}
