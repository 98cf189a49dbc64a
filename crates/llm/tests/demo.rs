//! The offline demo model: deterministic answers, tool calls for the time
//! and arithmetic, answers from tool results, summaries, pacing, usage, and
//! fault directives only when allowed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod common;

use std::time::Duration;

use chorus_llm::{
    ChatRequest, FaultInjection, FinishReason, Message, ModelConfig, ModelConfigError, Models,
    ModelsContext, ProviderError, Resilience, StreamEvent, ToolCall, ToolResult,
};
use common::*;
use serde_json::json;
use tokio::time::Instant;

fn demo(tokens_per_second: f64, faults: bool) -> Models {
    let config = ModelConfig {
        tokens_per_second,
        faults,
        ..ModelConfig::demo()
    };
    let allowed = if faults {
        FaultInjection::Allowed
    } else {
        FaultInjection::Refused
    };
    build(&[config], allowed)
}

fn ask(models: &Models, text: &str) -> ChatRequest {
    let mut request = request(models, "demo", text);
    request.tools = vec![clock(), calculator()];
    request
}

#[tokio::test(start_paused = true)]
async fn same_request_same_answer_and_the_answer_follows_the_input() {
    let models = demo(0.0, false);
    let model = models.default_model();
    let first = collect(model.stream(ask(&models, "Tell me about rivers and mountains"))).await;
    let second = collect(model.stream(ask(&models, "Tell me about rivers and mountains"))).await;
    first.expect_ok();
    assert_eq!(first.events, second.events);
    assert!(
        first.text().contains("rivers and mountains"),
        "{}",
        first.text()
    );
    assert!(
        first.text().contains("Alice"),
        "greets the speaker: {}",
        first.text()
    );
    assert!(!first.reasoning().is_empty(), "shows some thinking");
    assert_eq!(first.finish(), Some(FinishReason::Stop));
    let other = collect(model.stream(ask(&models, "Something else entirely"))).await;
    assert_ne!(other.text(), first.text());
}

#[tokio::test(start_paused = true)]
async fn arithmetic_calls_the_calculator_then_answers_with_its_result() {
    let models = demo(0.0, false);
    let model = models.default_model();
    let mut request = ask(&models, "what is 12*(3+4)?");
    let first = collect(model.stream(request.clone())).await;
    first.expect_ok();
    assert_eq!(first.finish(), Some(FinishReason::ToolCalls));
    let calls = first.completed_calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].name, "calculator");
    assert_eq!(calls[0].arguments, json!({"expression": "12*(3+4)"}));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first.streamed_arguments(&calls[0].id)).unwrap(),
        calls[0].arguments
    );
    assert!(first.reasoning().contains("calculator"));

    request.messages.push(Message::Assistant {
        text: first.text(),
        tool_calls: calls.clone(),
    });
    request.messages.push(Message::ToolResult(ToolResult {
        call_id: calls[0].id.clone(),
        name: "calculator".into(),
        content: r#"{"expression":"12*(3+4)","result":84}"#.into(),
        is_error: false,
    }));
    let second = collect(model.stream(request)).await;
    second.expect_ok();
    assert_eq!(second.text(), "`12*(3+4)` = 84.");
    assert_eq!(second.finish(), Some(FinishReason::Stop));
    assert!(second.completed_calls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn time_questions_call_the_clock_with_a_timezone_when_named() {
    let models = demo(0.0, false);
    let model = models.default_model();
    let plain = collect(model.stream(ask(&models, "What time is it?"))).await;
    assert_eq!(plain.completed_calls()[0].name, "clock");
    assert_eq!(plain.completed_calls()[0].arguments, json!({}));
    let mut zoned = ask(&models, "what time is it in Europe/Paris?");
    let first = collect(model.stream(zoned.clone())).await;
    let call = first.completed_calls().remove(0);
    assert_eq!(call.arguments, json!({"timezone": "Europe/Paris"}));

    zoned.messages.push(Message::Assistant {
        text: String::new(),
        tool_calls: vec![call.clone()],
    });
    zoned.messages.push(Message::ToolResult(ToolResult {
        call_id: call.id,
        name: "clock".into(),
        content: "2026-12-05T10:00:00+01:00".into(),
        is_error: false,
    }));
    let answer = collect(model.stream(zoned)).await;
    assert_eq!(answer.text(), "It is 2026-12-05T10:00:00+01:00.");

    // A failed tool is reported, and the run goes on.
    let mut failed = ask(&models, "what time is it?");
    failed.messages.push(Message::Assistant {
        text: String::new(),
        tool_calls: vec![ToolCall {
            id: "c1".into(),
            name: "clock".into(),
            arguments: json!({"timezone": "Mars/Base"}),
        }],
    });
    failed.messages.push(Message::ToolResult(ToolResult {
        call_id: "c1".into(),
        name: "clock".into(),
        content: "unknown timezone".into(),
        is_error: true,
    }));
    assert_eq!(
        collect(model.stream(failed)).await.text(),
        "The clock tool failed: unknown timezone."
    );
}

#[tokio::test(start_paused = true)]
async fn without_the_tools_it_does_not_call_them() {
    let models = demo(0.0, false);
    let mut request = ask(&models, "what is 2+2 and what time is it");
    request.tools.clear();
    let outcome = collect(models.default_model().stream(request)).await;
    outcome.expect_ok();
    assert!(outcome.completed_calls().is_empty());
    assert_eq!(outcome.finish(), Some(FinishReason::Stop));
}

#[tokio::test(start_paused = true)]
async fn summarizes_deterministically() {
    let models = demo(0.0, false);
    let model = models.default_model();
    let mut request = model.request();
    request.system = Some("Summarize the conversation below in a few lines.".into());
    for i in 0..60 {
        request.messages.push(Message::user_named(
            if i % 2 == 0 { "Alice" } else { "Bob" },
            format!(
                "message number {i} talks about topic {} at some length here",
                i % 7
            ),
        ));
    }
    request.messages.push(Message::user("Please summarize."));
    let first = collect(model.stream(request.clone())).await;
    let second = collect(model.stream(request)).await;
    first.expect_ok();
    assert_eq!(first.text(), second.text());
    let text = first.text();
    assert!(text.starts_with("Summary of 60 lines: "), "{text}");
    // The newest lines are kept, each cut short.
    assert!(
        text.contains("Bob: message number 59 talks about topic 3 at…"),
        "{text}"
    );
    assert!(!text.contains("message number 0 "), "{text}");
}

#[tokio::test(start_paused = true)]
async fn streams_at_the_configured_pace_and_reports_usage() {
    let models = demo(20.0, false);
    let model = models.default_model();
    let request = ask(&models, "hello there");
    let start = Instant::now();
    let outcome = collect(model.stream(request.clone())).await;
    outcome.expect_ok();
    let content = outcome.events.iter().filter(|e| e.is_content()).count();
    assert!(content > 20, "{content}");
    // 20 tokens per second: 50 ms between content events.
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(50) * (content as u32 - 1)
    );
    let usage = outcome.usage().unwrap();
    assert_eq!(usage.input_tokens, tokens().request(&request) as u64);
    assert_eq!(usage.output_tokens, content as u64);
    assert!(!usage.estimated);
    assert_eq!(model.prices().cost(&usage), 0.0);
}

