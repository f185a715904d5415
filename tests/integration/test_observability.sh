#!/usr/bin/env bash
# test_observability.sh - what an operator watches: Prometheus metrics after a run (a textfile that
# promtool and a strict parser accept, every value equal to the backup's own --json summary, the
# time of the last success kept when a later run fails), the same pushed to a real Pushgateway and
# read back from it, --log-format json (every stderr line a JSON object with time, level, msg,
# errors included), and --pre-hook/--post-hook (order, documented environment, no secret in it, a
# failing pre-hook aborting, a failing post-hook giving exit 3, a hung hook killed with its child).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

command -v promtool >/dev/null || fail "promtool not installed (Debian package prometheus; scripts/setup.sh)"
command -v prometheus-pushgateway >/dev/null ||
        fail "prometheus-pushgateway not installed (scripts/setup.sh)"

REPO=$KB_TMP/repo
SRC=$KB_TMP/src
PROM=$KB_TMP/textfile/kbackup.prom
mkdir -p "$SRC/a/b" "$KB_TMP/textfile"
for i in $(seq 1 30); do head -c $((i * 3000)) /dev/urandom >"$SRC/a/f$i"; done
seq 1 200000 >"$SRC/a/b/compressible"
kb_init "$REPO"

# metrics_json FILE: the file checked by promtool and by a strict parser of the text format
# (HELP and TYPE gauge before each family, families contiguous, labels quoted and escaped,
# values numbers), printed as {"name{k=v,...}": value} with labels sorted.
metrics_json() {
        promtool check metrics <"$1" >"$KB_TMP/promtool.out" 2>&1 ||
                fail "promtool rejects $1: $(cat "$KB_TMP/promtool.out")"
        python3 - "$1" <<'EOF' || fail "metrics file $1 does not parse strictly"
import json, re, sys
name_re = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
label_re = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
out, typed, done, current = {}, set(), set(), None
for n, line in enumerate(open(sys.argv[1], encoding="utf-8").read().split("\n"), 1):
    if line == "":
        continue
    m = re.fullmatch(r"# (HELP|TYPE) (%s) (.+)" % name_re, line)
    if m:
        if m.group(1) == "TYPE":
            assert m.group(3) == "gauge", (n, line)
            assert m.group(2) not in typed, ("family repeated", n, line)
            typed.add(m.group(2))
        if current and m.group(2) != current:
            done.add(current)
        current = m.group(2)
        continue
    m = re.fullmatch(r"(%s)(?:\{(.*)\})? (\S+)" % name_re, line)
    assert m, (n, line)
    name, labels, value = m.groups()
    assert name == current and name in typed and name not in done, ("not in its family", n, line)
    pairs = []
    if labels:
        pos = 0
        while pos < len(labels):
            lm = label_re.match(labels, pos)
            assert lm, (n, line)
            v = lm.group(2).replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
            pairs.append((lm.group(1), v))
            pos = lm.end()
            if pos < len(labels):
                assert labels[pos] == ",", (n, line)
                pos += 1
    key = name + "{" + ",".join("%s=%s" % p for p in sorted(pairs)) + "}"
    assert key not in out, ("duplicate series", n, line)
    out[key] = float(value)
print(json.dumps(out))
EOF
}

# check_metrics METRICS_JSON SUMMARY_JSON LABELS EXPECTATIONS_PY: run python assertions with m
# (the metrics of one label set, by short name), s (the backup's --json summary) in scope.
check_metrics() {
        python3 - "$1" "$2" "$3" "$4" <<'EOF' || fail "metric values: see above"
import json, sys
allm = json.load(open(sys.argv[1]))
s = json.loads(open(sys.argv[2]).read().splitlines()[-1]) if sys.argv[2] != "-" else {}
labels = "{" + sys.argv[3] + "}"
m = {k[len("kbackup_"):-len(labels)]: v for k, v in allm.items() if k.endswith(labels)}
for cond in sys.argv[4].split(";"):
    cond = cond.strip()
    if cond and not eval(cond):
        sys.exit("FAILED: %s\n  metrics %s\n  summary %s" % (cond, m, s))
EOF
}

repo_bytes() {
        find "$REPO/data" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}'
}

