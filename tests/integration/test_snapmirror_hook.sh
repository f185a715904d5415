#!/usr/bin/env bash
# test_snapmirror_hook.sh - scripts/snapmirror-update.sh, the post-hook that asks ONTAP to update
# the repository's SnapMirror relationship, against tests/tools/ontap_stub.py (plain http on a free
# loopback port; real ONTAP cannot run here). Checks its argument handling, that it stays quiet
# unless the backup succeeded, the exact requests it sends (method, path, query, body,
# Authorization) for --uuid and for --destination-path, job polling with --wait, that HTTP and
# job errors exit 1 with one line, and that the password never shows up in any process's argv or
# environment, in the output, or in a leftover file. When the kbackup binary has --post-hook, a
# real backup runs the hook too.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

HOOK=$KB_SOURCE_DIR/scripts/snapmirror-update.sh
REL_UUID=4ea7a442-86d1-11e0-ae1c-123478563412
OTHER_UUID=5fb8b553-97e2-22f1-bf2d-234589674523
DEST=svm_dr:kbackup_repo_mirror
USER_NAME=kbackup-sm
# Quotes, a backslash, a space, a colon and a dollar: what a naive config or shell would mangle.
# shellcheck disable=SC2016 # the dollar is meant literally
PASSWORD='pa"ss\w:rd $ecret-'$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
CREDS=$KB_TMP/ontap-credentials
printf '%s:%s\n' "$USER_NAME" "$PASSWORD" >"$CREDS"
chmod 600 "$CREDS"
printf '%s\n' "$PASSWORD" >"$KB_TMP/secret"
WANT_AUTH="Basic $(printf '%s:%s' "$USER_NAME" "$PASSWORD" | base64 -w0)"
# The hook runs with its own TMPDIR, which must stay empty (no credential file left behind).
HOOK_TMP=$KB_TMP/hooktmp
mkdir -p "$HOOK_TMP"
ALL_OUT=$KB_TMP/all-output # everything the hook ever printed, checked for the password at the end
: >"$ALL_OUT"

STUB_LOG=
STUB_URL=
STUB_PID=
# stub_start [ontap_stub.py options]: a fresh stub (the previous one stopped) with an empty log.
stub_start() {
        stub_stop
        local dir
        dir=$(kb_tmpdir)
        STUB_LOG=$dir/requests.jsonl
        : >"$STUB_LOG"
        python3 "$KB_TOOLS/ontap_stub.py" --port-file "$dir/port" --log "$STUB_LOG" \
                --secret-file "$KB_TMP/secret" --relationship "$DEST=$REL_UUID" --lifetime 300 "$@" &
        STUB_PID=$!
        kb_track_pid "$STUB_PID"
        local i
        for ((i = 0; i < 100; i++)); do
                [[ -s $dir/port ]] && break
                sleep 0.1
        done
        [[ -s $dir/port ]] || fail "ontap_stub.py did not start"
        STUB_URL=http://127.0.0.1:$(cat "$dir/port")
        BASE=(--ontap "$STUB_URL" --credentials-file "$CREDS")
}
stub_stop() {
        if [[ -n $STUB_PID ]]; then
                kb_stop_bg "$STUB_PID"
                STUB_PID=
        fi
}

# hook STATUS ARGS...: run the hook as kbackup would after a backup with that status; output in
# $KB_OUT/$KB_ERR, exit code in KB_RC.
hook() {
        local status=$1
        shift
        KB_RC=0
        env -u KBACKUP_ONTAP_URL KBACKUP_STATUS="$status" TMPDIR="$HOOK_TMP" \
                timeout -k 5 60 bash "$HOOK" "$@" </dev/null >"$KB_OUT" 2>"$KB_ERR" || KB_RC=$?
        cat "$KB_OUT" "$KB_ERR" >>"$ALL_OUT"
        ((KB_RC != 124 && KB_RC != 137)) || fail "the hook timed out: $*"
}

# expect_hook CODE REGEX STATUS ARGS...: exit CODE and exactly one output line (stdout + stderr)
# matching REGEX.
expect_hook() {
        local code=$1 re=$2
        shift 2
        hook "$@"
        local lines
        lines=$(cat "$KB_OUT" "$KB_ERR")
        if ((KB_RC != code)) || [[ $(printf '%s\n' "$lines" | grep -c .) != 1 ]] ||
                ! grep -Eq -- "$re" <<<"$lines"; then
                fail "hook $* -> exit $KB_RC (want $code), output (want one line /$re/): $lines"
        fi
}

# requests: the stub's log as "METHOD PATH" lines.
requests() {
        python3 -c 'import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(r["method"], r["path"])' "$STUB_LOG"
}

