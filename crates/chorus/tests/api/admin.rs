//! REST: admin. Who may call it, the connection list, disconnects, the
//! cleanup pass, maintenance mode on every creation path, and the firehose
//! WebSocket. (A firehose reader falling behind is tested deterministically
//! in `chorus-server`'s `firehose` unit tests.)

use std::time::Duration;

use chorus_clock::Clock as _;
use chorus_core::config::{NamespaceConfig, PublishRule, SubscribeRule};
use chorus_store::{EventBuilder, InsertOutcome, MemberRef, Message, NewAuthSession, NewMessage, OutboxEvent};
use chorus_testkit::WsClient;
use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::channels::{add, channel, subscribe};
use crate::common::{API_KEY, App, Resp, TestUser};

fn err(r: &Resp) -> &str {
    r.body["error"].as_str().unwrap_or("")
}

/// A server whose rates tests do not hit, with a `chat:` namespace clients may publish in.
async fn start(engine: TestEngine) -> App {
    App::start_with(engine, |c| {
        c.rate_limits.messages_per_minute = 60_000.0;
        c.rate_limits.messages_burst = 10_000;
        c.rate_limits.rest_per_minute = 60_000.0;
        c.rate_limits.rest_burst = 10_000;
        c.chat.logins_per_address_per_minute = 1000;
        c.chat.signups_per_address_per_minute = 1000;
        c.namespaces.0.insert(
            "chat".into(),
            NamespaceConfig { subscribe: SubscribeRule::Authenticated, publish: PublishRule::Subscribers, ..Default::default() },
        );
    })
    .await
}

fn firehose_url(app: &App, query: &str) -> String {
    format!("ws://{}/api/v1/admin/firehose{query}", app.server().addr())
}

/// The admin firehose, past its `firehose_started` frame.
async fn firehose(app: &App, query: &str) -> WsClient {
    let mut c = WsClient::connect(&firehose_url(app, query)).await.expect("firehose connect");
    let first = c.push().await;
    assert_eq!(first["type"], "firehose_started", "{first}");
    c
}

