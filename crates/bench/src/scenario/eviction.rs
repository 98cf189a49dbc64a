//! `eviction`: the per-user connection limit across nodes. Each of N users
//! holds `limit` connections on nodes 1..n-1 (opened one after another, so
//! the first is the oldest), then opens one more on the last node. Measured:
//! the time from that connection's `connected` to the close frame of the
//! user's oldest connection, which may sit on another node; afterwards
//! exactly `limit` connections per user must remain. The server may close
//! the oldest before the new connection's `connected` is read (it evicts
//! when it registers the connection): those count as 0 and are reported,
//! with the time from the new connection's first byte as an upper bound.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use parking_lot::Mutex;

use crate::Ctx;
use crate::conn::open_ws_at;
use crate::report::Report;
use crate::scenario::fmt_map;
use crate::stats::{LatencySummary, new_histogram};
use crate::util::{now_us, parse_duration};
use crate::ws::{Msg, WsClient};

#[derive(Args, Debug)]
pub struct EvictionArgs {
    #[arg(long, default_value_t = 200)]
    pub users: usize,
    /// The server's per-user connection limit (`limits.connections_per_user`).
    #[arg(long, default_value_t = 3)]
    pub limit: usize,
    /// Users opening their extra connection at the same time.
    #[arg(long, default_value_t = 50)]
    pub concurrency: usize,
    /// Longest wait for the evictions after the last extra connection.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub drain: Duration,
    /// How long the survivors are watched after the evictions (a second
    /// close would show here).
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub hold: Duration,
    /// Bar: p99 from the extra connection's `connected` to the oldest's close, ms.
    #[arg(long)]
    pub p99_ms: Option<f64>,
}

/// What happened to one held connection.
#[derive(Debug, Default, Clone)]
struct Held {
    /// When its close frame arrived (µs) and the code.
    closed: Option<(u64, u16)>,
    error: Option<String>,
}

/// Reads until the server closes (or the task is aborted).
fn watch(mut ws: WsClient, held: Arc<Mutex<Held>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match ws.next().await {
                Ok(Msg::Close(code)) => {
                    held.lock().closed = Some((now_us(), code));
                    return;
                }
                Ok(_) => {}
                Err(e) => {
                    held.lock().error = Some(format!("read:{:?}", e.kind()));
                    return;
                }
            }
        }
    })
}

/// One user's connections, oldest first, and when the extra one got `connected`.
struct User {
    conns: Vec<Arc<Mutex<Held>>>,
    /// When the extra connection's TCP connect started (µs).
    extra_started_us: u64,
    extra_connected_us: Option<u64>,
}

