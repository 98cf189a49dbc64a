//! The AG-UI endpoint (`POST /api/v1/agui/{agent_id}`) against a real
//! server: the stream's shape (order, exactly one ending, last, no nulls),
//! a built-in tool call with its result, a frontend tool (the run ends with
//! the call; the client's result continues the conversation), a busy
//! thread, who may call it, and the official `@ag-ui/client` HttpAgent
//! over the same cases (`CHORUS_TEST_AGUI_CHECK`, set by scripts/test.sh).

use std::collections::HashSet;

use chorus_llm_mock::{MockServer, Script, Turn as MockTurn, Wire};
use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::common::{API_KEY, App, TestUser};
use crate::harness::*;

both_engines!(the_stream_carries_answers_tool_calls_and_frontend_tools_in_order, super::stream_shape);
both_engines!(a_busy_thread_answers_run_error_busy, super::busy_thread);
both_engines!(only_the_agents_owner_in_its_channels_may_run_it, super::authorization);

/// A frontend tool through a real provider's wire format (the mock
/// OpenAI-compatible server): offered in the request next to the agent's
/// tools, the model's call ends the run, the client's result goes back as
/// the tool message of the next request.
#[tokio::test]
async fn frontend_tools_go_through_an_openai_compatible_provider() {
    crate::providers::set_mock_key();
    let mock = MockServer::start().await.expect("mock server");
    let model = crate::providers::remote("primary", Wire::OpenAi, &mock);
    let app = App::start_with(TestEngine::Sqlite, move |c| {
        relaxed_limits(c);
        c.agents.models = vec![model];
    })
    .await;
    let alice = app.user("alice").await;
    let (room, agent) = setup(&app, &alice, json!({"model": "primary"})).await;
    let auth = format!("Bearer {}", alice.token);
    let auth = Some(("authorization", auth.as_str()));
    mock.push(Script::turn(MockTurn::new().text("Sure.").tool_call("call_paint", "change_background", json!({"color": "teal"}))));
    let ask = user_message("m1", "make it teal");
    let (_, events, _) = agui(&app, &agent, auth, input(&room, "o-1", json!([ask.clone()]), json!([paint_tool()]))).await;
    assert_stream(&events);
    assert_eq!(text_of(&events), "Sure.");
    assert_eq!(events.last().unwrap()["outcome"]["pendingToolCallIds"], json!(["call_paint"]), "{events:#?}");
    assert!(!types(&events).contains(&"TOOL_CALL_RESULT"));
    let offered: Vec<String> = mock.requests()[0].body["tools"]
        .as_array()
        .expect("tools offered")
        .iter()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect();
    assert!(offered.contains(&"change_background".to_owned()) && offered.contains(&"clock".to_owned()), "{offered:?}");

    mock.push(Script::text("Done: it is teal."));
    let follow_up = json!([ask,
        {"id": "a1", "role": "assistant", "content": "Sure.", "toolCalls": [{"id": "call_paint", "type": "function",
            "function": {"name": "change_background", "arguments": "{\"color\":\"teal\"}"}}]},
        {"id": "t1", "role": "tool", "toolCallId": "call_paint", "content": "background set"}]);
    let (_, events, _) = agui(&app, &agent, auth, input(&room, "o-2", follow_up, json!([paint_tool()]))).await;
    assert_stream(&events);
    assert_eq!(text_of(&events), "Done: it is teal.");
    let requests = mock.requests();
    let messages = requests.last().expect("a second request").body["messages"].as_array().expect("messages").clone();
    let call = messages.iter().find(|m| m["role"] == "assistant" && m["tool_calls"].is_array()).expect("the call, replayed");
    assert_eq!(call["tool_calls"][0]["id"], "call_paint");
    let result = messages.iter().find(|m| m["role"] == "tool").expect("the client's result");
    assert_eq!((result["tool_call_id"].as_str(), result["content"].as_str()), (Some("call_paint"), Some("background set")));
    app.stop().await;
}

