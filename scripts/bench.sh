#!/usr/bin/env bash
# Runs rows of the bar (docs/decisions.md) against a fresh release server on loopback.
#
#   bash scripts/bench.sh fanout-1000x50            one row
#   bash scripts/bench.sh idle-5000 idle-15000      several rows
#   bash scripts/bench.sh all                       every row except soak
#   REPEAT=2 bash scripts/bench.sh agent-streams    each row twice
#   SOAK_DURATION=15m SOAK_BASELINE=5m bash scripts/bench.sh soak
#   bash scripts/bench.sh message-rtt-sqlite message-rtt-postgres
#   bash scripts/bench.sh cluster-fanout            a row on 3 nodes over Redis
#   bash scripts/bench.sh list                      the rows and their commands
#
# Builds the release binaries once, then for every run: starts
# `chorus serve --config bench/chorus-bench.toml` with a fresh temporary data
# directory, waits for /health, runs chorus-bench, stops the server by its PID
# (SIGTERM, then SIGKILL after 20 s) and removes the data directory. Results:
# one JSON line per run in bench/results/results.jsonl (BENCH_RESULTS_DIR),
# the printed result blocks and the server logs in bench/results/logs/.
# Extra chorus-bench arguments: BENCH_ARGS="--threads 1". BENCH_NO_BUILD=1 uses
# the release binaries already built (e.g. while the tree does not compile).
# The machine is shared: before each run the script waits (up to
# BENCH_QUIET_WAIT seconds, default 900) until other work uses less than
# BENCH_QUIET_PCT percent (default 25) of all cores; each result block also
# reports the CPU the rest of the machine used during the measurement.
# Rows ending in -postgres start a real PostgreSQL on loopback with
# scripts/test-services.sh (CHORUS_SERVICES_DIR, default
# /tmp/chorus-bench-services), give every run a fresh database through
# CHORUS_STORE__URL, drop it after the run and stop the services at the end.
# Rows starting with cluster- run on 3 nodes forming one deployment: the same
# services (PostgreSQL and Redis), a fresh database and an emptied Redis per
# run, one shared token secret, and `chorus serve` on ports PORT, PORT+1 and
# PORT+2 with CHORUS_BROKER__KIND=redis; chorus-bench gets every node's URL
# (node 1 first), node 1's PID as the server's and the other nodes', Redis's
# and PostgreSQL's as the rest of the deployment (their CPU is reported apart).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

PORT=${BENCH_PORT:-18181}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
RESULTS_DIR=${BENCH_RESULTS_DIR:-$ROOT/bench/results}
REPEAT=${REPEAT:-1}
# Must match [auth] api_keys in bench/chorus-bench.toml.
API_KEY=chorus-bench-publisher-key-0001

