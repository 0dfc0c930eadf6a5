#!/usr/bin/env python3
"""Writes the Grafana dashboard of audit-writer and audit-reader to stdout.

    python3 scripts/dashboard.py > helm/signal-audit/files/dashboard.json

The JSON is generated so that every panel has the same shape and the queries
stay readable here; scripts/test.sh (step alerts) checks the committed file
is this script's output and that every metric it queries is in the
catalogue (docs/metrics.md). The chart ships the file as a ConfigMap
labelled grafana_dashboard: "1" for Grafana's dashboard sidecar.
"""
import json

# Every query is limited to the namespaces picked in the $namespace variable
# (all by default; without the Prometheus Operator there is no namespace
# label and the matcher .* still matches).
NS = 'namespace=~"$namespace"'
W = f'job="audit-writer", {NS}'
R = f'job="audit-reader", {NS}'
ALL = f'job=~"audit-writer|audit-reader", {NS}'
RATE = "$__rate_interval"

panels = []
_y = 0
_x = 0
_row_height = 0
_next_id = 1


def _place(width, height):
    global _x, _y, _row_height
    if _x + width > 24:
        _x, _y, _row_height = 0, _y + _row_height, 0
    pos = {"h": height, "w": width, "x": _x, "y": _y}
    _x += width
    _row_height = max(_row_height, height)
    return pos


def _id():
    global _next_id
    _next_id += 1
    return _next_id - 1


def row(title):
    global _x, _y, _row_height
    _y += _row_height
    _x, _row_height = 0, 0
    panels.append({"type": "row", "id": _id(), "title": title, "collapsed": False,
                   "gridPos": _place(24, 1), "panels": []})
    _x, _y, _row_height = 0, _y + 1, 0


def _targets(queries):
    return [{"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend,
             "datasource": {"type": "prometheus", "uid": "${datasource}"}}
            for i, (expr, legend) in enumerate(queries)]


def timeseries(title, description, unit, queries, width=12, height=8, stack=False, min_zero=True):
    defaults = {"unit": unit, "custom": {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
                                         "stacking": {"mode": "normal" if stack else "none"}}}
    if min_zero:
        defaults["min"] = 0
    panels.append({
        "type": "timeseries", "id": _id(), "title": title, "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": _place(width, height),
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max", "lastNotNull"]},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": _targets(queries),
    })


def stat(title, description, unit, expr, steps, width=4, height=4, legend=""):
    """`steps`: (colour, from value) pairs, the first from None (the bottom)."""
    steps = [{"color": c, "value": v} for c, v in steps]
    panels.append({
        "type": "stat", "id": _id(), "title": title, "description": description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": _place(width, height),
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}}, "overrides": []},
        "options": {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "background", "graphMode": "none", "textMode": "auto"},
        "targets": _targets([(expr, legend)]),
    })


row("Overview")
stat("Writer pods up", "Writer targets Prometheus scrapes successfully.", "none",
     f"sum(up{{{W}}})", [("red", None), ("green", 1)], legend="up")
stat("Reader pods up", "Reader targets Prometheus scrapes successfully.", "none",
     f"sum(up{{{R}}})", [("red", None), ("green", 1)], legend="up")
stat("Replica lag (max)", "Largest replay lag any reader sees; reads with a consistency token wait up to 5 s.", "s",
     f"max(audit_reader_replica_lag_seconds{{{R}}})", [("green", None), ("orange", 5), ("red", 60)])
stat("Partitions premade", "Whole days of signal_events partitions after today (alert below 1).", "d",
     f"min(audit_partitions_premade_days{{{W}}})", [("red", None), ("orange", 1), ("green", 3)])
stat("Stuck signals", "Non-terminal signals not updated for an hour.", "none",
     f"max(audit_stuck_signals{{{W}}})", [("green", None), ("orange", 1)])
stat("Data-quality findings", "Findings of the last periodic check, all kinds.", "none",
     f"sum(max by (kind) (audit_data_quality_findings{{{W}}}))", [("green", None), ("orange", 1)])
timeseries("Versions running", "audit_build_info per version: pods per service and version (a rollout shows two).",
           "none", [(f"count by (service_name, version) (audit_build_info{{{ALL}}})", "{{service_name}} {{version}}")],
           width=24, height=5)

row("gRPC calls")
timeseries("Call rate by method", "Calls per second (rpc_server_duration_seconds_count), all status codes.", "reqps",
           [(f"sum by (job, rpc_method) (rate(rpc_server_duration_seconds_count{{{ALL}}}[{RATE}]))", "{{job}} {{rpc_method}}")],
           stack=True)
