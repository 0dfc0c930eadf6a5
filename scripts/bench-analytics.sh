#!/usr/bin/env bash
# Reproduces the analytics figures in BENCHMARKS.md:
#
#   scripts/bench-analytics.sh [EVENTS] [RUN OPTIONS]   # default 10000000
#   BENCH_RUNS=3 scripts/bench-analytics.sh 10000000 --skip CheckDataQuality
#   BENCH_HOUR_EVENTS=100000 BENCH_SLICES=60   # the maintenance step (below)
#
# RUN OPTIONS go to `audit-analytics-bench run` (see its --help: --only,
# --skip, --iterations ...). BENCH_RUNS (default 1) repeats the measuring run
# on the same generated history, so three runs cost one bulk load.
# BENCH_SKIP_BUILD=1 uses the release binaries already in target/.
#
# Builds release binaries, starts a throw-away primary + streaming replica
# (scripts/pg-cluster.sh) in a temporary folder on ports of its own, creates
# and migrates a `bench` database, generates EVENTS events in bulk inside
# PostgreSQL (audit-analytics-bench bulk: deterministic, not through gRPC),
# refreshes the rollups, waits for the replica, starts audit-reader on the
# replica and runs `audit-analytics-bench run` (every analytics RPC against
# the same question on raw events), then `audit-analytics-bench maintenance`
# on the primary (the writer's periodic jobs for one hour of new traffic on
# top of the EVENTS of history: wall and backend CPU per job, the figure
# that must stay flat as EVENTS grows), then removes everything.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
EVENTS=${1:-10000000}
shift $(( $# > 0 ? 1 : 0 ))
RUNS=${BENCH_RUNS:-1}
PRIMARY_PORT=${BENCH_PRIMARY_PORT:-17632}
REPLICA_PORT=${BENCH_REPLICA_PORT:-17633}
READER=127.0.0.1:${BENCH_READER_PORT:-17652}

[[ -n ${BENCH_SKIP_BUILD:-} ]] || cargo build --release -p audit-writer -p audit-reader -p audit-analytics-bench

STATE=$(mktemp -d /tmp/audit-abench-XXXXXX)
chmod 755 "$STATE"
READER_PID=
cleanup() {
    [[ -z $READER_PID ]] || kill "$READER_PID" 2>/dev/null || true
    scripts/pg-cluster.sh stop "$STATE" >/dev/null 2>&1 || true
    rm -rf -- "$STATE"
}
trap cleanup EXIT

scripts/pg-cluster.sh start "$STATE" "$PRIMARY_PORT" "$REPLICA_PORT" >/dev/null
PRIMARY=postgres://postgres@127.0.0.1:$PRIMARY_PORT/bench
REPLICA=postgres://postgres@127.0.0.1:$REPLICA_PORT/bench
psql -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres -c 'CREATE DATABASE bench'
AUDIT_DATABASE_URL=$PRIMARY RUST_LOG=warn target/release/audit-writer migrate
target/release/audit-analytics-bench bulk --database-url "$PRIMARY" --events "$EVENTS"

# Wait until the replica has everything the primary flushed.
LSN=$(psql -qAt -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d bench -c 'SELECT pg_current_wal_flush_lsn()')
until [[ $(psql -qAt -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres -d bench \
    -c "SELECT pg_last_wal_replay_lsn() >= '$LSN'::pg_lsn") == t ]]; do sleep 1; done

# GetStageLatencies and CheckDataQuality read 24 h of raw events; on 10M
# events that can take longer than the reader's default 10 s statement timeout.
# AUDIT_AUTH=off: the only caller is the bench itself, over loopback.
AUDIT_AUTH=off AUDIT_REPLICA_URL=$REPLICA AUDIT_READER_LISTEN=$READER AUDIT_POOL_MIN=4 AUDIT_POOL_MAX=8 RUST_LOG=warn \
    AUDIT_STATEMENT_TIMEOUT_MS=${BENCH_STATEMENT_TIMEOUT_MS:-600000} \
    target/release/audit-reader serve &
READER_PID=$!
for _ in $(seq 100); do
    grpcurl -plaintext "$READER" grpc.health.v1.Health/Check >/dev/null 2>&1 && break
    kill -0 "$READER_PID" 2>/dev/null || { echo "bench-analytics: audit-reader exited" >&2; exit 1; }
    sleep 0.2
done
for run in $(seq "$RUNS"); do
    echo "== run $run of $RUNS"
    target/release/audit-analytics-bench run --reader "http://$READER" --replica-url "$REPLICA" "$@"
done
# After the reads: it adds an hour of traffic to the primary.
target/release/audit-analytics-bench maintenance --database-url "$PRIMARY" \
    --hour-events "${BENCH_HOUR_EVENTS:-100000}" --slices "${BENCH_SLICES:-60}"
