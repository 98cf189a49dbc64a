//! REST and WebSocket: messages (send, idempotent retry, limits, edit,
//! delete, history), the outbox relay and retention.

use std::time::Duration;

use chorus_core::maintenance::MaintenanceMode;
use chorus_store::{EventBuilder, InsertOutcome, MemberRef, Message, NewMessage, OutboxEvent};
use chorus_testkit::WsClient;
use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::channels::{add, channel, subscribe};
use crate::common::{App, Resp, TestUser};

fn err(r: &Resp) -> &str {
    r.body["error"].as_str().unwrap_or("")
}

/// A server whose message and request rates tests do not hit.
async fn roomy(engine: TestEngine) -> App {
    App::start_with(engine, |c| {
        c.rate_limits.messages_per_minute = 60_000.0;
        c.rate_limits.messages_burst = 10_000;
        c.rate_limits.rest_per_minute = 60_000.0;
        c.rate_limits.rest_burst = 10_000;
    })
    .await
}

async fn send(app: &App, user: &TestUser, channel: &str, text: &str) -> Resp {
    app.post(&format!("/api/v1/channels/{channel}/messages"), &user.token, json!({ "text": text })).await
}

fn ws_send(channel: &str, text: &str) -> Value {
    json!({ "type": "send_message", "channel": format!("room:{channel}"), "text": text })
}

