//! Runs against each provider's real streaming wire format (the mock
//! provider servers): reasoning, parallel tool calls with their results fed
//! back in the provider's format, usage and cost, retry after 429, the
//! fallback after repeated 500s, a stall, a malformed chunk, an early close.

use std::time::Duration;

use chorus_llm::{ModelConfig, ProviderKind};
use chorus_llm_mock::{MockServer, Script, Turn, Wire};
use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};

use crate::common::{App, TestUser};
use crate::harness::*;

const KEY_ENV: &str = "CHORUS_AGENTS_TEST_MOCK_KEY";

/// The mock's key, in the environment the server reads keys from.
pub fn set_mock_key() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: set once, before any server of this process reads the environment.
    ONCE.call_once(|| unsafe { std::env::set_var(KEY_ENV, "sk-mock-0123456789") });
}

pub fn remote(name: &str, wire: Wire, mock: &MockServer) -> ModelConfig {
    ModelConfig {
        name: name.into(),
        provider: match wire {
            Wire::OpenAi => ProviderKind::Openai,
            Wire::Gemini => ProviderKind::Gemini,
            Wire::Anthropic => ProviderKind::Anthropic,
        },
        model: format!("{name}-model"),
        base_url: Some(mock.base_url(wire)),
        api_key_env: Some(KEY_ENV.into()),
        context_window: 32_000,
        max_output_tokens: 1_000,
        input_price_per_million: 2.0,
        output_price_per_million: 8.0,
        fallback: None,
        ..ModelConfig::demo()
    }
}

macro_rules! every_provider {
    ($name:ident) => {
        mod $name {
            use chorus_llm_mock::Wire;
            #[tokio::test]
            async fn openai() {
                super::$name(Wire::OpenAi).await
            }
            #[tokio::test]
            async fn gemini() {
                super::$name(Wire::Gemini).await
            }
            #[tokio::test]
            async fn anthropic() {
                super::$name(Wire::Anthropic).await
            }
        }
    };
}

every_provider!(runs_stream_reasoning_tools_usage_and_survive_provider_faults);

struct Bench {
    app: App,
    alice: TestUser,
    room: Room,
    watch: Watch,
}

impl Bench {
    /// Sends a message to the agent and returns its run's events once it ended.
    async fn ask(&mut self, text: &str) -> (String, Vec<Value>) {
        let known: std::collections::BTreeSet<String> = self.watch.runs.keys().cloned().collect();
        say(&self.app, &self.alice, &self.room, text).await;
        loop {
            let ended = self.watch.runs.iter().find(|(id, e)| !known.contains(*id) && e.iter().any(is_terminal));
            if let Some((id, events)) = ended {
                assert_well_formed(id, events);
                return (id.clone(), events.clone());
            }
            self.watch.next().await;
        }
    }
}