/// The HTTP status a refused WebSocket upgrade got.
fn refused_status(e: tokio_tungstenite::tungstenite::Error) -> u16 {
    match e {
        tokio_tungstenite::tungstenite::Error::Http(res) => res.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

async fn send(app: &App, user: &TestUser, channel: &str, body: Value) -> Resp {
    app.post(&format!("/api/v1/channels/{channel}/messages"), &user.token, body).await
}

async fn only_admins(engine: TestEngine) {
    let app = start(engine).await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    let routes = [
        ("GET", "/api/v1/admin/connections".to_owned(), None),
        ("POST", format!("/api/v1/admin/users/{}/disconnect", alice.id), None),
        ("POST", "/api/v1/admin/cleanup".to_owned(), None),
        ("GET", "/api/v1/admin/maintenance".to_owned(), None),
        ("PUT", "/api/v1/admin/maintenance".to_owned(), Some(json!({ "enabled": true }))),
        ("GET", "/api/v1/admin/firehose".to_owned(), None),
    ];
    for (method, path, body) in &routes {
        let r = app.call(method, path, None, body.clone()).await;
        assert_eq!((r.status, err(&r)), (401, "unauthorized"), "{method} {path}: {}", r.body);
        let r = app.call(method, path, Some("not-a-token"), body.clone()).await;
        assert_eq!((r.status, err(&r)), (401, "unauthorized"), "{method} {path}: {}", r.body);
        let r = app.call(method, path, Some(&alice.token), body.clone()).await;
        assert_eq!((r.status, err(&r)), (403, "forbidden"), "{method} {path}: {}", r.body);
    }
    // Nothing a refused call asked for happened.
    assert!(!app.server().hub().in_maintenance());
    // The firehose upgrade is refused the same way, by header or query token.
    assert_eq!(refused_status(WsClient::connect(&firehose_url(&app, "")).await.err().expect("refused")), 401);
    let e = WsClient::connect(&firehose_url(&app, &format!("?token={}", alice.token))).await.err().expect("refused");
    assert_eq!(refused_status(e), 403);
    let e = WsClient::connect_with(&firehose_url(&app, ""), &[("authorization", &format!("Bearer {}", alice.token))]).await.err().expect("refused");
    assert_eq!(refused_status(e), 403);
    // An administrator gets through the checks; a plain GET is then not an upgrade.
    let r = app.get("/api/v1/admin/firehose", &admin.token).await;
    assert_eq!((r.status, err(&r)), (400, "bad_request"), "{}", r.body);
    let r = app.get("/api/v1/admin/maintenance", &admin.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    app.stop().await;
}
both_engines!(admin_routes_refuse_non_admins_and_anonymous_callers, super::only_admins);

async fn connections(engine: TestEngine) {
    let app = start(engine).await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    let id = channel(&app, &alice, "general").await;
    let r = app.get("/api/v1/admin/connections", &admin.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["total"].as_u64(), r.body["connections"].as_array().map(Vec::len)), (Some(0), Some(0)), "{}", r.body);

    let mut ws = app.ws(&alice.token).await;
    subscribe(&mut ws, &format!("room:{id}")).await;
    subscribe(&mut ws, &format!("user:{}", alice.id)).await;
    // The list is ordered by opening time (ms): the second opens a millisecond later.
    app.clock.advance(Duration::from_millis(1));
    let _second = app.ws(&alice.token).await;
    // The firehose is not a connection.
    let _fh = firehose(&app, &format!("?token={}", admin.token)).await;

    let r = app.get("/api/v1/admin/connections", &admin.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["total"], 2, "{}", r.body);
    assert_eq!(r.body["scope"], "cluster", "{}", r.body);
    assert!(r.body.get("next_after").is_none(), "{}", r.body);
    let list = r.body["connections"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let first = &list[0];
    assert_eq!(first["user_id"], alice.id.as_str());
    assert_eq!(first["transport"], "websocket");
    assert_eq!(first["node"], r.body["node"]);
    assert_eq!(first["node"], app.server().hub().node().as_str());
    assert!(first["connected_at"].as_str().is_some_and(|t| t.ends_with('Z')), "{first}");
    let mut expected = vec![format!("room:{id}"), format!("user:{}", alice.id)];
    expected.sort();
    assert_eq!(first["subscriptions"], json!(expected), "oldest first, with its subscriptions");
    assert_eq!(list[1]["subscriptions"], json!([]));

    // Bounded: a page and the total.
    let r = app.get("/api/v1/admin/connections?limit=1", &admin.token).await;
    assert_eq!((r.body["total"].as_u64(), r.body["connections"].as_array().map(Vec::len)), (Some(2), Some(1)), "{}", r.body);
    assert_eq!(r.body["connections"][0]["id"], first["id"]);
    // The next page starts after the cursor, and is the last.
    let next = r.body["next_after"].as_str().expect("more follow").to_owned();
    let r = app.get(&format!("/api/v1/admin/connections?limit=1&after={next}"), &admin.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["total"], 2);
    assert_eq!(r.body["connections"][0]["id"], list[1]["id"]);
    assert!(r.body.get("next_after").is_none(), "{}", r.body);
    assert_eq!(app.get("/api/v1/admin/connections?limit=1000", &admin.token).await.status, 200);
    for bad in ["limit=0", "limit=1001", "limit=x", "user=alice", "after=x", "after=12_nope"] {
        let r = app.get(&format!("/api/v1/admin/connections?{bad}"), &admin.token).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{bad}: {}", r.body);
    }
    app.stop().await;
}
both_engines!(connections_list_live_connections_with_subscriptions, super::connections);

async fn disconnect(engine: TestEngine) {
    let app = start(engine).await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mut alice1 = app.ws(&alice.token).await;
    let mut alice2 = app.ws(&alice.token).await;
    let mut bob_ws = app.ws(&bob.token).await;
    let mut admin_ws = app.ws(&admin.token).await;

    let r = app.post(&format!("/api/v1/admin/users/{}/disconnect", alice.id), &admin.token, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({ "user_id": alice.id, "closed": 2, "code": 4009 }));
    for ws in [&mut alice1, &mut alice2] {
        let (code, reason) = ws.closed().await;
        assert_eq!(code, 4009, "{reason}");
        assert!(!reason.is_empty());
    }
    // Everyone else stays connected.
    for ws in [&mut bob_ws, &mut admin_ws] {
        let r = ws.request(json!({ "type": "ping" })).await;
        assert_eq!(r["result"]["pong"], true, "{r}");
    }
    // Nothing left to close; an unknown user is 404.
    let r = app.post(&format!("/api/v1/admin/users/{}/disconnect", bob.id), &admin.token, json!({})).await;
    assert_eq!(r.body["closed"], 1, "{}", r.body);
    assert_eq!(bob_ws.closed().await.0, 4009);
    let r = app.post("/api/v1/admin/users/no-such-user/disconnect", &admin.token, json!({})).await;
    assert_eq!((r.status, err(&r)), (404, "not_found"), "{}", r.body);
    // The user may come back (the disconnect ends connections, not sessions).
    let mut again = app.ws(&alice.token).await;
    assert_eq!(again.request(json!({ "type": "ping" })).await["result"]["pong"], true);
    app.stop().await;
}
both_engines!(disconnect_closes_only_that_users_connections_with_4009, super::disconnect);

async fn cleanup(engine: TestEngine) {
    let app = start(engine).await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    let id = channel(&app, &alice, "general").await;
    let store = app.server().store().clone();

    // An idempotency key claimed 25 h ago: claimed now, then the server's clock moves on.
    let builder: &EventBuilder = &|m: &Message| OutboxEvent {
        channel: format!("room:{}", m.channel_id),
        event_type: "message_created".into(),
        payload: json!({ "message": { "id": m.id, "channel_id": m.channel_id, "seq": m.seq, "text": m.text } }).to_string(),
    };
    let new = NewMessage { channel_id: id.clone(), author: MemberRef::user(&alice.id), text: "yesterday".into() };
    let InsertOutcome::Inserted(_) = store.insert_message(new, Some("old-key"), builder).await.unwrap() else { panic!("inserted") };
    app.clock.advance(Duration::from_secs(25 * 3600));
    let now = app.clock.now_ms();
    // Tokens that are current on the moved clock.
    let admin = TestUser { token: app.token_for(&admin.id, None), ..admin };
    let alice = TestUser { token: app.token_for(&alice.id, None), ..alice };

    // A session past its expiry, and a live one.
    let session = |hash: &str, expires_at: i64| NewAuthSession {
        user_id: alice.id.clone(),
        refresh_token_hash: hash.into(),
        expires_at,
        user_agent: None,
        ip: None,
    };
    let expired = store.create_session(session("h-expired", now - 1_000)).await.unwrap();
    let live = store.create_session(session("h-live", now + 3_600_000)).await.unwrap();

    // And a fresh key.
    let fresh = send(&app, &alice, &id, json!({ "text": "today", "idempotency_key": "new-key" })).await;
    assert_eq!(fresh.status, 201, "{}", fresh.body);

    let r = app.post("/api/v1/admin/cleanup", &admin.token, json!({})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["sessions"].as_u64(), r.body["idempotency_keys"].as_u64(), r.body["messages"].as_u64()), (Some(1), Some(1), Some(0)), "{}", r.body);
    assert!(r.body["limiter_entries_left"].is_u64() && r.body["duration_ms"].is_u64(), "{}", r.body);
    assert!(store.get_session(&expired.id).await.unwrap().is_none(), "the expired session is gone");
    assert!(store.get_session(&live.id).await.unwrap().is_some(), "the live one stays");
    // The fresh key still returns its message; messages themselves are kept (no retention).
    let again = send(&app, &alice, &id, json!({ "text": "today (retry)", "idempotency_key": "new-key" })).await;
    assert_eq!((again.status, again.body["duplicate"].as_bool()), (200, Some(true)), "{}", again.body);
    let history = app.get(&format!("/api/v1/channels/{id}/messages"), &alice.token).await;
    assert_eq!(history.body["messages"].as_array().map(Vec::len), Some(2), "{}", history.body);

    // Nothing left: a second pass removes nothing.
    let r = app.post("/api/v1/admin/cleanup", &admin.token, json!({})).await;
    assert_eq!((r.body["sessions"].as_u64(), r.body["idempotency_keys"].as_u64(), r.body["messages"].as_u64()), (Some(0), Some(0), Some(0)), "{}", r.body);
    app.stop().await;
}
both_engines!(cleanup_pass_removes_expired_sessions_and_old_idempotency_keys, super::cleanup);

async fn maintenance(engine: TestEngine) {
    let app = start(engine).await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let id = channel(&app, &alice, "general").await;
    add(&app, &alice, &id, &bob).await;
    let signup = app.call("POST", "/api/v1/auth/signup", None, Some(json!({ "username": "carol", "password": "correct horse battery" }))).await;
    assert_eq!(signup.status, 201, "{}", signup.body);
    let mut ws = app.ws(&alice.token).await;
    subscribe(&mut ws, "chat:lobby").await;

    let r = app.get("/api/v1/admin/maintenance", &admin.token).await;
    assert_eq!(r.body, json!({ "enabled": false }));
    // The message is bounded and checked.
    for bad in [json!({ "enabled": true, "message": "m".repeat(501) }), json!({ "enabled": true, "message": "a\nb" }), json!({ "message": "x" }), json!({ "enabled": "yes" }), json!({ "enabled": true, "extra": 1 })] {
        let r = app.put("/api/v1/admin/maintenance", &admin.token, bad.clone()).await;
        assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{bad}: {}", r.body);
    }
    assert!(!app.server().hub().in_maintenance());

    let r = app.put("/api/v1/admin/maintenance", &admin.token, json!({ "enabled": true, "message": " database upgrade until 10:30 " })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!((r.body["enabled"].as_bool(), r.body["message"].as_str()), (Some(true), Some("database upgrade until 10:30")), "{}", r.body);
    let since = r.body["since"].as_str().expect("since").to_owned();
    assert_eq!(app.get("/api/v1/admin/maintenance", &admin.token).await.body, r.body);
    // Set again with another message: still the same start.
    let r = app.put("/api/v1/admin/maintenance", &admin.token, json!({ "enabled": true, "message": "database upgrade until 10:30" })).await;
    assert_eq!(r.body["since"], since.as_str());

    let refused = |r: &Resp, what: &str| {
        assert_eq!((r.status, err(r)), (503, "maintenance"), "{what}: {}", r.body);
        let text = r.body["message"].as_str().unwrap_or("");
        assert!(text.contains("maintenance") && text.contains("database upgrade until 10:30"), "{what}: {text}");
        assert!(r.headers.get("retry-after").is_some(), "{what}: Retry-After");
    };
    // REST creation.
    refused(&send(&app, &alice, &id, json!({ "text": "hello" })).await, "send message");
    refused(&app.post("/api/v1/channels", &alice.token, json!({ "name": "new" })).await, "create channel");
    // The publish API, single and batch.
    let publish = json!({ "channel": format!("user:{}", alice.id), "data": { "n": 1 } });
    refused(&app.call("POST", "/api/v1/publish", Some(API_KEY), Some(publish.clone())).await, "publish");
    refused(&app.call("POST", "/api/v1/publish/batch", Some(API_KEY), Some(json!({ "items": [publish.clone()] }))).await, "publish batch");
    // WebSocket commands.
    for cmd in [
        json!({ "type": "send_message", "channel": format!("room:{id}"), "text": "hello" }),
        json!({ "type": "publish", "channel": "chat:lobby", "data": { "text": "hi" } }),
    ] {
        let reply = ws.request(cmd.clone()).await;
        assert_eq!(reply["error"]["error"], "maintenance", "{cmd}: {reply}");
        assert!(reply["error"]["message"].as_str().unwrap_or("").contains("database upgrade until 10:30"), "{reply}");
    }
    // Sign-in, reads and administration keep working.
    let login = app.call("POST", "/api/v1/auth/login", None, Some(json!({ "username": "carol", "password": "correct horse battery" }))).await;
    assert_eq!(login.status, 200, "{}", login.body);
    assert_eq!(app.get("/api/v1/channels", &alice.token).await.status, 200);
    assert_eq!(app.get(&format!("/api/v1/channels/{id}/messages"), &bob.token).await.status, 200);
    let history = ws.request(json!({ "type": "history", "channel": format!("room:{id}") })).await;
    assert!(history.get("result").is_some(), "{history}");
    assert_eq!(app.get("/api/v1/admin/connections", &admin.token).await.status, 200);
    assert_eq!(app.post("/api/v1/admin/cleanup", &admin.token, json!({})).await.status, 200);
    let health = app.call("GET", "/health/detailed", None, None).await;
    assert_eq!(health.body["checks"]["hub"]["maintenance"], true, "{}", health.body);
    // Nothing was created.
    assert_eq!(app.get(&format!("/api/v1/channels/{id}/messages"), &alice.token).await.body["messages"], json!([]));
    assert_eq!(app.get("/api/v1/channels", &alice.token).await.body["channels"].as_array().map(Vec::len), Some(1));

    // Off: creation works again everywhere.
    let r = app.put("/api/v1/admin/maintenance", &admin.token, json!({ "enabled": false })).await;
    assert_eq!((r.status, &r.body), (200, &json!({ "enabled": false })));
    assert_eq!(send(&app, &alice, &id, json!({ "text": "hello" })).await.status, 201);
    assert_eq!(app.post("/api/v1/channels", &alice.token, json!({ "name": "new" })).await.status, 201);
    assert_eq!(app.call("POST", "/api/v1/publish", Some(API_KEY), Some(publish.clone())).await.status, 200);
    let r = app.call("POST", "/api/v1/publish/batch", Some(API_KEY), Some(json!({ "items": [publish] }))).await;
    assert!(r.body["results"][0]["offset"].is_u64(), "{}", r.body);
    let reply = ws.request(json!({ "type": "send_message", "channel": format!("room:{id}"), "text": "again" })).await;
    assert!(reply.get("result").is_some(), "{reply}");
    let reply = ws.request(json!({ "type": "publish", "channel": "chat:lobby", "data": { "text": "hi" } })).await;
    assert!(reply.get("result").is_some(), "{reply}");
    app.stop().await;
}
both_engines!(maintenance_mode_refuses_creation_everywhere_but_not_reads, super::maintenance);

async fn firehose_stream(engine: TestEngine) {
    let app = start(engine).await;
    let admin = app.admin("root").await;
    let alice = app.user("alice").await;
    let mut all = firehose(&app, &format!("?token={}", admin.token)).await;
    let auth = format!("Bearer {}", admin.token);
    let mut rooms = WsClient::connect_with(&firehose_url(&app, "?channel=room%3A"), &[("authorization", auth.as_str())]).await.expect("connect");
    let started = rooms.push().await;
    assert_eq!((started["type"].as_str(), started["data"]["channel_prefix"].as_str()), (Some("firehose_started"), Some("room:")), "{started}");
    assert_eq!(started["data"]["node"], app.server().hub().node().as_str());
    assert_eq!(app.server().hub().firehose_readers(), 2);
    assert_eq!(app.server().hub().connection_count(), 0, "firehose readers are not connections");

    // Alice's channel: the admin is not a member, and sees it all the same.
    let id = channel(&app, &alice, "secret").await;
    let sent = send(&app, &alice, &id, json!({ "text": "psst" })).await;
    assert_eq!(sent.status, 201);
    let ev = all.push_of("message_created").await;
    assert_eq!(ev["channel"], format!("room:{id}"));
    assert_eq!(ev["data"]["message"]["text"], "psst");
    assert_eq!(ev["offset"], sent.body["offset"]);
    assert_eq!(ev["epoch"], sent.body["epoch"]);
    assert!(ev["timestamp"].is_string());
    // The unfiltered reader also saw the announcement on alice's personal channel;
    // the filtered one sees only `room:` channels.
    loop {
        let ev = rooms.push().await;
        assert!(ev["channel"].as_str().is_some_and(|c| c.starts_with("room:")), "{ev}");
        if ev["type"] == "message_created" {
            break;
        }
    }
    // Bad filters.
    let r = app.get(&format!("/api/v1/admin/firehose?channel={}", "x".repeat(200)), &admin.token).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{}", r.body);
    let r = app.get("/api/v1/admin/firehose?chanel=room", &admin.token).await;
    assert_eq!((r.status, err(&r)), (400, "invalid_field"), "{}", r.body);

    // Shutdown closes it with 1012.
    let ((code, _), ()) = tokio::join!(all.closed(), app.stop());
    assert_eq!(code, 1012);
}
both_engines!(firehose_streams_every_event_to_admins_only, super::firehose_stream);
