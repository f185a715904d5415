#!/usr/bin/env bash
# demo.sh - the main job on the embedded default, from a fresh machine: install, build, create a
# repository in a temp dir, back up a real directory, back it up again (dedup), restore it and
# prove the restore identical in bytes and metadata; then start a throwaway local etcd, load
# Kubernetes-shaped keys, back it up into the same repository, restore the snapshot file, prove it
# with `etcdctl snapshot restore`, start etcd on the restored data and compare every key.
#
# Usage: scripts/demo.sh [DIRECTORY_TO_BACK_UP]   (default: /usr/share/doc)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
source_dir=${1:-/usr/share/doc}

bash "$src/scripts/setup.sh"
echo "== building"
kbackup=$(bash "$src/scripts/build.sh")

work=$(mktemp -d /tmp/kbackup-demo.XXXXXX)
etcd_dirs=()
cleanup() {
        for d in "${etcd_dirs[@]}"; do bash "$src/tests/tools/etcd_server.sh" stop "$d" >/dev/null 2>&1 || true; done
        rm -rf "$work"
}
trap cleanup EXIT
export KBACKUP_REPOSITORY=$work/repo
export KBACKUP_PASSWORD_FILE=$work/password
head -c 32 /dev/urandom | base64 >"$KBACKUP_PASSWORD_FILE"

echo "== kbackup init"
"$kbackup" init
echo "== kbackup backup volume $source_dir (first)"
"$kbackup" backup volume "$source_dir" --name demo/docs --tag run=demo
echo "== kbackup backup volume $source_dir (again: only changes are stored)"
"$kbackup" backup volume "$source_dir" --name demo/docs --tag run=demo
echo "== kbackup snapshots"
"$kbackup" snapshots
echo "== kbackup restore volume latest"
"$kbackup" restore volume latest --target "$work/restored"
echo "== comparing $source_dir with the restore (bytes, modes, owners, times, xattrs, links)"
python3 "$src/tests/tools/treecmp.py" "$source_dir" "$work/restored"
echo "volume OK: restored tree is identical to $source_dir"

echo "== starting a throwaway etcd on loopback and loading 5,000 Kubernetes-shaped keys"
eval "$(KB_TEST_TMPDIR=$work bash "$src/tests/tools/etcd_server.sh" start -- --max-txn-ops 1024 --max-request-bytes 4194304)"
etcd_dirs+=("$ETCD_DIR")
python3 "$src/tests/tools/etcd_load.py" --quiet --ctl "--endpoints $ETCD_ENDPOINT" load --count 5000
echo "== kbackup backup etcd --endpoints $ETCD_ENDPOINT"
"$kbackup" backup etcd --endpoints "$ETCD_ENDPOINT" --tag run=demo
python3 "$src/tests/tools/etcd_load.py" --ctl "--endpoints $ETCD_ENDPOINT" dump "$work/source.keys"
echo "== kbackup restore etcd latest --output snapshot.db; etcdctl snapshot restore"
"$kbackup" restore etcd latest --output "$work/snapshot.db"
peer=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ETCDCTL_API=3 etcdctl snapshot restore "$work/snapshot.db" --name restored --data-dir "$work/restored-etcd" \
        --initial-cluster "restored=http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" >/dev/null 2>&1
echo "== starting etcd on the restored data and comparing every key, value and revision"
eval "$(KB_TEST_TMPDIR=$work bash "$src/tests/tools/etcd_server.sh" start --name restored -- --data-dir "$work/restored-etcd")"
etcd_dirs+=("$ETCD_DIR")
python3 "$src/tests/tools/etcd_load.py" --ctl "--endpoints $ETCD_ENDPOINT" dump "$work/restored.keys"
python3 "$src/tests/tools/etcd_load.py" compare "$work/source.keys" "$work/restored.keys"
"$kbackup" snapshots
echo "repository size: $(du -sh "$KBACKUP_REPOSITORY" | cut -f1), source size: $(du -sh "$source_dir" | cut -f1)"
echo "demo OK: volume restored identical; etcd snapshot accepted by etcdctl and every key identical"