/// A client that goes away mid-run does not stop it: the answer lands in the channel.
#[tokio::test]
async fn a_client_that_hangs_up_leaves_the_run_going() {
    let app = App::start_with(TestEngine::Sqlite, paced_demo(100.0)).await;
    let alice = app.user("alice").await;
    let (room, agent) = setup(&app, &alice, json!({})).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    let mut res = app
        .http
        .post(app.url(&format!("/api/v1/agui/{agent}")))
        .bearer_auth(&alice.token)
        .json(&input(&room, "gone-1", json!([user_message("m1", "hello, tell me something")]), json!([])))
        .send()
        .await
        .expect("response");
    assert_eq!(res.status(), 200);
    let first = res.chunk().await.expect("a chunk").expect("the first frame");
    let started = frames(std::str::from_utf8(&first).expect("utf-8"));
    assert_eq!(started[0]["type"], "RUN_STARTED");
    let run_id = started[0]["metadata"]["chorus"]["run_id"].as_str().expect("Chorus's run id").to_owned();
    drop(res);
    loop {
        let p = watch.next().await;
        if p["data"]["run_id"] == run_id.as_str() && is_terminal(&p) {
            assert_eq!(p["type"], "agent_completed", "{p}");
            break;
        }
    }
    app.stop().await;
}

/// The client's checks read the stream only: one engine is enough.
#[tokio::test]
async fn the_official_client_accepts_every_kind_of_run() {
    official_client(TestEngine::Sqlite).await
}

/// A frontend tool as CopilotKit-style clients offer it.
fn paint_tool() -> Value {
    json!({"name": "change_background", "description": "Change the page's background colour",
           "parameters": {"type": "object", "properties": {"color": {"type": "string"}}, "required": ["color"]}})
}

pub(crate) fn input(room: &Room, run_id: &str, messages: Value, tools: Value) -> Value {
    json!({"threadId": room.stream, "runId": run_id, "state": {}, "forwardedProps": {}, "context": [],
           "messages": messages, "tools": tools})
}

pub(crate) fn user_message(id: &str, text: &str) -> Value {
    json!({"id": id, "role": "user", "content": text})
}

/// POSTs `body`; returns the status, the events of a 200 (its `data:`
/// frames) or the error body, and the response's content type.
async fn agui(app: &App, agent_id: &str, auth: Option<(&str, &str)>, body: Value) -> (u16, Vec<Value>, Value) {
    let mut req = app.http.post(app.url(&format!("/api/v1/agui/{agent_id}"))).json(&body);
    if let Some((header, value)) = auth {
        req = req.header(header, value);
    }
    let r = app.send(req).await;
    if r.status != 200 {
        return (r.status, Vec::new(), r.body);
    }
    let content_type = r.headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(content_type.starts_with("text/event-stream"), "{content_type}");
    let text = r.body.as_str().expect("an SSE body").to_owned();
    let events = frames(&text);
    (200, events, Value::Null)
}

pub(crate) fn frames(text: &str) -> Vec<Value> {
    let mut events = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let data = block.strip_prefix("data: ").unwrap_or_else(|| panic!("not a data frame: {block:?}"));
        assert!(!data.contains('\n'), "one line per frame: {block:?}");
        events.push(serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}")));
    }
    events
}

fn contains_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(contains_null),
        Value::Object(o) => o.values().any(contains_null),
        _ => false,
    }
}

/// The stream rules: `RUN_STARTED` first, starts before content and ends,
/// everything closed before exactly one `RUN_FINISHED`/`RUN_ERROR`, which
/// is last; no `null` anywhere; a timestamp on every event.
pub(crate) fn assert_stream(events: &[Value]) {
    assert_eq!(events.first().map(|e| e["type"].clone()), Some(json!("RUN_STARTED")), "{events:#?}");
    let mut open: HashSet<String> = HashSet::new();
    for (i, e) in events.iter().enumerate() {
        assert!(!contains_null(e), "#{i} has a null: {e}");
        assert!(e["timestamp"].is_i64(), "#{i} without timestamp: {e}");
        let t = e["type"].as_str().expect("type");
        let id = |f: &str| format!("{f}:{}", e[f].as_str().unwrap_or_default());
        match t {
            "TEXT_MESSAGE_START" | "REASONING_MESSAGE_START" => assert!(open.insert(id("messageId")), "#{i} opened twice"),
            "TEXT_MESSAGE_CONTENT" | "REASONING_MESSAGE_CONTENT" => assert!(open.contains(&id("messageId")), "#{i} not open"),
            "TEXT_MESSAGE_END" | "REASONING_MESSAGE_END" => assert!(open.remove(&id("messageId")), "#{i} not open"),
            "TOOL_CALL_START" => assert!(open.insert(id("toolCallId")), "#{i} opened twice"),
            "TOOL_CALL_ARGS" => assert!(open.contains(&id("toolCallId")), "#{i} not open"),
            "TOOL_CALL_END" => assert!(open.remove(&id("toolCallId")), "#{i} not open"),
            _ => {}
        }
    }
    let terminals: Vec<usize> =
        events.iter().enumerate().filter(|(_, e)| matches!(e["type"].as_str(), Some("RUN_FINISHED" | "RUN_ERROR"))).map(|(i, _)| i).collect();
    assert_eq!(terminals, vec![events.len() - 1], "exactly one ending, last: {events:#?}");
    assert!(open.is_empty(), "left open: {open:?}");
}