# ---- metrics file: values equal the backup's own summary ----
t0=$(date +%s)
expect_exit 0 kb --repo "$REPO" --metrics-file "$PROM" backup volume "$SRC" --json
cp "$KB_OUT" "$KB_TMP/first.json"
t1=$(date +%s)
metrics_json "$PROM" >"$KB_TMP/m1.json"
L="command=backup,kind=volume,source=$SRC"
check_metrics "$KB_TMP/m1.json" "$KB_TMP/first.json" "$L" "
        m['bytes_read'] == s['bytes_read'] > 0; m['bytes_new'] == s['bytes_new'] > 0;
        m['bytes_stored'] == s['bytes_stored'] > 0; m['files'] == s['files'] == 31;
        m['errors'] == s['errors'] == 0; m['last_run_success'] == 1; m['last_exit_code'] == 0;
        $t0 <= m['last_run_timestamp_seconds'] <= $t1;
        m['last_success_timestamp_seconds'] == m['last_run_timestamp_seconds'];
        m['duration_seconds'] >= s['duration_sec'] - 0.002;
        m['snapshots'] == $(snapshot_count "$REPO") == 1;
        m['repository_size_bytes'] == $(repo_bytes) > 0"

# A second, incremental backup: the new numbers, again equal to its summary. A stray file among
# the snapshot records is no snapshot, for the metric as for `snapshots`.
echo "not kbackup's" >"$REPO/snapshots/README"
expect_exit 0 kb --repo "$REPO" backup volume "$SRC" --json --metrics-file "$PROM"
cp "$KB_OUT" "$KB_TMP/second.json"
metrics_json "$PROM" >"$KB_TMP/m2.json"
check_metrics "$KB_TMP/m2.json" "$KB_TMP/second.json" "$L" "
        m['bytes_read'] == s['bytes_read']; m['bytes_new'] == s['bytes_new'] < 100000;
        m['bytes_stored'] == s['bytes_stored']; m['files'] == s['files'] == 31;
        m['snapshots'] == $(snapshot_count "$REPO") == 2; m['repository_size_bytes'] == $(repo_bytes)"
last_ok=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))[sys.argv[2]]))' \
        "$KB_TMP/m2.json" "kbackup_last_success_timestamp_seconds{$L}")

# With --name, the name is the source label (a PV's mount path changes with every pod).
kb_init "$KB_TMP/repo-named"
expect_exit 0 kb --repo "$KB_TMP/repo-named" backup volume "$SRC" --name ns/obs-pvc --json \
        --metrics-file "$KB_TMP/named.prom"
metrics_json "$KB_TMP/named.prom" >"$KB_TMP/named.json"
check_metrics "$KB_TMP/named.json" "$KB_OUT" "command=backup,kind=volume,source=ns/obs-pvc" "
        m['files'] == s['files'] == 31; m['last_run_success'] == 1"

# ---- a failed run keeps the last success; another command shares the file ----
sleep 1 # a new run timestamp
printf 'wrong password\n' >"$KB_TMP/wrong"
expect_exit 1 kb --repo "$REPO" --password-file "$KB_TMP/wrong" --metrics-file "$PROM" \
        backup volume "$SRC"
metrics_json "$PROM" >"$KB_TMP/m3.json"
check_metrics "$KB_TMP/m3.json" - "$L" "
        m['last_success_timestamp_seconds'] == $last_ok; m['last_run_success'] == 0;
        m['last_exit_code'] == 1; m['last_run_timestamp_seconds'] > $last_ok;
        'bytes_read' not in m"
expect_exit 0 kb --repo "$REPO" check --metrics-file "$PROM"
metrics_json "$PROM" >"$KB_TMP/m4.json"
check_metrics "$KB_TMP/m4.json" - "command=check,kind=" "
        m['last_run_success'] == 1; m['errors'] == 0; m['snapshots'] == 2"
check_metrics "$KB_TMP/m4.json" - "$L" "m['last_success_timestamp_seconds'] == $last_ok"
extra=$(find "$KB_TMP/textfile" -mindepth 1 ! -name kbackup.prom)
[[ -z $extra ]] || fail "temp files left: $extra"

# --help runs nothing: no metrics.
expect_exit 0 kb --repo "$REPO" --metrics-file "$KB_TMP/help.prom" backup volume --help
[[ ! -e $KB_TMP/help.prom ]] || fail "--help wrote metrics"
# A metrics file that cannot be written is a warning, not a failed backup.
expect_exit 0 kb --repo "$REPO" --metrics-file "$KB_TMP/no/such/dir.prom" backup volume "$SRC"
grep -q "warning: metrics: .*no/such" "$KB_ERR" || fail "no warning for an unwritable metrics file"