async fn round_trip(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let id = channel(&app, &alice, "general").await;
    add(&app, &alice, &id, &bob).await;
    add(&app, &alice, &id, &carol).await;
    let room = format!("room:{id}");
    let mut clients: Vec<WsClient> = Vec::new();
    for u in [&alice, &bob, &carol] {
        let mut ws = app.ws(&u.token).await;
        subscribe(&mut ws, &room).await;
        clients.push(ws);
    }

    // Over REST.
    let r = send(&app, &alice, &id, "over rest").await;
    assert_eq!(r.status, 201, "{}", r.body);
    let m = &r.body["message"];
    assert_eq!((m["text"].as_str(), m["seq"].as_i64(), m["channel_id"].as_str()), (Some("over rest"), Some(1), Some(id.as_str())));
    assert_eq!((m["author"]["kind"].as_str(), m["author"]["id"].as_str()), (Some("user"), Some(alice.id.as_str())));
    assert_eq!(r.body["duplicate"], false);
    let offset = r.body["offset"].as_u64().expect("offset");
    let epoch = r.body["epoch"].as_str().expect("epoch").to_owned();
    for ws in &mut clients {
        let ev = ws.push_of("message_created").await;
        assert_eq!(ev["channel"], room.as_str());
        assert_eq!(ev["data"]["message"], *m, "the event carries the acknowledged message");
        assert_eq!((ev["offset"].as_u64(), ev["epoch"].as_str()), (Some(offset), Some(epoch.as_str())));
    }

    // Over the WebSocket, through the same service.
    let reply = clients[1].request(ws_send(&id, "over ws")).await;
    let res = &reply["result"];
    assert_eq!((res["channel"].as_str(), res["seq"].as_i64(), res["duplicate"].as_bool()), (Some(room.as_str()), Some(2), Some(false)), "{reply}");
    let mid = res["message_id"].as_str().unwrap().to_owned();
    for ws in &mut clients {
        let ev = ws.push_of("message_created").await;
        assert_eq!(ev["data"]["message"]["id"], mid.as_str());
        assert_eq!(ev["data"]["message"]["text"], "over ws");
        assert_eq!(ev["data"]["message"]["author"]["id"], bob.id.as_str());
        assert_eq!(ev["offset"], res["offset"]);
        assert_eq!(ev["epoch"], res["epoch"]);
    }
    // Both are stored; nothing is left in the outbox.
    let r = app.get(&format!("/api/v1/channels/{id}/messages"), &carol.token).await;
    let texts: Vec<&str> = r.body["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["over ws", "over rest"]);
    assert!(app.server().store().pending_outbox(10).await.unwrap().is_empty());
    app.stop().await;
}
both_engines!(rest_and_ws_sends_reach_every_member, super::round_trip);

async fn text_limits(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let id = channel(&app, &alice, "general").await;
    let mut ws = app.ws(&alice.token).await;

    // 1..=2000 characters, counted as characters.
    for ok in ["x".to_owned(), "x".repeat(2000), "é".repeat(2000), "🎉".repeat(2000), " padded ".to_owned()] {
        let r = send(&app, &alice, &id, &ok).await;
        assert_eq!(r.status, 201, "{} chars: {}", ok.chars().count(), r.body);
        assert_eq!(r.body["message"]["text"], ok.as_str(), "stored as sent");
    }
    for bad in ["".to_owned(), "   \n".to_owned(), "x".repeat(2001), "é".repeat(2001), "a\0b".to_owned()] {
        let r = send(&app, &alice, &id, &bad).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{} chars", bad.chars().count());
        assert!(r.body["message"].as_str().unwrap().starts_with("text"), "{}", r.body);
        let reply = ws.request(ws_send(&id, &bad)).await;
        assert_eq!(reply["error"]["error"], "invalid_field", "{reply}");
    }
    let reply = ws.request(ws_send(&id, &"x".repeat(2000))).await;
    assert!(reply.get("result").is_some(), "{reply}");
    // Wrong types and unknown fields.
    for body in [json!({}), json!({ "text": 5 }), json!({ "text": "x", "extra": 1 }), json!({ "text": "x", "idempotency_key": 7 })] {
        let r = app.post(&format!("/api/v1/channels/{id}/messages"), &alice.token, body.clone()).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{body}");
    }
    app.stop().await;
}
both_engines!(message_length_limits, super::text_limits);

async fn membership(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let mallory = app.user("mallory").await;
    let id = channel(&app, &alice, "general").await;
    send(&app, &alice, &id, "members only").await;

    // Not a member: the channel does not exist, over every route and the WebSocket.
    let r = send(&app, &mallory, &id, "let me in").await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    let r = app.get(&format!("/api/v1/channels/{id}/messages"), &mallory.token).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"));
    let mut ws = app.ws(&mallory.token).await;
    let reply = ws.request(ws_send(&id, "let me in")).await;
    assert_eq!(reply["error"]["error"], "not_found", "{reply}");
    let reply = ws.request(json!({ "type": "subscribe", "channel": format!("room:{id}") })).await;
    assert_eq!(reply["error"]["error"], "forbidden", "{reply}");
    // Unknown channels, and channels outside `room:`.
    let r = send(&app, &alice, "no-such-channel", "hi").await;
    assert_eq!(r.status, 404);
    let reply = ws.request(json!({ "type": "send_message", "channel": format!("user:{}", mallory.id), "text": "hi" })).await;
    assert_eq!(reply["error"]["error"], "invalid_field", "{reply}");
    // Nothing was stored by mallory.
    let r = app.get(&format!("/api/v1/channels/{id}/messages"), &alice.token).await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 1);
    // No token.
    let r = app.call("POST", &format!("/api/v1/channels/{id}/messages"), None, Some(json!({ "text": "x" }))).await;
    assert_eq!(r.status, 401);
    app.stop().await;
}
both_engines!(non_members_cannot_send_or_read, super::membership);

