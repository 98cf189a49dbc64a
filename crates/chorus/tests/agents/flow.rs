//! A run from message to answer: who answers, its events, the stored
//! answer, runs over REST, cancel and its rights.

use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::common::App;
use crate::harness::*;

both_engines!(a_mention_starts_a_run_that_streams_tools_and_stores_its_answer, super::mention_run);
both_engines!(always_manual_and_explicit_runs, super::policies);
both_engines!(cancel_is_for_the_right_people_keeps_the_partial_answer_and_is_idempotent, super::cancel_rights);

async fn mention_run(engine: TestEngine) {
    let app = App::start_with(engine, fast_demo).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let helper = agent_in(&app, &alice, &room, "Helper Bot", json!({})).await;
    let mut watch = Watch::new(&app, &alice, &room).await;

    // No mention, no run; the name as written, any case, is a mention.
    say(&app, &alice, &room, "just chatting, Helper Bot").await;
    let asked = say(&app, &alice, &room, "@helper bot what is 12*(3+4)?").await;
    watch.until_ended(1).await;
    assert_eq!(watch.runs.len(), 1);
    let (run_id, events) = watch.runs.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
    assert_well_formed(&run_id, &events);
    let types = watch.types(&run_id);
    assert_eq!(&types[..2], ["agent_queued", "agent_started"]);
    assert!(types.contains(&"agent_thinking".to_owned()), "{types:?}");
    let executing = events.iter().find(|e| e["type"] == "tool_executing").expect("tool call");
    assert_eq!((executing["data"]["tool"].as_str(), executing["data"]["arguments"]["expression"].as_str()), (Some("calculator"), Some("12*(3+4)")));
    let completed = events.iter().find(|e| e["type"] == "tool_completed").expect("tool result");
    assert_eq!(completed["data"]["call_id"], executing["data"]["call_id"]);
    assert_eq!(completed["data"]["is_error"], false);
    assert!(completed["data"]["result"].to_string().contains("84"), "{completed}");
    let started = &events[1]["data"];
    assert_eq!((started["model"].as_str(), started["provider"].as_str(), started["hop"].as_i64()), (Some("demo"), Some("demo"), Some(0)));
    assert_eq!(started["trigger_message_id"], asked["id"]);
    assert_eq!(started["triggered_by"].as_str(), Some(alice.id.as_str()));
    assert_eq!(events[0]["data"]["position"], 1);

    let done = watch.terminal(&run_id);
    assert_eq!(done["type"], "agent_completed", "{done}");
    let d = &done["data"];
    let text = d["text"].as_str().unwrap();
    assert!(text.contains("84"), "{text}");
    assert_eq!(streamed_text(&events), text, "the deltas add up to the answer");
    assert_eq!(d["finish_reason"], "stop");
    assert!(d["usage"]["input_tokens"].as_i64().unwrap() > 0 && d["usage"]["output_tokens"].as_i64().unwrap() > 0);
    assert_eq!((d["cost_usd"].as_f64(), d["agent_id"].as_str()), (Some(0.0), Some(helper.as_str())));
    assert!(events.iter().filter(|e| e["type"] == "agent_text_delta").all(|e| e["data"]["message_id"] == d["message_id"]));

    // The answer is a channel message by the agent, announced before the ending.
    let answer = watch.all.iter().rev().find(|p| p["type"] == "message_created").expect("answer announced");
    let m = &answer["data"]["message"];
    assert_eq!((m["author"]["kind"].as_str(), m["author"]["id"].as_str()), (Some("agent"), Some(helper.as_str())));
    assert_eq!((m["run_id"].as_str(), m["id"].as_str(), m["text"].as_str()), (Some(run_id.as_str()), d["message_id"].as_str(), Some(text)));
    assert!(answer["offset"].as_u64() < done["offset"].as_u64());
    let history = app.get(&format!("/api/v1/channels/{}/messages", room.id), &alice.token).await;
    assert_eq!(history.body["messages"][0]["run_id"].as_str(), Some(run_id.as_str()));

    // Runs over REST.
    let r = app.get(&format!("/api/v1/runs/{run_id}"), &alice.token).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!((r.body["status"].as_str(), r.body["message_id"].as_str()), (Some("completed"), d["message_id"].as_str()));
    assert_eq!(r.body["usage"]["input_tokens"], d["usage"]["input_tokens"]);
    let active = app.get(&format!("/api/v1/channels/{}/runs?status=active", room.id), &alice.token).await;
    assert_eq!(active.body["runs"], json!([]));
    let all = app.get(&format!("/api/v1/channels/{}/runs", room.id), &alice.token).await;
    assert_eq!(all.body["runs"].as_array().map(Vec::len), Some(1));
    let bad = app.get(&format!("/api/v1/channels/{}/runs?status=busy", room.id), &alice.token).await;
    assert_eq!((bad.status, bad.body["error"].as_str()), (400, Some("invalid_field")));
    let mallory = app.user("mallory").await;
    assert_eq!(app.get(&format!("/api/v1/runs/{run_id}"), &mallory.token).await.status, 404);
    assert_eq!(app.get(&format!("/api/v1/channels/{}/runs", room.id), &mallory.token).await.status, 404);
    assert_eq!(app.get("/api/v1/runs/nope", &alice.token).await.status, 404);
    app.stop().await;
}

