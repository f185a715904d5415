#!/usr/bin/env bash
# test_volume_roundtrip.sh - back up and restore a generated tree with every file kind and piece of
# metadata, and a copy of a real tree (/usr/share/doc); the restored trees must be identical in bytes
# and metadata. Also covers the CLI surface around it: help, usage errors, snapshots --json, ls,
# snapshot references by prefix and `latest`, and restore --include.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
SRC=$KB_TMP/src
REF=$KB_TMP/ref
((EUID == 0)) || note "not root: ownership and device nodes are not covered"
# SRC is what gets backed up; REF is a pristine twin (same seed) that nothing reads but treecmp,
# so the restore is judged against the tree as it was, whatever the backup did to SRC.
mktree "$SRC" --seed 3 --quiet
mktree "$REF" --seed 3 --quiet

# ---- CLI surface
expect_exit 0 kb --help
grep -qi 'usage' "$KB_OUT" || fail "kbackup --help prints no usage"
for c in init backup snapshots ls restore; do
        expect_exit 0 kb "$c" --help
        [[ -s $KB_OUT ]] || fail "kbackup $c --help prints nothing on stdout"
done
expect_exit 2 kb no-such-command
expect_exit 2 kb --repo "$REPO" backup volume
expect_exit 2 kb --repo "$REPO" backup no-such-kind "$SRC"
expect_exit 2 kb --repo "$REPO" restore volume latest

kb_init "$REPO"
expect_exit 1 kb --repo "$REPO" init # already a repository

# ---- the generated tree
id1=$(kb_backup "$REPO" "$SRC" --name ns1/pvc-a --tag env=test --tag team=storage)
grep -qi 'sock' "$KB_ERR" || fail "backup of a tree with a socket printed no warning about it"
if grep -q $'\r' "$KB_OUT"; then fail "progress output on a non-terminal stdout"; fi

# The backup must not change its source (apart from directory atimes): file atimes stay.
treecmp "$REF" "$SRC" --ignore-atime-dirs

expect_exit 0 kb --repo "$REPO" restore volume "$id1" --target "$KB_TMP/restored"
treecmp "$REF" "$KB_TMP/restored"

# Explicit checks of what the issue names, on top of treecmp.
R=$KB_TMP/restored
[[ $(stat -c %i "$R/hardlinks/a/h1") == $(stat -c %i "$R/hardlinks/b/c/h2") &&
        $(stat -c %i "$R/hardlinks/a/h1") == $(stat -c %i "$R/hardlinks/h3") ]] ||
        fail "hardlinks restored as separate files"
alloc=$(($(stat -c %b "$R/sparse/holes-64m") * $(stat -c %B "$R/sparse/holes-64m")))
((alloc <= 1024 * 1024)) || fail "sparse 64 MiB file allocates $alloc bytes after restore"
[[ $(stat -c %s "$R/sparse/holes-64m") == 67108864 ]] || fail "sparse file has the wrong size"
if ((EUID == 0)); then
        [[ $(stat -c %u:%g "$R/owners/file") == 1234:5678 ]] || fail "ownership not restored"
fi

# Paths beyond PATH_MAX: the same tree (same seed, so it dedups) plus a very deep branch.
SRC2=$KB_TMP/src-long
mktree "$SRC2" --seed 3 --long-path --quiet
mktree "$KB_TMP/ref-long" --seed 3 --long-path --quiet
id_long=$(kb_backup "$REPO" "$SRC2" --name ns1/pvc-long)
expect_exit 0 kb --repo "$REPO" restore volume "$id_long" --target "$KB_TMP/restored-long"
treecmp "$KB_TMP/ref-long" "$KB_TMP/restored-long"

# ---- a real tree
DOC=$KB_TMP/doc
cp -a /usr/share/doc "$DOC"
id2=$(kb_backup "$REPO" "$DOC" --name ns2/docs)
expect_exit 0 kb --repo "$REPO" restore volume "$id2" --target "$KB_TMP/doc-restored"
treecmp "$DOC" "$KB_TMP/doc-restored" --ignore-atime-dirs

