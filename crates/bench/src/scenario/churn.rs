//! `churn`: many connect → subscribe (own `user:` channel and a room with
//! presence) → disconnect cycles with bounded concurrency; half close
//! cleanly, half drop the socket. Afterwards every server count must be back
//! at its baseline and RSS within 10% of its value after the first cycles.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use parking_lot::Mutex;

use crate::conn::{open_ws, subscribe_and_wait};
use crate::report::Report;
use crate::server::{Counts, Probe, opt};
use crate::util::{CpuMeter, parse_duration};
use crate::Ctx;

#[derive(Args, Debug)]
pub struct ChurnArgs {
    #[arg(long, default_value_t = 100_000)]
    pub cycles: u64,
    /// Cycles in flight at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Distinct users the cycles rotate over (cycle k is user k % users).
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Rooms (with presence) the cycles also subscribe to. Every join and
    /// leave is an event in the room's history (kept up to 1,000 per room), so
    /// few rooms fill their history before the checkpoint and RSS can level off.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Namespace of those rooms: token grants, presence and typing on (the
    /// bench config's `group:`; `room:` itself is decided by store membership).
    #[arg(long, default_value = "group")]
    pub room_namespace: String,
    /// RSS and counts are also taken after this many cycles.
    #[arg(long, default_value_t = 10_000)]
    pub checkpoint: u64,
    /// Longest wait for the server to release everything after a phase.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Bar: after the last disconnect, per-user limiter entries must be back
    /// at the baseline within this long (a bucket that has refilled carries
    /// nothing; the server drops it within a second or so).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub limiter_drop_within: Duration,
    /// Bar: RSS growth allowed after the checkpoint, percent.
    #[arg(long, default_value_t = 10.0)]
    pub rss_tolerance_pct: f64,
    /// Every cycle is a user never seen before, on its own `user:` channel
    /// (nothing is ever published there) instead of rotating over `--users`:
    /// whatever the server keeps per user or per channel after they leave
    /// shows up as growth.
    #[arg(long)]
    pub fresh_users: bool,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
}

