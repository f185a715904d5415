#!/usr/bin/env bash
# bench.sh - performance figures for the release notes (a script, not a timed test): installs what
# it needs, builds an optimised kbackup, and measures it against the reference tools on this
# machine. Everything runs on loopback in a temp dir that is removed at the end.
#
#   etcd:    a ~200 MB etcd db (large values); `kbackup backup etcd` (into a fresh repository
#            each run: everything chunked, compressed, encrypted and written; also with a cheap
#            KDF, to show the cost of opening the repository apart; and again into the same
#            repository, all dedup) against `etcdctl snapshot save` on the same server in the same
#            run, the order rotating each round (5 rounds: a round takes seconds, and the ratio
#            sits near its goal, so a median of 3 would flip with the VM's noise); median wall
#            time, MB/s, peak RSS and the ratios to etcdctl, and the etcd issue's goal (time
#            ratio <= 1.1: MET / NOT MET).
#   volumes: a corpus of real files copied from /usr (a tree of small and large files: 60% from
#            /usr/share, then /usr/bin, then /usr/lib; 800 MB by default, the issue's ~1.5 GB
#            with --tree-mb 1500; and a 1 GiB file of distinct binaries from /usr/lib); kbackup,
#            restic 0.14 and borg 1.2 on the same data, alternating, in the same run: first
#            backup (fresh repository), the same tree again unchanged, the 1 GiB file (fresh
#            repository), a full restore into an empty directory, and a check that reads all
#            data; median wall time, MB/s, peak RSS, repository size, kbackup's ratio to each,
#            and the issue's targets against restic (MET / NOT MET). As root, all of it in a
#            scratch ext4 in an image file in the temp dir (same disk; see vol_scratch for why).
#   profile: (only with --only profile) `perf record` (DWARF call graphs) of kbackup's first
#            backup and restore of the tree, and the CPU time per pipeline stage.
#   zstd:    (only with --only zstd) zstd levels -1, 1, 2, 3, 6 on 1 MiB pieces of the tree:
#            compression MB/s, decompression MB/s, ratio, share of incompressible pieces.
#
# Usage: scripts/bench.sh [--runs N] [--etcd-runs N] [--etcd-mb MB] [--tree-mb MB]
#                         [--big-mib MIB] [--corpus DIR] [--profile-dir DIR] [--no-scratch]
#                         [--only etcd|volumes|profile|zstd]
#        Defaults: 3 volume runs, 5 etcd runs, a 200 MB etcd db, an 800 MB tree, a 1024 MiB
#        file. The corpus is prepared in the temp dir and removed, unless --corpus names a
#        directory to keep it in and reuse; --profile-dir keeps the perf data. The default run
#        (etcd and volumes) takes 6-7.5 minutes on 2 cores (the tree is 800 MB rather than 1.5 GB
#        to stay under 10 minutes when the machine is also busy with other work).
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)

runs=3
etcd_runs=5
etcd_mb=200
tree_mb=800
big_mib=1024
corpus_dir=""
profile_dir=""
scratch=1
only=""
while (($#)); do
        case $1 in
        --runs) runs=$2; shift ;;
        --etcd-runs) etcd_runs=$2; shift ;;
        --etcd-mb) etcd_mb=$2; shift ;;
        --tree-mb) tree_mb=$2; shift ;;
        --big-mib) big_mib=$2; shift ;;
        --corpus) corpus_dir=$(realpath -m "$2"); shift ;;
        --profile-dir) profile_dir=$(realpath -m "$2"); shift ;;
        --no-scratch) scratch=0 ;;
        --only) only=$2; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "bench.sh: unknown option $1" >&2; exit 2 ;;
        esac
        shift
done
((runs >= 1 && etcd_runs >= 1 && etcd_mb >= 10 && tree_mb >= 10 && big_mib >= 1)) || {
        echo "bench.sh: want --runs and --etcd-runs >= 1, --etcd-mb >= 10, --tree-mb >= 10," \
                "--big-mib >= 1" >&2
        exit 2
}
case $only in
"" | etcd | volumes | profile | zstd) ;;
*) echo "bench.sh: --only etcd, volumes, profile or zstd" >&2; exit 2 ;;
esac

WORK=$(mktemp -d "${TMPDIR:-/tmp}/kbackup-bench.XXXXXX")
SERVERS=()
SCRATCH_MNT=""
SCRATCH_DEV=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
        local d
        for d in "${SERVERS[@]}"; do
                bash "$src/tests/tools/etcd_server.sh" stop "$d" >/dev/null 2>&1 || true
        done
        if [[ -n $SCRATCH_MNT ]]; then
                umount "$SCRATCH_MNT" 2>/dev/null || umount -l "$SCRATCH_MNT" || true
        fi
        [[ -z $SCRATCH_DEV ]] || losetup -d "$SCRATCH_DEV" 2>/dev/null || true
        rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { echo "== $*" >&2; }

# ---- setup and build ---------------------------------------------------------------------------

