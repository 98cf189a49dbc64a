//! `idle` (server RSS per idle authenticated connection) and `connect-rate`
//! (connections per second with JWT verified at upgrade). Both run the
//! connections in worker processes (`ws-hold`) so no process passes the
//! descriptor limit, and measure from this coordinating process.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::hold::{Closed, Opened};
use crate::report::Report;
use crate::server::{Probe, opt};
use crate::util::{CpuMeter, listen_overflows, parse_duration, ticks_per_second};
use crate::Ctx;

#[derive(Args, Debug)]
pub struct IdleArgs {
    #[arg(long, default_value_t = 5_000)]
    pub connections: usize,
    /// Worker processes (default: one per 10,000 connections).
    #[arg(long)]
    pub procs: Option<usize>,
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Wait after the last connection before reading RSS.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub settle: Duration,
    /// The bar, KiB per connection.
    #[arg(long, default_value_t = 8.0)]
    pub max_kib: f64,
    /// Only authenticate (no subscription): separates the connection's own
    /// cost from its subscription's.
    #[arg(long)]
    pub no_subscribe: bool,
}

#[derive(Args, Debug)]
pub struct ConnectRateArgs {
    #[arg(long, default_value_t = 15_000)]
    pub connections: usize,
    #[arg(long, default_value_t = 2)]
    pub procs: usize,
    /// Attempts in flight per worker process.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Runtime threads per worker process.
    #[arg(long, default_value_t = 1)]
    pub worker_threads: usize,
    /// Drop each connection once counted (sustained rate) instead of holding it.
    #[arg(long)]
    pub drop: bool,
    /// The bar, connections per second.
    #[arg(long, default_value_t = 10_000.0)]
    pub min_rate: f64,
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Worker {
    /// Waits for a line `TAG {json}`.
    async fn expect<T: serde::de::DeserializeOwned>(&mut self, tag: &str, limit: Duration) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let line = tokio::time::timeout_at(deadline, self.lines.next_line())
                .await
                .with_context(|| format!("worker did not say {tag} within {limit:?}"))??
                .with_context(|| format!("worker ended before {tag}"))?;
            if let Some(rest) = line.strip_prefix(tag) {
                return serde_json::from_str(rest.trim()).with_context(|| format!("worker {tag} line"));
            }
        }
    }

    async fn say(&mut self, word: &str) -> anyhow::Result<()> {
        self.stdin.write_all(format!("{word}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        Ok(())
    }
}

async fn spawn_workers(ctx: &Ctx, procs: usize, threads: usize, extra: impl Fn(usize) -> Vec<String>) -> anyhow::Result<Vec<Worker>> {
    let exe = std::env::current_exe().context("finding this executable")?;
    let c = &ctx.common;
    let mut workers = Vec::new();
    for i in 0..procs {
        let mut cmd = Command::new(&exe);
        cmd.arg("ws-hold")
            .args(["--url", &c.url.join(",")])
            .args(["--src-addrs", &c.src_addrs.to_string()])
            .args(["--src-offset", &(c.src_offset as usize + i * c.src_addrs as usize).min(240).to_string()])
            .args(["--threads", &threads.to_string()])
            .args(["--connect-timeout", &format!("{}ms", c.connect_timeout.as_millis())]);
        if let Some(s) = &c.secret {
            // Through the environment, never the command line.
            cmd.env("CHORUS_BENCH_SECRET", s);
        }
        if let Some(f) = &c.secret_file {
            cmd.arg("--secret-file").arg(f);
        }
        if let Some(d) = &c.data_dir {
            cmd.arg("--data-dir").arg(d);
        }
        cmd.args(extra(i)).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        let mut child = cmd.spawn().context("starting a worker process")?;
        let stdin = child.stdin.take().context("worker stdin")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        workers.push(Worker { child, stdin, lines: BufReader::new(stdout).lines() });
    }
    for w in &mut workers {
        let _: serde_json::Value = w.expect("READY", Duration::from_secs(60)).await?;
    }
    Ok(workers)
}

async fn stop_workers(workers: &mut [Worker]) -> Vec<Closed> {
    let mut out = Vec::new();
    for w in workers.iter_mut() {
        let _ = w.say("STOP").await;
    }
    for w in workers.iter_mut() {
        match w.expect::<Closed>("CLOSED", Duration::from_secs(30)).await {
            Ok(c) => out.push(c),
            Err(e) => eprintln!("chorus-bench: {e:#}"),
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), w.child.wait()).await;
        // Ours, by its handle: only if it did not exit by itself.
        let _ = w.child.start_kill();
    }
    out
}

