//! `chorus tail`: the live events of a channel (or a user's channel) from a
//! running server, as an administrator, and nothing of other channels.

use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::process::{Served, WAIT, binary, install_crypto, write_config};

const KEY: &str = "tail-test-server-key-0123456789";

async fn create_admin(dir: &std::path::Path, config: &std::path::Path, username: &str) {
    let mut child = Command::new(binary())
        .args(["admin", "create-user", "--username", username, "--password-stdin", "--config"])
        .arg(config)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    child.stdin.take().unwrap().write_all(b"correct-horse-battery\n").await.unwrap();
    assert!(child.wait().await.unwrap().success());
}

async fn post(http: &reqwest::Client, url: String, token: Option<&str>, body: Value) -> Value {
    let mut req = http.post(url).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    } else {
        req = req.header("x-api-key", KEY);
    }
    let res = req.send().await.unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    res.json().await.unwrap()
}

/// Starts `chorus tail` and waits until it reads the firehose.
async fn tail(served: &Served, dir: &std::path::Path, config: &std::path::Path, args: &[&str]) -> tokio::process::Child {
    // The config binds port 0: the tail is told where the server listens.
    let mut child = Command::new(binary())
        .arg("tail")
        .args(args)
        .arg("--url")
        .arg(served.url(""))
        .arg("--config")
        .arg(config)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::time::timeout(WAIT, async {
        while let Some(line) = err.next_line().await.unwrap() {
            if line.contains("reading node") {
                return;
            }
        }
        panic!("chorus tail ended before reading the firehose");
    })
    .await
    .expect("chorus tail did not connect");
    child
}

async fn lines(child: tokio::process::Child) -> Vec<Value> {
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await.expect("chorus tail did not exit").unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[tokio::test]
async fn tail_prints_the_live_events_of_one_channel_and_of_a_users_channel() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &format!("[auth]\napi_keys = [\"{KEY}\"]\n"));
    install_crypto();
    let served = Served::start(dir.path(), &config, &[]).await;
    create_admin(dir.path(), &config, "root").await;
    let http = reqwest::Client::new();
    post(&http, served.url("/api/v1/auth/signup"), None, json!({"username": "alice", "password": "correct-horse-1"})).await;
    let login = post(&http, served.url("/api/v1/auth/login"), None, json!({"username": "alice", "password": "correct-horse-1"})).await;
    let token = login["access_token"].as_str().unwrap();
    let alice = login["user"]["id"].as_str().unwrap().to_owned();
    let channel = post(&http, served.url("/api/v1/channels"), Some(token), json!({"name": "general"})).await;
    let other = post(&http, served.url("/api/v1/channels"), Some(token), json!({"name": "other"})).await;
    let stream = channel["stream"].as_str().unwrap().to_owned();

    let child = tail(&served, dir.path(), &config, &["--channel", &stream, "--json", "--count", "3"]).await;
    let run = |seq: u64| json!({"run_id": "r1", "thread_id": stream, "agent_id": "a1", "seq": seq});
    let items = json!({"items": [
        {"channel": other["stream"], "event": "agent_started", "data": {"run_id": "r0", "thread_id": other["stream"], "agent_id": "a1", "seq": 1}},
        {"channel": stream, "event": "agent_started", "data": run(1)},
        {"channel": stream, "event": "agent_thinking", "data": run(2)},
    ]});
    post(&http, served.url("/api/v1/publish/batch"), None, items).await;
    post(&http, served.url(&format!("/api/v1/channels/{}/messages", channel["id"].as_str().unwrap())), Some(token), json!({"text": "hello"})).await;
    let events = lines(child).await;
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["agent_started", "agent_thinking", "message_created"]);
    assert!(events.iter().all(|e| e["channel"] == stream.as_str()));
    assert_eq!(events[2]["data"]["message"]["text"], "hello");
    let offsets: Vec<u64> = events.iter().map(|e| e["offset"].as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");

    // `--user` by username follows `user:<id>`; the text form is one line per event.
    let child = tail(&served, dir.path(), &config, &["--user", "alice", "--count", "1", "--as", "root"]).await;
    let data = json!({"run_id": "r2", "thread_id": format!("user:{alice}"), "agent_id": "a1", "seq": 1});
    post(&http, served.url("/api/v1/publish"), None, json!({"channel": format!("user:{alice}"), "event": "agent_started", "data": data})).await;
    let out = tokio::time::timeout(WAIT, child.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(&format!("user:{alice} #")) && text.contains("agent_started") && text.contains("\"run_id\":\"r2\""), "{text}");
}

#[tokio::test]
async fn tail_explains_what_it_cannot_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let _served = Served::start(dir.path(), &config, &[]).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(binary()).arg("tail").args(args).arg("--config").arg(&config).current_dir(dir.path()).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(run(&[]).contains("--channel or --user"));
    assert!(run(&["--channel", "no namespace"]).contains("--channel no namespace"));
    assert!(run(&["--channel", "room:x"]).contains("no administrator"));
    assert!(run(&["--user", "nobody"]).contains("--user nobody: no such user"));
}
