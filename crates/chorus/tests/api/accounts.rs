//! REST: sign-up, login, refresh, logout, login sessions (revocation closes
//! live connections, idle expiry), API keys, identity-provider users, the
//! bootstrap administrator, and `chorus admin create-user` / `chorus migrate`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chorus::config::Config;
use chorus_chat::config::BootstrapAdmin;
use chorus_testkit::SseClient;
use chorus_testkit::db::{TestDatabase, TestEngine};
use serde_json::{Value, json};

use crate::common::{App, Resp};

const PASSWORD: &str = "correct-horse-1";

/// A server whose sign-up and login limits stay out of the way.
async fn start(engine: TestEngine) -> App {
    start_with(engine, |_| {}).await
}

async fn start_with(engine: TestEngine, tweak: impl FnOnce(&mut Config)) -> App {
    App::start_with(engine, |c| {
        c.chat.signups_per_address_per_minute = 1000;
        c.chat.logins_per_address_per_minute = 1000;
        c.chat.logins_per_account_address_per_minute = 1000;
        c.chat.logins_per_account_per_hour = 1000;
        tweak(c);
    })
    .await
}

fn code(r: &Resp) -> &str {
    r.body["error"].as_str().unwrap_or("")
}

fn message(r: &Resp) -> &str {
    r.body["message"].as_str().unwrap_or("")
}

async fn signup(app: &App, body: Value) -> Resp {
    app.call("POST", "/api/v1/auth/signup", None, Some(body)).await
}

async fn login(app: &App, username: &str, password: &str) -> Resp {
    app.call("POST", "/api/v1/auth/login", None, Some(json!({ "username": username, "password": password }))).await
}

async fn refresh(app: &App, refresh_token: &str) -> Resp {
    app.call("POST", "/api/v1/auth/refresh", None, Some(json!({ "refresh_token": refresh_token }))).await
}

