#!/usr/bin/env bash
# etcd_server.sh - start or stop a throwaway single-member etcd on loopback for tests.
#
#   etcd_server.sh start [--tls] [--auth] [--owner PID] [--name NAME] [--token-ttl SECONDS]
#                        [-- EXTRA_ETCD_FLAGS...]
#   etcd_server.sh stop DIR
#
# start picks two free loopback ports, runs /usr/bin/etcd in a fresh temp dir and waits until it
# answers, then prints shell-sourceable lines on stdout:
#   ETCD_ENDPOINT ETCD_PID ETCD_DIR ETCD_NAME ETCD_CLIENT_PORT ETCD_PEER_PORT ETCDCTL_FLAGS
# and, with --tls (server and client certificates, the server requiring a client certificate):
#   ETCD_CACERT ETCD_CERT ETCD_KEY (client CN=root) ETCD_ALICE_CERT ETCD_ALICE_KEY (client CN=alice)
#   ETCD_OTHER_CACERT (a CA that did not sign the server: for wrong-CA tests)
# and, with --auth (users root and alice; alice has no role, so no Snapshot):
#   ETCD_ROOT_PASSWORD ETCD_ALICE_PASSWORD
# ETCDCTL_FLAGS holds the etcdctl flags that reach the server as root (word-split it).
#
# Flags after "--" go to etcd last, so they override ours (Go flags: the last one wins); e.g.
# "-- --data-dir D" runs on an existing data dir (one made by `etcdctl snapshot restore`, or left by
# a killed etcd); stop then leaves D alone unless it is inside the temp dir.
#
# --owner PID: a watchdog stops etcd and removes DIR once PID is gone, so a test process that
# crashes or is killed does not leave etcd running. stop DIR kills etcd (and the watchdog) and
# removes DIR. Everything lives in one directory under ${KB_TEST_TMPDIR:-${TMPDIR:-/tmp}}.
set -euo pipefail

ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
export ETCDCTL_API=3

# shellcheck source=tests/tools/proc_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/proc_lib.sh"

stop_dir() {
        local dir=$1
        [[ -n $dir && -d $dir && -f $dir/.kb-etcd ]] || return 0
        if [[ -f $dir/watchdog.pid ]]; then
                kill "$(cat "$dir/watchdog.pid")" 2>/dev/null || true
        fi
        if [[ -f $dir/etcd.pid ]]; then
                kill_wait "$(cat "$dir/etcd.pid")"
        fi
        rm -rf "$dir"
}

free_ports() {
        # Both sockets stay bound until both numbers are known, so the two ports differ.
        python3 -c 'import socket
s = [socket.socket() for _ in range(2)]
for x in s:
    x.bind(("127.0.0.1", 0))
print(*[x.getsockname()[1] for x in s])'
}

gen_tls() {
        local t=$1
        (
                cd "$t"
                local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
                openssl req -x509 "${ec[@]}" -days 2 -subj /CN=kbtest-ca \
                        -keyout ca.key -out ca.crt 2>/dev/null
                openssl req -x509 "${ec[@]}" -days 2 -subj /CN=kbtest-other-ca \
                        -keyout other-ca.key -out other-ca.crt 2>/dev/null
                printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >server.ext
                printf 'extendedKeyUsage=clientAuth\n' >client.ext
                issue() { # NAME CN EXTFILE
                        openssl req "${ec[@]}" -subj "/CN=$2" -keyout "$1.key" -out "$1.csr" \
                                2>/dev/null
                        openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial \
                                -days 2 -extfile "$3" -out "$1.crt" 2>/dev/null
                }
                issue server localhost server.ext
                issue root root client.ext
                issue alice alice client.ext
        )
        # set -e does not reach into that subshell's commands, so check what it made.
        local f
        for f in ca other-ca server root alice; do
                [[ -s $t/$f.crt && -s $t/$f.key ]] || die "openssl failed to make $f.crt"
        done
}

