#!/usr/bin/env bash
# test_tsan_reports.sh - self-test of tests/tools/tsan_reports.py, which decides whether the
# ThreadSanitizer pass of scripts/test.sh fails: reports inside the uninstrumented libraries (gRPC,
# abseil, OpenSSL) must pass, even when kbackup started the thread or allocated the memory; a race
# or a lock-order inversion in kbackup's own code must fail it and be printed. Trimmed from real
# reports of this suite.
set -euo pipefail
KB_NEEDS_BINARY=0
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

TOOL=$KB_TOOLS/tsan_reports.py
LOGS=$KB_TMP/logs
mkdir -p "$LOGS"

# Nothing logged: nothing to report.
python3 "$TOOL" "$LOGS" >"$KB_OUT" || fail "an empty log dir failed: $(cat "$KB_OUT")"
grep -q '0 report(s), 0 in' "$KB_OUT" || fail "empty: $(cat "$KB_OUT")"

# gRPC's own synchronisation: both accesses in abseil, the threads started from our code.
cat >"$LOGS/tsan.101" <<'EOF'
==================
WARNING: ThreadSanitizer: data race (pid=101)
  Read of size 8 at 0x7f47dab86380 by main thread:
    #0 memmove ../../../../src/libsanitizer/sanitizer_common/sanitizer_common_interceptors.inc:810 (libtsan.so.2+0x5dc76)
    #1 memmove ../../../../src/libsanitizer/sanitizer_common/sanitizer_common_interceptors.inc:808 (libtsan.so.2+0x5dc76)
    #2 absl::debian3::synchronization_internal::GraphCycles::GetId(void*) <null> (libabsl_graphcycles_internal.so.20220623+0x3156)
    #3 choose_member /work/main/engine/etcd_backup.c:64 (kbackup+0x2dcc5)

  Previous write of size 8 at 0x7f47dab86380 by thread T4:
    #0 memmove ../../../../src/libsanitizer/sanitizer_common/sanitizer_common_interceptors.inc:810 (libtsan.so.2+0x5dc76)
    #1 absl::debian3::synchronization_internal::GraphCycles::GetId(void*) <null> (libabsl_graphcycles_internal.so.20220623+0x3156)

  Thread T4 'grpc_global_tim' (tid=20231, running) created by main thread at:
    #0 pthread_create ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:1001 (libtsan.so.2+0x5e686)
    #1 grpc_core::Thread::Thread(char const*, void (*)(void*), void*, bool*, grpc_core::Thread::Options const&) <null> (libgpr.so.29+0xb0cb)
    #2 choose_member /work/main/engine/etcd_backup.c:64 (kbackup+0x2dcc5)

SUMMARY: ThreadSanitizer: data race (/lib/x86_64-linux-gnu/libabsl_graphcycles_internal.so.20220623+0x3156) in absl::debian3::synchronization_internal::GraphCycles::GetId(void*)
==================
==================
WARNING: ThreadSanitizer: data race (pid=101)
  Write of size 8 at 0x7b6000002000 by thread T6:
    #0 memcpy ../../../../src/libsanitizer/sanitizer_common/sanitizer_common_interceptors.inc:827 (libtsan.so.2+0x5dda6)
    #1 <null> <null> (libcrypto.so.3+0x10e345)

  Previous write of size 8 at 0x7b6000002000 by main thread:
    #0 calloc ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:667 (libtsan.so.2+0x3ee50)
    #1 gpr_zalloc <null> (libgpr.so.29+0x6bf2)
    #2 kb_etcd_unary /work/main/engine/etcd_client.c:456 (kbackup+0x30b41)

  Location is heap block of size 1024 at 0x7b6000002000 allocated by main thread:
    #0 calloc ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:667 (libtsan.so.2+0x3ee50)
    #1 kb_buf_reserve /work/main/engine/buf.c:40 (kbackup+0x30b41)

  Mutex M540 (0x7b6800000218) created at:
    #0 pthread_mutex_init ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:1295 (libtsan.so.2+0x50468)
    #1 kb_saver_new /work/main/engine/saver.c:211 (kbackup+0x51610)