row_args() {
  case "$1" in
    idle-5000)         echo "idle --connections 5000" ;;
    idle-15000)        echo "idle --connections 15000" ;;
    connect-rate)      echo "connect-rate --connections 15000 --procs 2" ;;
    connect-rate-sustained) echo "connect-rate --connections 60000 --procs 2 --drop" ;;
    fanout-1000x50)    echo "fanout --subscribers 1000 --rate 50 --duration 10s --p99-ms 15" ;;
    fanout-5000x10)    echo "fanout --subscribers 5000 --rate 10 --duration 10s --p99-ms 75" ;;
    fanout-1000x100)   echo "fanout --subscribers 1000 --rate 100 --duration 10s --min-deliveries-per-s 95000" ;;
    agent-streams)     echo "agent-streams --users 2000 --rate 40000 --duration 10s --p99-ms 5" ;;
    recovery-storm)    echo "recovery-storm --users 1000 --rate-per-user 10 --before 5s --outage 5s --after 5s" ;;
    sse)               echo "sse --users 1000 --rate-per-user 10 --duration 10s --p99-ms 10 --outage 5s --after 5s" ;;
    churn)             echo "churn --cycles 100000 --concurrency 200" ;;
    churn-fresh)       echo "churn --cycles 100000 --concurrency 200 --fresh-users" ;;
    logins)            echo "logins --logins 1000 --users 10 --concurrency 16" ;;
    soak)              echo "soak --connections 5000 --rate 10000 --duration ${SOAK_DURATION:-1h} --baseline-after ${SOAK_BASELINE:-5m}" ;;
    message-rtt-sqlite)   echo "message-rtt --users 50 --channels 10 --rate-per-user 4 --duration 10s --p99-ms 5" ;;
    message-rtt-postgres) echo "message-rtt --users 50 --channels 10 --rate-per-user 4 --duration 10s --p99-ms 10" ;;
    agent-runs)        echo "agent-runs --runs 1000 --clients-per-run 2 --p99-ms 10 --kib-per-run 64" ;;
    cluster-fanout)    echo "fanout --subscribers 1000 --rate 20 --duration 10s --p99-ms 30" ;;
    cluster-eviction)  echo "eviction --users 200 --limit 3 --p99-ms 100" ;;
    cluster-ceiling)   echo "ceiling --channels 1000 --rates 2000,3000,4000,6000,8000,12000,16000,24000,32000 --step 5s --p99-ms 50" ;;
    *) return 1 ;;
  esac
}
ALL_ROWS=(idle-5000 idle-15000 connect-rate fanout-1000x50 fanout-5000x10 fanout-1000x100 agent-streams recovery-storm sse churn churn-fresh logins message-rtt-sqlite message-rtt-postgres agent-runs cluster-fanout cluster-eviction cluster-ceiling)
ROWS_HELP="idle-5000 idle-15000 connect-rate connect-rate-sustained fanout-1000x50 fanout-5000x10 fanout-1000x100 agent-streams recovery-storm sse churn churn-fresh logins message-rtt-sqlite message-rtt-postgres agent-runs cluster-fanout cluster-eviction cluster-ceiling soak"

if [ $# -eq 0 ]; then
  sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'
  echo "rows: $ROWS_HELP"
  exit 2
fi
rows=()
for a in "$@"; do
  case "$a" in
    all) rows+=("${ALL_ROWS[@]}") ;;
    list)
      for r in $ROWS_HELP; do printf '%-24s chorus-bench %s\n' "$r" "$(row_args "$r")"; done
      exit 0 ;;
    *) row_args "$a" >/dev/null || { echo "unknown row: $a (rows: $ROWS_HELP)" >&2; exit 2; }; rows+=("$a") ;;
  esac
done

if [ "${BENCH_NO_BUILD:-0}" = "1" ]; then
  echo "using the existing release binaries in $TARGET_DIR (BENCH_NO_BUILD=1)" >&2
else
  echo "building release binaries (target dir $TARGET_DIR)" >&2
  CARGO_TARGET_DIR=$TARGET_DIR cargo build --release -q -p chorus -p chorus-bench -p chorus-llm-mock
fi
SERVER_BIN=$TARGET_DIR/release/chorus
BENCH_BIN=$TARGET_DIR/release/chorus-bench
MOCK_BIN=$TARGET_DIR/release/chorus-llm-mock
# The mock provider of the agent-runs row (bench/chorus-bench.toml points the
# `mock` model at this port); the key is any value, the mock ignores it.
MOCK_PORT=18190
export CHORUS_BENCH_MOCK_KEY=bench-mock-key
mkdir -p "$RESULTS_DIR/logs"

# Busy percentage of all cores over one second, from /proc/stat.
machine_busy_pct() {
  local u n s i w q sq st b0 t0 b1 t1
  read -r _ u n s i w q sq st _ </proc/stat
  b0=$((u + n + s + q + sq + st)); t0=$((b0 + i + w))
  sleep 1
  read -r _ u n s i w q sq st _ </proc/stat
  b1=$((u + n + s + q + sq + st)); t1=$((b1 + i + w))
  echo $((100 * (b1 - b0) / (t1 - t0 > 0 ? t1 - t0 : 1)))
}