async fn idempotency(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let id = channel(&app, &alice, "general").await;
    let other = channel(&app, &alice, "other").await;
    add(&app, &alice, &id, &bob).await;
    let mut bob_ws = app.ws(&bob.token).await;
    subscribe(&mut bob_ws, &format!("room:{id}")).await;
    let path = format!("/api/v1/channels/{id}/messages");

    let first = app.post(&path, &alice.token, json!({ "text": "once", "idempotency_key": "k-1" })).await;
    assert_eq!(first.status, 201);
    let mid = first.body["message"]["id"].as_str().unwrap().to_owned();
    // The retry returns the original, publishes nothing, stores nothing.
    let again = app.post(&path, &alice.token, json!({ "text": "once (retry)", "idempotency_key": "k-1" })).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(again.body["message"]["id"], mid.as_str());
    assert_eq!(again.body["message"]["text"], "once");
    assert!(again.body.get("offset").is_none() && again.body.get("epoch").is_none(), "{}", again.body);
    // Through the header, and over the WebSocket: the same original.
    let r = app.send(app.http.post(app.url(&path)).bearer_auth(&alice.token).header("idempotency-key", "k-1").json(&json!({ "text": "hdr" }))).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["message"]["id"], mid.as_str());
    let mut alice_ws = app.ws(&alice.token).await;
    let reply = alice_ws.request(json!({ "type": "send_message", "channel": format!("room:{id}"), "text": "ws", "idempotency_key": "k-1" })).await;
    assert_eq!((reply["result"]["message_id"].as_str(), reply["result"]["duplicate"].as_bool()), (Some(mid.as_str()), Some(true)), "{reply}");
    assert!(reply["result"].get("offset").is_none());
    assert_eq!(reply["result"]["seq"], 1);

    // A header-only key works for a new message; body and header must agree.
    let r = app.send(app.http.post(app.url(&path)).bearer_auth(&alice.token).header("idempotency-key", "k-2").json(&json!({ "text": "two" }))).await;
    assert_eq!(r.status, 201);
    let r = app.send(app.http.post(app.url(&path)).bearer_auth(&alice.token).header("idempotency-key", "k-3").json(&json!({ "text": "x", "idempotency_key": "k-4" }))).await;
    assert_eq!(r.status, 400);
    // Keys are per user: bob's k-1 is his own.
    let r = app.post(&path, &bob.token, json!({ "text": "bob's", "idempotency_key": "k-1" })).await;
    assert_eq!(r.status, 201);
    // A key used in another channel is a conflict, not a silent duplicate.
    let r = app.post(&format!("/api/v1/channels/{other}/messages"), &alice.token, json!({ "text": "x", "idempotency_key": "k-1" })).await;
    assert_eq!((r.status, err(&r)), (409, "conflict"));
    // Key bounds: 1..=128 visible ASCII.
    let r = app.post(&path, &alice.token, json!({ "text": "x", "idempotency_key": "k".repeat(128) })).await;
    assert_eq!(r.status, 201);
    for bad in ["".to_owned(), "k".repeat(129), "with space".to_owned(), "ключ".to_owned()] {
        let r = app.post(&path, &alice.token, json!({ "text": "x", "idempotency_key": bad })).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{bad:?}");
    }

    // Bob saw each new message exactly once.
    let r = app.get(&path, &bob.token).await;
    let stored: Vec<String> = r.body["messages"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(stored.len(), 4, "once, two, bob's, 128-char key");
    let mut seen = Vec::new();
    for _ in 0..stored.len() {
        seen.push(bob_ws.push_of("message_created").await["data"]["message"]["id"].as_str().unwrap().to_owned());
    }
    seen.reverse();
    assert_eq!(seen, stored);
    app.stop().await;
}
both_engines!(idempotent_retry_returns_the_original, super::idempotency);

async fn rate_limit(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let id = channel(&app, &alice, "general").await;
    // Burst 5, shared by REST and the WebSocket.
    for i in 0..3 {
        assert_eq!(send(&app, &alice, &id, &format!("m{i}")).await.status, 201);
    }
    let mut ws = app.ws(&alice.token).await;
    for i in 3..5 {
        let reply = ws.request(ws_send(&id, &format!("m{i}"))).await;
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let r = send(&app, &alice, &id, "too many").await;
    assert_eq!((r.status, err(&r)), (429, "rate_limited"), "{}", r.body);
    assert!(r.headers.get("retry-after").is_some());
    let reply = ws.request(ws_send(&id, "too many")).await;
    assert_eq!(reply["error"]["error"], "rate_limited");
    // Another user is not affected; nothing extra was stored.
    let bob = app.user("bob").await;
    add(&app, &alice, &id, &bob).await;
    assert_eq!(send(&app, &bob, &id, "fine").await.status, 201);
    let r = app.get(&format!("/api/v1/channels/{id}/messages"), &alice.token).await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 6);
    app.stop().await;
}
both_engines!(messages_are_rate_limited_per_user, super::rate_limit);

