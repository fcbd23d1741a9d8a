#!/usr/bin/env bash
# Runs a command with throwaway test services on loopback, then stops them.
#
#   bash scripts/test-services.sh -- <command...>
#
# Starts, in a fresh temp dir:
#   1. a PostgreSQL cluster (Debian's, /usr/lib/postgresql/*/bin) on a free
#      127.0.0.1 port, run as the `postgres` user (PostgreSQL refuses root),
#      initdb -A trust, unix socket in the temp dir;
#   2. the PGlite server (PostgreSQL compiled to WebAssembly with the real
#      pgvector extension; `npm ci` in tests/pglite when node_modules is missing);
#   3. a redis-server (no persistence).
# Waits (bounded) for each to accept connections, exports
#   SLUICE_TEST_PG_DSN        postgres://postgres@127.0.0.1:PORT/postgres
#   SLUICE_TEST_PG_DATADIR    the cluster's data directory
#   SLUICE_TEST_PG_CTL        the pg_ctl binary (run it as: runuser -u postgres -- ...)
#   SLUICE_TEST_PG_BINDIR     the directory of initdb/pg_ctl/psql
#   SLUICE_TEST_PGVECTOR_DSN  postgres://postgres@127.0.0.1:PORT/postgres (PGlite)
#   SLUICE_TEST_REDIS_URL     redis://127.0.0.1:PORT
#   SLUICE_TEST_SERVICES=1    (service tests FAIL instead of skipping when a DSN is missing)
# runs the command, stops everything (also on failure or Ctrl-C) and exits
# with the command's exit code. A service that cannot start is an error with
# its log printed, never a silent skip.
#
# Restarting the shared cluster from a test (the cluster's settings live in
# postgresql.auto.conf, so no -o options are needed):
#   runuser -u postgres -- "$SLUICE_TEST_PG_CTL" -D "$SLUICE_TEST_PG_DATADIR" -m fast -w stop
#   runuser -u postgres -- "$SLUICE_TEST_PG_CTL" -D "$SLUICE_TEST_PG_DATADIR" -w -l "$SLUICE_TEST_PG_DATADIR/../pg.log" start
# (sluice's own restart test starts a private cluster instead, so that it never
# disturbs other tests running in parallel.)
set -euo pipefail

if [[ "${1:-}" != "--" || $# -lt 2 ]]; then
  echo "usage: bash scripts/test-services.sh -- <command...>" >&2
  exit 2
fi
shift

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="$(mktemp -d /tmp/sluice-services.XXXXXX)"
chmod 755 "$work"

pg_pid_file=""
pglite_pid=""
redis_pid=""
pg_ctl=""
pg_data="$work/pgdata"

as_postgres() {
  if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

cleanup() {
  local rc=$?
  set +e
  if [[ -n "$pg_ctl" && -f "$pg_data/postmaster.pid" ]]; then
    as_postgres "$pg_ctl" -D "$pg_data" -m immediate -w -t 20 stop >/dev/null 2>&1
  fi
  [[ -n "$pglite_pid" ]] && kill "$pglite_pid" 2>/dev/null && wait "$pglite_pid" 2>/dev/null
  [[ -n "$redis_pid" ]] && kill "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
  echo "test-services: $1" >&2
  if [[ -n "${2:-}" && -f "$2" ]]; then
    echo "---- $2 (last 40 lines) ----" >&2
    tail -n 40 "$2" >&2
  fi
  exit 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# wait_for <seconds> <description> <log> <command...>: polls the command.
wait_for() {
  local seconds=$1 what=$2 log=$3
  shift 3
  local deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      fail "$what not ready after ${seconds}s" "$log"
    fi
    sleep 0.2
  done
}

# ---- 1. PostgreSQL ----------------------------------------------------------
pg_bin=""
for d in /usr/lib/postgresql/*/bin; do
  [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && pg_bin="$d"
done
[[ -n "$pg_bin" ]] || fail "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (run: make deps)"
id postgres >/dev/null 2>&1 || fail "no 'postgres' system user (is the postgresql package installed?)"
pg_ctl="$pg_bin/pg_ctl"
pg_port=$(free_port)
if [[ $(id -u) -eq 0 ]]; then
  chown postgres: "$work"
fi
as_postgres "$pg_bin/initdb" -D "$pg_data" -A trust -U postgres -E UTF8 --no-sync \
  >"$work/initdb.log" 2>&1 || fail "initdb failed" "$work/initdb.log"
cat >>"$pg_data/postgresql.auto.conf" <<EOF
port = $pg_port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$work'
max_connections = 200
shared_buffers = '128MB'
EOF
as_postgres "$pg_ctl" -D "$pg_data" -l "$work/pg.log" -w -t 30 start >/dev/null 2>&1 ||
  fail "PostgreSQL did not start" "$work/pg.log"
wait_for 30 "PostgreSQL" "$work/pg.log" "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pg_port" -U postgres

# ---- 2. PGlite with pgvector -------------------------------------------------
pglite_dir="$repo_root/tests/pglite"
if [[ ! -d "$pglite_dir/node_modules/@electric-sql/pglite-socket" ]]; then
  (cd "$pglite_dir" && npm ci --no-audit --no-fund >"$work/npm.log" 2>&1) ||
    fail "npm ci in tests/pglite failed" "$work/npm.log"
fi
pglite_port=$(free_port)
(cd "$pglite_dir" && exec node node_modules/@electric-sql/pglite-socket/dist/scripts/server.js \
  --port="$pglite_port" --host=127.0.0.1 --max-connections=32 \
  --extensions=@electric-sql/pglite-pgvector:vector) \
  >"$work/pglite.log" 2>&1 &
pglite_pid=$!
# pg_isready opens and drops a connection, which PGlite handles; a real query
# would also be fine but keeps its single backend busy.
wait_for 60 "PGlite server" "$work/pglite.log" "$pg_bin/pg_isready" -h 127.0.0.1 -p "$pglite_port" -U postgres
kill -0 "$pglite_pid" 2>/dev/null || fail "PGlite server exited" "$work/pglite.log"

# ---- 3. Redis ------------------------------------------------------------------
command -v redis-server >/dev/null || fail "redis-server not found (run: make deps)"
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize no \
  --dir "$work" >"$work/redis.log" 2>&1 &
redis_pid=$!
wait_for 20 "redis-server" "$work/redis.log" redis-cli -h 127.0.0.1 -p "$redis_port" ping

export SLUICE_TEST_PG_DSN="postgres://postgres@127.0.0.1:$pg_port/postgres"
export SLUICE_TEST_PG_DATADIR="$pg_data"
export SLUICE_TEST_PG_CTL="$pg_ctl"
export SLUICE_TEST_PG_BINDIR="$pg_bin"
export SLUICE_TEST_PGVECTOR_DSN="postgres://postgres@127.0.0.1:$pglite_port/postgres"
export SLUICE_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
export SLUICE_TEST_SERVICES=1
echo "test-services: PostgreSQL $SLUICE_TEST_PG_DSN, PGlite+pgvector $SLUICE_TEST_PGVECTOR_DSN, Redis $SLUICE_TEST_REDIS_URL" >&2

set +e
"$@"
rc=$?
set -e
exit "$rc"
