#!/usr/bin/env python3
"""mmtier inject: put the containers of Kubernetes workloads under libmmtier.

Reads Kubernetes YAML (one or more documents, `List`s too), and for every
Pod, and every pod template of a Deployment, StatefulSet, DaemonSet,
ReplicaSet, ReplicationController, Job or CronJob, whose annotations ask for
it (see ANNOTATIONS), adds to the chosen containers:

  * LD_PRELOAD=<lib-dir>/libmmtier.so (first; entries already there kept),
  * the MMTIER_* variables the annotations name,
  * read-only hostPath mounts of the library directory the node agent's
    DaemonSet installs (/opt/mmtier/lib on the node, --lib-dir) and of the
    agent's socket directory (/run/mmtier, --agent-dir), both at those
    same paths in the container,
  * the PMem volume and the capsule volume, when named.

Everything else passes through unchanged, in order.  Injection is
idempotent: what an earlier injection added is recorded in the annotation
mmtier.io/injected and taken out before injecting again.  Offline, like
`istioctl kube-inject`; the output is for `kubectl apply -f -`.

`mmtier help inject` (the mmtier command) prints the manual; this file is
run by it.
"""

import argparse
import json
import re
import sys

try:
    import yaml
except ImportError:  # pragma: no cover - depends on the machine
    sys.stderr.write("mmtier inject: needs Python's yaml module (Debian: apt-get install python3-yaml)\n")
    sys.exit(1)

PREFIX = "mmtier.io/"
RECORD = PREFIX + "injected"
RECORD_VERSION = 1
LIB_VOLUME = "mmtier-lib"
RUN_VOLUME = "mmtier-run"
LIB_MOUNT = "/opt/mmtier/lib"  # in the container: LD_PRELOAD's directory
LIB_FILE = LIB_MOUNT + "/libmmtier.so"  # mounted alone: the pod waits until the node has it
RUN_MOUNT = "/run/mmtier"  # in the container: the library's default agent socket directory
BIN_VOLUME = "mmtier-bin"
BIN_FILE = "/opt/mmtier/bin/mmtier"  # mmtier restore --or-run, the command of a container restored at start
PMEM_MOUNT = "/mnt/mmtier/pmem"
CAPSULE_MOUNT = "/var/lib/mmtier/capsules"

# Kinds whose pod template is at these keys.
TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}


class InjectError(Exception):
    pass


# --- annotation values, checked as the library would check them ----------

# The library's sizes: digits, then K, M, G or T (binary, any case),
# optionally followed by B or iB; or a plain B.  A Kubernetes quantity's Ki,
# Mi, Gi, Ti is accepted too and written as K, M, G, T.
SIZE_RE = re.compile(r"^([0-9]+)(?:([kmgtKMGT])(i|[iI][bB]|[bB])?|[bB])?$")
DURATION_RE = re.compile(r"^[0-9]+(s|m|h)$")


def check_ratio(v):
    m = re.fullmatch(r"([0-9]+):([0-9]+)", v)
    if not m or int(m.group(1)) > 1000000 or int(m.group(2)) > 1000000 or (int(m.group(1)) == 0 and int(m.group(2)) == 0):
        raise ValueError("expected D:P, integers 0..1000000, not both 0 (like 1:4)")
    return v


def check_size(v):
    m = SIZE_RE.match(v)
    if not m:
        raise ValueError("expected a size like 512M, 4G or 4Gi (binary units)")
    if m.group(3) == "i":
        return m.group(1) + m.group(2)
    return v


def check_size_or_none(v):
    return v if v in ("none", "0") else check_size(v)


def check_duration(v):
    if not DURATION_RE.match(v):
        raise ValueError("expected a duration from 1s to 24h, like 30s, 10m or 1h")
    n, unit = int(v[:-1]), v[-1]
    seconds = n * {"s": 1, "m": 60, "h": 3600}[unit]
    if seconds < 1 or seconds > 86400:
        raise ValueError("expected a duration from 1s to 24h, like 30s, 10m or 1h")
    return v


