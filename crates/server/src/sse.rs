//! The SSE transport: a server-to-client stream of the same events, resumed
//! with `Last-Event-ID`; commands arrive over HTTP and run through the same
//! executor as WebSocket frames.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use chorus_core::access::AccessError;
use chorus_core::hub::UserLimiter;
use chorus_core::outbound::{Batch, Outgoing};
use chorus_core::publication::Position;
use chorus_core::supervise::catch_panic;
use chorus_core::{ConnId, Executor, Lease, Transport};
use chorus_protocol::push::ReconnectData;
use chorus_protocol::sse::{KEEP_ALIVE, SsePositions, encode_event, encode_retry};
use chorus_protocol::{ChannelName, CloseCode, Command, ControlPush, ErrorCode, Reply, Request, StreamPosition, decode_request, encode_control, timestamp};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;

use crate::admission::admit;
use crate::credentials::bearer;
use crate::error::ApiError;
use crate::rest::openapi::ErrorBody;
use crate::request_id::RequestId;
use crate::state::AppState;

/// Browser reconnect delay sent at stream start.
const RETRY_MS: u64 = 1_000;
/// Frames buffered between the pump and the HTTP body.
const BODY_BUFFER: usize = 16;
const BATCH: usize = 64;

/// `GET /sse?channel=a&channel=b[&token=..][&last_event_id=..]`.
#[utoipa::path(get, path = "/sse", tag = "realtime",
    description = "Server-Sent Events stream of the same pushes as the WebSocket; see PROTOCOL.md.",
    params(
        ("channel" = Vec<String>, Query, description = "Channels to subscribe to (repeatable)"),
        ("token" = Option<String>, Query, description = "Token, when `Authorization` cannot be set"),
        ("last_event_id" = Option<String>, Query, description = "Resume position, when `Last-Event-ID` cannot be set"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume position: `channel=epoch:offset;...`"),
    ),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream"),
        (status = 400, description = "Bad channel or Last-Event-ID", body = ErrorBody),
        (status = 401, description = "Token invalid or expired", body = ErrorBody),
        (status = 403, description = "A channel may not be subscribed to", body = ErrorBody),
        (status = 429, description = "Connect rate limit", body = ErrorBody),
        (status = 503, description = "Node full or shutting down", body = ErrorBody),
    ))]
pub async fn stream(
    State(app): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    headers: HeaderMap,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref().unwrap_or(""))?;
    admit(app.hub())?;
    let token = bearer(&headers)
        .map(str::to_owned)
        .or(params.token)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "a token is required (Authorization header or `token` query parameter)"))?;
    let identity = app.executor().authenticate(&token).await?;

    let last_event_id = headers.get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned).or(params.last_event_id);
    let resuming = last_event_id.is_some();
    let resume = match last_event_id {
        Some(id) => SsePositions::parse(&id).map_err(|e| ApiError::new(ErrorCode::BadRequest, e.to_string()))?,
        None => SsePositions::new(),
    };
    // Every channel asked for now, plus every channel the stream had before.
    let mut channels = params.channels;
    for (ch, _) in resume.iter() {
        if !channels.contains(ch) {
            channels.push(ch.clone());
        }
    }
    if channels.is_empty() {
        return Err(ApiError::new(ErrorCode::BadRequest, "at least one `channel` is required"));
    }

    // Checked before the connection exists, so a refused request never
    // evicts one of the user's other connections. A new stream is refused
    // as a whole; a resumed one (the browser reconnecting by itself, which it
    // never does after an error status) goes on without the channels it may
    // no longer have, each ended with `unsubscribed`.
    let hub = app.hub().clone();
    let mut refused = Vec::new();
    for channel in &channels {
        match hub.access().check_subscribe(&identity, channel).await {
            Ok(()) => {}
            Err(e @ (AccessError::Denied(_) | AccessError::UnknownNamespace(_))) if resuming => refused.push((channel.clone(), e.to_string())),
            Err(e) => return Err(chorus_core::executor::CommandError::from(e).into()),
        }
    }
    channels.retain(|c| !refused.iter().any(|(r, _)| r == c));

    let outbound = hub.new_outbound();
    // From here on, every way out (error, client gone mid-setup, panic) releases the connection.
    let lease = app.executor().open(identity, Transport::Sse, request_id.0.clone(), outbound.clone()).await?;
    let Some(conn) = lease.connection().cloned() else {
        return Err(ApiError::new(ErrorCode::Internal, "connection lost"));
    };
    let mut positions = SsePositions::new();
    let mut follow_ups = Vec::with_capacity(channels.len());
    for (i, channel) in channels.into_iter().enumerate() {
        let since = resume.get(channel.as_str()).cloned();
        let request = Request { id: i as u64, command: Command::Subscribe { channel: channel.clone(), since: since.clone() } };
        let executed = app.executor().execute(&conn, request).await;
        match executed.reply.outcome {
            Ok(chorus_protocol::ReplyBody::Subscribed(r)) => {
                let start = since.unwrap_or(StreamPosition { offset: r.offset, epoch: r.epoch });
                positions.set(channel, start);
                follow_ups.extend(executed.follow_up);
            }
            Ok(_) => {}
            Err(e) if resuming && e.error == ErrorCode::Forbidden => refused.push((channel, e.message)),
            Err(e) => {
                lease.end().await;
                return Err(ApiError::new(e.error, e.message));
            }
        }
    }
    for (channel, reason) in refused {
        let _ = outbound.try_push(Outgoing::unsubscribed(channel, reason, hub.now_ms()));
    }
    for f in follow_ups {
        hub.spawn_follow_up(f);
    }

    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(BODY_BUFFER);
    let span = tracing::info_span!(parent: None, "sse", request_id = %request_id.as_str(), conn = %conn.id, user = %conn.user);
    hub.spawn_connection("sse", span, pump(app.executor().clone(), lease, positions, tx));

    let mut res = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

