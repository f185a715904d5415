#!/usr/bin/env bash
# test_node_volumes.sh - scripts/backup-node-volumes.sh, what the per-node volume-backup CronJobs
# run, against a kubelet-shaped pods directory in a private mount namespace: CSI and in-tree
# volumes that are real mount points, and a PV of volumeMode Block (kubelet's link to a loop
# device), are backed up once each under their NAMESPACE/PVC name and restore identical; a
# dangling device link, a leftover directory that is not a mount point and volumes of other nodes
# are skipped; list errors are usage errors; a failing backup makes exit 1 after trying every volume;
# with KBACKUP_LOG_FORMAT=json the script's own lines are JSON. Needs root (bind mounts, in a
# mount namespace of its own so nothing leaks onto the machine).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

SCRIPT=$KB_SOURCE_DIR/scripts/backup-node-volumes.sh
REPO=$KB_TMP/repo
PODS=$KB_TMP/kubelet/pods
LIST=$KB_TMP/volumes.txt
kb_init "$REPO"
export KBACKUP_REPOSITORY=$REPO KBACKUP_BIN=$KBACKUP

# ---- list errors: exit 2, nothing run ----
mkdir -p "$PODS"
node() { # ARGS...: the script, output in $KB_OUT/$KB_ERR, exit code in KB_RC
        KB_RC=0
        timeout -k 5 300 bash "$SCRIPT" "$@" </dev/null >"$KB_OUT" 2>"$KB_ERR" || KB_RC=$?
        assert_no_sanitizer "$KB_ERR"
}
bad_list() { # CONTENT REGEX
        printf '%s\n' "$1" >"$LIST"
        node --list "$LIST" --pods-dir "$PODS"
        { ((KB_RC == 2)) && grep -Eq -- "$2" "$KB_ERR"; } ||
                fail "list '$1': want exit 2 and /$2/, got $KB_RC: $(cat "$KB_ERR")"
}
bad_list "pvc-1 shop" "line 1: want 'PV_NAME NAMESPACE/PVC'"
bad_list "pvc-1 shop/data extra" "line 1: want"
bad_list $'# ok\npvc-1 Shop/data' "line 2: want"
bad_list $'pvc-1 shop/a\npvc-1 shop/b' "pvc-1 is listed twice"
node --list "$KB_TMP/none" --pods-dir "$PODS"
((KB_RC == 2)) || fail "a missing list must be a usage error, got $KB_RC"
node --bogus
((KB_RC == 2)) || fail "an unknown option must be a usage error, got $KB_RC"
node --help
{ ((KB_RC == 0)) && grep -q '^Usage: backup-node-volumes.sh' "$KB_OUT"; } || fail "--help"
[[ $(snapshot_count "$REPO") == 0 ]] || fail "usage errors backed something up"

if ((EUID != 0)) || ! command -v unshare >/dev/null; then
        note "not root (or no unshare): the mount-point part is skipped"
        pass
        exit 0
fi

# ---- a node: two pods share pvc-aaa (CSI), one has pvc-bbb (in-tree nfs layout), a leftover
# unmounted directory for pvc-ccc holds a file, pvc-ddd lives on another node ----
mktree "$KB_TMP/data-a" --seed 11 --quiet
mktree "$KB_TMP/ref-a" --seed 11 --quiet
mktree "$KB_TMP/data-b" --seed 12 --quiet
mktree "$KB_TMP/ref-b" --seed 12 --quiet
for d in 11111111-aaaa/volumes/kubernetes.io~csi/pvc-aaa/mount \
        22222222-aaaa/volumes/kubernetes.io~csi/pvc-aaa/mount \
        33333333-bbbb/volumes/kubernetes.io~nfs/pvc-bbb \
        44444444-cccc/volumes/kubernetes.io~csi/pvc-ccc/mount; do
        mkdir -p "$PODS/$d"