async fn policies(engine: TestEngine) {
    let app = App::start_with(engine, fast_demo).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let always = agent_in(&app, &alice, &room, "Echo", json!({ "response_policy": "always" })).await;
    let manual = agent_in(&app, &alice, &room, "Quiet", json!({ "response_policy": "manual" })).await;
    let mut watch = Watch::new(&app, &alice, &room).await;

    say(&app, &alice, &room, "hello @Quiet").await;
    watch.until_ended(1).await;
    let (run_id, events) = watch.runs.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
    assert_eq!(events[0]["data"]["agent_id"].as_str(), Some(always.as_str()), "`always` answers, `manual` never on its own");

    // Explicit runs.
    let r = app.post(&format!("/api/v1/agents/{manual}/runs"), &alice.token, json!({ "channel_id": room.id })).await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.body["agent_id"].as_str(), Some(manual.as_str()));
    assert_eq!(r.body["trigger_message_id"], Value::Null);
    let explicit = r.body["id"].as_str().unwrap().to_owned();
    watch.until_ended(2).await;
    assert_well_formed(&explicit, &watch.runs[&explicit]);
    assert_eq!(watch.terminal(&explicit)["type"], "agent_completed");
    assert_ne!(explicit, run_id);

    let other = room_named(&app, &alice, "other").await;
    let r = app.post(&format!("/api/v1/agents/{manual}/runs"), &alice.token, json!({ "channel_id": other })).await;
    assert_eq!((r.status, r.body["error"].as_str()), (409, Some("conflict")), "the agent is not a member there");
    let bob = app.user("bob").await;
    let r = app.post(&format!("/api/v1/agents/{manual}/runs"), &bob.token, json!({ "channel_id": room.id })).await;
    assert_eq!(r.status, 404, "not a member of the channel");
    let r = app.post(&format!("/api/v1/agents/{manual}/runs"), &alice.token, json!({ "channel_id": room.id, "x": 1 })).await;
    assert_eq!(r.status, 400, "strict body");
    let r = app.post("/api/v1/agents/nope/runs", &alice.token, json!({ "channel_id": room.id })).await;
    assert_eq!(r.status, 404);

    // Maintenance mode refuses new runs.
    let admin = app.admin("root").await;
    assert_eq!(app.put("/api/v1/admin/maintenance", &admin.token, json!({ "enabled": true, "message": "back soon" })).await.status, 200);
    let r = app.post(&format!("/api/v1/agents/{manual}/runs"), &alice.token, json!({ "channel_id": room.id })).await;
    assert_eq!((r.status, r.body["error"].as_str()), (503, Some("maintenance")), "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("back soon"));
    app.stop().await;
}

async fn room_named(app: &App, owner: &crate::common::TestUser, name: &str) -> String {
    room(app, owner, name).await.id
}

