//! `agent-runs`: hosted agent runs against the mock OpenAI-compatible
//! server (`chorus-llm-mock --stamp`), every run watched by subscribed
//! clients.
//!
//! Setup goes through the REST API only: R users sign up and log in; each
//! creates one channel and one agent (on the server's default model, which
//! `bench/chorus-bench.toml` points at the mock) and adds the agent to the
//! channel. Each channel gets C WebSocket clients (its owner's token)
//! subscribed to its `room:` stream. Then every owner posts `@Bench go`, and
//! each of the R runs streams the mock's answer, whose text chunks are their
//! send times (Unix µs).
//!
//! Measured:
//! - gateway overhead: a chunk's send time at the mock → the client's
//!   `agent_text_delta` frame holding it (the mock and the clients share the
//!   machine's clock; loopback transit is included, so this is an upper
//!   bound). The server's `delta_interval` holds pieces on purpose; the
//!   bench config sets it to 0 so what is measured is the gateway itself;
//! - every client sees every run of its channel end exactly once, with `seq`
//!   1, 2, 3, … without gap, and nothing after the terminal event;
//! - events on a connection that may not see them (another channel, or a run
//!   header naming another channel);
//! - server memory per active run: RSS while the runs stream minus RSS with
//!   the clients connected and no run, over the active runs then.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use parking_lot::Mutex;
use serde::Deserialize;

use crate::Ctx;
use crate::conn::{Ready, open_ws};
use crate::frame::subscribe_command;
use crate::http::{HttpConn, get_json};
use crate::report::Report;
use crate::scenario::messages::setup::{create_users, rest, str_field};
use crate::server::Probe;
use crate::stats::{Latency, LatencySummary, ms};
use crate::util::{CpuMeter, FastRng, now_us, parse_duration};
use crate::ws::Msg;

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Runs at once: one per user, channel and agent.
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    /// Subscribed clients per channel (each run is watched by this many).
    #[arg(long, default_value_t = 2)]
    pub clients_per_run: usize,
    /// REST requests in flight during setup.
    #[arg(long, default_value_t = 8)]
    pub setup_concurrency: usize,
    /// Longest wait for every client to see every run end.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Bar: p99 gateway overhead (chunk sent by the mock → client frame), ms.
    #[arg(long)]
    pub p99_ms: Option<f64>,
    /// Bar: server memory per active run, KiB.
    #[arg(long)]
    pub kib_per_run: Option<f64>,
}

/// What one client saw of one run.
#[derive(Default)]
struct RunSeen {
    last_seq: u64,
    seq_gaps: u64,
    terminals: u64,
    after_terminal: u64,
    completed: bool,
}

#[derive(Default)]
struct ClientState {
    subscribed: bool,
    runs: HashMap<String, RunSeen>,
    /// Events of a channel this client did not subscribe to, or run events
    /// whose `thread_id` is another channel.
    foreign: u64,
    bad_frames: u64,
    errors: BTreeMap<String, u64>,
    closes: BTreeMap<u16, u64>,
}

#[derive(Deserialize)]
struct In<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<InData<'a>>,
}

#[derive(Deserialize)]
struct InData<'a> {
    #[serde(borrow, default)]
    run_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    thread_id: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<Cow<'a, str>>,
}

const RUN_EVENTS: &[&str] =
    &["agent_queued", "agent_started", "agent_thinking", "agent_text_delta", "tool_executing", "tool_completed", "agent_completed", "agent_error"];

/// Accounts one pushed frame of client `shard`, subscribed to `stream`.
fn on_text(st: &mut ClientState, stream: &str, bytes: &[u8], now: u64, overhead: &Latency, shard: usize) {
    let Ok(f) = serde_json::from_slice::<In<'_>>(bytes) else {
        st.bad_frames += 1;
        return;
    };
    let (Some(kind), Some(channel)) = (f.kind.as_deref(), f.channel.as_deref()) else {
        return; // replies and control pushes
    };
    if channel != stream {
        st.foreign += 1;
        return;
    }
    if !RUN_EVENTS.contains(&kind) {
        return;
    }
    let Some(d) = f.data else {
        st.bad_frames += 1;
        return;
    };
    if d.thread_id.as_deref() != Some(stream) {
        st.foreign += 1;
        return;
    }
    let (Some(run), Some(seq)) = (d.run_id, d.seq) else {
        st.bad_frames += 1;
        return;
    };
    let seen = st.runs.entry(run.into_owned()).or_default();
    if seen.terminals > 0 {
        seen.after_terminal += 1;
    }
    if seq != seen.last_seq + 1 {
        seen.seq_gaps += 1;
    }
    seen.last_seq = seen.last_seq.max(seq);
    match kind {
        "agent_text_delta" => {
            for stamp in d.delta.as_deref().unwrap_or_default().split_whitespace() {
                if let Ok(t) = stamp.parse::<u64>() {
                    overhead.record(shard, now.saturating_sub(t));
                }
            }
        }
        "agent_completed" => {
            seen.terminals += 1;
            seen.completed = true;
        }
        "agent_error" => seen.terminals += 1,
        _ => {}
    }
}