done
echo "not a mount" >"$PODS/44444444-cccc/volumes/kubernetes.io~csi/pvc-ccc/mount/stray"
# pvc-eee is a PV of volumeMode Block: kubelet links the pod's device under volumeDevices/ (here
# a loop device).
head -c $((3 << 20)) /dev/urandom >"$KB_TMP/disk-e.img"
kb_loop_attach DEV_E "$KB_TMP/disk-e.img"
mkdir -p "$PODS/55555555-eeee/volumeDevices/kubernetes.io~csi"
ln -s "$DEV_E" "$PODS/55555555-eeee/volumeDevices/kubernetes.io~csi/pvc-eee"
cat >"$LIST" <<'EOF'
# PV_NAME NAMESPACE/PVC
pvc-aaa shop/data-postgres-0
pvc-bbb shop/uploads   # in-tree nfs
pvc-ccc billing/ledger
pvc-ddd billing/archive
pvc-eee shop/vm-disk   # volumeMode Block
pvc-fff shop/gone
EOF

# in_node SCRIPT_ARGS...: the script inside a private mount namespace with the volumes mounted.
in_node() {
        KB_RC=0
        # shellcheck disable=SC2016 # expanded by the inner shell
        timeout -k 5 600 unshare --mount --propagation private bash -c '
                set -e
                pods=$1 a=$2 b=$3
                shift 3
                mount --bind "$a" "$pods/11111111-aaaa/volumes/kubernetes.io~csi/pvc-aaa/mount"
                mount --bind "$a" "$pods/22222222-aaaa/volumes/kubernetes.io~csi/pvc-aaa/mount"
                mount --bind "$b" "$pods/33333333-bbbb/volumes/kubernetes.io~nfs/pvc-bbb"
                exec bash "$@"' _ "$PODS" "$KB_TMP/data-a" "$KB_TMP/data-b" "$SCRIPT" "$@" \
                </dev/null >"$KB_OUT" 2>"$KB_ERR" || KB_RC=$?
        assert_no_sanitizer "$KB_ERR"
}

in_node --list "$LIST" --pods-dir "$PODS" --dry-run --pushgateway http://pgw:9091 -- --tag schedule=nightly
((KB_RC == 0)) || fail "--dry-run: exit $KB_RC: $(cat "$KB_ERR")"
want="$KBACKUP --pushgateway http://pgw:9091 --pushgateway-instance shop_data-postgres-0 backup volume $PODS/11111111-aaaa/volumes/kubernetes.io~csi/pvc-aaa/mount --name shop/data-postgres-0 --tag schedule=nightly
$KBACKUP --pushgateway http://pgw:9091 --pushgateway-instance shop_uploads backup volume $PODS/33333333-bbbb/volumes/kubernetes.io~nfs/pvc-bbb --name shop/uploads --tag schedule=nightly
$KBACKUP --pushgateway http://pgw:9091 --pushgateway-instance shop_vm-disk backup volume $PODS/55555555-eeee/volumeDevices/kubernetes.io~csi/pvc-eee --name shop/vm-disk --tag schedule=nightly"
[[ $(cat "$KB_OUT") == "$want" ]] || fail "--dry-run printed:
$(cat "$KB_OUT")
want:
$want"
[[ $(snapshot_count "$REPO") == 0 ]] || fail "--dry-run backed something up"

KBACKUP_LOG_FORMAT=json in_node --list "$LIST" --pods-dir "$PODS" -- --tag schedule=nightly
((KB_RC == 0)) || fail "backup: exit $KB_RC: $(head -c 3000 "$KB_ERR")"
python3 - "$KB_ERR" <<'EOF' || fail "the script's own log lines are not JSON objects"
import json, sys
own = [l for l in open(sys.argv[1]) if "backup-node-volumes:" in l]
assert len(own) == 4, own  # three "backing up" lines and the summary
for l in own:
    o = json.loads(l)
    assert {"time", "level", "msg"} <= o.keys(), o
    assert o["time"].endswith("Z") and "T" in o["time"], o