fn merge_opened(all: &[Opened]) -> Opened {
    let mut m = Opened { first_attempt_us: u64::MAX, ..Opened::default() };
    for o in all {
        m.ok += o.ok;
        m.failed += o.failed;
        for (k, v) in &o.errors {
            *m.errors.entry(k.clone()).or_default() += v;
        }
        m.first_attempt_us = m.first_attempt_us.min(o.first_attempt_us);
        m.last_ok_us = m.last_ok_us.max(o.last_ok_us);
        m.cpu_ticks += o.cpu_ticks;
        m.connect_p50_us = m.connect_p50_us.max(o.connect_p50_us);
        m.connect_p99_us = m.connect_p99_us.max(o.connect_p99_us);
        m.connect_max_us = m.connect_max_us.max(o.connect_max_us);
    }
    m
}

pub async fn idle(ctx: &Ctx, a: &IdleArgs) -> anyhow::Result<Report> {
    let Some(pid) = ctx.server_pid else { bail!("idle needs --server-pid to read the server's RSS") };
    let mut probe = Probe::new(&ctx.target, Some(pid));
    let procs = a.procs.unwrap_or_else(|| a.connections.div_ceil(10_000)).max(1);
    let base_counts = probe.counts().await.context("reading /health/detailed")?;
    let count = a.connections.to_string();
    let conc = a.concurrency.to_string();
    let mut workers = spawn_workers(ctx, procs, 1, |i| {
        let mut v = vec![
            "--prefix".into(),
            "idle".into(),
            "--count".into(),
            count.clone(),
            "--shard".into(),
            format!("{i}/{procs}"),
            "--concurrency".into(),
            conc.clone(),
        ];
        if !a.no_subscribe {
            v.push("--subscribe".into());
        }
        v
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = probe.rss_kib().context("reading the server's VmRSS")?;
    for w in &mut workers {
        w.say("GO").await?;
    }
    let mut opened = Vec::new();
    for w in &mut workers {
        opened.push(w.expect::<Opened>("OPENED", Duration::from_secs(600)).await?);
    }
    let o = merge_opened(&opened);
    tokio::time::sleep(a.settle).await;
    let rss_after = probe.rss_kib().context("reading the server's VmRSS")?;
    let counts = probe.counts().await.context("reading /health/detailed")?;
    let closed = stop_workers(&mut workers).await;
    let lost: u64 = closed.iter().flat_map(|c| c.lost_while_held.values()).sum();

    let held = o.ok.saturating_sub(lost);
    let per_conn = if o.ok > 0 { (rss_after.saturating_sub(rss_before)) as f64 / o.ok as f64 } else { f64::INFINITY };
    let mut r = Report::new("idle", ctx.row(format!("idle {} connections", a.connections)));
    r.param("connections", a.connections).param("subscribed", !a.no_subscribe).param("worker_procs", procs).param("concurrency_per_proc", a.concurrency).param("settle_s", a.settle.as_secs_f64());
    r.metric("opened", o.ok)
        .metric("failed", o.failed)
        .metric("errors", &o.errors)
        .metric("lost_while_held", lost)
        .metric("rss_before_kib", rss_before)
        .metric("rss_after_kib", rss_after)
        .metric("kib_per_connection", (per_conn * 100.0).round() / 100.0)
        .metric("server_connections", counts.connections)
        .metric("server_subscriptions", counts.subscriptions)
        .metric("server_tasks", counts.tasks);
    r.line(format!("opened {} of {} (failed {}{}), lost while held {lost}", o.ok, a.connections, o.failed, if o.errors.is_empty() { String::new() } else { format!(" {:?}", o.errors) }));
    r.line(format!(
        "server RSS {rss_before} KiB → {rss_after} KiB (+{} KiB) = {per_conn:.2} KiB per connection",
        rss_after.saturating_sub(rss_before)
    ));
    r.line(format!(
        "server reports {} connections, {} subscriptions, {} tasks (baseline {} / {} / {})",
        opt(counts.connections),
        opt(counts.subscriptions),
        opt(counts.tasks),
        opt(base_counts.connections),
        opt(base_counts.subscriptions),
        opt(base_counts.tasks)
    ));
    r.line(format!("connect+subscribe time per connection: p50 {} p99 {} max {}", crate::stats::ms(o.connect_p50_us), crate::stats::ms(o.connect_p99_us), crate::stats::ms(o.connect_max_us)));
    r.check(format!("≤ {} KiB per idle connection", a.max_kib), per_conn <= a.max_kib, format!("{per_conn:.2} KiB"));
    r.check(
        format!("{} held", a.connections),
        held as usize >= a.connections && counts.connections.is_some_and(|c| c >= a.connections as u64),
        format!("{held} held, server counts {}", opt(counts.connections)),
    );
    Ok(r)
}

pub async fn connect_rate(ctx: &Ctx, a: &ConnectRateArgs) -> anyhow::Result<Report> {
    let procs = a.procs.max(1);
    let count = a.connections.to_string();
    let conc = a.concurrency.to_string();
    let mut workers = spawn_workers(ctx, procs, a.worker_threads, |i| {
        let mut v = vec![
            "--prefix".into(),
            "rate".into(),
            "--count".into(),
            count.clone(),
            "--shard".into(),
            format!("{i}/{procs}"),
            "--concurrency".into(),
            conc.clone(),
        ];
        if a.drop {
            v.push("--drop".into());
        }
        v
    })
    .await?;
    let mut probe = Probe::new(&ctx.target, ctx.server_pid);
    let overflows0 = listen_overflows();
    let cpu = CpuMeter::start(ctx.server_pid);
    for w in &mut workers {
        w.say("GO").await?;
    }
    let mut opened = Vec::new();
    for w in &mut workers {
        opened.push(w.expect::<Opened>("OPENED", Duration::from_secs(600)).await?);
    }
    let o = merge_opened(&opened);
    // This process only waited; the workers report their own CPU.
    let cpu_use = cpu.stop_with_extra_client_ticks(o.cpu_ticks);
    let overflows = overflows0.zip(listen_overflows()).map(|(a, b)| b.saturating_sub(a));
    let counts = probe.counts().await.ok();
    let _ = stop_workers(&mut workers).await;

    let window_s = (o.last_ok_us.saturating_sub(o.first_attempt_us)) as f64 / 1e6;
    let rate = if window_s > 0.0 { o.ok as f64 / window_s } else { 0.0 };
    let client_pct = cpu_use.client_pct.unwrap_or(0.0);
    let server_pct = cpu_use.server_pct;
    let mut r = Report::new("connect-rate", ctx.row(format!("connect rate, {} connections{}", a.connections, if a.drop { ", dropped" } else { ", held" })));
    r.param("connections", a.connections)
        .param("worker_procs", procs)
        .param("concurrency_per_proc", a.concurrency)
        .param("worker_threads", a.worker_threads)
        .param("mode", if a.drop { "drop after connected" } else { "hold" });
    r.metric("connected", o.ok)
        .metric("failed", o.failed)
        .metric("errors", &o.errors)
        .metric("window_s", window_s)
        .metric("rate_per_s", rate.round())
        .metric("client_cpu_pct", client_pct.round())
        .metric("server_cpu_pct", server_pct.map(f64::round))
        .metric("other_cpu_pct", cpu_use.other_pct().map(f64::round))
        .metric("connect_p99_us", o.connect_p99_us)
        .metric("listen_overflows", overflows);
    r.line(format!(
        "{} connected ({} failed{}) in {window_s:.3} s = {rate:.0} connections/s (token verified at upgrade, counted at `connected`)",
        o.ok,
        o.failed,
        if o.errors.is_empty() { String::new() } else { format!(" {:?}", o.errors) }
    ));
    r.line(format!("{} (worker processes report their own CPU; {} ticks/s)", cpu_use.line(), ticks_per_second()));
    r.line(format!("upgrade→connected per connection: p50 {} p99 {} max {}", crate::stats::ms(o.connect_p50_us), crate::stats::ms(o.connect_p99_us), crate::stats::ms(o.connect_max_us)));
    if let Some(c) = counts {
        r.line(format!("server reports {} connections after the run", opt(c.connections)));
    }
    if let Some(n) = overflows {
        r.line(format!("listen-queue overflows on the machine during the run: {n}"));
    }
    r.check(format!("≥ {:.0} connections/s with JWT", a.min_rate), rate >= a.min_rate && o.failed == 0, format!("{rate:.0}/s, {} failed", o.failed));
    if let Some(s) = server_pct
        && rate < a.min_rate
        && client_pct + s > 170.0
    {
        r.note(format!("the machine is saturated: client {client_pct:.0}% + server {s:.0}% of 200% available"));
    }
    Ok(r)
}
