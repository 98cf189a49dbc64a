//! `POST /api/v1/agui/{agent_id}`: runs an agent for an AG-UI client and
//! streams the run as AG-UI events over SSE. A transport adapter: the
//! runtime starts and runs the run (`Runtime::start_client_run`: the same
//! queue, policies, limits and run state machine as every run), the
//! protocol crate parses `RunAgentInput` and maps the run's events
//! (`chorus_protocol::agui`); this authenticates, shapes the request and
//! moves the frames.
//!
//! - `threadId` is the channel: `room:<channel id>`, a channel the caller
//!   is a member of (and the agent too). The newest user message is stored
//!   there as the caller's; the answer lands there as the agent's.
//! - The caller: a user's access token, or a user's API key (its owner
//!   acts; a key narrowed to an agent works for that agent only, one
//!   narrowed to channels for those channels only). Server keys act for
//!   nobody (403).
//! - A client that goes away does not stop the run: it goes on and lands
//!   in the channel.
//! - A run another node runs (the agent is busy in the channel there, or
//!   that node took it first) is not streamed from here: the stream ends at
//!   once with `RUN_ERROR` `not_watchable`; the run lands in the channel.

use std::collections::VecDeque;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::header::{self, HeaderValue};
use axum::http::HeaderMap;
use axum::response::Response;
use chorus_agents::{ClientPrompt, ClientRunOutcome, ClientRunRequest, RunFeed};
use chorus_chat::Caller;
use chorus_chat::keys::KeyScope;
use chorus_core::UserId;
use chorus_core::hub::UserLimiter;
use chorus_llm::{Message as Turn, ToolCall, ToolDefinition, ToolResult};
use chorus_protocol::agui::{AguiEvent, AguiMapper, AguiRun, InputError, InputRole, RunAgentInput};
use chorus_protocol::channel::pattern_matches;
use chorus_protocol::{ChannelName, ErrorCode};
use chorus_store::UserRole;
use serde::Deserialize;
use serde_json::Value;
use utoipa::ToSchema;

use crate::credentials::{KeyRights, api_key, bearer};
use crate::error::ApiError;
use crate::rest::RestState;
use crate::rest::openapi::ErrorBody;

/// AG-UI `RunAgentInput` (camelCase, as `@ag-ui/client` sends it). See PROTOCOL.md, "AG-UI".
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)] // Documents the body; `chorus_protocol::agui::RunAgentInput` parses it.
pub struct RunAgentInputBody {
    /// The channel: `room:<channel id>`, one the caller and the agent are members of.
    #[schema(pattern = "^room:[A-Za-z0-9_.:@-]{1,128}$", max_length = 133)]
    pub thread_id: String,
    /// The client's id for this run (echoed in `RUN_STARTED` and `RUN_FINISHED`).
    #[schema(min_length = 1, max_length = 200)]
    pub run_id: String,
    #[schema(min_length = 1, max_length = 200)]
    pub parent_run_id: Option<String>,
    /// The conversation; the last message is a user message (the one the agent
    /// answers) or the tool results of frontend tool calls.
    #[schema(max_items = 1000)]
    pub messages: Vec<AguiMessageBody>,
    /// Frontend tools: offered to the model; a call of one ends the run with the call for the client.
    #[schema(max_items = 32)]
    pub tools: Option<Vec<AguiToolBody>>,
    /// Passed through untouched; Chorus keeps no agent state.
    pub state: Option<Value>,
    /// Accepted and not used.
    pub context: Option<Vec<Value>>,
    /// Accepted and not used.
    pub forwarded_props: Option<Value>,
}

/// One AG-UI message.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct AguiMessageBody {
    #[schema(min_length = 1, max_length = 200)]
    pub id: String,
    /// `user`, `assistant`, `tool`, `system`, `developer`, `reasoning` (`activity` is skipped).
    pub role: String,
    /// Text, or an array of `{"type":"text","text":…}` parts.
    pub content: Option<Value>,
    /// An assistant message's tool calls: `{"id","type":"function","function":{"name","arguments"}}`.
    pub tool_calls: Option<Vec<Value>>,
    /// For `tool` messages: the call answered.
    pub tool_call_id: Option<String>,
    /// For `tool` messages: the client's error, if the tool failed.
    pub error: Option<String>,
}

/// A frontend tool.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct AguiToolBody {
    /// 1 to 64 ASCII letters, digits, `_` or `-`; not a name of the agent's own tools.
    #[schema(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    pub name: String,
    #[schema(max_length = 1024)]
    pub description: String,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Option<Value>,
}

