#!/usr/bin/env bash
# test_ops_keys.sh - key add / list / remove / passwd round trip through the CLI: every password
# that should open the repository does, removed ones do not, the last key and the key in use
# cannot be removed, and the data stays readable throughout.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"
# shellcheck source=tests/integration/ops_lib.sh
source "$(dirname "$0")/ops_lib.sh"

REPO=$(ops_repo keys)
kb_init "$REPO"
SRC=$KB_TMP/src
ops_gen "$SRC" 3 12
id=$(kb_backup "$REPO" "$SRC")

PW1=$KBACKUP_PASSWORD_FILE
PW2=$KB_TMP/pw2
PW3=$KB_TMP/pw3
printf 'second password\n' >"$PW2"
printf 'third password' >"$PW3"

# key_ids PWFILE: "ID CURRENT" per key, oldest first.
key_ids() {
        kb --repo "$REPO" --password-file "$1" --json key list </dev/null >"$KB_TMP/keys.json" ||
                fail "key list with $1 failed"
        python3 -c '
import json, sys
for k in json.load(open(sys.argv[1])):
    print(k["id"], "1" if k["current"] else "0")' "$KB_TMP/keys.json"
}

mapfile -t keys < <(key_ids "$PW1")
((${#keys[@]} == 1)) || fail "a new repository has ${#keys[@]} keys"
k1=${keys[0]% *}
[[ ${keys[0]#* } == 1 ]] || fail "the only key is not marked current"

expect_exit 2 kb --repo "$REPO" key add
expect_exit 0 kb --repo "$REPO" key add --new-password-file "$PW2"
k2=$(sed -n 's/^added key \([0-9a-f]*\)$/\1/p' "$KB_OUT")
[[ -n $k2 ]] || fail "key add output: $(cat "$KB_OUT")"
expect_exit 0 kb --repo "$REPO" key list
grep -q "^\* ${k1:0:8} " "$KB_OUT" || fail "key list marks the wrong key: $(cat "$KB_OUT")"
grep -q "^  $k2 " "$KB_OUT" || fail "key list lacks the new key: $(cat "$KB_OUT")"

# The second password opens the same repository and sees itself as current.
mapfile -t keys < <(key_ids "$PW2")
((${#keys[@]} == 2)) || fail "two keys expected"
for k in "${keys[@]}"; do
        [[ ${k% *} == "$k2"* ]] && { [[ ${k#* } == 1 ]] || fail "key 2 not current with password 2"; }
done
expect_exit 0 kb --repo "$REPO" --password-file "$PW2" snapshots
grep -q "${id:0:8}" "$KB_OUT" || fail "snapshots with password 2"

# Removing the key in use is refused; removing the other one works (by prefix).
expect_exit 2 kb --repo "$REPO" key remove "${k1:0:12}"
grep -q "passwd" "$KB_ERR" || fail "refusal does not say what to do: $(cat "$KB_ERR")"
expect_exit 1 kb --repo "$REPO" key remove ffffffffffff
expect_exit 0 kb --repo "$REPO" --password-file "$PW2" key remove "${k1:0:12}"
expect_exit 1 kb --repo "$REPO" snapshots
grep -q "wrong password" "$KB_ERR" || fail "password 1 still opens: $(cat "$KB_ERR")"

# Now the last key: refused whoever asks.
expect_exit 2 kb --repo "$REPO" --password-file "$PW2" key remove "$k2"
grep -q "last key" "$KB_ERR" || fail "last-key refusal: $(cat "$KB_ERR")"

# passwd: password 3 replaces password 2.
expect_exit 0 kb --repo "$REPO" --password-file "$PW2" key passwd --new-password-file "$PW3"
expect_exit 1 kb --repo "$REPO" --password-file "$PW2" snapshots
mapfile -t keys < <(key_ids "$PW3")
((${#keys[@]} == 1)) || fail "passwd left ${#keys[@]} keys"
[[ ${keys[0]#* } == 1 && ${keys[0]% *} != "$k2"* ]] || fail "passwd key: ${keys[*]}"

# The data reads with the new password.
KBACKUP_PASSWORD_FILE=$PW3 ops_restore_cmp "$REPO" "$id" "$SRC"
KBACKUP_PASSWORD_FILE=$PW3 expect_exit 0 kb --repo "$REPO" check --read-data
pass
