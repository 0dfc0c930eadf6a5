#!/usr/bin/env bash
# Checks that every metric the Grafana dashboard and the alert rules query is
# really exported:
#
#   scripts/check-dashboard-metrics.sh http://127.0.0.1:15091/metrics http://127.0.0.1:15092/metrics
#   scripts/check-dashboard-metrics.sh --from-file scrape.txt [--from-file other.txt]
#
# Every argument is a /metrics URL (fetched) or, after --from-file, a file
# holding Prometheus text exposition; all of them are concatenated, so pass
# the writer's and the reader's endpoints together. The metric names come
# from every PromQL expression of helm/signal-audit/files/dashboard.json
# (panel targets and template-variable queries) and
# helm/signal-audit/files/alerts.yml (override with --dashboard F / --rules F).
# Names Prometheus makes itself (up, scrape_*, ALERTS) are not looked for.
#
# Exit status: 0 when every name is found; 1 when some are missing (listed on
# stderr, with where they are used); 2 on a usage or fetch error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
dashboard=$ROOT/helm/signal-audit/files/dashboard.json
rules=$ROOT/helm/signal-audit/files/alerts.yml
sources=()

usage() {
    sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

while [[ $# -gt 0 ]]; do
    case $1 in
    --from-file) [[ $# -ge 2 ]] || usage; sources+=("file:$2"); shift 2 ;;
    --dashboard) [[ $# -ge 2 ]] || usage; dashboard=$2; shift 2 ;;
    --rules) [[ $# -ge 2 ]] || usage; rules=$2; shift 2 ;;
    -h | --help) usage ;;
    -*) echo "check-dashboard-metrics: unknown option $1" >&2; usage ;;
    *) sources+=("url:$1"); shift ;;
    esac
done
[[ ${#sources[@]} -gt 0 ]] || usage

exec python3 - "$dashboard" "$rules" "${sources[@]}" <<'EOF'
import json
import re
import sys
import urllib.request

try:
    import yaml
except ImportError:
    sys.exit("check-dashboard-metrics: python3 yaml module missing (apt-get install python3-yaml or pip install pyyaml)")

dashboard_path, rules_path, *sources = sys.argv[1:]

# Words of PromQL that look like metric names but are not.
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool",
    "and", "or", "unless", "offset", "atan2", "inf", "nan", "Inf", "NaN",
}
# Series Prometheus creates itself; no /metrics endpoint serves them.
SYNTHETIC = re.compile(r"^(up|ALERTS|ALERTS_FOR_STATE|scrape_\w+)$")
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr):
    """The metric names a PromQL expression selects."""
    # Grafana's label_values(metric_selector, label): only the selector is PromQL.
    expr = re.sub(r"label_values\(\s*([^,()]*(?:\{[^}]*\})?)\s*,[^)]*\)", r" \1 ", expr)
    expr = re.sub(r"label_values\([^)]*\)", " ", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"' r"|'(?:[^'\\]|\\.)*'|`[^`]*`", '""', expr)
    expr = re.sub(r"\{[^}]*\}", " ", expr)          # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)         # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    expr = re.sub(r"\boffset\s+-?\w+", " ", expr)
    expr = re.sub(r"\$\{[^}]*\}|\$\w+", " ", expr)  # Grafana variables
    names = set()
    for m in NAME.finditer(expr):
        before = expr[m.start() - 1] if m.start() else " "
        after = expr[m.end():].lstrip()[:1]
        if before.isdigit() or before == ".":      # 1e3, 0.5e-3
            continue
        if after == "(" or m.group() in KEYWORDS:  # functions, aggregations
            continue
        names.add(m.group())
    return names


def walk_panels(node, title, found):
    """Every `expr` under the dashboard's panels (rows nest panels)."""
    if isinstance(node, dict):
        title = node.get("title", title)
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                found.append((f"panel: {title}", value))
            else:
                walk_panels(value, title, found)
    elif isinstance(node, list):
        for item in node:
            walk_panels(item, title, found)


exprs = []
with open(dashboard_path) as f:
    dashboard = json.load(f)
walk_panels(dashboard.get("panels", []), "", exprs)
for var in dashboard.get("templating", {}).get("list", []):
    query = var.get("query")
    if isinstance(query, dict):
        query = query.get("query")
    if var.get("type") == "query" and isinstance(query, str):
        exprs.append((f"variable: {var.get('name')}", query))
with open(rules_path) as f:
    for group in yaml.safe_load(f)["groups"]:
        for rule in group["rules"]:
            name = rule.get("alert") or rule.get("record")
            exprs.append((f"rule: {name}", str(rule["expr"])))

wanted = {}
for where, expr in exprs:
    for name in metric_names(expr):
        if not SYNTHETIC.match(name):
            wanted.setdefault(name, []).append(where)
if not wanted:
    sys.exit("check-dashboard-metrics: no metric names found in the dashboard and rules")

text = []
for source in sources:
    kind, _, location = source.partition(":")
    try:
        if kind == "file":
            with open(location) as f:
                text.append(f.read())
        else:
            with urllib.request.urlopen(location, timeout=10) as r:
                text.append(r.read().decode())
    except OSError as e:
        print(f"check-dashboard-metrics: cannot read {location}: {e}", file=sys.stderr)
        sys.exit(2)

exported = set()
for line in "\n".join(text).splitlines():
    # A name counts when the scrape has a sample of it: a family announced
    # by # TYPE alone would still leave its panels empty.
    line = line.strip()
    if line and not line.startswith("#"):
        m = NAME.match(line)
        if m:
            exported.add(m.group())

missing = sorted(set(wanted) - exported)
if missing:
    print(f"check-dashboard-metrics: {len(missing)} of {len(wanted)} metrics are not exported:", file=sys.stderr)
    for name in missing:
        uses = sorted(set(wanted[name]))
        shown = ", ".join(uses[:3]) + (f", and {len(uses) - 3} more" if len(uses) > 3 else "")
        print(f"  {name}  ({shown})", file=sys.stderr)
    sys.exit(1)
print(f"check-dashboard-metrics: all {len(wanted)} metrics used by the dashboard and the rules are exported")
EOF
