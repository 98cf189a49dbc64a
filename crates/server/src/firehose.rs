//! The admin firehose: a WebSocket that streams every event passing through
//! this node (published here or delivered by the broker), for
//! administrators.
//!
//! It reads the hub's bounded firehose tap: a reader that falls behind (a
//! slow socket) misses the oldest events and gets a `lagged` frame saying how
//! many; publishers never wait for it. It is not a [`Connection`]: it counts
//! toward no connection limit, holds no subscription and never appears in the
//! connection list. Frames (PROTOCOL.md "Admin firehose"):
//!
//! - `{"type":"firehose_started","timestamp":…,"data":{"node":…,"buffer":1024,"channel_prefix":…}}` first;
//! - every event exactly as subscribers get it (`{"type":<event>,"channel",…,"data"}`);
//! - `{"type":"lagged","timestamp":…,"data":{"missed":n}}` after a gap.
//!
//! [`Connection`]: chorus_core::Connection

use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use chorus_core::Hub;
use chorus_core::hub::{FIREHOSE_BUFFER, Firehose, FirehoseItem};
use chorus_protocol::channel::{MAX_ID_LEN, MAX_NAMESPACE_LEN};
use chorus_protocol::{CloseCode, ErrorCode, timestamp};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use serde_json::json;
use tokio::time::Instant;

use crate::credentials::bearer;
use crate::error::ApiError;
use crate::rest::RestState;
use crate::rest::openapi::ErrorBody;
use crate::ws_close::{linger, send_close};

/// Firehose readers a node serves at once; each costs a socket write per event.
pub const MAX_READERS: usize = 16;
/// Longest frame a firehose client may send (it has nothing to say).
const MAX_CLIENT_FRAME: usize = 4 * 1024;
/// Longest `channel` prefix: the longest channel name.
const MAX_PREFIX: usize = MAX_NAMESPACE_LEN + 1 + MAX_ID_LEN;

/// Query parameters (documented; parsed by hand so unknown ones are refused).
#[derive(Debug, Default, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct FirehoseQuery {
    /// An administrator's access token, for clients that cannot set headers
    /// (browsers). Never logged.
    token: Option<String>,
    /// Only events of channels whose name starts with this (e.g. `room:`), at most 161 characters.
    channel: Option<String>,
}

struct Params {
    token: Option<String>,
    prefix: Option<String>,
}

fn parse_query(raw: &str) -> Result<Params, ApiError> {
    let mut p = Params { token: None, prefix: None };
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        match k.as_ref() {
            "token" => p.token = Some(v.into_owned()),
            "channel" => {
                if v.is_empty() || v.len() > MAX_PREFIX {
                    return Err(ApiError::new(ErrorCode::InvalidField, format!("channel: must be a prefix of 1 to {MAX_PREFIX} characters")));
                }
                p.prefix = Some(v.into_owned());
            }
            _ => return Err(ApiError::new(ErrorCode::InvalidField, format!("{k}: unknown query parameter (known: token, channel)"))),
        }
    }
    Ok(p)
}

/// `GET /api/v1/admin/firehose`: checks the administrator, origin and reader
/// count before upgrading.
#[utoipa::path(get, path = "/api/v1/admin/firehose", tag = "admin", params(FirehoseQuery), security(("bearer" = [])),
    description = "WebSocket upgrade for administrators: every event passing through this node, as JSON text frames (PROTOCOL.md \"Admin firehose\"). The token may be given as `Authorization: Bearer` or `?token=`.",
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade, or an invalid query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Not an administrator, or origin not allowed", body = ErrorBody),
        (status = 503, description = "Too many firehose readers on this node, shutting down, or the store is unavailable", body = ErrorBody),
    ))]
pub async fn upgrade(
    State(rest): State<RestState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let params = parse_query(query.as_deref().unwrap_or(""))?;
    let token = bearer(&headers)
        .map(str::to_owned)
        .or(params.token)
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "an administrator's token is required (Authorization: Bearer or ?token=)"))?;
    let caller = rest.chat().accounts.authenticate(&token).await?;
    caller.require_admin()?;
    let ws = ws.map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("not a WebSocket upgrade: {e}")))?;
    crate::origin::check_upgrade_origin(rest.app(), &headers)?;
    let hub = rest.app().hub().clone();
    if hub.is_shutting_down() {
        return Err(ApiError::new(ErrorCode::Unavailable, "server is shutting down").retry_after(1));
    }
    // Checked before the upgrade, counted after: a race may let a reader or two past it.
    if hub.firehose_readers() >= MAX_READERS {
        return Err(ApiError::new(ErrorCode::Unavailable, format!("this node serves at most {MAX_READERS} firehose readers")).retry_after(5));
    }
    tracing::info!(admin = %caller.user_id, prefix = params.prefix.as_deref(), "firehose opened");
    let ws = ws.max_message_size(MAX_CLIENT_FRAME).max_frame_size(MAX_CLIENT_FRAME);
    Ok(ws.on_upgrade(move |socket| {
        // Tracked like a connection for shutdown (drained, panics caught), counted as none.
        hub.clone().supervise_connection("firehose", async move {
            // Reading starts before the first frame, so nothing after it is missed.
            let firehose = hub.firehose();
            let (mut sink, mut stream) = socket.split();
            if let Some(code) = pump(&hub, &mut sink, &mut stream, firehose, params.prefix.as_deref()).await
                && send_close(&mut sink, code).await
            {
                linger(&mut stream).await;
            }
            tracing::debug!("firehose closed");
        })
    }))
}

