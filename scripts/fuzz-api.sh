#!/usr/bin/env bash
# Runs the schema-driven fuzzer (schemathesis, pinned, from PyPI) against a
# real server's served OpenAPI document, as a normal signed-in user, for a
# bounded time. Fails on any 5xx, any response that breaks the document, any
# invalid request the server accepts and any valid request it refuses.
#
#   bash scripts/fuzz-api.sh [path/to/chorus]    (default: target/debug/chorus)
#
# The fuzzer is installed once into target/schemathesis-venv (a virtualenv;
# nothing outside the repository's target/ is touched). FUZZ_MAX_TIME bounds
# the fuzzing in seconds (default 100; the whole run is cut 20 s later, so
# at most 120 s with the default). Not fuzzed: the streaming routes (`/ws`,
# `/sse`, the admin firehose: they do not end), and logout (it ends the
# fuzzer's own session).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${1:-$ROOT/target/debug/chorus}
SCHEMATHESIS_VERSION=4.32.5
VENV=$ROOT/target/schemathesis-venv

if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "schemathesis==$SCHEMATHESIS_VERSION"
fi

WORK=$(mktemp -d /tmp/chorus-fuzz.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Limits that a fuzzer's request rate would otherwise hit are raised; every
# rule that decides what a request may do stays as it is.
CHORUS_DATA_DIR=$WORK/data CHORUS_SERVER__BIND=127.0.0.1:$PORT CHORUS_LOG__FORMAT=json CHORUS_LOG__LEVEL=warn \
  CHORUS_RATE_LIMITS__REST_PER_MINUTE=1000000 CHORUS_RATE_LIMITS__REST_BURST=100000 \
  CHORUS_RATE_LIMITS__MESSAGES_PER_MINUTE=1000000 CHORUS_RATE_LIMITS__MESSAGES_BURST=100000 \
  CHORUS_RATE_LIMITS__API_KEY_PUBLISHES_PER_SECOND=100000 CHORUS_RATE_LIMITS__API_KEY_PUBLISH_BURST=100000 \
  CHORUS_CHAT__LOGINS_PER_ADDRESS_PER_MINUTE=100000 CHORUS_CHAT__LOGINS_PER_ACCOUNT_ADDRESS_PER_MINUTE=100000 \
  CHORUS_CHAT__LOGINS_PER_ACCOUNT_PER_HOUR=100000 CHORUS_CHAT__SIGNUPS_PER_ADDRESS_PER_MINUTE=100000 \
  CHORUS_CHAT__REFRESHES_PER_ADDRESS_PER_MINUTE=100000 CHORUS_CHAT__AGENT_CREATES_PER_MINUTE=100000 \
  "$BIN" serve >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
BASE=http://127.0.0.1:$PORT
for _ in $(seq 1 300); do curl -fsS "$BASE/health" >/dev/null 2>&1 && break; sleep 0.1; done

# A normal user, signed in.
curl -fsS "$BASE/api/v1/auth/signup" -H 'content-type: application/json' -d '{"username":"fuzzer","password":"fuzzer-password-1"}' >/dev/null
ACCESS=$(curl -fsS "$BASE/api/v1/auth/login" -H 'content-type: application/json' -d '{"username":"fuzzer","password":"fuzzer-password-1"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')

set +e
FUZZ_MAX_TIME=${FUZZ_MAX_TIME:-100}
AGENTS_MAX_TIME=${AGENTS_MAX_TIME:-20}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection
fuzz() {
  local max_time=$1; shift
  timeout --signal=TERM --kill-after=5 $((max_time + 20)) "$VENV/bin/st" run "$BASE/api/v1/openapi.json" \
    --header "Authorization: Bearer $ACCESS" \
    --exclude-path /ws --exclude-path /sse --exclude-path /api/v1/admin/firehose --exclude-path /api/v1/auth/logout \
    --phases examples,coverage,fuzzing --max-examples 25 --max-time "$max_time" \
    --request-timeout 10 --workers 1 --seed 11 --no-color --suppress-health-check all "$@"
}
fuzz "$FUZZ_MAX_TIME" --checks "$CHECKS,positive_data_acceptance" --exclude-path-regex '^/api/v1/agents'
rc=$?
# An agent's `webhook_url` is allowed only with `kind = "external"`, and a
# PATCH depends on the stored agent's kind: rules the OpenAPI document cannot
# state. Schema-valid bodies that break them get 400 `invalid_field` (tested
# in crates/chorus/tests), so here every check runs but that one.
fuzz "$AGENTS_MAX_TIME" --checks "$CHECKS" --include-path-regex '^/api/v1/agents'
agents_rc=$?
[ "$rc" -ne 0 ] || rc=$agents_rc
set -e
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "the server died during the fuzz run; its log:" >&2
  tail -40 "$WORK/server.log" >&2
  exit 1
fi
exit $rc