def check_int(lo, hi):
    def check(v):
        if not re.fullmatch(r"[0-9]+", v) or not lo <= int(v) <= hi:
            raise ValueError("expected an integer from %d to %d" % (lo, hi))
        return v

    return check


def check_choice(mapping):
    def check(v):
        if v not in mapping:
            raise ValueError("expected one of " + ", ".join(mapping))
        return mapping[v]

    return check


# annotation -> (variable, check).  The checks return the variable's value.
ENV_ANNOTATIONS = {
    "dram-ratio": ("MMTIER_DRAM_RATIO", check_ratio),
    "dram-limit": ("MMTIER_DRAM_LIMIT", check_size_or_none),
    "pmem-limit": ("MMTIER_PMEM_LIMIT", check_size_or_none),
    "policy": ("MMTIER_POLICY", check_choice({"latency": "ratio", "ratio": "ratio", "dram-first": "dram-first",
                                              "bandwidth": "bandwidth"})),
    "class": ("MMTIER_QOS_CLASS", check_choice({"guaranteed": "guaranteed", "burstable": "burstable",
                                                "best-effort": "best-effort"})),
    "guaranteed-dram": ("MMTIER_QOS_DRAM", check_size),
    "weight": ("MMTIER_QOS_WEIGHT", check_int(1, 10000)),
    "snapshot-every": ("MMTIER_SNAPSHOT_EVERY", check_duration),
    "snapshot-keep": ("MMTIER_SNAPSHOT_KEEP", check_int(1, 10000)),
    "migrate-mbps": ("MMTIER_MIGRATE_MBPS", check_int(0, 1000000)),
    "log": ("MMTIER_LOG", check_choice({k: k for k in ("error", "warn", "info", "debug")})),
}
# The variables an injection may add, in the order of the record's bits
# (never reordered: a record written earlier must read the same).
RECORD_VARS = [var for var, _ in ENV_ANNOTATIONS.values()] + ["MMTIER_PMEM_PATH", "MMTIER_SNAPSHOT_DIR"]
OTHER_ANNOTATIONS = {"inject", "containers", "pmem-volume", "snapshot-volume", "userfaultfd", "restore", "injected"}
# The seccomp profile the node agent's DaemonSet installs for the kubelet.
SECCOMP_PROFILE = "mmtier-tiering.json"
# Record bits before the variables': the LD_PRELOAD entry, the seccomp
# profile, the capability.
BIT_PRELOAD, BIT_SECCOMP, BIT_PTRACE, FIRST_VAR_BIT = 1, 2, 4, 3
# Past the variables' bits: the command wrapped in mmtier restore --or-run.
BIT_RESTORE = 1 << 24


def restore_prefix(capsule_dir):
    """What mmtier.io/restore: latest puts before a container's command."""
    return [BIN_FILE, "restore", "--latest", "--dir", capsule_dir, "--or-run"]


def read_annotations(meta, where):
    """The mmtier.io/ annotations of an object's metadata, checked."""
    ann = (meta or {}).get("annotations") or {}
    ours = {k[len(PREFIX):]: v for k, v in ann.items() if isinstance(k, str) and k.startswith(PREFIX)}
    for name, value in ours.items():
        if name not in ENV_ANNOTATIONS and name not in OTHER_ANNOTATIONS:
            known = ", ".join(PREFIX + n for n in sorted(list(ENV_ANNOTATIONS) + list(OTHER_ANNOTATIONS - {"injected"})))
            raise InjectError("%s: unknown annotation %s%s (known: %s)" % (where, PREFIX, name, known))
        if not isinstance(value, str):
            raise InjectError("%s: annotation %s%s must be a string (quote it: \"%s\")" % (where, PREFIX, name, value))
    return ours


def wants_injection(ann, where):
    flag = ann.get("inject")
    if flag is not None and flag not in ("true", "false"):
        raise InjectError("%s: annotation %sinject must be \"true\" or \"false\", not %r" % (where, PREFIX, flag))
    if flag == "false":
        return False
    return flag == "true" or any(k in ENV_ANNOTATIONS or k in ("pmem-volume", "snapshot-volume", "userfaultfd", "restore")
                                 for k in ann)


