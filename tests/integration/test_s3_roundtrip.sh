#!/usr/bin/env bash
# test_s3_roundtrip.sh - a repository in an S3 bucket (s3rver on loopback, which checks Signature
# V4): init, volume backup and restore (byte- and metadata-exact), an unchanged re-backup that
# stores nothing new, an etcd backup and restore (key-exact), and interop with the aws CLI: it
# lists exactly the objects docs/repository-format.md names, under the prefix, each verifiable
# against its name (sha256sum), and reads the marker.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/s3_lib.sh
source "$(dirname "$0")/s3_lib.sh"

s3_start
PREFIX="some/prefix"
REPO=$(s3_repo "$PREFIX")
note "repository $REPO"

# ---- init
kb_init "$REPO"
expect_exit 1 kb --repo "$REPO" init
grep -qi "exists" "$KB_ERR" || fail "second init: no 'exists' in: $(cat "$KB_ERR")"
# Another prefix in the same bucket is another (empty) place.
expect_exit 1 kb --repo "$(s3_repo other)" snapshots
grep -q "not a kbackup repository" "$KB_ERR" || fail "empty prefix: $(cat "$KB_ERR")"

# ---- volume round trip
SRC=$KB_TMP/src
REF=$KB_TMP/ref
mktree "$SRC" --seed 5 --quiet
mktree "$REF" --seed 5 --quiet
id1=$(kb_backup "$REPO" "$SRC" --name ns/pvc-s3)
expect_exit 0 kb --repo "$REPO" restore volume "$id1" --target "$KB_TMP/restored"
treecmp "$REF" "$KB_TMP/restored"

# Unchanged data: the second backup finds every chunk already in the bucket.
expect_exit 0 kb --repo "$REPO" backup volume "$SRC" --name ns/pvc-s3 --json
python3 - "$KB_OUT" <<'EOF' || fail "re-backup of unchanged data stored new data: $(cat "$KB_OUT")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["bytes_read"] > 10 << 20, s
assert s["bytes_new"] < s["bytes_read"] // 100, s
EOF
id2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot"])' "$KB_OUT")
expect_exit 0 kb --repo "$REPO" restore volume "$id2" --target "$KB_TMP/restored2"
treecmp "$REF" "$KB_TMP/restored2"

# ---- etcd round trip
etcd_start --name s3src
etcd_load --quiet load --count 3000 --seed 11
etcd_load --quiet modify --percent 10 --seed 12
etcd_load --quiet delete --percent 5 --seed 13
eid=$(kb_backup_etcd "$REPO" --endpoints "$ETCD_ENDPOINT" --name cluster-s3)
etcd_load --quiet dump "$KB_TMP/src.dump"
src_rev=$(ectl get / --prefix --keys-only --limit 1 -w json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
F=$KB_TMP/etcd.db
expect_exit 0 kb --repo "$REPO" restore etcd "$eid" --output "$F"
etcd_start_from_snapshot "$F" r1
etcd_load --quiet dump "$KB_TMP/restored.dump"
dst_rev=$(ectl get / --prefix --keys-only --limit 1 -w json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
python3 "$KB_TOOLS/etcd_load.py" compare "$KB_TMP/src.dump" "$KB_TMP/restored.dump" >&2 ||
        fail "etcd restored from S3 differs from the source"
((src_rev == dst_rev)) || fail "etcd revision: source $src_rev, restored $dst_rev"
[[ $(snapshot_count "$REPO" volume) == 2 && $(snapshot_count "$REPO" etcd) == 1 ]] ||
        fail "snapshot counts: $(cat "$KB_TMP/count.json")"

# ---- interop: the aws CLI sees exactly the documented names
aws_s3 s3 ls --recursive "s3://$S3_BUCKET/" >"$KB_TMP/ls.txt" 2>"$KB_TMP/ls.err" ||
        fail "aws s3 ls failed: $(cat "$KB_TMP/ls.err")"
python3 - "$KB_TMP/ls.txt" "$PREFIX" <<'EOF' || fail "the bucket holds unexpected object names"
import re, sys
lines = [l.split() for l in open(sys.argv[1]) if l.strip()]
prefix = sys.argv[2] + "/"
keys = [l[3] for l in lines]
kinds = {}
pat = re.compile(r"^(kbackup|config|keys/[0-9a-f]{64}|data/([0-9a-f]{2})/[0-9a-f]{64}|"
                 r"index/[0-9a-f]{64}|snapshots/[0-9a-f]{64}|locks/[0-9a-f]{64})$")
for k in keys:
    assert k.startswith(prefix), "outside the prefix: " + k
    rel = k[len(prefix):]
    m = pat.match(rel)
    assert m, "not a repository name: " + k
    if m.group(2):
        assert rel[5:7] == rel[8:10], "pack in the wrong data/xx: " + k
    kinds[rel.split("/")[0]] = kinds.get(rel.split("/")[0], 0) + 1
for want in ("kbackup", "config", "keys", "data", "index", "snapshots"):
    assert kinds.get(want), "no %s object in %s" % (want, kinds)
assert kinds["snapshots"] == 3, kinds
print(len(keys), "objects:", kinds, file=sys.stderr)
EOF

aws_s3 s3 cp "s3://$S3_BUCKET/$PREFIX/kbackup" - >"$KB_TMP/marker" 2>"$KB_TMP/cp.err" ||
        fail "aws s3 cp of the marker failed: $(cat "$KB_TMP/cp.err")"
[[ $(head -n 1 "$KB_TMP/marker") == "kbackup repository" ]] ||
        fail "the marker reads '$(head -n 1 "$KB_TMP/marker")'"

# Every object is named by the SHA-256 of its bytes (docs/repository-format.md): check a pack, an
# index and a snapshot fetched by the aws CLI against their names.
for kind in data index snapshots; do
        key=$(awk '{print $4}' "$KB_TMP/ls.txt" | grep "^$PREFIX/$kind/" | head -n 1)
        aws_s3 s3 cp "s3://$S3_BUCKET/$key" "$KB_TMP/obj" >/dev/null 2>&1 || fail "aws s3 cp $key"
        sum=$(sha256sum "$KB_TMP/obj" | cut -d' ' -f1)
        [[ $sum == "${key##*/}" ]] || fail "$key: content hashes to $sum"
done

pass
