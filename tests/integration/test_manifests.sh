#!/usr/bin/env bash
# test_manifests.sh - deploy/: the Kubernetes manifests and the monitoring files, checked by
# tests/tools/check_manifests.py (every kbackup command line against the real binary's parser,
# secret references, read-only host mounts, schedules, ...; its header lists everything), as
# written and as `kubectl kustomize` renders them; the alert rules by promtool (syntax, and unit
# tests in tests/tools/alerts_test.yaml). Self-test: each kind of mistake, put into a copy of
# deploy/, must make the check fail with its own message.
set -euo pipefail
# shellcheck source=tests/integration/lib.sh source-path=SCRIPTDIR/../..
source "$(dirname "$0")/lib.sh"

PY=/usr/bin/python3 # Debian's python3 with python3-yaml; a pyenv python3 on PATH may lack yaml
"$PY" -c 'import yaml' 2>/dev/null || fail "/usr/bin/python3 has no yaml module (apt-get install python3-yaml)"
CHECK=$KB_TOOLS/check_manifests.py
DEPLOY=$KB_SOURCE_DIR/deploy
SCRIPTS=$KB_SOURCE_DIR/scripts

check() { # DEPLOY_DIR: run the checker; output in $KB_OUT, exit code in KB_RC
        KB_RC=0
        "$PY" "$CHECK" "$1" "$KBACKUP" "$SCRIPTS" >"$KB_OUT" 2>&1 || KB_RC=$?
}

# ---- the real files ----
check "$DEPLOY"
((KB_RC == 0)) || fail "deploy/ has problems:
$(cat "$KB_OUT")"
note "$(tail -n 1 "$KB_OUT")"

