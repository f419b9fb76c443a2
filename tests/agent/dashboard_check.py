#!/usr/bin/env python3
"""Checks the Grafana dashboard (deploy/grafana/mmtier-dashboard.json)
against what mmtierd really serves.

The dashboard must be a dashboard Grafana can load: panels with unique ids
and a gridPos, every non-row panel with targets that have an expr, every
datasource the ${datasource} variable, every $variable used defined.  Every
metric name in every PromQL expression (and in the template variables'
queries) must be a family in a /metrics output, and rate()/irate()/increase()
may only be applied to counters.

The /metrics output is either a file (--metrics FILE) or fetched here: with
--mmtierd, --lib and --child, this starts mmtierd and one qos_child under
libmmtier (hiding a kernel feature, so mmtier_kernel_lacks has a sample),
waits (bounded polls, no fixed sleeps) until the process is registered and
its own statistics are served, and reads /metrics.  --save FILE keeps that
output.

Exit status: 0 when all is well, 1 with the list of problems, 2 on bad use
or when mmtierd or the child would not start."""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

# PromQL functions and aggregation operators (names followed by "(" are
# skipped anyway; these may also be followed by "by"/"without").
AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
                "topk", "quantile", "limitk", "limit_ratio"}
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
            "offset", "atan2", "inf", "nan", "start", "end"}
COUNTER_FUNCTIONS = ("rate", "irate", "increase", "resets")
DS_VAR = "${datasource}"


def wait_until(pred, timeout, what, step=0.1):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        last = pred()
        if last:
            return last
        time.sleep(step)
    raise RuntimeError("not within %.0f s: %s (last: %r)" % (timeout, what, last))


# ---------------------------------------------------------------- /metrics

def parse_metrics(text):
    """{family: type} from a Prometheus text exposition (TYPE lines, and
    sample names for families without one)."""
    families = {}
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split()
            if len(parts) >= 4 and parts[1] == "TYPE":
                families[parts[2]] = parts[3]
            continue
        name = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line)
        if name:
            families.setdefault(name.group(0), "untyped")
    return families


