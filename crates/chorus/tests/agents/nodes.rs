//! Runs across nodes: two servers of one deployment (one PostgreSQL, one
//! Redis, as `scripts/test.sh` provides them) share the runs. A cancel asked
//! on either reaches the node that owns the run; the per-user run limit
//! counts the runs of both; the runs of a node whose heartbeat stops end
//! with one `interrupted`, seen on every node.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus::config::{BrokerKind, Config};
use chorus::server::Server;
use chorus_core::NodeId;
use chorus_core::broker::{Broker, Control, NodeSink};
use chorus_core::publication::Publication;
use chorus_redis::{RedisBroker, RedisBrokerConfig, RedisMetrics};
use chorus_store::{NewRun, RunClaim, RunClaimRequest, RunStatus};
use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::common::{App, Resp, TestUser};
use crate::harness::{Room, WAIT, Watch, add_user, agent_in, is_terminal, paced_demo, room, say};

fn redis_url() -> String {
    std::env::var("CHORUS_TEST_REDIS_URL").expect("CHORUS_TEST_REDIS_URL (run the suite through scripts/test.sh)")
}

/// Node `a` of a deployment over Redis (its own key prefix: tests share the
/// suite's Redis), heartbeats and rescans short so a stopped node is seen quickly.
fn on_redis(prefix: String, tweak: impl FnOnce(&mut Config)) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.node_id = Some("a".into());
        c.broker.kind = BrokerKind::Redis;
        c.broker.redis = redis_config(&prefix);
        c.agents.rescan_interval = Duration::from_millis(100);
        tweak(c);
    }
}

fn redis_config(prefix: &str) -> RedisBrokerConfig {
    RedisBrokerConfig {
        url: redis_url(),
        key_prefix: prefix.to_owned(),
        heartbeat_interval: Duration::from_millis(100),
        node_ttl: Duration::from_millis(1_000),
        ..RedisBrokerConfig::default()
    }
}

fn prefix() -> String {
    format!("runs{}", NodeId::random())
}

/// Node `b`: `app`'s configuration with another node id.
async fn second_node(app: &App) -> Server {
    let config = Config { node_id: Some("b".into()), ..app.config.clone() };
    let server = Server::start(&config, Arc::new(app.clock.clone())).await.expect("node b starts");
    until_live(&app.server().hub().clone(), "b").await;
    server
}

