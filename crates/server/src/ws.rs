//! The WebSocket transport: an adapter that moves text frames between a
//! socket and a core [`Session`], and nothing else.
//!
//! One task per connection runs two futures: the reader (frames into the
//! session) and the writer (the outbound queue onto the socket, plus pings).
//! They share the task, so an idle connection costs one task.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::connect_info::ConnectInfo;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use chorus_core::outbound::{Batch, Outbound, Outgoing};
use chorus_core::{Flow, Hub, Identity, Session, Transport};
use chorus_protocol::{CloseCode, ErrorCode, encode_control};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::time::Instant;
use tracing::Instrument;

use crate::admission::admit;
use crate::credentials::bearer;
use crate::error::ApiError;
use crate::listener::Peer;
use crate::rest::openapi::ErrorBody;
use crate::request_id::RequestId;
use crate::state::AppState;
use crate::ws_close::{CLOSE_GRACE, linger, send_close};

/// Frames written per batch before one flush.
const BATCH: usize = 64;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// A token in the query string, for clients that cannot set headers. Never logged.
    token: Option<String>,
}

/// `GET /ws`: checks origin, rate and credentials before upgrading.
#[utoipa::path(get, path = "/ws", tag = "realtime", params(WsQuery),
    description = "WebSocket upgrade. Frames, commands and close codes are in PROTOCOL.md. The token may also be given as `Authorization: Bearer`, or later with a `connect` command.",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade", body = ErrorBody),
        (status = 401, description = "Token invalid or expired", body = ErrorBody),
        (status = 403, description = "Origin not allowed", body = ErrorBody),
        (status = 429, description = "Connect rate limit", body = ErrorBody),
        (status = 503, description = "Node full or shutting down", body = ErrorBody),
    ))]
pub async fn upgrade(
    State(app): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    peer: Option<Extension<ConnectInfo<Peer>>>,
    headers: HeaderMap,
    Query(query): Query<WsQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("not a WebSocket upgrade: {e}")))?;
    crate::origin::check_upgrade_origin(&app, &headers)?;
    admit(app.hub())?;
    let token = bearer(&headers).map(str::to_owned).or(query.token);
    let identity = match token {
        Some(t) => Some(app.executor().authenticate(&t).await?),
        None => None,
    };
    let limits = app.hub().limits();
    let config = app.config();
    let ws = ws
        .read_buffer_size(config.ws_read_buffer_bytes)
        .write_buffer_size(config.ws_write_buffer_bytes)
        .max_write_buffer_size(limits.outbound_queue_bytes.saturating_mul(4).max(config.ws_write_buffer_bytes * 2))
        .max_message_size(limits.frame_hard_cap_bytes)
        .max_frame_size(limits.frame_hard_cap_bytes);
    // A root span carrying the request id: as a child it would keep the
    // upgrade request's span (and its memory) alive for the connection's life.
    let span = tracing::info_span!(parent: None, "ws", request_id = %request_id.as_str(), conn = tracing::field::Empty, user = tracing::field::Empty);
    if let (Some(Extension(ConnectInfo(peer))), Some(_)) = (&peer, &identity) {
        // The `connected` push follows at once: the 101 waits for it.
        peer.hold_response();
    }
    Ok(ws.on_upgrade(move |socket| {
        let hub = app.hub().clone();
        // Split before the future exists, so the socket lives only behind the
        // halves' shared lock; boxed, so the wrappers do not each copy its state.
        let (sink, stream) = socket.split();
        let fut = Box::pin(run(app, sink, stream, identity, request_id.0));
        hub.supervise_connection("websocket", fut).instrument(span)
    }))
}

/// When the last frame was read and written, in ms since the connection
/// began, and how many frames were read (a ping is answered when the count
/// moves, however close in time the pong comes).
struct Liveness {
    origin: Instant,
    read: AtomicU64,
    written: AtomicU64,
    reads: AtomicU64,
}

