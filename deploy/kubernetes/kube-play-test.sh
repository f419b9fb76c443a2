#!/usr/bin/env bash
# Runs the Kubernetes layer for real with `podman kube play`, as root, on a
# host where podman runs containers (deploy/container/README.md: "What
# runs a container here"):
#
#   1. the node agent's pod, from the DaemonSet of deploy/kubernetes/base
#      as `kubectl kustomize` renders it (its pod template made a Pod; the
#      ConfigMap given to podman), whose init container installs the
#      library into a scratch "node" directory;
#   2. a Redis pod written with mmtier.io/ annotations only, put through
#      `mmtier inject` (the node directories moved to the scratch one);
#
# then checks, from the host: the Redis process maps the injected library,
# registered with the agent in its annotation's class, is in the agent's
# /status and /metrics under its host pid with its container, and
# `mmtier stat` reads it.  Needs the images of deploy/container/
# build-image.sh.  Exits 0 with "kube-play-test: PASS", else 1.
#
#     deploy/kubernetes/kube-play-test.sh [BUILD_DIR]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
MMTIER=$BUILD/mmtier
: "${CONTAINERS_CONF:=/var/tmp/mmtier-container/containers.conf}"
export CONTAINERS_CONF
NODE=$(mktemp -d /var/tmp/mmtier-kube-node.XXXXXX)
WORK=$NODE/manifests
# The PMem tier: a tmpfs directory standing in for a DAX mount.
PMEM=$(mktemp -d /dev/shm/mmtier-kube-pmem.XXXXXX)
mkdir -p "$WORK" "$NODE/opt/mmtier" "$NODE/run/mmtier" "$NODE/var/lib/kubelet/seccomp"
say() { echo "kube-play-test: $*"; }
fail() { say "FAIL: $*"; exit 1; }

cleanup() {
  local p
  [[ -n ${KEEP:-} ]] || { podman pod rm -f redis-annotated redis-restore; podman rm -f mmtier-agent-mmtierd mmtier-webhook-test; } > /dev/null 2>&1 || true
  [[ -n ${KEEP:-} ]] || rm -rf "$NODE" "$PMEM"
}
trap cleanup EXIT
{ podman pod rm -f redis-annotated; podman rm -f mmtier-agent-mmtierd mmtier-webhook-test; } > /dev/null 2>&1 || true

(($(id -u) == 0)) || fail "run as root (host PID namespace, hostPath volumes)"
for tool in nsenter redis-cli; do
  command -v "$tool" > /dev/null || fail "needs $tool on the host (util-linux, redis-tools)"
done
for image in localhost/mmtier:latest localhost/mmtier-redis:latest; do
  podman image exists "$image" || fail "no image $image: run deploy/container/build-image.sh first"
done

# 1. The agent, as the DaemonSet of deploy/kubernetes/base renders: each of
# its containers (the init container, then mmtierd) run with podman run,
# with the image, command, arguments, environment (ConfigMap keys
# resolved), volumes, capabilities, user and read-only root the manifest
# gives, in the host's PID namespace as hostPID says; only the host
# directories are moved under the scratch node, and the HTTP port to the
# host network.  (podman 4.3's kube play ignores hostPID and reruns init
# containers, so it cannot play this pod as the manifest means it.)
kubectl kustomize "$ROOT/deploy/kubernetes/base" > "$WORK/base.yaml"
python3 - "$WORK" "$NODE" > "$WORK/agent-run.sh" << 'EOF'
import os, shlex, sys, yaml
work, node = sys.argv[1], sys.argv[2]
docs = [d for d in yaml.safe_load_all(open(work + "/base.yaml")) if d]
maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
maps["mmtierd"]["node-dram"] = "256M"
ds = next(d for d in docs if d["kind"] == "DaemonSet")
spec = ds["spec"]["template"]["spec"]
assert spec.get("hostPID") is True, "the DaemonSet must run in the host's PID namespace"
vols = {}
for v in spec["volumes"]:
    if "hostPath" in v:
        vols[v["name"]] = node + v["hostPath"]["path"] if v["hostPath"]["path"] != "/dev/shm" else "/dev/shm"
    elif "configMap" in v:
        d = os.path.join(work, "configmap-" + v["name"])
        os.makedirs(d, exist_ok=True)
        for key, text in maps[v["configMap"]["name"]].items():
            open(os.path.join(d, key), "w").write(text)
        vols[v["name"]] = d
