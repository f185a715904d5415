#!/usr/bin/env bash
# test_volume_crash.sh - kill -9 of a backup at several points must never leave the repository
# unusable: a following backup succeeds, and every snapshot that is listed restores identical to
# its source. (A snapshot is only recorded after its packs and index are durable, so a killed
# backup either left a complete snapshot or none.)
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
SRC=$KB_TMP/src

# ~270 MiB: big and small random files, plus the metadata-rich generated tree. The source stays
# unchanged for the whole test, so every snapshot must restore to exactly it.
python3 - "$SRC" <<'EOF'
import os, sys
root = sys.argv[1]
os.makedirs(root + "/big")
for i in range(4):
    with open("%s/big/f%d" % (root, i), "wb") as f:
        for _ in range(48):
            f.write(os.urandom(1 << 20))
for d in range(8):
    os.makedirs("%s/small/d%d" % (root, d))
    for i in range(8):
        with open("%s/small/d%d/f%d" % (root, d, i), "wb") as f:
            f.write(os.urandom(1 << 20))
EOF
mktree "$SRC/meta" --seed 11 --quiet

kb_init "$REPO"

# An earlier snapshot of another tree, which the crashes must not harm.
SRC0=$KB_TMP/src0
mktree "$SRC0" --seed 12 --quiet
id0=$(kb_backup "$REPO" "$SRC0" --name ns/base)

# Kill points as fractions of how long a full backup takes here (measured on a scratch
# repository), so they fall at the start, in the middle and near the final flush and snapshot
# write on a fast machine as well as under the sanitizers.
kb_init "$KB_TMP/scratch"
t0=$(date +%s%N)
kb_backup "$KB_TMP/scratch" "$SRC" >/dev/null
full_ms=$((($(date +%s%N) - t0) / 1000000))
kb_rmtree "$KB_TMP/scratch"
note "a full backup takes ${full_ms} ms"

for pct in 5 30 60 85 95 99; do
        kb_kill_during "$full_ms" "$pct" --repo "$REPO" backup volume "$SRC" --name ns/crash
        note "backup killed at ${pct}% of ${full_ms} ms (status $KB_BG_RC)"
        # The repository must stay readable between attempts.
        expect_exit 0 kb --repo "$REPO" snapshots --json
done

id=$(kb_backup "$REPO" "$SRC" --name ns/crash)
note "backup after the kills: $id"

# Every listed snapshot restores identical to its source (ns/base: SRC0, ns/crash: SRC).
expect_exit 0 kb --repo "$REPO" snapshots --json
mapfile -t snaps < <(python3 -c '
import json, sys
for s in json.load(open(sys.argv[1])):
    print(s["id"], s["name"])' "$KB_OUT")
((${#snaps[@]} >= 2)) || fail "${#snaps[@]} snapshots listed, want at least 2"
found=0
n=0
for line in "${snaps[@]}"; do
        s=${line%% *}
        name=${line#* }
        [[ $s == "$id"* || $id == "$s"* || $s == "$id0"* || $id0 == "$s"* ]] && found=$((found + 1))
        case $name in
        ns/base) src=$SRC0 ;;
        ns/crash) src=$SRC ;;
        *) fail "unexpected snapshot $line" ;;
        esac
        n=$((n + 1))
        T=$KB_TMP/restore-$n
        expect_exit 0 kb --repo "$REPO" restore volume "$s" --target "$T"
        treecmp "$src" "$T"
        kb_rmtree "$T"
done
((found == 2)) || fail "the base snapshot or the final snapshot is not listed"
note "$n snapshot(s) restored"

pass
