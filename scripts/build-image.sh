#!/usr/bin/env bash
# Builds the runtime container image of Signal Audit Trail OFFLINE, from the
# release binaries, as an OCI archive:
#
#   scripts/build-image.sh            # cargo build --release --locked first
#   scripts/build-image.sh --no-build # use the release binaries already built
#
# The image is the one the Dockerfile describes (which needs a registry for
# its base images and so cannot be built here): FROM scratch with
#   /usr/local/bin/audit-writer, /usr/local/bin/audit-reader,
#   /usr/local/bin/audit-admin (the chart's retention CronJob runs it)
#   exactly the shared libraries `ldd` lists for them (with their symlinks
#   and the dynamic loader)
#   /etc/passwd, /etc/group (root, nobody, nonroot = 65532), /etc/nsswitch.conf
#   /etc/ssl/certs/ca-certificates.crt (for TLS), /tmp, /home/nonroot
#   /usr/share/doc/signal-audit/LICENSE
# and no shell; USER 65532:65532, ENTRYPOINT /usr/local/bin/audit-writer,
# CMD serve, org.opencontainers.image.* labels. The Helm chart sets each
# container's command (audit-writer serve / audit-reader serve /
# audit-writer migrate / audit-admin retention run), so one image serves
# both Deployments, the migration Job and the retention CronJob.
#
# Output (under OUT_DIR, default target/image):
#   signal-audit.oci.tar   `podman save --format oci-archive`
#   rootfs/                the file system that went into the image
#   image.env              IMAGE=, ARCHIVE=, IMAGE_BYTES=, ARCHIVE_BYTES=
# podman's storage for the build lives in OUT_DIR/podman and is removed
# afterwards, so nothing is left in the machine's image store.
#
# Needs podman (Debian's 4.3; installed by scripts/install-deps.sh as root).
# `podman run` is never used (refused on these machines); scripts/test-image.sh
# runs the binaries from the image's file system with chroot instead.
#
# Environment:
#   CARGO_TARGET_DIR   where the release binaries are (default: cargo's)
#   OUT_DIR            output folder (default <target>/image)
#   IMAGE_NAME         image name (default localhost/signal-audit:<version>)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

log() { printf 'build-image: %s\n' "$*" >&2; }
die() {
    printf 'build-image: error: %s\n' "$*" >&2
    exit 1
}

BUILD=1
case ${1:-} in
"") ;;
--no-build) BUILD=0 ;;
-h | --help)
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
    exit 0
    ;;
*) die "unknown argument '$1' (--no-build or nothing)" ;;
esac

# The rootfs has files of other owners (root, 65532), which needs root.
[[ $(id -u) -eq 0 ]] || die "must run as root (the image's files belong to root and uid 65532)"
command -v podman >/dev/null 2>&1 ||
    die "podman is not installed (scripts/install-deps.sh installs it when run as root)"
command -v ldd >/dev/null 2>&1 || die "ldd is needed to find the binaries' shared libraries"

target_dir() {
    if [[ -n ${CARGO_TARGET_DIR:-} ]]; then
        printf '%s\n' "$CARGO_TARGET_DIR"
        return
    fi
    cargo metadata --format-version 1 --no-deps 2>/dev/null |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null ||
        echo "$ROOT/target"
}

TARGET=$(target_dir)
BIN_DIR=$TARGET/release
OUT_DIR=${OUT_DIR:-$TARGET/image}
BINARIES=(audit-writer audit-reader audit-admin)

VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' Cargo.toml | head -n 1)
[[ -n $VERSION ]] || die "no [workspace.package] version in Cargo.toml"
IMAGE_NAME=${IMAGE_NAME:-localhost/signal-audit:$VERSION}
REVISION=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [[ $REVISION != unknown ]] && ! git diff --quiet HEAD -- 2>/dev/null; then
    REVISION=$REVISION-dirty
fi
# The image's creation time is the commit's, so a rebuild of the same
# commit gives the same image configuration (podman build --timestamp).
EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
CREATED=$(date -u -d "@$EPOCH" +%FT%TZ)

if [[ $BUILD == 1 ]]; then
    log "cargo build --release --locked -p audit-writer -p audit-reader -p audit-admin"
    cargo build --release --locked -p audit-writer -p audit-reader -p audit-admin
