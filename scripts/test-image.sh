#!/usr/bin/env bash
# Test of the runtime image (step `image` of scripts/test.sh):
#
#   scripts/test-image.sh            # builds it with scripts/build-image.sh
#   scripts/test-image.sh --no-build # ... from release binaries already built
#
# 1. builds the OCI archive with scripts/build-image.sh;
# 2. inspects it with skopeo: entrypoint audit-writer, cmd serve, user
#    65532:65532, PATH, the org.opencontainers.image.* labels;
# 3. unpacks the archive with umoci (the image's own layers, not the
#    staging folder) and checks the file system: both binaries, no shell nor
#    /bin, nothing owned by or writable for 65532 but its home and /tmp, a
#    nonroot 65532 entry in /etc/passwd, size under IMAGE_MAX_MIB (48);
# 4. starts a throw-away primary + replica (scripts/pg-cluster.sh) on free
#    ports, creates the database, and from the image's file system, as uid
#    and gid 65532 with a read-only root and a tmpfs /tmp (like the chart's
#    securityContext), runs `audit-writer migrate`, then `audit-writer serve`
#    and `audit-reader serve` until the gRPC health service says SERVING for
#    each, records a signal through the writer and reads it back through the
#    reader with its consistency token, and stops both with SIGTERM (they
#    must exit 0).
# `podman run` is refused on these machines (crun cannot set RLIMIT_NOFILE),
# so the binaries run with chroot: same file system, same user, host network
# (127.0.0.1 only). Everything is removed on exit. Needs root (chroot, the
# mounts), podman, skopeo, umoci, grpcurl and PostgreSQL 15
# (scripts/install-deps.sh).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Three stripped binaries (about 14 + 15 + 10 MB) and glibc: ~41 MiB today.
IMAGE_MAX_MIB=${IMAGE_MAX_MIB:-48}
# Seconds for each service to become SERVING, and for each to stop.
HEALTH_TIMEOUT=${HEALTH_TIMEOUT:-60}
STOP_TIMEOUT=${STOP_TIMEOUT:-30}
DB_NAME=signal_audit
PSQL=${PG_BIN:-/usr/lib/postgresql/15/bin}/psql

log() { printf 'test-image: %s\n' "$*" >&2; }
fail() {
    printf 'test-image: FAIL: %s\n' "$*" >&2
    exit 1
}

[[ $(id -u) -eq 0 ]] || fail "must run as root (chroot, mount namespace)"
for tool in podman skopeo umoci grpcurl python3 unshare chroot; do
    command -v "$tool" >/dev/null 2>&1 || fail "$tool is not installed (scripts/install-deps.sh)"
done

WORK=$(mktemp -d /tmp/signal-audit-image-test.XXXXXX)
# pg-cluster.sh runs the servers as the postgres OS user: it must get through.
chmod 0711 "$WORK"
PG_DIR=$WORK/pg
PIDS=()
PG_STARTED=0

