#!/usr/bin/env bash
# Starts (or stops) the real servers the test suite needs, on loopback ports,
# as processes of our own: PostgreSQL and Redis. `start` prints the
# environment the tests read; `stop` ends exactly the processes it started.
#
#   eval "$(scripts/test-services.sh start)"   # exports CHORUS_TEST_* variables
#
# CHORUS_TEST_POSTGRES_URL: the PostgreSQL variants of the store tests;
# CHORUS_TEST_REDIS_URL: the Redis variants of the hub and server tests.
# A test of either engine fails when its variable is missing.
#   scripts/test-services.sh stop
set -euo pipefail

DIR="${CHORUS_SERVICES_DIR:-/tmp/chorus-test-services}"
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# PostgreSQL refuses to run as root; drop to its own user when we are root.
AS_POSTGRES=()
if [ "$(id -u)" = "0" ]; then
  AS_POSTGRES=(setpriv --reuid=postgres --regid=postgres --init-groups)
fi

start() {
  stop >/dev/null 2>&1 || true
  mkdir -p "$DIR"
  chmod 755 "$DIR"

  local pg_port redis_port
  pg_port=$(free_port)
  redis_port=$(free_port)

  # PostgreSQL: a throwaway cluster; fsync off because the data is disposable.
  mkdir -p "$DIR/pg" "$DIR/pgsock"
  [ "$(id -u)" = "0" ] && chown postgres:postgres "$DIR/pg" "$DIR/pgsock"
  "${AS_POSTGRES[@]}" "$PG_BIN/initdb" -D "$DIR/pg/data" -A trust -U postgres >"$DIR/initdb.log" 2>&1
  # Started directly (not through a function) so that $! is the server itself;
  # setpriv execs it, keeping the pid.
  "${AS_POSTGRES[@]}" "$PG_BIN/postgres" -D "$DIR/pg/data" -p "$pg_port" -k "$DIR/pgsock" \
    -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=300 >"$DIR/postgres.log" 2>&1 &
  echo $! >"$DIR/postgres.pid"

  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$DIR" \
    >"$DIR/redis.log" 2>&1 &
  echo $! >"$DIR/redis.pid"

  for _ in $(seq 1 100); do
    if "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$pg_port" -q && redis-cli -p "$redis_port" ping >/dev/null 2>&1; then
      cat >"$DIR/env" <<ENV
export CHORUS_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:$pg_port/postgres
export CHORUS_TEST_REDIS_URL=redis://127.0.0.1:$redis_port
ENV
      cat "$DIR/env"
      return 0
    fi
    sleep 0.1
  done
  echo "test services did not start; see $DIR/*.log" >&2
  # Leave nothing running behind a failed start; the logs stay.
  end_processes
  return 1
}

# Ends exactly the processes `start` recorded, waiting for each to exit.
end_processes() {
  for name in postgres redis; do
    if [ -f "$DIR/$name.pid" ]; then
      pid=$(cat "$DIR/$name.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      rm -f "$DIR/$name.pid"
    fi
  done
}

stop() {
  end_processes
  rm -rf "$DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
