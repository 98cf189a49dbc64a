//! `chorus tail`: prints the live events of channels as they pass through a
//! running server, for operators and for debugging agent runs.
//!
//! It reads the server's admin firehose (so it is no connection of anyone:
//! it shows nobody as present and evicts nobody's tab), as an administrator
//! whose token it mints with the server's secret, keeps only the channels
//! asked for, and reconnects when the server goes away. The firehose shows
//! what passes through the node it reads.

use std::time::Duration;

use anyhow::{Context as _, bail};
use chorus_protocol::ChannelName;
use chorus_store::{Store, User, UserRole};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::Message;

use crate::config::Config;

/// Users scanned for an administrator when none is named.
const ADMIN_SCAN_PAGE: u32 = 500;
/// Longest wait between two reconnect attempts.
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Lifetime of the token minted for one connection.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

pub struct TailArgs {
    /// Channels by name (`room:<id>`, ...).
    pub channels: Vec<String>,
    /// Users (id or username) whose `user:<id>` channel to follow.
    pub users: Vec<String>,
    /// The administrator to read as (username or id); default: the first found.
    pub admin: Option<String>,
    /// The server's base URL; default: from `server.bind`.
    pub url: Option<String>,
    pub output: TailOutput,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// The configuration file the server's secret is found through (for error messages).
    pub config_file: Option<std::path::PathBuf>,
}

/// How events are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailOutput {
    /// One line per event: time, channel, offset, type, data.
    Text,
    /// Each event exactly as subscribers get it, one JSON object per line.
    Json,
}

/// What the tail follows, resolved against the store.
struct Plan {
    channels: Vec<String>,
    admin: User,
    ws_url: String,
}

