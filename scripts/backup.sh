#!/usr/bin/env bash
# Backups of a scripts/pg-cluster.sh cluster with pgBackRest: WAL archiving
# from the primary, full and incremental backups, point-in-time recovery.
#
#   scripts/backup.sh backup  STATE_DIR [full|incr]      (default incr; the first is always full)
#   scripts/backup.sh info    STATE_DIR [--json]
#   scripts/backup.sh restore STATE_DIR --to 'TIMESTAMP' TARGET_DIR PORT
#   scripts/backup.sh stop    TARGET_DIR                 (stops a restored cluster)
#
# STATE_DIR is a cluster started with PG_CLUSTER_BACKUP=1 scripts/pg-cluster.sh
# (scripts/stack.sh does that for .stack), which calls the two internal
# commands:
#   scripts/backup.sh configure STATE_DIR   write STATE_DIR/pgbackrest/pgbackrest.conf
#   scripts/backup.sh init      STATE_DIR   stanza-create + check (archiving works)
#   scripts/backup.sh archive-command STATE_DIR   the primary's archive_command
#
# Everything lives in STATE_DIR/pgbackrest (config, repository repo/, lock/,
# log/, spool/), so clusters in different folders never share anything; the
# stanza is called "audit". As root, pgbackrest runs as the `postgres` OS user
# like the servers.
#
# `restore` makes a FRESH cluster: TARGET_DIR must not exist or be empty. It
# runs `pgbackrest restore --type=time --target=TIMESTAMP --target-action=promote
# --pg1-path=TARGET_DIR` (pgBackRest picks the newest backup that ended before
# TIMESTAMP and replays archived WAL up to it), gives the copy its own port and
# socket folder and no archiving (it must not write into the source's
# repository), starts it on 127.0.0.1:PORT and returns once it accepts
# connections and is out of recovery. TIMESTAMP is anything PostgreSQL reads
# as a timestamptz, e.g. '2026-11-30 15:04:05.123456+00'; transactions that
# committed at or before it are in the copy, later ones are not.
#
# Environment:
#   PG_BIN           PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
#   BACKUP_TIMEOUT   seconds to wait for a restored server (default 120)
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/port-check.sh
source "$SCRIPTS_DIR/port-check.sh"

CALLER_PWD=$PWD
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
TIMEOUT=${BACKUP_TIMEOUT:-120}
STANZA=audit
MAX_SOCKET_PATH=107

log() { printf 'backup: %s\n' "$*" >&2; }
die() {
    printf 'backup: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: backup.sh backup  STATE_DIR [full|incr]
       backup.sh info    STATE_DIR [--json]
       backup.sh restore STATE_DIR --to 'TIMESTAMP' TARGET_DIR PORT
       backup.sh stop    TARGET_DIR
EOF
    exit 2
}

# shellcheck source=lib/as-postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/as-postgres.sh"

PGBACKREST=$(command -v pgbackrest 2>/dev/null || true)

need_pgbackrest() {
    [[ -n $PGBACKREST ]] || die "pgbackrest is not installed (scripts/install-deps.sh installs it)"
}

