//! MCP tools in runs, over stdio and streamable HTTP
//! (`@modelcontextprotocol/server-everything`, installed by scripts/test.sh):
//! a call and its result, a call past its time limit (an error the model
//! reads, and the run goes on), and a run cancelled during a long call.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chorus_llm::ModelConfig;
use chorus_llm_mock::{MockServer, Script, Turn, Wire};
use chorus_testkit::db::TestEngine;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::App;
use crate::harness::*;
use crate::providers::{remote, set_mock_key};

fn everything_js() -> PathBuf {
    if let Some(path) = std::env::var_os("CHORUS_TEST_MCP_EVERYTHING") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.test-tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(local.exists(), "@modelcontextprotocol/server-everything is not installed: run scripts/test.sh");
    local
}

/// server-everything over streamable HTTP on a free loopback port; killed on drop.
struct HttpEverything {
    port: u16,
    _child: tokio::process::Child,
}

impl HttpEverything {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = tokio::process::Command::new("node")
            .arg(everything_js())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let ready = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening on port") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "server-everything did not start");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        HttpEverything { port, _child: child }
    }
}

#[tokio::test]
async fn mcp_tools_in_runs_over_stdio() {
    let server = json!({
        "name": "everything", "transport": "stdio", "command": "node",
        "args": [everything_js().to_string_lossy()],
        "tools": ["echo", "trigger-long-running-operation"], "call_max": "1500ms",
    });
    mcp_runs(server).await;
}

#[tokio::test]
async fn mcp_tools_in_runs_over_streamable_http() {
    let everything = HttpEverything::start().await;
    let server = json!({
        "name": "everything", "transport": "http", "url": format!("http://127.0.0.1:{}/mcp", everything.port),
        "tools": ["echo", "trigger-long-running-operation"], "call_max": "1500ms",
    });
    mcp_runs(server).await;
}

async fn mcp_runs(server: Value) {
    set_mock_key();
    let mock = MockServer::start().await.unwrap();
    let model: ModelConfig = remote("mock", Wire::OpenAi, &mock);
    let app = App::start_with(TestEngine::Sqlite, move |c| {
        relaxed_limits(c);
        c.agents.models = vec![model];
        c.agents.mcp_servers = vec![server];
    })
    .await;
    let alice = app.user("alice").await;
    let room = room(&app, &alice, "mcp").await;
    let tools = json!(["everything.echo", "everything.trigger-long-running-operation"]);
    agent_in(&app, &alice, &room, "Toolsmith", json!({ "model": "mock", "tools": tools })).await;
    let health = app.call("GET", "/health/detailed", None, None).await;
    assert_eq!(health.body["checks"]["agents"]["mcp_servers_connected"], 1, "{:?}", health.body);
    let mut watch = Watch::new(&app, &alice, &room).await;

    // A call and its result.
    mock.push(Script::turn(Turn::new().tool_call("c1", "everything__echo", json!({"message": "hello mcp"}))));
    mock.push(Script::text("The server said hello."));
    say(&app, &alice, &room, "@Toolsmith echo").await;
    watch.until_ended(1).await;
    let (run, events) = watch.runs.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
    assert_well_formed(&run, &events);
    let done = events.iter().find(|e| e["type"] == "tool_completed").expect("tool result");
    assert_eq!((done["data"]["tool"].as_str(), done["data"]["is_error"].as_bool()), (Some("everything.echo"), Some(false)));
    assert!(done["data"]["result"].to_string().contains("hello mcp"), "{done}");
    assert_eq!(watch.terminal(&run)["type"], "agent_completed");

    // Past its time limit: an error result the model reads; the run goes on.
    mock.push(Script::turn(Turn::new().tool_call("c2", "everything__trigger-long-running-operation", json!({"duration": 10, "steps": 10}))));
    mock.push(Script::text("That took too long."));
    say(&app, &alice, &room, "@Toolsmith slow").await;
    watch.until_ended(2).await;
    let run = watch.runs.keys().find(|k| **k != run).unwrap().clone();
    let events = &watch.runs[&run];
    assert_well_formed(&run, events);
    let done = events.iter().find(|e| e["type"] == "tool_completed").expect("tool result");
    assert_eq!(done["data"]["is_error"], true, "{done}");
    assert!(done["data"]["duration_ms"].as_u64().unwrap() < 10_000);
    assert_eq!(watch.terminal(&run)["type"], "agent_completed");
    let second_request = mock.requests().last().unwrap().body.clone();
    assert!(second_request.to_string().contains("\"role\":\"tool\""), "the error went back to the model");

    // Cancelled during a long call: the call is cancelled and the run ends at once.
    mock.push(Script::turn(Turn::new().tool_call("c3", "everything__trigger-long-running-operation", json!({"duration": 10, "steps": 10}))));
    say(&app, &alice, &room, "@Toolsmith slow again").await;
    let executing = watch.until("tool_executing").await;
    let run = executing["data"]["run_id"].as_str().unwrap().to_owned();
    let sent = std::time::Instant::now();
    let r = app.post(&format!("/api/v1/runs/{run}/cancel"), &alice.token, json!({})).await;
    assert_eq!(r.body["status"], "cancelled", "{:?}", r.body);
    let terminal = loop {
        let p = watch.next().await;
        if p["data"]["run_id"] == run.as_str() && is_terminal(&p) {
            break p;
        }
    };
    assert!(sent.elapsed() < Duration::from_millis(500), "cancel took {:?}", sent.elapsed());
    assert_eq!(terminal["data"]["code"], "cancelled");
    assert_well_formed(&run, &watch.runs[&run]);
    app.stop().await;
}