print("set -e")
for kind, c in [("init", c) for c in spec.get("initContainers", [])] + [("main", c) for c in spec["containers"]]:
    cmd = ["podman", "run", "--name", "mmtier-agent-" + c["name"], "--pid=host", "--network=host"]
    cmd += ["--rm"] if kind == "init" else ["-d"]
    sc = c.get("securityContext", {})
    if "runAsUser" in sc:
        cmd += ["--user", str(sc["runAsUser"])]
    if sc.get("readOnlyRootFilesystem"):
        cmd += ["--read-only"]
    if sc.get("allowPrivilegeEscalation") is False:
        cmd += ["--security-opt", "no-new-privileges"]
    for cap in sc.get("capabilities", {}).get("drop", []):
        cmd += ["--cap-drop", cap]
    for cap in sc.get("capabilities", {}).get("add", []):
        cmd += ["--cap-add", cap]
    for e in c.get("env", []):
        if "value" in e:
            value = e["value"]
        else:
            ref = e["valueFrom"]["configMapKeyRef"]
            value = maps[ref["name"]][ref["key"]]
        cmd += ["-e", "%s=%s" % (e["name"], value)]
    for m in c.get("volumeMounts", []):
        cmd += ["-v", "%s:%s%s" % (vols[m["name"]], m["mountPath"], ":ro" if m.get("readOnly") else "")]
    if c.get("command"):
        cmd += ["--entrypoint", c["command"][0]]
    cmd.append(c["image"])
    cmd += c.get("command", [])[1:]
    cmd += [a if a != "0.0.0.0:9464" else "127.0.0.1:19464" for a in c.get("args", [])]
    print(" ".join(shlex.quote(x) for x in cmd))
EOF
say "starting the agent's containers as the DaemonSet says (the init container installs the library)"
bash "$WORK/agent-run.sh" > "$WORK/agent-run.out" 2>&1 || { cat "$WORK/agent-run.out"; fail "running the agent's containers"; }
deadline=$((SECONDS + 60))
until curl -sf http://127.0.0.1:19464/healthz > /dev/null; do
  ((SECONDS < deadline)) || { podman logs mmtier-agent-mmtierd 2>&1 | tail -20; fail "the agent never answered /healthz"; }
  sleep 0.5
done
[[ -f $NODE/opt/mmtier/lib/libmmtier.so && -x $NODE/opt/mmtier/bin/mmtier && ! -e $NODE/opt/mmtier/lib/libmmtier.so.new ]] ||
  fail "the init container did not install the library and command into the node directory"
cmp -s "$NODE/opt/mmtier/lib/libmmtier.so" "$BUILD/libmmtier.so" || fail "the installed library is not this build's"
cmp -s "$NODE/var/lib/kubelet/seccomp/mmtier-tiering.json" "$ROOT/deploy/kubernetes/base/seccomp/tiering.json" ||
  fail "the init container did not install the seccomp profile for the kubelet"
say "agent up; library installed in $NODE/opt/mmtier/lib"

# 2. Redis, annotations only, through mmtier inject.
cat > "$WORK/redis.yaml" << 'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: redis-annotated
  annotations:
    mmtier.io/class: guaranteed
    mmtier.io/guaranteed-dram: 64Mi
    mmtier.io/dram-ratio: "1:4"
    mmtier.io/pmem-volume: pmem
    mmtier.io/userfaultfd: capability
spec:
  containers:
    - name: redis
      image: localhost/mmtier-redis:latest
      command: ["redis-server", "--protected-mode", "no", "--save", "", "--appendonly", "no"]
  volumes:
    - name: pmem
      hostPath:
        path: PMEM_DIR
        type: Directory
EOF
sed -i "s|PMEM_DIR|$PMEM|" "$WORK/redis.yaml"
"$MMTIER" inject -f "$WORK/redis.yaml" --lib-dir "$NODE/opt/mmtier/lib" --agent-dir "$NODE/run/mmtier" \
  -o "$WORK/redis-injected.yaml"