async fn maintenance(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let id = channel(&app, &alice, "general").await;
    let r = send(&app, &alice, &id, "before").await;
    let mid = r.body["message"]["id"].as_str().unwrap().to_owned();
    let mut ws = app.ws(&alice.token).await;

    let on = MaintenanceMode::On { message: Some("upgrading".into()), since_ms: 0 };
    app.server().chat().deps().hub.set_maintenance(on).await.unwrap();
    let r = send(&app, &alice, &id, "during").await;
    assert_eq!((r.status, err(&r)), (503, "maintenance"), "{}", r.body);
    let text = r.body["message"].as_str().unwrap();
    assert!(text.contains("sending messages") && text.contains("upgrading"), "{text}");
    let reply = ws.request(ws_send(&id, "during")).await;
    assert_eq!(reply["error"]["error"], "maintenance", "{reply}");
    let r = app.patch(&format!("/api/v1/channels/{id}/messages/{mid}"), &alice.token, json!({ "text": "edited" })).await;
    assert_eq!((r.status, err(&r)), (503, "maintenance"));
    let r = app.post("/api/v1/channels", &alice.token, json!({ "name": "new" })).await;
    assert_eq!((r.status, err(&r)), (503, "maintenance"));
    let r = app.patch(&format!("/api/v1/channels/{id}"), &alice.token, json!({ "name": "renamed" })).await;
    assert_eq!((r.status, err(&r)), (503, "maintenance"));
    // Reads, archiving and moderation still work.
    let r = app.get(&format!("/api/v1/channels/{id}/messages"), &alice.token).await;
    assert_eq!(r.status, 200);
    assert_eq!(app.get("/api/v1/channels", &alice.token).await.status, 200);

    app.server().chat().deps().hub.set_maintenance(MaintenanceMode::Off).await.unwrap();
    assert_eq!(send(&app, &alice, &id, "after").await.status, 201);
    app.stop().await;
}
both_engines!(maintenance_refuses_new_content, super::maintenance);

