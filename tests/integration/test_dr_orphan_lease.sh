#!/usr/bin/env bash
# test_dr_orphan_lease.sh - key restore of a key whose lease the snapshot does not describe. An
# etcd whose lease record is gone still serves the key (it only logs "failed to attach a lease"),
# and its snapshot then names a lease that its lease bucket lacks. With --include-leased the key
# must get a new lease of --lease-ttl seconds, and a warning must name the lease; without it the
# key is skipped like any leased key. A healthy etcd never writes such a snapshot, so it is
# forged: a real snapshot with its lease bucket emptied (tests/tools/bbolt_empty_bucket.py),
# restored by etcdctl and served by a new etcd, then backed up by kbackup.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
kb_init "$REPO"
KEY=/registry/events/ns-000/orphaned-event
TTL=1234 # differs from the original lease's 900 and from the 3600 default

# ---- the forged source ----
etcd_start --name orig
LEASE=$(ectl lease grant 900 | awk '{print $2}') # 16 hex digits, as etcdctl and kbackup print it
ectl put --lease="$LEASE" "$KEY" '{"kind":"Event"}' >/dev/null
ectl put /registry/pods/ns-000/pod-1 '{"kind":"Pod"}' >/dev/null
ectl snapshot save "$KB_TMP/orig.db" >/dev/null 2>&1 || fail "etcdctl snapshot save"
etcd_stop "$ETCD_DIR"
python3 "$KB_TOOLS/bbolt_empty_bucket.py" "$KB_TMP/orig.db" lease || fail "could not empty the lease bucket"
etcd_start_from_snapshot "$KB_TMP/orig.db" src
SRC_EP=$ETCD_ENDPOINT
lease_of() { # FLAGS KEY: the key's lease id in decimal (0: none)
        # shellcheck disable=SC2086  # FLAGS is a word list
        ETCDCTL_API=3 etcdctl $1 get "$2" -w json |
                python3 -c 'import json,sys; print(json.load(sys.stdin)["kvs"][0].get("lease", 0))'
}
# What makes the case: the key still names its lease, and the member has no lease at all.
(($(lease_of "$ETCDCTL_FLAGS" "$KEY") != 0)) || fail "the forged source lost the key's lease id"
[[ $(ectl lease list) == "found 0 leases" ]] || fail "the forged source still has leases: $(ectl lease list)"

SNAP=$(kb_backup_etcd "$REPO" --endpoints "$SRC_EP")

# ---- the target ----
etcd_start --name dst
DST_EP=$ETCD_ENDPOINT DST_FLAGS=$ETCDCTL_FLAGS

counts() { # JSON WANT_WRITTEN WANT_LEASED_SKIPPED WANT_LEASES_GRANTED
        python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
got = (r["written"], r["leased_skipped"], r["leases_granted"])
want = tuple(int(x) for x in sys.argv[2:])
assert got == want, "written, leased_skipped, leases_granted: %s, want %s" % (got, want)
' "$@" || fail "counts: $(cat "$1")"
}

# Without --include-leased: skipped like any leased key.
expect_exit 0 kb --repo "$REPO" --json restore etcd "$SNAP" --endpoints "$DST_EP" --lease-ttl $TTL
counts "$KB_OUT" 1 1 0
[[ -z $(ectl get "$KEY" --keys-only) ]] || fail "the leased key was written without --include-leased"
ectl del "" --from-key >/dev/null

# Dry run: one lease would be granted, nothing is written, and the warning names the lease.
expect_exit 0 kb --repo "$REPO" --json restore etcd "$SNAP" --endpoints "$DST_EP" \
        --include-leased --lease-ttl $TTL --dry-run
counts "$KB_OUT" 2 0 1
grep -q "lease $LEASE is not in the snapshot's lease bucket: its keys get a lease of ${TTL}s" \
        "$KB_ERR" || fail "no warning naming the missing lease: $(cat "$KB_ERR")"
[[ -z $(ectl get "" --from-key --keys-only) ]] || fail "the dry run wrote keys"
[[ $(ectl lease list) == "found 0 leases" ]] || fail "the dry run granted a lease"

# The restore: the key comes back with a new lease of --lease-ttl seconds, the other without one.
expect_exit 0 kb --repo "$REPO" --json restore etcd "$SNAP" --endpoints "$DST_EP" \
        --include-leased --lease-ttl $TTL
counts "$KB_OUT" 2 0 1
[[ $(ectl get "$KEY" --print-value-only) == '{"kind":"Event"}' ]] || fail "the orphaned key's value"
NEW=$(lease_of "$DST_FLAGS" "$KEY")
((NEW != 0)) || fail "the orphaned key was restored without a lease"
GRANTED=$(ectl lease timetolive "$(printf '%x' "$NEW")" -w json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["granted-ttl"])')
((GRANTED == TTL)) || fail "granted TTL $GRANTED, want --lease-ttl's $TTL"
(($(lease_of "$DST_FLAGS" /registry/pods/ns-000/pod-1) == 0)) || fail "the unleased key got a lease"
pass
