#!/usr/bin/env bash
# test_dr_cluster.sh - the DR drill: a source cluster (etcd with Kubernetes-shaped keys in three
# namespaces, cluster-scoped keys, a leased key; two volumes) backed up as one backup set with
# `backup --cluster src` (hooks included), then restored into a fresh target etcd and empty
# directories with `restore latest --to-cluster dr`. Checks: every selected key equal (key and
# value), nothing else there, volumes byte-exact; --namespace, --prefix/--exclude select exactly
# what they say; --on-conflict fail stops without writing any of the failing batch; skip and
# overwrite; --dry-run writes nothing; a re-run changes nothing; --include-leased; restore from
# a read-only bind mount of the repository writes nothing to it; a TLS target; failing hooks.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
kb_init "$REPO"
unset KBACKUP_ETCD_PASSWORD KBACKUP_ETCD_PASSWORD_FILE KBACKUP_CONFIG

# dump FLAGS OUT: "hex(key) size sha256(value)" per key, sorted (revisions differ by design).
dump() {
        python3 "$KB_TOOLS/etcd_load.py" --quiet --ctl "$1" dump "$2.full"
        cut -d' ' -f1-3 "$2.full" >"$2"
}

# select_keys MODE ARGS < SRC_DUMP > EXPECTED: the source keys a filter must select, computed
# independently of the C code. MODE ns NS... | prefix P... -- EXCLUDE...
select_keys() {
        python3 -c '
import re, sys
mode, args = sys.argv[1], sys.argv[2:]
def ns_of(k):
    m = re.fullmatch(r"/registry/namespaces/([^/]+)", k)
    if m: return m.group(1)
    m = re.fullmatch(r"/registry/services/(?:specs|endpoints)/([^/]+)/[^/]+", k)
    if m: return m.group(1)
    m = re.fullmatch(r"/registry/[^/]*\.[^/]*/[^/]+/([^/]+)/[^/]+", k)
    if m: return m.group(1)
    m = re.fullmatch(r"/registry/([^/.]+)/([^/]+)/[^/]+", k)
    if m and m.group(1) != "services": return m.group(2)
    return None
for line in sys.stdin:
    k = bytes.fromhex(line.split()[0]).decode()
    if mode == "ns":
        ok = ns_of(k) in args
    else:
        i = args.index("--")
        inc, exc = args[:i], args[i + 1:]
        ok = any(k.startswith(p) for p in inc) and not any(k.startswith(p) for p in exc)
    if ok:
        sys.stdout.write(line)
' "$@"
}

same() { # same A B WHAT
        if ! cmp -s "$1" "$2"; then
                diff <(cut -c1-90 "$1") <(cut -c1-90 "$2") | head -n 20 >&2 || true
                fail "$3: $(wc -l <"$1") vs $(wc -l <"$2") keys differ"
        fi
}

# dctl ARGS...: etcdctl against the DR target.
dctl() {
        # shellcheck disable=SC2086  # DST_FLAGS is a word list by design
        ETCDCTL_API=3 etcdctl $DST_FLAGS "$@"
}

wipe_target() {
        dctl del "" --from-key >/dev/null
        [[ -z $(dctl get "" --from-key --keys-only) ]] || fail "wipe"
}

wipe_dirs() {
        rm -rf "$DR1" "$DR2"
        mkdir -p "$DR1" "$DR2"
}

# ---- source cluster ----
etcd_start
SRC_EP=$ETCD_ENDPOINT SRC_FLAGS=$ETCDCTL_FLAGS
etcd_load --quiet load --count 400 --namespaces 3 --max-size 3000
ectl put /registry/clusterroles/admin '{"kind":"ClusterRole"}' >/dev/null
ectl put /registry/minions/node-1 '{"kind":"Node"}' >/dev/null
ectl put /registry/apiextensions.k8s.io/customresourcedefinitions/foos.example.com '{"kind":"CRD"}' >/dev/null
ectl put /registry/example.com/foos/ns-001/foo-1 '{"kind":"Foo"}' >/dev/null
ectl put /registry/example.com/clusterfoos/cfoo-1 '{"kind":"ClusterFoo"}' >/dev/null
ectl put /registry/services/endpoints/ns-002/svc-1 '{"kind":"Endpoints"}' >/dev/null
ectl put /registry/ranges/serviceips 'range' >/dev/null
LEASE=$(ectl lease grant 900 | awk '{print $2}')
ectl put --lease="$LEASE" /registry/events/ns-000/leased-event '{"kind":"Event"}' >/dev/null
dump "$SRC_FLAGS" "$KB_TMP/src.all"
grep -v "^$(printf '/registry/events/ns-000/leased-event' | od -An -tx1 | tr -d ' \n') " \
        "$KB_TMP/src.all" >"$KB_TMP/src.unleased"