# Absolute STATE_DIR, or die; sets CONF.
resolve_state_dir() {
    [[ -d $1 ]] || die "$1 does not exist (a folder of scripts/pg-cluster.sh)"
    STATE_DIR=$(cd -- "$1" && pwd -P)
    # The paths go into archive_command, between single quotes and unquoted.
    [[ $STATE_DIR != *[[:space:]\'\"\\]* ]] ||
        die "STATE_DIR must not contain spaces or quotes for backups: $STATE_DIR"
    BR_DIR=$STATE_DIR/pgbackrest
    CONF=$BR_DIR/pgbackrest.conf
    # The postgres user may not be allowed to read the caller's directory.
    cd -- "$STATE_DIR"
}

require_conf() {
    [[ -f $CONF ]] ||
        die "backups are not set up for $STATE_DIR: start it with PG_CLUSTER_BACKUP=1 scripts/pg-cluster.sh start (scripts/stack.sh up does)"
}

# pgbackrest with this cluster's configuration, as the server's OS user.
br() { as_pg "$PGBACKREST" --config="$CONF" --stanza="$STANZA" "$@"; }

managed_setting() {
    sed -n -E "s/^$2 = '?([^']*)'?\$/\\1/p" "$1/pg-cluster.conf" 2>/dev/null | tail -n 1
}

cmd_archive_command() {
    need_pgbackrest
    printf '%s --config=%s --stanza=%s archive-push %%p\n' "$PGBACKREST" "$CONF" "$STANZA"
}

cmd_configure() {
    need_pgbackrest
    local port sockdir
    port=$(managed_setting "$STATE_DIR/primary" port)
    sockdir=$(managed_setting "$STATE_DIR/primary" unix_socket_directories)
    [[ -n $port && -n $sockdir ]] ||
        die "$STATE_DIR/primary/pg-cluster.conf has no port or socket folder: is this a scripts/pg-cluster.sh folder?"
    as_pg mkdir -p -m 0750 "$BR_DIR" "$BR_DIR/repo" "$BR_DIR/log" "$BR_DIR/lock" "$BR_DIR/spool"
    # Written by the server's user so pgbackrest (also run by it) can read it.
    as_pg tee "$CONF.tmp" >/dev/null <<EOF
# Written by scripts/backup.sh configure on every cluster start; edits are overwritten.
[global]
repo1-path=$BR_DIR/repo
# Keep two full backups (and the incrementals and WAL they need).
repo1-retention-full=2
lock-path=$BR_DIR/lock
log-path=$BR_DIR/log
spool-path=$BR_DIR/spool
log-level-console=warn
log-level-file=info
compress-type=lz4
# Backups begin with an immediate checkpoint instead of waiting for one.
start-fast=y
archive-timeout=60

[$STANZA]
pg1-path=$STATE_DIR/primary
pg1-port=$port
pg1-socket-path=$sockdir
pg1-user=postgres
EOF
    as_pg chmod 0640 "$CONF.tmp"
    as_pg mv -f "$CONF.tmp" "$CONF"
}

cmd_init() {
    need_pgbackrest
    require_conf
    log "pgbackrest stanza-create + check (stanza $STANZA, repository $BR_DIR/repo)"
    br --log-level-console=warn stanza-create ||
        die "pgbackrest stanza-create failed (log: $BR_DIR/log)"
    # check forces a WAL switch and waits until the segment is archived.
    br --log-level-console=warn check ||
        die "pgbackrest check failed: WAL archiving from the primary does not work (logs: $BR_DIR/log, $STATE_DIR/primary.log)"
}

cmd_backup() {
    local type=${1:-incr}
    [[ $type == full || $type == incr ]] || die "backup type must be full or incr, not '$type'"
    need_pgbackrest
    require_conf
    log "$type backup of $STATE_DIR/primary"
    local start=$SECONDS
    br --type="$type" --log-level-console=warn backup ||
        die "pgbackrest $type backup failed (log: $BR_DIR/log/$STANZA-backup.log)"
    log "$type backup done in $((SECONDS - start))s:"
    br --log-level-console=warn info --set="$(latest_label)" >&2 || true
}

latest_label() {
    br --log-level-console=error --output=json info |
        python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["backup"][-1]["label"])'
}

cmd_info() {
    need_pgbackrest
    require_conf
    if [[ ${1:-} == --json ]]; then
        br --log-level-console=warn --output=json info
    else
        [[ $# -eq 0 ]] || usage
        br --log-level-console=warn info
    fi
}

# Socket folder for a restored cluster: its data directory, unless the path
# would be too long for a unix socket (then a private folder in /tmp).
restore_socket_dir() {
    local target=$1 longest=".s.PGSQL.65535"
    if ((${#target} + 1 + ${#longest} <= MAX_SOCKET_PATH)); then
        printf '%s\n' "$target"
    else
        printf '/tmp/pgc-%s\n' "$(printf '%s' "$target" | md5sum | cut -c1-16)"
    fi
}

pg_running() {
    as_pg "$PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1
}

cmd_restore() {
    local to="" target="" port="" args=()
    while [[ $# -gt 0 ]]; do
        case $1 in
        --to)
            [[ $# -ge 2 ]] || usage
            to=$2
            shift 2
            ;;
        --to=*)
            to=${1#--to=}
            shift
            ;;
        -*) usage ;;
        *)
            args+=("$1")
            shift
            ;;
        esac
    done
    [[ ${#args[@]} -eq 2 && -n $to ]] || usage
    target=${args[0]}
    [[ $target == /* ]] || target=$CALLER_PWD/$target
    port=${args[1]}
    need_pgbackrest
    require_conf
    [[ $port =~ ^[0-9]+$ ]] && ((port >= 1 && port <= 65535)) || die "'$port' is not a TCP port number"
    [[ $port != 5432 ]] || die "port 5432 is the machine's default PostgreSQL; pick another port"
    [[ $to != *\'* && $to != *\"* ]] || die "the target time must not contain quotes: $to"
    # The time must be one PostgreSQL understands (checked before anything is made).
    if ! "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$(managed_setting "$STATE_DIR/primary" port)" -U postgres -d postgres \
        -c "SELECT '$to'::timestamptz" >/dev/null 2>&1; then
        # The primary may be down: then only a rough syntax check.
        date -d "$to" >/dev/null 2>&1 || die "'$to' is not a timestamp (e.g. '2026-11-30 15:04:05.123+00')"
    fi
    local why
    if why=$(port_conflict "$port"); then
        die "cannot start the restored cluster on 127.0.0.1:$port: $why"
    fi

    # A fresh data directory: never restore over anything.
    if [[ -e $target ]]; then
        [[ -d $target ]] || die "$target exists and is not a directory"
        [[ -z $(ls -A -- "$target") ]] || die "$target is not empty: restore needs a fresh directory"
    fi
    mkdir -p -- "$target"
    target=$(cd -- "$target" && pwd -P)
    [[ $target != "$STATE_DIR"/primary && $target != "$STATE_DIR"/replica ]] ||
        die "$target is a data directory of the source cluster"
    [[ $target != *[[:space:]\'\"\\]* ]] || die "TARGET_DIR must not contain spaces or quotes: $target"
    chmod 0700 -- "$target"
    if [[ $AS_ROOT == 1 ]]; then
        chown postgres:postgres -- "$target"
        as_pg test -w "$target" ||
            die "the postgres OS user cannot reach $target: a parent directory is not traversable by it"
    fi

    log "restoring $STATE_DIR (stanza $STANZA) to '$to' into $target"
    local start=$SECONDS
    # archive-mode=off: the copy must not push its WAL into the source's
    # repository. restore_command (archive-get) is written by pgbackrest.
    if ! br --log-level-console=warn --pg1-path="$target" --type=time --target="$to" \
        --target-action=promote --archive-mode=off restore; then
        die "pgbackrest restore failed (log: $BR_DIR/log/$STANZA-restore.log); $target is left as it is"
    fi

    local sockdir logfile=$target/restore.log
    sockdir=$(restore_socket_dir "$target")
    if [[ $sockdir != "$target" && ! -d $sockdir ]]; then
        mkdir -m 0700 -- "$sockdir"
        if [[ $AS_ROOT == 1 ]]; then chown postgres:postgres -- "$sockdir"; fi
    fi
    # After the include of pg-cluster.conf (the source's settings), so these win.
    as_pg tee -a "$target/postgresql.conf" >/dev/null <<EOF

# Point-in-time restore by scripts/backup.sh: its own port and sockets.
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
cluster_name = 'audit_restored'
archive_mode = off
EOF
    log "starting the restored cluster on 127.0.0.1:$port (log $logfile)"
    if ! as_pg "$PG_BIN/pg_ctl" -D "$target" -l "$logfile" -w -t "$TIMEOUT" start >/dev/null; then
        tail -n 30 -- "$logfile" >&2 || true
        die "the restored cluster did not start (log: $logfile)"
    fi
    local deadline=$((SECONDS + TIMEOUT)) recovery
    while :; do
        recovery=$("$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres \
            -c 'SELECT pg_is_in_recovery()' 2>/dev/null || true)
        [[ $recovery != f ]] || break
        if ! pg_running "$target"; then
            tail -n 30 -- "$logfile" >&2 || true
            die "the restored cluster stopped during recovery (log: $logfile)"
        fi
        if ((SECONDS >= deadline)); then
            tail -n 30 -- "$logfile" >&2 || true
            die "the restored cluster is still in recovery after ${TIMEOUT}s (log: $logfile)"
        fi
        sleep 0.2
    done
    log "restored to '$to' in $((SECONDS - start))s: 127.0.0.1:$port, data $target"
    log "stop it with: scripts/backup.sh stop $target"
    printf 'RESTORED_URL=postgres://postgres@127.0.0.1:%s/postgres\n' "$port"
}

cmd_stop() {
    local target=$1
    [[ $target == /* ]] || target=$CALLER_PWD/$target
    [[ -d $target ]] || die "$target does not exist"
    target=$(cd -- "$target" && pwd -P)
    [[ -f $target/PG_VERSION ]] || die "$target is not a PostgreSQL data directory"
    cd -- "$target"
    if pg_running "$target"; then
        as_pg "$PG_BIN/pg_ctl" -D "$target" -m fast -w -t 60 stop >/dev/null ||
            die "could not stop the cluster in $target"
        log "stopped $target"
    fi
    local sockdir
    sockdir=$(restore_socket_dir "$target")
    [[ $sockdir == "$target" ]] || rmdir -- "$sockdir" 2>/dev/null || true
}

[[ $# -ge 2 ]] || usage
command=$1
shift
case $command in
stop)
    [[ $# -eq 1 ]] || usage
    cmd_stop "$1"
    exit 0
    ;;
esac
resolve_state_dir "$1"
shift
case $command in
archive-command)
    [[ $# -eq 0 ]] || usage
    cmd_archive_command
    ;;
configure)
    [[ $# -eq 0 ]] || usage
    cmd_configure
    ;;
init)
    [[ $# -eq 0 ]] || usage
    cmd_init
    ;;
backup)
    [[ $# -le 1 ]] || usage
    cmd_backup "$@"
    ;;
info) cmd_info "$@" ;;
restore) cmd_restore "$@" ;;
*) usage ;;
esac
