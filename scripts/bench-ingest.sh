#!/usr/bin/env bash
# Reproduces the ingest figures in BENCHMARKS.md:
#
#   scripts/bench-ingest.sh [audit-bench ingest options...]
#   scripts/bench-ingest.sh --signals 5000             # a quick run
#   scripts/bench-ingest.sh --phases unary,unary-half  # some phases only
#
# Builds the release binaries, starts a throw-away primary + streaming
# replica (WAL shipping costs what it costs in production) with
# scripts/pg-cluster.sh in a temporary folder on ports of its own, creates
# and migrates an empty `bench` database, runs `audit-bench ingest` (which
# starts and measures the writer itself), and stops and removes everything
# on exit, also on error or Ctrl-C. Options after the script name go to
# `audit-bench ingest` (see `target/release/audit-bench ingest --help`);
# AUDIT_* variables in the environment reach the writer (for example
# AUDIT_GROUP_COMMIT_MAX_BATCHES=2).
#
# Environment:
#   BENCH_PRIMARY_PORT / BENCH_REPLICA_PORT   cluster ports (17532 / 17533)
#   AUDIT_BENCH_WRITER_LISTEN                 the writer child (127.0.0.1:17051)
#   PG_BIN                                    PostgreSQL 15 binaries
#   BENCH_SKIP_BUILD=1                        use the release binaries already in target/
#   BENCH_RUNS=N                              run the bench N times on the same cluster (default 1)
#   BENCH_SEED_LIMIT=PATH                     PostgreSQL's own ingest limit for the migration plan's
#                                             minimal schema (default ../shared/bench/pg_seed_limit.sh);
#                                             run on this cluster before each run, its rate goes to
#                                             --seed-limit-rate (stream / seed-schema limit); skipped
#                                             when the file is absent or BENCH_SEED_LIMIT=none
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PRIMARY_PORT=${BENCH_PRIMARY_PORT:-17532}
REPLICA_PORT=${BENCH_REPLICA_PORT:-17533}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}

[[ -n ${BENCH_SKIP_BUILD:-} ]] || cargo build --release -p audit-writer -p audit-bench

source scripts/bench-lib.sh
bench_cluster_start audit-bench "$PRIMARY_PORT" "$REPLICA_PORT"
URL=postgres://postgres@127.0.0.1:$PRIMARY_PORT/bench
bench_database "$PRIMARY_PORT" bench target/release/audit-writer

# What the figures depend on, printed with them.
echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "postgres: $("$PG_BIN/psql" -X -At -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d bench -c 'SHOW server_version')," \
    "primary + streaming replica, fsync and synchronous_commit on"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"

SEED_LIMIT=${BENCH_SEED_LIMIT:-$ROOT/../shared/bench/pg_seed_limit.sh}
RUNS=${BENCH_RUNS:-1}
for ((run = 1; run <= RUNS; run++)); do
    [[ $RUNS -eq 1 ]] || echo "run $run of $RUNS, load average: $(cut -d' ' -f1-3 /proc/loadavg)"
    # Same cluster, same replica, a scratch database of its own: the
    # schema's cost is the difference, not the machine's mood.
    seed=()
    rate=$(seed_limit "$SEED_LIMIT" "$PRIMARY_PORT")
    if [[ -n $rate ]]; then
        echo "seed_schema_batched_signals_per_s=$rate (minimal schema, pgbench, this cluster)"
        seed=(--seed-limit-rate "$rate")
    else
        echo "seed-schema limit: not measured ($SEED_LIMIT absent)"
    fi
    target/release/audit-bench ingest --database-url "$URL" --writer-bin target/release/audit-writer "${seed[@]}" "$@"
done
