//! `message-rtt`: chat messages over WebSocket, committed and acknowledged.
//!
//! Setup goes through the server's REST API only (no store access): U users
//! sign up and log in (their access tokens open the WebSockets), C channels
//! are created, each by one of its members, and the owners add the other
//! members through `POST /api/v1/channels/{id}/members`. Every user is in
//! exactly two channels and every channel has M = 2U/C members: user
//! `u = q·C + r` is in channel `r` and channel `(r + 1 + q) mod C` (distinct
//! because `q < C − 1`); channel `c` is owned by user `c`.
//!
//! Each user then holds one WebSocket (token at upgrade) subscribed to its two
//! `room:<channel id>` channels and sends `send_message` at a fixed rate,
//! alternating its channels, on a fixed schedule: user `i` sends at
//! `start + i·P/U + k·P` (P = 1 / rate per user), so the U users together
//! send evenly spaced, never in bursts. Each command has its own
//! `idempotency_key`; its text carries the sender and the send time.
//!
//! Measured per send:
//! - ack latency: the command frame written → the reply with the same `id`
//!   received (the server replies after the commit and the fan-out, so this
//!   is "committed and acknowledged");
//! - delivery latency: send time (in the text) → `message_created` received
//!   by each *other* member's connection.
//!
//! Accounting: every acknowledged message must reach every member of its
//! channel exactly once, **the sender's own connection included** (it is
//! subscribed to the channel like any other device of that user). Receipts
//! are deduplicated by `message.id`; duplicates, losses, messages received
//! but never acknowledged, and events on channels a connection is not a
//! member of are counted; error replies are counted by code.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::Ctx;
use crate::conn::{Ready, open_ws};
use crate::frame::subscribe_command;
use crate::http::HttpConn;
use crate::report::Report;
use crate::scenario::fmt_map;
use crate::stats::{Latency, LatencySummary, OffsetTracker, ms};
use crate::util::{CpuMeter, FastRng, now_us, parse_duration, ticks_per_second, tree_ticks};
use crate::ws::Msg;

mod frames;
pub(crate) mod setup;
use frames::{In, parse_text, send_command};
use setup::{create_users, plan, rest, str_field};

#[derive(Args, Debug)]
pub struct MessageArgs {
    #[arg(long, default_value_t = 50)]
    pub users: usize,
    /// Channels; every user is in two of them, so each has 2·users/channels members.
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// `send_message` commands per second per user.
    #[arg(long, default_value_t = 4.0)]
    pub rate_per_user: f64,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Characters of padding in each message's text (after the sender and send time).
    #[arg(long, default_value_t = 48)]
    pub payload: usize,
    /// Pause between the last subscription and the first send.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Longest wait for the last replies and deliveries after sending ends.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// REST requests in flight during setup (sign-up and login hash passwords).
    #[arg(long, default_value_t = 4)]
    pub setup_concurrency: usize,
    /// Bar: p99 ack latency (send → reply), ms.
    #[arg(long)]
    pub p99_ms: Option<f64>,
    /// PID of the database server (PostgreSQL's postmaster): its CPU and its
    /// children's is reported apart from the rest of the machine.
    #[arg(long)]
    pub db_pid: Option<u32>,
}

/// One user as set up over REST.
struct User {
    token: String,
    /// Indices into the channel list: the two channels this user is in.
    channels: [usize; 2],
}

/// One channel as set up over REST.
struct Channel {
    /// `room:<id>`.
    stream: String,
    members: Vec<usize>,
}

/// What every connection task shares.
struct Shared {
    users: Vec<User>,
    channels: Vec<Channel>,
    /// Ack latency (send → reply), µs.
    ack: Latency,
    /// Delivery latency to the other members (send → `message_created`), µs.
    delivery: Latency,
    /// The sender's own copy of its message (send → `message_created`), µs.
    echo: Latency,
    /// How late each send left against its schedule (client-side lag), µs.
    lag: Latency,
    run: String,
    payload: String,
}