timeseries("Errors by code", "Non-OK calls per second by gRPC status code (3 INVALID_ARGUMENT, 5 NOT_FOUND, 6 ALREADY_EXISTS, 8 RESOURCE_EXHAUSTED, 13 INTERNAL, 14 UNAVAILABLE).",
           "reqps",
           [(f'sum by (job, rpc_grpc_status_code) (rate(rpc_server_duration_seconds_count{{{ALL}, rpc_grpc_status_code!="0"}}[{RATE}]))',
             "{{job}} code {{rpc_grpc_status_code}}")], stack=True)
timeseries("Server error ratio", "Share of calls ending in a server error (codes other than 0, 1, 3, 5, 6, 8); the alert fires above 5%.",
           "percentunit",
           [(f'sum by (job) (rate(rpc_server_duration_seconds_count{{{ALL}, rpc_grpc_status_code!~"0|1|3|5|6|8"}}[{RATE}]))'
             f" / sum by (job) (rate(rpc_server_duration_seconds_count{{{ALL}}}[{RATE}]))", "{{job}}")])
timeseries("RESOURCE_EXHAUSTED and refusals", "Calls refused as overload, and the writer's refusals by the limit that was hit.",
           "reqps",
           [(f'sum by (job) (rate(rpc_server_duration_seconds_count{{{ALL}, rpc_grpc_status_code="8"}}[{RATE}]))', "{{job}} RESOURCE_EXHAUSTED"),
            (f"sum by (reason) (rate(audit_writer_refusals_total{{{W}}}[{RATE}]))", "writer refusal: {{reason}}")])
timeseries("Latency p50 by method", "Median call duration per method.", "s",
           [(f"histogram_quantile(0.5, sum by (job, rpc_method, le) (rate(rpc_server_duration_seconds_bucket{{{ALL}}}[{RATE}])))",
             "{{job}} {{rpc_method}}")])
timeseries("Latency p99 by method", "99th percentile call duration per method (targets: unary writes 20 ms at half of peak, dashboard RPCs 50 ms).", "s",
           [(f"histogram_quantile(0.99, sum by (job, rpc_method, le) (rate(rpc_server_duration_seconds_bucket{{{ALL}}}[{RATE}])))",
             "{{job}} {{rpc_method}}")])

row("Database connection pools")
timeseries("Connections used / max", "Connections in use per pod and pool, against the pool's maximum.", "none",
           [(f'sum by (instance, pool_name) (db_client_connection_count{{{ALL}, state="used"}})', "{{instance}} {{pool_name}} used"),
            (f'sum by (instance, pool_name) (db_client_connection_count{{{ALL}, state="idle"}})', "{{instance}} {{pool_name}} idle"),
            (f"max by (pool_name) (db_client_connection_max{{{ALL}}})", "{{pool_name}} max")], width=8)
timeseries("Pending requests", "Callers waiting for a pooled connection.", "none",
           [(f"sum by (instance, pool_name) (db_client_connection_pending_requests{{{ALL}}})", "{{instance}} {{pool_name}}")], width=8)
timeseries("Connection waits", "Wait for a pooled connection (p50, p99) and waits that timed out (UNAVAILABLE).", "s",
           [(f"histogram_quantile(0.5, sum by (pool_name, le) (rate(db_client_connection_wait_time_seconds_bucket{{{ALL}}}[{RATE}])))", "{{pool_name}} p50"),
            (f"histogram_quantile(0.99, sum by (pool_name, le) (rate(db_client_connection_wait_time_seconds_bucket{{{ALL}}}[{RATE}])))", "{{pool_name}} p99"),
            (f"sum by (pool_name) (rate(db_client_connection_timeouts_total{{{ALL}}}[{RATE}]))", "{{pool_name}} timeouts/s")], width=8)

row("Writer: group commit and Ingest")
timeseries("Group commit size", "Items (signals + events) per group commit: p50, p99 and mean.", "none",
           [(f"histogram_quantile(0.5, sum by (le) (rate(audit_writer_group_commit_size_bucket{{{W}}}[{RATE}])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(audit_writer_group_commit_size_bucket{{{W}}}[{RATE}])))", "p99"),
            (f"sum(rate(audit_writer_group_commit_size_sum{{{W}}}[{RATE}])) / sum(rate(audit_writer_group_commit_size_count{{{W}}}[{RATE}]))", "mean")],
           width=8)