# ---- snapshots --json
expect_exit 0 kb --repo "$REPO" snapshots --json
python3 - "$KB_OUT" "$id1" "$id_long" "$id2" "$(uname -n)" <<'EOF' || fail "snapshots --json"
import json, re, sys
out, id1, id_long, id2, host = sys.argv[1:6]
snaps = json.load(open(out))
assert isinstance(snaps, list), "not a JSON array"
assert len(snaps) == 3, "%d snapshots listed, want 3" % len(snaps)
for s in snaps:
    for k in ("id", "time", "kind", "name", "tags", "host"):
        assert k in s, "field %s missing in %r" % (k, s)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", s["time"]), \
        "time %r is not RFC 3339" % s["time"]
    assert s["kind"] == "volume", s
    assert s["host"] == host, "host %r, want %r" % (s["host"], host)
    assert re.fullmatch(r"[0-9a-f]{16,64}", s["id"]), "id %r" % s["id"]

def find(i):
    m = [s for s in snaps if s["id"].startswith(i) or i.startswith(s["id"])]
    assert len(m) == 1, "snapshot %s listed %d times" % (i, len(m))
    return m[0]

def tags(t):
    """Tags as a dict, whether printed as an object, "k=v" strings or {key, value} objects."""
    if isinstance(t, dict):
        return t
    out = {}
    for e in t:
        if isinstance(e, str):
            k, _, v = e.partition("=")
            out[k] = v
        else:
            out[e["key"]] = e["value"]
    return out

s1 = find(id1)
assert s1["name"] == "ns1/pvc-a", s1
assert tags(s1["tags"]) == {"env": "test", "team": "storage"}, s1["tags"]
s2 = find(id2)
assert s2["name"] == "ns2/docs", s2
assert tags(s2["tags"]) == {}, s2["tags"]
# Oldest first or newest first is the CLI's choice, but the list must be ordered by time.
times = [s["time"] for s in snaps]
assert times == sorted(times) or times == sorted(times, reverse=True), times
EOF
expect_exit 0 kb --repo "$REPO" snapshots
grep -q "${id1:0:8}" "$KB_OUT" || fail "plain 'snapshots' does not show $id1"

# ---- ls
KBACKUP_REPOSITORY=$REPO expect_exit 0 kb ls "$id1"
for p in files/random-5m hardlinks/b/c/h2 links/dangling special/fifo sparse/holes-64m; do
        grep -qF "$p" "$KB_OUT" || fail "ls $id1 does not list $p"
done
if grep -q 'special/socket' "$KB_OUT"; then fail "ls lists the skipped socket"; fi
expect_exit 0 kb --repo "$REPO" ls "$id1" hardlinks/b
grep -qF 'h2' "$KB_OUT" || fail "ls $id1 hardlinks/b does not list h2"
if grep -qF 'random-5m' "$KB_OUT"; then fail "ls $id1 hardlinks/b lists files outside hardlinks/b"; fi
expect_exit 1 kb --repo "$REPO" ls "$id1" no/such/path
expect_exit 0 kb --repo "$REPO" ls latest
known=$(cd "$DOC" && find . -type f -name copyright -print -quit)
[[ -n $known ]] || fail "no copyright file in /usr/share/doc to look for"
grep -qF "${known#./}" "$KB_OUT" || fail "ls latest does not list ${known#./}"

# ---- password sources: --password-file, KBACKUP_PASSWORD, a file ending in a newline (echo > f)
pw=$(cat "$KBACKUP_PASSWORD_FILE")
expect_exit 0 env -u KBACKUP_PASSWORD_FILE "$KBACKUP" --repo "$REPO" --password-file "$KBACKUP_PASSWORD_FILE" snapshots
expect_exit 0 env -u KBACKUP_PASSWORD_FILE KBACKUP_PASSWORD="$pw" "$KBACKUP" --repo "$REPO" snapshots
echo "$pw" >"$KB_TMP/pw-newline"
KBACKUP_PASSWORD_FILE=$KB_TMP/pw-newline expect_exit 0 kb --repo "$REPO" snapshots

