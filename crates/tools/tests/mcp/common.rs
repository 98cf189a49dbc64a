//! `@modelcontextprotocol/server-everything` over stdio and streamable HTTP,
//! with everything the client sends recorded (a `tee` for stdio, a TCP proxy
//! for HTTP) so tests can see the `notifications/cancelled` on the wire.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use chorus_clock::SystemClock;
use chorus_tools::{McpServerConfig, McpState, McpTransport, ToolDeps, ToolMetrics, ToolRegistry, ToolsConfig};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::Notify;

/// Bound on every wait in these tests.
pub const WAIT: Duration = Duration::from_secs(15);

/// The server's entry point: `CHORUS_TEST_MCP_EVERYTHING` (scripts/test.sh
/// sets it after installing the package), else the package installed under
/// `.test-tools/` in the workspace.
pub fn everything_js() -> PathBuf {
    if let Some(path) = std::env::var_os("CHORUS_TEST_MCP_EVERYTHING") {
        return PathBuf::from(path);
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.test-tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        local.exists(),
        "@modelcontextprotocol/server-everything is not installed: run scripts/test.sh (it installs it \
         into .test-tools/ and sets CHORUS_TEST_MCP_EVERYTHING)"
    );
    local
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Stdio,
    Http,
}

/// What the client sent to the server.
pub enum Traffic {
    /// Appended to by `tee` in the child's pipeline.
    File(PathBuf),
    Proxy(Arc<Recorder>),
}

#[derive(Default)]
pub struct Recorder {
    bytes: Mutex<Vec<u8>>,
    grew: Notify,
}

impl Traffic {
    fn contains(&self, needle: &str) -> bool {
        match self {
            Traffic::File(path) => std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)),
            Traffic::Proxy(r) => String::from_utf8_lossy(&r.bytes.lock()).contains(needle),
        }
    }

    /// Waits (bounded) until the client has sent `needle`.
    pub async fn wait_for(&self, needle: &str) -> bool {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let woke = match self {
                Traffic::File(_) => {
                    if self.contains(needle) {
                        return true;
                    }
                    // `tee` writes a file: look again shortly.
                    tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(20))).await
                }
                Traffic::Proxy(r) => {
                    // Registered before the check, so bytes arriving in between still wake us.
                    let grew = r.grew.notified();
                    tokio::pin!(grew);
                    grew.as_mut().enable();
                    if self.contains(needle) {
                        return true;
                    }
                    tokio::time::timeout_at(deadline, grew).await
                }
            };
            if woke.is_err() {
                return self.contains(needle);
            }
        }
    }

    pub fn count(&self, needle: &str) -> usize {
        match self {
            Traffic::File(path) => std::fs::read_to_string(path).map_or(0, |s| s.matches(needle).count()),
            Traffic::Proxy(r) => String::from_utf8_lossy(&r.bytes.lock()).matches(needle).count(),
        }
    }
}

/// server-everything on a loopback port over streamable HTTP; killed on drop.
pub struct HttpServer {
    pub port: u16,
    child: Child,
}

