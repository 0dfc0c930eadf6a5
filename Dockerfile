# syntax=docker/dockerfile:1.7
#
# Container image of Signal Audit Trail: ONE image holding both binaries,
# /usr/local/bin/audit-writer and /usr/local/bin/audit-reader.
#
# NOT BUILT ON THE PROJECT'S MACHINES: they have no Docker engine and no
# access to base-image registries. This file is for a CI that has both; it is
# kept equivalent to scripts/build-image.sh, which builds the same runtime
# image offline (FROM scratch + the release binaries and exactly the shared
# libraries they need) with podman and is what scripts/test.sh tests.
#
#   docker build -t signal-audit:0.1.0 \
#       --build-arg REVISION=$(git rev-parse HEAD) \
#       --build-arg CREATED=$(date -u +%FT%TZ) .
#   docker build --target reader -t signal-audit-reader:0.1.0 .   # entrypoint audit-reader
#
# The Helm chart (helm/signal-audit) sets `command` (audit-writer serve,
# audit-reader serve, audit-writer migrate) for every container, so the
# entrypoint only matters for `docker run`. The chart names two repositories
# (writer.image / reader.image); push this one image under both names, or
# point both values at the same repository. See README "Running securely".
#
# Runtime contract (matches the chart): user and group 65532 (nonroot), no
# shell, nothing written outside /tmp, so readOnlyRootFilesystem works.
# For reproducible production builds pin both base images by digest
# (rust:...@sha256:..., distroless/cc-debian12:nonroot@sha256:...).

ARG RUST_VERSION=1.95

# ---------------------------------------------------------------- builder
# bookworm, like the runtime's glibc (Debian 12): the binaries link against
# the glibc they are built with.
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# Protobufs are compiled by protox at build time: no protoc needed.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p audit-writer -p audit-reader -p audit-admin \
    && install -D -m 0755 target/release/audit-writer /out/usr/local/bin/audit-writer \
    && install -D -m 0755 target/release/audit-reader /out/usr/local/bin/audit-reader \
    && install -D -m 0755 target/release/audit-admin /out/usr/local/bin/audit-admin \
    && install -D -m 0644 LICENSE /out/usr/share/doc/signal-audit/LICENSE

# ---------------------------------------------------------------- runtime
# distroless cc: glibc, libgcc_s, CA certificates, /etc/passwd with
# nonroot = 65532, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="signal-audit" \
      org.opencontainers.image.description="Signal Audit Trail: audit-writer and audit-reader gRPC services, audit-admin" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.vendor="Signal Audit Trail developers"
COPY --from=builder /out/ /
# The chart runs the binaries by name; an explicit PATH keeps that working on
# runtimes that do not add a default one.
ENV PATH=/usr/local/bin:/usr/bin:/bin
# Numeric, so Kubernetes can verify runAsNonRoot without reading /etc/passwd.
USER 65532:65532
EXPOSE 15051 15052

# ------------------------------------------------- targets (entrypoints)
# Both targets are the same image apart from the default entrypoint.
FROM runtime AS reader
ENTRYPOINT ["/usr/local/bin/audit-reader"]
CMD ["serve"]

# The default target (last stage), like scripts/build-image.sh.
FROM runtime AS writer
ENTRYPOINT ["/usr/local/bin/audit-writer"]
CMD ["serve"]