def fetch_metrics(args):
    """Starts mmtierd and one qos_child; returns /metrics once the child is
    registered and its own statistics are served."""
    work = tempfile.mkdtemp(prefix="mmtier-dashboard-")
    # Live statistics go to tmpfs; mmtierd reads the same directory.
    stats = tempfile.mkdtemp(prefix="mmtier-dashboard-stats-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    sock = os.path.join(work, "agent.sock")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMTIER_")}
    env["MMTIER_STATS_DIR"] = stats
    agent = child = None
    try:
        agent = subprocess.Popen([args.mmtierd, "--node-dram", "256M", "--socket", sock, "--listen", "127.0.0.1:0"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = agent.stdout.readline()
        if not line.startswith("listening on port"):
            raise RuntimeError("mmtierd did not start: %r %s" % (line, agent.stderr.read()))
        port = int(line.split()[-1])

        def get(path):
            with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
                return r.read().decode()

        cenv = dict(env, LD_PRELOAD=args.lib, MMTIER_AGENT_SOCKET=sock, MMTIER_DRAM_RATIO="1:1",
                    MMTIER_HIDE_FEATURES="wp-unpopulated")
        child = subprocess.Popen([args.child, "64"], env=cenv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        ready = child.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError("qos_child did not start: %r %s" % (ready, child.stderr.read()))
        pid = child.pid
        wait_until(lambda: any(p["pid"] == pid for p in json.loads(get("/status"))["processes"]), 30,
                   "qos_child (pid %d) registered in /status" % pid)
        own = ['mmtier_info{pid="%d"' % pid, 'mmtier_qos_dram_bytes{pid="%d"' % pid,
               'mmtier_kernel_lacks{pid="%d"' % pid]
        return wait_until(lambda: (lambda t: all(s in t for s in own) and t)(get("/metrics")), 30,
                          "/metrics with the process's own families (%s)" % ", ".join(own))
    finally:
        if child and child.poll() is None:
            child.stdin.close()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)
        if agent and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(10)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(10)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stats, ignore_errors=True)


# ---------------------------------------------------------------- PromQL

def metric_names(expr):
    """Metric names in a PromQL expression: what is left once strings, label
    matchers, ranges, grouping labels, variables, numbers, functions and
    keywords are taken out."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^}]*\}", " ", e)
    e = re.sub(r"\[[^\]]*\]", " ", e)
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", e)
    e = re.sub(r"\$\{[^}]*\}|\$\w+", " ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word in AGGREGATIONS or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def rated_names(expr):
    """Metric names given directly to rate()/irate()/increase()/resets()."""
    return set(re.findall(r"\b(?:%s)\s*\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)" % "|".join(COUNTER_FUNCTIONS), expr))


def variables_used(text):
    return {a or b for a, b in re.findall(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", text)}


# ---------------------------------------------------------------- dashboard

def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def check_datasource(where, ds, problems):
    if ds is None:
        problems.append("%s: no datasource (want %s)" % (where, DS_VAR))
    elif isinstance(ds, dict):
        if ds.get("uid") != DS_VAR:
            problems.append("%s: datasource uid %r, want %r" % (where, ds.get("uid"), DS_VAR))
        if ds.get("type") not in (None, "prometheus"):
            problems.append("%s: datasource type %r, want prometheus" % (where, ds.get("type")))
    elif ds != DS_VAR:
        problems.append("%s: datasource %r, want %r" % (where, ds, DS_VAR))


def check(dash, families):
    problems = []
    exprs = []  # (where, expr)
    for key in ("title", "uid", "panels", "templating", "schemaVersion", "time"):
        if key not in dash:
            problems.append("dashboard: no %r" % key)
    if not isinstance(dash.get("schemaVersion"), int) or dash.get("schemaVersion", 0) < 27:
        problems.append("dashboard: schemaVersion %r (want a number, 27 or later)" % dash.get("schemaVersion"))

    variables = {}
    for v in dash.get("templating", {}).get("list", []):
        if "name" not in v or "type" not in v:
            problems.append("templating: variable without name or type: %r" % v)
            continue
        variables[v["name"]] = v
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        problems.append("templating: no datasource variable 'datasource' of type datasource, query prometheus")
    for want in ("instance", "comm", "pod_uid"):
        if want not in variables:
            problems.append("templating: no variable %r" % want)
    for name, v in variables.items():
        if v["type"] != "query":
            continue
        where = "variable %s" % name
        check_datasource(where, v.get("datasource"), problems)
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if not q:
            problems.append("%s: no query" % where)
            continue
        # label_values(SERIES, LABEL): only SERIES names metrics.
        lv = re.match(r"^\s*label_values\s*\((.*),\s*\w+\s*\)\s*$", q, re.S)
        exprs.append((where, lv.group(1) if lv else q))

    ids = {}
    for p in all_panels(dash.get("panels", [])):
        title = p.get("title", "?")
        pid = p.get("id")
        where = "panel %r (id %r)" % (title, pid)
        if not isinstance(pid, int):
            problems.append("%s: id is not a number" % where)
        elif pid in ids:
            problems.append("%s: id also used by panel %r" % (where, ids[pid]))
        else:
            ids[pid] = title
        if "type" not in p:
            problems.append("%s: no type" % where)
        g = p.get("gridPos")
        if not isinstance(g, dict) or any(not isinstance(g.get(k), int) for k in ("h", "w", "x", "y")):
            problems.append("%s: gridPos without h, w, x, y numbers: %r" % (where, g))
        elif g["x"] + g["w"] > 24:
            problems.append("%s: gridPos wider than 24 columns: %r" % (where, g))
        if p.get("type") == "row":
            continue
        check_datasource(where, p.get("datasource"), problems)
        targets = p.get("targets")
        if not targets:
            problems.append("%s: no targets" % where)
            continue
        refs = set()
        for t in targets:
            ref = t.get("refId")
            if not ref or ref in refs:
                problems.append("%s: target refId %r missing or repeated" % (where, ref))
            refs.add(ref)
            check_datasource("%s target %s" % (where, ref), t.get("datasource"), problems)
            if not t.get("expr"):
                problems.append("%s target %s: no expr" % (where, ref))
                continue
            exprs.append(("%s target %s" % (where, ref), t["expr"]))

    used = set()
    for where, expr in exprs:
        for var in variables_used(expr):
            if not var.startswith("__") and var not in variables:
                problems.append("%s: variable $%s is not defined" % (where, var))
        for name in sorted(metric_names(expr)):
            used.add(name)
            if name not in families:
                problems.append("%s: metric %s is not in /metrics (expr: %s)" % (where, name, expr))
        for name in sorted(rated_names(expr)):
            if name in families and families[name] != "counter":
                problems.append("%s: %s is a %s, not a counter, under rate/increase (expr: %s)"
                                % (where, name, families[name], expr))
    return problems, used


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboard", required=True, help="the dashboard JSON")
    ap.add_argument("--metrics", help="a /metrics output to check against")
    ap.add_argument("--mmtierd", help="mmtierd, to produce /metrics here (with --lib and --child)")
    ap.add_argument("--lib", help="libmmtier.so")
    ap.add_argument("--child", help="agent_qos_child")
    ap.add_argument("--save", help="write the /metrics output fetched here to this file")
    args = ap.parse_args()
    if bool(args.metrics) == bool(args.mmtierd) or (args.mmtierd and not (args.lib and args.child)):
        ap.error("give either --metrics FILE, or --mmtierd, --lib and --child")

    try:
        with open(args.dashboard) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print("dashboard_check: %s: %s" % (args.dashboard, e))
        return 1
    if not isinstance(dash, dict):
        print("dashboard_check: %s: not a JSON object" % args.dashboard)
        return 1

    if args.metrics:
        with open(args.metrics) as f:
            text = f.read()
    else:
        try:
            text = fetch_metrics(args)
        except (RuntimeError, OSError) as e:
            print("dashboard_check: could not get /metrics: %s" % e)
            return 2
        if args.save:
            with open(args.save, "w") as f:
                f.write(text)
    families = parse_metrics(text)
    if not families:
        print("dashboard_check: the /metrics output has no families")
        return 1

    problems, used = check(dash, families)
    if problems:
        print("dashboard_check: %d problem(s) in %s:" % (len(problems), args.dashboard))
        for p in problems:
            print("  - " + p)
        return 1
    print("dashboard_check: %s is fine: %d panels, %d metric names, all in /metrics (%d families there)"
          % (args.dashboard, sum(1 for p in all_panels(dash["panels"]) if p.get("type") != "row"), len(used),
             len(families)))
    print("  used: " + " ".join(sorted(used)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
