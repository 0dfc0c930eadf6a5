#!/usr/bin/env bash
# The whole system on this machine: a PostgreSQL 15 primary + streaming
# replica (scripts/pg-cluster.sh), the schema (audit-writer migrate), and
# both gRPC services running in the background.
#
#   scripts/stack.sh up       build, migrate, start; waits until both answer health checks
#   scripts/stack.sh down     stop both services (SIGTERM) and the cluster
#   scripts/stack.sh status   what runs where
#
# Environment (defaults in brackets):
#   AUDIT_STACK_DIR           state folder, repo-relative unless absolute [.stack]
#   AUDIT_STACK_PRIMARY_PORT  primary's port [15432]
#   AUDIT_STACK_REPLICA_PORT  replica's port [15433]
#   AUDIT_STACK_REPLICAS      streaming replicas, 1 or 2; with 2 the reader
#                             spreads its calls over both [1]
#   AUDIT_STACK_REPLICA2_PORT the second replica's port [15434]
#   AUDIT_WRITER_LISTEN       audit-writer's listen address [127.0.0.1:15051]
#   AUDIT_READER_LISTEN       audit-reader's listen address [127.0.0.1:15052]
#   AUDIT_WRITER_METRICS_LISTEN / AUDIT_READER_METRICS_LISTEN
#                             the services' metrics endpoints, passed to each
#                             as AUDIT_METRICS_LISTEN (docs/metrics.md)
#                             [127.0.0.1:15091 / 127.0.0.1:15092]
#   AUDIT_STACK_BACKUP        1: WAL archiving + pgBackRest repository in the
#                             state folder (scripts/backup.sh); 0: none [1]
#   AUDIT_STACK_SKIP_BUILD=1  use the release binaries already built
#   AUDIT_STACK_SECURE=1      secure mode (below) [0: plaintext, no auth]
#   RUST_LOG                  passed to both services [info]
#
# Secure mode, as in production: certificates from a CA of the stack's own
# (openssl, in STACK_DIR/tls); PostgreSQL with ssl = on, both services
# connecting with sslmode=verify-full as login users of the least-privilege
# roles (audit_writer_svc IN ROLE audit_writer, audit_reader_svc IN ROLE
# audit_reader, and audit_admin_svc IN ROLE audit_admin for audit-admin:
# AUDIT_ADMIN_DATABASE_URL; migrations run as the owner); gRPC over TLS; callers need a
# bearer token (writer, reader and admin tokens, hashed in STACK_DIR/tokens,
# in clear only in STACK_DIR/secrets.env, mode 600). STACK_DIR/env exports
# what grpcurl needs (AUDIT_GRPC_CACERT and the tokens).
# scripts/test.sh runs a second stack on other ports and folder at the same
# time as a developer's, which is why everything here is configurable.
# Every default port is below the kernel's ephemeral range (32768-60999 on
# Linux), so a client connection can never be holding one as its source
# port; a port that is taken anyway stops `up` with a message naming it and,
# when `ss -tanp` can tell, the process holding it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