pub async fn run(ctx: &Arc<Ctx>, a: &EvictionArgs) -> anyhow::Result<Report> {
    let nodes = ctx.nodes.len();
    if nodes < 2 || a.users == 0 || a.limit == 0 {
        bail!("eviction needs at least two nodes (--url per node), one user and a positive limit");
    }
    let users: Vec<(String, Arc<str>)> =
        (0..a.users).map(|u| ctx.minter.mint(&format!("evict-{u}"), &[]).map(|t| (format!("evict-{u}"), Arc::from(t)))).collect::<anyhow::Result<_>>()?;
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let mut tasks = Vec::new();

    // The held connections: user u's k-th on node (u + k) mod (n - 1), so
    // the oldest lands on every node but the last, in turn.
    let t_hold = std::time::Instant::now();
    let mut opened: Vec<Vec<Arc<Mutex<Held>>>> = Vec::with_capacity(a.users);
    for chunk in users.chunks(a.concurrency.max(1)).enumerate().map(|(c, ch)| (c * a.concurrency.max(1), ch)) {
        let (base, chunk) = chunk;
        let mut openers = Vec::new();
        for (j, (_, token)) in chunk.iter().enumerate() {
            let (ctx, token, u, limit) = (ctx.clone(), token.clone(), base + j, a.limit);
            openers.push(tokio::spawn(async move {
                let mut out = Vec::new();
                // One after another: registration order is opening order.
                for k in 0..limit {
                    let held = Arc::new(Mutex::new(Held::default()));
                    match open_ws_at(&ctx, ctx.node((u + k) % (ctx.nodes.len() - 1)), &token).await {
                        Ok(ws) => out.push((held.clone(), Some(watch(ws, held)))),
                        Err(e) => {
                            held.lock().error = Some(format!("connect:{}", e.label()));
                            out.push((held, None));
                        }
                    }
                }
                out
            }));
        }
        for o in openers {
            let mut conns = Vec::new();
            for (held, task) in o.await? {
                tasks.extend(task);
                conns.push(held);
            }
            opened.push(conns);
        }
    }
    let hold_s = t_hold.elapsed().as_secs_f64();
    let held_ok = opened.iter().flatten().filter(|h| h.lock().error.is_none()).count();

    // The extra connection of every user on the last node, `concurrency` at a time.
    let cpu = ctx.cpu_meter();
    let last = nodes - 1;
    let mut all: Vec<User> = Vec::with_capacity(a.users);
    for (chunk_users, chunk_conns) in users.chunks(a.concurrency.max(1)).zip(opened.chunks(a.concurrency.max(1))) {
        let mut openers = Vec::new();
        for (_, token) in chunk_users {
            let (ctx, token) = (ctx.clone(), token.clone());
            openers.push(tokio::spawn(async move {
                let held = Arc::new(Mutex::new(Held::default()));
                let started = now_us();
                match open_ws_at(&ctx, &ctx.nodes[last], &token).await {
                    Ok(ws) => {
                        let at = now_us();
                        (held.clone(), started, Some(at), Some(watch(ws, held)))
                    }
                    Err(e) => {
                        held.lock().error = Some(format!("connect:{}", e.label()));
                        (held, started, None, None)
                    }
                }
            }));
        }
        for (o, conns) in openers.into_iter().zip(chunk_conns) {
            let (held, started, at, task) = o.await?;
            tasks.extend(task);
            let mut conns = conns.clone();
            conns.push(held);
            all.push(User { conns, extra_started_us: started, extra_connected_us: at });
        }
    }
    // Wait for every oldest to be closed, bounded; then watch the survivors.
    let deadline = tokio::time::Instant::now() + a.drain;
    while tokio::time::Instant::now() < deadline && !all.iter().all(|u| u.conns[0].lock().closed.is_some()) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(a.hold).await;
    let cpu_use = cpu.stop();

    let mut lat = new_histogram();
    let mut from_start = new_histogram();
    let (mut before_connected, mut oldest_not_closed, mut wrong_closed, mut exact) = (0u64, 0u64, 0u64, 0u64);
    let mut oldest_codes = BTreeMap::<u16, u64>::new();
    let mut other_codes = BTreeMap::<u16, u64>::new();
    for u in &all {
        let states: Vec<Held> = u.conns.iter().map(|h| h.lock().clone()).collect();
        for e in states.iter().filter_map(|h| h.error.as_ref()) {
            *errors.lock().entry(e.clone()).or_default() += 1;
        }
        if let Some((at, _)) = states[0].closed {
            from_start.saturating_record(at.saturating_sub(u.extra_started_us).max(1));
        }
        match (states[0].closed, u.extra_connected_us) {
            (Some((at, code)), Some(c)) => {
                *oldest_codes.entry(code).or_default() += 1;
                if at < c {
                    before_connected += 1;
                }
                lat.saturating_record(at.saturating_sub(c).max(1));
            }
            (Some((_, code)), None) => *oldest_codes.entry(code).or_default() += 1,
            (None, _) => oldest_not_closed += 1,
        }
        for h in &states[1..] {
            if let Some((_, code)) = h.closed {
                wrong_closed += 1;
                *other_codes.entry(code).or_default() += 1;
            }
        }
        let open = states.iter().filter(|h| h.closed.is_none() && h.error.is_none()).count();
        if open == a.limit && states[0].closed.is_some() {
            exact += 1;
        }
    }
    for t in &tasks {
        t.abort();
    }
    let errors = errors.lock().clone();
    let l = LatencySummary::of(&lat);
    let ls = LatencySummary::of(&from_start);

    let mut r = Report::new(
        "eviction",
        ctx.row(format!("per-user limit across {nodes} nodes: {} users × {} held + 1 on node {nodes}", a.users, a.limit)),
    );
    r.param("users", a.users).param("limit", a.limit).param("nodes", nodes).param("concurrency", a.concurrency);
    r.metric("held_ok", held_ok)
        .metric("latency", l)
        .metric("latency_from_connect_start", ls)
        .metric("closed_before_connected", before_connected)
        .metric("oldest_not_closed", oldest_not_closed)
        .metric("others_closed", wrong_closed)
        .metric("users_with_exactly_limit", exact)
        .metric("oldest_close_codes", fmt_map(&oldest_codes))
        .metric("other_close_codes", fmt_map(&other_codes))
        .metric("errors", &errors)
        .cpu(&cpu_use);
    r.line(format!("held {held_ok}/{} connections on nodes 1..{} in {hold_s:.1} s", a.users * a.limit, nodes - 1));
    r.line(format!("eviction latency (extra connection's `connected` → oldest's close frame, 0 when the close came first): {}", l.line()));
    r.line(format!("upper bound (extra connection's TCP connect start → oldest's close frame): {}", ls.line()));
    r.line(format!(
        "oldest closed with {oldest_codes:?} ({before_connected} before the extra's `connected`); not closed {oldest_not_closed}; other connections closed {wrong_closed} {other_codes:?}"
    ));
    r.line(format!("users left with exactly {} open connections: {exact}/{}", a.limit, a.users));
    r.line(cpu_use.line());
    if !errors.is_empty() {
        r.line(format!("errors {errors:?}"));
    }
    let evicted_right = oldest_not_closed == 0 && oldest_codes.keys().all(|c| *c == 4004) && wrong_closed == 0 && errors.is_empty();
    r.check("the oldest closed with 4004, nothing else", evicted_right, format!("{oldest_codes:?}, others closed {wrong_closed}, errors {}", errors.len()));
    r.check(format!("exactly {} remain per user", a.limit), exact == a.users as u64, format!("{exact}/{}", a.users));
    if let Some(p99) = a.p99_ms {
        r.check(format!("p99 ≤ {p99} ms"), l.count > 0 && (l.p99_us as f64) <= p99 * 1000.0, crate::stats::ms(l.p99_us));
    }
    Ok(r)
}
