#!/usr/bin/env bash
# test_etcd_read.sh - reading keys inside stored etcd snapshots (`kbackup etcd ls|get|diff|info`)
# without restoring them. For a snapshot taken at revision R, `etcd ls --json --values` must equal
# `etcdctl get --prefix "" --rev R` (keys, values, create/mod revisions, versions, leases), even
# after the keys were overwritten and deleted in the live cluster; `etcd get` returns a value
# byte for byte (one spanning overflow pages, binary); `etcd diff` between two snapshots lists
# exactly the keys that changed; reading writes nothing to the repository (but a shared lock, none
# with --no-lock); damaged input fails with a message.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
KS=$KB_TOOLS/etcd_keyspace.py

etcd_start --name readsrc
etcd_load --quiet load --count 3000 --seed 11 --max-size 4000
etcd_load --quiet modify --percent 10 --seed 12 --max-size 4000
etcd_load --quiet delete --percent 3 --seed 13
lease=$(ectl lease grant 3600 | awk '{print $2}')
for i in 1 2 3; do
        ectl put --lease="$lease" "/registry/events/ns-lease/ev-$i" "event $i" >/dev/null
done
ectl put -- "/odd/with space" '-dash "quotes" \ backslash' >/dev/null
ectl put /odd/empty '' >/dev/null
head -c 300000 /dev/urandom >"$KB_TMP/binary.value" # spans overflow pages; any bytes
ectl put /odd/binary <"$KB_TMP/binary.value" >/dev/null
ectl put /odd/overwritten before >/dev/null
ectl put /odd/deleted-later here >/dev/null