async fn cancel_rights(engine: TestEngine) {
    let app = App::start_with(engine, paced_demo(20.0)).await;
    let (alice, bob, carol) = (app.user("alice").await, app.user("bob").await, app.user("carol").await);
    let room = room(&app, &alice, "general").await;
    add_user(&app, &room, &alice, &bob).await;
    let helper = agent_in(&app, &alice, &room, "Helper", json!({})).await;
    let mut watch = Watch::new(&app, &bob, &room).await;

    say(&app, &bob, &room, "@Helper tell me a long story about the sea and the wind and the sky").await;
    let first_delta = watch.until("agent_text_delta").await;
    let run_id = first_delta["data"]["run_id"].as_str().unwrap().to_owned();
    // Mid-stream, the active view's `text` is the deltas numbered up to its `seq`.
    let active = app.get(&format!("/api/v1/channels/{}/runs?status=active", room.id), &bob.token).await;
    let view = active.body["runs"].as_array().unwrap().iter().find(|r| r["id"] == run_id.as_str()).cloned().expect("the run is active");
    let view_seq = view["seq"].as_i64().expect("a live run's view has its seq");
    assert!(view_seq >= first_delta["data"]["seq"].as_i64().unwrap(), "{view}");

    // A member who is neither the runner, the agent's owner nor a channel owner may not.
    let dave = app.user("dave").await;
    add_user(&app, &room, &alice, &dave).await;
    let r = app.post(&format!("/api/v1/runs/{run_id}/cancel"), &dave.token, json!({})).await;
    assert_eq!((r.status, r.body["error"].as_str()), (403, Some("forbidden")));
    assert_eq!(app.post(&format!("/api/v1/runs/{run_id}/cancel"), &carol.token, json!({})).await.status, 404, "not a member");

    // Bob started it: he cancels over the WebSocket.
    let mut ws = app.ws(&bob.token).await;
    let sent = std::time::Instant::now();
    let reply = ws.request(json!({ "type": "cancel_run", "run_id": run_id })).await;
    assert_eq!(reply["result"], json!({ "run_id": run_id, "status": "cancelled" }), "{reply}");
    let terminal = watch.until("agent_error").await;
    let waited = sent.elapsed();
    assert!(waited < std::time::Duration::from_millis(500), "cancel took {waited:?}");
    assert_eq!(terminal["data"]["code"], "cancelled");
    assert_eq!(terminal["data"]["retryable"], false);
    let events = watch.runs[&run_id].clone();
    assert_well_formed(&run_id, &events);
    // What was streamed is kept as the agent's message.
    let partial = streamed_text(&events);
    assert!(!partial.is_empty());
    let up_to_view: Vec<Value> = events.iter().filter(|e| e["data"]["seq"].as_i64().is_some_and(|s| s <= view_seq)).cloned().collect();
    assert_eq!(view["text"].as_str(), Some(streamed_text(&up_to_view).as_str()));
    assert_eq!(terminal["data"]["text"].as_str(), Some(partial.as_str()));
    let stored = watch.all.iter().rev().find(|p| p["type"] == "message_created").unwrap();
    assert_eq!(stored["data"]["message"]["text"].as_str(), Some(partial.as_str()));
    assert_eq!(stored["data"]["message"]["author"]["id"].as_str(), Some(helper.as_str()));

    // Idempotent, for everyone allowed.
    let again = ws.request(json!({ "type": "cancel_run", "run_id": run_id })).await;
    assert_eq!(again["result"]["status"], "cancelled");
    let r = app.post(&format!("/api/v1/runs/{run_id}/cancel"), &alice.token, json!({})).await;
    assert_eq!((r.status, r.body["status"].as_str(), r.body["error"]["code"].as_str()), (200, Some("cancelled"), Some("cancelled")));
    let r = app.get(&format!("/api/v1/runs/{run_id}"), &bob.token).await;
    assert_eq!(r.body["message_id"], terminal["data"]["message_id"]);
    let bad = ws.request(json!({ "type": "cancel_run", "run_id": "" })).await;
    assert_eq!(bad["error"]["error"], "invalid_field");
    let missing = ws.request(json!({ "type": "cancel_run", "run_id": "nope" })).await;
    assert_eq!(missing["error"]["error"], "not_found");

    // Nothing more of the run follows its ending.
    say(&app, &bob, &room, "@Helper short one").await;
    watch.until_ended(2).await;
    assert_eq!(watch.runs[&run_id].len(), events.len());
    app.stop().await;
}