timeseries("Group commit queue", "Calls queued for a group commit per pod, and the length at which calls are refused.", "none",
           [(f"sum by (instance) (audit_writer_group_commit_queue_depth{{{W}}})", "{{instance}} depth"),
            (f"max(audit_writer_group_commit_queue_capacity{{{W}}})", "capacity")], width=8)
timeseries("Ingest slots", "Ingest stream slots in use per pod, against the slots in all.", "none",
           [(f"sum by (instance) (audit_writer_ingest_streams_in_use{{{W}}})", "{{instance}} in use"),
            (f"max(audit_writer_ingest_streams_max{{{W}}})", "max")], width=8)

row("Background jobs")
timeseries("Job duration p99", "99th percentile run time per job.", "s",
           [(f"histogram_quantile(0.99, sum by (job_name, le) (rate(audit_job_duration_seconds_bucket{{{W}}}[{RATE}])))", "{{job_name}}")],
           width=8)
timeseries("Job runs by outcome", "Runs per second by job and outcome; any error line deserves a look at the writer log.", "ops",
           [(f"sum by (job_name, outcome) (rate(audit_job_runs_total{{{W}}}[{RATE}]))", "{{job_name}} {{outcome}}")], width=8)
timeseries("Time since last success", "Per job; see AuditJobNotSucceededRecently for the limits.", "s",
           [(f"time() - max by (job_name) (audit_job_last_success_timestamp_seconds{{{W}}})", "{{job_name}}")], width=8)
timeseries("Rollup backlog", "Age of the oldest minute waiting for the rollup refresher (0 = up to date).", "s",
           [(f"max(audit_rollup_backlog_seconds{{{W}}})", "backlog")])
timeseries("Analytics tables age", "Time since the hourly analytics tables (stage latencies, ticker activity) were last brought up to date.", "s",
           [(f"min(audit_analytics_age_seconds{{{W}}})", "age")])

row("Reader: replica and cache")
timeseries("Replica lag", "Replay lag per replica as each reader sees it.", "s",
           [(f"max by (replica, instance) (audit_reader_replica_lag_seconds{{{R}}})", "{{replica}} via {{instance}}")], width=8)
timeseries("Replica up", "1 while a reader's health check reaches the replica.", "none",
           [(f"min by (replica, instance) (audit_reader_replica_up{{{R}}})", "{{replica}} via {{instance}}")], width=8)
timeseries("Cache hit ratio", "Share of GetMetrics/GetTimeSeries look-ups answered from each cache tier.", "percentunit",
           [(f'sum by (tier) (rate(audit_reader_cache_requests_total{{{R}, result="hit"}}[{RATE}]))'
             f" / sum by (tier) (rate(audit_reader_cache_requests_total{{{R}}}[{RATE}]))", "{{tier}}")], width=8)

row("Data")
timeseries("Partitions premade", "Whole days of signal_events partitions after today.", "d",
           [(f"min(audit_partitions_premade_days{{{W}}})", "days")], width=8)
timeseries("Stuck signals", "Non-terminal signals not updated for an hour.", "none",
           [(f"max(audit_stuck_signals{{{W}}})", "stuck")], width=8)
timeseries("Data-quality findings by kind", "From the periodic data-quality check; CheckDataQuality lists the ids.", "none",
           [(f"max by (kind) (audit_data_quality_findings{{{W}}})", "{{kind}}")], width=8, stack=True)

dashboard = {
    "uid": "signal-audit",
    "title": "Signal Audit Trail",
    "description": "audit-writer and audit-reader: calls, errors, latency, pools, group commit, jobs, replica and data quality. Metrics: docs/metrics.md.",
    "tags": ["signal-audit", "grpc", "postgresql"],
    "timezone": "utc",
    "editable": True,
    "graphTooltip": 1,
    "refresh": "30s",
    "schemaVersion": 39,
    "version": 1,
    "time": {"from": "now-6h", "to": "now"},
    "templating": {"list": [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "refresh": 1},
        {"name": "namespace", "label": "Namespace", "type": "query",
         "datasource": {"type": "prometheus", "uid": "${datasource}"},
         "query": {"query": "label_values(audit_build_info, namespace)", "refId": "namespace"},
         "definition": "label_values(audit_build_info, namespace)",
         "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "hide": 0, "refresh": 2, "sort": 1},
    ]},
    "annotations": {"list": [{
        "builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"}, "enable": True, "hide": True,
        "iconColor": "rgba(0, 211, 255, 1)", "name": "Annotations & Alerts", "type": "dashboard"}]},
    "panels": panels,
}
print(json.dumps(dashboard, indent=2))
