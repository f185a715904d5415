#!/usr/bin/python3
"""image_libs.py - check that the Dockerfile's runtime stage installs every shared library the
kbackup binary needs, without a Docker engine: ldd lists the libraries, dpkg -S names the
Debian package of each, and each package must be one the image gets.

What the image gets, precisely:
  * base: debian:bookworm-slim is debootstrap's minbase variant (debuerreotype builds it that
    way): every package of Priority "required", plus apt, plus everything those depend on
    (Depends and Pre-Depends, recursively; for "a | b" the first alternative that is
    installed; a virtual package through the installed package that provides it). Recommends
    are not installed by debootstrap. "slim" removes documentation and locales, no packages.
  * listed: the packages named after "apt-get install" in the runtime stage's RUN lines, and
    (apt-get install --no-install-recommends) their Depends/Pre-Depends, recursively.
The rules:
  1. a library the binary links directly (ELF NEEDED) must come from a listed or base package:
     relying on another package's dependency for it would break when that package changes;
  2. every other library ldd resolves must come from a base package, a listed one, or one of
     their dependencies.
Package metadata is taken from this machine's dpkg database, so it must be Debian bookworm,
the release the Dockerfile builds on; every listed package must be installed here (which also
catches a misspelt name).

Also checks the stage layout the manifests rely on: the runtime stage is FROM
debian:bookworm-slim, runs as the numeric user 65532 and has ENTRYPOINT ["kbackup"].

Usage: image_libs.py [--any-link] DOCKERFILE BINARY     (exit 0: fine; 1: problems, one per line)
--any-link: judge every library by rule 2 (for sanitizer or debug builds, which link more
libraries directly than the image's RelWithDebInfo build does).
"""
import os
import re
import shlex
import subprocess
import sys

SANITIZER_LIBS = re.compile(r"^lib(asan|ubsan|lsan|tsan)\.so")  # debug builds only, never in the image


def dockerfile_stages(path):
    """[(from_image, name, [(instruction, args)])] with continuation lines joined, ARG defaults applied."""
    text = open(path).read()
    lines, cur = [], ""
    for raw in text.splitlines():
        s = raw.rstrip()
        if not cur and (not s.strip() or s.lstrip().startswith("#")):
            continue
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        lines.append(cur + s)
        cur = ""
    args, stages = {}, []
    for line in lines:
        instr, _, rest = line.strip().partition(" ")
        instr = instr.upper()
        rest = rest.strip()
        if instr == "ARG" and not stages:
            k, _, v = rest.partition("=")
            args[k] = v
            continue
        if instr == "FROM":
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), rest.split()[0])
            m = re.search(r"\s+AS\s+(\S+)", rest, re.I)
            stages.append((image, m.group(1) if m else "", []))
            continue
        if stages:
            stages[-1][2].append((instr, rest))
    return stages


def apt_packages(run_args):
    """Packages named by 'apt-get install' commands in one RUN line."""
    pkgs = []
    for cmd in re.split(r"&&|;|\|\|?", run_args):
        words = shlex.split(cmd)
        words = [w for w in words if "=" not in w or w.startswith("-")]  # drop VAR=value prefixes
        if len(words) >= 2 and words[0] == "apt-get" and "install" in words:
            after = words[words.index("install") + 1:]
            pkgs += [w for w in after if not w.startswith("-")]
    return pkgs


def dpkg_db():
    """{package: (priority, [dependency alternatives lists])}, {virtual: [providers]}"""
    out = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Priority}\t${Pre-Depends}\t${Depends}\t${Provides}\n"],
        check=True, capture_output=True, text=True).stdout
    db, provides = {}, {}
    for line in out.splitlines():
        name, status, prio, pre, dep, prov = (line.split("\t") + [""] * 6)[:6]
        if not status.startswith("ii"):
            continue
        deps = []
        for group in filter(None, (g.strip() for g in (pre + "," + dep).split(","))):
            deps.append([re.sub(r"[\s(:].*", "", alt.strip()) for alt in group.split("|")])
        db[name] = (prio, deps)
        for p in filter(None, (p.strip() for p in prov.split(","))):
            provides.setdefault(re.sub(r"[\s(:].*", "", p), []).append(name)
    return db, provides


def closure(roots, db, provides):
    seen, todo = set(), list(roots)
    while todo:
        p = todo.pop()
        if p in seen or p not in db:
            continue
        seen.add(p)
        for alts in db[p][1]:
            for a in alts:
                real = a if a in db else next(iter(provides.get(a, [])), None)
                if real:
                    todo.append(real)
                    break
    return seen


