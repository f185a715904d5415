#!/usr/bin/python3
"""check_manifests.py - check deploy/ (the Kubernetes manifests and the monitoring files) for the
mistakes that matter in a real cluster, and check every kbackup command line in them against the
real binary.

Usage: check_manifests.py DEPLOY_DIR KBACKUP_BINARY SCRIPTS_DIR
Prints one line per problem and exits 1 if there is any; 0 and a summary otherwise.

Needs PyYAML: run it with Debian's /usr/bin/python3 (python3-yaml), not a pyenv python.

What is checked (each kustomization directory is one cluster's scope: references resolve inside
it, and every YAML file of deploy/kubernetes belongs to exactly one kustomization):
  * every YAML and JSON file parses; every kustomization resource exists; no object is defined
    twice in a scope;
  * CronJobs: a valid 5-field schedule, concurrencyPolicy Forbid, startingDeadlineSeconds, a
    backoffLimit; Jobs: a backoffLimit; DR restore Jobs are created suspended;
  * pods: no ServiceAccount token, an existing ServiceAccount, restartPolicy Never/OnFailure,
    runAsNonRoot or an annotation kbackup/root-reason saying why uid 0; containers: requests and
    limits of cpu and memory, readOnlyRootFilesystem, no privilege escalation, capabilities
    drop ALL and add only file-access ones;
  * every secretKeyRef / secretRef / secret volume names a Secret of the scope (and namespace)
    holding that key, likewise for ConfigMaps; KBACKUP_PASSWORD_FILE is a key of a mounted
    Secret volume; KBACKUP_LOG_FORMAT=json; every $(VAR) in command/args is defined;
  * every hostPath volume is mounted readOnly; the repository is mounted read-only wherever a
    command runs with --no-lock;
  * the etcd job runs on a control-plane node (nodeSelector, toleration) with hostNetwork and
    ClusterFirstWithHostNet, https://127.0.0.1:2379, kubeadm's certificates from a read-only
    hostPath, and the SnapMirror post-hook; volume jobs mount kubelet's pods directory
    read-only, are pinned to a node and have a fixed host name;
  * every kbackup command line (container args, bash -c scripts, the per-node helper's pass-
    through options) uses only options the binary's --help lists, in a position it accepts:
    the real binary parses the command line with --help appended and must accept it; metrics go
    to a Pushgateway with a fixed instance (or a metrics file); hook commands likewise against
    the hook script's --help;
  * the site has the jobs the design needs: an etcd backup, volume backups, forget --prune with
    keep rules and --group-by source, a check; the DR site a read-only restore --to-cluster;
  * monitoring: the Grafana dashboard and the alert rules parse and use only kbackup_* metrics
    of the contract (docs/cli.md, "Metrics"), and the alerts the design needs exist.
"""
import json
import os
import re
import shlex
import subprocess
import sys

import yaml

