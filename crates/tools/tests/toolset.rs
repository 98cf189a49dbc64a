//! The registry and toolsets with the built-ins and injected tools (no MCP):
//! name checks, argument validation, result bounds, metrics, cancellation,
//! panics.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Tests: a failure should stop the test where it happens.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chorus_clock::ManualClock;
use chorus_tools::{
    Outcome, Tool, ToolDeps, ToolMetrics, ToolRegistry, ToolResult, ToolSchema, ToolsConfig, UnknownTool,
};
use prometheus_client::registry::Registry;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

/// A tool for the seams the built-ins do not exercise.
struct Probe {
    name: &'static str,
    schema: ToolSchema,
    behaviour: Behaviour,
}

#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers `size` bytes of text.
    Big(usize),
    Panics,
    /// Waits for the cancel and says so.
    WaitsForCancel,
}

impl Probe {
    fn tool(name: &'static str, behaviour: Behaviour) -> Arc<dyn Tool> {
        let schema = ToolSchema::new(json!({"type": "object", "properties": {"n": {"type": "integer"}}})).unwrap();
        Arc::new(Self { name, schema, behaviour })
    }
}

#[async_trait]
impl Tool for Probe {
    fn name(&self) -> &str {
        self.name
    }
    fn description(&self) -> &str {
        "a probe"
    }
    fn schema(&self) -> &ToolSchema {
        &self.schema
    }
    async fn call(&self, _arguments: Map<String, Value>, cancel: CancellationToken) -> ToolResult {
        match self.behaviour {
            Behaviour::Big(size) => ToolResult::ok("x".repeat(size)),
            Behaviour::Panics => panic!("probe panics"),
            Behaviour::WaitsForCancel => {
                cancel.cancelled().await;
                ToolResult::error(Outcome::Cancelled, "stopped")
            }
        }
    }
}

const START_MS: i64 = 1_768_480_496_789;

fn registry(extra: Vec<Arc<dyn Tool>>, metrics: ToolMetrics) -> ToolRegistry {
    let config = ToolsConfig { tool_result_max_bytes: 1000, ..ToolsConfig::default() };
    let deps = ToolDeps { clock: Arc::new(ManualClock::starting_at(START_MS)), metrics, extra_tools: extra };
    ToolRegistry::start(&config, deps).unwrap()
}

#[tokio::test]
async fn names_are_checked_against_the_configured_tools() {
    let config: ToolsConfig = toml::from_str(
        r#"
        mcp_reconnect_min = "1h"
        mcp_reconnect_max = "1h"
        [[mcp_servers]]
        name = "files"
        transport = "stdio"
        command = "/bin/false"
        tools = ["read", "list"]
        "#,
    )
    .unwrap();
    let deps = ToolDeps {
        clock: Arc::new(ManualClock::starting_at(START_MS)),
        metrics: ToolMetrics::unregistered(),
        extra_tools: vec![],
    };
    let registry = ToolRegistry::start(&config, deps).unwrap();
    assert_eq!(registry.tool_names(), ["calculator", "clock", "files.read", "files.list"]);
    assert!(registry.check(["clock", "files.list"]).is_ok());
    let err = registry.check(["clock", "files.write"]).unwrap_err();
    assert_eq!(
        err,
        UnknownTool {
            name: "files.write".into(),
            known: vec!["calculator".into(), "clock".into(), "files.read".into(), "files.list".into()]
        }
    );
    assert_eq!(
        err.to_string(),
        "\"files.write\" is not a tool this server knows (known: calculator, clock, files.read, files.list)"
    );
    registry.shutdown().await;
}

#[tokio::test]
async fn a_name_used_twice_is_a_config_error() {
    let deps = ToolDeps {
        clock: Arc::new(ManualClock::starting_at(START_MS)),
        metrics: ToolMetrics::unregistered(),
        extra_tools: vec![Probe::tool("clock", Behaviour::Big(1))],
    };
    let err = ToolRegistry::start(&ToolsConfig::default(), deps).err().unwrap();
    assert!(err.message.contains("\"clock\" is used twice"), "{err}");
    let bad = ToolsConfig { tool_call_timeout: Duration::ZERO, ..ToolsConfig::default() };
    let deps =
        ToolDeps { clock: Arc::new(ManualClock::starting_at(0)), metrics: ToolMetrics::unregistered(), extra_tools: vec![] };
    assert_eq!(ToolRegistry::start(&bad, deps).err().unwrap().key, "tool_call_timeout");
}

#[tokio::test]
async fn an_agent_sees_only_its_tools_in_its_order() {
    let registry = registry(vec![Probe::tool("probe", Behaviour::Big(1))], ToolMetrics::unregistered());
    let set = registry.toolset(&["calculator", "nope", "clock", "calculator"]);
    let names: Vec<&str> = set.specs().iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["calculator", "clock"]);
    let calc = set.spec("calculator").unwrap();
    assert_eq!(calc.model_name, "calculator");
    assert_eq!(calc.parameters["required"], json!(["expression"]));
    assert!(calc.description.contains("remainder"));
    let r = set.call("probe", json!({}), &CancellationToken::new()).await;
    assert_eq!(r.outcome, Outcome::UnknownTool);
    assert_eq!(r.text(), "there is no tool named \"probe\"; the tools are: calculator, clock");
    assert!(registry.toolset::<&str>(&[]).is_empty());
}

