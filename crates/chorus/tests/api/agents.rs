//! REST: agents. Validation at and just past each bound, names per owner,
//! the per-user count and creation rate, who sees what, partial updates,
//! deletion leaving channels, the events, and maintenance mode.

use chorus_core::maintenance::MaintenanceMode;
use chorus_testkit::WsClient;
use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::channels::{add, channel, marker, subscribe};
use crate::common::{App, Resp, TestUser};

const PERSONA: &str = "A patient helper who answers briefly.";

fn err(r: &Resp) -> &str {
    r.body["error"].as_str().unwrap_or("")
}

fn message(r: &Resp) -> &str {
    r.body["message"].as_str().unwrap_or("")
}

/// A server where only the limit under test can be hit: generous agent and
/// request limits (the rate and count tests keep the defaults).
async fn roomy(engine: TestEngine) -> App {
    App::start_with(engine, |c| {
        c.chat.agents_per_user = 1_000;
        c.chat.agent_creates_per_minute = 100_000;
        c.rate_limits.rest_per_minute = 60_000.0;
        c.rate_limits.rest_burst = 10_000;
    })
    .await
}

/// Creates an agent with only the required fields; returns its body.
async fn agent(app: &App, owner: &TestUser, name: &str) -> Value {
    let r = app.post("/api/v1/agents", &owner.token, json!({ "name": name, "persona": PERSONA })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body
}

/// A WebSocket subscribed to the user's personal channel.
async fn listen(app: &App, user: &TestUser) -> WsClient {
    let mut ws = app.ws(&user.token).await;
    subscribe(&mut ws, &format!("user:{}", user.id)).await;
    ws
}

/// Asserts no event but presence arrives on `ws` before a marker sent to
/// `user` now: everything published earlier is delivered before it.
async fn nothing_before_marker(app: &App, ws: &mut WsClient, user: &TestUser, n: u64) {
    marker(app, user, n).await;
    loop {
        let p = ws.push().await;
        if p["type"].as_str().is_some_and(|t| t.starts_with("presence_")) {
            continue;
        }
        assert_eq!((p["type"].as_str(), p["data"]["marker"].as_u64()), (Some("publication"), Some(n)), "unexpected push: {p}");
        return;
    }
}

async fn create_list_get(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let root = app.admin("root").await;
    let mut alice_ws = listen(&app, &alice).await;
    let mut bob_ws = listen(&app, &bob).await;

    let full = json!({
        "name": "  Helper Bot_1-a ",
        "persona": format!("  {PERSONA}\nSecond line.  "),
        "quirks": [" terse ", "uses emoji"],
        "model": "demo",
        "tools": ["clock", "calculator"],
        "response_policy": "always",
    });
    let r = app.post("/api/v1/agents", &alice.token, full).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let a = r.body.clone();
    let id = a["id"].as_str().unwrap().to_owned();
    assert_eq!(a["name"], "Helper Bot_1-a", "trimmed");
    assert_eq!(a["persona"], format!("{PERSONA}\nSecond line."));
    assert_eq!(a["quirks"], json!(["terse", "uses emoji"]));
    assert_eq!((a["model"].as_str(), a["response_policy"].as_str()), (Some("demo"), Some("always")));
    assert_eq!(a["tools"], json!(["clock", "calculator"]));
    assert_eq!(a["owner_id"], alice.id.as_str());
    assert_eq!(a["created_at"], a["updated_at"]);

    // The owner hears it on their personal channel, with the same object.
    let ev = alice_ws.push_of("agent_spawned").await;
    assert_eq!(ev["channel"], format!("user:{}", alice.id));
    assert_eq!(ev["data"]["agent"], a);
    nothing_before_marker(&app, &mut bob_ws, &bob, 1).await;

    // Defaults: the server's first model, no quirks or tools, answers when mentioned.
    let d = agent(&app, &alice, "plain").await;
    assert_eq!((d["model"].as_str(), d["response_policy"].as_str()), (Some("demo"), Some("mention")));
    assert_eq!((&d["quirks"], &d["tools"]), (&json!([]), &json!([])));

    let r = app.get("/api/v1/agents", &alice.token).await;
    assert_eq!(r.status, 200);
    let ids: Vec<&str> = r.body["agents"].as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id.as_str(), d["id"].as_str().unwrap()], "oldest first");
    let r = app.get(&format!("/api/v1/agents/{id}"), &alice.token).await;
    assert_eq!((r.status, &r.body), (200, &a));

    // Others neither list nor see it; an administrator sees it but does not list it.
    assert_eq!(app.get("/api/v1/agents", &bob.token).await.body["agents"], json!([]));
    let r = app.get(&format!("/api/v1/agents/{id}"), &bob.token).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    let r = app.get(&format!("/api/v1/agents/{id}"), &root.token).await;
    assert_eq!((r.status, &r.body), (200, &a));
    assert_eq!(app.get("/api/v1/agents", &root.token).await.body["agents"], json!([]));
    let r = app.get("/api/v1/agents/no-such-agent", &alice.token).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));

    // Credentials are required.
    let r = app.call("GET", "/api/v1/agents", None, None).await;
    assert_eq!((r.status, err(&r)), (401, "unauthorized"));
    let r = app.call("POST", "/api/v1/agents", Some("nonsense"), Some(json!({ "name": "x", "persona": PERSONA }))).await;
    assert_eq!(r.status, 401);
    app.stop().await;
}
both_engines!(create_list_get_and_events, super::create_list_get);