SUMMARY: ThreadSanitizer: data race (/lib/x86_64-linux-gnu/libcrypto.so.3+0x10e345)
==================
EOF
python3 "$TOOL" "$LOGS" >"$KB_OUT" || fail "library-internal reports failed the pass: $(cat "$KB_OUT")"
grep -q '2 report(s), 0 in' "$KB_OUT" || fail "library-internal: $(cat "$KB_OUT")"

# A race in our code (the saver's group counter, unlocked on one side).
cat >"$LOGS/tsan.202" <<'EOF'
==================
WARNING: ThreadSanitizer: data race (pid=202)
  Write of size 8 at 0x7b1000000a58 by thread T3:
    #0 group_settle /work/main/engine/saver.c:83 (kbackup+0x515e1)
    #1 worker /work/main/engine/saver.c:170 (kbackup+0x51820)

  Previous write of size 8 at 0x7b1000000a58 by main thread:
    #0 kb_saver_group_hold /work/main/engine/saver.c:286 (kbackup+0x51b2f)
    #1 kb_volume_backup /work/main/engine/volume_backup.c:717 (kbackup+0x577ba)

SUMMARY: ThreadSanitizer: data race /work/main/engine/saver.c:83 in group_settle
==================
EOF
expect_exit 1 python3 "$TOOL" "$LOGS"
grep -q '3 report(s), 1 in' "$KB_OUT" || fail "our race: $(cat "$KB_OUT")"
grep -q 'group_settle' "$KB_OUT" || fail "our race is not printed: $(cat "$KB_OUT")"
rm "$LOGS/tsan.202"

# A lock-order inversion between two of our mutexes.
cat >"$LOGS/tsan.303" <<'EOF'
==================
WARNING: ThreadSanitizer: lock-order-inversion (potential deadlock) (pid=303)
  Cycle in lock order graph: M1 (0x7b0c00000010) => M2 (0x7b0c00000040) => M1

  Mutex M2 acquired here while holding mutex M1 in thread T1:
    #0 pthread_mutex_lock ../../../../src/libsanitizer/sanitizer_common/sanitizer_common_interceptors.inc:4324 (libtsan.so.2+0x53d8b)
    #1 kb_treecache_get /work/main/engine/treecache.c:120 (kbackup+0x6a1b0)

  Mutex M1 acquired here while holding mutex M2 in main thread:
    #0 pthread_mutex_lock ../../../../src/libsanitizer/sanitizer_common/sanitizer_common_interceptors.inc:4324 (libtsan.so.2+0x53d8b)
    #1 kb_prefetch_next /work/main/engine/prefetch.c:90 (kbackup+0x6b2c0)

SUMMARY: ThreadSanitizer: lock-order-inversion (potential deadlock) /work/main/engine/treecache.c:120 in kb_treecache_get
==================
EOF
expect_exit 1 python3 "$TOOL" "$LOGS"
grep -q 'lock-order-inversion' "$KB_OUT" || fail "our lock-order inversion is not printed: $(cat "$KB_OUT")"
rm "$LOGS/tsan.303"

# A thread of ours never joined: judged by where it was started, unlike a race's threads.
cat >"$LOGS/tsan.404" <<'EOF'
==================
WARNING: ThreadSanitizer: thread leak (pid=404)
  Thread T2 (tid=405, finished) created by main thread at:
    #0 pthread_create ../../../../src/libsanitizer/tsan/tsan_interceptors_posix.cpp:1001 (libtsan.so.2+0x5e686)
    #1 kb_saver_new /work/main/engine/saver.c:216 (kbackup+0x5168d)

SUMMARY: ThreadSanitizer: thread leak /work/main/engine/saver.c:216 in kb_saver_new
==================
EOF
expect_exit 1 python3 "$TOOL" "$LOGS"
grep -q 'thread leak' "$KB_OUT" || fail "our thread leak is not printed: $(cat "$KB_OUT")"
rm "$LOGS/tsan.404"

# A report without any stack (the runtime could not unwind): nothing clears it, so it fails.
printf '%s\n' '==================' 'WARNING: ThreadSanitizer: data race (pid=505)' \
        'SUMMARY: ThreadSanitizer: data race' '==================' >"$LOGS/tsan.505"
expect_exit 1 python3 "$TOOL" "$LOGS"

pass
