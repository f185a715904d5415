#!/usr/bin/env bash
# test_etcd_dedup.sh - successive snapshots of the same cluster deduplicate: after rewriting 1% of
# ~20k keys, the second backup stores at most 10% of the db size as new bytes; with no change at
# all, almost nothing. The figures are printed (they go into the release notes), and every
# snapshot still restores with a valid trailer.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
NKEYS=${KB_ETCD_DEDUP_KEYS:-20000}

etcd_start --name dedup
etcd_load --quiet load --count "$NKEYS" --seed 11
kb_init "$REPO"

# backup_json: one `backup etcd --json`; its JSON object goes to $KB_TMP/last.json.
backup_json() {
        expect_exit 0 kb --repo "$REPO" backup etcd --json --endpoints "$ETCD_ENDPOINT"
        tail -n 1 "$KB_OUT" >"$KB_TMP/last.json"
        python3 -c 'import json,sys; d = json.load(open(sys.argv[1])); assert d["snapshot"]' \
                "$KB_TMP/last.json" || fail "backup etcd --json did not end with a JSON object"
}
field() { # FIELD: from the last backup's JSON
        python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$KB_TMP/last.json" "$1"
}
report() { # LABEL
        local r n s
        r=$(field bytes_read) n=$(field bytes_new) s=$(field bytes_stored)
        note "$(printf '%-34s db+trailer %10d B, new %10d B (%6.2f%%), stored %10d B' "$1" \
                "$r" "$n" "$(python3 -c "print(100 * $n / $r)")" "$s")"
}

backup_json
id1=$(field snapshot)
report "first backup ($NKEYS keys):"
r1=$(field bytes_read) n1=$(field bytes_new)
# The first backup of a db stores most of it (only its zero/free pages dedup).
((n1 * 2 > r1)) || fail "first backup stored only $n1 new bytes of $r1: the figures are off"

etcd_load --quiet modify --percent 1 --seed 12
backup_json
id2=$(field snapshot)
report "after rewriting 1% of the keys:"
r2=$(field bytes_read) n2=$(field bytes_new)
((r2 >= r1)) || fail "db shrank after rewrites ($r1 -> $r2)?"
((n2 > 0)) || fail "the second backup stored nothing new although 1% of the keys changed"
((n2 * 100 <= r2 * 10)) || fail "second backup stored $n2 new bytes of $r2 (> 10%)"

backup_json
report "unchanged:"
r3=$(field bytes_read) n3=$(field bytes_new)
((n3 * 100 <= r3)) || fail "an unchanged cluster's backup stored $n3 new bytes of $r3 (> 1%)"

# Both the base and the deduplicated snapshot come back whole.
for id in "$id1" "$id2"; do
        expect_exit 0 kb --repo "$REPO" restore etcd "$id" --output "$KB_TMP/$id.db"
        python3 -c 'import hashlib,sys
d = open(sys.argv[1], "rb").read()
sys.exit(hashlib.sha256(d[:-32]).digest() != d[-32:])' "$KB_TMP/$id.db" ||
                fail "snapshot $id does not restore with a valid trailer"
done
cmp -s "$KB_TMP/$id1.db" "$KB_TMP/$id2.db" && fail "snapshots before and after the rewrites are identical"

pass
