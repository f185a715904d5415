#!/usr/bin/env bash
# test_volume_dedup.sh - deduplication as seen from the repository's size: identical content is
# stored once, an unchanged second backup adds < 1% of the tree, and inserting bytes at the start
# of a large file only changes the chunks near the insert (content-defined chunking is shift
# resistant).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

MiB=$((1024 * 1024))
REPO=$KB_TMP/repo
SRC=$KB_TMP/src

# ~108 MiB of incompressible data of which 100 MiB unique: a 64 MiB file, 28 files of 1 MiB, an
# 8 MiB file and a copy of it elsewhere.
python3 - "$SRC" <<'EOF'
import os, sys
root = sys.argv[1]
os.makedirs(root + "/big")
os.makedirs(root + "/small/nested")
os.makedirs(root + "/dup")
with open(root + "/big/file64", "wb") as f:
    f.write(os.urandom(64 << 20))
for i in range(28):
    with open(root + "/small/%s/f%02d" % ("nested" if i % 2 else ".", i), "wb") as f:
        f.write(os.urandom(1 << 20))
data = os.urandom(8 << 20)
for p in ("/big/file8", "/dup/file8-copy"):
    with open(root + p, "wb") as f:
        f.write(data)
EOF
tree_size=$(du -sb "$SRC" | cut -f1)
unique=$((100 * MiB))

kb_init "$REPO"
size0=$(du -sb "$REPO" | cut -f1)

kb_backup "$REPO" "$SRC" >/dev/null
size1=$(du -sb "$REPO" | cut -f1)
first=$((size1 - size0))
note "first backup: tree $tree_size bytes, repository +$first bytes"
# Random data does not compress: the repository holds the unique bytes plus a little overhead,
# and the 8 MiB copy is not stored twice.
((first >= unique)) || fail "repository grew by $first bytes, less than the $unique unique bytes"
((first < unique + 2 * MiB)) || fail "repository grew by $first bytes for $unique unique bytes: duplicate stored?"

kb_backup "$REPO" "$SRC" >/dev/null
size2=$(du -sb "$REPO" | cut -f1)
second=$((size2 - size1))
note "unchanged second backup: repository +$second bytes"
((second * 100 < tree_size)) || fail "unchanged second backup added $second bytes (>= 1% of $tree_size)"

# Insert 100 bytes at the start of the 64 MiB file: every byte after shifts.
python3 - "$SRC/big/file64" <<'EOF'
import os, sys
p = sys.argv[1]
data = open(p, "rb").read()
with open(p + ".new", "wb") as f:
    f.write(os.urandom(100) + data)
os.rename(p + ".new", p)
EOF
id3=$(kb_backup "$REPO" "$SRC")
size3=$(du -sb "$REPO" | cut -f1)
third=$((size3 - size2))
note "backup after a 100-byte insert at the start of 64 MiB: repository +$third bytes"
((third < 5 * MiB)) || fail "a 100-byte insert at the start of a 64 MiB file added $third bytes (>= 5 MiB)"

# And the shifted file comes back right.
expect_exit 0 kb --repo "$REPO" restore volume "$id3" --target "$KB_TMP/restored"
treecmp "$SRC" "$KB_TMP/restored" --ignore-atime

pass