/// Each rule on create, at its bound and just past it; each refusal names its field.
async fn field_limits(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let mut ws = listen(&app, &alice).await;
    let n = std::sync::atomic::AtomicUsize::new(0);
    // A fresh valid name per call, so only the field under test can fail.
    let body = |patch: Value| {
        let mut b = json!({ "name": format!("agent {}", n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)), "persona": PERSONA });
        for (k, v) in patch.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let create = |b: Value| app.post("/api/v1/agents", &alice.token, b);
    let refused = |r: Resp, field: &str, what: &str| {
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{what}: {}", r.body);
        assert!(message(&r).starts_with(field), "{what}: the message names `{field}`: {}", r.body);
    };

    // Name: 1..=50 of ASCII letters, digits, `_`, `-`, space, once trimmed.
    for ok in ["a".to_owned(), "n".repeat(50), "Az09_- x".to_owned(), format!("  {}  ", "n".repeat(49))] {
        let r = create(body(json!({ "name": ok }))).await;
        assert_eq!(r.status, 201, "{ok:?}: {}", r.body);
    }
    for bad in ["n".repeat(51), String::new(), "   ".into(), "héllo".into(), "dot.name".into(), "tab\tname".into(), "smile🙂".into(), "a/b".into()] {
        refused(create(body(json!({ "name": bad }))).await, "name", &format!("name {bad:?}"));
    }
    for bad in [json!(5), Value::Null] {
        refused(create(body(json!({ "name": bad }))).await, "name", &format!("name {bad}"));
    }

    // Persona: 10..=500 characters once trimmed (characters, not bytes).
    for ok in ["p".repeat(10), "é".repeat(500), format!("  {}  ", "p".repeat(10))] {
        assert_eq!(create(body(json!({ "persona": ok }))).await.status, 201, "persona of {} chars", ok.chars().count());
    }
    for bad in ["p".repeat(9), "p".repeat(501), format!("  {}  ", "p".repeat(9)), "ten chars \u{0} with NUL".into()] {
        refused(create(body(json!({ "persona": bad }))).await, "persona", &format!("persona of {} chars", bad.chars().count()));
    }
    let r = create(json!({ "name": "no persona" })).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{}", r.body);
    assert!(message(&r).contains("persona"), "{}", r.body);

    // Quirks: at most 10, each 1..=100 characters.
    assert_eq!(create(body(json!({ "quirks": vec!["q".repeat(100); 10] }))).await.status, 201);
    assert_eq!(create(body(json!({ "quirks": [] }))).await.status, 201);
    refused(create(body(json!({ "quirks": vec!["q"; 11] }))).await, "quirks", "11 quirks");
    refused(create(body(json!({ "quirks": ["ok", "q".repeat(101)] }))).await, "quirks[1]", "a quirk of 101");
    refused(create(body(json!({ "quirks": ["  "] }))).await, "quirks[0]", "a blank quirk");
    refused(create(body(json!({ "quirks": "terse" }))).await, "quirks", "quirks not a list");

    // Model and tools: only what the server knows.
    refused(create(body(json!({ "model": "gpt-unknown" }))).await, "model", "unknown model");
    refused(create(body(json!({ "model": "" }))).await, "model", "empty model");
    assert_eq!(create(body(json!({ "tools": ["clock"] }))).await.status, 201);
    refused(create(body(json!({ "tools": ["shell"] }))).await, "tools", "unknown tool");
    refused(create(body(json!({ "tools": ["clock", "clock"] }))).await, "tools", "a tool twice");

    // Response policy: one of the three.
    for ok in ["mention", "always", "manual"] {
        let r = create(body(json!({ "response_policy": ok }))).await;
        assert_eq!((r.status, r.body["response_policy"].as_str()), (201, Some(ok)));
    }
    for bad in [json!("sometimes"), json!("Mention"), json!(1)] {
        refused(create(body(json!({ "response_policy": bad }))).await, "response_policy", &format!("policy {bad}"));
    }

    // Unknown fields and broken JSON.
    let r = create(body(json!({ "owner_id": "someone" }))).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{}", r.body);
    let r = app.send(app.http.post(app.url("/api/v1/agents")).bearer_auth(&alice.token).body("{\"name\":")).await;
    assert_eq!((r.status, err(&r)), (400, "malformed_json"));

    // Refusals store and announce nothing: one event per agent created.
    let listed = app.get("/api/v1/agents", &alice.token).await.body["agents"].as_array().unwrap().len();
    assert_eq!(listed, 4 + 3 + 2 + 1 + 3);
    for _ in 0..listed {
        ws.push_of("agent_spawned").await;
    }
    nothing_before_marker(&app, &mut ws, &alice, 1).await;
    app.stop().await;
}
both_engines!(field_limits_at_and_past_each_bound, super::field_limits);

