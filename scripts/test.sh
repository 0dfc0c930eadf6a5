#!/usr/bin/env bash
# The one command that runs the whole test suite:
#
#   scripts/test.sh
#
# Steps, each run even when an earlier one failed (so one CI run reports
# everything); the script exits non-zero if any step failed:
#   deps      scripts/install-deps.sh (PostgreSQL 15 + extensions, grpcurl, buf)
#   cargo     cargo test --workspace --all-targets; the integration tests
#             start their own PostgreSQL clusters through scripts/pg-cluster.sh
#   buf       buf lint in proto/
#   helm      helm lint + helm template, validated offline with
#             kubernetes-validate when that can be installed
#   examples  the README's grpcurl examples (scripts/grpcurl-examples.sh)
#             against a full stack (scripts/stack.sh up) in .stack-test on
#             ports of its own, so a developer's .stack keeps running
#   backup    pgBackRest full + incremental backups and a point-in-time
#             restore into a fresh cluster (scripts/test-backup.sh, own
#             temporary folder and free ports, bounded to 150 s)
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
    cargo test --workspace --all-targets
}

step_buf() {
    cd proto
    buf lint
}

step_helm() {
    local helm rendered
    if ! helm=$(scripts/install-helm.sh); then
        echo "test.sh: helm is not available and could not be installed: helm checks SKIPPED" >&2
        return 0
    fi
    "$helm" lint --strict helm/signal-audit
    rendered=$(mktemp)
    trap 'rm -f -- "$rendered"' RETURN
    "$helm" template signal-audit helm/signal-audit >"$rendered"
    # Also render with every optional branch switched on.
    "$helm" template signal-audit helm/signal-audit \
        --set otel.endpoint=http://otel-collector:4317 \
        --set serviceAccountName=signal-audit \
        --set 'imagePullSecrets[0].name=registry' \
        --set writer.podDisruptionBudget.minAvailable=1 \
        --set reader.readinessProbe.grpc.service= \
        >>"$rendered"
    # Offline schema validation is optional: PyPI may be unreachable.
    if ! command -v kubernetes-validate >/dev/null 2>&1; then
        PIP_ROOT_USER_ACTION=ignore PIP_DISABLE_PIP_VERSION_CHECK=1 \
            python3 -m pip install -q kubernetes-validate >/dev/null 2>&1 || true
        command -v pyenv >/dev/null 2>&1 && pyenv rehash 2>/dev/null
        hash -r
    fi
    if command -v kubernetes-validate >/dev/null 2>&1; then
        kubernetes-validate --strict --quiet "$rendered"
        echo "test.sh: rendered chart passed kubernetes-validate --strict" >&2
    else
        echo "test.sh: kubernetes-validate is not installable here: schema validation SKIPPED" >&2
    fi
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
}

# Each step runs in a fresh bash (this script re-executed) so `set -e`
# applies inside it; a function called from an `if` would run without it.
if [[ ${1:-} == --step ]]; then
    "step_$2"
    exit 0
fi

steps=(deps cargo buf helm examples backup)
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
