//! Shutdown by signal: every socket, authenticated or not, is told to
//! reconnect (1012) and the process exits cleanly within the drain limit.

use std::time::{Duration, Instant};

use chorus_testkit::WsClient;
use serde_json::json;

use crate::process::{Served, install_crypto, write_config};

const SECRET: &str = "binary-signal-secret-0123456789abcdef01234";

fn token(user: &str) -> String {
    chorus_auth::mint_token(
        &chorus_auth::HmacSecret::new(SECRET),
        &chorus_auth::MintRequest { user: user.into(), ttl: Duration::from_secs(600), ..Default::default() },
        &chorus_clock::SystemClock,
    )
    .unwrap()
}

/// A config with a 5 s drain limit and `connect_timeout` far beyond any wait of these tests.
fn config(dir: &std::path::Path) -> std::path::PathBuf {
    write_config(dir, &format!("[auth]\nhmac_secret = \"{SECRET}\"\n\n[timing]\ndrain_limit = \"5s\"\nconnect_timeout = \"60s\"\n"))
}

#[tokio::test]
async fn sigint_asks_clients_to_reconnect_and_exits_within_the_drain_limit() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &config(dir.path()), &[]).await;
    let mut ws = WsClient::connect(&format!("ws://{}/ws?token={}", served.addr, token("alice"))).await.unwrap();
    assert_eq!(ws.push().await["type"], "connected");

    served.signal(libc::SIGINT);
    let signalled = Instant::now();
    // The code and reason text of PROTOCOL.md "Close codes".
    assert_eq!(ws.closed().await, (1012, "server restarting, reconnect".to_owned()));
    // Gone: the server need not wait for our half of the close handshake.
    drop(ws);
    let (status, _) = served.exited().await;
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(20), "exited {:?} after the signal", signalled.elapsed());
    let lines = served.json_lines();
    assert!(lines.iter().any(|v| v["message"] == "shutting down" && v["signal"] == "SIGINT"), "{}", served.output().join("\n"));
    assert!(lines.iter().any(|v| v["message"] == "stopped cleanly"), "{}", served.output().join("\n"));
}

#[tokio::test]
async fn a_socket_still_waiting_for_connect_gets_1012_on_sigterm() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    let mut served = Served::start(dir.path(), &config(dir.path()), &[]).await;
    // Opened without a token and never sends `connect`; the server is reading it.
    let mut bare = WsClient::connect(&format!("ws://{}/ws", served.addr)).await.unwrap();
    assert_eq!(bare.request(json!({"type": "ping"})).await["result"]["pong"], true);
    let mut authed = WsClient::connect(&format!("ws://{}/ws?token={}", served.addr, token("bob"))).await.unwrap();
    assert_eq!(authed.push().await["type"], "connected");

    served.signal(libc::SIGTERM);
    let signalled = Instant::now();
    // Not 4001 after the connect timeout (60 s, past the client's wait): 1012 at once.
    assert_eq!(bare.closed().await.0, 1012);
    assert_eq!(authed.closed().await.0, 1012);
    drop((bare, authed));
    let (status, _) = served.exited().await;
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(20), "exited {:?} after the signal", signalled.elapsed());
    assert!(served.json_lines().iter().any(|v| v["message"] == "stopped cleanly"), "{}", served.output().join("\n"));
}
