#!/usr/bin/env bash
# test_image_libs.sh - the container image, without a Docker engine: builds kbackup the way the
# Dockerfile's build stage does, from exactly the files .dockerignore lets into the context (so a
# new source folder that the context misses fails here), and checks with tests/tools/image_libs.py
# (ldd + dpkg -S) that the runtime stage's package list installs every shared library that
# binary needs, plus the stage layout (bookworm-slim, USER 65532, ENTRYPOINT kbackup). The binary
# under test ($KBACKUP) is checked too unless it is a sanitizer build. Self-test: removing any
# package the list needs, or breaking the layout, must make the check fail.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3 # Debian's python (the check reads dpkg's database; no modules needed)
CHECK=$KB_TOOLS/image_libs.py
DOCKERFILE=$KB_SOURCE_DIR/Dockerfile
[[ -f $DOCKERFILE && -f $KB_SOURCE_DIR/.dockerignore ]] || fail "no Dockerfile or .dockerignore"

# ---- the build context: .dockerignore is an allowlist ('*' then '!PATH' lines) ----
# Kept under the build directory (git-ignored) so a re-run rebuilds incrementally.
WORK=${KB_BUILD_DIR:-$KB_TMP}/image-context
CTX=$WORK/src
rm -rf "$CTX"
mkdir -p "$CTX"
first=
while IFS= read -r line; do
        [[ -z $line || $line == \#* ]] && continue
        if [[ -z $first ]]; then
                first=$line
                [[ $line == '*' ]] || fail ".dockerignore must start with '*' (an allowlist), not '$line'"
                continue
        fi
        [[ $line == '!'* ]] || fail ".dockerignore: only '!PATH' lines after '*', got '$line'"
        path=${line#!}
        path=${path%/}
        [[ -e $KB_SOURCE_DIR/$path ]] || fail ".dockerignore lets in $path, which does not exist"
        mkdir -p "$CTX/$(dirname "$path")"
        cp -a "$KB_SOURCE_DIR/$path" "$CTX/$path"
done <"$KB_SOURCE_DIR/.dockerignore"
# Leftovers of a local build must not ride along inside an allowed folder.
[[ -z $(find "$CTX" -name '*.o' -o -name 'CMakeCache.txt') ]] || fail "build leftovers in the build context"

# Every file the build stage installs from the context must be in it.
installed=$(grep -oE 'install [^&]* (scripts/[A-Za-z0-9_.-]+)' "$DOCKERFILE" | awk '{print $NF}')
[[ $(wc -w <<<"$installed") == 2 ]] || fail "expected the build stage to install two scripts, found: $installed"
for f in $installed; do
        [[ -f $CTX/$f ]] || fail "the Dockerfile installs $f, which .dockerignore keeps out of the context"
done

# The build stage installs every build package scripts/setup.sh installs (the "# build" group of
# its package list), so a library added there cannot be forgotten here.
build_pkgs=$(sed -n '/^packages=(/,/^)/p' "$KB_SOURCE_DIR/scripts/setup.sh" |
        sed -n '/# build/,/# tests/p' | grep -v '#' | tr -s ' \t' '\n' | grep -v '^$' || true)
[[ -n $build_pkgs ]] || fail "cannot find the '# build' package group in scripts/setup.sh"
build_stage=$(awk '/^FROM /{n++} n == 1' "$DOCKERFILE")
for p in $build_pkgs; do
        grep -qE "[[:space:]]$p([[:space:]]|$)" <<<"$build_stage" ||
                fail "scripts/setup.sh builds with $p, the Dockerfile's build stage does not install it"
done

# The build stage's commands (tests off, as in the image).
note "building from the image's context in $WORK/build"
if ! { cmake -S "$CTX" -B "$WORK/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKB_TESTS=OFF &&
        timeout 900 cmake --build "$WORK/build" -j2; } >"$KB_TMP/build.log" 2>&1; then
        tail -n 40 "$KB_TMP/build.log" >&2
        fail "kbackup does not build from the Dockerfile's context (see .dockerignore)"
fi
IMAGE_BIN=$WORK/build/kbackup
"$IMAGE_BIN" --version | grep -q '^kbackup ' || fail "the image build's binary does not run"

# ---- the runtime stage installs what that binary needs ----
"$PY" "$CHECK" "$DOCKERFILE" "$IMAGE_BIN" >"$KB_OUT" || fail "image check: $(cat "$KB_OUT")"
note "$(head -n 1 "$KB_OUT")"
read -r -a direct < <(sed -n 's/^direct-packages: //p' "$KB_OUT")
((${#direct[@]} >= 5)) || fail "expected the list to carry at least 5 directly linked library packages, got: ${direct[*]}"

# ldd's whole output first: under pipefail, `ldd | grep -q` fails now and then when grep stops
# reading at its match and ldd dies of SIGPIPE, which took a sanitizer build for a plain one.
kb_libs=$(ldd "$KBACKUP")
if grep -qE 'lib(asan|ubsan|tsan)\.so' <<<"$kb_libs"; then
        # Sanitizer builds keep every -l as NEEDED (libatomic for one), which no image ships.
        note "$KBACKUP is a sanitizer build: checked only through the image build above"
else
        "$PY" "$CHECK" "$DOCKERFILE" "$KBACKUP" >"$KB_OUT" || fail "image check of $KBACKUP: $(cat "$KB_OUT")"
fi

# ---- self-test: the check must fail when the list or the layout is wrong ----
MUT=$KB_TMP/Dockerfile.mutated
expect_check_fail() { # WHAT REGEX
        local rc=0
        "$PY" "$CHECK" "$MUT" "$IMAGE_BIN" >"$KB_OUT" || rc=$?
        ((rc == 1)) || fail "self-test ($1): the check passed a broken Dockerfile"
        grep -Eq -- "$2" "$KB_OUT" || fail "self-test ($1): no problem matching /$2/ in: $(cat "$KB_OUT")"
}
for pkg in "${direct[@]}"; do
        # Remove the package name from the runtime stage only (the part after the last FROM).
        awk -v p="$pkg" -v last="$(grep -c '^FROM ' "$DOCKERFILE")" '
                /^FROM /{n++}
                n == last { line = " " $0 " "; gsub(" " p " ", " ", line); sub(/^ /, "", line); sub(/ $/, "", line); print line; next }
                {print}' "$DOCKERFILE" >"$MUT"
        ! cmp -s "$MUT" "$DOCKERFILE" || fail "self-test: could not remove $pkg from the runtime stage"
        expect_check_fail "without $pkg" "in package $pkg"
done
sed 's/^USER 65532:65532$/USER root/' "$DOCKERFILE" >"$MUT"
expect_check_fail "USER root" "USER 65532"
# shellcheck disable=SC2016 # a literal ${...} of the Dockerfile
sed 's/^FROM debian:\${DEBIAN_RELEASE}-slim AS runtime$/FROM debian:${DEBIAN_RELEASE} AS runtime/' "$DOCKERFILE" >"$MUT"
expect_check_fail "full bookworm base" "want debian:bookworm-slim"
sed 's/ jq \\$/ jqq \\/' "$DOCKERFILE" >"$MUT"
expect_check_fail "misspelt package" "listed package jqq is not a package installed here"
pass
