//! Every provider over a real socket against the mock speaking its wire
//! format: text, reasoning, usage, parallel tool calls, tool results sent
//! back, retries, fallback, stalls, malformed chunks, early close, hang-up.
//! Time is paused: timeouts and `Retry-After` waits pass without sleeping.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

mod common;

use std::time::Duration;

use chorus_llm::{FinishReason, Message, ProviderError, StreamEvent, ToolCall, ToolResult};
use chorus_llm_mock::{MockServer, Script, Turn, Wire};
use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::time::Instant;

/// Runs a scenario once per provider wire format.
macro_rules! for_each_wire {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use super::*;
            #[tokio::test(start_paused = true)]
            async fn openai() { super::$scenario(Wire::OpenAi).await }
            #[tokio::test(start_paused = true)]
            async fn gemini() { super::$scenario(Wire::Gemini).await }
            #[tokio::test(start_paused = true)]
            async fn anthropic() { super::$scenario(Wire::Anthropic).await }
        }
    )*};
}

for_each_wire!(
    text_reasoning_and_usage,
    parallel_tool_calls,
    tool_results_go_back_in_the_provider_format,
    retries_after_429_honouring_retry_after,
    falls_back_after_repeated_500s,
    idle_stall_ends_the_stream_with_timeout,
    slow_headers_time_out_and_are_retried,
    malformed_chunk_is_an_error,
    early_close_is_an_error,
    in_stream_error_event_is_an_error,
    dropping_the_stream_hangs_up,
    api_key_never_shows_in_errors,
    context_length_is_final,
    a_long_retry_after_goes_straight_to_the_fallback,
);

async fn text_reasoning_and_usage(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    mock.push(Script::turn(
        Turn::new()
            .reasoning("Let me think about it.")
            .text("Hello there, Alice!")
            .usage(30, 12, 4),
    ));
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    outcome.expect_ok();
    assert_eq!(outcome.text(), "Hello there, Alice!");
    assert_eq!(outcome.reasoning(), "Let me think about it.");
    assert_eq!(outcome.finish(), Some(FinishReason::Stop));
    let usage = outcome.usage().expect("usage");
    assert_eq!(
        (usage.input_tokens, usage.output_tokens, usage.estimated),
        (30, 12, false)
    );
    if wire != Wire::Anthropic {
        assert_eq!(usage.reasoning_tokens, Some(4));
    }
    // Usage comes after the content and right before the finish.
    let n = outcome.events.len();
    assert!(matches!(outcome.events[n - 2], StreamEvent::Usage { .. }));

    let requests = mock.requests();
    assert_eq!(requests.len(), 1);
    let sent = &requests[0];
    let body = sent.body.to_string();
    assert!(
        body.contains("Alice: hi"),
        "the speaker's name goes in front: {body}"
    );
    assert!(body.contains("You are a helpful test agent."));
    match wire {
        Wire::OpenAi => {
            assert_eq!(sent.body["stream"], json!(true));
            assert_eq!(sent.body["stream_options"]["include_usage"], json!(true));
            assert_eq!(sent.body["model"], json!("mock-model"));
            assert_eq!(sent.body["max_tokens"], json!(1000));
            assert_eq!(
                sent.headers["authorization"],
                format!("Bearer {API_KEY}").as_str()
            );
        }
        Wire::Gemini => {
            assert_eq!(
                sent.path,
                "/v1beta/models/mock-model:streamGenerateContent?alt=sse"
            );
            assert_eq!(sent.headers["x-goog-api-key"], API_KEY);
        }
        Wire::Anthropic => {
            assert_eq!(sent.body["stream"], json!(true));
            assert_eq!(sent.body["max_tokens"], json!(1000));
            assert_eq!(sent.headers["x-api-key"], API_KEY);
        }
    }
    assert_eq!(mock.completed(), 1);
}

