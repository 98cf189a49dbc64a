//! `message-rtt` setup over REST: users signed up and logged in, and the
//! membership plan.

use std::fmt::Write as _;

use anyhow::{Context, bail};

use crate::Ctx;
use crate::http::HttpConn;

/// One REST call with a JSON body; returns the JSON answer or fails with the
/// status and body.
pub(crate) async fn rest(conn: &mut HttpConn, method: &str, path: &str, token: Option<&str>, body: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    let mut head = String::from("Content-Type: application/json\r\n");
    if let Some(t) = token {
        let _ = write!(head, "Authorization: Bearer {t}\r\n");
    }
    let body = serde_json::to_vec(body)?;
    let r = conn.request(method, path, &head, &body).await?;
    if !(200..300).contains(&r.status) {
        bail!("{method} {path}: HTTP {} {}", r.status, String::from_utf8_lossy(&r.body));
    }
    serde_json::from_slice(&r.body).with_context(|| format!("{method} {path}: body is not JSON"))
}

pub(super) fn str_field(v: &serde_json::Value, path: &[&str]) -> anyhow::Result<String> {
    let mut cur = v;
    for p in path {
        cur = &cur[*p];
    }
    cur.as_str().map(str::to_owned).with_context(|| format!("no `{}` in {v}", path.join(".")))
}

/// Signs up and logs in every user, `concurrency` at a time: (user id, access token).
pub(super) async fn create_users(ctx: &Ctx, run: &str, n: usize, concurrency: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut tasks = Vec::new();
    let workers = concurrency.clamp(1, n.max(1));
    for w in 0..workers {
        let target = ctx.target.clone();
        let run = run.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(target);
            let mut out = Vec::new();
            for i in (w..n).step_by(workers) {
                let username = format!("rtt{run}-{i}");
                let password = format!("bench-password-{run}-{i}");
                rest(&mut conn, "POST", "/api/v1/auth/signup", None, &serde_json::json!({"username": username, "password": password})).await?;
                let grant = rest(&mut conn, "POST", "/api/v1/auth/login", None, &serde_json::json!({"username": username, "password": password})).await?;
                out.push((i, str_field(&grant, &["user", "id"])?, str_field(&grant, &["access_token"])?));
            }
            anyhow::Ok(out)
        }));
    }
    let mut users: Vec<Option<(String, String)>> = (0..n).map(|_| None).collect();
    for t in tasks {
        for (i, id, token) in t.await.context("setup task")?? {
            users[i] = Some((id, token));
        }
    }
    users.into_iter().map(|u| u.context("a user was not set up")).collect()
}

/// The membership plan: user `u = q·C + r` is in channels `r` and `(r + 1 + q) mod C`.
pub(super) fn plan(users: usize, channels: usize) -> anyhow::Result<Vec<[usize; 2]>> {
    if channels < 2 || users == 0 || !users.is_multiple_of(channels) || users / channels >= channels {
        bail!("need users to be a multiple of channels, with users/channels < channels (e.g. 50 users, 10 channels)");
    }
    Ok((0..users).map(|u| {
        let (q, r) = (u / channels, u % channels);
        [r, (r + 1 + q) % channels]
    }).collect())
}
