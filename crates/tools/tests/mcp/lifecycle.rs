//! Connections over time: the child's environment, servers that die and come
//! back, servers that never start, shutdown.

use std::time::Duration;

use chorus_tools::{McpState, McpTransport, Outcome, ToolsConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::common::{
    HttpServer, Kind, Setup, WAIT, everything_js, fast_config, free_port, is_connected, server_config, start_registry,
    wait_status,
};

fn direct_stdio(tools: &[&str]) -> chorus_tools::McpServerConfig {
    let mut s = server_config("everything", McpTransport::Stdio, tools);
    s.command = Some("node".into());
    s.args = vec![everything_js().display().to_string(), "stdio".into()];
    s
}

fn process_alive(pid: u32) -> bool {
    // Signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

#[tokio::test]
async fn a_stdio_child_gets_only_the_allowed_environment() {
    // Cargo sets both for the test process; only one is passed on.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some() && std::env::var_os("CARGO_PKG_NAME").is_some());
    // `get-env` is allowed here, in a test, to read the child's environment.
    let mut server = direct_stdio(&["get-env"]);
    server.env = vec!["CARGO_MANIFEST_DIR".into(), "CHORUS_NOT_SET_ANYWHERE".into()];
    let config = ToolsConfig { mcp_servers: vec![server], ..fast_config() };
    let (registry, _) = start_registry(&config);
    assert!(registry.wait_for_mcp(WAIT).await, "{:?}", registry.mcp_servers());
    let set = registry.toolset(&["everything.get-env"]);
    let r = set.call("everything.get-env", json!({}), &CancellationToken::new()).await;
    assert_eq!(r.outcome, Outcome::Ok, "{}", r.text());
    let env: serde_json::Map<String, Value> = serde_json::from_str(&r.text()).unwrap();
    let mut names: Vec<&str> = env.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["CARGO_MANIFEST_DIR", "PATH"]);
    assert_eq!(env["CARGO_MANIFEST_DIR"], json!(env!("CARGO_MANIFEST_DIR")));
    registry.shutdown().await;
}

#[tokio::test]
async fn a_dead_stdio_server_is_restarted() {
    let config = ToolsConfig { mcp_servers: vec![direct_stdio(&["echo"])], ..fast_config() };
    let (registry, metrics) = start_registry(&config);
    assert!(registry.wait_for_mcp(WAIT).await);
    let first = wait_status(&registry, "everything", is_connected).await;
    let pid = first.process_id.expect("a stdio server has a pid");
    assert_eq!(metrics.mcp_servers_connected(), 1);
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
    let back = wait_status(&registry, "everything", |s| s.connects >= 2 && is_connected(s)).await;
    assert_ne!(back.process_id, Some(pid));
    assert!(back.last_error.is_none());
    let set = registry.toolset(&["everything.echo"]);
    let r = set.call("everything.echo", json!({"message": "again"}), &CancellationToken::new()).await;
    assert_eq!(r.text(), "Echo: again");
    assert_eq!(metrics.mcp_servers_connected(), 1);
    registry.shutdown().await;
}

#[tokio::test]
async fn a_restarted_http_server_is_reconnected() {
    let mut h = Setup::new(Kind::Http).start().await;
    let server = h.http.take().unwrap();
    let port = server.port;
    server.kill().await;
    // The ping finds it gone; calls meanwhile are unavailable, not hung.
    let down = wait_status(&h.registry, "everything", |s| s.state != McpState::Connected).await;
    assert_eq!(down.connects, 1);
    let set = h.registry.toolset(&["everything.echo"]);
    assert!(set.is_empty(), "a disconnected server's tools are not offered");
    let _again = HttpServer::start(port).await;
    wait_status(&h.registry, "everything", |s| s.connects >= 2 && is_connected(s)).await;
    let set = h.registry.toolset(&["everything.echo"]);
    let r = set.call("everything.echo", json!({"message": "back"}), &CancellationToken::new()).await;
    assert_eq!(r.text(), "Echo: back");
    h.registry.shutdown().await;
}

#[tokio::test]
async fn servers_that_cannot_be_reached_are_reported() {
    let mut missing = server_config("missing", McpTransport::Stdio, &["echo"]);
    missing.command = Some("/nonexistent/mcp-server".into());
    let mut closed = server_config("closed", McpTransport::Http, &["echo"]);
    closed.url = Some(format!("http://127.0.0.1:{}/mcp", free_port()));
    let config = ToolsConfig { mcp_servers: vec![missing, closed], ..fast_config() };
    let (registry, _) = start_registry(&config);
    assert!(!registry.wait_for_mcp(WAIT).await);
    assert_eq!(registry.mcp_connected(), (0, 2));
    let statuses = registry.mcp_servers();
    let closed = &statuses[0];
    assert_eq!(closed.name, "closed");
    assert!(closed.failures >= 1);
    assert!(closed.last_error.as_deref().unwrap_or("").contains("handshake"), "{closed:?}");
    let missing = &statuses[1];
    assert_ne!(missing.state, McpState::Connected);
    assert!(missing.last_error.as_deref().unwrap_or("").contains("cannot start"), "{missing:?}");
    assert_eq!(missing.missing_tools, ["echo"]);
    // Still valid names for agent records; just not callable now.
    assert!(registry.check(["missing.echo", "closed.echo"]).is_ok());
    let set = registry.toolset(&["missing.echo", "closed.echo"]);
    assert!(set.is_empty());
    let r = set.call("missing.echo", json!({}), &CancellationToken::new()).await;
    assert_eq!(r.outcome, Outcome::UnknownTool);
    registry.shutdown().await;
    for s in registry.mcp_servers() {
        assert_eq!(s.state, McpState::Stopped);
    }
}

#[tokio::test]
async fn shutdown_ends_the_child() {
    let config = ToolsConfig { mcp_servers: vec![direct_stdio(&["echo"])], ..fast_config() };
    let (registry, metrics) = start_registry(&config);
    assert!(registry.wait_for_mcp(WAIT).await);
    let pid = registry.mcp_servers()[0].process_id.unwrap();
    assert!(process_alive(pid));
    registry.shutdown().await;
    assert_eq!(registry.mcp_servers()[0].state, McpState::Stopped);
    assert_eq!(metrics.mcp_servers_connected(), 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    while process_alive(pid) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!process_alive(pid), "the child outlived the registry");
}