async fn names(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let helper = agent(&app, &alice, "Helper").await;
    for taken in ["Helper", "helper", " HELPER "] {
        let r = app.post("/api/v1/agents", &alice.token, json!({ "name": taken, "persona": PERSONA })).await;
        assert_eq!((r.status, err(&r)), (409, "conflict"), "{taken}: {}", r.body);
        assert!(message(&r).starts_with("name"), "{}", r.body);
    }
    // Another owner may use it.
    agent(&app, &bob, "helper").await;
    // Renaming onto a taken name conflicts; a case change of one's own name does not.
    let other = agent(&app, &alice, "Other").await;
    let other_path = format!("/api/v1/agents/{}", other["id"].as_str().unwrap());
    let r = app.patch(&other_path, &alice.token, json!({ "name": "hElPeR" })).await;
    assert_eq!((r.status, err(&r)), (409, "conflict"));
    assert_eq!(app.get(&other_path, &alice.token).await.body["name"], "Other", "a refused update changes nothing");
    let helper_path = format!("/api/v1/agents/{}", helper["id"].as_str().unwrap());
    let r = app.patch(&helper_path, &alice.token, json!({ "name": "HELPER" })).await;
    assert_eq!((r.status, r.body["name"].as_str()), (200, Some("HELPER")));
    // A deleted agent's name is free again.
    assert_eq!(app.delete(&other_path, &alice.token).await.status, 204);
    agent(&app, &alice, "other").await;
    app.stop().await;
}
both_engines!(names_are_unique_per_owner_ignoring_case, super::names);

