//! External agents through the composition root: records with a secret
//! shown once, runs delivered to a mock webhook that checks signatures,
//! the service's events through the run state machine, the breaker and the
//! silence deadline.

use std::time::Duration;

use chorus::config::Config;
use chorus_agents::{PushError, PushedEvent, PushedKind};
use chorus_protocol::RunErrorCode;
use chorus_testkit::db::TestEngine;
use chorus_testkit::webhook::{MockWebhook, Reply};
use serde_json::{Value, json};

use crate::common::{API_KEY, App, TestUser};
use crate::harness::*;

both_engines!(external_agent_runs_are_delivered_signed_and_answered_through_pushed_events, super::delivered_and_answered);
both_engines!(pushed_events_follow_the_run_state_machine, super::state_machine);
both_engines!(a_failing_webhook_opens_the_breaker_and_runs_end_agent_unavailable, super::breaker);
both_engines!(a_service_that_never_answers_is_ended_by_the_silence_deadline, super::silent);
both_engines!(services_push_events_over_rest_with_a_key_scoped_to_their_agent, super::rest_push);

fn external(c: &mut Config) {
    fast_demo(c);
    // The mock listens on loopback.
    c.external_agents.allowed_networks = vec!["127.0.0.0/8".into()];
    c.external_agents.retry_delay = Duration::from_millis(10);
    c.external_agents.timeout = Duration::from_secs(2);
}

/// Creates an external agent of `owner` in `room`; returns its id and secret.
async fn external_agent(app: &App, owner: &TestUser, room: &Room, name: &str, url: &str) -> (String, String) {
    let r = app
        .post("/api/v1/agents", &owner.token, json!({ "name": name, "persona": "Lives elsewhere.", "kind": "external", "webhook_url": url }))
        .await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.body["kind"], "external", "{:?}", r.body);
    let id = r.body["id"].as_str().expect("id").to_owned();
    let secret = r.body["webhook_secret"].as_str().expect("secret shown at creation").to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");
    let r = app.post(&format!("/api/v1/channels/{}/members", room.id), &owner.token, json!({ "kind": "agent", "id": id })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    (id, secret)
}

fn ev(seq: i64, kind: PushedKind) -> PushedEvent {
    PushedEvent { seq, kind }
}

fn delta(text: &str) -> PushedKind {
    PushedKind::TextDelta { delta: text.into() }
}

fn started() -> PushedKind {
    PushedKind::Started { model: Some("their-model".into()) }
}

fn completed(text: Option<&str>) -> PushedKind {
    PushedKind::Completed { text: text.map(str::to_owned), finish_reason: None, usage: None, model: None }
}

async fn delivered_and_answered(engine: TestEngine) {
    let app = App::start_with(engine, external).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let hook = MockWebhook::start(&[]).await;
    let (agent_id, secret) = external_agent(&app, &alice, &room, "Outside", &hook.url("/chorus")).await;
    hook.set_secrets(&[&secret]);

    // The secret is not shown again.
    let r = app.get(&format!("/api/v1/agents/{agent_id}"), &alice.token).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("webhook_secret").is_none(), "{:?}", r.body);

    let mut watch = Watch::new(&app, &alice, &room).await;
    let message = say(&app, &alice, &room, "@Outside what is the weather?").await;
    let got = hook.wait_for(1).await;
    let d = &got[0];
    assert_eq!(d.verified_by, Some(0), "signed with the agent's secret");
    assert!(d.fresh);
    assert_eq!(d.json["type"], "agent_run");
    assert_eq!(d.json["message"]["id"], message["id"]);
    assert_eq!(d.json["message"]["text"], "@Outside what is the weather?");
    assert_eq!(d.json["run"]["agent_id"], agent_id.as_str());
    let run_id = d.json["run"]["id"].as_str().expect("run id").to_owned();
    assert_eq!(d.id.as_deref(), Some(run_id.as_str()), "webhook-id is the run id");
    assert_eq!(d.json["events_url"], format!("/api/v1/runs/{run_id}/events"));

    let runtime = app.server().agents();
    let report = runtime
        .push_events(&run_id, &agent_id, vec![ev(1, started()), ev(2, delta("Sunny, ")), ev(3, delta("20 degrees."))])
        .await
        .expect("pushed");
    assert_eq!((report.accepted, report.last_seq, report.ended), (3, 3, false));
    let report = runtime.push_events(&run_id, &agent_id, vec![ev(4, completed(None))]).await.expect("ended");
    assert!(report.ended);

    watch.until_ended(1).await;
    let events = watch.runs[&run_id].clone();
    assert_well_formed(&run_id, &events);
    assert_eq!(watch.types(&run_id).first().map(String::as_str), Some("agent_queued"));
    let done = watch.terminal(&run_id);
    assert_eq!(done["type"], "agent_completed", "{done}");
    assert_eq!(done["data"]["text"], "Sunny, 20 degrees.");
    let started = events.iter().find(|e| e["type"] == "agent_started").expect("agent_started");
    assert_eq!(started["data"]["provider"], "external");
    assert_eq!(started["data"]["model"], "their-model");

    // The answer is the agent's message in the channel.
    let r = app.get(&format!("/api/v1/channels/{}/messages", room.id), &alice.token).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let texts: Vec<Value> = r.body["messages"].as_array().expect("messages").iter().map(|m| m["text"].clone()).collect();
    assert!(texts.contains(&json!("Sunny, 20 degrees.")), "{texts:?}");

    // Rotation: a new secret, and deliveries carry both signatures meanwhile.
    let r = app.post(&format!("/api/v1/agents/{agent_id}/webhook-secret"), &alice.token, json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    let rotated = r.body["webhook_secret"].as_str().expect("new secret").to_owned();
    assert_ne!(rotated, secret);
    hook.set_secrets(&[&rotated]);
    say(&app, &alice, &room, "@Outside again").await;
    let got = hook.wait_for(2).await;
    assert_eq!(got[1].verified_by, Some(0), "the new secret verifies");
    assert_eq!(got[1].signature.as_deref().map(|s| s.split(' ').count()), Some(2), "both signatures during the rotation");

    // Someone else's agent: no rotation.
    let bob = app.user("bob").await;
    let r = app.post(&format!("/api/v1/agents/{agent_id}/webhook-secret"), &bob.token, json!({})).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    assert_eq!(r.body["error"], "not_found");
    assert!(r.body["request_id"].is_string());
    app.stop().await;
}