async fn runs_stream_reasoning_tools_usage_and_survive_provider_faults(wire: Wire) {
    set_mock_key();
    let mock = MockServer::start().await.unwrap();
    let mut primary = remote("primary", wire, &mock);
    primary.fallback = Some("backup".into());
    let backup = ModelConfig { input_price_per_million: 1.0, output_price_per_million: 1.0, ..remote("backup", wire, &mock) };
    let app = App::start_with(TestEngine::Sqlite, move |c| {
        relaxed_limits(c);
        c.agents.models = vec![primary, backup];
        c.agents.resilience.retry_base_delay = Duration::from_millis(10);
        c.agents.resilience.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "providers").await;
    agent_in(&app, &alice, &room, "Agent", json!({ "model": "primary" })).await;
    let watch = Watch::new(&app, &alice, &room).await;
    let mut b = Bench { app, alice, room, watch };

    // Reasoning and two tool calls in one turn, then the answer.
    mock.push(Script::turn(
        Turn::new()
            .reasoning("Two things to look up.")
            .tool_call("call_a", "clock", json!({"timezone": "UTC"}))
            .tool_call("call_b", "calculator", json!({"expression": "2+2"}))
            .usage(30, 12, 4),
    ));
    mock.push(Script::turn(Turn::new().text("It is noon, and 2+2 is 4.").usage(50, 10, 0)));
    let (_, events) = b.ask("@Agent what time is it, and what is 2+2?").await;
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert!(types.contains(&"agent_thinking"), "{types:?}");
    let executing: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool_executing").collect();
    let completed: Vec<&Value> = events.iter().filter(|e| e["type"] == "tool_completed").collect();
    assert_eq!((executing.len(), completed.len()), (2, 2));
    let first_completed = events.iter().position(|e| e["type"] == "tool_completed").unwrap();
    assert!(events.iter().rposition(|e| e["type"] == "tool_executing").unwrap() < first_completed, "both calls start before either ends");
    assert!(completed.iter().all(|e| e["data"]["is_error"] == false), "{completed:?}");
    let done = events.last().unwrap();
    assert_eq!(done["type"], "agent_completed", "{done}");
    let d = &done["data"];
    assert_eq!(d["text"], "It is noon, and 2+2 is 4.");
    assert_eq!(d["usage"], json!({"input_tokens": 80, "output_tokens": 22, "estimated": false}));
    let cost = d["cost_usd"].as_f64().unwrap();
    assert!((cost - (80.0 * 2.0 + 22.0 * 8.0) / 1e6).abs() < 1e-12, "{cost}");
    assert_eq!(d["model"], "primary");
    // The tool results went back in this provider's format.
    let requests = mock.requests();
    let second = &requests[requests.len() - 1].body;
    match wire {
        Wire::OpenAi => {
            assert_eq!(requests[0].body["stream_options"]["include_usage"], true, "usage asked for");
            let tools: Vec<&Value> = second["messages"].as_array().unwrap().iter().filter(|m| m["role"] == "tool").collect();
            let ids: Vec<&str> = tools.iter().filter_map(|m| m["tool_call_id"].as_str()).collect();
            assert_eq!(ids, ["call_a", "call_b"]);
            assert!(tools[1]["content"].as_str().unwrap().contains('4'));
        }
        Wire::Anthropic => {
            let body = second.to_string();
            assert_eq!(body.matches("\"type\":\"tool_result\"").count(), 2, "{body}");
            assert!(body.contains("\"tool_use_id\":\"call_a\""), "{body}");
        }
        Wire::Gemini => {
            assert!(second.to_string().contains("functionResponse"), "{second}");
            assert!(second.to_string().contains("\"name\":\"calculator\""), "{second}");
        }
    }

    // 429 with Retry-After, then an answer.
    mock.push(Script::status(429).retry_after(1));
    mock.push(Script::text("After waiting."));
    let (_, events) = b.ask("@Agent again").await;
    assert_eq!(events.last().unwrap()["data"]["text"], "After waiting.");

    // 500s until the retries run out: the fallback model answers.
    mock.push_times(4, Script::status(500));
    mock.push(Script::turn(Turn::new().text("From the backup.").usage(10, 5, 0)));
    let (_, events) = b.ask("@Agent and again").await;
    let done = &events.last().unwrap()["data"];
    assert_eq!((done["text"].as_str(), done["model"].as_str()), (Some("From the backup."), Some("backup")));
    assert!((done["cost_usd"].as_f64().unwrap() - 15.0 / 1e6).abs() < 1e-12, "priced as the backup");

    // A stall after some content (Anthropic's first three frames carry none):
    // the idle timeout ends the run, the text so far kept.
    mock.push(Script::text("one two three four five six seven eight").stall_after(5));
    let (_, events) = b.ask("@Agent stall please").await;
    let e = &events.last().unwrap()["data"];
    assert_eq!(e["code"], "timeout", "{e}");
    assert!(e["text"].as_str().is_some_and(|t| !t.is_empty()), "{e}");

    // A malformed chunk, and a stream that ends early: provider errors, nothing after.
    mock.push(Script::text("one two three four five six seven eight").malformed_at(5));
    let (_, events) = b.ask("@Agent malformed").await;
    assert_eq!(events.last().unwrap()["data"]["code"], "provider_error");
    mock.push(Script::text("one two three four five six seven eight").close_after(5));
    let (_, events) = b.ask("@Agent cut").await;
    assert_eq!(events.last().unwrap()["data"]["code"], "provider_error");
    assert_eq!(events.last().unwrap()["data"]["retryable"], true);
    b.app.stop().await;
}