assert json.loads(own[-1])["mounted"] == "3" and json.loads(own[-1])["listed"] == "6", own[-1]
EOF

kb --repo "$REPO" snapshots --json >"$KB_TMP/snaps.json"
python3 - "$KB_TMP/snaps.json" <<'EOF' || fail "want one snapshot each of shop/data-postgres-0, shop/uploads, shop/vm-disk"
import json, sys
snaps = json.load(open(sys.argv[1]))
names = sorted(s["name"] for s in snaps)
assert names == ["shop/data-postgres-0", "shop/uploads", "shop/vm-disk"], names
assert all(s["tags"].get("schedule") == "nightly" for s in snaps), snaps
EOF
snap_of() { # NAME: the id of the snapshot of that name
        python3 -c 'import json, sys
print(next(s["id"] for s in json.load(open(sys.argv[1])) if s["name"] == sys.argv[2]))' \
                "$KB_TMP/snaps.json" "$1"
}
for pair in "shop/data-postgres-0 ref-a" "shop/uploads ref-b"; do
        read -r name ref <<<"$pair"
        id=$(snap_of "$name")
        expect_exit 0 kb --repo "$REPO" restore volume "$id" --target "$KB_TMP/restored-$ref"
        treecmp "$KB_TMP/$ref" "$KB_TMP/restored-$ref" --ignore-atime-dirs
done
expect_exit 0 kb --repo "$REPO" restore volume "$(snap_of shop/vm-disk)" --target "$KB_TMP/restored-e"
cmp "$KB_TMP/restored-e/device.img" "$KB_TMP/disk-e.img" || fail "the block PV's image differs"

# A device link that leads nowhere (the job cannot see the device): an error naming the PV, exit 1,
# and every other volume still backed up.
mkdir -p "$PODS/66666666-ffff/volumeDevices/kubernetes.io~csi"
ln -s "$KB_TMP/no-such-device" "$PODS/66666666-ffff/volumeDevices/kubernetes.io~csi/pvc-fff"
before=$(snapshot_count "$REPO")
in_node --list "$LIST" --pods-dir "$PODS"
((KB_RC == 1)) || fail "dangling device link: want exit 1, got $KB_RC"
grep -q "shop/gone: kubelet's device link .* leads to no block device" "$KB_ERR" ||
        fail "dangling device link not reported: $(cat "$KB_ERR")"
(($(snapshot_count "$REPO") == before + 3)) || fail "the other volumes were not backed up"
rm "$PODS/66666666-ffff/volumeDevices/kubernetes.io~csi/pvc-fff"

# A failing backup (no repository there): every mounted volume is tried, exit 1.
KBACKUP_REPOSITORY=$KB_TMP/no-repo in_node --list "$LIST" --pods-dir "$PODS"
((KB_RC == 1)) || fail "failing backups: want exit 1, got $KB_RC"
[[ $(grep -c 'failed (exit 1)' "$KB_ERR") == 3 ]] ||
        fail "failing backups: want three 'failed' lines: $(cat "$KB_ERR")"

# Per-volume metrics files, once kbackup has --metrics-file.
if "$KBACKUP" --help | grep -q -- '--metrics-file'; then
        mkdir -p "$KB_TMP/textfile"
        in_node --list "$LIST" --pods-dir "$PODS" --metrics-dir "$KB_TMP/textfile"
        ((KB_RC == 0)) || fail "--metrics-dir: exit $KB_RC: $(head -c 2000 "$KB_ERR")"
        for key in shop_data-postgres-0 shop_uploads shop_vm-disk; do
                f=$KB_TMP/textfile/kbackup-volume-$key.prom
                grep -q '^kbackup_last_success_timestamp_seconds{' "$f" ||
                        fail "no kbackup_last_success_timestamp_seconds in $f"
        done
        [[ $(find "$KB_TMP/textfile" -type f | wc -l) == 3 ]] || fail "want exactly three metrics files"
else
        note "kbackup has no --metrics-file yet: --metrics-dir is not covered"
fi
pass
