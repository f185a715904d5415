#!/usr/bin/env python3
"""mktree.py - generate a test tree covering every file kind and piece of metadata a volume backup
must keep, so round-trip tests exercise the hard cases and not just plain files.

Usage: mktree.py DIR [--seed N] [--long-path] [--quiet]

DIR must not exist or be empty. The output is deterministic for a given seed (contents, names,
modes, owners, times), so two runs with the same seed produce trees that treecmp.py finds equal.

Covered: regular files (empty, 1 byte, a few KiB, several MiB of random and of compressible data),
deep directories with long names (path > 1024 bytes; > PATH_MAX with --long-path), symlinks
(relative, absolute, dangling, odd bytes in the target), hardlink groups across directories, a fifo,
char and block devices (root only), sparse files (data extents inside a hole, a trailing hole, all
hole), names with arbitrary bytes, user.* xattrs on files and directories, POSIX ACLs (access and
default, written as system.posix_acl_* xattrs), varied modes (setuid, setgid, sticky, 0000, a
read-only directory with content), owners 1234:5678 etc. (root only), nanosecond atimes/mtimes
including pre-1970 and post-2038, and a unix socket (which backups skip; treecmp ignores sockets).
"""

import argparse
import os
import random
import socket
import stat
import struct
import sys

KiB = 1024
MiB = 1024 * KiB

IS_ROOT = os.geteuid() == 0
notes = []


def note(msg):
    notes.append(msg)


class Gen:
    def __init__(self, root, seed):
        self.root = os.fsencode(root)
        self.rng = random.Random(seed)
        self.times = []  # (path, atime_ns, mtime_ns), applied last, deepest first
        self.late_modes = []  # (path, mode) for directories that must stay writable until the end
        self.tick = 0

    def p(self, rel):
        rel = os.fsencode(rel)
        return self.root + b"/" + rel if rel else self.root

    def mkdir(self, rel, mode=0o755):
        path = self.p(rel)
        os.mkdir(path)
        os.chmod(path, mode)
        return path

    def write(self, rel, data, mode=0o644):
        path = self.p(rel)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        finally:
            os.close(fd)
        os.chmod(path, mode)
        return path

    def stamp(self, rel, atime_ns=None, mtime_ns=None):
        """Queue a deterministic nanosecond atime/mtime for rel (set after everything exists)."""
        self.tick += 1
        base = 1_600_000_000 * 10**9
        if mtime_ns is None:
            mtime_ns = base + self.tick * 7_777_777_777 + (self.tick * 123_456_789) % 10**9
        if atime_ns is None:
            atime_ns = mtime_ns + 86_400 * 10**9 + 1 + self.tick * 3
        self.times.append((self.p(rel), atime_ns, mtime_ns))

    def random_bytes(self, n):
        return self.rng.randbytes(n)

    def compressible_bytes(self, n):
        out = bytearray()
        i = 0
        while len(out) < n:
            out += b"line %08d: the quick brown fox jumps over the lazy dog %d\n" % (i, i % 97)
            i += 1
        return bytes(out[:n])


def make_files(g):
    g.mkdir("files")
    g.write("files/empty", b"")
    g.write("files/one", b"x")
    g.write("files/small-3k", g.random_bytes(3 * KiB + 17))
    g.write("files/page-4096", g.random_bytes(4096))
    g.write("files/exact-1m", g.random_bytes(MiB))
    g.write("files/random-5m", g.random_bytes(5 * MiB + 123))
    g.write("files/text-6m", g.compressible_bytes(6 * MiB + 5))
    # Alternating random and zero-filled (but allocated, not holes) regions.
    mixed = bytearray()
    for i in range(48):
        mixed += g.random_bytes(64 * KiB) if i % 2 else bytes(64 * KiB)
    g.write("files/mixed-3m", bytes(mixed))
    g.write("files/.hidden", b"hidden\n")
    for name in ["empty", "one", "small-3k", "page-4096", "exact-1m", "random-5m", "text-6m",
                 "mixed-3m", ".hidden"]:
        g.stamp("files/" + name)
    # Before the epoch and after 2038.
    g.write("files/old", b"old\n")
    g.stamp("files/old", atime_ns=-86_400 * 10**9 + 5, mtime_ns=-1_234_567_890 * 10**9 + 987_654_321)
    g.write("files/future", b"future\n")
    g.stamp("files/future", atime_ns=4_102_444_800 * 10**9 + 1, mtime_ns=4_102_444_800 * 10**9 + 999_999_999)
    g.stamp("files")


