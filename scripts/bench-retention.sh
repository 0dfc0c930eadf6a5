#!/usr/bin/env bash
# Reproduces the retention, archive, restore and import figures in
# BENCHMARKS.md:
#
#   scripts/bench-retention.sh                 # 200,000 signals, 1,000,000 events on one day
#   BENCH_SIGNALS=1000000 scripts/bench-retention.sh   # 5,000,000 events
#
# Builds audit-admin (release), starts a throw-away primary + streaming
# replica with scripts/pg-cluster.sh on ports of its own, migrates a `bench`
# database, fills ONE day 95 days ago with BENCH_SIGNALS signals of 5 events
# each (generated in SQL: a signal, its claims and events, as the writer
# stores them), then times, each with `audit-admin`:
#   1. archive --day D                      (read, compress, store, read back, verify)
#   2. retention run --yes                  (detach, archive, verify, claims, drop, signals)
#      while pgbench writes signals (signal + id claim + received event per
#      transaction, the writer's statement shape) at BENCH_WRITE_RATE/s:
#      write latency p50/p99/max before and during the run
#   3. restore --day D                      (verify, partition, one transaction)
#   4. export of the day, import into an empty database (the Ingest write path)
# and removes everything on exit.
#
# Environment:
#   BENCH_SIGNALS (200000), BENCH_WRITE_RATE (400), BENCH_PRIMARY_PORT /
#   BENCH_REPLICA_PORT (17732 / 17733), PG_BIN
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PRIMARY_PORT=${BENCH_PRIMARY_PORT:-17732}
REPLICA_PORT=${BENCH_REPLICA_PORT:-17733}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SIGNALS=${BENCH_SIGNALS:-200000}
RATE=${BENCH_WRITE_RATE:-400}
ADMIN=${CARGO_TARGET_DIR:-target}/release/audit-admin

cargo build --release -p audit-admin