wait_quiet() {
  local max=${BENCH_QUIET_WAIT:-900} limit=${BENCH_QUIET_PCT:-25} waited=0 busy
  while :; do
    busy=$(machine_busy_pct)
    if [ "$busy" -lt "$limit" ]; then
      echo "machine busy ${busy}% before the run" >&2
      return 0
    fi
    if [ "$waited" -ge "$max" ]; then
      echo "machine still busy ${busy}% after ${waited} s; running anyway (see 'rest of the machine' in the result)" >&2
      return 0
    fi
    [ $((waited % 60)) -eq 0 ] && echo "machine busy ${busy}% (other work); waiting for it to calm down" >&2
    sleep 4
    waited=$((waited + 5))
  done
}

# PostgreSQL (and Redis) for the -postgres and cluster- rows: started on first
# use, stopped at exit.
SERVICES_DIR=${CHORUS_SERVICES_DIR:-/tmp/chorus-bench-services}
PG_ADMIN_URL=""
REDIS_URL=""
PG_DB=""
start_postgres() {
  [ -n "$PG_ADMIN_URL" ] && return 0
  echo "starting PostgreSQL and Redis on loopback (scripts/test-services.sh, $SERVICES_DIR)" >&2
  local env
  env=$(CHORUS_SERVICES_DIR=$SERVICES_DIR bash "$ROOT/scripts/test-services.sh" start)
  PG_ADMIN_URL=$(printf '%s\n' "$env" | sed -n 's/^export CHORUS_TEST_POSTGRES_URL=//p')
  REDIS_URL=$(printf '%s\n' "$env" | sed -n 's/^export CHORUS_TEST_REDIS_URL=//p')
  [ -n "$PG_ADMIN_URL" ] || { echo "test-services.sh printed no CHORUS_TEST_POSTGRES_URL" >&2; return 1; }
}
stop_postgres() {
  if [ -n "$PG_ADMIN_URL" ]; then
    CHORUS_SERVICES_DIR=$SERVICES_DIR bash "$ROOT/scripts/test-services.sh" stop >/dev/null 2>&1 || true
    PG_ADMIN_URL=""
    REDIS_URL=""
  fi
}
# A fresh database for one run: sets PG_DB and PG_URL.
PG_URL=""
create_database() {
  PG_DB=chorus_bench_$(date -u +%Y%m%d%H%M%S)_$$
  psql "$PG_ADMIN_URL" -v ON_ERROR_STOP=1 -qc "CREATE DATABASE $PG_DB" >&2 || return 1
  PG_URL="${PG_ADMIN_URL%/*}/$PG_DB"
}
drop_database() {
  if [ -n "$PG_DB" ] && [ -n "$PG_ADMIN_URL" ]; then
    psql "$PG_ADMIN_URL" -qc "DROP DATABASE IF EXISTS $PG_DB" >/dev/null 2>&1 || true
  fi
  PG_DB=""
}

MOCK_PID=""
start_mock() {
  "$MOCK_BIN" --bind "127.0.0.1:$MOCK_PORT" --chunks 200 --chunks-per-second 20 --stamp >"$1" 2>&1 &
  MOCK_PID=$!
  for _ in $(seq 1 100); do
    grep -q "listening on" "$1" 2>/dev/null && return 0
    kill -0 "$MOCK_PID" 2>/dev/null || { echo "mock provider exited; see $1" >&2; return 1; }
    sleep 0.1
  done
  echo "mock provider not ready within 10 s" >&2
  return 1
}
stop_mock() {
  if [ -n "$MOCK_PID" ]; then
    kill -TERM "$MOCK_PID" 2>/dev/null || true
    wait "$MOCK_PID" 2>/dev/null || true
    MOCK_PID=""
  fi
}