# ---- Pushgateway ----
PG_PORT=$(closed_port)
prometheus-pushgateway --web.listen-address="127.0.0.1:$PG_PORT" >"$KB_TMP/pushgateway.log" 2>&1 &
PG_PID=$!
kb_track_pid "$PG_PID"
PG=http://127.0.0.1:$PG_PORT
for _ in $(seq 1 100); do
        curl -sf "$PG/-/ready" >/dev/null 2>&1 && break
        kill -0 "$PG_PID" 2>/dev/null || fail "pushgateway died: $(cat "$KB_TMP/pushgateway.log")"
        sleep 0.1
done
curl -sf "$PG/-/ready" >/dev/null || fail "pushgateway not ready"

pg_metrics() { # the pushed kbackup_* series, through the strict parser
        curl -sf "$PG/metrics" | grep -E '^(# (HELP|TYPE) )?kbackup_' >"$KB_TMP/pg.txt" ||
                fail "nothing pushed"
        metrics_json "$KB_TMP/pg.txt"
}
expect_exit 0 kb --repo "$REPO" --pushgateway "$PG/" --pushgateway-job kbtest \
        --pushgateway-instance node/a backup volume "$SRC" --json
cp "$KB_OUT" "$KB_TMP/pushed.json"
pg_metrics >"$KB_TMP/pg1.json"
PL="command=backup,instance=node/a,job=kbtest,kind=volume,source=$SRC"
check_metrics "$KB_TMP/pg1.json" "$KB_TMP/pushed.json" "$PL" "
        m['bytes_read'] == s['bytes_read']; m['bytes_new'] == s['bytes_new'];
        m['bytes_stored'] == s['bytes_stored']; m['files'] == s['files']; m['errors'] == 0;
        m['last_run_success'] == 1; m['snapshots'] == $(snapshot_count "$REPO");
        m['last_success_timestamp_seconds'] == m['last_run_timestamp_seconds']"
pushed_ok=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))[sys.argv[2]]))' \
        "$KB_TMP/pg1.json" "kbackup_last_success_timestamp_seconds{$PL}")
sleep 1
expect_exit 1 kb --repo "$REPO" --password-file "$KB_TMP/wrong" --pushgateway "$PG" \
        --pushgateway-job kbtest --pushgateway-instance node/a backup volume "$SRC"
pg_metrics >"$KB_TMP/pg2.json"
check_metrics "$KB_TMP/pg2.json" - "$PL" "
        m['last_success_timestamp_seconds'] == $pushed_ok; m['last_run_success'] == 0;
        m['last_exit_code'] == 1; m['last_run_timestamp_seconds'] > $pushed_ok"
# The default job and instance: "kbackup" and the host name.
expect_exit 0 kb --repo "$REPO" --pushgateway "$PG" snapshots
pg_metrics >"$KB_TMP/pg3.json"
check_metrics "$KB_TMP/pg3.json" - "command=snapshots,instance=$(hostname),job=kbackup,kind=" \
        "m['last_run_success'] == 1"
# An unreachable Pushgateway is a warning; the backup still succeeds.
expect_exit 0 kb --repo "$REPO" --pushgateway "http://127.0.0.1:$(closed_port)" backup volume "$SRC"
grep -q "warning: metrics: pushgateway" "$KB_ERR" || fail "no warning for a failed push: $(cat "$KB_ERR")"
kill "$PG_PID"
wait "$PG_PID" 2>/dev/null || true
kb_untrack_pid "$PG_PID"

# ---- --log-format json ----
# assert_json_log FILE [MIN_LINES]: every line a JSON object with time (RFC 3339 UTC, ms), level
# and msg.
assert_json_log() {
        python3 - "$1" "${2:-1}" <<'EOF' || fail "stderr is not JSON lines: $(head -c 2000 "$1")"
import json, re, sys
lines = open(sys.argv[1], encoding="utf-8").read().split("\n")
assert lines[-1] == "", "last line not terminated"
lines = lines[:-1]
assert len(lines) >= int(sys.argv[2]), "too few lines: %d" % len(lines)
for l in lines:
    o = json.loads(l)
    assert isinstance(o, dict), l
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["time"]), l
    assert o["level"] in ("info", "warn", "error"), l
    assert isinstance(o["msg"], str) and o["msg"], l