/// A send waiting for its reply.
struct Pending {
    at: Instant,
    channel: usize,
}

/// The accounting of one user's connection.
#[derive(Default)]
struct ConnState {
    /// Commands sent, by channel index.
    sent: u64,
    /// Acknowledged messages: (message id, channel index).
    acked: Vec<(String, usize)>,
    acked_without_offset: u64,
    ack_duplicates: u64,
    errors: BTreeMap<String, u64>,
    pending: HashMap<u64, Pending>,
    /// `message_created` receipts by message id (value: how many times).
    received: HashMap<String, u32>,
    duplicates: u64,
    /// Channel events on a channel this connection did not subscribe to.
    foreign: u64,
    /// `message_created` whose `message.channel_id` is not the channel it came on.
    mismatched: u64,
    /// Other channel events (presence, typing, ...).
    other_events: u64,
    bad_frames: u64,
    /// Per subscribed channel (same order as the user's `channels`).
    offsets: [OffsetTracker; 2],
    subscribed: bool,
    closes: BTreeMap<u16, u64>,
}

impl ConnState {
    fn error(&mut self, label: impl Into<String>) {
        *self.errors.entry(label.into()).or_default() += 1;
    }
}

// ---------------------------------------------------------------- the connection task

/// Accounts one text frame. `me` is the user index; `now_us` / `now` are
/// the receipt times.
fn on_text(sh: &Shared, me: usize, st: &mut ConnState, bytes: &[u8], now_us: u64, now: Instant) {
    let Ok(f) = serde_json::from_slice::<In<'_>>(bytes) else {
        st.bad_frames += 1;
        return;
    };
    if f.kind.is_none() {
        // A reply: sends are accounted here; subscribe replies by the caller.
        let Some(id) = f.id else {
            st.error("reply-without-id");
            return;
        };
        let Some(p) = st.pending.remove(&id) else {
            return;
        };
        if let Some(e) = &f.error {
            st.error(format!("send_message:{}", e.error.as_deref().unwrap_or("?")));
            return;
        }
        let r = f.result.unwrap_or_default();
        let Some(mid) = r.message_id else {
            st.error("send_message:no-message-id");
            return;
        };
        sh.ack.record(me, u64::try_from(now.duration_since(p.at).as_micros()).unwrap_or(u64::MAX));
        if r.duplicate == Some(true) {
            st.ack_duplicates += 1;
        }
        if r.offset.is_none() || r.epoch.is_none() {
            st.acked_without_offset += 1;
        }
        st.acked.push((mid.into_owned(), p.channel));
        return;
    }
    let (Some(ch), Some(epoch), Some(offset)) = (f.channel.as_deref(), f.epoch.as_deref(), f.offset) else {
        // Control pushes (no stream position).
        return;
    };
    let user = &sh.users[me];
    let Some(slot) = user.channels.iter().position(|c| sh.channels[*c].stream == ch) else {
        st.foreign += 1;
        return;
    };
    st.offsets[slot].observe(epoch, offset);
    if f.kind.as_deref() != Some("message_created") {
        st.other_events += 1;
        return;
    }
    let Some(m) = f.data.and_then(|d| d.message) else {
        st.bad_frames += 1;
        return;
    };
    if ch.strip_prefix("room:") != Some(&*m.channel_id) {
        st.mismatched += 1;
    }
    let count = st.received.entry(m.id.into_owned()).or_default();
    *count += 1;
    if *count > 1 {
        st.duplicates += 1;
        return;
    }
    if let Some((sender, t)) = parse_text(&m.text, &sh.run) {
        let lat = now_us.saturating_sub(t);
        if sender == me { sh.echo.record(me, lat) } else { sh.delivery.record(me, lat) }
    }
}