METRICS = {
    "kbackup_last_run_timestamp_seconds", "kbackup_last_success_timestamp_seconds",
    "kbackup_last_run_success", "kbackup_last_exit_code", "kbackup_duration_seconds",
    "kbackup_bytes_read", "kbackup_bytes_new", "kbackup_bytes_stored", "kbackup_files",
    "kbackup_errors", "kbackup_snapshots", "kbackup_repository_size_bytes",
}
# Capabilities a kbackup container may add: file access only (reading any file for backups;
# recreating owners, modes and times for restores).
ALLOWED_CAPS = {"DAC_READ_SEARCH", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID"}
CONTROL_PLANE = "node-role.kubernetes.io/control-plane"
ETCD_PKI = "/etc/kubernetes/pki/etcd"
KUBELET_PODS = "/var/lib/kubelet/pods"
SHELLS = {"bash", "/bin/bash", "sh", "/bin/sh"}
LISTINGS = {"snapshots", "ls", "stats"}  # read-only look-ups inside a job: no metrics of their own

problems = []


def problem(where, msg):
    problems.append("%s: %s" % (where, msg))


# ---------------------------------------------------------------- loading

def load_yaml_files(root):
    """{path: [documents]} of every .yaml/.yml below root."""
    out = {}
    for d, _, files in os.walk(root):
        for f in sorted(files):
            if f.endswith((".yaml", ".yml")):
                p = os.path.join(d, f)
                try:
                    with open(p) as fh:
                        out[p] = [x for x in yaml.safe_load_all(fh) if x is not None]
                except yaml.YAMLError as e:
                    problem(p, "does not parse: %s" % str(e).replace("\n", " "))
                    out[p] = []
    return out


def scopes(kdir, files):
    """[(kustomization_dir, [(file, obj)])]: the objects each kustomization applies."""
    result, owner = [], {}
    for path in sorted(files):
        if os.path.basename(path) != "kustomization.yaml":
            continue
        base = os.path.dirname(path)
        kust = (files[path] or [{}])[0]
        objs = []
        for res in kust.get("resources", []):
            rp = os.path.normpath(os.path.join(base, res))
            if not os.path.exists(rp):
                problem(path, "resource %s does not exist" % res)
                continue
            if os.path.isdir(rp):
                if not os.path.exists(os.path.join(rp, "kustomization.yaml")):
                    problem(path, "resource %s is a directory without kustomization.yaml" % res)
                continue  # its own scope, checked on its own
            if os.path.dirname(rp) != base:
                problem(path, "resource %s is outside the kustomization's directory "
                              "(kustomize refuses that)" % res)
            if rp in owner:
                problem(path, "resource %s is also in %s" % (res, owner[rp]))
            owner[rp] = path
            objs += [(rp, o) for o in files.get(rp, [])]
        result.append((base, objs))
    for path in files:
        if path.startswith(kdir) and os.path.basename(path) != "kustomization.yaml" and path not in owner:
            problem(path, "is in no kustomization.yaml (it would never be applied)")
    return result


# ---------------------------------------------------------------- the binary's options

def run(argv, env=None):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env,
                       stdin=subprocess.DEVNULL)
    return r.returncode, r.stdout, r.stderr


CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}


def help_flags(text):
    """{--flag: takes_value} of the option lines of a --help text."""
    flags = {}
    for m in re.finditer(r"^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)(?:[ =]([A-Za-z][A-Za-z|%._-]*))?(?:,|\s{2,}|$)",
                         text, re.M):
        flags[m.group(1)] = bool(m.group(2))
    for m in re.finditer(r"(--[a-z][a-z0-9-]*)", text):  # options named in prose ("--endpoints, --cacert")
        flags.setdefault(m.group(1), None)
    return flags


class Binary:
    def __init__(self, path):
        self.path = path
        rc, out, _ = run([path, "--help"], CLEAN_ENV)
        if rc != 0:
            raise SystemExit("%s --help failed" % path)
        section = out.split("Options for every command:", 1)[-1]
        self.global_flags = {k: v for k, v in help_flags(section).items() if v is not None}

    def check_argv(self, where, argv):
        """argv[0] is kbackup. Returns (globals {flag: value}, rest after the command)."""
        i, glob = 1, {}
        while i < len(argv) and argv[i].startswith("-"):
            flag, eq, val = argv[i].partition("=")
            if flag not in self.global_flags:
                problem(where, "global option %s is not in `kbackup --help`" % flag)
                i += 1
                continue
            if self.global_flags[flag] and not eq:
                val = argv[i + 1] if i + 1 < len(argv) else None
                i += 1
            glob[flag] = val if self.global_flags[flag] else True
            i += 1
        rest = argv[i:]
        if not rest:
            problem(where, "kbackup without a command: %s" % " ".join(argv))
            return glob, rest
        # The real parser decides: the whole command line with --help appended must be accepted
        # (an unknown option or one in the wrong place is exit 2), and every option after the
        # command must be one the printed help names.
        rc, out, err = run([self.path] + argv[1:] + ["--help"], CLEAN_ENV)
        if rc != 0:
            problem(where, "kbackup rejects `%s`: %s" % (" ".join(argv), (err or out).strip().splitlines()[:2]))
            return glob, rest
        known = set(help_flags(out)) | set(self.global_flags)
        for tok in rest:
            if tok.startswith("--") and tok.split("=")[0] not in known:
                problem(where, "option %s is not in the --help of `kbackup %s`" % (tok, " ".join(rest[:2])))
        return glob, rest