async fn parallel_tool_calls(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    mock.push(Script::turn(
        Turn::new()
            .text("Let me check.")
            .tool_call("call_a", "calculator", json!({"expression": "12*(3+4)"}))
            .tool_call("call_b", "clock", json!({"timezone": "Europe/Paris"})),
    ));
    let mut req = request(
        &models,
        "primary",
        "what is 12*(3+4), and what time is it in Paris?",
    );
    req.tools = vec![calculator(), clock()];
    let outcome = collect(models.get("primary").unwrap().stream(req)).await;
    outcome.expect_ok();
    assert_eq!(outcome.finish(), Some(FinishReason::ToolCalls));
    assert_eq!(outcome.text(), "Let me check.");
    let calls = outcome.completed_calls();
    assert_eq!(calls.len(), 2, "{:?}", outcome.events);
    assert_eq!(
        (calls[0].name.as_str(), calls[1].name.as_str()),
        ("calculator", "clock")
    );
    assert_eq!(calls[0].arguments, json!({"expression": "12*(3+4)"}));
    assert_eq!(calls[1].arguments, json!({"timezone": "Europe/Paris"}));
    assert_ne!(calls[0].id, calls[1].id);
    if wire != Wire::Gemini {
        // Gemini's calls carry no id; genai makes one up.
        assert_eq!(
            (calls[0].id.as_str(), calls[1].id.as_str()),
            ("call_a", "call_b")
        );
    }
    for call in &calls {
        // Each call was announced, and its streamed pieces add up to its arguments.
        assert!(outcome.events.iter().any(
            |e| matches!(e, StreamEvent::ToolCallStarted { id, name } if id == &call.id && name == &call.name)
        ));
        let streamed: Value = serde_json::from_str(&outcome.streamed_arguments(&call.id)).unwrap();
        assert_eq!(streamed, call.arguments);
    }
    if wire != Wire::Gemini {
        // OpenAI and Anthropic stream arguments in several pieces.
        let pieces = outcome
            .events
            .iter()
            .filter(
                |e| matches!(e, StreamEvent::ToolCallArgumentsDelta { id, .. } if id == "call_a"),
            )
            .count();
        assert!(pieces > 1, "{pieces}");
    }
    let tools = match wire {
        Wire::OpenAi | Wire::Anthropic => mock.requests()[0].body["tools"].clone(),
        Wire::Gemini => mock.requests()[0].body["tools"][0]["functionDeclarations"].clone(),
    };
    assert_eq!(tools.as_array().map(Vec::len), Some(2), "{tools}");
}

