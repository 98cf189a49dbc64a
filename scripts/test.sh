#!/usr/bin/env bash
# Runs the whole test suite: clippy over every target with the workspace's
# lints (any warning fails), then starts real PostgreSQL and Redis servers on
# loopback ports (installing them with apt first if they are missing and we
# can), installs the MCP test server from npm into .test-tools/ when it is
# missing, runs every Rust test with cargo-nextest, and stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)
if ((${#need[@]})); then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (install them, or run as root to let this script use apt-get)" >&2
    exit 1
  fi
fi

# Before any server starts: a lint failure needs none of them.
cargo clippy --workspace --all-targets -- -D warnings

# The MCP tests (crates/tools/tests/mcp) run @modelcontextprotocol/server-everything,
# pinned with its dependencies in .test-tools/package-lock.json.
everything=.test-tools/node_modules/@modelcontextprotocol/server-everything/dist/index.js
if [ ! -f "$everything" ]; then
  (cd .test-tools && npm ci --no-audit --no-fund --loglevel=error)
fi
export CHORUS_TEST_MCP_EVERYTHING="$PWD/$everything"

eval "$(scripts/test-services.sh start)"
trap 'scripts/test-services.sh stop' EXIT

# The README followed as written, against a real server (scripts/readme.sh),
# with the debug binary the tests use instead of the README's release build
# (the commands are the README's; a second build would double CI time). Then
# the schema-driven fuzzer against the served OpenAPI document
# (scripts/fuzz-api.sh, at most 120 s). Both run before the Rust tests so that
# the test runner's summary is the last thing printed; a failure of either
# fails the run after the Rust tests.
failed=()
cargo build -q -p chorus --bin chorus
bash scripts/readme.sh target/debug/chorus || failed+=(readme.sh)
bash scripts/fuzz-api.sh target/debug/chorus || failed+=(fuzz-api.sh)

rc=0
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast "$@" || rc=$?
else
  cargo test --workspace --all-targets --no-fail-fast "$@" || rc=$?
fi
if ((${#failed[@]})); then
  echo "failed besides the Rust tests: ${failed[*]}" >&2
  exit 1
fi
exit "$rc"