async fn count_limit(engine: TestEngine) {
    // Default count (10); a creation rate that lets all of them through.
    let app = App::start_with(engine, |c| c.chat.agent_creates_per_minute = 1_000).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(agent(&app, &alice, &format!("a{i}")).await["id"].as_str().unwrap().to_owned());
    }
    let r = app.post("/api/v1/agents", &alice.token, json!({ "name": "eleventh", "persona": PERSONA })).await;
    assert_eq!((r.status, err(&r)), (429, "limit_exceeded"), "{}", r.body);
    assert!(message(&r).contains("10"), "{}", r.body);
    assert!(r.headers.get("retry-after").is_none(), "waiting does not help: {:?}", r.headers);
    // Per owner.
    agent(&app, &bob, "a0").await;
    // Deleting one frees a place.
    assert_eq!(app.delete(&format!("/api/v1/agents/{}", ids[0]), &alice.token).await.status, 204);
    agent(&app, &alice, "eleventh").await;
    let r = app.post("/api/v1/agents", &alice.token, json!({ "name": "twelfth", "persona": PERSONA })).await;
    assert_eq!((r.status, err(&r)), (429, "limit_exceeded"));
    app.stop().await;
}
both_engines!(ten_agents_per_user, super::count_limit);

async fn creation_rate(engine: TestEngine) {
    // Default rate (5 per minute).
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    for i in 0..3 {
        agent(&app, &alice, &format!("a{i}")).await;
    }
    // Refused input does not use up the allowance.
    for _ in 0..5 {
        let r = app.post("/api/v1/agents", &alice.token, json!({ "name": "bad.name", "persona": PERSONA })).await;
        assert_eq!(r.status, 400);
    }
    for i in 3..5 {
        agent(&app, &alice, &format!("a{i}")).await;
    }
    let r = app.post("/api/v1/agents", &alice.token, json!({ "name": "sixth", "persona": PERSONA })).await;
    assert_eq!((r.status, err(&r)), (429, "rate_limited"), "{}", r.body);
    let retry: u64 = r.headers.get("retry-after").expect("Retry-After").to_str().unwrap().parse().unwrap();
    // One creation comes back every 12 s.
    assert!((1..=12).contains(&retry), "Retry-After {retry}");
    assert_eq!(app.get("/api/v1/agents", &alice.token).await.body["agents"].as_array().unwrap().len(), 5);
    // Per user.
    agent(&app, &bob, "a0").await;
    app.stop().await;
}
both_engines!(five_creations_per_minute, super::creation_rate);

async fn others(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let root = app.admin("root").await;
    let mut alice_ws = listen(&app, &alice).await;
    let a = agent(&app, &alice, "mine").await;
    alice_ws.push_of("agent_spawned").await;
    let path = format!("/api/v1/agents/{}", a["id"].as_str().unwrap());

    // Another user: it does not exist.
    for r in [
        app.get(&path, &bob.token).await,
        app.patch(&path, &bob.token, json!({ "persona": "Taken over by bob." })).await,
        app.delete(&path, &bob.token).await,
    ] {
        assert_eq!((r.status, err(&r)), (404, "not_found"), "{}", r.body);
    }
    // An administrator may read and delete, not change.
    let r = app.patch(&path, &root.token, json!({ "persona": "Changed by an admin." })).await;
    assert_eq!((r.status, err(&r)), (403, "forbidden"));
    assert_eq!(app.get(&path, &alice.token).await.body, a, "unchanged");
    nothing_before_marker(&app, &mut alice_ws, &alice, 1).await;
    let r = app.delete(&path, &root.token).await;
    assert_eq!(r.status, 204);
    // The owner hears it.
    let ev = alice_ws.push_of("agent_despawned").await;
    assert_eq!(ev["channel"], format!("user:{}", alice.id));
    assert_eq!(ev["data"], json!({ "agent_id": a["id"] }));
    let r = app.get(&path, &alice.token).await;
    assert_eq!(r.status, 404);
    let r = app.delete(&path, &alice.token).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    app.stop().await;
}
both_engines!(others_agents_are_hidden_admins_read_and_delete, super::others);

