#!/usr/bin/env bash
# test_volume_blockdev.sh - a raw block device (loop devices over image files) as a volume: backed
# up whole, read again in full by the next backup (unchanged regions dedup, the change is kept),
# restored onto another device whose old bytes are garbage (zero runs must come back as zeros)
# and into a directory as device.img; refused without --overwrite-device, onto a device that is
# too small or mounted, for a directory's snapshot, and for a PATH that is a plain file; a
# damaged pack is reported with the device and offset, exit 3; a cluster profile's device is
# backed up with its set and left alone by restore --to-cluster; kill -9 of a device backup
# leaves a repository that check passes.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

((EUID == 0)) || skip "loop devices need root"
if ! command -v losetup >/dev/null || ! losetup -f >/dev/null 2>&1; then
        skip "no loop device available"
fi

W=$KB_TMP/w
mkdir -p "$W"
# The source image: random data, a 20 MiB zero run at an odd offset (whole zero chunks, with
# edges that are not page-aligned), text, random again. 64 MiB.
python3 - "$W/a.img" <<'PY'
import random, sys
r = random.Random(11)
with open(sys.argv[1], "wb") as f:
    f.write(r.randbytes((8 << 20) + 777))
    f.write(bytes((20 << 20) + 4097))
    f.write(b"".join(b"line %d of some text in a block device\n" % i for i in range(100000)))
    f.write(r.randbytes((64 << 20) - f.tell()))
PY
head -c $((96 << 20)) /dev/urandom >"$W/b.img" # the restore target: old bytes everywhere
head -c $((32 << 20)) /dev/urandom >"$W/c.img" # too small
cp "$W/a.img" "$W/a0.img"
kb_loop_attach A "$W/a.img"
kb_loop_attach B "$W/b.img"
kb_loop_attach C "$W/c.img"
size=$((64 << 20))

field() { # FIELD: from the --json summary of the last command
        python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).read().splitlines()[-1])[sys.argv[2]])' "$KB_OUT" "$1"
}
device_is() { # DEVICE IMAGE: the device's first bytes are the image
        cmp -n "$(stat -c %s "$2")" "$1" "$2" || fail "$1 differs from $2"
}

REPO=$KB_TMP/repo
kb_init "$REPO"
expect_exit 0 kb --repo "$REPO" backup volume "$A" --json
[[ $(field files) == 1 && $(field bytes_read) == "$size" ]] || fail "first backup: $(cat "$KB_OUT")"
snap1=$(field snapshot)
expect_exit 0 kb --repo "$REPO" ls "$snap1"
grep -q " $size .*device.img\$" "$KB_OUT" || fail "ls: $(cat "$KB_OUT")"

# Writing to a device moves none of its times: the next backup must read it all again.
printf 'CHANGED' | dd of="$A" bs=1 seek=$((30 << 20)) conv=notrunc,fsync status=none
expect_exit 0 kb --repo "$REPO" backup volume "$A" --json
snap2=$(field snapshot)
[[ $(field bytes_read) == "$size" ]] || fail "second backup did not read the device"
(($(field bytes_new) < 9 << 20)) || fail "second backup stored $(field bytes_new) new bytes"

# Onto a device: refused without the flag, and nothing is written.
sum=$(sha256sum <"$B")
expect_exit 2 kb --repo "$REPO" restore volume "$snap1" --target "$B"
grep -q -- '--overwrite-device' "$KB_ERR" || fail "no hint at --overwrite-device: $(cat "$KB_ERR")"
[[ $(sha256sum <"$B") == "$sum" ]] || fail "a refused restore changed $B"

tail0=$(tail -c $((32 << 20)) "$W/b.img" | sha256sum)
expect_exit 0 kb --repo "$REPO" restore volume "$snap1" --target "$B" --overwrite-device
grep -q 'left as they were' "$KB_ERR" || fail "no note of the device's larger size"
device_is "$B" "$W/a0.img"
[[ $(tail -c $((32 << 20)) "$B" | sha256sum) == "$tail0" ]] || fail "bytes past the image changed"
expect_exit 0 kb --repo "$REPO" restore volume "$snap2" --target "$B" --overwrite-device
device_is "$B" "$W/a.img"

# Into a directory: the image as a file.
expect_exit 0 kb --repo "$REPO" restore volume "$snap1" --target "$W/out"
cmp "$W/out/device.img" "$W/a0.img" || fail "device.img differs"