/// Streams the firehose onto `sink` until the client leaves, the hub stops
/// or the socket stalls. Returns the close code to send, or `None` when the
/// socket is gone.
pub(crate) async fn pump<S, R, E>(hub: &Hub, sink: &mut S, stream: &mut R, mut firehose: Firehose, prefix: Option<&str>) -> Option<CloseCode>
where
    S: Sink<Message> + Unpin,
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let timing = hub.timing().clone();
    let started = json!({
        "type": "firehose_started",
        "timestamp": timestamp::format_ms(hub.now_ms()),
        "data": { "node": hub.node().as_str(), "buffer": FIREHOSE_BUFFER, "channel_prefix": prefix },
    });
    if let Err(stop) = send(hub, sink, Message::Text(started.to_string().into()), timing.stale_after).await {
        return stop;
    }
    let mut next_ping = Instant::now() + timing.ping_interval;
    // A ping is outstanding until anything is read; nothing read by then closes 4006.
    let mut pong_due: Option<Instant> = None;
    loop {
        let wake = pong_due.map_or(next_ping, |d| d.min(next_ping));
        let msg = tokio::select! {
            biased;
            () = hub.stopping() => return Some(CloseCode::ServiceRestart),
            frame = stream.next() => match frame {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(_))) => return Some(CloseCode::Normal),
                Some(Ok(Message::Binary(_))) => return Some(CloseCode::UnsupportedData),
                // Text frames mean nothing here; any frame proves the client alive.
                Some(Ok(_)) => {
                    pong_due = None;
                    continue;
                }
            },
            item = firehose.next() => match item {
                FirehoseItem::Event(p) => {
                    if prefix.is_some_and(|pre| !p.channel.as_str().starts_with(pre)) {
                        continue;
                    }
                    // The push as subscribers get it, encoded once for all of them.
                    let Ok(text) = Utf8Bytes::try_from(p.frame().clone()) else { continue };
                    Message::Text(text)
                }
                FirehoseItem::Lagged(missed) => Message::Text(lagged_frame(hub.now_ms(), missed).into()),
                FirehoseItem::Closed => return Some(CloseCode::ServiceRestart),
            },
            () = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if pong_due.is_some_and(|d| now >= d) {
                    return Some(CloseCode::Stale);
                }
                if now < next_ping {
                    continue;
                }
                next_ping = now + timing.ping_interval;
                pong_due.get_or_insert(now + timing.pong_timeout);
                Message::Ping(bytes::Bytes::new())
            }
        };
        if let Err(stop) = send(hub, sink, msg, timing.stale_after).await {
            return stop;
        }
    }
}

/// The notice that `missed` events were dropped for this reader.
fn lagged_frame(now_ms: i64, missed: u64) -> String {
    json!({ "type": "lagged", "timestamp": timestamp::format_ms(now_ms), "data": { "missed": missed } }).to_string()
}

