#!/usr/bin/env bash
# Runs the whole test suite: starts real PostgreSQL and Redis servers on
# loopback ports (installing them with apt first if they are missing and we
# can), runs every Rust test with cargo-nextest, and stops the servers.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if ((${#need[@]})); then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "missing: ${need[*]} (install them, or run as root to let this script use apt-get)" >&2
    exit 1
  fi
fi

eval "$(scripts/test-services.sh start)"
trap 'scripts/test-services.sh stop' EXIT

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --all-targets --no-fail-fast "$@"
else
  cargo test --workspace --all-targets --no-fail-fast "$@"
fi