STACK_DIR=${AUDIT_STACK_DIR:-.stack}
[[ $STACK_DIR == /* ]] || STACK_DIR=$ROOT/$STACK_DIR
PRIMARY_PORT=${AUDIT_STACK_PRIMARY_PORT:-15432}
REPLICA_PORT=${AUDIT_STACK_REPLICA_PORT:-15433}
REPLICAS=${AUDIT_STACK_REPLICAS:-1}
[[ $REPLICAS == 1 || $REPLICAS == 2 ]] || {
    echo "stack: AUDIT_STACK_REPLICAS must be 1 or 2, not '$REPLICAS'" >&2
    exit 2
}
REPLICA2_PORT=${AUDIT_STACK_REPLICA2_PORT:-15434}
# The replica ports in use: the second only with AUDIT_STACK_REPLICAS=2.
REPLICA_PORTS=("$REPLICA_PORT")
[[ $REPLICAS == 1 ]] || REPLICA_PORTS+=("$REPLICA2_PORT")
WRITER_LISTEN=${AUDIT_WRITER_LISTEN:-127.0.0.1:15051}
READER_LISTEN=${AUDIT_READER_LISTEN:-127.0.0.1:15052}
WRITER_METRICS_LISTEN=${AUDIT_WRITER_METRICS_LISTEN:-127.0.0.1:15091}
READER_METRICS_LISTEN=${AUDIT_READER_METRICS_LISTEN:-127.0.0.1:15092}
BACKUP=${AUDIT_STACK_BACKUP:-1}
DB_NAME=signal_audit
PRIMARY_URL=postgres://postgres@127.0.0.1:$PRIMARY_PORT/$DB_NAME
REPLICA_URL=postgres://postgres@127.0.0.1:$REPLICA_PORT/$DB_NAME
# What the reader is given: every replica, comma-separated.
READER_REPLICA_URLS=$REPLICA_URL
[[ $REPLICAS == 1 ]] || READER_REPLICA_URLS+=",postgres://postgres@127.0.0.1:$REPLICA2_PORT/$DB_NAME"
HEALTH_TIMEOUT=60
SECURE=${AUDIT_STACK_SECURE:-0}
TLS_DIR=$STACK_DIR/tls
PSQL=${PG_BIN:-/usr/lib/postgresql/15/bin}/psql

# shellcheck source=scripts/port-check.sh
source "$ROOT/scripts/port-check.sh"

# grpcurl and buf may come from pip; helm from scripts/install-helm.sh.
PATH=$ROOT/.tools/bin:$PATH
py_scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
[[ -z $py_scripts ]] || PATH=$PATH:$py_scripts
PATH=$PATH:$HOME/.local/bin

log() { printf 'stack: %s\n' "$*" >&2; }
die() {
    printf 'stack: error: %s\n' "$*" >&2
    exit 1
}

# Where a client reaches a listen address: a wildcard host means loopback.
connect_addr() {
    local addr=$1 host port
    host=${addr%:*}
    port=${addr##*:}
    case $host in
    0.0.0.0 | "" | "[::]") host=127.0.0.1 ;;
    esac
    printf '%s:%s\n' "$host" "$port"
}
WRITER_ADDR=$(connect_addr "$WRITER_LISTEN")
READER_ADDR=$(connect_addr "$READER_LISTEN")
WRITER_METRICS_URL=http://$(connect_addr "$WRITER_METRICS_LISTEN")/metrics
READER_METRICS_URL=http://$(connect_addr "$READER_METRICS_LISTEN")/metrics

psql_primary() { "$PSQL" -X -q -At -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres "$@"; }
psql_replica() { "$PSQL" -X -q -At -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres "$@"; }
psql_replica2() { "$PSQL" -X -q -At -h 127.0.0.1 -p "$REPLICA2_PORT" -U postgres "$@"; }

target_dir() {
    cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' ||
        echo "$ROOT/target"
}

# PID of a running service from its pid file, checked against
# /proc/PID/cmdline so a recycled PID is never mistaken for ours.
service_pid() {
    local name=$1 pidfile=$STACK_DIR/$1.pid pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "audit-$name" || return 1
    echo "$pid"
}

# Health of a gRPC service by name: the services report NOT_SERVING under
# their own name while their database is unreachable, so this waits for the
# database too, not just for the port.
service_name() {
    case $1 in
    writer) echo signal_audit.v1.SignalWriterService ;;
    reader) echo signal_audit.v1.SignalReaderService ;;
    esac
}

# Plaintext, or TLS trusting the stack's CA in secure mode (health needs no token).
grpc_transport() {
    if [[ $SECURE == 1 ]]; then echo -cacert "$TLS_DIR/ca.crt"; else echo -plaintext; fi
}

health() {
    # shellcheck disable=SC2046 # the transport flags are words on purpose
    grpcurl $(grpc_transport) -max-time 3 -d "{\"service\":\"$(service_name "$2")\"}" \
        "$1" grpc.health.v1.Health/Check 2>&1
}

is_serving() { health "$1" "$2" | grep -q '"status": "SERVING"'; }

stop_service() {
    local name=$1 pid i
    if pid=$(service_pid "$name"); then
        log "stopping audit-$name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        # Graceful shutdown drains in-flight calls; give it 20 s.
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "audit-$name did not exit after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f -- "$STACK_DIR/$name.pid"
}

check_listen_free() {
    local name=$1 listen=$2 why
    if why=$(port_conflict "${listen##*:}"); then
        die "audit-$name cannot listen on $listen: $why. Is another audit-$name or stack running? (AUDIT_${name^^}_LISTEN picks another address)"
    fi
}

# The /metrics endpoints: a service that cannot bind its own stops at
# start-up, so say why before starting it.
check_metrics_free() {
    local name=$1 listen=$2 why
    if why=$(port_conflict "${listen##*:}"); then
        die "audit-$name cannot serve /metrics on $listen: $why. (AUDIT_${name^^}_METRICS_LISTEN picks another address)"
    fi
}

# True when PID itself listens on PORT (so a health answer is really ours,
# not from another process on the same port). Without ss: assumed true.
owns_port() {
    local pid=$1 port=$2
    command -v ss >/dev/null 2>&1 || return 0
    local sockets
    sockets=$(ss -Hltnp "sport = :$port" 2>/dev/null) || return 0
    # Without the right to see processes, ss shows no users: cannot tell.
    [[ $sockets == *users:* ]] || return 0
    [[ $sockets == *"pid=$pid,"* ]]
}

# Prints the current run's part of a service log (the file is appended to).
log_tail() {
    local name=$1 file=$STACK_DIR/$1.log
    awk '/^==== .* audit-'"$name"' serve ====$/ { n = NR } { line[NR] = $0 }
         END { start = (n && NR - n < 40) ? n : NR - 39; if (start < 1) start = 1
               for (i = start; i <= NR; i++) print line[i] }' "$file" >&2 || true
}

# start_service NAME LISTEN_ADDR ENV... : runs `audit-NAME serve` detached,
# output appended to STACK_DIR/NAME.log.
start_service() {
    local name=$1 listen=$2 bin
    shift 2
    bin=$BIN_DIR/audit-$name
    log "starting audit-$name serve on $listen"
    {
        printf '\n==== %s audit-%s serve ====\n' "$(date -Is)" "$name"
    } >>"$STACK_DIR/$name.log"
    # nohup + </dev/null + own log file: the service must outlive this
    # script and must not hold the caller's terminal or pipes open.
    # NO_COLOR: plain log files (tracing-subscriber honours it).
    nohup env RUST_LOG="${RUST_LOG:-info}" NO_COLOR=1 "$@" "$bin" serve \
        >>"$STACK_DIR/$name.log" 2>&1 </dev/null &
    echo $! >"$STACK_DIR/$name.pid"
}

# Dies naming the address when the run's log says the service could not
# listen (the services log "cannot listen" and exit when bind() fails).
die_if_bind_failed() {
    local name=$1 listen=$2 line reason why
    line=$(log_tail "$name" 2>&1 | grep -m 1 'cannot listen error=') || return 0
    reason=$(sed -n -E 's/.* error=(.*) listen=.*/\1/p' <<<"$line")
    if why=$(port_conflict "${listen##*:}"); then reason="${reason:-$line}; $why"; fi
    die "audit-$name could not bind $listen: ${reason:-$line} (log: $STACK_DIR/$name.log)"
}

# True while the process started for NAME runs. Not service_pid: right after
# `start_service` the child may not have exec'd the binary yet.
started_alive() {
    local pid
    pid=$(<"$STACK_DIR/$1.pid") || return 1
    kill -0 "$pid" 2>/dev/null && [[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) != Z ]]
}

