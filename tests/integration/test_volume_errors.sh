#!/usr/bin/env bash
# test_volume_errors.sh - failures must be clear, bounded and harmless: a wrong or missing password
# is one line, exit 1 and no write; a missing repository is an error, not a new repository; a
# corrupted, truncated or missing pack fails the restore with a message (naming the affected file
# for a damaged chunk) while everything else is restored; nothing crashes (also under ASan/UBSan,
# whose reports fail the test through expect_exit).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
SRC=$KB_TMP/src

# 24 MiB of random data in 3 MiB files: packs are almost all file data, so a byte flipped in the
# middle of a pack lands in a file's chunk.
python3 - "$SRC" <<'EOF'
import os, sys
root = sys.argv[1]
os.makedirs(root + "/sub")
for i in range(8):
    with open("%s/%sfile%d" % (root, "sub/" if i % 2 else "", i), "wb") as f:
        f.write(os.urandom(3 << 20))
with open(root + "/small", "wb") as f:
    f.write(b"small file\n")
EOF

kb_init "$REPO"
id=$(kb_backup "$REPO" "$SRC" --name ns/errors)

one_line_stderr() {
        local n
        n=$(wc -l <"$KB_ERR")
        [[ -s $KB_ERR && $n -le 1 ]] || {
                cat "$KB_ERR" >&2
                fail "$1: want one line on stderr, got $n"
        }
}

# ---- wrong password: exit 1, one line, nothing written anywhere
before=$(repo_state "$REPO")
good_pw_file=$KBACKUP_PASSWORD_FILE
echo "not the password" >"$KB_TMP/wrong-password"
for cmd in "backup volume $SRC" "snapshots" "ls $id" "restore volume $id --target $KB_TMP/wrong-target"; do
        # shellcheck disable=SC2086 # word splitting of $cmd is intended (no spaces in paths)
        KBACKUP_PASSWORD_FILE=$KB_TMP/wrong-password expect_exit 1 kb --repo "$REPO" $cmd
        one_line_stderr "wrong password file ($cmd)"
        # shellcheck disable=SC2086
        expect_exit 1 env -u KBACKUP_PASSWORD_FILE KBACKUP_PASSWORD=s3cr3t-Wr0ng-pw \
                "$KBACKUP" --repo "$REPO" $cmd
        one_line_stderr "wrong KBACKUP_PASSWORD ($cmd)"
        if grep -q 's3cr3t-Wr0ng-pw' "$KB_ERR"; then fail "the password appears in an error message"; fi
done
[[ ! -e $KB_TMP/wrong-target ]] || fail "restore with a wrong password created its target"
[[ $(repo_state "$REPO") == "$before" ]] || fail "a command with a wrong password changed the repository"

# ---- missing password
expect_exit 1 env -u KBACKUP_PASSWORD_FILE -u KBACKUP_PASSWORD "$KBACKUP" --repo "$REPO" snapshots
one_line_stderr "missing password"
expect_exit 1 env -u KBACKUP_PASSWORD_FILE -u KBACKUP_PASSWORD "$KBACKUP" --repo "$REPO" backup volume "$SRC"
one_line_stderr "missing password (backup)"
KBACKUP_PASSWORD_FILE=$KB_TMP/no-such-file expect_exit 1 kb --repo "$REPO" snapshots
one_line_stderr "missing password file"
expect_exit 1 env -u KBACKUP_PASSWORD_FILE -u KBACKUP_PASSWORD "$KBACKUP" --repo "$KB_TMP/new-repo" init
[[ ! -e $KB_TMP/new-repo/config ]] || fail "init without a password created a repository"
[[ $(repo_state "$REPO") == "$before" ]] || fail "a command without a password changed the repository"
KBACKUP_PASSWORD_FILE=$good_pw_file

# ---- no repository
expect_exit nonzero kb --repo "$KB_TMP/no-repo" snapshots
expect_exit nonzero kb --repo "$KB_TMP/no-repo" backup volume "$SRC"
[[ ! -e $KB_TMP/no-repo ]] || fail "backup to a missing repository created it"
mkdir "$KB_TMP/not-a-repo"
echo hello >"$KB_TMP/not-a-repo/file"
expect_exit nonzero kb --repo "$KB_TMP/not-a-repo" snapshots
expect_exit nonzero env -u KBACKUP_REPOSITORY "$KBACKUP" snapshots
expect_exit nonzero kb --repo "$REPO" backup volume "$KB_TMP/no-such-source"
[[ $(repo_state "$REPO") == "$before" ]] || fail "a backup of a missing source changed the repository"