bench_setup() {
        # On top of the project's packages: GNU time (peak RSS), the peers restic and borg, vmtouch
        # (to warm the page cache), perf (for the profile).
        local -a extra=(time)
        [[ -z $only || $only == volumes ]] && extra+=(restic borgbackup vmtouch)
        [[ $only == profile ]] && extra+=(linux-perf vmtouch)
        bash "$src/scripts/setup.sh" "${extra[@]}"
}

bench_build() {
        say "building (Release) in $src/build-bench"
        KBACKUP=$(bash "$src/scripts/build.sh" "$src/build-bench" -DCMAKE_BUILD_TYPE=Release \
                2>"$WORK/build.log") || { cat "$WORK/build.log" >&2; exit 1; }
        [[ -x $KBACKUP ]] || { echo "bench.sh: build produced no kbackup" >&2; exit 1; }
}

# ---- measurement helpers -----------------------------------------------------------------------

# measure LABEL CMD...: run CMD once; append "LABEL wall_us peak_rss_kib user_s sys_s" to
# $WORK/results. Wall time from the nanosecond clock; RSS and CPU time from GNU time.
measure() {
        local label=$1
        shift
        local t0 t1 rss user sys
        t0=$(date +%s%N)
        /usr/bin/time -f '%M %U %S' -o "$WORK/time.out" "$@" >"$WORK/cmd.out" 2>"$WORK/cmd.err" || {
                echo "bench.sh: '$label' failed:" >&2
                tail -n 5 "$WORK/cmd.err" >&2
                exit 1
        }
        t1=$(date +%s%N)
        read -r rss user sys < <(tail -n 1 "$WORK/time.out")
        echo "$label $(((t1 - t0) / 1000)) $rss $user $sys" >>"$WORK/results"
}

# table BYTES REFERENCE_LABEL [LABEL MAX]: per label, median wall time, MB/s for BYTES, median CPU
# time (user+sys), peak RSS, and the ratios to REFERENCE_LABEL; with LABEL and MAX, whether
# LABEL's time ratio meets the goal of at most MAX.
table() {
        python3 - "$WORK/results" "$@" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, us, rss, user, sys_ = line.split()
    rows.setdefault(label, []).append((int(us) / 1e6, int(rss), float(user) + float(sys_)))
nbytes, ref = int(sys.argv[2]), sys.argv[3]
med = {k: (statistics.median(r[0] for r in v), max(r[1] for r in v),
           statistics.median(r[2] for r in v), sorted(r[0] for r in v)) for k, v in rows.items()}
print("%-22s %4s %8s %7s %7s %8s %8s %8s  %s" % ("", "runs", "median s", "MB/s", "CPU s",
                                               "RSS MB", "time/ref", "RSS/ref", "all runs (s)"))
for k, (t, r, c, ts) in med.items():
    rt, rr = med[ref][0], med[ref][1]
    print("%-22s %4d %8.2f %7.1f %7.2f %8.1f %8.2f %8.2f  %s" % (
        k, len(ts), t, nbytes / 1e6 / t, c, r / 1024, t / rt, r / rr,
        " ".join("%.2f" % x for x in ts)))
if len(sys.argv) > 5:
    goal, most = sys.argv[4], float(sys.argv[5])
    x = med[goal][0] / med[ref][0]
    print("Goal: %s within %.1fx of %s's time: %.2fx  %s" % (
        goal, most, ref, x, "MET" if x <= most else "NOT MET"))
EOF
}

# ---- etcd ----------------------------------------------------------------------------------------

