#!/usr/bin/env bash
# test_ops_prune.sh - forget by policy, prune after forget frees space, every remaining snapshot
# restores byte-exact, stats adds up, and a byte flipped in a pack is found by check --read-data
# and named (pack, snapshot and file).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/ops_lib.sh
source "$(dirname "$0")/ops_lib.sh"

REPO=$(ops_repo prune)
kb_init "$REPO"

# Six generations of a tree, each a little different from the one before; gen 1 and gen 4 are
# tagged keep=yes. Big files so that dropped generations leave whole packs unused.
declare -a SRC ID
SRC[0]=$KB_TMP/src0
ops_gen "${SRC[0]}" 1 16 2000000
for g in 1 2 3 4 5 6; do
        SRC[g]=$KB_TMP/src$g
        ops_mutate "${SRC[g - 1]}" "${SRC[g]}" "$g"
        # a big file of this generation only: what forgetting it frees
        rm -f "${SRC[g]}"/d1/big*
        head -c 3000000 /dev/urandom >"${SRC[g]}/d1/big$g"
        tag=()
        [[ $g == 1 || $g == 4 ]] && tag=(--tag keep=yes)
        ID[g]=$(kb_backup "$REPO" "${SRC[g]}" --name ns/app "${tag[@]}")
done
expect_exit 0 kb --repo "$REPO" check
before=$(ops_repo_bytes "$REPO")

# --- forget: a usage error without rules; a dry run lists decisions and changes nothing
expect_exit 2 kb --repo "$REPO" forget
expect_exit 0 kb --repo "$REPO" forget --keep-last 2 --keep-tag keep=yes --dry-run
grep -q "keep 4, remove 2" "$KB_OUT" || fail "dry run summary: $(cat "$KB_OUT")"
grep -q "remove  ${ID[2]:0:8}.*no rule keeps it" "$KB_OUT" || fail "dry run reason: $(cat "$KB_OUT")"
grep -q "keep    ${ID[4]:0:8}.*tag keep=yes" "$KB_OUT" || fail "tag reason: $(cat "$KB_OUT")"
grep -q "keep    ${ID[6]:0:8}.*last" "$KB_OUT" || fail "last reason: $(cat "$KB_OUT")"
[[ $(ops_snapshot_ids "$REPO" | wc -l) == 6 ]] || fail "a dry run removed snapshots"

# --- forget for real, then prune
expect_exit 0 kb --repo "$REPO" forget --keep-last 2 --keep-tag keep=yes --json
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["removed"] == 2, d' "$KB_OUT" ||
        fail "forget --json: $(cat "$KB_OUT")"
mapfile -t left < <(ops_snapshot_ids "$REPO")
[[ "${left[*]}" == "${ID[1]} ${ID[4]} ${ID[5]} ${ID[6]}" ]] || fail "left: ${left[*]}"
# and one by id
expect_exit 0 kb --repo "$REPO" forget "${ID[5]:0:10}"
mapfile -t left < <(ops_snapshot_ids "$REPO")
[[ "${left[*]}" == "${ID[1]} ${ID[4]} ${ID[6]}" ]] || fail "left after forget by id: ${left[*]}"

expect_exit 0 kb --repo "$REPO" prune --dry-run
after_dry=$(ops_repo_bytes "$REPO")
((after_dry == before)) || fail "prune --dry-run changed the repository"
expect_exit 0 kb --repo "$REPO" --json prune
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["packs_unused"] + d["packs_repacked"] > 0, d
assert d["bytes_freed"] > 0, d' "$KB_OUT" || fail "prune --json: $(cat "$KB_OUT")"
after=$(ops_repo_bytes "$REPO")
note "repository: $before bytes before, $after after prune"
# three of six generations' big files are gone: at least 6 MB freed
((before - after > 6000000)) || fail "prune freed only $((before - after)) bytes"

expect_exit 0 kb --repo "$REPO" check --read-data
for g in 1 4 6; do
        ops_restore_cmp "$REPO" "${ID[g]}" "${SRC[g]}"
done

# A second prune has nothing to do.
expect_exit 0 kb --repo "$REPO" --json prune
python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["packs_unused"] + d["packs_repacked"] + d["packs_unindexed"] == 0, d
assert d["bytes_freed"] == 0, d' "$KB_OUT" || fail "second prune: $(cat "$KB_OUT")"