async fn run_client(ctx: Arc<Ctx>, token: Arc<str>, stream: Arc<str>, state: Arc<Mutex<ClientState>>, overhead: Arc<Latency>, shard: usize, ready: Arc<Ready>) {
    let mut ws = match open_ws(&ctx, &token).await {
        Ok(ws) => ws,
        Err(e) => {
            *state.lock().errors.entry(format!("connect:{}", e.label())).or_default() += 1;
            ready.fail();
            return;
        }
    };
    if ws.send_text(&subscribe_command(1, &stream, None)).await.is_err() {
        ready.fail();
        return;
    }
    loop {
        match ws.next().await {
            Ok(Msg::Text(bytes)) => {
                let now = now_us();
                let reply = serde_json::from_slice::<serde_json::Value>(bytes).ok().filter(|v| v.get("type").is_none() && v["id"] == 1);
                let mut st = state.lock();
                match reply {
                    Some(v) if v.get("error").is_some() => {
                        *st.errors.entry(format!("subscribe:{}", v["error"]["error"].as_str().unwrap_or("?"))).or_default() += 1;
                        drop(st);
                        ready.fail();
                        return;
                    }
                    Some(_) if !st.subscribed => {
                        st.subscribed = true;
                        drop(st);
                        ready.ok();
                    }
                    _ => on_text(&mut st, &stream, bytes, now, &overhead, shard),
                }
            }
            Ok(Msg::Binary) => state.lock().bad_frames += 1,
            Ok(Msg::Close(code)) => {
                *state.lock().closes.entry(code).or_default() += 1;
                return;
            }
            Err(e) => {
                *state.lock().errors.entry(format!("read:{:?}", e.kind())).or_default() += 1;
                return;
            }
        }
    }
}

/// Channel (its `room:` stream and id) and agent of each user, created over REST.
async fn create_rooms(ctx: &Ctx, run_tag: &str, creds: &[(String, String)], concurrency: usize) -> anyhow::Result<Vec<(String, String)>> {
    let workers = concurrency.clamp(1, creds.len().max(1));
    let creds: Arc<Vec<(String, String)>> = Arc::new(creds.to_vec());
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (target, creds, run_tag) = (ctx.target.clone(), creds.clone(), run_tag.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(target);
            let mut out = Vec::new();
            for i in (w..creds.len()).step_by(workers) {
                let token = Some(creds[i].1.as_str());
                let ch = rest(&mut conn, "POST", "/api/v1/channels", token, &serde_json::json!({"name": format!("runs {run_tag} {i}")})).await?;
                let id = str_field(&ch, &["id"])?;
                let stream = ch["stream"].as_str().map_or_else(|| format!("room:{id}"), str::to_owned);
                let agent = rest(&mut conn, "POST", "/api/v1/agents", token, &serde_json::json!({"name": "Bench", "persona": "A benchmark agent that streams its answer.", "tools": []})).await?;
                let agent_id = str_field(&agent, &["id"])?;
                rest(&mut conn, "POST", &format!("/api/v1/channels/{id}/members"), token, &serde_json::json!({"kind": "agent", "id": agent_id})).await?;
                out.push((i, stream, id));
            }
            anyhow::Ok(out)
        }));
    }
    let mut rooms: Vec<Option<(String, String)>> = (0..creds.len()).map(|_| None).collect();
    for t in tasks {
        for (i, stream, id) in t.await.context("setup task")?? {
            rooms[i] = Some((stream, id));
        }
    }
    rooms.into_iter().map(|r| r.context("a channel was not set up")).collect()
}

