#!/usr/bin/env python3
"""The Kubernetes layer, offline: `mmtier inject` and the manifests of
deploy/kubernetes.

InjectTest: what `mmtier inject` (the mmtier command running cli/inject.py)
does to workloads: the environment, mounts and volumes it adds, that it is
idempotent and can be undone, that it refuses bad annotations with one line
and no output, and that the variables it writes are ones the library
accepts (a program started with them under libmmtier.so).

SchemaTest: every kustomization under deploy/kubernetes, rendered with
`kubectl kustomize`, every example, and `mmtier inject`'s output for every
example validate against the Kubernetes API schemas (validate.js, with the
kubernetes-models package) and have no field the API does not define
(fields.py, with the Kubernetes Python client's models); and both
validators reject broken objects, so their passing means something.

    kubernetes_test.py --mmtier BUILD/mmtier --lib BUILD/libmmtier.so
                       --deploy deploy/kubernetes [unittest args]
"""

import argparse
import copy
import glob
import json
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ARGS = None

DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
      annotations:
        mmtier.io/dram-ratio: "1:4"
        mmtier.io/class: burstable
        mmtier.io/weight: "300"
    spec:
      containers:
        - name: app
          image: example/app:1
          env:
            - name: LD_PRELOAD
              value: /usr/lib/libfoo.so
            - name: OTHER
              value: "1"
        - name: sidecar
          image: example/sidecar:1
"""


def run_inject(text, *extra, check=True):
    p = subprocess.run([ARGS.mmtier, "inject", *extra], input=text, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError("mmtier inject failed (%d): %s" % (p.returncode, p.stderr))
    return p


def statefulset(annotations, container):
    """A StatefulSet with one container (flow YAML) whose pod template has
    these annotations (flow YAML), and a claim template named caps."""
    return """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  selector: {matchLabels: {a: b}}
  template:
    metadata:
      labels: {a: b}
      annotations: %s
    spec:
      containers: [%s]
  volumeClaimTemplates:
    - metadata: {name: caps}
      spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
""" % (annotations, container)


def inject(text, *extra):
    return list(yaml.safe_load_all(run_inject(text, *extra).stdout))


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def template(doc):
    return doc["spec"]["template"]


class InjectTest(unittest.TestCase):
    def test_adds_preload_variables_mounts_and_volumes(self):
        (doc,) = inject(DEPLOYMENT)
        spec = template(doc)["spec"]
        for c in spec["containers"]:
            env = env_of(c)
            # Ours first, the container's own entries kept.
            if c["name"] == "app":
                self.assertEqual(env["LD_PRELOAD"], "/opt/mmtier/lib/libmmtier.so /usr/lib/libfoo.so")
                self.assertEqual(env["OTHER"], "1")
            else:
                self.assertEqual(env["LD_PRELOAD"], "/opt/mmtier/lib/libmmtier.so")
            self.assertEqual(env["MMTIER_DRAM_RATIO"], "1:4")
            self.assertEqual(env["MMTIER_QOS_CLASS"], "burstable")
            self.assertEqual(env["MMTIER_QOS_WEIGHT"], "300")
            mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
            self.assertEqual(mounts["/opt/mmtier/lib/libmmtier.so"], {"name": "mmtier-lib",
                                                                      "mountPath": "/opt/mmtier/lib/libmmtier.so",
                                                         "readOnly": True})
            self.assertEqual(mounts["/run/mmtier"]["name"], "mmtier-run")
        vols = {v["name"]: v for v in spec["volumes"]}
        # The file itself: a pod waits until its node has it.
        self.assertEqual(vols["mmtier-lib"]["hostPath"], {"path": "/opt/mmtier/lib/libmmtier.so", "type": "File"})
        self.assertEqual(vols["mmtier-run"]["hostPath"], {"path": "/run/mmtier", "type": "DirectoryOrCreate"})
        record = template(doc)["metadata"]["annotations"]["mmtier.io/injected"]
        # Short enough for tools that hold annotations to label lengths
        # (podman 4.3's kube play: 63 characters).
        self.assertLessEqual(len(record), 63, record)

    def test_node_directories_can_be_moved(self):
        (doc,) = inject(DEPLOYMENT, "--lib-dir", "/usr/local/lib/mmtier", "--agent-dir", "/var/run/mmtierd")
        vols = {v["name"]: v for v in template(doc)["spec"]["volumes"]}
        self.assertEqual(vols["mmtier-lib"]["hostPath"]["path"], "/usr/local/lib/mmtier/libmmtier.so")
        self.assertEqual(vols["mmtier-run"]["hostPath"]["path"], "/var/run/mmtierd")
        # In the container they stay where the library looks.
        c = template(doc)["spec"]["containers"][1]
        self.assertEqual(env_of(c)["LD_PRELOAD"], "/opt/mmtier/lib/libmmtier.so")
        self.assertIn("/run/mmtier", [m["mountPath"] for m in c["volumeMounts"]])

    def test_idempotent_and_follows_changed_annotations(self):
        once = run_inject(DEPLOYMENT).stdout
        twice = run_inject(once).stdout
        self.assertEqual(once, twice)
        doc = yaml.safe_load(once)
        template(doc)["metadata"]["annotations"]["mmtier.io/dram-ratio"] = "1:9"
        del template(doc)["metadata"]["annotations"]["mmtier.io/weight"]
        (again,) = inject(yaml.safe_dump(doc))
        for c in template(again)["spec"]["containers"]:
            names = [e["name"] for e in c["env"]]
            self.assertEqual(len(names), len(set(names)), names)
            self.assertEqual(env_of(c)["MMTIER_DRAM_RATIO"], "1:9")
            self.assertNotIn("MMTIER_QOS_WEIGHT", env_of(c))
            self.assertEqual(len(c["volumeMounts"]), 2)
        self.assertEqual(len(template(again)["spec"]["volumes"]), 2)
        self.assertEqual(env_of(template(again)["spec"]["containers"][0])["LD_PRELOAD"],
                         "/opt/mmtier/lib/libmmtier.so /usr/lib/libfoo.so")

    def test_inject_false_takes_an_injection_out(self):
        original = yaml.safe_load(DEPLOYMENT)
        (doc,) = inject(DEPLOYMENT)
        template(doc)["metadata"]["annotations"]["mmtier.io/inject"] = "false"
        (undone,) = inject(yaml.safe_dump(doc))
        template(original)["metadata"]["annotations"]["mmtier.io/inject"] = "false"
        self.assertEqual(undone, original)

    def test_objects_not_asking_pass_through_unchanged(self):
        text = """