# --- undoing an earlier injection ------------------------------------------


def parse_record(text):
    """The record "1;NAME=HEX;..." -> {container name: bit mask}: BIT_PRELOAD,
    the LD_PRELOAD entry was added (not only prefixed); BIT_SECCOMP, the
    seccomp profile; BIT_PTRACE, the capability; bit FIRST_VAR_BIT + k,
    RECORD_VARS[k] was added.  Short, because some tools (podman 4.3's kube play) limit
    annotation values to 63 characters."""
    parts = text.split(";")
    if parts[0] != str(RECORD_VERSION):
        raise ValueError(text)
    out = {}
    for part in parts[1:]:
        name, _, mask = part.rpartition("=")
        out[name] = int(mask, 16)
    return out


def undo(pod_meta, spec):
    ann = (pod_meta or {}).get("annotations") or {}
    text = ann.get(RECORD)
    if text is None:
        return
    try:
        containers = parse_record(text)
    except ValueError:
        raise InjectError("annotation %s=%r is not what mmtier inject writes; remove it by hand" % (RECORD, text))
    ours = (LIB_FILE, RUN_MOUNT, PMEM_MOUNT, CAPSULE_MOUNT, BIN_FILE)
    lib = LIB_FILE
    for c in spec.get("containers") or []:
        if c.get("name") not in containers:
            continue
        mask = containers[c.get("name")]
        added = {var for k, var in enumerate(RECORD_VARS) if mask & (1 << (FIRST_VAR_BIT + k))}
        env = []
        for e in c.get("env") or []:
            if e.get("name") in added:
                continue
            if e.get("name") == "LD_PRELOAD":
                if mask & BIT_PRELOAD:
                    continue
                value = e.get("value") or ""
                if value.startswith(lib + " "):
                    e = dict(e, value=value[len(lib) + 1:])
            env.append(e)
        set_or_drop(c, "env", env)
        set_or_drop(c, "volumeMounts", [m for m in c.get("volumeMounts") or [] if m.get("mountPath") not in ours])
        command = c.get("command") or []
        if mask & BIT_RESTORE and len(command) > 6 and command[:4] == restore_prefix("")[:4] and \
                command[5] == "--or-run":
            c["command"] = command[6:]
        sc = c.get("securityContext") or {}
        if mask & BIT_SECCOMP:
            sc.pop("seccompProfile", None)
        if mask & BIT_PTRACE:
            caps = sc.get("capabilities") or {}
            set_or_drop(caps, "add", [x for x in caps.get("add") or [] if x != "SYS_PTRACE"])
            if not caps:
                sc.pop("capabilities", None)
        if "securityContext" in c and not sc:
            del c["securityContext"]
    set_or_drop(spec, "volumes", [v for v in spec.get("volumes") or []
                                  if v.get("name") not in (LIB_VOLUME, RUN_VOLUME, BIN_VOLUME)])
    del ann[RECORD]
    if not ann:
        del pod_meta["annotations"]


def member(obj, key, empty):
    """obj[key], made `empty` when absent or null (YAML's `key:` alone)."""
    value = obj.get(key)
    if value is None:
        value = obj[key] = empty
    return value


def set_or_drop(obj, key, items):
    if items:
        obj[key] = items
    elif key in obj:
        del obj[key]


# --- injecting --------------------------------------------------------------


def exec_hooks(c):
    """What runs a command inside container c: its exec probes and hooks."""
    found = [name for name in ("startupProbe", "readinessProbe", "livenessProbe")
             if isinstance(c.get(name), dict) and "exec" in c[name]]
    lifecycle = c.get("lifecycle") if isinstance(c.get("lifecycle"), dict) else {}
    found += ["lifecycle.%s" % h for h in ("postStart",) if isinstance(lifecycle.get(h), dict) and "exec" in lifecycle[h]]
    return found


