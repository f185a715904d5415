#!/usr/bin/env bash
# test_volume_threads.sh - the default number of workers is what the process may use, not the
# node's CPU count: a backup and a restore pinned to one CPU (taskset) run one worker, and under a
# real cgroup CPU quota (v1 or v2, as root) 0.5 CPU gives one worker and 1.5 CPUs two; --threads
# overrides; every variant restores byte for byte.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

SRC=$KB_TMP/src
mktree "$SRC"
REPO=$KB_TMP/repo
kb_init "$REPO"

threads() { # from the --json summary of the last command
        python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])["threads"])' "$KB_OUT"
}

expect_threads() { # WANT WHAT
        local got
        got=$(threads)
        [[ $got == "$1" ]] || fail "$2: $got worker(s), want $1"
}

restore_check() { # [RUNNER...]: restore the latest snapshot with RUNNER in front, compare
        local out
        out=$(kb_tmpdir)/r
        expect_exit 0 "$@" timeout -k 10 "$KB_CMD_TIMEOUT" "$KBACKUP" --repo "$REPO" --json \
                restore volume latest --target "$out"
        treecmp --ignore-atime "$SRC" "$out"
}

ncpu=$(nproc)
expect_exit 0 kb --repo "$REPO" --json backup volume "$SRC"
default=$(threads)
note "nproc $ncpu, default workers $default"
((default >= 1 && default <= ncpu)) || fail "default of $default workers for $ncpu CPUs"

expect_exit 0 taskset -c 0 timeout -k 10 "$KB_CMD_TIMEOUT" "$KBACKUP" --repo "$REPO" --json backup volume "$SRC" --force
expect_threads 1 "backup pinned to one CPU"
restore_check taskset -c 0
expect_threads 1 "restore pinned to one CPU"

expect_exit 0 kb --repo "$REPO" --json backup volume "$SRC" --force --threads 3
expect_threads 3 "--threads 3"
restore_check
expect_threads "$default" "restore with the default"

# A cgroup with a CPU quota: under the v1 cpu controller's mount, or a v2 child of the root when
# the root already hands the cpu controller to its children (nothing of the host's is changed).
# Needs root and a writable hierarchy.
CG=
make_cgroup() {
        local mnt
        mnt=$(awk '$(NF-2) == "cgroup" && $NF ~ /(^|,)cpu(,|$)/ { print $5; exit }' /proc/self/mountinfo)
        if [[ -n $mnt ]] && mkdir "$mnt/kbtest-$$" 2>/dev/null; then
                CG=$mnt/kbtest-$$
                CG_KIND=v1
                return 0
        fi
        mnt=$(awk '$(NF-2) == "cgroup2" { print $5; exit }' /proc/self/mountinfo)
        [[ -n $mnt ]] || return 1
        grep -qw cpu "$mnt/cgroup.subtree_control" 2>/dev/null || return 1
        mkdir "$mnt/kbtest-$$" 2>/dev/null || return 1
        CG=$mnt/kbtest-$$
        CG_KIND=v2
        [[ -e $CG/cpu.max ]] || return 1
}

set_quota() { # MICROSECONDS per 100 ms period
        if [[ $CG_KIND == v1 ]]; then
                echo 100000 >"$CG/cpu.cfs_period_us"
                echo "$1" >"$CG/cpu.cfs_quota_us"
        else
                echo "$1 100000" >"$CG/cpu.max"
        fi
}

in_cgroup() { # COMMAND...: run it inside the test cgroup
        bash -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG" "$@"
}

# The cgroup goes once every process in it has ended (they are all run in the foreground).
remove_cgroup() {
        local rc=$?
        [[ -z $CG ]] || rmdir "$CG" 2>/dev/null || true
        (exit "$rc")
        kb_cleanup
}
trap remove_cgroup EXIT

if ((EUID != 0)); then
        note "not root: cgroup quotas not tested"
elif ((ncpu < 2)); then
        note "one CPU: a quota cannot lower the default"
elif ! make_cgroup; then
        note "no writable cgroup hierarchy with a cpu controller: quotas not tested"
else
        note "cgroup $CG_KIND at $CG"
        set_quota 50000
        expect_exit 0 in_cgroup timeout -k 10 "$KB_CMD_TIMEOUT" "$KBACKUP" --repo "$REPO" --json backup volume "$SRC" --force
        expect_threads 1 "backup under a quota of 0.5 CPU"
        restore_check in_cgroup
        expect_threads 1 "restore under a quota of 0.5 CPU"
        set_quota 150000
        expect_exit 0 in_cgroup timeout -k 10 "$KB_CMD_TIMEOUT" "$KBACKUP" --repo "$REPO" --json backup volume "$SRC" --force
        expect_threads 2 "backup under a quota of 1.5 CPUs"
fi

expect_exit 0 kb --repo "$REPO" check --read-data
pass
