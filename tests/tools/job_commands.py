#!/usr/bin/python3
"""job_commands.py - turn a job of deploy/kubernetes/ into a shell script that runs its container
command here, so tests run the manifests' exact command lines against real components.

Usage: job_commands.py DEPLOY_DIR OBJECT_NAME OUT_DIR MAP_JSON

OBJECT_NAME is a CronJob's or Job's metadata.name. The container's environment is what the
manifests give it (ConfigMaps through envFrom/env; Secret-valued variables are left out: the test
provides its own), $(VAR) in command and args is expanded as the kubelet does, and ConfigMap
volumes are written under OUT_DIR/files/MOUNT_PATH. MAP_JSON maps strings of the cluster
(mount paths, endpoints, URLs) to their stand-ins here; every occurrence in the arguments, the
environment and the ConfigMap files is replaced, longest first. Writes OUT_DIR/run.sh, which
runs the container's command with exactly that environment (and PATH=OUT_DIR/bin:/usr/bin:/bin,
where the test puts kbackup and its helpers), and prints its path.
"""
import json
import os
import shlex
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_manifests as cm  # noqa: E402  (the manifests' loader and environment rules)


def main():
    deploy, name, out, mapping = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
    kdir = os.path.join(deploy, "kubernetes")
    files = cm.load_yaml_files(kdir)
    for base, objs in cm.scopes(kdir, files):
        scope = cm.Scope(base, objs)
        for _, obj in objs:
            if obj.get("metadata", {}).get("name") == name and cm.pod_of(obj) is not None:
                return write(scope, obj, out, mapping)
    raise SystemExit("no job named %s" % name)


def write(scope, obj, out, mapping):
    spec = cm.pod_of(obj)["spec"]
    c = spec["containers"][0]
    ns = obj["metadata"]["namespace"]
    where = obj["metadata"]["name"]
    env = {k: v for k, v in cm.container_env(scope, where, c, ns).items() if v != "<secret>"}
    if cm.problems:
        raise SystemExit("\n".join(cm.problems))
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mapping = dict(mapping)
    for m in c.get("volumeMounts", []):
        cmap = volumes[m["name"]].get("configMap")
        if cmap:
            mapping.setdefault(m["mountPath"], os.path.join(out, "files") + m["mountPath"])
    keys = sorted(mapping, key=len, reverse=True)

    def remap(s):
        for k in keys:
            s = s.replace(k, mapping[k])
        return s

    for m in c.get("volumeMounts", []):
        cmap = volumes[m["name"]].get("configMap")
        if cmap:
            d = remap(m["mountPath"])
            os.makedirs(d, exist_ok=True)
            for k, v in (scope.config(ns, cmap["name"]) or {}).items():
                with open(os.path.join(d, k), "w") as f:
                    f.write(remap(v))
    argv = [cm.expand(where, x, env) for x in (c.get("command") or ["kbackup"]) + (c.get("args") or [])]
    if cm.problems:
        raise SystemExit("\n".join(cm.problems))
    argv = [remap(x) for x in argv]
    env = {k: remap(v) for k, v in env.items()}
    env["PATH"] = os.path.join(out, "bin") + ":/usr/bin:/bin"
    # A sanitizer build's settings (where reports go, what aborts) are the test run's, not the pod's.
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS", "TSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    env["HOME"] = out
    run = os.path.join(out, "run.sh")
    with open(run, "w") as f:
        f.write("exec env -i %s %s\n" % (" ".join(shlex.quote("%s=%s" % kv) for kv in sorted(env.items())),
                                         " ".join(shlex.quote(a) for a in argv)))
    print(run)


if __name__ == "__main__":
    main()