# check_request N METHOD PATH BODY [QUERY_KEY=VALUE...]: request N (from 1) of the stub's log is
# exactly that, with our Basic credentials, and no process showed the password meanwhile.
check_request() {
        python3 - "$STUB_LOG" "$WANT_AUTH" "$@" <<'EOF'
import json, sys
log, auth, n, method, path, body, *query = sys.argv[1:]
reqs = [json.loads(l) for l in open(log)]
r = reqs[int(n) - 1]
want_q = dict(q.split("=", 1) for q in query)
problems = []
if r["method"] != method or r["path"] != path:
    problems.append("got %s %s, want %s %s" % (r["method"], r["path"], method, path))
if r["body"] != body:
    problems.append("body %r, want %r" % (r["body"], body))
if r["authorization"] != auth:
    problems.append("Authorization header is not Basic USER:PASSWORD: %r" % r["authorization"])
if method == "POST" and r["content_type"] != "application/json":
    problems.append("Content-Type %r" % r["content_type"])
for k, v in want_q.items():
    if r["query"].get(k) != v:
        problems.append("query %s=%r, want %r" % (k, r["query"].get(k), v))
if r["secret_in_argv"]:
    problems.append("the password was visible in a process's argv or environment")
if problems:
    sys.exit("request %s: %s" % (n, "; ".join(problems)))
EOF
}

BASE=()
stub_start

# ---- help and usage errors (exit 2, one line, no request) ----
hook success --help
{ ((KB_RC == 0)) && grep -q '^Usage: snapmirror-update.sh' "$KB_OUT"; } ||
        fail "--help: exit $KB_RC, $(head -c 300 "$KB_OUT")"
expect_hook 2 'no ONTAP address' success --uuid "$REL_UUID" --credentials-file "$CREDS"
expect_hook 2 'not both' success "${BASE[@]}" --uuid "$REL_UUID" --destination-path "$DEST"
expect_hook 2 'no relationship' success "${BASE[@]}"
expect_hook 2 'not a relationship uuid' success "${BASE[@]}" --uuid 'x;rm'
expect_hook 2 'must be SVM:VOLUME' success "${BASE[@]}" --destination-path kbackup_repo_mirror
expect_hook 2 'no credentials' success --ontap "$STUB_URL" --uuid "$REL_UUID"
expect_hook 2 'cannot read the credentials file' success --ontap "$STUB_URL" --uuid "$REL_UUID" \
        --credentials-file "$KB_TMP/missing"
echo "no-colon-here" >"$KB_TMP/badcreds"
expect_hook 2 'one line USER:PASSWORD' success --ontap "$STUB_URL" --uuid "$REL_UUID" \
        --credentials-file "$KB_TMP/badcreds"
expect_hook 2 'http:// only to a loopback' success --ontap http://ontap.example.com \
        --uuid "$REL_UUID" --credentials-file "$CREDS"
expect_hook 2 'must be https' success --ontap "https://admin:x@ontap.example.com" \
        --uuid "$REL_UUID" --credentials-file "$CREDS"
expect_hook 2 'positive number' success "${BASE[@]}" --uuid "$REL_UUID" --timeout 0
expect_hook 2 "unknown argument '--bogus'" success "${BASE[@]}" --uuid "$REL_UUID" --bogus
expect_hook 2 'needs a value' success "${BASE[@]}" --uuid
[[ ! -s $STUB_LOG ]] || fail "usage errors sent requests: $(requests)"

# ---- anything but a successful backup: one line, exit 0, nothing sent ----
for st in failure partial ''; do
        expect_hook 0 "status is '${st:-unset}', not success: SnapMirror update skipped" "$st" \
                "${BASE[@]}" --uuid "$REL_UUID"
done
# Even without settings: a failed backup must not turn into a hook error.
expect_hook 0 'skipped' failure
[[ ! -s $STUB_LOG ]] || fail "a skipped update sent requests: $(requests)"

# ---- --uuid: exactly one POST .../transfers with {} ----
expect_hook 0 "update of SnapMirror relationship $REL_UUID requested \(job [0-9a-f-]{36}\)" success \
        "${BASE[@]}" --uuid "$REL_UUID"
[[ $(requests) == "POST /api/snapmirror/relationships/$REL_UUID/transfers" ]] ||
        fail "--uuid: want one POST, got: $(requests)"
check_request 1 POST "/api/snapmirror/relationships/$REL_UUID/transfers" '{}' ||
        fail "--uuid: wrong request"

# ---- settings from the environment (what the manifests use), --destination-path lookup ----
stub_start
KB_RC=0
KBACKUP_ONTAP_URL=$STUB_URL KBACKUP_SNAPMIRROR_DESTINATION=$DEST KBACKUP_ONTAP_CREDENTIALS_FILE=$CREDS \
        KBACKUP_STATUS=success TMPDIR=$HOOK_TMP timeout 60 bash "$HOOK" </dev/null >"$KB_OUT" 2>"$KB_ERR" || KB_RC=$?
cat "$KB_OUT" "$KB_ERR" >>"$ALL_OUT"
{ ((KB_RC == 0)) && grep -q "relationship $REL_UUID requested" "$KB_OUT"; } ||
        fail "env settings + destination path: exit $KB_RC: $(cat "$KB_OUT" "$KB_ERR")"
[[ $(requests | tr '\n' '|') == "GET /api/snapmirror/relationships|POST /api/snapmirror/relationships/$REL_UUID/transfers|" ]] ||
        fail "--destination-path: want GET lookup then POST, got: $(requests)"