#[tokio::test]
async fn built_ins_answer_through_the_toolset() {
    let registry = registry(vec![], ToolMetrics::unregistered());
    let set = registry.toolset(&["clock", "calculator"]);
    let cancel = CancellationToken::new();
    let r = set.call("calculator", json!({"expression": "12*(3+4)"}), &cancel).await;
    assert_eq!(r, ToolResult::ok(json!({"expression": "12*(3+4)", "result": 84})));
    let r = set.call("clock", json!({"timezone": "Europe/Paris"}), &cancel).await;
    assert_eq!(r.content["datetime"], "2026-01-15T13:34:56+01:00");
    // No arguments at all is fine for the clock.
    let r = set.call("clock", Value::Null, &cancel).await;
    assert_eq!(r.content["timezone"], "UTC");
    // Some providers send the arguments as a JSON string.
    let r = set.call("calculator", json!("{\"expression\": \"2^10\"}"), &cancel).await;
    assert_eq!(r.content["result"], 1024);
    let r = set.call("calculator", json!({"expression": "1/0"}), &cancel).await;
    assert_eq!(r, ToolResult::error(Outcome::ToolError, "division by zero"));
}

#[tokio::test]
async fn bad_arguments_go_back_to_the_model() {
    let registry = registry(vec![], ToolMetrics::unregistered());
    let set = registry.toolset(&["calculator", "clock"]);
    let cancel = CancellationToken::new();
    let cases = [
        (json!({}), "arguments: \"expression\" is a required property"),
        (json!({"expression": 12}), "/expression: 12 is not of type \"string\""),
        (json!({"expression": "1", "extra": true}), "Additional properties are not allowed ('extra' was unexpected)"),
        (json!([1, 2]), "is not of type \"object\""),
        (json!("{not json"), "the arguments are not valid JSON"),
        (json!({"expression": "1".repeat(1001)}), "/expression: "),
    ];
    for (args, needle) in cases {
        let r = set.call("calculator", args.clone(), &cancel).await;
        assert_eq!(r.outcome, Outcome::InvalidArguments, "{args}");
        assert!(r.text().contains(needle), "{args}: {}", r.text());
    }
    let r = set.call("clock", json!({"timezone": 5}), &cancel).await;
    assert_eq!(r.outcome, Outcome::InvalidArguments);
}

#[tokio::test]
async fn results_are_bounded_with_a_marker() {
    let registry =
        registry(vec![Probe::tool("small", Behaviour::Big(1000)), Probe::tool("big", Behaviour::Big(5000))], ToolMetrics::unregistered());
    let set = registry.toolset(&["small", "big"]);
    let cancel = CancellationToken::new();
    let r = set.call("small", json!({}), &cancel).await;
    assert!(!r.truncated);
    let r = set.call("big", json!({}), &cancel).await;
    assert!(r.truncated);
    assert_eq!(r.outcome, Outcome::Ok);
    assert!(r.text().ends_with("\n[truncated: 1000 of 5000 bytes shown]"), "{}", &r.text()[990..]);
    // Error messages are bounded too.
    let long_name = "n".repeat(5000);
    let r = set.call(&long_name, json!({}), &cancel).await;
    assert!(r.truncated && r.text().len() < 1100);
}

#[tokio::test]
async fn a_panicking_tool_is_an_error_result() {
    let registry = registry(vec![Probe::tool("boom", Behaviour::Panics)], ToolMetrics::unregistered());
    let set = registry.toolset(&["boom"]);
    let r = set.call("boom", json!({}), &CancellationToken::new()).await;
    assert_eq!(r, ToolResult::error(Outcome::ToolError, "the tool failed unexpectedly"));
}

#[tokio::test]
async fn cancellation_reaches_the_tool() {
    let registry = registry(vec![Probe::tool("wait", Behaviour::WaitsForCancel)], ToolMetrics::unregistered());
    let set = registry.toolset(&["wait", "calculator"]);
    let cancel = CancellationToken::new();
    let call = tokio::spawn({
        let (set, cancel) = (set.clone(), cancel.clone());
        async move { set.call("wait", json!({}), &cancel).await }
    });
    cancel.cancel();
    let r = tokio::time::timeout(Duration::from_secs(5), call).await.unwrap().unwrap();
    assert_eq!(r.outcome, Outcome::Cancelled);
    // A call that starts after the cancel does not run.
    let r = set.call("calculator", json!({"expression": "1+1"}), &cancel).await;
    assert_eq!(r, ToolResult::error(Outcome::Cancelled, "the call was cancelled"));
}

#[tokio::test]
async fn calls_are_counted_by_tool_and_outcome() {
    let mut prometheus = Registry::with_prefix("chorus");
    let metrics = ToolMetrics::register(&mut prometheus);
    let registry = registry(vec![], metrics.clone());
    let set = registry.toolset(&["calculator"]);
    let cancel = CancellationToken::new();
    set.call("calculator", json!({"expression": "1+1"}), &cancel).await;
    set.call("calculator", json!({"expression": "1+1"}), &cancel).await;
    set.call("calculator", json!({"expression": "1/0"}), &cancel).await;
    set.call("calculator", json!({}), &cancel).await;
    set.call("made-up-1", json!({}), &cancel).await;
    set.call("made-up-2", json!({}), &cancel).await;
    assert_eq!(metrics.calls("calculator", Outcome::Ok), 2);
    assert_eq!(metrics.calls("calculator", Outcome::ToolError), 1);
    assert_eq!(metrics.calls("calculator", Outcome::InvalidArguments), 1);
    assert_eq!(metrics.calls("unknown", Outcome::UnknownTool), 2);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &prometheus).unwrap();
    assert!(text.contains("chorus_tool_calls_total{tool=\"calculator\",outcome=\"ok\"} 2"), "{text}");
    assert!(text.contains("chorus_tool_call_duration_seconds_count{tool=\"calculator\"} 4"), "{text}");
    assert!(!text.contains("made-up"), "{text}");
    assert!(text.contains("chorus_mcp_servers_connected 0"), "{text}");
}
