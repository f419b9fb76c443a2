#!/usr/bin/env python3
"""The snapshot pause of a process holding many descriptors.

Every descriptor is taken in the pause (its kind, what it keeps, which
numbers share a file, an epoll set's registrations, a Unix socket's peer),
so a server's thousands of connections are paid there.  For each kind and
count, a Python process under libmmtier opens the descriptors and waits;
`mmtier snapshot PID --json` takes one snapshot and its paused_ms is read.
Kinds:

  eventfd   N eventfds, none registered anywhere
  epoll     N eventfds, all registered in one epoll set
  timerfd   N timerfds (no id in their fdinfo: which share a file is
            asked of the kernel), every tenth number a dup of the one before
  unix      N/2 connected Unix stream socket pairs
  tcp       N/2 loopback TCP connections (both ends in the process)

Each library given (--lib, and --compare NAME=PATH for others) runs every
cell, alternating, --rounds times; the table gives the median pause in ms
per library.  Output: the machine, the command, the table.  Only the Python
standard library.  See docs/BENCHMARKS.md, "Descriptors in the pause".

usage: fd_pause_bench.py --build BUILD [--lib PATH] [--compare NAME=PATH ...]
                         [--kinds eventfd,epoll,timerfd,unix,tcp] [--counts 5000,18000]
                         [--rounds 3]
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HOLDER = r'''
import ctypes, os, resource, select, socket, sys, time
kind, n = sys.argv[1], int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 500), hard))
big = bytearray(64 << 20)  # the library snapshots a process that placed 32 MiB
keep = []
if kind in ("eventfd", "epoll"):
    keep = [os.eventfd(1) for _ in range(n)]
    if kind == "epoll":
        ep = select.epoll()
        for f in keep:
            ep.register(f, select.EPOLLIN)
elif kind == "timerfd":
    libc = ctypes.CDLL(None, use_errno=True)
    for i in range(n):
        keep.append(os.dup(keep[-1]) if i % 10 == 9 else libc.timerfd_create(1, 0))
        if keep[-1] < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
elif kind == "unix":
    for _ in range(n // 2):
        keep += socket.socketpair()
elif kind == "tcp":
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(4096)
    for _ in range(n // 2):
        c = socket.create_connection(ls.getsockname())
        s, _ = ls.accept()
        keep += [c, s]
print("ready", flush=True)
sys.stdin.read()
'''


def pause_ms(build, lib, kind, n, workdir):
    env = dict(os.environ, LD_PRELOAD=os.path.abspath(lib), MMTIER_PMEM_PATH=tempfile.mkdtemp(dir="/dev/shm"))
    p = subprocess.Popen([sys.executable, "-c", HOLDER, kind, str(n)], env=env, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("the holder did not start (%s, %d)" % (kind, n))
        caps = tempfile.mkdtemp(dir=workdir)
        out = subprocess.run([os.path.join(build, "mmtier"), "snapshot", str(p.pid), "--dir", caps, "--json"],
                             capture_output=True, text=True, timeout=600)
        if out.returncode != 0:
            raise RuntimeError("mmtier snapshot failed: " + out.stderr.strip())
        shutil.rmtree(caps, ignore_errors=True)
        return float(json.loads(out.stdout)["paused_ms"])
    finally:
        p.stdin.close()
        p.wait()
        shutil.rmtree(env["MMTIER_PMEM_PATH"], ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", required=True)
    ap.add_argument("--lib")
    ap.add_argument("--compare", action="append", default=[], metavar="NAME=PATH")
    ap.add_argument("--kinds", default="eventfd,epoll,unix,tcp")
    ap.add_argument("--counts", default="5000,18000")
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    libs = [("libmmtier", a.lib or os.path.join(a.build, "libmmtier.so"))]
    for c in a.compare:
        name, _, path = c.partition("=")
        libs.append((name, path))
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    counts = [int(c) for c in a.counts.split(",")]
    if max(counts) + 500 > hard:
        sys.exit("fd_pause_bench: %d descriptors need a hard RLIMIT_NOFILE above %d (it is %d)"
                 % (max(counts), max(counts) + 500, hard))
    workdir = tempfile.mkdtemp(prefix="fd-pause-", dir="/dev/shm")
    un = os.uname()
    print("Machine: nproc %d, kernel %s; capsules on /dev/shm" % (os.cpu_count(), un.release))
    print("Command: " + " ".join([os.path.basename(sys.argv[0])] + sys.argv[1:]))
    print()
    print("| kind | descriptors | " + " | ".join("%s pause ms" % n for n, _ in libs) + " |")
    print("|---|---:|" + "---:|" * len(libs))
    try:
        for kind in a.kinds.split(","):
            for n in counts:
                got = {name: [] for name, _ in libs}
                for r in range(a.rounds):
                    order = libs if r % 2 == 0 else list(reversed(libs))
                    for name, path in order:
                        got[name].append(pause_ms(a.build, path, kind, n, workdir))
                        print("  %s %s %d: %.1f ms" % (name, kind, n, got[name][-1]), file=sys.stderr)
                print("| %s | %d | " % (kind, n) +
                      " | ".join("%.1f" % statistics.median(got[name]) for name, _ in libs) + " |", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
