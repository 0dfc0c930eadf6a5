#!/usr/bin/env bash
# A throw-away PostgreSQL 15 primary plus one (or two) streaming replicas,
# all on 127.0.0.1, all living entirely inside STATE_DIR.
#
#   scripts/pg-cluster.sh start  STATE_DIR PRIMARY_PORT REPLICA_PORT [REPLICA2_PORT]
#   scripts/pg-cluster.sh stop   STATE_DIR [primary|replica|replica2]
#   scripts/pg-cluster.sh status STATE_DIR
#
# With REPLICA2_PORT a second replica streams from the primary too (readers
# spread over several replicas). `stop` with a server name stops only that
# server (tests take one replica away and `start` it again).
#
# Layout of STATE_DIR:
#   primary/        data directory of the primary (initdb)
#   replica/        data directory of the replica (pg_basebackup -R -X stream)
#   replica2/       the same for the second replica, if any
#   primary.log     server log of the primary
#   replica.log     server log of the replica (replica2.log for the second)
#   .s.PGSQL.<port> unix sockets of both servers (clients should use TCP)
#   pgbackrest/     with PG_CLUSTER_BACKUP=1: pgBackRest's config, repository,
#                   lock, log and spool folders (scripts/backup.sh)
#
# `start` is idempotent: servers already running are left alone, data
# directories from an earlier `start` are reused (a stopped cluster just
# starts again). It returns once the replicas are streaming from the primary.
# On success it prints PRIMARY_URL=... and REPLICA_URL=... (and REPLICA2_URL=...)
# on stdout; all progress goes to stderr.
#
# The integration tests call this script with their own temporary directory
# and free ports, so nothing here may depend on the repository or on the
# machine's own PostgreSQL (port 5432 and its socket folder are never used).
#
# A port that is already bound (a listener, or a connection using it as its
# local port) stops `start` before anything is created, with a message that
# names the port and, when `ss -tanp` can tell, the process holding it.
#
# Environment:
#   PG_BIN               PostgreSQL 15 binaries (default /usr/lib/postgresql/15/bin)
#   PG_CLUSTER_TIMEOUT   seconds to wait for each server / for streaming (default 60)
#   PG_CLUSTER_BACKUP=1  `start` also sets up backups: WAL archiving from the
#                        primary (archive_mode=on, archive_command = pgbackrest
#                        archive-push) into a pgBackRest repository inside
#                        STATE_DIR, stanza-create and check; then
#                        scripts/backup.sh backup|info|restore work on STATE_DIR.
#                        A running primary without archiving is restarted.
set -euo pipefail

SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=scripts/port-check.sh
source "$SCRIPTS_DIR/port-check.sh"

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
TIMEOUT=${PG_CLUSTER_TIMEOUT:-60}
BACKUP=${PG_CLUSTER_BACKUP:-0}
# The Linux limit for a unix socket path (sun_path is 108 bytes with the NUL).
MAX_SOCKET_PATH=107

log() { printf 'pg-cluster: %s\n' "$*" >&2; }
die() {
    printf 'pg-cluster: error: %s\n' "$*" >&2
    exit 1
}

usage() {
    cat >&2 <<'EOF'
usage: pg-cluster.sh start  STATE_DIR PRIMARY_PORT REPLICA_PORT [REPLICA2_PORT]
       pg-cluster.sh stop   STATE_DIR [primary|replica|replica2]
       pg-cluster.sh status STATE_DIR
EOF
    exit 2
}

# shellcheck source=lib/as-postgres.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/as-postgres.sh"

# Client queries go over TCP as the `postgres` database user (trust auth);
# -X skips any ~/.psqlrc so output stays machine-readable.
query() {
    local port=$1 sql=$2
    "$PG_BIN/psql" -X -q -At -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$sql" 2>/dev/null
}

