#!/usr/bin/env bash
# Soak benchmark (not a test): both services under a steady load for a long
# while, to see whether anything grows.
#
#   scripts/bench-soak.sh                       # 10 minutes, figures for BENCHMARKS.md
#   SOAK_SECS=120 scripts/bench-soak.sh         # a 2-minute check that it works
#   scripts/bench-soak.sh --rate 2000           # options go to `audit-bench soak`
#
# Builds the release binaries, starts a throw-away primary + streaming
# replica (scripts/pg-cluster.sh, in a temporary folder), creates and
# migrates a `soak` database, starts `audit-writer` and `audit-reader`, then
# runs `audit-bench soak`: RecordSignal (and RecordEvent for every other
# signal) paced at half of the writer's measured unary peak, readers doing
# GetSignal with consistency tokens and ListSignals, and StreamEvents tails,
# printing per window the write p50/p99, GetSignal p50/p99 and ListSignals
# p99 (apart), tail events, errors by code,
# each service's RSS and its database connections, then the first and last
# windows side by side. Everything is stopped and removed on exit, also on
# error or Ctrl-C.
#
# Environment:
#   SOAK_SECS / SOAK_WINDOW_SECS     run length and report window (600 / 60)
#   SOAK_PRIMARY_PORT / SOAK_REPLICA_PORT / SOAK_WRITER_PORT / SOAK_READER_PORT
#                                    (17582 / 17583 / 17581 / 17584, below
#                                    the kernel's ephemeral port range)
#   SOAK_STALL_EVERY_SECS / SOAK_STALL_SECS
#                                    every N seconds (0: never, the default)
#                                    hold a SHARE lock on `signals` for S
#                                    seconds (3), blocking every write: the
#                                    same stall over and over, to tell memory
#                                    the allocator keeps after a burst of
#                                    waiting calls (it steps up once) from a
#                                    leak (it grows with every stall)
#   SOAK_KEEP_LOGS=DIR               copy the servers' logs there at the end
#   SOAK_EXPLAIN_MS                  log the plan of statements slower than
#                                    this on the primary (10000)
#   SOAK_EXPLAIN_ANALYZE=on          those plans with actual rows and times
#                                    per node (instruments every statement:
#                                    for finding a cause, not for figures)
#   PG_BIN                           PostgreSQL 15 binaries
#   BENCH_SKIP_BUILD=1               use the release binaries already in target/
#   AUDIT_*                          reach both services as they are
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=lib/wait-listening.sh
source scripts/lib/wait-listening.sh
SECS=${SOAK_SECS:-600}
WINDOW=${SOAK_WINDOW_SECS:-60}
PRIMARY_PORT=${SOAK_PRIMARY_PORT:-17582}
REPLICA_PORT=${SOAK_REPLICA_PORT:-17583}
WRITER_PORT=${SOAK_WRITER_PORT:-17581}
READER_PORT=${SOAK_READER_PORT:-17584}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
TARGET=${CARGO_TARGET_DIR:-target}

[[ -n ${BENCH_SKIP_BUILD:-} ]] || cargo build --release -p audit-writer -p audit-reader -p audit-bench

