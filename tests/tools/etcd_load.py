#!/usr/bin/env python3
"""etcd_load.py - fill a test etcd with Kubernetes-shaped keys, change or delete some of them, and
dump a digest of every key for comparing two clusters.

Usage:
  etcd_load.py [--ctl "ETCDCTL FLAGS"] load --count N [--seed S] [--min-size B] [--max-size B]
               [--namespaces K] [--jobs J]
  etcd_load.py [--ctl ...] modify --percent P [--seed S] [--prefix /registry/]
  etcd_load.py [--ctl ...] delete --percent P [--seed S] [--prefix /registry/]
  etcd_load.py [--ctl ...] dump FILE
  etcd_load.py compare FILE_A FILE_B

--ctl takes the etcdctl flags that reach the server (word-split; etcd_server.sh prints them as
ETCDCTL_FLAGS, which is also the default when --ctl is not given).

load writes N keys such as /registry/pods/NS/NAME, /registry/configmaps/NS/NAME,
/registry/deployments/NS/NAME... plus /registry/namespaces/NS, with JSON-ish values whose sizes
are log-uniform between --min-size and --max-size (100 B .. 20 KiB by default). Everything is
seeded, so the same arguments give the same keys and values. modify rewrites the values of P% of
the existing keys under --prefix (a new revision of each, as an update of a Kubernetes object
makes); delete removes P% of them.

Speed: keys go in through `etcdctl txn` (an empty compare section, then up to 1000 `put` lines,
then an empty failure section, at most ~1.9 MB: etcdctl's own send limit is 2 MiB), which needs
etcd started with --max-txn-ops 1024 and --max-request-bytes 4194304 (etcd_server.sh does). A txn
is one etcdctl process; --jobs of them run at once. ~20k small keys take ~6 s, 200 MB of 100 KiB
values ~20 s on 2 cores (etcdctl's line parsing is the limit).

Values are printable ASCII without newlines. etcdctl's txn parser splits a line into words (a bare
word, or a Go-quoted "..." string that it unquotes), then hands them to the `put` command's flag
parser (hence `put -- KEY VALUE`: a value may start with '-'); spaces are fine inside quotes.

dump writes one line per key, sorted: hex(key) size sha256(value) create_revision mod_revision
version, reading the whole key space in pages with `etcdctl get -w json` (base64, so values compare
exactly). compare prints the first differences of two dumps and exits 1 if they differ.
"""

import argparse
import base64
import concurrent.futures
import hashlib
import json
import math
import os
import random
import re
import shlex
import subprocess
import sys

ETCDCTL = os.environ.get("ETCDCTL_BIN", "/usr/bin/etcdctl")
MAX_OPS = 1000  # the server's --max-txn-ops must be >= this
# etcdctl refuses to send a request over 2 MiB (its client default), whatever the server allows.
MAX_TXN_BYTES = 1_900_000

# (resource key prefix, weight, kind). Weights roughly as in a busy cluster: many pods, events,
# replicasets and configmaps; fewer deployments and services.
RESOURCES = [
    ("pods", 30, "Pod"),
    ("events", 12, "Event"),
    ("replicasets", 10, "ReplicaSet"),
    ("configmaps", 12, "ConfigMap"),
    ("secrets", 10, "Secret"),
    ("deployments", 6, "Deployment"),
    ("services/specs", 5, "Service"),
    ("endpointslices", 5, "EndpointSlice"),
    ("serviceaccounts", 5, "ServiceAccount"),
    ("leases", 2, "Lease"),
    ("persistentvolumeclaims", 3, "PersistentVolumeClaim"),
]

# 64 printable characters without '"' and '\\' (so values are also valid JSON string contents);
# random bytes map onto them with bytes.translate at C speed.
ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
TABLE = bytes(ALPHABET[i % 64] for i in range(256))


def die(msg):
    print("etcd_load.py: " + msg, file=sys.stderr)
    sys.exit(1)


