#!/usr/bin/env bash
# demo.sh - the main job on the embedded default, from a fresh machine: install, build, create a
# repository in a temp dir, back up a real directory, back it up again (dedup), restore it and
# prove the restore identical in bytes and metadata.
#
# Usage: scripts/demo.sh [DIRECTORY_TO_BACK_UP]   (default: /usr/share/doc)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
source_dir=${1:-/usr/share/doc}

bash "$src/scripts/setup.sh"
echo "== building"
kbackup=$(bash "$src/scripts/build.sh")

work=$(mktemp -d /tmp/kbackup-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
export KBACKUP_REPOSITORY=$work/repo
export KBACKUP_PASSWORD_FILE=$work/password
head -c 32 /dev/urandom | base64 >"$KBACKUP_PASSWORD_FILE"

echo "== kbackup init"
"$kbackup" init
echo "== kbackup backup volume $source_dir (first)"
"$kbackup" backup volume "$source_dir" --name demo/docs --tag run=demo
echo "== kbackup backup volume $source_dir (again: only changes are stored)"
"$kbackup" backup volume "$source_dir" --name demo/docs --tag run=demo
echo "== kbackup snapshots"
"$kbackup" snapshots
echo "== kbackup restore volume latest"
"$kbackup" restore volume latest --target "$work/restored"
echo "== comparing $source_dir with the restore (bytes, modes, owners, times, xattrs, links)"
python3 "$src/tests/tools/treecmp.py" "$source_dir" "$work/restored"
echo "repository size: $(du -sh "$KBACKUP_REPOSITORY" | cut -f1), source size: $(du -sh "$source_dir" | cut -f1)"
echo "demo OK: restored tree is identical to $source_dir"
