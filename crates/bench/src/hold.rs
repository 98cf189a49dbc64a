//! Worker process for `idle` and `connect-rate`: opens its shard of the
//! connections on `GO`, reports, holds them (answering pings) until `STOP`
//! or end of input, then drops them. Several workers keep each process under
//! the per-process descriptor limit (20,000 here).
//!
//! Protocol on stdout, one line each: `READY {json}`, `OPENED {json}`, `CLOSED {json}`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::Context;
use clap::Args;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::conn::open_ws;
use crate::util::{cpu_ticks, now_us, parse_shard};
use crate::ws::Msg;
use crate::{Common, Ctx};

#[derive(Args, Debug, Clone)]
pub struct HoldArgs {
    /// Users are `<prefix>-<index>` for index in 0..count.
    #[arg(long, default_value = "idle")]
    pub prefix: String,
    #[arg(long)]
    pub count: usize,
    /// This worker opens the indexes with `index % n == i`.
    #[arg(long, value_parser = parse_shard, default_value = "0/1")]
    pub shard: (u32, u32),
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Subscribe each connection to its own `user:<id>` after `connected`.
    #[arg(long)]
    pub subscribe: bool,
    /// Drop each connection as soon as it is counted instead of holding it.
    #[arg(long)]
    pub drop: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Opened {
    pub ok: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    /// Wall clock (µs) of the first attempt and of the last counted connection.
    pub first_attempt_us: u64,
    pub last_ok_us: u64,
    /// This process's CPU ticks over the opening.
    pub cpu_ticks: u64,
    /// Handshake-to-`connected` time per connection, µs.
    pub connect_p50_us: u64,
    pub connect_p99_us: u64,
    pub connect_max_us: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Closed {
    /// Held connections the server closed (or that broke) while held, by code or error.
    pub lost_while_held: BTreeMap<String, u64>,
}

pub async fn run(common: &Common, args: &HoldArgs) -> anyhow::Result<()> {
    let ctx = Arc::new(Ctx::new(common)?);
    let (i, n) = args.shard;
    let indexes: Vec<usize> = (0..args.count).filter(|k| *k % n as usize == i as usize).collect();
    let tokens: Vec<(String, String)> = indexes
        .iter()
        .map(|k| {
            let user = format!("{}-{k}", args.prefix);
            let t = ctx.minter.mint(&user, &[])?;
            Ok((user, t))
        })
        .collect::<anyhow::Result<_>>()?;
    let tokens = Arc::new(tokens);
    println!("READY {}", serde_json::json!({ "connections": tokens.len() }));

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    match lines.next_line().await.context("reading stdin")? {
        Some(l) if l.trim() == "GO" => {}
        _ => return Ok(()),
    }

    let cpu0 = cpu_ticks(None).unwrap_or(0);
    let first_attempt = now_us();
    let next = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let last_ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let lost = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let times = Arc::new(Mutex::new(crate::stats::new_histogram()));
    let held = Arc::new(Mutex::new(Vec::new()));
    let mut openers = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (ctx, tokens, next, ok, last_ok, errors, lost, times, held) =
            (ctx.clone(), tokens.clone(), next.clone(), ok.clone(), last_ok.clone(), errors.clone(), lost.clone(), times.clone(), held.clone());
        let (subscribe, drop_after) = (args.subscribe, args.drop);
        openers.push(tokio::spawn(async move {
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some((user, token)) = tokens.get(k) else { return };
                let t0 = now_us();
                let mut ws = match open_ws(&ctx, token).await {
                    Ok(ws) => ws,
                    Err(e) => {
                        *errors.lock().entry(e.label()).or_default() += 1;
                        continue;
                    }
                };
                if subscribe && let Err(e) = subscribe_own(&mut ws, user).await {
                    *errors.lock().entry(e).or_default() += 1;
                    continue;
                }
                let t1 = now_us();
                times.lock().saturating_record((t1 - t0).max(1));
                ok.fetch_add(1, Ordering::Relaxed);
                last_ok.fetch_max(t1, Ordering::Relaxed);
                if drop_after {
                    continue;
                }
                let lost = lost.clone();
                held.lock().push(tokio::spawn(async move {
                    // Hold: answer pings until the server closes or we are aborted.
                    loop {
                        match ws.next().await {
                            Ok(Msg::Close(code)) => {
                                *lost.lock().entry(format!("close:{code}")).or_default() += 1;
                                return;
                            }
                            Ok(_) => {}
                            Err(e) => {
                                *lost.lock().entry(format!("io:{:?}", e.kind())).or_default() += 1;
                                return;
                            }
                        }
                    }
                }));
            }
        }));
    }
    for o in openers {
        let _ = o.await;
    }
    let (p50, p99, max) = {
        let h = times.lock();
        let q = |p: f64| if h.is_empty() { 0 } else { h.value_at_quantile(p) };
        (q(0.5), q(0.99), h.max())
    };
    let ok_n = ok.load(Ordering::Relaxed);
    let errs = errors.lock().clone();
    let opened = Opened {
        ok: ok_n,
        failed: errs.values().sum(),
        errors: errs,
        first_attempt_us: first_attempt,
        last_ok_us: last_ok.load(Ordering::Relaxed),
        cpu_ticks: cpu_ticks(None).unwrap_or(0).saturating_sub(cpu0),
        connect_p50_us: p50,
        connect_p99_us: p99,
        connect_max_us: max,
    };
    println!("OPENED {}", serde_json::to_string(&opened)?);

    // Hold until told to stop (or the parent goes away).
    loop {
        match lines.next_line().await {
            Ok(Some(l)) if l.trim() == "STOP" => break,
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    for h in held.lock().drain(..) {
        h.abort();
    }
    let closed = Closed { lost_while_held: lost.lock().clone() };
    println!("CLOSED {}", serde_json::to_string(&closed)?);
    Ok(())
}

async fn subscribe_own(ws: &mut crate::ws::WsClient, user: &str) -> Result<(), String> {
    crate::conn::subscribe_and_wait(ws, 1, &format!("user:{user}")).await
}