class Ctl:
    def __init__(self, flags):
        self.flags = shlex.split(flags)
        # etcdctl warns about any ETCDCTL_* variable it does not know.
        self.env = {k: v for k, v in os.environ.items() if k != "ETCDCTL_FLAGS"}
        self.env["ETCDCTL_API"] = "3"

    def run(self, args, stdin=None):
        p = subprocess.run([ETCDCTL] + self.flags + args, input=stdin, capture_output=True,
                           env=self.env)
        if p.returncode != 0:
            die("etcdctl %s failed (%d): %s" % (" ".join(args[:2]), p.returncode,
                                                p.stderr.decode(errors="replace").strip()[:500]))
        return p.stdout

    def txn(self, lines):
        """One txn whose success branch is `lines` (op lines, bytes, no newline); returns the op
        count. Runs in a worker thread, so etcdctl processes overlap."""
        body = b"\n" + b"\n".join(lines) + b"\n\n\n"
        p = subprocess.run([ETCDCTL] + self.flags + ["txn"], input=body, capture_output=True,
                           env=self.env)
        if p.returncode != 0 or not p.stdout.startswith(b"SUCCESS"):
            raise RuntimeError("etcdctl txn of %d ops failed (%d): %s %s" % (
                len(lines), p.returncode, p.stdout.decode(errors="replace")[:200],
                p.stderr.decode(errors="replace").strip()[:500]))
        return len(lines)


SPACE = re.compile(rb"\s")


def arg(b):
    """One argument for etcdctl's txn parser. A bare word is taken as is and parses ~1.7x faster;
    anything with whitespace or starting with a quote goes Go-quoted (printable ASCII in, so only
    \\ and " need escaping)."""
    if b and b[0] not in b"\"'" and not SPACE.search(b):
        return b
    return b'"' + b.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def put_line(key, value):
    # "--": the words go on to cobra, which would take a leading '-' for a flag.
    return b"put -- " + arg(key) + b" " + arg(value)


def del_line(key):
    return b"del -- " + arg(key)


class Batcher:
    """Groups op lines into txns (by count and bytes) and keeps up to `jobs` etcdctl running."""

    def __init__(self, ctl, jobs):
        self.ctl = ctl
        self.jobs = max(1, jobs)
        self.pool = concurrent.futures.ThreadPoolExecutor(self.jobs)
        self.lines = []
        self.size = 0
        self.running = []
        self.done_ops = 0

    def add(self, line):
        if self.lines and (len(self.lines) >= MAX_OPS or self.size + len(line) > MAX_TXN_BYTES):
            self.flush()
        self.lines.append(line)
        self.size += len(line) + 1

    def flush(self):
        if not self.lines:
            return
        # One batch queued beyond the running ones keeps the workers busy while we generate.
        while len(self.running) > self.jobs:
            self._reap_one()
        self.running.append(self.pool.submit(self.ctl.txn, self.lines))
        self.lines = []
        self.size = 0

    def _reap_one(self):
        try:
            self.done_ops += self.running.pop(0).result()
        except RuntimeError as e:
            for f in self.running:
                f.cancel()
            die(str(e))

    def close(self):
        self.flush()
        while self.running:
            self._reap_one()
        self.pool.shutdown()
        return self.done_ops


def value_size(rng, lo, hi):
    if lo >= hi:
        return lo
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def make_value(rng, kind, ns, name, size, generation):
    """A JSON-ish Kubernetes object of about `size` bytes: a compressible header and labels, then a
    random printable payload (real objects carry status, managed fields and data blobs)."""
    head = ('{"apiVersion":"v1","kind":"%s","metadata":{"name":"%s","namespace":"%s",'
            '"uid":"%08x-%04x-%04x-%04x-%012x","generation":%d,'
            '"labels":{"app":"%s","tier":"backend","release":"stable"},'
            '"annotations":{"kbtest/payload":"' % (
                kind, name, ns, rng.getrandbits(32), rng.getrandbits(16), rng.getrandbits(16),
                rng.getrandbits(16), rng.getrandbits(48), generation, name.rsplit("-", 2)[0]))
    tail = '"}},"spec":{},"status":{}}'
    head = head.encode()
    tail = tail.encode()
    fill = max(0, size - len(head) - len(tail))
    return head + rng.randbytes(fill).translate(TABLE) + tail


