//! REST: channels and members, their events, and membership deciding `room:`
//! subscriptions (removal revokes live WebSocket and SSE subscriptions).

use chorus_store::NewAgent;
use chorus_testkit::db::TestEngine;
use chorus_testkit::{SseClient, WsClient};
use serde_json::{Value, json};

use crate::common::{API_KEY, App, TestUser};

/// Creates a channel owned by `owner`; returns its id.
pub async fn channel(app: &App, owner: &TestUser, name: &str) -> String {
    let r = app.post("/api/v1/channels", &owner.token, json!({ "name": name })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().expect("id").to_owned()
}

/// Adds a user member (by the owner).
pub async fn add(app: &App, owner: &TestUser, channel: &str, user: &TestUser) {
    let r = app.post(&format!("/api/v1/channels/{channel}/members"), &owner.token, json!({ "kind": "user", "id": user.id })).await;
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Subscribes a WebSocket to a channel; panics unless it succeeds.
pub async fn subscribe(ws: &mut WsClient, channel: &str) -> Value {
    let r = ws.request(json!({ "type": "subscribe", "channel": channel })).await;
    assert!(r.get("result").is_some(), "subscribe {channel}: {r}");
    r["result"].clone()
}

/// Publishes a marker on a user's personal channel through the server API:
/// whatever a client receives after it was sent before it.
pub async fn marker(app: &App, user: &TestUser, n: u64) {
    let body = json!({ "channel": format!("user:{}", user.id), "data": { "marker": n } });
    let r = app.call("POST", "/api/v1/publish", Some(API_KEY), Some(body)).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

fn err(r: &crate::common::Resp) -> &str {
    r.body["error"].as_str().unwrap_or("")
}

async fn create_list_get(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut ws = app.ws(&alice.token).await;
    subscribe(&mut ws, &format!("user:{}", alice.id)).await;

    let r = app.post("/api/v1/channels", &alice.token, json!({ "name": "  general ", "topic": "chat", "retention_ms": 60000 })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let c = &r.body;
    let id = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["name"], "general", "trimmed");
    assert_eq!(c["topic"], "chat");
    assert_eq!(c["retention_ms"], 60000);
    assert_eq!(c["owner_id"], alice.id.as_str());
    assert_eq!(c["archived"], false);
    assert_eq!(c["stream"], format!("room:{id}"));

    let ev = ws.push_of("channel_created").await;
    assert_eq!(ev["channel"], format!("user:{}", alice.id));
    assert_eq!(ev["data"]["channel"]["id"], id.as_str());

    let r = app.get("/api/v1/channels", &alice.token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["channels"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["channels"][0]["role"], "owner");
    assert_eq!(r.body["channels"][0]["channel"]["id"], id.as_str());

    let r = app.get(&format!("/api/v1/channels/{id}"), &alice.token).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], id.as_str());

    // Not a member: the channel does not exist for bob.
    let r = app.get(&format!("/api/v1/channels/{id}"), &bob.token).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    let r = app.get("/api/v1/channels", &bob.token).await;
    assert_eq!(r.body["channels"], json!([]));
    let r = app.get("/api/v1/channels/does-not-exist", &alice.token).await;
    assert_eq!(r.status, 404);

    // No or bad credentials.
    let r = app.call("GET", "/api/v1/channels", None, None).await;
    assert_eq!((r.status, err(&r)), (401, "unauthorized"));
    let r = app.call("POST", "/api/v1/channels", Some("nonsense"), Some(json!({ "name": "x" }))).await;
    assert_eq!(r.status, 401);

    // The topic is optional.
    let r = app.post("/api/v1/channels", &bob.token, json!({ "name": "random" })).await;
    assert_eq!(r.status, 201);
    assert!(r.body.get("topic").is_none());
    assert!(r.body.get("retention_ms").is_none());
    app.stop().await;
}
both_engines!(create_list_get_and_visibility, super::create_list_get);

async fn field_limits(engine: TestEngine) {
    let app = App::start_with(engine, |c| c.chat.channels_per_user = 50).await;
    let alice = app.user("alice").await;
    let create = |body: Value| {
        let app = &app;
        let token = alice.token.clone();
        async move { app.post("/api/v1/channels", &token, body).await }
    };
    let ok = |status: u16| status == 201;

    // Name: 1..=80 characters once trimmed, counted in characters, not bytes.
    assert!(ok(create(json!({ "name": "a" })).await.status));
    assert!(ok(create(json!({ "name": "é".repeat(80) })).await.status));
    for bad in [json!(""), json!("   "), json!("x".repeat(81)), json!("a\u{7}b"), json!(5), Value::Null] {
        let r = create(json!({ "name": bad })).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "name {bad}: {}", r.body);
        assert!(r.body["message"].as_str().unwrap().starts_with("name"), "{}", r.body);
    }
    let r = create(json!({})).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"));

    // Topic: at most 250; empty means none.
    assert!(ok(create(json!({ "name": "t", "topic": "t".repeat(250) })).await.status));
    let r = create(json!({ "name": "t", "topic": "" })).await;
    assert_eq!(r.status, 201);
    assert!(r.body.get("topic").is_none());
    let r = create(json!({ "name": "t", "topic": "t".repeat(251) })).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"));
    assert!(r.body["message"].as_str().unwrap().starts_with("topic"));

    // Retention: 1 s to 10 years, or null.
    let max = 10_i64 * 365 * 24 * 3600 * 1000;
    assert!(ok(create(json!({ "name": "r", "retention_ms": 1000 })).await.status));
    assert!(ok(create(json!({ "name": "r", "retention_ms": max })).await.status));
    assert!(ok(create(json!({ "name": "r", "retention_ms": null })).await.status));
    for bad in [json!(999), json!(max + 1), json!(0), json!(-5), json!("1000")] {
        let r = create(json!({ "name": "r", "retention_ms": bad })).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "retention {bad}: {}", r.body);
    }

    // Unknown fields and broken JSON.
    let r = create(json!({ "name": "x", "colour": "red" })).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"));
    let r = app.send(app.http.post(app.url("/api/v1/channels")).bearer_auth(&alice.token).body("{\"name\":")).await;
    assert_eq!((r.status, err(&r)), (400, "malformed_json"));
    app.stop().await;
}
both_engines!(name_topic_and_retention_limits, super::field_limits);