async fn state_machine(engine: TestEngine) {
    let app = App::start_with(engine, external).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let hook = MockWebhook::start(&[]).await;
    let (agent_id, _) = external_agent(&app, &alice, &room, "Outside", &hook.url("/")).await;
    let (other_id, _) = external_agent(&app, &alice, &room, "Other", &hook.url("/other")).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Outside hello").await;
    let got = hook.wait_for(1).await;
    let run_id = got[0].json["run"]["id"].as_str().expect("run id").to_owned();
    let runtime = app.server().agents();

    // Another agent's key may not push.
    assert_eq!(runtime.push_events(&run_id, &other_id, vec![ev(1, started())]).await, Err(PushError::Forbidden));
    // agent_started comes first.
    let e = runtime.push_events(&run_id, &agent_id, vec![ev(1, delta("too early"))]).await.unwrap_err();
    assert!(matches!(e, PushError::State { index: 0, accepted: 0, .. }), "{e:?}");
    // A gap is refused; what came before it in the push is taken.
    let e = runtime.push_events(&run_id, &agent_id, vec![ev(1, started()), ev(3, delta("gap"))]).await.unwrap_err();
    assert_eq!(e, PushError::Gap { index: 1, expected: 2, got: 3, accepted: 1 });
    // A repeat is ignored (a retried push).
    let r = runtime.push_events(&run_id, &agent_id, vec![ev(1, started()), ev(2, delta("Hi"))]).await.expect("pushed");
    assert_eq!((r.accepted, r.ignored, r.last_seq), (1, 1, 2));
    // A second agent_started is refused.
    let e = runtime.push_events(&run_id, &agent_id, vec![ev(3, started())]).await.unwrap_err();
    assert!(matches!(e, PushError::State { index: 0, .. }), "{e:?}");
    // One terminal event; a second one is refused, its repeat ignored.
    let error = PushedKind::Failed { code: RunErrorCode::ProviderError, message: "their model failed".into() };
    let r = runtime.push_events(&run_id, &agent_id, vec![ev(3, error.clone())]).await.expect("ended");
    assert!(r.ended);
    let e = runtime.push_events(&run_id, &agent_id, vec![ev(4, completed(Some("late")))]).await.unwrap_err();
    assert!(matches!(e, PushError::Ended { .. }), "{e:?}");
    let r = runtime.push_events(&run_id, &agent_id, vec![ev(3, error)]).await;
    assert!(matches!(r, Ok(report) if report.ignored == 1) || matches!(r, Err(PushError::Ended { .. })), "{r:?}");

    watch.until_ended(1).await;
    let events = watch.runs[&run_id].clone();
    assert_well_formed(&run_id, &events);
    assert_eq!(watch.types(&run_id), ["agent_queued", "agent_started", "agent_text_delta", "agent_error"]);
    let done = watch.terminal(&run_id);
    assert_eq!(done["data"]["code"], "provider_error", "{done}");
    // Unknown runs.
    assert_eq!(runtime.push_events("no-such-run", &agent_id, vec![ev(1, started())]).await, Err(PushError::NotFound));
    app.stop().await;
}