(($(wc -l <"$KB_TMP/src.all") == $(wc -l <"$KB_TMP/src.unleased") + 1)) || fail "leased key"

VOL1=$KB_TMP/vol1 VOL2=$KB_TMP/vol2
mktree "$VOL1" --seed 5 --quiet
mktree "$VOL2" --seed 6 --quiet
mkdir -p "$KB_TMP/ref"
mktree "$KB_TMP/ref/1" --seed 5 --quiet
mktree "$KB_TMP/ref/2" --seed 6 --quiet

# ---- target cluster(s) ----
etcd_start
DST_EP=$ETCD_ENDPOINT DST_FLAGS=$ETCDCTL_FLAGS
etcd_start --tls
TLS_EP=$ETCD_ENDPOINT TLS_FLAGS=$ETCDCTL_FLAGS
DR1=$KB_TMP/dr/data DR2=$KB_TMP/dr/logs
wipe_dirs

HOOKS=$KB_TMP/hooks
mkdir -p "$HOOKS"
CONF=$KB_TMP/config.yaml
cat >"$CONF" <<EOF
# kbackup test config
clusters:
  src:
    etcd:
      endpoints: [$SRC_EP]
    volumes:
      ns-000/data: $VOL1
      ns-001/logs: $VOL2
    pre_hook: echo "\$KBACKUP_SET_ID" > $HOOKS/pre
    post_hook: echo "\$KBACKUP_SET_STATUS \$KBACKUP_SET_ID" > $HOOKS/post
    hook_timeout: 30s
    tags:
      site: paris
  dr:
    etcd:
      endpoints:
        - $DST_EP
    volumes:
      ns-000/data: $DR1
      ns-001/logs: $DR2
  dr-partial:
    etcd:
      endpoints: $DST_EP
    volumes:
      ns-001/logs: $DR2
  dr-tls:
    etcd:
      endpoints: [$TLS_EP]
      cacert: $ETCD_CACERT
      cert: $ETCD_CERT
      key: $ETCD_KEY
  bad-pre:
    volumes:
      ns-000/data: $VOL1
    pre_hook: echo pre-ran > $HOOKS/badpre; exit 4
    post_hook: echo "\$KBACKUP_SET_STATUS" > $HOOKS/badpre-post
  bad-post:
    volumes:
      ns-000/data: $VOL1
    post_hook: exit 5
  slow-pre:
    volumes:
      ns-000/data: $VOL1
    pre_hook: sleep 30
    hook_timeout: 1s
  bad-volume:
    etcd:
      endpoints: [$SRC_EP]
    volumes:
      ns-000/data: $VOL1
      ns-009/gone: $KB_TMP/no-such-dir
EOF

# ---- backup --cluster src ----
expect_exit 0 kb --repo "$REPO" backup --cluster src --config "$CONF" --tag run=drill
SET=$(tail -n 1 "$KB_OUT")
[[ $SET =~ ^[0-9a-f]{64}$ ]] || fail "backup --cluster did not print a set id last: $SET"
[[ $(cat "$HOOKS/pre") == "$SET" ]] || fail "pre hook did not see KBACKUP_SET_ID"
[[ $(cat "$HOOKS/post") == "ok $SET" ]] || fail "post hook: $(cat "$HOOKS/post")"
kb --repo "$REPO" snapshots --json >"$KB_TMP/snaps.json"
python3 - "$KB_TMP/snaps.json" "$SET" <<'EOF' || fail "snapshots --json does not show the set"
import json, sys
s = json.load(open(sys.argv[1]))
m = [x for x in s if x.get("set") == sys.argv[2]]
assert len(m) == 3, m
assert sorted(x["kind"] for x in m) == ["etcd", "volume", "volume"]
assert all(x["cluster"] == "src" and x["tags"].get("site") == "paris" and x["tags"].get("run") == "drill" for x in m)
assert sorted(x["name"] for x in m if x["kind"] == "volume") == ["ns-000/data", "ns-001/logs"]
EOF
expect_exit 0 kb --repo "$REPO" snapshots
grep -q "backup sets:" "$KB_OUT" || fail "snapshots does not group sets"
grep -q "^${SET:0:8} .* src " "$KB_OUT" || fail "snapshots: no row for set ${SET:0:8}"
ETCD_SNAP=$(python3 -c 'import json,sys; print([x["id"] for x in json.load(open(sys.argv[1])) if x.get("set")==sys.argv[2] and x["kind"]=="etcd"][0])' "$KB_TMP/snaps.json" "$SET")

