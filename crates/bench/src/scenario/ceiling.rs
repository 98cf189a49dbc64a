//! `ceiling`: the event throughput a deployment sustains through its broker.
//! C channels with one subscriber each (subscriber `i` on node `i mod n`),
//! publishers on every node through the batch API, at rising rates, each
//! step for a fixed time. A step holds when every event is delivered in
//! order within the drain time, deliveries keep up with the rate and the
//! p99 latency stays within the bound; the ceiling is the last step that
//! held, reported with its deliveries/s and p99.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use parking_lot::Mutex;

use crate::Ctx;
use crate::conn::{Ready, StreamState, close_and_error_counts, spawn_receivers};
use crate::publish::{Api, EventKind, Feed, run_lanes};
use crate::report::Report;
use crate::scenario::fmt_map;
use crate::stats::{Latency, LatencySummary, OffsetTracker, SeqTracker, StreamTotals, ms};
use crate::util::{now_us, parse_duration};

#[derive(Args, Debug)]
pub struct CeilingArgs {
    #[arg(long, default_value_t = 1_000)]
    pub channels: usize,
    /// The rates tried, events/s over all channels, in order.
    #[arg(long, value_delimiter = ',', default_value = "2000,4000,8000,16000,32000,64000")]
    pub rates: Vec<f64>,
    /// How long each rate is published.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub step: Duration,
    /// Publisher lanes (keep-alive connections), spread over the nodes.
    #[arg(long, default_value_t = 6)]
    pub lanes: usize,
    /// Most events in one batch request.
    #[arg(long, default_value_t = 500)]
    pub batch_max: usize,
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub tick: Duration,
    #[arg(long, default_value_t = 64)]
    pub payload: usize,
    /// Longest wait for a step's last deliveries.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub drain: Duration,
    /// Deliveries/s below this share of the rate count as falling behind.
    #[arg(long, default_value_t = 0.95)]
    pub keep_up: f64,
    /// The bound on a step's p99 delivery latency, ms.
    #[arg(long, default_value_t = 50.0)]
    pub p99_ms: f64,
}

/// One rate tried.
#[derive(Debug, Clone, serde::Serialize)]
struct Step {
    rate: f64,
    held: bool,
    deliveries_per_s: f64,
    latency: LatencySummary,
    totals: StreamTotals,
    published_ok: u64,
    published_failed: u64,
    why: String,
}

