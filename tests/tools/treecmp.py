#!/usr/bin/env python3
"""treecmp.py - compare two directory trees in bytes and metadata; the judge of every round-trip test.

Usage: treecmp.py A B [--ignore-atime-dirs | --ignore-atime] [--no-root-meta] [--exclude REL]...
                      [--max-report N]

Exit 0 when equal, 1 with one line per difference on stdout when not, 2 on a usage or I/O error.

Compared for every entry (lstat, never following symlinks): the set of names, type, mode (incl.
setuid/setgid/sticky), uid/gid, size (files, symlinks), content hash (files), mtime_ns (everything;
the roots' own metadata is skipped with --no-root-meta), atime_ns (files and directories;
--ignore-atime-dirs leaves out directories, --ignore-atime all), symlink targets, rdev (devices),
every xattr including system.posix_acl_*, which paths share an inode (hardlink groups, within each
tree), and sparseness: a file sparse in A (st_blocks*512 < size) must not take more than A's
allocation + 64 KiB in B. Sockets are skipped on both sides (backups skip them). --exclude REL
(relative to the roots, repeatable) leaves an entry and everything below it out on both sides.

Names are handled as bytes, and the walk uses directory descriptors, so odd names and paths longer
than PATH_MAX work. Files and directories are opened with O_NOATIME where allowed, so comparing
does not change the atimes it compares.
"""

import argparse
import hashlib
import os
import stat
import sys

SPARSE_SLACK = 64 * 1024
NOATIME = getattr(os, "O_NOATIME", 0)


def show(rel):
    """A path for a human: printable ASCII as is, anything else escaped, very long ones shortened."""
    if not rel:
        return "<root>"
    out = []
    for b in rel:
        if 0x20 <= b < 0x7F and b != 0x5C:
            out.append(chr(b))
        else:
            out.append("\\x%02x" % b)
    s = "".join(out)
    if len(s) > 200:
        s = "%s...<%d bytes>...%s" % (s[:60], len(rel), s[-100:])
    return s


def open_noatime(name, flags, dir_fd):
    try:
        return os.open(name, flags | NOATIME, dir_fd=dir_fd)
    except PermissionError:
        # O_NOATIME needs ownership or CAP_FOWNER; fall back to a plain open.
        return os.open(name, flags, dir_fd=dir_fd)


def file_hash(name, dir_fd):
    try:
        fd = open_noatime(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd)
    except PermissionError:
        # Not root and the file is mode 0000 or similar: if it is ours, lend ourselves read
        # permission for the moment of reading (this only changes its ctime).
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if st.st_uid != os.geteuid():
            raise
        os.chmod(name, stat.S_IMODE(st.st_mode) | 0o400, dir_fd=dir_fd)
        try:
            fd = open_noatime(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd)
        finally:
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dir_fd)
    h = hashlib.sha256()
    try:
        while True:
            b = os.read(fd, 1 << 20)
            if not b:
                break
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def xattrs(where):
    """Every xattr of `where`: an open descriptor, or a /proc/self/fd/N/NAME path (not followed)."""
    kw = {} if isinstance(where, int) else {"follow_symlinks": False}
    out = {}
    try:
        names = os.listxattr(where, **kw)
    except OSError:
        return out
    for n in names:
        try:
            out[n] = os.getxattr(where, n, **kw)
        except OSError as e:
            out[n] = "<unreadable: %s>" % e.strerror
    return out


class Tree:
    def __init__(self, root, exclude=()):
        self.root = os.fsencode(root)
        self.exclude = set(exclude)
        self.entries = {}  # rel path (bytes) -> dict
        self.inodes = {}  # (dev, ino) -> [rel paths], non-directories only

    def load(self):
        st = os.lstat(self.root)
        if not stat.S_ISDIR(st.st_mode):
            raise NotADirectoryError(self.root)
        fd = open_noatime(self.root, os.O_RDONLY | os.O_DIRECTORY, None)
        try:
            self.entries[b""] = self.record(b"", st, None, None, fd)
            self.walk(fd, b"")
        finally:
            os.close(fd)
        return self

    def record(self, rel, st, name, dir_fd, own_fd=None):
        r = {"type": stat.S_IFMT(st.st_mode), "mode": st.st_mode, "uid": st.st_uid,
             "gid": st.st_gid, "mtime": st.st_mtime_ns, "atime": st.st_atime_ns}
        if own_fd is not None:
            r["xattrs"] = xattrs(own_fd)
        else:
            # Through the directory's descriptor: short, and never follows a symlink entry.
            r["xattrs"] = xattrs(b"/proc/self/fd/%d/%s" % (dir_fd, name))
        if stat.S_ISREG(st.st_mode):
            r["size"] = st.st_size
            r["blocks"] = st.st_blocks
            r["hash"] = file_hash(name, dir_fd)
        elif stat.S_ISLNK(st.st_mode):
            r["size"] = st.st_size
            r["target"] = os.readlink(name, dir_fd=dir_fd)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            r["rdev"] = st.st_rdev
        if not stat.S_ISDIR(st.st_mode):
            self.inodes.setdefault((st.st_dev, st.st_ino), []).append(rel)
        return r

    def walk(self, dir_fd, rel):
        names = sorted(os.fsencode(n) for n in os.listdir(dir_fd))
        for name in names:
            crel = rel + b"/" + name if rel else name
            if crel in self.exclude:
                continue
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISSOCK(st.st_mode):
                continue
            if stat.S_ISDIR(st.st_mode):
                cfd = open_noatime(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd)
                try:
                    self.entries[crel] = self.record(crel, st, name, dir_fd, cfd)
                    self.walk(cfd, crel)
                finally:
                    os.close(cfd)
            else:
                self.entries[crel] = self.record(crel, st, name, dir_fd)

    def link_groups(self):
        return {frozenset(paths) for paths in self.inodes.values() if len(paths) > 1}


