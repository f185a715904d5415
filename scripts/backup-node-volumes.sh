#!/usr/bin/env bash
# backup-node-volumes.sh - back up the persistent volumes mounted on this node, one
# 'kbackup backup volume' each, for the per-node volume-backup CronJobs in deploy/kubernetes/.
# In the container image it is /usr/local/bin/kbackup-node-volumes.
#
# Why a script: kubelet mounts a volume at /var/lib/kubelet/pods/POD_UID/volumes/PLUGIN/PV_NAME,
# and the pod uid changes whenever the pod is recreated, so no fixed path can be configured. The
# PV name is stable for the life of the volume, so the list maps PV names to NAMESPACE/PVC (the
# snapshot name a restore looks for) and the pod uid is found here, at run time, without any
# Kubernetes API access.
set -euo pipefail

me=backup-node-volumes

usage() {
        cat <<'EOF'
Usage: backup-node-volumes.sh [--list FILE] [--pods-dir DIR] [--metrics-dir DIR]
                              [--pushgateway URL] [--dry-run] [-- BACKUP_OPTIONS...]

Back up every volume of the list that is mounted on this node, with
  kbackup [--metrics-file ...] [--pushgateway ...] backup volume PATH --name NAMESPACE/PVC BACKUP_OPTIONS
Volumes of the list that are not mounted here are skipped (another node's job has them).

The list (default /etc/kbackup/volumes/volumes.txt): one line "PV_NAME NAMESPACE/PVC" per
volume; blank lines and lines starting with # are ignored. Generate it with
  kubectl get pv -o jsonpath='{range .items[?(@.spec.claimRef)]}{.metadata.name} {.spec.claimRef.namespace}/{.spec.claimRef.name}{"\n"}{end}'
A volume is found at PODS_DIR/*/volumes/*/PV_NAME/mount (CSI) or PODS_DIR/*/volumes/*/PV_NAME
(in-tree plugins such as nfs) and is used only if that directory is a mount point (an unmounted
leftover directory would otherwise be recorded as an empty volume). A PV of volumeMode Block is
found at PODS_DIR/*/volumeDevices/*/PV_NAME, kubelet's link to its device, and backed up as a
device (every byte; reading it needs the device's host path and a privileged container: a link
that leads to no device here is an error). A volume mounted by several pods is backed up once.

Options:
  --list FILE          the list (above)
  --pods-dir DIR       kubelet's pods directory (default /var/lib/kubelet/pods)
  --metrics-dir DIR    write each volume's metrics to DIR/kbackup-volume-NAMESPACE_PVC.prom
                       (kbackup --metrics-file)
  --pushgateway URL    push each volume's metrics (kbackup --pushgateway URL
                       --pushgateway-instance NAMESPACE_PVC, a stable grouping key)
  --dry-run            print what would be backed up, run nothing
  -h, --help           this text
Environment: KBACKUP_BIN (default kbackup), and kbackup's own (KBACKUP_REPOSITORY,
KBACKUP_PASSWORD_FILE, KBACKUP_LOG_FORMAT: with json this script's own lines are JSON too).

Exit codes: 0 every volume found was backed up (also when none is mounted here); 3 some
backups finished with reported errors (kbackup exit 3) and none failed; 1 a backup failed (the
others are still run); 2 usage error or a bad list.
EOF
}

# log LEVEL MSG [KEY VALUE]...: one line on stderr, a JSON object when KBACKUP_LOG_FORMAT=json
# (so a log collector parses every line of the container's output).
log() {
        local level=$1 msg=$2
        shift 2
        if [[ ${KBACKUP_LOG_FORMAT:-text} == json ]]; then
                local args=(--arg time "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" --arg level "$level"
                        --arg msg "$me: $msg")
                # shellcheck disable=SC2016 # jq variables, not shell ones
                local fields='{time: $time, level: $level, msg: $msg}' i=0
                while (($# >= 2)); do
                        args+=(--arg "k$i" "$1" --arg "v$i" "$2")
                        fields+=" + {(\$k$i): \$v$i}"
                        i=$((i + 1))
                        shift 2
                done
                jq -cn "${args[@]}" "$fields" >&2
        else
                local extra=
                while (($# >= 2)); do
                        extra+=" $1=$2"
                        shift 2
                done
                echo "$me: $msg${extra}" >&2
        fi
}

die() { # CODE MESSAGE
        log error "$2"
        exit "$1"
}

list=/etc/kbackup/volumes/volumes.txt
pods=/var/lib/kubelet/pods
metrics_dir=
pushgateway=
dry_run=0
while (($#)); do
        case $1 in
        --list | --pods-dir | --metrics-dir | --pushgateway)
                (($# >= 2)) || die 2 "$1 needs a value (see --help)"
                case $1 in
                --list) list=$2 ;;
                --pods-dir) pods=$2 ;;
                --metrics-dir) metrics_dir=$2 ;;
                --pushgateway) pushgateway=$2 ;;
                esac
                shift 2
                ;;
        --dry-run)
                dry_run=1
                shift
                ;;
        -h | --help)
                usage
                exit 0
                ;;
        --)
                shift
                break
                ;;
        *) die 2 "unknown argument '$1' (see --help)" ;;
        esac