EOF
}
json_lines() { # FILE FILTER_PY: the lines of a json log that satisfy FILTER (o in scope)
        python3 -c '
import json, sys
for l in open(sys.argv[1]):
    o = json.loads(l)
    if eval(sys.argv[2]):
        print(json.dumps(o))' "$1" "$2"
}

expect_exit 0 kb --repo "$REPO" --log-format json backup volume "$SRC" --json
assert_json_log "$KB_ERR" 1
cp "$KB_ERR" "$KB_TMP/log.ok"
python3 - "$KB_OUT" "$KB_TMP/log.ok" <<'EOF' || fail "summary log line does not match the backup"
import json, sys
s = json.loads(open(sys.argv[1]).read())  # stdout is still the --json summary, alone
logs = [json.loads(l) for l in open(sys.argv[2])]
done = [o for o in logs if o["msg"] == "backup finished"]
assert len(done) == 1, logs
d = done[0]
assert d["level"] == "info" and d["exit_code"] == 0 and d["snapshot"] == s["snapshot"], d
for k in ("bytes_read", "bytes_new", "bytes_stored", "files", "errors"):
    assert d[k] == s[k], (k, d, s)
assert d["kind"] == "volume" and d["command"] == "backup", d
EOF
# Errors: a missing path, a bad option, an unknown command, no command; and the environment
# variable instead of the flag.
expect_exit 1 kb --repo "$REPO" --log-format json backup volume "$KB_TMP/missing"
assert_json_log "$KB_ERR" 2
[[ -n $(json_lines "$KB_ERR" 'o["level"] == "error" and "missing" in o["msg"]') ]] ||
        fail "the error is not a level=error line: $(cat "$KB_ERR")"
expect_exit 2 kb --repo "$REPO" backup volume "$SRC" --no-such-flag --log-format=json
assert_json_log "$KB_ERR" 2
grep -q -- '--no-such-flag' "$KB_ERR" || fail "bad option not named: $(cat "$KB_ERR")"
expect_exit 2 kb --log-format json frobnicate
assert_json_log "$KB_ERR" 1
expect_exit 2 env KBACKUP_LOG_FORMAT=json "$KBACKUP"
assert_json_log "$KB_ERR" 1
expect_exit 2 kb --log-format xml snapshots
grep -q "text or json" "$KB_ERR" || fail "bad --log-format value not refused: $(cat "$KB_ERR")"
KBACKUP_LOG_FORMAT=json expect_exit 0 kb --repo "$REPO" check
assert_json_log "$KB_ERR" 1
# Warnings (a socket is skipped) and hook output are log lines too.
python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$SRC/sock"
expect_exit 0 kb --repo "$REPO" --log-format json backup volume "$SRC" \
        --pre-hook 'echo "pre says hi"; echo "to stderr" >&2' --post-hook 'printf "no newline"'
assert_json_log "$KB_ERR" 4
[[ -n $(json_lines "$KB_ERR" 'o["level"] == "warn" and "sock" in o["msg"]') ]] ||
        fail "no warn line for the socket: $(cat "$KB_ERR")"
for want in 'pre/pre says hi' 'pre/to stderr' 'post/no newline'; do
        [[ -n $(json_lines "$KB_ERR" "o.get('hook') == '${want%%/*}' and o['msg'] == '${want#*/}'") ]] ||
                fail "hook output '$want' is not a log line: $(cat "$KB_ERR")"
done
rm "$SRC/sock"

# ---- hooks ----
HK=$KB_TMP/hooks
mkdir -p "$HK"
# A hook that records its environment (one VAR=value per line) in $HK/NAME.env and appends NAME
# to $HK/order.
cat >"$HK/record.sh" <<'EOF'
#!/bin/sh
name=$1
echo "$name" >>"$HOOK_DIR/order"
env | LC_ALL=C sort >"$HOOK_DIR/$name.env"
if [ "$name" = pre ]; then date +%s%N >"$SOURCE_DIR/pre-marker"; fi
if [ "$name" = post ] && [ -n "$KBACKUP_SNAPSHOT_ID" ]; then
        "$KBACKUP" --repo "$KBACKUP_REPOSITORY" ls "$KBACKUP_SNAPSHOT_ID" >"$HOOK_DIR/post.ls" 2>&1
