#!/usr/bin/env python3
"""bbolt_empty_bucket.py - empty one top-level bucket of an etcd snapshot file, in place.

Usage: bbolt_empty_bucket.py FILE BUCKET

For tests that need a snapshot no healthy etcd writes: e.g. keys attached to a lease that the
`lease` bucket no longer holds. Every leaf page of BUCKET gets an element count of 0 (an inline
bucket's page included), which bbolt and etcd read as an empty bucket; nothing else moves. When
the file carries etcd's sha256 trailer (`etcdctl snapshot save` output: size % 512 == 32), the
trailer is recomputed so `etcdctl snapshot restore` accepts the result.

Layout (go.etcd.io/bbolt): a page is a 16-byte header (id u64, flags u16, count u16, overflow
u32) and its elements; meta pages 0 and 1 hold the root bucket (root pgid u64, sequence u64) at
offset 16+16, the one with the higher txid (offset 16+48) wins. Branch elements are 16 bytes (pos
u32, ksize u32, pgid u64), leaf elements 16 bytes (flags u32, pos u32, ksize u32, vsize u32),
pos counted from the element itself; a bucket's value starts with its root pgid, 0 when the
bucket's page follows inline.
"""

import hashlib
import struct
import sys

BRANCH, LEAF, META = 0x01, 0x02, 0x04
BUCKET_FLAG = 0x01
PAGE_HDR = 16
ELEM = 16


def die(msg):
    print("bbolt_empty_bucket.py: " + msg, file=sys.stderr)
    sys.exit(1)


class DB:
    def __init__(self, data):
        self.d = data
        metas = []
        # Meta pages 0 and 1; the second sits one page size in (the size the first one gives).
        psize0 = struct.unpack_from("<I", self.d, PAGE_HDR + 8)[0]
        for off in (0, psize0):
            if off + PAGE_HDR + 64 > len(self.d):
                continue
            flags = struct.unpack_from("<H", self.d, off + 8)[0]
            if not flags & META:
                continue
            magic, _, psize, _, root, _, _, _, txid = struct.unpack_from(
                "<IIIIQQQQQ", self.d, off + PAGE_HDR)
            if magic == 0xED0CDAED:
                metas.append((txid, psize, root))
        if not metas:
            die("no valid meta page: not a bbolt file")
        _, self.psize, self.root = max(metas)

    def page(self, pgid):
        off = pgid * self.psize
        if off + PAGE_HDR > len(self.d):
            die("page %d is past the end of the file" % pgid)
        return off

    def leaf_items(self, off):
        """(key, flags, value offset, value size) of a leaf page at file offset off."""
        flags, count = struct.unpack_from("<HH", self.d, off + 8)
        if flags & LEAF == 0:
            return None
        out = []
        for i in range(count):
            e = off + PAGE_HDR + i * ELEM
            fl, pos, ks, vs = struct.unpack_from("<IIII", self.d, e)
            out.append((bytes(self.d[e + pos:e + pos + ks]), fl, e + pos + ks, vs))
        return out

    def leaves(self, pgid):
        """File offsets of the leaf pages under page pgid."""
        off = self.page(pgid)
        flags, count = struct.unpack_from("<HH", self.d, off + 8)
        if flags & LEAF:
            return [off]
        if not flags & BRANCH:
            die("page %d is neither branch nor leaf" % pgid)
        out = []
        for i in range(count):
            child = struct.unpack_from("<Q", self.d, off + PAGE_HDR + i * ELEM + 8)[0]
            out += self.leaves(child)
        return out


def main():
    if len(sys.argv) != 3:
        die("usage: bbolt_empty_bucket.py FILE BUCKET")
    path, name = sys.argv[1], sys.argv[2].encode()
    with open(path, "rb") as f:
        data = bytearray(f.read())
    trailer = len(data) % 512 == 32
    db = DB(data)
    found = 0
    for leaf in db.leaves(db.root):
        for key, fl, voff, _ in db.leaf_items(leaf):
            if key != name or not fl & BUCKET_FLAG:
                continue
            found += 1
            root = struct.unpack_from("<Q", data, voff)[0]
            # An inline bucket's page follows its 16-byte header inside the value.
            targets = [voff + 16] if root == 0 else db.leaves(root)
            for t in targets:
                struct.pack_into("<H", data, t + 10, 0)
    if found != 1:
        die("bucket %r found %d times at the top level" % (name.decode(), found))
    if trailer:
        data[-32:] = hashlib.sha256(bytes(data[:-32])).digest()
    with open(path, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    main()
