//! What the AG-UI mapper produces, as the SSE frames carry it, fed to the
//! official `@ag-ui/client` (its event verification and schemas): scripted
//! runs and a few hundred random mixes of run events must all pass, and a
//! broken stream must not.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

use chorus_protocol::EventType;
use chorus_protocol::agui::{AguiEvent, AguiMapper, AguiRun};
use serde_json::{Value, json};

fn mapper() -> AguiMapper {
    AguiMapper::new(AguiRun {
        thread_id: "room:c1".into(),
        run_id: "client-run".into(),
        parent_run_id: None,
        chorus_run_id: "r1".into(),
        agent_id: "a1".into(),
    })
}

fn data(extra: Value) -> Value {
    let mut v = json!({"run_id":"r1","thread_id":"room:c1","agent_id":"a1","seq":1});
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    v
}

/// The JSON of each event exactly as its SSE frame carries it.
fn wire(events: &[AguiEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let frame = e.sse_frame(1_700_000_000_000);
            let text = std::str::from_utf8(&frame).unwrap();
            serde_json::from_str(text.strip_prefix("data: ").unwrap().trim_end()).unwrap()
        })
        .collect()
}

fn run(events: &[(EventType, Value)], end: Option<(&str, &str)>) -> Vec<Value> {
    let mut m = mapper();
    let mut out = m.start();
    for (t, d) in events {
        out.extend(m.map(*t, d));
    }
    if let Some((code, message)) = end {
        out.extend(m.fail(code, message));
    }
    wire(&out)
}

struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

#[test]
fn the_official_client_accepts_every_mapped_stream() {
    let mut streams = vec![
        // A plain answer with reasoning and usage.
        run(
            &[
                (EventType::AgentStarted, data(json!({"model":"demo","provider":"demo"}))),
                (EventType::AgentThinking, data(json!({"thought":"Thinking."}))),
                (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"Hello"}))),
                (
                    EventType::AgentCompleted,
                    data(
                        json!({"message_id":"m1","text":"Hello there","usage":{"input_tokens":3,"output_tokens":2,"estimated":false}}),
                    ),
                ),
            ],
            None,
        ),
        // A tool call with its result, text around it.
        run(
            &[
                (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"Checking. "}))),
                (EventType::ToolExecuting, data(json!({"call_id":"c1","tool":"clock","arguments":{"zone":"UTC"}}))),
                (
                    EventType::ToolCompleted,
                    data(json!({"call_id":"c1","tool":"clock","result":"12:00","is_error":false})),
                ),
                (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"It is noon."}))),
                (EventType::AgentCompleted, data(json!({"message_id":"m1","text":"Checking. It is noon."}))),
            ],
            None,
        ),
        // A frontend tool left for the client.
        run(
            &[
                (
                    EventType::ToolExecuting,
                    data(json!({"call_id":"f1","tool":"change_background","arguments":{"color":"blue"}})),
                ),
                (EventType::AgentCompleted, data(json!({"finish_reason":"tool_calls"}))),
            ],
            None,
        ),
        // Errors, a cancellation, a stream cut off by the server.
        run(
            &[
                (EventType::AgentTextDelta, data(json!({"message_id":"m1","delta":"par"}))),
                (EventType::AgentError, data(json!({"code":"provider_error","message":"failed"}))),
            ],
            None,
        ),
        run(
            &[
                (EventType::AgentThinking, data(json!({"thought":"hm"}))),
                (EventType::AgentError, data(json!({"code":"cancelled","message":"stopped"}))),
            ],
            None,
        ),
        run(
            &[(EventType::ToolExecuting, data(json!({"call_id":"c1","tool":"clock"})))],
            Some(("shutdown", "the server shut down")),
        ),
        run(&[], Some(("thread_busy", "busy"))),
    ];
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    for _ in 0..300 {
        let mut events = Vec::new();
        for _ in 0..rng.below(16) {
            let call = format!("c{}", rng.below(3));
            let msg = format!("m{}", rng.below(2));
            events.push(match rng.below(8) {
                0 => (EventType::AgentStarted, data(json!({"model":"demo"}))),
                1 => (EventType::AgentThinking, data(json!({"thought":"hm"}))),
                2 | 3 => (EventType::AgentTextDelta, data(json!({"message_id": msg, "delta":"x"}))),
                4 => (EventType::ToolExecuting, data(json!({"call_id": call, "tool":"clock","arguments":{}}))),
                5 => (EventType::ToolCompleted, data(json!({"call_id": call, "tool":"clock","result":{"ok":true}}))),
                6 => (EventType::AgentCompleted, data(json!({"message_id": msg, "text":"xy"}))),
                _ => (EventType::AgentError, data(json!({"code":"timeout","message":"silent"}))),
            });
        }
        streams.push(run(&events, Some(("timeout", "no ending"))));
    }
    let count = streams.len();
    let report = chorus_testkit::agui::run_check(&json!({"mode":"replay","streams": streams}));
    let results = report["results"].as_array().unwrap();
    assert_eq!(results.len(), count);
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r["ok"], true, "stream {i} refused: {}", r["error"]);
    }
}

#[test]
fn the_harness_fails_on_what_the_client_rejects() {
    let broken = vec![
        // Content without its start.
        vec![
            json!({"type":"RUN_STARTED","threadId":"t","runId":"r"}),
            json!({"type":"TEXT_MESSAGE_CONTENT","messageId":"m","delta":"x"}),
            json!({"type":"RUN_FINISHED","threadId":"t","runId":"r"}),
        ],
        // null in an optional field.
        vec![
            json!({"type":"RUN_STARTED","threadId":"t","runId":"r","parentRunId":null}),
            json!({"type":"RUN_FINISHED","threadId":"t","runId":"r"}),
        ],
        // Finished with a message open.
        vec![
            json!({"type":"RUN_STARTED","threadId":"t","runId":"r"}),
            json!({"type":"TEXT_MESSAGE_START","messageId":"m","role":"assistant"}),
            json!({"type":"RUN_FINISHED","threadId":"t","runId":"r"}),
        ],
        // Something after the ending.
        vec![
            json!({"type":"RUN_STARTED","threadId":"t","runId":"r"}),
            json!({"type":"RUN_ERROR","message":"x"}),
            json!({"type":"TEXT_MESSAGE_START","messageId":"m","role":"assistant"}),
        ],
    ];
    let report = chorus_testkit::agui::run_check(&json!({"mode":"replay","streams": broken}));
    for (i, r) in report["results"].as_array().unwrap().iter().enumerate() {
        assert_eq!(r["ok"], false, "broken stream {i} passed");
    }
}