fi
exit "${2:-0}"
EOF
export HOOK_DIR=$HK SOURCE_DIR=$SRC KBACKUP
envval() { # NAME VAR: the value the hook saw, or "<unset>"
        local line
        line=$(grep "^$2=" "$HK/$1.env" || true)
        [[ -n $line ]] && echo "${line#*=}" || echo "<unset>"
}
expect_env() { # NAME VAR WANT
        [[ $(envval "$1" "$2") == "$3" ]] || fail "$1 hook: $2='$(envval "$1" "$2")', want '$3'"
}
no_secret() { # the password (file content, or env) appears nowhere in a hook's environment
        local pw
        pw=$(cat "$KBACKUP_PASSWORD_FILE")
        ! grep -qF "$pw" "$HK/$1.env" || fail "$1 hook saw the repository password"
        ! grep -qF "etcd-secret" "$HK/$1.env" || fail "$1 hook saw the etcd password"
        expect_env "$1" KBACKUP_PASSWORD "<unset>"
        expect_env "$1" KBACKUP_ETCD_PASSWORD "<unset>"
}

n0=$(snapshot_count "$REPO")
rm -f "$HK/order"
KBACKUP_PASSWORD=$(cat "$KBACKUP_PASSWORD_FILE") KBACKUP_ETCD_PASSWORD=etcd-secret \
        expect_exit 0 kb --repo "$REPO" backup volume "$SRC" \
        --pre-hook "sh '$HK/record.sh' pre" --post-hook "sh '$HK/record.sh' post"
id=$(tail -n 1 "$KB_OUT")
[[ $(cat "$HK/order") == $'pre\npost' ]] || fail "hook order: $(cat "$HK/order")"
grep -q "pre-marker" "$HK/post.ls" || fail "the snapshot was not taken after the pre-hook / before the post-hook: $(cat "$HK/post.ls")"
for h in pre post; do
        expect_env $h KBACKUP_HOOK $h
        expect_env $h KBACKUP_COMMAND backup
        expect_env $h KBACKUP_KIND volume
        expect_env $h KBACKUP_SOURCE "$SRC"
        expect_env $h KBACKUP_REPOSITORY "$REPO"
        expect_env $h KBACKUP_PASSWORD_FILE "$KBACKUP_PASSWORD_FILE"
        no_secret $h
done
expect_env pre KBACKUP_STATUS "<unset>"
expect_env pre KBACKUP_SNAPSHOT_ID "<unset>"
expect_env post KBACKUP_STATUS success
expect_env post KBACKUP_EXIT_CODE 0
expect_env post KBACKUP_SNAPSHOT_ID "$id"
expect_env post KBACKUP_ERROR "<unset>"
[[ $(envval post KBACKUP_DURATION_SECONDS) =~ ^[0-9]+\.[0-9]{3}$ ]] ||
        fail "KBACKUP_DURATION_SECONDS='$(envval post KBACKUP_DURATION_SECONDS)'"
(($(snapshot_count "$REPO") == n0 + 1)) || fail "hooked backup recorded no snapshot"

# A failing pre-hook: no backup, exit 1, the post-hook still runs and is told.
n0=$(snapshot_count "$REPO")
rm -f "$HK/order"
expect_exit 1 kb --repo "$REPO" backup volume "$SRC" --pre-hook "sh '$HK/record.sh' pre 4" \
        --post-hook "sh '$HK/record.sh' post"
grep -q "pre-hook failed: exit status 4" "$KB_ERR" || fail "pre-hook failure: $(cat "$KB_ERR")"
[[ $(cat "$HK/order") == $'pre\npost' ]] || fail "hook order after a failed pre-hook: $(cat "$HK/order")"
expect_env post KBACKUP_STATUS failure
expect_env post KBACKUP_EXIT_CODE 1
expect_env post KBACKUP_SNAPSHOT_ID "<unset>"
[[ $(envval post KBACKUP_ERROR) == "pre-hook failed: exit status 4"* ]] ||
        fail "KBACKUP_ERROR='$(envval post KBACKUP_ERROR)'"
(($(snapshot_count "$REPO") == n0)) || fail "a backup ran after a failed pre-hook"

# A failed backup: the post-hook gets the error.
expect_exit 1 kb --repo "$REPO" backup volume "$KB_TMP/missing" --post-hook "sh '$HK/record.sh' post"
expect_env post KBACKUP_STATUS failure
[[ $(envval post KBACKUP_ERROR) == *missing*"No such file"* ]] || fail "KBACKUP_ERROR='$(envval post KBACKUP_ERROR)'"

