#!/usr/bin/env bash
# setup.sh - install every Debian package kbackup's build and tests need, so a fresh machine needs
# nothing by hand. Idempotent and quiet: packages already installed are skipped, and the package
# lists are refreshed only when something has to be installed.
#
# Usage: scripts/setup.sh [EXTRA_PACKAGE...]
set -euo pipefail

packages=(
        # build
        build-essential cmake pkg-config
        libsodium-dev libzstd-dev libprotobuf-c-dev protobuf-c-compiler
        libgrpc-dev protobuf-compiler libcurl4-openssl-dev libyaml-dev
        libssl-dev libexpat1-dev libjansson-dev
        # tests
        libcriterion-dev python3 attr acl e2fsprogs coreutils findutils procps
        util-linux # taskset (test_volume_threads), setarch (the ThreadSanitizer pass)
        etcd-server etcd-client
        prometheus prometheus-pushgateway # promtool and a Pushgateway (test_observability)
        openssl clang libclang-rt-14-dev  # test certificates; the bbolt fuzzer (libFuzzer)
        python3-yaml curl jq # deploy/ checks (test_manifests) and the SnapMirror hook's tests
        b3sum # an independent BLAKE3 (Rust) that test_blake3 holds the chunk-id hash to
        gzip xz-utils zstd bzip2 lz4 # real compressed files for test_sniff
        mount # losetup, mount: loop devices as block-mode volumes (test_volume_blockdev)
)
# The S3 test server runs on Node.js; a Node.js from elsewhere (NodeSource's bundles npm and
# conflicts with Debian's npm package) is used as it is.
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
# Any aws CLI will do for the interop tests.
command -v aws >/dev/null 2>&1 || packages+=(awscli)
# Any kubectl renders the manifests with its built-in kustomize (Debian's is 1.20; it will do).
command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
packages+=("$@")
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# s3rver, the S3 server the tests run (it checks Signature V4; 5.x needs Node 24), goes into the
# git-ignored .deps/ of the work tree.
install_s3rver() {
        local dir=$repo/.deps/s3rver
        if grep -qs '"version": "4.0.4"' "$dir/node_modules/@20minutes/s3rver/package.json"; then
                return 0
        fi
        echo "setup.sh: installing s3rver into $dir" >&2
        mkdir -p "$dir"
        if ! npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
                @20minutes/s3rver@4.0.4 >&2; then
                echo "setup.sh: npm install of s3rver failed" >&2
                exit 1
        fi
}

missing=()
for p in "${packages[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        if [[ $status != "install ok installed" ]]; then
                missing+=("$p")
        fi
done

if ((${#missing[@]} == 0)); then
        install_s3rver
        exit 0
fi

if ((EUID == 0)); then
        as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
else
        echo "setup.sh: not root and no usable sudo; install these packages first:" >&2
        echo "  apt-get install ${missing[*]}" >&2
        exit 1
fi

echo "setup.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Quiet on success; the full apt log on failure so the reason is visible.
if ! { "${as_root[@]}" apt-get update -qq &&
        "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        echo "setup.sh: package installation failed" >&2
        exit 1
fi
install_s3rver
