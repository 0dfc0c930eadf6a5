# Sourced by the scripts that run PostgreSQL's server-side commands
# (pg-cluster.sh, backup.sh); needs their `die`. Defines AS_ROOT, PG_HOME and
# `as_pg COMMAND...`.
#
# initdb and postgres refuse to run as root, so as root every server-side
# command runs as the `postgres` OS user; a normal user runs them directly.
# HOME is set so libpq does not look for root's ~/.pgpass (pg_basebackup -R
# would otherwise write that path into primary_conninfo).
if [[ $(id -u) -eq 0 ]]; then
    AS_ROOT=1
    getent passwd postgres >/dev/null ||
        die "running as root but there is no 'postgres' OS user (is postgresql-15 installed? see scripts/install-deps.sh)"
    PG_HOME=$(getent passwd postgres | cut -d: -f6)
    as_pg() { runuser -u postgres -- env HOME="$PG_HOME" "$@"; }
else
    AS_ROOT=0
    as_pg() { "$@"; }
fi