# ---- as kustomize renders them (kubectl's built-in kustomize; no cluster needed) ----
command -v kubectl >/dev/null || fail "kubectl not installed (Debian package kubernetes-client; scripts/setup.sh)"
{
        RENDER=$KB_TMP/rendered
        mkdir -p "$RENDER/kubernetes"
        cp -a "$DEPLOY/monitoring" "$RENDER/monitoring"
        while IFS= read -r k; do
                dir=$(dirname "$k")
                rel=${dir#"$DEPLOY/kubernetes"}
                out=$RENDER/kubernetes$rel
                mkdir -p "$out"
                kubectl kustomize "$dir" >"$out/all.yaml" 2>"$KB_ERR" ||
                        fail "kubectl kustomize $dir: $(cat "$KB_ERR")"
                printf 'resources:\n  - all.yaml\n' >"$out/kustomization.yaml"
                grep -q 'image: registry.example.com/kbackup:0.1.0' "$out/all.yaml" ||
                        fail "kustomize output of $dir has no kbackup image"
        done < <(find "$DEPLOY/kubernetes" -name kustomization.yaml | sort)
        check "$RENDER"
        ((KB_RC == 0)) || fail "the kustomize output has problems:
$(cat "$KB_OUT")"
}

# ---- alert rules: promtool's syntax check and the rule unit tests ----
command -v promtool >/dev/null || fail "promtool not found (Debian package prometheus; scripts/setup.sh)"
promtool check rules "$DEPLOY/monitoring/alerts.yaml" >"$KB_OUT" 2>&1 || fail "promtool check rules: $(cat "$KB_OUT")"
promtool test rules "$KB_TOOLS/alerts_test.yaml" >"$KB_OUT" 2>&1 || fail "promtool test rules: $(cat "$KB_OUT")"
# ... which must notice a changed threshold.
mkdir -p "$KB_TMP/promtest/tools" "$KB_TMP/promtest/deploy/monitoring"
sed 's/> 26 \* 3600/> 50 * 3600/' "$DEPLOY/monitoring/alerts.yaml" >"$KB_TMP/promtest/deploy/monitoring/alerts.yaml"
sed 's#\.\./\.\./deploy#../deploy#' "$KB_TOOLS/alerts_test.yaml" >"$KB_TMP/promtest/tools/alerts_test.yaml"
if promtool test rules "$KB_TMP/promtest/tools/alerts_test.yaml" >/dev/null 2>&1; then
        fail "self-test: the alert unit tests pass with a 50 h threshold"
fi

# ---- self-test: every mistake below must be caught, with its own message ----
MUT=$KB_TMP/mut
# mutate NAME REGEX FILE CODE: copy deploy/, run the Python CODE on FILE's documents (a list
# `docs`; FILE relative to deploy/, written back as YAML), and expect the check to fail with a
# line matching REGEX.
mutate() {
        local name=$1 re=$2 file=$3 code=$4
        rm -rf "$MUT"
        cp -a "$DEPLOY" "$MUT"
        "$PY" - "$MUT/$file" "$code" <<'EOF' || fail "self-test $name: the mutation itself failed"
import sys, yaml
path, code = sys.argv[1:]
docs = list(yaml.safe_load_all(open(path)))
def pod(i):
    o = docs[i]
    t = o["spec"]["jobTemplate"]["spec"]["template"] if o["kind"] == "CronJob" else o["spec"]["template"]
    return t["spec"]
def ctr(i):
    return pod(i)["containers"][0]
exec(code)
yaml.safe_dump_all(docs, open(path, "w"), sort_keys=False)
EOF
        check "$MUT"
        ((KB_RC == 1)) || fail "self-test $name: the check passed (exit $KB_RC)"
        grep -Eq -- "$re" "$KB_OUT" || fail "self-test $name: no line matching /$re/ in:
$(cat "$KB_OUT")"
}
K=kubernetes
mutate hostpath-rw 'hostPath volume etcd-pki \(/etc/kubernetes/pki/etcd\) is mounted without readOnly' \
        $K/etcd-backup.yaml 'ctr(0)["volumeMounts"][4].pop("readOnly")'
mutate kubelet-rw "hostPath volume kubelet-pods .* without readOnly" \
        $K/volume-backup-worker-2.yaml 'ctr(0)["volumeMounts"][3]["readOnly"] = False'
mutate concurrency 'concurrencyPolicy must be Forbid' $K/retention.yaml 'docs[0]["spec"]["concurrencyPolicy"] = "Allow"'
mutate schedule-range "schedule '61 \* \* \* \*' is not a valid" $K/etcd-backup.yaml 'docs[0]["spec"]["schedule"] = "61 * * * *"'
mutate schedule-fields "schedule '0 6 \* \*' is not a valid" $K/check.yaml 'docs[0]["spec"]["schedule"] = "0 6 * *"'
mutate no-deadline 'no startingDeadlineSeconds' $K/check.yaml 'docs[0]["spec"].pop("startingDeadlineSeconds")'
mutate no-backoff 'no backoffLimit' $K/dr-site/restore-cluster.yaml 'docs[0]["spec"].pop("backoffLimit")'
mutate secret-key 'Secret kbackup-ontap has no key ca.pem' \
        $K/etcd-backup.yaml 'pod(0)["volumes"][3]["secret"]["items"][1]["key"] = "ca.pem"'
mutate secret-name 'Secret kbackup/kbackup-passwd is not defined' \
        $K/check.yaml 'pod(0)["volumes"][1]["secret"]["secretName"] = "kbackup-passwd"'
mutate secret-namespace 'Secret shop/kbackup-password is not defined' \
        $K/dr-site/restore-volumes-shop.yaml 'docs[2]["metadata"]["namespace"] = "kbackup"'
mutate configmap 'envFrom ConfigMap kbackup/kbackup-setting is not defined' \
        $K/retention.yaml 'ctr(0)["envFrom"][0]["configMapRef"]["name"] = "kbackup-setting"'
mutate password-file 'KBACKUP_PASSWORD_FILE=/etc/kbackup/password/pw is not a key of a mounted Secret' \
        $K/settings.yaml 'docs[0]["data"]["KBACKUP_PASSWORD_FILE"] = "/etc/kbackup/password/pw"'
mutate password-env 'the password must come from a file' \
        $K/check.yaml 'ctr(0)["env"] = [{"name": "KBACKUP_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "kbackup-password", "key": "password"}}}]'
mutate log-format 'KBACKUP_LOG_FORMAT is not json' $K/settings.yaml 'docs[0]["data"]["KBACKUP_LOG_FORMAT"] = "text"'
# shellcheck disable=SC2016 # a literal $(VAR), as in the manifests
mutate undefined-var '\$\(KBACKUP_PUSHGW\) is not defined' \
        $K/retention.yaml 'ctr(0)["args"][2] = "$(KBACKUP_PUSHGW)"'
mutate bad-flag 'kbackup rejects .*--keep-forever' $K/retention.yaml 'ctr(0)["args"] += ["--keep-forever", "1"]'
mutate flag-position 'kbackup rejects' \
        $K/dr-site/restore-cluster.yaml 'a = ctr(0)["args"]; a.remove("--no-lock"); a.append("--no-lock")'
mutate hook-flag 'snapmirror-update.sh has no option --wait-for' \
        $K/etcd-backup.yaml 'a = ctr(0)["args"]; a[a.index("--post-hook") + 1] = "kbackup-snapmirror-update --wait-for 600"'
mutate no-hook 'no kbackup-snapmirror-update --post-hook' \
        $K/etcd-backup.yaml 'a = ctr(0)["args"]; i = a.index("--post-hook"); del a[i:i + 2]'
mutate node-flag 'backup-node-volumes.sh has no option --pod-dir' \
        $K/volume-backup-worker-1.yaml 'a = ctr(0)["args"]; a[a.index("--pods-dir")] = "--pod-dir"'
mutate node-pass-through 'kbackup rejects' \
        $K/volume-backup-worker-1.yaml 'ctr(0)["args"] += ["--threds", "2"]'
mutate no-metrics 'leaves no metrics' \
        $K/check.yaml 'a = ctr(0)["args"]; i = a.index("--pushgateway"); del a[i:i + 4]'
mutate no-instance 'without --pushgateway-instance' \
        $K/retention.yaml 'a = ctr(0)["args"]; i = a.index("--pushgateway-instance"); del a[i:i + 2]'
mutate group-by 'forget needs --group-by source' \
        $K/retention.yaml 'a = ctr(0)["args"]; i = a.index("--group-by"); del a[i:i + 2]'
mutate no-hostnetwork 'hostNetwork: true' $K/etcd-backup.yaml 'pod(0).pop("hostNetwork")'
mutate no-control-plane 'nodeSelector node-role.kubernetes.io/control-plane' \
        $K/etcd-backup.yaml 'pod(0)["nodeSelector"] = {"kubernetes.io/os": "linux"}'
mutate endpoint 'should be https://127.0.0.1:2379' \
        $K/etcd-backup.yaml 'a = ctr(0)["args"]; a[a.index("--endpoints") + 1] = "https://10.0.0.1:2379"'
mutate cert-path '--key must be a file of /etc/kubernetes/pki/etcd' \
        $K/etcd-backup.yaml 'a = ctr(0)["args"]; a[a.index("--key") + 1] = "/tmp/k.key"'
mutate unpinned 'must be pinned to its node' $K/volume-backup-worker-1.yaml 'pod(0).pop("nodeSelector")'
mutate no-hostname 'fixed hostname' $K/volume-backup-worker-2.yaml 'pod(0).pop("hostname")'
mutate limits 'no limits.memory' $K/check.yaml 'ctr(0)["resources"]["limits"].pop("memory")'
mutate rootfs 'readOnlyRootFilesystem must be true' \
        $K/retention.yaml 'ctr(0)["securityContext"]["readOnlyRootFilesystem"] = False'
mutate caps 'capability SYS_ADMIN is not needed' \
        $K/volume-backup-worker-1.yaml 'ctr(0)["securityContext"]["capabilities"]["add"].append("SYS_ADMIN")'
mutate drop-all 'capabilities must drop ALL' \
        $K/check.yaml 'ctr(0)["securityContext"]["capabilities"]["drop"] = ["NET_RAW"]'
mutate root-reason 'runs as root without an annotation' \
        $K/check.yaml 'docs[0]["spec"]["jobTemplate"]["spec"]["template"]["metadata"].pop("annotations")'
mutate token 'automountServiceAccountToken must be false' $K/retention.yaml 'pod(0)["automountServiceAccountToken"] = True'
mutate dr-rw 'DR restore must read the replica read-only' \
        $K/dr-site/restore-cluster.yaml 'pod(0)["volumes"][0]["nfs"].pop("readOnly"); ctr(0)["volumeMounts"][0].pop("readOnly")'
mutate dr-suspend 'must be created suspended' $K/dr-site/restore-volumes-shop.yaml 'docs[3]["spec"]["suspend"] = False'
mutate dr-script 'kbackup rejects' \
        $K/dr-site/restore-volumes-shop.yaml 'c = ctr(3)["command"]; c[2] = c[2].replace("--target /target", "--tagret /target")'
mutate missing-job 'the primary site has no retention job' \
        $K/retention.yaml 'a = ctr(0)["args"]; a.remove("--prune")'
mutate missing-resource 'resource prune.yaml does not exist' $K/kustomization.yaml 'docs[0]["resources"].append("prune.yaml")'
mutate alert-metric 'metric kbackup_last_sucess_timestamp_seconds is not one kbackup exports' \
        monitoring/alerts.yaml 'r = docs[0]["groups"][0]["rules"][0]; r["expr"] = r["expr"].replace("success_", "sucess_")'
mutate alert-missing 'no alert for a failed check' \
        monitoring/alerts.yaml 'g = docs[0]["groups"][0]; g["rules"] = [r for r in g["rules"] if r.get("alert") != "KbackupCheckFailed"]'

# Mistakes that are not edits of one object: a file no kustomization applies, YAML that does not
# parse, a dashboard query of a metric kbackup has not.
rm -rf "$MUT" && cp -a "$DEPLOY" "$MUT"
cp "$MUT/kubernetes/check.yaml" "$MUT/kubernetes/check-copy.yaml"
check "$MUT"
{ ((KB_RC == 1)) && grep -q 'check-copy.yaml: is in no kustomization.yaml' "$KB_OUT"; } ||
        fail "self-test orphan file: $(cat "$KB_OUT")"
rm -rf "$MUT" && cp -a "$DEPLOY" "$MUT"
printf 'spec:\n  schedule: "5 * * * *"\n   bad: indent\n' >>"$MUT/kubernetes/check.yaml"
check "$MUT"
{ ((KB_RC == 1)) && grep -q 'check.yaml: does not parse' "$KB_OUT"; } || fail "self-test bad YAML: $(cat "$KB_OUT")"
rm -rf "$MUT" && cp -a "$DEPLOY" "$MUT"
sed -i 's/kbackup_bytes_new{/kbackup_bytes_added{/' "$MUT/monitoring/grafana-dashboard.json"
check "$MUT"
{ ((KB_RC == 1)) && grep -q 'metric kbackup_bytes_added is not one kbackup exports' "$KB_OUT"; } ||
        fail "self-test dashboard metric: $(cat "$KB_OUT")"
pass