/// Opens the user's WebSocket, subscribes to its two channels, waits for the
/// start, sends on its schedule, then keeps reading until aborted.
async fn run_conn(
    ctx: Arc<Ctx>,
    sh: Arc<Shared>,
    me: usize,
    state: Arc<Mutex<ConnState>>,
    ready: Arc<Ready>,
    mut start: watch::Receiver<Option<(tokio::time::Instant, Duration, Duration)>>,
) {
    let user = &sh.users[me];
    let mut ws = match open_ws(&ctx, &user.token).await {
        Ok(ws) => ws,
        Err(e) => {
            state.lock().error(format!("connect:{}", e.label()));
            ready.fail();
            return;
        }
    };
    for (slot, c) in user.channels.iter().enumerate() {
        let id = 1 + slot as u64;
        if let Err(e) = ws.send_text(&subscribe_command(id, &sh.channels[*c].stream, None)).await {
            state.lock().error(format!("subscribe-send:{:?}", e.kind()));
            ready.fail();
            return;
        }
        loop {
            let bytes = match ws.next().await {
                Ok(Msg::Text(b)) => b,
                Ok(Msg::Binary) => continue,
                Ok(Msg::Close(code)) => {
                    *state.lock().closes.entry(code).or_default() += 1;
                    ready.fail();
                    return;
                }
                Err(e) => {
                    state.lock().error(format!("subscribe-read:{:?}", e.kind()));
                    ready.fail();
                    return;
                }
            };
            let (now_us, now) = (now_us(), Instant::now());
            let reply = serde_json::from_slice::<In<'_>>(bytes).ok().filter(|f| f.kind.is_none() && f.id == Some(id));
            let mut st = state.lock();
            match reply {
                Some(f) => {
                    if let Some(e) = f.error {
                        st.error(format!("subscribe:{}", e.error.as_deref().unwrap_or("?")));
                        drop(st);
                        ready.fail();
                        return;
                    }
                    if let Some(r) = f.result
                        && let (Some(e), Some(o)) = (r.epoch.as_deref(), r.offset)
                    {
                        st.offsets[slot].start_at(e, o);
                    }
                    break;
                }
                None => on_text(&sh, me, &mut st, bytes, now_us, now),
            }
        }
    }
    state.lock().subscribed = true;
    ready.ok();

    // Wait for the common start: (instant, period, duration).
    let (t0, period, duration) = loop {
        if let Some(s) = *start.borrow_and_update() {
            break s;
        }
        tokio::select! {
            changed = start.changed() => if changed.is_err() { return },
            r = ws.next() => if !read_one(&sh, me, &state, r) { return },
        }
    };
    let users = sh.users.len() as u32;
    let phase = period * me as u32 / users.max(1);
    let end = t0 + duration;
    let mut k: u32 = 0;
    let mut next_id: u64 = 100;
    loop {
        let due = t0 + phase + period * k;
        if due >= end {
            break;
        }
        // Biased: a due send goes out before more reading. The read future
        // is dropped only while waiting for bytes (cancel-safe); a pong is
        // written within `next` without waiting (a few bytes to an empty
        // socket buffer), and pings come every 25 s.
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(due) => {
                let slot = (k % 2) as usize;
                let c = user.channels[slot];
                let t = now_us();
                let mut text = format!("rtt {} {me} {k} {t} ", sh.run);
                text.push_str(&sh.payload);
                let key = format!("rtt-{}-{me}-{k}", sh.run);
                let cmd = send_command(next_id, &sh.channels[c].stream, &text, &key);
                let at = Instant::now();
                let lag = u64::try_from(tokio::time::Instant::now().saturating_duration_since(due).as_micros()).unwrap_or(u64::MAX);
                {
                    let mut st = state.lock();
                    st.pending.insert(next_id, Pending { at, channel: c });
                    st.sent += 1;
                }
                sh.lag.record(me, lag);
                if let Err(e) = ws.send_text(&cmd).await {
                    let mut st = state.lock();
                    st.error(format!("send:{:?}", e.kind()));
                    return;
                }
                next_id += 1;
                k += 1;
            }
            r = ws.next() => if !read_one(&sh, me, &state, r) { return },
        }
    }
    loop {
        let r = ws.next().await;
        if !read_one(&sh, me, &state, r) {
            return;
        }
    }
}