# ---- the DR drill ----
expect_exit 0 kb --repo "$REPO" restore latest --to-cluster dr --config "$CONF"
note "restore: $(head -n 5 "$KB_OUT" | tr '\n' '|')"
dump "$DST_FLAGS" "$KB_TMP/dst"
same "$KB_TMP/src.unleased" "$KB_TMP/dst" "full restore (leased key skipped)"
treecmp "$KB_TMP/ref/1" "$DR1"
treecmp "$KB_TMP/ref/2" "$DR2"
grep -q "leased skipped 1" "$KB_OUT" || fail "the leased key was not reported as skipped"

# Re-run: idempotent. Nothing written (revisions unchanged too), volumes left alone, exit 0.
cp "$KB_TMP/dst.full" "$KB_TMP/dst.before"
expect_exit 0 kb --repo "$REPO" --json restore "${SET:0:10}" --to-cluster dr --config "$CONF"
python3 - "$KB_OUT" "$(wc -l <"$KB_TMP/dst")" <<'EOF' || fail "re-run summary: $(cat "$KB_OUT")"
import json, sys
r = json.load(open(sys.argv[1]))
e = r["etcd"]
assert e["written"] == 0 and e["skipped"] == int(sys.argv[2]) and e["conflicts"] == 0, e
assert [m["status"] for m in r["members"]] == ["restored", "skipped", "skipped"], r["members"]
EOF
dump "$DST_FLAGS" "$KB_TMP/dst"
cmp -s "$KB_TMP/dst.before" "$KB_TMP/dst.full" || fail "re-running the restore changed the target"

# ---- --namespace ----
wipe_target
wipe_dirs
expect_exit 0 kb --repo "$REPO" restore latest --to-cluster dr --config "$CONF" --namespace ns-001
select_keys ns ns-001 <"$KB_TMP/src.unleased" >"$KB_TMP/want"
grep -q "$(printf /registry/example.com/foos/ns-001/foo-1 | od -An -tx1 | tr -d ' \n')" "$KB_TMP/want" ||
        fail "test bug: the CR of ns-001 is not in the expected set"
dump "$DST_FLAGS" "$KB_TMP/dst"
same "$KB_TMP/want" "$KB_TMP/dst" "--namespace ns-001"
[[ -z $(ls -A "$DR1") ]] || fail "--namespace ns-001 restored the ns-000 volume"
treecmp "$KB_TMP/ref/2" "$DR2"
grep -q "ns-000/data .*not_selected" "$KB_OUT" || fail "the unselected volume is not listed"

# Two namespaces, and services/endpoints of ns-002.
wipe_target
expect_exit 0 kb --repo "$REPO" restore etcd "$ETCD_SNAP" --endpoints "$DST_EP" \
        --namespace ns-000 --namespace ns-002
select_keys ns ns-000 ns-002 <"$KB_TMP/src.unleased" >"$KB_TMP/want"
dump "$DST_FLAGS" "$KB_TMP/dst"
same "$KB_TMP/want" "$KB_TMP/dst" "--namespace ns-000 --namespace ns-002"

# ---- --prefix / --exclude ----
wipe_target
expect_exit 0 kb --repo "$REPO" restore etcd "$ETCD_SNAP" --endpoints "$DST_EP" \
        --prefix /registry/configmaps/ --prefix /registry/secrets/ --exclude /registry/secrets/ns-002/
select_keys prefix /registry/configmaps/ /registry/secrets/ -- /registry/secrets/ns-002/ \
        <"$KB_TMP/src.unleased" >"$KB_TMP/want"
(($(wc -l <"$KB_TMP/want") > 20)) || fail "test bug: too few keys selected"
dump "$DST_FLAGS" "$KB_TMP/dst"
same "$KB_TMP/want" "$KB_TMP/dst" "--prefix/--exclude"