done
backup_args=("$@")
kbackup=${KBACKUP_BIN:-kbackup}

[[ -r $list ]] || die 2 "cannot read the volume list $list"
[[ -d $pods ]] || die 2 "no kubelet pods directory at $pods (is the hostPath mounted?)"
[[ -z $metrics_dir || -d $metrics_dir ]] || die 2 "no metrics directory $metrics_dir"

# Kubernetes names: PV names are DNS subdomains, namespaces DNS labels, PVC names subdomains.
name_re='^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$'
ns_re='^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'
declare -A seen_pv=()
pvs=() names=()
lineno=0
while IFS= read -r line || [[ -n $line ]]; do
        lineno=$((lineno + 1))
        line=${line%%#*}
        read -r pv name rest <<<"$line" || true
        [[ -z ${pv:-} ]] && continue
        ns=${name%%/*}
        pvc=${name#*/}
        if [[ -n ${rest:-} || $name != */* || ! $pv =~ $name_re || ! $ns =~ $ns_re || ! $pvc =~ $name_re ]]; then
                die 2 "$list line $lineno: want 'PV_NAME NAMESPACE/PVC', got '$line'"
        fi
        [[ -z ${seen_pv[$pv]:-} ]] || die 2 "$list line $lineno: $pv is listed twice"
        seen_pv[$pv]=1
        pvs+=("$pv")
        names+=("$name")
done <"$list"

# mount_of PV: the first (sorted) mounted directory of PV under the pods dir; for a PV of
# volumeMode Block, the first link kubelet made to its device for a pod; or nothing. A device
# link that leads to no block device is "!LINK": kubelet removes the links it unmaps, so here it
# means the device's host path is not visible to this job, and the PV would be missed in silence.
mount_of() {
        local d
        for d in "$pods"/*/volumes/*/"$1"/mount "$pods"/*/volumes/*/"$1"; do
                [[ -d $d ]] || continue
                if mountpoint -q "$d"; then
                        echo "$d"
                        return 0
                fi
        done
        for d in "$pods"/*/volumeDevices/*/"$1"; do
                if [[ -b $d ]]; then
                        echo "$d"
                        return 0
                fi
        done
        for d in "$pods"/*/volumeDevices/*/"$1"; do
                if [[ -L $d ]]; then
                        echo "!$d"
                        return 0
                fi
        done
        return 0
}

rc=0 found=0
for i in "${!pvs[@]}"; do
        pv=${pvs[i]} name=${names[i]}
        path=$(mount_of "$pv")
        [[ -n $path ]] || continue
        found=$((found + 1))
        if [[ $path == !* ]]; then
                log error "$name: kubelet's device link ${path#!} leads to no block device here (is /var/lib/kubelet/plugins mounted, and the job privileged?)" volume "$name"
                rc=1
                continue
        fi
        key=${name/\//_} # NAMESPACE_PVC: '_' is in no Kubernetes name, so this is unambiguous
        global=()
        [[ -z $metrics_dir ]] || global+=(--metrics-file "$metrics_dir/kbackup-volume-$key.prom")
        [[ -z $pushgateway ]] || global+=(--pushgateway "$pushgateway" --pushgateway-instance "$key")
        if ((dry_run)); then
                echo "$kbackup ${global[*]} backup volume $path --name $name ${backup_args[*]}"
                continue
        fi
        log info "backing up $name" volume "$name" pv "$pv" path "$path"
        r=0
        "$kbackup" "${global[@]}" backup volume "$path" --name "$name" "${backup_args[@]}" || r=$?
        case $r in
        0) ;;
        3)
                log warn "$name finished with reported errors" volume "$name"
                ((rc == 1)) || rc=3
                ;;
        *)
                log error "backup of $name failed (exit $r)" volume "$name"
                rc=1
                ;;
        esac
done
log info "$found of ${#pvs[@]} listed volumes are mounted on this node" mounted "$found" listed "${#pvs[@]}"
exit "$rc"
