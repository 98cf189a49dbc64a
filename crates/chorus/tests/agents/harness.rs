//! Helpers for run tests: channels with agents, messages, and a watcher that
//! collects each run's events from a channel subscription.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::Duration;

use chorus::config::Config;
use chorus_llm::ModelConfig;
use chorus_testkit::WsClient;
use serde_json::{Value, json};

use crate::common::{App, TestUser};

/// Bounds every wait of a run test.
pub const WAIT: Duration = Duration::from_secs(30);

/// The demo model, unpaced and obeying `[fault:…]` directives; limits that
/// tests would otherwise hit raised.
pub fn fast_demo(c: &mut Config) {
    c.agents.models = vec![ModelConfig { tokens_per_second: 0.0, faults: true, ..ModelConfig::demo() }];
    relaxed_limits(c);
}

/// The demo model at `tokens_per_second` (runs that last a while).
pub fn paced_demo(tokens_per_second: f64) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.agents.models = vec![ModelConfig { tokens_per_second, faults: true, ..ModelConfig::demo() }];
        relaxed_limits(c);
    }
}

pub fn relaxed_limits(c: &mut Config) {
    c.rate_limits.messages_per_minute = 600_000.0;
    c.rate_limits.messages_burst = 100_000;
    c.rate_limits.rest_per_minute = 600_000.0;
    c.rate_limits.rest_burst = 100_000;
    c.rate_limits.frames_per_second = 100_000.0;
    c.rate_limits.frames_burst = 100_000;
    c.rate_limits.user_frames_per_second = 100_000.0;
    c.rate_limits.user_frames_burst = 100_000;
    c.chat.channels_per_user = 1_000;
    c.chat.agents_per_user = 1_000;
    c.chat.agent_creates_per_minute = 100_000;
    c.agents.channel_runs_per_minute = 0;
}

/// A channel: its id and stream name.
#[derive(Debug, Clone)]
pub struct Room {
    pub id: String,
    pub stream: String,
}