STATE=$(mktemp -d /tmp/audit-bench-retention-XXXXXX)
chmod 755 "$STATE"
cleanup() {
    scripts/pg-cluster.sh stop "$STATE" >/dev/null 2>&1 || true
    rm -rf -- "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

scripts/pg-cluster.sh start "$STATE" "$PRIMARY_PORT" "$REPLICA_PORT" >/dev/null
psql() { "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres "$@"; }
psql -d postgres -c 'CREATE DATABASE bench' -c 'CREATE DATABASE bench_import'
export AUDIT_DATABASE_URL=postgres://postgres@127.0.0.1:$PRIMARY_PORT/bench
"$ADMIN" migrate up >/dev/null
"$ADMIN" --database-url "postgres://postgres@127.0.0.1:$PRIMARY_PORT/bench_import" migrate up >/dev/null

echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
echo "postgres: $(psql -d bench -c 'SHOW server_version'), primary + streaming replica, fsync and synchronous_commit on"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"

DAY=$(date -u -d '-95 days' +%F)
"$ADMIN" partitions ensure --from "$DAY" --ahead-days 7 >/dev/null
EVENTS=$((SIGNALS * 5))
start=$(date +%s.%N)
psql -d bench <<SQL
INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal,
                     current_status, current_location, created_at, updated_at, total_processing_time,
                     error_count, retry_count, tags)
SELECT md5('s' || g)::uuid, 'NASDAQ:T' || (g % 20), 'T' || (g % 20), 'buy', 'open', 100 + (g % 1000) / 100.0,
       jsonb_build_object('raw', 'signal ' || g, 'n', g),
       CASE WHEN g % 17 = 0 THEN 'forwarded_http_error' ELSE 'forwarded_success' END::signal_status, 'completed',
       at, at + interval '600 ms', interval '600 ms', (g % 17 = 0)::int, 0, ARRAY['t' || (g % 4)]
FROM generate_series(1, $SIGNALS) g,
     LATERAL (SELECT '$DAY'::timestamptz + (g - 1) * (interval '86399 s' / $SIGNALS) AS at) t;
INSERT INTO signal_events (event_id, signal_id, ts, event_type, location, worker_id, details, error_info,
                           http_status, response_data)
SELECT md5('e' || g || '/' || k)::uuid, md5('s' || g)::uuid,
       '$DAY'::timestamptz + (g - 1) * (interval '86399 s' / $SIGNALS) + k * interval '150 ms',
       (ARRAY['received', 'processing', 'approved', 'forwarding',
              CASE WHEN g % 17 = 0 THEN 'forwarded_http_error' ELSE 'forwarded_success' END])[k + 1]::signal_status,
       (ARRAY['processing_queue', 'worker_processing', 'approved_queue', 'worker_forwarding', 'completed'])[k + 1]::signal_location,
       CASE WHEN k > 0 THEN 'worker-' || (g % 8) END, CASE WHEN k = 1 THEN 'picked up by worker ' || (g % 8) END,
       CASE WHEN k = 4 AND g % 17 = 0 THEN '{"type": "upstream", "message": "bad gateway"}'::jsonb END,
       CASE WHEN k = 4 THEN CASE WHEN g % 17 = 0 THEN 502 ELSE 200 END END,
       CASE WHEN k = 4 THEN '{"status": "ok", "order": ' || g || '}' END
FROM generate_series(1, $SIGNALS) g, generate_series(0, 4) k;
INSERT INTO signal_event_ids (event_id, signal_id, ts) SELECT event_id, signal_id, ts FROM signal_events;
TRUNCATE rollup_dirty;
VACUUM ANALYZE;
SQL
PART=$(psql -d bench -c "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'signal_events'::regclass AND pg_get_expr(c.relpartbound, c.oid) LIKE '%$DAY%'")
echo "day $DAY: $SIGNALS signals, $EVENTS events in $PART ($(psql -d bench -c "SELECT pg_size_pretty(pg_total_relation_size('$PART'))") with indexes), generated in $(echo "$(date +%s.%N) - $start" | bc | xargs printf '%.0f') s"

timed() { # label, then the command; prints seconds
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >"$STATE/last.out"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
rate() { echo "$1 / $2" | bc | xargs printf "%'.0f"; }

s=$(timed "$ADMIN" archive --day "$DAY" --archive-url "$STATE/archive-a")
echo "archive: $EVENTS events + $SIGNALS signals in $(printf '%.1f' "$s") s = $(rate "$EVENTS" "$s") events/s; archive $(du -sh "$STATE/archive-a" | cut -f1)"

# Writes at a fixed rate: the writer's statement shape, one transaction each.
cat >"$STATE/write.sql" <<'SQL'
WITH s AS (INSERT INTO signals (signal_id, ticker, normalised_ticker, side, action, price, original_signal, created_at, updated_at)
           VALUES (gen_random_uuid(), 'NASDAQ:AAPL', 'AAPL', 'buy', 'open', 101.5, '{"raw": "bench"}', now(), now())
           RETURNING signal_id),
     e AS (SELECT gen_random_uuid() AS event_id, signal_id FROM s),
     c AS (INSERT INTO signal_event_ids SELECT event_id, signal_id, now() FROM e)
INSERT INTO signal_events (event_id, signal_id, ts, event_type, location)
SELECT event_id, signal_id, now(), 'received', 'processing_queue' FROM e;
SQL
pgbench_run() { # seconds, log prefix
    (cd "$STATE" && "$PG_BIN/pgbench" -n -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -c 4 -j 2 -R "$RATE" -T "$1" \
        -f write.sql -l --log-prefix="$2" bench >/dev/null 2>&1)
}
percentiles() { # log files; latency (µs) is column 3
    cat "$@" | awk '{ print $3 }' | sort -n | awk '{ v[NR] = $1 } END {
        printf "%d writes, p50 %.1f ms, p99 %.1f ms, max %.1f ms", NR, v[int(NR * 0.5)] / 1000, v[int(NR * 0.99)] / 1000, v[NR] / 1000 }'
}
pgbench_run 20 quiet
echo "writes at $RATE/s, quiet: $(percentiles "$STATE"/quiet*)"

pgbench_run 120 during &
WRITER=$!
sleep 5
s=$(timed "$ADMIN" retention run --yes --archive-url "$STATE/archive-b")
kill "$WRITER" 2>/dev/null || true
wait "$WRITER" 2>/dev/null || true
echo "retention run (detach, archive, verify, claims, drop, signals): $(printf '%.1f' "$s") s = $(rate "$EVENTS" "$s") events/s"
grep -E 'events|detach' "$STATE/last.out" | head -2 | sed 's/^/  /'
echo "writes at $RATE/s, while retention ran (and 5 s before): $(percentiles "$STATE"/during*)"

s=$(timed "$ADMIN" restore --day "$DAY" --archive-url "$STATE/archive-b")
echo "restore: $EVENTS events + $SIGNALS signals in $(printf '%.1f' "$s") s = $(rate "$EVENTS" "$s") events/s"

NEXT=$(date -u -d "$DAY + 1 day" +%F)
s=$(timed "$ADMIN" export --from "${DAY}T00:00:00Z" --to "${NEXT}T00:00:00Z" --output "$STATE/day.jsonl")
echo "export: $SIGNALS signals in $(printf '%.1f' "$s") s; $(du -h "$STATE/day.jsonl" | cut -f1)"
s=$(timed "$ADMIN" --database-url "postgres://postgres@127.0.0.1:$PRIMARY_PORT/bench_import" import "$STATE/day.jsonl")
# Each signal's received event is the write path's own: items = signals + the other events.
echo "import: $SIGNALS signals + $((EVENTS - SIGNALS)) events in $(printf '%.1f' "$s") s = $(rate "$EVENTS" "$s") items/s"
sed 's/^/  /' "$STATE/last.out"
