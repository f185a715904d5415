#!/usr/bin/env bash
# test_ops_crash.sh - kill -9 of backup and of prune at random points, many times over: after
# every kill `check` passes (leftovers are only noted) and every snapshot that completed
# restores byte-exact. Prune pauses after each step (KBACKUP_TEST_PRUNE_STEP_MS, test-only) so
# that the kills land between any two of its writes and deletions, not just at its start.
#
# KB_OPS_KILLS (default 60, at least 50 for the issue) kills alternate between a backup and a
# forget+prune; KB_OPS_SEED makes a run repeatable.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/ops_lib.sh
source "$(dirname "$0")/ops_lib.sh"

KILLS=${KB_OPS_KILLS:-60}
SEED=${KB_OPS_SEED:-$$}
RANDOM=$SEED
note "seed $SEED (KB_OPS_SEED=$SEED repeats this run)"

REPO=$(ops_repo crash)
kb_init "$REPO"

# Snapshot id -> the source it must restore to. Sources are small so the loop stays short.
declare -A SRCOF
base=$KB_TMP/src0
ops_gen "$base" 1 20 60000
id=$(kb_backup "$REPO" "$base" --name ns/base)
SRCOF[$id]=$base

# How long each command takes here, to spread the kill points over its whole run.
ms_of() {
        local t0
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1 </dev/null || true
        echo $((($(date +%s%N) - t0) / 1000000))
}
# Three generations of ns/crash, the first then forgotten: a backup and a prune as the loop runs
# them.
declare -A GONE # forgotten on purpose
for g in a b c; do
        src=$KB_TMP/src-$g
        ops_mutate "$base" "$src" 7
        head -c 2000000 /dev/urandom >"$src/d1/big-$g"
        ms=$(ms_of "$KBACKUP" --repo "$REPO" backup volume "$src" --name ns/crash)
        if ((ms > ${backup_ms:-0})); then backup_ms=$ms; fi
        for s in $(ops_snapshot_ids "$REPO"); do
                [[ -n ${SRCOF[$s]:-} ]] || SRCOF[$s]=$src
        done
done
prev=$src
expect_exit 0 kb --repo "$REPO" --json forget --name ns/crash --keep-last 2
for s in $(python3 -c 'import json,sys; [print(s["id"]) for g in json.load(open(sys.argv[1]))["groups"] for s in g["snapshots"] if not s["keep"]]' "$KB_OUT"); do
        GONE[$s]=1
done
export KBACKUP_TEST_PRUNE_STEP_MS=15
prune_ms=$(ms_of "$KBACKUP" --repo "$REPO" prune --max-unused 0)
note "a backup takes ${backup_ms} ms, a prune ${prune_ms} ms (with pauses)"
if ((backup_ms < 1)); then backup_ms=1; fi
if ((prune_ms < 1)); then prune_ms=1; fi

leftover_notes=0
# Every listed snapshot is known and restores to its source; the repository checks clean.
verify() {
        local s ids=$1
        expect_exit 0 kb --repo "$REPO" check
        grep -q "no problems found" "$KB_OUT" || fail "check: $(cat "$KB_OUT")"
        if grep -q "note: .* in no index" "$KB_OUT"; then
                leftover_notes=$((leftover_notes + 1))
        fi
        for s in $ids; do
                [[ -n ${SRCOF[$s]:-} ]] || fail "snapshot $s appeared from nowhere"
                ops_restore_cmp "$REPO" "$s" "${SRCOF[$s]}"
        done
        for s in "${!SRCOF[@]}"; do
                [[ -z ${GONE[$s]:-} ]] || continue
                grep -qx "$s" <<<"$ids" || fail "completed snapshot $s is lost"
        done
}

declare -A killed done_before
start=$SECONDS
kills=0
for ((i = 1; kills < KILLS; i++)); do
        if ((i % 2)); then
                src=$KB_TMP/src$((i + 1))
                ops_mutate "$prev" "$src" $((i + 1))
                # new data each time, so the backup spends its time writing packs
                rm -f "$src"/d1/big*
                head -c 2000000 /dev/urandom >"$src/d1/big$i"
                prev=$src
                delay=$((RANDOM % (backup_ms * 12 / 10 + 1)))
                kb_bg --repo "$REPO" backup volume "$src" --name ns/crash
                what=backup
        else
                # forget is quick and not killed: it gives the prune something to do
                expect_exit 0 kb --repo "$REPO" --json forget --name ns/crash --keep-last 2
                for s in $(python3 -c '
import json, sys
for g in json.load(open(sys.argv[1]))["groups"]:
    for s in g["snapshots"]:
        if not s["keep"]:
            print(s["id"])' "$KB_OUT"); do
                        GONE[$s]=1
                done
                delay=$((RANDOM % (prune_ms * 12 / 10 + 1)))
                kb_bg --repo "$REPO" prune --max-unused 0
                what=prune
        fi
        pid=$KB_BG_PID
        sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
        kb_stop_bg "$pid"
        kills=$((kills + 1))
        if ((KB_BG_RC == 137)); then
                killed[$what]=$((${killed[$what]:-0} + 1))
                # Killed: maybe too early to reach its writes; aim a little later next time.
                if [[ $what == prune ]]; then
                        prune_ms=$((prune_ms * 21 / 20 + 1))
                else
                        backup_ms=$((backup_ms * 21 / 20 + 1))
                fi
        else
                ((KB_BG_RC == 0)) || fail "$what failed (exit $KB_BG_RC): $(cat "$KB_TMP/bg.err")"
                done_before[$what]=$((${done_before[$what]:-0} + 1))
                # It was quicker than we thought: aim the next kills a little earlier. (The two
                # adjustments settle where about two kills in three land inside the run.)
                if [[ $what == prune ]] && ((prune_ms > 20)); then
                        prune_ms=$((prune_ms * 9 / 10))
                elif [[ $what == backup ]] && ((backup_ms > 20)); then
                        backup_ms=$((backup_ms * 9 / 10))
                fi
        fi
        assert_no_sanitizer "$KB_TMP/bg.err"
        # Which snapshots exist now: a backup killed after writing its snapshot still counts.
        ids=$(ops_snapshot_ids "$REPO")
        for s in $ids; do
                [[ -n ${SRCOF[$s]:-} ]] && continue
                [[ $what == backup ]] || fail "snapshot $s appeared during a prune"
                SRCOF[$s]=$src
        done
        verify "$ids"
        ((SECONDS - start < 600)) || fail "the loop is taking too long ($kills kills)"
done
note "$kills kills in $((SECONDS - start)) s: backups killed ${killed[backup]:-0}, finished first ${done_before[backup]:-0}; prunes killed ${killed[prune]:-0}, finished first ${done_before[prune]:-0}; $leftover_notes check(s) noted leftovers"

# A last, uninterrupted prune removes every leftover; all is still there.
unset KBACKUP_TEST_PRUNE_STEP_MS
expect_exit 0 kb --repo "$REPO" prune
expect_exit 0 kb --repo "$REPO" check --read-data
grep -q "in no index" "$KB_OUT" && fail "leftovers remain after a full prune: $(cat "$KB_OUT")"
verify "$(ops_snapshot_ids "$REPO")"
pass