async fn public_profile(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let a = agent(&app, &alice, "Helper").await;
    let id = a["id"].as_str().unwrap().to_owned();
    let room = channel(&app, &alice, "shared").await;
    add(&app, &alice, &room, &bob).await;
    let r = app.post(&format!("/api/v1/channels/{room}/members"), &alice.token, json!({ "kind": "agent", "id": id })).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // A member who shares the channel sees the agent's name, model and owner, and everyone's name.
    let members = app.get(&format!("/api/v1/channels/{room}/members"), &bob.token).await;
    assert_eq!(members.status, 200);
    let list = members.body["members"].as_array().unwrap();
    let shown = list.iter().find(|m| m["kind"] == "agent").expect("the agent is listed");
    assert_eq!((shown["id"].as_str(), shown["name"].as_str()), (Some(id.as_str()), Some("Helper")));
    assert_eq!((shown["model"].as_str(), shown["owner_id"].as_str()), (a["model"].as_str(), Some(alice.id.as_str())));
    for private in ["persona", "quirks", "tools", "webhook_url", "response_policy", "on_busy"] {
        assert!(shown.get(private).is_none(), "{private} is the owner's: {shown}");
    }
    for user in [&alice, &bob] {
        let m = list.iter().find(|m| m["kind"] == "user" && m["id"] == user.id.as_str()).expect("listed");
        assert_eq!(m["name"].as_str(), Some(user.username.as_str()));
        assert!(m.get("model").is_none() && m.get("owner_id").is_none(), "{m}");
    }
    // The agent record itself stays the owner's: still no such agent for bob.
    let r = app.get(&format!("/api/v1/agents/{id}"), &bob.token).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    // Someone who shares no channel learns nothing, not even that the channel exists.
    let r = app.get(&format!("/api/v1/channels/{room}/members"), &carol.token).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    // A renamed agent is listed by its new name.
    let r = app.patch(&format!("/api/v1/agents/{id}"), &alice.token, json!({ "name": "Helper Two" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let members = app.get(&format!("/api/v1/channels/{room}/members"), &bob.token).await;
    let shown = members.body["members"].as_array().unwrap().iter().find(|m| m["kind"] == "agent").cloned().unwrap();
    assert_eq!(shown["name"], "Helper Two");
    app.stop().await;
}
both_engines!(members_see_the_public_profile_of_each_others_agents, super::public_profile);

async fn update(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let mut ws = listen(&app, &alice).await;
    let body = json!({ "name": "Helper", "persona": PERSONA, "quirks": ["terse"], "tools": ["clock"] });
    let a = app.post("/api/v1/agents", &alice.token, body).await.body;
    ws.push_of("agent_spawned").await;
    let path = format!("/api/v1/agents/{}", a["id"].as_str().unwrap());

    // One field: only it changes.
    let r = app.patch(&path, &alice.token, json!({ "persona": "  A new voice, more cheerful.  " })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let u = r.body.clone();
    assert_eq!(u["persona"], "A new voice, more cheerful.");
    for same in ["id", "name", "quirks", "model", "tools", "response_policy", "created_at", "owner_id"] {
        assert_eq!(u[same], a[same], "{same}");
    }
    let ev = ws.push_of("agent_updated").await;
    assert_eq!(ev["channel"], format!("user:{}", alice.id));
    assert_eq!(ev["data"]["agent"], u);

    // Lists are replaced; `[]` empties them; null leaves a field as it is.
    let r = app.patch(&path, &alice.token, json!({ "quirks": [], "tools": ["calculator", "clock"], "response_policy": "manual", "name": null })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((&r.body["quirks"], &r.body["tools"]), (&json!([]), &json!(["calculator", "clock"])));
    assert_eq!((r.body["response_policy"].as_str(), r.body["name"].as_str()), (Some("manual"), Some("Helper")));
    assert_eq!(ws.push_of("agent_updated").await["data"]["agent"], r.body);
    let r = app.patch(&path, &alice.token, json!({ "model": "demo", "name": "Renamed" })).await;
    assert_eq!((r.status, r.body["name"].as_str()), (200, Some("Renamed")));
    let current = r.body.clone();
    ws.push_of("agent_updated").await;

    // An empty patch changes and announces nothing.
    let r = app.patch(&path, &alice.token, json!({})).await;
    assert_eq!((r.status, &r.body), (200, &current));

    // The rules of create, at their bounds.
    for ok in [json!({ "name": "n".repeat(50) }), json!({ "persona": "p".repeat(500) }), json!({ "quirks": vec!["q".repeat(100); 10] })] {
        assert_eq!(app.patch(&path, &alice.token, ok.clone()).await.status, 200, "{ok}");
        ws.push_of("agent_updated").await;
    }
    for (bad, field) in [
        (json!({ "name": "n".repeat(51) }), "name"),
        (json!({ "name": "" }), "name"),
        (json!({ "name": "bad!" }), "name"),
        (json!({ "persona": "p".repeat(9) }), "persona"),
        (json!({ "persona": "p".repeat(501) }), "persona"),
        (json!({ "quirks": vec!["q"; 11] }), "quirks"),
        (json!({ "quirks": ["q".repeat(101)] }), "quirks[0]"),
        (json!({ "model": "gpt-unknown" }), "model"),
        (json!({ "tools": ["shell"] }), "tools"),
        (json!({ "response_policy": "sometimes" }), "response_policy"),
        (json!({ "owner_id": "x" }), "owner_id"),
        // A bad field refuses the whole patch.
        (json!({ "persona": "A fine new persona.", "tools": ["shell"] }), "tools"),
    ] {
        let r = app.patch(&path, &alice.token, bad.clone()).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{bad}: {}", r.body);
        assert!(message(&r).contains(field), "{bad}: {}", r.body);
    }
    assert_eq!(app.get(&path, &alice.token).await.body["persona"], "p".repeat(500), "refused patches change nothing");
    nothing_before_marker(&app, &mut ws, &alice, 1).await;
    let r = app.patch("/api/v1/agents/no-such-agent", &alice.token, json!({ "persona": PERSONA })).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    app.stop().await;
}
both_engines!(partial_updates, super::update);

async fn channels_and_events(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let room_id = channel(&app, &alice, "general").await;
    let other_room = channel(&app, &alice, "other").await;
    let quiet_room = channel(&app, &carol, "quiet").await;
    add(&app, &alice, &room_id, &bob).await;
    let a = agent(&app, &alice, "bot").await;
    let id = a["id"].as_str().unwrap().to_owned();
    for c in [&room_id, &other_room] {
        let r = app.post(&format!("/api/v1/channels/{c}/members"), &alice.token, json!({ "kind": "agent", "id": id })).await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let room = format!("room:{room_id}");
    let mut alice_ws = listen(&app, &alice).await;
    let mut bob_ws = listen(&app, &bob).await;
    subscribe(&mut bob_ws, &room).await;
    let mut carol_ws = listen(&app, &carol).await;
    subscribe(&mut carol_ws, &format!("room:{quiet_room}")).await;

    // An update reaches the owner and every room the agent is in.
    let r = app.patch(&format!("/api/v1/agents/{id}"), &alice.token, json!({ "quirks": ["cheerful"] })).await;
    assert_eq!(r.status, 200);
    let ev = bob_ws.push_of("agent_updated").await;
    assert_eq!((ev["channel"].as_str(), &ev["data"]["agent"]), (Some(room.as_str()), &r.body));
    let ev = alice_ws.push_of("agent_updated").await;
    assert_eq!(ev["channel"], format!("user:{}", alice.id));

    // Deletion: the agent leaves its channels.
    let r = app.delete(&format!("/api/v1/agents/{id}"), &alice.token).await;
    assert_eq!(r.status, 204);
    let ev = alice_ws.push_of("agent_despawned").await;
    assert_eq!((ev["channel"].as_str(), &ev["data"]), (Some(format!("user:{}", alice.id).as_str()), &json!({ "agent_id": id })));
    // Bob, a member of one of them, hears it on the room, then the member
    // removal on the room and on his personal channel.
    let ev = bob_ws.push_of("agent_despawned").await;
    assert_eq!((ev["channel"].as_str(), &ev["data"]["agent_id"]), (Some(room.as_str()), &json!(id)));
    let mut removals = Vec::new();
    for _ in 0..2 {
        let ev = bob_ws.push_of("channel_member_removed").await;
        assert_eq!(ev["data"]["channel_id"], room_id.as_str());
        assert_eq!((ev["data"]["member"]["kind"].as_str(), ev["data"]["member"]["id"].as_str()), (Some("agent"), Some(id.as_str())));
        assert_eq!(ev["data"]["member"]["role"], "member");
        removals.push(ev["channel"].as_str().unwrap().to_owned());
    }
    removals.sort();
    let mut want = vec![room.clone(), format!("user:{}", bob.id)];
    want.sort();
    assert_eq!(removals, want);
    // Alice, a member of both rooms, hears both removals on her personal channel.
    let mut left = Vec::new();
    for _ in 0..2 {
        left.push(alice_ws.push_of("channel_member_removed").await["data"]["channel_id"].as_str().unwrap().to_owned());
    }
    left.sort();
    let mut want = vec![room_id.clone(), other_room.clone()];
    want.sort();
    assert_eq!(left, want);
    // Carol shares nothing with the agent and hears nothing.
    nothing_before_marker(&app, &mut carol_ws, &carol, 1).await;

    // The memberships are gone, the agent too.
    for c in [&room_id, &other_room] {
        let members = app.get(&format!("/api/v1/channels/{c}/members"), &alice.token).await.body["members"].clone();
        assert!(members.as_array().unwrap().iter().all(|m| m["kind"] == "user"), "{members}");
    }
    assert_eq!(app.get(&format!("/api/v1/agents/{id}"), &alice.token).await.status, 404);
    let r = app.post(&format!("/api/v1/channels/{room_id}/members"), &alice.token, json!({ "kind": "agent", "id": id })).await;
    assert_eq!(r.status, 404, "a deleted agent cannot be added back");
    app.stop().await;
}
both_engines!(channel_memberships_and_events, super::channels_and_events);

async fn maintenance(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let a = agent(&app, &alice, "before").await;
    let path = format!("/api/v1/agents/{}", a["id"].as_str().unwrap());
    let hub = &app.server().chat().deps().hub;

    hub.set_maintenance(MaintenanceMode::On { message: Some("upgrading".into()), since_ms: 0 }).await.unwrap();
    let r = app.post("/api/v1/agents", &alice.token, json!({ "name": "during", "persona": PERSONA })).await;
    assert_eq!((r.status, err(&r)), (503, "maintenance"), "{}", r.body);
    assert!(message(&r).contains("creating agents") && message(&r).contains("upgrading"), "{}", r.body);
    assert!(r.headers.get("retry-after").is_some());
    let r = app.patch(&path, &alice.token, json!({ "persona": "A changed persona." })).await;
    assert_eq!((r.status, err(&r)), (503, "maintenance"), "{}", r.body);
    // Reads and deletion still work.
    assert_eq!(app.get("/api/v1/agents", &alice.token).await.status, 200);
    assert_eq!(app.get(&path, &alice.token).await.body["persona"], PERSONA);
    assert_eq!(app.delete(&path, &alice.token).await.status, 204);

    hub.set_maintenance(MaintenanceMode::Off).await.unwrap();
    agent(&app, &alice, "after").await;
    app.stop().await;
}
both_engines!(maintenance_refuses_create_and_update, super::maintenance);
