#!/usr/bin/env bash
# test_fuzz_bbolt.sh - run the libFuzzer target of the etcd database reader (tests/fuzz/fuzz_bbolt.c)
# for a bounded time, seeded with real etcd snapshots: a small one (inline key bucket) and one
# with a few hundred keys (a tree with branch pages). Any crash, sanitizer report, leak or
# timeout fails the test; the input that caused it is kept and its path printed.
#
# Builds the fuzzer with clang in a temp dir (-DKB_FUZZ=ON); skips (exit 0) without clang or
# without libFuzzer. KB_FUZZ_SECONDS sets the fuzzing time (default 30).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

SECONDS_TO_FUZZ=${KB_FUZZ_SECONDS:-30}

command -v clang >/dev/null 2>&1 || fail "clang not found (the fuzzer needs clang's libFuzzer; scripts/setup.sh)"
echo 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
        >"$KB_TMP/probe.c"
clang -fsanitize=fuzzer "$KB_TMP/probe.c" -o "$KB_TMP/probe" >/dev/null 2>&1 ||
        fail "clang cannot build libFuzzer targets (-fsanitize=fuzzer; libclang-rt-14-dev)"

# Seeds: real snapshots.
etcd_start --name fuzzseed
SEEDS=$KB_TMP/seeds
mkdir "$SEEDS"
ectl put /a 1 >/dev/null
ectl put /b hello >/dev/null
ectl put /a 2 >/dev/null
ectl del /b >/dev/null
ectl snapshot save "$SEEDS/small.db" >/dev/null 2>&1
python3 - <<'EOF' | ectl txn >/dev/null
print()
for i in range(400):
    print('put -- /registry/configmaps/ns-%d/cm-%04d "value-%d-%s"' % (i % 5, i, i, "v" * (i % 90)))
print()
print()
EOF
ectl del /registry/configmaps/ns-3/ --prefix >/dev/null
ectl put /registry/configmaps/ns-1/cm-0001 rewritten >/dev/null
ectl snapshot save "$SEEDS/tree.db" >/dev/null 2>&1
etcd_stop "$ETCD_DIR"
# The seeds must read (a seed the reader refuses would make the fuzzing run meaningless).
for s in small tree; do
        expect_exit 0 kb etcd info "file:$SEEDS/$s.db"
done

BUILD=$KB_TMP/build
note "building the fuzzer with clang"
cmake -S "$KB_SOURCE_DIR" -B "$BUILD" -DCMAKE_C_COMPILER=clang -DKB_FUZZ=ON -DKB_TESTS=OFF \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$KB_TMP/cmake.log" 2>&1 ||
        { tail -n 30 "$KB_TMP/cmake.log" >&2; fail "cmake -DKB_FUZZ=ON failed"; }
cmake --build "$BUILD" -j2 --target fuzz_bbolt >>"$KB_TMP/cmake.log" 2>&1 ||
        { tail -n 30 "$KB_TMP/cmake.log" >&2; fail "building fuzz_bbolt failed"; }
FUZZER=$BUILD/tests/fuzz/fuzz_bbolt
[[ -x $FUZZER ]] || fail "no fuzzer binary at $FUZZER"

CORPUS=$KB_TMP/corpus
mkdir "$CORPUS" "$KB_TMP/artifacts"
cp "$SEEDS"/*.db "$CORPUS/"
note "fuzzing for ${SECONDS_TO_FUZZ}s"
rc=0
timeout -k 10 $((SECONDS_TO_FUZZ + 120)) "$FUZZER" -max_total_time="$SECONDS_TO_FUZZ" \
        -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$KB_TMP/artifacts/" "$CORPUS" >"$KB_TMP/fuzz.log" 2>&1 || rc=$?
if ((rc != 0)) || [[ -n $(ls -A "$KB_TMP/artifacts") ]]; then
        keep=$(mktemp -d "${TMPDIR:-/tmp}/kbfuzz-bbolt.XXXXXX")
        cp "$KB_TMP/artifacts/"* "$keep/" 2>/dev/null || true
        grep -E "ERROR|SUMMARY|==[0-9]+==|#0 |#1 |#2 |#3 " "$KB_TMP/fuzz.log" | head -n 40 >&2 || true
        tail -n 5 "$KB_TMP/fuzz.log" >&2
        fail "the fuzzer failed (exit $rc); crashing inputs kept in $keep"
fi
runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$KB_TMP/fuzz.log")
[[ -n $runs ]] || { tail -n 20 "$KB_TMP/fuzz.log" >&2; fail "the fuzzer did not report its runs"; }
((runs >= 1000)) || fail "only $runs fuzzing runs in ${SECONDS_TO_FUZZ}s"
note "$runs runs, $(grep -c . <(ls "$CORPUS")) inputs in the corpus"
pass
