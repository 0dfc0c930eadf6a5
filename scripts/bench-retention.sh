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
#      while audit-writer and audit-reader serve `audit-bench soak` (paced
#      RecordSignal at BENCH_WRITE_RATE/s and a RecordEvent for every other
#      signal, 4 readers doing GetSignal with consistency tokens and
#      ListSignals on the replica, 2 StreamEvents tails), with the writer's
#      own jobs (rollups, partition maintenance) running: write and read p99
#      per 10-second window before and during the run
#   3. restore --day D                      (verify, partition, one transaction)
#   4. export of the day, import into an empty database (the Ingest write path)
# and removes everything on exit.
#
# Environment:
#   BENCH_SIGNALS (200000), BENCH_WRITE_RATE (400), BENCH_PRIMARY_PORT /
#   BENCH_REPLICA_PORT / BENCH_WRITER_PORT / BENCH_READER_PORT
#   (17732 / 17733 / 17734 / 17735), PG_BIN, BENCH_SKIP_BUILD=1 (use the
#   release binaries already in target/)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=lib/wait-listening.sh
source scripts/lib/wait-listening.sh
PRIMARY_PORT=${BENCH_PRIMARY_PORT:-17732}
REPLICA_PORT=${BENCH_REPLICA_PORT:-17733}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
SIGNALS=${BENCH_SIGNALS:-200000}
WRITER_PORT=${BENCH_WRITER_PORT:-17734}
READER_PORT=${BENCH_READER_PORT:-17735}
RATE=${BENCH_WRITE_RATE:-400}
BIN=${CARGO_TARGET_DIR:-target}/release
ADMIN=$BIN/audit-admin

[[ -n ${BENCH_SKIP_BUILD:-} ]] ||
    cargo build --release -p audit-admin -p audit-writer -p audit-reader -p audit-bench

STATE=$(mktemp -d /tmp/audit-bench-retention-XXXXXX)
chmod 755 "$STATE"
SERVICES=()
stop_services() {
    for pid in "${SERVICES[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${SERVICES[@]}"; do wait "$pid" 2>/dev/null || true; done
    SERVICES=()
}
cleanup() {
    stop_services
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

# Load through the services while retention runs: the writer on the
# primary, the reader on the replica, `audit-bench soak` printing one line
# per 10-second window (write p50/p99 from when each call was due, read p99).
RUST_LOG=warn AUDIT_AUTH=off AUDIT_DATABASE_URL=$AUDIT_DATABASE_URL AUDIT_WRITER_LISTEN=127.0.0.1:$WRITER_PORT \
    "$BIN/audit-writer" serve >"$STATE/writer.log" 2>&1 &
SERVICES+=($!)
WRITER_PID=$!
RUST_LOG=warn AUDIT_AUTH=off AUDIT_REPLICA_URL=postgres://postgres@127.0.0.1:$REPLICA_PORT/bench \
    AUDIT_READER_LISTEN=127.0.0.1:$READER_PORT "$BIN/audit-reader" serve >"$STATE/reader.log" 2>&1 &
SERVICES+=($!)
READER_PID=$!
wait_listening bench-retention "$STATE" "$WRITER_PORT" "$READER_PORT"
WINDOW=10
"$BIN/audit-bench" soak --writer "127.0.0.1:$WRITER_PORT" --reader "127.0.0.1:$READER_PORT" \
    --writer-pid "$WRITER_PID" --reader-pid "$READER_PID" \
    --database-url "$AUDIT_DATABASE_URL" --replica-url "postgres://postgres@127.0.0.1:$REPLICA_PORT/bench" \
    --rate "$RATE" --duration-secs 86400 --window-secs "$WINDOW" >"$STATE/soak.out" 2>&1 &
SOAK=$!
SERVICES+=($SOAK)
LOAD_T0=$(date +%s.%N)
windows() { grep -c '^window' "$STATE/soak.out" || true; }
# Load alone first: one window of warm-up (connections, caches), then three
# windows as the baseline of the same run.
until (($(windows) >= 4)); do sleep 1; done
t_start=$(echo "$(date +%s.%N) - $LOAD_T0" | bc)
s=$(timed "$ADMIN" retention run --yes --archive-url "$STATE/archive-b")
t_end=$(echo "$t_start + $s" | bc)
echo "retention run (detach, archive, verify, claims, drop, signals): $(printf '%.1f' "$s") s = $(rate "$EVENTS" "$s") events/s"
grep -E 'events|detach' "$STATE/last.out" | head -2 | sed 's/^/  /'
# One more window after the run, then the load stops.
n=$(($(windows) + 2))
until (($(windows) >= n)); do sleep 1; done
stop_services
echo "load: RecordSignal at $RATE/s (+ RecordEvent for every other signal), 4 readers, 2 tails; retention ran from $(printf '%.0f' "$t_start") s to $(printf '%.0f' "$t_end") s"
# Window i covers [end of i-1, end of i]; "during" = overlapping the run.
awk -v a="$t_start" -v b="$t_end" '/^window/ {
    secs = $3; sub(/s$/, "", secs); from = t; t += secs
    k = 0
    for (i = 1; i <= NF; i++) {
        if ($i == "p99" && ++k == 1) wp = $(i + 1) + 0
        else if ($i == "p99") rp = $(i + 1) + 0
        if ($i == "errors") e = $(i + 1)
    }
    phase = (++w == 1) ? "warm-up" : (t <= a) ? "before" : (from < b && t > a) ? "during" : "after"
    if (wp > mw[phase]) mw[phase] = wp
    if (rp > mr[phase]) mr[phase] = rp
    n[phase]++; if (e != "{}") errs[phase]++
    printf "  %-7s %s\n", phase, $0
} END {
    split("before during after", order)
    for (i = 1; i <= 3; i++) if ((p = order[i]) in n) printf "%s retention (%d windows of %d s): worst write p99 %.1f ms, worst read p99 %.1f ms, windows with errors %d\n", p, n[p], '"$WINDOW"', mw[p], mr[p], errs[p]
}' "$STATE/soak.out"

s=$(timed "$ADMIN" restore --day "$DAY" --archive-url "$STATE/archive-b")
echo "restore: $EVENTS events + $SIGNALS signals in $(printf '%.1f' "$s") s = $(rate "$EVENTS" "$s") events/s"

NEXT=$(date -u -d "$DAY + 1 day" +%F)
s=$(timed "$ADMIN" export --from "${DAY}T00:00:00Z" --to "${NEXT}T00:00:00Z" --output "$STATE/day.jsonl")
echo "export: $SIGNALS signals in $(printf '%.1f' "$s") s; $(du -h "$STATE/day.jsonl" | cut -f1)"
s=$(timed "$ADMIN" --database-url "postgres://postgres@127.0.0.1:$PRIMARY_PORT/bench_import" import "$STATE/day.jsonl")
# Each signal's received event is the write path's own: items = signals + the other events.
echo "import: $SIGNALS signals + $((EVENTS - SIGNALS)) events in $(printf '%.1f' "$s") s = $(rate "$EVENTS" "$s") items/s"
sed 's/^/  /' "$STATE/last.out"