struct Params {
    channels: Vec<ChannelName>,
    token: Option<String>,
    last_event_id: Option<String>,
}

impl Params {
    fn parse(query: &str) -> Result<Self, ApiError> {
        let mut p = Params { channels: Vec::new(), token: None, last_event_id: None };
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            match k.as_ref() {
                "channel" => {
                    let ch = ChannelName::parse(&v).map_err(|e| ApiError::new(ErrorCode::InvalidField, format!("channel `{v}`: {e}")))?;
                    if !p.channels.contains(&ch) {
                        p.channels.push(ch);
                    }
                }
                "token" => p.token = Some(v.into_owned()),
                "last_event_id" => p.last_event_id = Some(v.into_owned()),
                _ => {}
            }
        }
        Ok(p)
    }
}

/// Moves the connection's queue into the response body as SSE events. Ends
/// with the connection: when the queue closes, or the client goes away
/// (then the queue is closed here, which also stops any replay). The
/// connection is released before the stream's last event is sent, so a
/// closing stream holds no slot of its user.
async fn pump(executor: Arc<Executor>, lease: Lease, mut positions: SsePositions, tx: mpsc::Sender<Result<Bytes, Infallible>>) {
    let Some(conn) = lease.connection().cloned() else { return };
    let hub = executor.hub();
    let timing = hub.timing().clone();
    let outbound = conn.outbound.clone();
    // Returns the stream's last words (`disconnect` or `reconnect`, after
    // whatever was still unsent) when the queue closed, `None` when the client left.
    let drain = async {
        let connected = executor.connected_push(&conn, Some(format!("/api/v1/connections/{}/commands", conn.id)));
        let mut head = encode_retry(RETRY_MS).to_vec();
        head.extend_from_slice(&encode_event(Some(&positions.encode()), connected.name(), &encode_control(&connected)));
        // Rendered but not sent when the queue closed (the client stopped
        // reading): it goes out before the last words, so their id never
        // names positions the client did not get.
        let mut unsent = match send(&tx, Bytes::from(head), &outbound, timing.stale_after).await {
            Sent::Yes => Vec::new(),
            Sent::Gone => return None,
            Sent::Closed(b) => b.to_vec(),
        };
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                b = outbound.next_batch(&mut batch, BATCH) => {
                    let closed = match b { Batch::Items => None, Batch::Closed(code) => Some(code) };
                    let mut chunk = std::mem::take(&mut unsent);
                    for item in batch.drain(..) {
                        render(&mut chunk, &item, &mut positions);
                    }
                    if let Some(code) = closed {
                        let last = match code {
                            CloseCode::ServiceRestart => ControlPush::Reconnect {
                                timestamp: timestamp::format_ms(hub.now_ms()),
                                data: ReconnectData { reason: code.reason().into(), retry_ms: RETRY_MS },
                            },
                            other => ControlPush::disconnect(other),
                        };
                        chunk.extend_from_slice(&encode_event(Some(&positions.encode()), last.name(), &encode_control(&last)));
                        return Some(chunk);
                    }
                    if !chunk.is_empty() {
                        match send(&tx, Bytes::from(chunk), &outbound, timing.stale_after).await {
                            Sent::Yes => {}
                            Sent::Gone => return None,
                            Sent::Closed(b) => unsent = b.to_vec(),
                        }
                    }
                }
                _ = tokio::time::sleep(timing.sse_keepalive) => {
                    if let Sent::Gone = send(&tx, Bytes::from_static(KEEP_ALIVE), &outbound, timing.stale_after).await {
                        return None;
                    }
                }
            }
        }
    };
    let last = drain.await;
    // The client went away (or the queue closed already: then this is a no-op).
    outbound.close(CloseCode::Normal);
    lease.end().await;
    if let Some(chunk) = last {
        // Best effort: the stream ends either way.
        let _ = tokio::time::timeout(Duration::from_secs(5), tx.send(Ok(Bytes::from(chunk)))).await;
    }
}