fi
for b in "${BINARIES[@]}"; do
    [[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b is missing (run without --no-build, or set CARGO_TARGET_DIR)"
done

CONTEXT=$OUT_DIR/context
ROOTFS=$CONTEXT/rootfs
ARCHIVE=$OUT_DIR/signal-audit.oci.tar
STORE=$OUT_DIR/podman
rm -rf -- "$CONTEXT" "$STORE" "$ARCHIVE"
mkdir -p -- "$ROOTFS"
# Every file is root-owned and only readable/executable by others; the
# service user owns nothing but its home folder.
umask 022

# --- binaries ------------------------------------------------------------
install -d -m 0755 "$ROOTFS/usr/local/bin"
for b in "${BINARIES[@]}"; do
    install -m 0755 "$BIN_DIR/$b" "$ROOTFS/usr/local/bin/$b"
done

# --- shared libraries ----------------------------------------------------
# copy_path PATH: copies PATH into the rootfs at the same place; a symlink
# is copied as a symlink and its target followed (and copied) in turn.
copy_path() {
    local path=$1 target n=0
    while :; do
        ((n++ < 20)) || die "symlink loop at $1"
        if [[ ! -e $ROOTFS$path && ! -L $ROOTFS$path ]]; then
            mkdir -p -- "$ROOTFS$(dirname -- "$path")"
            cp -P --preserve=mode,links -- "$path" "$ROOTFS$path"
        fi
        [[ -L $path ]] || break
        target=$(readlink -- "$path")
        [[ $target == /* ]] || target=$(dirname -- "$path")/$target
        path=$(realpath -ms -- "$target")
    done
}

libs=()
for b in "${BINARIES[@]}"; do
    out=$(ldd "$BIN_DIR/$b" 2>&1) || {
        if grep -q 'not a dynamic executable\|statically linked' <<<"$out"; then
            log "$b is statically linked: no shared libraries needed"
            continue
        fi
        die "ldd $BIN_DIR/$b failed: $out"
    }
    if grep -q 'not found' <<<"$out"; then
        die "$b needs libraries that are not installed:"$'\n'"$(grep 'not found' <<<"$out")"
    fi
    # "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" and
    # "/lib64/ld-linux-x86-64.so.2 (0x...)"; linux-vdso has no file.
    while read -r lib; do
        libs+=("$lib")
    done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$out")
done
mapfile -t libs < <(printf '%s\n' "${libs[@]}" | sort -u | sed '/^$/d')
for lib in "${libs[@]}"; do
    copy_path "$lib"
done
log "shared libraries: ${libs[*]:-none}"

# --- /etc and the rest of a minimal system --------------------------------
install -d -m 0755 "$ROOTFS/etc" "$ROOTFS/etc/ssl/certs" "$ROOTFS/usr/share/doc/signal-audit"
cat >"$ROOTFS/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$ROOTFS/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
nonroot:x:65532:
EOF
# glibc 2.34+ has the files and dns NSS modules built in: nothing to copy.
printf 'hosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"
chmod 0644 "$ROOTFS/etc/passwd" "$ROOTFS/etc/group" "$ROOTFS/etc/nsswitch.conf"
# No TLS yet, but PostgreSQL, OTLP and Redis over TLS need the CA bundle.
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    install -m 0644 /etc/ssl/certs/ca-certificates.crt "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
else
    log "warning: /etc/ssl/certs/ca-certificates.crt not found (apt-get install ca-certificates): image has no CA bundle"
fi
install -m 0644 LICENSE "$ROOTFS/usr/share/doc/signal-audit/LICENSE"
install -d -m 1777 "$ROOTFS/tmp"
install -d -m 0700 -o 65532 -g 65532 "$ROOTFS/home/nonroot"
install -d -m 0700 "$ROOTFS/root"

for sh in sh bash dash ash zsh ksh busybox; do
    [[ -z $(find "$ROOTFS" -name "$sh" -print -quit) ]] || die "a shell ($sh) got into the rootfs"
done

# --- image -------------------------------------------------------------------
cat >"$CONTEXT/Containerfile" <<EOF
# Written by scripts/build-image.sh; the same image as the Dockerfile's.
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
EXPOSE 15051 15052
LABEL org.opencontainers.image.title="signal-audit" \\
      org.opencontainers.image.description="Signal Audit Trail: audit-writer and audit-reader gRPC services, audit-admin" \\
      org.opencontainers.image.version="$VERSION" \\
      org.opencontainers.image.revision="$REVISION" \\
      org.opencontainers.image.created="$CREATED" \\
      org.opencontainers.image.licenses="Apache-2.0" \\
      org.opencontainers.image.vendor="Signal Audit Trail developers"
ENTRYPOINT ["/usr/local/bin/audit-writer"]
CMD ["serve"]
EOF

# A private store (vfs: no mounts left behind, works on any file system).
pod() {
    podman --root "$STORE/root" --runroot "$STORE/run" --storage-driver vfs \
        --cgroup-manager cgroupfs --events-backend none "$@"
}
cleanup_store() {
    pod rmi -a -f >/dev/null 2>&1 || true
    rm -rf -- "$STORE"
}
trap cleanup_store EXIT

log "podman build -t $IMAGE_NAME"
pod build --quiet --timestamp "$EPOCH" --format oci -t "$IMAGE_NAME" \
    -f "$CONTEXT/Containerfile" "$CONTEXT" >/dev/null
log "podman save --format oci-archive -o $ARCHIVE"
pod save --quiet --format oci-archive -o "$ARCHIVE" "$IMAGE_NAME"

IMAGE_BYTES=$(pod image inspect --format '{{.Size}}' "$IMAGE_NAME")
ARCHIVE_BYTES=$(stat -c %s -- "$ARCHIVE")
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
cat >"$OUT_DIR/image.env" <<EOF
IMAGE=$IMAGE_NAME
ARCHIVE=$ARCHIVE
IMAGE_BYTES=$IMAGE_BYTES
ARCHIVE_BYTES=$ARCHIVE_BYTES
EOF
log "image $IMAGE_NAME: $(mib "$IMAGE_BYTES") ($IMAGE_BYTES bytes) uncompressed, OCI archive $(mib "$ARCHIVE_BYTES") ($ARCHIVE_BYTES bytes) at $ARCHIVE"
echo "IMAGE_BYTES=$IMAGE_BYTES"
echo "ARCHIVE=$ARCHIVE"