# forget --prune in one go, with repacking of any partly used pack.
expect_exit 0 kb --repo "$REPO" forget --keep-last 1 --keep-tag keep --prune --max-unused 0
grep -q "freed" "$KB_OUT" || fail "forget --prune did not prune: $(cat "$KB_OUT")"
mapfile -t left < <(ops_snapshot_ids "$REPO")
[[ "${left[*]}" == "${ID[1]} ${ID[4]} ${ID[6]}" ]] || fail "keep-tag still applies: ${left[*]}"
expect_exit 0 kb --repo "$REPO" forget --keep-last 1 --group-by source --prune --max-unused 0
mapfile -t left < <(ops_snapshot_ids "$REPO")
[[ "${left[*]}" == "${ID[6]}" ]] || fail "left: ${left[*]}"
expect_exit 0 kb --repo "$REPO" check --read-data
ops_restore_cmp "$REPO" "${ID[6]}" "${SRC[6]}"

# --- stats: one snapshot; a second, identical backup doubles the logical size, not the stored
expect_exit 0 kb --repo "$REPO" --json stats "${ID[6]:0:8}"
one=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["logical_bytes"], d["data_stored_bytes"])' "$KB_OUT")
ID[7]=$(kb_backup "$REPO" "${SRC[6]}" --name ns/app)
expect_exit 0 kb --repo "$REPO" --json stats
python3 - "$KB_OUT" "$one" <<'EOF' || fail "stats: $(cat "$KB_OUT")"
import json, sys
d = json.load(open(sys.argv[1]))
logical, stored = map(int, sys.argv[2].split())
assert d["snapshots"] == 2, d
assert d["logical_bytes"] == 2 * logical, (d, logical)
assert d["data_stored_bytes"] == stored, (d, stored)
assert 1.99 < d["dedup_ratio"] < 2.01, d
assert d["compression_ratio"] > 0.9, d
EOF
expect_exit 0 kb --repo "$REPO" stats
grep -q "dedup ratio: *2.00x" "$KB_OUT" || fail "stats text: $(cat "$KB_OUT")"

# --- a byte flipped in a pack: structure check passes, --read-data finds it and names it
if ops_is_fs; then
        # The biggest file of the tree is one chunk in some pack: flip a byte inside it.
        pack=$(largest_pack "$REPO")
        size=$(stat -c %s "$pack")
        python3 - "$pack" "$((size / 3))" <<'EOF'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)
    f.seek(off)
    f.write(bytes([b[0] ^ 0x10]))
EOF
        expect_exit 0 kb --repo "$REPO" check
        expect_exit 1 kb --repo "$REPO" check --read-data
        name=$(basename "$pack")
        grep -q "error: pack $name: its content does not match its name" "$KB_OUT" ||
                fail "the damaged pack is not named: $(cat "$KB_OUT")"
        grep -q "error: pack $name: chunk [0-9a-f]* .* is damaged" "$KB_OUT" ||
                fail "the damaged chunk is not named: $(cat "$KB_OUT")"
        # both snapshots hold the file: each is named, with the file's path
        for s in "${ID[6]}" "${ID[7]}"; do
                grep -q "snapshot ${s:0:8}: [^ ]*: [0-9]* of [0-9]* chunk(s) damaged" "$KB_OUT" ||
                        fail "snapshot ${s:0:8} or the file is not named: $(cat "$KB_OUT")"
                grep -q "error: snapshot $s (volume ns/app" "$KB_OUT" ||
                        fail "snapshot $s not reported damaged: $(cat "$KB_OUT")"
        done
        grep -q "problem(s) found; 2 snapshot(s) damaged" "$KB_OUT" || fail "summary: $(cat "$KB_OUT")"
        # the restore reports the same file
        t=$(kb_tmpdir)
        expect_exit 3 kb --repo "$REPO" restore volume "${ID[6]}" --target "$t/r"
        grep -q "warning: .*d[0-9]/[^ ]*.*damaged" "$KB_ERR" ||
                fail "restore does not name the damaged file: $(cat "$KB_ERR")"
else
        note "not a directory repository: byte-flip part skipped"
fi

pass
