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
        # tests
        libcriterion-dev python3 attr acl e2fsprogs coreutils findutils procps
        etcd-server etcd-client
)
packages+=("$@")

missing=()
for p in "${packages[@]}"; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        if [[ $status != "install ok installed" ]]; then
                missing+=("$p")
        fi
done

if ((${#missing[@]} == 0)); then
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
