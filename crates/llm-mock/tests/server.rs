//! The benchmark binary: prints its address, streams the configured answer
//! on every provider API.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::Command;

async fn post(addr: &str, path: &str, body: &str) -> String {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test]
async fn serves_every_wire_format() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chorus-llm-mock"))
        .args(["--chunks", "5", "--chunks-per-second", "0"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next_line().await.unwrap().unwrap();
    let addr = first
        .strip_prefix("listening on http://")
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_owned();

    let openai = post(
        &addr,
        "/v1/chat/completions",
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
    )
    .await;
    assert!(openai.starts_with("HTTP/1.1 200"), "{openai}");
    assert!(openai.contains("text/event-stream"));
    assert_eq!(openai.matches(r#""content":"word"#).count(), 5, "{openai}");
    assert!(openai.contains(r#""choices":[]"#), "usage chunk: {openai}");
    assert!(openai.contains("data: [DONE]"));

    let gemini = post(
        &addr,
        "/v1beta/models/m:streamGenerateContent?alt=sse",
        r#"{"contents":[]}"#,
    )
    .await;
    assert!(
        gemini.contains("usageMetadata") && !gemini.contains("[DONE]"),
        "{gemini}"
    );

    let anthropic = post(&addr, "/v1/messages", r#"{"model":"m","stream":true}"#).await;
    assert!(
        anthropic.contains("event: message_start") && anthropic.contains("event: message_stop"),
        "{anthropic}"
    );

    let bad = post(&addr, "/v1/messages", "not json").await;
    assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn recording_keeps_the_newest_requests_up_to_its_bound() {
    use chorus_llm_mock::{MockOptions, MockServer};
    let mock = MockServer::start_with(MockOptions {
        max_recorded: 2,
        ..MockOptions::default()
    })
    .await
    .unwrap();
    let addr = mock.addr().to_string();
    for model in ["a", "b", "c"] {
        post(
            &addr,
            "/v1/messages",
            &format!(r#"{{"model":"{model}","stream":true}}"#),
        )
        .await;
    }
    let models: Vec<_> = mock
        .requests()
        .iter()
        .map(|r| r.body["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(models, ["b", "c"]);
    assert_eq!(mock.completed(), 3);
}
