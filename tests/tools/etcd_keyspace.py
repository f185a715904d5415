#!/usr/bin/env python3
"""etcd_keyspace.py - canonical dumps of an etcd key space, to compare what etcdctl returns with
what `kbackup etcd ls --json --values` reads from a stored snapshot.

Usage:
  etcd_keyspace.py etcdctl [--ctl "ETCDCTL FLAGS"] [--rev R] [--prefix P] OUT
  etcd_keyspace.py kbackup JSONL OUT
  etcd_keyspace.py compare A B

One line per key, sorted: hex(key) size sha256(value) create_revision mod_revision version lease
(lease in decimal, 0 for none). `etcdctl` pages through `etcdctl get --from-key --rev R -w json`
(keys and values come base64-encoded, so the comparison is exact); `kbackup` reads the JSON Lines
of `kbackup etcd ls --json --values`. compare prints the first differences and exits 1 if the
dumps differ.
"""

import argparse
import base64
import hashlib
import json
import os
import shlex
import subprocess
import sys

ETCDCTL = os.environ.get("ETCDCTL_BIN", "/usr/bin/etcdctl")


def die(msg):
    print("etcd_keyspace.py: " + msg, file=sys.stderr)
    sys.exit(1)


def line(key, val, create, mod, version, lease):
    return "%s %d %s %d %d %d %d" % (key.hex(), len(val), hashlib.sha256(val).hexdigest(),
                                     create, mod, version, lease)


def from_etcdctl(a):
    flags = shlex.split(a.ctl if a.ctl is not None else os.environ.get("ETCDCTL_FLAGS", ""))
    env = {k: v for k, v in os.environ.items() if k != "ETCDCTL_FLAGS"}
    env["ETCDCTL_API"] = "3"
    prefix = a.prefix.encode()
    rows = []
    start = prefix
    skip_first = False
    while True:
        # A key argument cannot hold a NUL: "" with --from-key means "every key".
        cmd = [ETCDCTL] + flags + ["get", start.decode(), "--from-key", "--limit", "2000",
                                   "-w", "json"]
        if a.rev:
            cmd += ["--rev", str(a.rev)]
        p = subprocess.run(cmd, capture_output=True, env=env)
        if p.returncode != 0:
            die("etcdctl get failed: " + p.stderr.decode(errors="replace")[:500])
        d = json.loads(p.stdout)
        kvs = d.get("kvs") or []
        done = False
        for j, kv in enumerate(kvs):
            key = base64.b64decode(kv["key"])
            if skip_first and j == 0 and key == start:
                continue
            if not key.startswith(prefix):
                done = True
                break
            rows.append(line(key, base64.b64decode(kv.get("value", "")),
                             int(kv.get("create_revision", 0)), int(kv.get("mod_revision", 0)),
                             int(kv.get("version", 0)), int(kv.get("lease", 0))))
        if done or not d.get("more") or not kvs:
            break
        start = base64.b64decode(kvs[-1]["key"])
        skip_first = True
    return rows


def from_kbackup(a):
    rows = []
    with open(a.jsonl) as f:
        for n, text in enumerate(f, 1):
            if not text.strip():
                continue
            try:
                o = json.loads(text)
                rows.append(line(base64.b64decode(o["key_base64"]),
                                 base64.b64decode(o["value_base64"]), o["create_revision"],
                                 o["mod_revision"], o["version"], o["lease"]))
            except (ValueError, KeyError) as e:
                die("%s line %d: %s" % (a.jsonl, n, e))
    return rows


def write(rows, out):
    rows.sort()
    with open(out, "w") as f:
        f.write("".join(r + "\n" for r in rows))


def compare(a):
    la = open(a.a).read().splitlines()
    lb = open(a.b).read().splitlines()
    if la == lb:
        return 0
    sa, sb = set(la), set(lb)
    only_a = sorted(sa - sb)[:10]
    only_b = sorted(sb - sa)[:10]
    print("dumps differ: %d vs %d keys" % (len(la), len(lb)))
    for r in only_a:
        print("only in %s: %s" % (a.a, r))
    for r in only_b:
        print("only in %s: %s" % (a.b, r))
    return 1


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("etcdctl")
    p.add_argument("--ctl")
    p.add_argument("--rev", type=int, default=0)
    p.add_argument("--prefix", default="")
    p.add_argument("out")
    p = sub.add_parser("kbackup")
    p.add_argument("jsonl")
    p.add_argument("out")
    p = sub.add_parser("compare")
    p.add_argument("a")
    p.add_argument("b")
    a = ap.parse_args()
    if a.cmd == "etcdctl":
        write(from_etcdctl(a), a.out)
    elif a.cmd == "kbackup":
        write(from_kbackup(a), a.out)
    else:
        sys.exit(compare(a))


if __name__ == "__main__":
    main()