async fn limit(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(channel(&app, &alice, &format!("c{i}")).await);
    }
    // Archived channels still count.
    let r = app.patch(&format!("/api/v1/channels/{}", ids[0]), &alice.token, json!({ "archived": true })).await;
    assert_eq!(r.status, 200);
    let r = app.post("/api/v1/channels", &alice.token, json!({ "name": "sixth" })).await;
    assert_eq!((r.status, err(&r)), (429, "limit_exceeded"), "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains('5'));
    // Another user has their own allowance; membership elsewhere does not count.
    add(&app, &alice, &ids[1], &bob).await;
    for i in 0..5 {
        channel(&app, &bob, &format!("b{i}")).await;
    }
    // Deleting one frees a place.
    let r = app.delete(&format!("/api/v1/channels/{}", ids[0]), &alice.token).await;
    assert_eq!(r.status, 204);
    channel(&app, &alice, "again").await;
    app.stop().await;
}
both_engines!(channel_limit_per_user, super::limit);

async fn update(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let id = channel(&app, &alice, "general").await;
    add(&app, &alice, &id, &bob).await;
    let mut bob_ws = app.ws(&bob.token).await;
    subscribe(&mut bob_ws, &format!("user:{}", bob.id)).await;
    subscribe(&mut bob_ws, &format!("room:{id}")).await;

    let path = format!("/api/v1/channels/{id}");
    let r = app.patch(&path, &alice.token, json!({ "name": "renamed", "topic": "new topic", "retention_ms": 5000 })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["name"].as_str(), r.body["topic"].as_str(), r.body["retention_ms"].as_i64()), (Some("renamed"), Some("new topic"), Some(5000)));
    // Bob hears it on the room and on his personal channel.
    let mut seen = Vec::new();
    for _ in 0..2 {
        let ev = bob_ws.push_of("channel_updated").await;
        assert_eq!(ev["data"]["channel"]["name"], "renamed");
        seen.push(ev["channel"].as_str().unwrap().to_owned());
    }
    seen.sort();
    let mut want = vec![format!("room:{id}"), format!("user:{}", bob.id)];
    want.sort();
    assert_eq!(seen, want);

    // Null clears; absent leaves as is.
    let r = app.patch(&path, &alice.token, json!({ "topic": null, "retention_ms": null })).await;
    assert_eq!(r.status, 200);
    assert!(r.body.get("topic").is_none() && r.body.get("retention_ms").is_none(), "{}", r.body);
    assert_eq!(r.body["name"], "renamed");
    // An empty patch changes nothing.
    let r = app.patch(&path, &alice.token, json!({})).await;
    assert_eq!((r.status, r.body["name"].as_str()), (200, Some("renamed")));

    // Validation as on create.
    for bad in [json!({ "name": "" }), json!({ "name": "n".repeat(81) }), json!({ "topic": "t".repeat(251) }), json!({ "retention_ms": 999 }), json!({ "archived": "yes" }), json!({ "owner_id": "x" })] {
        let r = app.patch(&path, &alice.token, bad.clone()).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{bad}: {}", r.body);
    }
    // Members may not; others do not see the channel.
    let r = app.patch(&path, &bob.token, json!({ "name": "mine" })).await;
    assert_eq!((r.status, err(&r)), (403, "forbidden"));
    let r = app.patch(&path, &carol.token, json!({ "name": "mine" })).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    let r = app.delete(&path, &bob.token).await;
    assert_eq!((r.status, err(&r)), (403, "forbidden"));
    let r = app.delete(&path, &carol.token).await;
    assert_eq!(r.status, 404);

    // A member made owner may.
    let r = app.post(&format!("{path}/members"), &alice.token, json!({ "kind": "user", "id": carol.id, "role": "owner" })).await;
    assert_eq!((r.status, r.body["role"].as_str()), (201, Some("owner")));
    let r = app.patch(&path, &carol.token, json!({ "name": "carol's" })).await;
    assert_eq!(r.status, 200);
    app.stop().await;
}
both_engines!(update_permissions_and_events, super::update);

