#!/usr/bin/env bash
# Backups that restore (issue 12): the `backup` step of scripts/test.sh.
#
#   scripts/test-backup.sh
#
# Starts a primary + replica with backups on (PG_CLUSTER_BACKUP=1
# scripts/pg-cluster.sh) in a fresh temporary folder on free ports below the
# ephemeral range, then, with scripts/backup.sh:
#   rows 1-100    written, FULL backup
#   rows 101-200  written, INCREMENTAL backup
#   rows 201-300  written; T = clock_timestamp() after their commit
#   rows 301-400  written after T; WAL switched and archived
#   restore to T into a fresh data directory on a third port (PITR)
# and checks the copy holds exactly rows 1-300: same ids (none missing, none
# extra, listed if any), same count, same md5 over every column in id order
# as the primary's rows 1-300. The comparison is shown to fail on a wrong
# set in both directions, and bad calls of backup.sh (non-empty target,
# taken port, bad type) must fail with a message.
#
# The rows live in a plain table (`backup_probe`), not the project's schema:
# pgBackRest copies files and WAL, not tables, so what is under test is the
# archive/backup/restore chain; the schema's tables would be more rows in the
# same WAL. Bounded: scripts/test.sh runs it under `timeout`; it takes about
# half a minute.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/port-check.sh
source "$ROOT/scripts/port-check.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PSQL=$PG_BIN/psql

log() { printf 'test-backup: %s\n' "$*" >&2; }
fail() {
    printf 'test-backup: FAILED: %s\n' "$*" >&2
    exit 1
}

