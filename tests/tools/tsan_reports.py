#!/usr/bin/env python3
"""tsan_reports.py DIR - sort ThreadSanitizer's reports (log_path files in DIR) into kbackup's own
and its libraries'; print kbackup's and exit 1 if there are any.

gRPC, abseil, OpenSSL and libcurl are not built with ThreadSanitizer: their atomics and fences are
invisible to it, so their own synchronisation shows up as races inside them (thousands in a run of
the suite, unless TSAN_OPTIONS has ignore_noninstrumented_modules=1, as scripts/test.sh sets, and
some even then). A report is kbackup's when a stack of it (each access, each mutex) has its first
frame past the sanitizer's interceptors in kbackup itself: our code touched the memory or took
the lock. Any report with no stack at all (a crash of the runtime) counts too.
"""
import os
import re
import sys

FRAME = re.compile(r"^\s+#\d+ ")
RUNTIME = ("libtsan.so", "/sanitizer_common/", "/tsan/")
OURS = ("(kbackup+", "/engine/", "/storage-backends/", "/cli/")


def reports(text):
    for block in text.split("==================\n"):
        if "ThreadSanitizer" in block and "SUMMARY" in block:
            yield block.strip()


# The headers of stacks that show what a thread did: an access, a lock taken, or (right under the
# WARNING line) the bad call itself. Not: where a heap block was allocated, a mutex created, or a
# thread started, unless the report is about that thread (a leak).
ACTION = re.compile(r"^\s*(WARNING:|(Previous )?(atomic )?(read|write) of size|Mutex M\d+ acquired)",
                    re.I)


def sections(block):
    """(header line, frame lines) for each stack of the report."""
    out, header, frames = [], "", []
    for line in block.splitlines():
        if FRAME.match(line):
            frames.append(line)
            continue
        if frames:
            out.append((header, frames))
            frames = []
        if line.strip():
            header = line
    if frames:
        out.append((header, frames))
    return out


def ours(block):
    secs = sections(block)
    if not secs:
        return True
    leak = "thread leak" in block.splitlines()[0]
    for header, frames in secs:
        if not (ACTION.match(header) or (leak and "created by" in header)):
            continue
        top = next((f for f in frames if not any(r in f for r in RUNTIME)), None)
        if top and any(o in top for o in OURS):
            return True
    return False


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[0])
    d = sys.argv[1]
    total = mine = 0
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        if not os.path.isfile(path):
            continue
        with open(path, errors="replace") as f:
            text = f.read()
        for block in reports(text):
            total += 1
            if ours(block):
                mine += 1
                print("---- %s\n%s\n" % (name, block))
    print("ThreadSanitizer: %d report(s), %d in kbackup's own code" % (total, mine))
    sys.exit(1 if mine else 0)


if __name__ == "__main__":
    main()
