# shellcheck shell=bash
# proc_lib.sh - process helpers the test-server scripts (etcd_server.sh, s3_server.sh) share;
# sourced, not run.

die() {
        echo "$(basename "$0"): $*" >&2
        exit 1
}

# alive PID: running, and not a zombie waiting for a (possibly slow) reaper.
alive() {
        local st
        st=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
        [[ -n $st && $st != Z ]]
}

# kill_wait PID: SIGKILL, then wait up to 5 s for it to be gone. The servers' data is thrown
# away, so no graceful shutdown; callers only ever pass a pid their own script recorded.
kill_wait() {
        local pid=$1 i
        kill -9 "$pid" 2>/dev/null || return 0
        for ((i = 0; i < 50; i++)); do
                alive "$pid" || return 0
                sleep 0.1
        done
}