def pick_resource(rng, cum, total):
    x = rng.uniform(0, total)
    for (res, w, kind), c in zip(RESOURCES, cum):
        if x < c:
            return res, kind
    return RESOURCES[-1][0], RESOURCES[-1][2]


def kind_of(key):
    parts = key.decode(errors="replace").split("/")
    for res, _w, kind in RESOURCES:
        if "/".join(parts[2:2 + res.count("/") + 1]) == res:
            return kind
    return "Namespace" if len(parts) > 2 and parts[2] == "namespaces" else "Object"


def cmd_load(ctl, a):
    rng = random.Random(a.seed)
    cum, s = [], 0
    for _res, w, _k in RESOURCES:
        s += w
        cum.append(s)
    b = Batcher(ctl, a.jobs)
    total_bytes = 0
    nss = ["ns-%03d" % i for i in range(a.namespaces)]
    n = 0
    # Namespaces count towards N so that --count is exactly the number of keys written.
    for ns in nss[:a.count]:
        v = make_value(rng, "Namespace", ns, ns, value_size(rng, a.min_size, min(a.max_size, 1024)), 1)
        b.add(put_line(("%s/namespaces/%s" % (a.prefix, ns)).encode(), v))
        total_bytes += len(v)
        n += 1
    for i in range(a.count - n):
        res, kind = pick_resource(rng, cum, s)
        ns = nss[rng.randrange(len(nss))]
        name = "%s-%s-%06d-%s" % (res.split("/")[0].rstrip("s")[:12], format(a.seed, "x"), i,
                                  rng.randbytes(5).translate(TABLE).decode().lower())
        key = ("%s/%s/%s/%s" % (a.prefix, res, ns, name)).encode()
        v = make_value(rng, kind, ns, name, value_size(rng, a.min_size, a.max_size), 1)
        b.add(put_line(key, v))
        total_bytes += len(v)
    done = b.close()
    if not a.quiet:
        print("loaded %d keys, %d value bytes" % (done, total_bytes), file=sys.stderr)


def list_keys(ctl, prefix):
    keys = []
    start = prefix.encode()
    end = prefix_end(start)
    first = True
    while True:
        out = ctl.run(["get", start.decode(), end.decode(), "--keys-only", "--limit", "5000",
                       "-w", "json"])
        d = json.loads(out)
        kvs = d.get("kvs") or []
        got = [base64.b64decode(kv["key"]) for kv in kvs]
        if not first and got and got[0] == start:
            got = got[1:]
        keys.extend(got)
        if not d.get("more") or not kvs:
            break
        start = base64.b64decode(kvs[-1]["key"])
        first = False
    return keys


def prefix_end(p):
    b = bytearray(p)
    while b and b[-1] == 0xFF:
        b.pop()
    if not b:
        return b"\x00"
    b[-1] += 1
    return bytes(b)


def chosen(ctl, a):
    keys = list_keys(ctl, a.prefix)
    if not keys:
        die("no keys under %s" % a.prefix)
    k = max(1, round(len(keys) * a.percent / 100.0))
    rng = random.Random(a.seed)
    return rng, rng.sample(keys, min(k, len(keys))), len(keys)


def cmd_modify(ctl, a):
    rng, keys, total = chosen(ctl, a)
    b = Batcher(ctl, a.jobs)
    nbytes = 0
    for key in keys:
        parts = key.decode().split("/")
        v = make_value(rng, kind_of(key), parts[-2] if len(parts) > 4 else "", parts[-1],
                       value_size(rng, a.min_size, a.max_size), 2)
        b.add(put_line(key, v))
        nbytes += len(v)
    b.close()
    if not a.quiet:
        print("rewrote %d of %d keys (%d value bytes)" % (len(keys), total, nbytes), file=sys.stderr)


