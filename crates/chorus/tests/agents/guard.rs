//! Runaway protection: the loop guard between agents, the tool loop and
//! round limits, a panic inside a run, the silence watchdog.

use std::time::Duration;

use chorus_testkit::db::TestEngine;
use serde_json::json;

use crate::common::App;
use crate::harness::*;

both_engines!(two_always_agents_mentioning_each_other_stop_at_the_hop_limit, super::hops);
both_engines!(the_channel_run_rate_stops_a_chain, super::rate);
both_engines!(the_same_tool_call_a_third_time_ends_the_run, super::tool_loop);
both_engines!(a_panic_ends_only_its_run_with_internal, super::panic);
both_engines!(a_silent_run_ends_with_timeout, super::silence);

/// Reads until every run seen has ended and the channel has no active run.
async fn quiesce(app: &App, user: &crate::common::TestUser, room: &Room, watch: &mut Watch) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        watch.until_ended(watch.runs.len()).await;
        let active = app.get(&format!("/api/v1/channels/{}/runs?status=active", room.id), &user.token).await;
        if active.body["runs"].as_array().is_some_and(Vec::is_empty) && watch.ended() == watch.runs.len() {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "runs still active: {}", active.body);
        // A run's first event may still be on its way, or the list may not
        // show an ending yet: read what comes, then look again.
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), watch.next()).await;
    }
}

async fn hops(engine: TestEngine) {
    // One hop allowed: the demo model's quote of a quote is cut after some
    // words, so only the first answers are sure to carry both mentions on.
    let app = App::start_with(engine, |c| {
        fast_demo(c);
        c.agents.max_hops = 1;
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "loop").await;
    agent_in(&app, &alice, &room, "Ann", json!({ "response_policy": "always", "tools": [] })).await;
    agent_in(&app, &alice, &room, "Bob", json!({ "response_policy": "always", "tools": [] })).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    // The demo model quotes what it answers, so each answer mentions both again.
    say(&app, &alice, &room, "@Ann @Bob ping").await;
    let limited = watch.until("agent_chain_limited").await;
    assert_eq!((limited["data"]["reason"].as_str(), limited["data"]["hop"].as_i64()), (Some("hops"), Some(2)));
    assert!(limited["data"]["parent_run_id"].is_string() && limited["data"]["message_id"].is_string());
    quiesce(&app, &alice, &room, &mut watch).await;
    let all = app.get(&format!("/api/v1/channels/{}/runs?limit=200", room.id), &alice.token).await;
    let runs = all.body["runs"].as_array().unwrap();
    assert!(runs.iter().all(|r| r["hop"].as_i64().unwrap() <= 1), "{runs:#?}");
    assert!(runs.iter().any(|r| r["hop"] == 1), "the chain went up to the limit");
    assert!(runs.iter().filter(|r| r["hop"].as_i64().unwrap() > 0).all(|r| r["parent_run_id"].is_string()));
    assert!(runs.iter().all(|r| r["triggered_by"].as_str() == Some(alice.id.as_str())), "the person who started the chain");
    for (run, events) in &watch.runs {
        assert_well_formed(run, events);
    }
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let stopped = chorus_testkit::metric(&metrics, "chorus_agent_chain_limited_total{reason=\"hops\"}").unwrap_or(0.0);
    assert!(stopped >= 1.0, "{metrics}");
    app.stop().await;
}

async fn rate(engine: TestEngine) {
    let app = App::start_with(engine, |c| {
        fast_demo(c);
        c.agents.channel_runs_per_minute = 3;
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "loop").await;
    agent_in(&app, &alice, &room, "Ann", json!({ "response_policy": "always", "tools": [] })).await;
    agent_in(&app, &alice, &room, "Bob", json!({ "response_policy": "always", "tools": [] })).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Ann @Bob ping").await;
    let limited = watch.until("agent_chain_limited").await;
    assert_eq!(limited["data"]["reason"], "rate");
    quiesce(&app, &alice, &room, &mut watch).await;
    let all = app.get(&format!("/api/v1/channels/{}/runs?limit=200", room.id), &alice.token).await;
    assert_eq!(watch.runs.len(), 3, "three runs in the minute, no more: {}", all.body);
    app.stop().await;
}

async fn tool_loop(engine: TestEngine) {
    let app = App::start_with(engine, fast_demo).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "tools").await;
    agent_in(&app, &alice, &room, "Looper", json!({ "tools": ["clock"] })).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Looper [fault:tool-loop] again and again").await;
    watch.until_ended(1).await;
    let (run, events) = watch.runs.iter().next().unwrap();
    assert_well_formed(run, events);
    let terminal = watch.terminal(run);
    assert_eq!((terminal["data"]["code"].as_str(), terminal["data"]["retryable"].as_bool()), (Some("tool_loop"), Some(false)));
    let calls = events.iter().filter(|e| e["type"] == "tool_executing").count();
    assert_eq!(calls, 2, "the third identical call is not made");
    let r = app.get(&format!("/api/v1/runs/{run}"), &alice.token).await;
    assert_eq!((r.body["status"].as_str(), r.body["error"]["code"].as_str()), (Some("failed"), Some("tool_loop")));
    app.stop().await;
}

async fn panic(engine: TestEngine) {
    let app = App::start_with(engine, fast_demo).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "boom").await;
    agent_in(&app, &alice, &room, "Fragile", json!({})).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Fragile [fault:panic]").await;
    watch.until_ended(1).await;
    let (run, events) = watch.runs.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
    assert_well_formed(&run, &events);
    assert_eq!(watch.terminal(&run)["data"]["code"], "internal");
    // The server goes on.
    say(&app, &alice, &room, "@Fragile are you there").await;
    watch.until_ended(2).await;
    let next = watch.runs.keys().find(|k| **k != run).unwrap().clone();
    assert_eq!(watch.terminal(&next)["type"], "agent_completed");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(chorus_testkit::metric(&metrics, "chorus_panics_total{task=\"agent_run\"}").unwrap_or(0.0) >= 1.0, "{metrics}");
    app.stop().await;
}

async fn silence(engine: TestEngine) {
    let app = App::start_with(engine, |c| {
        fast_demo(c);
        c.agents.silence_timeout = Duration::from_millis(800);
        // The provider's own deadlines are longer: the watchdog must act.
        c.agents.resilience.first_byte_timeout = Duration::from_secs(60);
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "quiet").await;
    agent_in(&app, &alice, &room, "Mute", json!({})).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Mute [fault:stall]").await;
    watch.until_ended(1).await;
    let (run, events) = watch.runs.iter().next().unwrap();
    assert_well_formed(run, events);
    let terminal = watch.terminal(run);
    assert_eq!((terminal["data"]["code"].as_str(), terminal["data"]["retryable"].as_bool()), (Some("timeout"), Some(true)));
    app.stop().await;
}