check_port() {
    local name=$1 port=$2
    if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
        die "$name port '$port' is not a TCP port number"
    fi
    # 5432 belongs to the machine's own server: never start or stop anything there.
    [[ $port != 5432 ]] || die "$name port 5432 is the machine's default PostgreSQL; pick another port"
}

check_binaries() {
    local b
    for b in initdb pg_ctl pg_basebackup psql pg_isready; do
        [[ -x $PG_BIN/$b ]] || die "$PG_BIN/$b not found: install postgresql-15 (scripts/install-deps.sh)"
    done
}

# Resolves STATE_DIR to an absolute path (creating it for `start`), hands it
# to the postgres user when root, and checks the server user can reach it.
prepare_state_dir() {
    local create=$1
    if [[ $create == 1 ]]; then
        mkdir -p -- "$STATE_DIR"
    elif [[ ! -d $STATE_DIR ]]; then
        return 1
    fi
    STATE_DIR=$(cd -- "$STATE_DIR" && pwd -P)
    # The path goes into postgresql.conf between single quotes.
    [[ $STATE_DIR != *"'"* ]] || die "STATE_DIR must not contain a single quote: $STATE_DIR"
    # Work from inside STATE_DIR: the postgres user may not be allowed to
    # read the caller's working directory (e.g. /root), which makes initdb
    # and pg_ctl complain.
    cd -- "$STATE_DIR"
    # STATE_DIR is chowned and chmod 0700 below: refuse shared folders such
    # as / , /tmp or /work (a missing path component in a caller).
    if [[ $STATE_DIR =~ ^/[^/]*$ || -k $STATE_DIR ]]; then
        die "refusing to use $STATE_DIR as STATE_DIR: give a folder of its own (e.g. from mktemp -d)"
    fi
    if [[ $create == 1 && $AS_ROOT == 1 ]]; then
        chown postgres:postgres -- "$STATE_DIR"
        chmod 0700 -- "$STATE_DIR"
        if ! as_pg test -w "$STATE_DIR" -a -x "$STATE_DIR"; then
            die "the postgres OS user cannot reach $STATE_DIR: a parent directory is not traversable by it (for example a root-only 0700 directory). Use a directory under /tmp (e.g. from mktemp -d) or make the parents o+x."
        fi
    fi
    return 0
}