pub async fn room(app: &App, owner: &TestUser, name: &str) -> Room {
    let r = app.post("/api/v1/channels", &owner.token, json!({ "name": name })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    Room { id: r.body["id"].as_str().expect("id").to_owned(), stream: r.body["stream"].as_str().expect("stream").to_owned() }
}

pub async fn add_user(app: &App, room: &Room, owner: &TestUser, user: &TestUser) {
    let r = app.post(&format!("/api/v1/channels/{}/members", room.id), &owner.token, json!({ "kind": "user", "id": user.id })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
}

/// Creates an agent owned by `owner` (fields of `extra` override the
/// defaults) and makes it a member of `room`; returns its id.
pub async fn agent_in(app: &App, owner: &TestUser, room: &Room, name: &str, extra: Value) -> String {
    let mut body = json!({ "name": name, "persona": "A patient helper who answers briefly.", "tools": ["clock", "calculator"] });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    let r = app.post("/api/v1/agents", &owner.token, body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let id = r.body["id"].as_str().expect("agent id").to_owned();
    let r = app.post(&format!("/api/v1/channels/{}/members", room.id), &owner.token, json!({ "kind": "agent", "id": id })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    id
}

/// Sends a message over REST; returns the stored message.
pub async fn say(app: &App, user: &TestUser, room: &Room, text: &str) -> Value {
    let r = app.post(&format!("/api/v1/channels/{}/messages", room.id), &user.token, json!({ "text": text })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["message"].clone()
}

/// Run events from one subscription, by run.
pub struct Watch {
    pub ws: WsClient,
    pub runs: BTreeMap<String, Vec<Value>>,
    /// Every push of the channel, in order.
    pub all: Vec<Value>,
    /// Offsets recorded (history and live pushes may overlap).
    seen: std::collections::BTreeSet<u64>,
    stream: String,
}

pub const RUN_EVENTS: &[&str] = &[
    "agent_queued",
    "agent_started",
    "agent_thinking",
    "agent_text_delta",
    "tool_executing",
    "tool_completed",
    "agent_completed",
    "agent_error",
];

pub fn is_terminal(event: &Value) -> bool {
    matches!(event["type"].as_str(), Some("agent_completed" | "agent_error"))
}

impl Watch {
    /// Subscribes `user`'s new connection to `room`.
    pub async fn new(app: &App, user: &TestUser, room: &Room) -> Watch {
        let ws = app.ws(&user.token).await;
        Self::subscribed(ws, room).await
    }

    /// Subscribes `user`'s new connection to the server at `addr` (another
    /// node of the deployment) to `room`.
    pub async fn at(addr: std::net::SocketAddr, user: &TestUser, room: &Room) -> Watch {
        let mut ws = WsClient::connect(&format!("ws://{addr}/ws?token={}", user.token)).await.expect("ws connect");
        let first = ws.push().await;
        assert_eq!(first["type"], "connected", "{first}");
        Self::subscribed(ws, room).await
    }

    async fn subscribed(mut ws: WsClient, room: &Room) -> Watch {
        let r = ws.request(json!({ "type": "subscribe", "channel": room.stream })).await;
        assert!(r.get("result").is_some(), "{r}");
        Watch { ws, runs: BTreeMap::new(), all: Vec::new(), seen: Default::default(), stream: room.stream.clone() }
    }

    /// Records what the channel's history holds from before the subscription
    /// (events published before it took effect).
    pub async fn backfill(&mut self) {
        let r = self.ws.request(json!({ "type": "history", "channel": self.stream, "limit": 1000 })).await;
        for p in r["result"]["events"].as_array().expect("history events") {
            self.record(p.clone());
        }
    }

    fn record(&mut self, p: Value) -> bool {
        if let Some(offset) = p["offset"].as_u64()
            && !self.seen.insert(offset)
        {
            return false;
        }
        if RUN_EVENTS.contains(&p["type"].as_str().unwrap_or_default()) {
            let run = p["data"]["run_id"].as_str().expect("run_id").to_owned();
            self.runs.entry(run).or_default().push(p.clone());
        }
        self.all.push(p);
        true
    }

    /// The next push of the channel not recorded yet (recorded).
    pub async fn next(&mut self) -> Value {
        loop {
            let p = tokio::time::timeout(WAIT, self.ws.push()).await.expect("no push in time");
            if self.record(p.clone()) {
                return p;
            }
        }
    }

    /// Reads until a push of `kind` arrives.
    pub async fn until(&mut self, kind: &str) -> Value {
        loop {
            let p = self.next().await;
            if p["type"] == kind {
                return p;
            }
        }
    }

    /// Reads until `count` runs have had their terminal event.
    pub async fn until_ended(&mut self, count: usize) {
        while self.ended() < count {
            self.next().await;
        }
    }

    pub fn ended(&self) -> usize {
        self.runs.values().filter(|events| events.iter().any(is_terminal)).count()
    }

    /// A run's event types, in order.
    pub fn types(&self, run_id: &str) -> Vec<String> {
        self.runs.get(run_id).map(|e| e.iter().map(|p| p["type"].as_str().unwrap_or_default().to_owned()).collect()).unwrap_or_default()
    }

    pub fn terminal(&self, run_id: &str) -> Value {
        self.runs[run_id].iter().find(|p| is_terminal(p)).cloned().expect("terminal event")
    }
}

/// Checks one run's events: `seq` 1, 2, 3, … without gap or repeat, the
/// header on each, exactly one terminal event and nothing after it.
pub fn assert_well_formed(run_id: &str, events: &[Value]) {
    assert!(!events.is_empty(), "run {run_id}: no events");
    for (i, e) in events.iter().enumerate() {
        let d = &e["data"];
        assert_eq!(d["run_id"], run_id);
        assert_eq!(d["seq"].as_i64(), Some(i as i64 + 1), "run {run_id}: seq of event {i} in {events:#?}");
        assert!(d["agent_id"].is_string() && d["thread_id"].as_str() == e["channel"].as_str(), "header of {e}");
    }
    let terminals = events.iter().filter(|e| is_terminal(e)).count();
    assert_eq!(terminals, 1, "run {run_id}: {terminals} terminal events in {events:#?}");
    assert!(is_terminal(events.last().expect("events")), "run {run_id}: something after the terminal event: {events:#?}");
}

/// The concatenated `delta`s of a run.
pub fn streamed_text(events: &[Value]) -> String {
    events.iter().filter(|e| e["type"] == "agent_text_delta").map(|e| e["data"]["delta"].as_str().unwrap_or_default()).collect()
}
