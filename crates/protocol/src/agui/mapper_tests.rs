use std::collections::HashSet;

use serde_json::{Value, json};

use super::*;

const RUN: &str = "r1";

fn mapper() -> AguiMapper {
    AguiMapper::new(AguiRun {
        thread_id: "room:c1".into(),
        run_id: "client-run".into(),
        parent_run_id: None,
        chorus_run_id: RUN.into(),
        agent_id: "a1".into(),
    })
}

fn data(extra: Value) -> Value {
    let mut base = json!({"run_id": RUN, "thread_id": "room:c1", "agent_id": "a1", "seq": 1});
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// The rules AG-UI clients enforce on a stream (`verifyEvents` of
/// `@ag-ui/client` 1.0), checked on what the mapper produced.
fn verify(events: &[AguiEvent]) -> Result<(), String> {
    let mut text = HashSet::new();
    let mut reasoning_spans = HashSet::new();
    let mut reasoning_msgs = HashSet::new();
    let mut calls = HashSet::new();
    let mut ended = false;
    for (i, e) in events.iter().enumerate() {
        let v = serde_json::to_value(e).unwrap();
        if contains_null(&v) {
            return Err(format!("#{i} has a null: {v}"));
        }
        if ended {
            return Err(format!("#{i} {} after the ending", e.type_name()));
        }
        if i == 0 && !matches!(e, AguiEvent::RunStarted { .. } | AguiEvent::RunError { .. }) {
            return Err(format!("first event is {}", e.type_name()));
        }
        match e {
            AguiEvent::RunStarted { .. } if i > 0 => {
                return Err(format!("#{i} second RUN_STARTED"));
            }
            AguiEvent::RunStarted { .. } => {}
            AguiEvent::TextMessageStart { message_id, .. } => {
                if !text.insert(message_id.clone()) {
                    return Err(format!("#{i} text {message_id} started twice"));
                }
            }
            AguiEvent::TextMessageContent { message_id, delta } => {
                if !text.contains(message_id) {
                    return Err(format!("#{i} content of {message_id} without its start"));
                }
                if delta.is_empty() {
                    return Err(format!("#{i} empty delta"));
                }
            }
            AguiEvent::TextMessageEnd { message_id } => {
                if !text.remove(message_id) {
                    return Err(format!("#{i} end of {message_id} that is not open"));
                }
            }
            AguiEvent::ToolCallStart { tool_call_id, .. } => {
                if !calls.insert(tool_call_id.clone()) {
                    return Err(format!("#{i} call {tool_call_id} started twice"));
                }
            }
            AguiEvent::ToolCallArgs { tool_call_id, .. } => {
                if !calls.contains(tool_call_id) {
                    return Err(format!("#{i} args of {tool_call_id} without its start"));
                }
            }
            AguiEvent::ToolCallEnd { tool_call_id } => {
                if !calls.remove(tool_call_id) {
                    return Err(format!("#{i} end of call {tool_call_id} that is not open"));
                }
            }
            AguiEvent::ToolCallResult { .. } => {}
            AguiEvent::ReasoningStart { message_id } => {
                if !reasoning_spans.insert(message_id.clone()) {
                    return Err(format!("#{i} reasoning span twice"));
                }
            }
            AguiEvent::ReasoningMessageStart { message_id, .. } => {
                if !reasoning_msgs.insert(message_id.clone()) {
                    return Err(format!("#{i} reasoning message twice"));
                }
            }
            AguiEvent::ReasoningMessageContent { message_id, .. } => {
                if !reasoning_msgs.contains(message_id) {
                    return Err(format!("#{i} reasoning content without its start"));
                }
            }
            AguiEvent::ReasoningMessageEnd { message_id } => {
                if !reasoning_msgs.remove(message_id) {
                    return Err(format!("#{i} reasoning message end without start"));
                }
            }
            AguiEvent::ReasoningEnd { message_id } => {
                if !reasoning_spans.remove(message_id) {
                    return Err(format!("#{i} reasoning end without start"));
                }
            }
            AguiEvent::RunFinished { .. } | AguiEvent::RunError { .. } => {
                // Chorus closes everything before either ending (clients insist only for RUN_FINISHED).
                if !(text.is_empty() && calls.is_empty() && reasoning_msgs.is_empty() && reasoning_spans.is_empty()) {
                    return Err(format!("#{i} {} with something open", e.type_name()));
                }
                ended = true;
            }
        }
    }
    if !ended {
        return Err("no ending".into());
    }
    Ok(())
}

fn contains_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.iter().any(contains_null),
        Value::Object(o) => o.values().any(contains_null),
        _ => false,
    }
}