/// Waits until `hub` sees `node` alive (both nodes heartbeat through Redis).
async fn until_live(hub: &chorus_core::Hub, node: &str) {
    tokio::time::timeout(WAIT, async {
        loop {
            if hub.live_nodes().await.is_ok_and(|n| n.contains(&NodeId::new(node))) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("node {node} never seen alive"));
}

async fn call_at(app: &App, addr: SocketAddr, path: &str, user: &TestUser, body: Value) -> Resp {
    app.send(app.http.post(format!("http://{addr}{path}")).bearer_auth(&user.token).json(&body)).await
}

async fn owner_of(app: &App, run_id: &str) -> String {
    app.server().store().get_run(run_id).await.expect("store").expect("run").node_id.expect("claimed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_on_any_node_reaches_the_node_that_owns_the_run() {
    let app = App::start_with(TestEngine::Postgres, on_redis(prefix(), paced_demo(8.0))).await;
    let b = second_node(&app).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    agent_in(&app, &alice, &room, "Helper", json!({})).await;
    let mut on_b = Watch::at(b.addr(), &alice, &room).await;
    say(&app, &alice, &room, "@Helper tell me a long story about the sea").await;
    let started = on_b.until("agent_started").await;
    let run_id = started["data"]["run_id"].as_str().expect("run id").to_owned();
    let owner = owner_of(&app, &run_id).await;
    // Asked on the node that does not own it.
    let elsewhere = if owner == "a" { b.addr() } else { app.server().addr() };
    let path = format!("/api/v1/runs/{run_id}/cancel");
    let r = call_at(&app, elsewhere, &path, &alice, json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    on_b.until_ended(1).await;
    assert_eq!(on_b.terminal(&run_id)["data"]["code"], "cancelled", "{:?}", on_b.types(&run_id));
    crate::harness::assert_well_formed(&run_id, &on_b.runs[&run_id]);
    // Idempotent, from either node.
    for addr in [elsewhere, app.server().addr(), b.addr()] {
        let r = call_at(&app, addr, &path, &alice, json!({})).await;
        assert_eq!((r.status, r.body["status"].as_str()), (200, Some("cancelled")), "{:?}", r.body);
    }
    b.shutdown().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_user_run_limit_counts_the_runs_of_every_node() {
    let limit = 2;
    let app = App::start_with(
        TestEngine::Postgres,
        on_redis(prefix(), |c| {
            paced_demo(2.0)(c);
            c.agents.runs_per_user = limit;
            c.agents.running_per_user = limit;
        }),
    )
    .await;
    let b = second_node(&app).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    // One agent per start: two runs of one agent in one channel go to one
    // node (see `on_busy_across_nodes`), which is not what this counts.
    let mut agents = Vec::new();
    for i in 0..6 {
        agents.push(agent_in(&app, &alice, &room, &format!("Helper{i}"), json!({ "response_policy": "manual" })).await);
    }
    // Six starts at once, half through each node.
    let starts = (0..6).map(|i| {
        let addr = if i % 2 == 0 { app.server().addr() } else { b.addr() };
        let path = format!("/api/v1/agents/{}/runs", agents[i % agents.len()]);
        let (app, alice, room) = (&app, &alice, &room);
        async move { call_at(app, addr, &path, alice, json!({ "channel_id": room.id })).await }
    });
    let answers = futures_util::future::join_all(starts).await;
    let mut active = 0;
    for r in &answers {
        assert_eq!(r.status, 202, "{:?}", r.body);
        match r.body["status"].as_str() {
            Some("queued" | "running") => active += 1,
            Some("failed") => assert_eq!(r.body["error"]["code"], "queue_full", "{:?}", r.body),
            other => panic!("unexpected status {other:?}: {:?}", r.body),
        }
    }
    assert_eq!(active, limit, "{answers:#?}");
    let r = app.get(&format!("/api/v1/channels/{}/runs?status=active", room.id), &alice.token).await;
    assert_eq!(r.body["runs"].as_array().map(Vec::len), Some(limit), "{:?}", r.body);
    b.shutdown().await;
    app.stop().await;
}

/// A sink for a node that only heartbeats.
struct Deaf;

impl NodeSink for Deaf {
    fn publication(&self, _: Arc<Publication>) {}
    fn control(&self, _: Control) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_runs_of_a_node_whose_heartbeat_stops_end_once_as_interrupted_on_every_node() {
    let prefix = prefix();
    let app = App::start_with(TestEngine::Postgres, on_redis(prefix.clone(), paced_demo(8.0))).await;
    let b = second_node(&app).await;
    // A third node that owns a running run, then stops as a crash would
    // (no goodbye: its heartbeat just expires).
    let ghost_id = NodeId::new("ghost");
    let ghost = RedisBroker::connect(redis_config(&prefix), ghost_id.clone(), Arc::new(chorus_clock::SystemClock), RedisMetrics::default())
        .await
        .expect("ghost engine");
    ghost.attach(&ghost_id, Arc::new(Deaf)).await.expect("ghost attached");
    until_live(app.server().hub(), "ghost").await;

    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = room(&app, &alice, "general").await;
    add_user(&app, &room, &alice, &bob).await;
    let agent = agent_in(&app, &alice, &room, "Helper", json!({ "response_policy": "manual" })).await;
    let store = app.server().store();
    let run = store
        .create_run(NewRun {
            agent_id: agent,
            channel_id: room.id.clone(),
            trigger_message_id: None,
            triggered_by: Some(alice.id.clone()),
            parent_run_id: None,
            hop: 0,
        })
        .await
        .expect("run");
    let claim = RunClaimRequest { run_id: &run.id, node: "ghost", dead_owner: None, runs_per_user: 10 };
    assert!(matches!(store.claim_run(claim).await.expect("claim"), RunClaim::Claimed(_)));
    store.start_run(&run.id, "ghost", "demo", "demo", 0).await.expect("start").expect("started");

    let mut on_a = Watch::new(&app, &alice, &room).await;
    let mut on_b = Watch::at(b.addr(), &bob, &room).await;
    ghost.halt().await;
    for watch in [&mut on_a, &mut on_b] {
        watch.until_ended(1).await;
        let events = &watch.runs[&run.id];
        assert_eq!(events.iter().filter(|e| is_terminal(e)).count(), 1, "{events:#?}");
        assert_eq!(watch.terminal(&run.id)["data"]["code"], "interrupted", "{events:#?}");
    }
    let stored = store.get_run(&run.id).await.expect("store").expect("run");
    assert_eq!((stored.status, stored.error_code.as_deref()), (RunStatus::Failed, Some("interrupted")));
    // Nothing more of the run follows: a message sent after it arrives with no second ending before it.
    say(&app, &alice, &room, "after the ending").await;
    on_b.until("message_created").await;
    assert_eq!(on_b.runs[&run.id].iter().filter(|e| is_terminal(e)).count(), 1);
    b.shutdown().await;
    app.stop().await;
}

/// On the in-memory engine (one node), a run owned by a node that is not
/// attached ends as interrupted the same way.
#[tokio::test]
async fn a_run_of_a_node_that_is_gone_ends_as_interrupted_on_the_memory_engine() {
    let app = App::start_with(TestEngine::Sqlite, |c| {
        paced_demo(8.0)(c);
        c.agents.rescan_interval = Duration::from_millis(50);
    })
    .await;
    let alice = app.user("alice").await;
    let room: Room = room(&app, &alice, "general").await;
    let agent = agent_in(&app, &alice, &room, "Helper", json!({ "response_policy": "manual" })).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    let store = app.server().store();
    let new = NewRun { agent_id: agent, channel_id: room.id.clone(), trigger_message_id: None, triggered_by: Some(alice.id.clone()), parent_run_id: None, hop: 0 };
    let run = store.create_run(new).await.expect("run");
    let claim = RunClaimRequest { run_id: &run.id, node: "gone", dead_owner: None, runs_per_user: 10 };
    assert!(matches!(store.claim_run(claim).await.expect("claim"), RunClaim::Claimed(_)));
    store.start_run(&run.id, "gone", "demo", "demo", 0).await.expect("start").expect("started");
    watch.until_ended(1).await;
    assert_eq!(watch.terminal(&run.id)["data"]["code"], "interrupted");
    app.stop().await;
}

/// Two nodes on `engine` (one Redis): an agent answers one run at a time
/// per channel across nodes. `enqueue`: the second message, handled on the
/// other node, starts its run only after the first run ended; `reject`:
/// it ends at once with `busy`. Every run is numbered 1, 2, 3… with one
/// ending, seen alike on both nodes.
async fn on_busy_across_nodes(engine: TestEngine) {
    let app = App::start_with(engine, on_redis(prefix(), paced_demo(40.0))).await;
    let b = second_node(&app).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let queue = agent_in(&app, &alice, &room, "Queue", json!({})).await;
    let reject = agent_in(&app, &alice, &room, "Reject", json!({ "on_busy": "reject" })).await;
    let mut on_a = Watch::new(&app, &alice, &room).await;
    let mut on_b = Watch::at(b.addr(), &alice, &room).await;
    let say_on_b = |text: &'static str| {
        let (app, alice, room, addr) = (&app, &alice, &room, b.addr());
        async move {
            let r = call_at(app, addr, &format!("/api/v1/channels/{}/messages", room.id), alice, json!({ "text": text })).await;
            assert_eq!(r.status, 201, "{:?}", r.body);
        }
    };
    let runs_of = |w: &Watch, agent: &str| -> Vec<String> {
        w.runs.iter().filter(|(_, e)| e[0]["data"]["agent_id"] == agent).map(|(id, _)| id.clone()).collect()
    };

    // enqueue: the first run goes on node a, the second message is handled on b.
    say(&app, &alice, &room, "@Queue one").await;
    let first = until_started_by(&mut on_a, &queue).await;
    say_on_b("@Queue two").await;
    on_a.until_ended(2).await;
    let runs = runs_of(&on_a, &queue);
    assert_eq!(runs.len(), 2, "{runs:?}");
    let second = runs.iter().find(|r| **r != first).expect("the second run").clone();
    let offset_of = |w: &Watch, run: &str, kind: &str| {
        w.runs[run].iter().find(|e| e["type"] == kind).and_then(|e| e["offset"].as_u64()).unwrap_or_else(|| panic!("{kind} of {run}: {:?}", w.types(run)))
    };
    assert!(
        offset_of(&on_a, &first, "agent_completed") < offset_of(&on_a, &second, "agent_started"),
        "one run per agent and channel at a time, across nodes: {:?} / {:?}",
        on_a.types(&first),
        on_a.types(&second)
    );
    assert_eq!(on_a.terminal(&second)["type"], "agent_completed", "{:?}", on_a.types(&second));
    assert_eq!(owner_of(&app, &first).await, owner_of(&app, &second).await, "one owner for the pair");

    // reject: the second run ends with `busy`, once.
    say(&app, &alice, &room, "@Reject one").await;
    until_started_by(&mut on_a, &reject).await;
    say_on_b("@Reject two").await;
    on_a.until_ended(4).await;
    let runs = runs_of(&on_a, &reject);
    let mut codes: Vec<String> =
        runs.iter().map(|r| on_a.terminal(r)["data"]["code"].as_str().unwrap_or("completed").to_owned()).collect();
    codes.sort();
    assert_eq!(codes, ["busy", "completed"], "{runs:?}");

    on_b.until_ended(4).await;
    for watch in [&on_a, &on_b] {
        assert_eq!(watch.runs.len(), 4);
        for (run, events) in &watch.runs {
            crate::harness::assert_well_formed(run, events);
        }
    }
    b.shutdown().await;
    app.stop().await;
}

/// Reads `w` until `agent` starts a run; its id.
async fn until_started_by(w: &mut Watch, agent: &str) -> String {
    loop {
        let p = w.until("agent_started").await;
        if p["data"]["agent_id"] == agent {
            return p["data"]["run_id"].as_str().expect("run id").to_owned();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_busy_holds_across_nodes_on_sqlite() {
    on_busy_across_nodes(TestEngine::Sqlite).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_busy_holds_across_nodes_on_postgres() {
    on_busy_across_nodes(TestEngine::Postgres).await
}

/// An AG-UI stream on node b for an agent busy in the channel on node a:
/// the run waits for node a (which runs it after its current run), so b's
/// stream ends at once with `RUN_ERROR` `not_watchable` instead of hanging,
/// and the run's events and answer come on the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agui_stream_for_a_run_another_node_takes_ends_with_not_watchable() {
    let app = App::start_with(TestEngine::Sqlite, on_redis(prefix(), paced_demo(40.0))).await;
    let b = second_node(&app).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let agent = agent_in(&app, &alice, &room, "Helper", json!({})).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Helper one").await;
    let first = watch.until("agent_started").await["data"]["run_id"].as_str().expect("run id").to_owned();
    let body = json!({
        "threadId": room.stream, "runId": "client-run", "state": {}, "tools": [], "context": [], "forwardedProps": {},
        "messages": [{ "id": "m1", "role": "user", "content": "and you?" }],
    });
    let res = app
        .http
        .post(format!("http://{}/api/v1/agui/{agent}", b.addr()))
        .bearer_auth(&alice.token)
        .json(&body)
        .send()
        .await
        .expect("agui request");
    assert_eq!(res.status(), 200);
    let text = tokio::time::timeout(WAIT, res.text()).await.expect("the stream ends").expect("body");
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).expect("frame json"))
        .collect();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or_default()).collect();
    // A rescan on node a may take the run before b's claim: either way b does not produce it.
    assert_eq!(types, ["RUN_STARTED", "RUN_ERROR"], "{events:#?}");
    assert_eq!(events[1]["code"], "not_watchable", "{events:#?}");
    // With a frontend tool (known to node b only) it cannot wait for node a: `busy`.
    let with_tool = json!({
        "threadId": room.stream, "runId": "client-run-2", "state": {}, "context": [], "forwardedProps": {},
        "tools": [{ "name": "change_background", "description": "Sets the page background", "parameters": { "type": "object", "properties": {} } }],
        "messages": [{ "id": "m2", "role": "user", "content": "paint it" }],
    });
    let res = app
        .http
        .post(format!("http://{}/api/v1/agui/{agent}", b.addr()))
        .bearer_auth(&alice.token)
        .json(&with_tool)
        .send()
        .await
        .expect("agui request");
    let text = tokio::time::timeout(WAIT, res.text()).await.expect("the stream ends").expect("body");
    let events: Vec<Value> =
        text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).expect("frame json")).collect();
    let last = events.last().expect("frames");
    assert_eq!((last["type"].as_str(), last["code"].as_str()), (Some("RUN_ERROR"), Some("busy")), "{events:#?}");
    // The client's first run goes on on node a after the first, and lands in the channel.
    watch.until_ended(3).await;
    let mut endings: Vec<String> = watch
        .runs
        .keys()
        .filter(|r| **r != first)
        .map(|r| watch.terminal(r)["data"]["code"].as_str().unwrap_or("completed").to_owned())
        .collect();
    endings.sort();
    assert_eq!(endings, ["busy", "completed"], "{:#?}", watch.runs);
    for (run, events) in &watch.runs {
        crate::harness::assert_well_formed(run, events);
    }
    b.shutdown().await;
    app.stop().await;
}
