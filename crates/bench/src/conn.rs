//! Receiving connections: one task per connection (no serial reading of
//! sockets), each with its own accounting state behind an uncontended lock
//! that the coordinator reads at the end (or after cutting the connection).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::Ctx;
use crate::frame::{Frame, subscribe_command};
use crate::sse::SseClient;
use crate::stats::{Latency, OffsetTracker, SeqTracker};
use crate::util::{Target, connect_tcp, now_us};
use crate::ws::{ConnectError, Msg, WsClient};

/// Accounting of one receiver (a user's connection, or one fan-out subscriber).
#[derive(Debug, Default)]
pub struct StreamState {
    pub user: String,
    /// The channel whose events are accounted.
    pub channel: String,
    /// Other channels this connection subscribes to (their events are only counted).
    pub extra_channels: Vec<String>,
    pub seqs: SeqTracker,
    pub offsets: OffsetTracker,
    /// Last processed position of `channel` (what a reconnect recovers from).
    pub pos: Option<(String, u64)>,
    /// The last SSE event id (for `Last-Event-ID`).
    pub sse_last_id: Option<String>,
    pub wrong_user: u64,
    pub extra_events: u64,
    /// Channel events without our sequence fields (presence and the like).
    pub other_events: u64,
    pub control: u64,
    pub bad_frames: u64,
    pub recovery_failed: u64,
    pub not_recovered_replies: u64,
    /// Latency is recorded for events published at or after this (µs); older
    /// ones are replays.
    pub live_since_us: u64,
    pub replayed: u64,
    /// When the last event with a sequence number arrived (µs).
    pub last_seq_rx_us: u64,
    /// When the current connection attempt started, if it is a reconnect.
    pub reconnect_at_us: Option<u64>,
    /// µs from the reconnect to the first event published after it.
    pub live_again_us: Option<u64>,
    pub connects: u64,
    pub closes: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Set while the connection is subscribed and reading.
    pub up: bool,
    /// Which node (index into `Ctx::nodes`) the receiver connects to.
    pub node: usize,
}

impl StreamState {
    pub fn new(user: impl Into<String>, channel: impl Into<String>) -> Self {
        Self { user: user.into(), channel: channel.into(), ..Self::default() }
    }

    pub fn error(&mut self, label: impl Into<String>) {
        *self.errors.entry(label.into()).or_default() += 1;
    }

    /// Accounts one pushed frame received at `now` (µs).
    pub fn on_push(&mut self, f: &Frame<'_>, now: u64, lat: &Latency, shard: usize) {
        if f.kind() == "recovery_failed" {
            self.recovery_failed += 1;
            if let (Some(ch), Some(e), Some(o)) = (f.channel.as_deref(), f.epoch.as_deref(), f.offset)
                && ch == self.channel
            {
                self.offsets.start_at(e, o);
                self.pos = Some((e.to_owned(), o));
            }
            return;
        }
        if !f.is_channel_event() {
            self.control += 1;
            return;
        }
        let (Some(ch), Some(epoch), Some(offset)) = (f.channel.as_deref(), f.epoch.as_deref(), f.offset) else { return };
        if ch != self.channel {
            if self.extra_channels.iter().any(|c| c == ch) {
                self.extra_events += 1;
            } else {
                self.wrong_user += 1;
            }
            return;
        }
        self.offsets.observe(epoch, offset);
        match &mut self.pos {
            Some((e, o)) if e == epoch => *o = offset,
            _ => self.pos = Some((epoch.to_owned(), offset)),
        }
        let Some(d) = &f.data else {
            self.other_events += 1;
            return;
        };
        if let Some(u) = d.u.as_deref()
            && u != self.user
        {
            self.wrong_user += 1;
        }
        let (Some(s), Some(t)) = (d.s, d.t) else {
            self.other_events += 1;
            return;
        };
        self.seqs.record(s);
        self.last_seq_rx_us = now;
        if t >= self.live_since_us {
            lat.record(shard, now.saturating_sub(t));
            if let Some(at) = self.reconnect_at_us
                && self.live_again_us.is_none()
            {
                self.live_again_us = Some(now.saturating_sub(at));
            }
        } else {
            self.replayed += 1;
        }
    }

    pub fn on_frame(&mut self, bytes: &[u8], now: u64, lat: &Latency, shard: usize) {
        match Frame::parse(bytes) {
            Some(f) if f.is_reply() => self.control += 1,
            Some(f) => self.on_push(&f, now, lat, shard),
            None => self.bad_frames += 1,
        }
    }
}

/// Counts connections that became ready (subscribed) or failed.
#[derive(Default)]
pub struct Ready {
    pub ok: AtomicUsize,
    pub failed: AtomicUsize,
    notify: Notify,
}