def candidates(path):
    """usrmerge: dpkg may know a library under /lib or /usr/lib, by its link name or real name."""
    cands = [path, os.path.realpath(path)]
    for c in list(cands):
        cands.append(c[4:] if c.startswith("/usr/") else "/usr" + c)
    return cands


def packages_of(paths):
    """{path: package} by one 'dpkg-query -S' over every candidate name of every path."""
    cands = sorted({c for p in paths for c in candidates(p)})
    out = subprocess.run(["dpkg-query", "-S"] + cands, capture_output=True, text=True).stdout
    owner = {}
    for line in out.splitlines():
        pkgs, _, f = line.partition(": ")
        owner.setdefault(f.strip(), pkgs.split(",")[0].split(":")[0].strip())
    return {p: next((owner[c] for c in candidates(p) if c in owner), None) for p in paths}


def main():
    argv = sys.argv[1:]
    any_link = "--any-link" in argv
    dockerfile, binary = [a for a in argv if a != "--any-link"]
    problems = []
    osr = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', open("/etc/os-release").read(), re.M))
    if osr.get("VERSION_CODENAME") != "bookworm":
        print("this check needs Debian bookworm (the Dockerfile's release), not %s" % osr.get("PRETTY_NAME"))
        return 1

    stages = dockerfile_stages(dockerfile)
    if len(stages) < 2:
        problems.append("the Dockerfile has %d stage(s); want a build stage and a runtime stage" % len(stages))
    image, _, instrs = stages[-1]
    if image != "debian:bookworm-slim":
        problems.append("the runtime (last) stage is FROM %s, want debian:bookworm-slim" % image)
    listed = []
    for instr, rest in instrs:
        if instr == "RUN":
            listed += apt_packages(rest)
    users = [rest for instr, rest in instrs if instr == "USER"]
    if not users or users[-1].split(":")[0] != "65532":
        problems.append("the runtime stage must end as USER 65532 (numeric), has %s" % (users or "none"))
    entry = [rest for instr, rest in instrs if instr == "ENTRYPOINT"]
    if not entry or entry[-1].replace(" ", "") != '["kbackup"]':
        problems.append('the runtime stage needs ENTRYPOINT ["kbackup"], has %s' % (entry or "none"))

    db, provides = dpkg_db()
    for p in listed:
        if p not in db:
            problems.append("listed package %s is not a package installed here (misspelt?)" % p)
    base = closure([p for p, (prio, _) in db.items() if prio == "required"] + ["apt"], db, provides)
    with_deps = closure(listed, db, provides)

    needed = set() if any_link else set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]",
                            subprocess.run(["readelf", "-d", binary], check=True, capture_output=True,
                                           text=True).stdout))
    ldd = subprocess.run(["ldd", binary], check=True, capture_output=True, text=True).stdout
    found = []
    for line in ldd.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if not m:
            continue
        soname = m.group(1)
        path = m.group(2) if m.lastindex == 2 else m.group(1)
        if path == "not":
            problems.append("ldd cannot find %s" % soname)
        elif not SANITIZER_LIBS.match(os.path.basename(soname)):
            found.append((soname, path))
    owners = packages_of([p for _, p in found])
    libs = len(found)
    direct_listed = set()  # listed packages that rule 1 relies on (the self-test removes each)
    for soname, path in found:
        pkg = owners[path]
        if pkg is None:
            problems.append("%s (%s) belongs to no Debian package" % (soname, path))
        elif os.path.basename(soname) in needed:
            if pkg in listed and pkg not in base:
                direct_listed.add(pkg)
            if pkg not in listed and pkg not in base:
                problems.append("%s, linked directly, is in package %s: not in the runtime stage's "
                                "apt-get install list nor in bookworm-slim" % (soname, pkg))
        elif pkg not in listed and pkg not in base and pkg not in with_deps:
            problems.append("%s is in package %s, which neither bookworm-slim nor the listed packages "
                            "(with their dependencies) install" % (soname, pkg))
    if libs == 0:
        problems.append("ldd listed no libraries for %s" % binary)
    for p in problems:
        print(p)
    if not problems:
        print("ok: %d libraries, %d directly linked; runtime packages: %s" % (libs, len(needed), " ".join(listed)))
        print("direct-packages: %s" % " ".join(sorted(direct_listed)))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