def option(rest, name):
    """The value of option name in a command's argument list, or None."""
    for i, tok in enumerate(rest):
        if tok == name and i + 1 < len(rest):
            return rest[i + 1]
        if tok.startswith(name + "="):
            return tok.split("=", 1)[1]
    return None


def options(rest, name):
    return [rest[i + 1] for i, tok in enumerate(rest[:-1]) if tok == name]


def script_help_flags(path):
    rc, out, _ = run(["bash", path, "--help"], CLEAN_ENV)
    if rc != 0:
        raise SystemExit("%s --help failed" % path)
    return help_flags(out)


def check_script_argv(where, script, argv, stop_at_dashdash=False):
    """Options of one of our shell helpers, against its --help, and accepted by it (--help
    appended after them: the parser stops at the first unknown option)."""
    flags = script_help_flags(script)
    own = argv[:argv.index("--")] if stop_at_dashdash and "--" in argv else argv
    for tok in own:
        if tok.startswith("--") and tok not in flags:
            problem(where, "%s has no option %s" % (os.path.basename(script), tok))
    rc, _, err = run(["bash", script] + own + ["--help"], CLEAN_ENV)
    if rc != 0:
        problem(where, "%s rejects %s: %s" % (os.path.basename(script), own, err.strip()))


# ---------------------------------------------------------------- shell scripts in manifests

def kbackup_in_script(script):
    """Every `kbackup ...` command of a bash -c script, as an argv (shell variables kept as
    written, e.g. "$id")."""
    cmds = []
    text = re.sub(r"\\\n", " ", script)
    for line in text.splitlines():
        lex = shlex.shlex(line, posix=True, punctuation_chars=";&|()")
        lex.whitespace_split = True
        lex.commenters = "#"
        try:
            toks = list(lex)
        except ValueError:
            continue
        i = 0
        while i < len(toks):
            if toks[i] == "kbackup" and (i == 0 or toks[i - 1] in {"exec", "(", "$(", "|", ";", "&&", "||", "$"}):
                j = i + 1
                while j < len(toks) and toks[j] not in {";", "&&", "||", "|", ")", "(", "&"}:
                    j += 1
                cmds.append(toks[i:j])
                i = j
            else:
                i += 1
    return cmds


# ---------------------------------------------------------------- workloads

def pod_of(obj):
    if obj.get("kind") == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    if obj.get("kind") == "Job":
        return obj["spec"]["template"]
    return None


CRON_FIELDS = [(0, 59, {}), (0, 23, {}), (1, 31, {}),
               (1, 12, {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}),
               (0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())})]