async fn breaker(engine: TestEngine) {
    let app = App::start_with(engine, |c| {
        external(c);
        c.external_agents.breaker_failures = 2;
        c.external_agents.breaker_open_for = Duration::from_secs(3600);
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let hook = MockWebhook::start(&[]).await;
    hook.set_default(Reply::Status(500));
    external_agent(&app, &alice, &room, "Flaky", &hook.url("/")).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    for i in 0..3 {
        say(&app, &alice, &room, &format!("@Flaky try {i}")).await;
        watch.until_ended(i + 1).await;
    }
    // Two failed deliveries (each retried once) opened the breaker; the third run sent nothing.
    assert_eq!(hook.count(), 4, "two deliveries of two attempts, none while open");
    let codes: Vec<Value> = watch.runs.keys().map(|id| watch.terminal(id)["data"]["code"].clone()).collect();
    assert_eq!(codes, vec![json!("agent_unavailable"); 3]);
    let messages: Vec<String> = watch.runs.keys().map(|id| watch.terminal(id)["data"]["message"].as_str().unwrap_or_default().to_owned()).collect();
    assert_eq!(messages.iter().filter(|m| m.contains("resume in")).count(), 1, "{messages:?}");
    app.stop().await;
}

async fn silent(engine: TestEngine) {
    let app = App::start_with(engine, |c| {
        external(c);
        c.agents.silence_timeout = Duration::from_millis(500);
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let hook = MockWebhook::start(&[]).await;
    let (agent_id, _) = external_agent(&app, &alice, &room, "Quiet", &hook.url("/")).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    // One service never starts its run; the other starts it and goes silent.
    say(&app, &alice, &room, "@Quiet first").await;
    watch.until_ended(1).await;
    say(&app, &alice, &room, "@Quiet second").await;
    let got = hook.wait_for(2).await;
    let second = got[1].json["run"]["id"].as_str().expect("run id").to_owned();
    app.server().agents().push_events(&second, &agent_id, vec![ev(1, started()), ev(2, delta("thinking about"))]).await.expect("pushed");
    watch.until_ended(2).await;
    for (id, events) in &watch.runs {
        assert_well_formed(id, events);
        assert_eq!(watch.terminal(id)["data"]["code"], "timeout", "{events:?}");
    }
    app.stop().await;
}

async fn scoped_key(app: &App, owner: &TestUser, agent_id: &str) -> String {
    let r = app.post("/api/v1/api-keys", &owner.token, json!({ "name": format!("service {agent_id}"), "agent_id": agent_id })).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    r.body["key"].as_str().expect("key").to_owned()
}

async fn rest_push(engine: TestEngine) {
    let app = App::start_with(engine, external).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let hook = MockWebhook::start(&[]).await;
    let (agent_id, _) = external_agent(&app, &alice, &room, "Outside", &hook.url("/")).await;
    let (other_id, _) = external_agent(&app, &alice, &room, "Other", &hook.url("/other")).await;
    let key = scoped_key(&app, &alice, &agent_id).await;
    let other_key = scoped_key(&app, &alice, &other_id).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Outside hello").await;
    let got = hook.wait_for(1).await;
    let run_id = got[0].json["run"]["id"].as_str().expect("run id").to_owned();
    let path = format!("/api/v1/runs/{run_id}/events");
    let start = json!({ "seq": 1, "type": "agent_started", "data": { "model": "m" } });

    // Authorization: no key, a server key, another agent's key, a user's token.
    let r = app.call("POST", &path, None, Some(start.clone())).await;
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("unauthorized")), "{:?}", r.body);
    for (who, status) in [(API_KEY, 403), (other_key.as_str(), 403), (alice.token.as_str(), 401)] {
        let r = app.post(&path, who, start.clone()).await;
        assert_eq!(r.status, status, "{:?}", r.body);
        assert!(r.body["request_id"].is_string() && r.body["timestamp"].is_string(), "{:?}", r.body);
    }
    // A malformed event names its field.
    let r = app.post(&path, &key, json!({ "events": [start, { "seq": 2, "type": "agent_text_delta", "data": {} }] })).await;
    assert_eq!(r.status, 400, "{:?}", r.body);
    assert!(r.body["message"].as_str().unwrap_or_default().starts_with("events[1].data"), "{:?}", r.body);

    let r = app.post(&path, &key, start.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({ "accepted": 1, "ignored": 0, "last_seq": 1, "ended": false }));
    let r = app.post(&path, &key, json!({ "seq": 3, "type": "agent_text_delta", "data": { "delta": "x" } })).await;
    assert_eq!((r.status, r.body["error"].as_str()), (409, Some("conflict")), "{:?}", r.body);
    let batch = json!({ "events": [
        start,
        { "seq": 2, "type": "tool_executing", "data": { "call_id": "c1", "tool": "lookup", "arguments": { "q": "x" } } },
        { "seq": 3, "type": "tool_completed", "data": { "call_id": "c1", "tool": "lookup", "result": "found" } },
        { "seq": 4, "type": "agent_text_delta", "data": { "delta": "Found it." } },
        { "seq": 5, "type": "agent_completed", "data": { "usage": { "input_tokens": 3, "output_tokens": 2 } } }
    ] });
    let r = app.post(&path, &key, batch).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(r.body, json!({ "accepted": 4, "ignored": 1, "last_seq": 5, "ended": true }));
    let r = app.post(&path, &key, json!({ "seq": 6, "type": "agent_error", "data": { "code": "internal", "message": "late" } })).await;
    assert_eq!(r.status, 409, "{:?}", r.body);

    watch.until_ended(1).await;
    assert_well_formed(&run_id, &watch.runs[&run_id]);
    assert_eq!(
        watch.types(&run_id),
        ["agent_queued", "agent_started", "tool_executing", "tool_completed", "agent_text_delta", "agent_completed"]
    );
    assert_eq!(watch.terminal(&run_id)["data"]["text"], "Found it.");
    let r = app.post("/api/v1/runs/no-such-run/events", &key, json!({ "seq": 1, "type": "agent_started" })).await;
    assert_eq!(r.status, 404, "{:?}", r.body);
    app.stop().await;
}

/// An external agent through the AG-UI endpoint: the message goes to its
/// webhook like any trigger, and the events its service pushes stream back
/// to the AG-UI client.
#[tokio::test]
async fn an_external_agent_answers_an_agui_client() {
    use crate::agui;
    let app = App::start_with(TestEngine::Sqlite, external).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let hook = MockWebhook::start(&[]).await;
    let (agent_id, secret) = external_agent(&app, &alice, &room, "Outside", &hook.url("/chorus")).await;
    hook.set_secrets(&[&secret]);
    let body = agui::input(&room, "ext-1", json!([agui::user_message("m1", "what is the weather?")]), json!([]));
    let mut res =
        app.http.post(app.url(&format!("/api/v1/agui/{agent_id}"))).bearer_auth(&alice.token).json(&body).send().await.expect("response");
    assert_eq!(res.status(), 200);
    let got = hook.wait_for(1).await;
    assert_eq!(got[0].json["message"]["text"], "what is the weather?");
    let run_id = got[0].json["run"]["id"].as_str().expect("run id").to_owned();
    let pushed = vec![ev(1, started()), ev(2, delta("Sunny, ")), ev(3, delta("20 degrees.")), ev(4, completed(None))];
    app.server().agents().push_events(&run_id, &agent_id, pushed).await.expect("pushed");
    let mut text = Vec::new();
    while let Some(chunk) = res.chunk().await.expect("a chunk") {
        text.extend_from_slice(&chunk);
    }
    let events = agui::frames(std::str::from_utf8(&text).expect("utf-8"));
    agui::assert_stream(&events);
    assert_eq!(events[0]["metadata"]["chorus"]["run_id"], run_id.as_str());
    assert_eq!(agui::text_of(&events), "Sunny, 20 degrees.");
    assert_eq!(events.last().expect("events")["type"], "RUN_FINISHED");
    app.stop().await;
}

/// A push for a run another node of the deployment owns is refused with
/// 503 `run_elsewhere` and a Retry-After (a load balancer sends the retry
/// to any node; only the owner takes the run's events).
#[tokio::test]
async fn a_push_for_a_run_another_node_owns_is_run_elsewhere() {
    let app = App::start_with(TestEngine::Sqlite, external).await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "general").await;
    let hook = MockWebhook::start(&[]).await;
    let (agent_id, _) = external_agent(&app, &alice, &room, "Outside", &hook.url("/")).await;
    let key = scoped_key(&app, &alice, &agent_id).await;
    let store = app.server().store();
    let new = chorus_store::NewRun {
        agent_id: agent_id.clone(),
        channel_id: room.id.clone(),
        trigger_message_id: None,
        triggered_by: Some(alice.id.clone()),
        parent_run_id: None,
        hop: 0,
    };
    let run = store.create_run(new).await.expect("run");
    let claim = chorus_store::RunClaimRequest { run_id: &run.id, node: "elsewhere", dead_owner: None, runs_per_user: 10 };
    assert!(matches!(store.claim_run(claim).await.expect("claim"), chorus_store::RunClaim::Claimed(_)));
    let start = json!({ "seq": 1, "type": "agent_started", "data": { "model": "m" } });
    let r = app.post(&format!("/api/v1/runs/{}/events", run.id), &key, start).await;
    assert_eq!((r.status, r.body["error"].as_str()), (503, Some("run_elsewhere")), "{:?}", r.body);
    assert_eq!(r.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    app.stop().await;
}
