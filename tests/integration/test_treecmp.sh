#!/usr/bin/env bash
# test_treecmp.sh - self-test of the test tools: mktree.py must be deterministic and treecmp.py must
# find two identical trees equal and catch every single kind of difference, so a round-trip test
# built on them cannot pass by accident.
set -euo pipefail
KB_NEEDS_BINARY=0
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

A=$KB_TMP/a
B=$KB_TMP/b
mktree "$A" --seed 7 --long-path --quiet
mktree "$B" --seed 7 --long-path --quiet

# Equal, strictly (directory atimes included: treecmp reads with O_NOATIME, so it does not disturb
# what it compares; run it twice to prove that).
treecmp "$A" "$B"
treecmp "$A" "$B"

# A socket only on one side is ignored (backups skip sockets).
python3 - "$B" <<'EOF'
import os, socket, sys
st = os.stat(sys.argv[1])
s = socket.socket(socket.AF_UNIX)
s.bind(os.path.join(sys.argv[1], "extra.sock"))
s.close()
os.utime(sys.argv[1], ns=(st.st_atime_ns, st.st_mtime_ns))
EOF
treecmp "$A" "$B"

cat >"$KB_TMP/mutate.py" <<'EOF'
# Apply one named change to the tree at argv[1], leaving everything else (times included) as it was.
import os, stat, struct, sys

root = os.fsencode(sys.argv[1])
what = sys.argv[2]

def p(rel):
    return root + b"/" + (rel if isinstance(rel, bytes) else rel.encode())

def keep_times(rel, fn, parent_too=True):
    """Run fn, then restore the times of rel (and its parent directory) as they were."""
    path = p(rel)
    parent = os.path.dirname(path)
    st = os.lstat(path)
    pst = os.lstat(parent)
    fn(path)
    if os.path.lexists(path):
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
    if parent_too:
        os.utime(parent, ns=(pst.st_atime_ns, pst.st_mtime_ns))

def flip_byte(path):
    fd = os.open(path, os.O_RDWR)
    off = os.fstat(fd).st_size // 2
    b = os.pread(fd, 1, off)
    os.pwrite(fd, bytes([b[0] ^ 0x01]), off)
    os.close(fd)

def break_link(path):
    # O_NOATIME: reading must not touch the atime the other links share.
    fd = os.open(path, os.O_RDONLY | os.O_NOATIME)
    data = os.read(fd, 1 << 20)
    os.close(fd)
    st = os.lstat(path)
    os.unlink(path)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, stat.S_IMODE(st.st_mode))
    os.chown(path, st.st_uid, st.st_gid)

def retarget(path):
    os.unlink(path)
    os.symlink(b"../files/small-3X", path)

def new_acl(path):
    v = bytearray(os.getxattr(path, b"system.posix_acl_access"))
    # Change the named user's id (1234 -> 1235); the mask and so the mode stay the same.
    for i in range(4, len(v), 8):
        tag, perm, qual = struct.unpack_from("<HHI", v, i)
        if tag == 0x02:
            struct.pack_into("<HHI", v, i, tag, perm, qual + 1)
    os.setxattr(path, b"system.posix_acl_access", bytes(v))

def fill_holes(path):
    fd = os.open(path, os.O_RDWR)
    os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    os.close(fd)

def new_rdev(path):
    st = os.lstat(path)
    os.unlink(path)
    os.mknod(path, st.st_mode, os.makedev(1, 5))

def fifo_to_file(path):
    os.unlink(path)
    open(path, "wb").close()
    os.chmod(path, 0o640)

def rename_odd(path):
    os.rename(path, path.replace(b"\xfe", b"\xfd"))

