#!/usr/bin/env python3
"""Stands in for a kubelet: prepares one container of a Pod that the API server
holds (made by the ReplicaSet controller from the operator's Deployment) so it
can run as a local process, exactly as specified:

  - command and args from the container spec (`berth` resolved to BERTH_BIN);
  - env from the spec (value, fieldRef metadata.name/namespace, and
    secretKeyRef read from the Secret), plus the in-cluster
    KUBERNETES_SERVICE_HOST/PORT;
  - every volume written out under ROOT/volumes/<name>: ConfigMap and Secret
    keys as files (Secret files with the volume's defaultMode and the pod's
    fsGroup), a PersistentVolumeClaim as a directory kept across restarts,
    emptyDir as an empty directory;
  - the projected ServiceAccount token, CA and namespace that a kubelet mounts
    at /var/run/secrets/kubernetes.io/serviceaccount (a bound token from
    `kubectl create token --bound-object-kind Pod`);
  - runAsUser/runAsGroup from the security contexts.

It writes ROOT/launch.sh, which enters a private mount namespace (unshare -m),
bind-mounts each volume at its mountPath, and execs the command as the pod's
user with exactly the pod's environment. Also ROOT/probe.json: the readiness
probe (path and port). Usage:

  run_pod.py POD_JSON ROOT BERTH_BIN KUBECTL APISERVER_HOST APISERVER_PORT CA_FILE

Several pods of one Deployment on this one host (one network namespace, one
disk) need two things a cluster gives them otherwise, from the environment:
  RUN_POD_CLAIMS=DIR     keep claims under DIR/<claim name> instead of
                         ROOT/claims (pods sharing a ReadWriteMany claim);
  RUN_POD_LISTEN=ADDR    append `--listen ADDR` to the command (each pod its
                         own port, as each pod would have its own IP); the
                         probe port follows.
Likewise every pod's metrics listener (the operator's pods serve /metrics on
0.0.0.0:9090) moves to a port of its own: `--metrics-listen 127.0.0.1:0` is
appended (berth logs the address it got: "metrics on http://ADDR/metrics").
ROOT/probe.json also says the probe's scheme (HTTPS: a kubelet does not check
the certificate).
"""
import base64
import json
import os
import shlex
import subprocess
import sys

pod_json, root, berth_bin, kubectl, api_host, api_port, ca_file = sys.argv[1:8]
pod = json.load(open(pod_json))
meta, spec = pod["metadata"], pod["spec"]
ns, name = meta["namespace"], meta["name"]
container = spec["containers"][0]


def kube(*args):
    return subprocess.run([kubectl, "-n", ns, *args], check=True, capture_output=True, text=True).stdout


pod_sc = spec.get("securityContext") or {}
ctr_sc = container.get("securityContext") or {}
uid = ctr_sc.get("runAsUser", pod_sc.get("runAsUser", 0))
gid = ctr_sc.get("runAsGroup", pod_sc.get("runAsGroup", 0))
fs_group = pod_sc.get("fsGroup")

os.makedirs(root, exist_ok=True)
os.chmod(root, 0o755)
vol_root = os.path.join(root, "volumes")
os.makedirs(vol_root, exist_ok=True)
sources = {}
for vol in spec.get("volumes", []):
    path = os.path.join(vol_root, vol["name"])
    os.makedirs(path, exist_ok=True)
    if "configMap" in vol:
        cm = json.loads(kube("get", "configmap", vol["configMap"]["name"], "-o", "json"))
        for key, value in (cm.get("data") or {}).items():
            with open(os.path.join(path, key), "w") as f:
                f.write(value)
            os.chmod(os.path.join(path, key), vol["configMap"].get("defaultMode", 0o644))
    elif "secret" in vol:
        secret = json.loads(kube("get", "secret", vol["secret"]["secretName"], "-o", "json"))
        mode = vol["secret"].get("defaultMode", 0o644)
        for key, value in (secret.get("data") or {}).items():
            file = os.path.join(path, key)
            with open(file, "wb") as f:
                f.write(base64.b64decode(value))
            os.chmod(file, mode)
            if fs_group is not None:
                os.chown(file, 0, fs_group)
    elif "persistentVolumeClaim" in vol:
        # The claim's data outlives the pod: keep it under ROOT/claims/<claim name>.
        claims = os.environ.get("RUN_POD_CLAIMS") or os.path.join(root, "claims")
        claim = os.path.join(claims, vol["persistentVolumeClaim"]["claimName"])
        os.makedirs(claim, exist_ok=True)
        os.chown(claim, uid, fs_group if fs_group is not None else gid)
        path = claim
    elif "emptyDir" in vol:
        os.chown(path, uid, fs_group if fs_group is not None else gid)
    else:
        sys.exit(f"volume {vol['name']}: only configMap, secret, persistentVolumeClaim and emptyDir are supported")
    os.chmod(path, 0o775 if ("persistentVolumeClaim" in vol or "emptyDir" in vol) else 0o755)
    sources[vol["name"]] = path

