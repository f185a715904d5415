#!/usr/bin/env bash
# test_etcd_tls.sh - connecting to etcd the way a real cluster needs, and failing clearly when it
# cannot: TLS with client certificates (kubeadm's setup), user/password auth, and client
# certificates as users. Every failure (wrong CA, missing client certificate, unreachable endpoint,
# non-root user, wrong password, no credentials) exits 1 with one distinct "kbackup: ..." line
# naming the cause, and records no snapshot.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

REPO=$KB_TMP/repo
kb_init "$REPO"
unset KBACKUP_ETCD_PASSWORD KBACKUP_ETCD_PASSWORD_FILE

declare -A MSG # case name -> its error line, without the endpoint (for the distinctness check)

# expect_etcd_fail CASE MUST_MATCH MUST_NOT_MATCH ARGS...: `backup etcd ARGS` exits 1 with exactly
# one stderr line "kbackup: ..." matching the extended regex MUST_MATCH (case-insensitive) and not
# MUST_NOT_MATCH ("" for none), and no snapshot is added.
expect_etcd_fail() {
        local name=$1 want=$2 bad=$3
        shift 3
        local before after line
        before=$(snapshot_count "$REPO")
        expect_exit 1 kb --repo "$REPO" backup etcd --timeout 10 "$@"
        line=$(grep -v '^[[:space:]]*$' "$KB_ERR" || true)
        [[ $(printf '%s\n' "$line" | wc -l) == 1 && $line == kbackup:* ]] ||
                fail "$name: want one 'kbackup: ...' line on stderr, got: $(head -c 2000 "$KB_ERR")"
        printf '%s\n' "$line" | grep -Eiq -- "$want" || fail "$name: error does not match /$want/: $line"
        if [[ -n $bad ]] && printf '%s\n' "$line" | grep -Eiq -- "$bad"; then
                fail "$name: error matches /$bad/, which is the wrong cause: $line"
        fi
        after=$(snapshot_count "$REPO")
        ((after == before)) || fail "$name: a failed backup recorded a snapshot ($before -> $after)"
        note "$name: $line"
        MSG[$name]=$(printf '%s\n' "$line" | sed -E 's#https?://127\.0\.0\.1:[0-9]+#EP#g')
}

# ---- TLS with client certificates, no auth (a kubeadm cluster) ----
etcd_start --tls
EP=$ETCD_ENDPOINT
CA=$ETCD_CACERT CERT=$ETCD_CERT KEY=$ETCD_KEY OTHER_CA=$ETCD_OTHER_CACERT
TLS_DIR=$ETCD_DIR
ectl put /registry/namespaces/default '{"kind":"Namespace"}' >/dev/null

kb_backup_etcd "$REPO" --endpoints "$EP" --cacert "$CA" --cert "$CERT" --key "$KEY" >/dev/null
(($(snapshot_count "$REPO" etcd) == 1)) || fail "TLS backup did not record a snapshot"

dead=$(closed_port)
expect_etcd_fail wrong-ca 'TLS' 'unreachable' \
        --endpoints "$EP" --cacert "$OTHER_CA" --cert "$CERT" --key "$KEY"
printf '%s\n' "${MSG[wrong-ca]}" | grep -Eiq 'certificate|CA' ||
        fail "wrong CA: the error does not mention the certificate or CA: ${MSG[wrong-ca]}"
expect_etcd_fail missing-client-cert 'client cert|--cert' 'unreachable' \
        --endpoints "$EP" --cacert "$CA"
# A certificate with another client's key: said so, not taken for an unreachable server.
openssl genrsa -out "$KB_TMP/other.key" 2048 2>/dev/null
expect_etcd_fail key-mismatch 'do not belong together' 'unreachable' \
        --endpoints "$EP" --cacert "$CA" --cert "$CERT" --key "$KB_TMP/other.key"
expect_etcd_fail key-not-pem 'not a PEM private key' 'unreachable' \
        --endpoints "$EP" --cacert "$CA" --cert "$CERT" --key "$CA"
expect_etcd_fail unreachable 'unreachable' 'TLS|certificate' \
        --endpoints "https://127.0.0.1:$dead" --cacert "$CA" --cert "$CERT" --key "$KEY"

# A plain-text client against the TLS port must fail (any clear message), not hang or crash.
expect_exit 1 kb --repo "$REPO" backup etcd --timeout 10 --endpoints "${EP/https:/http:}"
note "http:// to a TLS server: $(head -n 1 "$KB_ERR")"

