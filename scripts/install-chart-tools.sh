#!/usr/bin/env bash
# Makes the chart checkers available and prints the folder holding their
# executables (kubernetes-validate, checkov) on stdout:
#
#   PATH=$(scripts/install-chart-tools.sh):$PATH
#
# Both come from PyPI, installed once into a virtual environment in
# .tools/chart-tools (repo-relative, gitignored): checkov pins many
# libraries (boto3, botocore, ...) that would otherwise replace the ones
# other tools on the machine need. Versions are pinned so every machine
# checks with the same rules. Exits non-zero, saying why, when they cannot
# be installed: the test suite then fails instead of skipping the checks.
set -euo pipefail

PACKAGES=(kubernetes-validate==1.37.0 checkov==3.3.30)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.tools/chart-tools
STAMP=$VENV/.installed

log() { printf 'install-chart-tools: %s\n' "$*" >&2; }

if [[ -f $STAMP && $(cat "$STAMP") == "${PACKAGES[*]}" ]] &&
    "$VENV/bin/kubernetes-validate" --version >/dev/null 2>&1 &&
    "$VENV/bin/checkov" --version >/dev/null 2>&1; then
    echo "$VENV/bin"
    exit 0
fi

command -v python3 >/dev/null 2>&1 || {
    log "python3 is needed (apt-get install python3 python3-venv)"
    exit 1
}
rm -rf -- "$VENV"
python3 -m venv "$VENV" || {
    log "python3 -m venv failed (Debian: apt-get install python3-venv)"
    exit 1
}
log "pip install ${PACKAGES[*]} into $VENV"
PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install -q "${PACKAGES[@]}" || {
    log "pip install failed (is PyPI reachable?)"
    exit 1
}
echo "${PACKAGES[*]}" >"$STAMP"
log "installed $("$VENV/bin/kubernetes-validate" --version 2>&1 | tail -1), checkov $("$VENV/bin/checkov" --version 2>&1 | tail -1)"
echo "$VENV/bin"