bench_etcd() {
        say "starting etcd and loading ~${etcd_mb} MB (values of 100 KiB)"
        local out
        out=$(KB_TEST_TMPDIR=$WORK bash "$src/tests/tools/etcd_server.sh" start --owner $$ --name bench)
        eval "$out"
        SERVERS+=("$ETCD_DIR")
        local t0=$SECONDS
        python3 "$src/tests/tools/etcd_load.py" --ctl "$ETCDCTL_FLAGS" --quiet load \
                --count $((etcd_mb * 1000000 / 102400)) --min-size 102400 --max-size 102400 --seed 1
        local db
        # shellcheck disable=SC2086  # ETCDCTL_FLAGS is a word list
        db=$(ETCDCTL_API=3 etcdctl $ETCDCTL_FLAGS endpoint status -w json |
                python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')
        say "db: $db bytes, loaded in $((SECONDS - t0)) s; $etcd_runs rounds, order rotating"

        export KBACKUP_PASSWORD_FILE=$WORK/password
        head -c 32 /dev/urandom | base64 >"$KBACKUP_PASSWORD_FILE"
        : >"$WORK/results"
        local i k
        local -a tools=(etcdctl kbackup cheap) order
        for ((i = 0; i < etcd_runs; i++)); do
                rm -rf "$WORK/snap.db" "$WORK/repo" "$WORK/repo-cheap"
                "$KBACKUP" --repo "$WORK/repo" init >/dev/null
                # The same pipeline without the cost of opening the repository: Argon2id with the
                # production parameters takes ~0.1 s and 48 MiB on every run (KBACKUP_TEST_KDF
                # lowers them; it only matters at init, which is not measured).
                KBACKUP_TEST_KDF=fast "$KBACKUP" --repo "$WORK/repo-cheap" init >/dev/null
                order=()
                for ((k = 0; k < ${#tools[@]}; k++)); do
                        order+=("${tools[(i + k) % ${#tools[@]}]}")
                done
                for k in "${order[@]}"; do
                        # Each starts with nothing left to write back of the previous one.
                        sync
                        # shellcheck disable=SC2086  # ETCDCTL_FLAGS is a word list
                        case $k in
                        etcdctl) measure "etcdctl-snapshot-save" env ETCDCTL_API=3 etcdctl \
                                $ETCDCTL_FLAGS snapshot save "$WORK/snap.db" ;;
                        kbackup) measure "kbackup" "$KBACKUP" --repo "$WORK/repo" backup etcd \
                                --endpoints "$ETCD_ENDPOINT" ;;
                        cheap) measure "kbackup(cheap-KDF)" "$KBACKUP" --repo "$WORK/repo-cheap" \
                                backup etcd --endpoints "$ETCD_ENDPOINT" ;;
                        esac
                done
                # Same repository again: the db is unchanged, so only dedup lookups remain.
                sync
                measure "kbackup-again(dedup)" "$KBACKUP" --repo "$WORK/repo" backup etcd \
                        --endpoints "$ETCD_ENDPOINT"
        done
        local stored
        stored=$(du -sb "$WORK/repo" | cut -f1)
        echo
        echo "etcd snapshot of a $db-byte db on $(nproc) cores (etcd itself on the same cores);"
        echo "kbackup: fresh repository each run, chunked, zstd-compressed, encrypted; repository"
        echo "after a first and a deduplicated second backup: $stored bytes"
        table "$db" etcdctl-snapshot-save kbackup 1.1
        echo
        bash "$src/tests/tools/etcd_server.sh" stop "$ETCD_DIR"
}

# ---- volumes (kbackup vs restic vs borg) ---------------------------------------------------------
# One corpus of real files, the three tools on it in the same run, on the same disk, alternating
# (the order rotates each round). Page cache: this machine evicts idle cache after about a minute,
# so the input of every measured command (the tree, the big file, the repository) is read into the
# cache right before it: every tool starts warm, none inherits the previous one's cache. `sync`
# before each command keeps one tool's write-back out of the next one's time.

VOL_TOOLS=(kbackup restic borg)
BORG_COMPRESSION=lz4 # borg 1.2's own default

# vol_corpus DIR TREE_MB BIG_MIB: DIR/tree, a copy of real files from /usr (60% of the budget from
# /usr/share: many small files, docs, locales; then /usr/bin; then /usr/lib: large libraries), and
# DIR/big/big.bin, distinct binaries from /usr/lib concatenated. Reused when DIR/.done matches.
vol_corpus() {
        local dir=$1 mb=$2 bigmb=$3
        local stamp="v2 tree=${mb}MB big=${bigmb}MiB"
        if [[ -f $dir/.done && $(<"$dir/.done") == "$stamp" ]]; then
                say "reusing the corpus in $dir"
                return
        fi
        say "preparing the corpus in $dir: ~$mb MB of files from /usr, a $bigmb MiB file"
        rm -rf "$dir"
        mkdir -p "$dir"
        python3 - "$dir" "$mb" "$bigmb" <<'EOF'
import os, shutil, stat, sys
dst, mb, bigmb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def walk(top):
    # Sorted, so the same machine gives the same corpus; symlinked directories are entries too.
    for root, dirs, names in os.walk(top):
        dirs.sort()
        links = [d for d in dirs if os.path.islink(os.path.join(root, d))]
        for n in sorted(names + links):
            yield os.path.join(root, n)

tree, budget = os.path.join(dst, "tree"), mb * 10**6
total = files = 0
for top, share in (("/usr/share", 0.60), ("/usr/bin", 0.85), ("/usr/lib", 1.0)):
    cap = budget * share
    for path in walk(top):
        if total >= cap - 10**6:
            break
        try:
            st = os.lstat(path)
            if total + st.st_size > cap:
                continue  # would overshoot: smaller files further on fill the rest
            out = os.path.join(tree, path.lstrip("/"))
            os.makedirs(os.path.dirname(out), exist_ok=True)
            if stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(path), out)
            elif stat.S_ISREG(st.st_mode):
                shutil.copyfile(path, out)
                os.chmod(out, st.st_mode & 0o777)
                os.utime(out, ns=(st.st_atime_ns, st.st_mtime_ns))
                total += st.st_size
                files += 1
        except OSError:
            continue  # unreadable or vanished: leave it out

big, want, have, seen = os.path.join(dst, "big", "big.bin"), bigmb << 20, 0, set()
os.makedirs(os.path.dirname(big))
with open(big, "wb") as out:
    for top in ("/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/bin", "/usr/libexec"):
        for path in walk(top):
            if have >= want:
                break
            try:
                st = os.lstat(path)
                if not stat.S_ISREG(st.st_mode) or st.st_size < 4096 or (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
                with open(path, "rb") as f:
                    data = f.read(want - have)
            except OSError:
                continue
            out.write(data)
            have += len(data)
if have < want:
    sys.exit("bench.sh: only %d bytes of distinct binaries under /usr for the big file" % have)
with open(os.path.join(dst, ".info"), "w") as f:
    print(files, total, want, file=f)
EOF
        echo "$stamp" >"$dir/.done"
}

# vol_scratch: sets VOLDIR, where the volume benchmarks work (corpus, repositories, restores). As
# root, a fresh ext4 with default options (journaled) in a sparse image file in the temp dir, so on
# the same disk, attached with direct I/O (no second page cache). Why not the temp dir itself: this
# VM's root ext4 has no journal and online discard: deleting a restored tree costs ~1 ms per file
# (30 s and more for 50k files), and the journal-less inode allocator checks and skips inodes freed
# in the last minute, which doubled a restore made right after a deletion. The scratch filesystem
# goes with one unlink at exit. Without root or losetup (or with --no-scratch): the temp dir.
vol_scratch() {
        VOLDIR=$WORK
        [[ -z $SCRATCH_MNT ]] || { VOLDIR=$SCRATCH_MNT; return; }
        local img=$WORK/scratch.img mb=$((tree_mb * 9 + big_mib * 4 + 2048))
        if ((scratch == 0 || EUID != 0)) || ! command -v losetup >/dev/null 2>&1; then
                say "working in $WORK (no scratch filesystem)"
                return
        fi
        if truncate -s "${mb}M" "$img" &&
                mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$img" >/dev/null 2>&1 &&
                SCRATCH_DEV=$(losetup --direct-io=on -f --show "$img") &&
                mkdir -p "$WORK/vol" && mount "$SCRATCH_DEV" "$WORK/vol"; then
                SCRATCH_MNT=$WORK/vol
                VOLDIR=$SCRATCH_MNT
                say "working in a scratch ext4 on $SCRATCH_DEV (image in $WORK)"
        else
                [[ -z $SCRATCH_DEV ]] || losetup -d "$SCRATCH_DEV" || true
                SCRATCH_DEV=""
                rm -f "$img"
                say "no scratch filesystem (loop device failed): working in $WORK"
        fi
}

# vol_env: the same password for all three, from the environment; restic's and borg's caches in
# the work dir (they go with it and do not count as repository size).
vol_env() {
        unset KBACKUP_PASSWORD_FILE
        KBACKUP_PASSWORD=$(head -c 32 /dev/urandom | base64)
        export KBACKUP_PASSWORD RESTIC_PASSWORD=$KBACKUP_PASSWORD BORG_PASSPHRASE=$KBACKUP_PASSWORD
        export XDG_CACHE_HOME=$VOLDIR/cache BORG_BASE_DIR=$VOLDIR/borg-base
        export BORG_RELOCATED_REPO_ACCESS_IS_OK=yes BORG_DISPLAY_PASSPHRASE=no
}

# vol_space DIR: fail early unless the disk has room for the corpus (unless kept already), two
# rounds of restored trees and the repositories.
vol_space() {
        local need=$((tree_mb * 9 + big_mib * 3)) have
        have=$(($(df -P -k "$1" | awk 'NR == 2 {print $4}') / 1000))
        ((have >= need)) || {
                echo "bench.sh: ${need} MB of free disk wanted in $1, ${have} MB free" >&2
                exit 1
        }
}

# warm PATH...: read PATH (recursively) into the page cache.
warm() {
        if command -v vmtouch >/dev/null 2>&1; then
                vmtouch -qt "$@"
        else
                find "$@" -type f -print0 | xargs -0r cat >/dev/null
        fi
}

# vol_init TOOL REPO: a fresh, empty repository (and no cache left from an earlier one).
vol_init() {
        rm -rf "$2"
        case $1 in
        kbackup) "$KBACKUP" --repo "$2" init ;;
        restic) rm -rf "$XDG_CACHE_HOME/restic" && restic -r "$2" init --repository-version 2 ;;
        borg) rm -rf "$BORG_BASE_DIR/.cache" && borg init --encryption repokey-blake2 "$2" ;;
        esac >"$WORK/init.log" 2>&1 || {
                echo "bench.sh: $1 init failed:" >&2
                cat "$WORK/init.log" >&2
                exit 1
        }
}