# Refusals, each leaving the target as it was.
sum=$(sha256sum <"$C")
expect_exit 2 kb --repo "$REPO" restore volume "$snap1" --target "$C" --overwrite-device
grep -q 'too few' "$KB_ERR" || fail "small device: $(cat "$KB_ERR")"
[[ $(sha256sum <"$C") == "$sum" ]] || fail "a refused restore changed $C"
mkdir -p "$W/dir" "$W/mnt"
echo data >"$W/dir/file"
expect_exit 0 kb --repo "$REPO" backup volume "$W/dir" --json
dirsnap=$(field snapshot)
expect_exit 2 kb --repo "$REPO" restore volume "$dirsnap" --target "$C" --overwrite-device
grep -q 'not of a block device' "$KB_ERR" || fail "directory snapshot: $(cat "$KB_ERR")"
expect_exit 2 kb --repo "$REPO" restore volume "$snap1" --target "$B" --overwrite-device --include x
grep -q -- '--include does not apply' "$KB_ERR" || fail "--include: $(cat "$KB_ERR")"
# A mounted device is claimed by its file system: refused, and the file system stays whole.
head -c $((80 << 20)) /dev/zero >"$W/d.img"
kb_loop_attach D "$W/d.img"
mkfs.ext4 -q -F "$D"
kb_mount "$D" "$W/mnt"
echo kept >"$W/mnt/file"
sync
expect_exit 1 kb --repo "$REPO" restore volume "$snap1" --target "$D" --overwrite-device
grep -q 'in use' "$KB_ERR" || fail "mounted device: $(cat "$KB_ERR")"
[[ $(cat "$W/mnt/file") == kept ]] || fail "the mounted file system changed"
before=$(repo_state "$REPO")
expect_exit 2 kb --repo "$REPO" backup volume "$W/a0.img"
grep -q 'not a directory or a block device' "$KB_ERR" || fail "plain file: $(cat "$KB_ERR")"
[[ $(repo_state "$REPO") == "$before" ]] || fail "a refused backup changed the repository"

# kill -9 during a device backup, early and late: the repository stays consistent (check below),
# and the next backup of the device restores byte for byte.
# A whole run of the same backup (the device's chunks already stored) sets the kill points.
t0=$(date +%s%N)
expect_exit 0 kb --repo "$REPO" backup volume "$A" --name ns/killed
full_ms=$((($(date +%s%N) - t0) / 1000000))
for pct in 25 60; do
        kb_kill_during "$full_ms" "$pct" --repo "$REPO" backup volume "$A" --name ns/killed
        note "device backup killed at ${pct}% of ${full_ms} ms (status $KB_BG_RC)"
        expect_exit 0 kb --repo "$REPO" check
done
expect_exit 0 kb --repo "$REPO" backup volume "$A" --name ns/killed --json
expect_exit 0 kb --repo "$REPO" restore volume "$(field snapshot)" --target "$B" --overwrite-device
device_is "$B" "$W/a.img"

# A cluster profile may map a volume to a device: backed up with the set; a DR restore lists it
# as skipped with the command to use, and leaves the device alone (its blocks may be data).
cat >"$W/config.yaml" <<CONF
clusters:
  src:
    volumes:
      ns/disk: $A
  dr:
    volumes:
      ns/disk: $B
CONF
expect_exit 0 kb --repo "$REPO" backup --cluster src --config "$W/config.yaml"
sum=$(sha256sum <"$B")
expect_exit 0 kb --repo "$REPO" restore latest --to-cluster dr --config "$W/config.yaml"
grep -q "ns/disk .*skipped .*block device.*--overwrite-device" "$KB_OUT" ||
        fail "to-cluster: $(cat "$KB_OUT")"
[[ $(sha256sum <"$B") == "$sum" ]] || fail "restore --to-cluster changed $B"

expect_exit 0 kb --repo "$REPO" check --read-data

# A damaged pack: reported with the device and an offset, exit 3.
pack=$(largest_pack "$REPO")
python3 - "$pack" <<'PY'
import sys
with open(sys.argv[1], "r+b") as f:
    f.seek(5000)
    b = f.read(1)
    f.seek(5000)
    f.write(bytes([b[0] ^ 0x40]))
PY
expect_exit 3 kb --repo "$REPO" restore volume "$snap1" --target "$B" --overwrite-device
grep -q "$B: damaged data at offset" "$KB_ERR" || fail "damage: $(cat "$KB_ERR")"
pass