/// Writes one frame. `Err(Some(code))`: close with it (stalled socket,
/// shutdown); `Err(None)`: the socket is gone.
async fn send<S: Sink<Message> + Unpin>(hub: &Hub, sink: &mut S, msg: Message, stale_after: Duration) -> Result<(), Option<CloseCode>> {
    tokio::select! {
        r = sink.send(msg) => r.map_err(|_| None),
        () = hub.stopping() => Err(Some(CloseCode::ServiceRestart)),
        () = tokio::time::sleep(stale_after) => Err(Some(CloseCode::Stale)),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chorus_clock::SystemClock;
    use chorus_core::access::AccessPolicy;
    use chorus_core::broker::Backplane;
    use chorus_core::broker::memory::MemoryBroker;
    use chorus_core::config::{Limits, MemoryBrokerConfig, Namespaces, RateLimits, Timing};
    use chorus_core::metrics::CoreMetrics;
    use chorus_core::publication::Draft;
    use chorus_core::{HubConfig, HubParts, NodeId};
    use chorus_protocol::{ChannelName, EventType, Payload};
    use serde_json::Value;
    use tokio::sync::{mpsc, watch};
    use tokio_util::sync::PollSender;

    use super::*;

    async fn hub() -> Hub {
        let mut registry = prometheus_client::registry::Registry::default();
        let (_l, limits) = watch::channel(Limits::default());
        let (_r, rates) = watch::channel(RateLimits::default());
        Hub::start(HubParts {
            config: HubConfig { node: NodeId::new("n-test"), timing: Timing::default() },
            access: AccessPolicy::new(Namespaces::default(), None),
            limits,
            rates,
            backplane: Backplane::memory(Arc::new(MemoryBroker::new(MemoryBrokerConfig::default()))),
            metrics: CoreMetrics::register(&mut registry),
            clock: Arc::new(SystemClock),
        })
        .await
        .expect("hub")
    }

    async fn publish(hub: &Hub, channel: &str, n: u64) {
        let channel = ChannelName::parse(channel).expect("channel");
        let data = Payload::from_value(&json!({ "n": n })).expect("payload");
        hub.publish(&channel, Draft::new(EventType::Publication, data)).await.expect("publish");
    }

    fn text(m: Message) -> Value {
        match m {
            Message::Text(t) => serde_json::from_str(t.as_str()).expect("json frame"),
            other => panic!("not a text frame: {other:?}"),
        }
    }

    /// A reader whose socket does not move falls behind; publishers never
    /// wait, and the reader is told exactly how many events it missed.
    #[tokio::test]
    async fn a_stalled_reader_gets_a_lagged_frame_and_publishers_never_wait() {
        let hub = hub().await;
        let firehose = hub.firehose();
        // A socket with room for one frame, not read until every event is published.
        let (tx, mut rx) = mpsc::channel::<Message>(1);
        let pumping = {
            let hub = hub.clone();
            tokio::spawn(async move {
                let mut sink = PollSender::new(tx);
                let mut stream = futures_util::stream::pending::<Result<Message, ()>>();
                pump(&hub, &mut sink, &mut stream, firehose, None).await
            })
        };
        let total = FIREHOSE_BUFFER as u64 + 200;
        for n in 1..=total {
            publish(&hub, "user:alice", n).await;
        }
        assert_eq!(text(rx.recv().await.expect("started"))["type"], "firehose_started");
        let (mut events, mut missed, mut lagged_frames, mut last) = (0u64, 0u64, 0, 0u64);
        while events + missed < total {
            let v = text(rx.recv().await.expect("frame"));
            match v["type"].as_str() {
                Some("publication") => {
                    let n = v["data"]["n"].as_u64().expect("n");
                    assert!(n > last, "in order, no duplicates: {n} after {last}");
                    assert_eq!(v["offset"], n, "the push envelope: {v}");
                    assert_eq!(v["channel"], "user:alice");
                    last = n;
                    events += 1;
                }
                Some("lagged") => {
                    let m = v["data"]["missed"].as_u64().expect("missed");
                    assert!(m > 0);
                    missed += m;
                    lagged_frames += 1;
                }
                other => panic!("unexpected frame {other:?}: {v}"),
            }
        }
        assert_eq!(events + missed, total);
        assert!(lagged_frames >= 1 && missed >= 200 - 3, "missed {missed} in {lagged_frames} frames");
        assert_eq!(last, total, "the newest events are kept");
        assert!(events >= FIREHOSE_BUFFER as u64, "a full buffer is delivered after the gap");
        hub.shutdown();
        assert_eq!(pumping.await.expect("pump"), Some(CloseCode::ServiceRestart));
    }

    #[tokio::test]
    async fn prefix_filter_and_shutdown_close() {
        let hub = hub().await;
        let firehose = hub.firehose();
        let (tx, mut rx) = mpsc::channel::<Message>(16);
        let pumping = {
            let hub = hub.clone();
            tokio::spawn(async move {
                let mut sink = PollSender::new(tx);
                let mut stream = futures_util::stream::pending::<Result<Message, ()>>();
                pump(&hub, &mut sink, &mut stream, firehose, Some("user:b")).await
            })
        };
        let started = text(rx.recv().await.expect("started"));
        assert_eq!(started["data"]["channel_prefix"], "user:b");
        assert_eq!(started["data"]["node"], "n-test");
        publish(&hub, "user:alice", 1).await;
        publish(&hub, "user:bob", 2).await;
        let v = text(rx.recv().await.expect("event"));
        assert_eq!((v["channel"].as_str(), v["data"]["n"].as_u64()), (Some("user:bob"), Some(2)), "user:alice is filtered out");
        hub.shutdown();
        assert_eq!(pumping.await.expect("pump"), Some(CloseCode::ServiceRestart));
        assert_eq!(hub.firehose_readers(), 0, "the reader is released");
    }

    #[tokio::test]
    async fn a_client_close_ends_the_stream() {
        let hub = hub().await;
        let (tx, mut rx) = mpsc::channel::<Message>(4);
        let mut sink = PollSender::new(tx);
        let mut stream = futures_util::stream::iter([Ok::<_, ()>(Message::Close(None))]);
        let code = pump(&hub, &mut sink, &mut stream, hub.firehose(), None).await;
        assert_eq!(code, Some(CloseCode::Normal));
        assert_eq!(text(rx.recv().await.expect("started"))["type"], "firehose_started");
        let mut binary = futures_util::stream::iter([Ok::<_, ()>(Message::Binary(bytes::Bytes::from_static(b"x")))]);
        assert_eq!(pump(&hub, &mut sink, &mut binary, hub.firehose(), None).await, Some(CloseCode::UnsupportedData));
    }
}
