//! `logins`: many password logins over REST against a fresh server; the
//! server's RSS before and after. Each Argon2id check needs 19 MiB of
//! working memory, so a server that does not reuse that memory grows with
//! every thread that ever hashed a password. Bar (issue 11): 1,000 logins
//! leave RSS within 64 MB of where it started.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use crate::Ctx;
use crate::http::HttpConn;
use crate::report::Report;
use crate::scenario::messages::setup::rest;
use crate::server::Probe;

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Logins in all.
    #[arg(long, default_value_t = 1_000)]
    pub logins: usize,
    /// Accounts the logins rotate over (each is signed up first).
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Logins in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// Bar: RSS growth allowed from the start, MiB.
    #[arg(long, default_value_t = 64)]
    pub max_growth_mib: u64,
}

pub async fn run(ctx: &Arc<Ctx>, a: &LoginArgs) -> anyhow::Result<Report> {
    if a.logins == 0 || a.users == 0 {
        bail!("need --logins and --users above zero");
    }
    let probe = Probe::new(&ctx.target, ctx.server_pid);
    let start_kib = probe.rss_kib().context("this scenario reads the server's RSS: pass --server-pid")?;
    let run = format!("{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32));
    let password = |u: usize| format!("bench-login-password-{run}-{u}");
    let mut conn = HttpConn::new(ctx.target.clone());
    for u in 0..a.users {
        rest(&mut conn, "POST", "/api/v1/auth/signup", None, &serde_json::json!({"username": format!("login{run}-{u}"), "password": password(u)})).await?;
    }
    let after_signup_kib = probe.rss_kib().unwrap_or(0);
    let t = Instant::now();
    let workers = a.concurrency.clamp(1, a.logins);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (target, users, logins, run) = (ctx.target.clone(), a.users, a.logins, run.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(target);
            conn.timeout = Duration::from_secs(30);
            let mut failed = 0u64;
            for i in (w..logins).step_by(workers) {
                let u = i % users;
                let body = serde_json::json!({"username": format!("login{run}-{u}"), "password": format!("bench-login-password-{run}-{u}")});
                if rest(&mut conn, "POST", "/api/v1/auth/login", None, &body).await.is_err() {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await.context("login worker")?;
    }
    let elapsed = t.elapsed().as_secs_f64();
    // Let the allocator hand back what it will.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let end_kib = probe.rss_kib().unwrap_or(0);
    let growth_kib = end_kib.saturating_sub(start_kib);

    let mut r = Report::new("logins", ctx.row(format!("logins, {}", a.logins)));
    r.param("logins", a.logins as u64).param("users", a.users as u64).param("concurrency", a.concurrency as u64);
    r.metric("failed", failed).metric("logins_per_s", (a.logins as f64 / elapsed).round());
    r.metric("rss_start_kib", start_kib).metric("rss_after_signup_kib", after_signup_kib).metric("rss_end_kib", end_kib).metric("rss_growth_kib", growth_kib);
    r.line(format!("{} logins ({failed} failed) at {:.0}/s, {} in flight", a.logins, a.logins as f64 / elapsed, workers));
    r.line(format!("RSS: start {start_kib} KiB → after {} sign-ups {after_signup_kib} KiB → after the logins {end_kib} KiB", a.users));
    r.check(format!("RSS within {} MiB of the start", a.max_growth_mib), growth_kib <= a.max_growth_mib * 1024, format!("+{} KiB", growth_kib));
    r.check("every login succeeded", failed == 0, format!("{failed} failed"));
    Ok(r)
}
