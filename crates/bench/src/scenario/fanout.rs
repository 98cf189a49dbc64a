//! `fanout`: one channel, S subscribers, R msg/s for D s through
//! `POST /api/v1/publish`; latency per delivery, deliveries/s, loss,
//! duplicates and order per subscriber. With several `--url`s (the nodes of
//! one deployment) subscriber `i` connects to node `i mod n` and the
//! publisher stays on node 1 (`cluster-fanout`).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use parking_lot::Mutex;

use crate::conn::{Ready, StreamState, close_and_error_counts, spawn_receivers};
use crate::publish::{Api, EventKind, Feed, run_lanes};
use crate::report::Report;
use crate::scenario::{drain_until_complete, fmt_map};
use crate::stats::{Latency, LatencySummary, StreamTotals};
use crate::util::{now_us, parse_duration};
use crate::Ctx;

#[derive(Args, Debug)]
pub struct FanoutArgs {
    #[arg(long, default_value_t = 1_000)]
    pub subscribers: usize,
    /// Messages per second published to the channel.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// The channel (the tokens grant exactly it). `live:` is the bench
    /// config's broadcast namespace: token grants, history, no presence.
    #[arg(long, default_value = "live:bench")]
    pub channel: String,
    /// Padding text per event, bytes.
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Longest wait for the last deliveries after publishing ends.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Pause between the last subscription and the first publish.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Connection attempts in flight while subscribing.
    #[arg(long, default_value_t = 100)]
    pub connect_window: usize,
    /// Subscribers joining per second (0 = as fast as the window allows). In a
    /// namespace with presence every join is pushed to everyone already
    /// there (S²/2 deliveries in all); pacing keeps that below the
    /// slow-consumer limit.
    #[arg(long, default_value_t = 0.0)]
    pub join_rate: f64,
    /// Bar: p99 delivery latency, ms.
    #[arg(long)]
    pub p99_ms: Option<f64>,
    /// Bar: deliveries per second.
    #[arg(long)]
    pub min_deliveries_per_s: Option<f64>,
}

pub async fn run(ctx: &Arc<Ctx>, a: &FanoutArgs) -> anyhow::Result<Report> {
    let api_key = ctx.api_key()?;
    if a.subscribers == 0 || a.rate <= 0.0 {
        bail!("need at least one subscriber and a positive rate");
    }
    let channel = a.channel.as_str();
    let nodes = ctx.nodes.len();
    let states: Vec<Arc<Mutex<StreamState>>> =
        (0..a.subscribers).map(|i| Arc::new(Mutex::new(StreamState { node: i % nodes, ..StreamState::new(format!("fan-{i}"), channel) }))).collect();
    let tokens: Vec<Arc<str>> = (0..a.subscribers).map(|i| ctx.minter.mint(&format!("fan-{i}"), &[channel]).map(Arc::from)).collect::<anyhow::Result<_>>()?;
    let lat = Arc::new(Latency::new(16));
    let ready = Arc::new(Ready::default());

    let t_connect = std::time::Instant::now();
    let pace = if a.join_rate > 0.0 { Duration::from_secs_f64(1.0 / a.join_rate) } else { Duration::ZERO };
    let handles = spawn_receivers(ctx, &states, &tokens, false, false, &lat, &ready, a.connect_window, pace).await;
    ready.wait(a.subscribers, Duration::from_secs(120)).await;
    let connect_s = t_connect.elapsed().as_secs_f64();
    let subscribed = ready.ok.load(std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(a.settle).await;
    lat.reset();

    let feeds = Arc::new(vec![Feed::new(channel, "-")]);
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = ctx.cpu_meter();
    let started_us = now_us();
    let tick = Duration::from_secs_f64(1.0 / a.rate);
    let pubs = run_lanes(std::slice::from_ref(&ctx.target), &api_key, &feeds, 1, a.rate, tick, Api::Single, EventKind::Publication(a.payload), a.duration, &stop).await;
    let acked = feeds[0].sent();
    let failed = feeds[0].failed();
    let expected_each = acked - failed.len() as u64;
    // Only subscribers that were up count as receivers.
    let receivers: Vec<_> = states.iter().filter(|s| s.lock().pos.is_some()).cloned().collect();
    drain_until_complete(&receivers, |s| s.seqs.unique >= expected_each, a.drain).await;
    let cpu_use = cpu.stop();
    for h in &handles {
        h.abort();
    }

    let mut totals = StreamTotals::default();
    let mut last_rx = 0u64;
    let mut other = 0u64;
    let mut wrong = 0u64;
    for s in &receivers {
        let s = s.lock();
        totals.add_seqs(&s.seqs, acked, &failed);
        totals.add_offsets(&s.offsets);
        last_rx = last_rx.max(s.last_seq_rx_us);
        other += s.other_events;
        wrong += s.wrong_user;
    }
    let (closes, errors) = close_and_error_counts(&states);
    let window_s = last_rx.saturating_sub(started_us) as f64 / 1e6;
    let per_s = if window_s > 0.0 { totals.unique as f64 / window_s } else { 0.0 };
    let l = LatencySummary::of(&lat.merged());

    let over = if nodes > 1 { format!(" over {nodes} nodes, published on node 1") } else { String::new() };
    let mut r = Report::new(
        "fanout",
        ctx.row(format!("fan-out 1 channel, {} subscribers × {} msg/s × {} s{over}", a.subscribers, a.rate, a.duration.as_secs_f64())),
    );
    r.param("subscribers", a.subscribers)
        .param("nodes", nodes)
        .param("rate_msg_s", a.rate)
        .param("duration_s", a.duration.as_secs_f64())
        .param("channel", channel)
        .param("payload_bytes", a.payload)
        .param("join_rate", a.join_rate)
        .param("api", "POST /api/v1/publish");
    r.metric("subscribed", subscribed)
        .metric("published_ok", pubs.events_ok)
        .metric("published_failed", pubs.events_failed)
        .metric("totals", totals)
        .metric("latency", l)
        .metric("deliveries_per_s", per_s.round())
        .cpu(&cpu_use)
        .metric("closes", fmt_map(&closes))
        .metric("errors", &errors);
    r.line(format!("subscribed {subscribed}/{} in {connect_s:.1} s{}", a.subscribers, if nodes > 1 { format!(" (spread evenly over {nodes} nodes)") } else { String::new() }));
    r.line(pubs.line());
    r.line(format!("deliveries: {}", totals.line()));
    r.line(format!("latency (publisher send → subscriber receipt): {}", l.line()));
    r.line(format!("deliveries/s: {per_s:.0} (unique deliveries / first send → last receipt = {window_s:.2} s)"));
    r.line(cpu_use.line());
    if other > 0 || wrong > 0 || !closes.is_empty() || !errors.is_empty() {
        r.line(format!("other events {other} · foreign-channel events {wrong} · closes {closes:?} · errors {errors:?}"));
    }
    let all = totals.clean() && totals.lost == 0 && subscribed == a.subscribers && pubs.events_failed == 0 && closes.is_empty();
    r.check("all delivered (nothing lost, duplicated or out of order)", all, totals.line());
    if let Some(p99) = a.p99_ms {
        r.check(format!("p99 ≤ {p99} ms"), (l.p99_us as f64) <= p99 * 1000.0 && l.count > 0, crate::stats::ms(l.p99_us));
    }
    if let Some(min) = a.min_deliveries_per_s {
        r.check(format!("≥ {min:.0} deliveries/s"), per_s >= min, format!("{per_s:.0}/s"));
    }
    Ok(r)
}