async fn archived(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let id = channel(&app, &alice, "general").await;
    let path = format!("/api/v1/channels/{id}");
    let r = app.post(&format!("{path}/messages"), &alice.token, json!({ "text": "before" })).await;
    assert_eq!(r.status, 201);
    let mid = r.body["message"]["id"].as_str().unwrap().to_owned();

    let r = app.patch(&path, &alice.token, json!({ "archived": true })).await;
    assert_eq!((r.status, r.body["archived"].as_bool()), (200, Some(true)));
    // Read-only: no messages, edits, deletions or new members.
    let r = app.post(&format!("{path}/messages"), &alice.token, json!({ "text": "after" })).await;
    assert_eq!((r.status, err(&r)), (409, "conflict"), "{}", r.body);
    let r = app.patch(&format!("{path}/messages/{mid}"), &alice.token, json!({ "text": "edit" })).await;
    assert_eq!(r.status, 409);
    let r = app.delete(&format!("{path}/messages/{mid}"), &alice.token).await;
    assert_eq!(r.status, 409);
    let r = app.post(&format!("{path}/members"), &alice.token, json!({ "kind": "user", "id": bob.id })).await;
    assert_eq!(r.status, 409);
    let mut ws = app.ws(&alice.token).await;
    let r = ws.request(json!({ "type": "send_message", "channel": format!("room:{id}"), "text": "ws" })).await;
    assert_eq!(r["error"]["error"], "conflict", "{r}");
    // Reads still work.
    let r = app.get(&format!("{path}/messages"), &alice.token).await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 1);
    // Unarchive: writable again.
    let r = app.patch(&path, &alice.token, json!({ "archived": false })).await;
    assert_eq!(r.body["archived"], false);
    let r = app.post(&format!("{path}/messages"), &alice.token, json!({ "text": "after" })).await;
    assert_eq!(r.status, 201);
    app.stop().await;
}
both_engines!(archived_channels_are_read_only, super::archived);

