//! The official AG-UI client, run through `.test-tools/agui-check.mjs`
//! (Node and `@ag-ui/client`, which `scripts/test.sh` installs).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The harness script: `CHORUS_TEST_AGUI_CHECK` (set by scripts/test.sh),
/// else the one in the workspace's `.test-tools/`, which must have its
/// packages installed.
pub fn harness() -> PathBuf {
    if let Some(path) = std::env::var_os("CHORUS_TEST_AGUI_CHECK") {
        return PathBuf::from(path);
    }
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.test-tools");
    assert!(
        tools.join("node_modules/@ag-ui/client/package.json").exists(),
        "@ag-ui/client is not installed: run scripts/test.sh (it installs .test-tools/ with npm ci \
         and sets CHORUS_TEST_AGUI_CHECK)"
    );
    tools.join("agui-check.mjs")
}

/// Runs the harness with `input` on stdin and returns its JSON report.
/// Blocking: call it from `spawn_blocking` inside async tests.
pub fn run_check(input: &Value) -> Value {
    let mut child = Command::new("node")
        .arg(harness())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs (scripts/test.sh installs it)");
    child.stdin.take().expect("stdin").write_all(&serde_json::to_vec(input).expect("json")).expect("write the input");
    let out = child.wait_with_output().expect("the harness ends");
    assert!(out.status.success(), "the AG-UI harness failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("the harness wrote no report ({e}): {}", String::from_utf8_lossy(&out.stdout)))
}

/// Async form of [`run_check`].
pub async fn check(input: Value) -> Value {
    tokio::task::spawn_blocking(move || run_check(&input)).await.expect("the harness task")
}