def valid_schedule(s):
    if s in {"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}:
        return True
    fields = s.split()
    if len(fields) != 5:
        return False
    for f, (lo, hi, names) in zip(fields, CRON_FIELDS):
        for item in f.split(","):
            rng, _, step = item.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                return False
            if rng == "*" or (rng == "?" and names is CRON_FIELDS[4][2]):
                continue
            ends = rng.split("-")
            if len(ends) > 2:
                return False
            vals = []
            for e in ends:
                e = e.lower()
                if e in names:
                    vals.append(names[e])
                elif e.isdigit():
                    vals.append(int(e))
                else:
                    return False
            if any(v < lo or v > hi for v in vals) or (len(vals) == 2 and vals[0] > vals[1]):
                return False
    return True


class Scope:
    def __init__(self, base, objs):
        self.base = base
        self.objs = objs
        self.by = {}
        for f, o in objs:
            key = (o.get("kind"), o.get("metadata", {}).get("namespace"), o.get("metadata", {}).get("name"))
            if key in self.by:
                problem(f, "%s %s/%s is defined twice" % key)
            self.by[key] = o
        self.roles = set()  # what the scope's kbackup commands do

    def data_keys(self, kind, ns, name):
        o = self.by.get((kind, ns, name))
        if o is None:
            return None
        return set((o.get("data") or {}).keys()) | set((o.get("stringData") or {}).keys())

    def config(self, ns, name):
        o = self.by.get(("ConfigMap", ns, name))
        return dict(o.get("data") or {}) if o else None


def check_pod(scope, where, obj, binary, scripts):
    tmpl = pod_of(obj)
    ns = obj["metadata"].get("namespace")
    spec = tmpl["spec"]
    ann = (tmpl.get("metadata") or {}).get("annotations") or {}
    if spec.get("automountServiceAccountToken") is not False:
        problem(where, "automountServiceAccountToken must be false (kbackup needs no API access)")
    sa = spec.get("serviceAccountName")
    if sa and ("ServiceAccount", ns, sa) not in scope.by:
        problem(where, "ServiceAccount %s/%s is not defined" % (ns, sa))
    if spec.get("restartPolicy") not in ("Never", "OnFailure"):
        problem(where, "restartPolicy must be Never or OnFailure")
    psc = spec.get("securityContext") or {}
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    for vname, v in volumes.items():
        for kind, field, ref in (("Secret", "secret", "secretName"), ("ConfigMap", "configMap", "name")):
            if field not in v:
                continue
            name = v[field].get(ref)
            keys = scope.data_keys(kind, ns, name)
            if keys is None:
                problem(where, "volume %s: %s %s/%s is not defined" % (vname, kind, ns, name))
                continue
            for it in v[field].get("items", []):
                if it["key"] not in keys:
                    problem(where, "volume %s: %s %s has no key %s" % (vname, kind, name, it["key"]))
    pod_roles = set()
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        cw = "%s container %s" % (where, c.get("name"))
        pod_roles |= check_container(scope, cw, obj, spec, c, volumes, ns, binary, scripts)
        user = (c.get("securityContext") or {}).get("runAsUser", psc.get("runAsUser"))
        nonroot = (c.get("securityContext") or {}).get("runAsNonRoot", psc.get("runAsNonRoot"))
        if user == 0 or user is None and not nonroot:
            if not ann.get("kbackup/root-reason"):
                problem(cw, "runs as root without an annotation kbackup/root-reason saying why")
        elif not nonroot:
            problem(cw, "set runAsNonRoot: true")
    for vname, v in volumes.items():
        if "hostPath" in v:
            for c in spec.get("initContainers", []) + spec.get("containers", []):
                for m in c.get("volumeMounts", []):
                    if m["name"] == vname and m.get("readOnly") is not True:
                        problem(where, "hostPath volume %s (%s) is mounted without readOnly: true in %s"
                                % (vname, v["hostPath"].get("path"), c.get("name")))
    check_roles(scope, where, obj, spec, volumes, pod_roles)
    scope.roles |= pod_roles


def container_env(scope, where, c, ns):
    """The container's environment as far as the manifests define it (Secret values as <secret>)."""
    env = {}
    for ef in c.get("envFrom", []):
        if "configMapRef" in ef:
            data = scope.config(ns, ef["configMapRef"]["name"])
            if data is None:
                problem(where, "envFrom ConfigMap %s/%s is not defined" % (ns, ef["configMapRef"]["name"]))
            else:
                env.update(data)
        if "secretRef" in ef:
            keys = scope.data_keys("Secret", ns, ef["secretRef"]["name"])
            if keys is None:
                problem(where, "envFrom Secret %s/%s is not defined" % (ns, ef["secretRef"]["name"]))
            else:
                env.update({k: "<secret>" for k in keys})
    for e in c.get("env", []):
        vf = e.get("valueFrom") or {}
        if "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            keys = scope.data_keys("Secret", ns, ref["name"])
            if keys is None or ref["key"] not in keys:
                problem(where, "env %s: Secret %s/%s has no key %s" % (e["name"], ns, ref["name"], ref["key"]))
            env[e["name"]] = "<secret>"
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            data = scope.config(ns, ref["name"])
            if data is None or ref["key"] not in data:
                problem(where, "env %s: ConfigMap %s/%s has no key %s" % (e["name"], ns, ref["name"], ref["key"]))
            else:
                env[e["name"]] = data[ref["key"]]
        else:
            env[e["name"]] = str(e.get("value", ""))
    return env


def expand(where, s, env):
    """Kubernetes' $(VAR) expansion of command and args; an undefined one stays literal, which
    is always a mistake here."""
    def sub(m):
        if m.group(1) not in env:
            problem(where, "$(%s) is not defined in the container's environment" % m.group(1))
            return m.group(0)
        return env[m.group(1)]
    return re.sub(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", sub, s)


def shell_expand(tok, env):
    """A shell word from a bash -c script: $VAR / ${VAR} from the environment; other variables
    (set by the script) become the placeholder 'latest' (a valid SNAPSHOT)."""
    def sub(m):
        name = m.group(1) or m.group(2)
        return env.get(name, "latest")
    return re.sub(r"\$\{([A-Za-z_]\w*)\}|\$([A-Za-z_]\w*)", sub, tok)


def check_container(scope, where, obj, spec, c, volumes, ns, binary, scripts):
    roles = set()
    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(kind) or {}):
                problem(where, "no %s.%s" % (kind, r))
    sc = c.get("securityContext") or {}
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(where, "readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "allowPrivilegeEscalation must be false")
    if sc.get("privileged"):
        problem(where, "must not be privileged")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        problem(where, "capabilities must drop ALL")
    for cap in caps.get("add") or []:
        if cap not in ALLOWED_CAPS:
            problem(where, "capability %s is not needed by kbackup" % cap)
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    for m in c.get("volumeMounts", []):
        if m["name"] not in volumes:
            problem(where, "mounts volume %s, which the pod does not define" % m["name"])
    env = container_env(scope, where, c, ns)
    command = [expand(where, x, env) for x in c.get("command") or []]
    args = [expand(where, x, env) for x in c.get("args") or []]

    invocations = []  # (argv, pass-through of the node helper)
    if not command and "kbackup" in c.get("image", ""):
        invocations.append(["kbackup"] + args)
    elif command and command[0] == "kbackup":
        invocations.append(command + args)
    elif command and command[0] == "kbackup-node-volumes":
        argv = command[1:] + args
        check_script_argv(where, os.path.join(scripts, "backup-node-volumes.sh"), argv, stop_at_dashdash=True)
        rest = argv[argv.index("--") + 1:] if "--" in argv else []
        glob = ["--pushgateway", option(argv, "--pushgateway"), "--pushgateway-instance", "ns_pvc"] \
            if option(argv, "--pushgateway") else []
        if option(argv, "--metrics-dir"):
            glob += ["--metrics-file", option(argv, "--metrics-dir") + "/kbackup-volume-ns_pvc.prom"]
        if not glob:
            problem(where, "kbackup-node-volumes without --pushgateway or --metrics-dir: no metrics")
        invocations.append(["kbackup"] + glob + ["backup", "volume", KUBELET_PODS, "--name", "ns/pvc"] + rest)
        pods_dir = option(argv, "--pods-dir") or KUBELET_PODS
        m = mounts.get(pods_dir)
        v = volumes.get(m["name"]) if m else None
        if not v or (v.get("hostPath") or {}).get("path") != KUBELET_PODS or m.get("readOnly") is not True:
            problem(where, "--pods-dir %s must be kubelet's %s, mounted read-only from hostPath" % (pods_dir, KUBELET_PODS))
        roles.add("volume-backup")
    elif command and command[0] in SHELLS and "-c" in command:
        script = (command + args)[command.index("-c") + 1]
        found = kbackup_in_script(script)
        if not found:
            problem(where, "a shell script without any kbackup command")
        invocations += [[shell_expand(t, env) for t in cmd] for cmd in found]
    else:
        problem(where, "runs neither kbackup nor one of its helpers: %s" % command)

    if invocations and env.get("KBACKUP_LOG_FORMAT") != "json":
        problem(where, "KBACKUP_LOG_FORMAT is not json (log collectors need one JSON object a line)")
    pwfile = env.get("KBACKUP_PASSWORD_FILE")
    if invocations:
        if "KBACKUP_PASSWORD" in env:
            problem(where, "the password must come from a file (KBACKUP_PASSWORD_FILE), not an env var")
        if not pwfile or not secret_file(volumes, mounts, pwfile):
            problem(where, "KBACKUP_PASSWORD_FILE=%s is not a key of a mounted Secret volume" % pwfile)
    repo = env.get("KBACKUP_REPOSITORY", "")
    repo_mount = None
    if repo.startswith("/"):
        repo_mount = mounts.get(repo)
        if repo_mount is None:
            problem(where, "KBACKUP_REPOSITORY=%s is not a mount point of the container" % repo)

    for argv in invocations:
        glob, rest = binary.check_argv(where, argv)
        if not rest:
            continue
        cmd = rest[0]
        if cmd not in LISTINGS and not (glob.get("--pushgateway") or glob.get("--metrics-file")):
            problem(where, "`kbackup %s` leaves no metrics (--pushgateway or --metrics-file)" % cmd)
        if glob.get("--pushgateway") and not glob.get("--pushgateway-instance"):
            problem(where, "--pushgateway without --pushgateway-instance: the default (the pod's host name) "
                           "changes every run and leaves stale groups behind")
        if "--json" not in glob and cmd != "restore" and "--json" not in rest:
            problem(where, "`kbackup %s` without --json prints text on stdout among the JSON log lines" % cmd)
        readonly_repo = repo_mount is not None and (
            repo_mount.get("readOnly") or (volumes.get(repo_mount["name"], {}).get("nfs") or {}).get("readOnly"))
        if glob.get("--no-lock") and repo_mount is not None and not readonly_repo:
            problem(where, "--no-lock on a repository mounted read-write: mount the replica readOnly")
        if cmd == "backup" and (option(rest, "--endpoints") or rest[1:2] == ["etcd"]):
            roles.add("etcd-backup")
            check_etcd(where, spec, volumes, mounts, rest)
            hook = option(rest, "--post-hook")
            if not hook or not hook.split()[0] == "kbackup-snapmirror-update":
                problem(where, "the etcd backup has no kbackup-snapmirror-update --post-hook")
            else:
                check_script_argv(where, os.path.join(scripts, "snapmirror-update.sh"), shlex.split(hook)[1:])
        elif cmd == "forget":
            if "--prune" in rest and any(t.startswith("--keep-") for t in rest):
                roles.add("retention")
            if option(rest, "--group-by") != "source":
                problem(where, "forget needs --group-by source (CronJob pods get a new host name every run)")
        elif cmd == "check":
            roles.add("replica-check" if glob.get("--no-lock") else "check")
        elif cmd == "restore" and option(rest, "--to-cluster"):
            roles.add("dr-restore")
            if not glob.get("--no-lock") or not readonly_repo:
                problem(where, "the DR restore must read the replica read-only: --no-lock and a readOnly mount")
            check_etcd(where, spec, volumes, mounts, [])
        elif cmd == "restore" and rest[1:2] == ["volume"]:
            roles.add("dr-restore-volume")
            if not glob.get("--no-lock") or not readonly_repo:
                problem(where, "a DR volume restore must read the replica read-only: --no-lock and a readOnly mount")
    return roles


def secret_file(volumes, mounts, path):
    d, f = os.path.split(path)
    m = mounts.get(d)
    if not m or m.get("readOnly") is not True:
        return False
    sec = (volumes.get(m["name"]) or {}).get("secret")
    if not sec:
        return False
    items = sec.get("items")
    return f in ([it["path"] for it in items] if items else [f])


def check_etcd(where, spec, volumes, mounts, rest):
    """etcd is reached the kubeadm way: on a control-plane node, loopback, kubeadm's certs."""
    if CONTROL_PLANE not in (spec.get("nodeSelector") or {}):
        problem(where, "etcd is only on control-plane nodes: nodeSelector %s" % CONTROL_PLANE)
    if not any(t.get("key") == CONTROL_PLANE for t in spec.get("tolerations") or []):
        problem(where, "no toleration for the %s taint" % CONTROL_PLANE)
    if spec.get("hostNetwork") is not True:
        problem(where, "etcd listens on the node's loopback: hostNetwork: true")
    if spec.get("dnsPolicy") != "ClusterFirstWithHostNet":
        problem(where, "with hostNetwork use dnsPolicy ClusterFirstWithHostNet (cluster names resolve)")
    m = mounts.get(ETCD_PKI)
    v = volumes.get(m["name"]) if m else None
    if not v or (v.get("hostPath") or {}).get("path") != ETCD_PKI or m.get("readOnly") is not True:
        problem(where, "kubeadm's %s must be mounted read-only from hostPath at the same path" % ETCD_PKI)
    if rest:
        if option(rest, "--endpoints") != "https://127.0.0.1:2379":
            problem(where, "--endpoints should be https://127.0.0.1:2379 (the node's own member)")
        for o in ("--cacert", "--cert", "--key"):
            val = option(rest, o)
            if not val or not val.startswith(ETCD_PKI + "/"):
                problem(where, "%s must be a file of %s" % (o, ETCD_PKI))


def check_roles(scope, where, obj, spec, volumes, roles):
    kind = obj["kind"]
    s = obj["spec"]
    if kind == "CronJob":
        if not valid_schedule(str(s.get("schedule", ""))):
            problem(where, "schedule %r is not a valid 5-field cron schedule" % s.get("schedule"))
        if s.get("concurrencyPolicy") != "Forbid":
            problem(where, "concurrencyPolicy must be Forbid")
        if not isinstance(s.get("startingDeadlineSeconds"), int) or s["startingDeadlineSeconds"] <= 0:
            problem(where, "no startingDeadlineSeconds")
        job = s["jobTemplate"]["spec"]
    else:
        job = s
        if roles & {"dr-restore", "dr-restore-volume"} and s.get("suspend") is not True:
            problem(where, "a DR restore Job must be created suspended (applying must restore nothing)")
    if not isinstance(job.get("backoffLimit"), int):
        problem(where, "no backoffLimit")
    if "volume-backup" in roles:
        if not (spec.get("nodeName") or "kubernetes.io/hostname" in (spec.get("nodeSelector") or {})):
            problem(where, "a volume backup must be pinned to its node (nodeSelector kubernetes.io/hostname)")
        if not spec.get("hostname"):
            problem(where, "set a fixed hostname: kbackup finds the parent snapshot by host")


# ---------------------------------------------------------------- monitoring

def exprs_of(obj):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == "expr" and isinstance(v, str):
                yield v
            else:
                yield from exprs_of(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from exprs_of(v)


def check_exprs(where, exprs):
    used = set()
    for e in exprs:
        names = set(re.findall(r"\bkbackup_[a-z_]+\b", e))
        if not names:
            problem(where, "expression uses no kbackup metric: %s" % e)
        for n in names - METRICS:
            problem(where, "metric %s is not one kbackup exports" % n)
        used |= names
    return used


def check_monitoring(mdir, files):
    dash = os.path.join(mdir, "grafana-dashboard.json")
    try:
        d = json.load(open(dash))
    except (OSError, ValueError) as e:
        problem(dash, "does not parse: %s" % e)
        d = {}
    panels = [p for p in d.get("panels", []) if p.get("type") != "row"]
    if len(panels) < 6:
        problem(dash, "only %d panels" % len(panels))
    for p in panels:
        if not list(exprs_of(p.get("targets", []))):
            problem(dash, "panel %r has no query" % p.get("title"))
    used = check_exprs(dash, exprs_of(d))
    for need in ("kbackup_last_success_timestamp_seconds", "kbackup_duration_seconds", "kbackup_bytes_read",
                 "kbackup_bytes_new", "kbackup_bytes_stored", "kbackup_repository_size_bytes",
                 "kbackup_snapshots", "kbackup_errors"):
        if need not in used:
            problem(dash, "no panel shows %s" % need)
    alerts = os.path.join(mdir, "alerts.yaml")
    docs = files.get(alerts)
    if not docs:
        problem(alerts, "missing or empty")
        return
    groups = docs[0].get("groups") or (docs[0].get("spec") or {}).get("groups") or []
    rules = [r for g in groups for r in g.get("rules", [])]
    check_exprs(alerts, [r.get("expr", "") for r in rules])
    text = {r.get("alert"): r.get("expr", "") for r in rules if r.get("alert")}
    def want(desc, pred):
        if not any(pred(e) for e in text.values()):
            problem(alerts, "no alert for %s" % desc)
    want("no successful backup in 26 h",
         lambda e: "kbackup_last_success_timestamp_seconds" in e and "26" in e and "time()" in e)
    want("a backup that never succeeded (absent)",
         lambda e: "absent(" in e and "kbackup_last_success_timestamp_seconds" in e)
    want("a failed backup", lambda e: re.search(r'kbackup_last_run_success\{[^}]*command="backup"', e) and "== 0" in e)
    want("a failed check", lambda e: re.search(r'kbackup_last_run_success\{[^}]*command="check"', e) and "== 0" in e)
    want("unusual repository growth", lambda e: "kbackup_repository_size_bytes" in e)
    for r in rules:
        if r.get("alert") and not (r.get("annotations") or {}).get("summary"):
            problem(alerts, "alert %s has no summary annotation" % r.get("alert"))


# ---------------------------------------------------------------- main

def main():
    deploy, kbackup, scripts = sys.argv[1:4]
    binary = Binary(kbackup)
    kdir = os.path.join(deploy, "kubernetes")
    files = load_yaml_files(deploy)
    kfiles = {p: d for p, d in files.items() if p.startswith(kdir + os.sep)}
    all_scopes = [Scope(b, objs) for b, objs in scopes(kdir, kfiles)]
    if not all_scopes:
        problem(kdir, "no kustomization.yaml")
    workloads = 0
    for scope in all_scopes:
        for f, o in scope.objs:
            if pod_of(o) is not None:
                workloads += 1
                check_pod(scope, "%s: %s %s" % (f, o["kind"], o["metadata"]["name"]), o, binary, scripts)
        site = "DR site" if scope.roles & {"dr-restore"} else "primary site"
        need = {"dr-restore", "dr-restore-volume", "replica-check"} if site == "DR site" else \
            {"etcd-backup", "volume-backup", "retention", "check"}
        for r in sorted(need - scope.roles):
            problem(scope.base, "the %s has no %s job" % (site, r))
    check_monitoring(os.path.join(deploy, "monitoring"), files)
    for p in problems:
        print(p)
    if not problems:
        print("ok: %d files, %d kustomizations, %d jobs" % (len(files), len(all_scopes), workloads))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
