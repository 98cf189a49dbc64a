//! Memory and money: a long channel kept under the model's token budget by
//! a rolling summary that survives a restart; per-person daily budgets
//! checked before a run starts and after every model call.

use chorus_llm::{ModelConfig, TokenCounter};
use chorus_llm_mock::{MockServer, Script, Turn, Wire};
use chorus_store::{InsertOutcome, MemberRef, NewMessage};
use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::common::App;
use crate::harness::*;
use crate::providers::{remote, set_mock_key};

both_engines!(a_500_message_channel_stays_under_the_token_budget_and_the_summary_outlives_a_restart, super::long_channel);
both_engines!(the_daily_budget_is_checked_before_the_start_and_after_every_model_call, super::budget);
both_engines!(a_waiting_run_sees_the_channel_up_to_the_message_that_started_it, super::through_trigger);

const WINDOW: u32 = 4_096;
const MAX_OUTPUT: u32 = 200;
const SUMMARY: &str = "Summary: everyone counted messages about foxes.";

/// Tokens a recorded OpenAI request's messages take (contents and framing).
fn request_tokens(tokens: &TokenCounter, body: &Value) -> usize {
    body["messages"].as_array().map_or(0, |m| m.iter().map(|m| tokens.text(m["content"].as_str().unwrap_or_default()) + 4).sum())
}

fn is_summary(body: &Value) -> bool {
    body["messages"][0]["content"].as_str().is_some_and(|s| s.starts_with("Summarize"))
}

