# shellcheck shell=bash
# ops_lib.sh - helpers for the operations tests (forget, prune, check, locks, keys), sourced after
# lib.sh.
#
# Repositories are named by ops_repo NAME, under $KB_OPS_REPO_BASE: a directory (default: the
# test's temp dir) or any location kbackup accepts, e.g. "s3:http://127.0.0.1:9000/bucket/ops",
# so the same tests can run against S3 (or set KB_OPS_S3=1, below). Steps that need to touch repository files directly
# (flipping a byte in a pack) are skipped, with a note, when the base is not a directory.

# KB_OPS_S3=1: start a throwaway S3 server (tests/integration/s3_lib.sh) and put the
# repositories in its bucket; a wrapper test can run any test_ops_*.sh that way.
if [[ ${KB_OPS_S3:-0} == 1 ]]; then
        # shellcheck source=tests/integration/s3_lib.sh
        source "$(dirname "${BASH_SOURCE[0]}")/s3_lib.sh"
        s3_start
        KB_OPS_REPO_BASE=$(s3_repo ops)
fi
KB_OPS_REPO_BASE=${KB_OPS_REPO_BASE:-$KB_TMP}

# ops_repo NAME: the location of repository NAME.
ops_repo() {
        echo "$KB_OPS_REPO_BASE/$1-$$"
}

# ops_is_fs: are repositories plain directories here?
ops_is_fs() {
        [[ $KB_OPS_REPO_BASE != s3:* ]]
}

# ops_gen DIR SEED [FILES [MAX_BYTES]]: a small tree of random files in a few directories (sizes
# up to MAX_BYTES, default 64 KiB), quick to back up, restore and compare.
ops_gen() {
        python3 - "$1" "$2" "${3:-24}" "${4:-65536}" <<'EOF'
import os, random, sys
root, seed, n, big = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
for i in range(n):
    d = os.path.join(root, "d%d" % (i % 4), "e%d" % (i % 3))
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "f%d" % i), "wb") as f:
        f.write(rnd.randbytes(rnd.randint(0, big)))
os.makedirs(os.path.join(root, "empty"), exist_ok=True)
EOF
}

# ops_mutate SRC DST SEED: DST = SRC with one file changed, one removed and one added.
ops_mutate() {
        cp -a "$1" "$2"
        python3 - "$2" "$3" <<'EOF'
import os, random, sys
root, seed = sys.argv[1], int(sys.argv[2])
rnd = random.Random(seed)
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
if files:
    with open(rnd.choice(files), "r+b") as f:
        f.write(rnd.randbytes(4096))
files = sorted(os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs)
if len(files) > 4:
    os.unlink(rnd.choice(files))
with open(os.path.join(root, "d0", "new%d" % seed), "wb") as f:
    f.write(rnd.randbytes(rnd.randint(1000, 100000)))
EOF
}

# ops_snapshot_ids REPO: the ids of every snapshot, oldest first.
ops_snapshot_ids() {
        kb --repo "$1" --no-lock snapshots --json </dev/null >"$KB_TMP/ids.json" ||
                fail "snapshots --json failed on $1"
        python3 -c '
import json, sys
for s in json.load(open(sys.argv[1])):
    print(s["id"])' "$KB_TMP/ids.json"
}

# ops_lock_count REPO: how many lock records the repository holds.
ops_lock_count() {
        kb --repo "$1" --json unlock --dry-run </dev/null >"$KB_TMP/locks.json" ||
                fail "unlock --dry-run failed on $1"
        python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$KB_TMP/locks.json"
}

# ops_repo_bytes REPO: bytes of every pack on the backend (stats --json repo_bytes).
ops_repo_bytes() {
        kb --repo "$1" --json stats </dev/null >"$KB_TMP/stats.json" || fail "stats failed on $1"
        python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["repo_bytes"])' \
                "$KB_TMP/stats.json"
}

# ops_restore_cmp REPO SNAPSHOT SRC: restore SNAPSHOT and compare it with SRC byte for byte.
ops_restore_cmp() {
        local t
        t=$(kb_tmpdir)
        expect_exit 0 kb --repo "$1" restore volume "$2" --target "$t/r"
        # sources are read again after their backup (copied, compared): atimes move on
        treecmp "$3" "$t/r" --ignore-atime
        kb_rmtree "$t"
}

# ops_wait_for_lock REPO PID: wait (up to 30 s) until the repository holds a lock while PID
# runs; returns 1 if PID ended first. It looks at the lock objects directly, every 10 ms (in
# locks/ of a directory repository, or in s3rver's own storage directory), so that a test can
# stop or kill the holder soon after it took its lock: asking through the CLI took long enough
# for a fast backup to finish in between.
ops_wait_for_lock() {
        local i pattern
        if ops_is_fs; then
                pattern="$1/locks/[0-9a-f]*"
        else
                # s3rver keeps object KEY of BUCKET as $S3_DIR/data/BUCKET/KEY._S3rver_object
                pattern="$S3_DIR/data/${1#"s3:$S3_ENDPOINT/"}/locks/[0-9a-f]*._S3rver_object"
        fi
        for ((i = 0; i < 3000; i++)); do
                kill -0 "$2" 2>/dev/null || return 1
                compgen -G "$pattern" >/dev/null && return 0
                sleep 0.01
        done
        fail "no lock appeared in 30 s"
}
