#!/usr/bin/env bash
# test_s3_faults.sh - S3 failures a user meets: a WRONG secret (a clear authentication error,
# exit 1, the secret never printed), the server killed in the middle of a ~200 MB backup (bounded
# retries, then a clear failure and no snapshot recorded), and after a restart on the same data
# and port the next backup succeeds and every snapshot restores byte-exact. First, that the test
# server stores nothing for an upload cut short, as S3 does (tests/tools/s3rver_launcher.js): the
# crash tests rely on it.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/s3_lib.sh
source "$(dirname "$0")/s3_lib.sh"

s3_start
REPO=$(s3_repo faults)

# ---- the test server: an interrupted upload leaves no object, a complete one is stored
[[ $(python3 "$KB_TOOLS/s3_abort_put.py" "$S3_PORT" "$S3_BUCKET" probe/full 100000) == *" 200 "* ]] ||
        fail "a signed PUT to the test server failed"
python3 "$KB_TOOLS/s3_abort_put.py" "$S3_PORT" "$S3_BUCKET" probe/cut 5000
sleep 0.5
aws --endpoint-url "$S3_ENDPOINT" s3 ls "s3://$S3_BUCKET/probe/" >"$KB_TMP/probe.ls" || fail "aws s3 ls"
grep -q " 100000 full$" "$KB_TMP/probe.ls" || fail "the complete upload is missing: $(cat "$KB_TMP/probe.ls")"
if grep -q "cut" "$KB_TMP/probe.ls"; then
        fail "the test server kept an interrupted upload: $(cat "$KB_TMP/probe.ls")"
fi

kb_init "$REPO"

# ---- a wrong secret (a missing one is no test: s3rver accepts unsigned requests)
for cmd in "snapshots" "backup volume $KB_TOOLS"; do
        # shellcheck disable=SC2086  # cmd is a word list
        AWS_SECRET_ACCESS_KEY=wrong-Secret-4711 expect_exit 1 kb --repo "$REPO" $cmd
        grep -q "access denied" "$KB_ERR" || fail "$cmd, wrong secret: $(cat "$KB_ERR")"
        grep -q "SignatureDoesNotMatch" "$KB_ERR" || fail "$cmd, wrong secret: $(cat "$KB_ERR")"
        grep -q "AWS_SECRET_ACCESS_KEY" "$KB_ERR" || fail "$cmd, no hint: $(cat "$KB_ERR")"
        grep -q "s3://$S3_BUCKET" "$KB_ERR" || fail "$cmd, no bucket named: $(cat "$KB_ERR")"
        if grep -q "Secret-4711" "$KB_ERR" "$KB_OUT"; then fail "the secret was printed"; fi
        [[ $(wc -l <"$KB_ERR") -le 2 ]] || fail "$cmd, wrong secret: not a short message"
done
# A bucket that does not exist, for commands that only read.
expect_exit 1 kb --repo "s3:$S3_ENDPOINT/no-such-bucket/x" snapshots
grep -q "bucket 'no-such-bucket' does not exist" "$KB_ERR" || fail "missing bucket: $(cat "$KB_ERR")"

# ---- a first, small snapshot
SMALL=$KB_TMP/small
mkdir -p "$SMALL/d"
echo "before the outage" >"$SMALL/d/f"
cp -a "$KB_TOOLS" "$SMALL/tools"
id_small=$(kb_backup "$REPO" "$SMALL")

# ---- the server dies in the middle of a backup
BIG=$KB_TMP/big
python3 - "$BIG" <<'EOF'
import os, random, sys
root = sys.argv[1]
rng = random.Random(42)
for d in range(8):
    os.makedirs(os.path.join(root, "d%d" % d))
    for f in range(25):  # 200 files of 1 MiB: incompressible, no duplicates
        with open(os.path.join(root, "d%d" % d, "f%02d" % f), "wb") as out:
            out.write(rng.randbytes(1 << 20))
EOF
export KBACKUP_S3_MAX_RETRIES=3 KBACKUP_S3_TIMEOUT=20
objects() {
        find "$S3_DIR/data/$S3_BUCKET/faults/data" -name '*._S3rver_object' 2>/dev/null | wc -l
}
before=$(objects)
kb_bg --repo "$REPO" backup volume "$BIG" --threads 2
bgpid=$KB_BG_PID
# Wait (bounded) until a few packs of this backup have landed, then pull the plug.
for ((i = 0; i < 600; i++)); do
        (($(objects) >= before + 3)) && break
        kill -0 "$bgpid" 2>/dev/null || break
        sleep 0.05
done
kill -0 "$bgpid" 2>/dev/null || fail "the backup ended before the server could be killed"
(($(objects) >= before + 3)) || fail "no pack of the big backup reached the server in 30 s"
s3_kill
t_kill=$SECONDS
note "server killed with $(($(objects) - before)) new packs stored"
# Bounded: three retries of at most 5 s backoff each, per request.
for ((i = 0; i < 1200; i++)); do
        kill -0 "$bgpid" 2>/dev/null || break
        sleep 0.1
done
kill -0 "$bgpid" 2>/dev/null && fail "the backup still runs 120 s after the server died"
rc=0
wait "$bgpid" || rc=$?
kb_untrack_pid "$bgpid"
waited=$((SECONDS - t_kill))
note "backup gave up $waited s after the server died (exit $rc)"
assert_no_sanitizer "$KB_TMP/bg.err"
note "its message: $(tail -n 1 "$KB_TMP/bg.err")"
((rc == 1)) || fail "backup with the server gone: exit $rc, want 1: $(cat "$KB_TMP/bg.err")"
grep -q "cannot reach $S3_ENDPOINT" "$KB_TMP/bg.err" || fail "unclear failure: $(cat "$KB_TMP/bg.err")"
grep -q "attempts" "$KB_TMP/bg.err" || fail "no retry count in: $(cat "$KB_TMP/bg.err")"
((waited <= 60)) || fail "giving up took $waited s"

# While the server is down, commands fail fast and clearly.
expect_exit 1 kb --repo "$REPO" snapshots
grep -q "cannot reach" "$KB_ERR" || fail "server down: $(cat "$KB_ERR")"

# ---- back up again after the restart
s3_resume
[[ $(snapshot_count "$REPO") == 1 ]] || fail "the interrupted backup recorded a snapshot"
unset KBACKUP_S3_MAX_RETRIES KBACKUP_S3_TIMEOUT
expect_exit 0 kb --repo "$REPO" backup volume "$BIG" --json
id_big=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot"])' "$KB_OUT")
note "backup after the restart: $(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); print("read %d MB, new %d MB" % (s["bytes_read"] >> 20, s["bytes_new"] >> 20))' "$KB_OUT")"
[[ $(snapshot_count "$REPO") == 2 ]] || fail "want 2 snapshots after the restart"
# The packs the interrupted backup uploaded are reused (at least one, 8+ MiB), not sent again.
python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(0 if s["bytes_read"] - s["bytes_new"] >= (8 << 20) else 1)' "$KB_OUT" ||
        fail "the backup after the restart uploaded again what the interrupted one had stored"

expect_exit 0 kb --repo "$REPO" restore volume "$id_small" --target "$KB_TMP/r-small"
treecmp "$SMALL" "$KB_TMP/r-small" --ignore-atime-dirs
expect_exit 0 kb --repo "$REPO" restore volume "$id_big" --target "$KB_TMP/r-big"
treecmp "$BIG" "$KB_TMP/r-big" --ignore-atime-dirs

pass