SERVER_PID=""
DATA_DIR=""
stop_server() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 200); do
      kill -0 "$SERVER_PID" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server $SERVER_PID did not stop within 20 s; SIGKILL" >&2
      kill -KILL "$SERVER_PID" 2>/dev/null || true
    fi
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
  if [ -n "$DATA_DIR" ]; then rm -rf "$DATA_DIR"; DATA_DIR=""; fi
  drop_database
}

# The cluster rows: 3 nodes on PORT..PORT+2 sharing the services, a fresh
# database and one token secret (chorus-bench mints with the same one).
NODES=3
NODE_PIDS=()
NODE_DIRS=()
CLUSTER_SECRET=""
stop_cluster() {
  local pid
  for pid in "${NODE_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${NODE_PIDS[@]}"; do
    for _ in $(seq 1 200); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "node $pid did not stop within 20 s; SIGKILL" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  NODE_PIDS=()
  local d
  for d in "${NODE_DIRS[@]}"; do rm -rf "$d"; done
  NODE_DIRS=()
  drop_database
}
trap 'stop_server; stop_cluster; stop_mock; stop_postgres' EXIT INT TERM

# start_cluster LOG_PREFIX: migrates the fresh database once, then starts the
# nodes and waits for each one's /health.
start_cluster() {
  local prefix=$1 i port dir
  [ -n "$REDIS_URL" ] || { echo "no Redis from test-services.sh" >&2; return 1; }
  redis-cli -u "$REDIS_URL" flushall >/dev/null
  CLUSTER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  CHORUS_STORE__URL=$PG_URL "$SERVER_BIN" migrate --config "$ROOT/bench/chorus-bench.toml" >"$prefix.migrate.log" 2>&1 \
    || { echo "migration failed; see $prefix.migrate.log" >&2; return 1; }
  for i in $(seq 1 "$NODES"); do
    port=$((PORT + i - 1))
    dir=$(mktemp -d /tmp/chorus-bench-data.XXXXXX)
    NODE_DIRS+=("$dir")
    CHORUS_NODE_ID=bench-n$i CHORUS_AUTH__HMAC_SECRET=$CLUSTER_SECRET CHORUS_STORE__URL=$PG_URL \
      CHORUS_BROKER__KIND=redis CHORUS_BROKER__REDIS__URL=$REDIS_URL \
      CHORUS_DATA_DIR=$dir CHORUS_SERVER__BIND=127.0.0.1:$port \
      "$SERVER_BIN" serve --config "$ROOT/bench/chorus-bench.toml" >"$prefix.n$i.server.log" 2>&1 &
    NODE_PIDS+=($!)
  done
  for i in $(seq 1 "$NODES"); do
    port=$((PORT + i - 1))
    local ok=0
    for _ in $(seq 1 300); do
      if curl -fsS "http://127.0.0.1:$port/health" >/dev/null 2>&1; then ok=1; break; fi
      kill -0 "${NODE_PIDS[$((i - 1))]}" 2>/dev/null || { echo "node $i exited; see $prefix.n$i.server.log" >&2; tail -20 "$prefix.n$i.server.log" >&2; return 1; }
      sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "node $i not ready within 30 s; see $prefix.n$i.server.log" >&2; return 1; }
  done
}