WORK=$(mktemp -d /tmp/audit-backup-test-XXXXXX)
# pg-cluster.sh hands its folder to the postgres user when run as root.
chmod 755 "$WORK"
CLUSTER=$WORK/cluster
RESTORED=$WORK/restored
cleanup() {
    local rc=$?
    if [[ $rc != 0 ]]; then
        log "logs of the failed run:"
        tail -n 15 "$CLUSTER/primary.log" "$RESTORED/restore.log" 2>/dev/null | sed 's/^/  /' >&2 || true
        tail -n 15 "$CLUSTER"/pgbackrest/log/*.log 2>/dev/null | sed 's/^/  /' >&2 || true
    fi
    scripts/backup.sh stop "$RESTORED" >/dev/null 2>&1 || true
    scripts/pg-cluster.sh stop "$CLUSTER" >/dev/null 2>&1 || true
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Free ports between 18000 and 31999 (below the ephemeral range), distinct.
PORTS=()
pick_port() {
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((18000 + RANDOM % 14000))
        [[ " ${PORTS[*]} " != *" $p "* ]] || continue
        port_conflict "$p" >/dev/null && continue
        PORTS+=("$p")
        return 0
    done
    fail "no free port found between 18000 and 31999"
}
pick_port
pick_port
pick_port
PRIMARY_PORT=${PORTS[0]}
REPLICA_PORT=${PORTS[1]}
RESTORE_PORT=${PORTS[2]}

sql() {
    local port=$1
    shift
    "$PSQL" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}

# write FROM TO: rows FROM..TO in transactions of 20 rows each.
write_rows() {
    local from=$1 to=$2 a b
    for ((a = from; a <= to; a += 20)); do
        b=$((a + 19 < to ? a + 19 : to))
        sql "$PRIMARY_PORT" -c "INSERT INTO backup_probe (id, payload)
            SELECT g, md5(g::text) || repeat('x', g % 50) FROM generate_series($a, $b) g"
    done
}

# The row set of a server: "count md5 ids" with ids comma-separated.
SET_SQL="SELECT count(*), coalesce(md5(string_agg(id || ':' || payload || ':' || written_at, '|' ORDER BY id)), '-'),
                coalesce(string_agg(id::text, ',' ORDER BY id), '')
         FROM backup_probe"
row_set() { sql "$1" -F ' ' -c "$SET_SQL ${2:-}"; }

# compare EXPECTED ACTUAL: prints the differences; non-zero when any.
compare() {
    local expected=$1 actual=$2 e_count e_md5 e_ids a_count a_md5 a_ids missing extra rc=0
    read -r e_count e_md5 e_ids <<<"$expected"
    read -r a_count a_md5 a_ids <<<"$actual"
    missing=$(comm -23 <(tr ',' '\n' <<<"$e_ids" | sort) <(tr ',' '\n' <<<"$a_ids" | sort) | sort -n | paste -sd, -)
    extra=$(comm -13 <(tr ',' '\n' <<<"$e_ids" | sort) <(tr ',' '\n' <<<"$a_ids" | sort) | sort -n | paste -sd, -)
    if [[ -n $missing ]]; then
        echo "missing rows (ids): $(cut -c1-200 <<<"$missing")"
        rc=1
    fi
    if [[ -n $extra ]]; then
        echo "extra rows (ids): $(cut -c1-200 <<<"$extra")"
        rc=1
    fi
    if [[ $e_count != "$a_count" ]]; then
        echo "row count: expected $e_count, got $a_count"
        rc=1
    fi
    if [[ $e_md5 != "$a_md5" ]]; then
        echo "checksum: expected $e_md5, got $a_md5$([[ -n $missing$extra ]] || echo ' (same ids, different contents)')"
        rc=1
    fi
    return "$rc"
}

started=$SECONDS
log "cluster with backups in $CLUSTER (primary :$PRIMARY_PORT, replica :$REPLICA_PORT)"
PG_CLUSTER_BACKUP=1 scripts/pg-cluster.sh start "$CLUSTER" "$PRIMARY_PORT" "$REPLICA_PORT" >/dev/null

sql "$PRIMARY_PORT" -c "CREATE TABLE backup_probe (
    id bigint PRIMARY KEY,
    payload text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp())"

write_rows 1 100
scripts/backup.sh backup "$CLUSTER" full 2>/dev/null
log "rows 1-100, full backup"
write_rows 101 200
scripts/backup.sh backup "$CLUSTER" incr 2>/dev/null
log "rows 101-200, incremental backup"
# pgBackRest picks the newest backup that stopped before the target, with
# stop times in whole seconds: T must fall in a later second than the
# incremental's end for the restore to go through it.
sleep 1.1
write_rows 201 300
TARGET=$(sql "$PRIMARY_PORT" -c "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
log "rows 201-300; target time T = $TARGET"
sleep 0.2
write_rows 301 400
log "rows 301-400 after T"

# Recovery stops at the first commit after T, so that commit's WAL must be in
# the archive: switch the segment and wait until it is archived.
segment=$(sql "$PRIMARY_PORT" -c "SELECT pg_walfile_name(pg_switch_wal())")
deadline=$((SECONDS + 60))
until [[ $(sql "$PRIMARY_PORT" -c "SELECT coalesce(last_archived_wal, '') >= '$segment' FROM pg_stat_archiver") == t ]]; do
    ((SECONDS < deadline)) || fail "WAL segment $segment was not archived within 60 s"
    sleep 0.2
done
log "WAL archived up to $segment"
scripts/backup.sh info "$CLUSTER" | sed 's/^/  /' >&2

# --- bad calls ----------------------------------------------------------------
mkdir -p "$WORK/not-empty" && touch "$WORK/not-empty/file"
if out=$(scripts/backup.sh restore "$CLUSTER" --to "$TARGET" "$WORK/not-empty" "$RESTORE_PORT" 2>&1); then
    fail "restore into a non-empty folder succeeded"
fi
grep -q "not empty" <<<"$out" || fail "restore into a non-empty folder: unclear error: $out"
if out=$(scripts/backup.sh restore "$CLUSTER" --to "$TARGET" "$WORK/taken" "$PRIMARY_PORT" 2>&1); then
    fail "restore onto the primary's port succeeded"
fi
grep -q "port $PRIMARY_PORT" <<<"$out" || fail "restore onto a taken port: the error does not name it: $out"
if out=$(scripts/backup.sh backup "$CLUSTER" weekly 2>&1); then
    fail "backup of type 'weekly' succeeded"
fi
log "bad calls refused: non-empty target, taken port $PRIMARY_PORT, bad backup type"

# --- restore to T -----------------------------------------------------------------
restore_start=$SECONDS
scripts/backup.sh restore "$CLUSTER" --to "$TARGET" "$RESTORED" "$RESTORE_PORT" >/dev/null
log "restored to T on :$RESTORE_PORT in $((SECONDS - restore_start))s"
set_label=$(grep -ho 'restore backup set [^ ,]*' "$CLUSTER"/pgbackrest/log/*restore*.log | tail -n 1 || true)
log "pgBackRest: ${set_label:-?}"
[[ $set_label == *I ]] || fail "the restore did not use the incremental backup (${set_label:-no set in the log}): full + incr chain not exercised"
[[ $(sql "$RESTORE_PORT" -c "SELECT pg_is_in_recovery()") == f ]] || fail "the restored cluster is still in recovery"

expected=$(row_set "$PRIMARY_PORT" "WHERE id <= 300")
everything=$(row_set "$PRIMARY_PORT")
actual=$(row_set "$RESTORE_PORT")
[[ ${everything%% *} == 400 ]] || fail "the primary holds ${everything%% *} rows, expected 400"
log "primary: ${everything%% *} rows; committed by T: ${expected%% *} (md5 $(cut -d' ' -f2 <<<"$expected")); restored: ${actual%% *} (md5 $(cut -d' ' -f2 <<<"$actual"))"

# The comparison must be able to fail, both ways (checked on the primary's
# own sets, whatever the restore produced).
[[ $(compare "$everything" "$expected") == *"missing rows (ids): 301,302,"* ]] ||
    fail "the comparison did not notice 100 missing rows"
[[ $(compare "$expected" "$everything") == *"extra rows (ids): 301,302,"* ]] ||
    fail "the comparison did not notice 100 extra rows"

if ! diff=$(compare "$expected" "$actual"); then
    printf '%s\n' "$diff" | sed 's/^/  /' >&2
    fail "the restored copy is not exactly the rows committed by T"
fi
log "OK: exactly the 300 rows committed by T, none of the 100 after (${SECONDS}s in all)"
