//! Tool calls against server-everything, the same tests over stdio and
//! streamable HTTP.

use std::time::{Duration, Instant};

use chorus_tools::{McpState, Outcome};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::common::{Kind, Setup, WAIT};

macro_rules! over_both_transports {
    ($($test:ident),* $(,)?) => {
        mod stdio {
            $(#[tokio::test] async fn $test() { super::$test(super::Kind::Stdio).await })*
        }
        mod http {
            $(#[tokio::test] async fn $test() { super::$test(super::Kind::Http).await })*
        }
    };
}

over_both_transports!(
    lists_allowed_tools_and_calls_them,
    progress_resets_the_idle_timeout,
    silence_times_out_and_the_server_is_told,
    the_cap_ends_a_call_that_keeps_reporting_progress,
    cancel_mid_call_reaches_the_server,
);

async fn lists_allowed_tools_and_calls_them(kind: Kind) {
    let h = Setup::new(kind).start().await;
    let status = &h.registry.mcp_servers()[0];
    assert_eq!(status.state, McpState::Connected);
    assert_eq!(status.tools, ["echo", "get-sum", "gzip-file-as-resource", "trigger-long-running-operation"]);
    assert!(status.missing_tools.is_empty());
    assert_eq!(status.transport, if kind == Kind::Stdio { "stdio" } else { "http" });
    assert_eq!(h.registry.mcp_connected(), (1, 1));

    // `get-env` is served but not allowed: no agent can get it.
    assert!(h.registry.check(["everything.get-env"]).is_err());
    let set = h.registry.toolset(&["everything.echo", "everything.get-sum", "everything.get-env", "calculator"]);
    let names: Vec<&str> = set.specs().iter().map(|s| s.model_name.as_str()).collect();
    assert_eq!(names, ["everything__echo", "everything__get-sum", "calculator"]);
    let sum = set.spec("everything.get-sum").unwrap();
    assert_eq!(sum.description, "Returns the sum of two numbers");
    assert_eq!(sum.parameters["required"], json!(["a", "b"]));

    let cancel = CancellationToken::new();
    let r = set.call("everything__echo", json!({"message": "hello"}), &cancel).await;
    assert_eq!((r.outcome, r.text().into_owned()), (Outcome::Ok, "Echo: hello".to_owned()));
    let r = set.call("everything.get-sum", json!({"a": 2, "b": 3.5}), &cancel).await;
    assert_eq!(r.text(), "The sum of 2 and 3.5 is 5.5.");

    // Checked against the server's schema before anything is sent.
    let r = set.call("everything.get-sum", json!({"a": "2", "b": 1}), &cancel).await;
    assert_eq!(r.outcome, Outcome::InvalidArguments, "{}", r.text());
    assert!(r.text().contains("/a: \"2\" is not of type \"number\""), "{}", r.text());
    assert_eq!(h.traffic.count("\"name\":\"get-sum\""), 1);

    // A tool that fails reports it as a result, and the session goes on.
    let gzip = h.registry.toolset(&["everything.gzip-file-as-resource"]);
    let r = gzip.call("everything.gzip-file-as-resource", json!({"data": "ftp://example.invalid/x"}), &cancel).await;
    assert_eq!(r.outcome, Outcome::ToolError);
    assert!(r.text().contains("Unsupported URL protocol"), "{}", r.text());

    // Calls share the session concurrently.
    let calls = (0..8).map(|i| {
        let set = set.clone();
        let cancel = cancel.clone();
        async move { set.call("everything.echo", json!({"message": format!("m{i}")}), &cancel).await }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.iter().enumerate() {
        assert_eq!(r.text(), format!("Echo: m{i}"));
    }
    assert_eq!(h.metrics.calls("everything.echo", Outcome::Ok), 9);
    assert_eq!(h.metrics.calls("everything.get-sum", Outcome::InvalidArguments), 1);
    assert_eq!(h.metrics.calls("everything.gzip-file-as-resource", Outcome::ToolError), 1);
    h.registry.shutdown().await;
}

async fn progress_resets_the_idle_timeout(kind: Kind) {
    let h = Setup { call_timeout: Duration::from_secs(1), ..Setup::new(kind) }.start().await;
    let set = h.registry.toolset(&["everything.trigger-long-running-operation"]);
    let cancel = CancellationToken::new();
    // 2.4 s of work with progress every 0.2 s: twice the idle timeout, never
    // silent for long. Two at once, so each call's progress must reach it.
    let args = json!({"duration": 2.4, "steps": 12});
    let started = Instant::now();
    let (a, b) = tokio::join!(
        set.call("everything.trigger-long-running-operation", args.clone(), &cancel),
        set.call("everything.trigger-long-running-operation", args.clone(), &cancel),
    );
    for r in [a, b] {
        assert_eq!(r.outcome, Outcome::Ok, "{}", r.text());
        assert!(r.text().starts_with("Long running operation completed"), "{}", r.text());
    }
    assert!(started.elapsed() > Duration::from_secs(2));
    assert_eq!(h.traffic.count("notifications/cancelled"), 0);
    h.registry.shutdown().await;
}

async fn silence_times_out_and_the_server_is_told(kind: Kind) {
    let h = Setup { call_timeout: Duration::from_millis(500), ..Setup::new(kind) }.start().await;
    let set = h.registry.toolset(&["everything.trigger-long-running-operation", "everything.echo"]);
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let r = set.call("everything.trigger-long-running-operation", json!({"duration": 10, "steps": 1}), &cancel).await;
    assert_eq!(r, chorus_tools::ToolResult::error(Outcome::Timeout, "no result or progress for 0.5 s"));
    // Well before the operation would have ended.
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    assert!(h.traffic.wait_for("\"method\":\"notifications/cancelled\"").await);
    assert!(h.traffic.wait_for("\"reason\":\"request timeout\"").await);
    assert_eq!(h.metrics.calls("everything.trigger-long-running-operation", Outcome::Timeout), 1);
    // The session is fine.
    let r = set.call("everything.echo", json!({"message": "still here"}), &cancel).await;
    assert_eq!(r.text(), "Echo: still here");
    h.registry.shutdown().await;
}

async fn the_cap_ends_a_call_that_keeps_reporting_progress(kind: Kind) {
    let setup = Setup { call_timeout: Duration::from_secs(1), call_max: Duration::from_secs(2), ..Setup::new(kind) };
    let h = setup.start().await;
    let set = h.registry.toolset(&["everything.trigger-long-running-operation"]);
    let started = Instant::now();
    let args = json!({"duration": 12, "steps": 60});
    let r = set.call("everything.trigger-long-running-operation", args, &CancellationToken::new()).await;
    assert_eq!(r, chorus_tools::ToolResult::error(Outcome::Timeout, "no result within 2 s"));
    assert!(started.elapsed() < Duration::from_secs(9), "{:?}", started.elapsed());
    assert!(h.traffic.wait_for("\"reason\":\"maximum total timeout exceeded\"").await);
    h.registry.shutdown().await;
}

async fn cancel_mid_call_reaches_the_server(kind: Kind) {
    let h = Setup::new(kind).start().await;
    let set = h.registry.toolset(&["everything.trigger-long-running-operation"]);
    let cancel = CancellationToken::new();
    let call = tokio::spawn({
        let (set, cancel) = (set.clone(), cancel.clone());
        async move {
            set.call("everything.trigger-long-running-operation", json!({"duration": 20, "steps": 10}), &cancel).await
        }
    });
    assert!(h.traffic.wait_for("\"name\":\"trigger-long-running-operation\"").await);
    let cancelled_at = Instant::now();
    cancel.cancel();
    let r = tokio::time::timeout(WAIT, call).await.unwrap().unwrap();
    assert_eq!(r, chorus_tools::ToolResult::error(Outcome::Cancelled, "the call was cancelled"));
    // Not after the 20 s operation: the cancel ends the wait at once.
    assert!(cancelled_at.elapsed() < Duration::from_secs(5), "{:?}", cancelled_at.elapsed());
    assert!(h.traffic.wait_for("\"reason\":\"cancelled by the caller\"").await);
    assert_eq!(h.metrics.calls("everything.trigger-long-running-operation", Outcome::Cancelled), 1);
    h.registry.shutdown().await;
}
