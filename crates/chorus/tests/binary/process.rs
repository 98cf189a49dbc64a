//! Runs the `chorus` binary as a child process and reads its JSON logs.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_testkit::WsClient;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const WAIT: Duration = Duration::from_secs(20);

pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_chorus"))
}

/// A running `chorus serve`.
pub struct Served {
    pub child: Child,
    pub addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Served {
    /// Starts `chorus serve --config <config>` in `dir` and waits for its `listening` line.
    pub async fn start(dir: &Path, config: &Path, env: &[(&str, &str)]) -> Served {
        let mut cmd = Command::new(binary());
        cmd.arg("serve").arg("--config").arg(config).current_dir(dir).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn chorus");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [child.stdout.take().map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>), child.stderr.take().map(|s| Box::new(s) as _)].into_iter().flatten() {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    if let Ok(mut l) = lines.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let mut served = Served { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), lines };
        let listening = served.wait_for(|v| v["message"] == "listening").await;
        served.addr = listening["addr"].as_str().expect("addr").parse().expect("socket addr");
        served
    }

    /// Every line logged so far.
    pub fn output(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Every JSON log line logged so far.
    pub fn json_lines(&self) -> Vec<Value> {
        self.output().iter().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }

    /// Waits for a JSON log line matching `pred`.
    pub async fn wait_for(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(v) = self.output().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| pred(v)) {
                return v;
            }
            assert!(Instant::now() < deadline, "no matching log line; output:\n{}", self.output().join("\n"));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("pid") as i32;
        // SAFETY: sending a signal to our own child process.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig})");
    }

    /// Waits for the process to exit; returns its status and how long it took.
    pub async fn exited(&mut self) -> (std::process::ExitStatus, Duration) {
        let started = Instant::now();
        let status = tokio::time::timeout(WAIT, self.child.wait()).await.expect("process did not exit").expect("wait");
        (status, started.elapsed())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// A config file bound to an ephemeral port, with `extra` TOML appended.
pub fn write_config(dir: &Path, extra: &str) -> PathBuf {
    write_config_at(dir, "info", extra)
}

/// Like [`write_config`], with `log.level` set to `level`.
pub fn write_config_at(dir: &Path, level: &str, extra: &str) -> PathBuf {
    let path = dir.join("chorus.toml");
    let text = format!(
        "data_dir = \"{}\"\n\n[server]\nbind = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\nlevel = \"{level}\"\n\n{extra}\n",
        dir.join("data").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Opens a WebSocket with extra request headers; returns the client and the
/// upgrade response's `x-request-id`.
pub async fn ws_connect(url: &str, headers: &[(&str, &str)]) -> Result<(WsClient, String), tokio_tungstenite::tungstenite::Error> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderName;
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(HeaderName::from_bytes(k.as_bytes()).expect("header name"), v.parse().expect("header value"));
    }
    let (ws, res) = tokio_tungstenite::connect_async(req).await?;
    let request_id = res.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    Ok((WsClient::from_inner(ws), request_id))
}

/// The HTTP status of a refused WebSocket upgrade (panics if it was accepted).
pub async fn refused_upgrade(url: &str, headers: &[(&str, &str)]) -> u16 {
    match ws_connect(url, headers).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => res.status().as_u16(),
        Err(e) => panic!("upgrade failed without an HTTP answer: {e}"),
        Ok(_) => panic!("upgrade of {url} with {headers:?} was accepted"),
    }
}

/// `chorus token --user <user> --config <config>` run in `dir`: the token it prints.
pub fn cli_token(dir: &Path, config: &Path, user: &str) -> String {
    let out = std::process::Command::new(binary()).args(["token", "--user", user, "--config"]).arg(config).current_dir(dir).output().expect("run chorus token");
    assert!(out.status.success(), "chorus token failed: {}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).expect("utf-8").trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");
    token
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