fn types(events: &[AguiEvent]) -> Vec<&'static str> {
    events.iter().map(AguiEvent::type_name).collect()
}

fn feed(m: &mut AguiMapper, events: &[(EventType, Value)]) -> Vec<AguiEvent> {
    events.iter().flat_map(|(t, d)| m.map(*t, d)).collect()
}

#[test]
fn a_plain_answer_with_reasoning() {
    let mut m = mapper();
    let mut out = m.start();
    out.extend(feed(
        &mut m,
        &[
            (EventType::AgentStarted, data(json!({"model":"demo","provider":"demo"}))),
            (EventType::AgentThinking, data(json!({"thought":"Let me think."}))),
            (EventType::AgentThinking, data(json!({"thought":" Done."}))),
            (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"Hel"}))),
            (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"lo"}))),
            (
                EventType::AgentCompleted,
                data(json!({"message_id":"m1","text":"Hello","finish_reason":"stop","usage":{"input_tokens":5,"output_tokens":2,"estimated":false}})),
            ),
        ],
    ));
    verify(&out).unwrap();
    assert_eq!(
        types(&out),
        [
            "RUN_STARTED",
            "REASONING_START",
            "REASONING_MESSAGE_START",
            "REASONING_MESSAGE_CONTENT",
            "REASONING_MESSAGE_CONTENT",
            "REASONING_MESSAGE_END",
            "REASONING_END",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED",
        ]
    );
    let AguiEvent::RunStarted { thread_id, run_id, metadata, .. } = &out[0] else { panic!() };
    assert_eq!((thread_id.as_str(), run_id.as_str()), ("room:c1", "client-run"));
    assert_eq!(metadata.as_ref().unwrap()["chorus"]["run_id"], RUN);
    let AguiEvent::RunFinished { outcome, usage, .. } = out.last().unwrap() else { panic!() };
    assert_eq!(outcome, &Some(RunFinishedOutcome::Success { pending_tool_call_ids: None }));
    let usage = &usage.as_ref().unwrap()[0];
    assert_eq!((usage.input_tokens, usage.output_tokens, usage.total_tokens), (5, 2, 7));
    assert_eq!((usage.provider.as_deref(), usage.model.as_deref()), (Some("demo"), Some("demo")));
    assert!(m.is_ended());
    assert!(m.map(EventType::AgentTextDelta, &data(json!({"message_id":"m1","delta":"x"}))).is_empty());
    assert!(m.fail("internal", "late").is_empty());
}

