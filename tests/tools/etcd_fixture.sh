#!/usr/bin/env bash
# etcd_fixture.sh - make real etcd snapshot files for the bbolt / key-space reader's tests.
#
#   etcd_fixture.sh OUTDIR [--owner PID]
#
# Starts a throwaway etcd (tests/tools/etcd_server.sh), writes keys with history, saves snapshots
# with `etcdctl snapshot save` and etcdctl's own view of the key space at each, then stops etcd:
#   small.db, small.expect  a handful of keys (the key bucket is small enough to be inline)
#   big.db, big.expect      ~3,000 keys in a multi-level tree: overwrites, deletes, a compaction,
#                           keys with leases, odd keys, an empty value and a 200 KB value that
#                           spans overflow pages (its bytes in big.value, its key /big/value)
#   big.rev, big.compact    the snapshot's revision and the compaction revision
#   big2.db, big2.expect    then: /odd/empty rewritten ("x"), "/odd/with space" deleted, /odd/new
#                           added, /odd/ünïcødé rewritten with the same value
# *.expect are tests/tools/etcd_keyspace.py dumps (hex key, size, sha256, revisions, lease).
set -euo pipefail

OUT=${1:?usage: etcd_fixture.sh OUTDIR [--owner PID]}
shift
OWNER=()
if [[ ${1:-} == --owner ]]; then
        OWNER=(--owner "$2")
fi
TOOLS=$(cd "$(dirname "$0")" && pwd)
export ETCDCTL_API=3
mkdir -p "$OUT"

eval "$(KB_TEST_TMPDIR=$OUT bash "$TOOLS/etcd_server.sh" start "${OWNER[@]}")"
trap 'bash "$TOOLS/etcd_server.sh" stop "$ETCD_DIR"' EXIT
ectl() {
        # shellcheck disable=SC2086  # a word list by design
        etcdctl $ETCDCTL_FLAGS "$@"
}
dump() { # OUT
        python3 "$TOOLS/etcd_keyspace.py" etcdctl --ctl "$ETCDCTL_FLAGS" "$1"
}
revision() {
        ectl get / --prefix --keys-only --limit 1 -w json |
                python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])'
}

# ---- small ----
ectl put /a 1 >/dev/null
ectl put /b hello >/dev/null
ectl put /a 2 >/dev/null
ectl put /c x >/dev/null
ectl del /c >/dev/null
ectl snapshot save "$OUT/small.db" >/dev/null 2>&1
dump "$OUT/small.expect"
ectl del /a /c >/dev/null # start the big one from an empty key space (history stays)
ectl del /b >/dev/null

# ---- big ----
# txn input: an empty compare section, put lines, an empty failure section.
txn_puts() { # FROM TO GENERATION
        python3 - "$@" <<'EOF'
import sys
lo, hi, gen = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
out = ["", ]
for i in range(lo, hi):
    size = 10 + (i * 7919 + gen * 104729) % 3000
    v = ("g%d-%d-" % (gen, i) + "x" * size)[:size]
    out.append('put -- /registry/pods/ns-%d/pod-%05d "%s"' % (i % 7, i, v))
out += ["", "", ""]
sys.stdout.write("\n".join(out))
EOF
}
for r in "0 1000" "1000 2000" "2000 3000"; do
        # shellcheck disable=SC2086
        txn_puts $r 1 | ectl txn >/dev/null
done
txn_puts 0 300 2 | ectl txn >/dev/null # overwrites
ectl del /registry/pods/ns-0/ --prefix >/dev/null
compact=$(revision)
ectl compact "$compact" --physical >/dev/null
txn_puts 100 200 3 | ectl txn >/dev/null # after the compaction: some recreated (ns-0), some third versions
lease=$(ectl lease grant 600 | awk '{print $2}')
for i in 1 2 3 4 5; do
        ectl put --lease="$lease" "/registry/events/ns-1/ev-$i" "event $i" >/dev/null
done
ectl put -- "/odd/with space" '-dash "quotes" \ backslash' >/dev/null
ectl put /odd/empty '' >/dev/null
ectl put /odd/ünïcødé 'ü' >/dev/null
head -c 150000 /dev/urandom | base64 -w 0 >"$OUT/big.value"
ectl put /big/value <"$OUT/big.value" >/dev/null
ectl put /zzz/last last >/dev/null
ectl del /zzz/last >/dev/null
ectl snapshot save "$OUT/big.db" >/dev/null 2>&1
revision >"$OUT/big.rev"
echo "$compact" >"$OUT/big.compact"
dump "$OUT/big.expect"

# ---- big2: a few changes after big ----
ectl put /odd/empty x >/dev/null
ectl del "/odd/with space" >/dev/null
ectl put /odd/new new >/dev/null
ectl put /odd/ünïcødé 'ü' >/dev/null
ectl snapshot save "$OUT/big2.db" >/dev/null 2>&1
dump "$OUT/big2.expect"