# The unix socket folder: STATE_DIR itself, unless the socket path would be
# longer than the kernel allows; then a short private folder in /tmp named
# after STATE_DIR (so every invocation finds the same one).
socket_dir() {
    local longest=".s.PGSQL.65535"
    if ((${#STATE_DIR} + 1 + ${#longest} <= MAX_SOCKET_PATH)); then
        printf '%s\n' "$STATE_DIR"
    else
        printf '/tmp/pgc-%s\n' "$(printf '%s' "$STATE_DIR" | md5sum | cut -c1-16)"
    fi
}

ensure_socket_dir() {
    local dir=$1
    [[ $dir == "$STATE_DIR" ]] && return 0
    log "STATE_DIR is too long for a unix socket path; sockets go to $dir"
    if [[ ! -d $dir ]]; then
        mkdir -m 0700 -- "$dir"
        if [[ $AS_ROOT == 1 ]]; then chown postgres:postgres -- "$dir"; fi
    fi
    local owner
    owner=$(stat -c %U -- "$dir")
    [[ $owner == "$([[ $AS_ROOT == 1 ]] && echo postgres || id -un)" ]] ||
        die "socket folder $dir exists but belongs to $owner"
}

# State letter of the postmaster named in DATADIR/postmaster.pid ("" if none).
postmaster_state() {
    local pid
    pid=$(head -n 1 -- "$1/postmaster.pid" 2>/dev/null) || return 0
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null || true
}

# pg_ctl counts a postmaster killed with SIGKILL as running until its zombie
# is reaped (here PID 1 reaps only every few seconds); it is not running.
is_running() {
    [[ -f $1/PG_VERSION ]] &&
        as_pg "$PG_BIN/pg_ctl" -D "$1" status >/dev/null 2>&1 &&
        [[ $(postmaster_state "$1") != Z ]]
}

# A new postmaster refuses to start while the old one's zombie holds the PID
# in postmaster.pid; wait for it to be reaped.
wait_for_zombie() {
    local deadline=$((SECONDS + TIMEOUT))
    while [[ $(postmaster_state "$1") == Z ]]; do
        ((SECONDS < deadline)) || die "the old postmaster of $1 is a zombie that nobody reaps"
        sleep 0.2
    done
}

# Shared-library settings: pg_cron only when its library is installed, so the
# cluster still starts on a machine without postgresql-15-cron.
preload_settings() {
    local libdir libs=()
    libdir=$("$PG_BIN/pg_config" --pkglibdir 2>/dev/null || echo /usr/lib/postgresql/15/lib)
    [[ -f $libdir/pg_stat_statements.so ]] && libs+=(pg_stat_statements)
    [[ -f $libdir/pg_cron.so ]] && libs+=(pg_cron)
    local IFS=,
    printf "shared_preload_libraries = '%s'\n" "${libs[*]}"
    if [[ -f $libdir/pg_cron.so ]]; then
        printf "cron.database_name = 'postgres'\n"
    fi
}

# Everything this script controls lives in <datadir>/pg-cluster.conf, which is
# rewritten on every start (so a restart with other ports just works) and
# included at the end of postgresql.conf.
write_managed_conf() {
    local datadir=$1 port=$2 name=$3 sockdir=$4 archive=${5:-0}
    local conf=$datadir/pg-cluster.conf
    cat >"$conf" <<EOF
# Written by scripts/pg-cluster.sh on every start; edits are overwritten.
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$sockdir'
cluster_name = '$name'
max_connections = 300
# Durable like production: the tests measure real commit behaviour.
fsync = on
synchronous_commit = on
# Streaming replication. The same values on both servers: a hot standby
# needs max_connections etc. at least as large as the primary's.
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
# Lets a replica that was stopped for a while catch up without a slot.
wal_keep_size = '256MB'
hot_standby = on
hot_standby_feedback = on
max_standby_streaming_delay = 30s
# StreamEvents orders its live tail by commit time (pg_xact_commit_timestamp).
track_commit_timestamp = on
$(preload_settings)
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    if [[ $archive == 1 ]]; then
        cat >>"$conf" <<EOF
# PG_CLUSTER_BACKUP=1: every WAL segment goes to the pgBackRest repository in
# STATE_DIR (scripts/backup.sh); a segment is switched at least every minute
# while there is activity, which bounds what a point-in-time restore can lose.
archive_mode = on
archive_command = '$("$SCRIPTS_DIR/backup.sh" archive-command "$STATE_DIR")'
archive_timeout = 60
EOF
    fi
    # Root may write into the postgres-owned data directory; the file is
    # handed to the server's user like the rest of it.
    chmod 0600 -- "$conf"
    if [[ $AS_ROOT == 1 ]]; then chown postgres:postgres -- "$conf"; fi
}

# The port a data directory was last started on (from its managed conf).
server_port() { sed -n -E "s/^port = ([0-9]+).*/\\1/p" "$1/pg-cluster.conf" 2>/dev/null | tail -n 1; }

start_server() {
    local datadir=$1 logfile=$2 name=$3 port=$4 running_port
    if is_running "$datadir"; then
        running_port=$(server_port "$datadir")
        [[ $running_port == "$port" ]] ||
            die "$(basename "$datadir") in $STATE_DIR is already running on port $running_port, not $port: stop it first"
        log "$name already running"
        return 0
    fi
    wait_for_zombie "$datadir"
    log "starting $name"
    # fd 9 holds the state lock; the server must not inherit it or the lock
    # would stay held for as long as the server runs.
    if ! as_pg "$PG_BIN/pg_ctl" -D "$datadir" -l "$logfile" -w -t "$TIMEOUT" start >/dev/null 9>&-; then
        log "$name failed to start; last lines of $logfile:"
        tail -n 30 -- "$logfile" >&2 || true
        if tail -n 30 -- "$logfile" 2>/dev/null | grep -qE 'could not bind|could not create any TCP/IP sockets'; then
            die "$name: PostgreSQL could not bind 127.0.0.1:$port. $(port_conflict "$port" || echo "port $port is free again now; something held it briefly")"
        fi
        exit 1
    fi
}

# Dies when PORT cannot be bound by a server of ours, naming who holds it.
ensure_port_free() {
    local name=$1 port=$2 why
    if why=$(port_conflict "$port"); then
        die "cannot start the $name on 127.0.0.1:$port: $why"
    fi
}

cmd_start() {
    local primary_port=$1 replica_port=$2 replica2_port=${3:-}
    check_port primary "$primary_port"
    check_port replica "$replica_port"
    [[ $primary_port != "$replica_port" ]] || die "primary and replica need different ports"
    if [[ -n $replica2_port ]]; then
        check_port replica2 "$replica2_port"
        [[ $replica2_port != "$primary_port" && $replica2_port != "$replica_port" ]] ||
            die "the second replica needs a port of its own"
    fi
    check_binaries
    prepare_state_dir 1

    exec 9>"$STATE_DIR/.pg-cluster.lock"
    flock -w "$TIMEOUT" 9 || die "another pg-cluster.sh is working on $STATE_DIR"

    local sockdir primary=$STATE_DIR/primary replica=$STATE_DIR/replica
    sockdir=$(socket_dir)
    ensure_socket_dir "$sockdir"

    # A server of ours that is down must find its port free; checked before
    # any initdb so a clash leaves nothing behind.
    is_running "$primary" || ensure_port_free primary "$primary_port"
    is_running "$replica" || ensure_port_free replica "$replica_port"
    if [[ -n $replica2_port ]]; then
        is_running "$STATE_DIR/replica2" || ensure_port_free replica2 "$replica2_port"
    fi
    if [[ $BACKUP == 1 ]]; then
        command -v pgbackrest >/dev/null 2>&1 ||
            die "PG_CLUSTER_BACKUP=1 needs pgbackrest: install it (scripts/install-deps.sh)"
        # Also refuses a STATE_DIR that cannot go into archive_command.
        "$SCRIPTS_DIR/backup.sh" archive-command "$STATE_DIR" >/dev/null 9>&- ||
            die "cannot set up backups for $STATE_DIR (see above)"
    fi

    # --- primary -----------------------------------------------------------
    if [[ ! -f $primary/PG_VERSION ]]; then
        log "initdb $primary"
        rm -rf -- "$primary" # a half-made directory from an interrupted run
        as_pg "$PG_BIN/initdb" -D "$primary" -U postgres --auth=trust -E UTF8 \
            --no-locale --no-instructions >"$STATE_DIR/initdb.log" 2>&1 || {
            tail -n 30 "$STATE_DIR/initdb.log" >&2
            die "initdb failed"
        }
        # Appending keeps the files' owner, so root may do it directly.
        printf "\n# Settings managed by scripts/pg-cluster.sh\ninclude_if_exists = 'pg-cluster.conf'\n" \
            >>"$primary/postgresql.conf"
        # initdb's trust pg_hba already allows this; stated so it survives a
        # change of initdb defaults.
        printf 'host replication all 127.0.0.1/32 trust\n' >>"$primary/pg_hba.conf"
    fi
    if ! is_running "$primary"; then
        write_managed_conf "$primary" "$primary_port" audit_primary "$sockdir" "$BACKUP"
    elif [[ $BACKUP == 1 && $(query "$primary_port" "SHOW archive_mode" || true) != on ]]; then
        # archive_mode needs a restart; the replica reconnects by itself.
        log "primary runs without WAL archiving: restarting it with archive_mode=on"
        write_managed_conf "$primary" "$primary_port" audit_primary "$sockdir" 1
        "$SCRIPTS_DIR/backup.sh" configure "$STATE_DIR" 9>&-
        as_pg "$PG_BIN/pg_ctl" -D "$primary" -l "$STATE_DIR/primary.log" -m fast -w -t "$TIMEOUT" \
            restart >/dev/null 9>&- || die "restarting the primary failed (log: $STATE_DIR/primary.log)"
    fi
    # pgBackRest's configuration must exist before the primary archives.
    if [[ $BACKUP == 1 ]]; then
        "$SCRIPTS_DIR/backup.sh" configure "$STATE_DIR" 9>&-
    fi
    start_server "$primary" "$STATE_DIR/primary.log" "primary on 127.0.0.1:$primary_port" "$primary_port"
    # The stanza right away, so the first WAL segments (pg_basebackup below
    # switches one) are archived at once instead of failing until it exists.
    if [[ $BACKUP == 1 ]]; then
        "$SCRIPTS_DIR/backup.sh" init "$STATE_DIR" 9>&- ||
            die "setting up pgBackRest for $STATE_DIR failed (see above; logs in $STATE_DIR/pgbackrest/log)"
    fi

    # --- replicas ----------------------------------------------------------
    start_replica replica "$replica_port" "$primary_port"
    local replicas=1
    if [[ -n $replica2_port ]]; then
        start_replica replica2 "$replica2_port" "$primary_port"
        replicas=2
    fi

    # --- wait for streaming -------------------------------------------------
    local deadline=$((SECONDS + TIMEOUT)) streaming recovery recovery2
    while :; do
        streaming=$(query "$primary_port" \
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'" || true)
        recovery=$(query "$replica_port" "SELECT pg_is_in_recovery()" || true)
        recovery2=t
        if [[ -n $replica2_port ]]; then
            recovery2=$(query "$replica2_port" "SELECT pg_is_in_recovery()" || true)
        fi
        if [[ ${streaming:-0} -ge $replicas && $recovery == t && $recovery2 == t ]]; then
            break
        fi
        if ((SECONDS >= deadline)); then
            log "replicas are not streaming after ${TIMEOUT}s (primary sees ${streaming:-?} of $replicas streaming, replica in recovery: ${recovery:-?}, replica2: ${recovery2:-?})"
            tail -n 20 -- "$STATE_DIR/replica.log" >&2 || true
            exit 1
        fi
        sleep 0.2
    done
    log "replicas streaming from primary (primary :$primary_port, replica :$replica_port${replica2_port:+, replica2 :$replica2_port}, state $STATE_DIR)"
    printf 'PRIMARY_URL=postgres://postgres@127.0.0.1:%s/postgres\n' "$primary_port"
    printf 'REPLICA_URL=postgres://postgres@127.0.0.1:%s/postgres\n' "$replica_port"
    if [[ -n $replica2_port ]]; then
        printf 'REPLICA2_URL=postgres://postgres@127.0.0.1:%s/postgres\n' "$replica2_port"
    fi
}

# Creates the replica NAME (a base backup of the primary) unless it exists,
# and starts it on PORT.
start_replica() {
    local name=$1 port=$2 primary_port=$3 sockdir
    local datadir=$STATE_DIR/$name
    sockdir=$(socket_dir)
    if [[ ! -f $datadir/PG_VERSION ]]; then
        log "pg_basebackup into $datadir"
        rm -rf -- "$datadir"
        as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$primary_port" -U postgres \
            -D "$datadir" -R -X stream -c fast >"$STATE_DIR/basebackup.log" 2>&1 || {
            tail -n 30 "$STATE_DIR/basebackup.log" >&2
            rm -rf -- "$datadir"
            die "pg_basebackup failed"
        }
    fi
    if ! is_running "$datadir"; then
        write_managed_conf "$datadir" "$port" "audit_$name" "$sockdir"
        # pg_basebackup -R wrote the primary's port into primary_conninfo;
        # keep it right if the cluster is restarted on other ports.
        as_pg sed -i -E "/^primary_conninfo/ s/([' ])port=[0-9]+/\\1port=$primary_port/" \
            "$datadir/postgresql.auto.conf"
        if [[ ! -f $datadir/standby.signal ]]; then as_pg touch "$datadir/standby.signal"; fi
    fi
    start_server "$datadir" "$STATE_DIR/$name.log" "$name on 127.0.0.1:$port" "$port"
}

stop_server() {
    local datadir=$1 name=$2
    if ! is_running "$datadir"; then
        return 0
    fi
    log "stopping $name"
    # fast: roll back open sessions (test harnesses may leave pools open).
    if ! as_pg "$PG_BIN/pg_ctl" -D "$datadir" -m fast -w -t "$TIMEOUT" stop >/dev/null; then
        log "$name did not stop in ${TIMEOUT}s; stopping it immediately"
        as_pg "$PG_BIN/pg_ctl" -D "$datadir" -m immediate -w -t "$TIMEOUT" stop >/dev/null
    fi
}

cmd_stop() {
    check_binaries
    if ! prepare_state_dir 0; then
        log "nothing to stop: $STATE_DIR does not exist"
        return 0
    fi
    exec 9>"$STATE_DIR/.pg-cluster.lock"
    flock -w "$TIMEOUT" 9 || die "another pg-cluster.sh is working on $STATE_DIR"
    if [[ -n ${1:-} ]]; then
        stop_server "$STATE_DIR/$1" "$1"
        log "stopped $1 ($STATE_DIR)"
        return 0
    fi
    # Replicas first, so the primary's shutdown does not wait on a walsender.
    stop_server "$STATE_DIR/replica2" replica2
    stop_server "$STATE_DIR/replica" replica
    stop_server "$STATE_DIR/primary" primary
    local sockdir
    sockdir=$(socket_dir)
    [[ $sockdir == "$STATE_DIR" ]] || rmdir -- "$sockdir" 2>/dev/null || true
    log "stopped ($STATE_DIR)"
}

# Exit status 0 when both servers run and the replica streams, 3 otherwise
# (3 is what pg_ctl status uses for "not running").
cmd_status() {
    if ! prepare_state_dir 0; then
        echo "no cluster: $STATE_DIR does not exist"
        return 3
    fi
    local ok=0 name datadir port names=(primary replica)
    [[ ! -d $STATE_DIR/replica2 ]] || names+=(replica2)
    for name in "${names[@]}"; do
        datadir=$STATE_DIR/$name
        port=$(server_port "$datadir")
        if is_running "$datadir"; then
            echo "$name: running on 127.0.0.1:$port ($datadir)"
        elif [[ -f $datadir/PG_VERSION ]]; then
            echo "$name: stopped ($datadir)"
            ok=3
        else
            echo "$name: not created"
            ok=3
        fi
    done
    if [[ $ok == 0 ]]; then
        local rep
        rep=$(query "$(server_port "$STATE_DIR/primary")" \
            "SELECT application_name || ' ' || state || ' replay_lsn=' || coalesce(replay_lsn::text, '-') FROM pg_stat_replication" || true)
        if [[ -n $rep ]]; then
            echo "replication: $rep"
        else
            echo "replication: no walsender on the primary"
            ok=3
        fi
    fi
    return "$ok"
}

[[ $# -ge 2 ]] || usage
command=$1
STATE_DIR=$2
case $command in
start)
    [[ $# -eq 4 || $# -eq 5 ]] || usage
    cmd_start "$3" "$4" "${5:-}"
    ;;
stop)
    [[ $# -eq 2 || $# -eq 3 ]] || usage
    case ${3:-} in "" | primary | replica | replica2) ;; *) usage ;; esac
    cmd_stop "${3:-}"
    ;;
status)
    [[ $# -eq 2 ]] || usage
    cmd_status
    ;;
*) usage ;;
esac