apiVersion: v1
kind: Service
metadata: {name: s}
spec:
  ports: [{port: 80}]
---
apiVersion: v1
kind: Pod
metadata: {name: plain}
spec:
  containers: [{name: c, image: x}]
---
apiVersion: v1
kind: Pod
metadata:
  name: off
  annotations: {mmtier.io/inject: "false", mmtier.io/dram-ratio: "1:4"}
spec:
  containers: [{name: c, image: x}]
"""
        p = run_inject(text)
        self.assertEqual(list(yaml.safe_load_all(p.stdout)), list(yaml.safe_load_all(text)))
        self.assertIn("0 of 3 objects", p.stderr)

    def test_every_workload_kind_and_lists(self):
        pod_template = {"metadata": {"annotations": {"mmtier.io/inject": "true"}},
                        "spec": {"containers": [{"name": "c", "image": "x"}]}}
        docs = [
            {"apiVersion": "apps/v1", "kind": k, "metadata": {"name": k.lower()},
             "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": copy.deepcopy(pod_template)}}
            for k in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet")
        ]
        docs.append({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
                     "spec": {"template": copy.deepcopy(pod_template)}})
        docs.append({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"},
                     "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": copy.deepcopy(pod_template)}}}})
        text = yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": docs})
        p = run_inject(text)
        self.assertIn("6 of 6 objects", p.stderr)
        (out,) = yaml.safe_load_all(p.stdout)
        for item in out["items"]:
            t = item["spec"]["jobTemplate"]["spec"]["template"] if item["kind"] == "CronJob" else item["spec"]["template"]
            self.assertEqual(env_of(t["spec"]["containers"][0])["LD_PRELOAD"], "/opt/mmtier/lib/libmmtier.so",
                             item["kind"])
            self.assertNotIn("MMTIER_DRAM_RATIO", env_of(t["spec"]["containers"][0]))  # inject: true alone

    def test_workload_annotations_are_defaults_for_the_template(self):
        doc = yaml.safe_load(DEPLOYMENT)
        doc["metadata"]["annotations"] = {"mmtier.io/dram-ratio": "1:1", "mmtier.io/log": "info"}
        (out,) = inject(yaml.safe_dump(doc))
        env = env_of(template(out)["spec"]["containers"][1])
        self.assertEqual(env["MMTIER_DRAM_RATIO"], "1:4")  # the template's wins
        self.assertEqual(env["MMTIER_LOG"], "info")

    def test_only_the_named_containers(self):
        doc = yaml.safe_load(DEPLOYMENT)
        template(doc)["metadata"]["annotations"]["mmtier.io/containers"] = "sidecar"
        (out,) = inject(yaml.safe_dump(doc))
        app, sidecar = template(out)["spec"]["containers"]
        self.assertEqual(env_of(app)["LD_PRELOAD"], "/usr/lib/libfoo.so")
        self.assertNotIn("volumeMounts", app)
        self.assertEqual(env_of(sidecar)["LD_PRELOAD"], "/opt/mmtier/lib/libmmtier.so")

    def test_pmem_and_snapshot_volumes(self):
        doc = yaml.safe_load(DEPLOYMENT)
        ann = template(doc)["metadata"]["annotations"]
        ann.update({"mmtier.io/pmem-volume": "pmem", "mmtier.io/snapshot-volume": "caps",
                    "mmtier.io/guaranteed-dram": "8Gi", "mmtier.io/class": "guaranteed"})
        del ann["mmtier.io/weight"]
        template(doc)["spec"]["volumes"] = [{"name": "pmem", "hostPath": {"path": "/mnt/pmem0"}},
                                            {"name": "caps", "persistentVolumeClaim": {"claimName": "caps"}}]
        (out,) = inject(yaml.safe_dump(doc))
        c = template(out)["spec"]["containers"][0]
        env = env_of(c)
        self.assertEqual(env["MMTIER_PMEM_PATH"], "/mnt/mmtier/pmem")
        self.assertEqual(env["MMTIER_SNAPSHOT_DIR"], "/var/lib/mmtier/capsules")
        self.assertEqual(env["MMTIER_QOS_DRAM"], "8G")  # a Kubernetes quantity in the library's units
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        self.assertEqual(mounts["/mnt/mmtier/pmem"], "pmem")
        self.assertEqual(mounts["/var/lib/mmtier/capsules"], "caps")
        # The same volume for both: one mount, capsules inside it.
        ann = template(doc)["metadata"]["annotations"]
        ann["mmtier.io/snapshot-volume"] = "pmem"
        (out,) = inject(yaml.safe_dump(doc))
        c = template(out)["spec"]["containers"][0]
        self.assertEqual(env_of(c)["MMTIER_SNAPSHOT_DIR"], "/mnt/mmtier/pmem/capsules")
        self.assertEqual([m["name"] for m in c["volumeMounts"]].count("pmem"), 1)

    def test_statefulset_claim_templates_are_volumes(self):
        text = statefulset("{mmtier.io/snapshot-volume: caps}", "{name: db, image: x}")
        (out,) = inject(text)
        c = template(out)["spec"]["containers"][0]
        self.assertIn({"name": "caps", "mountPath": "/var/lib/mmtier/capsules"}, c["volumeMounts"])

    def test_restore_wraps_the_command_and_is_undone(self):
        text = statefulset("{mmtier.io/snapshot-volume: caps, mmtier.io/restore: latest, mmtier.io/snapshot-every: 5m}",
                           '{name: db, image: x, command: [redis-server, --port, "6379"], args: [--save, ""]}')
        (out,) = inject(text, "--bin-dir", "/usr/local/mmtier/bin")
        c = template(out)["spec"]["containers"][0]
        self.assertEqual(c["command"], ["/opt/mmtier/bin/mmtier", "restore", "--latest", "--dir",
                                        "/var/lib/mmtier/capsules", "--or-run", "redis-server", "--port", "6379"])
        self.assertEqual(c["args"], ["--save", ""])
        self.assertIn({"name": "mmtier-bin", "mountPath": "/opt/mmtier/bin/mmtier", "readOnly": True},
                      c["volumeMounts"])
        self.assertIn({"name": "mmtier-bin", "hostPath": {"path": "/usr/local/mmtier/bin/mmtier", "type": "File"}},
                      template(out)["spec"]["volumes"])
        # Injected again: the same; restore off: the command as it was.
        (again,) = inject(yaml.safe_dump(out), "--bin-dir", "/usr/local/mmtier/bin")
        self.assertEqual(again, out)
        template(out)["metadata"]["annotations"]["mmtier.io/restore"] = "off"
        (off,) = inject(yaml.safe_dump(out))
        c = template(off)["spec"]["containers"][0]
        self.assertEqual(c["command"], ["redis-server", "--port", "6379"])
        self.assertNotIn("mmtier-bin", [v["name"] for v in template(off)["spec"]["volumes"]])
        self.assertNotIn("/opt/mmtier/bin/mmtier", [m["mountPath"] for m in c["volumeMounts"]])
        # What it needs, said in one line each.
        doc = yaml.safe_load(text)
        del template(doc)["spec"]["containers"][0]["command"]
        p = run_inject(yaml.safe_dump(doc), check=False)
        self.assertEqual((p.returncode, p.stdout), (1, ""))
        self.assertIn("mmtier.io/restore: latest needs the container's command in the pod spec", p.stderr)
        doc = yaml.safe_load(text)
        del template(doc)["metadata"]["annotations"]["mmtier.io/snapshot-volume"]
        p = run_inject(yaml.safe_dump(doc), check=False)
        self.assertIn("mmtier.io/restore: latest restores from the capsules on mmtier.io/snapshot-volume", p.stderr)
        # An exec probe can start while the program is restored: injected,
        # with one warning naming it (none for a tcpSocket probe).
        doc = yaml.safe_load(text)
        c = template(doc)["spec"]["containers"][0]
        c["readinessProbe"] = {"exec": {"command": ["redis-cli", "ping"]}}
        c["livenessProbe"] = {"tcpSocket": {"port": 6379}}
        p = run_inject(yaml.safe_dump(doc))
        self.assertEqual(p.stderr.count("warning"), 1, p.stderr)
        self.assertRegex(p.stderr, r"mmtier inject: warning: StatefulSet \S+, container db: readinessProbe runs a "
                                   r"command in the container \(exec\) that can start while the program is restored")
        del c["readinessProbe"]
        self.assertNotIn("warning", run_inject(yaml.safe_dump(doc)).stderr)
        doc = yaml.safe_load(text)
        template(doc)["metadata"]["annotations"]["mmtier.io/restore"] = "yes"
        p = run_inject(yaml.safe_dump(doc), check=False)
        self.assertIn("annotation mmtier.io/restore='yes': expected latest or off", p.stderr)

    def test_userfaultfd_profile_and_capability(self):
        doc = yaml.safe_load(DEPLOYMENT)
        template(doc)["metadata"]["annotations"]["mmtier.io/userfaultfd"] = "capability"
        template(doc)["spec"]["containers"][1]["securityContext"] = {"capabilities": {"drop": ["ALL"]}}
        (out,) = inject(yaml.safe_dump(doc))
        for c in template(out)["spec"]["containers"]:
            sc = c["securityContext"]
            self.assertEqual(sc["seccompProfile"], {"type": "Localhost", "localhostProfile": "mmtier-tiering.json"})
            self.assertEqual(sc["capabilities"]["add"], ["SYS_PTRACE"])
        # Undone: the container's own security context as it was.
        template(out)["metadata"]["annotations"]["mmtier.io/inject"] = "false"
        (undone,) = inject(yaml.safe_dump(out))
        app, sidecar = template(undone)["spec"]["containers"]
        self.assertNotIn("securityContext", app)
        self.assertEqual(sidecar["securityContext"], {"capabilities": {"drop": ["ALL"]}})
        # profile: no capability.
        template(doc)["metadata"]["annotations"]["mmtier.io/userfaultfd"] = "profile"
        (out,) = inject(yaml.safe_dump(doc))
        self.assertNotIn("add", template(out)["spec"]["containers"][0]["securityContext"].get("capabilities", {}))
        # node (the default): nothing.
        (out,) = inject(DEPLOYMENT)
        self.assertNotIn("securityContext", template(out)["spec"]["containers"][0])
        # A capability does nothing for a user other than root: refused,
        # saying what to do instead; so is replacing a profile of its own.
        template(doc)["metadata"]["annotations"]["mmtier.io/userfaultfd"] = "capability"
        template(doc)["spec"]["securityContext"] = {"runAsUser": 999}
        p = run_inject(yaml.safe_dump(doc), check=False)
        self.assertEqual((p.returncode, p.stdout), (1, ""))
        self.assertIn("unprivileged-userfaultfd", p.stderr)
        del template(doc)["spec"]["securityContext"]
        template(doc)["spec"]["containers"][0]["securityContext"] = {
            "seccompProfile": {"type": "Localhost", "localhostProfile": "own.json"}}
        p = run_inject(yaml.safe_dump(doc), check=False)
        self.assertEqual((p.returncode, p.stdout), (1, ""))
        self.assertIn("own.json", p.stderr)

    def test_a_variable_the_container_sets_itself(self):
        doc = yaml.safe_load(DEPLOYMENT)
        app = template(doc)["spec"]["containers"][0]
        app["env"].append({"name": "MMTIER_DRAM_RATIO", "value": "1:4"})
        (out,) = inject(yaml.safe_dump(doc))
        names = [e["name"] for e in template(out)["spec"]["containers"][0]["env"]]
        self.assertEqual(names.count("MMTIER_DRAM_RATIO"), 1)
        # Undone, the container's own stays.
        template(out)["metadata"]["annotations"]["mmtier.io/inject"] = "false"
        (undone,) = inject(yaml.safe_dump(out))
        self.assertEqual(env_of(template(undone)["spec"]["containers"][0])["MMTIER_DRAM_RATIO"], "1:4")
        # A different value is an error.
        app["env"][-1]["value"] = "1:2"
        p = run_inject(yaml.safe_dump(doc), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("MMTIER_DRAM_RATIO", p.stderr)

    def test_null_fields_are_absent_ones(self):
        # The template's annotations and a container's securityContext
        # written as "key:" alone; the workload's annotations as defaults.
        doc = yaml.safe_load(DEPLOYMENT)
        doc["metadata"]["annotations"] = {"mmtier.io/dram-ratio": "1:2", "mmtier.io/userfaultfd": "profile"}
        template(doc)["metadata"]["annotations"] = None
        template(doc)["spec"]["containers"][1]["securityContext"] = None
        (out,) = inject(yaml.safe_dump(doc))
        c = template(out)["spec"]["containers"][1]
        self.assertEqual(env_of(c)["MMTIER_DRAM_RATIO"], "1:2")
        self.assertEqual(c["securityContext"]["seccompProfile"]["localhostProfile"], "mmtier-tiering.json")
        self.assertIn("mmtier.io/injected", template(out)["metadata"]["annotations"])

    def test_bad_input_is_one_line_and_no_output(self):
        cases = {
            "mmtier.io/dram-ratio": ("1/4", "mmtier.io/dram-ratio"),
            "mmtier.io/weight": ("0", "mmtier.io/weight"),
            "mmtier.io/class": ("gold", "mmtier.io/class"),
            "mmtier.io/snapshot-every": ("2d", "mmtier.io/snapshot-every"),
            "mmtier.io/dram-limit": ("4GB!", "mmtier.io/dram-limit"),
            "mmtier.io/pmem-volume": ("nosuch", "nosuch"),
            "mmtier.io/containers": ("app,ghost", "ghost"),
            "mmtier.io/dram-ration": ("1:4", "unknown annotation mmtier.io/dram-ration"),
            "mmtier.io/inject": ("yes", "mmtier.io/inject"),
            "mmtier.io/userfaultfd": ("always", "mmtier.io/userfaultfd"),
        }
        for key, (value, said) in cases.items():
            doc = yaml.safe_load(DEPLOYMENT)
            template(doc)["metadata"]["annotations"][key] = value
            p = run_inject(yaml.safe_dump(doc), check=False)
            self.assertEqual(p.returncode, 1, key)
            self.assertEqual(p.stdout, "", key)
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, p.stderr)
            self.assertIn(said, p.stderr, key)
        doc = yaml.safe_load(DEPLOYMENT)
        template(doc)["metadata"]["annotations"]["mmtier.io/class"] = "guaranteed"
        p = run_inject(yaml.safe_dump(doc), check=False)
        self.assertEqual(p.returncode, 1)
        self.assertIn("mmtier.io/guaranteed-dram", p.stderr)
        p = run_inject("a: [b\n", check=False)
        self.assertEqual((p.returncode, p.stdout), (1, ""))
        self.assertIn("not valid YAML", p.stderr)
        p = run_inject("", "--no-such-option", check=False)
        self.assertEqual(p.returncode, 2)

    def test_the_library_accepts_what_it_writes(self):
        # Every value annotation, at once, through inject and into a real
        # program under libmmtier.so: the library must start with no
        # configuration error.
        doc = yaml.safe_load(DEPLOYMENT)
        template(doc)["metadata"]["annotations"] = {
            "mmtier.io/dram-ratio": "2:3", "mmtier.io/dram-limit": "1Gi", "mmtier.io/pmem-limit": "none",
            "mmtier.io/policy": "latency", "mmtier.io/class": "guaranteed", "mmtier.io/guaranteed-dram": "512Mi",
            "mmtier.io/snapshot-every": "10m", "mmtier.io/snapshot-keep": "3", "mmtier.io/migrate-mbps": "128",
            "mmtier.io/weight": "5", "mmtier.io/log": "warn"}
        (out,) = inject(yaml.safe_dump(doc))
        env = env_of(template(out)["spec"]["containers"][1])
        mm = {k: v for k, v in env.items() if k.startswith("MMTIER_")}
        self.assertEqual(len(mm), 11, mm)
        with tempfile.TemporaryDirectory(dir="/dev/shm") as d:
            run_env = {k: v for k, v in os.environ.items() if not k.startswith("MMTIER_")}
            run_env.update(mm)
            run_env.update({"LD_PRELOAD": ARGS.lib, "MMTIER_AGENT_SOCKET": "off", "MMTIER_SNAPSHOT_DIR": d,
                            "MMTIER_STATS_DIR": "off", "MMTIER_PMEM_PATH": d})
            p = subprocess.run(["/bin/sh", "-c", "echo started"], env=run_env, capture_output=True, text=True,
                               timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(p.stdout, "started\n")
        self.assertEqual(p.stderr, "")  # MMTIER_LOG=warn: not a warning about any of them
        # And one it rejects is caught before: the library's own message
        # for the same value, so the two agree on at least this.
        bad_env = dict(run_env, MMTIER_DRAM_RATIO="1/4", MMTIER_PMEM_PATH="/tmp", MMTIER_SNAPSHOT_DIR="/tmp")
        p = subprocess.run(["/bin/sh", "-c", "true"], env=bad_env, capture_output=True, text=True, timeout=60)
        self.assertIn("MMTIER_DRAM_RATIO", p.stderr)


def json_patch(doc, patch):
    """Applies the operations a webhook answers with (add and replace of a
    member, at paths of plain keys) to a copy of doc."""
    doc = copy.deepcopy(doc)
    for op in patch:
        keys = op["path"].lstrip("/").split("/")
        node = doc
        for k in keys[:-1]:
            node = node[k.replace("~1", "/").replace("~0", "~")]
        last = keys[-1].replace("~1", "/").replace("~0", "~")
        if op["op"] == "replace" and last not in node:
            raise AssertionError("replace of a missing member %s" % op["path"])
        if op["op"] not in ("add", "replace"):
            raise AssertionError("unexpected operation %r" % op)
        node[last] = op["value"]
    return doc


class WebhookTest(unittest.TestCase):
    """`mmtier inject --webhook` over HTTPS with the certificate
    deploy/kubernetes/webhook/install.sh makes, checked against its CA and
    the service's name: its answer to an AdmissionReview is the offline
    injection, as a JSON patch."""

    @classmethod
    def setUpClass(cls):
        import base64
        cls.dir = tempfile.mkdtemp(prefix="mmtier-webhook-")
        p = subprocess.run([os.path.join(ARGS.deploy, "webhook", "install.sh"), "--render", cls.dir],
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
        docs = list(yaml.safe_load_all(open(os.path.join(cls.dir, "webhook.yaml"))))
        secret = next(d for d in docs if d["kind"] == "Secret")
        hook = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
        for name in ("tls.crt", "tls.key"):
            with open(os.path.join(cls.dir, name), "wb") as f:
                f.write(base64.b64decode(secret["data"][name]))
        with open(os.path.join(cls.dir, "ca.crt"), "wb") as f:
            f.write(base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"]))
        cls.server = subprocess.Popen([ARGS.mmtier, "inject", "--webhook", "127.0.0.1:0",
                                       "--tls-cert", os.path.join(cls.dir, "tls.crt"),
                                       "--tls-key", os.path.join(cls.dir, "tls.key")],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = cls.server.stderr.readline()
        assert "admission webhook on" in line, line
        cls.port = int(line.rsplit(":", 1)[1].split("/")[0])

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(10)
        cls.server.stderr.close()
        cls.server.stdout.close()
        shutil.rmtree(cls.dir, ignore_errors=True)

    def post(self, body, path="/mutate"):
        import http.client
        import ssl
        ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "ca.crt"))
        # The name the API server checks: the service's.
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=30, context=ctx)
        conn.sock = ctx.wrap_socket(__import__("socket").create_connection(("127.0.0.1", self.port), 30),
                                    server_hostname="mmtier-webhook.mmtier-system.svc")
        conn.request("POST" if body is not None else "GET", path, body=body,
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        data = r.read().decode()
        conn.close()
        return r.status, data

    def review(self, pod, operation="CREATE"):
        import base64
        rev = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
               "request": {"uid": "0b1c", "operation": operation, "namespace": "prod", "object": pod}}
        status, body = self.post(json.dumps(rev))
        self.assertEqual(status, 200, body)
        out = json.loads(body)
        self.assertEqual((out["apiVersion"], out["kind"]), ("admission.k8s.io/v1", "AdmissionReview"))
        resp = out["response"]
        self.assertEqual(resp["uid"], "0b1c")
        patch = json.loads(base64.b64decode(resp["patch"])) if "patch" in resp else None
        if patch is not None:
            self.assertEqual(resp["patchType"], "JSONPatch")
        return resp, patch

    def test_an_annotated_pod_gets_the_offline_injection(self):
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"generateName": "web-", "annotations": template(yaml.safe_load(DEPLOYMENT))["metadata"]["annotations"]},
               "spec": template(yaml.safe_load(DEPLOYMENT))["spec"]}
        resp, patch = self.review(pod)
        self.assertTrue(resp["allowed"])
        (offline,) = inject(yaml.safe_dump(pod))
        self.assertEqual(json_patch(pod, patch), offline)

    def test_other_requests_pass_unchanged(self):
        plain = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                 "spec": {"containers": [{"name": "c", "image": "x"}]}}
        resp, patch = self.review(plain)
        self.assertEqual((resp["allowed"], patch), (True, None))
        annotated = copy.deepcopy(plain)
        annotated["metadata"]["annotations"] = {"mmtier.io/dram-ratio": "1:4"}
        resp, patch = self.review(annotated, operation="UPDATE")  # only creation is rewritten
        self.assertEqual((resp["allowed"], patch), (True, None))

    def test_a_bad_annotation_refuses_the_pod_with_its_reason(self):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"mmtier.io/weight": "0"}},
               "spec": {"containers": [{"name": "c", "image": "x"}]}}
        resp, patch = self.review(pod)
        self.assertFalse(resp["allowed"])
        self.assertIsNone(patch)
        self.assertEqual(resp["status"]["code"], 400)
        self.assertIn("mmtier.io/weight", resp["status"]["message"])

    def test_a_silent_client_holds_up_nobody(self):
        import socket
        idle = socket.create_connection(("127.0.0.1", self.port), 10)  # connects, never speaks TLS
        self.addCleanup(idle.close)
        self.assertEqual(self.post(None, path="/healthz"), (200, "ok\n"))
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "annotations": {"mmtier.io/weight": "5"}},
               "spec": {"containers": [{"name": "c", "image": "x"}]}}
        resp, patch = self.review(pod)
        self.assertTrue(resp["allowed"])
        self.assertIsNotNone(patch)

    def test_a_pod_injected_offline_is_left_as_it_is(self):
        # Its workload went through mmtier inject, with defaults on the
        # workload that the pod does not carry: injecting it again here
        # would lose them.
        doc = yaml.safe_load(DEPLOYMENT)
        doc["metadata"]["annotations"] = {"mmtier.io/log": "info"}
        (out,) = inject(yaml.safe_dump(doc))
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": template(out)["metadata"], "spec": template(out)["spec"]}
        self.assertEqual(env_of(pod["spec"]["containers"][0])["MMTIER_LOG"], "info")
        resp, patch = self.review(pod)
        self.assertEqual((resp["allowed"], patch), (True, None))

    def test_null_fields(self):
        # YAML's "key:" alone is null: as if absent, never a failure.
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "p", "annotations": {"mmtier.io/userfaultfd": "capability"}},
               "spec": {"containers": [{"name": "c", "image": "x", "env": None, "volumeMounts": None,
                                        "securityContext": {"capabilities": {"add": None}}}], "volumes": None}}
        resp, patch = self.review(pod)
        self.assertTrue(resp["allowed"])
        c = json_patch(pod, patch)["spec"]["containers"][0]
        self.assertEqual(c["securityContext"]["capabilities"]["add"], ["SYS_PTRACE"])
        pod["spec"]["containers"][0]["securityContext"] = None
        resp, patch = self.review(pod)
        self.assertEqual(json_patch(pod, patch)["spec"]["containers"][0]["securityContext"]["seccompProfile"]["type"],
                         "Localhost")

    def test_bad_requests_and_health(self):
        self.assertEqual(self.post("not json")[0], 400)
        self.assertEqual(self.post(json.dumps({"kind": "Pod"}))[0], 400)
        self.assertEqual(self.post("{}", path="/other")[0], 404)
        self.assertEqual(self.post(None, path="/healthz"), (200, "ok\n"))


def kustomizations():
    return sorted(os.path.dirname(p) for p in glob.glob(os.path.join(ARGS.deploy, "**", "kustomization.yaml"),
                                                        recursive=True))


def examples():
    return sorted(glob.glob(os.path.join(ARGS.deploy, "examples", "*.yaml")))


def validators(path):
    """Runs both validators on a file; returns [(name, returncode, output)]."""
    out = []
    node_env = dict(os.environ, NODE_PATH=os.path.join(HERE, "node_modules"))
    p = subprocess.run(["node", os.path.join(HERE, "validate.js"), path], capture_output=True, text=True,
                       timeout=120, env=node_env)
    out.append(("validate.js", p.returncode, p.stdout + p.stderr))
    p = subprocess.run([sys.executable, os.path.join(HERE, "fields.py"), path], capture_output=True, text=True,
                       timeout=120)
    out.append(("fields.py", p.returncode, p.stdout + p.stderr))
    return out


class SchemaTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.TemporaryDirectory()
        self.addCleanup(self.dir.cleanup)

    def write(self, name, text):
        path = os.path.join(self.dir.name, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    def assert_valid(self, path, min_objects):
        n = sum(1 for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d)
        self.assertGreaterEqual(n, min_objects, path)
        for name, rc, output in validators(path):
            self.assertEqual(rc, 0, "%s rejects %s:\n%s" % (name, path, output))

    def test_kustomizations_render_and_validate(self):
        dirs = kustomizations()
        self.assertGreaterEqual(len(dirs), 4, dirs)  # the base, its overlays, the webhook
        for d in dirs:
            p = subprocess.run(["kubectl", "kustomize", d], capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 0, "kubectl kustomize %s: %s" % (d, p.stderr))
            rendered = self.write(os.path.basename(d) + ".yaml", p.stdout)
            kinds = [doc["kind"] for doc in yaml.safe_load_all(p.stdout) if doc]
            wanted = ("Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "Service")
            if os.path.basename(d) == "webhook":
                wanted = ("Deployment", "Service", "MutatingWebhookConfiguration")
            for kind in wanted:
                self.assertIn(kind, kinds, d)
            self.assert_valid(rendered, len(wanted))

    def test_the_webhook_as_installed_validates(self):
        # What install.sh applies: the objects with the CA filled in, and
        # the Secret with the certificate.
        p = subprocess.run([os.path.join(ARGS.deploy, "webhook", "install.sh"), "--render", self.dir.name],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stderr)
        path = os.path.join(self.dir.name, "webhook.yaml")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)  # it holds the private key
        docs = [d for d in yaml.safe_load_all(open(path, encoding="utf-8")) if d]
        self.assertEqual(sorted(d["kind"] for d in docs),
                         ["Deployment", "MutatingWebhookConfiguration", "Secret", "Service"])
        hook = next(d for d in docs if d["kind"] == "MutatingWebhookConfiguration")
        self.assertTrue(hook["webhooks"][0]["clientConfig"]["caBundle"])
        self.assert_valid(path, 4)

    def test_examples_and_their_injection_validate(self):
        files = examples()
        self.assertGreaterEqual(len(files), 3, files)
        for f in files:
            self.assert_valid(f, 1)
            p = run_inject(open(f, encoding="utf-8").read())
            injected = self.write("injected-" + os.path.basename(f), p.stdout)
            self.assert_valid(injected, 1)
            self.assertNotIn(" 0 of ", p.stderr, f)  # every example asks for injection

    def test_the_seccomp_profile_allows_what_tiering_needs(self):
        with open(os.path.join(ARGS.deploy, "base", "seccomp", "tiering.json"), encoding="utf-8") as f:
            profile = json.load(f)
        self.assertEqual(profile["defaultAction"], "SCMP_ACT_ALLOW")
        self.assertIn("SCMP_ARCH_X86_64", profile["architectures"])
        denied = {n for rule in profile["syscalls"] if rule["action"] != "SCMP_ACT_ALLOW" for n in rule["names"]}
        for needed in ("userfaultfd", "move_pages", "migrate_pages", "mbind", "set_mempolicy", "get_mempolicy",
                       "madvise", "mremap", "ioctl", "process_vm_readv", "memfd_create", "fallocate"):
            self.assertNotIn(needed, denied)
        for dangerous in ("kexec_load", "init_module", "bpf", "mount", "unshare", "setns", "reboot", "keyctl"):
            self.assertIn(dangerous, denied)
        # The DaemonSet installs it under the name inject gives pods.
        with open(os.path.join(ARGS.deploy, "base", "daemonset.yaml"), encoding="utf-8") as f:
            self.assertIn("/host/seccomp/mmtier-tiering.json", f.read())

    def test_the_validators_reject_broken_objects(self):
        (doc,) = inject(DEPLOYMENT)
        typo = copy.deepcopy(doc)
        c = template(typo)["spec"]["containers"][0]
        c["volumeMount"] = c.pop("volumeMounts")  # an unknown field: only fields.py sees it
        wrong_type = copy.deepcopy(doc)
        template(wrong_type)["spec"]["containers"][0]["env"][0]["value"] = 3
        missing = copy.deepcopy(doc)
        del template(missing)["spec"]["volumes"][0]["hostPath"]["path"]
        for name, broken, rejecting in (("typo", typo, {"fields.py"}),
                                        ("wrong-type", wrong_type, {"validate.js"}),
                                        ("missing", missing, {"validate.js"})):
            path = self.write(name + ".yaml", yaml.safe_dump(broken))
            results = {v: rc for v, rc, _ in validators(path)}
            for v in rejecting:
                self.assertEqual(results[v], 1, "%s accepts the %s object" % (v, name))
        unknown_kind = self.write("kind.yaml", "apiVersion: v1\nkind: Nonsense\nmetadata: {name: x}\n")
        self.assertTrue(all(rc == 1 for _, rc, _ in validators(unknown_kind)))


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--mmtier", required=True)
    parser.add_argument("--lib", required=True)
    parser.add_argument("--deploy", required=True)
    ARGS, rest = parser.parse_known_args()
    if not os.path.isdir(os.path.join(HERE, "node_modules", "kubernetes-models")):
        sys.stderr.write("kubernetes_test: %s/node_modules is missing: run scripts/install-deps.sh (npm ci there)\n"
                         % HERE)
        return 1
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)


if __name__ == "__main__":
    sys.exit(main())
