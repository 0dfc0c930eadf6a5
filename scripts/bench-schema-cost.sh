#!/usr/bin/env bash
# What each part of the project's schema costs at ingest (issue 11, "the
# schema's own cost"), measured the way ../shared/bench/pg_seed_limit.sh
# measures the migration plan's minimal schema: pgbench, 8 clients, one
# transaction = 200 signals with their `received` event, no project code.
#
#   scripts/bench-schema-cost.sh [SECONDS]     # per variant, default 15
#
# Starts a throw-away primary + streaming replica (scripts/pg-cluster.sh, as
# the ingest bench does), runs the seed-schema limit on it, then for each
# variant migrates a fresh database with the project's migrations
# (audit-writer migrate), removes ONE feature (or, last, all of them) and
# runs the project-shaped transaction the writer's Ingest chunk performs:
# the signals, their event-id claims and their events, in one statement.
# Prints signals/s per variant and its share of the seed-schema limit; the
# difference to `full` is what the feature costs.
#
# Environment: BENCH_PRIMARY_PORT / BENCH_REPLICA_PORT (17732 / 17733),
# PG_BIN, BENCH_SKIP_BUILD=1, BENCH_SEED_LIMIT (path of pg_seed_limit.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECS=${1:-15}
PRIMARY_PORT=${BENCH_PRIMARY_PORT:-17732}
REPLICA_PORT=${BENCH_REPLICA_PORT:-17733}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SEED_LIMIT=${BENCH_SEED_LIMIT:-$ROOT/../shared/bench/pg_seed_limit.sh}

[[ -n ${BENCH_SKIP_BUILD:-} ]] || cargo build --release -p audit-writer

source scripts/bench-lib.sh
bench_cluster_start audit-schema "$PRIMARY_PORT" "$REPLICA_PORT"
TX=$STATE/tx.sql
psql() { "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres "$@"; }

echo "machine: $(nproc) cores, $(uname -sr), load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"

seed=$(seed_limit "$SEED_LIMIT" "$PRIMARY_PORT" "$SECS")
seed=${seed:-0}

# The writer's Ingest chunk of new signals, as one statement: signals, the
# id claims of their `received` events, the events (the trigger marks the
# rollup keys). Event ids are random like a client's; `now()` stamps.
SIGNALS="INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal, created_at, updated_at)
  SELECT gen_random_uuid(), 'TICK' || (g % 20), 'TICK' || (g % 20), 'buy', 'open', 123.45,
    '{\"ticker\":\"X\",\"side\":\"buy\",\"price\":123.45,\"strategy\":\"s1\"}', now(), now()
  FROM generate_series(1, 200) g RETURNING signal_id, normalised_ticker"
EVENTS="INSERT INTO signal_events (event_id, signal_id, ts, event_type, location, worker_id, details, normalised_ticker)"
cat >"$TX" <<SQL
BEGIN;
WITH s AS ($SIGNALS),
c AS (
  INSERT INTO signal_event_ids (event_id, signal_id, ts) SELECT gen_random_uuid(), signal_id, now() FROM s
  RETURNING event_id, signal_id, ts)
$EVENTS
  SELECT c.event_id, c.signal_id, c.ts, 'received', 'processing_queue', 'w1', 'signal received', s.normalised_ticker
  FROM c JOIN s USING (signal_id);
COMMIT;
SQL
# Without claims: the same minus the claims insert.
cat >"$STATE/tx-noclaims.sql" <<SQL
BEGIN;
WITH s AS ($SIGNALS)
$EVENTS
  SELECT gen_random_uuid(), signal_id, now(), 'received', 'processing_queue', 'w1', 'signal received', normalised_ticker
  FROM s;
COMMIT;
SQL
chmod 644 "$TX" "$STATE/tx-noclaims.sql"

# Each variant: name|SQL run after the migrations (may be empty)|transaction file.
# One line each: a variant is one line of `variants`.
SIGNAL_EXTRA_INDEXES="DROP INDEX signals_normalised_ticker_created_idx, signals_status_updated_idx, signals_processing_time_idx, signals_errors_idx, signals_tags_idx;"
EVENT_EXTRA_INDEXES="DROP INDEX signal_events_errors_idx, signal_events_type_ts_idx, signal_events_recorded_idx, signal_events_xact_idx;"
SEARCH="DROP INDEX signal_events_search_idx; ALTER TABLE signal_events DROP COLUMN search;"
TRIGGER="DROP TRIGGER signal_events_mark_rollups ON signal_events;"
XACT="ALTER TABLE signal_events ALTER COLUMN xact_id DROP DEFAULT;"
variants=(
    "full||$TX"
    "-dirty-key trigger|$TRIGGER|$TX"
    "-search column+GIN|$SEARCH|$TX"
    "-keyset/partial signal indexes|$SIGNAL_EXTRA_INDEXES|$TX"
    "-extra event indexes|$EVENT_EXTRA_INDEXES|$TX"
    "-xact_id default|$XACT|$TX"
    "-id claims||$STATE/tx-noclaims.sql"
    "-all of the above|$TRIGGER $SEARCH $SIGNAL_EXTRA_INDEXES $EVENT_EXTRA_INDEXES $XACT|$STATE/tx-noclaims.sql"
)

printf '%-32s %12s %8s\n' variant signals/s "of seed"
[[ $seed -eq 0 ]] || printf '%-32s %12s %8s\n' "seed schema (pg_seed_limit.sh)" "$seed" "100%"
n=0
for v in "${variants[@]}"; do
    IFS='|' read -r name sql tx <<<"$v"
    n=$((n + 1))
    db=schema_cost_$n
    psql -d postgres -c "CREATE DATABASE $db"
    AUDIT_DATABASE_URL=postgres://postgres@127.0.0.1:$PRIMARY_PORT/$db RUST_LOG=warn target/release/audit-writer migrate
    [[ -z $sql ]] || psql -d "$db" -c "$sql"
    psql -d "$db" -c CHECKPOINT
    tps=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -n -c 8 -j 2 -T "$SECS" -f "$tx" "$db" |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    rate=$(awk -v t="$tps" 'BEGIN { printf "%d", t * 200 }')
    share=$([[ $seed -eq 0 ]] && echo - || awk -v r="$rate" -v s="$seed" 'BEGIN { printf "%.0f%%", 100 * r / s }')
    printf '%-32s %12s %8s\n' "$name" "$rate" "$share"
    psql -d postgres -c "DROP DATABASE $db"
done