# ---- references by unique prefix, --include
prefix=${id1:0:12}
X=$KB_TMP/inc1
expect_exit 0 kb --repo "$REPO" restore volume "$prefix" --target "$X" --include hardlinks
[[ $(ls -A "$X") == hardlinks ]] || fail "--include hardlinks restored more than hardlinks: $(ls -A "$X")"
treecmp "$REF/hardlinks" "$X/hardlinks"

X=$KB_TMP/inc2
expect_exit 0 kb --repo "$REPO" restore volume "$prefix" --target "$X" --include xattr/dir
[[ $(ls -A "$X") == xattr && $(ls -A "$X/xattr") == dir ]] ||
        fail "--include xattr/dir is not restored at X/xattr/dir alone"
treecmp "$REF/xattr/dir" "$X/xattr/dir"

X=$KB_TMP/inc3
expect_exit 0 kb --repo "$REPO" restore volume "$prefix" --target "$X" --include files/random-5m
[[ $(ls -A "$X/files") == random-5m ]] || fail "--include of one file restored more"
cmp "$REF/files/random-5m" "$X/files/random-5m" || fail "--include of one file: content differs"

X=$KB_TMP/inc4
expect_exit 0 kb --repo "$REPO" restore volume "$prefix" --target "$X" --include $'names/new\nline'
cmp "$REF/names/new"$'\n'"line" "$X/names/new"$'\n'"line" || fail "--include of an odd name"

expect_exit 1 kb --repo "$REPO" restore volume "$prefix" --target "$KB_TMP/inc5" --include no/such/path
expect_exit 1 kb --repo "$REPO" restore volume 0000000000ffffffff --target "$KB_TMP/none"
expect_exit 1 kb --repo "$REPO" ls 0000000000ffffffff

# ---- chunk id hashes: a repository made before keyed BLAKE3 (tests/data/README.md) keeps working
# with its HMAC-SHA-256 ids, and init --id-hash makes either kind
OLD=$KB_TMP/repo-hmac
cp -r "$KB_SOURCE_DIR/tests/data/repo-hmac-sha256" "$OLD"
rm -rf "$OLD/locks" # git keeps no empty directory
printf 'kbackup-fixture-password' >"$KB_TMP/fixture-pw"
python3 "$KB_SOURCE_DIR/tests/data/fixture_src.py" "$KB_TMP/fixture-src"
old_kb() { KBACKUP_PASSWORD_FILE=$KB_TMP/fixture-pw expect_exit "$@"; }
old_kb 0 kb --repo "$OLD" restore volume latest --target "$KB_TMP/fixture-out"
diff -r --no-dereference "$KB_TMP/fixture-src" "$KB_TMP/fixture-out" ||
        fail "the HMAC-SHA-256 fixture repository restores other contents"
old_kb 0 kb --repo "$OLD" check --read-data
# The same tree again: its 64 KiB file must dedup against the old chunk, which only happens when
# the new chunk ids are HMAC-SHA-256 ones too (only the two changed directory trees are new).
old_kb 0 kb --repo "$OLD" backup volume "$KB_TMP/fixture-src" --name fixture/hmac --json
new=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bytes_new"])' "$KB_OUT")
((new < 4096)) || fail "backup into the HMAC-SHA-256 repository stored $new new bytes: ids changed"
old_kb 0 kb --repo "$OLD" check --read-data

for h in hmac-sha256 keyed-blake3; do
        R=$KB_TMP/repo-$h
        expect_exit 0 kb --repo "$R" init --id-hash "$h"
        kb_backup "$R" "$KB_TMP/fixture-src" >/dev/null
        expect_exit 0 kb --repo "$R" restore volume latest --target "$KB_TMP/out-$h"
        diff -r --no-dereference "$KB_TMP/fixture-src" "$KB_TMP/out-$h" || fail "$h: restore differs"
        expect_exit 0 kb --repo "$R" check --read-data
done
# Each repository names the same 64 KiB chunk differently (different keys, and different hashes):
# nothing to assert across them. An unknown hash is a usage error and creates nothing.
expect_exit 2 kb --repo "$KB_TMP/repo-bad" init --id-hash sha1
[[ ! -e $KB_TMP/repo-bad ]] || fail "init --id-hash sha1 left $KB_TMP/repo-bad behind"

pass