# The ServiceAccount token a kubelet would project into the pod.
sa_dir = os.path.join(root, "serviceaccount")
os.makedirs(sa_dir, exist_ok=True)
token = kube("create", "token", spec.get("serviceAccountName", "default"),
             "--bound-object-kind", "Pod", "--bound-object-name", name,
             "--bound-object-uid", meta["uid"], "--duration", "1h").strip()
for file, content in (("token", token), ("namespace", ns), ("ca.crt", open(ca_file).read())):
    with open(os.path.join(sa_dir, file), "w") as f:
        f.write(content)
    os.chmod(os.path.join(sa_dir, file), 0o644)

bin_dir = os.path.join(root, "bin")
os.makedirs(bin_dir, exist_ok=True)
os.chmod(bin_dir, 0o755)
subprocess.run(["cp", berth_bin, os.path.join(bin_dir, "berth")], check=True)

env = {
    "PATH": "/opt/berth-pod/bin:/usr/bin:/bin",
    "HOME": "/nonexistent",
    "KUBERNETES_SERVICE_HOST": api_host,
    "KUBERNETES_SERVICE_PORT": api_port,
}
for e in container.get("env", []):
    if "value" in e:
        env[e["name"]] = e["value"]
    elif "valueFrom" in e and "fieldRef" in e["valueFrom"]:
        field = e["valueFrom"]["fieldRef"]["fieldPath"]
        env[e["name"]] = {"metadata.name": name, "metadata.namespace": ns}[field]
    elif "valueFrom" in e and "secretKeyRef" in e["valueFrom"]:
        ref = e["valueFrom"]["secretKeyRef"]
        secret = json.loads(kube("get", "secret", ref["name"], "-o", "json"))
        value = (secret.get("data") or {}).get(ref["key"])
        if value is None:
            sys.exit(f"env {e['name']}: Secret {ref['name']} has no key {ref['key']}")
        env[e["name"]] = base64.b64decode(value).decode()
    else:
        sys.exit(f"env {e['name']}: unsupported source")

argv = (container.get("command") or []) + (container.get("args") or [])
if not argv:
    sys.exit("the container has no command: an image entrypoint cannot be known here")
listen = os.environ.get("RUN_POD_LISTEN")
if listen:
    argv += ["--listen", listen]
argv += ["--metrics-listen", "127.0.0.1:0"]

mounts = [(os.path.join(root, "bin"), "/opt/berth-pod/bin"),
          (sa_dir, "/var/run/secrets/kubernetes.io/serviceaccount")]
for m in container.get("volumeMounts", []):
    mounts.append((sources[m["name"]], m["mountPath"]))
inner = ["set -e"]
for src, dst in mounts:
    os.makedirs(dst, exist_ok=True)  # a mount point on the host (empty directory)
    inner.append(f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}")
env_args = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
inner.append(
    f"exec setpriv --reuid {uid} --regid {gid} --clear-groups "
    f"env -i {env_args} {' '.join(shlex.quote(a) for a in argv)}"
)
with open(os.path.join(root, "launch.sh"), "w") as f:
    f.write("#!/bin/sh\n# Generated by run_pod.py from Pod %s/%s\nexec unshare -m -- sh -c %s\n"
            % (ns, name, shlex.quote("\n".join(inner))))
os.chmod(os.path.join(root, "launch.sh"), 0o755)

probe = container.get("readinessProbe", {}).get("httpGet", {})
port = probe.get("port")
if isinstance(port, str):
    port = next(p["containerPort"] for p in container.get("ports", []) if p.get("name") == port)
if listen:
    port = int(listen.rsplit(":", 1)[1])
json.dump({"path": probe.get("path", "/"), "port": port, "scheme": probe.get("scheme", "HTTP"), "argv": argv, "env": sorted(env),
           "mounts": [d for _, d in mounts], "uid": uid, "gid": gid}, open(os.path.join(root, "probe.json"), "w"))
print(json.dumps({"pod": f"{ns}/{name}", "argv": argv, "uid": uid, "mounts": [d for _, d in mounts]}))
