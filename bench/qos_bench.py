#!/usr/bin/env python3
"""Memory QoS on one host, measured: mmtierd shares a node DRAM budget among
three processes of different classes (a guaranteed one, two burstable ones
weighted 2:1) that each keep writing all of their memory, then one dies and
a fourth starts.  For each event it prints when the agent's budgets changed
and when every process's DRAM (as the process reports it) came within a
tolerance of its budget, from the agent's /status sampled every 50 ms.

    python3 bench/qos_bench.py [--build build] [--node 1G] [--mib 1024]

Both tiers are DRAM on this machine: what is measured is the budgets, the
placement that follows them and the time the mover takes to get there
(MMTIER_MIGRATE_MBPS, 256 MiB/s by default), not any speed of memory."""
import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

MiB = 1 << 20


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(float(s[:-1]) * mult[s[-1]]) if s[-1] in mult else int(s)


class Run:
    def __init__(self, a):
        self.a = a
        self.dir = tempfile.mkdtemp(prefix="qos-bench-")
        self.sock = os.path.join(self.dir, "agent.sock")
        self.agent = subprocess.Popen([os.path.join(a.build, "mmtierd"), "--node-dram", a.node, "--socket", self.sock,
                                       "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                      text=True)
        self.port = int(self.agent.stdout.readline().split()[-1])
        self.procs = {}
        self.t0 = time.monotonic()

    def status(self):
        with urllib.request.urlopen("http://127.0.0.1:%d/status" % self.port, timeout=5) as r:
            return {p["pid"]: p for p in json.loads(r.read())["processes"]}

    def start(self, name, env):
        e = {k: v for k, v in os.environ.items() if not k.startswith("MMTIER_")}
        e.update({"LD_PRELOAD": os.path.join(self.a.build, "libmmtier.so"), "MMTIER_AGENT_SOCKET": self.sock,
                  "MMTIER_DRAM_RATIO": "1:1", "MMTIER_STATS_DIR": "off"})
        e.update(env)
        p = subprocess.Popen([os.path.join(self.a.build, "tests/agent/agent_qos_child"), str(self.a.mib)], env=e,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs[p.pid] = (name, p)  # measured from here, while it writes its memory
        return p

    def settle(self, event, expect_pids, timeout=60, since=None):
        """Samples /status until every expected process is registered with
        a budget and its DRAM is within the tolerance of it; returns the
        times (s after the event) of the last budget change and of
        convergence, and the final status."""
        t_event = since if since is not None else time.monotonic()
        last_budgets, t_budget, t_conv, st = None, None, None, {}
        self.t_seen = None
        end = t_event + timeout
        while time.monotonic() < end:
            st = self.status()
            if set(st) >= set(expect_pids):
                if self.t_seen is None:
                    self.t_seen = time.monotonic() - t_event
                budgets = {p: st[p]["budget"] for p in expect_pids}
                if budgets != last_budgets:
                    last_budgets, t_budget, t_conv = budgets, time.monotonic() - t_event, None
                tol = self.a.tolerance
                ok = all(abs(st[p]["dram"] - st[p]["budget"]) <= max(tol * st[p]["budget"], 16 * MiB)
                         for p in expect_pids)
                if ok and t_conv is None:
                    t_conv = time.monotonic() - t_event
                if ok and time.monotonic() - t_event - t_conv > 1.0:
                    break  # held for a second
                if not ok:
                    t_conv = None
            time.sleep(0.05)
        return t_budget, t_conv, st

    def row(self, event, t_budget, t_conv, st, pids):
        parts = []
        for p in pids:
            s = st.get(p)
            if not s:
                continue
            parts.append("%s %s %d/%d" % (self.procs[p][0], s["class"][:5], s["budget"] // MiB, s["dram"] // MiB))
        print("| %s | %s | %s | %s | %s |" % (event, "%.2f" % self.t_seen if self.t_seen is not None else "-",
                                              "%.2f" % t_budget if t_budget is not None else "-",
                                         "%.2f" % t_conv if t_conv is not None else "not within 60 s",
                                         "; ".join(parts)))
        sys.stdout.flush()

    def stop(self):
        for _, p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        self.agent.send_signal(signal.SIGTERM)
        self.agent.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build")
    ap.add_argument("--node", default="1G", help="node DRAM budget (mmtierd --node-dram)")
    ap.add_argument("--mib", type=int, default=1024, help="MiB each process allocates and keeps writing")
    ap.add_argument("--guarantee", default="256M")
    ap.add_argument("--tolerance", type=float, default=0.05, help="DRAM within this share of the budget")
    a = ap.parse_args()
    r = Run(a)
    print("node DRAM %s; each process %d MiB at MMTIER_DRAM_RATIO=1:1; budget/DRAM in MiB" % (a.node, a.mib))
    print()
    print("| event | registered (s) | budgets final (s) | DRAM within %d %% of budgets (s) | per process: class budget/DRAM |"
          % round(a.tolerance * 100))
    print("|---|---|---|---|---|")
    try:
        def event(what, start=None, env=None, kill=None, pids=()):
            t = time.monotonic()
            p = r.start(start, env) if start else None
            if kill:
                kill.kill()
                kill.wait()
            want = list(pids) + ([p.pid] if p else [])
            tb, tc, st = r.settle(what, want, since=t)
            r.row(what, tb, tc, st, want)
            return p, st

        g, _ = event("G (guaranteed %s) starts" % a.guarantee, "G",
                     {"MMTIER_QOS_CLASS": "guaranteed", "MMTIER_QOS_DRAM": a.guarantee})
        b1, _ = event("B1 (burstable, weight 200) starts", "B1", {"MMTIER_QOS_WEIGHT": "200"}, pids=[g.pid])
        b2, st = event("B2 (burstable, weight 100) starts", "B2", {"MMTIER_QOS_WEIGHT": "100"}, pids=[g.pid, b1.pid])
        share = st[b1.pid]["budget"] / max(1, st[b2.pid]["budget"])
        event("B1 killed (SIGKILL)", kill=b1, pids=[g.pid, b2.pid])
        event("E (best-effort) starts", "E", {"MMTIER_QOS_CLASS": "best-effort"}, pids=[g.pid, b2.pid])
        print()
        print("B1:B2 budget ratio while both ran: %.3f (weights 2:1)" % share)
    finally:
        r.stop()


if __name__ == "__main__":
    main()
