# shellcheck shell=bash disable=SC2034  # KB_RC, KB_BG_RC etc. are set for the sourcing test
# lib.sh - shared helpers for the integration tests (sourced, never run).
#
# Every test script does:
#   set -euo pipefail
#   source "$(dirname "$0")/lib.sh"
#   ...
#   pass
#
# Environment (set by ctest, with fallbacks for running a script by hand):
#   KBACKUP        the binary under test (fallback: $KB_SOURCE_DIR/build/kbackup)
#   KB_SOURCE_DIR  the source tree (fallback: two levels above this file)
#   KB_TEST_TMPDIR where temp dirs go (fallback: $TMPDIR or /tmp); it must support xattrs and
#                  holes for the round-trip tests to mean anything.
#
# Provides: kb_tmpdir, kb_rmtree, fail, pass, skip, note, kb_loop_attach, kb_mount, kb, kb_run,
# expect_exit, kb_backup, kb_init, mktree, treecmp, assert_no_sanitizer, repo_state, kb_bg, kb_stop_bg,
# kb_kill_during, kb_track_pid, kb_untrack_pid,
# largest_pack; for etcd: etcd_start, etcd_start_from_snapshot, etcd_stop, ectl, etcd_load, kb_backup_etcd, snapshot_count,
# closed_port.

