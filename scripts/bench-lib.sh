# Sourced by the bench scripts (not run): a throw-away primary + streaming
# replica, and PostgreSQL's own ingest limit for the migration plan's
# minimal schema. Expects ROOT as the working directory and PG_BIN set.

# Starts a primary + replica (scripts/pg-cluster.sh) in a new folder
# /tmp/PREFIX-XXXXXX, exported as STATE, and stops and removes both on exit,
# also on error or Ctrl-C.
#   bench_cluster_start PREFIX PRIMARY_PORT REPLICA_PORT
bench_cluster_start() {
    STATE=$(mktemp -d "/tmp/$1-XXXXXX")
    # pg-cluster.sh hands the folder to the postgres user when run as root.
    chmod 755 "$STATE"
    trap bench_cluster_cleanup EXIT
    trap 'exit 130' INT TERM
    scripts/pg-cluster.sh start "$STATE" "$2" "$3" >/dev/null
}

bench_cluster_cleanup() {
    scripts/pg-cluster.sh stop "$STATE" >/dev/null 2>&1 || true
    rm -rf -- "$STATE"
}

# Creates database NAME on the cluster's primary at PORT and migrates it
# with WRITER_BIN (`audit-writer migrate`).
#   bench_database PORT NAME WRITER_BIN
bench_database() {
    "$PG_BIN/psql" -X -q -h 127.0.0.1 -p "$1" -U postgres -d postgres -c "CREATE DATABASE $2"
    AUDIT_DATABASE_URL="postgres://postgres@127.0.0.1:$1/$2" RUST_LOG=warn "$3" migrate
}

# Prints the seed-schema limit in signals/s measured on PORT (a scratch
# database of its own, the cluster's replica attached), or nothing when
# the script is absent.
#   seed_limit SCRIPT PORT [SECONDS]
seed_limit() {
    [[ -f $1 ]] || return 0
    local line
    line=$(PG_BIN=$PG_BIN bash "$1" "$2" ${3:+"$3"} | tail -n 1)
    echo "${line#*=}"
}