/// Accounts one `next()` result; false when the connection is done.
fn read_one(sh: &Shared, me: usize, state: &Mutex<ConnState>, r: std::io::Result<Msg<'_>>) -> bool {
    match r {
        Ok(Msg::Text(bytes)) => {
            let (now_us, now) = (now_us(), Instant::now());
            on_text(sh, me, &mut state.lock(), bytes, now_us, now);
            true
        }
        Ok(Msg::Binary) => {
            state.lock().bad_frames += 1;
            true
        }
        Ok(Msg::Close(code)) => {
            *state.lock().closes.entry(code).or_default() += 1;
            false
        }
        Err(e) => {
            state.lock().error(format!("read:{:?}", e.kind()));
            false
        }
    }
}

// ---------------------------------------------------------------- the run

pub async fn run(ctx: &Arc<Ctx>, a: &MessageArgs) -> anyhow::Result<Report> {
    if a.rate_per_user <= 0.0 || a.duration.is_zero() {
        bail!("need a positive rate and duration");
    }
    let membership = plan(a.users, a.channels)?;
    let members_per_channel = 2 * a.users / a.channels;
    let mut rng = FastRng::new();
    let run_tag = format!("{:06x}", rng.next_u64() & 0xff_ffff);

    // Engine, as the server reports it.
    let engine = {
        let mut c = HttpConn::new(ctx.target.clone());
        match crate::http::get_json(&mut c, "/health/detailed").await {
            Ok((_, v)) => v["checks"]["store"]["engine"].as_str().unwrap_or("?").to_owned(),
            Err(_) => "?".to_owned(),
        }
    };

    // Users, then channels and members, over REST.
    let t_setup = Instant::now();
    let creds = create_users(ctx, &run_tag, a.users, a.setup_concurrency).await.context("creating users")?;
    let users_s = t_setup.elapsed().as_secs_f64();
    let mut channels: Vec<Channel> = Vec::with_capacity(a.channels);
    let mut http = HttpConn::new(ctx.target.clone());
    for c in 0..a.channels {
        let members: Vec<usize> = (0..a.users).filter(|u| membership[*u].contains(&c)).collect();
        // Channel c's owner is user c (its first member by the plan).
        let owner = c;
        debug_assert!(members.contains(&owner));
        let (_, owner_token) = &creds[owner];
        let ch = rest(&mut http, "POST", "/api/v1/channels", Some(owner_token), &serde_json::json!({"name": format!("rtt {run_tag} {c}")}))
            .await
            .context("creating a channel")?;
        let id = str_field(&ch, &["id"])?;
        let stream = ch["stream"].as_str().map_or_else(|| format!("room:{id}"), str::to_owned);
        for &m in members.iter().filter(|m| **m != owner) {
            rest(&mut http, "POST", &format!("/api/v1/channels/{id}/members"), Some(owner_token), &serde_json::json!({"kind": "user", "id": creds[m].0}))
                .await
                .context("adding a member")?;
        }
        channels.push(Channel { stream, members });
    }
    let setup_s = t_setup.elapsed().as_secs_f64();
    let users: Vec<User> = creds.into_iter().zip(&membership).map(|((_, token), ch)| User { token, channels: *ch }).collect();
    let payload: String = "lorem ipsum dolor sit amet, consectetur adipiscing elit ".chars().cycle().take(a.payload).collect();
    let shared = Arc::new(Shared {
        users,
        channels,
        ack: Latency::new(16),
        delivery: Latency::new(16),
        echo: Latency::new(16),
        lag: Latency::new(16),
        run: run_tag.clone(),
        payload,
    });

    // Connections.
    let ready = Arc::new(Ready::default());
    let (start_tx, start_rx) = watch::channel(None);
    let states: Vec<Arc<Mutex<ConnState>>> = (0..a.users).map(|_| Arc::new(Mutex::new(ConnState::default()))).collect();
    let t_connect = Instant::now();
    let handles: Vec<_> = (0..a.users)
        .map(|i| tokio::spawn(run_conn(ctx.clone(), shared.clone(), i, states[i].clone(), ready.clone(), start_rx.clone())))
        .collect();
    ready.wait(a.users, Duration::from_secs(60)).await;
    let connect_s = t_connect.elapsed().as_secs_f64();
    let subscribed = ready.ok.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(a.settle).await;

    // Send for `duration` on the schedule, then drain.
    let period = Duration::from_secs_f64(1.0 / a.rate_per_user);
    let cpu = CpuMeter::start(ctx.server_pid);
    let db_start = a.db_pid.and_then(tree_ticks);
    let t0 = tokio::time::Instant::now() + Duration::from_millis(20);
    let _ = start_tx.send(Some((t0, period, a.duration)));
    tokio::time::sleep_until(t0 + a.duration).await;
    let members_of: Vec<usize> = shared.channels.iter().map(|c| c.members.len()).collect();
    let drain_start = Instant::now();
    loop {
        let (mut pending, mut expected, mut unique) = (0usize, 0u64, 0u64);
        for s in &states {
            let s = s.lock();
            pending += s.pending.len();
            expected += s.acked.iter().map(|(_, c)| members_of[*c] as u64).sum::<u64>();
            unique += s.received.len() as u64;
        }
        if (pending == 0 && unique >= expected) || drain_start.elapsed() >= a.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained_s = drain_start.elapsed().as_secs_f64();
    let cpu_use = cpu.stop();
    let db_pct = match (db_start, a.db_pid.and_then(tree_ticks)) {
        (Some(b0), Some(b1)) => Some(b1.saturating_sub(b0) as f64 / ticks_per_second() as f64 / cpu_use.seconds * 100.0),
        _ => None,
    };
    let other_pct = cpu_use.other_pct().map(|p| (p - db_pct.unwrap_or(0.0)).max(0.0));
    for h in &handles {
        h.abort();
    }

    // Accounting.
    let mut sent = 0u64;
    let mut acked: HashMap<String, usize> = HashMap::new();
    let mut acked_twice = 0u64;
    let mut unanswered = 0u64;
    let (mut without_offset, mut ack_dups) = (0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut closes: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut foreign, mut mismatched, mut other_events, mut bad_frames) = (0u64, 0u64, 0u64, 0u64);
    let (mut offset_gaps, mut offset_missing, mut offset_repeats) = (0u64, 0u64, 0u64);
    let mut not_subscribed = 0usize;
    for s in &states {
        let s = s.lock();
        sent += s.sent;
        unanswered += s.pending.len() as u64;
        without_offset += s.acked_without_offset;
        ack_dups += s.ack_duplicates;
        for (id, c) in &s.acked {
            if acked.insert(id.clone(), *c).is_some() {
                acked_twice += 1;
            }
        }
        for (k, v) in &s.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.closes {
            *closes.entry(*k).or_default() += v;
        }
        foreign += s.foreign;
        mismatched += s.mismatched;
        other_events += s.other_events;
        bad_frames += s.bad_frames;
        for o in &s.offsets {
            offset_gaps += o.gaps;
            offset_missing += o.missing;
            offset_repeats += o.repeats;
        }
        if !s.subscribed {
            not_subscribed += 1;
        }
    }
    let mut by_channel: Vec<Vec<&str>> = vec![Vec::new(); shared.channels.len()];
    for (id, c) in &acked {
        by_channel[*c].push(id);
    }
    let (mut expected, mut delivered, mut lost, mut duplicated, mut unacked_received) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for (u, s) in states.iter().enumerate() {
        let s = s.lock();
        let mine: HashSet<usize> = shared.users[u].channels.iter().copied().collect();
        for c in &mine {
            for id in &by_channel[*c] {
                expected += 1;
                match s.received.get(*id) {
                    Some(_) => delivered += 1,
                    None => lost += 1,
                }
            }
        }
        duplicated += s.duplicates;
        unacked_received += s.received.keys().filter(|id| !acked.contains_key(*id)).count() as u64;
    }
    let acked_n = acked.len() as u64;
    let ack = LatencySummary::of(&shared.ack.merged());
    let delivery = LatencySummary::of(&shared.delivery.merged());
    let echo = LatencySummary::of(&shared.echo.merged());
    let lag = LatencySummary::of(&shared.lag.merged());
    let rate = acked_n as f64 / a.duration.as_secs_f64();

    let mut r = Report::new(
        "message-rtt",
        ctx.row(format!(
            "message round trip, {} users × {} msg/s into {} channels of {} members, {} s ({engine})",
            a.users, a.rate_per_user, a.channels, members_per_channel, a.duration.as_secs_f64()
        )),
    );
    r.param("users", a.users)
        .param("channels", a.channels)
        .param("members_per_channel", members_per_channel)
        .param("rate_per_user", a.rate_per_user)
        .param("rate_total", a.rate_per_user * a.users as f64)
        .param("duration_s", a.duration.as_secs_f64())
        .param("payload_chars", a.payload)
        .param("store_engine", engine.as_str())
        .param("transport", "WebSocket send_message")
        .param("sender_counts_as_member", true);
    r.metric("subscribed", subscribed)
        .metric("setup_s", (setup_s * 10.0).round() / 10.0)
        .metric("sent", sent)
        .metric("acked", acked_n)
        .metric("acked_per_s", rate.round())
        .metric("unanswered", unanswered)
        .metric("acked_without_offset", without_offset)
        .metric("ack_duplicate_flag", ack_dups)
        .metric("acked_twice", acked_twice)
        .metric("errors", &errors)
        .metric("ack_latency", ack)
        .metric("delivery_latency", delivery)
        .metric("echo_latency", echo)
        .metric("schedule_lag", lag)
        .metric("deliveries_expected", expected)
        .metric("delivered", delivered)
        .metric("lost", lost)
        .metric("duplicated", duplicated)
        .metric("unacked_received", unacked_received)
        .metric("foreign_channel_events", foreign)
        .metric("channel_id_mismatch", mismatched)
        .metric("other_events", other_events)
        .metric("bad_frames", bad_frames)
        .metric("offset_gaps", offset_gaps)
        .metric("offset_missing", offset_missing)
        .metric("offset_repeats", offset_repeats)
        .metric("drain_s", (drained_s * 100.0).round() / 100.0)
        .metric("client_cpu_pct", cpu_use.client_pct.map(f64::round))
        .metric("server_cpu_pct", cpu_use.server_pct.map(f64::round))
        .metric("db_cpu_pct", db_pct.map(f64::round))
        .metric("other_cpu_pct", other_pct.map(f64::round))
        .metric("closes", fmt_map(&closes));
    r.line(format!(
        "setup over REST: {} users signed up and logged in in {users_s:.1} s, {} channels with {} members each, all in {setup_s:.1} s; {subscribed}/{} connections subscribed to 2 channels each in {connect_s:.1} s",
        a.users, a.channels, members_per_channel, a.users
    ));
    r.line(format!(
        "sent {sent} send_message ({:.0}/s scheduled) · acknowledged {acked_n} ({rate:.0}/s) · unanswered {unanswered} · errors {errors:?}{}",
        a.rate_per_user * a.users as f64,
        if without_offset > 0 || ack_dups > 0 || acked_twice > 0 { format!(" · acked without offset {without_offset} · duplicate flag {ack_dups} · same id twice {acked_twice}") } else { String::new() }
    ));
    r.line(format!("ack latency (command written → reply): {}", ack.line()));
    r.line(format!("delivery latency to the other members (send → message_created): {}", delivery.line()));
    r.line(format!("sender's own copy (send → message_created): {}", echo.line()));
    r.line(format!("client schedule lag (send due → written): p99 {} · max {}", ms(lag.p99_us), ms(lag.max_us)));
    r.line(format!(
        "deliveries (every member incl. the sender): expected {expected} · delivered {delivered} · lost {lost} · duplicated {duplicated} · received but not acknowledged {unacked_received} · offset gaps {offset_gaps} ({offset_missing}) · repeats {offset_repeats}"
    ));
    if foreign > 0 || mismatched > 0 || bad_frames > 0 || !closes.is_empty() {
        r.line(format!("events on foreign channels {foreign} · channel id mismatch {mismatched} · bad frames {bad_frames} · closes {closes:?}"));
    }
    r.line(format!("drain after the last send: {drained_s:.2} s"));
    match db_pct {
        Some(db) => r.line(format!(
            "{} (of which the database {db:.0}%; the rest of the machine without it {:.0}%)",
            cpu_use.line(),
            other_pct.unwrap_or(0.0)
        )),
        None => r.line(cpu_use.line()),
    };
    let all_acked = subscribed == a.users && not_subscribed == 0 && sent > 0 && acked_n == sent && unanswered == 0 && errors.is_empty() && ack_dups == 0 && acked_twice == 0;
    r.check("every send acknowledged (no errors, no unanswered)", all_acked, format!("{acked_n}/{sent} acked, errors {errors:?}"));
    let all_delivered = lost == 0 && duplicated == 0 && foreign == 0 && mismatched == 0 && offset_gaps == 0 && offset_repeats == 0 && closes.is_empty() && expected == acked_n * members_per_channel as u64;
    r.check(
        "every member received every acknowledged message exactly once",
        all_delivered,
        format!("{delivered}/{expected} delivered, lost {lost}, duplicated {duplicated}"),
    );
    if let Some(p99) = a.p99_ms {
        r.check(format!("ack p99 ≤ {p99} ms"), (ack.p99_us as f64) <= p99 * 1000.0 && ack.count > 0, ms(ack.p99_us));
    }
    if other_pct.is_some_and(|p| p > 25.0) {
        r.note("the rest of the machine used more than 25% of a core during the measurement: latencies are contended");
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_user_in_two_channels_of_equal_size() {
        let p = plan(50, 10).unwrap();
        for ch in &p {
            assert_ne!(ch[0], ch[1]);
        }
        for c in 0..10 {
            assert_eq!(p.iter().filter(|u| u.contains(&c)).count(), 10);
            // The owner (user c) is a member.
            assert!(p[c].contains(&c));
        }
        assert!(plan(50, 5).is_err()); // 10 users per row ≥ 5 channels
        assert!(plan(55, 10).is_err());
    }

    #[test]
    fn texts_and_frames() {
        assert_eq!(parse_text("rtt abc123 7 3 1700000000000123 lorem", "abc123"), Some((7, 1_700_000_000_000_123)));
        assert_eq!(parse_text("rtt other 7 3 17 x", "abc123"), None);
        let cmd = send_command(101, "room:c1", "hi \"x\"", "k-1");
        let v: serde_json::Value = serde_json::from_slice(&cmd).unwrap();
        assert_eq!((v["id"].as_u64(), v["type"].as_str(), v["text"].as_str()), (Some(101), Some("send_message"), Some("hi \"x\"")));
        let ack = br#"{"id":101,"result":{"message_id":"m1","channel":"room:c1","seq":3,"offset":9,"epoch":"E","created_at":"t","duplicate":false}}"#;
        let f: In<'_> = serde_json::from_slice(ack).unwrap();
        let r = f.result.unwrap();
        assert_eq!((r.message_id.as_deref(), r.offset, r.duplicate), (Some("m1"), Some(9), Some(false)));
        let push = br#"{"type":"message_created","channel":"room:c1","offset":10,"epoch":"E","timestamp":"t","data":{"message":{"id":"m1","channel_id":"c1","seq":3,"author":{"kind":"user","id":"u"},"text":"rtt r 1 2 3 \u00e9","created_at":"t"}}}"#;
        let f: In<'_> = serde_json::from_slice(push).unwrap();
        let m = f.data.unwrap().message.unwrap();
        assert_eq!((&*m.id, &*m.channel_id, &*m.text), ("m1", "c1", "rtt r 1 2 3 é"));
    }
}