async fn members(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let dave = app.user("dave").await;
    let id = channel(&app, &alice, "general").await;
    let path = format!("/api/v1/channels/{id}/members");

    let r = app.post(&path, &alice.token, json!({ "kind": "user", "id": bob.id })).await;
    assert_eq!(r.status, 201);
    assert_eq!((r.body["kind"].as_str(), r.body["id"].as_str(), r.body["role"].as_str()), (Some("user"), Some(bob.id.as_str()), Some("member")));
    let r = app.get(&path, &bob.token).await;
    assert_eq!(r.status, 200);
    let list: Vec<(String, String)> = r.body["members"].as_array().unwrap().iter().map(|m| (m["id"].as_str().unwrap().to_owned(), m["role"].as_str().unwrap().to_owned())).collect();
    assert_eq!(list, vec![(alice.id.clone(), "owner".to_owned()), (bob.id.clone(), "member".to_owned())]);
    let r = app.get(&path, &carol.token).await;
    assert_eq!(r.status, 404);

    // Errors.
    let r = app.post(&path, &alice.token, json!({ "kind": "user", "id": bob.id })).await;
    assert_eq!((r.status, err(&r)), (409, "conflict"));
    let r = app.post(&path, &alice.token, json!({ "kind": "user", "id": "no-such-user" })).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    let r = app.post(&path, &alice.token, json!({ "kind": "robot", "id": carol.id })).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"));
    let r = app.post(&path, &alice.token, json!({ "kind": "user", "id": "" })).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"));
    let r = app.post(&path, &alice.token, json!({ "kind": "user", "id": "x".repeat(65) })).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"));
    let r = app.post(&path, &alice.token, json!({ "kind": "user", "id": carol.id, "role": "boss" })).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"));
    let r = app.post(&path, &bob.token, json!({ "kind": "user", "id": carol.id })).await;
    assert_eq!((r.status, err(&r)), (403, "forbidden"));
    let r = app.post(&path, &carol.token, json!({ "kind": "user", "id": carol.id })).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));

    // Agents: only one's own, only as members.
    let store = app.server().store();
    let agent = |owner: &str, name: &str| NewAgent {
        owner_id: owner.to_owned(),
        name: name.to_owned(),
        persona: "A helpful test agent.".into(),
        quirks: vec![],
        model: "demo".into(),
        tools: vec![],
        response_policy: "mention".into(),
    };
    let mine = store.create_agent(agent(&alice.id, "helper"), 10).await.unwrap();
    let theirs = store.create_agent(agent(&dave.id, "other"), 10).await.unwrap();
    let r = app.post(&path, &alice.token, json!({ "kind": "agent", "id": mine.id, "role": "owner" })).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"));
    let r = app.post(&path, &alice.token, json!({ "kind": "agent", "id": mine.id })).await;
    assert_eq!((r.status, r.body["kind"].as_str()), (201, Some("agent")), "{}", r.body);
    // Someone else's agent and no agent answer alike: nothing says which ids exist.
    let theirs_answer = app.post(&path, &alice.token, json!({ "kind": "agent", "id": theirs.id })).await;
    let none_answer = app.post(&path, &alice.token, json!({ "kind": "agent", "id": "no-such-agent" })).await;
    assert_eq!((theirs_answer.status, err(&theirs_answer)), (404, "not_found"), "{}", theirs_answer.body);
    assert_eq!((none_answer.status, err(&none_answer)), (404, "not_found"));
    assert_eq!(theirs_answer.body["message"], none_answer.body["message"]);
    // An unknown user is answered like an unknown agent: not found, naming the field.
    let r = app.post(&path, &alice.token, json!({ "kind": "user", "id": "no-such-user" })).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    assert!(r.body["message"].as_str().unwrap().starts_with("id: "), "{}", r.body);
    let r = app.delete(&format!("{path}/agent/{}", mine.id), &alice.token).await;
    assert_eq!(r.status, 204);

    // Removal: owners remove others; members only themselves; the creator never.
    add(&app, &alice, &id, &carol).await;
    let r = app.delete(&format!("{path}/user/{}", carol.id), &bob.token).await;
    assert_eq!((r.status, err(&r)), (403, "forbidden"));
    let r = app.delete(&format!("{path}/user/{}", bob.id), &bob.token).await;
    assert_eq!(r.status, 204, "leaving: {}", r.body);
    let r = app.get(&format!("/api/v1/channels/{id}"), &bob.token).await;
    assert_eq!(r.status, 404);
    let r = app.delete(&format!("{path}/user/{}", alice.id), &alice.token).await;
    assert_eq!((r.status, err(&r)), (409, "conflict"));
    let r = app.delete(&format!("{path}/user/{}", dave.id), &alice.token).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    let r = app.delete(&format!("{path}/robot/{}", carol.id), &alice.token).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"));
    let r = app.delete(&format!("{path}/user/{}", carol.id), &alice.token).await;
    assert_eq!(r.status, 204);
    let r = app.get(&path, &alice.token).await;
    assert_eq!(r.body["members"].as_array().unwrap().len(), 1);
    app.stop().await;
}
both_engines!(members_add_list_remove, super::members);