"$MMTIER" inject -f "$WORK/redis.yaml" -o "$WORK/redis-injected-offline.yaml" 2> "$WORK/inject.err" ||
  { cat "$WORK/inject.err"; fail "mmtier inject"; }
# podman 4.3 takes a container's seccomp profile only from the annotation
# Kubernetes read before 1.19, not from securityContext.seccompProfile:
# add it, naming the same profile.
python3 - "$WORK/redis-injected.yaml" << 'EOF'
import sys, yaml
path = sys.argv[1]
pod = yaml.safe_load(open(path))
for c in pod["spec"]["containers"]:
    prof = (c.get("securityContext") or {}).get("seccompProfile")
    if prof and prof.get("type") == "Localhost":
        pod["metadata"]["annotations"]["container.seccomp.security.alpha.kubernetes.io/" + c["name"]] = \
            "localhost/" + prof["localhostProfile"]
yaml.safe_dump(pod, open(path, "w"))
EOF
podman kube play --seccomp-profile-root "$NODE/var/lib/kubelet/seccomp" "$WORK/redis-injected.yaml" > "$WORK/redis-play.out" ||
  { cat "$WORK/redis-play.out"; fail "podman kube play of the injected pod"; }
ctr=redis-annotated-redis
deadline=$((SECONDS + 60))
until podman exec "$ctr" redis-cli ping 2> /dev/null | grep -q PONG; do
  ((SECONDS < deadline)) || { podman logs "$ctr" 2>&1 | tail; fail "redis never answered"; }
  sleep 0.5
done
pid=$(podman inspect -f '{{.State.Pid}}' "$ctr")
say "redis runs, host pid $pid"
grep -q "$NODE/opt/mmtier/lib/libmmtier.so\|/opt/mmtier/lib/libmmtier.so" "/proc/$pid/maps" ||
  fail "redis does not map the injected library"
# (Redis overwrites its /proc/PID/environ with its process title: ask the
# container's configuration.)
podman exec "$ctr" env | grep -q "^MMTIER_QOS_CLASS=guaranteed$" || fail "no MMTIER_QOS_CLASS in the container"

# Enough memory to be managed and to register (32 MiB): 300 000 keys of
# 512 bytes (Redis 7 refuses DEBUG POPULATE by default).
keys=$(podman exec "$ctr" redis-cli EVAL \
  "for i = 1, 300000 do redis.call('SET', 'key:' .. i, string.rep('x', 512)) end return redis.call('DBSIZE')" 0)
[[ $keys == 300000 ]] || fail "filling redis: $keys"
deadline=$((SECONDS + 30))
status=""
until [[ $status == *"\"pid\":$pid,"* ]]; do
  ((SECONDS < deadline)) || { echo "$status"; fail "redis never registered with the agent"; }
  sleep 0.5
  status=$(curl -sf http://127.0.0.1:19464/status || true)
done
python3 - "$pid" "$status" << 'EOF'
import json, sys
pid, status = int(sys.argv[1]), json.loads(sys.argv[2])
members = status.get("processes") or status.get("members") or []
m = next(p for p in members if p.get("pid") == pid)
assert m.get("class") == "guaranteed", m
assert m.get("container"), m
print("kube-play-test: /status: pid %d class %s container %s budget %s" % (pid, m["class"], m["container"], m.get("budget")))
EOF
metrics=$(curl -sf http://127.0.0.1:19464/metrics) || fail "no /metrics"
grep -q "^mmtier_placed_bytes{pid=\"$pid\"," <<< "$metrics" ||
  fail "the statistics of pid $pid (read through its /proc/PID/root) are not in /metrics"
"$MMTIER" stat "$pid" > "$WORK/stat.out" 2>&1 || { cat "$WORK/stat.out"; fail "mmtier stat $pid from the host"; }
cat "$WORK/stat.out"
# 3. The admission webhook, from its image as its Deployment runs it (user
# 65534, read-only root, no capabilities), with the certificate
# webhook/install.sh makes: its answer for the annotated pod, applied,
# must be what mmtier inject wrote offline.
"$ROOT/deploy/kubernetes/webhook/install.sh" --render "$WORK/webhook" > /dev/null
python3 - "$WORK" << 'EOF'
import base64, os, sys, yaml
work = sys.argv[1]
docs = list(yaml.safe_load_all(open(work + "/webhook/webhook.yaml")))
secret = next(d for d in docs if d["kind"] == "Secret")
os.makedirs(work + "/tls", exist_ok=True)
for name in ("tls.crt", "tls.key"):
    open("%s/tls/%s" % (work, name), "wb").write(base64.b64decode(secret["data"][name]))
    os.chmod("%s/tls/%s" % (work, name), 0o644)
hook = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
open(work + "/ca.crt", "wb").write(base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]))
dep = next(d for d in docs if d["kind"] == "Deployment")
c = dep["spec"]["template"]["spec"]["containers"][0]
open(work + "/webhook-command", "w").write("\n".join(c["command"]) + "\n")
EOF
mapfile -t wh_cmd < "$WORK/webhook-command"
podman run -d --name mmtier-webhook-test --user 65534 --read-only --cap-drop ALL \
  --security-opt no-new-privileges -p 127.0.0.1:18443:8443 -v "$WORK/tls:/tls:ro" \
  --entrypoint "${wh_cmd[0]}" localhost/mmtier-webhook:latest "${wh_cmd[@]:1}" > /dev/null ||
  fail "starting the webhook's container"