#[test]
fn a_tool_call_closes_the_text_and_the_answer_goes_on_in_the_same_message() {
    let mut m = mapper();
    let out = feed(
        &mut m,
        &[
            (EventType::AgentStarted, data(json!({}))),
            (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"Let me check. "}))),
            (EventType::ToolExecuting, data(json!({"call_id":"c1","tool":"clock","arguments":{"zone":"UTC"}}))),
            (
                EventType::ToolCompleted,
                data(json!({"call_id":"c1","tool":"clock","result":{"time":"12:00"},"is_error":false})),
            ),
            (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"It is 12:00."}))),
            (EventType::AgentCompleted, data(json!({"message_id":"m1","text":"Let me check. It is 12:00."}))),
        ],
    );
    verify(&out).unwrap();
    assert_eq!(
        types(&out),
        [
            "RUN_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "TOOL_CALL_START",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_END",
            "TOOL_CALL_RESULT",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED",
        ]
    );
    assert_eq!(
        out[4],
        AguiEvent::ToolCallStart {
            tool_call_id: "c1".into(),
            tool_call_name: "clock".into(),
            parent_message_id: Some("m1".into())
        }
    );
    assert_eq!(out[5], AguiEvent::ToolCallArgs { tool_call_id: "c1".into(), delta: r#"{"zone":"UTC"}"#.into() });
    assert_eq!(
        out[7],
        AguiEvent::ToolCallResult {
            message_id: "c1-result".into(),
            tool_call_id: "c1".into(),
            content: r#"{"time":"12:00"}"#.into(),
            role: ToolRole::Tool
        }
    );
}

#[test]
fn a_call_left_without_result_is_pending_for_the_client() {
    let mut m = mapper();
    let out = feed(
        &mut m,
        &[
            (EventType::AgentStarted, data(json!({}))),
            (
                EventType::ToolExecuting,
                data(json!({"call_id":"f1","tool":"change_background","arguments":{"color":"blue"}})),
            ),
            (EventType::AgentCompleted, data(json!({"finish_reason":"tool_calls"}))),
        ],
    );
    verify(&out).unwrap();
    let AguiEvent::RunFinished { outcome, .. } = out.last().unwrap() else { panic!() };
    assert_eq!(outcome, &Some(RunFinishedOutcome::Success { pending_tool_call_ids: Some(vec!["f1".into()]) }));
}

#[test]
fn errors_close_what_is_open_and_cancellation_is_not_a_failure() {
    let mut m = mapper();
    let out = feed(
        &mut m,
        &[
            (EventType::AgentThinking, data(json!({"thought":"hm"}))),
            (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"par"}))),
            (
                EventType::AgentError,
                data(json!({"code":"provider_error","message":"the provider failed","retryable":true})),
            ),
        ],
    );
    verify(&out).unwrap();
    assert_eq!(
        out.last().unwrap(),
        &AguiEvent::RunError {
            message: "the provider failed".into(),
            code: Some("provider_error".into()),
            usage: None
        }
    );
    assert_eq!(types(&out)[..2], ["RUN_STARTED", "REASONING_START"]);

    let mut m = mapper();
    let out = feed(
        &mut m,
        &[
            (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"par"}))),
            (EventType::AgentError, data(json!({"code":"cancelled","message":"the run was cancelled"}))),
        ],
    );
    verify(&out).unwrap();
    let AguiEvent::RunFinished { outcome, .. } = out.last().unwrap() else { panic!() };
    assert_eq!(outcome, &Some(RunFinishedOutcome::Cancelled));

    // The field's older name is understood too.
    let mut m = mapper();
    let out = feed(&mut m, &[(EventType::AgentError, data(json!({"error":"timeout","message":"silent"})))]);
    verify(&out).unwrap();
    assert_eq!(
        out.last().unwrap(),
        &AguiEvent::RunError { message: "silent".into(), code: Some("timeout".into()), usage: None }
    );
}

#[test]
fn an_ending_alone_still_carries_its_text() {
    let mut m = mapper();
    let out = feed(&mut m, &[(EventType::AgentCompleted, data(json!({"message_id":"m7","text":"All done."})))]);
    verify(&out).unwrap();
    assert_eq!(
        types(&out),
        ["RUN_STARTED", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED"]
    );
    assert_eq!(out[2], AguiEvent::TextMessageContent { message_id: "m7".into(), delta: "All done.".into() });

    // Only what the deltas missed is added.
    let mut m = mapper();
    let out = feed(
        &mut m,
        &[
            (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"Hel"}))),
            (EventType::AgentCompleted, data(json!({"message_id":"m1","text":"Hello"}))),
        ],
    );
    verify(&out).unwrap();
    let contents: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            AguiEvent::TextMessageContent { delta, .. } => Some(delta.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(contents, ["Hel", "lo"]);
}