def inject_pod(pod_meta, spec, defaults, where, opts, claim_volumes=(), warnings=None):
    """Injects one pod (its metadata and spec).  `defaults` are the
    annotations of the enclosing workload, overridden by the template's;
    `claim_volumes` the volumes a StatefulSet's claim templates add."""
    if pod_meta is None:
        raise InjectError("%s: no metadata" % where)
    undo(pod_meta, spec)
    ann = dict(defaults)
    ann.update(read_annotations(pod_meta, where))
    if not wants_injection(ann, where):
        return False

    env_values = []
    for name, (var, check) in ENV_ANNOTATIONS.items():
        if name in ann:
            try:
                env_values.append((var, check(ann[name])))
            except ValueError as e:
                raise InjectError("%s: annotation %s%s=%r: %s" % (where, PREFIX, name, ann[name], e))
    env_map = dict(env_values)
    if env_map.get("MMTIER_QOS_CLASS") == "guaranteed" and "MMTIER_QOS_DRAM" not in env_map:
        raise InjectError("%s: %sclass: guaranteed needs %sguaranteed-dram (the DRAM it is guaranteed)"
                          % (where, PREFIX, PREFIX))
    if "MMTIER_QOS_DRAM" in env_map and env_map.get("MMTIER_QOS_CLASS") != "guaranteed":
        raise InjectError("%s: %sguaranteed-dram is only for %sclass: guaranteed" % (where, PREFIX, PREFIX))

    containers = spec.get("containers") or []
    if not containers:
        raise InjectError("%s: the pod has no containers" % where)
    names = [c.get("name") for c in containers]
    chosen = names
    if "containers" in ann:
        chosen = [n.strip() for n in ann["containers"].split(",") if n.strip()]
        unknown = [n for n in chosen if n not in names]
        if unknown or not chosen:
            raise InjectError("%s: annotation %scontainers names %s, but the pod's containers are %s"
                              % (where, PREFIX, ", ".join(unknown) or "none", ", ".join(names)))

    volumes = spec.get("volumes") or []
    vol_names = {v.get("name") for v in volumes} | set(claim_volumes)
    restore = ann.get("restore", "off")
    if restore not in ("latest", "off"):
        raise InjectError("%s: annotation %srestore=%r: expected latest or off" % (where, PREFIX, restore))
    if restore == "latest" and "snapshot-volume" not in ann:
        raise InjectError("%s: %srestore: latest restores from the capsules on %ssnapshot-volume; name that volume"
                          % (where, PREFIX, PREFIX))
    for ours in (LIB_VOLUME, RUN_VOLUME, BIN_VOLUME):
        if ours in vol_names:
            raise InjectError("%s: the pod already has a volume named %s; mmtier inject needs that name" % (where, ours))
    for key in ("pmem-volume", "snapshot-volume"):
        if key in ann and ann[key] not in vol_names:
            raise InjectError("%s: annotation %s%s names volume %r, which the pod does not have (its volumes: %s)"
                              % (where, PREFIX, key, ann[key], ", ".join(sorted(n for n in vol_names if n)) or "none"))
    extra_mounts = []  # (volume, mountPath); variables in extra_env
    extra_env = []
    if "pmem-volume" in ann:
        extra_mounts.append((ann["pmem-volume"], PMEM_MOUNT))
        extra_env.append(("MMTIER_PMEM_PATH", PMEM_MOUNT))
    if "snapshot-volume" in ann:
        if ann["snapshot-volume"] == ann.get("pmem-volume"):
            # One mount of one file system: a snapshot then links the PMem
            # tier's file into the capsule instead of copying it (ZeroIO).
            extra_env.append(("MMTIER_SNAPSHOT_DIR", PMEM_MOUNT + "/capsules"))
        else:
            extra_mounts.append((ann["snapshot-volume"], CAPSULE_MOUNT))
            extra_env.append(("MMTIER_SNAPSHOT_DIR", CAPSULE_MOUNT))

    record = []
    for c in containers:
        if c.get("name") not in chosen:
            continue
        cwhere = "%s, container %s" % (where, c.get("name"))
        mask = 0
        env = list(c.get("env") or [])
        existing = {e.get("name"): i for i, e in enumerate(env)}

        # LD_PRELOAD: ours first, the container's own entries kept.
        lib = LIB_FILE
        if "LD_PRELOAD" in existing:
            i = existing["LD_PRELOAD"]
            old = env[i]
            if "value" not in old:
                raise InjectError("%s: LD_PRELOAD comes from valueFrom; set it as a value to combine it with libmmtier"
                                  % cwhere)
            # Kept as it was after ours, so that undoing gives it back.
            env[i] = {"name": "LD_PRELOAD", "value": (lib + " " + old["value"]) if old["value"] else lib}
            if not old["value"]:
                mask |= BIT_PRELOAD
        else:
            mask |= BIT_PRELOAD
            env.append({"name": "LD_PRELOAD", "value": lib})

        wanted = list(env_values) + extra_env
        for var, value in wanted:
            if var in existing:
                have = env[existing[var]]
                if have.get("value") != value:
                    raise InjectError("%s: sets %s=%r itself, but the annotations ask for %r; keep one of them"
                                      % (cwhere, var, have.get("value", "<valueFrom>"), value))
                continue  # already there, the container's own: left as it is
            env.append({"name": var, "value": value})
            mask |= 1 << (FIRST_VAR_BIT + RECORD_VARS.index(var))
        c["env"] = env

        mounts = list(c.get("volumeMounts") or [])
        taken = {m.get("mountPath") for m in mounts}
        wanted_mounts = [{"name": LIB_VOLUME, "mountPath": LIB_FILE, "readOnly": True},
                         {"name": RUN_VOLUME, "mountPath": RUN_MOUNT, "readOnly": True}]
        wanted_mounts += [{"name": vol, "mountPath": path} for vol, path in extra_mounts]
        if restore == "latest":
            wanted_mounts.append({"name": BIN_VOLUME, "mountPath": BIN_FILE, "readOnly": True})
        for m in wanted_mounts:
            if m["mountPath"] in taken:
                raise InjectError("%s: already mounts something at %s, where mmtier inject mounts %s"
                                  % (cwhere, m["mountPath"], m["name"]))
            mounts.append(m)
        if restore == "latest":
            # The container's command comes back from its newest capsule, or
            # starts afresh (mmtier restore --or-run execs it: same PID).
            if not c.get("command"):
                raise InjectError("%s: %srestore: latest needs the container's command in the pod spec (the image's "
                                  "entrypoint cannot be read here); give it as command" % (cwhere, PREFIX))
            capsule_dir = dict(extra_env)["MMTIER_SNAPSHOT_DIR"]
            c["command"] = restore_prefix(capsule_dir) + list(c["command"])
            mask |= BIT_RESTORE
            # A command run in the container while its program is restored
            # takes a process id in its PID namespace: without clone3
            # set_tid, one the restore still needs for a thread makes it
            # start the program afresh.
            hooks = exec_hooks(c)
            if hooks and warnings is not None:
                warnings.append("%s: %s runs a command in the container (exec) that can start while the program "
                                "is restored and take a thread id the restore needs, which then starts it afresh; "
                                "prefer tcpSocket or httpGet, or an initialDelaySeconds past the restore"
                                % (cwhere, ", ".join(hooks)))
        c["volumeMounts"] = mounts
        mask |= grant_userfaultfd(c, spec, ann.get("userfaultfd", "node"), cwhere)
        record.append("%s=%x" % (c.get("name"), mask))

    # The file itself (type File): a pod scheduled before the node's agent
    # installed it waits (the kubelet retries the mount) instead of running
    # without it, and a container keeps the copy it started with.
    volumes.append({"name": LIB_VOLUME, "hostPath": {"path": opts.lib_dir + "/libmmtier.so", "type": "File"}})
    volumes.append({"name": RUN_VOLUME, "hostPath": {"path": opts.agent_dir, "type": "DirectoryOrCreate"}})
    if restore == "latest":
        volumes.append({"name": BIN_VOLUME, "hostPath": {"path": opts.bin_dir + "/mmtier", "type": "File"}})
    spec["volumes"] = volumes
    member(pod_meta, "annotations", {})[RECORD] = ";".join([str(RECORD_VERSION)] + record)
    return True


