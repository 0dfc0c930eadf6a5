#!/usr/bin/env bash
# Reproduces the ingest figures in BENCHMARKS.md:
#
#   scripts/bench-ingest.sh [audit-bench ingest options...]
#
# Builds release binaries, starts a throw-away primary (+ replica, so WAL
# shipping costs what it costs in production) with scripts/pg-cluster.sh in
# a temporary folder on ports of its own, creates and migrates a `bench`
# database, runs `audit-bench ingest` (which starts and measures the writer
# itself), and removes everything on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PRIMARY_PORT=${BENCH_PRIMARY_PORT:-57532}
REPLICA_PORT=${BENCH_REPLICA_PORT:-57533}

cargo build --release -p audit-writer -p audit-bench

STATE=$(mktemp -d /tmp/audit-bench-XXXXXX)
chmod 755 "$STATE"
cleanup() {
    scripts/pg-cluster.sh stop "$STATE" >/dev/null 2>&1 || true
    rm -rf -- "$STATE"
}
trap cleanup EXIT

scripts/pg-cluster.sh start "$STATE" "$PRIMARY_PORT" "$REPLICA_PORT" >/dev/null
URL=postgres://postgres@127.0.0.1:$PRIMARY_PORT/bench
psql -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres -c 'CREATE DATABASE bench'
AUDIT_DATABASE_URL=$URL RUST_LOG=warn target/release/audit-writer migrate

target/release/audit-bench ingest --database-url "$URL" --writer-bin target/release/audit-writer "$@"