def cmd_delete(ctl, a):
    _rng, keys, total = chosen(ctl, a)
    b = Batcher(ctl, a.jobs)
    for key in keys:
        b.add(del_line(key))
    b.close()
    if not a.quiet:
        print("deleted %d of %d keys" % (len(keys), total), file=sys.stderr)


def cmd_dump(ctl, a):
    """Page through the whole key space ("" .. "\\0" from-key) by key order."""
    rows = []
    start = b"\x00"
    skip_first = False
    while True:
        # A key argument cannot hold a NUL; "" with --from-key means "every key".
        arg = "" if start == b"\x00" else start.decode()
        out = ctl.run(["get", arg, "--from-key", "--limit", str(a.page), "-w", "json"])
        d = json.loads(out)
        kvs = d.get("kvs") or []
        for j, kv in enumerate(kvs):
            key = base64.b64decode(kv["key"])
            if skip_first and j == 0 and key == start:
                continue
            val = base64.b64decode(kv.get("value", ""))
            rows.append("%s %d %s %d %d %d" % (
                key.hex(), len(val), hashlib.sha256(val).hexdigest(), int(kv.get("create_revision", 0)),
                int(kv.get("mod_revision", 0)), int(kv.get("version", 0))))
        if not d.get("more") or not kvs:
            break
        start = base64.b64decode(kvs[-1]["key"])
        skip_first = True
    rows.sort()
    with open(a.file, "w") as f:
        f.write("".join(r + "\n" for r in rows))
    if not a.quiet:
        print("dumped %d keys to %s" % (len(rows), a.file), file=sys.stderr)


def cmd_compare(a):
    la = open(a.a).read().splitlines()
    lb = open(a.b).read().splitlines()
    if la == lb:
        print("%d keys, identical" % len(la))
        return 0
    ka = {r.split(" ", 1)[0]: r for r in la}
    kb = {r.split(" ", 1)[0]: r for r in lb}
    shown = 0
    for k in sorted(set(ka) | set(kb)):
        if ka.get(k) != kb.get(k) and shown < 20:
            name = bytes.fromhex(k).decode(errors="replace")
            print("%s:\n  %s\n  %s" % (name, ka.get(k, "(missing)"), kb.get(k, "(missing)")))
            shown += 1
    print("dumps differ: %d vs %d keys" % (len(la), len(lb)))
    return 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ctl", default=os.environ.get("ETCDCTL_FLAGS", ""),
                    help="etcdctl flags (endpoints, certs, user), word-split")
    ap.add_argument("--quiet", action="store_true")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def sizes(p):
        p.add_argument("--min-size", type=int, default=100)
        p.add_argument("--max-size", type=int, default=20 * 1024)
        p.add_argument("--jobs", type=int, default=2, help="etcdctl txn processes at once")

    p = sub.add_parser("load")
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--namespaces", type=int, default=20)
    p.add_argument("--prefix", default="/registry")
    sizes(p)
    for c in ("modify", "delete"):
        p = sub.add_parser(c)
        p.add_argument("--percent", type=float, required=True)
        p.add_argument("--seed", type=int, default=2)
        p.add_argument("--prefix", default="/registry/")
        sizes(p)
    p = sub.add_parser("dump")
    p.add_argument("file")
    p.add_argument("--page", type=int, default=500)
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    a = ap.parse_args()

    if a.cmd == "compare":
        sys.exit(cmd_compare(a))
    if a.cmd in ("load", "modify", "delete"):
        if not 1 <= a.min_size <= a.max_size or a.max_size > MAX_TXN_BYTES - 4096:
            die("want 1 <= --min-size <= --max-size <= ~1.8 MB")
    if a.cmd == "load" and (a.count < 0 or a.namespaces < 1):
        die("--count must be >= 0 and --namespaces >= 1")
    if a.cmd in ("modify", "delete") and not 0 < a.percent <= 100:
        die("--percent must be in (0, 100]")
    ctl = Ctl(a.ctl)
    {"load": cmd_load, "modify": cmd_modify, "delete": cmd_delete, "dump": cmd_dump}[a.cmd](ctl, a)


if __name__ == "__main__":
    main()