/// Signs up `username` and logs in; returns the login answer.
async fn registered(app: &App, username: &str) -> Value {
    let r = signup(app, json!({ "username": username, "password": PASSWORD })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    logged_in(app, username).await
}

async fn logged_in(app: &App, username: &str) -> Value {
    let r = login(app, username, PASSWORD).await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

fn token(grant: &Value) -> &str {
    grant["access_token"].as_str().expect("access_token")
}

fn user_id(grant: &Value) -> &str {
    grant["user"]["id"].as_str().expect("user id")
}

async fn publish_with(app: &App, key: &str, user_id: &str) -> u16 {
    let body = json!({ "channel": format!("user:{user_id}"), "event": "publication", "data": { "n": 1 } });
    app.send(app.http.post(app.url("/api/v1/publish")).header("x-api-key", key).json(&body)).await.status
}

// ---------------------------------------------------------------- sign-up

async fn signup_validates_every_field(engine: TestEngine) {
    let app = start(engine).await;
    let ok = |name: &str| json!({ "username": name, "password": PASSWORD });

    // Username: 3-32 characters of A-Z a-z 0-9 _ . -
    for name in ["abc", &"u".repeat(32), "A.b-c_9"] {
        let r = signup(&app, ok(name)).await;
        assert_eq!(r.status, 201, "{name}: {}", r.body);
        assert_eq!(r.body["username"], name);
        assert_eq!(r.body["role"], "user");
        assert!(r.body["id"].as_str().is_some_and(|id| !id.is_empty()));
        assert!(r.body.get("password").is_none() && r.body.get("password_hash").is_none());
    }
    for name in ["ab", &"v".repeat(33), "has space", "ann!", "émile", ""] {
        let r = signup(&app, ok(name)).await;
        assert_eq!((r.status, code(&r)), (400, "invalid_field"), "{name}: {}", r.body);
        assert!(message(&r).starts_with("username:"), "{}", r.body);
    }

    // Password: 8-128 characters.
    for (name, password, status) in [("pw7", "x".repeat(7), 400), ("pw8", "x".repeat(8), 201), ("pw128", "é".repeat(128), 201), ("pw129", "x".repeat(129), 400)] {
        let r = signup(&app, json!({ "username": name, "password": password })).await;
        assert_eq!(r.status, status, "{name}: {}", r.body);
        if status == 400 {
            assert!(message(&r).starts_with("password:"), "{}", r.body);
        }
    }

    // Email: optional, sane syntax, at most 254 characters.
    let r = signup(&app, json!({ "username": "mailer", "password": PASSWORD, "email": "Ann.Lee+chat@Example.COM" })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["email"], "Ann.Lee+chat@example.com");
    let domain = |last: usize| ["b".repeat(63), "c".repeat(63), "d".repeat(last)].join(".");
    let at_limit = format!("{}@{}.com", "a".repeat(64), domain(57));
    assert_eq!(at_limit.len(), 254);
    let r = signup(&app, json!({ "username": "mail254", "password": PASSWORD, "email": at_limit })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let past = format!("{}@{}.com", "a".repeat(64), domain(58));
    for email in [past.as_str(), "", "ann", "ann@x", "a b@x.com", "ann@@x.com"] {
        let r = signup(&app, json!({ "username": "mailbad", "password": PASSWORD, "email": email })).await;
        assert_eq!((r.status, code(&r)), (400, "invalid_field"), "{email}: {}", r.body);
        assert!(message(&r).starts_with("email:"), "{}", r.body);
    }
    let r = signup(&app, json!({ "username": "nomail", "password": PASSWORD, "email": null })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.get("email").is_none());

    // Body shape.
    let r = app.send(app.http.post(app.url("/api/v1/auth/signup")).header("content-type", "application/json").body("{")).await;
    assert_eq!((r.status, code(&r)), (400, "malformed_json"));
    let r = signup(&app, json!({ "username": "nopass" })).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_field"), "{}", r.body);
    let r = signup(&app, json!({ "username": "extra", "password": PASSWORD, "role": "admin" })).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_field"), "{}", r.body);
    let r = signup(&app, json!({ "username": 7, "password": PASSWORD })).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_field"), "{}", r.body);
    assert!(message(&r).starts_with("username"), "{}", r.body);
    app.stop().await;
}
both_engines!(signup_validates_every_field, super::signup_validates_every_field);

async fn usernames_are_unique_ignoring_case(engine: TestEngine) {
    let app = start(engine).await;
    assert_eq!(signup(&app, json!({ "username": "Alice", "password": PASSWORD })).await.status, 201);
    for name in ["Alice", "alice", "ALICE", "aLiCe"] {
        let r = signup(&app, json!({ "username": name, "password": PASSWORD })).await;
        assert_eq!((r.status, code(&r)), (409, "conflict"), "{name}: {}", r.body);
        assert!(message(&r).starts_with("username:"), "{}", r.body);
    }
    // Login ignores case too, and shows the name as it was given.
    let grant = logged_in(&app, "ALICE").await;
    assert_eq!(grant["user"]["username"], "Alice");
    app.stop().await;
}
both_engines!(usernames_are_unique_ignoring_case, super::usernames_are_unique_ignoring_case);

// ---------------------------------------------------------------- login

async fn login_issues_tokens_for_the_api_and_realtime(engine: TestEngine) {
    let app = start(engine).await;
    let grant = registered(&app, "ann").await;
    assert_eq!(grant["token_type"], "Bearer");
    assert!(grant["refresh_token"].as_str().is_some_and(|t| t.len() > 40));
    assert!(grant["session_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(grant["expires_at"].as_str().is_some_and(|s| s.ends_with('Z')));
    assert_eq!(grant["user"]["username"], "ann");

    let me = app.get("/api/v1/me", token(&grant)).await;
    assert_eq!(me.status, 200, "{}", me.body);
    assert_eq!(me.body, grant["user"]);

    // The same token opens a realtime connection whose user is the REST user.
    let mut ws = app.ws(token(&grant)).await;
    let r = ws.request(json!({ "type": "subscribe", "channel": format!("user:{}", user_id(&grant)) })).await;
    assert!(r.get("result").is_some(), "{r}");

    // Errors.
    let r = app.call("GET", "/api/v1/me", None, None).await;
    assert_eq!((r.status, code(&r)), (401, "unauthorized"), "{}", r.body);
    let r = app.get("/api/v1/me", "not-a-token").await;
    assert_eq!((r.status, code(&r)), (401, "unauthorized"), "{}", r.body);
    let r = login(&app, "ann", &"x".repeat(129)).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_field"), "{}", r.body);
    let r = login(&app, &"a".repeat(33), PASSWORD).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_field"), "{}", r.body);
    let r = app.call("POST", "/api/v1/auth/login", None, Some(json!({ "username": "ann" }))).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_field"), "{}", r.body);
    app.stop().await;
}
both_engines!(login_issues_tokens_for_the_api_and_realtime, super::login_issues_tokens_for_the_api_and_realtime);

async fn wrong_password_and_unknown_user_look_the_same(engine: TestEngine) {
    let app = start(engine).await;
    registered(&app, "bob").await;
    // A user without a password (e.g. from an identity provider) answers the same too.
    app.user("nopassword").await;

    // Each costs exactly one Argon2 verification on the password threads: a stored hash for
    // bob, the dummy hash (same parameters) for a user who does not exist or has no password.
    let before = verifications(&app).await;
    let wrong = login(&app, "bob", "wrong-password").await;
    assert_eq!(verifications(&app).await, (before.0 + 1, before.1));
    let unknown = login(&app, "nobody", "wrong-password").await;
    assert_eq!(verifications(&app).await, (before.0 + 1, before.1 + 1));
    let passwordless = login(&app, "nopassword", "wrong-password").await;
    assert_eq!(verifications(&app).await, (before.0 + 1, before.1 + 2));
    for r in [&wrong, &unknown, &passwordless] {
        assert_eq!((r.status, code(r)), (401, "unauthorized"), "{}", r.body);
        assert_eq!(message(r), message(&wrong));
        let keys: Vec<&String> = r.body.as_object().unwrap().keys().collect();
        assert_eq!(keys, wrong.body.as_object().unwrap().keys().collect::<Vec<_>>());
        let headers = |r: &Resp| {
            let mut names: Vec<String> = r.headers.keys().map(|k| k.to_string()).filter(|k| k != "x-request-id" && k != "date").collect();
            names.sort();
            names
        };
        assert_eq!(headers(r), headers(&wrong));
    }
    app.stop().await;
}

/// `chorus_password_verifications_total` for stored and dummy hashes, from `/metrics`.
async fn verifications(app: &App) -> (u64, u64) {
    let text = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let read = |hash: &str| {
        let series = format!("chorus_password_verifications_total{{hash=\"{hash}\"}} ");
        let line = text.lines().find_map(|l| l.strip_prefix(series.as_str())).unwrap_or_else(|| panic!("{series} in {text}"));
        line.trim().parse::<u64>().unwrap()
    };
    (read("account"), read("dummy"))
}
both_engines!(wrong_password_and_unknown_user_look_the_same, super::wrong_password_and_unknown_user_look_the_same);

async fn login_is_rate_limited_per_account_and_per_address(engine: TestEngine) {
    let app = start_with(engine, |c| {
        c.chat.logins_per_account_address_per_minute = 3;
        c.chat.logins_per_address_per_minute = 5;
    })
    .await;
    registered(&app, "carol").await; // 1 attempt for carol, 1 for the address
    for _ in 0..2 {
        assert_eq!(login(&app, "carol", "wrong-password").await.status, 401);
    }
    // The account's 4th attempt from this address within the minute, even with the right password.
    let r = login(&app, "Carol", PASSWORD).await;
    assert_eq!((r.status, code(&r)), (429, "rate_limited"), "{}", r.body);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another account from the same address still works, up to the address limit (5).
    assert_eq!(login(&app, "dave", "wrong-password").await.status, 401);
    let r = login(&app, "erin", "wrong-password").await;
    assert_eq!((r.status, code(&r)), (429, "rate_limited"), "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    app.stop().await;
}
both_engines!(login_is_rate_limited_per_account_and_per_address, super::login_is_rate_limited_per_account_and_per_address);

/// A client whose requests leave from `ip` (any 127.x address reaches the
/// loopback listener), so one test can play several addresses.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder().local_address(std::net::IpAddr::from(ip)).build().expect("client")
}

async fn login_from(app: &App, from: &reqwest::Client, username: &str, password: &str) -> Resp {
    app.send_with(from, from.post(app.url("/api/v1/auth/login")).json(&json!({ "username": username, "password": password }))).await
}

async fn failed_logins_never_lock_the_owner_out(engine: TestEngine) {
    let app = start_with(engine, |c| {
        c.chat.logins_per_account_address_per_minute = 3;
        c.chat.logins_per_account_per_hour = 5;
    })
    .await;
    // Carol signs in from her usual address.
    registered(&app, "carol").await;
    let attacker = client_from([127, 0, 0, 2]);
    for _ in 0..3 {
        assert_eq!(login_from(&app, &attacker, "carol", "wrong-password").await.status, 401);
    }
    let r = login_from(&app, &attacker, "carol", "wrong-password").await;
    assert_eq!((r.status, code(&r)), (429, "rate_limited"), "{}", r.body);
    // The attacker's address is slowed, not carol.
    assert_eq!(login(&app, "carol", PASSWORD).await.status, 200);
    // Guessing from many addresses hits the slow per-account bucket (5 attempts an hour from
    // addresses new to the account: carol's own first sign-in, the attacker's 3, one more) ...
    for n in 3..4 {
        assert_eq!(login_from(&app, &client_from([127, 0, 0, n]), "carol", "wrong-password").await.status, 401);
    }
    let r = login_from(&app, &client_from([127, 0, 0, 9]), "carol", PASSWORD).await;
    assert_eq!((r.status, code(&r)), (429, "rate_limited"), "{}", r.body);
    assert!(message(&r).contains("not affected"), "{}", r.body);
    let retry: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry > 60, "a slow bucket: {retry} s");
    // ... while carol, from an address she signed in from, still gets in (her third attempt
    // from there this minute, within the pair limit).
    assert_eq!(login(&app, "carol", PASSWORD).await.status, 200);
    app.stop().await;
}
both_engines!(failed_logins_never_lock_the_owner_out, super::failed_logins_never_lock_the_owner_out);

async fn signup_is_rate_limited_per_address(engine: TestEngine) {
    let app = start_with(engine, |c| c.chat.signups_per_address_per_minute = 2).await;
    for name in ["one", "two"] {
        assert_eq!(signup(&app, json!({ "username": name, "password": PASSWORD })).await.status, 201);
    }
    let r = signup(&app, json!({ "username": "three", "password": PASSWORD })).await;
    assert_eq!((r.status, code(&r)), (429, "rate_limited"), "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    app.stop().await;
}
both_engines!(signup_is_rate_limited_per_address, super::signup_is_rate_limited_per_address);

// ---------------------------------------------------------------- refresh, logout, sessions

async fn refresh_rotates_and_a_replay_fails(engine: TestEngine) {
    let app = start(engine).await;
    let first = registered(&app, "fay").await;
    let rt1 = first["refresh_token"].as_str().unwrap();

    let second = refresh(&app, rt1).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["session_id"], first["session_id"]);
    assert_eq!(second.body["user"], first["user"]);
    let rt2 = second.body["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2);
    assert_eq!(app.get("/api/v1/me", token(&second.body)).await.status, 200);

    // The new one works once.
    let third = refresh(&app, rt2).await;
    assert_eq!(third.status, 200, "{}", third.body);

    for bad in ["", "chr_nope", "not-even-prefixed", &"chr_x".repeat(100)] {
        let r = refresh(&app, bad).await;
        assert_eq!((r.status, code(&r)), (401, "unauthorized"), "{bad}: {}", r.body);
    }
    let r = app.call("POST", "/api/v1/auth/refresh", None, Some(json!({}))).await;
    assert_eq!((r.status, code(&r)), (400, "invalid_field"), "{}", r.body);

    // A used token presented again is refused, and ends its session (keys.rs has the whole story).
    let r = refresh(&app, rt1).await;
    assert_eq!((r.status, code(&r)), (401, "unauthorized"), "{}", r.body);
    assert_eq!(app.get("/api/v1/me", token(&third.body)).await.status, 401);
    assert_eq!(refresh(&app, third.body["refresh_token"].as_str().unwrap()).await.status, 401);

    // After logout the refresh token is dead too.
    let last = logged_in(&app, "fay").await;
    assert_eq!(app.call("POST", "/api/v1/auth/logout", Some(token(&last)), None).await.status, 204);
    assert_eq!(refresh(&app, last["refresh_token"].as_str().unwrap()).await.status, 401);
    app.stop().await;
}
both_engines!(refresh_rotates_and_a_replay_fails, super::refresh_rotates_and_a_replay_fails);

async fn sessions_are_listed_and_revoked_by_their_owner(engine: TestEngine) {
    let app = start(engine).await;
    let a = registered(&app, "gus").await;
    let b = logged_in(&app, "gus").await;
    let other = registered(&app, "hal").await;

    let r = app.get("/api/v1/auth/sessions", token(&a)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let list = r.body["sessions"].as_array().unwrap();
    assert_eq!(list.len(), 2, "{}", r.body);
    assert_eq!(list[0]["id"], b["session_id"], "newest first");
    let current: Vec<&Value> = list.iter().filter(|s| s["current"] == true).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["id"], a["session_id"]);
    assert_eq!(current[0]["ip"], "127.0.0.1");
    assert!(current[0]["created_at"].is_string() && current[0]["last_seen_at"].is_string() && current[0]["expires_at"].is_string());

    // Revoke B from A: B's tokens stop working at once.
    let b_id = b["session_id"].as_str().unwrap();
    assert_eq!(app.delete(&format!("/api/v1/auth/sessions/{b_id}"), token(&a)).await.status, 204);
    let r = app.get("/api/v1/me", token(&b)).await;
    assert_eq!((r.status, code(&r)), (401, "unauthorized"), "{}", r.body);
    assert!(message(&r).contains("revoked"), "{}", r.body);
    assert_eq!(refresh(&app, b["refresh_token"].as_str().unwrap()).await.status, 401);
    assert_eq!(app.get("/api/v1/auth/sessions", token(&a)).await.body["sessions"].as_array().unwrap().len(), 1);
    // Revoking again is harmless.
    assert_eq!(app.delete(&format!("/api/v1/auth/sessions/{b_id}"), token(&a)).await.status, 204);

    // Someone else's session, or none: 404, and it stays alive.
    let other_id = other["session_id"].as_str().unwrap();
    let r = app.delete(&format!("/api/v1/auth/sessions/{other_id}"), token(&a)).await;
    assert_eq!((r.status, code(&r)), (404, "not_found"), "{}", r.body);
    assert_eq!(app.get("/api/v1/me", token(&other)).await.status, 200);
    assert_eq!(app.delete("/api/v1/auth/sessions/no-such-session", token(&a)).await.status, 404);
    assert_eq!(app.call("GET", "/api/v1/auth/sessions", None, None).await.status, 401);

    // Logout ends the caller's own session.
    assert_eq!(app.call("POST", "/api/v1/auth/logout", Some(token(&a)), None).await.status, 204);
    assert_eq!(app.get("/api/v1/me", token(&a)).await.status, 401);
    assert_eq!(app.call("POST", "/api/v1/auth/logout", Some(token(&a)), None).await.status, 401);
    assert_eq!(app.call("POST", "/api/v1/auth/logout", None, None).await.status, 401);
    // A token without a login session (e.g. `chorus token`) has nothing to log out of.
    let plain = app.user("ivy").await;
    let r = app.call("POST", "/api/v1/auth/logout", Some(&plain.token), None).await;
    assert_eq!((r.status, code(&r)), (409, "conflict"), "{}", r.body);
    app.stop().await;
}
both_engines!(sessions_are_listed_and_revoked_by_their_owner, super::sessions_are_listed_and_revoked_by_their_owner);

async fn revoking_a_session_closes_its_live_connections(engine: TestEngine) {
    let app = start(engine).await;
    let a = registered(&app, "jan").await;
    let b = logged_in(&app, "jan").await;
    let channel = format!("user:{}", user_id(&b));

    let mut ws = app.ws(token(&b)).await;
    let mut sse = SseClient::open(&app.http, &app.base, token(&b), &format!("channel={channel}"), None).await.expect("sse");
    // A connection of the other session stays up.
    let mut keeper = app.ws(token(&a)).await;

    let b_id = b["session_id"].as_str().unwrap();
    assert_eq!(app.delete(&format!("/api/v1/auth/sessions/{b_id}"), token(&a)).await.status, 204);
    assert_eq!(ws.closed().await.0, 4003);
    let ev = sse.next_of("disconnect").await;
    assert_eq!(ev.data["data"]["code"], 4003, "{:?}", ev.data);
    assert!(sse.next().await.is_none(), "the stream ends");

    // The revoked token opens nothing new.
    assert!(chorus_testkit::WsClient::connect(&format!("ws://{}/ws?token={}", app.server().addr(), token(&b))).await.is_err());
    let refused = SseClient::open(&app.http, &app.base, token(&b), &format!("channel={channel}"), None).await;
    assert_eq!(refused.err().map(|e| e.0), Some(401));

    let r = keeper.request(json!({ "type": "ping" })).await;
    assert!(r.get("error").is_none(), "{r}");
    // Logout closes the caller's own connections the same way.
    assert_eq!(app.call("POST", "/api/v1/auth/logout", Some(token(&a)), None).await.status, 204);
    assert_eq!(keeper.closed().await.0, 4003);
    app.stop().await;
}
both_engines!(revoking_a_session_closes_its_live_connections, super::revoking_a_session_closes_its_live_connections);

async fn idle_sessions_expire_unless_in_use(engine: TestEngine) {
    // Touches come every 750 ms (a quarter of the idle time).
    let app = start_with(engine, |c| c.chat.session_idle = Duration::from_secs(3)).await;
    let idle = registered(&app, "kim").await;
    assert_eq!(app.get("/api/v1/me", token(&idle)).await.status, 200);

    // In use: requests keep one session alive, a live connection another.
    let busy = logged_in(&app, "kim").await;
    let connected = logged_in(&app, "kim").await;
    let mut ws = app.ws(token(&connected)).await;
    let accounts = &app.server().chat().accounts;
    for _ in 0..8 {
        app.clock.advance(Duration::from_millis(500));
        // What the background loop does every 750 ms of the real clock.
        accounts.touch_connected().await;
        assert_eq!(app.get("/api/v1/me", token(&busy)).await.status, 200);
    }

    let r = app.get("/api/v1/me", token(&idle)).await;
    assert_eq!((r.status, code(&r)), (401, "unauthorized"), "{}", r.body);
    assert!(message(&r).contains("inactivity"), "{}", r.body);
    assert_eq!(refresh(&app, idle["refresh_token"].as_str().unwrap()).await.status, 401);
    assert!(chorus_testkit::WsClient::connect(&format!("ws://{}/ws?token={}", app.server().addr(), token(&idle))).await.is_err());

    assert_eq!(app.get("/api/v1/me", token(&connected)).await.status, 200, "a live connection is activity");
    assert_eq!(refresh(&app, connected["refresh_token"].as_str().unwrap()).await.status, 200);
    let r = ws.request(json!({ "type": "ping" })).await;
    assert!(r.get("error").is_none(), "{r}");

    // The idle session is not listed, and cleanup deletes it.
    let listed = app.get("/api/v1/auth/sessions", token(&busy)).await;
    let ids: Vec<&Value> = listed.body["sessions"].as_array().unwrap().iter().map(|s| &s["id"]).collect();
    assert!(!ids.contains(&&idle["session_id"]), "{}", listed.body);
    assert_eq!(ids.len(), 2, "{}", listed.body);
    let deleted = app.server().chat().accounts.cleanup().await.expect("cleanup");
    assert_eq!(deleted, 1);
    assert_eq!(app.get("/api/v1/me", token(&busy)).await.status, 200);
    app.stop().await;
}
both_engines!(idle_sessions_expire_unless_in_use, super::idle_sessions_expire_unless_in_use);

async fn a_session_past_its_maximum_age_ends_with_its_connections(engine: TestEngine) {
    let app = start_with(engine, |c| {
        c.chat.session_max_age = Duration::from_secs(2);
        c.chat.session_idle = Duration::from_secs(60);
        c.chat.session_touch_interval = Duration::from_millis(200);
    })
    .await;
    let grant = registered(&app, "lea").await;
    let mut ws = app.ws(token(&grant)).await;
    // Past the maximum age: the next touch of the live connection's session (every 200 ms) ends it.
    app.clock.advance(Duration::from_secs(2));
    assert_eq!(ws.closed().await.0, 4003);
    let r = app.get("/api/v1/me", token(&grant)).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(message(&r).contains("expired"), "{}", r.body);
    assert!(app.server().chat().accounts.cleanup().await.expect("cleanup") >= 1);
    app.stop().await;
}
both_engines!(a_session_past_its_maximum_age_ends_with_its_connections, super::a_session_past_its_maximum_age_ends_with_its_connections);

async fn the_oldest_sessions_end_past_the_per_user_limit(engine: TestEngine) {
    let app = start_with(engine, |c| c.chat.sessions_per_user = 2).await;
    let first = registered(&app, "max").await;
    let second = logged_in(&app, "max").await;
    let third = logged_in(&app, "max").await;
    assert_eq!(app.get("/api/v1/me", token(&first)).await.status, 401);
    for g in [&second, &third] {
        assert_eq!(app.get("/api/v1/me", token(g)).await.status, 200);
    }
    assert_eq!(app.get("/api/v1/auth/sessions", token(&third)).await.body["sessions"].as_array().unwrap().len(), 2);
    app.stop().await;
}
both_engines!(the_oldest_sessions_end_past_the_per_user_limit, super::the_oldest_sessions_end_past_the_per_user_limit);

// ---------------------------------------------------------------- API keys

async fn api_keys_are_created_listed_used_and_revoked(engine: TestEngine) {
    let app = start_with(engine, |c| c.chat.api_keys_per_user = 3).await;
    let owner = registered(&app, "ned").await;
    let stranger = registered(&app, "oda").await;
    let t = token(&owner);

    let r = app.post("/api/v1/api-keys", t, json!({ "name": "agent backend" })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let key = r.body["key"].as_str().unwrap().to_owned();
    let view = r.body["api_key"].clone();
    let id = view["id"].as_str().unwrap().to_owned();
    assert_eq!(view["name"], "agent backend");
    assert_eq!(view["prefix"].as_str().unwrap(), &key[..12]);
    assert!(view.get("revoked_at").is_none() && view.get("last_used_at").is_none());

    let listed = app.get("/api/v1/api-keys", t).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(listed.body["api_keys"], json!([view]));
    assert!(!listed.body.to_string().contains(&key), "the key is shown only once");
    assert_eq!(app.get("/api/v1/api-keys", token(&stranger)).await.body["api_keys"], json!([]));

    // The key publishes through the server API, and its use is recorded.
    assert_eq!(publish_with(&app, &key, user_id(&owner)).await, 200);
    let listed = app.get("/api/v1/api-keys", t).await;
    assert!(listed.body["api_keys"][0]["last_used_at"].is_string(), "{}", listed.body);
    // A wrong key, or a key as a user token, does nothing.
    assert_eq!(publish_with(&app, &format!("{key}x"), user_id(&owner)).await, 401);
    assert_eq!(app.get("/api/v1/me", &key).await.status, 401);

    // Only the owner revokes it; then it is refused at once.
    let r = app.delete(&format!("/api/v1/api-keys/{id}"), token(&stranger)).await;
    assert_eq!((r.status, code(&r)), (404, "not_found"), "{}", r.body);
    assert_eq!(publish_with(&app, &key, user_id(&owner)).await, 200);
    assert_eq!(app.delete(&format!("/api/v1/api-keys/{id}"), t).await.status, 204);
    assert_eq!(publish_with(&app, &key, user_id(&owner)).await, 401);
    assert!(app.get("/api/v1/api-keys", t).await.body["api_keys"][0]["revoked_at"].is_string());
    assert_eq!(app.delete(&format!("/api/v1/api-keys/{id}"), t).await.status, 204);
    assert_eq!(app.delete("/api/v1/api-keys/nope", t).await.status, 404);

    // Names: 1-64 characters, not blank.
    for (name, status) in [("n".repeat(64), 201), ("n".repeat(65), 400), (String::new(), 400), ("   ".into(), 400), ("a\nb".into(), 400)] {
        let r = app.post("/api/v1/api-keys", t, json!({ "name": name })).await;
        assert_eq!(r.status, status, "{name:?}: {}", r.body);
    }
    // At most 3 live keys (the revoked one does not count).
    assert_eq!(app.post("/api/v1/api-keys", t, json!({ "name": "two" })).await.status, 201);
    assert_eq!(app.post("/api/v1/api-keys", t, json!({ "name": "three" })).await.status, 201);
    let r = app.post("/api/v1/api-keys", t, json!({ "name": "four" })).await;
    assert_eq!((r.status, code(&r)), (429, "limit_exceeded"), "{}", r.body);
    let r = app.call("POST", "/api/v1/api-keys", None, Some(json!({ "name": "x" }))).await;
    assert_eq!(r.status, 401);
    app.stop().await;
}
both_engines!(api_keys_are_created_listed_used_and_revoked, super::api_keys_are_created_listed_used_and_revoked);

// ---------------------------------------------------------------- identity providers

mod idp {
    use std::sync::Arc;
    use std::time::{SystemTime, UNIX_EPOCH};

    use jsonwebtoken::{Algorithm, EncodingKey, Header};
    use serde_json::{Value, json};

    fn fixture(name: &str) -> String {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../auth/tests/fixtures").join(name);
        std::fs::read_to_string(path).expect("key fixture")
    }

    /// A JWKS endpoint on 127.0.0.1 with the public half of `rsa-private.pem`.
    pub struct Jwks {
        pub url: String,
        task: tokio::task::JoinHandle<()>,
    }

    impl Jwks {
        pub async fn start() -> Jwks {
            let key = EncodingKey::from_rsa_pem(fixture("rsa-private.pem").as_bytes()).unwrap();
            let mut jwk = serde_json::to_value(jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap()).unwrap();
            jwk["kid"] = json!("idp-1");
            let body = Arc::new(json!({ "keys": [jwk] }).to_string());
            let app = axum::Router::new().route("/jwks.json", axum::routing::get(move || async move { (*body).clone() }));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
            Jwks { url, task }
        }
    }

    impl Drop for Jwks {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    /// A token of the identity provider, signed with `key` (a fixture name).
    pub fn token(key: &str, claims: Value) -> String {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let mut claims = claims;
        claims["iat"] = json!(now);
        claims["exp"] = json!(now + 600);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("idp-1".into());
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_rsa_pem(fixture(key).as_bytes()).unwrap()).unwrap()
    }
}

async fn identity_provider_users_map_to_local_users(engine: TestEngine) {
    let jwks = idp::Jwks::start().await;
    let url = jwks.url.clone();
    let app = start_with(engine, move |c| {
        c.auth.jwks_url = Some(url);
        c.auth.user_claim = "uid".into();
    })
    .await;
    // A local user already holds the name the provider suggests.
    registered(&app, "pat").await;

    let t = idp::token("rsa-private.pem", json!({ "uid": "idp-user-42", "sub": "ignored", "iss": "https://idp.test", "preferred_username": "pat" }));
    let me = app.get("/api/v1/me", &t).await;
    assert_eq!(me.status, 200, "{}", me.body);
    let id = me.body["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "idp-user-42", "the provider's subject is not the local id");
    let name = me.body["username"].as_str().unwrap();
    assert!(name.starts_with("pat-") && name != "pat", "a free name derived from the token: {name}");
    // Seen again (a new token): the same user.
    let again = idp::token("rsa-private.pem", json!({ "uid": "idp-user-42", "iss": "https://idp.test" }));
    assert_eq!(app.get("/api/v1/me", &again).await.body["id"], id.as_str());

    // Realtime: the identity is the local user, so `user:<local id>` is theirs.
    let mut ws = app.ws(&t).await;
    let r = ws.request(json!({ "type": "subscribe", "channel": format!("user:{id}") })).await;
    assert!(r.get("result").is_some(), "{r}");
    let r = ws.request(json!({ "type": "subscribe", "channel": "user:idp-user-42" })).await;
    assert_eq!(r["error"]["error"], "forbidden", "{r}");
    // API keys work for them like for anyone.
    let r = app.post("/api/v1/api-keys", &t, json!({ "name": "idp" })).await;
    assert_eq!(r.status, 201, "{}", r.body);

    // The same subject at another issuer is another person; a fresh name is taken as given.
    let other = idp::token("rsa-private.pem", json!({ "uid": "idp-user-42", "iss": "https://other.test", "email": "quinn@example.com" }));
    let r = app.get("/api/v1/me", &other).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(r.body["id"], id.as_str());
    assert_eq!(r.body["username"], "quinn");
    // They have no password: logging in with one fails like any wrong password.
    assert_eq!(login(&app, "quinn", "whatever-password").await.status, 401);

    // A token signed by a key the provider does not publish is refused.
    let forged = idp::token("rsa2-private.pem", json!({ "uid": "idp-user-42", "iss": "https://idp.test" }));
    let r = app.get("/api/v1/me", &forged).await;
    assert_eq!((r.status, code(&r)), (401, "unauthorized"), "{}", r.body);
    app.stop().await;
    drop(jwks);
}
both_engines!(identity_provider_users_map_to_local_users, super::identity_provider_users_map_to_local_users);

async fn a_server_with_only_an_identity_provider_refuses_local_sign_in(engine: TestEngine) {
    let jwks = idp::Jwks::start().await;
    let url = jwks.url.clone();
    let app = start_with(engine, move |c| {
        c.auth.hmac_secret = None;
        c.auth.jwks_url = Some(url);
    })
    .await;
    assert!(!app.config.data_dir.join("jwt-secret").exists(), "no secret is generated when public keys are configured");
    // Sign-up still records the account, but no token can be issued for it.
    let r = signup(&app, json!({ "username": "local-user", "password": PASSWORD })).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = login(&app, "local-user", PASSWORD).await;
    assert_eq!((r.status, code(&r)), (503, "unavailable"), "{}", r.body);
    assert!(message(&r).contains("identity provider"), "{}", r.body);
    // The provider's tokens work for the API and realtime.
    let t = idp::token("rsa-private.pem", json!({ "sub": "idp-7", "iss": "https://idp.test" }));
    assert_eq!(app.get("/api/v1/me", &t).await.status, 200);
    app.ws(&t).await;
    app.stop().await;
    drop(jwks);
}
both_engines!(a_server_with_only_an_identity_provider_refuses_local_sign_in, super::a_server_with_only_an_identity_provider_refuses_local_sign_in);

// ---------------------------------------------------------------- administrators

async fn the_bootstrap_admin_is_created_once(engine: TestEngine) {
    let app = start_with(engine, |c| c.chat.bootstrap_admin = Some(BootstrapAdmin { username: "root".into(), password: "root-password-1".into() })).await;
    let r = login(&app, "root", "root-password-1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["user"]["role"], "admin");
    // Starting again with an administrator present changes nothing.
    app.server().chat().accounts.bootstrap().await.expect("bootstrap again");
    assert_eq!(app.server().store().count_admins().await.unwrap(), 1);
    // Signing up never makes an administrator.
    let grant = registered(&app, "rita").await;
    assert_eq!(grant["user"]["role"], "user");
    app.stop().await;
}
both_engines!(the_bootstrap_admin_is_created_once, super::the_bootstrap_admin_is_created_once);

async fn the_bootstrap_admin_never_takes_over_an_existing_user(engine: TestEngine) {
    let app = start(engine).await;
    registered(&app, "root").await;
    let mut config = app.config.clone();
    config.chat.bootstrap_admin = Some(BootstrapAdmin { username: "ROOT".into(), password: "root-password-1".into() });
    let err = chorus::server::Server::start(&config, std::sync::Arc::new(app.clock.clone())).await.err().expect("refused");
    assert!(format!("{err:#}").contains("belongs to an existing user"), "{err:#}");
    assert_eq!(app.server().store().count_admins().await.unwrap(), 0);

    config.chat.bootstrap_admin = Some(BootstrapAdmin { username: "chief".into(), password: "short".into() });
    let err = chorus::server::Server::start(&config, std::sync::Arc::new(app.clock.clone())).await.err().expect("refused");
    assert!(format!("{err:#}").contains("chat.bootstrap_admin.password"), "{err:#}");

    config.chat.bootstrap_admin = Some(BootstrapAdmin { username: "chief".into(), password: "chief-password-1".into() });
    let second = chorus::server::Server::start(&config, std::sync::Arc::new(app.clock.clone())).await.expect("second server");
    second.shutdown().await;
    assert_eq!(login(&app, "chief", "chief-password-1").await.body["user"]["role"], "admin");
    app.stop().await;
}
both_engines!(the_bootstrap_admin_never_takes_over_an_existing_user, super::the_bootstrap_admin_never_takes_over_an_existing_user);

/// Runs the built `chorus` binary (off the runtime) without any `CHORUS_*`
/// variable, so that only the file given configures it.
async fn chorus(args: &[&str], config: &Path, stdin: Option<&str>) -> std::process::Output {
    use std::io::Write as _;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_chorus"));
    cmd.args(args).arg("--config").arg(config);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("CHORUS_")) {
        cmd.env_remove(k);
    }
    cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let stdin = stdin.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().expect("spawn chorus");
        let mut pipe = child.stdin.take().expect("stdin");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        drop(pipe);
        child.wait_with_output().expect("chorus output")
    })
    .await
    .expect("chorus task")
}

/// `chorus <args>`: (success, stdout, stderr).
async fn run_chorus(args: &[&str], config: &Path, stdin: Option<&str>) -> (bool, String, String) {
    let out = chorus(args, config, stdin).await;
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn write_config(dir: &Path, data_dir: &Path, store_url: Option<&str>) -> std::path::PathBuf {
    let mut text = format!("data_dir = {:?}\n", data_dir.to_str().unwrap());
    if let Some(url) = store_url {
        text.push_str(&format!("[store]\nurl = {url:?}\n"));
    }
    let path = dir.join("chorus.toml");
    std::fs::write(&path, text).unwrap();
    path
}

async fn admin_create_user_works_against_the_configured_store(engine: TestEngine) {
    let app = start(engine).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), app.dir.path(), app.config.store.url.as_deref());
    let (ok, out, err) = run_chorus(&["admin", "create-user", "--username", "boss", "--password", "boss-password-1"], &config, None).await;
    assert!(ok, "{err}");
    assert!(out.contains("created admin `boss`"), "{out}");
    let (ok, out, err) = run_chorus(&["admin", "create-user", "--username", "worker", "--password-stdin", "--role", "user", "--email", "w@example.com"], &config, Some("worker-password-1\n")).await;
    assert!(ok, "{err}");
    assert!(out.contains("created user `worker`"), "{out}");

    let boss = login(&app, "boss", "boss-password-1").await;
    assert_eq!(boss.status, 200, "{}", boss.body);
    assert_eq!(boss.body["user"]["role"], "admin");
    let worker = login(&app, "Worker", "worker-password-1").await;
    assert_eq!(worker.status, 200, "{}", worker.body);
    assert_eq!(worker.body["user"]["role"], "user");
    assert_eq!(worker.body["user"]["email"], "w@example.com");

    // Refusals: a taken name (any case), a bad password, a bad role.
    let (ok, _, err) = run_chorus(&["admin", "create-user", "--username", "BOSS", "--password", "boss-password-1"], &config, None).await;
    assert!(!ok && err.contains("already taken"), "{err}");
    let (ok, _, err) = run_chorus(&["admin", "create-user", "--username", "shorty", "--password", "short"], &config, None).await;
    assert!(!ok && err.contains("password"), "{err}");
    let (ok, _, _) = run_chorus(&["admin", "create-user", "--username", "x", "--password", "boss-password-1", "--role", "god"], &config, None).await;
    assert!(!ok);
    app.stop().await;
}
both_engines!(admin_create_user_works_against_the_configured_store, super::admin_create_user_works_against_the_configured_store);

async fn migrate_prepares_a_fresh_store(engine: TestEngine) {
    let db = TestDatabase::create(engine).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = write_config(dir.path(), &data, db.url.as_deref());
    for _ in 0..2 {
        let out = chorus(&["migrate"], &config, None).await;
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("migrations applied"));
    }
    let store_config = chorus_store::StoreConfig { url: db.url.clone(), ..chorus_store::StoreConfig::default() };
    let store: Arc<dyn chorus_store::Store> = chorus_store::open_store(&store_config, &data).await.expect("open");
    assert_eq!(store.count_users().await.expect("migrated schema"), 0);
    store.close().await;
    let bad = write_config(dir.path(), &data, Some("nosuch://x"));
    assert!(!chorus(&["migrate"], &bad, None).await.status.success());
    db.drop_now().await;
}
both_engines!(migrate_prepares_a_fresh_store, super::migrate_prepares_a_fresh_store);

// ---------------------------------------------------------------- the document

async fn every_accounts_route_is_in_the_openapi_document(engine: TestEngine) {
    let app = start(engine).await;
    let doc = app.conformance().doc().clone();
    let routes = [
        ("post", "/api/v1/auth/signup", &[201, 400, 409, 429][..]),
        ("post", "/api/v1/auth/login", &[200, 400, 401, 429]),
        ("post", "/api/v1/auth/refresh", &[200, 400, 401, 429]),
        ("post", "/api/v1/auth/logout", &[204, 401, 409]),
        ("get", "/api/v1/auth/sessions", &[200, 401]),
        ("delete", "/api/v1/auth/sessions/{id}", &[204, 401, 404]),
        ("get", "/api/v1/me", &[200, 401]),
        ("post", "/api/v1/api-keys", &[201, 400, 401, 404, 429]),
        ("get", "/api/v1/api-keys", &[200, 401]),
        ("delete", "/api/v1/api-keys/{id}", &[204, 401, 404]),
    ];
    for (method, path, statuses) in routes {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert_eq!(op["tags"], json!(["auth"]), "{method} {path}");
        for status in statuses {
            let res = &op["responses"][status.to_string()];
            assert!(res.is_object(), "{method} {path}: no {status}");
            if *status >= 400 {
                assert_eq!(res["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody", "{method} {path} {status}");
            }
        }
    }
    // Every schema the document refers to is in it.
    let text = doc.to_string();
    for part in text.split("\"#/components/schemas/").skip(1) {
        let name = &part[..part.find('"').unwrap()];
        assert!(doc["components"]["schemas"][name].is_object(), "schema {name} is referenced but missing");
    }
    for name in ["SignupBody", "LoginBody", "RefreshBody", "TokenGrant", "UserView", "SessionList", "SessionView", "ApiKeyBody", "ApiKeyCreated", "ApiKeyList", "ApiKeyView"] {
        assert!(doc["components"]["schemas"][name].is_object(), "schema {name} is missing");
    }
    app.stop().await;
}
both_engines!(every_accounts_route_is_in_the_openapi_document, super::every_accounts_route_is_in_the_openapi_document);