TYPE_NAMES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
              stat.S_IFIFO: "fifo", stat.S_IFCHR: "chr", stat.S_IFBLK: "blk"}


def compare(a, b, args):
    diffs = []

    def d(rel, what):
        diffs.append("%s: %s" % (show(rel), what))

    for rel in sorted(a.entries.keys() - b.entries.keys()):
        d(rel, "missing in B")
    for rel in sorted(b.entries.keys() - a.entries.keys()):
        d(rel, "only in B")

    for rel in sorted(a.entries.keys() & b.entries.keys()):
        ea, eb = a.entries[rel], b.entries[rel]
        if ea["type"] != eb["type"]:
            d(rel, "type %s != %s" % (TYPE_NAMES.get(ea["type"], ea["type"]),
                                     TYPE_NAMES.get(eb["type"], eb["type"])))
            continue
        is_root = rel == b""
        if is_root and args.no_root_meta:
            continue
        t = ea["type"]
        if ea["mode"] != eb["mode"]:
            d(rel, "mode %o != %o" % (ea["mode"], eb["mode"]))
        if (ea["uid"], ea["gid"]) != (eb["uid"], eb["gid"]):
            d(rel, "owner %d:%d != %d:%d" % (ea["uid"], ea["gid"], eb["uid"], eb["gid"]))
        if ea["mtime"] != eb["mtime"]:
            d(rel, "mtime_ns %d != %d" % (ea["mtime"], eb["mtime"]))
        if not args.ignore_atime and (t == stat.S_IFREG or
                                      (t == stat.S_IFDIR and not args.ignore_atime_dirs)):
            if ea["atime"] != eb["atime"]:
                d(rel, "atime_ns %d != %d" % (ea["atime"], eb["atime"]))
        if "size" in ea and ea["size"] != eb["size"]:
            d(rel, "size %d != %d" % (ea["size"], eb["size"]))
        if t == stat.S_IFREG:
            if ea["hash"] != eb["hash"]:
                d(rel, "content differs")
            if ea["blocks"] * 512 < ea["size"]:
                limit = ea["blocks"] * 512 + SPARSE_SLACK
                if eb["blocks"] * 512 > limit:
                    d(rel, "sparse file allocates %d bytes in B, %d in A (limit %d)"
                      % (eb["blocks"] * 512, ea["blocks"] * 512, limit))
        if t == stat.S_IFLNK and ea["target"] != eb["target"]:
            d(rel, "symlink target %r != %r" % (ea["target"], eb["target"]))
        if "rdev" in ea and ea["rdev"] != eb["rdev"]:
            d(rel, "rdev %d:%d != %d:%d" % (os.major(ea["rdev"]), os.minor(ea["rdev"]),
                                            os.major(eb["rdev"]), os.minor(eb["rdev"])))
        xa, xb = ea["xattrs"], eb["xattrs"]
        for n in sorted(xa.keys() - xb.keys()):
            d(rel, "xattr %s missing in B" % n)
        for n in sorted(xb.keys() - xa.keys()):
            d(rel, "xattr %s only in B" % n)
        for n in sorted(xa.keys() & xb.keys()):
            if xa[n] != xb[n]:
                d(rel, "xattr %s differs (%r != %r)" % (n, xa[n][:40], xb[n][:40]))

    # Hardlinks: the same paths must share an inode on both sides. Only paths present on both
    # sides take part, so a missing entry is reported once, above.
    common = a.entries.keys() & b.entries.keys()
    ga = {frozenset(p for p in g if p in common) for g in a.link_groups()}
    gb = {frozenset(p for p in g if p in common) for g in b.link_groups()}
    ga = {g for g in ga if len(g) > 1}
    gb = {g for g in gb if len(g) > 1}
    for g in sorted(ga - gb, key=sorted):
        diffs.append("hardlink group in A not in B: " + ", ".join(show(p) for p in sorted(g)))
    for g in sorted(gb - ga, key=sorted):
        diffs.append("hardlink group in B not in A: " + ", ".join(show(p) for p in sorted(g)))
    return diffs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--ignore-atime-dirs", action="store_true",
                    help="do not compare directory atimes")
    ap.add_argument("--ignore-atime", action="store_true",
                    help="do not compare atimes at all (for tests about something else)")
    ap.add_argument("--no-root-meta", action="store_true",
                    help="compare the roots' contents but not the roots' own metadata")
    ap.add_argument("--exclude", action="append", default=[], type=os.fsencode,
                    help="leave this relative path (and what is below it) out; repeatable")
    ap.add_argument("--max-report", type=int, default=100)
    args = ap.parse_args()
    try:
        exclude = [e.strip(b"/") for e in args.exclude]
        a = Tree(args.a, exclude).load()
        b = Tree(args.b, exclude).load()
    except OSError as e:
        print("treecmp: %s" % e, file=sys.stderr)
        return 2
    diffs = compare(a, b, args)
    if not diffs:
        return 0
    for line in diffs[:args.max_report]:
        print(line)
    if len(diffs) > args.max_report:
        print("... and %d more" % (len(diffs) - args.max_report))
    print("treecmp: %d difference(s) between %s and %s" % (len(diffs), args.a, args.b),
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