pub async fn run(ctx: &Arc<Ctx>, a: &CeilingArgs) -> anyhow::Result<Report> {
    let api_key = ctx.api_key()?;
    if a.channels == 0 || a.rates.is_empty() || a.rates.iter().any(|r| *r <= 0.0) {
        bail!("need at least one channel and positive rates");
    }
    let nodes = ctx.nodes.len();
    let channels: Vec<String> = (0..a.channels).map(|i| format!("live:ceil-{i}")).collect();
    let states: Vec<Arc<Mutex<StreamState>>> =
        channels.iter().enumerate().map(|(i, ch)| Arc::new(Mutex::new(StreamState { node: i % nodes, ..StreamState::new(format!("ceil-{i}"), ch.as_str()) }))).collect();
    let tokens: Vec<Arc<str>> = channels.iter().enumerate().map(|(i, ch)| ctx.minter.mint(&format!("ceil-{i}"), &[ch.as_str()]).map(Arc::from)).collect::<anyhow::Result<_>>()?;
    let lat = Arc::new(Latency::new(16));
    let ready = Arc::new(Ready::default());
    let t_connect = std::time::Instant::now();
    let handles = spawn_receivers(ctx, &states, &tokens, false, false, &lat, &ready, 100, Duration::ZERO).await;
    ready.wait(a.channels, Duration::from_secs(120)).await;
    let connect_s = t_connect.elapsed().as_secs_f64();
    let subscribed = ready.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let mut steps: Vec<Step> = Vec::new();
    let cpu = ctx.cpu_meter();
    for &rate in &a.rates {
        // Each step counts from sequence 0 again; offsets keep their position.
        for s in &states {
            let mut s = s.lock();
            s.seqs = SeqTracker::default();
            s.offsets = OffsetTracker { last: s.offsets.last.take(), ..OffsetTracker::default() };
            s.last_seq_rx_us = 0;
        }
        lat.reset();
        let feeds = Arc::new(channels.iter().map(|c| Feed::new(c.as_str(), "-")).collect::<Vec<_>>());
        let stop = Arc::new(AtomicBool::new(false));
        let started_us = now_us();
        let pubs = run_lanes(&ctx.nodes, &api_key, &feeds, a.lanes.max(1), rate, a.tick, Api::Batch { max: a.batch_max.max(1) }, EventKind::Publication(a.payload), a.step, &stop).await;
        // Drain: every subscriber has every acknowledged event of its channel, bounded.
        let expected: Vec<u64> = feeds.iter().map(|f| f.sent() - f.failed().len() as u64).collect();
        let drain_end = tokio::time::Instant::now() + a.drain;
        while tokio::time::Instant::now() < drain_end && !states.iter().zip(&expected).all(|(s, e)| s.lock().seqs.unique >= *e) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut totals = StreamTotals::default();
        let mut last_rx = 0u64;
        for (s, f) in states.iter().zip(feeds.iter()) {
            let s = s.lock();
            if s.pos.is_none() {
                continue;
            }
            totals.add_seqs(&s.seqs, f.sent(), &f.failed());
            totals.add_offsets(&s.offsets);
            last_rx = last_rx.max(s.last_seq_rx_us);
        }
        let window_s = last_rx.saturating_sub(started_us) as f64 / 1e6;
        let per_s = if window_s > 0.0 { totals.unique as f64 / window_s } else { 0.0 };
        let l = LatencySummary::of(&lat.merged());
        let mut why = Vec::new();
        if !totals.clean() {
            why.push(format!("not all delivered in order within {} s: {}", a.drain.as_secs_f64(), totals.line()));
        }
        if pubs.events_failed > 0 {
            why.push(format!("{} publishes failed", pubs.events_failed));
        }
        if per_s < rate * a.keep_up {
            why.push(format!("behind: {per_s:.0} deliveries/s for {rate:.0}/s"));
        }
        if (l.p99_us as f64) > a.p99_ms * 1000.0 || l.count == 0 {
            why.push(format!("p99 {} > {} ms", ms(l.p99_us), a.p99_ms));
        }
        let held = why.is_empty();
        steps.push(Step {
            rate,
            held,
            deliveries_per_s: per_s.round(),
            latency: l,
            totals,
            published_ok: pubs.events_ok,
            published_failed: pubs.events_failed,
            why: why.join("; "),
        });
        if !held {
            break;
        }
    }
    let cpu_use = cpu.stop();
    for h in &handles {
        h.abort();
    }
    let (closes, errors) = close_and_error_counts(&states);

    let best = steps.iter().rev().find(|s| s.held);
    let mut r = Report::new("ceiling", ctx.row(format!("throughput ceiling over {} channels on {nodes} node(s)", a.channels)));
    r.param("channels", a.channels)
        .param("nodes", nodes)
        .param("rates", a.rates.iter().map(|r| format!("{r:.0}")).collect::<Vec<_>>().join(","))
        .param("step_s", a.step.as_secs_f64())
        .param("lanes", a.lanes)
        .param("batch_max", a.batch_max)
        .param("payload_bytes", a.payload)
        .param("p99_bound_ms", a.p99_ms)
        .param("api", "POST /api/v1/publish/batch");
    r.metric("subscribed", subscribed)
        .metric("steps", &steps)
        .metric("ceiling_rate", best.map(|s| s.rate))
        .metric("ceiling_deliveries_per_s", best.map(|s| s.deliveries_per_s))
        .metric("ceiling_latency", best.map(|s| s.latency))
        .cpu(&cpu_use)
        .metric("closes", fmt_map(&closes))
        .metric("errors", &errors);
    r.line(format!("subscribed {subscribed}/{} in {connect_s:.1} s (one per channel, spread over {nodes} node(s)); publishers on every node", a.channels));
    for s in &steps {
        r.line(format!(
            "{:>6.0}/s: {} · {:.0} deliveries/s · latency {}{}",
            s.rate,
            if s.held { "held" } else { "NOT held" },
            s.deliveries_per_s,
            s.latency.line(),
            if s.why.is_empty() { String::new() } else { format!(" · {}", s.why) }
        ));
    }
    r.line(cpu_use.line());
    if !closes.is_empty() || !errors.is_empty() {
        r.line(format!("closes {closes:?} · errors {errors:?}"));
    }
    match best {
        Some(b) => r.check(
            format!("a ceiling within p99 ≤ {} ms, nothing lost", a.p99_ms),
            subscribed == a.channels,
            format!("{:.0} events/s offered, {:.0} deliveries/s, p99 {}", b.rate, b.deliveries_per_s, ms(b.latency.p99_us)),
        ),
        None => r.check(format!("a ceiling within p99 ≤ {} ms, nothing lost", a.p99_ms), false, "not even the first rate held".to_owned()),
    };
    if steps.iter().all(|s| s.held) {
        r.note("every rate tried held: the ceiling is above the highest (pass higher --rates)");
    }
    Ok(r)
}
