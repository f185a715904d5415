#!/usr/bin/env bash
# test_deploy_jobs.sh - the jobs of deploy/kubernetes/ run for real: each job's exact command
# line and environment, as tests/tools/job_commands.py extracts them from the manifests, with the
# cluster's paths and addresses mapped to real stand-ins here: a TLS etcd for site A and one for
# site B (kubeadm-style client certificates), a real Pushgateway, the ONTAP stand-in for the
# SnapMirror hook, a kubelet-shaped pods directory with a bind-mounted volume (in a private mount
# namespace), and a copy of the repository as the SnapMirror replica.
#
# Site A: the etcd job records a backup set and its post-hook asks "ONTAP" for a transfer; the
# volume job backs up the listed volume; retention and check run; every job pushes its metrics
# under its own instance. Site B: the volume restore job brings the volume back byte for byte,
# the cluster restore job writes shop's objects (not its pods, claims or endpoints, nor other
# namespaces) into B's etcd, the replica check passes, and the replica is not changed by any of
# them. Every line any job prints is a JSON object (what log collectors need).
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3
"$PY" -c 'import yaml' 2>/dev/null || fail "/usr/bin/python3 has no yaml module (apt-get install python3-yaml)"
command -v prometheus-pushgateway >/dev/null || fail "prometheus-pushgateway not installed (scripts/setup.sh)"
if ((EUID != 0)) || ! command -v unshare >/dev/null; then
        note "needs root (bind mounts in a private mount namespace): skipped"
        pass
        exit 0
fi
DEPLOY=$KB_SOURCE_DIR/deploy

# ---- stand-ins ----
etcd_start --tls
A_ENDPOINT=$ETCD_ENDPOINT A_CACERT=$ETCD_CACERT A_CERT=$ETCD_CERT A_KEY=$ETCD_KEY
for kv in "/registry/namespaces/shop=ns-shop-A" "/registry/configmaps/shop/settings=cm-settings" \
        "/registry/deployments/shop/shop=deploy-shop" "/registry/services/specs/shop/shop=svc-shop" \
        "/registry/pods/shop/shop-7d9f-abcde=pod-on-site-A" \
        "/registry/persistentvolumeclaims/shop/data-postgres-0=pvc-on-site-A" \
        "/registry/services/endpoints/shop/shop=endpoints-site-A" \
        "/registry/endpointslices/shop/shop-x1=slice-site-A" \
        "/registry/configmaps/billing/rates=other-namespace"; do
        ectl put "${kv%%=*}" "${kv#*=}" >/dev/null
done
etcd_start --tls
B_ENDPOINT=$ETCD_ENDPOINT B_CACERT=$ETCD_CACERT B_CERT=$ETCD_CERT B_KEY=$ETCD_KEY B_FLAGS=$ETCDCTL_FLAGS
# The DR runbook creates the namespace at B before the restore: its key must be left alone.
ectl put /registry/namespaces/shop ns-shop-B >/dev/null

PG_PORT=$(closed_port)
prometheus-pushgateway --web.listen-address="127.0.0.1:$PG_PORT" >"$KB_TMP/pushgateway.log" 2>&1 &
kb_track_pid $!
PG=http://127.0.0.1:$PG_PORT
for _ in $(seq 1 100); do
        curl -sf "$PG/-/ready" >/dev/null 2>&1 && break
        sleep 0.1
done
curl -sf "$PG/-/ready" >/dev/null || fail "the pushgateway did not start: $(cat "$KB_TMP/pushgateway.log")"

REL_UUID=4ea7a442-86d1-11e0-ae1c-123478563412
STUB=$KB_TMP/stub
mkdir -p "$STUB"
head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$STUB/secret"
python3 "$KB_TOOLS/ontap_stub.py" --port-file "$STUB/port" --log "$STUB/requests.jsonl" \
        --secret-file "$STUB/secret" --relationship "svm_dr:kbackup_repo_mirror=$REL_UUID" \
        --job-states running,success --lifetime 600 &
kb_track_pid $!
for _ in $(seq 1 100); do [[ -s $STUB/port ]] && break; sleep 0.1; done
[[ -s $STUB/port ]] || fail "ontap_stub.py did not start"
ONTAP=$KB_TMP/ontap
mkdir -p "$ONTAP"
printf 'kbackup-sm:%s\n' "$(cat "$STUB/secret")" >"$ONTAP/credentials"
: >"$ONTAP/ca.crt"