wait_healthy() {
    local name=$1 addr=$2 listen=$3 deadline=$((SECONDS + HEALTH_TIMEOUT)) pid
    pid=$(<"$STACK_DIR/$name.pid")
    while :; do
        # SERVING counts only from our own process: another one answering on
        # the same address means ours is about to fail to bind (below).
        if is_serving "$addr" "$name" && owns_port "$pid" "${listen##*:}"; then
            break
        fi
        if ! started_alive "$name"; then
            die_if_bind_failed "$name" "$listen"
            log "audit-$name exited during startup; its log ($STACK_DIR/$name.log):"
            log_tail "$name"
            exit 1
        fi
        if ((SECONDS >= deadline)); then
            log "audit-$name is not SERVING at $addr after ${HEALTH_TIMEOUT}s; health check said:"
            health "$addr" "$name" | sed 's/^/  /' >&2 || true
            log "$(port_conflict "${listen##*:}" || echo "nothing else holds port ${listen##*:}")"
            log "its log ($STACK_DIR/$name.log):"
            log_tail "$name"
            exit 1
        fi
        sleep 0.5
    done
    log "audit-$name SERVING at $addr"
}

backup_help() {
    [[ $BACKUP == 1 ]] || return 0
    cat <<EOF

  # backups (pgBackRest, repository in $STACK_DIR/pgbackrest): full, incremental, list,
  # and a point-in-time copy in a fresh folder on another port
  scripts/backup.sh backup $STACK_DIR full
  scripts/backup.sh backup $STACK_DIR incr
  scripts/backup.sh info $STACK_DIR
  scripts/backup.sh restore $STACK_DIR --to "\$(date -u '+%F %T+00')" /tmp/audit-restore 15434
EOF
}

print_usage_help() {
    cat <<EOF

Signal Audit Trail stack is up.
  primary (read-write)  $PRIMARY_URL
  replica (read-only)   $READER_REPLICA_URLS
  audit-writer          $WRITER_ADDR   log $STACK_DIR/writer.log
  audit-reader          $READER_ADDR   log $STACK_DIR/reader.log
  metrics               $WRITER_METRICS_URL  $READER_METRICS_URL
  env for shells        source $STACK_DIR/env

Try it (copy-paste):

  # services and methods, via server reflection
  grpcurl -plaintext $WRITER_ADDR list
  grpcurl -plaintext $READER_ADDR list
  grpcurl -plaintext $WRITER_ADDR describe signal_audit.v1.SignalWriterService
  grpcurl -plaintext $WRITER_ADDR grpc.health.v1.Health/Check
  grpcurl -plaintext -d '{"service":"signal_audit.v1.SignalReaderService"}' $READER_ADDR grpc.health.v1.Health/Check

  # record a signal; the answer holds signal.signal_id and consistency_token.lsn
  grpcurl -plaintext -d '{"signal":{"ticker":"NASDAQ:AAPL","side":"buy","action":"open","price":187.25,"original_signal_json":"{\"raw\":\"buy AAPL\"}"}}' \\
    $WRITER_ADDR signal_audit.v1.SignalWriterService/RecordSignal

  # record a pipeline step (event_id: a fresh UUID, so retries never duplicate)
  grpcurl -plaintext -d '{"event":{"event_id":"'\$(cat /proc/sys/kernel/random/uuid)'","signal_id":"SIGNAL_ID","event_type":"SIGNAL_STATUS_QUEUED_PROCESSING","location":"SIGNAL_LOCATION_PROCESSING_QUEUE","worker_id":"worker-1","details":"queued"}}' \\
    $WRITER_ADDR signal_audit.v1.SignalWriterService/RecordEvent

  # read it back from the replica, waiting until it has replayed the write
  grpcurl -plaintext -d '{"signal_id":"SIGNAL_ID","consistency_token":{"lsn":"LSN"}}' \\
    $READER_ADDR signal_audit.v1.SignalReaderService/GetSignal

  # list recent signals for a ticker
  grpcurl -plaintext -d '{"filter":{"normalised_ticker":"AAPL"},"page_size":10,"include_total_count":true}' \\
    $READER_ADDR signal_audit.v1.SignalReaderService/ListSignals

  # all of the above, with the IDs filled in and the answers checked:
  scripts/grpcurl-examples.sh $WRITER_ADDR $READER_ADDR
$(backup_help)

Stop everything with: scripts/stack.sh down
EOF
}

# Secure mode: a CA, and one certificate for localhost/127.0.0.1 that both
# PostgreSQL servers and both gRPC services present. Kept across `up`s.
make_certs() {
    mkdir -p -- "$TLS_DIR"
    if [[ ! -s $TLS_DIR/server.crt || ! -s $TLS_DIR/ca.crt ]]; then
        log "generating a CA and a server certificate in $TLS_DIR"
        (
            cd "$TLS_DIR"
            umask 077
            openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=signal-audit stack CA" \
                -keyout ca.key -out ca.crt 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
                -keyout server.key -out server.csr 2>/dev/null
            printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
            openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
                -extfile server.ext -out server.crt 2>/dev/null
            rm -f server.csr server.ext
            chmod 644 ca.crt server.crt
        )
    fi
    # PostgreSQL reads its own copy of the key, private to its OS user.
    cp -- "$TLS_DIR/server.key" "$TLS_DIR/pg-server.key"
    if [[ $(id -u) -eq 0 ]]; then chown postgres:postgres "$TLS_DIR/pg-server.key"; fi
    chmod 600 "$TLS_DIR/pg-server.key"
    chmod 755 "$TLS_DIR"
}

# ssl = on for one server (ALTER SYSTEM works on the standby too).
enable_pg_ssl() {
    local psql=$1
    "$psql" -d postgres -c "ALTER SYSTEM SET ssl_cert_file = '$TLS_DIR/server.crt'"
    "$psql" -d postgres -c "ALTER SYSTEM SET ssl_key_file = '$TLS_DIR/pg-server.key'"
    "$psql" -d postgres -c "ALTER SYSTEM SET ssl = on"
    "$psql" -d postgres -c "SELECT pg_reload_conf()" >/dev/null
}

# Login users of the least-privilege roles with fresh passwords, and the
# gRPC tokens (their hashes in STACK_DIR/tokens); the clear-text secrets
# only in STACK_DIR/secrets.env (mode 600).
make_credentials() {
    local writer_pw reader_pw admin_pw role token
    writer_pw=$(openssl rand -hex 16)
    reader_pw=$(openssl rand -hex 16)
    admin_pw=$(openssl rand -hex 16)
    psql_primary -d "$DB_NAME" -c "DO \$\$ BEGIN
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_writer_svc') THEN
            CREATE ROLE audit_writer_svc LOGIN IN ROLE audit_writer; END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_reader_svc') THEN
            CREATE ROLE audit_reader_svc LOGIN IN ROLE audit_reader; END IF;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'audit_admin_svc') THEN
            CREATE ROLE audit_admin_svc LOGIN IN ROLE audit_admin; END IF;
        END \$\$"
    psql_primary -d "$DB_NAME" -c "ALTER ROLE audit_writer_svc PASSWORD '$writer_pw'"
    psql_primary -d "$DB_NAME" -c "ALTER ROLE audit_reader_svc PASSWORD '$reader_pw'"
    psql_primary -d "$DB_NAME" -c "ALTER ROLE audit_admin_svc PASSWORD '$admin_pw'"
    local tls="sslmode=verify-full&sslrootcert=$TLS_DIR/ca.crt"
    : >"$STACK_DIR/tokens"
    (
        umask 077
        {
            echo "# secrets of the stack in $STACK_DIR (secure mode)"
            echo "export AUDIT_WRITER_DATABASE_URL='postgres://audit_writer_svc:$writer_pw@127.0.0.1:$PRIMARY_PORT/$DB_NAME?$tls'"
            local port urls=()
            for port in "${REPLICA_PORTS[@]}"; do
                urls+=("postgres://audit_reader_svc:$reader_pw@127.0.0.1:$port/$DB_NAME?$tls")
            done
            echo "export AUDIT_READER_DATABASE_URL='$(IFS=,; echo "${urls[*]}")'"
            # audit-admin's login (retention, purges): run it with
            # AUDIT_DATABASE_URL=$AUDIT_ADMIN_DATABASE_URL.
            echo "export AUDIT_ADMIN_DATABASE_URL='postgres://audit_admin_svc:$admin_pw@127.0.0.1:$PRIMARY_PORT/$DB_NAME?$tls'"
            for role in writer reader admin; do
                token=$(openssl rand -hex 24)
                printf '%s stack-%s %s\n' "$role" "$role" \
                    "$(printf %s "$token" | sha256sum | cut -d' ' -f1)" >>"$STACK_DIR/tokens"
                echo "export AUDIT_${role^^}_TOKEN=$token"
            done
        } >"$STACK_DIR/secrets.env"
    )
}