async fn edit_delete(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let carol = app.user("carol").await;
    let id = channel(&app, &alice, "general").await;
    add(&app, &alice, &id, &bob).await;
    add(&app, &alice, &id, &carol).await;
    let mut ws = app.ws(&carol.token).await;
    subscribe(&mut ws, &format!("room:{id}")).await;
    let base = format!("/api/v1/channels/{id}/messages");
    let bobs = send(&app, &bob, &id, "bob's").await.body["message"]["id"].as_str().unwrap().to_owned();
    let carols = send(&app, &carol, &id, "carol's").await.body["message"]["id"].as_str().unwrap().to_owned();

    // Only the author edits.
    let r = app.patch(&format!("{base}/{bobs}"), &bob.token, json!({ "text": "bob's, edited" })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["text"], "bob's, edited");
    assert!(r.body["edited_at"].is_string());
    let ev = ws.push_of("message_updated").await;
    assert_eq!(ev["data"]["message"], r.body);
    for who in [&alice, &carol] {
        let r = app.patch(&format!("{base}/{bobs}"), &who.token, json!({ "text": "hijack" })).await;
        assert_eq!((r.status, err(&r)), (403, "forbidden"));
    }
    for bad in [json!({ "text": "" }), json!({ "text": "x".repeat(2001) }), json!({}), json!({ "text": "x", "more": 1 })] {
        let r = app.patch(&format!("{base}/{bobs}"), &bob.token, bad.clone()).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{bad}");
    }
    let r = app.patch(&format!("{base}/{bobs}"), &bob.token, json!({ "text": "x".repeat(2000) })).await;
    assert_eq!(r.status, 200);

    // The author or a channel owner deletes; other members do not.
    let r = app.delete(&format!("{base}/{bobs}"), &carol.token).await;
    assert_eq!((r.status, err(&r)), (403, "forbidden"));
    let r = app.delete(&format!("{base}/{bobs}"), &alice.token).await;
    assert_eq!(r.status, 204);
    let ev = ws.push_of("message_deleted").await;
    assert_eq!(ev["data"], json!({ "message_id": bobs, "channel_id": id }));
    let r = app.delete(&format!("{base}/{carols}"), &carol.token).await;
    assert_eq!(r.status, 204);
    // Gone for editing and deleting; kept in history as a tombstone.
    let r = app.patch(&format!("{base}/{bobs}"), &bob.token, json!({ "text": "back" })).await;
    assert_eq!(r.status, 404);
    let r = app.delete(&format!("{base}/{bobs}"), &bob.token).await;
    assert_eq!(r.status, 404);
    let r = app.get(&base, &bob.token).await;
    let first = &r.body["messages"][1];
    assert_eq!((first["id"].as_str(), first["text"].as_str()), (Some(bobs.as_str()), Some("")));
    assert!(first["deleted_at"].is_string());

    // Unknown messages, messages of another channel, non-members.
    let other = channel(&app, &bob, "other").await;
    let elsewhere = send(&app, &bob, &other, "elsewhere").await.body["message"]["id"].as_str().unwrap().to_owned();
    let r = app.patch(&format!("{base}/{elsewhere}"), &bob.token, json!({ "text": "x" })).await;
    assert_eq!(r.status, 404);
    let r = app.delete(&format!("{base}/{elsewhere}"), &alice.token).await;
    assert_eq!(r.status, 404);
    let r = app.patch(&format!("{base}/no-such-message"), &bob.token, json!({ "text": "x" })).await;
    assert_eq!(r.status, 404);
    let r = app.delete(&format!("/api/v1/channels/{other}/messages/{elsewhere}"), &alice.token).await;
    assert_eq!(r.status, 404, "alice is not in bob's channel");
    app.stop().await;
}
both_engines!(edit_and_delete_permissions_and_events, super::edit_delete);

async fn pagination(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let id = channel(&app, &alice, "general").await;
    let empty = channel(&app, &alice, "empty").await;
    for i in 1..=7 {
        assert_eq!(send(&app, &alice, &id, &format!("m{i}")).await.status, 201);
    }
    let page = |query: String| {
        let app = &app;
        let token = alice.token.clone();
        let id = id.clone();
        async move {
            let r = app.get(&format!("/api/v1/channels/{id}/messages{query}"), &token).await;
            assert_eq!(r.status, 200, "{query}: {}", r.body);
            let seqs: Vec<i64> = r.body["messages"].as_array().unwrap().iter().map(|m| m["seq"].as_i64().unwrap()).collect();
            (seqs, r.body["next_before"].as_i64(), r.body["next_after"].as_i64())
        }
    };
    // Newest first, scrolling back.
    assert_eq!(page(String::new()).await, (vec![7, 6, 5, 4, 3, 2, 1], None, None));
    assert_eq!(page("?limit=3".into()).await, (vec![7, 6, 5], Some(5), None));
    assert_eq!(page("?limit=3&before=5".into()).await, (vec![4, 3, 2], Some(2), None));
    assert_eq!(page("?limit=3&before=2".into()).await, (vec![1], None, None));
    assert_eq!(page("?limit=1&before=1".into()).await, (vec![], None, None));
    assert_eq!(page("?limit=6&before=7".into()).await, (vec![6, 5, 4, 3, 2, 1], None, None), "exactly the rest: no next page");
    // Catching up, forward.
    assert_eq!(page("?limit=3&after=0".into()).await, (vec![3, 2, 1], None, Some(3)));
    assert_eq!(page("?limit=3&after=3".into()).await, (vec![6, 5, 4], None, Some(6)));
    assert_eq!(page("?limit=3&after=6".into()).await, (vec![7], None, None));
    assert_eq!(page("?after=7".into()).await, (vec![], None, None));
    // Both: strictly between, newest first.
    assert_eq!(page("?before=6&after=2".into()).await, (vec![5, 4, 3], None, None));
    assert_eq!(page("?before=6&after=2&limit=2".into()).await, (vec![5, 4], Some(4), None));
    assert_eq!(page("?limit=200".into()).await.0.len(), 7);
    assert_eq!(page("?limit=1".into()).await, (vec![7], Some(7), None));
    // Bad parameters.
    for q in ["limit=0", "limit=201", "limit=-1", "limit=x", "before=-1", "after=-2", "before=abc", "page=2"] {
        let r = app.get(&format!("/api/v1/channels/{id}/messages?{q}"), &alice.token).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{q}: {}", r.body);
    }
    let r = app.get(&format!("/api/v1/channels/{empty}/messages"), &alice.token).await;
    assert_eq!(r.body, json!({ "messages": [] }));
    app.stop().await;
}
both_engines!(history_pagination_edges, super::pagination);