# start_server LOG [STORE_URL]: with a store URL the server uses it instead of
# the SQLite file in its data directory.
start_server() {
  local log=$1 store_url=${2:-}
  DATA_DIR=$(mktemp -d /tmp/chorus-bench-data.XXXXXX)
  if [ -n "$store_url" ]; then
    CHORUS_STORE__URL=$store_url CHORUS_DATA_DIR=$DATA_DIR CHORUS_SERVER__BIND=127.0.0.1:$PORT \
      "$SERVER_BIN" serve --config "$ROOT/bench/chorus-bench.toml" >"$log" 2>&1 &
  else
    CHORUS_DATA_DIR=$DATA_DIR CHORUS_SERVER__BIND=127.0.0.1:$PORT \
      "$SERVER_BIN" serve --config "$ROOT/bench/chorus-bench.toml" >"$log" 2>&1 &
  fi
  SERVER_PID=$!
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && [ -s "$DATA_DIR/jwt-secret" ]; then
      return 0
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { echo "server exited; see $log" >&2; tail -20 "$log" >&2; return 1; }
    sleep 0.1
  done
  echo "server not ready within 30 s; see $log" >&2
  return 1
}

failed=0
for row in "${rows[@]}"; do
  for n in $(seq 1 "$REPEAT"); do
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    log=$RESULTS_DIR/logs/$row-$stamp.server.log
    out=$RESULTS_DIR/logs/$row-$stamp.out
    case "$row" in
      cluster-*) echo "=== $row (run $n/$REPEAT) — node logs $RESULTS_DIR/logs/$row-$stamp.n*.server.log" >&2 ;;
      *) echo "=== $row (run $n/$REPEAT) — server log $log" >&2 ;;
    esac
    store_url=""
    row_extra=""
    case "$row" in
      *-postgres)
        start_postgres
        row_extra="--db-pid $(cat "$SERVICES_DIR/postgres.pid")" ;;
      cluster-*) start_postgres ;;
    esac
    wait_quiet
    case "$row" in
      *-postgres) create_database; store_url=$PG_URL ;;
      cluster-*) create_database ;;
    esac
    if [[ $row == cluster-* ]]; then
      start_cluster "$RESULTS_DIR/logs/$row-$stamp"
      urls=$(for i in $(seq 1 "$NODES"); do printf 'http://127.0.0.1:%s,' $((PORT + i - 1)); done)
      # shellcheck disable=SC2046 # the row's arguments are split on purpose
      set +e
      CHORUS_BENCH_API_KEY=$API_KEY CHORUS_BENCH_SECRET=$CLUSTER_SECRET "$BENCH_BIN" \
        --url "${urls%,}" --server-pid "${NODE_PIDS[0]}" \
        --deployment-pid "$(IFS=,; echo "${NODE_PIDS[*]:1}"),$(cat "$SERVICES_DIR/redis.pid"),$(cat "$SERVICES_DIR/postgres.pid")" \
        --results "$RESULTS_DIR/results.jsonl" --row "$row" \
        $(row_args "$row") ${BENCH_ARGS:-} 2>&1 | tee "$out"
      rc=${PIPESTATUS[0]}
      set -e
      stop_cluster
      if [ "$rc" -ne 0 ]; then failed=$((failed + 1)); fi
      sleep 2
      continue
    fi
    case "$row" in
      agent-runs) start_mock "$RESULTS_DIR/logs/$row-$stamp.mock.log" ;;
    esac
    start_server "$log" "$store_url"
    # shellcheck disable=SC2046 # the row's arguments are split on purpose
    set +e
    CHORUS_BENCH_API_KEY=$API_KEY "$BENCH_BIN" \
      --url "http://127.0.0.1:$PORT" --data-dir "$DATA_DIR" --server-pid "$SERVER_PID" \
      --results "$RESULTS_DIR/results.jsonl" --row "$row" \
      $(row_args "$row") $row_extra ${BENCH_ARGS:-} 2>&1 | tee "$out"
    rc=${PIPESTATUS[0]}
    set -e
    stop_server
    stop_mock
    if [ "$rc" -ne 0 ]; then failed=$((failed + 1)); fi
    # Let TIME_WAIT sockets and the machine calm down between runs.
    sleep 2
  done
done
echo "done: ${#rows[@]} row(s) × $REPEAT, $failed run(s) not PASS; results in $RESULTS_DIR/results.jsonl" >&2
[ "$failed" -eq 0 ]