#[test]
fn results_without_calls_duplicates_and_other_runs() {
    let mut m = mapper();
    let other =
        json!({"run_id":"r2","thread_id":"room:c1","agent_id":"a1","seq":1,"message_id":"x","delta":"not mine"});
    let out = feed(
        &mut m,
        &[
            (EventType::AgentTextDelta, other.clone()),
            (EventType::ToolCompleted, data(json!({"call_id":"c9","tool":"calculator","result":"4"}))),
            (EventType::ToolCompleted, data(json!({"call_id":"c9","tool":"calculator","result":"4"}))),
            (EventType::ToolExecuting, data(json!({"call_id":"c9","tool":"calculator","arguments":{}}))),
            (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":""}))),
            (EventType::AgentTextDelta, data(json!({"delta":"no id"}))),
            (EventType::AgentTextDelta, data(json!({"message_id":5}))),
            (EventType::AgentCompleted, other),
            (EventType::AgentCompleted, data(json!({}))),
        ],
    );
    verify(&out).unwrap();
    assert_eq!(
        types(&out),
        [
            "RUN_STARTED",
            "TOOL_CALL_START",
            "TOOL_CALL_END",
            "TOOL_CALL_RESULT",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED",
        ]
    );
    assert_eq!(out[4], AguiEvent::TextMessageStart { message_id: "r1-answer".into(), role: TextRole::Assistant });
}

#[test]
fn a_stream_without_ending_is_failed_by_the_caller() {
    let mut m = mapper();
    let mut out = feed(
        &mut m,
        &[
            (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"abc"}))),
            (EventType::ToolExecuting, data(json!({"call_id":"c1","tool":"clock"}))),
        ],
    );
    out.extend(m.fail("shutdown", "the server shut down"));
    verify(&out).unwrap();
    assert_eq!(
        out.last().unwrap(),
        &AguiEvent::RunError { message: "the server shut down".into(), code: Some("shutdown".into()), usage: None }
    );
    // A refusal before anything ran is a whole stream too.
    let mut m = mapper();
    let out = m.fail("thread_busy", "the agent is busy in this thread");
    verify(&out).unwrap();
    assert_eq!(types(&out), ["RUN_STARTED", "RUN_ERROR"]);
}

/// A small deterministic generator; the protocol crate has no `rand`.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[test]
fn any_mix_of_run_events_gives_a_stream_clients_accept() {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..3_000 {
        let mut m = mapper();
        let mut out = Vec::new();
        if rng.below(2) == 0 {
            out.extend(m.start());
        }
        let len = rng.below(20);
        for _ in 0..len {
            let call = format!("c{}", rng.below(4));
            let msg = format!("m{}", rng.below(3));
            let run = if rng.below(10) == 0 { "other" } else { RUN };
            let (t, mut d) = match rng.below(11) {
                0 => (EventType::AgentStarted, data(json!({"model":"demo"}))),
                1 => (EventType::AgentThinking, data(json!({"thought": if rng.below(4) == 0 { "" } else { "hm" }}))),
                2 | 3 => (EventType::AgentTextDelta, data(json!({"message_id": msg, "delta": "x"}))),
                4 => (EventType::ToolExecuting, data(json!({"call_id": call, "tool":"clock", "arguments": {"a":1}}))),
                5 => (EventType::ToolCompleted, data(json!({"call_id": call, "tool":"clock", "result": "ok"}))),
                6 => (EventType::AgentCompleted, data(json!({"message_id": msg, "text": "xx"}))),
                7 => (
                    EventType::AgentError,
                    data(json!({"code": if rng.below(2) == 0 { "cancelled" } else { "timeout" }, "message":"m"})),
                ),
                8 => (EventType::AgentTextDelta, json!({"garbage": true})),
                9 => (EventType::Publication, data(json!({}))),
                _ => (EventType::AgentCompleted, data(json!({"usage": "not an object"}))),
            };
            d["run_id"] = json!(run);
            out.extend(m.map(t, &d));
        }
        if !m.is_ended() {
            out.extend(m.fail("timeout", "no ending"));
        }
        verify(&out).unwrap_or_else(|e| panic!("{e}: {:#?}", types(&out)));
    }
}