async fn member_events(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let id = channel(&app, &alice, "general").await;
    let mut alice_ws = app.ws(&alice.token).await;
    subscribe(&mut alice_ws, &format!("room:{id}")).await;
    let mut bob_ws = app.ws(&bob.token).await;
    subscribe(&mut bob_ws, &format!("user:{}", bob.id)).await;

    add(&app, &alice, &id, &bob).await;
    let ev = alice_ws.push_of("channel_member_added").await;
    assert_eq!((ev["channel"].as_str(), ev["data"]["channel_id"].as_str(), ev["data"]["member"]["id"].as_str()), (Some(format!("room:{id}").as_str()), Some(id.as_str()), Some(bob.id.as_str())));
    // The new member hears it on its personal channel, then may subscribe.
    let ev = bob_ws.push_of("channel_member_added").await;
    assert_eq!(ev["channel"], format!("user:{}", bob.id));
    subscribe(&mut bob_ws, &format!("room:{id}")).await;

    let r = app.delete(&format!("/api/v1/channels/{id}/members/user/{}", bob.id), &alice.token).await;
    assert_eq!(r.status, 204);
    let ev = alice_ws.push_of("channel_member_removed").await;
    assert_eq!(ev["data"]["member"]["id"], bob.id.as_str());
    assert_eq!(ev["data"]["member"]["role"], "member");
    // Bob hears it on his personal channel (and may on the room, before his
    // subscription to it ends).
    loop {
        let ev = bob_ws.push_of("channel_member_removed").await;
        if ev["channel"] == format!("user:{}", bob.id) {
            assert_eq!(ev["data"]["member"]["id"], bob.id.as_str());
            break;
        }
        assert_eq!(ev["channel"], format!("room:{id}"));
    }
    app.stop().await;
}
both_engines!(member_events_reach_members, super::member_events);

