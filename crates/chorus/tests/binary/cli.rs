//! `chorus token` and configuration errors.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use chorus_testkit::WsClient;
use serde_json::json;

use crate::process::{Served, binary, write_config};

#[tokio::test]
async fn token_never_creates_a_secret_and_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let elsewhere = tempfile::tempdir().unwrap();
    // Run before any server, from another directory: nothing is created, and the message says where it looked.
    let out = Command::new(binary()).args(["token", "--user", "alice", "--config"]).arg(&config).current_dir(elsewhere.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let secret = dir.path().join("data/jwt-secret");
    assert!(err.contains(&secret.display().to_string()), "{err}");
    assert!(err.contains(&config.display().to_string()) && err.contains("chorus serve"), "{err}");
    assert!(!dir.path().join("data").exists(), "chorus token created files");
    // Without --config, from a directory with no server: the default data directory, named absolutely.
    let out = Command::new(binary()).args(["token", "--user", "alice"]).current_dir(elsewhere.path()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let default = elsewhere.path().join("chorus-data/jwt-secret");
    assert!(err.contains(&default.display().to_string()) && err.contains("no configuration file"), "{err}");
    assert!(!elsewhere.path().join("chorus-data").exists());

    // Once the server made it, tokens from anywhere with the same configuration are accepted.
    let served = Served::start(dir.path(), &config, &[]).await;
    let run = |args: &[&str]| Command::new(binary()).args(args).arg("--config").arg(&config).current_dir(elsewhere.path()).output().unwrap();
    let out = run(&["token", "--user", "alice", "--channel", "room:*"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut c = WsClient::connect(&format!("ws://{}/ws?token={token}", served.addr)).await.unwrap();
    assert_eq!(c.push().await["type"], "connected");
    assert_eq!(c.request(json!({"type": "subscribe", "channel": "user:alice"})).await["result"]["channel"], "user:alice");
    let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn token_for_an_existing_account_by_username() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let served = Served::start(dir.path(), &config, &[]).await;
    let create = Command::new(binary())
        .args(["admin", "create-user", "--username", "carol", "--password", "carol-password-1", "--role", "user", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(create.status.success(), "{}", String::from_utf8_lossy(&create.stderr));
    let created = String::from_utf8_lossy(&create.stdout).to_string();
    let id = created.split("(id ").nth(1).and_then(|r| r.split(')').next()).expect("the new user's id").to_owned();

    let run = |name: &str| Command::new(binary()).args(["token", "--username", name, "--config"]).arg(&config).output().unwrap();
    let out = run("carol");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let mut c = WsClient::connect(&format!("ws://{}/ws?token={token}", served.addr)).await.unwrap();
    let first = c.push().await;
    assert_eq!((first["type"].as_str(), first["user_id"].as_str()), (Some("connected"), Some(id.as_str())), "{first}");
    // Usernames ignore case, as at sign-in.
    assert!(run("CAROL").status.success());
    let out = run("nobody");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no user named `nobody`"), "{err}");
    // --user and --username are one or the other.
    let out = Command::new(binary()).args(["token", "--user", "x", "--username", "carol", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
}

#[tokio::test]
async fn data_directory_and_files_are_private_whichever_command_runs_first() {
    for first in ["serve", "migrate", "admin"] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), "");
        // A permissive umask, as on many machines.
        // SAFETY: umask only changes this process's default mode bits; the children inherit it.
        unsafe { libc::umask(0o022) };
        match first {
            "serve" => {
                let mut served = Served::start(dir.path(), &config, &[]).await;
                served.signal(libc::SIGTERM);
                assert!(served.exited().await.0.success());
            }
            "migrate" => {
                let out = Command::new(binary()).arg("migrate").arg("--config").arg(&config).output().unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
            _ => {
                let out = Command::new(binary())
                    .args(["admin", "create-user", "--username", "root1", "--password", "root-password-1", "--config"])
                    .arg(&config)
                    .output()
                    .unwrap();
                assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            }
        }
        // Then the server runs on what the first command left.
        let mut served = Served::start(dir.path(), &config, &[]).await;
        let data = dir.path().join("data");
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data), 0o700, "{first}: the data directory");
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&data).unwrap() {
            let path = entry.unwrap().path();
            assert_eq!(mode(&path), 0o600, "{first}: {}", path.display());
            files.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
        files.sort();
        for expected in ["chorus.db", "chorus.db-shm", "chorus.db-wal", "jwt-secret"] {
            assert!(files.iter().any(|f| f == expected), "{first}: {expected} missing from {files:?}");
        }
        served.signal(libc::SIGTERM);
        assert!(served.exited().await.0.success());
    }
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