async fn relay(engine: TestEngine) {
    // No grace: the relay takes every committed row at once.
    let app = App::start_with(engine, |c| c.chat.relay_grace = Duration::ZERO).await;
    let alice = app.user("alice").await;
    let id = channel(&app, &alice, "general").await;
    let mut ws = app.ws(&alice.token).await;
    subscribe(&mut ws, &format!("room:{id}")).await;

    // A message committed with its event, as a request that died before fanning out leaves it.
    let store = app.server().store();
    let builder: &EventBuilder = &|m: &Message| OutboxEvent {
        channel: format!("room:{}", m.channel_id),
        event_type: "message_created".into(),
        payload: json!({ "message": { "id": m.id, "channel_id": m.channel_id, "seq": m.seq, "text": m.text } }).to_string(),
    };
    let new = NewMessage { channel_id: id.clone(), author: MemberRef::user(&alice.id), text: "committed, not delivered".into() };
    let InsertOutcome::Inserted(write) = store.insert_message(new, None, builder).await.unwrap() else { panic!("inserted") };
    assert_eq!(store.pending_outbox(10).await.unwrap().len(), 1);

    // The background pass (every 5 s) may get there first; either way it is delivered once.
    let relayed = app.server().chat().messages.relay_pending().await.unwrap();
    assert!(relayed <= 1);
    let ev = ws.push_of("message_created").await;
    assert_eq!(ev["data"]["message"]["id"], write.message.id.as_str());
    assert!(store.pending_outbox(10).await.unwrap().is_empty());
    assert_eq!(app.server().chat().messages.relay_pending().await.unwrap(), 0);
    app.stop().await;
}
both_engines!(outbox_relay_delivers_committed_events, super::relay);

async fn retention(engine: TestEngine) {
    let app = roomy(engine).await;
    let alice = app.user("alice").await;
    let short = app.post("/api/v1/channels", &alice.token, json!({ "name": "short", "retention_ms": 1000 })).await.body["id"].as_str().unwrap().to_owned();
    let forever = channel(&app, &alice, "forever").await;
    for i in 0..3 {
        send(&app, &alice, &short, &format!("s{i}")).await;
        send(&app, &alice, &forever, &format!("f{i}")).await;
    }
    // Past the short channel's retention, on the server's clock.
    app.clock.advance(Duration::from_millis(1200));
    let fresh = send(&app, &alice, &short, "fresh").await;
    assert_eq!(fresh.status, 201);
    let (_, messages) = app.server().chat().messages.cleanup().await.unwrap();
    assert_eq!(messages, 3);
    let r = app.get(&format!("/api/v1/channels/{short}/messages"), &alice.token).await;
    let texts: Vec<&str> = r.body["messages"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["fresh"]);
    let r = app.get(&format!("/api/v1/channels/{forever}/messages"), &alice.token).await;
    assert_eq!(r.body["messages"].as_array().unwrap().len(), 3);
    assert_eq!(app.server().chat().messages.cleanup().await.unwrap().1, 0);
    app.stop().await;
}
both_engines!(retention_cleanup_deletes_expired_messages, super::retention);