kb_init "$REPO"
mkdir "$KB_TMP/vol" && echo hi >"$KB_TMP/vol/f"
vol_id=$(kb_backup "$REPO" "$KB_TMP/vol")
id1=$(kb_backup_etcd "$REPO" --endpoints "$ETCD_ENDPOINT" --name read-a)
rev1=$(ectl get / --prefix --keys-only --limit 1 -w json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')

# The live cluster moves on: overwrites, deletes, new keys.
ectl put /odd/overwritten after >/dev/null
ectl del /odd/deleted-later >/dev/null
ectl put /odd/new new >/dev/null
ectl del /registry/events/ns-lease/ev-2 >/dev/null
etcd_load --quiet modify --percent 2 --seed 14 --max-size 4000
etcd_load --quiet delete --percent 1 --seed 15
ectl put /odd/empty '' >/dev/null # same value, new revision: not a change for diff
id2=$(kb_backup_etcd "$REPO" --endpoints "$ETCD_ENDPOINT" --name read-b)
rev2=$(ectl get / --prefix --keys-only --limit 1 -w json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')
ectl put /odd/after-both x >/dev/null
before=$(repo_state "$REPO")

# ---- info: the revision the snapshot holds ----
expect_exit 0 kb --repo "$REPO" etcd info --json "$id1"
got_rev=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["revision"])' "$KB_OUT")
((got_rev == rev1)) || fail "etcd info says revision $got_rev, etcd was at $rev1 when snapshotted"
expect_exit 0 kb --repo "$REPO" etcd info "$id1"
grep -q "^revision: *$rev1\$" "$KB_OUT" || fail "human etcd info lacks the revision: $(cat "$KB_OUT")"

# ---- ls: equal to etcdctl at the snapshot's revision ----
for pair in "$id1:$rev1" "$id2:$rev2"; do
        id=${pair%%:*} rev=${pair##*:}
        expect_exit 0 kb --repo "$REPO" etcd ls --json --values "$id"
        python3 "$KS" kbackup "$KB_OUT" "$KB_TMP/kb.$rev" || fail "etcd ls --json output unreadable"
        python3 "$KS" etcdctl --ctl "$ETCDCTL_FLAGS" --rev "$rev" "$KB_TMP/ec.$rev"
        python3 "$KS" compare "$KB_TMP/kb.$rev" "$KB_TMP/ec.$rev" >&2 ||
                fail "etcd ls of $id differs from etcdctl get --rev $rev"
done
nkeys=$(wc -l <"$KB_TMP/kb.$rev1")
((nkeys > 2900)) || fail "only $nkeys keys in the first snapshot"
python3 "$KS" etcdctl --ctl "$ETCDCTL_FLAGS" "$KB_TMP/ec.now"
if cmp -s "$KB_TMP/ec.now" "$KB_TMP/ec.$rev1"; then
        fail "the cluster did not change after the snapshot: the test shows nothing"
fi
grep -q "$(printf '/odd/deleted-later' | xxd -p)" "$KB_TMP/kb.$rev1" ||
        fail "a key deleted after the snapshot is missing from it"

# Human form: one line per key, the key first, then tab-separated size and revisions.
expect_exit 0 kb --repo "$REPO" etcd ls "$id1"
(($(wc -l <"$KB_OUT") == nkeys)) || fail "etcd ls printed $(wc -l <"$KB_OUT") lines for $nkeys keys"
grep -q $'^/odd/with space\t26\t' "$KB_OUT" || fail "etcd ls line for '/odd/with space' is wrong"
grep -qP "^/registry/events/ns-lease/ev-1\t7\t\d+\t\d+\t1\t$lease\$" "$KB_OUT" ||
        fail "etcd ls does not show the lease: $(grep ev-1 "$KB_OUT")"
# --prefix: exactly the keys below it.
expect_exit 0 kb --repo "$REPO" etcd ls "$id1" --prefix /registry/pods/
python3 "$KS" etcdctl --ctl "$ETCDCTL_FLAGS" --rev "$rev1" --prefix /registry/pods/ "$KB_TMP/ec.pods"
(($(wc -l <"$KB_OUT") == $(wc -l <"$KB_TMP/ec.pods"))) ||
        fail "ls --prefix listed $(wc -l <"$KB_OUT") keys, etcdctl $(wc -l <"$KB_TMP/ec.pods")"
if grep -v '^/registry/pods/' "$KB_OUT" | grep -q .; then
        fail "ls --prefix listed keys outside the prefix"
fi

# ---- get ----
expect_exit 0 kb --repo "$REPO" etcd get "$id1" /odd/binary
cmp "$KB_OUT" "$KB_TMP/binary.value" || fail "etcd get of a 300 KB binary value is not byte-exact"
expect_exit 0 kb --repo "$REPO" etcd get "$id1" /odd/overwritten
[[ $(cat "$KB_OUT") == before ]] || fail "etcd get returned '$(cat "$KB_OUT")', not the snapshot's value"
expect_exit 0 kb --repo "$REPO" etcd get "$id2" /odd/overwritten
[[ $(cat "$KB_OUT") == after ]] || fail "etcd get of the second snapshot: '$(cat "$KB_OUT")'"
expect_exit 0 kb --repo "$REPO" etcd get "$id1" "/odd/with space"
[[ $(cat "$KB_OUT") == '-dash "quotes" \ backslash' ]] || fail "etcd get mangled a value"
expect_exit 0 kb --repo "$REPO" etcd get "$id1" /odd/empty
[[ ! -s $KB_OUT ]] || fail "an empty value printed something"
expect_exit 1 kb --repo "$REPO" etcd get "$id2" /odd/deleted-later
grep -q "key not found" "$KB_ERR" || fail "get of a deleted key: $(cat "$KB_ERR")"
expect_exit 1 kb --repo "$REPO" etcd get "$id1" /odd # a prefix of keys is not a key
expect_exit 0 kb --repo "$REPO" etcd get --json "$id1" /odd/overwritten
python3 - "$KB_OUT" <<'EOF' || fail "etcd get --json is wrong"
import base64, json, sys
o = json.load(open(sys.argv[1]))
assert base64.b64decode(o["value_base64"]) == b"before", o
assert o["key"] == "/odd/overwritten" and o["version"] == 1, o
EOF

# ---- diff: exactly what changed between the snapshots ----
python3 - "$KB_TMP/ec.$rev1" "$KB_TMP/ec.$rev2" >"$KB_TMP/diff.want" <<'EOF'
import sys
def load(p):
    d = {}
    for line in open(p):
        f = line.split()
        d[bytes.fromhex(f[0]).decode()] = (f[1], f[2])
    return d
a, b = load(sys.argv[1]), load(sys.argv[2])
for k in sorted(set(a) | set(b), key=lambda k: k.encode()):
    if k not in a:
        print("+ " + k)
    elif k not in b:
        print("- " + k)
    elif a[k] != b[k]:
        print("~ " + k)
EOF
expect_exit 0 kb --repo "$REPO" etcd diff "$id1" "$id2"
diff -u "$KB_TMP/diff.want" "$KB_OUT" >&2 || fail "etcd diff does not list exactly the changes"
grep -qx '~ /odd/overwritten' "$KB_OUT" || fail "diff misses an overwritten key"
grep -qx -- '- /odd/deleted-later' "$KB_OUT" || fail "diff misses a deleted key"
grep -qx '+ /odd/new' "$KB_OUT" || fail "diff misses a new key"
if grep -q '/odd/empty' "$KB_OUT"; then
        fail "diff lists a key rewritten with the same value"
fi
n_add=$(grep -c '^+ ' "$KB_OUT" || true) n_del=$(grep -c '^- ' "$KB_OUT" || true)
n_chg=$(grep -c '^~ ' "$KB_OUT" || true)
grep -q "^$n_add added, $n_del removed, $n_chg changed (revision $rev1 -> $rev2)\$" "$KB_ERR" ||
        fail "diff summary: $(cat "$KB_ERR")"
expect_exit 0 kb --repo "$REPO" etcd diff "$id1" "$id2" --prefix /odd/ --json
python3 - "$KB_OUT" <<'EOF' || fail "etcd diff --prefix --json is wrong"
import json, sys
got = sorted((o["change"], o["key"]) for o in map(json.loads, open(sys.argv[1])))
assert got == [("added", "/odd/new"), ("changed", "/odd/overwritten"),
               ("removed", "/odd/deleted-later")], got
EOF
expect_exit 0 kb --repo "$REPO" etcd diff "$id2" "$id2"
[[ ! -s $KB_OUT ]] || fail "a snapshot differs from itself"

# Reading wrote nothing but its (removed) shared lock; with --no-lock, nothing at all.
[[ $(repo_state "$REPO" | grep -v '\./locks') == "$(grep -v '\./locks' <<<"$before")" ]] ||
        fail "etcd ls/get/diff/info changed the repository"
before=$(repo_state "$REPO")
expect_exit 0 kb --no-lock --repo "$REPO" etcd ls "$id1"
expect_exit 0 kb --no-lock --repo "$REPO" etcd diff "$id1" "$id2"
expect_exit 0 kb --no-lock --repo "$REPO" etcd get "$id1" /odd/binary
[[ $(repo_state "$REPO") == "$before" ]] || fail "etcd ls/get/diff --no-lock wrote to the repository"

# ---- a snapshot file, with no repository ----
ectl snapshot save "$KB_TMP/now.db" >/dev/null 2>&1
expect_exit 0 kb etcd ls --json --values "file:$KB_TMP/now.db"
python3 "$KS" kbackup "$KB_OUT" "$KB_TMP/kb.now"
python3 "$KS" etcdctl --ctl "$ETCDCTL_FLAGS" "$KB_TMP/ec.now2"
python3 "$KS" compare "$KB_TMP/kb.now" "$KB_TMP/ec.now2" >&2 || fail "etcd ls file: differs from etcdctl"

# ---- errors ----
expect_exit 1 kb --repo "$REPO" etcd ls "$vol_id"
grep -q "no etcd snapshot" "$KB_ERR" || fail "etcd ls of a volume snapshot: $(cat "$KB_ERR")"
expect_exit 1 kb etcd ls "file:$KB_TMP/missing.db"
head -c 100000 "$KB_TMP/now.db" >"$KB_TMP/cut.db"
expect_exit 1 kb etcd ls "file:$KB_TMP/cut.db"
grep -q "truncated" "$KB_ERR" || fail "a truncated db: $(cat "$KB_ERR")"
cp "$KB_TMP/now.db" "$KB_TMP/bad.db"
python3 - "$KB_TMP/bad.db" <<'EOF'
import sys
# Scribble over the page headers of every tree page after the metas and the freelist.
with open(sys.argv[1], "r+b") as f:
    d = bytearray(f.read())
    for off in range(3 * 4096, len(d) - 4096, 4096):
        d[off + 8] ^= 0x07
    f.seek(0)
    f.write(d)
EOF
expect_exit 1 kb etcd ls "file:$KB_TMP/bad.db"
grep -q "damaged" "$KB_ERR" || fail "a damaged db: $(cat "$KB_ERR")"
expect_exit 1 kb etcd ls "file:$KB_TOOLS/etcd_keyspace.py"
grep -q "not a bbolt database" "$KB_ERR" || fail "a text file: $(cat "$KB_ERR")"
expect_exit 2 kb etcd
expect_exit 2 kb etcd frob "$id1"
expect_exit 2 kb --repo "$REPO" etcd get "$id1"
expect_exit 0 kb etcd --help
grep -q "etcd diff SNAP_A SNAP_B" "$KB_OUT" || fail "etcd --help"
pass
