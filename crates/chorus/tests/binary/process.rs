//! Runs the `chorus` binary as a child process and reads its JSON logs.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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
    let path = dir.join("chorus.toml");
    let text = format!("data_dir = \"{}\"\n\n[server]\nbind = \"127.0.0.1:0\"\n\n[log]\nformat = \"json\"\n\n{extra}\n", dir.join("data").display());
    std::fs::write(&path, text).expect("write config");
    path
}

pub fn install_crypto() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
