//! Runs across disconnects, shutdowns and restarts.

use std::collections::BTreeSet;
use std::time::Duration;

use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::common::App;
use crate::harness::*;

both_engines!(a_client_cut_off_for_five_seconds_recovers_every_run_event, super::recovery);
both_engines!(shutdown_ends_running_runs_and_waiting_ones_resume_after_restart, super::shutdown);

async fn recovery(engine: TestEngine) {
    let app = App::start_with(engine, paced_demo(12.0)).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    agent_in(&app, &alice, &room, "Storyteller", json!({})).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Storyteller please tell me everything about the long voyage across the northern sea").await;
    // Live for a while, then cut off mid-run.
    let mut last = watch.until("agent_text_delta").await;
    let run_id = last["data"]["run_id"].as_str().unwrap().to_owned();
    let before: Vec<Value> = watch.runs[&run_id].clone();
    let position = json!({ "offset": last["offset"], "epoch": last["epoch"] });
    drop(watch);
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut ws = app.ws(&alice.token).await;
    let r = ws.request(json!({ "type": "subscribe", "channel": room.stream, "since": position })).await;
    assert_eq!(r["result"]["recovered"], true, "{r}");
    let mut after: Vec<Value> = Vec::new();
    loop {
        let p = tokio::time::timeout(WAIT, ws.push()).await.expect("push");
        assert_ne!(p["type"], "recovery_failed");
        let offset = p["offset"].as_u64().unwrap();
        assert!(offset > last["offset"].as_u64().unwrap(), "in order, no duplicate: {p}");
        last = p.clone();
        if p["data"]["run_id"] == run_id.as_str() {
            after.push(p.clone());
            if is_terminal(&p) {
                break;
            }
        }
    }
    let events: Vec<Value> = before.into_iter().chain(after).collect();
    assert_well_formed(&run_id, &events);
    let offsets: BTreeSet<u64> = events.iter().filter_map(|e| e["offset"].as_u64()).collect();
    assert_eq!(offsets.len(), events.len(), "no event twice");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "agent_completed");
    assert_eq!(streamed_text(&events), done["data"]["text"].as_str().unwrap(), "every delta recovered");
    app.stop().await;
}

async fn shutdown(engine: TestEngine) {
    let mut app = App::start_with(engine, |c| {
        fast_demo(c);
        c.timing.drain_limit = Duration::from_millis(300);
        c.agents.running_per_user = 1;
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let stuck = agent_in(&app, &alice, &room, "Stuck", json!({})).await;
    let later = agent_in(&app, &alice, &room, "Later", json!({})).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Stuck [fault:stall]").await;
    watch.until("agent_started").await;
    say(&app, &alice, &room, "@Later hello").await;
    let queued = loop {
        let p = watch.until("agent_queued").await;
        if p["data"]["agent_id"] == later.as_str() {
            break p["data"]["run_id"].as_str().unwrap().to_owned();
        }
    };
    // Shutdown: the running run ends with `shutdown` (clients still see it); the waiting one stays queued.
    let stopping = tokio::spawn(async move {
        app.restart().await;
        app
    });
    let terminal = watch.until("agent_error").await;
    assert_eq!((terminal["data"]["agent_id"].as_str(), terminal["data"]["code"].as_str()), (Some(stuck.as_str()), Some("shutdown")));
    let app = stopping.await.unwrap();
    let r = app.get(&format!("/api/v1/runs/{}", terminal["data"]["run_id"].as_str().unwrap()), &alice.token).await;
    assert_eq!((r.body["status"].as_str(), r.body["error"]["code"].as_str()), (Some("failed"), Some("shutdown")));

    // After the restart the waiting run resumes and completes, its numbers after those before.
    let mut watch = Watch::new(&app, &alice, &room).await;
    watch.backfill().await;
    let done = match watch.runs.get(&queued).and_then(|e| e.iter().find(|p| is_terminal(p))) {
        Some(done) => done.clone(),
        None => loop {
        let p = watch.next().await;
        if p["data"]["run_id"] == queued.as_str() && is_terminal(&p) {
            break p;
        }
        },
    };
    assert_eq!(done["type"], "agent_completed", "{done}");
    let events = &watch.runs[&queued];
    let seqs: Vec<i64> = events.iter().filter_map(|e| e["data"]["seq"].as_i64()).collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    assert!(seqs[0] > 1, "after the reserved numbers of the first process: {seqs:?}");
    assert_eq!(events[0]["type"], "agent_queued", "announced again");
    let r = app.get(&format!("/api/v1/runs/{queued}"), &alice.token).await;
    assert_eq!(r.body["status"], "completed");
    app.stop().await;
}