async fn tool_results_go_back_in_the_provider_format(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    mock.push(Script::text("12*(3+4) is 84."));
    let call_id = if wire == Wire::Gemini {
        "call#calculator#0"
    } else {
        "call_a"
    };
    let mut req = request(&models, "primary", "what is 12*(3+4)?");
    req.tools = vec![calculator()];
    req.messages.push(Message::Assistant {
        text: String::new(),
        tool_calls: vec![ToolCall {
            id: call_id.into(),
            name: "calculator".into(),
            arguments: json!({"expression": "12*(3+4)"}),
        }],
    });
    req.messages.push(Message::ToolResult(ToolResult {
        call_id: call_id.into(),
        name: "calculator".into(),
        content: "84".into(),
        is_error: false,
    }));
    let outcome = collect(models.get("primary").unwrap().stream(req)).await;
    outcome.expect_ok();
    assert_eq!(outcome.text(), "12*(3+4) is 84.");
    let body = &mock.requests()[0].body;
    match wire {
        Wire::OpenAi => {
            let messages = body["messages"].as_array().unwrap();
            let assistant = messages
                .iter()
                .find(|m| m["role"] == "assistant")
                .expect("assistant turn");
            assert_eq!(assistant["tool_calls"][0]["id"], "call_a");
            assert_eq!(assistant["tool_calls"][0]["type"], "function");
            assert_eq!(assistant["tool_calls"][0]["function"]["name"], "calculator");
            let arguments: Value = serde_json::from_str(
                assistant["tool_calls"][0]["function"]["arguments"]
                    .as_str()
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(arguments, json!({"expression": "12*(3+4)"}));
            let tool = messages
                .iter()
                .find(|m| m["role"] == "tool")
                .expect("tool turn");
            assert_eq!(tool["tool_call_id"], "call_a");
            assert_eq!(tool["content"], "84");
        }
        Wire::Anthropic => {
            let messages = body["messages"].as_array().unwrap();
            let assistant = messages
                .iter()
                .find(|m| m["role"] == "assistant")
                .expect("assistant turn");
            let tool_use = assistant["content"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["type"] == "tool_use")
                .unwrap();
            assert_eq!(tool_use["id"], "call_a");
            assert_eq!(tool_use["name"], "calculator");
            assert_eq!(tool_use["input"], json!({"expression": "12*(3+4)"}));
            let last = messages.last().unwrap();
            assert_eq!(last["role"], "user");
            let result = &last["content"][0];
            assert_eq!(result["type"], "tool_result");
            assert_eq!(result["tool_use_id"], "call_a");
            assert!(result["content"].to_string().contains("84"), "{result}");
        }
        Wire::Gemini => {
            let contents = body["contents"].as_array().unwrap();
            let model_turn = contents
                .iter()
                .find(|c| c["role"] == "model")
                .expect("model turn");
            assert_eq!(model_turn["parts"][0]["functionCall"]["name"], "calculator");
            assert_eq!(
                model_turn["parts"][0]["functionCall"]["args"],
                json!({"expression": "12*(3+4)"})
            );
            let last = contents.last().unwrap();
            assert_eq!(last["role"], "user");
            let response = &last["parts"][0]["functionResponse"];
            assert_eq!(response["name"], "calculator");
            assert!(
                response["response"].to_string().contains("84"),
                "{response}"
            );
        }
    }
}

async fn retries_after_429_honouring_retry_after(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    mock.push_times(2, Script::status(429).retry_after(2));
    mock.push(Script::text("Finally."));
    let start = Instant::now();
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    outcome.expect_ok();
    assert_eq!(outcome.text(), "Finally.");
    assert_eq!(
        outcome.retries(),
        vec![
            (1, Duration::from_secs(2), "rate_limited".into()),
            (2, Duration::from_secs(2), "rate_limited".into())
        ]
    );
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(outcome.fell_back(), None);
    assert_eq!(mock.requests().len(), 3);
}

async fn falls_back_after_repeated_500s(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    let failing = if wire == Wire::Anthropic { 529 } else { 500 };
    // The first attempt and three retries fail; the fallback's first attempt answers.
    mock.push_times(4, Script::status(failing));
    mock.push(Script::text("From the backup."));
    let start = Instant::now();
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    outcome.expect_ok();
    assert_eq!(outcome.text(), "From the backup.");
    let retries = outcome.retries();
    assert_eq!(
        retries.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(retries.iter().all(|r| r.2 == "provider_error"));
    // Full jitter: each wait is at most base * 2^n (0.5 s, 1 s, 2 s).
    assert!(
        retries
            .iter()
            .zip([500, 1000, 2000])
            .all(|(r, cap)| r.1 <= Duration::from_millis(cap))
    );
    assert!(start.elapsed() <= Duration::from_millis(3500));
    assert_eq!(outcome.fell_back().as_deref(), Some("backup"));
    let requests = mock.requests();
    assert_eq!(requests.len(), 5);
    let model_of = |r: &chorus_llm_mock::RecordedRequest| match wire {
        Wire::Gemini => r.path.clone(),
        _ => r.body["model"].as_str().unwrap().to_owned(),
    };
    assert!(model_of(&requests[3]).contains("mock-model"));
    assert!(model_of(&requests[4]).contains("backup-model"));
}

async fn idle_stall_ends_the_stream_with_timeout(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    // Enough frames for some text to arrive, then silence.
    let stall_after = match wire {
        Wire::OpenAi => 3,
        Wire::Gemini => 2,
        Wire::Anthropic => 5,
    };
    mock.push(Script::text("one two three four five six").stall_after(stall_after));
    let start = Instant::now();
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    assert!(!outcome.text().is_empty(), "{:?}", outcome.events);
    let error = outcome.error.clone().expect("a timeout");
    assert_eq!(error, ProviderError::IdleTimeout(Duration::from_secs(30)));
    assert_eq!(error.code(), "timeout");
    // Content was shown: no retry.
    assert!(outcome.retries().is_empty());
    assert_eq!(mock.requests().len(), 1);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(30) && waited < Duration::from_secs(31),
        "{waited:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), mock.wait_for_hangups(1))
        .await
        .expect("the mock saw the hang-up");
}

async fn slow_headers_time_out_and_are_retried(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    mock.push(Script::text("never seen").header_delay(Duration::from_secs(45)));
    mock.push(Script::text("Second try.").chunk_delay(Duration::from_secs(20)));
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    // 20 s between chunks is slow but under the idle limit: not a total timeout.
    outcome.expect_ok();
    assert_eq!(outcome.text(), "Second try.");
    let retries = outcome.retries();
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].2, "timeout");
    tokio::time::timeout(Duration::from_secs(60), mock.wait_for_hangups(1))
        .await
        .expect("first request dropped");
}

async fn malformed_chunk_is_an_error(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    let index = match wire {
        Wire::OpenAi => 2,
        Wire::Gemini => 1,
        Wire::Anthropic => 4,
    };
    mock.push(Script::text("one two three four").malformed_at(index));
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    assert!(!outcome.text().is_empty());
    let error = outcome.error.clone().expect("malformed");
    assert!(matches!(error, ProviderError::Malformed(_)), "{error:?}");
    assert_eq!(error.code(), "provider_error");
    assert!(outcome.finish().is_none());
}

async fn early_close_is_an_error(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    let frames = match wire {
        Wire::OpenAi => 3,
        Wire::Gemini => 2,
        Wire::Anthropic => 5,
    };
    mock.push(Script::text("one two three four five").close_after(frames));
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    assert!(!outcome.text().is_empty(), "{:?}", outcome.events);
    assert_eq!(outcome.error, Some(ProviderError::Interrupted));
    assert!(outcome.finish().is_none());

    // Closed before any content: retried, and the retry answers.
    mock.push(Script::text("lost").close_after(0));
    mock.push(Script::text("Whole answer."));
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    outcome.expect_ok();
    assert_eq!(outcome.text(), "Whole answer.");
    assert_eq!(outcome.retries().len(), 1);
}