pub async fn run(config: &Config, args: TailArgs) -> anyhow::Result<()> {
    let plan = plan(config, &args).await?;
    eprintln!("chorus tail: following {} as {} (Ctrl-C to stop)", plan.channels.join(", "), plan.admin.username);
    let mut printed = 0u64;
    let mut retry = Duration::from_millis(500);
    loop {
        let outcome = tokio::select! {
            r = follow(config, &plan, &args, &mut printed) => r,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        match outcome {
            Ok(Ending::Done) => return Ok(()),
            Ok(Ending::Lost(why)) => {
                eprintln!("chorus tail: {why}; reconnecting in {} ms", retry.as_millis());
                retry = Duration::from_millis(500);
            }
            Err(e) => {
                eprintln!("chorus tail: {e:#}; retrying in {} ms", retry.as_millis());
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

async fn plan(config: &Config, args: &TailArgs) -> anyhow::Result<Plan> {
    if args.channels.is_empty() && args.users.is_empty() {
        bail!("name at least one --channel or --user");
    }
    for name in &args.channels {
        ChannelName::parse(name).map_err(|e| anyhow::anyhow!("--channel {name}: {e}"))?;
    }
    let store = chorus_store::open_store(&config.store, &config.data_dir).await.context("opening the store")?;
    let resolved = resolve(store.as_ref(), args).await;
    store.close().await;
    let (channels, admin) = resolved?;
    let ws_url = firehose_url(config, args.url.as_deref(), &channels)?;
    Ok(Plan { channels, admin, ws_url })
}

async fn resolve(store: &dyn Store, args: &TailArgs) -> anyhow::Result<(Vec<String>, User)> {
    let mut channels = args.channels.clone();
    for user in &args.users {
        let found = find_user(store, user).await?.with_context(|| format!("--user {user}: no such user (an id or a username)"))?;
        channels.push(format!("user:{}", found.id));
    }
    channels.dedup();
    let admin = match &args.admin {
        Some(name) => {
            let user = find_user(store, name).await?.with_context(|| format!("--as {name}: no such user"))?;
            if user.role != UserRole::Admin {
                bail!("--as {name}: not an administrator");
            }
            user
        }
        None => first_admin(store).await?.context("no administrator to read as: create one with `chorus admin create-user`")?,
    };
    Ok((channels, admin))
}

async fn find_user(store: &dyn Store, name_or_id: &str) -> anyhow::Result<Option<User>> {
    if let Some(user) = store.get_user_by_username(name_or_id).await? {
        return Ok(Some(user));
    }
    Ok(store.get_user(name_or_id).await?)
}

async fn first_admin(store: &dyn Store) -> anyhow::Result<Option<User>> {
    let mut after: Option<String> = None;
    loop {
        let page = store.list_users(after.as_deref(), ADMIN_SCAN_PAGE).await?;
        if let Some(admin) = page.iter().find(|u| u.role == UserRole::Admin) {
            return Ok(Some(admin.clone()));
        }
        match page.last() {
            Some(last) if page.len() == ADMIN_SCAN_PAGE as usize => after = Some(last.id.clone()),
            _ => return Ok(None),
        }
    }
}

/// `ws://…/api/v1/admin/firehose?channel=<prefix>`: the longest prefix the
/// channels share narrows what the server sends; the rest is filtered here.
fn firehose_url(config: &Config, url: Option<&str>, channels: &[String]) -> anyhow::Result<String> {
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => {
            let bind = config.server.bind;
            let host = match bind.ip() {
                ip if ip.is_unspecified() && bind.is_ipv4() => "127.0.0.1".to_owned(),
                ip if ip.is_unspecified() => "[::1]".to_owned(),
                std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                std::net::IpAddr::V4(ip) => ip.to_string(),
            };
            format!("http://{host}:{}{}", bind.port(), config.web.path_prefix)
        }
    };
    let ws = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if base.starts_with("ws://") {
        base
    } else {
        bail!("--url {base}: only http:// (or ws://) servers can be tailed");
    };
    let prefix = common_prefix(channels);
    let query: String = form_urlencoded(&prefix);
    Ok(if prefix.is_empty() { format!("{ws}/api/v1/admin/firehose") } else { format!("{ws}/api/v1/admin/firehose?channel={query}") })
}

fn common_prefix(channels: &[String]) -> String {
    let Some(first) = channels.first() else { return String::new() };
    let mut len = first.len();
    for c in &channels[1..] {
        len = first.bytes().zip(c.bytes()).take(len).take_while(|(a, b)| a == b).count();
    }
    // Channel names are ASCII, so any byte length is a char boundary.
    first.get(..len).unwrap_or_default().to_owned()
}

/// Percent-encodes everything but unreserved characters and `:`.
fn form_urlencoded(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

enum Ending {
    /// `--count` events were printed.
    Done,
    /// The server closed or went away.
    Lost(String),
}

async fn follow(config: &Config, plan: &Plan, args: &TailArgs, printed: &mut u64) -> anyhow::Result<Ending> {
    let who = crate::token::Who::Id(plan.admin.id.clone());
    let token = crate::token::run(config, args.config_file.as_deref(), crate::token::TokenArgs { who, ttl: TOKEN_TTL, channels: Vec::new() }).await?;
    let mut request = plan.ws_url.as_str().into_client_request().context("the firehose URL")?;
    request.headers_mut().insert("authorization", HeaderValue::from_str(&format!("Bearer {token}")).context("the token")?);
    let (mut socket, _) = match tokio_tungstenite::connect_async(request).await {
        Ok(s) => s,
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let status = res.status();
            let body = res.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            bail!("the server refused the firehose ({status}): {body}");
        }
        Err(e) => return Err(anyhow::Error::from(e).context(format!("connecting to {}", plan.ws_url.split('?').next().unwrap_or_default()))),
    };
    let wanted = |channel: &str| plan.channels.iter().any(|c| c == channel);
    while let Some(frame) = socket.next().await {
        let text = match frame.context("reading the firehose")? {
            Message::Text(t) => t,
            Message::Close(close) => {
                let why = close.map_or_else(|| "the server closed the firehose".to_owned(), |c| format!("the server closed the firehose ({} {})", u16::from(c.code), c.reason));
                return Ok(Ending::Lost(why));
            }
            Message::Ping(p) => {
                let _ = socket.send(Message::Pong(p)).await;
                continue;
            }
            _ => continue,
        };
        let Ok(event) = serde_json::from_str::<Value>(text.as_str()) else { continue };
        match event["type"].as_str() {
            Some("firehose_started") => {
                eprintln!("chorus tail: reading node {}", event["data"]["node"].as_str().unwrap_or("?"));
                continue;
            }
            Some("lagged") => {
                eprintln!("chorus tail: fell behind; {} events were skipped", event["data"]["missed"]);
                continue;
            }
            _ => {}
        }
        if !event["channel"].as_str().is_some_and(wanted) {
            continue;
        }
        match args.output {
            TailOutput::Json => println!("{}", text.as_str()),
            TailOutput::Text => println!("{}", text_line(&event)),
        }
        *printed += 1;
        if args.count.is_some_and(|n| *printed >= n) {
            let _ = socket.close(None).await;
            return Ok(Ending::Done);
        }
    }
    Ok(Ending::Lost("the connection ended".into()))
}

/// `10:20:00.123 room:abc #42 agent_text_delta {"run_id":"r1",…}`.
fn text_line(event: &Value) -> String {
    let time = event["timestamp"].as_str().and_then(|t| t.get(11..23)).unwrap_or("");
    format!(
        "{time} {} #{} {} {}",
        event["channel"].as_str().unwrap_or(""),
        event["offset"],
        event["type"].as_str().unwrap_or(""),
        serde_json::to_string(&event["data"]).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_lines() {
        assert_eq!(common_prefix(&["room:abc".into()]), "room:abc");
        assert_eq!(common_prefix(&["room:abc".into(), "room:abd".into()]), "room:ab");
        assert_eq!(common_prefix(&["room:a".into(), "user:b".into()]), "");
        assert_eq!(form_urlencoded("room:a b"), "room:a%20b");
        let line = text_line(&serde_json::json!({"type":"agent_thinking","channel":"room:x","offset":4,"epoch":"e","timestamp":"2026-12-05T10:20:00.123Z","data":{"run_id":"r"}}));
        assert_eq!(line, r#"10:20:00.123 room:x #4 agent_thinking {"run_id":"r"}"#);
    }

    #[test]
    fn the_url_follows_the_bind_address_and_prefix() {
        let mut config = Config::default();
        config.server.bind = "0.0.0.0:9000".parse().unwrap();
        config.web.path_prefix = "/chorus".into();
        assert_eq!(firehose_url(&config, None, &["room:x".into()]).unwrap(), "ws://127.0.0.1:9000/chorus/api/v1/admin/firehose?channel=room:x");
        assert_eq!(firehose_url(&config, Some("http://h:1/"), &[]).unwrap(), "ws://h:1/api/v1/admin/firehose");
        assert!(firehose_url(&config, Some("https://h"), &[]).is_err());
    }
}