async fn revocation(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let id = channel(&app, &alice, "general").await;
    add(&app, &alice, &id, &bob).await;
    let room = format!("room:{id}");

    // Bob listens on a WebSocket and an SSE stream, each with his personal channel too.
    let mut ws = app.ws(&bob.token).await;
    subscribe(&mut ws, &room).await;
    subscribe(&mut ws, &format!("user:{}", bob.id)).await;
    let query = format!("channel={room}&channel=user:{}", bob.id);
    let mut sse = SseClient::open(&app.http, &app.base, &bob.token, &query, None).await.expect("sse");
    assert_eq!(sse.next().await.unwrap().event, "connected");

    // Both see room traffic while a member.
    let r = app.post(&format!("/api/v1/channels/{id}/messages"), &alice.token, json!({ "text": "hello bob" })).await;
    assert_eq!(r.status, 201);
    assert_eq!(ws.push_of("message_created").await["data"]["message"]["text"], "hello bob");
    assert_eq!(sse.next_of("message_created").await.data["data"]["message"]["text"], "hello bob");

    let r = app.delete(&format!("/api/v1/channels/{id}/members/user/{}", bob.id), &alice.token).await;
    assert_eq!(r.status, 204);

    // At once, on both transports.
    let u = ws.push_of("unsubscribed").await;
    assert_eq!(u["channel"], room.as_str());
    let u = sse.next_of("unsubscribed").await;
    assert_eq!(u.data["channel"], room.as_str());

    // Nothing from the room after that: a message, then a marker on bob's own channel.
    let r = app.post(&format!("/api/v1/channels/{id}/messages"), &alice.token, json!({ "text": "secret" })).await;
    assert_eq!(r.status, 201);
    marker(&app, &bob, 1).await;
    loop {
        let p = ws.push().await;
        assert_ne!(p["channel"], room.as_str(), "room event after removal: {p}");
        if p["type"] == "publication" {
            assert_eq!(p["data"]["marker"], 1);
            break;
        }
    }
    loop {
        let e = sse.next().await.expect("sse event");
        assert_ne!(e.data["channel"], room.as_str(), "room event after removal: {:?}", e);
        if e.event == "publication" {
            break;
        }
    }

    // Membership decides: no way back in, whatever the transport.
    let r = ws.request(json!({ "type": "subscribe", "channel": room })).await;
    assert_eq!(r["error"]["error"], "forbidden", "{r}");
    let r = ws.request(json!({ "type": "history", "channel": room })).await;
    assert_eq!(r["error"]["error"], "forbidden", "{r}");
    match SseClient::open(&app.http, &app.base, &bob.token, &format!("channel={room}"), None).await {
        Err((status, _)) => assert_eq!(status, 403),
        Ok(_) => panic!("a removed member opened an SSE stream on the room"),
    }
    // Alice is untouched.
    let mut alice_ws = app.ws(&alice.token).await;
    subscribe(&mut alice_ws, &room).await;
    app.stop().await;
}
both_engines!(removal_revokes_live_subscriptions_at_once, super::revocation);

async fn delete(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let id = channel(&app, &alice, "general").await;
    add(&app, &alice, &id, &bob).await;
    let room = format!("room:{id}");
    let r = app.post(&format!("/api/v1/channels/{id}/messages"), &bob.token, json!({ "text": "bye" })).await;
    assert_eq!(r.status, 201);
    let mut bob_ws = app.ws(&bob.token).await;
    subscribe(&mut bob_ws, &room).await;
    subscribe(&mut bob_ws, &format!("user:{}", bob.id)).await;
    let mut alice_ws = app.ws(&alice.token).await;
    subscribe(&mut alice_ws, &room).await;

    let r = app.delete(&format!("/api/v1/channels/{id}"), &alice.token).await;
    assert_eq!(r.status, 204);
    let ev = alice_ws.push_of("channel_deleted").await;
    assert_eq!((ev["channel"].as_str(), ev["data"]["channel_id"].as_str()), (Some(room.as_str()), Some(id.as_str())));
    assert_eq!(alice_ws.push_of("unsubscribed").await["channel"], room.as_str());
    // Bob hears it on the room and on his personal channel, then loses the room.
    marker(&app, &bob, 2).await;
    let mut seen = Vec::new();
    loop {
        let p = bob_ws.push().await;
        if p["type"] == "publication" {
            break;
        }
        seen.push(format!("{} {}", p["type"].as_str().unwrap(), p["channel"].as_str().unwrap()));
    }
    for want in [format!("channel_deleted {room}"), format!("channel_deleted user:{}", bob.id), format!("unsubscribed {room}")] {
        assert!(seen.contains(&want), "{want} missing from {seen:?}");
    }
    let last_room = seen.iter().rposition(|s| s.ends_with(room.as_str())).unwrap();
    assert!(seen[last_room].starts_with("unsubscribed"), "room events after unsubscribed: {seen:?}");

    for token in [&alice.token, &bob.token] {
        let r = app.get(&format!("/api/v1/channels/{id}"), token).await;
        assert_eq!(r.status, 404);
        let r = app.get(&format!("/api/v1/channels/{id}/messages"), token).await;
        assert_eq!(r.status, 404);
    }
    let r = bob_ws.request(json!({ "type": "subscribe", "channel": room })).await;
    assert_eq!(r["error"]["error"], "forbidden");
    let r = app.delete(&format!("/api/v1/channels/{id}"), &alice.token).await;
    assert_eq!(r.status, 404);
    app.stop().await;
}
both_engines!(delete_channel_tells_and_unsubscribes_everyone, super::delete);
