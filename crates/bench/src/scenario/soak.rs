//! `soak`: N connections, a fraction replaced every interval, steady agent
//! events; server RSS, task count and `/health` latency at the end must be
//! within 10% of their values at the baseline mark (default after 5 min).
//!
//! Each connection subscribes to its own `user:<id>` and to one of `rooms`
//! rooms (presence on); events go to the rooms, so every room's history
//! fills (1,000 events) well before the baseline mark and memory can level
//! off. Replacements are new users (new ids), so per-user state is created
//! and must be released all through the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use parking_lot::Mutex;

use crate::conn::{Plan, Ready, StreamState, close_and_error_counts, run_ws};
use crate::publish::{Api, EventKind, Feed, run_lanes};
use crate::report::Report;
use crate::scenario::fmt_map;
use crate::server::{Probe, opt};
use crate::stats::{Latency, LatencySummary, StreamTotals, ms};
use crate::util::{CpuMeter, parse_duration};
use crate::Ctx;

#[derive(Args, Debug)]
pub struct SoakArgs {
    #[arg(long, default_value_t = 5_000)]
    pub connections: usize,
    /// Events per second in total.
    #[arg(long, default_value_t = 10_000.0)]
    pub rate: f64,
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub duration: Duration,
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub replace_every: Duration,
    #[arg(long, default_value_t = 0.10)]
    pub replace_fraction: f64,
    /// When the baseline is taken.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub baseline_after: Duration,
    #[arg(long, default_value_t = 2_000)]
    pub rooms: usize,
    /// Namespace of the rooms: token grants, presence on (the bench config's `group:`).
    #[arg(long, default_value = "group")]
    pub room_namespace: String,
    /// Server readings are taken this often.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub sample_every: Duration,
    #[arg(long, default_value_t = 2)]
    pub lanes: usize,
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub tick: Duration,
    /// Bar: allowed drift, percent.
    #[arg(long, default_value_t = 10.0)]
    pub tolerance_pct: f64,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct Sample {
    at_s: f64,
    rss_kib: Option<u64>,
    tasks: Option<u64>,
    connections: Option<u64>,
    health_us: Option<u64>,
}

struct Slot {
    state: Arc<Mutex<StreamState>>,
    task: tokio::task::JoinHandle<()>,
}

pub async fn run(ctx: &Arc<Ctx>, a: &SoakArgs) -> anyhow::Result<Report> {
    let api_key = ctx.api_key()?;
    if a.baseline_after >= a.duration {
        bail!("--baseline-after must be shorter than --duration");
    }
    let rooms = a.rooms.max(1);
    let lat = Arc::new(Latency::new(16));
    let mut probe = Probe::new(&ctx.target, ctx.server_pid);
    let start = Instant::now();

    // Connect everyone (generation 0).
    let ready = Arc::new(Ready::default());
    let mut retired: Vec<Arc<Mutex<StreamState>>> = Vec::new();
    let mut slots: Vec<Slot> = Vec::with_capacity(a.connections);
    let mut generation = vec![0u64; a.connections];
    for i in 0..a.connections {
        if i >= 100 {
            ready.wait(i - 100 + 1, Duration::from_secs(60)).await;
        }
        slots.push(open_slot(ctx, &a.room_namespace, i, 0, rooms, &lat, &ready)?);
    }
    ready.wait(a.connections, Duration::from_secs(120)).await;
    let connect_s = start.elapsed().as_secs_f64();

    let feeds: Arc<Vec<Feed>> = Arc::new((0..rooms).map(|r| Feed::new(format!("{}:soak-{r}", a.room_namespace), format!("room-{r}"))).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = CpuMeter::start(ctx.server_pid);
    let publisher = {
        let (target, api_key, feeds, stop) = (ctx.target.clone(), api_key.clone(), feeds.clone(), stop.clone());
        let (lanes, rate, tick, duration) = (a.lanes, a.rate, a.tick, a.duration);
        tokio::spawn(async move { run_lanes(std::slice::from_ref(&target), &api_key, &feeds, lanes, rate, tick, Api::Batch { max: 1000 }, EventKind::Agent, duration, &stop).await })
    };

    let run_start = Instant::now();
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_sample = run_start;
    let mut next_replace = run_start + a.replace_every;
    let per_round = ((a.connections as f64 * a.replace_fraction).round() as usize).min(a.connections);
    let mut cursor = 0usize;
    let mut replaced = 0u64;
    let replace_ready = Arc::new(Ready::default());
    while run_start.elapsed() < a.duration {
        let now = Instant::now();
        if now >= next_sample {
            let c = probe.counts().await.ok();
            let health = probe.health_latency_median_us(5).await;
            samples.push(Sample {
                at_s: run_start.elapsed().as_secs_f64(),
                rss_kib: probe.rss_kib().or(c.as_ref().and_then(|c| c.rss_kib)),
                tasks: c.as_ref().and_then(|c| c.tasks),
                connections: c.as_ref().and_then(|c| c.connections),
                health_us: health,
            });
            next_sample += a.sample_every;
        }
        if now >= next_replace {
            // Replace a slice: alternate clean drops of the socket; new users take the places.
            for _ in 0..per_round {
                let i = cursor % a.connections;
                cursor += 1;
                generation[i] += 1;
                let old = std::mem::replace(&mut slots[i], open_slot(ctx, &a.room_namespace, i, generation[i], rooms, &lat, &replace_ready)?);
                old.task.abort();
                retired.push(old.state);
                replaced += 1;
            }
            next_replace += a.replace_every;
        }
        let wake = next_sample.min(next_replace).min(run_start + a.duration);
        tokio::time::sleep_until(wake.into()).await;
    }
    stop.store(true, Ordering::Relaxed);
    let pubs = match publisher.await {
        Ok(s) => s,
        Err(e) => bail!("publisher task failed: {e}"),
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_use = cpu.stop();
    // Final reading while the connections are still up.
    let end_counts = probe.counts().await.ok();
    let end_health = probe.health_latency_median_us(5).await;
    let end_sample = Sample {
        at_s: run_start.elapsed().as_secs_f64(),
        rss_kib: probe.rss_kib().or(end_counts.as_ref().and_then(|c| c.rss_kib)),
        tasks: end_counts.as_ref().and_then(|c| c.tasks),
        connections: end_counts.as_ref().and_then(|c| c.connections),
        health_us: end_health,
    };
    for s in &slots {
        s.task.abort();
    }

    let mut states: Vec<_> = slots.iter().map(|s| s.state.clone()).collect();
    states.extend(retired);
    let mut totals = StreamTotals::default();
    let mut wrong = 0;
    for s in &states {
        let s = s.lock();
        totals.add_offsets(&s.offsets);
        wrong += s.wrong_user;
        totals.received += s.offsets.events;
    }
    let (closes, errors) = close_and_error_counts(&states);
    let l = LatencySummary::of(&lat.merged());
    // The baseline: the sample nearest the mark (median of the three around it).
    let base = baseline(&samples, a.baseline_after.as_secs_f64());

    let mut r = Report::new(
        "soak",
        ctx.row(format!("soak {} s, {} connections, {}% replaced every {} s, {} events/s", a.duration.as_secs(), a.connections, a.replace_fraction * 100.0, a.replace_every.as_secs(), a.rate)),
    );
    r.param("connections", a.connections)
        .param("events_per_s", a.rate)
        .param("duration_s", a.duration.as_secs_f64())
        .param("replace_every_s", a.replace_every.as_secs_f64())
        .param("replace_fraction", a.replace_fraction)
        .param("baseline_after_s", a.baseline_after.as_secs_f64())
        .param("rooms", rooms)
        .param("room_namespace", a.room_namespace.as_str());
    r.metric("connected_initially", ready.ok.load(Ordering::Relaxed))
        .metric("replaced", replaced)
        .metric("replacements_ok", replace_ready.ok.load(Ordering::Relaxed))
        .metric("replacements_failed", replace_ready.failed.load(Ordering::Relaxed))
        .metric("published_ok", pubs.events_ok)
        .metric("published_failed", pubs.events_failed)
        .metric("latency", l)
        .metric("offsets", totals)
        .metric("baseline", base)
        .metric("end", end_sample)
        .metric("samples", &samples)
        .metric("closes", fmt_map(&closes))
        .metric("errors", &errors);
    r.line(format!("connected {}/{} in {connect_s:.1} s", ready.ok.load(Ordering::Relaxed), a.connections));
    r.line(format!(
        "replaced {replaced} connections ({} ok, {} failed)",
        replace_ready.ok.load(Ordering::Relaxed),
        replace_ready.failed.load(Ordering::Relaxed)
    ));
    r.line(pubs.line());
    r.line(format!(
        "room events received {} · offset gaps {} ({} offsets) · repeats {} · events of another room {wrong}",
        totals.received, totals.offset_gaps, totals.offset_missing, totals.offset_repeats
    ));
    r.line(format!("latency: {}", l.line()));
    r.line(cpu_use.line());
    r.cpu(&cpu_use);
    r.line(format!(
        "baseline at {:.0} s: RSS {} KiB · tasks {} · /health {} · connections {}",
        base.at_s,
        opt(base.rss_kib),
        opt(base.tasks),
        base.health_us.map_or("?".into(), ms),
        opt(base.connections)
    ));
    r.line(format!(
        "end at {:.0} s:      RSS {} KiB · tasks {} · /health {} · connections {}",
        end_sample.at_s,
        opt(end_sample.rss_kib),
        opt(end_sample.tasks),
        end_sample.health_us.map_or("?".into(), ms),
        opt(end_sample.connections)
    ));
    if !closes.is_empty() || !errors.is_empty() {
        r.line(format!("closes {closes:?} · errors {errors:?}"));
    }
    let tol = a.tolerance_pct;
    let within = |b: Option<u64>, e: Option<u64>, floor: f64| match (b, e) {
        (Some(b), Some(e)) => {
            // Small absolute values (a few hundred µs of /health) get a floor so
            // scheduler noise is not read as drift.
            let allowed = (b as f64 * tol / 100.0).max(floor);
            ((e as f64 - b as f64).abs() <= allowed, format!("{b} → {e} ({:+.1}%)", (e as f64 - b as f64) / b.max(1) as f64 * 100.0))
        }
        _ => (false, "no reading".to_owned()),
    };
    let (ok, d) = within(base.rss_kib, end_sample.rss_kib, 0.0);
    r.check(format!("RSS within {tol}% of the baseline"), ok, format!("{d} KiB"));
    let (ok, d) = within(base.tasks, end_sample.tasks, 0.0);
    r.check(format!("task count within {tol}% of the baseline"), ok, d);
    let (ok, d) = within(base.health_us, end_sample.health_us, 200.0);
    r.check(format!("/health latency within {tol}% of the baseline (or 0.2 ms)"), ok, format!("{d} µs"));
    r.check("no offset gaps or repeats on any subscription", totals.offset_gaps == 0 && totals.offset_repeats == 0, format!("gaps {} · repeats {}", totals.offset_gaps, totals.offset_repeats));
    r.check("no slow-consumer or other server closes", closes.is_empty(), format!("{closes:?}"));
    r.check("no event of another room", wrong == 0, format!("{wrong}"));
    r.metric("wrong_room", wrong);
    Ok(r)
}

fn open_slot(ctx: &Arc<Ctx>, ns: &str, i: usize, generation: u64, rooms: usize, lat: &Arc<Latency>, ready: &Arc<Ready>) -> anyhow::Result<Slot> {
    let user = format!("soak-{generation}-{i}");
    let room = format!("{ns}:soak-{}", i % rooms);
    let token: Arc<str> = ctx.minter.mint(&user, &[format!("{ns}:soak-*").as_str()])?.into();
    // Room events carry the room's feed label as `u` (see `Feed`): an event
    // with another label arrived on the wrong channel.
    let mut st = StreamState::new(format!("room-{}", i % rooms), room);
    st.extra_channels = vec![format!("user:{user}")];
    let state = Arc::new(Mutex::new(st));
    let task = tokio::spawn(run_ws(ctx.clone(), state.clone(), Plan { token, recover: false }, lat.clone(), i, ready.clone()));
    Ok(Slot { state, task })
}

fn baseline(samples: &[Sample], at: f64) -> Sample {
    let Some(idx) = samples.iter().enumerate().min_by(|a, b| (a.1.at_s - at).abs().total_cmp(&(b.1.at_s - at).abs())).map(|(i, _)| i) else {
        return Sample::default();
    };
    let lo = idx.saturating_sub(1);
    let hi = (idx + 2).min(samples.len());
    let win = &samples[lo..hi];
    let med = |f: fn(&Sample) -> Option<u64>| {
        let mut v: Vec<u64> = win.iter().filter_map(f).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    Sample { at_s: samples[idx].at_s, rss_kib: med(|s| s.rss_kib), tasks: med(|s| s.tasks), connections: med(|s| s.connections), health_us: med(|s| s.health_us) }
}