def run_as(c, spec):
    """The uid a container runs as, if the spec says (None: the image's)."""
    for ctx in (c.get("securityContext") or {}, spec.get("securityContext") or {}):
        if "runAsUser" in ctx:
            return ctx["runAsUser"]
    return None


def grant_userfaultfd(c, spec, how, where):
    """What lets the container's processes use userfaultfd, by the
    annotation mmtier.io/userfaultfd: "node" adds nothing (the node allows
    it: vm.unprivileged_userfaultfd=1 and a seccomp profile without
    userfaultfd blocked); "profile" the seccomp profile SECCOMP_PROFILE;
    "capability" that and CAP_SYS_PTRACE, which counts only for root.
    Returns the record bits."""
    if how not in ("node", "profile", "capability"):
        raise InjectError("%s: annotation %suserfaultfd=%r: expected node, profile or capability" % (where, PREFIX, how))
    if how == "node":
        return 0
    bits = 0
    sc = member(c, "securityContext", {})
    if sc.get("privileged"):
        return 0  # nothing is filtered or withheld
    have = sc.get("seccompProfile")
    if have is None:
        sc["seccompProfile"] = {"type": "Localhost", "localhostProfile": SECCOMP_PROFILE}
        bits |= BIT_SECCOMP
    elif have.get("type") != "Unconfined" and have.get("localhostProfile") != SECCOMP_PROFILE:
        raise InjectError("%s: has its own seccomp profile %s, and %suserfaultfd=%s would replace it; allow "
                          "userfaultfd, move_pages, migrate_pages and mbind in it and use %suserfaultfd: node"
                          % (where, have.get("localhostProfile") or have.get("type"), PREFIX, how, PREFIX))
    if how == "capability":
        uid = run_as(c, spec)
        if uid not in (None, 0) or (c.get("securityContext") or {}).get("runAsNonRoot") or \
                (spec.get("securityContext") or {}).get("runAsNonRoot"):
            raise InjectError("%s: runs as a user other than root, for whom CAP_SYS_PTRACE is not effective: use "
                              "%suserfaultfd: profile with the node's vm.unprivileged_userfaultfd=1 (the "
                              "unprivileged-userfaultfd overlay of deploy/kubernetes)" % (where, PREFIX))
        caps = member(sc, "capabilities", {})
        if "SYS_PTRACE" not in (caps.get("add") or []):
            member(caps, "add", []).append("SYS_PTRACE")
            bits |= BIT_PTRACE
    return bits


