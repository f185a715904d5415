#!/usr/bin/env bash
# s3_server.sh - start or stop a throwaway S3 server (s3rver, which checks Signature V4) on
# loopback for tests.
#
#   s3_server.sh start [--owner PID] [--bucket NAME] [--tls]
#   s3_server.sh kill DIR     stop the server, keep its data (to simulate an outage)
#   s3_server.sh resume DIR   start it again on the same port and data
#   s3_server.sh stop DIR     stop it and remove DIR
#
# start picks a free loopback port, runs s3rver (installed by scripts/setup.sh into
# $KB_SOURCE_DIR/.deps/s3rver) in a fresh temp dir, waits until it answers, creates the bucket
# (default "kbtest") and prints shell-sourceable lines on stdout:
#   S3_ENDPOINT S3_PORT S3_PID S3_DIR S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
#   AWS_DEFAULT_REGION AWS_CONFIG_FILE (an aws CLI config: region, path-style addressing)
# and with --tls (https with a certificate for 127.0.0.1 from a throwaway CA):
#   S3_CA_FILE (the CA that signed it) S3_OTHER_CA_FILE (a CA that did not)
# --owner PID: a watchdog stops the server and removes DIR once PID is gone, so a crashed test
# leaves nothing running. Everything lives in one directory under ${KB_TEST_TMPDIR:-${TMPDIR:-/tmp}}.
set -euo pipefail

KB_SOURCE_DIR=${KB_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
S3RVER_HOME=${S3RVER_HOME:-$KB_SOURCE_DIR/.deps/s3rver}
NODE=${NODE:-node}
EMPTY_SHA=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

# shellcheck source=tests/tools/proc_lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/proc_lib.sh"

free_port() {
        python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# curl signed as the test user; extra arguments follow.
s3curl() {
        local -a tls=()
        [[ -f $DIR/tls/ca.crt ]] && tls=(--cacert "$DIR/tls/ca.crt")
        curl -sS --max-time 10 "${tls[@]}" --aws-sigv4 "aws:amz:us-east-1:s3" -u S3RVER:S3RVER \
                -H "x-amz-content-sha256: $EMPTY_SHA" "$@"
}

gen_tls() {
        local t=$1
        mkdir -p "$t"
        (
                cd "$t"
                local ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
                openssl req -x509 "${ec[@]}" -days 2 -subj /CN=kbtest-s3-ca \
                        -keyout ca.key -out ca.crt 2>/dev/null
                openssl req -x509 "${ec[@]}" -days 2 -subj /CN=kbtest-other-ca \
                        -keyout other-ca.key -out other-ca.crt 2>/dev/null
                printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
                openssl req "${ec[@]}" -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
                openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
                        -extfile server.ext -out server.crt 2>/dev/null
        )
        [[ -s $t/server.crt && -s $t/ca.crt && -s $t/other-ca.crt ]] || die "openssl failed"
}

# run_server: start s3rver on $DIR/port with $DIR/data and wait until it answers.
run_server() {
        local port scheme=http
        port=$(cat "$DIR/port")
        local -a tls=()
        if [[ -f $DIR/tls/server.crt ]]; then
                scheme=https
                tls=(--key "$DIR/tls/server.key" --cert "$DIR/tls/server.crt")
        fi
        # The package ships no bin script; its CLI module does the work, started by
        # s3rver_launcher.js (which makes an interrupted upload store nothing, as S3 does). The
        # legacy provider is needed on Node 20 for ListObjectsV2 continuation tokens.
        NODE_PATH=$S3RVER_HOME/node_modules "$NODE" --openssl-legacy-provider "$DIR/launcher.js" \
                -d "$DIR/data" -a 127.0.0.1 -p "$port" -s "${tls[@]}" \
                </dev/null >>"$DIR/s3rver.log" 2>&1 &
        echo $! >"$DIR/s3rver.pid"
        local i
        for ((i = 0; i < 150; i++)); do
                alive "$(cat "$DIR/s3rver.pid")" || break
                if s3curl -o /dev/null "$scheme://127.0.0.1:$port/" 2>/dev/null; then
                        return 0
                fi
                sleep 0.1
        done
        tail -n 20 "$DIR/s3rver.log" >&2 || true
        die "s3rver did not start on port $port"
}

start() {
        local owner="" bucket=kbtest use_tls=0
        while (($#)); do
                case $1 in
                --owner) owner=$2; shift ;;
                --bucket) bucket=$2; shift ;;
                --tls) use_tls=1 ;;
                *) die "unknown option $1" ;;
                esac
                shift
        done
        [[ -f $S3RVER_HOME/node_modules/@20minutes/s3rver/lib/cli.js ]] ||
                die "s3rver is not installed in $S3RVER_HOME (run scripts/setup.sh)"
        command -v "$NODE" >/dev/null || die "node is not installed (run scripts/setup.sh)"

        local base=${KB_TEST_TMPDIR:-${TMPDIR:-/tmp}}
        DIR=$(mktemp -d "$base/kbs3.XXXXXX")
        touch "$DIR/.kb-s3"
        trap 'stop_dir "$DIR"' EXIT
        mkdir "$DIR/data"
        cp "$(dirname "${BASH_SOURCE[0]}")/s3rver_launcher.js" "$DIR/launcher.js"
        free_port >"$DIR/port"
        ((use_tls)) && gen_tls "$DIR/tls"
        run_server
        local port scheme=http
        port=$(cat "$DIR/port")
        ((use_tls)) && scheme=https
        local ep=$scheme://127.0.0.1:$port
        s3curl -o "$DIR/mb.out" -w '%{http_code}' -X PUT "$ep/$bucket" >"$DIR/mb.code" ||
                die "cannot create bucket $bucket"
        [[ $(cat "$DIR/mb.code") == 200 ]] || die "creating bucket $bucket: HTTP $(cat "$DIR/mb.code")"
        printf '[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n' >"$DIR/aws.config"

        if [[ -n $owner ]]; then
                (
                        trap - EXIT
                        while alive "$owner"; do
                                sleep 0.5
                        done
                        kill -9 "$(cat "$DIR/s3rver.pid")" 2>/dev/null || true
                        rm -rf "$DIR"
                ) </dev/null >/dev/null 2>&1 &
                echo $! >"$DIR/watchdog.pid"
        fi
        trap - EXIT

        echo "S3_ENDPOINT=$ep"
        echo "S3_PORT=$port"
        echo "S3_PID=$(cat "$DIR/s3rver.pid")"
        echo "S3_DIR=$DIR"
        echo "S3_BUCKET=$bucket"
        echo "AWS_ACCESS_KEY_ID=S3RVER"
        echo "AWS_SECRET_ACCESS_KEY=S3RVER"
        echo "AWS_DEFAULT_REGION=us-east-1"
        echo "AWS_CONFIG_FILE=$DIR/aws.config"
        if ((use_tls)); then
                echo "S3_CA_FILE=$DIR/tls/ca.crt"
                echo "S3_OTHER_CA_FILE=$DIR/tls/other-ca.crt"
        fi
}