# vol_run PHASE TOOL REPO [PATH]: warm the input, then measure one operation as "PHASE/TOOL".
# Backups (first, again, big) of PATH into REPO, restore (of the latest snapshot into a new, empty
# $VOLDIR/restore-ROUND-TOOL), check (reading all data).
vol_run() {
        local phase=$1 tool=$2 repo=$3 path=${4:-} label=$1/$2
        local out=$VOLDIR/restore-$ROUND-$2
        local -a cmd
        case $phase/$tool in
        first/* | again/* | big/*) warm "$path" ;;
        *) warm "$repo" ;;
        esac
        case $phase/$tool in
        first/kbackup | again/kbackup | big/kbackup) cmd=("$KBACKUP" --repo "$repo" backup volume "$path") ;;
        first/restic | again/restic | big/restic) cmd=(restic -r "$repo" backup "$path") ;;
        first/borg | again/borg | big/borg)
                cmd=(borg create --compression "$BORG_COMPRESSION" "$repo::$phase" "$path") ;;
        restore/kbackup) cmd=("$KBACKUP" --repo "$repo" restore volume latest --target "$out") ;;
        restore/restic) cmd=(restic -r "$repo" restore latest --target "$out") ;;
        restore/borg) cmd=(env -C "$out" borg extract "$repo::again") ;;
        check/kbackup) cmd=("$KBACKUP" --repo "$repo" check --read-data) ;;
        check/restic) cmd=(restic -r "$repo" check --read-data) ;;
        check/borg) cmd=(borg check --verify-data "$repo") ;;
        esac
        [[ $phase == restore ]] && mkdir "$out"
        sync
        measure "$label" "${cmd[@]}"
        case $phase in
        first | again | big) echo "$label $(du -sb "$repo" | cut -f1)" >>"$WORK/sizes" ;;
        restore)
                # Every tool must have put back every byte (restic and borg nest the absolute path).
                local got
                got=$(find "$out" -type f -printf '%s\n' | awk '{n++; b+=$1} END {print n+0, b+0}')
                [[ $got == "$CORPUS_FILES $CORPUS_BYTES" ]] || {
                        echo "bench.sh: $tool restored $got (files bytes), want $CORPUS_FILES $CORPUS_BYTES" >&2
                        exit 1
                }
                ;;
        esac
}

bench_volumes() {
        vol_space "$WORK"
        vol_scratch
        local corpus=${corpus_dir:-$VOLDIR/corpus} v=$VOLDIR
        vol_corpus "$corpus" "$tree_mb" "$big_mib"
        read -r CORPUS_FILES CORPUS_BYTES BIG_BYTES <"$corpus/.info"
        local tree=$corpus/tree big=$corpus/big

        vol_env
        local check_kb=1
        "$KBACKUP" check --help >/dev/null 2>&1 || check_kb=0

        local load0
        load0=$(cut -d' ' -f1-3 /proc/loadavg)
        say "volumes: $CORPUS_FILES files, $CORPUS_BYTES bytes, and a $BIG_BYTES-byte file;" \
                "$runs rounds of kbackup, restic, borg"
        : >"$WORK/results"
        : >"$WORK/sizes"
        local i k t t0=$SECONDS
        local -a order
        for ((i = 0; i < runs; i++)); do
                ROUND=$i
                order=()
                for ((k = 0; k < ${#VOL_TOOLS[@]}; k++)); do
                        order+=("${VOL_TOOLS[(i + k) % ${#VOL_TOOLS[@]}]}")
                done
                say "round $((i + 1))/$runs: ${order[*]} ($((SECONDS - t0)) s so far)"
                for t in "${order[@]}"; do
                        vol_init "$t" "$v/repo-$t"
                        vol_run first "$t" "$v/repo-$t" "$tree"
                done
                for t in "${order[@]}"; do vol_run again "$t" "$v/repo-$t" "$tree"; done
                for t in "${order[@]}"; do vol_run restore "$t" "$v/repo-$t"; done
                # Restored trees go one round late, a minute or more before the next restores:
                # on an ext4 without a journal (the fallback without a scratch filesystem) files
                # created within a minute of a large deletion cost twice as much (see vol_scratch).
                rm -rf "$v"/restore-$((i - 1))-*
                for t in "${order[@]}"; do
                        [[ $t == kbackup && $check_kb == 0 ]] && continue
                        vol_run check "$t" "$v/repo-$t"
                done
                for t in "${order[@]}"; do
                        rm -rf "$v/repo-$t"
                        vol_init "$t" "$v/repo-$t"
                        vol_run big "$t" "$v/repo-$t" "$big"
                        rm -rf "$v/repo-$t"
                done
        done
        say "volume rounds took $((SECONDS - t0)) s"
        rm -rf "$v"/restore-*

        echo
        local where="a scratch ext4 (an image file on the temp dir's disk)"
        [[ -n $SCRATCH_MNT ]] || where=$(df -P "$VOLDIR" | awk 'NR == 2 {print $1}')
        echo "Volumes: a tree of $CORPUS_FILES real files from /usr ($CORPUS_BYTES bytes) and one"
        echo "$BIG_BYTES-byte file of concatenated binaries, all on $where;"
        echo "$(nproc) cores; $runs rounds, tools alternating, input read into the page cache right"
        echo "before each command; load average before: $load0, after: $(cut -d' ' -f1-3 /proc/loadavg)."
        echo "$("$KBACKUP" --version 2>&1 | head -n 1) (zstd level 1, all cores);" \
                "$(restic version | cut -d' ' -f1-2) (repository v2, compression auto);"
        echo "borg $(borg --version | cut -d' ' -f2) (repokey-blake2, compression $BORG_COMPRESSION, one thread)."
        vol_table "$CORPUS_BYTES" "$BIG_BYTES" "$check_kb"
        echo
}

# vol_table TREE_BYTES BIG_BYTES CHECK_KB: per phase and tool the median wall time, MB/s (of the
# logical data: the tree, or the big file), median CPU time, peak RSS, repository size after the
# command, and how many times faster kbackup is, and its RSS relative to the peer's; then the
# issue's targets against restic, MET or NOT MET.
vol_table() {
        python3 - "$WORK/results" "$WORK/sizes" "$@" <<'EOF'
import statistics, sys
tree_bytes, big_bytes, check_kb = int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1"
runs, sizes = {}, {}
for line in open(sys.argv[1]):
    label, us, rss, user, sys_ = line.split()
    runs.setdefault(label, []).append((int(us) / 1e6, int(rss) / 1024, float(user) + float(sys_)))
for line in open(sys.argv[2]):
    label, n = line.split()
    sizes.setdefault(label, []).append(int(n))
med = {k: (statistics.median(r[0] for r in v), max(r[1] for r in v),
           statistics.median(r[2] for r in v), sorted(r[0] for r in v)) for k, v in runs.items()}
phases = (("first", "first backup", tree_bytes), ("again", "unchanged re-backup", tree_bytes),
          ("big", "1 GiB file backup" if big_bytes == 1 << 30 else "big file backup", big_bytes),
          ("restore", "full restore", tree_bytes), ("check", "read-all check", tree_bytes))
tools = ("kbackup", "restic", "borg")
fmt = "%-20s %-8s %4s %8s %7s %7s %7s %8s %8s %7s  %s"
print(fmt % ("", "", "runs", "median s", "MB/s", "CPU s", "RSS MB", "repo MB", "kb x", "kb RSS",
             "all runs (s)"))
for ph, title, nbytes in phases:
    kb = med.get(ph + "/kbackup")
    for i, tool in enumerate(tools):
        name = title if i == 0 else ""
        m = med.get(ph + "/" + tool)
        if m is None:
            print(fmt % (name, tool, "-", "n/a", "", "", "", "", "", "", ""))
            continue
        t, rss, cpu, ts = m
        size = sizes.get(ph + "/" + tool)
        faster = "%.2fx" % (t / kb[0]) if kb and tool != "kbackup" else ""
        rel = "%.2f" % (kb[1] / rss) if kb and tool != "kbackup" else ""
        print(fmt % (name, tool, len(ts), "%.2f" % t, "%.0f" % (nbytes / 1e6 / t), "%.2f" % cpu,
                     "%.0f" % rss, "%.0f" % (statistics.median(size) / 1e6) if size else "-",
                     faster, rel, " ".join("%.2f" % x for x in ts)))
print("(kb x: the peer's median time / kbackup's, i.e. how many times faster kbackup is; kb RSS:")
print(" kbackup's peak RSS / the peer's; MB/s of the logical data; repo MB: size after the command)")
print()
print("Targets (kbackup against restic, same run):")
want = {"first": 3, "again": 5, "big": 3, "restore": 3, "check": 2}
for ph, title, _ in phases:
    kb, rs = med.get(ph + "/kbackup"), med.get(ph + "/restic")
    if kb is None or rs is None:
        print("  %-22s >= %dx faster: n/a" % (title, want[ph]))
        continue
    x = rs[0] / kb[0]
    print("  %-22s >= %dx faster: %5.2fx  %s" % (title, want[ph], x,
                                                "MET" if x >= want[ph] else "NOT MET"))
worst = max(((med[p + "/kbackup"][1] / med[p + "/restic"][1], p) for p, _, _ in phases
             if p + "/kbackup" in med and p + "/restic" in med), default=None)
if worst:
    r, p = worst
    print("  %-22s <= restic's:  %5.2fx  %s (highest ratio: %s, %.0f vs %.0f MB)" % (
        "peak RSS", r, "MET" if r <= 1 else "NOT MET", p, med[p + "/kbackup"][1],
        med[p + "/restic"][1]))
EOF
}

# ---- profile (kbackup alone, where the CPU time goes) --------------------------------------------
# perf samples every thread's stack (DWARF unwinding: the libraries have no frame pointers and no
# symbols, so a sample in libzstd or libcrypto is attributed through kbackup's own caller). Each
# sample goes to the first stage recognised walking from the leaf outward; kernel samples by
# their system call.

bench_profile() {
        vol_space "$WORK"
        vol_scratch
        local corpus=${corpus_dir:-$VOLDIR/corpus} dir=${profile_dir:-$WORK/profile}
        local repo=$VOLDIR/repo-profile hz=499 what
        vol_corpus "$corpus" "$tree_mb" "$big_mib"
        mkdir -p "$dir"
        vol_env
        vol_init kbackup "$repo"
        for what in backup restore; do
                if [[ $what == backup ]]; then
                        warm "$corpus/tree"
                        set -- "$KBACKUP" --repo "$repo" backup volume "$corpus/tree"
                else
                        warm "$repo"
                        set -- "$KBACKUP" --repo "$repo" restore volume latest --target "$VOLDIR/profile-out"
                fi
                sync
                say "profiling kbackup $what"
                local t0 t1
                t0=$(date +%s%N)
                perf record -q -F "$hz" --call-graph dwarf,16384 -o "$dir/$what.data" -- "$@" \
                        >"$dir/$what.out" 2>"$dir/$what.err" || {
                        tail -n 5 "$dir/$what.err" >&2
                        exit 1
                }
                t1=$(date +%s%N)
                perf script -i "$dir/$what.data" -F comm,tid,time,ip,sym,dso 2>/dev/null >"$dir/$what.script"
                echo
                echo "kbackup $what of the tree ($(du -sb "$corpus/tree" | cut -f1) bytes) under perf," \
                        "$(nproc) cores: wall $(((t1 - t0) / 1000000)) ms"
                prof_stages "$dir/$what.script" "$what" "$hz" "$((t1 - t0))" | tee "$dir/$what.stages"
                rm -f "$dir/$what.script"
        done
        echo
        echo "perf data in $dir (perf report -i $dir/backup.data --no-children)"
        [[ -n $profile_dir ]] || echo "(removed at exit: give --profile-dir to keep it)"
}

# prof_stages SCRIPT_OUTPUT backup|restore HZ WALL_NS: from `perf script` output, the share of CPU samples per stage,
# the CPU seconds per thread, and the top leaf symbols of each stage.
prof_stages() {
        python3 - "$@" <<'EOF'
import collections, os, re, sys
mode, hz, wall = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]) / 1e9
ZSTD_C = r"^(ZSTD_compress|ZSTD_compressCCtx|ZSTD_compress2|ZSTD_compressStream)"
ZSTD_D = r"^(ZSTD_decompress|ZSTD_decompressDCtx|ZSTD_decompressStream)"
rules = [
    ("memory: page faults, mmap", r"^(asm_exc_page_fault|__x64_sys_munmap|__x64_sys_mmap|__x64_sys_madvise|__x64_sys_brk)$"),
    ("waiting: locks, futex, scheduler", r"^(__x64_sys_futex|do_futex|__x64_sys_sched_yield|__lll_lock_wait|pthread_cond_wait@@GLIBC_2.3.2)$"),
    ("chunk", r"^kb_chunker_"),
    ("hash: chunk ids" if mode == "backup" else "verify: chunk ids", r"^kb_crypto_blob_id"),
    ("hash: pack names", r"^kb_crypto_object_id$"),
    ("compress", ZSTD_C), ("decompress", ZSTD_D),
    ("encrypt", r"^kb_crypto_seal$"), ("decrypt", r"^kb_crypto_open"),
    ("index", r"^(kb_index_|kb_repo_index_load|kb_repo_blob_known|kb_repo_blob_size)"),
    # (the kernel inlines some __x64_sys_* entry points: ksys_*/do_* name those)
    ("read" if mode == "backup" else "read packs",
     r"^(__x64_sys_|ksys_)(read|pread64|preadv)$"),
    ("pack write (write, fsync, rename)" if mode == "backup" else "write files",
     r"^((__x64_sys_|ksys_)(write|pwrite64|pwritev|fallocate|ftruncate)|"
     r"__x64_sys_(fsync|fdatasync|renameat2?)|do_fsync|do_renameat2|do_sys_ftruncate)$"),
] + ([("create files, dirs, links", r"^__x64_sys_(openat|mkdirat|symlinkat|linkat|mknodat)$")]
      if mode == "restore" else []) + [
    ("walk: open, stat, list dirs, xattrs" if mode == "backup" else "metadata: owner, mode, times, xattrs",
     r"^(__x64_sys_|do_syscall_64$)"),
    ("startup: dynamic linking, key derivation (Argon2id)", r"^(_dl_start|_dl_start_user|kb_crypto_derive|crypto_pwhash.*)$"),
    ("malloc/free", r"^(malloc|free|cfree|calloc|realloc|_int_malloc|_int_free|_int_realloc|__libc_malloc|__libc_free|__libc_calloc|__libc_realloc|malloc_consolidate|sysmalloc|unlink_chunk.*)$"),
    ("metadata encode/decode (protobuf)", r"^(protobuf_c_|kbackup__)"),
    ("pack assembly", r"^(kb_pack_|kb_repo_blob_save|kb_repo_flush)"),
    ("restore: blob load", r"^(kb_repo_blob_load|kb_repo_blob_decode)$"),
]
rules = [(s, re.compile(r)) for s, r in rules]
stage_of = collections.Counter()
leaf = collections.defaultdict(collections.Counter)
tid_n = collections.Counter()
total = 0
def flush(chain):
    global total
    if not chain:
        return
    total += 1
    stage = None
    for sym, dso in chain:
        for name, r in rules:
            if r.search(sym):
                stage = name
                break
        if stage:
            break
    if stage is None:
        d = chain[0][1]
        stage = ("zstd (caller not unwound)" if "libzstd" in d else
                 "OpenSSL (caller not unwound)" if "libcrypto" in d else "other")
    stage_of[stage] += 1
    leaf[stage][chain[0][0] + " (" + chain[0][1].split("/")[-1] + ")"] += 1
