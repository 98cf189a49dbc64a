//! Queueing: per-person bounds, other people unaffected, and what a new
//! trigger does while the agent is busy in the channel (`on_busy`).

use chorus_testkit::db::TestEngine;
use serde_json::json;

use crate::common::App;
use crate::harness::*;

both_engines!(two_running_eight_waiting_the_eleventh_refused_others_unaffected, super::queue_limits);
both_engines!(a_busy_agent_enqueues_rejects_or_interrupts, super::on_busy);

async fn queue_limits(engine: TestEngine) {
    let app = App::start_with(engine, |c| {
        fast_demo(c);
        // The stalled runs end at shutdown: no need to wait for them.
        c.timing.drain_limit = std::time::Duration::from_millis(200);
    })
    .await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let room = room(&app, &alice, "busy").await;
    let mut agents = Vec::new();
    for i in 0..11 {
        agents.push(agent_in(&app, &alice, &room, &format!("Worker {i}"), json!({ "response_policy": "always" })).await);
    }
    let mut watch = Watch::new(&app, &alice, &room).await;
    // Eleven runs from one message; each one stalls once started.
    say(&app, &alice, &room, "everyone, wait here [fault:stall]").await;
    let mut started = 0;
    let mut queued = 0;
    while watch.ended() < 1 || started < 2 || queued < 10 {
        let p = watch.next().await;
        match p["type"].as_str() {
            Some("agent_started") => started += 1,
            Some("agent_queued") => queued += 1,
            _ => {}
        }
    }
    assert_eq!((started, queued), (2, 10));
    let refused: Vec<_> = watch.runs.iter().filter(|(_, e)| e.iter().any(is_terminal)).collect();
    assert_eq!(refused.len(), 1);
    let (refused_id, refused_events) = refused[0];
    assert_eq!(refused_events.len(), 1, "refused at once: no agent_queued, no agent_started");
    assert_eq!((refused_events[0]["data"]["code"].as_str(), refused_events[0]["data"]["retryable"].as_bool()), (Some("queue_full"), Some(true)));
    assert_eq!(refused_events[0]["data"]["seq"], 1);
    let r = app.get(&format!("/api/v1/runs/{refused_id}"), &alice.token).await;
    assert_eq!((r.body["status"].as_str(), r.body["started_at"].as_str()), (Some("failed"), None));
    let positions: Vec<i64> = watch.all.iter().filter(|p| p["type"] == "agent_queued").filter_map(|p| p["data"]["position"].as_i64()).collect();
    // The first two start at once (each was next when accepted); the others wait behind them.
    assert_eq!(positions, [1, 1, 1, 2, 3, 4, 5, 6, 7, 8]);
    let active = app.get(&format!("/api/v1/channels/{}/runs?status=active", room.id), &alice.token).await;
    let statuses: Vec<&str> = active.body["runs"].as_array().unwrap().iter().filter_map(|r| r["status"].as_str()).collect();
    assert_eq!((statuses.iter().filter(|s| **s == "running").count(), statuses.iter().filter(|s| **s == "queued").count()), (2, 8));

    // Bob is not held up by Alice's queue.
    let bob_room = crate::harness::room(&app, &bob, "bobs").await;
    agent_in(&app, &bob, &bob_room, "Bobby", json!({})).await;
    let mut bob_watch = Watch::new(&app, &bob, &bob_room).await;
    say(&app, &bob, &bob_room, "@Bobby hi").await;
    bob_watch.until_ended(1).await;
    let (bob_run, bob_events) = bob_watch.runs.iter().next().unwrap();
    assert_well_formed(bob_run, bob_events);
    assert_eq!(bob_watch.terminal(bob_run)["type"], "agent_completed");

    // Cancelling a waiting run frees a place, and the next one stays queued.
    let waiting = active.body["runs"].as_array().unwrap().iter().find(|r| r["status"] == "queued").unwrap()["id"].as_str().unwrap().to_owned();
    let r = app.post(&format!("/api/v1/runs/{waiting}/cancel"), &alice.token, json!({})).await;
    assert_eq!(r.body["status"], "cancelled");
    let e = watch.until("agent_error").await;
    assert_eq!((e["data"]["run_id"].as_str(), e["data"]["code"].as_str()), (Some(waiting.as_str()), Some("cancelled")));
    assert_eq!(e["data"]["seq"], 2, "after its agent_queued");
    app.stop().await;
}

async fn on_busy(engine: TestEngine) {
    let app = App::start_with(engine, paced_demo(40.0)).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let queue = agent_in(&app, &alice, &room, "Queue", json!({})).await;
    let reject = agent_in(&app, &alice, &room, "Reject", json!({ "on_busy": "reject" })).await;
    let interrupt = agent_in(&app, &alice, &room, "Interrupt", json!({ "on_busy": "interrupt" })).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    let first_of = |w: &Watch, agent: &str| -> Vec<String> {
        w.runs.iter().filter(|(_, e)| e[0]["data"]["agent_id"] == agent).map(|(id, _)| id.clone()).collect()
    };

    // enqueue: the second run starts only after the first has ended.
    say(&app, &alice, &room, "@Queue one").await;
    watch.until("agent_started").await;
    say(&app, &alice, &room, "@Queue two").await;
    watch.until_ended(2).await;
    let runs = first_of(&watch, &queue);
    assert_eq!(runs.len(), 2);
    let offset_of = |w: &Watch, run: &str, kind: &str| w.runs[run].iter().find(|e| e["type"] == kind).and_then(|e| e["offset"].as_u64());
    let (a, b) = if offset_of(&watch, &runs[0], "agent_queued") < offset_of(&watch, &runs[1], "agent_queued") { (&runs[0], &runs[1]) } else { (&runs[1], &runs[0]) };
    assert!(offset_of(&watch, a, "agent_completed") < offset_of(&watch, b, "agent_started"), "one run per agent and channel at a time");
    for run in &runs {
        assert_well_formed(run, &watch.runs[run]);
    }

    // reject: the new run ends at once with `busy`.
    say(&app, &alice, &room, "@Reject one").await;
    loop {
        let p = watch.until("agent_started").await;
        if p["data"]["agent_id"] == reject.as_str() {
            break;
        }
    }
    say(&app, &alice, &room, "@Reject two").await;
    watch.until_ended(4).await;
    let runs = first_of(&watch, &reject);
    let codes: Vec<String> = runs.iter().map(|r| watch.terminal(r)["data"]["code"].as_str().unwrap_or("completed").to_owned()).collect();
    assert!(codes.contains(&"busy".to_owned()) && codes.contains(&"completed".to_owned()), "{codes:?}");

    // interrupt: the running one ends `superseded`, the new one answers.
    say(&app, &alice, &room, "@Interrupt one").await;
    loop {
        let p = watch.until("agent_started").await;
        if p["data"]["agent_id"] == interrupt.as_str() {
            break;
        }
    }
    say(&app, &alice, &room, "@Interrupt two").await;
    watch.until_ended(6).await;
    let runs = first_of(&watch, &interrupt);
    let codes: Vec<String> = runs.iter().map(|r| watch.terminal(r)["data"]["code"].as_str().unwrap_or("completed").to_owned()).collect();
    assert!(codes.contains(&"superseded".to_owned()) && codes.contains(&"completed".to_owned()), "{codes:?}");
    for run in watch.runs.keys() {
        assert_well_formed(run, &watch.runs[run]);
    }
    app.stop().await;
}
