#!/usr/bin/env python3
"""Rejects fields the Kubernetes API does not define, as an API server with
strict field validation (kubectl's default since 1.27) does.  The schema
validators of validate.js accept unknown fields, so a misspelt key
(`volumeMount:`) would pass there; here each key is looked up in the model
classes of the Kubernetes Python client (Debian's python3-kubernetes).

    fields.py FILE... (- for standard input); exits 1 on any unknown field.
"""

import re
import sys

import yaml
from kubernetes import client

MODELS = client.models
# apiVersion/kind -> the model class, as the client names them: V1Pod,
# V1DaemonSet; a group's name first where two groups share a kind
# (CoreV1Event, EventsV1Event).
def model_for(api_version, kind):
    group, _, version = api_version.rpartition("/")
    group = group.split(".")[0]
    version = version[:1].upper() + version[1:]
    for name in (version + kind, group[:1].upper() + group[1:] + version + kind, "Core" + version + kind):
        if hasattr(MODELS, name):
            return name
    return None


def check(value, type_name, path, errors):
    if value is None:
        return
    m = re.fullmatch(r"list\[(.+)\]", type_name)
    if m:
        if isinstance(value, list):
            for i, item in enumerate(value):
                check(item, m.group(1), "%s[%d]" % (path, i), errors)
        return
    m = re.fullmatch(r"dict\(str, (.+)\)", type_name)
    if m:
        if isinstance(value, dict):
            for k, item in value.items():
                check(item, m.group(1), "%s.%s" % (path, k), errors)
        return
    cls = getattr(MODELS, type_name, None)
    if cls is None or not hasattr(cls, "attribute_map"):
        return  # a scalar, object, or a type the client leaves open
    if not isinstance(value, dict):
        return  # a type error: validate.js reports those
    by_json = {json_name: attr for attr, json_name in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in by_json:
            errors.append("%s: unknown field %r (%s)" % (path, key, type_name))
            continue
        check(item, cls.openapi_types[by_json[key]], "%s.%s" % (path, key), errors)


def objects(doc):
    if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
        for item in doc["items"]:
            yield from objects(item)
    elif doc is not None:
        yield doc


def main(argv):
    if not argv:
        sys.stderr.write("usage: fields.py FILE... (- for standard input)\n")
        return 2
    bad = count = 0
    for f in argv:
        text = sys.stdin.read() if f == "-" else open(f, encoding="utf-8").read()
        for doc in yaml.safe_load_all(text):
            for obj in objects(doc):
                count += 1
                name = "%s: %s %s %s" % (f, obj.get("apiVersion"), obj.get("kind"),
                                         (obj.get("metadata") or {}).get("name", "<no name>"))
                cls_name = model_for(str(obj.get("apiVersion", "")), str(obj.get("kind", "")))
                if cls_name is None:
                    print("%s: INVALID: no model for this apiVersion and kind" % name)
                    bad += 1
                    continue
                errors = []
                check(obj, cls_name, "", errors)
                if errors:
                    bad += 1
                    for e in errors:
                        print("%s: INVALID: %s" % (name, e))
                else:
                    print("%s: no unknown field" % name)
    print("fields.py: %d of %d objects without unknown fields%s" % (count - bad, count, ", %d with" % bad if bad else ""))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