head = re.compile(r"^\S.*?\s+(\d+)\s+[\d.]+:\s*$")
frame = re.compile(r"^\s+[0-9a-f]+\s+(.*?)\s+\((.*)\)$")
chain = []
for line in open(sys.argv[1], errors="replace"):
    m = head.match(line)
    if m:
        flush(chain)
        chain = []
        tid_n[m.group(1)] += 1
        continue
    m = frame.match(line)
    if m:
        chain.append((re.sub(r"\+0x[0-9a-f]+$", "", m.group(1)), m.group(2)))
flush(chain)
cpu = total / hz
cores = os.cpu_count() or 1
print("CPU sampled: %.1f s in %d threads over %.1f s wall: %.0f%% of %d cores" % (
    cpu, len(tid_n), wall, 100 * cpu / wall / cores, cores))
print("threads (CPU s): " + ", ".join("%.1f" % (n / hz) for _, n in tid_n.most_common()))
print("%6s %7s  %s" % ("share", "CPU s", "stage"))
for s, n in stage_of.most_common():
    tops = ", ".join("%s %.0f%%" % (k, 100 * v / n) for k, v in leaf[s].most_common(2))
    print("%5.1f%% %7.2f  %-44s %s" % (100 * n / total, n / hz, s, tops))
EOF
}