PWDIR=$KB_TMP/password-secret
mkdir -p "$PWDIR"
cp "$KBACKUP_PASSWORD_FILE" "$PWDIR/password"
REPO=$KB_TMP/repo
kb_init "$REPO"

# The volume shop/data-postgres-0 of the volume list, mounted by a pod on this "node".
PV=$(awk '$2 == "shop/data-postgres-0" {print $1}' <<<"$("$PY" -c 'import sys, yaml
for d in yaml.safe_load_all(open(sys.argv[1])):
    if d["metadata"]["name"] == "kbackup-volumes":
        print(d["data"]["volumes.txt"])' "$DEPLOY/kubernetes/settings.yaml")")
[[ -n $PV ]] || fail "settings.yaml lists no PV for shop/data-postgres-0"
PODS=$KB_TMP/kubelet/pods
MNT=$PODS/0f1e2d3c-aaaa-bbbb-cccc-123456789abc/volumes/kubernetes.io~csi/$PV/mount
mkdir -p "$MNT"
mktree "$KB_TMP/pgdata" --seed 21 --quiet
mktree "$KB_TMP/pgdata-ref" --seed 21 --quiet
TARGET=$KB_TMP/target
mkdir -p "$TARGET"

# job NAME SITE: run the job's container command (site a or b); output in $KB_OUT/$KB_ERR, exit
# code in KB_RC. Every line it prints must be a JSON object.
job() {
        local name=$1 site=$2 out map repo endpoint cacert cert key
        out=$KB_TMP/jobs/$name
        mkdir -p "$out/bin"
        ln -sf "$KBACKUP" "$out/bin/kbackup"
        ln -sf "$KB_SOURCE_DIR/scripts/snapmirror-update.sh" "$out/bin/kbackup-snapmirror-update"
        ln -sf "$KB_SOURCE_DIR/scripts/backup-node-volumes.sh" "$out/bin/kbackup-node-volumes"
        if [[ $site == a ]]; then
                repo=$REPO endpoint=$A_ENDPOINT cacert=$A_CACERT cert=$A_CERT key=$A_KEY
        else
                repo=$REPLICA endpoint=$B_ENDPOINT cacert=$B_CACERT cert=$B_CERT key=$B_KEY
        fi
        map=$(jq -n --arg repo "$repo" --arg pw "$PWDIR" --arg ontap "$ONTAP" --arg pg "$PG" \
                --arg stub "http://127.0.0.1:$(cat "$STUB/port")" --arg ep "$endpoint" --arg ca "$cacert" \
                --arg cert "$cert" --arg key "$key" --arg pods "$PODS" --arg target "$TARGET" '{
                "/repository": $repo, "/etc/kbackup/password": $pw, "/etc/kbackup/ontap": $ontap,
                "http://prometheus-pushgateway.monitoring.svc:9091": $pg,
                "https://ontap-dr.example.com": $stub, "https://127.0.0.1:2379": $ep,
                "/etc/kubernetes/pki/etcd/ca.crt": $ca,
                "/etc/kubernetes/pki/etcd/healthcheck-client.crt": $cert,
                "/etc/kubernetes/pki/etcd/healthcheck-client.key": $key,
                "/var/lib/kubelet/pods": $pods, "/target": $target}')
        "$PY" "$KB_TOOLS/job_commands.py" "$DEPLOY" "$name" "$out" "$map" >"$out/runner" ||
                fail "cannot extract the command of $name"
        KB_RC=0
        # shellcheck disable=SC2016 # expanded by the inner shell
        timeout -k 10 600 unshare --mount --propagation private bash -c '
                mount --bind "$1" "$2" && exec bash "$3"' _ "$KB_TMP/pgdata" "$MNT" "$(cat "$out/runner")" \
                </dev/null >"$KB_OUT" 2>"$KB_ERR" || KB_RC=$?
        assert_no_sanitizer "$KB_ERR"
        "$PY" - "$KB_OUT" "$KB_ERR" <<'EOF' || fail "$name printed lines that are not JSON objects"
import json, sys
for path in sys.argv[1:]:
    for n, line in enumerate(open(path), 1):
        try:
            assert isinstance(json.loads(line), dict)
        except Exception:
            sys.exit("%s:%d: %r" % (path, n, line[:300]))
EOF
}
expect_job() { # NAME SITE
        job "$1" "$2"
        ((KB_RC == 0)) || fail "job $1 exited $KB_RC:
$(head -c 3000 "$KB_ERR")"
}
# pushed NAME_REGEX: a series matching it is on the Pushgateway.
pushed() {
        curl -sf "$PG/metrics" >"$KB_TMP/pushed.txt" || fail "cannot read the Pushgateway's metrics"
        grep -Eq -- "$1" "$KB_TMP/pushed.txt" || fail "not on the Pushgateway: /$1/"
}
snapjson() { kb --repo "$1" snapshots --json; }

# ---- site A ----
expect_job kbackup-etcd a
snapjson "$REPO" >"$KB_TMP/snaps.json"
"$PY" - "$KB_TMP/snaps.json" <<'EOF' || fail "the etcd job recorded no backup set of profile prod"
import json, sys
s = [x for x in json.load(open(sys.argv[1])) if x["kind"] == "etcd"]
assert len(s) == 1 and s[0]["cluster"] == "prod" and s[0]["set"] and s[0]["tags"].get("schedule") == "hourly", s
EOF
grep -q '"method": "POST", "path": "/api/snapmirror/relationships/'"$REL_UUID"'/transfers"' "$STUB/requests.jsonl" ||
        fail "the etcd job's post-hook did not request a SnapMirror transfer: $(cat "$STUB/requests.jsonl")"
[[ $(grep -c '/api/cluster/jobs/' "$STUB/requests.jsonl") == 2 ]] ||
        fail "the post-hook's --wait did not poll the ONTAP job to success"
pushed 'kbackup_last_success_timestamp_seconds\{.*instance="etcd".*kind="cluster".*source="prod"'

expect_job kbackup-volumes-worker-1 a
snapjson "$REPO" | jq -e '[.[] | select(.kind == "volume" and .name == "shop/data-postgres-0")] | length == 1' \
        >/dev/null || fail "the volume job did not back up shop/data-postgres-0"
pushed 'kbackup_last_success_timestamp_seconds\{.*instance="shop_data-postgres-0".*kind="volume"'

expect_job kbackup-retention a
pushed 'kbackup_last_run_success\{command="forget",instance="retention".*\} 1'
expect_job kbackup-check a
pushed 'kbackup_last_run_success\{command="check",instance="check".*\} 1'
[[ $(snapshot_count "$REPO") == 2 ]] || fail "retention removed snapshots it must keep"

# ---- site B, from a copy of the repository that nothing may change ----
REPLICA=$KB_TMP/replica
cp -a "$REPO" "$REPLICA"
before=$(repo_state "$REPLICA")

expect_job kbackup-restore-data-postgres-0 b
treecmp "$KB_TMP/pgdata-ref" "$TARGET" --ignore-atime-dirs --no-root-meta

expect_job kbackup-dr-restore b
ETCDCTL_FLAGS=$B_FLAGS
get() { ectl get "$1" --print-value-only; }
[[ $(get /registry/configmaps/shop/settings) == cm-settings ]] || fail "shop's ConfigMap was not restored at B"
[[ $(get /registry/deployments/shop/shop) == deploy-shop ]] || fail "shop's Deployment was not restored at B"
[[ $(get /registry/services/specs/shop/shop) == svc-shop ]] || fail "shop's Service was not restored at B"
[[ $(get /registry/namespaces/shop) == ns-shop-B ]] || fail "B's own namespace object was overwritten"
for k in /registry/pods/shop/shop-7d9f-abcde /registry/persistentvolumeclaims/shop/data-postgres-0 \
        /registry/services/endpoints/shop/shop /registry/endpointslices/shop/shop-x1 /registry/configmaps/billing/rates; do
        [[ -z $(get "$k") ]] || fail "$k must not be restored at B"
done

expect_job kbackup-replica-check b
pushed 'kbackup_last_run_success\{command="check",instance="replica-check",job="kbackup-replica".*\} 1'
[[ $(repo_state "$REPLICA") == "$before" ]] || fail "a DR job changed the replica"
pass