print_secure_help() {
    cat >&2 <<EOF

The stack runs in secure mode: TLS everywhere, callers need a token.
  source $STACK_DIR/env   # AUDIT_GRPC_CACERT, AUDIT_WRITER_TOKEN, AUDIT_READER_TOKEN, AUDIT_ADMIN_TOKEN

  grpcurl -cacert \$AUDIT_GRPC_CACERT $WRITER_ADDR list
  grpcurl -cacert \$AUDIT_GRPC_CACERT -H "authorization: Bearer \$AUDIT_WRITER_TOKEN" \\
    -d '{"signal":{"ticker":"NASDAQ:AAPL","side":"buy","action":"open","price":187.25,"original_signal_json":"{}"}}' \\
    $WRITER_ADDR signal_audit.v1.SignalWriterService/RecordSignal
  grpcurl -cacert \$AUDIT_GRPC_CACERT -H "authorization: Bearer \$AUDIT_READER_TOKEN" \\
    -d '{"page_size":10}' $READER_ADDR signal_audit.v1.SignalReaderService/ListSignals

  # every README example, IDs filled in and answers checked, over TLS with the tokens:
  source $STACK_DIR/env && scripts/grpcurl-examples.sh $WRITER_ADDR $READER_ADDR

Stop everything with: scripts/stack.sh down
EOF
}