impl HttpServer {
    pub async fn start(port: u16) -> Self {
        let mut child = Command::new("node")
            .arg(everything_js())
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stderr = child.stderr.take().expect("piped stderr");
        let mut lines = BufReader::new(stderr).lines();
        let ready = tokio::time::timeout(WAIT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening on port") {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(ready, Ok(true), "server-everything did not start listening");
        // Keep draining stderr so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { port, child }
    }

    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A TCP proxy on 127.0.0.1 to `target`, recording what the client sends.
pub async fn recording_proxy(target: u16) -> (u16, Arc<Recorder>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let recorder = Arc::new(Recorder::default());
    let rec = recorder.clone();
    tokio::spawn(async move {
        while let Ok((inbound, _)) = listener.accept().await {
            let rec = rec.clone();
            tokio::spawn(async move {
                let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else { return };
                let (mut from_client, mut to_client) = inbound.into_split();
                let (mut from_server, mut to_server) = outbound.into_split();
                let up = async {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from_client.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        rec.bytes.lock().extend_from_slice(&buf[..n]);
                        rec.grew.notify_waiters();
                        if to_server.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_server.shutdown().await;
                };
                let down = async {
                    let _ = tokio::io::copy(&mut from_server, &mut to_client).await;
                    let _ = to_client.shutdown().await;
                };
                tokio::join!(up, down);
            });
        }
    });
    (port, recorder)
}

pub fn server_config(name: &str, transport: McpTransport, tools: &[&str]) -> McpServerConfig {
    McpServerConfig {
        name: name.into(),
        transport,
        tools: tools.iter().map(|t| (*t).to_owned()).collect(),
        command: None,
        args: vec![],
        env: vec![],
        cwd: None,
        url: None,
        headers: Default::default(),
        headers_from_env: Default::default(),
        call_timeout: None,
        call_max: None,
    }
}

/// The tools most tests allow.
pub const TOOLS: [&str; 4] = ["echo", "get-sum", "trigger-long-running-operation", "gzip-file-as-resource"];

pub struct Harness {
    pub registry: ToolRegistry,
    pub metrics: ToolMetrics,
    pub traffic: Traffic,
    pub http: Option<HttpServer>,
    _dir: tempfile::TempDir,
}

pub struct Setup {
    pub kind: Kind,
    pub call_timeout: Duration,
    pub call_max: Duration,
    pub tools: Vec<&'static str>,
}

impl Setup {
    pub fn new(kind: Kind) -> Self {
        Self { kind, call_timeout: Duration::from_secs(10), call_max: Duration::from_secs(20), tools: TOOLS.to_vec() }
    }

    /// Starts the server (and the recorder) and a registry connected to it.
    pub async fn start(self) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let js = everything_js();
        let (mut server, traffic, http) = match self.kind {
            Kind::Stdio => {
                let log = dir.path().join("sent.jsonl");
                let mut s = server_config("everything", McpTransport::Stdio, &self.tools);
                s.command = Some("sh".into());
                s.args = vec![
                    "-c".into(),
                    r#"tee -a "$0" | exec node "$1" stdio"#.into(),
                    log.display().to_string(),
                    js.display().to_string(),
                ];
                (s, Traffic::File(log), None)
            }
            Kind::Http => {
                let http = HttpServer::start(free_port()).await;
                let (proxy, recorder) = recording_proxy(http.port).await;
                let mut s = server_config("everything", McpTransport::Http, &self.tools);
                s.url = Some(format!("http://127.0.0.1:{proxy}/mcp"));
                (s, Traffic::Proxy(recorder), Some(http))
            }
        };
        server.call_timeout = Some(self.call_timeout);
        server.call_max = Some(self.call_max);
        let config = ToolsConfig { mcp_servers: vec![server], ..fast_config() };
        let (registry, metrics) = start_registry(&config);
        assert!(registry.wait_for_mcp(WAIT).await, "not connected: {:?}", registry.mcp_servers());
        Harness { registry, metrics, traffic, http, _dir: dir }
    }
}

/// Reconnects and pings quickly, so lifecycle tests stay short.
pub fn fast_config() -> ToolsConfig {
    ToolsConfig {
        mcp_ping_interval: Duration::from_millis(300),
        mcp_reconnect_min: Duration::from_millis(100),
        mcp_reconnect_max: Duration::from_millis(400),
        ..ToolsConfig::default()
    }
}

pub fn start_registry(config: &ToolsConfig) -> (ToolRegistry, ToolMetrics) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = ToolMetrics::unregistered();
    let deps = ToolDeps { clock: Arc::new(SystemClock), metrics: metrics.clone(), extra_tools: vec![] };
    (ToolRegistry::start(config, deps).expect("valid config"), metrics)
}

/// Waits until `server`'s status satisfies `test`.
pub async fn wait_status(
    registry: &ToolRegistry,
    server: &str,
    test: impl Fn(&chorus_tools::McpServerStatus) -> bool,
) -> chorus_tools::McpServerStatus {
    let mut rx = registry.mcp_watch(server).expect("configured server");
    let found = tokio::time::timeout(WAIT, rx.wait_for(|s| test(s))).await;
    match found {
        Ok(Ok(status)) => status.clone(),
        _ => panic!("status never matched; last: {:?}", registry.mcp_servers()),
    }
}

pub fn is_connected(s: &chorus_tools::McpServerStatus) -> bool {
    s.state == McpState::Connected
}
