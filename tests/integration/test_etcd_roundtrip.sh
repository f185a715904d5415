#!/usr/bin/env bash
# test_etcd_roundtrip.sh - the disaster-recovery round trip: a plain etcd with ~20k
# Kubernetes-shaped keys (with history: rewritten and deleted keys) is backed up, the snapshot file
# comes back out with `restore etcd --output`, carries a valid sha256 trailer, `etcdctl snapshot
# restore` accepts it, and an etcd started on the restored data dir holds exactly the same keys,
# values and revisions as the source. `restore etcd` never replaces an existing file.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
NKEYS=20000

etcd_start --name src
SRC_FLAGS=$ETCDCTL_FLAGS
SRC_EP=$ETCD_ENDPOINT
t0=$SECONDS
etcd_load --quiet load --count $NKEYS --seed 7
# History in the db: second revisions of 5% of the keys, tombstones for 2%, and values the text
# loader must quote (spaces, a leading '-', quotes, backslashes).
etcd_load --quiet modify --percent 5 --seed 8
etcd_load --quiet delete --percent 2 --seed 9
ectl put -- /registry/configmaps/ns-000/odd-1 '-starts with a dash "and quotes" \ and a backslash' >/dev/null
ectl put /registry/configmaps/ns-000/odd-2 '' >/dev/null
note "loaded $NKEYS keys in $((SECONDS - t0)) s"
db_size=$(ectl endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')
note "source db size: $db_size bytes"

kb_init "$REPO"
# A volume snapshot too, so the listing has both kinds and `restore etcd` can be shown a volume.
mkdir "$KB_TMP/vol" && echo hello >"$KB_TMP/vol/f"
vol_id=$(kb_backup "$REPO" "$KB_TMP/vol")

id=$(kb_backup_etcd "$REPO" --endpoints "$SRC_EP" --name cluster-a --tag env=test)
grep -q "$SRC_EP" "$KB_OUT" || fail "the backup summary does not name the endpoint used"
note "etcd snapshot $id"

# The listing: kind etcd, name and tag kept, stats of the stream; the human form lists etcd apart.
expect_exit 0 kb --repo "$REPO" snapshots --json
python3 - "$KB_OUT" "$id" "$vol_id" "$db_size" <<'EOF' || fail "snapshots --json is not as expected"
import json, sys
snaps = json.load(open(sys.argv[1]))
sid, vid, db = sys.argv[2], sys.argv[3], int(sys.argv[4])
e = [s for s in snaps if s["id"].startswith(sid) or sid.startswith(s["id"])]
v = [s for s in snaps if s["id"].startswith(vid) or vid.startswith(s["id"])]
assert len(e) == 1 and len(v) == 1, snaps
e, v = e[0], v[0]
assert e["kind"] == "etcd", e
assert v["kind"] == "volume", v
assert e["name"] == "cluster-a", e
assert e["tags"] == {"env": "test"}, e
# The stream is the db plus the 32-byte trailer; the db may have grown a little since status.
assert e["stats"]["bytes_read"] >= db + 32, (e["stats"], db)
EOF
expect_exit 0 kb --repo "$REPO" snapshots
grep -q "^etcd snapshots" "$KB_OUT" || fail "'snapshots' has no etcd section"
grep -q "^volume snapshots" "$KB_OUT" || fail "'snapshots' has no volume section"

# Out again: the exact stream, db || sha256(db).
F=$KB_TMP/out/etcd.db
mkdir "$KB_TMP/out"
expect_exit 0 kb --repo "$REPO" restore etcd latest --output "$F"
[[ -f $F ]] || fail "restore etcd wrote no $F"
python3 - "$F" <<'EOF' || fail "the restored file's last 32 bytes are not the sha256 of the rest"
import hashlib, sys
d = open(sys.argv[1], "rb").read()
assert len(d) > 4096 + 32, len(d)
assert hashlib.sha256(d[:-32]).digest() == d[-32:]
EOF
[[ $(ls -A "$KB_TMP/out") == etcd.db ]] || fail "restore etcd left other files: $(ls -A "$KB_TMP/out")"
snapshot_count "$REPO" >/dev/null
stream_len=$(python3 -c 'import json,sys
print([s for s in json.load(open(sys.argv[1])) if s["kind"] == "etcd"][0]["stats"]["bytes_read"])' \
        "$KB_TMP/count.json")
file_len=$(stat -c %s "$F")
((file_len == stream_len)) || fail "restored file is $file_len bytes, the snapshot read $stream_len"

# A dump of the source now (nothing has written to it since the backup).
etcd_load --quiet dump "$KB_TMP/src.dump"
src_rev=$(ectl get / --prefix --keys-only --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')

# etcdctl snapshot restore checks the trailer itself, then a new etcd runs on the result.
etcd_start_from_snapshot "$F" r1
[[ $ETCD_ENDPOINT != "$SRC_EP" ]] || fail "restored etcd got the source's endpoint"
etcd_load --quiet dump "$KB_TMP/restored.dump"
dst_rev=$(ectl get / --prefix --keys-only --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')

nsrc=$(wc -l <"$KB_TMP/src.dump")
((nsrc > NKEYS * 95 / 100)) || fail "source dump has only $nsrc keys"
python3 "$KB_TOOLS/etcd_load.py" compare "$KB_TMP/src.dump" "$KB_TMP/restored.dump" >&2 ||
        fail "restored etcd differs from the source"
((src_rev == dst_rev)) || fail "revision: source $src_rev, restored $dst_rev"
note "restored etcd: $nsrc keys and revision $dst_rev, identical to the source"

# Never over an existing file: the restored one, or any other.
sum=$(sha256sum "$F")
expect_exit nonzero kb --repo "$REPO" restore etcd "$id" --output "$F"
[[ $(sha256sum "$F") == "$sum" ]] || fail "restore etcd changed an existing file"
grep -qi "exist" "$KB_ERR" || fail "no 'exists' in the error: $(cat "$KB_ERR")"
echo "precious" >"$KB_TMP/out/other"
expect_exit nonzero kb --repo "$REPO" restore etcd "$id" --output "$KB_TMP/out/other"
[[ $(cat "$KB_TMP/out/other") == precious ]] || fail "restore etcd overwrote an existing file"
[[ $(find "$KB_TMP/out" -mindepth 1 -printf '%f\n' | sort | tr '\n' ' ') == "etcd.db other " ]] ||
        fail "failed restores left files: $(ls -A "$KB_TMP/out")"

# A volume snapshot is not an etcd snapshot.
expect_exit nonzero kb --repo "$REPO" restore etcd "$vol_id" --output "$KB_TMP/out/vol.db"
[[ ! -e $KB_TMP/out/vol.db ]] || fail "restore etcd of a volume snapshot wrote a file"

# The source was never written to by the backup.
ETCDCTL_FLAGS=$SRC_FLAGS etcd_load --quiet dump "$KB_TMP/src2.dump"
cmp -s "$KB_TMP/src.dump" "$KB_TMP/src2.dump" || fail "the source etcd changed during the test"

pass