/// `POST /api/v1/agui/{agent_id}`: runs the agent for an AG-UI client.
#[utoipa::path(post, path = "/api/v1/agui/{agent_id}", tag = "agents", request_body = RunAgentInputBody,
    description = "Runs the agent for an AG-UI client (e.g. `@ag-ui/client`'s HttpAgent) and streams the run as AG-UI events over SSE (`data: <json>` frames): `RUN_STARTED` first, exactly one `RUN_FINISHED` or `RUN_ERROR` last. See PROTOCOL.md, \"AG-UI\".",
    params(("agent_id" = String, Path, description = "Agent id (one of the caller's agents)")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The run's AG-UI events", content_type = "text/event-stream"),
        (status = 400, description = "Malformed `RunAgentInput` (the field at fault named)", body = ErrorBody),
        (status = 401, description = "No or an invalid token or key", body = ErrorBody),
        (status = 403, description = "A server key, or a user's key narrowed to another agent or to other channels", body = ErrorBody),
        (status = 404, description = "No such agent among the caller's, or no such channel among the caller's", body = ErrorBody),
        (status = 409, description = "The agent is not a member of the channel", body = ErrorBody),
        (status = 413, description = "Body too large", body = ErrorBody),
        (status = 429, description = "Request or message rate limit", body = ErrorBody),
        (status = 503, description = "Maintenance mode, shutting down, no agent runtime, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn run_agent(
    State(rest): State<RestState>,
    Path(agent_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (caller, scope) = authenticate(&rest, &headers).await?;
    if let KeyScope::Agent(scoped) = &scope
        && *scoped != agent_id
    {
        return Err(ApiError::new(ErrorCode::Forbidden, "this API key is narrowed to another agent"));
    }
    let runtime = rest.agents().ok_or_else(|| ApiError::new(ErrorCode::Unavailable, "this server runs no agent runtime"))?;
    // The agent before the body: another user's agent is 404 whatever is sent.
    rest.chat().agents.get(&caller, &agent_id).await?;
    if chorus_protocol::exceeds_max_depth(&body) {
        return Err(ApiError::new(ErrorCode::BadRequest, format!("body: {}", chorus_protocol::depth::too_deep_message())));
    }
    let input = RunAgentInput::parse(&body).map_err(|e| match e {
        InputError::Malformed(m) => ApiError::new(ErrorCode::MalformedJson, format!("body is not valid JSON: {m}")),
        InputError::Field { .. } => ApiError::new(ErrorCode::InvalidField, e.to_string()),
    })?;
    let channel = thread_channel(&input.thread_id)?;
    if let KeyScope::Channels(patterns) = &scope
        && !patterns.iter().any(|p| pattern_matches(p, &channel))
    {
        return Err(ApiError::new(ErrorCode::Forbidden, "this API key is narrowed to other channels"));
    }
    let request = ClientRunRequest {
        agent_id: agent_id.clone(),
        channel_id: channel.id().to_owned(),
        prompt: prompt(&input)?,
        frontend_tools: input
            .tools
            .iter()
            .map(|t| ToolDefinition { name: t.name.clone(), description: t.description.clone(), input_schema: t.parameters.clone() })
            .collect(),
    };
    let run = runtime.start_client_run(&caller, request).await?;
    let (chorus_run_id, feed, refusal) = match run.outcome {
        ClientRunOutcome::Watching { run_id, feed } => (run_id, Some(feed), None),
        ClientRunOutcome::Unwatchable { run_id } => (
            run_id,
            None,
            Some(("not_watchable", "the run cannot be streamed here; its events are on the channel".to_owned())),
        ),
        ClientRunOutcome::ChainLimited { message } => (String::new(), None, Some(("agent_chain_limited", message))),
    };
    let mapper = AguiMapper::new(AguiRun {
        thread_id: input.thread_id.clone(),
        run_id: input.run_id.clone(),
        parent_run_id: input.parent_run_id.clone(),
        chorus_run_id,
        agent_id: run.agent_id,
    });
    let stream = AguiStream { mapper, feed, refusal, pending: VecDeque::new(), hub: rest.app().hub().clone() };
    let mut res = Response::new(Body::from_stream(stream.into_stream()));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// The caller, and how its key (if a key was used) is narrowed.
async fn authenticate(rest: &RestState, headers: &HeaderMap) -> Result<(Caller, KeyScope), ApiError> {
    let token = if headers.contains_key("x-api-key") { None } else { bearer(headers) };
    let token_error = match token {
        Some(token) => match rest.chat().accounts.authenticate(token).await {
            Ok(caller) => {
                rest.app().hub().check_user_rate(UserLimiter::Rest, &UserId::new(&caller.user_id))?;
                return Ok((caller, KeyScope::Owner));
            }
            Err(e) => Some(ApiError::from(e)),
        },
        None => None,
    };
    let unauthorized = || {
        token_error
            .clone()
            .unwrap_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Authorization: Bearer <token> (or an API key) is required"))
    };
    let Some(key) = api_key(headers) else { return Err(unauthorized()) };
    let Some(principal) = rest.app().api_keys().check(key).await else { return Err(unauthorized()) };
    let KeyRights::User(user_key) = principal.rights else {
        return Err(ApiError::new(ErrorCode::Forbidden, "a server key acts for no user; use a user's access token or API key"));
    };
    let user = rest.chat().deps().store.get_user(&user_key.owner).await.map_err(chorus_chat::ChatError::from)?;
    let role = user.map_or(UserRole::User, |u| u.role);
    rest.app().hub().check_user_rate(UserLimiter::Rest, &UserId::new(&user_key.owner))?;
    Ok((Caller { user_id: user_key.owner, role, session_id: None }, user_key.scope))
}

/// `room:<channel id>`.
fn thread_channel(thread_id: &str) -> Result<ChannelName, ApiError> {
    match ChannelName::parse(thread_id) {
        Ok(name) if name.namespace() == "room" => Ok(name),
        _ => Err(ApiError::new(
            ErrorCode::InvalidField,
            "threadId: must name the channel as `room:<channel id>` (its `stream`)",
        )),
    }
}

/// What the run answers: the newest user message, or the results of
/// frontend tool calls that end the conversation.
fn prompt(input: &RunAgentInput) -> Result<ClientPrompt, ApiError> {
    let last = input.messages.iter().rev().find(|m| matches!(m.role, InputRole::User | InputRole::Assistant | InputRole::Tool));
    match last.map(|m| m.role) {
        Some(InputRole::User) => {
            let text = input.last_user_message().map(|m| m.text.clone()).unwrap_or_default();
            Ok(ClientPrompt::Message(text))
        }
        Some(InputRole::Tool) if !input.tool_results().is_empty() => {
            let mut calls: Vec<ToolCall> = Vec::new();
            let mut results = Vec::new();
            let first = input.messages.len() - input.tool_results().len();
            for (i, m) in input.tool_results().iter().enumerate() {
                let id = m.tool_call_id.clone().unwrap_or_default();
                let call = input.messages[..first]
                    .iter()
                    .filter(|a| a.role == InputRole::Assistant)
                    .flat_map(|a| a.tool_calls.iter())
                    .find(|c| c.id == id)
                    .ok_or_else(|| {
                        ApiError::new(
                            ErrorCode::InvalidField,
                            format!("messages[{}].toolCallId: names no tool call of an earlier assistant message", first + i),
                        )
                    })?;
                if !calls.iter().any(|c| c.id == call.id) {
                    let arguments =
                        serde_json::from_str(&call.arguments).unwrap_or_else(|_| Value::String(call.arguments.clone()));
                    calls.push(ToolCall { id: call.id.clone(), name: call.name.clone(), arguments });
                }
                let (content, is_error) = match &m.error {
                    Some(error) => (error.clone(), true),
                    None => (m.text.clone(), false),
                };
                results.push(Turn::ToolResult(ToolResult { call_id: id, name: call.name.clone(), content, is_error }));
            }
            let mut turns = vec![Turn::Assistant { text: String::new(), tool_calls: calls }];
            turns.extend(results);
            Ok(ClientPrompt::ToolResults(turns))
        }
        _ => Err(ApiError::new(
            ErrorCode::InvalidField,
            "messages: must end with a user message (the one the agent answers) or with tool results",
        )),
    }
}

/// The response body: AG-UI frames from the run's feed.
struct AguiStream {
    mapper: AguiMapper,
    /// `None` once it ended (or when there was no run to watch).
    feed: Option<RunFeed>,
    /// Why the run cannot be streamed (code, message): started, then this error.
    refusal: Option<(&'static str, String)>,
    /// Frames mapped and not yet sent.
    pending: VecDeque<AguiEvent>,
    hub: chorus_core::Hub,
}

impl AguiStream {
    fn into_stream(mut self) -> impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        self.pending.extend(self.mapper.start());
        if let Some((code, message)) = self.refusal.take() {
            self.pending.extend(self.mapper.fail(code, &message));
        }
        futures_util::stream::unfold(self, |mut s| async move {
            loop {
                if let Some(event) = s.pending.pop_front() {
                    let frame = event.sse_frame(s.hub.now_ms());
                    return Some((Ok(frame), s));
                }
                if s.mapper.is_ended() {
                    return None;
                }
                let Some(feed) = s.feed.as_mut() else {
                    let events = s.mapper.fail("internal", "the run's events cannot be streamed");
                    s.pending.extend(events);
                    continue;
                };
                let next = tokio::select! {
                    next = feed.next() => next,
                    _ = s.hub.stopping() => {
                        let events = s.mapper.fail("shutdown", "the server is shutting down; the run's ending will be on the channel");
                        s.pending.extend(events);
                        continue;
                    }
                    // A run may wait its turn a while: a comment keeps proxies from cutting the stream.
                    _ = tokio::time::sleep(s.hub.timing().sse_keepalive) => {
                        return Some((Ok(Bytes::from_static(b": keep-alive\n\n")), s));
                    }
                };
                match next {
                    Some(watched) => match serde_json::from_slice::<Value>(watched.data.as_bytes()) {
                        Ok(data) => s.pending.extend(s.mapper.map(watched.event, &data)),
                        Err(e) => tracing::warn!(error = %e, "run event not readable; left out of the AG-UI stream"),
                    },
                    None => {
                        let (code, message) = if feed.lagged() {
                            ("slow_consumer", "the client read too slowly; the run goes on and its answer lands in the channel")
                        } else if feed.moved() {
                            (
                                "not_watchable",
                                "another server runs this run (the agent was busy in the channel there, or it took the run first); its events and answer are on the channel",
                            )
                        } else {
                            ("internal", "the run ended without its ending reaching this stream; see the channel")
                        };
                        let events = s.mapper.fail(code, message);
                        s.pending.extend(events);
                        s.feed = None;
                    }
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> RunAgentInput {
        RunAgentInput::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn the_thread_is_a_room() {
        assert_eq!(thread_channel("room:c1").unwrap().id(), "c1");
        for bad in ["c1", "user:alice", "room:", "room:a b"] {
            assert_eq!(thread_channel(bad).unwrap_err().code, ErrorCode::InvalidField, "{bad}");
        }
    }

    #[test]
    fn the_prompt_is_the_newest_user_message_or_tool_results() {
        let p = prompt(&input(json!({"threadId":"room:c","runId":"r","messages":[
            {"id":"u1","role":"user","content":"first"},{"id":"a1","role":"assistant","content":"hi"},
            {"id":"u2","role":"user","content":"second"},{"id":"s","role":"system","content":"be brief"}]})))
        .unwrap();
        assert!(matches!(p, ClientPrompt::Message(t) if t == "second"));

        let p = prompt(&input(json!({"threadId":"room:c","runId":"r","messages":[
            {"id":"u1","role":"user","content":"paint it"},
            {"id":"a1","role":"assistant","toolCalls":[{"id":"c1","type":"function","function":{"name":"paint","arguments":"{\"color\":\"red\"}"}}]},
            {"id":"t1","role":"tool","toolCallId":"c1","content":"painted"}]})))
        .unwrap();
        let ClientPrompt::ToolResults(turns) = p else { panic!("tool results") };
        assert_eq!(turns.len(), 2);
        assert!(matches!(&turns[0], Turn::Assistant { tool_calls, .. } if tool_calls[0].arguments == json!({"color":"red"})));
        assert!(matches!(&turns[1], Turn::ToolResult(r) if r.name == "paint" && r.content == "painted" && !r.is_error));

        let err = |v: Value| prompt(&input(v)).unwrap_err().message;
        assert!(err(json!({"threadId":"room:c","runId":"r","messages":[]})).starts_with("messages:"));
        assert!(err(json!({"threadId":"room:c","runId":"r","messages":[{"id":"a","role":"assistant","content":"x"}]})).starts_with("messages:"));
        assert!(
            err(json!({"threadId":"room:c","runId":"r","messages":[{"id":"t","role":"tool","toolCallId":"zz","content":"x"}]}))
                .starts_with("messages[0].toolCallId")
        );
    }
}