async fn in_stream_error_event_is_an_error(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    let frames = match wire {
        Wire::OpenAi => 3,
        Wire::Gemini => 2,
        Wire::Anthropic => 5,
    };
    mock.push(Script::text("one two three four").error_after(frames));
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    assert!(!outcome.text().is_empty());
    let error = outcome.error.clone().expect("error event");
    assert_eq!(error.code(), "provider_error", "{error:?}");
    assert!(outcome.retries().is_empty());
}

async fn dropping_the_stream_hangs_up(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    let long: String = (0..200).map(|i| format!("w{i} ")).collect();
    mock.push(Script::text(long).chunk_delay(Duration::from_millis(100)));
    let mut stream = models
        .get("primary")
        .unwrap()
        .stream(request(&models, "primary", "hi"));
    let mut texts = 0;
    while texts < 3 {
        if let Some(Ok(StreamEvent::TextDelta { .. })) = stream.next().await {
            texts += 1;
        }
    }
    assert_eq!(mock.hangups(), 0);
    drop(stream);
    tokio::time::timeout(Duration::from_secs(5), mock.wait_for_hangups(1))
        .await
        .expect("the mock saw the hang-up");
    assert_eq!(mock.completed(), 0);
}

async fn api_key_never_shows_in_errors(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    let echo = format!(
        r#"{{"error":{{"message":"Incorrect API key provided: {API_KEY}","type":"invalid_request_error"}}}}"#
    );
    mock.push(Script {
        reply: chorus_llm_mock::Reply::Status {
            status: 401,
            retry_after: None,
            body: Some(echo),
        },
        ..Script::text("")
    });
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    let error = outcome.error.clone().expect("auth error");
    assert_eq!(error.code(), "auth");
    assert!(!error.is_retryable());
    let shown = format!("{error} {error:?} {:?}", outcome.events);
    assert!(!shown.contains(API_KEY), "{shown}");
    assert_eq!(mock.requests().len(), 1, "auth errors are not retried");
}

async fn context_length_is_final(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    mock.push(Script::status(400));
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    let error = outcome.error.clone().expect("an error");
    assert_eq!(error.code(), "context_length", "{error:?}");
    assert!(outcome.retries().is_empty() && outcome.fell_back().is_none());
    assert_eq!(mock.requests().len(), 1);
}

async fn a_long_retry_after_goes_straight_to_the_fallback(wire: Wire) {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, wire);
    mock.push(Script::status(429).retry_after(3600));
    mock.push(Script::text("backup answer"));
    let start = Instant::now();
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    outcome.expect_ok();
    assert!(outcome.retries().is_empty());
    assert_eq!(outcome.fell_back().as_deref(), Some("backup"));
    // It did not wait the hour Retry-After asked for.
    assert!(start.elapsed() < Duration::from_secs(60));
    assert_eq!(outcome.text(), "backup answer");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_provider_is_retried_then_the_fallback_answers() {
    let mock = MockServer::start().await.unwrap();
    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut primary = remote_config("primary", "mock-model", Wire::OpenAi, &mock);
    primary.base_url = Some(format!("http://{closed}/v1/"));
    primary.fallback = Some("backup".into());
    let backup = remote_config("backup", "backup-model", Wire::OpenAi, &mock);
    let models = build(&[primary, backup], chorus_llm::FaultInjection::Refused);
    mock.push(Script::text("reachable"));
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    outcome.expect_ok();
    assert_eq!(outcome.text(), "reachable");
    let retries = outcome.retries();
    assert_eq!(retries.len(), 3, "{:?}", outcome.events);
    assert!(retries.iter().all(|r| r.2 == "provider_error"));
    assert_eq!(outcome.fell_back().as_deref(), Some("backup"));
    assert_eq!(mock.requests().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_overload_event_before_any_content_is_retried() {
    let mock = MockServer::start().await.unwrap();
    let models = models_on(&mock, Wire::Anthropic);
    // `message_start` and `ping`, then `event: error` (overloaded_error).
    mock.push(Script::text("lost").error_after(2));
    mock.push(Script::text("second wind"));
    let outcome = collect(
        models
            .get("primary")
            .unwrap()
            .stream(request(&models, "primary", "hi")),
    )
    .await;
    outcome.expect_ok();
    assert_eq!(outcome.text(), "second wind");
    assert_eq!(outcome.retries().len(), 1);
    assert_eq!(mock.requests().len(), 2);
}
