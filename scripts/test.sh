#!/usr/bin/env bash
# test.sh - the one command that sets up a fresh machine and runs every test: installs packages,
# builds twice (optimised, and with AddressSanitizer + UndefinedBehaviorSanitizer) and runs the
# whole suite (Criterion unit tests and integration tests against real servers) in both builds.
# Exit status is non-zero if anything fails.
#
# Usage: scripts/test.sh [--fast]   (--fast: skip the sanitizer pass)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
cd "$src"

fast=0
[[ ${1:-} == --fast ]] && fast=1

bash scripts/setup.sh
jobs=$(nproc)

run_suite() { # NAME BUILD_DIR [CMAKE_ARGS...]
        local name=$1 dir=$2
        shift 2
        echo "== $name build"
        bash scripts/build.sh "$dir" "$@" >/dev/null
        echo "== $name tests"
        (cd "$dir" && ctest --output-on-failure -j"$jobs" --timeout 1200)
}

run_suite release "$src/build"
if ((fast == 0)); then
        # Sanitizers abort on the first finding, so a test that trips one fails.
        export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:strict_string_checks=1
        export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
        export KB_TEST_SANITIZED=1
        run_suite "asan+ubsan" "$src/build-asan" -DKB_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
fi
echo "all tests passed"
