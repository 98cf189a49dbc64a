//! Per-user streams: `agent-streams`, `recovery-storm` and `sse`. Every user
//! has one connection subscribed to its own `user:<id>`; publishers send
//! agent-run events for every user through the batch API. One engine runs
//! them all, optionally with a storm: every connection cut at once, then
//! reconnected with `since` (WebSocket) or `Last-Event-ID` (SSE).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Args;
use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::conn::{Ready, StreamState, close_and_error_counts, spawn_receivers};
use crate::publish::{Api, EventKind, Feed, LaneStats, run_lanes};
use crate::report::Report;
use crate::scenario::fmt_map;
use crate::stats::{Latency, LatencySummary, StreamTotals, ms, new_histogram};
use crate::util::{CpuMeter, CpuUse, listen_overflows, parse_duration};
use crate::Ctx;

#[derive(Args, Debug, Clone)]
pub struct PublishOpts {
    /// Publisher connections (each sends one batch at a time; users are split over them).
    #[arg(long, default_value_t = 2)]
    pub lanes: usize,
    /// Interval between batches of one lane.
    #[arg(long, default_value = "2ms", value_parser = parse_duration)]
    pub tick: Duration,
    /// Most events per batch request (the server's default maximum is 1,000).
    #[arg(long, default_value_t = 1_000)]
    pub batch_max: usize,
    /// Connection attempts in flight while connecting.
    #[arg(long, default_value_t = 100)]
    pub connect_window: usize,
    /// Longest wait for the last deliveries after publishing ends.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
}

#[derive(Args, Debug)]
pub struct AgentArgs {
    #[arg(long, default_value_t = 2_000)]
    pub users: usize,
    /// Agent events per second in total.
    #[arg(long, default_value_t = 40_000.0)]
    pub rate: f64,
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bar: p99 delivery latency, ms.
    #[arg(long, default_value_t = 5.0)]
    pub p99_ms: f64,
    #[command(flatten)]
    pub publish: PublishOpts,
}

#[derive(Args, Debug)]
pub struct StormArgs {
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    /// Events per second per user.
    #[arg(long, default_value_t = 10.0)]
    pub rate_per_user: f64,
    /// Live streaming before the cut.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub before: Duration,
    /// Time between the cut and the reconnect.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub outage: Duration,
    /// Publishing goes on this long after the reconnect.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub after: Duration,
    /// Bar: every client live again within this time of reconnecting.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub live_within: Duration,
    #[command(flatten)]
    pub publish: PublishOpts,
}

#[derive(Args, Debug)]
pub struct SseArgs {
    #[arg(long, default_value_t = 1_000)]
    pub users: usize,
    /// Events per second per user.
    #[arg(long, default_value_t = 10.0)]
    pub rate_per_user: f64,
    /// The latency phase.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Bar: p99 delivery latency in the latency phase, ms.
    #[arg(long, default_value_t = 10.0)]
    pub p99_ms: f64,
    /// Skip the storm (cut, reconnect with Last-Event-ID) after the latency phase.
    #[arg(long)]
    pub no_storm: bool,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub outage: Duration,
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub after: Duration,
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub live_within: Duration,
    #[command(flatten)]
    pub publish: PublishOpts,
}

struct Plan {
    prefix: &'static str,
    users: usize,
    rate: f64,
    sse: bool,
    /// Streaming before the cut (or the whole run without a storm).
    first: Duration,
    /// (outage, after) of a storm.
    storm: Option<(Duration, Duration)>,
    publish: PublishOpts,
}

struct Outcome {
    subscribed: usize,
    connect_s: f64,
    pubs: LaneStats,
    totals: StreamTotals,
    wrong_user: u64,
    recovery_failed: u64,
    not_recovered: u64,
    replayed: u64,
    /// Latency of the first phase (before any cut).
    first: LatencySummary,
    /// Latency of live events after the reconnect.
    after: LatencySummary,
    reconnected: usize,
    reconnect_failed: usize,
    reconnect_s: f64,
    /// Per client: reconnect start → first event published after it, µs.
    live_again: Histogram<u64>,
    never_live: usize,
    cpu: CpuUse,
    /// Listen-queue overflows on the machine during the run.
    overflows: Option<u64>,
    closes: BTreeMap<u16, u64>,
    errors: BTreeMap<String, u64>,
    drained_s: f64,
}

