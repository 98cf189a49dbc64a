//! Crash safety: the real `chorus` binary is SIGKILLed while several clients
//! stream chat messages, then restarted on the same data. Every acknowledged
//! message must be stored and reach every member, directly (`message_created`
//! before the crash) or by recovery (`recovery_failed`, then a refetch over
//! REST); a retried send with the same idempotency key never duplicates; and
//! an event committed but never fanned out is published after the restart.
//! On SQLite and on PostgreSQL (`CHORUS_TEST_POSTGRES_URL`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chorus_store::{InsertOutcome, MemberRef, Message, NewMessage, NewUser, OutboxEvent, StoreConfig, UserRole};
use chorus_testkit::db::{TestDatabase, TestEngine};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::Message as Frame;

const SECRET: &str = "crash-test-secret-0123456789abcdef0123456789";
/// Members, each sending from its own connection.
const USERS: usize = 3;
/// Messages each user would send if the server lived.
const PER_USER: usize = 150;
/// Acknowledgements (all users together) after which the server is killed.
const KILL_AFTER: usize = 60;
/// Upper bound of every phase.
const PHASE: Duration = Duration::from_secs(60);

/// A running `chorus serve`.
struct Served {
    child: Child,
    addr: SocketAddr,
}

impl Served {
    /// Starts `chorus serve --config <config>` and waits for its `listening` log line.
    async fn start(dir: &Path, config: &Path) -> Served {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chorus"));
        cmd.arg("serve").arg("--config").arg(config).current_dir(dir);
        cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
        // The file is the whole configuration: `CHORUS_*` variables of the
        // test environment (e.g. CHORUS_TEST_POSTGRES_URL) would override it.
        for (k, _) in std::env::vars() {
            if k.starts_with("CHORUS_") {
                cmd.env_remove(k);
            }
        }
        let mut child = cmd.spawn().expect("spawn chorus");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = oneshot::channel();
        // Reads the log to its end, so the server never blocks on a full pipe.
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else { continue };
                if v["message"] != "listening" {
                    continue;
                }
                if let (Some(tx), Some(addr)) = (tx.take(), v["addr"].as_str().and_then(|a| a.parse().ok())) {
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = tokio::time::timeout(PHASE, rx).await.expect("server did not start listening").expect("server exited before listening");
        Served { child, addr }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// SIGKILL, then waits for the process to be gone.
    async fn kill(&mut self) {
        let pid = i32::try_from(self.child.id().expect("pid")).expect("pid fits");
        // SAFETY: a signal to our own child process.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        assert_eq!(rc, 0, "kill({pid})");
        let status = tokio::time::timeout(PHASE, self.child.wait()).await.expect("did not die").expect("wait");
        assert!(!status.success(), "killed, not exited: {status:?}");
    }
}

fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A config file bound to an ephemeral port, logging JSON, with `extra` appended.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("chorus.toml");
    let text = format!(
        "data_dir = \"{}\"\n\n[server]\nbind = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\n\n{extra}\n",
        dir.join("data").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn token(user: &str) -> String {
    chorus_auth::mint_token(
        &chorus_auth::HmacSecret::new(SECRET),
        &chorus_auth::MintRequest { user: user.into(), ttl: Duration::from_secs(3600), ..Default::default() },
        &chorus_clock::SystemClock,
    )
    .expect("mint")
}

fn config_text(db_url: Option<&str>) -> String {
    let store = db_url.map(|u| format!("[store]\nurl = \"{u}\"\n")).unwrap_or_default();
    format!(
        "[auth]\nhmac_secret = \"{SECRET}\"\n\n\
         [rate_limits]\nmessages_per_minute = 600000.0\nmessages_burst = 100000\nrest_per_minute = 600000.0\nrest_burst = 100000\n\
         frames_per_second = 100000.0\nframes_burst = 100000\nuser_frames_per_second = 100000.0\nuser_frames_burst = 100000\n\n\
         {store}"
    )
}

async fn open_store(dir: &Path, url: Option<&str>) -> Arc<dyn chorus_store::Store> {
    let config = StoreConfig { url: url.map(str::to_owned), ..StoreConfig::default() };
    let store = chorus_store::open_store(&config, &dir.join("data")).await.expect("open store");
    store.migrate().await.expect("migrate");
    store
}

async fn connect(served: &Served, user: &str) -> Ws {
    let url = format!("ws://{}/ws?token={}", served.addr, token(user));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("ws connect");
    let first = next_json(&mut ws).await.expect("connected push");
    assert_eq!(first["type"], "connected", "{first}");
    ws
}

/// The next text frame as JSON; `None` once the connection is gone (the server died).
async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(PHASE, ws.next()).await.expect("no frame within the phase limit") {
            Some(Ok(Frame::Text(t))) => return Some(serde_json::from_str(&t).expect("json frame")),
            Some(Ok(Frame::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    /// message id -> channel id, acknowledged to this client's sends.
    acked: BTreeMap<String, String>,
    /// The send in flight when the server died: (channel id, text, idempotency key).
    in_flight: Option<(String, String, String)>,
    /// Per room: message ids received as `message_created`.
    received: BTreeMap<String, BTreeSet<String>>,
    /// Per room: the stream position of the last event received.
    position: BTreeMap<String, (u64, String)>,
}

impl Seen {
    fn note_push(&mut self, push: &Value) {
        let Some(room) = push["channel"].as_str().and_then(|c| c.strip_prefix("room:")) else { return };
        if let (Some(offset), Some(epoch)) = (push["offset"].as_u64(), push["epoch"].as_str()) {
            self.position.insert(room.to_owned(), (offset, epoch.to_owned()));
        }
        if push["type"] == "message_created" {
            let id = push["data"]["message"]["id"].as_str().expect("message id").to_owned();
            self.received.entry(room.to_owned()).or_default().insert(id);
        }
    }
}

/// Sends messages one after another (each waits for its reply), alternating
/// rooms, until the connection dies or all are sent; records every push.
async fn stream(mut ws: Ws, user: usize, rooms: Vec<String>, acks: Arc<AtomicUsize>, mut seen: Seen) -> Seen {
    for n in 0..PER_USER {
        let room = &rooms[n % rooms.len()];
        let text = format!("u{user} m{n}");
        let key = format!("u{user}-k{n}");
        let id = n as u64 + 100;
        let cmd = json!({ "id": id, "type": "send_message", "channel": format!("room:{room}"), "text": text, "idempotency_key": key });
        seen.in_flight = Some((room.clone(), text, key));
        if ws.send(Frame::Text(cmd.to_string().into())).await.is_err() {
            return seen;
        }
        loop {
            let Some(frame) = next_json(&mut ws).await else { return seen };
            if frame["id"].as_u64() == Some(id) {
                let result = frame.get("result").unwrap_or_else(|| panic!("send refused: {frame}"));
                let mid = result["message_id"].as_str().expect("message_id").to_owned();
                assert_eq!(result["duplicate"], false);
                seen.acked.insert(mid, room.clone());
                seen.in_flight = None;
                acks.fetch_add(1, Ordering::AcqRel);
                break;
            }
            seen.note_push(&frame);
        }
    }
    seen
}

/// Every message of a channel over REST, newest first, following `next_before`.
async fn refetch(http: &reqwest::Client, served: &Served, user: &str, channel: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut before: Option<i64> = None;
    loop {
        let mut url = served.url(&format!("/api/v1/channels/{channel}/messages?limit=200"));
        if let Some(b) = before {
            url.push_str(&format!("&before={b}"));
        }
        let r = http.get(url).bearer_auth(token(user)).send().await.expect("history");
        assert_eq!(r.status(), 200);
        let page: Value = r.json().await.expect("history json");
        all.extend(page["messages"].as_array().expect("messages").iter().cloned());
        match page["next_before"].as_i64() {
            Some(b) => before = Some(b),
            None => return all,
        }
    }
}

async fn crash(engine: TestEngine) {
    install_crypto();
    let dir = tempfile::tempdir().expect("temp dir");
    let db = TestDatabase::create(engine).await;
    let url = db.url.clone();
    let config = write_config(dir.path(), &config_text(url.as_deref()));

    // Users exist before the server starts (sign-up is not what this test is about).
    let store = open_store(dir.path(), url.as_deref()).await;
    let mut users = Vec::new();
    for i in 0..USERS {
        let u = store
            .create_user(NewUser { username: format!("crash{i}"), email: None, password_hash: None, role: UserRole::User, external: None })
            .await
            .expect("user");
        users.push(u.id);
    }
    store.close().await;

    let mut served = Served::start(dir.path(), &config).await;
    let http = reqwest::Client::new();
    let mut rooms = Vec::new();
    for name in ["one", "two"] {
        let r = http.post(served.url("/api/v1/channels")).bearer_auth(token(&users[0])).json(&json!({ "name": name })).send().await.expect("create");
        assert_eq!(r.status(), 201);
        let id = r.json::<Value>().await.expect("json")["id"].as_str().expect("id").to_owned();
        for u in &users[1..] {
            let r = http.post(served.url(&format!("/api/v1/channels/{id}/members"))).bearer_auth(token(&users[0])).json(&json!({ "kind": "user", "id": u })).send().await.expect("add");
            assert_eq!(r.status(), 201);
        }
        rooms.push(id);
    }

    // Every user subscribes to both rooms, then streams messages.
    let acks = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let mut ws = connect(&served, user).await;
        let mut seen = Seen::default();
        for (n, room) in rooms.iter().enumerate() {
            let cmd = json!({ "id": n, "type": "subscribe", "channel": format!("room:{room}") });
            ws.send(Frame::Text(cmd.to_string().into())).await.expect("subscribe");
            loop {
                let frame = next_json(&mut ws).await.expect("subscribe reply");
                if frame["id"].as_u64() == Some(n as u64) {
                    let r = &frame["result"];
                    seen.position.insert(room.clone(), (r["offset"].as_u64().expect("offset"), r["epoch"].as_str().expect("epoch").to_owned()));
                    break;
                }
                seen.note_push(&frame);
            }
        }
        tasks.push(tokio::spawn(stream(ws, i, rooms.clone(), acks.clone(), seen)));
    }

    // Mid-stream: SIGKILL.
    tokio::time::timeout(PHASE, async {
        while acks.load(Ordering::Acquire) < KILL_AFTER {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("the stream never reached the kill point");
    served.kill().await;
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(tokio::time::timeout(PHASE, t).await.expect("client did not notice the crash").expect("client task"));
    }
    let acked: BTreeMap<String, String> = seen.iter().flat_map(|s| s.acked.clone()).collect();
    let acked_total: usize = seen.iter().map(|s| s.acked.len()).sum();
    assert_eq!(acked.len(), acked_total, "every acknowledgement names a distinct message");
    assert!(acked.len() >= KILL_AFTER && acked.len() < USERS * PER_USER, "killed mid-stream: {} acknowledged", acked.len());

    // While it is down: a message committed with its event but never fanned
    // out, as a crash between commit and publish leaves it.
    let store = open_store(dir.path(), url.as_deref()).await;
    let builder = |m: &Message| OutboxEvent {
        channel: format!("room:{}", m.channel_id),
        event_type: "message_created".into(),
        payload: json!({ "message": {
            "id": m.id, "channel_id": m.channel_id, "seq": m.seq,
            "author": { "kind": "user", "id": m.author.id }, "text": m.text, "created_at": "1970-01-01T00:00:00.000Z"
        } })
        .to_string(),
    };
    let orphan = NewMessage { channel_id: rooms[0].clone(), author: MemberRef::user(&users[0]), text: "committed, never fanned out".into() };
    let InsertOutcome::Inserted(orphan) = store.insert_message(orphan, None, &builder).await.expect("insert") else { panic!("inserted") };
    store.close().await;

    // Restart on the same data.
    let served = Served::start(dir.path(), &config).await;
    // The relay's first pass takes what the previous run left, at once.
    let store = open_store(dir.path(), url.as_deref()).await;
    tokio::time::timeout(PHASE, async {
        while !store.pending_outbox(10).await.expect("outbox").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the outbox was not relayed after the restart");
    store.close().await;

    // A client whose send was cut off retries it with the same key: it gets
    // the original if that was committed, a new message otherwise, never two.
    let mut retried_new = 0;
    for (i, s) in seen.iter_mut().enumerate() {
        let Some((room, text, key)) = s.in_flight.clone() else { continue };
        let r = http
            .post(served.url(&format!("/api/v1/channels/{room}/messages")))
            .bearer_auth(token(&users[i]))
            .json(&json!({ "text": text, "idempotency_key": key }))
            .send()
            .await
            .expect("retry");
        let status = r.status().as_u16();
        let body: Value = r.json().await.expect("retry json");
        assert!(status == 200 || status == 201, "{status}: {body}");
        assert_eq!(body["message"]["text"], text.as_str());
        if status == 201 {
            retried_new += 1;
        }
        s.acked.insert(body["message"]["id"].as_str().expect("id").to_owned(), room.clone());
    }

    // Each client reconnects and recovers: resubscribe from its position
    // (the in-memory stream is gone, so `recovery_failed`), then refetch.
    let mut live_total = 0;
    for (i, user) in users.iter().enumerate() {
        let s = &mut seen[i];
        live_total += s.received.values().map(BTreeSet::len).sum::<usize>();
        let mut ws = connect(&served, user).await;
        for (n, room) in rooms.iter().enumerate() {
            let (offset, epoch) = s.position[room].clone();
            let cmd = json!({ "id": n, "type": "subscribe", "channel": format!("room:{room}"), "since": { "offset": offset, "epoch": epoch } });
            ws.send(Frame::Text(cmd.to_string().into())).await.expect("subscribe");
            let channel = format!("room:{room}");
            // Pushes of channels subscribed before (presence, ...) may come first.
            let reply = loop {
                let f = next_json(&mut ws).await.expect("subscribe reply");
                if f["id"].as_u64() == Some(n as u64) {
                    break f;
                }
                assert_ne!(f["channel"], channel.as_str(), "a push before the subscribe reply: {f}");
            };
            assert!(reply.get("result").is_some(), "{reply}");
            if reply["result"]["recovered"] == false {
                // The first push of the channel says so.
                let failed = loop {
                    let f = next_json(&mut ws).await.expect("recovery_failed");
                    if f["channel"] == channel.as_str() {
                        break f;
                    }
                };
                assert_eq!(failed["type"], "recovery_failed", "{failed}");
            }
            for m in refetch(&http, &served, user, room).await {
                s.received.entry(room.clone()).or_default().insert(m["id"].as_str().expect("id").to_owned());
            }
        }
        // The relayed event is in the room's stream history.
        if i == 0 {
            let cmd = json!({ "id": 99, "type": "history", "channel": format!("room:{}", rooms[0]) });
            ws.send(Frame::Text(cmd.to_string().into())).await.expect("history");
            let reply = loop {
                let f = next_json(&mut ws).await.expect("history reply");
                if f["id"] == 99 {
                    break f;
                }
            };
            let relayed = reply["result"]["events"].as_array().expect("events").iter().any(|e| e["type"] == "message_created" && e["data"]["message"]["id"] == orphan.message.id.as_str());
            assert!(relayed, "the committed-but-undelivered message was not published after the restart: {reply}");
        }
    }

    // Every acknowledged message is stored, once, in its channel, and reached every member.
    let mut stored: BTreeMap<String, String> = BTreeMap::new();
    let mut texts = BTreeSet::new();
    for room in &rooms {
        for m in refetch(&http, &served, &users[0], room).await {
            assert!(texts.insert(m["text"].as_str().expect("text").to_owned()), "stored twice: {m}");
            stored.insert(m["id"].as_str().expect("id").to_owned(), room.clone());
        }
    }
    let acked: BTreeMap<String, String> = seen.iter().flat_map(|s| s.acked.clone()).collect();
    for (id, room) in &acked {
        assert_eq!(stored.get(id), Some(room), "acknowledged message {id} is not stored in its channel");
        for (i, s) in seen.iter().enumerate() {
            assert!(s.received.get(room).is_some_and(|r| r.contains(id)), "member {i} never got acknowledged message {id}");
        }
    }
    // Nothing beyond what was sent: the acknowledged (cut-off sends included,
    // once each, after their retry) and the orphan.
    assert_eq!(stored.len(), acked.len() + 1, "stored messages that no client can account for");
    eprintln!(
        "crash test ({engine:?}): {} acknowledged before the kill, {} stored, {} delivered live before the crash, {} retried sends stored anew",
        acked_total,
        stored.len(),
        live_total,
        retried_new
    );

    drop(served);
    db.drop_now().await;
}

#[tokio::test]
async fn sqlite_sigkill_mid_stream_loses_no_acknowledged_message() {
    tokio::time::timeout(Duration::from_secs(180), crash(TestEngine::Sqlite)).await.expect("crash test took too long");
}

#[tokio::test]
async fn postgres_sigkill_mid_stream_loses_no_acknowledged_message() {
    tokio::time::timeout(Duration::from_secs(180), crash(TestEngine::Postgres)).await.expect("crash test took too long");
}
