#!/usr/bin/env bash
# test_volume_incremental.sh - a backup takes unchanged files from the parent snapshot without
# reading them, and never trusts a file whose content changed: same size and mtime but a new
# ctime (content rewritten, mtime put back) must be read again and restore with its new bytes.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
SRC=$KB_TMP/src
mkdir -p "$SRC/a/b" "$SRC/c"
for i in $(seq 1 40); do head -c $((i * 1000)) /dev/urandom >"$SRC/a/f$i"; done
for i in $(seq 1 10); do head -c 5000 /dev/urandom >"$SRC/a/b/g$i"; done
head -c $((3 * 1024 * 1024)) /dev/urandom >"$SRC/c/big"
# Unchanged files are not opened: their xattrs come from the parent snapshot, so they must be
# there after a restore of a later snapshot, and a changed xattr (it moves ctime) must be seen.
setfattr -n user.kept -v "value one" "$SRC/a/f2"
setfattr -n user.empty "$SRC/a/f3"
setfattr -n user.changes -v before "$SRC/a/f4"
# Hardlinked files are skipped too when unchanged, and still restore as links.
ln "$SRC/a/f5" "$SRC/c/f5-link"
kb_init "$REPO"

json_field() { # FIELD: from the last --json line of the last command
        python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])[sys.argv[2]])' "$KB_OUT" "$1"
}

expect_exit 0 kb --repo "$REPO" backup volume "$SRC" --name ns/pvc --json
first=$(json_field snapshot)
[[ $(json_field files_unchanged) == 0 ]] || fail "first backup had a parent"

# Unchanged: every file comes from the parent.
expect_exit 0 kb --repo "$REPO" backup volume "$SRC" --name ns/pvc --json
[[ $(json_field parent) == "$first" ]] || fail "parent is not the first snapshot"
[[ $(json_field files_unchanged) == 51 ]] || fail "expected 51 unchanged files, got $(json_field files_unchanged)"
[[ $(json_field files) == 52 ]] || fail "expected 52 files, got $(json_field files)"
[[ $(json_field bytes_new) -lt 100000 ]] || fail "unchanged backup stored $(json_field bytes_new) new bytes"

# Rewrite a file in place with the same size, then put its mtime back: only ctime tells.
mtime=$(stat -c %y "$SRC/a/f7")
head -c 7000 /dev/urandom >"$SRC/a/f7"
touch -d "$mtime" "$SRC/a/f7"
echo appended >>"$SRC/a/b/g3"
setfattr -n user.changes -v after "$SRC/a/f4"
rm "$SRC/a/f1"
head -c 1234 /dev/urandom >"$SRC/c/new"
expect_exit 0 kb --repo "$REPO" backup volume "$SRC" --name ns/pvc --json
[[ $(json_field files_unchanged) == 47 ]] || fail "expected 47 unchanged files, got $(json_field files_unchanged)"
third=$(json_field snapshot)

# Another name is another source: no parent.
expect_exit 0 kb --repo "$REPO" backup volume "$SRC" --name ns/other --json
[[ $(json_field files_unchanged) == 0 ]] || fail "a different --name used a parent"
# --force reads everything.
expect_exit 0 kb --repo "$REPO" backup volume "$SRC" --name ns/pvc --force --json
[[ $(json_field files_unchanged) == 0 ]] || fail "--force still skipped files"

OUT=$(kb_tmpdir)
expect_exit 0 kb --repo "$REPO" restore volume "$third" --target "$OUT/r"
treecmp --ignore-atime "$SRC" "$OUT/r"
[[ $(getfattr --only-values -n user.kept "$OUT/r/a/f2") == "value one" ]] || fail "unchanged file lost its xattr"
[[ $(getfattr --only-values -n user.changes "$OUT/r/a/f4") == after ]] || fail "changed xattr not backed up"
getfattr -n user.empty "$OUT/r/a/f3" >/dev/null || fail "unchanged file lost its empty xattr"
[[ $(stat -c %i "$OUT/r/a/f5") == $(stat -c %i "$OUT/r/c/f5-link") ]] || fail "the hardlink was not restored as a link"
cmp "$SRC/a/f5" "$OUT/r/c/f5-link" || fail "hardlinked content differs"
pass