start() {
        local tls=0 auth=0 owner="" name=kbtest ttl=""
        local -a extra=()
        while (($#)); do
                case $1 in
                --tls) tls=1 ;;
                --auth) auth=1 ;;
                --owner) owner=$2; shift ;;
                --name) name=$2; shift ;;
                --token-ttl) ttl=$2; shift ;;
                --) shift; extra=("$@"); break ;;
                *) die "unknown option $1" ;;
                esac
                shift
        done
        [[ -x $ETCD_BIN && -x $ETCDCTL_BIN ]] || die "$ETCD_BIN / $ETCDCTL_BIN not installed"

        local base=${KB_TEST_TMPDIR:-${TMPDIR:-/tmp}}
        DIR=$(mktemp -d "$base/kbetcd.XXXXXX")
        touch "$DIR/.kb-etcd"
        # Until we hand the server over, any failure takes it down again.
        trap 'stop_dir "$DIR"' EXIT

        local cp pp scheme=http
        local -a flags=() tlsctl=() ctl=()
        if ((tls)); then
                scheme=https
                mkdir "$DIR/tls"
                gen_tls "$DIR/tls"
                flags+=(--client-cert-auth --trusted-ca-file "$DIR/tls/ca.crt"
                        --cert-file "$DIR/tls/server.crt" --key-file "$DIR/tls/server.key")
                tlsctl+=(--cacert "$DIR/tls/ca.crt" --cert "$DIR/tls/root.crt" --key "$DIR/tls/root.key")
        fi
        [[ -n $ttl ]] && flags+=(--auth-token-ttl "$ttl")

        # A port found free can be taken (by any outgoing connection) before etcd binds it:
        # then etcd exits at once, and we try again with new ports.
        local attempt i ok=0 ep
        for ((attempt = 0; attempt < 5 && !ok; attempt++)); do
                read -r cp pp < <(free_ports)
                ep=$scheme://127.0.0.1:$cp
                ctl=("${tlsctl[@]}" --endpoints "$ep" --command-timeout 10s)
                rm -rf "$DIR/data"
                "$ETCD_BIN" --name "$name" --data-dir "$DIR/data" --logger zap --log-outputs stderr \
                        --listen-client-urls "$ep" --advertise-client-urls "$ep" \
                        --listen-peer-urls "http://127.0.0.1:$pp" \
                        --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
                        --initial-cluster "$name=http://127.0.0.1:$pp" \
                        --max-txn-ops 1024 --max-request-bytes 4194304 \
                        "${flags[@]}" "${extra[@]}" </dev/null >"$DIR/etcd.log" 2>&1 &
                echo $! >"$DIR/etcd.pid"
                for ((i = 0; i < 100; i++)); do
                        alive "$(cat "$DIR/etcd.pid")" || break
                        if "$ETCDCTL_BIN" "${ctl[@]}" endpoint health >/dev/null 2>&1; then
                                ok=1
                                break
                        fi
                        sleep 0.1
                done
                if ((!ok)); then
                        kill_wait "$(cat "$DIR/etcd.pid")"
                        grep -q "address already in use" "$DIR/etcd.log" || break
                fi
        done
        if ((!ok)); then
                tail -n 20 "$DIR/etcd.log" >&2 || true
                die "etcd did not become healthy"
        fi

        if ((auth)); then
                {
                        "$ETCDCTL_BIN" "${ctl[@]}" role add root &&
                                "$ETCDCTL_BIN" "${ctl[@]}" user add root:rootpw &&
                                "$ETCDCTL_BIN" "${ctl[@]}" user grant-role root root &&
                                "$ETCDCTL_BIN" "${ctl[@]}" user add alice:alicepw &&
                                "$ETCDCTL_BIN" "${ctl[@]}" auth enable
                } >"$DIR/auth.log" 2>&1 || {
                        cat "$DIR/auth.log" >&2
                        die "enabling auth failed"
                }
                # With TLS, etcdctl authenticates by the root certificate's CN.
                ((tls)) || ctl+=(--user root:rootpw)
        fi

        if [[ -n $owner ]]; then
                (
                        trap - EXIT
                        while alive "$owner"; do
                                sleep 0.5
                        done
                        kill -9 "$(cat "$DIR/etcd.pid")" 2>/dev/null || true
                        rm -rf "$DIR"
                ) </dev/null >/dev/null 2>&1 &
                echo $! >"$DIR/watchdog.pid"
        fi
        trap - EXIT

        echo "ETCD_ENDPOINT=$ep"
        echo "ETCD_PID=$(cat "$DIR/etcd.pid")"
        echo "ETCD_DIR=$DIR"
        echo "ETCD_NAME=$name"
        echo "ETCD_CLIENT_PORT=$cp"
        echo "ETCD_PEER_PORT=$pp"
        echo "ETCDCTL_FLAGS='${ctl[*]}'"
        if ((tls)); then
                echo "ETCD_CACERT=$DIR/tls/ca.crt"
                echo "ETCD_CERT=$DIR/tls/root.crt"
                echo "ETCD_KEY=$DIR/tls/root.key"
                echo "ETCD_ALICE_CERT=$DIR/tls/alice.crt"
                echo "ETCD_ALICE_KEY=$DIR/tls/alice.key"
                echo "ETCD_OTHER_CACERT=$DIR/tls/other-ca.crt"
        fi
        if ((auth)); then
                echo "ETCD_ROOT_PASSWORD=rootpw"
                echo "ETCD_ALICE_PASSWORD=alicepw"
        fi
}

case ${1:-} in
start)
        shift
        start "$@"
        ;;
stop)
        [[ $# -eq 2 ]] || die "usage: $0 stop DIR"
        stop_dir "$2"
        ;;
*)
        die "usage: $0 start [--tls] [--auth] [--owner PID] [--name NAME] [--token-ttl S] [-- ETCD_FLAGS...] | stop DIR"
        ;;
esac
