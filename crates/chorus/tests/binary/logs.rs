//! Connection log lines: in the span of the upgrade request, with its
//! `request_id`, and never with a token; a slow consumer's disconnect.

use std::time::Duration;

use chorus_testkit::WsClient;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::process::{Served, install_crypto, refused_upgrade, write_config_at, ws_connect};

const SECRET: &str = "binary-logs-secret-0123456789abcdef0123456";

fn token(user: &str) -> String {
    chorus_auth::mint_token(
        &chorus_auth::HmacSecret::new(SECRET),
        &chorus_auth::MintRequest { user: user.into(), ttl: Duration::from_secs(600), ..Default::default() },
        &chorus_clock::SystemClock,
    )
    .unwrap()
}

async fn line(served: &Served, message: &str, request_id: &str) -> Value {
    served.wait_for(|v| v["message"] == message && v["span"]["request_id"] == request_id).await
}

#[tokio::test]
async fn connection_lines_carry_the_upgrade_request_id_and_never_a_token() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    // Connections log their open and close at debug.
    let config = write_config_at(dir.path(), "chorus_server=debug,info", &format!("[auth]\nhmac_secret = \"{SECRET}\"\n"));
    let served = Served::start(dir.path(), &config, &[]).await;

    // Token in the query string.
    let alice = token("alice");
    let (mut ws, rid) = ws_connect(&format!("ws://{}/ws?token={alice}", served.addr), &[]).await.unwrap();
    assert!(!rid.is_empty(), "the 101 carries x-request-id");
    let first = ws.push().await;
    assert_eq!(first["type"], "connected");
    // A command error names the same request.
    let r = ws.request(json!({"type": "subscribe", "channel": "user:bob"})).await;
    assert_eq!(r["error"]["request_id"], format!("{rid}:{}", r["id"]), "{r}");
    ws.send_message(Message::Close(None)).await;

    let request = line(&served, "request", &rid).await;
    assert_eq!((request["status"].as_u64(), request["span"]["path"].as_str()), (Some(101), Some("/ws")), "{request}");
    let open = line(&served, "websocket open", &rid).await;
    assert_eq!(open["span"]["name"], "ws", "{open}");
    assert_eq!(open["span"]["conn"], first["connection_id"], "{open}");
    assert_eq!(open["span"]["user"], "alice", "{open}");
    let closed = line(&served, "websocket closed", &rid).await;
    assert_eq!(closed["code"], 1000, "{closed}");
    assert_eq!(closed["span"]["conn"], first["connection_id"], "{closed}");

    // Token in a `connect` frame, and a request id chosen by the client.
    let bob = token("bob");
    let (mut bare, bare_rid) = ws_connect(&format!("ws://{}/ws", served.addr), &[("x-request-id", "client-chosen-id.1")]).await.unwrap();
    assert_eq!(bare_rid, "client-chosen-id.1");
    let r = bare.request(json!({"type": "connect", "token": bob})).await;
    assert_eq!(r["result"]["user_id"], "bob", "{r}");
    bare.send_message(Message::Close(None)).await;
    line(&served, "websocket open", &bare_rid).await;
    line(&served, "websocket closed", &bare_rid).await;

    // A refused upgrade: a bad token in the query string.
    let bad = "eyJhbGciOiJIUzI1NiJ9.bm90LWEtcmVhbC1wYXlsb2Fk.c2lnbmF0dXJlLW9mLW5vdGhpbmc";
    assert_eq!(refused_upgrade(&format!("ws://{}/ws?token={bad}", served.addr), &[]).await, 401);
    served.wait_for(|v| v["message"] == "request" && v["status"] == 401 && v["span"]["path"] == "/ws").await;

    // Every connection line has a request id; no line has a token or the secret.
    for v in served.json_lines().iter().filter(|v| v["span"]["name"] == "ws") {
        assert!(v["span"]["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{v}");
    }
    let out = served.output().join("\n");
    for secret in [alice.as_str(), bob.as_str(), bad, SECRET] {
        assert!(!out.contains(secret), "{secret} reached the log:\n{out}");
    }
}

/// A slow consumer may never see its close code (it stopped reading), so
/// the server says it at info, in the connection's span.
#[tokio::test]
async fn a_slow_consumer_disconnect_is_logged_at_info() {
    install_crypto();
    let dir = tempfile::tempdir().unwrap();
    const KEY: &str = "binary-logs-publisher-key-0123";
    let extra = format!("[auth]\nhmac_secret = \"{SECRET}\"\napi_keys = [\"{KEY}\"]\n\n[limits]\noutbound_queue_messages = 8\n");
    let config = write_config_at(dir.path(), "info", &extra);
    let served = Served::start(dir.path(), &config, &[]).await;

    // A small receive buffer, so the socket fills long before the publishing ends.
    let mut ws = WsClient::connect_with_recv_buffer(&format!("ws://{}/ws?token={}", served.addr, token("slow")), 4096).await.unwrap();
    assert_eq!(ws.push().await["type"], "connected");
    let r = ws.request(json!({"type": "subscribe", "channel": "user:slow"})).await;
    assert!(r["result"].is_object(), "{r}");
    // From here on the client reads nothing; the server's queue overflows.
    let http = reqwest::Client::new();
    let pad = "x".repeat(16 * 1024);
    for n in 0..200 {
        let body = json!({"channel": "user:slow", "event": "publication", "data": {"n": n, "pad": pad}});
        let res = http.post(served.url("/api/v1/publish")).header("x-api-key", KEY).json(&body).send().await.unwrap();
        assert_eq!(res.status(), 200);
    }
    let logged = served.wait_for(|v| v["message"] == "slow consumer disconnected: its outbound queue overflowed").await;
    assert_eq!(logged["level"], "INFO", "{logged}");
    assert_eq!(logged["max_items"], 8, "{logged}");
    assert_eq!(logged["span"]["user"], "slow", "{logged}");
    drop(ws);
}