cmd_up() {
    "$ROOT/scripts/install-deps.sh"
    command -v grpcurl >/dev/null || die "grpcurl is not on PATH (scripts/install-deps.sh installs it)"

    mkdir -p -- "$STACK_DIR"
    # Before anything starts: a running service of ours is restarted below,
    # so only an address that is not ours counts as taken.
    service_pid writer >/dev/null || check_listen_free writer "$WRITER_LISTEN"
    service_pid reader >/dev/null || check_listen_free reader "$READER_LISTEN"
    service_pid writer >/dev/null || check_metrics_free writer "$WRITER_METRICS_LISTEN"
    service_pid reader >/dev/null || check_metrics_free reader "$READER_METRICS_LISTEN"
    log "PostgreSQL primary :$PRIMARY_PORT, replica :${REPLICA_PORTS[*]} in $STACK_DIR$([[ $BACKUP != 1 ]] || echo ", WAL archiving + pgBackRest (scripts/backup.sh)")"
    PG_CLUSTER_BACKUP=$BACKUP "$ROOT/scripts/pg-cluster.sh" start "$STACK_DIR" "$PRIMARY_PORT" "${REPLICA_PORTS[@]}" >/dev/null

    if [[ -z $(psql_primary -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'") ]]; then
        log "creating database $DB_NAME"
        psql_primary -d postgres -c "CREATE DATABASE $DB_NAME"
    fi
    # The reader connects to the replica's copy; wait until it has arrived.
    local deadline=$((SECONDS + 30))
    until [[ -n $(psql_replica -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" 2>/dev/null) ]]; do
        ((SECONDS < deadline)) || die "database $DB_NAME did not reach the replica"
        sleep 0.2
    done
    while [[ $REPLICAS == 2 && -z $(psql_replica2 -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" 2>/dev/null) ]]; do
        ((SECONDS < deadline)) || die "database $DB_NAME did not reach the second replica"
        sleep 0.2
    done

    if [[ $SECURE == 1 ]]; then
        make_certs
        log "secure mode: PostgreSQL ssl = on"
        enable_pg_ssl psql_primary
        enable_pg_ssl psql_replica
        [[ $REPLICAS == 1 ]] || enable_pg_ssl psql_replica2
    fi

    if [[ ${AUDIT_STACK_SKIP_BUILD:-0} != 1 ]]; then
        # The same packages as scripts/build-image.sh: cargo unifies features
        # over the packages built together, so another set would rebuild
        # shared dependencies for the image (minutes in CI's test run).
        log "cargo build --release -p audit-writer -p audit-reader -p audit-admin"
        cargo build --release -p audit-writer -p audit-reader -p audit-admin
    fi
    BIN_DIR=$(target_dir)/release
    local b
    for b in audit-writer audit-reader; do
        [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b is missing: the release build did not produce it"
    done

    # `up` on a running stack restarts the services, so they run the binaries
    # just built.
    stop_service writer
    stop_service reader
    check_listen_free writer "$WRITER_LISTEN"
    check_listen_free reader "$READER_LISTEN"
    check_metrics_free writer "$WRITER_METRICS_LISTEN"
    check_metrics_free reader "$READER_METRICS_LISTEN"

    # The owner migrates (over verified TLS in secure mode).
    local owner_url=$PRIMARY_URL
    [[ $SECURE != 1 ]] || owner_url="$PRIMARY_URL?sslmode=verify-full&sslrootcert=$TLS_DIR/ca.crt"
    log "audit-writer migrate"
    AUDIT_DATABASE_URL=$owner_url NO_COLOR=1 "$BIN_DIR/audit-writer" migrate >>"$STACK_DIR/migrate.log" 2>&1 || {
        tail -n 40 -- "$STACK_DIR/migrate.log" >&2
        die "audit-writer migrate failed (log: $STACK_DIR/migrate.log)"
    }

    # Local development: plaintext, no caller authentication.
    local writer_env=(AUDIT_DATABASE_URL="$PRIMARY_URL" AUDIT_AUTH=off)
    local reader_env=(AUDIT_REPLICA_URL="$READER_REPLICA_URLS" AUDIT_AUTH=off)
    if [[ $SECURE == 1 ]]; then
        make_credentials
        # shellcheck source=/dev/null
        source "$STACK_DIR/secrets.env"
        local tls_env=(AUDIT_TLS_CERT_FILE="$TLS_DIR/server.crt" AUDIT_TLS_KEY_FILE="$TLS_DIR/server.key"
            AUDIT_AUTH=on AUDIT_AUTH_TOKENS_FILE="$STACK_DIR/tokens")
        writer_env=(AUDIT_DATABASE_URL="$AUDIT_WRITER_DATABASE_URL" "${tls_env[@]}")
        reader_env=(AUDIT_REPLICA_URL="$AUDIT_READER_DATABASE_URL" "${tls_env[@]}")
    fi

    start_service writer "$WRITER_LISTEN" \
        AUDIT_WRITER_LISTEN="$WRITER_LISTEN" \
        AUDIT_METRICS_LISTEN="$WRITER_METRICS_LISTEN" \
        "${writer_env[@]}"
    # The reader queries only the replica; AUDIT_PRIMARY_URL is passed for
    # tooling that wants both ends and is ignored by audit-reader today.
    start_service reader "$READER_LISTEN" \
        AUDIT_READER_LISTEN="$READER_LISTEN" \
        AUDIT_METRICS_LISTEN="$READER_METRICS_LISTEN" \
        AUDIT_PRIMARY_URL="$PRIMARY_URL" \
        "${reader_env[@]}"

    wait_healthy writer "$WRITER_ADDR" "$WRITER_LISTEN"
    wait_healthy reader "$READER_ADDR" "$READER_LISTEN"

    cat >"$STACK_DIR/env" <<EOF
# source this file to talk to the stack in $STACK_DIR
export AUDIT_DATABASE_URL=$PRIMARY_URL
export AUDIT_PRIMARY_URL=$PRIMARY_URL
export AUDIT_REPLICA_URL=$READER_REPLICA_URLS
export AUDIT_WRITER_ADDR=$WRITER_ADDR
export AUDIT_READER_ADDR=$READER_ADDR
export AUDIT_WRITER_METRICS_URL=$WRITER_METRICS_URL
export AUDIT_READER_METRICS_URL=$READER_METRICS_URL
EOF
    if [[ $BACKUP == 1 ]]; then
        cat <<EOF >>"$STACK_DIR/env"
# backups: scripts/backup.sh backup|info|restore $STACK_DIR
export AUDIT_STACK_BACKUP_DIR=$STACK_DIR
EOF
    fi
    if [[ $SECURE == 1 ]]; then
        cat >>"$STACK_DIR/env" <<EOF
# secure mode: gRPC over TLS (grpcurl -cacert \$AUDIT_GRPC_CACERT) with bearer tokens
export AUDIT_GRPC_CACERT=$TLS_DIR/ca.crt
source $STACK_DIR/secrets.env
EOF
        print_secure_help
        return 0
    fi
    print_usage_help
}

cmd_down() {
    if [[ ! -d $STACK_DIR ]]; then
        log "nothing to stop: $STACK_DIR does not exist"
        return 0
    fi
    stop_service writer
    stop_service reader
    "$ROOT/scripts/pg-cluster.sh" stop "$STACK_DIR"
}

cmd_status() {
    local rc=0 name addr pid
    for name in writer reader; do
        [[ $name == writer ]] && addr=$WRITER_ADDR || addr=$READER_ADDR
        if pid=$(service_pid "$name"); then
            if is_serving "$addr" "$name"; then
                echo "audit-$name: running (pid $pid), SERVING at $addr"
            else
                echo "audit-$name: running (pid $pid), NOT serving at $addr"
                rc=3
            fi
        else
            echo "audit-$name: not running"
            rc=3
        fi
    done
    "$ROOT/scripts/pg-cluster.sh" status "$STACK_DIR" || rc=3
    return "$rc"
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
    echo "usage: scripts/stack.sh up|down|status" >&2
    exit 2
    ;;
esac