deadline=$((SECONDS + 30))
until curl -sf --cacert "$WORK/ca.crt" --resolve mmtier-webhook.mmtier-system.svc:18443:127.0.0.1 \
  https://mmtier-webhook.mmtier-system.svc:18443/healthz > /dev/null; do
  ((SECONDS < deadline)) || { podman logs mmtier-webhook-test 2>&1 | tail; fail "the webhook never answered"; }
  sleep 0.5
done
python3 - "$WORK" << 'EOF'
import base64, json, ssl, sys, urllib.request, yaml
work = sys.argv[1]
pod = yaml.safe_load(open(work + "/redis.yaml"))
review = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
          "request": {"uid": "kube-play", "operation": "CREATE", "namespace": "default", "object": pod}}
ctx = ssl.create_default_context(cafile=work + "/ca.crt")
ctx.check_hostname = False  # the certificate names the service; the CA is checked
req = urllib.request.Request("https://127.0.0.1:18443/mutate", data=json.dumps(review).encode(),
                             headers={"Content-Type": "application/json"})
resp = json.load(urllib.request.urlopen(req, context=ctx, timeout=30))["response"]
assert resp["allowed"] and resp["uid"] == "kube-play", resp
for op in json.loads(base64.b64decode(resp["patch"])):
    keys = op["path"].lstrip("/").split("/")
    node = pod
    for k in keys[:-1]:
        node = node[k]
    node[keys[-1]] = op["value"]
offline = yaml.safe_load(open(work + "/redis-injected-offline.yaml"))
assert pod == offline, "the webhook's pod differs from mmtier inject's"
print("kube-play-test: the webhook's patch gives the offline injection")
EOF
# 4. A pod that comes back from its capsules: mmtier.io/restore wraps
# Redis's command in `mmtier restore --latest --or-run`; the first start
# finds no capsule and runs Redis afresh; a snapshot is taken from the
# host; the pod is removed and played again (a new container: a new PID
# namespace, a new overlay mount, root without CAP_SYS_ADMIN or
# CAP_CHECKPOINT_RESTORE, the runtime's default seccomp profile), and Redis
# is back from the capsule as the container's first process, with the
# keys written before the snapshot and not the one written after.
cat > "$WORK/redis-restore.yaml" << 'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: redis-restore
  annotations:
    mmtier.io/dram-ratio: "1:4"
    mmtier.io/pmem-volume: pmem
    mmtier.io/snapshot-volume: capsules
    mmtier.io/restore: latest
spec:
  containers:
    - name: redis
      image: localhost/mmtier-redis:latest
      command: ["redis-server", "--protected-mode", "no", "--port", "6380", "--save", "", "--appendonly", "no"]
  volumes:
    - name: pmem
      hostPath: {path: PMEM_DIR, type: Directory}
    - name: capsules
      hostPath: {path: CAPSULE_DIR, type: Directory}