async fn run_streams(ctx: &Arc<Ctx>, p: &Plan) -> anyhow::Result<Outcome> {
    let api_key = ctx.api_key()?;
    if p.users == 0 || p.rate <= 0.0 {
        bail!("need users and a positive rate");
    }
    let names: Vec<String> = (0..p.users).map(|i| format!("{}-{i}", p.prefix)).collect();
    let states: Vec<Arc<Mutex<StreamState>>> = names.iter().map(|u| Arc::new(Mutex::new(StreamState::new(u.clone(), format!("user:{u}"))))).collect();
    let feeds: Arc<Vec<Feed>> = Arc::new(names.iter().map(|u| Feed::new(format!("user:{u}"), u.clone())).collect());
    let tokens: Vec<Arc<str>> = names.iter().map(|u| ctx.minter.mint(u, &[]).map(Arc::from)).collect::<anyhow::Result<_>>()?;
    let lat = Arc::new(Latency::new(16));
    let ready = Arc::new(Ready::default());

    let overflows0 = listen_overflows();
    let t0 = Instant::now();
    let mut handles = spawn_receivers(ctx, &states, &tokens, false, p.sse, &lat, &ready, p.publish.connect_window, Duration::ZERO).await;
    ready.wait(p.users, Duration::from_secs(120)).await;
    let connect_s = t0.elapsed().as_secs_f64();
    let subscribed = ready.ok.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(1)).await;
    lat.reset();

    let total = p.first + p.storm.map_or(Duration::ZERO, |(o, a)| o + a);
    let stop = Arc::new(AtomicBool::new(false));
    let cpu = CpuMeter::start(ctx.server_pid);
    let publisher = {
        let (target, api_key, feeds, stop, o) = (ctx.target.clone(), api_key.clone(), feeds.clone(), stop.clone(), p.publish.clone());
        let rate = p.rate;
        tokio::spawn(async move {
            run_lanes(std::slice::from_ref(&target), &api_key, &feeds, o.lanes, rate, o.tick, Api::Batch { max: o.batch_max }, EventKind::Agent, total, &stop).await
        })
    };

    let mut first = LatencySummary::default();
    let (mut reconnected, mut reconnect_failed, mut reconnect_s) = (0, 0, 0.0);
    if let Some((outage, after)) = p.storm {
        tokio::time::sleep(p.first).await;
        first = LatencySummary::of(&lat.merged());
        // The cut: every connection dropped at once (sockets closed under the server).
        for h in handles.drain(..) {
            h.abort();
        }
        lat.reset();
        tokio::time::sleep(outage).await;
        let ready2 = Arc::new(Ready::default());
        let t1 = Instant::now();
        handles = spawn_receivers(ctx, &states, &tokens, true, p.sse, &lat, &ready2, 0, Duration::ZERO).await;
        ready2.wait(p.users, Duration::from_secs(60)).await;
        reconnect_s = t1.elapsed().as_secs_f64();
        reconnected = ready2.ok.load(Ordering::Relaxed);
        reconnect_failed = ready2.failed.load(Ordering::Relaxed);
        let rest = after.saturating_sub(t1.elapsed());
        tokio::time::sleep(rest).await;
    }
    let pubs = match publisher.await {
        Ok(s) => s,
        Err(e) => bail!("publisher task failed: {e}"),
    };
    // Wait for the last deliveries.
    let expected: Vec<u64> = feeds.iter().map(|f| f.sent() - f.failed().len() as u64).collect();
    let t2 = Instant::now();
    loop {
        let done = states.iter().zip(&expected).all(|(s, e)| s.lock().seqs.unique >= *e);
        if done || t2.elapsed() >= p.publish.drain {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let drained_s = t2.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    for h in &handles {
        h.abort();
    }
    let last = LatencySummary::of(&lat.merged());
    if p.storm.is_none() {
        first = last;
    }

    let mut totals = StreamTotals::default();
    let (mut wrong_user, mut recovery_failed, mut not_recovered, mut replayed, mut never_live) = (0, 0, 0, 0, 0);
    let mut live_again = new_histogram();
    for (s, f) in states.iter().zip(feeds.iter()) {
        let s = s.lock();
        totals.add_seqs(&s.seqs, f.sent(), &f.failed());
        totals.add_offsets(&s.offsets);
        wrong_user += s.wrong_user;
        recovery_failed += s.recovery_failed;
        not_recovered += s.not_recovered_replies;
        replayed += s.replayed;
        if p.storm.is_some() {
            match s.live_again_us {
                Some(us) => live_again.saturating_record(us.max(1)),
                None => never_live += 1,
            }
        }
    }
    let (closes, errors) = close_and_error_counts(&states);
    Ok(Outcome {
        subscribed,
        connect_s,
        pubs,
        totals,
        wrong_user,
        recovery_failed,
        not_recovered,
        replayed,
        first,
        after: if p.storm.is_some() { last } else { LatencySummary::default() },
        reconnected,
        reconnect_failed,
        reconnect_s,
        live_again,
        never_live,
        cpu,
        overflows: overflows0.zip(listen_overflows()).map(|(a, b)| b.saturating_sub(a)),
        closes,
        errors,
        drained_s,
    })
}

fn common_lines(r: &mut Report, o: &Outcome, users: usize) {
    r.line(format!("connected and subscribed {}/{users} in {:.1} s", o.subscribed, o.connect_s));
    r.line(o.pubs.line());
    r.line(format!("deliveries: {}", o.totals.line()));
    r.line(format!("{}; drain after publishing {:.2} s", o.cpu.line(), o.drained_s));
    if !o.closes.is_empty() || !o.errors.is_empty() {
        r.line(format!("closes {:?} · errors {:?}", o.closes, o.errors));
    }
    if let Some(n) = o.overflows
        && n > 0
    {
        r.line(format!("listen-queue overflows on the machine during the run: {n} (each costs a client a 1 s SYN retransmission)"));
    }
    r.metric("listen_overflows", o.overflows);
    r.metric("subscribed", o.subscribed)
        .metric("published_ok", o.pubs.events_ok)
        .metric("published_failed", o.pubs.events_failed)
        .metric("publish_requests", o.pubs.requests)
        .metric("totals", o.totals)
        .metric("wrong_user", o.wrong_user)
        .cpu(&o.cpu)
        .metric("closes", fmt_map(&o.closes))
        .metric("errors", &o.errors);
}

fn storm_lines(r: &mut Report, o: &Outcome, users: usize, live_within: Duration) {
    let q = |p: f64| if o.live_again.is_empty() { 0 } else { o.live_again.value_at_quantile(p) };
    r.line(format!(
        "storm: reconnected {}/{users} ({} failed) in {:.2} s; replayed {} events; recovery_failed {} · subscribe replies without recovery {}",
        o.reconnected, o.reconnect_failed, o.reconnect_s, o.replayed, o.recovery_failed, o.not_recovered
    ));
    r.line(format!(
        "live again (reconnect → first event published after it): p50 {} · p99 {} · max {} · never {}",
        ms(q(0.5)),
        ms(q(0.99)),
        ms(o.live_again.max()),
        o.never_live
    ));
    r.line(format!("latency of live events after the reconnect: {}", o.after.line()));
    r.metric("reconnected", o.reconnected)
        .metric("reconnect_failed", o.reconnect_failed)
        .metric("replayed", o.replayed)
        .metric("recovery_failed", o.recovery_failed)
        .metric("not_recovered_replies", o.not_recovered)
        .metric("live_again_p99_us", q(0.99))
        .metric("live_again_max_us", o.live_again.max())
        .metric("never_live", o.never_live)
        .metric("latency_after_reconnect", o.after);
    let exact = o.totals.clean() && o.pubs.events_failed == 0 && o.recovery_failed == 0 && o.not_recovered == 0 && o.reconnected == users;
    r.check(
        "every client recovered exactly the missed events, in order, no duplicates, no recovery_failed",
        exact,
        format!("{} · recovery_failed {} · reconnected {}/{users}", o.totals.line(), o.recovery_failed, o.reconnected),
    );
    let max_live = o.live_again.max();
    r.check(
        format!("live again within {} of reconnecting", ms(u64::try_from(live_within.as_micros()).unwrap_or(u64::MAX))),
        o.never_live == 0 && max_live as u128 <= live_within.as_micros(),
        format!("max {} · never live {}", ms(max_live), o.never_live),
    );
}

pub async fn agent_streams(ctx: &Arc<Ctx>, a: &AgentArgs) -> anyhow::Result<Report> {
    let plan = Plan { prefix: "agent", users: a.users, rate: a.rate, sse: false, first: a.duration, storm: None, publish: a.publish.clone() };
    let o = run_streams(ctx, &plan).await?;
    let mut r = Report::new(
        "agent-streams",
        ctx.row(format!("agent streams, {} users, {} events/s × {} s", a.users, a.rate, a.duration.as_secs_f64())),
    );
    params(&mut r, a.users, a.rate, &a.publish);
    r.param("duration_s", a.duration.as_secs_f64());
    common_lines(&mut r, &o, a.users);
    r.line(format!("latency (publisher send → receipt): {}", o.first.line()));
    r.line(format!("events delivered to the wrong user: {}", o.wrong_user));
    r.metric("latency", o.first);
    let all = o.totals.clean() && o.subscribed == a.users && o.pubs.events_failed == 0 && o.closes.is_empty();
    r.check("all delivered (per user: nothing lost, duplicated or out of order)", all, o.totals.line());
    r.check("zero events delivered to the wrong user", o.wrong_user == 0, o.wrong_user.to_string());
    r.check(format!("p99 ≤ {} ms", a.p99_ms), o.first.count > 0 && o.first.p99_us as f64 <= a.p99_ms * 1000.0, ms(o.first.p99_us));
    Ok(r)
}

pub async fn recovery_storm(ctx: &Arc<Ctx>, a: &StormArgs) -> anyhow::Result<Report> {
    let plan = Plan {
        prefix: "storm",
        users: a.users,
        rate: a.rate_per_user * a.users as f64,
        sse: false,
        first: a.before,
        storm: Some((a.outage, a.after)),
        publish: a.publish.clone(),
    };
    let o = run_streams(ctx, &plan).await?;
    let mut r = Report::new(
        "recovery-storm",
        ctx.row(format!("recovery storm, {} users × {} events/s, cut for {} s", a.users, a.rate_per_user, a.outage.as_secs_f64())),
    );
    params(&mut r, a.users, plan.rate, &a.publish);
    r.param("before_s", a.before.as_secs_f64()).param("outage_s", a.outage.as_secs_f64()).param("after_s", a.after.as_secs_f64());
    common_lines(&mut r, &o, a.users);
    r.line(format!("latency before the cut: {}", o.first.line()));
    r.metric("latency_before_cut", o.first);
    storm_lines(&mut r, &o, a.users, a.live_within);
    r.check("zero events delivered to the wrong user", o.wrong_user == 0, o.wrong_user.to_string());
    Ok(r)
}

pub async fn sse(ctx: &Arc<Ctx>, a: &SseArgs) -> anyhow::Result<Report> {
    let plan = Plan {
        prefix: "sse",
        users: a.users,
        rate: a.rate_per_user * a.users as f64,
        sse: true,
        first: a.duration,
        storm: (!a.no_storm).then_some((a.outage, a.after)),
        publish: a.publish.clone(),
    };
    let o = run_streams(ctx, &plan).await?;
    let mut r = Report::new("sse", ctx.row(format!("SSE, {} clients × {} events/s", a.users, a.rate_per_user)));
    params(&mut r, a.users, plan.rate, &a.publish);
    r.param("duration_s", a.duration.as_secs_f64()).param("storm", !a.no_storm);
    common_lines(&mut r, &o, a.users);
    r.line(format!("latency (publisher send → receipt), first {} s: {}", a.duration.as_secs_f64(), o.first.line()));
    r.metric("latency", o.first);
    r.check(format!("p99 ≤ {} ms", a.p99_ms), o.first.count > 0 && o.first.p99_us as f64 <= a.p99_ms * 1000.0, ms(o.first.p99_us));
    if a.no_storm {
        let all = o.totals.clean() && o.subscribed == a.users && o.pubs.events_failed == 0;
        r.check("all delivered", all, o.totals.line());
    } else {
        storm_lines(&mut r, &o, a.users, a.live_within);
    }
    r.check("zero events delivered to the wrong user", o.wrong_user == 0, o.wrong_user.to_string());
    Ok(r)
}

fn params(r: &mut Report, users: usize, rate: f64, p: &PublishOpts) {
    r.param("users", users)
        .param("events_per_s", rate)
        .param("lanes", p.lanes)
        .param("tick_ms", p.tick.as_secs_f64() * 1000.0)
        .param("batch_max", p.batch_max)
        .param("api", "POST /api/v1/publish/batch");
}
