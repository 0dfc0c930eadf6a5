#!/usr/bin/env bash
# A real Prometheus (Debian package `prometheus`) scrapes a running stack
# with the project's alert rules; the replica is stopped and the
# AuditReplicaDown alert must go pending and then fire.
#
#   scripts/prometheus-replica-alert.sh WRITER_METRICS READER_METRICS STACK_DIR
#
# WRITER_METRICS / READER_METRICS are host:port of the services' /metrics
# endpoints, STACK_DIR the stack's folder (scripts/stack.sh; its replica is
# STACK_DIR/replica). Scrapes and rule evaluations every second; the rule
# holds for 2 minutes, so a run takes about two and a half. The replica is
# left stopped: the caller tears the stack down. Prometheus listens on
# PROMETHEUS_LISTEN [127.0.0.1:16090] and keeps its data in a temporary
# folder removed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ $# -eq 3 ]] || { sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }
WRITER=$1 READER=$2 STACK_DIR=$3
[[ $STACK_DIR == /* ]] || STACK_DIR=$ROOT/$STACK_DIR
LISTEN=${PROMETHEUS_LISTEN:-127.0.0.1:16090}
API=http://$LISTEN/api/v1
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
ALERT=AuditReplicaDown

log() { printf 'prometheus-replica-alert: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

command -v prometheus >/dev/null || die "prometheus missing (Debian package prometheus; scripts/install-deps.sh installs it as root)"
[[ -f $STACK_DIR/replica/PG_VERSION ]] || die "no replica in $STACK_DIR: start the stack first (scripts/stack.sh up)"

work=$(mktemp -d)
prom_pid=
cleanup() {
    [[ -z $prom_pid ]] || { kill "$prom_pid" 2>/dev/null; wait "$prom_pid" 2>/dev/null || true; }
    rm -rf -- "$work"
}
trap cleanup EXIT

# The scrape jobs are named as the rules expect (audit-writer, audit-reader).
cat >"$work/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/helm/signal-audit/files/alerts.yml
scrape_configs:
  - job_name: audit-writer
    static_configs: [{targets: ["$WRITER"]}]
  - job_name: audit-reader
    static_configs: [{targets: ["$READER"]}]
EOF
prometheus --config.file="$work/prometheus.yml" --web.listen-address="$LISTEN" \
    --storage.tsdb.path="$work/data" >"$work/prometheus.log" 2>&1 &
prom_pid=$!

# query URL PYTHON_EXPR: evaluates EXPR over the JSON answer `d`.
query() {
    curl -fsS "$1" 2>/dev/null | python3 -c "import json, sys; d = json.load(sys.stdin); print($2)" 2>/dev/null
}
# wait_for SECONDS WHAT URL PYTHON_EXPR: until EXPR prints True.
wait_for() {
    local deadline=$((SECONDS + $1)) what=$2
    until [[ $(query "$3" "$4") == True ]]; do
        if ((SECONDS >= deadline)); then
            log "not within $1 s: $what; Prometheus log:"
            tail -n 20 "$work/prometheus.log" >&2
            exit 1
        fi
        kill -0 "$prom_pid" 2>/dev/null || { tail -n 20 "$work/prometheus.log" >&2; die "prometheus exited"; }
        sleep 1
    done
    log "$what"
}
state() { echo "[a['state'] for a in d['data']['alerts'] if a['labels']['alertname'] == '$ALERT']"; }

wait_for 60 "both targets are up" "$API/targets" \
    "sorted(t['labels']['job'] for t in d['data']['activeTargets'] if t['health'] == 'up') == ['audit-reader', 'audit-writer']"
wait_for 30 "the rules are loaded and the replica is up" "$API/query?query=audit_reader_replica_up" \
    "[r['value'][1] for r in d['data']['result']] == ['1']"
[[ $(query "$API/alerts" "$(state)") == "[]" ]] || die "$ALERT is active while the replica runs"

log "stopping the replica"
if [[ $(id -u) -eq 0 ]]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$STACK_DIR/replica" -m fast -w stop >/dev/null
else
    "$PG_BIN/pg_ctl" -D "$STACK_DIR/replica" -m fast -w stop >/dev/null
fi

wait_for 60 "$ALERT is pending" "$API/alerts" "$(state) == ['pending']"
wait_for 180 "$ALERT fires" "$API/alerts" "$(state) == ['firing']"
