//! API keys and the server publish API: every namespace against every kind
//! of key (server, a user's, narrowed to channels, narrowed to an agent,
//! revoked), the per-key publish rate, and a refresh token used twice.

use chorus::config::Config;
use chorus_core::config::{NamespaceConfig, PublishRule, SubscribeRule};
use chorus_store::NewAgent;
use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::channels::channel;
use crate::common::{API_KEY, App, TestUser};

fn with_namespaces(c: &mut Config) {
    // Open to every authenticated user, and granted by tokens only.
    c.namespaces.0.insert("open".into(), NamespaceConfig { subscribe: SubscribeRule::Authenticated, publish: PublishRule::Server, ..Default::default() });
    c.namespaces.0.insert("feed".into(), NamespaceConfig { subscribe: SubscribeRule::Grants, publish: PublishRule::Server, ..Default::default() });
}

async fn create_key(app: &App, owner: &TestUser, body: Value) -> String {
    let r = app.post("/api/v1/api-keys", &owner.token, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["key"].as_str().expect("key").to_owned()
}

async fn publish(app: &App, key: &str, channel: &str, event: &str, data: Value) -> (u16, Value) {
    let body = json!({ "channel": channel, "event": event, "data": data });
    let r = app.send(app.http.post(app.url("/api/v1/publish")).header("x-api-key", key).json(&body)).await;
    (r.status, r.body)
}

async fn every_namespace_against_every_kind_of_key(engine: TestEngine) {
    let app = App::start_with(engine, with_namespaces).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let mine = channel(&app, &alice, "mine").await;
    let theirs = channel(&app, &bob, "theirs").await;
    let store = app.server().store();
    let agent = |owner: &str, name: &str| NewAgent {
        owner_id: owner.to_owned(),
        name: name.to_owned(),
        persona: "A helpful test agent.".into(),
        quirks: vec![],
        model: "demo".into(),
        tools: vec![],
        response_policy: "mention".into(),
        on_busy: "enqueue".into(),
        webhook: None,
    };
    let helper = store.create_agent(agent(&alice.id, "helper"), 10).await.unwrap();
    let r = app.post(&format!("/api/v1/channels/{mine}/members"), &alice.token, json!({ "kind": "agent", "id": helper.id })).await;
    assert_eq!(r.status, 201, "{}", r.body);

    let owner_key = create_key(&app, &alice, json!({ "name": "backend" })).await;
    let channels_key = create_key(&app, &alice, json!({ "name": "one room", "channels": [format!("room:{mine}"), "open:*"] })).await;
    let agent_key = create_key(&app, &alice, json!({ "name": "agent", "agent_id": helper.id })).await;
    let revoked_key = create_key(&app, &alice, json!({ "name": "old" })).await;
    let revoked_id = app.get("/api/v1/api-keys", &alice.token).await.body["api_keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["name"] == "old")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(app.delete(&format!("/api/v1/api-keys/{revoked_id}"), &alice.token).await.status, 204);

    let channels = [
        format!("user:{}", alice.id),
        format!("user:{}", bob.id),
        format!("room:{mine}"),
        format!("room:{theirs}"),
        "open:x".to_owned(),
        "feed:x".to_owned(),
        "nope:x".to_owned(),
    ];
    // `thought` names the key that published, so history shows who got through.
    let run = |agent_id: &str, by: &str| json!({ "run_id": "r1", "thread_id": "t1", "agent_id": agent_id, "seq": 1, "thought": by });
    // Expected status per channel above, for a run event of the key's agent.
    let expectations: [(&str, &str, [u16; 7]); 5] = [
        ("server", API_KEY, [200, 200, 200, 200, 200, 200, 400]),
        ("owner", &owner_key, [200, 403, 200, 403, 200, 403, 400]),
        ("channels", &channels_key, [403, 403, 200, 403, 200, 403, 400]),
        ("agent", &agent_key, [403, 403, 200, 403, 403, 403, 400]),
        ("revoked", &revoked_key, [401, 401, 401, 401, 401, 401, 401]),
    ];
    for (kind, key, statuses) in expectations {
        for (ch, want) in channels.iter().zip(statuses) {
            let (status, body) = publish(&app, key, ch, "agent_thinking", run(&helper.id, kind)).await;
            assert_eq!(status, want, "{kind} key on {ch}: {body}");
            if want == 403 {
                assert_eq!(body["error"], "forbidden");
            }
        }
    }
    // An agent's key: only that agent's run events.
    let (status, body) = publish(&app, &agent_key, &format!("room:{mine}"), "publication", json!({ "n": 1 })).await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = publish(&app, &agent_key, &format!("room:{mine}"), "agent_thinking", run("someone-else", "t")).await;
    assert_eq!(status, 403, "{body}");
    // The batch form answers per item.
    let batch = json!({ "items": [
        { "channel": format!("room:{mine}"), "data": { "n": 1 } },
        { "channel": format!("room:{theirs}"), "data": { "n": 2 } },
    ]});
    let r = app.send(app.http.post(app.url("/api/v1/publish/batch")).header("x-api-key", &owner_key).json(&batch)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body["results"][0]["offset"].is_u64(), "{}", r.body);
    assert_eq!(r.body["results"][1]["error"]["error"], "forbidden", "{}", r.body);

    // Of all that, only the server key's events reached bob's channels.
    let mut ws = app.ws(&bob.token).await;
    for ch in [format!("user:{}", bob.id), format!("room:{theirs}")] {
        let h = ws.request(json!({ "type": "history", "channel": ch })).await;
        let events = h["result"]["events"].as_array().unwrap();
        let published: Vec<&Value> = events.iter().filter(|e| e["type"] == "agent_thinking" || e["type"] == "publication").collect();
        assert_eq!(published.len(), 1, "{ch}: {h}");
        assert_eq!(published[0]["data"]["thought"], "server", "{ch}: {h}");
    }

    // Keys show their scope; scopes are checked when created.
    let listed = app.get("/api/v1/api-keys", &alice.token).await.body["api_keys"].clone();
    let scope = |name: &str| listed.as_array().unwrap().iter().find(|k| k["name"] == name).unwrap()["scope"].clone();
    assert_eq!(scope("backend"), json!({ "kind": "owner" }));
    assert_eq!(scope("one room"), json!({ "kind": "channels", "channels": [format!("room:{mine}"), "open:*"] }));
    assert_eq!(scope("agent"), json!({ "kind": "agent", "agent_id": helper.id }));
    let bobs_agent = store.create_agent(agent(&bob.id, "other"), 10).await.unwrap();
    for (body, status) in [
        (json!({ "name": "x", "agent_id": bobs_agent.id }), 404),
        (json!({ "name": "x", "agent_id": "no-such-agent" }), 404),
        (json!({ "name": "x", "channels": [] }), 400),
        (json!({ "name": "x", "channels": ["not a channel"] }), 400),
        (json!({ "name": "x", "channels": ["room:a"], "agent_id": helper.id }), 400),
    ] {
        let r = app.post("/api/v1/api-keys", &alice.token, body.clone()).await;
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    app.stop().await;
}
both_engines!(every_namespace_against_every_kind_of_key, super::every_namespace_against_every_kind_of_key);

async fn publishing_is_rate_limited_per_key(engine: TestEngine) {
    let app = App::start_with(engine, |c| {
        c.rate_limits.api_key_publishes_per_second = 0.001;
        c.rate_limits.api_key_publish_burst = 3;
    })
    .await;
    let alice = app.user("alice").await;
    let key = create_key(&app, &alice, json!({ "name": "backend" })).await;
    let other = create_key(&app, &alice, json!({ "name": "second" })).await;
    let ch = format!("user:{}", alice.id);
    for _ in 0..3 {
        assert_eq!(publish(&app, &key, &ch, "publication", json!({})).await.0, 200);
    }
    let r = app.send(app.http.post(app.url("/api/v1/publish")).header("x-api-key", &key).json(&json!({ "channel": ch, "data": {} }))).await;
    assert_eq!((r.status, r.body["error"].as_str()), (429, Some("rate_limited")), "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    // A batch counts each item.
    let batch = json!({ "items": (0..5).map(|n| json!({ "channel": ch, "data": { "n": n } })).collect::<Vec<_>>() });
    let r = app.send(app.http.post(app.url("/api/v1/publish/batch")).header("x-api-key", &other).json(&batch)).await;
    let codes: Vec<Value> = r.body["results"].as_array().unwrap().iter().map(|i| i["error"]["error"].clone()).collect();
    assert_eq!(codes, vec![Value::Null, Value::Null, Value::Null, json!("rate_limited"), json!("rate_limited")], "{}", r.body);
    // Server keys have their own budget.
    assert_eq!(publish(&app, API_KEY, &ch, "publication", json!({})).await.0, 200);
    app.stop().await;
}
both_engines!(publishing_is_rate_limited_per_key, super::publishing_is_rate_limited_per_key);

async fn a_refresh_token_used_twice_revokes_its_session(engine: TestEngine) {
    let app = App::start(engine).await;
    let password = "correct-horse-battery";
    let r = app.call("POST", "/api/v1/auth/signup", None, Some(json!({ "username": "fay", "password": password }))).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let login = app.call("POST", "/api/v1/auth/login", None, Some(json!({ "username": "fay", "password": password }))).await.body;
    let first = login["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |t: &str| app.call("POST", "/api/v1/auth/refresh", None, Some(json!({ "refresh_token": t })));
    // The legitimate client rotates; its live connection uses the newest access token.
    let second = refresh(&first).await;
    assert_eq!(second.status, 200, "{}", second.body);
    let access = second.body["access_token"].as_str().unwrap().to_owned();
    let newest = second.body["refresh_token"].as_str().unwrap().to_owned();
    let mut ws = app.ws(&access).await;
    // Someone presents the first token again: the whole session ends, connections included.
    let r = refresh(&first).await;
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("unauthorized")), "{}", r.body);
    assert!(r.body["message"].as_str().unwrap().contains("revoked"), "{}", r.body);
    assert_eq!(ws.closed().await.0, 4003, "the live connection closes as revoked");
    assert_eq!(refresh(&newest).await.status, 401, "the newest refresh token died with the session");
    assert_eq!(app.get("/api/v1/me", &access).await.status, 401);
    app.stop().await;
}
both_engines!(a_refresh_token_used_twice_revokes_its_session, super::a_refresh_token_used_twice_revokes_its_session);

async fn an_expired_token_is_token_expired_on_rest_too(engine: TestEngine) {
    let app = App::start(engine).await;
    let alice = app.user("alice").await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    // Expired ten seconds ago (these servers have no leeway).
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({ "sub": alice.id, "iat": now - 60, "exp": now - 10 }),
        &jsonwebtoken::EncodingKey::from_secret(crate::common::SECRET.as_bytes()),
    )
    .unwrap();
    for path in ["/api/v1/me", "/api/v1/channels", "/api/v1/api-keys"] {
        let r = app.get(path, &expired).await;
        assert_eq!((r.status, r.body["error"].as_str()), (401, Some("token_expired")), "{path}: {}", r.body);
    }
    // A token that does not verify is still `unauthorized`.
    let r = app.get("/api/v1/me", &format!("{expired}x")).await;
    assert_eq!((r.status, r.body["error"].as_str()), (401, Some("unauthorized")), "{}", r.body);
    app.stop().await;
}
both_engines!(an_expired_token_is_token_expired_on_rest_too, super::an_expired_token_is_token_expired_on_rest_too);