impl Ready {
    pub fn ok(&self) {
        self.ok.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    pub fn fail(&self) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.notify.notify_waiters();
    }

    pub fn settled(&self) -> usize {
        self.ok.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }

    /// Waits until `n` connections settled or `limit` passed.
    pub async fn wait(&self, n: usize, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let notified = self.notify.notified();
            if self.settled() >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return;
            }
        }
    }
}

/// How a receiver subscribes.
#[derive(Clone, Debug)]
pub struct Plan {
    pub token: Arc<str>,
    /// Recover `channel` from the state's last position (a reconnect).
    pub recover: bool,
}

/// Opens a WebSocket (token at upgrade), waits for `connected`, subscribes to
/// the accounted channel (with `since` when recovering) and the extra
/// channels, then reads until the server closes or the task is aborted.
pub async fn run_ws(ctx: Arc<Ctx>, state: Arc<Mutex<StreamState>>, plan: Plan, lat: Arc<Latency>, shard: usize, ready: Arc<Ready>) {
    let started = now_us();
    let (channel, extras, since, node) = {
        let mut s = state.lock();
        s.connects += 1;
        if plan.recover {
            s.reconnect_at_us = Some(started);
            s.live_again_us = None;
        }
        s.live_since_us = started;
        let since = if plan.recover { s.pos.clone() } else { None };
        (s.channel.clone(), s.extra_channels.clone(), since, s.node)
    };
    let mut ws = match open_ws_at(&ctx, ctx.node(node), &plan.token).await {
        Ok(ws) => ws,
        Err(e) => {
            state.lock().error(format!("connect:{}", e.label()));
            ready.fail();
            return;
        }
    };
    let mut id = 0u64;
    let mut subs: Vec<(String, Option<(String, u64)>)> = vec![(channel.clone(), since)];
    subs.extend(extras.into_iter().map(|c| (c, None)));
    for (ch, since) in subs {
        id += 1;
        let cmd = subscribe_command(id, &ch, since.as_ref().map(|(e, o)| (e.as_str(), *o)));
        if let Err(e) = ws.send_text(&cmd).await {
            state.lock().error(format!("subscribe-send:{:?}", e.kind()));
            ready.fail();
            return;
        }
        // Pushes may come before the reply (other channels); account them.
        loop {
            let msg = match ws.next().await {
                Ok(m) => m,
                Err(e) => {
                    state.lock().error(format!("subscribe-read:{:?}", e.kind()));
                    ready.fail();
                    return;
                }
            };
            let now = now_us();
            let bytes = match msg {
                Msg::Text(b) => b,
                Msg::Binary => continue,
                Msg::Close(code) => {
                    *state.lock().closes.entry(code).or_default() += 1;
                    ready.fail();
                    return;
                }
            };
            let Some(f) = Frame::parse(bytes) else {
                state.lock().bad_frames += 1;
                continue;
            };
            if f.is_reply() && f.id == Some(id) {
                let mut s = state.lock();
                if let Some(err) = &f.error {
                    s.error(format!("subscribe:{}", err.error.as_deref().unwrap_or("?")));
                    drop(s);
                    ready.fail();
                    return;
                }
                if ch == channel {
                    let r = f.result.unwrap_or_default();
                    match (&since, r.recovered) {
                        (Some((e, o)), Some(true)) => s.offsets.start_at(e, *o),
                        (Some(_), _) => s.not_recovered_replies += 1,
                        (None, _) => {
                            if let (Some(e), Some(o)) = (r.epoch.as_deref(), r.offset) {
                                s.offsets.start_at(e, o);
                                s.pos = Some((e.to_owned(), o));
                            }
                        }
                    }
                }
                break;
            }
            state.lock().on_push(&f, now, &lat, shard);
        }
    }
    state.lock().up = true;
    ready.ok();
    read_loop(&mut ws, &state, &lat, shard).await;
    state.lock().up = false;
}

async fn read_loop(ws: &mut WsClient, state: &Mutex<StreamState>, lat: &Latency, shard: usize) {
    loop {
        match ws.next().await {
            Ok(Msg::Text(bytes)) => {
                let now = now_us();
                state.lock().on_frame(bytes, now, lat, shard);
            }
            Ok(Msg::Binary) => state.lock().bad_frames += 1,
            Ok(Msg::Close(code)) => {
                *state.lock().closes.entry(code).or_default() += 1;
                return;
            }
            Err(e) => {
                state.lock().error(format!("read:{:?}", e.kind()));
                return;
            }
        }
    }
}

/// TCP connect, upgrade with the token in the query string, and wait for the
/// `connected` push.
pub async fn open_ws(ctx: &Ctx, token: &str) -> Result<WsClient, ConnectError> {
    open_ws_at(ctx, &ctx.target, token).await
}