check_request 1 GET /api/snapmirror/relationships '' "destination.path=$DEST" || fail "lookup request wrong"
check_request 2 POST "/api/snapmirror/relationships/$REL_UUID/transfers" '{}' || fail "POST after lookup wrong"

# A destination no relationship has, and one that two have: exit 1, nothing POSTed.
expect_hook 1 '0 SnapMirror relationships have the destination svm_dr:other' success "${BASE[@]}" \
        --destination-path svm_dr:other
stub_start --relationship "svm_dr:twice=$REL_UUID" --relationship "svm_dr:twice=$OTHER_UUID"
expect_hook 1 '2 SnapMirror relationships have the destination svm_dr:twice \(want exactly 1\)' success \
        "${BASE[@]}" --destination-path svm_dr:twice
[[ $(requests) == "GET /api/snapmirror/relationships" ]] || fail "ambiguous destination: $(requests)"

# ---- --wait: the job is polled until it ends ----
stub_start --job-states running,running,success
expect_hook 0 "finished \(job [0-9a-f-]{36}: success\)" success "${BASE[@]}" --uuid "$REL_UUID" \
        --wait --poll-interval 1
[[ $(requests | grep -c '^GET /api/cluster/jobs/') == 3 ]] ||
        fail "--wait: want 3 job polls (running, running, success), got: $(requests)"
for i in 2 3 4; do
        check_request "$i" GET "$(requests | sed -n "${i}p" | cut -d' ' -f2)" '' ||
                fail "job poll $i has wrong credentials"
done
stub_start --job-states running,failure
expect_hook 1 'failed \(job [0-9a-f-]{36}\): Transfer failed: destination volume is offline' success \
        "${BASE[@]}" --uuid "$REL_UUID" --wait --poll-interval 1
stub_start --job-states running
expect_hook 1 'still running after 2s' success "${BASE[@]}" --uuid "$REL_UUID" --wait \
        --poll-interval 1 --wait-timeout 2
polls=$(requests | grep -c '^GET /api/cluster/jobs/')
((polls >= 2 && polls <= 4)) || fail "--wait-timeout 2 with 1 s polls made $polls polls"

# ---- errors from ONTAP: HTTP status and ONTAP's message, exit 1 ----
stub_start --post-status 403
expect_hook 1 "refused: HTTP 403: Insufficient privileges" success "${BASE[@]}" --uuid "$REL_UUID"
expect_hook 1 "refused: HTTP 404: entry doesn't exist" success "${BASE[@]}" --uuid "$OTHER_UUID"
# Wrong credentials format is caught before sending; a server that is gone is a one-line error.
port=$(closed_port)
expect_hook 1 "cannot reach http://127.0.0.1:$port" success --ontap "http://127.0.0.1:$port" \
        --uuid "$REL_UUID" --credentials-file "$CREDS" --timeout 5
stub_stop

# ---- with kbackup itself (once the binary has --post-hook; see docs/cli.md) ----
if "$KBACKUP" backup volume --help 2>&1 | grep -q -- '--post-hook'; then
        stub_start
        REPO=$KB_TMP/repo
        kb_init "$REPO"
        SRC=$(kb_tmpdir)
        echo data >"$SRC/file"
        export KBACKUP_ONTAP_URL=$STUB_URL KBACKUP_SNAPMIRROR_UUID=$REL_UUID
        export KBACKUP_ONTAP_CREDENTIALS_FILE=$CREDS
        expect_exit 0 kb --repo "$REPO" backup volume "$SRC" --name test/pvc --post-hook "bash '$HOOK'"
        cat "$KB_OUT" "$KB_ERR" >>"$ALL_OUT"
        [[ $(requests) == "POST /api/snapmirror/relationships/$REL_UUID/transfers" ]] ||
                fail "kbackup --post-hook: want one POST, got: $(requests); stderr: $(head -c 2000 "$KB_ERR")"
        check_request 1 POST "/api/snapmirror/relationships/$REL_UUID/transfers" '{}' ||
                fail "kbackup --post-hook: wrong request"
        # A backup that fails (the source is gone): the hook runs, sees failure, sends nothing.
        : >"$STUB_LOG"
        expect_exit 1 kb --repo "$REPO" backup volume "$KB_TMP/no-such-dir" --post-hook "bash '$HOOK'"
        cat "$KB_OUT" "$KB_ERR" >>"$ALL_OUT"
        grep -q "SnapMirror update skipped" "$KB_ERR" || fail "post-hook after a failed backup did not report skipping"
        [[ ! -s $STUB_LOG ]] || fail "post-hook after a failed backup sent: $(requests)"
        unset KBACKUP_ONTAP_URL KBACKUP_SNAPMIRROR_UUID KBACKUP_ONTAP_CREDENTIALS_FILE
        stub_stop
else
        note "kbackup has no --post-hook yet: the end-to-end hook run is skipped"
fi

# ---- the password: never printed, never left in a file ----
if grep -qF -- "$PASSWORD" "$ALL_OUT"; then
        fail "the password appeared in the hook's output"
fi
[[ -z $(ls -A "$HOOK_TMP") ]] || fail "the hook left files in TMPDIR: $(ls -A "$HOOK_TMP")"
pass