#[tokio::test(start_paused = true)]
async fn fault_directives_need_explicit_permission() {
    let refused = Models::build(
        &[ModelConfig {
            faults: true,
            ..ModelConfig::demo()
        }],
        &ModelsContext {
            http: http(),
            tokens: tokens(),
            resilience: Resilience::default(),
            faults: FaultInjection::Refused,
            secrets: &secrets(),
        },
    );
    assert!(matches!(
        refused,
        Err(ModelConfigError::FaultsNotAllowed(_))
    ));

    // Without `faults = true` a directive is just text.
    let models = demo(0.0, false);
    let outcome = collect(
        models
            .default_model()
            .stream(ask(&models, "[fault:429] hi")),
    )
    .await;
    outcome.expect_ok();
}

#[tokio::test(start_paused = true)]
async fn injected_429_is_retried_then_fails_with_rate_limited() {
    let models = demo(0.0, true);
    let start = Instant::now();
    let outcome = collect(
        models
            .default_model()
            .stream(ask(&models, "[fault:429] hi")),
    )
    .await;
    assert_eq!(
        outcome.error.as_ref().map(ProviderError::code),
        Some("rate_limited")
    );
    assert_eq!(outcome.retries().len(), 3);
    // Each retry waited the Retry-After of 1 s.
    assert_eq!(start.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn injected_stall_after_content_times_out() {
    let models = demo(0.0, true);
    let outcome = collect(
        models
            .default_model()
            .stream(ask(&models, "[fault:stall-after:3] hi")),
    )
    .await;
    assert_eq!(outcome.events.iter().filter(|e| e.is_content()).count(), 3);
    assert_eq!(
        outcome.error,
        Some(ProviderError::IdleTimeout(Duration::from_secs(30)))
    );
}

#[tokio::test(start_paused = true)]
async fn injected_tool_loop_repeats_the_same_call() {
    let models = demo(0.0, true);
    let model = models.default_model();
    let mut request = ask(&models, "[fault:tool-loop] what time is it");
    for round in 0..3 {
        let outcome = collect(model.stream(request.clone())).await;
        let calls = outcome.completed_calls();
        assert_eq!(calls.len(), 1, "round {round}");
        assert_eq!(
            (calls[0].name.as_str(), &calls[0].arguments),
            ("clock", &json!({}))
        );
        request.messages.push(Message::Assistant {
            text: String::new(),
            tool_calls: calls.clone(),
        });
        request.messages.push(Message::ToolResult(ToolResult {
            call_id: calls[0].id.clone(),
            name: "clock".into(),
            content: "noon".into(),
            is_error: false,
        }));
    }
}

#[tokio::test(start_paused = true)]
async fn injected_panic_panics_inside_the_stream() {
    let models = demo(0.0, true);
    let stream = models.default_model().stream(ask(&models, "[fault:panic]"));
    let task = tokio::spawn(collect(stream));
    assert!(task.await.unwrap_err().is_panic());
}

#[tokio::test(start_paused = true)]
async fn events_come_in_the_documented_order() {
    let models = demo(0.0, false);
    let outcome = collect(models.default_model().stream(ask(&models, "what is 1+1"))).await;
    // Announcement, argument pieces, completion, usage, finish: in that order.
    let kinds: Vec<&str> = outcome
        .events
        .iter()
        .map(|e| match e {
            StreamEvent::ReasoningDelta { .. } => "reasoning",
            StreamEvent::ToolCallStarted { .. } => "started",
            StreamEvent::ToolCallArgumentsDelta { .. } => "arguments",
            StreamEvent::ToolCallCompleted { .. } => "completed",
            StreamEvent::Usage { .. } => "usage",
            StreamEvent::Finished { .. } => "finished",
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    let mut order = kinds.clone();
    order.dedup();
    assert_eq!(
        order,
        [
            "reasoning",
            "started",
            "arguments",
            "completed",
            "usage",
            "finished"
        ]
    );
}
