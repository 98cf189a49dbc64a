#!/usr/bin/env bash
# Follows README.md as a newcomer would: runs its ```sh blocks in order, from
# the repository's root, against a real server, and fails if any command
# fails or the answers are not what the README says they are.
#
#   bash scripts/readme.sh [path/to/chorus]
#
# With a binary (scripts/test.sh passes the debug one it already built), the
# README's `cargo build --release -p chorus` is skipped and
# `./target/release/chorus` means that binary: the commands are the README's,
# only which build runs them differs (a second, release build would double
# the suite's build time). Blocks fenced ```sh with another word than
# "server" (```sh cluster: it needs a Redis and a PostgreSQL) are not run.
#
# The block marked ```sh server is started in the background (it keeps
# running, as in the README's first terminal) and the script waits for
# /health before the next block. Every other block runs in one bash shell, so
# variables carry over as they do for someone pasting them into a second
# terminal. Two things differ from a fresh machine, so that the run does not
# disturb anything else on this one: the data directory is a new temporary one
# (CHORUS_DATA_DIR), and the server listens on a free port (CHORUS_SERVER__BIND;
# the README's 8080 is replaced by it in the commands).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${1:-}
if [ -n "$BIN" ]; then
  BIN=$(realpath "$BIN")
  [ -x "$BIN" ] || { echo "no chorus binary at $BIN" >&2; exit 1; }
fi

WORK=$(mktemp -d /tmp/chorus-readme.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
export CHORUS_DATA_DIR=$WORK/data
export CHORUS_SERVER__BIND=127.0.0.1:$PORT
export CHORUS_LOG__FORMAT=json
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

# The blocks, in order: "server" or "shell", then the block's text.
python3 - "$ROOT/README.md" "$WORK" "$BIN" <<'PY'
import re, sys
text = open(sys.argv[1]).read()
binary = sys.argv[3]
blocks = re.findall(r"^```sh( server)?\n(.*?)^```", text, re.S | re.M)
for i, (server, body) in enumerate(blocks):
    kind = "server" if server else "shell"
    body = body.replace("8080", "PORT_PLACEHOLDER")
    if binary:
        lines = [l for l in body.splitlines(keepends=True) if l.strip() != "cargo build --release -p chorus"]
        body = "".join(lines).replace("./target/release/chorus", binary)
    # A stream read with --max-time ends by timing out (curl's exit 28): that is its success.
    body = "".join(l.rstrip("\n") + " || [ $? -eq 28 ]\n" if "curl" in l and "--max-time" in l and not l.rstrip().endswith("\\") else l for l in body.splitlines(keepends=True))
    open(f"{sys.argv[2]}/{i:02d}.{kind}.sh", "w").write(body)
PY
for f in "$WORK"/*.sh; do sed -i "s/PORT_PLACEHOLDER/$PORT/g" "$f"; done
[ -n "$(ls "$WORK"/*.server.sh 2>/dev/null)" ] || { echo "README.md has no \`\`\`sh server block" >&2; exit 1; }

OUT=$WORK/out.log
: >"$OUT"
shell_script=$WORK/shell.bash
printf 'set -euo pipefail\n' >"$shell_script"
for f in "$WORK"/*.sh; do
  case "$f" in
    *.server.sh)
      # Every line but the last (which keeps running) first, then that one in the background.
      head -n -1 "$f" >"$WORK/server-setup.bash"
      # exec: the PID kept below is the server itself, so the cleanup ends it.
      { printf "exec "; tail -n 1 "$f"; } >"$WORK/server-run.bash"
      echo "=== README server block: setup" >&2
      bash -euo pipefail "$WORK/server-setup.bash"
      echo "=== README server block: $(cat "$WORK/server-run.bash")" >&2
      bash "$WORK/server-run.bash" >"$WORK/server.log" 2>&1 &
      SERVER_PID=$!
      for _ in $(seq 1 300); do
        curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null 2>&1 && break
        kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited; its log:" >&2; tail -30 "$WORK/server.log" >&2; exit 1; }
        sleep 0.1
      done
      curl -fsS "http://127.0.0.1:$PORT/health" >/dev/null || { echo "the server did not come up" >&2; exit 1; }
      ;;
    *)
      { echo "echo '=== block $(basename "$f")' >&2"; cat "$f"; echo; } >>"$shell_script"
      ;;
  esac
done
echo "=== README shell blocks" >&2
bash "$shell_script" >"$OUT" 2>&1 || { echo "a README command failed:" >&2; cat "$OUT" >&2; exit 1; }
cat "$OUT"

# What the README promises the reader sees.
expect() {
  grep -q -- "$1" "$OUT" || { echo "README check failed: no \"$1\" in the output above ($2)" >&2; exit 1; }
}
expect 'event: connected' "the token from chorus token opens a stream"
[ "$(grep -c 'event: connected' "$OUT")" -ge 2 ] || { echo "README check failed: the room stream did not connect" >&2; exit 1; }
expect '"username":"ann"' "sign-up answers the new user"
expect '"text":"hello"' "the message is stored and answered"
expect '"offset":' "the API key publishes into the room"
expect 'event: agent_completed' "the agent answers in the channel"
grep -q 'generated into' "$WORK/server.log" || { echo "README check failed: the server did not log generating its secret" >&2; exit 1; }
for f in "$CHORUS_DATA_DIR"/*; do
  mode=$(stat -c %a "$f")
  [ "$mode" = 600 ] || { echo "README check failed: $f has mode $mode, not 600" >&2; exit 1; }
done
[ "$(stat -c %a "$CHORUS_DATA_DIR")" = 700 ] || { echo "README check failed: the data directory is not 700" >&2; exit 1; }
echo "README.md: every command worked"