pub(crate) fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

pub(crate) fn text_of(events: &[Value]) -> String {
    events.iter().filter(|e| e["type"] == "TEXT_MESSAGE_CONTENT").filter_map(|e| e["delta"].as_str()).collect()
}

async fn setup(app: &App, owner: &TestUser, extra: Value) -> (Room, String) {
    let room = room(app, owner, "agui").await;
    let agent = agent_in(app, owner, &room, "Helper", extra).await;
    (room, agent)
}

async fn stream_shape(engine: TestEngine) {
    let app = App::start_with(engine, fast_demo).await;
    let alice = app.user("alice").await;
    let (room, agent) = setup(&app, &alice, json!({})).await;
    let auth_value = format!("Bearer {}", alice.token);
    let auth = Some(("authorization", auth_value.as_str()));

    // A plain answer: the message lands in the channel as alice's, the answer as the agent's.
    let (status, events, _) = agui(&app, &agent, auth, input(&room, "run-1", json!([user_message("m1", "hello there")]), json!([]))).await;
    assert_eq!(status, 200);
    assert_stream(&events);
    assert_eq!(events[0]["threadId"], room.stream);
    assert_eq!(events[0]["runId"], "run-1");
    assert_eq!(events.last().unwrap()["type"], "RUN_FINISHED");
    assert_eq!(events.last().unwrap()["outcome"], json!({"type": "success"}));
    assert!(text_of(&events).contains("hello there"), "{events:#?}");
    let history = app.get(&format!("/api/v1/channels/{}/messages", room.id), &alice.token).await;
    let messages = history.body["messages"].as_array().expect("messages");
    assert_eq!(messages[1]["text"], "hello there");
    assert_eq!(messages[1]["author"]["id"], alice.id.as_str());
    assert_eq!(messages[0]["author"]["kind"], "agent");
    assert_eq!(messages[0]["text"].as_str(), Some(text_of(&events).as_str()));

    // A built-in tool: its call and its result, then the answer.
    let (_, events, _) =
        agui(&app, &agent, auth, input(&room, "run-2", json!([user_message("m2", "what time is it in UTC?")]), json!([]))).await;
    assert_stream(&events);
    let t = types(&events);
    let start = t.iter().position(|x| *x == "TOOL_CALL_START").expect("a tool call");
    assert_eq!(&t[start..start + 4], ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT"]);
    assert_eq!(events[start]["toolCallName"], "clock");
    assert!(t.contains(&"REASONING_MESSAGE_CONTENT"), "the demo model's thinking: {t:?}");
    assert!(text_of(&events).starts_with("It is "), "{events:#?}");
    assert_eq!(*t.last().unwrap(), "RUN_FINISHED");

    // A frontend tool: the run ends with the call for the client, no result.
    let ask = user_message("m3", r#"please call change_background with {"color": "teal"}"#);
    let (_, events, _) = agui(&app, &agent, auth, input(&room, "run-3", json!([ask.clone()]), json!([paint_tool()]))).await;
    assert_stream(&events);
    let t = types(&events);
    assert!(!t.contains(&"TOOL_CALL_RESULT"), "{t:?}");
    let call = events.iter().find(|e| e["type"] == "TOOL_CALL_START").expect("the call");
    assert_eq!(call["toolCallName"], "change_background");
    let call_id = call["toolCallId"].as_str().unwrap().to_owned();
    let args = events.iter().find(|e| e["type"] == "TOOL_CALL_ARGS").unwrap();
    assert_eq!(serde_json::from_str::<Value>(args["delta"].as_str().unwrap()).unwrap(), json!({"color": "teal"}));
    let end = events.last().unwrap();
    assert_eq!(end["type"], "RUN_FINISHED");
    assert_eq!(end["outcome"]["pendingToolCallIds"], json!([call_id]));

    // The client ran it: its result continues the conversation.
    let follow_up = json!([ask,
        {"id": "a3", "role": "assistant", "toolCalls": [{"id": call_id, "type": "function",
            "function": {"name": "change_background", "arguments": "{\"color\":\"teal\"}"}}]},
        {"id": "t3", "role": "tool", "toolCallId": call_id, "content": "the background is teal"}]);
    let (_, events, _) = agui(&app, &agent, auth, input(&room, "run-4", follow_up, json!([paint_tool()]))).await;
    assert_stream(&events);
    assert_eq!(text_of(&events), "change_background says: the background is teal.");
    assert_eq!(events.last().unwrap()["type"], "RUN_FINISHED");
    app.stop().await;
}

async fn busy_thread(engine: TestEngine) {
    let app = App::start_with(engine, paced_demo(2.0)).await;
    let alice = app.user("alice").await;
    let (room, agent) = setup(&app, &alice, json!({"on_busy": "reject"})).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Helper tell me a long story about the sea and its many ships").await;
    let started = watch.until("agent_started").await;
    let auth = format!("Bearer {}", alice.token);
    let (status, events, _) =
        agui(&app, &agent, Some(("authorization", &auth)), input(&room, "busy-1", json!([user_message("m1", "and now?")]), json!([]))).await;
    assert_eq!(status, 200);
    assert_stream(&events);
    assert_eq!(types(&events), ["RUN_STARTED", "RUN_ERROR"]);
    assert_eq!(events[1]["code"], "busy");
    let first = started["data"]["run_id"].as_str().unwrap();
    let r = app.post(&format!("/api/v1/runs/{first}/cancel"), &alice.token, json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    app.stop().await;
}

async fn authorization(engine: TestEngine) {
    let app = App::start_with(engine, fast_demo).await;
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let (room, agent) = setup(&app, &alice, json!({})).await;
    let bobs_room = crate::harness::room(&app, &bob, "bobs").await;
    let other_agent = agent_in(&app, &alice, &room, "Other", json!({})).await;
    let body = |room: &Room| input(room, "r", json!([user_message("m", "hi")]), json!([]));
    let alice_auth = format!("Bearer {}", alice.token);
    let bob_auth = format!("Bearer {}", bob.token);
    let expect = |status: u16, code: &str, got: (u16, Vec<Value>, Value)| {
        assert_eq!((got.0, got.2["error"].as_str()), (status, Some(code)), "{:?}", got.2);
        assert!(got.2["request_id"].is_string() && got.2["timestamp"].is_string(), "{:?}", got.2);
    };
    // No credentials; another user's agent (as if it did not exist); a channel alice is not in.
    expect(401, "unauthorized", agui(&app, &agent, None, body(&room)).await);
    expect(404, "not_found", agui(&app, &agent, Some(("authorization", &bob_auth)), body(&bobs_room)).await);
    expect(404, "not_found", agui(&app, "no-such-agent", Some(("authorization", &bob_auth)), body(&bobs_room)).await);
    expect(404, "not_found", agui(&app, &agent, Some(("authorization", &alice_auth)), body(&bobs_room)).await);
    // Bad input, before any stream.
    expect(400, "invalid_field", agui(&app, &agent, Some(("authorization", &alice_auth)), json!({"threadId": "general", "runId": "r", "messages": []})).await);
    expect(400, "invalid_field", agui(&app, &agent, Some(("authorization", &alice_auth)), input(&room, "r", json!([]), json!([]))).await);
    expect(400, "invalid_field", agui(&app, &agent, Some(("authorization", &alice_auth)), input(&room, "r", json!([user_message("m", "hi")]), json!([{"name": "clock", "description": "mine"}]))).await);
    let r = app.send(app.http.post(app.url(&format!("/api/v1/agui/{agent}"))).header("authorization", &alice_auth).body("{not json")).await;
    assert_eq!((r.status, r.body["error"].as_str()), (400, Some("malformed_json")));
    // API keys: one narrowed to another agent, a server key; alice's own key acts as alice.
    let scoped = app.post("/api/v1/api-keys", &alice.token, json!({"name": "other", "agent_id": other_agent})).await;
    let scoped = scoped.body["key"].as_str().expect("key").to_owned();
    expect(403, "forbidden", agui(&app, &agent, Some(("x-api-key", &scoped)), body(&room)).await);
    expect(403, "forbidden", agui(&app, &agent, Some(("x-api-key", API_KEY)), body(&room)).await);
    let own = app.post("/api/v1/api-keys", &alice.token, json!({"name": "mine", "agent_id": agent})).await;
    let own = format!("Bearer {}", own.body["key"].as_str().expect("key"));
    let (status, events, _) = agui(&app, &agent, Some(("authorization", &own)), body(&room)).await;
    assert_eq!(status, 200);
    assert_stream(&events);
    assert_eq!(events.last().unwrap()["type"], "RUN_FINISHED");
    // An agent that is not in the channel.
    let outside = app.post("/api/v1/agents", &alice.token, json!({"name": "Outside", "persona": "A patient helper who answers briefly."})).await;
    let outside = outside.body["id"].as_str().unwrap_or_else(|| panic!("{:?}", outside.body)).to_owned();
    expect(409, "conflict", agui(&app, &outside, Some(("authorization", &alice_auth)), body(&room)).await);
    app.stop().await;
}

/// The official client against the endpoint: a plain answer, a built-in
/// tool call with its result, a frontend tool and its follow-up, and an
/// error run; any verification error or console warning fails.
async fn official_client(engine: TestEngine) {
    if std::env::var_os("CHORUS_TEST_AGUI_CHECK").is_none() {
        eprintln!("CHORUS_TEST_AGUI_CHECK is not set (scripts/test.sh sets it): skipped");
        return;
    }
    let app = App::start_with(engine, fast_demo).await;
    let alice = app.user("alice").await;
    let (room, agent) = setup(&app, &alice, json!({})).await;
    let url = app.url(&format!("/api/v1/agui/{agent}"));
    let run = |run_id: &str, messages: Value, tools: Value| {
        json!({"mode": "http", "url": url, "token": alice.token, "threadId": room.stream, "runId": run_id,
               "messages": messages, "tools": tools, "state": {}, "forwardedProps": {}})
    };
    let ok = |report: &Value| {
        assert_eq!(report["ok"], true, "{report:#}");
        report["events"].as_array().expect("events").iter().filter_map(|e| e["type"].as_str().map(str::to_owned)).collect::<Vec<_>>()
    };
    let plain = chorus_testkit::agui::check(run("c-1", json!([user_message("u1", "hello")]), json!([]))).await;
    assert_eq!(ok(&plain).last().map(String::as_str), Some("RUN_FINISHED"));

    let tool = chorus_testkit::agui::check(run("c-2", json!([user_message("u2", "what is 12*(3+4)?")]), json!([]))).await;
    assert!(ok(&tool).contains(&"TOOL_CALL_RESULT".to_owned()), "{tool:#}");

    let ask = user_message("u3", r#"call change_background with {"color": "red"}"#);
    let frontend = chorus_testkit::agui::check(run("c-3", json!([ask]), json!([paint_tool()]))).await;
    let t = ok(&frontend);
    assert!(t.contains(&"TOOL_CALL_END".to_owned()) && !t.contains(&"TOOL_CALL_RESULT".to_owned()), "{frontend:#}");
    // The client's messages now hold the assistant's call: answer it as a client would.
    let mut messages = frontend["messages"].as_array().expect("messages").clone();
    let call_id = messages
        .iter()
        .find_map(|m| m["toolCalls"][0]["id"].as_str().map(str::to_owned))
        .unwrap_or_else(|| panic!("the call in the client's messages: {frontend:#}"));
    messages.push(json!({"id": "t3", "role": "tool", "toolCallId": call_id, "content": "done"}));
    let follow_up = chorus_testkit::agui::check(run("c-4", Value::Array(messages), json!([paint_tool()]))).await;
    assert_eq!(ok(&follow_up).last().map(String::as_str), Some("RUN_FINISHED"));

    let failing = chorus_testkit::agui::check(run("c-5", json!([user_message("u5", "what time is it? [fault:tool-loop]")]), json!([]))).await;
    // A run that fails ends with RUN_ERROR: the client takes it without any complaint.
    assert_eq!(ok(&failing).last().map(String::as_str), Some("RUN_ERROR"), "{failing:#}");
    assert_eq!(failing["events"].as_array().and_then(|e| e.last()).map(|e| e["code"].clone()), Some(json!("tool_loop")));
    app.stop().await;
}


