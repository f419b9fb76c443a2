#!/usr/bin/env python3
"""Thin clones of a redis-server: memory and start time (issue 16).

One redis-server (Debian's /usr/bin/redis-server) runs under libmmtier and
is filled with DEBUG POPULATE (--keys keys of --value bytes); its DEBUG
DIGEST is taken, then a capsule (`mmtier snapshot PID`), and the original
is killed.  Then `mmtier clone CAPSULE --count N --port-map PORT:PORT+1`
starts N clones, and the bench measures:

  start   each clone's start time, as `mmtier clone` reports it (the
          restore command's run: checks, descriptors, mappings, threads)
  answer  seconds from the command's start until every clone answers PING
  PSS     the sum over the clones of Pss from /proc/PID/smaps_rollup,
          against the original's resident size (VmRSS), taken four
          times: once every clone answers PING; once each answered
          --reads GETs of random keys;
          once each wrote --writes keys of its own (SET; every clone must
          read its own values and none of the others'); and once each ran
          DEBUG DIGEST, which reads every value.  Redis writes to what it
          reads (a GET sets the object's LRU clock, DEBUG DIGEST counts
          references up and down), so a page of values a clone reads
          becomes that clone's own copy: the last figure is what clones
          that each read their whole data set cost.

Every clone's DEBUG DIGEST must equal the original's once its own keys
are deleted again.
Output: Markdown.  Progress goes to stderr.  Only the Python standard
library is used.
"""

import argparse
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from restore_bench import ask, kill_wait, populated_capsule, resp, wait_pong  # noqa: E402


def pss_of(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return int(re.search(r"^Pss:\s+(\d+)", f.read(), re.M).group(1)) * 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--keys", type=int, default=5000000)
    ap.add_argument("--value", type=int, default=100)
    ap.add_argument("--count", type=int, default=10)
    ap.add_argument("--writes", type=int, default=10000, help="keys each clone writes after the first PSS")
    ap.add_argument("--reads", type=int, default=10000, help="GETs of random keys each clone answers first")
    ap.add_argument("--port", type=int, default=7511)
    ap.add_argument("--dir", default="/dev/shm", help="where the capsule goes (the PMem tier's file system)")
    a = ap.parse_args()
    mmtier = os.path.abspath(os.path.join(a.build, "mmtier"))
    lib = os.path.abspath(os.path.join(a.build, "libmmtier.so"))
    work = tempfile.mkdtemp(prefix="clone-bench-", dir=a.dir)
    os.chmod(work, 0o700)
    clones = []
    try:
        srv, digest, rss, capsule = populated_capsule(a, mmtier, lib, work)
        kill_wait(srv.pid)
        srv.wait()
        t0 = time.monotonic()
        r = subprocess.run([mmtier, "clone", capsule, "--count", str(a.count), "--port-map",
                            f"{a.port}:{a.port + 1}", "--json"], capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr)
        clones = json.loads(r.stdout)
        for c in clones:
            wait_pong(c["ports"][0][1], t0)
        answered = time.monotonic() - t0
        starts = [c["start_seconds"] for c in clones]
        pss_start = sum(pss_of(c["pid"]) for c in clones)
        rng = random.Random(1)
        for c in clones:
            with socket.create_connection(("127.0.0.1", c["ports"][0][1])) as conn:
                for _ in range(a.reads):
                    resp(conn, "GET", f"key:{rng.randrange(a.keys)}")
        pss_read = sum(pss_of(c["pid"]) for c in clones)
        for c in clones:
            with socket.create_connection(("127.0.0.1", c["ports"][0][1])) as conn:
                for i in range(a.writes):
                    resp(conn, "SET", f"clone-{c['clone']}-{i}", f"value-{c['clone']}-{i}")
        own = all(ask(c["ports"][0][1], "GET", f"clone-{c['clone']}-{a.writes - 1}") ==
                  f"value-{c['clone']}-{a.writes - 1}" for c in clones)
        others = [c["clone"] for c in clones if any(
            ask(c["ports"][0][1], "GET", f"clone-{d['clone']}-0") is not None for d in clones if d is not c)]
        pss_written = sum(pss_of(c["pid"]) for c in clones)
        bad = []
        for c in clones:
            with socket.create_connection(("127.0.0.1", c["ports"][0][1])) as conn:
                for i in range(a.writes):
                    resp(conn, "DEL", f"clone-{c['clone']}-{i}")
            if ask(c["ports"][0][1], "DEBUG", "DIGEST") != digest:
                bad.append(c["clone"])
        pss_all = sum(pss_of(c["pid"]) for c in clones)
        g = 2 ** 30
        print(f"redis-server, {a.keys} keys of {a.value} bytes: original resident {rss / g:.2f} GiB; "
              f"capsule in {a.dir}; {a.count} clones\n")
        print(f"| start each, s (min .. max) | all answer PING, s | PSS sum, GiB (x original RSS): started "
              f"| after {a.reads} GETs each | after {a.writes} SETs each | after DEBUG DIGEST in each |")
        print("|---:|---:|---:|---:|---:|---:|")
        print(f"| {min(starts):.2f} .. {max(starts):.2f} | {answered:.2f} | {pss_start / g:.2f} ({pss_start / rss:.2f}) "
              f"| {pss_read / g:.2f} ({pss_read / rss:.2f}) "
              f"| {pss_written / g:.2f} ({pss_written / rss:.2f}) | {pss_all / g:.2f} ({pss_all / rss:.2f}) |")
        print(f"\ndata: DEBUG DIGEST {'equal to the original in every clone' if not bad else f'DIFFERS in {bad}'}; "
              f"each clone reads its own writes: {'yes' if own else 'NO'}; "
              f"clones seeing another's writes: {others or 'none'}")
        return 1 if bad or not own or others else 0
    finally:
        for c in clones:
            kill_wait(c["pid"])
        shutil.rmtree(work, True)


if __name__ == "__main__":
    sys.exit(main())
