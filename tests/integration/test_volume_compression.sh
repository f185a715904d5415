#!/usr/bin/env bash
# test_volume_compression.sh - --compression: the default level shrinks compressible data, `off`
# stores it as it is, a high level stores no more than the default, incompressible data is stored
# raw at any level (the probe gives up), a file that starts like a gzip file is stored raw whole,
# bad values are usage errors, and every variant restores byte for byte.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

SRC=$KB_TMP/src
mkdir -p "$SRC"
# Text of random words from a fixed vocabulary: compressible like prose (about 3:1 at level 1),
# with room for a high level to do clearly better (repetitive text left too little to gain, and
# each repository's own chunk boundaries moved the sizes by more than the levels did).
python3 - "$SRC" <<'PY'
import os, random, sys
rng = random.Random(7)
vocab = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 11)))
         for _ in range(3000)]
with open(os.path.join(sys.argv[1], "text"), "w") as f:
    for line in range(40000):
        f.write(" ".join(rng.choice(vocab) for _ in range(rng.randint(4, 14))) + "\n")
with open(os.path.join(sys.argv[1], "noise"), "wb") as f:
    f.write(os.urandom(3 << 20))
PY
text=$(stat -c %s "$SRC/text")

field() { # FIELD: from the --json summary of the last command
        python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])[sys.argv[2]])' "$KB_OUT" "$1"
}

stored() { # DIR LEVEL-ARGS...: back up DIR into a fresh repository, print bytes_stored
        local repo src=$1
        shift
        repo=$(kb_tmpdir)/repo
        kb_init "$repo"
        expect_exit 0 kb --repo "$repo" "$@" backup volume "$src" --json
        local out bytes
        bytes=$(field bytes_stored)
        out=$(kb_tmpdir)
        expect_exit 0 kb --repo "$repo" restore volume latest --target "$out/r"
        treecmp --ignore-atime "$src" "$out/r"
        echo "$bytes"
}

noise=$((3 << 20))
default=$(stored "$SRC")
off=$(stored "$SRC" --compression off)
high=$(stored "$SRC" --compression 19)
env_off=$(KBACKUP_COMPRESSION=off stored "$SRC")
# Levels compared on text alone: above level 3 a chunk whose first 64 KiB are noise is stored
# raw even when text follows (the probe's trade-off), so with the noise file a high level can
# store a little more than level 1.
TEXT=$KB_TMP/text-only
mkdir -p "$TEXT"
cp "$SRC/text" "$TEXT/"
text_default=$(stored "$TEXT")
text_high=$(stored "$TEXT" --compression 19)
note "stored: default $default, off $off, 19 $high, env off $env_off (text $text, noise $noise); text alone: default $text_default, 19 $text_high"
# Text shrinks several times at the default level; noise is stored raw (plus sealing overhead).
((default < noise + text / 2)) || fail "default level did not compress the text ($default)"
((off >= noise + text)) || fail "--compression off still compressed ($off)"
((env_off >= noise + text)) || fail "KBACKUP_COMPRESSION=off still compressed ($env_off)"
((text_high < text_default * 95 / 100)) ||
        fail "level 19 did not store clearly less than level 1 ($text_high vs $text_default)"
((high < off)) || fail "level 19 did not compress ($high)"
((default >= noise)) || fail "incompressible data shrank?"

# A file that starts like a gzip file is stored raw all along, without trying zstd on its later
# chunks (here, text that would shrink: the test can tell); the same bytes without the signature
# compress. Both restore byte for byte.
GZ=$KB_TMP/gz
mkdir -p "$GZ/packed" "$GZ/plain"
{ gzip -c "$SRC/text"; cat "$SRC/text"; } >"$GZ/packed/archive.gz"
size=$(stat -c %s "$GZ/packed/archive.gz")
python3 -c 'import sys; b = bytearray(open(sys.argv[1], "rb").read()); b[0] = 0; open(sys.argv[2], "wb").write(b)' \
        "$GZ/packed/archive.gz" "$GZ/plain/archive"
packed=$(stored "$GZ/packed")
plain=$(stored "$GZ/plain")
note "a $size-byte file after a gzip header: stored $packed; without the header: $plain"
((packed >= size)) || fail "a file that starts like gzip was compressed ($packed of $size)"
((plain < size * 3 / 4)) || fail "the same bytes without the gzip signature did not shrink ($plain)"

for bad in 0 20 -100 fast 1x; do
        repo=$(kb_tmpdir)/repo
        kb_init "$repo"
        expect_exit 2 kb --repo "$repo" --compression "$bad" backup volume "$SRC"
        grep -q "compression" "$KB_ERR" || fail "no clear error for --compression '$bad': $(cat "$KB_ERR")"
done
pass
