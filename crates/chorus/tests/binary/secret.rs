//! The generated token secret: made by the first start, found by `chorus
//! token` beside the running server, kept across restarts.

use std::os::unix::fs::PermissionsExt;

use chorus_testkit::WsClient;

use crate::process::{Served, cli_token, install_crypto, write_config};

async fn assert_accepted(served: &Served, token: &str, user: &str) {
    let mut c = WsClient::connect(&format!("ws://{}/ws?token={token}", served.addr)).await.expect("upgrade");
    let first = c.push().await;
    assert_eq!((first["type"].as_str(), first["user_id"].as_str()), (Some("connected"), Some(user)), "{first}");
}

#[tokio::test]
async fn the_first_start_generates_a_private_secret_that_chorus_token_and_a_restart_use() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    // No [auth] at all: no secret configured.
    let config = write_config(dir.path(), "");
    let secret = dir.path().join("data/jwt-secret");
    assert!(!secret.exists());

    let mut served = Served::start(dir.path(), &config, &[]).await;
    let line = served.wait_for(|v| v["message"] == "token signing secret").await;
    assert_eq!(line["secret"], format!("generated into {}", secret.display()), "{line}");
    assert_eq!(line["level"], "INFO");
    let mode = std::fs::metadata(&secret).expect("the secret file exists").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the generated secret is private");
    let bytes = std::fs::read_to_string(&secret).unwrap();
    assert!(bytes.trim().len() >= 32, "a secret of {} bytes", bytes.trim().len());

    // `chorus token` from the same place signs with it: the running server accepts it.
    let token = cli_token(dir.path(), &config, "alice");
    assert_accepted(&served, &token, "alice").await;
    assert!(!served.output().join("\n").contains(bytes.trim()), "the secret reached the log");

    served.signal(libc::SIGTERM);
    assert!(served.exited().await.0.success());

    // The second start finds the same secret and does not generate another.
    let served = Served::start(dir.path(), &config, &[]).await;
    let line = served.wait_for(|v| v["message"] == "token signing secret").await;
    assert_eq!(line["secret"], secret.display().to_string(), "{line}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), bytes, "the secret is kept");
    assert_accepted(&served, &token, "alice").await;
    assert_eq!(std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777, 0o600);
}