# With several endpoints, a dead one is skipped (with a warning) and a live one used.
kb_backup_etcd "$REPO" --endpoints "https://127.0.0.1:$dead,$EP" \
        --cacert "$CA" --cert "$CERT" --key "$KEY" >/dev/null
grep -q "127.0.0.1:$dead" "$KB_ERR" || fail "the dead endpoint was skipped without a word"
grep -q "$EP" "$KB_OUT" || fail "the summary does not name the member used ($EP)"
(($(snapshot_count "$REPO" etcd) == 2)) || fail "backup with a dead endpoint first did not record"
etcd_stop "$TLS_DIR"

# ---- user/password auth, plain ----
etcd_start --auth
EP=$ETCD_ENDPOINT
AUTH_DIR=$ETCD_DIR
# alice may read every key, so what she lacks is the root role, not access as such.
ectl role add reader >/dev/null
ectl role grant-permission reader read / --prefix >/dev/null
ectl user grant-role alice reader >/dev/null
ectl put /registry/namespaces/default '{"kind":"Namespace"}' >/dev/null
ETCDCTL_API=3 etcdctl --endpoints "$EP" --user "alice:$ETCD_ALICE_PASSWORD" get /registry/namespaces/default |
        grep -q Namespace || fail "alice cannot read keys: the test setup is wrong"

KBACKUP_ETCD_PASSWORD=$ETCD_ROOT_PASSWORD kb_backup_etcd "$REPO" --endpoints "$EP" --user root >/dev/null
printf '%s' "$ETCD_ROOT_PASSWORD" >"$KB_TMP/etcd-pw"
KBACKUP_ETCD_PASSWORD_FILE=$KB_TMP/etcd-pw kb_backup_etcd "$REPO" --endpoints "$EP" --user root >/dev/null
(($(snapshot_count "$REPO" etcd) == 4)) || fail "root backups with a password were not recorded"

KBACKUP_ETCD_PASSWORD=$ETCD_ALICE_PASSWORD expect_etcd_fail not-root 'root' 'authentication failed|unreachable' \
        --endpoints "$EP" --user alice
KBACKUP_ETCD_PASSWORD=wrong-pw-4711 expect_etcd_fail wrong-password 'authenticat' 'not a root|unreachable' \
        --endpoints "$EP" --user root
grep -q wrong-pw-4711 "$KB_ERR" "$KB_OUT" && fail "the password appears in the output"
expect_etcd_fail no-credentials 'auth' 'unreachable' --endpoints "$EP"
etcd_stop "$AUTH_DIR"

# ---- TLS + auth: the client certificate's CN is the user ----
etcd_start --tls --auth
EP=$ETCD_ENDPOINT
kb_backup_etcd "$REPO" --endpoints "$EP" --cacert "$ETCD_CACERT" --cert "$ETCD_CERT" --key "$ETCD_KEY" >/dev/null
expect_etcd_fail not-root-cert 'root' 'authentication failed|unreachable|TLS' \
        --endpoints "$EP" --cacert "$ETCD_CACERT" --cert "$ETCD_ALICE_CERT" --key "$ETCD_ALICE_KEY"
(($(snapshot_count "$REPO" etcd) == 5)) || fail "TLS+auth: want 5 etcd snapshots in all"

# Each cause has its own message (the two "not root" cases are one cause).
declare -A seen=()
for k in "${!MSG[@]}"; do
        [[ $k != not-root-cert ]] || continue
        m=${MSG[$k]}
        [[ -z ${seen[$m]:-} ]] || fail "cases $k and ${seen[$m]} give the same error: $m"
        seen[$m]=$k
done

# The repository is intact: every snapshot listed still reads back.
expect_exit 0 kb --repo "$REPO" snapshots --json
mapfile -t ids < <(python3 -c 'import json,sys
for s in json.load(open(sys.argv[1])): print(s["id"])' "$KB_OUT")
((${#ids[@]} == 5)) || fail "want 5 snapshots, listed ${#ids[@]}"
for i in "${ids[@]}"; do
        expect_exit 0 kb --repo "$REPO" restore etcd "$i" --output "$KB_TMP/snap-$i.db"
        python3 -c 'import hashlib,sys
d = open(sys.argv[1], "rb").read()
sys.exit(hashlib.sha256(d[:-32]).digest() != d[-32:])' "$KB_TMP/snap-$i.db" ||
                fail "snapshot $i does not come back with a valid trailer"
done

pass
