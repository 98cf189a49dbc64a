//! Finding a user by username, and message views that carry their author's name.

use chorus_testkit::db::TestEngine;
use serde_json::json;

use crate::channels::channel;
use crate::common::App;

async fn a_user_is_found_by_exact_username(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("Bob.Builder").await;
    let r = app.get("/api/v1/users/by-username/bob.builder", &alice.token).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, json!({ "id": bob.id, "username": "Bob.Builder" }), "id and username only");
    // Then added by that id.
    let room = channel(&app, &alice, "general").await;
    let r = app.post(&format!("/api/v1/channels/{room}/members"), &alice.token, json!({ "kind": "user", "id": r.body["id"] })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    // Exact: no prefixes, no patterns.
    for missing in ["bob", "Bob.Builde", "nobody"] {
        let r = app.get(&format!("/api/v1/users/by-username/{missing}"), &alice.token).await;
        assert_eq!((r.status, r.body["error"].as_str()), (404, Some("not_found")), "{missing}: {}", r.body);
    }
    let r = app.get(&format!("/api/v1/users/by-username/{}", "x".repeat(33)), &alice.token).await;
    assert_eq!((r.status, r.body["error"].as_str()), (400, Some("invalid_field")), "{}", r.body);
    assert_eq!(app.call("GET", "/api/v1/users/by-username/alice", None, None).await.status, 401);
    app.stop().await;
}
both_engines!(a_user_is_found_by_exact_username, super::a_user_is_found_by_exact_username);

async fn message_views_carry_their_authors_name(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let room = channel(&app, &alice, "general").await;
    crate::channels::add(&app, &alice, &room, &bob).await;
    let mut ws = app.ws(&bob.token).await;
    let sub = ws.request(json!({ "type": "subscribe", "channel": format!("room:{room}") })).await;
    assert!(sub["result"].is_object(), "{sub}");
    let sent = app.post(&format!("/api/v1/channels/{room}/messages"), &alice.token, json!({ "text": "hello" })).await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    assert_eq!(sent.body["message"]["author"], json!({ "kind": "user", "id": alice.id, "name": "alice" }));
    // The event carries it too.
    let event = ws.push_of("message_created").await;
    assert_eq!(event["data"]["message"]["author"]["name"], "alice", "{event}");
    app.post(&format!("/api/v1/channels/{room}/messages"), &bob.token, json!({ "text": "hi" })).await;
    let page = app.get(&format!("/api/v1/channels/{room}/messages"), &bob.token).await;
    let names: Vec<&str> = page.body["messages"].as_array().unwrap().iter().map(|m| m["author"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["bob", "alice"], "{}", page.body);
    app.stop().await;
}
both_engines!(message_views_carry_their_authors_name, super::message_views_carry_their_authors_name);