async fn run_cycles(ctx: &Arc<Ctx>, a: &ChurnArgs, tokens: &Arc<Vec<Arc<str>>>, range: std::ops::Range<u64>, tally: &Arc<Tally>) {
    let next = Arc::new(AtomicU64::new(range.start));
    let end = range.end;
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency.max(1) {
        let (ctx, tokens, next, tally) = (ctx.clone(), tokens.clone(), next.clone(), tally.clone());
        let (users, rooms, fresh) = (a.users.max(1), a.rooms.max(1), a.fresh_users);
        let ns = a.room_namespace.clone();
        let grant = format!("{ns}:churn-*");
        tasks.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= end {
                    return;
                }
                let u = (k % users as u64) as usize;
                let result = async {
                    let (user, token) = if fresh {
                        let user = format!("fresh-{k}");
                        let token: Arc<str> = ctx.minter.mint(&user, &[grant.as_str()]).map_err(|_| "mint".to_owned())?.into();
                        (user, token)
                    } else {
                        (format!("churn-{u}"), tokens[u].clone())
                    };
                    let mut ws = open_ws(&ctx, &token).await.map_err(|e| format!("connect:{}", e.label()))?;
                    subscribe_and_wait(&mut ws, 1, &format!("user:{user}")).await?;
                    subscribe_and_wait(&mut ws, 2, &format!("{ns}:churn-{}", k as usize % rooms)).await?;
                    if k % 2 == 0 {
                        ws.close(1000, Duration::from_secs(2)).await.map_err(|e| format!("close:{:?}", e.kind()))?;
                    }
                    // Odd cycles just drop the socket (no close frame).
                    Ok::<(), String>(())
                }
                .await;
                match result {
                    Ok(()) => {
                        tally.ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tally.failed.fetch_add(1, Ordering::Relaxed);
                        *tally.errors.lock().entry(e).or_default() += 1;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Runs `cycles` while sampling the server's limiter entries every 500 ms;
/// returns the most seen.
async fn run_sampled(probe: &mut Probe, cycles: impl std::future::Future<Output = ()>) -> Option<u64> {
    let mut most: Option<u64> = None;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tokio::pin!(cycles);
    loop {
        tokio::select! {
            () = &mut cycles => return most,
            _ = tick.tick() => {
                if let Ok(c) = probe.counts().await {
                    most = most.max(c.limiter_entries);
                }
            }
        }
    }
}

/// What a settle wait saw.
struct Settled {
    counts: Counts,
    /// Seconds until everything was back (or the limit).
    secs: f64,
    /// Seconds until the limiter entries were back at the baseline, if they were.
    limiter_secs: Option<f64>,
}

/// Waits until the hub is back to `base` connections and its other counts
/// follow (some are released by a background pass every 30 s), limiter
/// entries included (dropped about a second after they refill).
async fn settle(probe: &mut Probe, base: &Counts, limit: Duration) -> anyhow::Result<Settled> {
    let t = Instant::now();
    let target = base.connections.unwrap_or(0);
    probe.wait_connections_at_most(target, limit).await?;
    // Releases finish asynchronously after the connection count drops.
    let deadline = Instant::now() + limit.saturating_sub(t.elapsed());
    let mut limiter_secs = None;
    loop {
        let c = probe.counts().await?;
        let le = |a: Option<u64>, b: Option<u64>| a.unwrap_or(u64::MAX) <= b.unwrap_or(0);
        if limiter_secs.is_none() && le(c.limiter_entries, base.limiter_entries) {
            limiter_secs = Some(t.elapsed().as_secs_f64());
        }
        let back = le(c.subscriptions, base.subscriptions) && le(c.channels, base.channels) && le(c.tasks, base.tasks) && le(c.presence_channels, base.presence_channels) && le(c.registered_users, base.registered_users) && limiter_secs.is_some();
        if back || Instant::now() >= deadline {
            return Ok(Settled { counts: c, secs: t.elapsed().as_secs_f64(), limiter_secs });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn counts_line(c: &Counts) -> String {
    format!(
        "connections {} · subscriptions {} · channels {} · typing {} · limiter entries {} · queued {} · tasks {} · presence channels {} · registered users {} · broker streams {} · RSS {} KiB",
        opt(c.connections),
        opt(c.subscriptions),
        opt(c.channels),
        opt(c.typing),
        opt(c.limiter_entries),
        opt(c.outbound_queued),
        opt(c.tasks),
        opt(c.presence_channels),
        opt(c.registered_users),
        opt(c.broker_streams),
        opt(c.rss_kib)
    )
}

pub async fn run(ctx: &Arc<Ctx>, a: &ChurnArgs) -> anyhow::Result<Report> {
    if a.checkpoint == 0 || a.checkpoint >= a.cycles {
        bail!("--checkpoint must be between 1 and --cycles");
    }
    let mut probe = Probe::new(&ctx.target, ctx.server_pid);
    let grant = format!("{}:churn-*", a.room_namespace);
    let tokens: Arc<Vec<Arc<str>>> = Arc::new(
        (0..a.users.max(1)).map(|u| ctx.minter.mint(&format!("churn-{u}"), &[grant.as_str()]).map(Arc::from)).collect::<anyhow::Result<_>>()?,
    );
    let base = probe.counts().await.context("reading /health/detailed")?;
    let tally = Arc::new(Tally::default());
    let cpu = CpuMeter::start(ctx.server_pid);
    let t0 = Instant::now();
    let mid_most = run_sampled(&mut probe, run_cycles(ctx, a, &tokens, 0..a.checkpoint, &tally)).await;
    let first_s = t0.elapsed().as_secs_f64();
    let mid_settled = settle(&mut probe, &base, a.settle).await?;
    let t1 = Instant::now();
    let end_most = run_sampled(&mut probe, run_cycles(ctx, a, &tokens, a.checkpoint..a.cycles, &tally)).await;
    let rest_s = t1.elapsed().as_secs_f64();
    let cpu_use = cpu.stop();
    let end_settled = settle(&mut probe, &base, a.settle).await?;
    let (mid, mid_settle, end, end_settle) = (mid_settled.counts.clone(), mid_settled.secs, end_settled.counts.clone(), end_settled.secs);

    let ok = tally.ok.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let errors = tally.errors.lock().clone();
    let rate = a.cycles as f64 / (first_s + rest_s);
    let label = if a.fresh_users { "churn (a new user and channel per cycle)" } else { "churn" };
    let mut r = Report::new("churn", ctx.row(format!("{label}, {} cycles", a.cycles)));
    r.param("cycles", a.cycles).param("concurrency", a.concurrency).param("users", if a.fresh_users { a.cycles } else { a.users as u64 }).param("fresh_users", a.fresh_users).param("rooms", a.rooms).param("room_namespace", a.room_namespace.as_str()).param("checkpoint", a.checkpoint);
    r.metric("ok", ok).metric("failed", failed).metric("errors", &errors).metric("cycles_per_s", rate.round());
    r.metric("baseline", &base).metric("checkpoint", &mid).metric("end", &end);
    r.metric("limiter_entries_most_before_checkpoint", mid_most).metric("limiter_entries_most_after_checkpoint", end_most);
    r.metric("limiter_back_s_checkpoint", mid_settled.limiter_secs).metric("limiter_back_s_end", end_settled.limiter_secs);
    r.line(format!("{ok} cycles ok, {failed} failed{} — {rate:.0} cycles/s", if errors.is_empty() { String::new() } else { format!(" {errors:?}") }));
    r.line(cpu_use.line());
    r.cpu(&cpu_use);
    r.line(format!("baseline:   {}", counts_line(&base)));
    r.line(format!("checkpoint: {} (after {} cycles, settled in {mid_settle:.1} s)", counts_line(&mid), a.checkpoint));
    r.line(format!("end:        {} (settled in {end_settle:.1} s)", counts_line(&end)));
    let secs = |s: Option<f64>| s.map_or_else(|| "not within the settle limit".to_owned(), |s| format!("{s:.1} s"));
    r.line(format!(
        "limiter entries during the cycles: at most {} before the checkpoint, {} after; back to baseline {} after the checkpoint's last disconnect, {} after the end's",
        opt(mid_most),
        opt(end_most),
        secs(mid_settled.limiter_secs),
        secs(end_settled.limiter_secs)
    ));

    let same = |name: &str, b: Option<u64>, e: Option<u64>, r: &mut Report| {
        r.check(format!("{name} back to baseline"), matches!((b, e), (Some(b), Some(e)) if e <= b), format!("baseline {} → end {}", opt(b), opt(e)));
    };
    same("connections", base.connections, end.connections, &mut r);
    same("subscriptions", base.subscriptions, end.subscriptions, &mut r);
    same("hub channels", base.channels, end.channels, &mut r);
    same("presence channels", base.presence_channels, end.presence_channels, &mut r);
    same("registered users", base.registered_users, end.registered_users, &mut r);
    same("outbound queued", base.outbound_queued, end.outbound_queued, &mut r);
    same("tasks", base.tasks, end.tasks, &mut r);
    // Limiter entries that have refilled carry nothing and are dropped
    // about a second later: whether users repeat or are new, they go soon
    // after the cycles stop, not with a periodic pass.
    let within = a.limiter_drop_within.as_secs_f64();
    r.check(
        format!("limiter entries back to baseline within {within:.0} s"),
        [mid_settled.limiter_secs, end_settled.limiter_secs].iter().all(|s| s.is_some_and(|s| s <= within)),
        format!(
            "baseline {} → checkpoint {} ({}) → end {} ({})",
            opt(base.limiter_entries),
            opt(mid.limiter_entries),
            secs(mid_settled.limiter_secs),
            opt(end.limiter_entries),
            secs(end_settled.limiter_secs)
        ),
    );
    // Streams of channels nothing was ever published on are dropped once
    // nobody listens; those with history stay for their TTL.
    r.check(
        "broker streams bounded (not above the checkpoint)",
        matches!((mid.broker_streams, end.broker_streams), (Some(m), Some(e)) if e <= m),
        format!("baseline {} → checkpoint {} → end {}", opt(base.broker_streams), opt(mid.broker_streams), opt(end.broker_streams)),
    );
    match (mid.rss_kib, end.rss_kib) {
        (Some(m), Some(e)) => {
            let growth = (e as f64 - m as f64) / m as f64 * 100.0;
            r.check(format!("RSS within {}% of the checkpoint", a.rss_tolerance_pct), growth.abs() <= a.rss_tolerance_pct, format!("{m} KiB → {e} KiB ({growth:+.1}%)"));
        }
        _ => {
            r.check("RSS within 10% of the checkpoint", false, "no RSS reading (pass --server-pid)");
        }
    }
    r.check("every cycle succeeded", failed == 0, format!("{failed} failed"));
    Ok(r)
}