def flip_deep_leaf():
    """The leaf below PATH_MAX depth: reachable only through directory descriptors, opened with
    O_NOATIME so descending does not change the directories' atimes."""
    fd = os.open(p("verydeep"), os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME)
    while True:
        names = os.listdir(fd)
        if "leaf" in names:
            break
        nfd = os.open(names[0], os.O_RDONLY | os.O_DIRECTORY | os.O_NOATIME, dir_fd=fd)
        os.close(fd)
        fd = nfd
    st = os.stat("leaf", dir_fd=fd)
    lfd = os.open("leaf", os.O_RDWR, dir_fd=fd)
    b = os.pread(lfd, 1, 0)
    os.pwrite(lfd, bytes([b[0] ^ 0x01]), 0)
    os.close(lfd)
    os.utime("leaf", ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=fd)
    os.close(fd)

ns = 1
ops = {
    "content": lambda: keep_times("files/random-5m", flip_byte),
    "mtime": lambda: os.utime(p("files/small-3k"), ns=(os.lstat(p("files/small-3k")).st_atime_ns,
                                                       os.lstat(p("files/small-3k")).st_mtime_ns + ns)),
    "atime": lambda: os.utime(p("files/one"), ns=(os.lstat(p("files/one")).st_atime_ns + ns,
                                                  os.lstat(p("files/one")).st_mtime_ns)),
    "symlink-mtime": lambda: os.utime(p("links/rel"), ns=(0, os.lstat(p("links/rel")).st_mtime_ns + ns),
                                      follow_symlinks=False),
    "dir-mtime": lambda: os.utime(p("hardlinks/b"), ns=(os.lstat(p("hardlinks/b")).st_atime_ns,
                                                        os.lstat(p("hardlinks/b")).st_mtime_ns + ns)),
    "dir-atime": lambda: os.utime(p("hardlinks/b"), ns=(os.lstat(p("hardlinks/b")).st_atime_ns + ns,
                                                        os.lstat(p("hardlinks/b")).st_mtime_ns)),
    "xattr-value": lambda: keep_times("xattr/file",
                                      lambda q: os.setxattr(q, b"user.comment", b"hellO"), False),
    "xattr-removed": lambda: keep_times("xattr/dir",
                                        lambda q: os.removexattr(q, b"user.dirattr"), False),
    "xattr-added": lambda: keep_times("files/one",
                                      lambda q: os.setxattr(q, b"user.new", b"1"), False),
    "acl": lambda: keep_times("xattr/acl-file", new_acl, False),
    "hardlink": lambda: keep_times(b"hardlinks/b/c/h2", break_link),
    "mode": lambda: os.chmod(p("modes/m0644"), 0o645),
    "setuid-bit": lambda: os.chmod(p("modes/m4755"), 0o755),
    "owner": lambda: os.chown(p("owners/file"), 1234, 5679),
    "symlink-owner": lambda: os.chown(p("owners/link"), 2223, 3333, follow_symlinks=False),
    "symlink-target": lambda: keep_times("links/rel", retarget),
    "missing": lambda: keep_times(b"names/new\nline", os.unlink),
    "extra": lambda: open(p("files/zzz-extra"), "wb").close(),
    "sparse": lambda: keep_times("sparse/holes-64m", fill_holes, False),
    "rdev": lambda: keep_times("special/chr", new_rdev),
    "type": lambda: keep_times("special/fifo", fifo_to_file),
    "odd-name": lambda: keep_times(b"names/\xff\xfe not utf-8 \xe9", rename_odd),
    "size": lambda: keep_times("files/empty", lambda q: os.truncate(q, 1), False),
    "deep-content": lambda: flip_deep_leaf(),
}
ops[what]()
EOF

