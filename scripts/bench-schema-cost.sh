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
# difference to `full` is what the feature costs. Variants named `+…` put
# back what a migration took out (what that change bought); `time-ordered
# client ids` runs the same transaction with UUIDv7-shaped ids.
#
# Environment: BENCH_PRIMARY_PORT / BENCH_REPLICA_PORT (17732 / 17733),
# PG_BIN, BENCH_SKIP_BUILD=1, BENCH_SEED_LIMIT (path of pg_seed_limit.sh),
# BENCH_ONLY (a bash regex: only the variants whose name matches),
# BENCH_ROUNDS (default 1: the variants again, interleaved, so that two of
# them are compared over the same stretch of the machine's mood).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECS=${1:-15}
ROUNDS=${BENCH_ROUNDS:-1}
ONLY=${BENCH_ONLY:-}
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
# With time-ordered (UUIDv7-shaped) signal and event ids, as a client that
# mints its ids from the clock sends them: the primary keys of `signals` and
# of the claims grow at their right edge instead of at random pages.
V7="(lpad(to_hex((extract(epoch FROM clock_timestamp()) * 1000)::bigint), 12, '0') || '7' || substr(md5(random()::text), 1, 19))::uuid"
sed -e "s/SELECT gen_random_uuid(), 'TICK'/SELECT $V7, 'TICK'/" \
    -e "s/SELECT gen_random_uuid(), signal_id, now() FROM s/SELECT $V7, signal_id, now() FROM s/" "$TX" >"$STATE/tx-v7.sql"
chmod 644 "$TX" "$STATE/tx-noclaims.sql" "$STATE/tx-v7.sql"

# Each variant: name|SQL run after the migrations (may be empty)|transaction file.
# One line each: a variant is one line of `variants`.
SIGNAL_EXTRA_INDEXES="DROP INDEX signals_normalised_ticker_created_idx, signals_status_updated_idx, signals_processing_time_idx, signals_errors_idx, signals_tags_idx;"
EVENT_EXTRA_INDEXES="DROP INDEX signal_events_errors_idx, signal_events_type_ts_idx, signal_events_recorded_idx, signal_events_xact_idx;"
SEARCH="DROP INDEX signal_events_search_idx; ALTER TABLE signal_events DROP COLUMN search;"
TRIGGER="DROP TRIGGER signal_events_mark_rollups ON signal_events;"
XACT="ALTER TABLE signal_events ALTER COLUMN xact_id DROP DEFAULT;"
# Dropped by the migration 2026-12-08-000100: this variant puts them back.
PREFIX_INDEXES="CREATE INDEX signals_normalised_ticker_idx ON signals (normalised_ticker); CREATE INDEX signals_current_status_idx ON signals (current_status);"
# Dropped by the migration 2026-12-08-000200: this variant puts it back.
CLAIMS_FK="ALTER TABLE signal_event_ids ADD CONSTRAINT signal_event_ids_signal_id_fkey FOREIGN KEY (signal_id) REFERENCES signals (signal_id) ON DELETE CASCADE;"
variants=(
    "full||$TX"
    "+prefix-duplicate signal indexes|$PREFIX_INDEXES|$TX"
    "+claims foreign key|$CLAIMS_FK|$TX"
    "time-ordered client ids||$STATE/tx-v7.sql"
    "-dirty-key trigger|$TRIGGER|$TX"
    "-search column+GIN|$SEARCH|$TX"
    "-keyset/partial signal indexes|$SIGNAL_EXTRA_INDEXES|$TX"
    "-extra event indexes|$EVENT_EXTRA_INDEXES|$TX"
    "-xact_id default|$XACT|$TX"
    "-id claims||$STATE/tx-noclaims.sql"
    "-all of the above|$TRIGGER $SEARCH $SIGNAL_EXTRA_INDEXES $EVENT_EXTRA_INDEXES $XACT|$STATE/tx-noclaims.sql"
    # The first variant after the seed run tends to come out low: the
    # control at the end tells drift from cost.
    "full, again||$TX"
)

printf '%-32s %12s %8s\n' variant signals/s "of seed"
[[ $seed -eq 0 ]] || printf '%-32s %12s %8s\n' "seed schema (pg_seed_limit.sh)" "$seed" "100%"
# One variant: a fresh migrated database, the feature SQL, a checkpoint,
# pgbench; prints signals/s and the share of the seed limit.
n=0
run_variant() {
    local name=$1 sql=$2 tx=$3 db tps rate share
    n=$((n + 1))
    db=schema_cost_$n
    bench_database "$PRIMARY_PORT" "$db" target/release/audit-writer
    [[ -z $sql ]] || psql -d "$db" -c "$sql"
    psql -d "$db" -c CHECKPOINT
    tps=$("$PG_BIN/pgbench" -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -n -c 8 -j 2 -T "$SECS" -f "$tx" "$db" |
        sed -n 's/^tps = \([0-9.]*\).*/\1/p')
    rate=$(awk -v t="$tps" 'BEGIN { printf "%d", t * 200 }')
    share=$([[ $seed -eq 0 ]] && echo - || awk -v r="$rate" -v s="$seed" 'BEGIN { printf "%.0f%%", 100 * r / s }')
    printf '%-32s %12s %8s\n' "$name" "$rate" "$share"
    psql -d postgres -c "DROP DATABASE $db"
}

for ((round = 1; round <= ROUNDS; round++)); do
    [[ $ROUNDS -eq 1 ]] || echo "round $round of $ROUNDS"
    for v in "${variants[@]}"; do
        IFS='|' read -r name sql tx <<<"$v"
        [[ -z $ONLY || $name =~ $ONLY ]] || continue
        run_variant "$name" "$sql" "$tx"
    done
done