/// As `open_ws`, to a given node.
pub async fn open_ws_at(ctx: &Ctx, target: &Target, token: &str) -> Result<WsClient, ConnectError> {
    let stream = connect_tcp(target, ctx.src.pick()).await?;
    let path = format!("/ws?token={token}");
    let mut ws = WsClient::handshake(stream, &target.host, &path, ctx.connect_timeout).await?;
    let first = tokio::time::timeout(ctx.connect_timeout, async {
        match ws.next().await {
            Ok(Msg::Text(b)) => Ok(Frame::parse(b).is_some_and(|f| f.kind() == "connected")),
            Ok(Msg::Close(code)) => Err(ConnectError::Status(code)),
            Ok(Msg::Binary) => Ok(false),
            Err(e) => Err(ConnectError::Io(e)),
        }
    })
    .await;
    match first {
        Ok(Ok(true)) => Ok(ws),
        Ok(Ok(false)) => Err(ConnectError::Protocol("first frame is not `connected`")),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ConnectError::Timeout),
    }
}

/// An SSE receiver: `GET /sse?channel=<channel>` with the token in the
/// `Authorization` header and, when recovering, the last event id.
pub async fn run_sse(ctx: Arc<Ctx>, state: Arc<Mutex<StreamState>>, plan: Plan, lat: Arc<Latency>, shard: usize, ready: Arc<Ready>) {
    let started = now_us();
    let (channel, last_id) = {
        let mut s = state.lock();
        s.connects += 1;
        if plan.recover {
            s.reconnect_at_us = Some(started);
            s.live_again_us = None;
        }
        s.live_since_us = started;
        (s.channel.clone(), if plan.recover { s.sse_last_id.clone() } else { None })
    };
    let opened = async {
        let stream = connect_tcp(&ctx.target, ctx.src.pick()).await?;
        SseClient::open(stream, &ctx.target.host, &format!("/sse?channel={channel}"), &plan.token, last_id.as_deref(), ctx.connect_timeout).await
    };
    let mut sse = match opened.await {
        Ok(s) => s,
        Err(e) => {
            state.lock().error(format!("connect:{}", e.label()));
            ready.fail();
            return;
        }
    };
    let mut is_ready = false;
    loop {
        let ev = match sse.next().await {
            Ok(ev) => ev,
            Err(e) => {
                state.lock().error(format!("read:{:?}", e.kind()));
                if !is_ready {
                    ready.fail();
                }
                break;
            }
        };
        let now = now_us();
        let Some(f) = Frame::parse(ev.data) else {
            state.lock().bad_frames += 1;
            continue;
        };
        let mut s = state.lock();
        match ev.event {
            "connected" => {
                // The stream's positions are those of the `connected` event's id.
                if !plan.recover
                    && let Some(pos) = ev.last_id.and_then(|id| position_in_id(id, &channel))
                {
                    s.offsets.start_at(&pos.0, pos.1);
                    s.pos = Some(pos);
                } else if let Some(pos) = s.pos.clone() {
                    s.offsets.start_at(&pos.0, pos.1);
                }
                s.control += 1;
                s.up = true;
                if !is_ready {
                    is_ready = true;
                    ready.ok();
                }
            }
            "disconnect" | "reconnect" => {
                let code = f.data.as_ref().and_then(|d| d.code).unwrap_or(1012);
                *s.closes.entry(code).or_default() += 1;
                s.up = false;
                break;
            }
            _ => s.on_push(&f, now, &lat, shard),
        }
        if f.is_channel_event() {
            s.sse_last_id = ev.last_id.map(str::to_owned);
        }
    }
    state.lock().up = false;
}

/// This channel's `epoch:offset` in an SSE event id (`ch=epoch:offset;...`).
pub fn position_in_id(id: &str, channel: &str) -> Option<(String, u64)> {
    id.split(';').find_map(|entry| {
        let (ch, pos) = entry.split_once('=')?;
        if ch != channel {
            return None;
        }
        let (epoch, offset) = pos.rsplit_once(':')?;
        Some((epoch.to_owned(), offset.parse().ok()?))
    })
}

/// Starts one receiver task per state, keeping at most `window` connection
/// attempts in flight. Returns the tasks (abort them to cut the connections).
#[allow(clippy::too_many_arguments)] // all of it is the plan of one spawn
pub async fn spawn_receivers(
    ctx: &Arc<Ctx>,
    states: &[Arc<Mutex<StreamState>>],
    tokens: &[Arc<str>],
    recover: bool,
    sse: bool,
    lat: &Arc<Latency>,
    ready: &Arc<Ready>,
    window: usize,
    pace: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let base = ready.settled();
    let mut handles = Vec::with_capacity(states.len());
    let start = tokio::time::Instant::now();
    for (i, (state, token)) in states.iter().zip(tokens).enumerate() {
        if !pace.is_zero() {
            tokio::time::sleep_until(start + pace * i as u32).await;
        }
        if window > 0 && i >= window {
            // Wait until fewer than `window` attempts are unsettled.
            ready.wait(base + i + 1 - window, Duration::from_secs(60)).await;
        }
        let plan = Plan { token: token.clone(), recover };
        let (ctx, state, lat, ready) = (ctx.clone(), state.clone(), lat.clone(), ready.clone());
        handles.push(if sse {
            tokio::spawn(run_sse(ctx, state, plan, lat, i, ready))
        } else {
            tokio::spawn(run_ws(ctx, state, plan, lat, i, ready))
        });
    }
    handles
}