stop_dir() {
        local dir=$1
        [[ -n $dir && -d $dir && -f $dir/.kb-s3 ]] || return 0
        if [[ -f $dir/watchdog.pid ]]; then
                kill "$(cat "$dir/watchdog.pid")" 2>/dev/null || true
        fi
        if [[ -f $dir/s3rver.pid ]]; then
                kill_wait "$(cat "$dir/s3rver.pid")"
        fi
        rm -rf "$dir"
}

check_dir() {
        [[ -n ${1:-} && -f $1/.kb-s3 ]] || die "$1 is not a directory made by s3_server.sh start"
}

case ${1:-} in
start)
        shift
        start "$@"
        ;;
kill)
        [[ $# -eq 2 ]] || die "usage: $0 kill DIR"
        check_dir "$2"
        kill_wait "$(cat "$2/s3rver.pid")"
        ;;
resume)
        [[ $# -eq 2 ]] || die "usage: $0 resume DIR"
        check_dir "$2"
        DIR=$2
        kill_wait "$(cat "$DIR/s3rver.pid")"
        run_server
        echo "S3_PID=$(cat "$DIR/s3rver.pid")"
        ;;
stop)
        [[ $# -eq 2 ]] || die "usage: $0 stop DIR"
        stop_dir "$2"
        ;;
*)
        die "usage: $0 start [--owner PID] [--bucket NAME] [--tls] | kill DIR | resume DIR | stop DIR"
        ;;
esac