fn render(out: &mut Vec<u8>, item: &Outgoing, positions: &mut SsePositions) {
    match item {
        Outgoing::Event(p) => {
            positions.set(p.channel.clone(), StreamPosition { offset: p.offset, epoch: p.epoch.to_string() });
            out.extend_from_slice(&encode_event(Some(&positions.encode()), p.event.as_str(), p.frame()));
        }
        Outgoing::RecoveryFailed { channel, position, frame } => {
            positions.set(channel.clone(), StreamPosition { offset: position.offset, epoch: position.epoch.to_string() });
            out.extend_from_slice(&encode_event(Some(&positions.encode()), "recovery_failed", frame));
        }
        Outgoing::Unsubscribed { channel, frame } => {
            positions.remove(channel.as_str());
            out.extend_from_slice(&encode_event(Some(&positions.encode()), "unsubscribed", frame));
        }
        Outgoing::Control { name, frame } => out.extend_from_slice(&encode_event(None, name, frame)),
        Outgoing::Track { channel, position: Some(p) } => {
            positions.set(channel.clone(), StreamPosition { offset: p.offset, epoch: p.epoch.to_string() });
        }
        Outgoing::Track { channel, position: None } => positions.remove(channel.as_str()),
        // Replies to SSE commands go in the HTTP response, never in the stream.
        Outgoing::Reply(_) => {}
    }
}

/// What became of bytes for the body.
enum Sent {
    Yes,
    /// The client is gone.
    Gone,
    /// The queue closed first (or nothing moved for `stale_after`, which
    /// closes it): the bytes were not sent.
    Closed(Bytes),
}

/// Sends into the body unless the client is gone, the queue closes, or
/// nothing moves for `stale_after`.
async fn send(tx: &mpsc::Sender<Result<Bytes, Infallible>>, bytes: Bytes, outbound: &chorus_core::outbound::Outbound, stale_after: Duration) -> Sent {
    tokio::select! {
        permit = tx.reserve() => match permit {
            Ok(permit) => {
                permit.send(Ok(bytes));
                Sent::Yes
            }
            Err(_) => Sent::Gone,
        },
        _ = outbound.wait_closed() => Sent::Closed(bytes),
        _ = tokio::time::sleep(stale_after) => {
            outbound.close(CloseCode::Stale);
            Sent::Closed(bytes)
        }
    }
}

/// A command's result: `{id, result}` (PROTOCOL.md "Frames").
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CommandResult {
    /// The command's `id`.
    id: u64,
    /// The command's result; its fields depend on the command (PROTOCOL.md "Commands").
    #[schema(value_type = Object)]
    result: (),
}

/// A command's error reply: `{id, error}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct CommandErrorReply {
    /// The command's `id`; null when the frame had none.
    #[schema(required = true)]
    id: Option<u64>,
    error: ErrorBody,
}

/// An error from the command endpoint: the standard error object when the
/// request is refused before the command runs (token, connection, size,
/// rate, a malformed or `connect` frame), or the command's error reply.
/// Either way its `request_id` is this HTTP request's.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum CommandError {
    Request(ErrorBody),
    Reply(CommandErrorReply),
}