def make_deep(g, top, depth, name_len):
    g.mkdir(top)
    rel = top
    for i in range(depth):
        name = ("d%02d-" % i) + "long-directory-name-" * 20
        rel += "/" + name[:name_len]
        g.mkdir(rel)
    g.write(rel + "/leaf.txt", b"at the bottom\n")
    g.stamp(rel + "/leaf.txt")
    os.symlink(b"leaf.txt", g.p(rel + "/leaf-link"))
    g.stamp(rel + "/leaf-link")
    while rel:
        g.stamp(rel)
        rel = rel.rpartition("/")[0]
    return


def make_deep_beyond_path_max(g, top):
    """A branch whose full path exceeds PATH_MAX (4096): only reachable through *at() calls."""
    g.mkdir(top)
    fd = os.open(g.p(top), os.O_RDONLY | os.O_DIRECTORY)
    rels = [top]
    try:
        for i in range(24):
            name = (("L%02d-" % i) + "x" * 250).encode()[:250]
            os.mkdir(name, 0o755, dir_fd=fd)
            nfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
            rels.append(rels[-1] + "/" + name.decode())
        wfd = os.open(b"leaf", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640, dir_fd=fd)
        os.write(wfd, b"beyond PATH_MAX\n")
        os.close(wfd)
        os.utime(b"leaf", ns=(1_700_000_000_000_000_001, 1_700_000_000_111_111_111), dir_fd=fd)
        # Directory times are set bottom-up through descriptors; paths are too long for utime().
        for depth in range(len(rels) - 1, 0, -1):
            os.utime(fd, ns=(1_700_000_100_000_000_000 + depth, 1_700_000_000_000_000_000 + depth))
            pfd = os.open(b"..", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = pfd
    finally:
        os.close(fd)
    g.stamp(top)


def make_links(g):
    g.mkdir("links")
    targets = {
        "rel": b"../files/small-3k",
        "abs": b"/etc/hostname",
        "dangling": b"does/not/exist",
        "dirlink": b"../files",
        "odd-target": b"tar\nget \xff\xfe",
        "self-loop": b"self-loop",
        "long-target": b"t/" * 1000,
    }
    for name, target in targets.items():
        os.symlink(target, g.p("links/" + name))
        g.stamp("links/" + name)
    g.stamp("links")


def make_hardlinks(g):
    g.mkdir("hardlinks")
    g.mkdir("hardlinks/a")
    g.mkdir("hardlinks/b")
    g.mkdir("hardlinks/b/c")
    g.write("hardlinks/a/h1", g.random_bytes(10 * KiB + 3), mode=0o640)
    os.link(g.p("hardlinks/a/h1"), g.p("hardlinks/b/c/h2"))
    os.link(g.p("hardlinks/a/h1"), g.p("hardlinks/h3"))
    g.write("hardlinks/a/empty1", b"")
    os.link(g.p("hardlinks/a/empty1"), g.p("hardlinks/b/empty2"))
    # One time for the group: the inode is shared.
    g.stamp("hardlinks/a/h1")
    g.stamp("hardlinks/a/empty1")
    for d in ["hardlinks/b/c", "hardlinks/b", "hardlinks/a", "hardlinks"]:
        g.stamp(d)


def make_special(g):
    g.mkdir("special")
    os.mkfifo(g.p("special/fifo"), 0o640)
    os.chmod(g.p("special/fifo"), 0o640)
    g.stamp("special/fifo")
    if IS_ROOT:
        try:
            os.mknod(g.p("special/chr"), 0o620 | stat.S_IFCHR, os.makedev(1, 3))
            os.mknod(g.p("special/blk"), 0o660 | stat.S_IFBLK, os.makedev(7, 200))
            g.stamp("special/chr")
            g.stamp("special/blk")
        except PermissionError:
            note("device nodes skipped: mknod not permitted")
    else:
        note("device nodes skipped: not root")
    # A unix socket: the file stays after the socket is closed. Backups skip it with a warning.
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.bind(g.p("special/socket"))
    finally:
        s.close()
    g.stamp("special")


def make_sparse(g):
    g.mkdir("sparse")

    def sparse(rel, size, extents, mode=0o644):
        path = g.p(rel)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            for off, length in extents:
                os.lseek(fd, off, os.SEEK_SET)
                os.write(fd, g.random_bytes(length))
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
        os.chmod(path, mode)
        g.stamp(rel)

    # 64 MiB apparent, four 4 KiB data extents, ends in data.
    sparse("sparse/holes-64m", 64 * MiB,
           [(0, 4 * KiB), (5 * MiB, 4 * KiB), (33 * MiB + 3 * 4 * KiB, 4 * KiB),
            (64 * MiB - 4 * KiB, 4 * KiB)])
    # Starts with a hole, ends in a hole (truncate past the data).
    sparse("sparse/tail-hole", 32 * MiB, [(MiB, 4 * KiB), (2 * MiB, 12 * KiB)])
    # Nothing but a hole.
    sparse("sparse/all-hole", 16 * MiB, [])
    # A hole of a size that is not block aligned at the end.
    sparse("sparse/odd-end", 8 * MiB + 1234, [(4 * MiB, 4 * KiB)])
    g.stamp("sparse")


def make_names(g):
    g.mkdir("names")
    names = [
        b"new\nline",
        b"\xff\xfe not utf-8 \xe9",
        b"  spaces  around  ",
        "h\u00e9llo w\u00f6rld \u2603 \u65e5\u672c\u8a9e".encode(),
        b"-leading-dash",
        b"...",
        b"back\\slash",
        b"tab\there",
        b"\x01\x1b[31mctrl",
        b"quote'\"`$(x)",
        b"n" * 255,
    ]
    for i, name in enumerate(names):
        rel = b"names/" + name
        g.write(rel, b"name %d\n" % i)
        g.stamp(rel)
    g.mkdir(b"names/dir \xff\n")
    g.write(b"names/dir \xff\n/inner\xff", b"inner\n")
    g.stamp(b"names/dir \xff\n/inner\xff")
    g.stamp(b"names/dir \xff\n")
    g.stamp("names")


def acl_xattr(entries):
    """Encode a POSIX ACL as the kernel's system.posix_acl_* xattr value (version 2)."""
    tag_order = {"u": 0x01, "U": 0x02, "g": 0x04, "G": 0x08, "m": 0x10, "o": 0x20}
    out = struct.pack("<I", 2)
    for tag, qual, perm in sorted(entries, key=lambda e: (tag_order[e[0]], e[1])):
        out += struct.pack("<HHI", tag_order[tag], perm, qual)
    return out


NOID = 0xFFFFFFFF


def make_xattrs(g):
    g.mkdir("xattr")
    g.write("xattr/file", b"has xattrs\n")
    try:
        os.setxattr(g.p("xattr/file"), b"user.comment", b"hello")
        os.setxattr(g.p("xattr/file"), b"user.binary", b"\x00\x01\xff\xfe\x00end")
        os.setxattr(g.p("xattr/file"), b"user.empty", b"")
        os.setxattr(g.p("xattr/file"), b"user.big", g.random_bytes(3000))
        g.mkdir("xattr/dir", 0o750)
        os.setxattr(g.p("xattr/dir"), b"user.dirattr", b"on a directory")
        g.write("xattr/dir/inner", b"inner\n")
        os.setxattr(g.p("xattr/dir/inner"), b"user.inner", b"x" * 100)
        g.stamp("xattr/dir/inner")
        g.stamp("xattr/dir")
    except OSError as e:
        note("user xattrs skipped: %s" % e)
    g.stamp("xattr/file")

    # POSIX ACLs: an access ACL on a file, access + default ACL on a directory.
    g.write("xattr/acl-file", b"acl\n", mode=0o640)
    g.mkdir("xattr/acl-dir", 0o750)
    try:
        os.setxattr(g.p("xattr/acl-file"), b"system.posix_acl_access",
                    acl_xattr([("u", NOID, 6), ("U", 1234, 6), ("g", NOID, 4), ("G", 5678, 4),
                               ("m", NOID, 6), ("o", NOID, 0)]))
        os.setxattr(g.p("xattr/acl-dir"), b"system.posix_acl_access",
                    acl_xattr([("u", NOID, 7), ("U", 1234, 7), ("g", NOID, 5), ("m", NOID, 7),
                               ("o", NOID, 0)]))
        os.setxattr(g.p("xattr/acl-dir"), b"system.posix_acl_default",
                    acl_xattr([("u", NOID, 7), ("U", 4321, 5), ("g", NOID, 5), ("m", NOID, 5),
                               ("o", NOID, 0)]))
    except OSError as e:
        note("POSIX ACLs skipped: %s" % e)
    g.stamp("xattr/acl-file")
    g.stamp("xattr/acl-dir")
    g.stamp("xattr")


def make_modes(g):
    g.mkdir("modes")
    for mode in [0o600, 0o644, 0o755, 0o444, 0o000, 0o4755, 0o2755, 0o6711, 0o1644]:
        rel = "modes/m%04o" % mode
        g.write(rel, b"mode %o\n" % mode, mode=mode)
        g.stamp(rel)
    g.mkdir("modes/sticky", 0o1777)
    g.write("modes/sticky/in", b"in sticky\n")
    g.stamp("modes/sticky/in")
    g.stamp("modes/sticky")
    g.mkdir("modes/setgid-dir", 0o2775)
    g.stamp("modes/setgid-dir")
    g.mkdir("modes/private", 0o700)
    g.stamp("modes/private")
    # A read-only directory with content: a restore must fill it before setting its mode.
    g.mkdir("modes/readonly")
    g.write("modes/readonly/inside", b"inside a 0555 dir\n", mode=0o444)
    g.mkdir("modes/readonly/sub", 0o500)
    g.stamp("modes/readonly/inside")
    g.stamp("modes/readonly/sub")
    g.stamp("modes/readonly")
    g.late_modes.append((g.p("modes/readonly"), 0o555))
    g.stamp("modes")


def make_owners(g):
    if not IS_ROOT:
        note("ownership variations skipped: not root")
        return
    g.mkdir("owners")
    g.write("owners/file", b"owned\n")
    os.chown(g.p("owners/file"), 1234, 5678)
    g.mkdir("owners/dir")
    os.chown(g.p("owners/dir"), 4321, 8765)
    g.write("owners/dir/inner", b"inner\n")
    os.chown(g.p("owners/dir/inner"), 4321, 0)
    os.symlink(b"file", g.p("owners/link"))
    os.chown(g.p("owners/link"), 2222, 3333, follow_symlinks=False)
    os.mkfifo(g.p("owners/fifo"), 0o600)
    os.chown(g.p("owners/fifo"), 1234, 5678)
    # chown clears setuid, so the mode comes after the owner (a restore must do the same).
    g.write("owners/setuid", b"setuid\n")
    os.chown(g.p("owners/setuid"), 1234, 5678)
    os.chmod(g.p("owners/setuid"), 0o4750)
    g.write("owners/big-ids", b"big ids\n")
    os.chown(g.p("owners/big-ids"), 2_000_000_000, 3_000_000_000)
    for rel in ["owners/file", "owners/dir/inner", "owners/dir", "owners/link", "owners/fifo",
                "owners/setuid", "owners/big-ids", "owners"]:
        g.stamp(rel)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--long-path", action="store_true",
                    help="add a branch whose paths exceed PATH_MAX")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    root = args.dir
    if os.path.exists(root):
        if os.listdir(root):
            sys.exit("mktree: %s is not empty" % root)
    else:
        os.makedirs(root)
    os.umask(0)
    g = Gen(root, args.seed)
    make_files(g)
    make_deep(g, "deep", 30, 50)
    if args.long_path:
        make_deep_beyond_path_max(g, "verydeep")
    make_links(g)
    make_hardlinks(g)
    make_special(g)
    make_sparse(g)
    make_names(g)
    make_xattrs(g)
    make_modes(g)
    make_owners(g)
    os.chmod(g.root, 0o755)
    g.stamp("")

    for path, mode in g.late_modes:
        os.chmod(path, mode)
    # Deepest first so setting a child's time does not disturb its parent's mtime (utime does
    # not change the parent anyway, but creating entries did; all creation is done by now).
    for path, atime_ns, mtime_ns in sorted(g.times, key=lambda t: -t[0].count(b"/")):
        os.utime(path, ns=(atime_ns, mtime_ns), follow_symlinks=False)

    if not args.quiet:
        for n in notes:
            print("mktree: " + n, file=sys.stderr)


if __name__ == "__main__":
    main()