# name : text the report must contain
mutations=(
        "content:files/random-5m: content differs"
        "mtime:files/small-3k: mtime_ns"
        "atime:files/one: atime_ns"
        "symlink-mtime:links/rel: mtime_ns"
        "dir-mtime:hardlinks/b: mtime_ns"
        "dir-atime:hardlinks/b: atime_ns"
        "xattr-value:xattr/file: xattr user.comment differs"
        "xattr-removed:xattr/dir: xattr user.dirattr missing in B"
        "xattr-added:files/one: xattr user.new only in B"
        "acl:xattr/acl-file: xattr system.posix_acl_access differs"
        "hardlink:hardlink group in A not in B"
        "mode:modes/m0644: mode 100644 != 100645"
        "setuid-bit:modes/m4755: mode 104755 != 100755"
        "symlink-target:links/rel: symlink target"
        "missing:names/new\\x0aline: missing in B"
        "extra:files/zzz-extra: only in B"
        "sparse:sparse/holes-64m: sparse file allocates"
        "type:special/fifo: type fifo != file"
        "odd-name:names/\\xff\\xfd not utf-8 \\xe9: only in B"
        "size:files/empty: size 0 != 1"
        "deep-content:...<"
)
if ((EUID == 0)); then
        mutations+=(
                "owner:owners/file: owner 1234:5678 != 1234:5679"
                "symlink-owner:owners/link: owner 2222:3333 != 2223:3333"
        )
        [[ -e $A/special/chr ]] && mutations+=("rdev:special/chr: rdev 1:3 != 1:5")
fi

for m in "${mutations[@]}"; do
        name=${m%%:*}
        want=${m#*:}
        kb_rmtree "$B"
        mktree "$B" --seed 7 --long-path --quiet
        python3 "$KB_TMP/mutate.py" "$B" "$name"
        rc=0
        python3 "$KB_TOOLS/treecmp.py" "$A" "$B" >"$KB_OUT" 2>"$KB_ERR" || rc=$?
        if ((rc != 1)); then
                cat "$KB_OUT" "$KB_ERR" >&2
                fail "mutation $name: treecmp exited $rc, want 1"
        fi
        grep -qF -- "$want" "$KB_OUT" || {
                cat "$KB_OUT" >&2
                fail "mutation $name: report lacks '$want'"
        }
        # The change must be reported alone (plus the parent's directory entry changes for
        # missing/extra/rename): a comparator that reports noise hides real differences.
        lines=$(wc -l <"$KB_OUT")
        ((lines <= 2)) || {
                cat "$KB_OUT" >&2
                fail "mutation $name: $lines lines of report, expected the one difference"
        }
done

# --ignore-atime-dirs ignores exactly directory atimes, not file atimes.
kb_rmtree "$B"
mktree "$B" --seed 7 --long-path --quiet
python3 "$KB_TMP/mutate.py" "$B" dir-atime
python3 "$KB_TOOLS/treecmp.py" "$A" "$B" --ignore-atime-dirs >/dev/null 2>&1 ||
        fail "--ignore-atime-dirs still reports a directory atime"
python3 "$KB_TMP/mutate.py" "$B" atime
if python3 "$KB_TOOLS/treecmp.py" "$A" "$B" --ignore-atime-dirs >/dev/null 2>&1; then
        fail "--ignore-atime-dirs hides a file atime"
fi

# An independent copier agrees: `cp -a` of a generated tree (no paths beyond PATH_MAX, which cp
# cannot copy) compares equal. cp reads the source without O_NOATIME, so atimes are left out.
C=$KB_TMP/c
mktree "$C" --seed 9 --quiet
cp -a --sparse=always "$C" "$KB_TMP/c-copy"
treecmp "$C" "$KB_TMP/c-copy" --ignore-atime

# A different seed gives different content: the comparator sees it.
kb_rmtree "$B"
mktree "$B" --seed 8 --quiet
if python3 "$KB_TOOLS/treecmp.py" "$A" "$B" >/dev/null 2>&1; then
        fail "trees from different seeds compare equal"
fi

# Missing operand or directory: exit 2, not 0 or 1.
rc=0
python3 "$KB_TOOLS/treecmp.py" "$A" "$KB_TMP/nonexistent" >/dev/null 2>&1 || rc=$?
((rc == 2)) || fail "treecmp on a missing directory exited $rc, want 2"

pass