# ---- damaged packs. Each case works on its own copy of the repository.
pack_rel=$(largest_pack "$REPO")
pack_rel=${pack_rel#"$REPO"/}
[[ $pack_rel == data/??/* ]] || fail "no pack under data/xx/ (found '$pack_rel')"

# Every regular file of the tree, relative, for finding the ones an error message names.
mapfile -t files < <(cd "$SRC" && find . -type f | sed 's|^\./||' | sort)

# A flipped byte in the middle of a pack: exit 3, the damaged file named, the rest identical.
R=$KB_TMP/repo-corrupt
cp -a "$REPO" "$R"
python3 - "$R/$pack_rel" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
off = os.fstat(fd).st_size // 2
b = os.pread(fd, 1, off)
os.pwrite(fd, bytes([b[0] ^ 0xFF]), off)
os.close(fd)
EOF
expect_exit 3 kb --repo "$R" restore volume "$id" --target "$KB_TMP/t-corrupt"
note "flipped byte: $(head -n 3 "$KB_ERR")"
named=()
for f in "${files[@]}"; do
        grep -qF -- "$f" "$KB_ERR" && named+=("$f")
done
((${#named[@]} >= 1)) || {
        cat "$KB_ERR" >&2
        fail "restore of a damaged chunk does not name the file it belongs to"
}
((${#named[@]} <= 2)) || fail "one damaged chunk reported for ${#named[@]} files: ${named[*]}"
excl=()
for f in "${named[@]}"; do excl+=(--exclude "$f"); done
treecmp "$SRC" "$KB_TMP/t-corrupt" --ignore-atime "${excl[@]}"

# A truncated pack: a clear error, no crash.
R=$KB_TMP/repo-truncated
cp -a "$REPO" "$R"
truncate -s $(($(stat -c %s "$R/$pack_rel") / 3)) "$R/$pack_rel"
expect_exit nonzero kb --repo "$R" restore volume "$id" --target "$KB_TMP/t-truncated"
[[ -s $KB_ERR ]] || fail "restore from a truncated pack printed no error"
note "truncated pack (exit $KB_RC): $(head -n 3 "$KB_ERR")"

# A missing pack: a clear error, no crash.
R=$KB_TMP/repo-missing
cp -a "$REPO" "$R"
rm "$R/$pack_rel"
expect_exit nonzero kb --repo "$R" restore volume "$id" --target "$KB_TMP/t-missing"
[[ -s $KB_ERR ]] || fail "restore with a missing pack printed no error"
note "missing pack (exit $KB_RC): $(head -n 3 "$KB_ERR")"
grep -qiE 'pack|missing|not found|no such|src/|sub/|file[0-9]' "$KB_ERR" ||
        fail "restore with a missing pack does not say what is missing: $(head -3 "$KB_ERR")"

# Damaged metadata objects: refused with an error, never a crash.
for obj in index snapshots config keys; do
        R=$KB_TMP/repo-bad-$obj
        cp -a "$REPO" "$R"
        victim=$(find "$R/$obj" -type f | head -n 1)
        [[ -n $victim ]] || fail "no $obj object in the repository"
        python3 - "$victim" <<'EOF'
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
off = os.fstat(fd).st_size // 2
b = os.pread(fd, 1, off)
os.pwrite(fd, bytes([b[0] ^ 0x10]), off)
os.close(fd)
EOF
        # Refusing with a message, or recovering and restoring everything right, are both fine.
        kb_run --repo "$R" restore volume "$id" --target "$KB_TMP/t-bad-$obj"
        note "damaged $obj (exit $KB_RC): $(head -n 2 "$KB_ERR")"
        if ((KB_RC == 0)); then
                treecmp "$SRC" "$KB_TMP/t-bad-$obj" --ignore-atime
        else
                ((KB_RC < 128)) || fail "a damaged $obj object: exit $KB_RC (crash?)"
                [[ -s $KB_ERR ]] || fail "a damaged $obj object gives no error message"
        fi
done

# ---- a tree that changes while it is read: reported, not fatal. A writer grows one file and
# creates and deletes others for as long as the backup runs (at most 20 s).
CH=$KB_TMP/changing
mkdir -p "$CH/churn"
head -c $((32 * 1024 * 1024)) /dev/urandom >"$CH/grow"
python3 - "$CH" <<'EOF' &
import os, sys, time
root = sys.argv[1]
end = time.time() + 20
n = 0
with open(root + "/grow", "ab") as g:
    while time.time() < end and not os.path.exists(root + ".stop"):
        g.write(os.urandom(64 * 1024))
        g.flush()
        with open("%s/churn/f%d" % (root, n), "wb") as f:
            f.write(os.urandom(4096))
        if n >= 3:
            os.unlink("%s/churn/f%d" % (root, n - 3))
        n += 1
EOF
writer=$!
kb_track_pid "$writer"
sleep 0.3
kb_run --repo "$REPO" backup volume "$CH" --name ns/changing
touch "$CH.stop"
wait "$writer" || fail "the writer of the changing tree failed"
kb_untrack_pid "$writer"
((KB_RC == 0 || KB_RC == 3)) || {
        cat "$KB_ERR" >&2
        fail "backup of a changing tree exited $KB_RC, want 0 or 3 (a snapshot, problems reported)"
}
changing_id=$(tail -n 1 "$KB_OUT")
[[ $changing_id =~ ^[0-9a-f]{8,64}$ ]] || fail "backup of a changing tree printed no snapshot id"
note "changing tree: exit $KB_RC: $(head -n 2 "$KB_ERR")"
expect_exit 0 kb --repo "$REPO" ls "$changing_id"
grep -qF grow "$KB_OUT" || fail "the growing file is missing from the snapshot"

pass