EOF
CAPS=$NODE/capsules
mkdir -m 700 "$CAPS"
sed -i "s|PMEM_DIR|$PMEM|; s|CAPSULE_DIR|$CAPS|" "$WORK/redis-restore.yaml"
"$MMTIER" inject -f "$WORK/redis-restore.yaml" --lib-dir "$NODE/opt/mmtier/lib" --agent-dir "$NODE/run/mmtier" \
  --bin-dir "$NODE/opt/mmtier/bin" -o "$WORK/redis-restore-injected.yaml"
rctr=redis-restore-redis
play_restore() {
  podman kube play "$WORK/redis-restore-injected.yaml" > "$WORK/redis-restore-play.out" ||
    { cat "$WORK/redis-restore-play.out"; fail "podman kube play of the restoring pod"; }
  # Asked from the host in the pod's network namespace, not with podman
  # exec: a process started in the container while it restores takes an id
  # of its PID namespace, maybe one a thread of the restored program needs
  # (mmtier inject warns of exec probes for the same reason).
  local deadline=$((SECONDS + 60)) pid
  until pid=$(podman inspect -f '{{.State.Pid}}' "$rctr" 2> /dev/null) && ((pid > 0)) &&
    nsenter -t "$pid" -n redis-cli -p 6380 ping 2> /dev/null | grep -q PONG; do
    ((SECONDS < deadline)) || { podman logs "$rctr" 2>&1 | tail; fail "the restoring pod's redis never answered"; }
    sleep 0.5
  done
}
play_restore
podman logs "$rctr" > "$WORK/redis-restore.log" 2>&1
grep -q "no durable capsule in /var/lib/mmtier/capsules; starting redis-server afresh" "$WORK/redis-restore.log" ||
  { tail "$WORK/redis-restore.log"; fail "the first start did not say it ran redis afresh"; }
[[ $(podman exec "$rctr" cat /proc/1/comm) == redis-server ]] || fail "redis is not the container's first process"
# (32 MiB placed: the library's control socket is there.)
podman exec "$rctr" redis-cli -p 6380 EVAL \
  "for i = 1, 100000 do redis.call('SET', 'before:' .. i, i .. string.rep('x', 512)) end return 1" 0 > /dev/null
rpid=$(podman inspect -f '{{.State.Pid}}' "$rctr")
deadline=$((SECONDS + 30))
until podman exec "$rctr" sh -c 'test -S /dev/shm/mmtier-0/1.ctl'; do
  ((SECONDS < deadline)) || fail "the restoring pod's redis never opened its control socket"
  sleep 0.5
done
"$MMTIER" snapshot "$rpid" --name pod-1 > "$WORK/snapshot.out" 2>&1 || { cat "$WORK/snapshot.out"; fail "mmtier snapshot $rpid"; }
[[ -d $CAPS/pod-1.mmtcap ]] || { cat "$WORK/snapshot.out"; ls -la "$CAPS"; fail "no capsule on the pod's snapshot volume"; }
podman exec "$rctr" redis-cli -p 6380 SET after 1 > /dev/null
podman pod rm -f redis-restore > /dev/null
play_restore
podman logs "$rctr" > "$WORK/redis-restore.log" 2>&1
grep -q "pod-1.mmtcap: restoring process 1 in place" "$WORK/redis-restore.log" ||
  { tail "$WORK/redis-restore.log"; fail "the new container did not restore redis from its capsule"; }
[[ $(podman exec "$rctr" redis-cli -p 6380 DBSIZE) == 100000 && $(podman exec "$rctr" redis-cli -p 6380 GETRANGE before:77 0 1) == 77 &&
  -z $(podman exec "$rctr" redis-cli -p 6380 GET after) ]] ||
  { podman logs "$rctr" 2>&1 | tail -20; fail "the restored redis does not hold the snapshot's keys"; }
rpid2=$(podman inspect -f '{{.State.Pid}}' "$rctr")
grep -q "/opt/mmtier/lib/libmmtier.so" "/proc/$rpid2/maps" || fail "the restored redis does not map the library"
say "a new container of the pod restored redis (host pid $rpid2) from its capsule: 100000 keys, none after the snapshot"
podman pod rm -f redis-restore > /dev/null

say "PASS"
