//! `chorus token` and configuration errors.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use chorus_testkit::WsClient;
use serde_json::json;

use crate::process::{Served, binary, write_config};

#[tokio::test]
async fn token_generates_a_secret_once_and_the_server_accepts_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let run = || Command::new(binary()).args(["token", "--user", "alice", "--channel", "room:*", "--config"]).arg(&config).output().unwrap();
    let first = run();
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    let token = String::from_utf8(first.stdout).unwrap().trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let secret = dir.path().join("data/jwt-secret");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the generated secret is private");
    let before = std::fs::read(&secret).unwrap();
    assert!(run().status.success());
    assert_eq!(std::fs::read(&secret).unwrap(), before, "the same secret is found again");

    // The server started from the same place accepts the token.
    let served = Served::start(dir.path(), &config, &[]).await;
    let mut c = WsClient::connect(&format!("ws://{}/ws?token={token}", served.addr)).await.unwrap();
    assert_eq!(c.push().await["type"], "connected");
    assert_eq!(c.request(json!({"type": "subscribe", "channel": "user:alice"})).await["result"]["channel"], "user:alice");
}

#[test]
fn an_invalid_configuration_fails_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[limits]\nconnections_per_user = 0\n");
    let out = Command::new(binary()).arg("serve").arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connections_per_user"), "{err}");
    let config = write_config(dir.path(), "[limitz]\nx = 1\n");
    let out = Command::new(binary()).arg("serve").arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("limitz"));
}
