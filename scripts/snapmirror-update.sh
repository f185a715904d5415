#!/usr/bin/env bash
# snapmirror-update.sh - a kbackup --post-hook that asks NetApp ONTAP to update the SnapMirror
# relationship replicating the repository volume to the DR site, right after a successful backup,
# so the replica's lag is "one backup" instead of "one SnapMirror schedule period".
# See docs/snapmirror.md. In the container image it is /usr/local/bin/kbackup-snapmirror-update.
#
# Needs bash, curl and jq. The ONTAP password is read from a file and handed to curl on its
# standard input as a curl config ("-K -"), so it never appears in any process's argv, in the
# environment, in a temp file or in the output.
set -euo pipefail

me=snapmirror-update

usage() {
        cat <<'EOF'
Usage: snapmirror-update.sh --ontap URL (--uuid UUID | --destination-path SVM:VOLUME)
                            --credentials-file FILE [--cacert FILE] [--timeout SECONDS]
                            [--wait [--wait-timeout SECONDS] [--poll-interval SECONDS]] [--force]

Ask ONTAP to update a SnapMirror relationship: POST /api/snapmirror/relationships/UUID/transfers
with the body {} (what 'snapmirror update' does). Run it on the cluster that owns the
destination volume (SnapMirror transfers are pulled by the destination). Meant as
'kbackup backup ... --post-hook': it does nothing (one line, exit 0) unless the backup
succeeded (KBACKUP_STATUS=success), so a failed or partial backup is never pushed to the DR
site ahead of the schedule.

Options (the environment variable in brackets is the default):
  --ontap URL               https://HOST[:PORT] of the destination cluster's management
                            interface [KBACKUP_ONTAP_URL]. http:// only to a loopback address.
  --uuid UUID               the relationship's uuid [KBACKUP_SNAPMIRROR_UUID]
  --destination-path SVM:VOLUME
                            find the relationship by its destination instead
                            (GET /api/snapmirror/relationships?destination.path=...)
                            [KBACKUP_SNAPMIRROR_DESTINATION]
  --credentials-file FILE   one line USER:PASSWORD [KBACKUP_ONTAP_CREDENTIALS_FILE]
  --cacert FILE             CA of ONTAP's certificate (default: the system store)
                            [KBACKUP_ONTAP_CACERT]
  --timeout SECONDS         per HTTP request (default 30) [KBACKUP_ONTAP_TIMEOUT]
  --wait                    poll the transfer's ONTAP job until it ends [KBACKUP_SNAPMIRROR_WAIT=1]
  --wait-timeout SECONDS    give up waiting after this long (default 600)
  --poll-interval SECONDS   between job polls (default 5)
  --force                   run whatever KBACKUP_STATUS says (by hand)
  -h, --help                this text

Exit codes: 0 transfer requested (with --wait: finished successfully), or skipped because
the backup did not succeed; 1 ONTAP refused, could not be reached, the relationship was not
found, or the job failed or did not finish in time; 2 usage error.
EOF
}

die() { # CODE MESSAGE: one line on stderr
        echo "$me: $2" >&2
        exit "$1"
}

ontap=${KBACKUP_ONTAP_URL:-}
uuid=${KBACKUP_SNAPMIRROR_UUID:-}
dest=${KBACKUP_SNAPMIRROR_DESTINATION:-}
creds=${KBACKUP_ONTAP_CREDENTIALS_FILE:-}
cacert=${KBACKUP_ONTAP_CACERT:-}
timeout=${KBACKUP_ONTAP_TIMEOUT:-30}
wait=0
[[ ${KBACKUP_SNAPMIRROR_WAIT:-0} == 1 ]] && wait=1
wait_timeout=600
poll=5
force=0

need_arg() { # OPTION ARGC
        (($2 >= 2)) || die 2 "$1 needs a value (see --help)"
}
while (($#)); do
        case $1 in
        --ontap) need_arg "$1" $# && ontap=$2 && shift ;;
        --uuid) need_arg "$1" $# && uuid=$2 && shift ;;
        --destination-path) need_arg "$1" $# && dest=$2 && shift ;;
        --credentials-file) need_arg "$1" $# && creds=$2 && shift ;;
        --cacert) need_arg "$1" $# && cacert=$2 && shift ;;
        --timeout) need_arg "$1" $# && timeout=$2 && shift ;;
        --wait) wait=1 ;;
        --wait-timeout) need_arg "$1" $# && wait_timeout=$2 && shift ;;
        --poll-interval) need_arg "$1" $# && poll=$2 && shift ;;
        --force) force=1 ;;
        -h | --help)
                usage
                exit 0
                ;;
        *) die 2 "unknown argument '$1' (see --help)" ;;
        esac
        shift
done

# The backup's outcome decides first: a failed backup must not fail again here for a missing
# setting, and must not move the replica.
status=${KBACKUP_STATUS:-}
if ((!force)) && [[ $status != success ]]; then
        echo "$me: backup status is '${status:-unset}', not success: SnapMirror update skipped"
        exit 0
fi