# A failing post-hook: the snapshot stays, exit 3, one line says why.
n0=$(snapshot_count "$REPO")
expect_exit 3 kb --repo "$REPO" backup volume "$SRC" --post-hook "sh '$HK/record.sh' post 5"
id=$(tail -n 1 "$KB_OUT")
grep -q "post-hook failed: exit status 5" "$KB_ERR" || fail "post-hook failure: $(cat "$KB_ERR")"
(($(snapshot_count "$REPO") == n0 + 1)) || fail "the snapshot of a backup with a failing post-hook is gone"
expect_exit 0 kb --repo "$REPO" ls "$id"

# A hung pre-hook is killed, with its child, at --hook-timeout; nothing is backed up.
n0=$(snapshot_count "$REPO")
start=$(date +%s%N)
expect_exit 1 kb --repo "$REPO" backup volume "$SRC" --hook-timeout 1s \
        --pre-hook "sleep 300 & echo \$! >'$HK/child'; wait"
took=$((($(date +%s%N) - start) / 1000000))
grep -q "pre-hook failed: timed out after 1s" "$KB_ERR" || fail "timeout: $(cat "$KB_ERR")"
((took >= 1000 && took < 8000)) || fail "a 1s hook timeout took ${took}ms"
child=$(cat "$HK/child")
for _ in $(seq 1 50); do
        state=$(awk '{print $3}' "/proc/$child/stat" 2>/dev/null || echo gone)
        [[ $state == gone || $state == Z ]] && break
        sleep 0.1
done
[[ $state == gone || $state == Z ]] || fail "the hook's child $child survived the timeout (state $state)"
(($(snapshot_count "$REPO") == n0)) || fail "a backup ran after a timed-out pre-hook"
expect_exit 2 kb --repo "$REPO" backup volume "$SRC" --hook-timeout soon --pre-hook true

# backup --cluster: flags replace the profile's hooks; the set is described.
cat >"$KB_TMP/config.yaml" <<EOF
clusters:
  obs:
    volumes:
      ns/data: $SRC
    pre_hook: echo profile-pre >>$HK/order
    post_hook: echo profile-post >>$HK/order
EOF
rm -f "$HK/order"
expect_exit 0 kb --repo "$REPO" --metrics-file "$PROM" backup --cluster obs --config "$KB_TMP/config.yaml" \
        --post-hook "sh '$HK/record.sh' post"
set_id=$(tail -n 1 "$KB_OUT")
[[ $(cat "$HK/order") == $'profile-pre\npost' ]] || fail "cluster hooks: $(cat "$HK/order")"
expect_env post KBACKUP_KIND cluster
expect_env post KBACKUP_SOURCE obs
expect_env post KBACKUP_SNAPSHOT_ID "$set_id"
expect_env post KBACKUP_SET_ID "$set_id"
expect_env post KBACKUP_CLUSTER obs
expect_env post KBACKUP_SET_STATUS ok
metrics_json "$PROM" >"$KB_TMP/m5.json"
check_metrics "$KB_TMP/m5.json" - "command=backup,kind=cluster,source=obs" "
        m['last_run_success'] == 1; m['files'] >= 31; m['bytes_read'] > 0"

# backup etcd: the endpoints as given are the source.
etcd_start
ectl put /registry/pods/default/p1 '{"kind":"Pod"}' >/dev/null
expect_exit 0 kb --repo "$REPO" --metrics-file "$PROM" backup etcd --endpoints "$ETCD_ENDPOINT" \
        --json --pre-hook "sh '$HK/record.sh' pre" --post-hook "sh '$HK/record.sh' post"
cp "$KB_OUT" "$KB_TMP/etcd.json"
expect_env pre KBACKUP_KIND etcd
expect_env pre KBACKUP_SOURCE "$ETCD_ENDPOINT"
expect_env post KBACKUP_SNAPSHOT_ID "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["snapshot"])' "$KB_TMP/etcd.json")"
metrics_json "$PROM" >"$KB_TMP/m6.json"
check_metrics "$KB_TMP/m6.json" "$KB_TMP/etcd.json" "command=backup,kind=etcd,source=$ETCD_ENDPOINT" "
        m['bytes_read'] == s['bytes_read'] > 0; m['bytes_new'] == s['bytes_new'];
        m['bytes_stored'] == s['bytes_stored']; m['last_run_success'] == 1"

pass