async fn long_channel(engine: TestEngine) {
    set_mock_key();
    let mock = MockServer::start().await.unwrap();
    let model = ModelConfig { context_window: WINDOW, max_output_tokens: MAX_OUTPUT, ..remote("small", Wire::OpenAi, &mock) };
    let mut app = App::start_with(engine, move |c| {
        relaxed_limits(c);
        c.agents.models = vec![model];
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "long").await;
    agent_in(&app, &alice, &room, "Keeper", json!({ "tools": [] })).await;
    let store = app.server().store().clone();
    for i in 0..500 {
        let text = format!("Message {i}: the quick brown fox jumps over the lazy dog, and counts to {i}.");
        let new = NewMessage { channel_id: room.id.clone(), author: MemberRef::user(&alice.id), text };
        let InsertOutcome::Inserted(_) = store.insert_message(new, None, &|m| chorus_chat::messages::outbox_event(m, chorus_protocol::EventType::MessageCreated, None)).await.unwrap() else {
            panic!("inserted")
        };
    }
    let mut watch = Watch::new(&app, &alice, &room).await;
    // Summaries, then the answer: the mock answers every request with this text.
    mock.push_times(50, Script::turn(Turn::new().text(SUMMARY)));
    say(&app, &alice, &room, "@Keeper what did we talk about?").await;
    watch.until_ended(1).await;
    let (run, events) = watch.runs.iter().next().unwrap();
    assert_well_formed(run, events);
    assert_eq!(watch.terminal(run)["type"], "agent_completed");

    let tokens = TokenCounter::new().unwrap();
    let limit = (WINDOW - MAX_OUTPUT) as usize;
    let requests = mock.requests();
    assert!(requests.len() >= 2, "summaries and the answer");
    for r in &requests {
        let used = request_tokens(&tokens, &r.body);
        assert!(used <= limit, "a request of {used} tokens, over {limit}");
        assert!(r.body["max_tokens"].as_u64().or(r.body["max_completion_tokens"].as_u64()).unwrap_or(0) <= MAX_OUTPUT as u64);
    }
    let passes = requests.iter().filter(|r| is_summary(&r.body)).count();
    assert!(passes >= 1, "older messages were summarized");
    let answer = &requests.last().unwrap().body;
    assert!(!is_summary(answer));
    assert!(answer["messages"][0]["content"].as_str().unwrap().contains(SUMMARY), "the summary leads the prompt");
    assert!(!answer.to_string().contains("Message 0:"), "the oldest messages are only in the summary");
    assert!(answer.to_string().contains("Message 499:"), "the newest are there as they are: {}", serde_json::to_string_pretty(answer).unwrap().chars().take(3000).collect::<String>());
    let stored = store.get_agent_summary(events[0]["data"]["agent_id"].as_str().unwrap(), &room.id).await.unwrap().expect("summary stored");
    assert_eq!(stored.summary, SUMMARY);
    assert!(stored.last_seq > 100 && stored.last_seq < 500, "covers the older part: {}", stored.last_seq);

    // After a restart the stored summary is where the next prompt starts.
    drop(watch);
    app.restart().await;
    let before = mock.requests().len();
    let mut watch = Watch::new(&app, &alice, &room).await;
    say(&app, &alice, &room, "@Keeper and now?").await;
    watch.until_ended(1).await;
    let after: Vec<Value> = mock.requests()[before..].iter().map(|r| r.body.clone()).collect();
    assert!(!after.is_empty());
    let first = &after[0];
    if is_summary(first) {
        assert!(first.to_string().contains(&format!("The summary so far:\\n{SUMMARY}")), "folds into the stored summary: {first}");
    } else {
        assert!(first["messages"][0]["content"].as_str().unwrap().contains(SUMMARY), "{first}");
    }
    for body in &after {
        assert!(!body.to_string().contains("Message 10:"), "summarized messages are not read again");
        assert!(request_tokens(&tokens, body) <= limit);
    }
    app.stop().await;
}

async fn budget(engine: TestEngine) {
    set_mock_key();
    let mock = MockServer::start().await.unwrap();
    let model = ModelConfig { input_price_per_million: 1_000.0, output_price_per_million: 0.0, ..remote("pricey", Wire::OpenAi, &mock) };
    let app = App::start_with(engine, move |c| {
        relaxed_limits(c);
        c.agents.models = vec![model];
        c.agents.daily_budget_usd = Some(0.05);
    })
    .await;
    let (alice, bob) = (app.user("alice").await, app.user("bob").await);
    let room = room(&app, &alice, "money").await;
    add_user(&app, &room, &alice, &bob).await;
    agent_in(&app, &alice, &room, "Spender", json!({})).await;
    let mut watch = Watch::new(&app, &alice, &room).await;

    // The first call costs $0.10 and asks for a tool: no second call is made.
    mock.push(Script::turn(Turn::new().tool_call("c1", "clock", json!({})).usage(100, 5, 0)));
    say(&app, &alice, &room, "@Spender what time is it?").await;
    watch.until_ended(1).await;
    let first = watch.runs.keys().next().unwrap().clone();
    assert_well_formed(&first, &watch.runs[&first]);
    let e = watch.terminal(&first);
    assert_eq!((e["data"]["code"].as_str(), e["data"]["retryable"].as_bool()), (Some("budget_exceeded"), Some(false)));
    assert!((e["data"]["cost_usd"].as_f64().unwrap() - 0.1).abs() < 1e-9, "{e}");
    assert_eq!(mock.requests().len(), 1, "checked after the model call");
    assert!(!watch.types(&first).contains(&"tool_executing".to_owned()));

    // The next one is refused before it starts: no model call.
    say(&app, &alice, &room, "@Spender and now?").await;
    watch.until_ended(2).await;
    let second = watch.runs.keys().find(|k| **k != first).unwrap().clone();
    assert_eq!(watch.types(&second), ["agent_queued", "agent_error"]);
    assert_eq!(watch.terminal(&second)["data"]["code"], "budget_exceeded");
    assert_eq!(mock.requests().len(), 1);

    // Bob's budget is his own.
    mock.push(Script::turn(Turn::new().text("Fine.").usage(10, 1, 0)));
    say(&app, &bob, &room, "@Spender hello").await;
    watch.until_ended(3).await;
    let third = watch.runs.keys().find(|k| **k != first && **k != second).unwrap().clone();
    assert_eq!(watch.terminal(&third)["type"], "agent_completed");
    let r = app.get(&format!("/api/v1/runs/{first}"), &alice.token).await;
    assert!((r.body["cost_usd"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    app.stop().await;
}

/// The newest user message of a recorded OpenAI request.
fn last_user_message(body: &Value) -> String {
    let messages = body["messages"].as_array().expect("messages");
    let last = messages.iter().rev().find(|m| m["role"] == "user").expect("a user message");
    last["content"].as_str().unwrap_or_default().to_owned()
}

async fn through_trigger(engine: TestEngine) {
    set_mock_key();
    let mock = MockServer::start().await.unwrap();
    let model = remote("small", Wire::OpenAi, &mock);
    let app = App::start_with(engine, move |c| {
        relaxed_limits(c);
        c.agents.models = vec![model];
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "order").await;
    agent_in(&app, &alice, &room, "Keeper", json!({ "tools": [] })).await;
    let mut watch = Watch::new(&app, &alice, &room).await;
    // The first answer stalls until it is cancelled; the second is plain.
    mock.push(Script::turn(Turn::new().text("one two three")).stall_after(1));
    mock.push(Script::turn(Turn::new().text("Answered.")));
    say(&app, &alice, &room, "@Keeper first question").await;
    let first = watch.until("agent_started").await["data"]["run_id"].as_str().unwrap().to_owned();
    say(&app, &alice, &room, "@Keeper second question").await;
    let queued = watch.until("agent_queued").await;
    assert_ne!(queued["data"]["run_id"].as_str(), Some(first.as_str()), "the second run waits behind the first");
    // Said after the second run was asked for and before it starts.
    say(&app, &alice, &room, "unrelated chatter").await;
    let r = app.post(&format!("/api/v1/runs/{first}/cancel"), &alice.token, json!({})).await;
    assert_eq!(r.status, 200, "{:?}", r.body);
    watch.until_ended(2).await;
    let requests = mock.requests();
    assert_eq!(requests.len(), 2, "one model call per run");
    assert!(last_user_message(&requests[0].body).contains("first question"), "{}", requests[0].body);
    assert!(!requests[0].body.to_string().contains("second question"), "the first run's prompt ends at its trigger: {}", requests[0].body);
    assert!(last_user_message(&requests[1].body).contains("second question"), "{}", requests[1].body);
    assert!(!requests[1].body.to_string().contains("unrelated chatter"), "nothing after the trigger: {}", requests[1].body);
    app.stop().await;
}