is_uint() { [[ $1 =~ ^[0-9]+$ ]]; }
{ is_uint "$timeout" && ((timeout > 0)); } || die 2 "--timeout must be a positive number of seconds"
is_uint "$wait_timeout" || die 2 "--wait-timeout must be a number of seconds"
{ is_uint "$poll" && ((poll > 0)); } || die 2 "--poll-interval must be a positive number of seconds"
[[ -n $ontap ]] || die 2 "no ONTAP address: give --ontap https://HOST (or KBACKUP_ONTAP_URL)"
ontap=${ontap%/}
# Basic authentication in clear text only ever to this machine (tests, kubectl port-forward).
if [[ $ontap =~ ^http://(127\.[0-9.]+|localhost|\[::1\])(:[0-9]+)?$ ]]; then
        proto='=http'
elif [[ $ontap =~ ^https://[^/?#@[:space:]]+$ ]]; then
        proto='=https'
else
        die 2 "--ontap must be https://HOST[:PORT] (http:// only to a loopback address): '$ontap'"
fi
if [[ -n $uuid && -n $dest ]]; then
        die 2 "give --uuid or --destination-path, not both"
elif [[ -n $uuid ]]; then
        [[ $uuid =~ ^[0-9a-fA-F-]{36}$ ]] || die 2 "--uuid is not a relationship uuid: '$uuid'"
elif [[ -n $dest ]]; then
        [[ $dest =~ ^[^:[:space:]]+:[^[:space:]]+$ ]] || die 2 "--destination-path must be SVM:VOLUME: '$dest'"
else
        die 2 "no relationship: give --uuid UUID or --destination-path SVM:VOLUME"
fi
[[ -n $creds ]] || die 2 "no credentials: give --credentials-file FILE (one line USER:PASSWORD)"
[[ -r $creds && -f $creds ]] || die 2 "cannot read the credentials file $creds"
[[ -z $cacert || -r $cacert ]] || die 2 "cannot read the CA file $cacert"
command -v curl >/dev/null || die 1 "curl is not installed"
command -v jq >/dev/null || die 1 "jq is not installed"

# The credentials, as a curl config line: inside double quotes curl unescapes \\ and \".
IFS= read -r cred_line <"$creds" || [[ -n ${cred_line:-} ]] || die 2 "the credentials file $creds is empty"
cred_line=${cred_line%$'\r'}
[[ $cred_line == ?*:?* ]] || die 2 "the credentials file $creds must hold one line USER:PASSWORD"
cred_line=${cred_line//\\/\\\\}
curl_config="user = \"${cred_line//\"/\\\"}\""
unset cred_line

# call METHOD PATH [CURL_ARGS...]: one request; sets http_code and body. Exits 1 when ONTAP
# cannot be reached.
http_code=
body=
call() {
        local method=$1 path=$2 out rc=0
        shift 2
        local args=(--silent --show-error --proto "$proto" --max-time "$timeout"
                --connect-timeout "$((timeout < 10 ? timeout : 10))" --request "$method"
                --header "Accept: application/json" --config - --write-out '\n%{http_code}')
        [[ -n $cacert ]] && args+=(--cacert "$cacert")
        out=$(curl "${args[@]}" "$@" "$ontap$path" 2>&1 <<<"$curl_config") || rc=$?
        if ((rc != 0)); then
                die 1 "$method $path: cannot reach $ontap: $(grep -m1 '^curl: ' <<<"$out" | sed 's/^curl: ([0-9]*) //')"
        fi
        http_code=${out##*$'\n'}
        body=${out%$'\n'*}
        [[ $body == "$out" ]] && body=
        return 0
}

# ONTAP's own error text ({"error": {"message", "code"}}), else the body's first line.
ontap_error() {
        local msg
        msg=$(jq -r '.error.message // empty' <<<"$body" 2>/dev/null || true)
        [[ -n $msg ]] || msg=$(head -n 1 <<<"$body" | cut -c1-200)
        echo "HTTP $http_code${msg:+: $msg}"
}

if [[ -z $uuid ]]; then
        call GET /api/snapmirror/relationships --get --data-urlencode "destination.path=$dest" \
                --data-urlencode "fields=uuid,state"
        [[ $http_code == 200 ]] || die 1 "looking up the relationship of $dest: $(ontap_error)"
        n=$(jq -r '.records | length' <<<"$body" 2>/dev/null) || die 1 "looking up $dest: not a JSON answer"
        ((n == 1)) || die 1 "$n SnapMirror relationships have the destination $dest (want exactly 1)"
        uuid=$(jq -r '.records[0].uuid // empty' <<<"$body")
        [[ $uuid =~ ^[0-9a-fA-F-]{36}$ ]] || die 1 "looking up $dest: the answer has no relationship uuid"
fi

call POST "/api/snapmirror/relationships/$uuid/transfers" \
        --header "Content-Type: application/json" --data '{}'
case $http_code in
200 | 201 | 202) ;;
*) die 1 "update of relationship $uuid refused: $(ontap_error)" ;;
esac
job=$(jq -r '.job.uuid // empty' <<<"$body" 2>/dev/null || true)
if ((!wait)); then
        echo "$me: update of SnapMirror relationship $uuid requested${job:+ (job $job)}"
        exit 0
fi
[[ $job =~ ^[0-9a-fA-F-]{36}$ ]] || {
        echo "$me: update of SnapMirror relationship $uuid done (HTTP $http_code, no job to wait for)"
        exit 0
}

# Poll the job: queued/running/paused until success or failure, within --wait-timeout.
deadline=$((SECONDS + wait_timeout))
while :; do
        call GET "/api/cluster/jobs/$job" --get --data-urlencode "fields=state,message,code"
        [[ $http_code == 200 ]] || die 1 "job $job of relationship $uuid: $(ontap_error)"
        state=$(jq -r '.state // empty' <<<"$body" 2>/dev/null || true)
        case $state in
        success)
                echo "$me: update of SnapMirror relationship $uuid finished (job $job: success)"
                exit 0
                ;;
        failure)
                die 1 "update of relationship $uuid failed (job $job): $(jq -r '.message // "no message"' <<<"$body")"
                ;;
        queued | running | paused) ;;
        *) die 1 "job $job of relationship $uuid: unexpected state '$state'" ;;
        esac
        ((SECONDS + poll <= deadline)) || die 1 "job $job of relationship $uuid still $state after ${wait_timeout}s"
        sleep "$poll"
done