def describe(doc):
    meta = doc.get("metadata") or {}
    return "%s %s" % (doc.get("kind"), meta.get("name", "<no name>"))


def inject_object(doc, opts, counts):
    if not isinstance(doc, dict):
        return doc
    kind = doc.get("kind")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list)):
        doc["items"] = [inject_object(item, opts, counts) for item in doc["items"]]
        return doc
    counts["seen"] += 1
    where = describe(doc)
    if kind == "Pod":
        spec = doc.get("spec")
        if not isinstance(spec, dict):
            raise InjectError("%s: no spec" % where)
        member(doc, "metadata", {})
        if inject_pod(doc["metadata"], spec, {}, where, opts, warnings=counts.setdefault("warnings", [])):
            counts["injected"] += 1
        return doc
    if kind in TEMPLATE_PATHS:
        node = doc
        for key in TEMPLATE_PATHS[kind]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict) or not isinstance(node.get("spec"), dict):
            raise InjectError("%s: no pod template at %s" % (where, ".".join(TEMPLATE_PATHS[kind])))
        defaults = read_annotations(doc.get("metadata"), where)
        defaults.pop("injected", None)
        claims = []
        if kind == "StatefulSet":
            claims = [(t.get("metadata") or {}).get("name") for t in (doc["spec"].get("volumeClaimTemplates") or [])]
        member(node, "metadata", {})
        if inject_pod(node["metadata"], node["spec"], defaults, where, opts, claims,
                      warnings=counts.setdefault("warnings", [])):
            counts["injected"] += 1
        return doc
    return doc


