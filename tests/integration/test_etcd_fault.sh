#!/usr/bin/env bash
# test_etcd_fault.sh - the etcd server fails in the middle of a large snapshot stream: first it
# freezes (SIGSTOP: the connection stays open, no data comes), then it dies (kill -9). Each time
# the backup exits 1..127 with one clear error line and no crash, no etcd snapshot is recorded,
# and every snapshot already in the repository still restores exactly. After etcd restarts on
# the same data dir, a new backup works.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
SRC=$KB_TMP/src
NBIG=${KB_ETCD_FAULT_KEYS:-1600} # x 100 KiB: a ~165 MB db

etcd_start --name fault
EP=$ETCD_ENDPOINT
EDIR=$ETCD_DIR
EPID=$ETCD_PID
t0=$SECONDS
etcd_load --quiet load --count "$NBIG" --min-size 102400 --max-size 102400 --seed 21
db_size=$(ectl endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')
note "loaded $NBIG x 100 KiB in $((SECONDS - t0)) s: db $db_size bytes"
((db_size > 100000000)) || fail "db is only $db_size bytes; the stream must be large"

# Something in the repository already, which the failures must not harm.
kb_init "$REPO"
mktree "$SRC" --seed 31 --quiet
vol_id=$(kb_backup "$REPO" "$SRC" --name base)

# check_repo: the repository lists exactly the expected snapshots and each restores exactly.
check_repo() { # WANT_ETCD_SNAPSHOTS
        (($(snapshot_count "$REPO" etcd) == $1)) || fail "want $1 etcd snapshots, have $(snapshot_count "$REPO" etcd)"
        (($(snapshot_count "$REPO" volume) == 1)) || fail "the volume snapshot is gone"
        local out
        out=$(kb_tmpdir)
        expect_exit 0 kb --repo "$REPO" restore volume "$vol_id" --target "$out/vol"
        treecmp "$SRC" "$out/vol" --ignore-atime
        kb_rmtree "$out"
}

# etcd_wrote: bytes etcd has written to sockets and files so far (the stream is nearly all of it).
etcd_wrote() {
        awk '/^wchar:/ {print $2}' "/proc/$EPID/io"
}

# running PID: true while the child PID has not exited (a zombie counts as exited).
running() {
        local st
        st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
        [[ $st != Z ]]
}

# start_and_interrupt SIGNAL: start a backup in the background, wait (bounded) until etcd has
# streamed a quarter of the db, then send SIGNAL to etcd. Fails if the backup ended first.
start_and_interrupt() {
        local base i
        base=$(etcd_wrote)
        kb_bg --repo "$REPO" backup etcd --endpoints "$EP" --timeout 3
        BG=$KB_BG_PID
        for ((i = 0; i < 6000; i++)); do
                (($(etcd_wrote) - base > db_size / 4)) && break
                running "$BG" || break
                sleep 0.01
        done
        kill -STOP "$EPID"
        running "$BG" || fail "the backup ended before etcd could be interrupted: $(cat "$KB_TMP/bg.err")"
        note "etcd stopped after streaming $(($(etcd_wrote) - base)) bytes"
        ((i < 6000)) || fail "etcd streamed nothing within 60 s"
        [[ $1 == STOP ]] || kill "-$1" "$EPID"
}

# wait_failed SECONDS: the backup must exit within SECONDS, 1..127, with one clear error line.
wait_failed() {
        local i
        for ((i = 0; i < $1 * 10; i++)); do
                running "$BG" || break
                sleep 0.1
        done
        running "$BG" && { kb_stop_bg "$BG"; fail "the backup still runs $1 s after the fault"; }
        kb_stop_bg "$BG"
        assert_no_sanitizer "$KB_TMP/bg.err"
        ((KB_BG_RC > 0 && KB_BG_RC < 128)) || fail "backup exit status $KB_BG_RC: $(head -c 2000 "$KB_TMP/bg.err")"
        local line
        line=$(grep -v '^[[:space:]]*$' "$KB_TMP/bg.err" || true)
        [[ $(printf '%s\n' "$line" | wc -l) == 1 && $line == kbackup:* ]] ||
                fail "want one 'kbackup: ...' error line, got: $(head -c 2000 "$KB_TMP/bg.err")"
        note "backup exit $KB_BG_RC: $line"
        tail -n 1 "$KB_TMP/bg.out" | grep -Eq '^[0-9a-f]{64}$' && fail "a failed backup printed a snapshot id"
        FAIL_LINE=$line
}

# 1. etcd freezes mid-stream: the idle timeout (3 s) must end the backup.
start_and_interrupt STOP
wait_failed 30
printf '%s\n' "$FAIL_LINE" | grep -Eiq 'stall|no data|timed? ?out|no answer' ||
        fail "a frozen server is not reported as such: $FAIL_LINE"
kill -CONT "$EPID"
check_repo 0

# 2. etcd dies mid-stream.
start_and_interrupt KILL
wait_failed 30
for ((i = 0; i < 50; i++)); do
        kill -0 "$EPID" 2>/dev/null || break
        sleep 0.1
done
kill -0 "$EPID" 2>/dev/null && fail "etcd survived kill -9"
# That pid is gone; keep etcd_server.sh from ever signalling it again (it could be reused).
rm -f "$EDIR/etcd.pid"
check_repo 0

# 3. etcd restarts on the same data dir; a backup works again and comes back whole.
etcd_start --name fault -- --data-dir "$EDIR/data"
EP=$ETCD_ENDPOINT
n=$(ectl get /registry/ --prefix --keys-only -w json | python3 -c 'import json,sys; print(json.load(sys.stdin).get("count", 0))')
((n == NBIG)) || fail "restarted etcd has $n keys, want $NBIG"
id=$(kb_backup_etcd "$REPO" --endpoints "$EP")
check_repo 1
expect_exit 0 kb --repo "$REPO" restore etcd "$id" --output "$KB_TMP/final.db"
python3 -c 'import hashlib,sys
d = open(sys.argv[1], "rb").read()
sys.exit(hashlib.sha256(d[:-32]).digest() != d[-32:] or len(d) < int(sys.argv[2]))' \
        "$KB_TMP/final.db" "$db_size" || fail "the snapshot after the restart does not restore whole"

pass