cleanup() {
    local rc=$? pid i
    set +e
    for pid in "${PIDS[@]}"; do
        kill -0 "$pid" 2>/dev/null || continue
        kill -TERM "$pid" 2>/dev/null
        for ((i = 0; i < STOP_TIMEOUT * 5; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if ((PG_STARTED)); then
        "$ROOT/scripts/pg-cluster.sh" stop "$PG_DIR" >/dev/null 2>&1 ||
            log "warning: could not stop the PostgreSQL cluster in $PG_DIR"
    fi
    if ((rc != 0)); then
        for f in "$WORK"/*.log; do
            [[ -f $f ]] || continue
            log "last lines of $(basename "$f"):"
            tail -n 25 -- "$f" | sed 's/^/    /' >&2
        done
    fi
    rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. build ----------------------------------------------------------------
start=$SECONDS
"$ROOT/scripts/build-image.sh" "$@" >"$WORK/build.out"
ARCHIVE=$(sed -n 's/^ARCHIVE=//p' "$WORK/build.out")
IMAGE_BYTES=$(sed -n 's/^IMAGE_BYTES=//p' "$WORK/build.out")
[[ -f $ARCHIVE ]] || fail "build-image.sh made no archive"
log "image built in $((SECONDS - start))s: $ARCHIVE"

# --- 2. configuration ----------------------------------------------------------
skopeo inspect --config "oci-archive:$ARCHIVE" >"$WORK/config.json" ||
    fail "skopeo cannot read $ARCHIVE"
python3 - "$WORK/config.json" <<'EOF' || fail "image configuration is wrong (see above)"
import json, sys
cfg = json.load(open(sys.argv[1]))["config"]
errors = []
def expect(what, got, want):
    if got != want:
        errors.append(f"{what}: {got!r}, expected {want!r}")
expect("Entrypoint", cfg.get("Entrypoint"), ["/usr/local/bin/audit-writer"])
expect("Cmd", cfg.get("Cmd"), ["serve"])
expect("User", cfg.get("User"), "65532:65532")
env = dict(e.split("=", 1) for e in cfg.get("Env") or [])
if "/usr/local/bin" not in env.get("PATH", "").split(":"):
    errors.append(f"PATH {env.get('PATH')!r} lacks /usr/local/bin (the chart runs the binaries by name)")
labels = cfg.get("Labels") or {}
for key in ("title", "description", "version", "revision", "created", "licenses"):
    if not labels.get(f"org.opencontainers.image.{key}"):
        errors.append(f"label org.opencontainers.image.{key} missing")
expect("licenses label", labels.get("org.opencontainers.image.licenses"), "Apache-2.0")
for e in errors:
    print("test-image:   " + e, file=sys.stderr)
sys.exit(1 if errors else 0)
EOF
log "config ok: entrypoint audit-writer serve, user 65532:65532, OCI labels"

# --- 3. file system, from the archive's layers -----------------------------------
mkdir -p "$WORK/layout"
tar -xf "$ARCHIVE" -C "$WORK/layout"
REF=$(python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))["manifests"]
print(m[0].get("annotations", {}).get("org.opencontainers.image.ref.name", "") if len(m) == 1 else "")
' "$WORK/layout/index.json")
[[ -n $REF ]] || fail "the archive should hold exactly one named image"
umoci unpack --image "$WORK/layout:$REF" "$WORK/bundle" >/dev/null
R=$WORK/bundle/rootfs

for b in audit-writer audit-reader audit-admin; do
    [[ -x $R/usr/local/bin/$b ]] || fail "/usr/local/bin/$b is missing from the image"
done
shells=$(find "$R" \( -name sh -o -name bash -o -name dash -o -name ash -o -name zsh \
    -o -name ksh -o -name busybox -o -name '*sh' -path '*/bin/*' \) -printf '/%P\n')
[[ -z $shells ]] || fail "the image holds a shell: $shells"
[[ ! -e $R/bin ]] || fail "the image has a /bin"
grep -qx 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' "$R/etc/passwd" ||
    fail "/etc/passwd has no nonroot entry for 65532"
grep -qx 'nonroot:x:65532:' "$R/etc/group" || fail "/etc/group has no nonroot group 65532"
writable=$(find "$R" -path "$R/tmp" -prune -o -path "$R/home/nonroot" -prune -o \
    \( -uid 65532 -o -gid 65532 -o \( -perm -o+w ! -type l \) \) -printf '/%P\n')
[[ -z $writable ]] || fail "files owned by or writable for the service user: $writable"
[[ -s $R/etc/ssl/certs/ca-certificates.crt ]] || fail "no CA bundle in the image"

ROOTFS_BYTES=$(du -sb --apparent-size "$R" | cut -f1)
mib() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
log "file system ok: $(find "$R" -type f | wc -l) files, $(mib "$ROOTFS_BYTES") MiB unpacked," \
    "image $(mib "$IMAGE_BYTES") MiB, archive $(mib "$(stat -c %s "$ARCHIVE")") MiB; no shell"
((IMAGE_BYTES <= IMAGE_MAX_MIB * 1048576)) ||
    fail "image is $(mib "$IMAGE_BYTES") MiB, more than the bound of $IMAGE_MAX_MIB MiB"
((ROOTFS_BYTES <= IMAGE_MAX_MIB * 1048576)) ||
    fail "unpacked file system is $(mib "$ROOTFS_BYTES") MiB, more than $IMAGE_MAX_MIB MiB"

# --- 4. the binaries from the image, against PostgreSQL ----------------------------
# Free TCP ports on 127.0.0.1 below the ephemeral range (32768+), so an
# outgoing connection cannot be holding one by the time it is used.
mapfile -t PORTS < <(python3 - <<'EOF'
import random, socket
ports = set()
while len(ports) < 6:
    p = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        ports.add(p)
    except OSError:
        pass
    finally:
        s.close()
print("\n".join(map(str, ports)))
EOF
)
PRIMARY_PORT=${PORTS[0]} REPLICA_PORT=${PORTS[1]}
WRITER_ADDR=127.0.0.1:${PORTS[2]} READER_ADDR=127.0.0.1:${PORTS[3]}
WRITER_METRICS=127.0.0.1:${PORTS[4]} READER_METRICS=127.0.0.1:${PORTS[5]}

log "PostgreSQL primary :$PRIMARY_PORT, replica :$REPLICA_PORT"
PG_STARTED=1
"$ROOT/scripts/pg-cluster.sh" start "$PG_DIR" "$PRIMARY_PORT" "$REPLICA_PORT" \
    >"$WORK/pg-urls" 2>"$WORK/pg-cluster.log" || fail "pg-cluster.sh start failed"
"$PSQL" -X -q -h 127.0.0.1 -p "$PRIMARY_PORT" -U postgres -d postgres -c "CREATE DATABASE $DB_NAME"
deadline=$((SECONDS + 30))
until [[ -n $("$PSQL" -X -q -At -h 127.0.0.1 -p "$REPLICA_PORT" -U postgres -d postgres \
    -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" 2>/dev/null) ]]; do
    ((SECONDS < deadline)) || fail "database $DB_NAME did not reach the replica"
    sleep 0.2
done
# IP addresses only: the image has no /etc/hosts (Kubernetes mounts one).
PRIMARY_URL=postgres://postgres@127.0.0.1:$PRIMARY_PORT/$DB_NAME
REPLICA_URL=postgres://postgres@127.0.0.1:$REPLICA_PORT/$DB_NAME

# in_image ENV... -- BINARY ARGS: runs BINARY from the image's file system
# as 65532:65532 with no supplementary groups and only the given environment
# (plus the image's PATH), like a container started from the image. In a
# mount namespace of its own the root is bind-mounted read-only and /tmp is
# an empty tmpfs (the chart's readOnlyRootFilesystem and /tmp emptyDir).
# Every step execs, so the PID of the caller's `&` is the service's PID.
RO_ROOT=0
if unshare --mount --propagation private true 2>/dev/null; then RO_ROOT=1; fi
in_image() {
    local envs=(PATH=/usr/local/bin:/usr/bin:/bin)
    while [[ $1 != -- ]]; do
        envs+=("$1")
        shift
    done
    shift
    if ((RO_ROOT)); then
        exec env -i "${envs[@]}" unshare --mount --propagation private -- \
            /bin/sh -c 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" &&
                mount -t tmpfs -o size=16m,mode=1777,nosuid,nodev tmpfs "$0/tmp" &&
                exec /usr/sbin/chroot --userspec=65532:65532 --groups=65532 "$0" "$@"' "$R" "$@"
    else
        exec env -i "${envs[@]}" /usr/sbin/chroot --userspec=65532:65532 --groups=65532 "$R" "$@"
    fi
}
((RO_ROOT)) || log "warning: no mount namespaces here: the root is not made read-only for the run"

log "audit-writer migrate (from the image)"
(in_image AUDIT_DATABASE_URL="$PRIMARY_URL" NO_COLOR=1 -- /usr/local/bin/audit-writer migrate) \
    >"$WORK/migrate.log" 2>&1 || fail "audit-writer migrate failed"
# The retention CronJob's binary runs from the same image.
(in_image AUDIT_DATABASE_URL="$PRIMARY_URL" NO_COLOR=1 -- /usr/local/bin/audit-admin migrate status --json) \
    >"$WORK/admin.log" 2>&1 || fail "audit-admin migrate status failed: $(tail -3 "$WORK/admin.log")"
grep -q '"pending": *\[\]' "$WORK/admin.log" ||
    fail "audit-admin migrate status (from the image) should list no pending migration: $(head -c 400 "$WORK/admin.log")"
log "audit-admin migrate status (from the image): no pending migration"

# Checks that PID runs the image's binary, as 65532:65532, no groups.
check_identity() {
    local name=$1 pid=$2 status root exe
    status=$(cat "/proc/$pid/status" 2>/dev/null) || fail "audit-$name is not running"
    grep -Eq '^Uid:\s+65532\s+65532\s+65532\s+65532$' <<<"$status" ||
        fail "audit-$name does not run as uid 65532: $(grep '^Uid:' <<<"$status")"
    grep -Eq '^Gid:\s+65532\s+65532\s+65532\s+65532$' <<<"$status" ||
        fail "audit-$name does not run as gid 65532: $(grep '^Gid:' <<<"$status")"
    grep -Eq '^Groups:\s*(65532)?\s*$' <<<"$status" ||
        fail "audit-$name has supplementary groups: $(grep '^Groups:' <<<"$status")"
    root=$(readlink "/proc/$pid/root")
    [[ $root == "$R" ]] || fail "audit-$name runs in $root, not the image's file system"
    if ((RO_ROOT)); then
        [[ $(awk '$5 == "/" { split($6, o, ","); print o[1] }' "/proc/$pid/mountinfo") == ro ]] ||
            fail "audit-$name's root file system is not read-only"
    fi
    # The kernel shows the executable's path as seen from our root.
    exe=$(readlink "/proc/$pid/exe")
    [[ $exe == "$R/usr/local/bin/audit-$name" || $exe == /usr/local/bin/audit-$name ]] ||
        fail "audit-$name runs $exe, not the image's binary"
}

health() {
    grpcurl -plaintext -max-time 3 -d "{\"service\":\"$2\"}" "$1" grpc.health.v1.Health/Check 2>&1
}

wait_serving() {
    local name=$1 pid=$2 addr=$3 service=$4 deadline=$((SECONDS + HEALTH_TIMEOUT))
    until health "$addr" "$service" | grep -q '"status": "SERVING"'; do
        kill -0 "$pid" 2>/dev/null || fail "audit-$name exited during startup"
        ((SECONDS < deadline)) ||
            fail "audit-$name not SERVING after ${HEALTH_TIMEOUT}s: $(health "$addr" "$service" | tr '\n' ' ')"
        sleep 0.5
    done
    log "audit-$name (from the image, uid 65532, read-only root: $RO_ROOT) SERVING at $addr"
}

start=$SECONDS
(in_image AUDIT_DATABASE_URL="$PRIMARY_URL" AUDIT_WRITER_LISTEN="$WRITER_ADDR" AUDIT_AUTH=off \
    AUDIT_METRICS_LISTEN="$WRITER_METRICS" \
    AUDIT_POOL_MIN=2 AUDIT_POOL_MAX=4 AUDIT_LOG_JSON=true NO_COLOR=1 \
    -- /usr/local/bin/audit-writer serve) >"$WORK/writer.log" 2>&1 &
WRITER_PID=$!
PIDS+=("$WRITER_PID")
wait_serving writer "$WRITER_PID" "$WRITER_ADDR" signal_audit.v1.SignalWriterService
check_identity writer "$WRITER_PID"

(in_image AUDIT_REPLICA_URL="$REPLICA_URL" AUDIT_READER_LISTEN="$READER_ADDR" AUDIT_AUTH=off \
    AUDIT_METRICS_LISTEN="$READER_METRICS" \
    AUDIT_POOL_MIN=2 AUDIT_POOL_MAX=4 AUDIT_LOG_JSON=true NO_COLOR=1 \
    -- /usr/local/bin/audit-reader serve) >"$WORK/reader.log" 2>&1 &
READER_PID=$!
PIDS+=("$READER_PID")
wait_serving reader "$READER_PID" "$READER_ADDR" signal_audit.v1.SignalReaderService
check_identity reader "$READER_PID"
log "both services SERVING $((SECONDS - start))s after start"

# One write and a read-your-write through the replica.
grpcurl -plaintext -max-time 10 \
    -d '{"signal":{"ticker":"NASDAQ:AAPL","side":"buy","action":"open","price":187.25,"original_signal_json":"{\"raw\":\"image test\"}"}}' \
    "$WRITER_ADDR" signal_audit.v1.SignalWriterService/RecordSignal >"$WORK/record.json" ||
    fail "RecordSignal failed: $(cat "$WORK/record.json")"
read -r SIGNAL_ID LSN < <(python3 -c '
import json, sys
a = json.load(open(sys.argv[1]))
print(a["signal"]["signalId"], a["consistencyToken"]["lsn"])' "$WORK/record.json") ||
    fail "unexpected RecordSignal answer: $(cat "$WORK/record.json")"
grpcurl -plaintext -max-time 10 \
    -d "{\"signal_id\":\"$SIGNAL_ID\",\"consistency_token\":{\"lsn\":\"$LSN\"}}" \
    "$READER_ADDR" signal_audit.v1.SignalReaderService/GetSignal >"$WORK/get.json" ||
    fail "GetSignal failed: $(cat "$WORK/get.json")"
grep -q "\"$SIGNAL_ID\"" "$WORK/get.json" || fail "GetSignal did not return signal $SIGNAL_ID"
log "RecordSignal through the writer, GetSignal with its token through the reader: ok"
for metrics in "audit-writer $WRITER_METRICS" "audit-reader $READER_METRICS"; do
    read -r name addr <<<"$metrics"
    curl -fsS --max-time 10 "http://$addr/metrics" >"$WORK/$name.prom" ||
        fail "$name: no /metrics at $addr"
    grep -q "^audit_build_info{service_name=\"$name\"" "$WORK/$name.prom" ||
        fail "$name: /metrics at $addr lacks audit_build_info"
done
log "both /metrics endpoints answer"

# Graceful shutdown from the image: SIGTERM, exit status 0.
for name in writer reader; do
    [[ $name == writer ]] && pid=$WRITER_PID || pid=$READER_PID
    kill -TERM "$pid"
    rc=0
    timeout_at=$((SECONDS + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < timeout_at)); do sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && fail "audit-$name did not exit ${STOP_TIMEOUT}s after SIGTERM"
    wait "$pid" || rc=$?
    ((rc == 0)) || fail "audit-$name exited with status $rc after SIGTERM"
done
PIDS=()
log "both services exited 0 after SIGTERM"
log "image test passed: image $(mib "$IMAGE_BYTES") MiB (bound $IMAGE_MAX_MIB MiB)"