STATE=$(mktemp -d /tmp/audit-soak-XXXXXX)
chmod 755 "$STATE"
WRITER_PID=
READER_PID=
cleanup() {
    for pid in $WRITER_PID $READER_PID; do kill "$pid" 2>/dev/null || true; done
    for pid in $WRITER_PID $READER_PID; do wait "$pid" 2>/dev/null || true; done
    if [[ -n ${SOAK_KEEP_LOGS:-} ]]; then
        mkdir -p "$SOAK_KEEP_LOGS" && cp "$STATE"/*.log "$SOAK_KEEP_LOGS"/ 2>/dev/null || true
    fi
    scripts/pg-cluster.sh stop "$STATE" >/dev/null 2>&1 || true
    rm -rf -- "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/pg-cluster.sh start "$STATE" "$PRIMARY_PORT" "$REPLICA_PORT" >/dev/null
PRIMARY=postgres://postgres@127.0.0.1:$PRIMARY_PORT/soak
REPLICA=postgres://postgres@127.0.0.1:$REPLICA_PORT/soak
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres -c 'CREATE DATABASE soak'
AUDIT_DATABASE_URL=$PRIMARY RUST_LOG=warn "$TARGET/release/audit-writer" migrate
# What could stall the writes, in the primary's log with its time:
# checkpoints, every autovacuum/autoanalyze, lock waits, statements over 1 s,
# and the plans of those over SOAK_EXPLAIN_MS (auto_explain, contrib; read
# them in primary.log with SOAK_KEEP_LOGS).
"$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres \
    -c 'ALTER SYSTEM SET log_checkpoints = on' -c 'ALTER SYSTEM SET log_autovacuum_min_duration = 0' \
    -c 'ALTER SYSTEM SET log_lock_waits = on' -c 'ALTER SYSTEM SET log_min_duration_statement = 1000' \
    -c "LOAD 'auto_explain'" -c "ALTER SYSTEM SET session_preload_libraries = 'auto_explain'" \
    -c "ALTER SYSTEM SET auto_explain.log_min_duration = '${SOAK_EXPLAIN_MS:-10000}ms'" \
    -c "ALTER SYSTEM SET auto_explain.log_analyze = ${SOAK_EXPLAIN_ANALYZE:-off}" \
    -c 'SELECT pg_reload_conf()' >/dev/null

# AUDIT_AUTH=off: the only callers are the bench itself, over loopback.
# The jobs' debug lines say when each periodic job ended.
RUST_LOG=warn,audit_writer::jobs=debug AUDIT_AUTH=off AUDIT_DATABASE_URL=$PRIMARY AUDIT_WRITER_LISTEN=127.0.0.1:$WRITER_PORT \
    "$TARGET/release/audit-writer" serve >"$STATE/writer.log" 2>&1 &
WRITER_PID=$!
RUST_LOG=warn AUDIT_AUTH=off AUDIT_REPLICA_URL=$REPLICA AUDIT_READER_LISTEN=127.0.0.1:$READER_PORT \
    "$TARGET/release/audit-reader" serve >"$STATE/reader.log" 2>&1 &
READER_PID=$!
# Both listen once their port answers.
wait_listening bench-soak "$STATE" "$WRITER_PORT" "$READER_PORT"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
echo "soak: ${SECS}s, windows of ${WINDOW}s"

STALL_EVERY=${SOAK_STALL_EVERY_SECS:-0}
STALL_SECS=${SOAK_STALL_SECS:-3}
STARTED=$(date +%s)
echo "started: $(date -u -d "@$STARTED" +%FT%TZ) (the writer's log times below are UTC)"
if ((STALL_EVERY > 0)); then
    echo "stalls: every ${STALL_EVERY}s a SHARE lock on signals for ${STALL_SECS}s"
    (
        for ((at = STALL_EVERY; at < SECS; at += STALL_EVERY)); do
            sleep $((STARTED + at - $(date +%s)))
            "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d soak \
                -c 'BEGIN' -c 'LOCK TABLE signals IN SHARE MODE' -c "SELECT pg_sleep($STALL_SECS)" -c 'COMMIT' >/dev/null
            echo "stall at ${at}s: signals locked for ${STALL_SECS}s"
        done
    ) &
fi

"$TARGET/release/audit-bench" soak \
    --writer "127.0.0.1:$WRITER_PORT" --reader "127.0.0.1:$READER_PORT" \
    --writer-pid "$WRITER_PID" --reader-pid "$READER_PID" \
    --database-url "$PRIMARY" --replica-url "$REPLICA" \
    --duration-secs "$SECS" --window-secs "$WINDOW" "$@"

# What ran on the primary and in the writer's jobs, in seconds from the start.
echo "primary log (checkpoints, autovacuum, lock waits, statements over 1 s):"
awk -v t0="$STARTED" '/checkpoint complete|automatic (vacuum|analyze)|still waiting|duration: [0-9]/ {
    cmd = "date -d \"" $1 " " $2 "\" +%s"; cmd | getline t; close(cmd)
    line = $0; sub(/^[^]]*\] /, "", line)
    printf "  %5ds %s\n", t - t0, substr(line, 1, 160) }' "$STATE/primary.log" || true
echo "writer jobs that took over 1 s:"
grep -E 'elapsed_ms=[0-9]{4,}' "$STATE/writer.log" | tail -n 40 | sed 's/^/  /' || true

# Both services must still be alive after the soak.
for pid in $WRITER_PID $READER_PID; do
    kill -0 "$pid" 2>/dev/null || {
        cat "$STATE"/*.log >&2
        echo "bench-soak: a service died during the soak" >&2
        exit 1
    }
done