/// Sums of closes and errors over receivers.
pub fn close_and_error_counts(states: &[Arc<Mutex<StreamState>>]) -> (BTreeMap<u16, u64>, BTreeMap<String, u64>) {
    let mut closes = BTreeMap::new();
    let mut errors = BTreeMap::new();
    for s in states {
        let s = s.lock();
        for (k, v) in &s.closes {
            *closes.entry(*k).or_default() += v;
        }
        for (k, v) in &s.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
    }
    (closes, errors)
}

/// Subscribes and waits for the reply, skipping pushes. Errors are labels.
pub async fn subscribe_and_wait(ws: &mut WsClient, id: u64, channel: &str) -> Result<(), String> {
    ws.send_text(&subscribe_command(id, channel, None)).await.map_err(|e| format!("subscribe-send:{:?}", e.kind()))?;
    loop {
        match ws.next().await {
            Ok(Msg::Text(b)) => {
                if let Some(f) = Frame::parse(b)
                    && f.is_reply()
                    && f.id == Some(id)
                {
                    return match f.error {
                        Some(e) => Err(format!("subscribe:{}", e.error.as_deref().unwrap_or("?"))),
                        None => Ok(()),
                    };
                }
            }
            Ok(Msg::Close(code)) => return Err(format!("close:{code}")),
            Ok(Msg::Binary) => {}
            Err(e) => return Err(format!("subscribe-read:{:?}", e.kind())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_own_foreign_and_replayed_events() {
        let lat = Latency::new(1);
        let mut s = StreamState::new("u1", "user:u1");
        s.live_since_us = 1_000;
        s.offsets.start_at("E", 4);
        let ev = |ch: &str, off: u64, seq: u64, t: u64, u: &str| {
            format!(r#"{{"type":"agent_text_delta","channel":"{ch}","offset":{off},"epoch":"E","timestamp":"x","data":{{"run_id":"r","thread_id":"{ch}","agent_id":"a","delta":"d","s":{seq},"t":{t},"u":"{u}"}}}}"#)
        };
        s.on_frame(ev("user:u1", 5, 0, 500, "u1").as_bytes(), 2_000, &lat, 0); // replayed (t before live_since)
        s.on_frame(ev("user:u1", 6, 1, 1_500, "u1").as_bytes(), 2_000, &lat, 0);
        s.on_frame(ev("user:u2", 9, 0, 1_500, "u2").as_bytes(), 2_000, &lat, 0); // another user's channel
        s.on_frame(ev("user:u1", 7, 2, 1_500, "u9").as_bytes(), 2_000, &lat, 0); // right channel, wrong user in data
        s.on_frame(br#"{"type":"presence_joined","channel":"user:u1","offset":8,"epoch":"E","timestamp":"x","data":{"user_id":"u1"}}"#, 2_000, &lat, 0);
        s.on_frame(br#"{"id":1,"result":{}}"#, 2_000, &lat, 0);
        s.on_frame(b"garbage", 2_000, &lat, 0);
        assert_eq!((s.replayed, s.wrong_user, s.other_events, s.control, s.bad_frames), (1, 2, 1, 1, 1));
        assert_eq!(s.seqs.unique, 3);
        assert_eq!(s.offsets.gaps, 0);
        assert_eq!(s.pos, Some(("E".into(), 8)));
        assert_eq!(lat.merged().len(), 2);
    }

    #[test]
    fn recovery_failed_rebases() {
        let lat = Latency::new(1);
        let mut s = StreamState::new("u1", "user:u1");
        s.offsets.start_at("E", 4);
        s.on_frame(br#"{"type":"recovery_failed","channel":"user:u1","offset":57,"epoch":"F","timestamp":"x","data":{"reason":"r"}}"#, 1, &lat, 0);
        assert_eq!(s.recovery_failed, 1);
        assert_eq!(s.pos, Some(("F".into(), 57)));
    }

    #[test]
    fn sse_ids() {
        assert_eq!(position_in_id("room:a=E1:4;user:b=Xy:17", "user:b"), Some(("Xy".into(), 17)));
        assert_eq!(position_in_id("room:a=E1:4", "user:b"), None);
    }
}
