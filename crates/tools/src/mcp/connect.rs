//! Opening one MCP session: spawn the child (stdio) or reach the endpoint
//! (streamable HTTP), run the `initialize` handshake, list the tools.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;
use process_wrap::tokio::{CommandWrap, KillOnDrop, ProcessGroup};
use rmcp::ServiceExt;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::TokioChildProcess;
use rmcp::transport::streamable_http_client::{StreamableHttpClientTransport, StreamableHttpClientTransportConfig};
use tokio::io::AsyncReadExt;
use tokio::process::ChildStderr;

use super::client::McpClient;
use super::{McpServer, RemoteTools};
use crate::config::{McpTransport, header_pair};

pub(crate) type Session = RunningService<RoleClient, McpClient>;

pub(crate) struct Opened {
    pub(crate) session: Session,
    pub(crate) tools: RemoteTools,
    pub(crate) process_id: Option<u32>,
}

/// Longest stderr line kept for logs and error messages.
const STDERR_LINE_MAX: usize = 512;

/// The last line the child wrote to stderr, to explain a failed start.
#[derive(Clone, Default)]
pub(crate) struct LastStderr(Arc<Mutex<String>>);

impl LastStderr {
    fn get(&self) -> String {
        self.0.lock().clone()
    }
}

pub(crate) async fn open(server: &McpServer, client: McpClient, stderr: &LastStderr) -> Result<Opened, String> {
    let (session, process_id) = match server.transport() {
        McpTransport::Stdio => open_stdio(server, client, stderr).await?,
        McpTransport::Http => (open_http(server, client).await?, None),
    };
    let listed = session.peer().list_all_tools().await.map_err(|e| format!("listing tools failed: {e}"))?;
    let tools = server.select_tools(listed);
    Ok(Opened { session, tools, process_id })
}

async fn open_stdio(server: &McpServer, client: McpClient, stderr: &LastStderr) -> Result<(Session, Option<u32>), String> {
    let config = &server.config;
    let program = config.command.as_deref().unwrap_or_default();
    let mut command = tokio::process::Command::new(program);
    command.args(&config.args).env_clear();
    // The child sees only what the operator listed, and PATH to find its own programs.
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    for var in &config.env {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    if let Some(dir) = &config.cwd {
        command.current_dir(dir);
    }
    let mut wrapped = CommandWrap::from(command);
    // Its own process group, so ending it also ends what it started (npx → node).
    wrapped.wrap(ProcessGroup::leader()).wrap(KillOnDrop);
    let (process, child_stderr) = TokioChildProcess::builder(wrapped)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program:?}: {e}"))?;
    let process_id = process.id();
    if let Some(pipe) = child_stderr {
        tokio::spawn(forward_stderr(server.name().to_owned(), pipe, stderr.clone()));
    }
    match client.serve(process).await {
        Ok(session) => Ok((session, process_id)),
        Err(e) => {
            let last = stderr.get();
            let hint = if last.is_empty() { String::new() } else { format!(" (its last stderr line: {last})") };
            Err(format!("the MCP handshake failed: {e}{hint}"))
        }
    }
}

async fn open_http(server: &McpServer, client: McpClient) -> Result<Session, String> {
    let config = &server.config;
    let mut headers = HashMap::new();
    for (name, value) in &config.headers {
        let (n, v) = header_pair(name, value)?;
        headers.insert(n, v);
    }
    for (name, var) in &config.headers_from_env {
        let value =
            std::env::var(var).map_err(|_| format!("environment variable {var} (for header {name}) is not set"))?;
        let (n, v) = header_pair(name, &value)?;
        headers.insert(n, v);
    }
    // reqwest panics when it builds a client with no rustls provider installed.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        return Err("no TLS crypto provider is installed in this process".into());
    }
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    let url = config.url.as_deref().unwrap_or_default();
    let transport = StreamableHttpClientTransport::with_client(
        http,
        StreamableHttpClientTransportConfig::with_uri(url).custom_headers(headers),
    );
    client.serve(transport).await.map_err(|e| format!("the MCP handshake with {url} failed: {e}"))
}

/// Logs the child's stderr line by line (each cut to a bounded length) and
/// keeps the last line.
async fn forward_stderr(server: String, mut pipe: ChildStderr, last: LastStderr) {
    let mut buf = [0u8; 4096];
    let mut line: Vec<u8> = Vec::with_capacity(256);
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&server, &line, &last);
                line.clear();
            } else if line.len() < STDERR_LINE_MAX {
                line.push(b);
            }
        }
    }
    if !line.is_empty() {
        emit(&server, &line, &last);
    }
}

fn emit(server: &str, line: &[u8], last: &LastStderr) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    if text.is_empty() {
        return;
    }
    tracing::debug!(server = %server, line = %text, "MCP server stderr");
    *last.0.lock() = text.to_owned();
}