/// Posts `@Bench go` in every channel, `concurrency` at a time.
async fn trigger(ctx: &Ctx, creds: &[(String, String)], rooms: &[(String, String)], concurrency: usize) -> anyhow::Result<()> {
    let workers = concurrency.clamp(1, rooms.len().max(1));
    let jobs: Arc<Vec<(String, String)>> = Arc::new(creds.iter().zip(rooms).map(|((_, token), (_, id))| (token.clone(), id.clone())).collect());
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (target, jobs) = (ctx.target.clone(), jobs.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(target);
            for i in (w..jobs.len()).step_by(workers) {
                let (token, id) = &jobs[i];
                rest(&mut conn, "POST", &format!("/api/v1/channels/{id}/messages"), Some(token), &serde_json::json!({"text": "@Bench go"})).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await.context("trigger task")??;
    }
    Ok(())
}

pub async fn run(ctx: &Arc<Ctx>, a: &RunArgs) -> anyhow::Result<Report> {
    if a.runs == 0 || a.clients_per_run == 0 {
        bail!("need at least one run and one client per run");
    }
    let run_tag = format!("ar{:06x}", FastRng::new().next_u64() & 0xff_ffff);
    let probe = Probe::new(&ctx.target, ctx.server_pid);

    let t_setup = Instant::now();
    let creds = create_users(ctx, &run_tag, a.runs, a.setup_concurrency).await.context("creating users")?;
    let rooms = create_rooms(ctx, &run_tag, &creds, a.setup_concurrency).await.context("creating channels and agents")?;
    let setup_s = t_setup.elapsed().as_secs_f64();

    let clients = a.runs * a.clients_per_run;
    let overhead = Arc::new(Latency::new(16));
    let ready = Arc::new(Ready::default());
    let states: Vec<Arc<Mutex<ClientState>>> = (0..clients).map(|_| Arc::new(Mutex::new(ClientState::default()))).collect();
    let mut handles = Vec::with_capacity(clients);
    for (i, state) in states.iter().enumerate() {
        let r = i / a.clients_per_run;
        let (token, stream): (Arc<str>, Arc<str>) = (Arc::from(creds[r].1.as_str()), Arc::from(rooms[r].0.as_str()));
        handles.push(tokio::spawn(run_client(ctx.clone(), token, stream, state.clone(), overhead.clone(), i % 16, ready.clone())));
    }
    ready.wait(clients, Duration::from_secs(120)).await;
    let subscribed = ready.ok.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_base = probe.rss_kib();

    // The runs, and the server sampled while they stream.
    let cpu = CpuMeter::start(ctx.server_pid);
    let t_runs = Instant::now();
    trigger(ctx, &creds, &rooms, a.setup_concurrency).await.context("posting the triggers")?;
    let trigger_s = t_runs.elapsed().as_secs_f64();
    let (mut peak_active, mut rss_at_peak, mut queued_max) = (0u64, None, 0u64);
    let deadline = Instant::now() + a.drain;
    loop {
        if let Ok((_, v)) = get_json(&mut HttpConn::new(ctx.target.clone()), "/health/detailed").await {
            let active = v["checks"]["agents"]["active_runs"].as_u64().unwrap_or(0);
            queued_max = queued_max.max(v["checks"]["agents"]["queued_runs"].as_u64().unwrap_or(0));
            if active >= peak_active {
                peak_active = active;
                rss_at_peak = probe.rss_kib();
            }
        }
        let ended = states.iter().all(|s| {
            let s = s.lock();
            s.runs.len() == 1 && s.runs.values().all(|r| r.terminals > 0)
        });
        if ended || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let runs_s = t_runs.elapsed().as_secs_f64();
    let cpu_use = cpu.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for h in &handles {
        h.abort();
    }

    // Accounting.
    let (mut one_end, mut completed, mut not_ended, mut several_ends, mut after_end, mut gaps) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut foreign, mut bad, mut missing_runs) = (0u64, 0u64, 0u64);
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut closes: BTreeMap<u16, u64> = BTreeMap::new();
    for s in &states {
        let s = s.lock();
        foreign += s.foreign;
        bad += s.bad_frames;
        if s.runs.is_empty() {
            missing_runs += 1;
        }
        for r in s.runs.values() {
            match r.terminals {
                0 => not_ended += 1,
                1 => one_end += 1,
                _ => several_ends += 1,
            }
            completed += u64::from(r.completed);
            after_end += r.after_terminal;
            gaps += r.seq_gaps;
        }
        for (k, v) in &s.errors {
            *errors.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &s.closes {
            *closes.entry(*k).or_default() += v;
        }
    }
    let overhead = LatencySummary::of(&overhead.merged());
    let kib_per_run = match (rss_base, rss_at_peak) {
        (Some(b), Some(p)) if peak_active > 0 => Some(p.saturating_sub(b) as f64 / peak_active as f64),
        _ => None,
    };

    let mut r = Report::new("agent-runs", ctx.row(format!("{} agent runs against the mock provider, {} subscribed clients", a.runs, clients)));
    r.param("runs", a.runs).param("clients_per_run", a.clients_per_run).param("clients", clients).param("provider", "mock OpenAI-compatible (chorus-llm-mock --stamp)");
    r.metric("subscribed", subscribed)
        .metric("setup_s", (setup_s * 10.0).round() / 10.0)
        .metric("trigger_s", (trigger_s * 10.0).round() / 10.0)
        .metric("runs_s", (runs_s * 10.0).round() / 10.0)
        .metric("peak_active_runs", peak_active)
        .metric("peak_queued_runs", queued_max)
        .metric("gateway_overhead", overhead)
        .metric("run_views_one_end", one_end)
        .metric("run_views_completed", completed)
        .metric("run_views_not_ended", not_ended)
        .metric("run_views_several_ends", several_ends)
        .metric("events_after_end", after_end)
        .metric("seq_gaps", gaps)
        .metric("clients_without_run", missing_runs)
        .metric("foreign_events", foreign)
        .metric("bad_frames", bad)
        .metric("errors", &errors)
        .metric("rss_base_kib", rss_base)
        .metric("rss_peak_kib", rss_at_peak)
        .metric("kib_per_active_run", kib_per_run.map(|k| (k * 10.0).round() / 10.0))
        .metric("server_cpu_pct", cpu_use.server_pct.map(f64::round))
        .metric("other_cpu_pct", cpu_use.other_pct().map(f64::round));
    r.line(format!("setup over REST {setup_s:.1} s; {subscribed}/{clients} clients subscribed; triggers posted in {trigger_s:.1} s; all runs ended after {runs_s:.1} s"));
    r.line(format!("peak active runs {peak_active} (queued at most {queued_max}); RSS {} KiB idle → {} KiB at the peak: {} KiB per active run",
        rss_base.map_or("?".into(), |v| v.to_string()), rss_at_peak.map_or("?".into(), |v| v.to_string()), kib_per_run.map_or("?".into(), |k| format!("{k:.1}"))));
    r.line(format!("gateway overhead (mock chunk sent → client frame): {}", overhead.line()));
    r.line(format!(
        "run views (client × run): one terminal event {one_end} (completed {completed}) · none {not_ended} · several {several_ends} · events after the end {after_end} · seq gaps {gaps} · clients that saw no run {missing_runs}"
    ));
    r.line(format!("events a client may not see {foreign} · bad frames {bad} · errors {errors:?} · closes {closes:?}"));
    r.line(cpu_use.line());
    let views = (a.runs * a.clients_per_run) as u64;
    r.check(
        "every client saw its run end exactly once, in seq order, nothing after",
        subscribed == clients && one_end == views && not_ended == 0 && several_ends == 0 && after_end == 0 && gaps == 0 && missing_runs == 0,
        format!("{one_end}/{views} views with one end"),
    );
    r.check("no event to a connection that may not see it", foreign == 0, foreign.to_string());
    if let Some(p99) = a.p99_ms {
        r.check(format!("gateway overhead p99 ≤ {p99} ms"), overhead.count > 0 && (overhead.p99_us as f64) <= p99 * 1000.0, ms(overhead.p99_us));
    }
    if let Some(limit) = a.kib_per_run {
        r.check(format!("memory per active run ≤ {limit} KiB"), kib_per_run.is_some_and(|k| k <= limit), kib_per_run.map_or("?".into(), |k| format!("{k:.1} KiB")));
    }
    if cpu_use.other_pct().is_some_and(|p| p > 25.0) {
        r.note("the rest of the machine used more than 25% of a core during the measurement: latencies are contended");
    }
    Ok(r)
}