KB_TEST_NAME=$(basename "$0" .sh)
KB_SOURCE_DIR=${KB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
KBACKUP=${KBACKUP:-$KB_SOURCE_DIR/build/kbackup}
KB_TOOLS=$KB_SOURCE_DIR/tests/tools

shopt -s inherit_errexit

# Tests of the test tools themselves set KB_NEEDS_BINARY=0 before sourcing.
if [[ ${KB_NEEDS_BINARY:-1} != 0 && ! -x $KBACKUP ]]; then
        echo "FAIL $KB_TEST_NAME: kbackup binary not found at $KBACKUP (set KBACKUP)" >&2
        exit 1
fi

# One base directory per test run; every kb_tmpdir lives inside it, so cleanup works even for
# directories created in a command substitution (a subshell cannot register anything).
KB_TMP=$(mktemp -d "${KB_TEST_TMPDIR:-${TMPDIR:-/tmp}}/kbit-$KB_TEST_NAME.XXXXXX")
KB_BG_PIDS=()
KB_SERVER_DIRS=()
KB_LOOPS=()
KB_MOUNTS=()

# kb_rmtree DIR: remove a generated tree (as non-root, its read-only directories need opening first).
kb_rmtree() {
        if ((EUID != 0)) && [[ -e $1 ]]; then
                chmod -R u+rwX "$1" 2>/dev/null || true
        fi
        rm -rf "$1"
}

kb_cleanup() {
        local rc=$?
        local pid dev
        for dev in "${KB_MOUNTS[@]}"; do
                umount "$dev" 2>/dev/null || true
        done
        for dev in "${KB_LOOPS[@]}"; do
                losetup -d "$dev" 2>/dev/null || true
        done
        for pid in "${KB_BG_PIDS[@]}"; do
                kill -9 "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
        done
        # Test servers (etcd), newest first: a restarted one may run on an older one's data dir.
        local i
        for ((i = ${#KB_SERVER_DIRS[@]} - 1; i >= 0; i--)); do
                bash "$KB_TOOLS/etcd_server.sh" stop "${KB_SERVER_DIRS[i]}" >/dev/null 2>&1 || true
        done
        if [[ -n ${KB_KEEP_TMP:-} ]]; then
                echo "kept temp files in $KB_TMP" >&2
        else
                kb_rmtree "$KB_TMP"
        fi
        return $rc
}
trap kb_cleanup EXIT
trap 'exit 130' INT TERM

KB_OUT=$KB_TMP/last.out
KB_ERR=$KB_TMP/last.err

# A fresh password file; the password is never put on a command line.
export KBACKUP_PASSWORD_FILE=$KB_TMP/password
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$KBACKUP_PASSWORD_FILE"
unset KBACKUP_PASSWORD KBACKUP_REPOSITORY
# Test-only cheap Argon2id parameters, honoured by the engine (see engine/repo.h).
export KBACKUP_TEST_KDF=fast

kb_tmpdir() {
        mktemp -d "$KB_TMP/d.XXXXXX"
}

fail() {
        echo "FAIL $KB_TEST_NAME: $*" >&2
        exit 1
}

note() {
        echo "# $*" >&2
}

pass() {
        echo "PASS $KB_TEST_NAME"
}

# skip REASON: the machine lacks what the test needs (ctest shows it as skipped, not passed).
skip() {
        echo "SKIP $KB_TEST_NAME: $*" >&2
        exit 77
}

# kb_loop_attach VAR FILE: attach FILE to a free loop device, whose name goes to VAR; detached
# when the test ends.
kb_loop_attach() {
        local dev
        dev=$(losetup -f --show "$2") || fail "cannot attach $2 to a loop device"
        KB_LOOPS+=("$dev")
        printf -v "$1" %s "$dev"
}

# kb_mount DEV DIR: mount DEV on DIR until the test ends.
kb_mount() {
        mount "$1" "$2" || fail "cannot mount $1"
        KB_MOUNTS+=("$2")
}

# Sanitizer reports and crashes are never acceptable, whatever the exit code.
assert_no_sanitizer() {
        local f=$1
        if grep -qE 'Sanitizer|runtime error:|Segmentation fault|core dumped' "$f"; then
                echo "---- $f" >&2
                head -c 6000 "$f" >&2
                fail "sanitizer report or crash in output"
        fi
}

# Every foreground kbackup run is bounded, so a hang fails the test with a message instead of
# waiting for ctest's timeout (which would skip the cleanup).
KB_CMD_TIMEOUT=${KB_CMD_TIMEOUT:-300}

kb() {
        timeout -k 10 "$KB_CMD_TIMEOUT" "$KBACKUP" "$@"
}

# kb_run ARGS...: run kbackup without stopping the test; stdout in $KB_OUT, stderr in $KB_ERR,
# exit code in KB_RC.
kb_run() {
        KB_RC=0
        kb "$@" </dev/null >"$KB_OUT" 2>"$KB_ERR" || KB_RC=$?
        assert_no_sanitizer "$KB_ERR"
        ((KB_RC != 124 && KB_RC != 137)) || fail "timed out after ${KB_CMD_TIMEOUT}s: kbackup $*"
}

# expect_exit CODE CMD...: run CMD (stdout/stderr kept in $KB_OUT/$KB_ERR) and fail the test
# unless it exits with CODE. CODE "nonzero" accepts any failure that is not a crash (1..127).
expect_exit() {
        local want=$1
        shift
        local rc=0
        "$@" </dev/null >"$KB_OUT" 2>"$KB_ERR" || rc=$?
        assert_no_sanitizer "$KB_ERR"
        if [[ $1 == kb ]] && ((rc == 124 || rc == 137)); then
                fail "timed out after ${KB_CMD_TIMEOUT}s: $*"
        fi
        local ok=0
        if [[ $want == nonzero ]]; then
                ((rc > 0 && rc < 128)) && ok=1
        else
                ((rc == want)) && ok=1
        fi
        if ((!ok)); then
                echo "---- stdout of: $*" >&2
                head -c 3000 "$KB_OUT" >&2
                echo "---- stderr" >&2
                head -c 3000 "$KB_ERR" >&2
                fail "expected exit $want, got $rc: $*"
        fi
        KB_RC=$rc
}

# kb_init REPO: create a repository, failing the test if that does not work.
kb_init() {
        expect_exit 0 kb --repo "$1" init
}

# kb_backup REPO DIR [ARGS...]: back up DIR and print the new snapshot id (the last line of
# stdout). Fails the test unless the backup exits 0 and prints a hex id.
kb_backup() {
        local repo=$1 dir=$2
        shift 2
        expect_exit 0 kb --repo "$repo" backup volume "$dir" "$@"
        local id
        id=$(tail -n 1 "$KB_OUT")
        [[ $id =~ ^[0-9a-f]{8,64}$ ]] || fail "backup did not print a snapshot id on its last line: '$id'"
        echo "$id"
}

mktree() {
        python3 "$KB_TOOLS/mktree.py" "$@"
}

# treecmp A B [OPTIONS]: fail the test with the differences when the trees differ.
treecmp() {
        local out rc=0
        out=$(python3 "$KB_TOOLS/treecmp.py" "$@" 2>&1) || rc=$?
        if ((rc != 0)); then
                printf '%s\n' "$out" | head -n 60 >&2
                fail "trees differ: $*"
        fi
}

# repo_state REPO: every file of the repository with size, mtime and a content hash, to prove
# that a failed command wrote nothing (also catches a rewrite that keeps the size).
repo_state() {
        (cd "$1" && find . -printf '%y %s %T@ %p\n' | LC_ALL=C sort &&
                find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
}

# kb_track_pid PID / kb_untrack_pid PID: background processes a test started are killed at exit
# unless untracked after being reaped (so cleanup never signals a recycled pid).
kb_track_pid() {
        KB_BG_PIDS+=("$1")
}

kb_untrack_pid() {
        local p rest=()
        for p in "${KB_BG_PIDS[@]}"; do
                [[ $p == "$1" ]] || rest+=("$p")
        done
        KB_BG_PIDS=("${rest[@]}")
}

# kb_bg ARGS...: start kbackup in the background (killed at exit if still running); sets KB_BG_PID.
kb_bg() {
        "$KBACKUP" "$@" </dev/null >"$KB_TMP/bg.out" 2>"$KB_TMP/bg.err" &
        KB_BG_PID=$!
        kb_track_pid "$KB_BG_PID"
}

# kb_stop_bg PID: kill -9 (if still running) and reap; the exit status goes to KB_BG_RC. Call it
# from the main shell, not in $(...): only the parent can reap.
kb_stop_bg() {
        KB_BG_RC=0
        kill -9 "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || KB_BG_RC=$?
        kb_untrack_pid "$1"
}

# kb_kill_during FULL_MS PCT KBACKUP_ARGS...: start kbackup in the background and kill -9 it
# after PCT% of FULL_MS (what a full run took); its exit status goes to KB_BG_RC.
kb_kill_during() {
        local ms=$(($1 * $2 / 100)) pid
        shift 2
        kb_bg "$@"
        pid=$KB_BG_PID
        sleep "$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))"
        kb_stop_bg "$pid"
        assert_no_sanitizer "$KB_TMP/bg.err"
}

# A pack file (data/xx/<id>) of the repository, the largest one (the most file data).
largest_pack() {
        find "$1/data" -type f -printf '%s %p\n' | sort -n | tail -n 1 | cut -d' ' -f2-
}

# ---- etcd ----------------------------------------------------------------------------------

# etcd_start [etcd_server.sh start options] [-- EXTRA_ETCD_FLAGS...]: start a throwaway etcd on
# free loopback ports (stopped at exit, and by a watchdog if this shell dies) and set its
# ETCD_ENDPOINT, ETCD_PID, ETCD_DIR, ETCDCTL_FLAGS... (see tests/tools/etcd_server.sh). A second
# call overwrites them: copy what you need first. Its files live under $KB_TMP.
etcd_start() {
        local out
        out=$(KB_TEST_TMPDIR=$KB_TMP bash "$KB_TOOLS/etcd_server.sh" start --owner $$ "$@") ||
                fail "could not start etcd ($*)"
        eval "$out"
        KB_SERVER_DIRS+=("$ETCD_DIR")
}

# etcd_start_from_snapshot FILE NAME: `etcdctl snapshot restore` FILE (which checks its sha256
# trailer) into a data dir of the test's, then etcd_start a member NAME on it. The restore's peer
# URL is a closed port: etcd_start gives the member its own.
etcd_start_from_snapshot() {
        local file=$1 name=$2 pp
        pp=$(closed_port)
        ETCDCTL_API=3 etcdctl snapshot restore "$file" --data-dir "$KB_TMP/$name-data" --name "$name" \
                --initial-cluster "$name=http://127.0.0.1:$pp" \
                --initial-advertise-peer-urls "http://127.0.0.1:$pp" >"$KB_TMP/$name-restore.log" 2>&1 ||
                { tail -n 5 "$KB_TMP/$name-restore.log" >&2; fail "etcdctl snapshot restore refused $file"; }
        etcd_start --name "$name" -- --data-dir "$KB_TMP/$name-data"
}

# etcd_stop DIR: stop the etcd started in DIR (its ETCD_DIR) and remove DIR.
etcd_stop() {
        bash "$KB_TOOLS/etcd_server.sh" stop "$1"
}

# ectl ARGS...: etcdctl (API v3) against the current etcd as root ($ETCDCTL_FLAGS).
ectl() {
        # shellcheck disable=SC2086  # ETCDCTL_FLAGS is a word list by design
        ETCDCTL_API=3 etcdctl $ETCDCTL_FLAGS "$@"
}

# etcd_load ARGS...: tests/tools/etcd_load.py against the current etcd (load, modify, delete, dump).
etcd_load() {
        python3 "$KB_TOOLS/etcd_load.py" --ctl "$ETCDCTL_FLAGS" "$@"
}

# kb_backup_etcd REPO ARGS...: `backup etcd ARGS` must exit 0 and print a snapshot id last, which
# is printed (the whole output stays in $KB_OUT).
kb_backup_etcd() {
        local repo=$1
        shift
        expect_exit 0 kb --repo "$repo" backup etcd "$@"
        local id
        id=$(tail -n 1 "$KB_OUT")
        [[ $id =~ ^[0-9a-f]{8,64}$ ]] || fail "backup etcd did not print a snapshot id last: '$id'"
        echo "$id"
}

# snapshot_count REPO [KIND]: how many snapshots (of KIND: etcd, volume) `snapshots --json` lists.
snapshot_count() {
        kb --repo "$1" snapshots --json </dev/null >"$KB_TMP/count.json" ||
                fail "snapshots --json failed on $1"
        python3 -c '
import json, sys
kind = sys.argv[2] or None
print(sum(1 for s in json.load(open(sys.argv[1])) if kind is None or s["kind"] == kind))' \
                "$KB_TMP/count.json" "${2:-}"
}

# closed_port: a loopback TCP port nobody listens on (just bound and released).
closed_port() {
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}
