# shellcheck shell=bash disable=SC2034  # S3_* are set for the sourcing test
# s3_lib.sh - helpers for the S3 integration tests (sourced after lib.sh, never run).
#
# Provides: s3_start (a throwaway s3rver, stopped at exit), s3_kill / s3_resume (an outage on
# the same port and data), aws_s3 (the aws CLI against it, path-style, test credentials only),
# s3_repo (a repository location in the test bucket).

S3_DIRS=()

# lib.sh's EXIT trap cleans up temp files and etcd; stop our servers first, keeping the status.
s3_cleanup() {
        local rc=$? d
        for d in "${S3_DIRS[@]}"; do
                bash "$KB_TOOLS/s3_server.sh" stop "$d" >/dev/null 2>&1 || true
        done
        # kb_cleanup reads the status from $?; errexit would stop the trap at a failing status.
        set +e
        (exit $rc)
        kb_cleanup
}
trap s3_cleanup EXIT

# Only the test server's credentials, whatever the environment of the person running the test.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_REGION AWS_CA_BUNDLE AWS_DEFAULT_PROFILE
unset KBACKUP_S3_CA_FILE KBACKUP_S3_VIRTUAL_HOST KBACKUP_S3_RETENTION_DAYS KBACKUP_S3_RETENTION_MODE
unset KBACKUP_S3_SSE KBACKUP_S3_STORAGE_CLASS KBACKUP_S3_MAX_RETRIES KBACKUP_S3_TIMEOUT
export AWS_SHARED_CREDENTIALS_FILE=/dev/null
# The servers are on loopback; libcurl and the aws CLI would honour a proxy.
unset http_proxy https_proxy HTTPS_PROXY all_proxy ALL_PROXY

# s3_start [s3_server.sh start options]: start s3rver with bucket "kbtest"; sets and exports
# S3_ENDPOINT, S3_PORT, S3_DIR, S3_BUCKET and the AWS_* variables for it.
# shellcheck disable=SC2120  # options are optional
s3_start() {
        local out
        out=$(KB_TEST_TMPDIR=$KB_TMP bash "$KB_TOOLS/s3_server.sh" start --owner $$ "$@") ||
                fail "could not start s3rver ($*); run scripts/setup.sh"
        eval "$out"
        export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION AWS_CONFIG_FILE
        S3_DIRS+=("$S3_DIR")
}

# s3_kill: the server goes away (kill -9), its data stays.
s3_kill() {
        bash "$KB_TOOLS/s3_server.sh" kill "$S3_DIR" || fail "could not kill s3rver"
}

# s3_resume: the same server back, same port and data.
s3_resume() {
        bash "$KB_TOOLS/s3_server.sh" resume "$S3_DIR" >/dev/null || fail "could not restart s3rver"
}

# s3_repo PREFIX: a repository location under the test bucket.
s3_repo() {
        echo "s3:$S3_ENDPOINT/$S3_BUCKET/$1"
}

# aws_s3 ARGS...: `aws ARGS` against the test server (stdout/stderr as is), bounded in time.
aws_s3() {
        command -v aws >/dev/null || fail "the aws CLI is not installed (run scripts/setup.sh)"
        timeout -k 5 120 aws --endpoint-url "$S3_ENDPOINT" "$@"
}