# ---- zstd levels -----------------------------------------------------------------------------------
# Single-thread zstd on 1 MiB pieces (the chunker's average size) of the tree: every third piece of
# its files read in walk order, up to 384 MiB of them.

bench_zstd() {
        local corpus=${corpus_dir:-$WORK/corpus}
        vol_corpus "$corpus" "$tree_mb" "$big_mib"
        cat >"$WORK/zlevels.c" <<'EOF'
/* zlevels.c - compress and decompress 1 MiB pieces at several zstd levels: MB/s and ratio. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zstd.h>
#define PIECE (1u << 20)
static double now(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return t.tv_sec + t.tv_nsec / 1e9;
}
int main(int argc, char **argv)
{
        size_t max = 384, n = 0, fill = 0, seen = 0;
        unsigned char *buf = malloc(max * PIECE), *out = malloc(ZSTD_compressBound(PIECE)),
                      *back = malloc(PIECE);
        size_t *len = calloc(max, sizeof(*len));
        char path[4096];
        /* File names on stdin, one per line; keep every third full piece of their concatenation. */
        while (n < max && fgets(path, sizeof(path), stdin)) {
                path[strcspn(path, "\n")] = 0;
                FILE *f = fopen(path, "rb");
                if (!f)
                        continue;
                size_t got;
                while (n < max && (got = fread(buf + n * PIECE + fill, 1, PIECE - fill, f)) > 0) {
                        fill += got;
                        if (fill == PIECE) {
                                if (seen++ % 3 == 0)
                                        len[n++] = PIECE;
                                fill = 0;
                        }
                }
                fclose(f);
        }
        ZSTD_CCtx *c = ZSTD_createCCtx();
        ZSTD_DCtx *d = ZSTD_createDCtx();
        printf("%zu pieces of 1 MiB\n%6s %10s %12s %7s %15s\n", n, "level", "comp MB/s", "decomp MB/s",
               "ratio", "pieces <3% gain");
        for (int a = 1; a < argc; a++) {
                int level = atoi(argv[a]);
                size_t in = 0, stored = 0, flat = 0;
                double tc = 0, td = 0;
                for (size_t i = 0; i < n; i++) {
                        double t0 = now();
                        size_t z = ZSTD_compressCCtx(c, out, ZSTD_compressBound(PIECE), buf + i * PIECE,
                                                     len[i], level);
                        double t1 = now();
                        size_t r = ZSTD_decompressDCtx(d, back, PIECE, out, z);
                        double t2 = now();
                        if (ZSTD_isError(z) || r != len[i] || memcmp(back, buf + i * PIECE, r)) {
                                fprintf(stderr, "zlevels: round trip failed\n");
                                return 1;
                        }
                        tc += t1 - t0;
                        td += t2 - t1;
                        in += len[i];
                        stored += z;
                        flat += z * 100 >= len[i] * 97;
                }
                printf("%6d %10.0f %12.0f %7.3f %14.1f%%\n", level, in / 1e6 / tc, in / 1e6 / td,
                       (double)in / stored, 100.0 * flat / n);
        }
        return 0;
}
EOF
        gcc -O2 -o "$WORK/zlevels" "$WORK/zlevels.c" -lzstd
        echo
        echo "zstd $(pkg-config --modversion libzstd), one thread, on the tree's files:"
        find "$corpus/tree" -type f | "$WORK/zlevels" -1 1 2 3 6
}

# ---- main ----------------------------------------------------------------------------------------

bench_setup
bench_build
[[ -z $only || $only == etcd ]] && bench_etcd
[[ -z $only || $only == volumes ]] && bench_volumes
[[ $only == profile ]] && bench_profile
[[ $only == zstd ]] && bench_zstd
exit 0
