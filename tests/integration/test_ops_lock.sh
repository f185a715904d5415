#!/usr/bin/env bash
# test_ops_lock.sh - repository locks through the CLI: a killed backup's lock is reported stale
# and blocks nobody, `unlock` removes stale locks and keeps active ones, an active exclusive lock
# stops a backup that will not wait, and a holder whose lock is removed (`unlock --all`) stops
# before writing anything that depends on it.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/ops_lib.sh
source "$(dirname "$0")/ops_lib.sh"

REPO=$(ops_repo lock)
kb_init "$REPO"
SRC=$KB_TMP/src
ops_gen "$SRC" 5 40 1500000
id1=$(kb_backup "$REPO" "$SRC" --name ns/a)
[[ $(ops_lock_count "$REPO") == 0 ]] || fail "a finished backup left its lock"

# --- a killed backup leaves a stale lock
BIG=$KB_TMP/big
ops_gen "$BIG" 6 60 2000000
kb_bg --repo "$REPO" backup volume "$BIG" --name ns/big --threads 1
pid=$KB_BG_PID
ops_wait_for_lock "$REPO" "$pid" || fail "the backup ended before taking its lock: $(cat "$KB_TMP/bg.err")"
kb_stop_bg "$pid"
((KB_BG_RC == 137)) || fail "the backup finished before it was killed ($KB_BG_RC): $(cat "$KB_TMP/bg.err")"
expect_exit 0 kb --repo "$REPO" unlock --dry-run
grep -q "remove? .* shared .* backup .* pid $pid .*stale: process $pid on this host is gone" "$KB_OUT" ||
        fail "unlock --dry-run: $(cat "$KB_OUT")"
[[ $(ops_lock_count "$REPO") == 1 ]] || fail "--dry-run removed the lock"
# It blocks nobody: a prune (exclusive) runs and says it ignores it.
expect_exit 0 kb --repo "$REPO" prune
grep -q "ignoring a shared lock .* 'kbackup unlock' removes it" "$KB_ERR" ||
        fail "prune did not report the stale lock: $(cat "$KB_ERR")"
expect_exit 0 kb --repo "$REPO" unlock
grep -q "^removed .* stale" "$KB_OUT" || fail "unlock: $(cat "$KB_OUT")"
[[ $(ops_lock_count "$REPO") == 0 ]] || fail "unlock left the stale lock"

# --- an active exclusive lock: a prune that pauses after each step (test-only). Forgetting the
# first snapshot while a changed copy stays gives it packs to repack, so it runs a while.
SRC2=$KB_TMP/src2
ops_mutate "$SRC" "$SRC2" 2
idb=$(kb_backup "$REPO" "$SRC2" --name ns/a)
expect_exit 0 kb --repo "$REPO" forget "$id1"
KBACKUP_TEST_PRUNE_STEP_MS=1500 kb_bg --repo "$REPO" prune --max-unused 0
pid=$KB_BG_PID
ops_wait_for_lock "$REPO" "$pid" || fail "the prune ended before taking its lock"
expect_exit 1 kb --repo "$REPO" --lock-wait 0 backup volume "$SRC" --name ns/a
grep -q "locked by an exclusive lock .* of prune (pid $pid" "$KB_ERR" ||
        fail "the refusal does not name the holder: $(cat "$KB_ERR")"
expect_exit 0 kb --repo "$REPO" unlock
grep -q "^kept .* exclusive  *prune .*active: process $pid on this host is running" "$KB_OUT" ||
        fail "unlock did not keep the active lock: $(cat "$KB_OUT")"
[[ $(ops_lock_count "$REPO") == 1 ]] || fail "unlock removed an active lock"

# --- unlock --all takes it away: the prune must stop before it deletes anything.
expect_exit 0 kb --repo "$REPO" unlock --all
[[ $(ops_lock_count "$REPO") == 0 ]] || fail "unlock --all left a lock"
rc=0
wait "$pid" || rc=$?
kb_untrack_pid "$pid"
((rc == 1)) || fail "the prune whose lock was removed exited $rc: $(cat "$KB_TMP/bg.err")"
grep -q "removed by someone else" "$KB_TMP/bg.err" || fail "prune error: $(cat "$KB_TMP/bg.err")"
expect_exit 0 kb --repo "$REPO" check --read-data
grep -q "no problems found" "$KB_OUT" || fail "check after the stopped prune: $(cat "$KB_OUT")"
ops_restore_cmp "$REPO" "$idb" "$SRC2"

# --- the same for a backup: stopped, its lock removed, resumed: no snapshot is recorded.
before=$(ops_snapshot_ids "$REPO" | wc -l)
kb_bg --repo "$REPO" backup volume "$BIG" --name ns/big2 --threads 1
pid=$KB_BG_PID
ops_wait_for_lock "$REPO" "$pid" || fail "the backup ended before taking its lock: $(cat "$KB_TMP/bg.err")"
kill -STOP "$pid"
expect_exit 0 kb --repo "$REPO" unlock --all
kill -CONT "$pid"
rc=0
wait "$pid" || rc=$?
kb_untrack_pid "$pid"
((rc == 1)) || fail "the backup whose lock was removed exited $rc: $(cat "$KB_TMP/bg.err")"
grep -q "removed by someone else" "$KB_TMP/bg.err" || fail "backup error: $(cat "$KB_TMP/bg.err")"
[[ $(ops_snapshot_ids "$REPO" | wc -l) == "$before" ]] || fail "a snapshot was recorded without a lock"
expect_exit 0 kb --repo "$REPO" check
# and after all this the repository still works
expect_exit 0 kb --repo "$REPO" prune
id2=$(kb_backup "$REPO" "$SRC" --name ns/a)
ops_restore_cmp "$REPO" "$id2" "$SRC"

# --- a read-only repository is read without a lock and nothing is written to it
if ops_is_fs && ((EUID != 0)); then
        chmod -R a-w "$REPO"
        expect_exit 0 kb --repo "$REPO" ls "$id2"
        ops_restore_cmp "$REPO" "$id2" "$SRC"
        expect_exit 0 kb --repo "$REPO" check
        chmod -R u+w "$REPO"
        [[ $(ops_lock_count "$REPO") == 0 ]] || fail "a lock was written to a read-only repository"
fi
state=$(repo_state "$REPO" 2>/dev/null || true)
expect_exit 0 kb --repo "$REPO" --no-lock restore volume "$id2" --target "$KB_TMP/nolock"
[[ $(repo_state "$REPO" 2>/dev/null || true) == "$state" ]] || ! ops_is_fs ||
        fail "--no-lock restore wrote to the repository"
pass
