//! Logs, reload and shutdown of a running server.

use std::time::Duration;

use chorus_testkit::{SseClient, WsClient};
use serde_json::Value;

use crate::process::{Served, install_crypto, write_config};

const SECRET: &str = "binary-test-secret-0123456789abcdef012345";

fn token(user: &str) -> String {
    chorus_auth::mint_token(
        &chorus_auth::HmacSecret::new(SECRET),
        &chorus_auth::MintRequest { user: user.into(), ttl: Duration::from_secs(600), ..Default::default() },
        &chorus_clock::SystemClock,
    )
    .unwrap()
}

fn auth_section(limit: u32) -> String {
    format!("[auth]\nhmac_secret = \"{SECRET}\"\n\n[limits]\nconnections_per_user = {limit}\n")
}

#[tokio::test]
async fn logs_are_json_with_request_ids_and_never_contain_a_query_token() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &auth_section(3));
    let served = Served::start(dir.path(), &config, &[]).await;
    let t = token("alice");
    let mut ws = WsClient::connect(&format!("ws://{}/ws?token={t}", served.addr)).await.unwrap();
    assert_eq!(ws.push().await["type"], "connected");
    let http = reqwest::Client::new();
    let mut sse = SseClient::open(&http, &format!("http://{}", served.addr), &t, &format!("channel=user:alice&token={t}"), None).await.unwrap();
    assert_eq!(sse.next().await.unwrap().event, "connected");
    let res = http.get(served.url(&format!("/health?token={t}"))).send().await.unwrap();
    let rid = res.headers()["x-request-id"].to_str().unwrap().to_owned();

    let line = served.wait_for(|v| v["span"]["request_id"] == rid.as_str()).await;
    assert_eq!(line["message"], "request");
    assert_eq!(line["status"], 200);
    assert_eq!(line["span"]["path"], "/health");
    served.wait_for(|v| v["span"]["path"] == "/sse").await;
    let out = served.output().join("\n");
    assert!(!out.contains(&t), "a token reached the log:\n{out}");
    assert!(!out.contains(SECRET), "the secret reached the log");
    for line in served.output() {
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not a JSON log line: {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
}

#[tokio::test]
async fn sighup_applies_a_good_file_and_refuses_a_bad_one() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &auth_section(3));
    let served = Served::start(dir.path(), &config, &[]).await;
    let url = format!("ws://{}/ws?token={}", served.addr, token("alice"));
    let mut first = WsClient::connect(&url).await.unwrap();
    assert_eq!(first.push().await["type"], "connected");

    write_config(dir.path(), &auth_section(1));
    served.signal(libc::SIGHUP);
    let reloaded = served.wait_for(|v| v["message"] == "configuration reloaded").await;
    assert!(reloaded["changed"].as_str().unwrap_or_default().contains("limits.connections_per_user"), "{reloaded}");
    // The new limit applies: a second connection replaces the first.
    let mut second = WsClient::connect(&url).await.unwrap();
    assert_eq!(second.push().await["type"], "connected");
    assert_eq!(first.closed().await.0, 4004);

    std::fs::write(&config, "this is [not toml").unwrap();
    served.signal(libc::SIGHUP);
    served.wait_for(|v| v["message"].as_str().is_some_and(|m| m.contains("reload refused"))).await;
    // Still serving with the last good configuration.
    let mut third = WsClient::connect(&url).await.unwrap();
    assert_eq!(third.push().await["type"], "connected");
    assert_eq!(second.closed().await.0, 4004, "limit 1 still applies");
    assert_eq!(reqwest::get(served.url("/health")).await.unwrap().status(), 200);
}

#[tokio::test]
async fn sigterm_asks_clients_to_reconnect_and_exits_within_the_drain_limit() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("{}\n[timing]\ndrain_limit = \"5s\"\n", auth_section(3)));
    let mut served = Served::start(dir.path(), &config, &[]).await;
    let t = token("alice");
    let mut ws = WsClient::connect(&format!("ws://{}/ws?token={t}", served.addr)).await.unwrap();
    assert_eq!(ws.push().await["type"], "connected");
    let http = reqwest::Client::new();
    let mut sse = SseClient::open(&http, &format!("http://{}", served.addr), &t, "channel=user:alice", None).await.unwrap();
    assert_eq!(sse.next().await.unwrap().event, "connected");

    served.signal(libc::SIGTERM);
    assert_eq!(ws.closed().await.0, 1012);
    assert_eq!(sse.next_of("reconnect").await.data["type"], "reconnect");
    // Gone: the server need not wait for our half of the close handshake.
    drop((ws, sse));
    let (status, took) = served.exited().await;
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5), "exited in {took:?}");
    let out = served.output().join("\n");
    assert!(out.contains("stopped cleanly"), "{out}");
}

#[tokio::test]
async fn environment_variables_override_the_file() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &auth_section(3));
    let served = Served::start(dir.path(), &config, &[("CHORUS_LIMITS__CONNECTIONS_PER_USER", "1")]).await;
    let url = format!("ws://{}/ws?token={}", served.addr, token("bob"));
    let mut a = WsClient::connect(&url).await.unwrap();
    assert_eq!(a.push().await["type"], "connected");
    let mut b = WsClient::connect(&url).await.unwrap();
    assert_eq!(b.push().await["type"], "connected");
    assert_eq!(a.closed().await.0, 4004);
}