# ---- --dry-run ----
wipe_target
wipe_dirs
expect_exit 0 kb --repo "$REPO" --json restore latest --to-cluster dr --config "$CONF" --dry-run
python3 - "$KB_OUT" "$(wc -l <"$KB_TMP/src.unleased")" <<'EOF' || fail "dry run summary: $(cat "$KB_OUT")"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["dry_run"] and r["etcd"]["written"] == int(sys.argv[2]), r["etcd"]
assert [m["status"] for m in r["members"]] == ["would_restore"] * 3, r["members"]
EOF
[[ -z $(dctl get "" --from-key --keys-only) ]] || fail "--dry-run wrote keys"
[[ -z $(ls -A "$DR1") && -z $(ls -A "$DR2") ]] || fail "--dry-run wrote volume files"

# ---- --on-conflict ----
# A conflict at sorted position 25 of the selection, batches of 10: batches 0 and 1 (20 keys) are
# written, nothing of batch 2 (keys 20..29) nor after.
wipe_target
select_keys prefix /registry/ -- <"$KB_TMP/src.unleased" | LC_ALL=C sort >"$KB_TMP/sel"
CKEY=$(sed -n 26p "$KB_TMP/sel" | cut -d' ' -f1 | xxd -r -p)
dctl put "$CKEY" 'target-value' >/dev/null
expect_exit 1 kb --repo "$REPO" restore etcd "$ETCD_SNAP" --endpoints "$DST_EP" \
        --prefix /registry/ --on-conflict fail --max-txn-ops 10
grep -q "another value" "$KB_ERR" || fail "--on-conflict fail: no conflict message: $(cat "$KB_ERR")"
dump "$DST_FLAGS" "$KB_TMP/dst"
{
        head -n 20 "$KB_TMP/sel"
        grep "^$(printf '%s' "$CKEY" | od -An -tx1 | tr -d ' \n') " "$KB_TMP/dst"
} | LC_ALL=C sort >"$KB_TMP/want"
same "$KB_TMP/want" "$KB_TMP/dst" "--on-conflict fail: exactly the batches before the conflict"
[[ $(dctl get "$CKEY" --print-value-only) == target-value ]] ||
        fail "--on-conflict fail changed the conflicting key"
# The same run with a dry run reports the conflict and writes nothing more.
expect_exit 1 kb --repo "$REPO" restore etcd "$ETCD_SNAP" --endpoints "$DST_EP" \
        --prefix /registry/ --on-conflict fail --dry-run
dump "$DST_FLAGS" "$KB_TMP/dst2"
cmp -s "$KB_TMP/dst" "$KB_TMP/dst2" || fail "dry run with --on-conflict fail wrote"

# skip: everything else written, the conflict left alone and counted.
expect_exit 0 kb --repo "$REPO" --json restore etcd "$ETCD_SNAP" --endpoints "$DST_EP" \
        --prefix /registry/ --on-conflict skip --max-txn-ops 10
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["conflicts"]==1 and r["skipped"]==20, r' \
        "$KB_OUT" || fail "skip counts: $(cat "$KB_OUT")"
[[ $(dctl get "$CKEY" --print-value-only) == target-value ]] ||
        fail "--on-conflict skip changed the conflicting key"
# overwrite: the conflict gets the snapshot's value; now the target equals the selection.
expect_exit 0 kb --repo "$REPO" --json restore etcd "$ETCD_SNAP" --endpoints "$DST_EP" \
        --prefix /registry/ --on-conflict overwrite
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["overwritten"]==1 and r["written"]==1, r' \
        "$KB_OUT" || fail "overwrite counts: $(cat "$KB_OUT")"
dump "$DST_FLAGS" "$KB_TMP/dst"
same "$KB_TMP/sel" "$KB_TMP/dst" "after --on-conflict overwrite"

# ---- --include-leased ----
wipe_target
expect_exit 0 kb --repo "$REPO" restore etcd "$ETCD_SNAP" --endpoints "$DST_EP" \
        --prefix /registry/events/ns-000/leased --include-leased
dctl get /registry/events/ns-000/leased-event -w json >"$KB_TMP/l.json"
NEWLEASE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["kvs"][0]["lease"])' "$KB_TMP/l.json")
((NEWLEASE != 0)) || fail "--include-leased: the key has no lease"
GRANTED=$(dctl lease timetolive "$(printf '%x' "$NEWLEASE")" -w json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["granted-ttl"])')
((GRANTED == 900)) || fail "--include-leased: granted TTL $GRANTED, want the original 900"