# --- the same as a mutating admission webhook ---------------------------


def admission_response(review, opts):
    """The AdmissionReview (admission.k8s.io/v1) answering one: a Pod whose
    annotations ask for it gets a JSON patch that replaces its spec and
    annotations with the injected ones; a bad annotation is refused with
    inject's message; anything else is allowed unchanged, and so is a pod
    that already carries an injection (mmtier inject ran offline on its
    workload, whose own annotations the pod does not carry; or this
    webhook is invoked again after another one changed the pod)."""
    import base64
    import copy
    req = review.get("request") or {}
    resp = {"uid": req.get("uid", ""), "allowed": True}
    obj = req.get("object")
    if req.get("operation") == "CREATE" and isinstance(obj, dict) and obj.get("kind", "Pod") == "Pod" \
            and isinstance(obj.get("spec"), dict) and RECORD not in ((obj.get("metadata") or {}).get("annotations") or {}):
        pod = copy.deepcopy(obj)
        meta = member(pod, "metadata", {})
        name = meta.get("name") or meta.get("generateName") or "<unnamed>"
        warnings = []
        try:
            changed = inject_pod(meta, pod["spec"], {}, "Pod %s/%s" % (req.get("namespace", ""), name), opts,
                                 warnings=warnings)
        except InjectError as e:
            resp["allowed"] = False
            resp["status"] = {"code": 400, "message": "mmtier: %s" % e}
            changed = False
        if changed:
            patch = [{"op": "replace", "path": "/spec", "value": pod["spec"]},
                     {"op": "add", "path": "/metadata/annotations", "value": meta["annotations"]}]
            resp["patchType"] = "JSONPatch"
            resp["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
            if warnings:
                resp["warnings"] = ["mmtier: %s" % w for w in warnings]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": resp}


def serve_webhook(opts):
    """HTTPS on opts.listen: POST /mutate takes an AdmissionReview; GET
    /healthz says ok.  One request at a time per thread, bodies of at most
    4 MiB, 10 s to send one."""
    import http.server
    import socketserver
    import ssl

    class Handler(http.server.BaseHTTPRequestHandler):
        timeout = 10

        def reply(self, code, body, ctype="application/json"):
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/healthz":
                self.reply(200, "ok\n", "text/plain")
            else:
                self.reply(404, "not found\n", "text/plain")

        def setup(self):
            # The TLS handshake here, in this connection's thread, with a
            # time limit: a client that connects and says nothing holds
            # only its own thread, never the server's accept.
            self.request.settimeout(self.timeout)
            self.request = ctx.wrap_socket(self.request, server_side=True)
            super().setup()

        def do_POST(self):
            try:
                n = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                n = -1
            if n <= 0 or n > 4 << 20:
                self.reply(400, "a body of 1 byte to 4 MiB is needed\n", "text/plain")
                return
            body = self.rfile.read(n)  # read before any answer: TLS closes badly over unread data
            if self.path.split("?")[0] != "/mutate":
                self.reply(404, "not found\n", "text/plain")
                return
            try:
                review = json.loads(body)
                if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
                    raise ValueError("not an AdmissionReview")
            except ValueError as e:
                self.reply(400, "%s\n" % e, "text/plain")
                return
            try:
                answer = admission_response(review, opts)
            except Exception as e:  # noqa: BLE001 - a pod is never refused for a fault of the webhook's
                sys.stderr.write("mmtier inject: webhook: %s: %r\n" % (type(e).__name__, e))
                answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                          "response": {"uid": str((review.get("request") or {}).get("uid", "")), "allowed": True}}
            self.reply(200, json.dumps(answer))

        def log_message(self, fmt, *args):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

        def handle_error(self, request, client_address):
            pass  # a failed handshake or a dropped client: nothing to say

    host, _, port = opts.webhook.rpartition(":")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(opts.tls_cert, opts.tls_key)
    server = Server((host or "0.0.0.0", int(port)), Handler)
    sys.stderr.write("mmtier inject: admission webhook on https://%s:%d/mutate\n" % server.server_address[:2])
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def main(argv):
    p = argparse.ArgumentParser(prog="mmtier inject", add_help=True,
                                description="Put the containers of Kubernetes workloads under libmmtier, "
                                "as their mmtier.io/ annotations ask (see mmtier help inject).")
    p.add_argument("-f", "--filename", default="-", help="the YAML to read (default: standard input)")
    p.add_argument("-o", "--output", default="-", help="where to write it (default: standard output)")
    p.add_argument("--lib-dir", default="/opt/mmtier/lib",
                   help="the node's directory holding libmmtier.so (default /opt/mmtier/lib)")
    p.add_argument("--bin-dir", default="/opt/mmtier/bin",
                   help="the node's directory holding the mmtier command, for mmtier.io/restore (default /opt/mmtier/bin)")
    p.add_argument("--agent-dir", default="/run/mmtier",
                   help="the node's directory of the agent's socket (default /run/mmtier)")
    p.add_argument("--webhook", metavar="[ADDRESS]:PORT",
                   help="serve the same as a mutating admission webhook over HTTPS (POST /mutate)")
    p.add_argument("--tls-cert", help="--webhook: the server's certificate (PEM)")
    p.add_argument("--tls-key", help="--webhook: its private key (PEM)")
    opts = p.parse_args(argv)
    if opts.webhook and not (opts.tls_cert and opts.tls_key):
        p.error("--webhook needs --tls-cert and --tls-key")
    if opts.webhook and not re.fullmatch(r"[^:]*:[0-9]{1,5}", opts.webhook):
        p.error("--webhook: expected [ADDRESS]:PORT")
    for d in (opts.lib_dir, opts.agent_dir):
        if not d.startswith("/"):
            p.error("%s: expected an absolute path" % d)
    opts.lib_dir = opts.lib_dir.rstrip("/") or "/"
    opts.agent_dir = opts.agent_dir.rstrip("/") or "/"
    if opts.webhook:
        try:
            return serve_webhook(opts)
        except OSError as e:  # ssl.SSLError is one too
            sys.stderr.write("mmtier inject: --webhook %s: %s\n" % (opts.webhook, e))
            return 1

    try:
        if opts.filename == "-":
            text = sys.stdin.read()
        else:
            with open(opts.filename, encoding="utf-8") as f:
                text = f.read()
    except OSError as e:
        sys.stderr.write("mmtier inject: %s: %s\n" % (opts.filename, e.strerror))
        return 1
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as e:
        sys.stderr.write("mmtier inject: %s: not valid YAML: %s\n" % (opts.filename, str(e).replace("\n", " ")))
        return 1
    counts = {"injected": 0, "seen": 0}
    try:
        out = [inject_object(d, opts, counts) for d in docs if d is not None]
    except InjectError as e:
        sys.stderr.write("mmtier inject: %s\n" % e)
        return 1
    text = yaml.safe_dump_all(out, sort_keys=False, default_flow_style=False, explicit_start=len(out) > 1)
    if opts.output == "-":
        sys.stdout.write(text)
    else:
        try:
            with open(opts.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as e:
            sys.stderr.write("mmtier inject: %s: %s\n" % (opts.output, e.strerror))
            return 1
    for w in counts.get("warnings", []):
        sys.stderr.write("mmtier inject: warning: %s\n" % w)
    sys.stderr.write("mmtier inject: %d of %d objects put under libmmtier\n" % (counts["injected"], counts["seen"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
