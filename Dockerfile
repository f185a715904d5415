# syntax=docker/dockerfile:1
# Dockerfile - the kbackup container image: the kbackup binary, the per-node volume helper
# (kbackup-node-volumes) and the SnapMirror post-hook (kbackup-snapmirror-update) on Debian
# bookworm-slim, with only the shared libraries kbackup links and what the helpers call.
#
#   docker build -t registry.example.com/kbackup:0.1.0 .
#   docker run --rm registry.example.com/kbackup:0.1.0 --help
#
# The runtime stage's package list is checked against the binary's real dependencies by
# tests/integration/test_image_libs.sh (ldd + dpkg -S), since no Docker engine runs in CI.
#
# The image runs as the unprivileged user 65532 by default. The manifests in deploy/kubernetes/
# override that with runAsUser: 0, every capability dropped, only because they must: the etcd
# backup runs as root only because kubeadm's etcd client key (/etc/kubernetes/pki/etcd/*.key) is
# readable by root only, the volume backups read files of every owner (with DAC_READ_SEARCH),
# and the other jobs share the repository those two write (its files are 0600, owned by the
# writer). With an S3 repository they can stay 65532. See deploy/kubernetes/README.md.

ARG DEBIAN_RELEASE=bookworm

# ---- build: the same toolchain and -dev packages as scripts/setup.sh, tests left out ----
FROM debian:${DEBIAN_RELEASE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        build-essential cmake pkg-config \
        libsodium-dev libzstd-dev libprotobuf-c-dev protobuf-c-compiler \
        libgrpc-dev protobuf-compiler libcurl4-openssl-dev libyaml-dev \
        libssl-dev libexpat1-dev libjansson-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# .dockerignore lets in only what the build needs (no build dirs, no .git, no secrets).
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKB_TESTS=OFF \
    && cmake --build /build -j"$(nproc)" \
    && install -D -m 0755 -s /build/kbackup /out/usr/local/bin/kbackup \
    && install -D -m 0755 scripts/backup-node-volumes.sh /out/usr/local/bin/kbackup-node-volumes \
    && install -D -m 0755 scripts/snapmirror-update.sh /out/usr/local/bin/kbackup-snapmirror-update

# ---- runtime ----
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# The libraries kbackup links (readelf -d: NEEDED) that bookworm-slim lacks, by package; apt adds
# their own dependencies (libabsl, libre2, libc-ares for gRPC; nghttp2, libssh2, ... for curl).
# ca-certificates: https to S3 and ONTAP. curl and jq: the SnapMirror hook. bash, coreutils
# and util-linux (mountpoint) are part of the base image.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libcurl4 libexpat1 libgrpc29 libjansson4 libprotobuf-c1 libsodium23 libssl3 libyaml-0-2 \
        libzstd1 \
        ca-certificates curl jq \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /
# Numeric USER so that Kubernetes' runAsNonRoot can verify it without a passwd lookup.
RUN groupadd --gid 65532 kbackup \
    && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kbackup
USER 65532:65532
LABEL org.opencontainers.image.title="kbackup" \
      org.opencontainers.image.description="Backup and disaster recovery for Kubernetes: etcd and persistent volumes"
ENTRYPOINT ["kbackup"]
CMD ["--help"]