# ---- from a read-only bind mount ----
if ((EUID == 0)); then
        wipe_target
        wipe_dirs
        before=$(repo_state "$REPO")
        mount --bind "$REPO" "$REPO"
        trap 'umount "$REPO" 2>/dev/null || true; kb_cleanup' EXIT
        mount -o remount,bind,ro "$REPO"
        touch "$REPO/probe" 2>/dev/null && fail "the bind mount is writable"
        expect_exit 0 kb --repo "$REPO" restore latest --to-cluster dr --config "$CONF"
        umount "$REPO"
        [[ $(repo_state "$REPO") == "$before" ]] || fail "restore from a read-only repository wrote to it"
        dump "$DST_FLAGS" "$KB_TMP/dst"
        same "$KB_TMP/src.unleased" "$KB_TMP/dst" "restore from a read-only repository"
        treecmp "$KB_TMP/ref/1" "$DR1"
else
        note "not root: read-only bind mount case skipped"
fi

# ---- a volume without a mapping, and a TLS target ----
wipe_target
wipe_dirs
expect_exit 0 kb --repo "$REPO" restore latest --to-cluster dr-partial --config "$CONF" \
        --prefix /registry/configmaps/
grep -q "ns-000/data .*skipped .*no mapping" "$KB_OUT" || fail "unmapped volume not listed: $(cat "$KB_OUT")"
[[ -z $(ls -A "$DR1") ]] || fail "an unmapped volume was restored somewhere"
treecmp "$KB_TMP/ref/2" "$DR2"
expect_exit 0 kb --repo "$REPO" restore latest --to-cluster dr-tls --config "$CONF" \
        --prefix /registry/configmaps/
select_keys prefix /registry/configmaps/ -- <"$KB_TMP/src.unleased" >"$KB_TMP/want"
dump "$TLS_FLAGS" "$KB_TMP/dst"
same "$KB_TMP/want" "$KB_TMP/dst" "TLS target"

# ---- hooks and failures: nothing recorded ----
n0=$(snapshot_count "$REPO")
expect_exit 1 kb --repo "$REPO" backup --cluster bad-pre --config "$CONF"
grep -q "pre-hook failed: exit status 4" "$KB_ERR" || fail "pre hook failure: $(cat "$KB_ERR")"
[[ -f $HOOKS/badpre && $(cat "$HOOKS/badpre-post") == failed ]] || fail "hooks around a failed pre hook"
expect_exit 1 kb --repo "$REPO" backup --cluster slow-pre --config "$CONF"
grep -q "timed out" "$KB_ERR" || fail "hook timeout: $(cat "$KB_ERR")"
expect_exit 1 kb --repo "$REPO" backup --cluster bad-volume --config "$CONF"
grep -q "removed member" "$KB_ERR" || fail "a failed set kept its members: $(cat "$KB_ERR")"
(($(snapshot_count "$REPO") == n0)) || fail "a failed set left snapshots behind"
expect_exit 3 kb --repo "$REPO" backup --cluster bad-post --config "$CONF"
grep -q "post-hook failed: exit status 5" "$KB_ERR" || fail "post hook failure: $(cat "$KB_ERR")"
(($(snapshot_count "$REPO") == n0 + 1)) || fail "a set with a failing post hook was not recorded"

# ---- usage and config errors ----
expect_exit 2 kb --repo "$REPO" restore latest --to-cluster nope --config "$CONF"
grep -q "no cluster 'nope'" "$KB_ERR" || fail "unknown cluster: $(cat "$KB_ERR")"
expect_exit 1 kb --repo "$REPO" backup --cluster src --config "$KB_TMP/missing.yaml"
printf 'clusters:\n  x:\n    etcd:\n      endpoint: [http://a]\n' >"$KB_TMP/bad.yaml"
expect_exit 2 kb --repo "$REPO" backup --cluster x --config "$KB_TMP/bad.yaml"
grep -q "bad.yaml:4: unknown key 'endpoint'" "$KB_ERR" || fail "config error: $(cat "$KB_ERR")"
expect_exit 2 kb --repo "$REPO" restore etcd "$ETCD_SNAP" --endpoints "$DST_EP" --output "$KB_TMP/x.db"
expect_exit 2 kb --repo "$REPO" restore etcd "$ETCD_SNAP" --endpoints "$DST_EP" --on-conflict maybe

pass