impl Liveness {
    fn new() -> Self {
        Self { origin: Instant::now(), read: AtomicU64::new(0), written: AtomicU64::new(0), reads: AtomicU64::new(0) }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn touch_read(&self) {
        self.read.store(self.now(), Ordering::Relaxed);
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    fn touch_write(&self) {
        self.written.store(self.now(), Ordering::Relaxed);
    }

    fn read_mark(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    fn idle(&self) -> Duration {
        let last = self.read.load(Ordering::Relaxed).max(self.written.load(Ordering::Relaxed));
        Duration::from_millis(self.now().saturating_sub(last))
    }
}

async fn run(app: AppState, sink: Sink, mut stream: SplitStream<WebSocket>, identity: Option<Identity>, request_id: Arc<str>) {
    let hub = app.hub().clone();
    let outbound = hub.new_outbound();
    let mut session = Session::new(app.executor().clone(), Transport::WebSocket, request_id, outbound.clone());
    if let Some(identity) = identity {
        // Boxed (like `end` below): rare phases must not size the idle future.
        match Box::pin(session.open(identity)).await {
            Ok(conn) => {
                record_connection(conn);
                let push = app.executor().connected_push(conn, None);
                let _ = outbound.try_push(Outgoing::Control { name: push.name(), frame: encode_control(&push) });
            }
            Err(e) => {
                tracing::info!(error = %e, "connection refused after upgrade");
                outbound.close(session.refusal_code(e.code));
            }
        }
    }
    tracing::debug!("websocket open");
    let live = Liveness::new();
    let timing = hub.timing().clone();
    let ended = {
        let connect_deadline = Instant::now() + timing.connect_timeout;
        // Built inside `pin!`: a separate binding would keep a second slot in this future.
        let mut reader = std::pin::pin!(read_loop(&mut stream, &mut session, &hub, &live, connect_deadline));
        let mut writer = std::pin::pin!(write_loop(sink, &outbound, &live, &timing));
        tokio::select! {
            code = &mut reader => {
                outbound.close(code);
                // Returns at once now that the queue is closed.
                (&mut writer).await
            }
            ended = &mut writer => ended,
        }
    };
    let code = outbound.closed().unwrap_or(CloseCode::Normal);
    tracing::debug!(code = code.code(), reason = code.label(), "websocket closed");
    // Released before the close handshake: a closing connection holds none
    // of its user's connection slots and gets no more events.
    Box::pin(session.end()).await;
    Box::pin(finish(ended)).await;
    Box::pin(linger(&mut stream)).await;
}

/// Names the connection and its user on the connection's span.
fn record_connection(conn: &chorus_core::Connection) {
    let span = tracing::Span::current();
    span.record("conn", tracing::field::display(conn.id));
    span.record("user", tracing::field::display(&conn.user));
}

async fn read_loop(stream: &mut SplitStream<WebSocket>, session: &mut Session, hub: &Hub, live: &Liveness, connect_deadline: Instant) -> CloseCode {
    loop {
        let next = if session.connection().is_none() {
            // Boxed: only a socket that has not sent `connect` yet carries these timers.
            match Box::pin(next_before_connect(stream, hub, connect_deadline)).await {
                Ok(n) => n,
                Err(code) => return code,
            }
        } else {
            stream.next().await
        };
        let msg = match next {
            None => return CloseCode::Normal,
            Some(Ok(m)) => m,
            Some(Err(e)) => return classify_read_error(e),
        };
        live.touch_read();
        match msg {
            // Boxed so an idle reader does not carry the largest command's state.
            Message::Text(text) => {
                let was_open = session.connection().is_some();
                let flow = Box::pin(session.on_text(text.as_bytes())).await;
                if !was_open && let Some(conn) = session.connection() {
                    // Authenticated by `connect`: its log lines name it from now on.
                    record_connection(conn);
                }
                if let Flow::Close(code) = flow {
                    return code;
                }
            }
            Message::Binary(_) => return CloseCode::UnsupportedData,
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return CloseCode::Normal,
        }
    }
}

/// The next frame of a socket waiting to send `connect`: it is not in the
/// hub's table yet, so the connect deadline and a shutdown reach it here.
async fn next_before_connect(stream: &mut SplitStream<WebSocket>, hub: &Hub, deadline: Instant) -> Result<Option<Result<Message, axum::Error>>, CloseCode> {
    tokio::select! {
        n = tokio::time::timeout_at(deadline, stream.next()) => n.map_err(|_| CloseCode::Unauthorized),
        () = hub.stopping() => Err(CloseCode::ServiceRestart),
    }
}

fn classify_read_error(e: axum::Error) -> CloseCode {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match e.into_inner().downcast::<WsError>() {
        Ok(inner) => match *inner {
            WsError::Capacity(CapacityError::MessageTooLong { .. }) => CloseCode::MessageTooBig,
            WsError::Utf8(_) | WsError::Protocol(_) => CloseCode::ProtocolViolation,
            _ => CloseCode::Normal,
        },
        Err(_) => CloseCode::Normal,
    }
}

type Sink = SplitSink<WebSocket, Message>;

/// Why a write stopped.
enum WriteStop {
    /// The socket failed; nothing more can be sent.
    Broken,
    /// The queue closed while the socket was blocked.
    Closed(CloseCode),
}

/// How the writer ended: the socket broke, or the queue closed with a code
/// and these items still to go out before the close frame.
enum Ended {
    Broken,
    Closing { sink: Sink, rest: Vec<Outgoing>, code: CloseCode },
}

/// The close handshake after the connection is released: what was queued
/// (e.g. the reply explaining the close), then the close frame. Bounded.
async fn finish(ended: Ended) {
    let Ended::Closing { mut sink, mut rest, code } = ended else { return };
    if !rest.is_empty() {
        let flushed = tokio::time::timeout(CLOSE_GRACE, feed_all(&mut sink, &mut rest)).await;
        if !matches!(flushed, Ok(Ok(()))) {
            return;
        }
    }
    send_close(&mut sink, code).await;
}

/// Drains the queue onto the socket and pings, until the queue closes or the
/// socket breaks; returns at once when the queue closes, even mid-write.
async fn write_loop(mut sink: Sink, outbound: &Outbound, live: &Liveness, timing: &chorus_core::config::Timing) -> Ended {
    let mut batch: Vec<Outgoing> = Vec::new();
    let mut next_ping = Instant::now() + timing.ping_interval;
    // When a ping is outstanding: its deadline, and the read mark when it was sent.
    let mut pong_due: Option<(Instant, u64)> = None;
    // One timer for pings and pong deadlines, moved only when they change
    // (not re-armed for every batch).
    let timer = tokio::time::sleep_until(next_ping);
    tokio::pin!(timer);
    loop {
        let wake = pong_due.map_or(next_ping, |(d, _)| d.min(next_ping));
        if timer.deadline() != wake {
            timer.as_mut().reset(wake);
        }
        tokio::select! {
            b = outbound.next_batch(&mut batch, BATCH) => match b {
                Batch::Items => {
                    match write_items(&mut sink, &mut batch, outbound, live, timing.stale_after).await {
                        Ok(()) => {}
                        Err(WriteStop::Broken) => return Ended::Broken,
                        Err(WriteStop::Closed(code)) => return Ended::Closing { sink, rest: Vec::new(), code },
                    }
                }
                // What was queued (e.g. the reply explaining the close) goes out first.
                Batch::Closed(code) => return Ended::Closing { sink, rest: batch, code },
            },
            () = &mut timer => {
                let now = Instant::now();
                if let Some((deadline, mark)) = pong_due {
                    if live.read_mark() > mark {
                        pong_due = None;
                    } else if now >= deadline {
                        outbound.close(CloseCode::Stale);
                        continue;
                    }
                }
                if live.idle() >= timing.stale_after {
                    outbound.close(CloseCode::Stale);
                    continue;
                }
                if now >= next_ping {
                    next_ping = now + timing.ping_interval;
                    let sent = tokio::select! {
                        r = sink.send(Message::Ping(bytes::Bytes::new())) => r.is_ok(),
                        _ = outbound.wait_closed() => true,
                        _ = tokio::time::sleep(timing.stale_after) => {
                            // A ping that cannot be written for that long: stale.
                            outbound.close(CloseCode::Stale);
                            continue;
                        }
                    };
                    if !sent {
                        return Ended::Broken;
                    }
                    live.touch_write();
                    if pong_due.is_none() {
                        pong_due = Some((now + timing.pong_timeout, live.read_mark()));
                    }
                }
            }
        }
    }
}

/// Writes a batch and flushes once; a blocked socket is abandoned when the
/// queue closes or nothing moves for `stale_after`.
async fn write_items(sink: &mut Sink, batch: &mut Vec<Outgoing>, outbound: &Outbound, live: &Liveness, stale_after: Duration) -> Result<(), WriteStop> {
    let write = feed_all(sink, batch);
    tokio::pin!(write);
    // Most writes complete at once; only a blocked one needs the stale timer
    // (boxed, so an idle connection's future does not carry it).
    let written = match std::future::poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await {
        Poll::Ready(r) => r,
        Poll::Pending => {
            let blocked = async {
                tokio::select! {
                    r = &mut write => Ok(r),
                    code = outbound.wait_closed() => Err(WriteStop::Closed(code)),
                    _ = tokio::time::sleep(stale_after) => Err(WriteStop::Closed(CloseCode::Stale)),
                }
            };
            Box::pin(blocked).await?
        }
    };
    written.map_err(|()| WriteStop::Broken)?;
    live.touch_write();
    Ok(())
}

async fn feed_all(sink: &mut Sink, batch: &mut Vec<Outgoing>) -> Result<(), ()> {
    for item in batch.drain(..) {
        if matches!(item, Outgoing::Track { .. }) {
            continue;
        }
        let Ok(text) = Utf8Bytes::try_from(item.frame().clone()) else { continue };
        sink.feed(Message::Text(text)).await.map_err(|_| ())?;
    }
    sink.flush().await.map_err(|_| ())
}