/// `POST /api/v1/connections/{id}/commands`: a command for an SSE connection.
/// The body is a command frame; the response body is its reply.
#[utoipa::path(post, path = "/api/v1/connections/{id}/commands", tag = "realtime",
    description = "A command (PROTOCOL.md \"Commands\") for an SSE connection of the caller. The reply is `{id, result}` or `{id, error}`; pushes it causes arrive on the stream.",
    params(("id" = String, Path, description = "`connection_id` from the stream's `connected` event")),
    request_body(content = serde_json::Value, description = "A command frame, e.g. `{\"id\":1,\"type\":\"subscribe\",\"channel\":\"room:x\"}`"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The command's result", body = CommandResult),
        (status = 400, description = "Malformed command, or the command's invalid field", body = CommandError),
        (status = 401, description = "Token invalid or expired", body = CommandError),
        (status = 403, description = "Not allowed", body = CommandError),
        (status = 404, description = "No such connection for this user", body = CommandError),
        (status = 409, description = "Conflict (e.g. `connect` on a connected stream, already subscribed)", body = CommandError),
        (status = 413, description = "Command larger than the frame limit", body = CommandError),
        (status = 422, description = "A published event that does not match its type's schema", body = CommandError),
        (status = 429, description = "Command rate limit, or a count limit of the connection", body = CommandError),
        (status = 503, description = "Maintenance mode, or a dependency unavailable", body = CommandError),
    ))]
pub async fn command(
    State(app): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = bearer(&headers).ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Authorization: Bearer <token> is required"))?;
    let identity = app.executor().authenticate(token).await?;
    let hub = app.hub();
    hub.check_user_rate(UserLimiter::Frames, &identity.user_id)?;
    let conn = ConnId::parse(&id)
        .and_then(|cid| hub.connection(&identity.user_id, cid))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such connection for this user"))?;
    if body.len() > hub.limits().frame_bytes {
        return Err(ApiError::new(ErrorCode::PayloadTooLarge, format!("command is {} bytes; the limit is {}", body.len(), hub.limits().frame_bytes)));
    }
    let request = match decode_request(&body) {
        Ok(r) => r,
        Err(e) => {
            let err = chorus_protocol::ErrorObject::new(e.code, e.message, request_id.as_str().to_owned());
            return Ok(reply_response(&Reply::err(e.id, err)));
        }
    };
    if matches!(request.command, Command::Connect { .. }) {
        return Err(ApiError::new(ErrorCode::Conflict, "already connected"));
    }
    let id = request.id;
    // In a task of its own: a client that hangs up mid-command must not
    // leave it half done (a subscription without its replay, say).
    let executor = app.executor().clone();
    let metrics = hub.metrics().clone();
    let task = tokio::spawn(
        async move {
            let run = async {
                let subscribe = match &request.command {
                    Command::Subscribe { channel, since } => Some((channel.clone(), since.clone())),
                    _ => None,
                };
                let unsubscribe = match &request.command {
                    Command::Unsubscribe { channel } => Some(channel.clone()),
                    _ => None,
                };
                let mut executed = executor.execute(&conn, request).await;
                // The stream's event ids name every subscribed channel: the
                // pump learns of this change in queue order (see `render`).
                match (&executed.reply.outcome, subscribe, unsubscribe) {
                    (Ok(chorus_protocol::ReplyBody::Subscribed(r)), Some((channel, since)), _) => {
                        let start = match since {
                            Some(s) => Position { offset: s.offset, epoch: s.epoch.as_str().into() },
                            None => Position { offset: r.offset, epoch: r.epoch.as_str().into() },
                        };
                        let _ = conn.outbound.push_reply(Outgoing::Track { channel, position: Some(start) }).await;
                    }
                    (Ok(_), _, Some(channel)) => {
                        let _ = conn.outbound.push_reply(Outgoing::Track { channel, position: None }).await;
                    }
                    _ => {}
                }
                if let Some(f) = executed.follow_up.take() {
                    executor.hub().spawn_follow_up(f);
                }
                executed.reply
            };
            catch_panic(&metrics, "sse_command", run).await
        }
        .instrument(tracing::Span::current()),
    );
    let mut reply = match task.await {
        Ok(Some(reply)) => reply,
        _ => {
            let err = chorus_protocol::ErrorObject::new(ErrorCode::Internal, "internal error", request_id.as_str().to_owned());
            Reply::err(Some(id), err)
        }
    };
    // An error names this HTTP request (its header and log lines), not the stream's.
    if let Err(e) = &mut reply.outcome {
        e.request_id = request_id.as_str().to_owned();
    }
    Ok(reply_response(&reply))
}

/// A command's reply as the HTTP response: 200 for a result, the error
/// code's status for an error.
fn reply_response(reply: &Reply) -> Response {
    let status = match &reply.outcome {
        Ok(_) => StatusCode::OK,
        Err(e) => StatusCode::from_u16(e.error.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    let mut res = (status, reply.encode()).into_response();
    res.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_query_values() {
        let p = Params::parse("channel=room%3Aa&channel=user:u&token=t&x=1").unwrap();
        assert_eq!(p.channels.len(), 2);
        assert_eq!(p.token.as_deref(), Some("t"));
        assert!(Params::parse("channel=nonamespace").is_err());
    }
}
