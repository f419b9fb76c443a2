#!/usr/bin/env python3
"""App Migration of a redis-server under write load: pre-copy rounds
against a plain stop-copy-start (issue 16).  Run as root (it makes the
two hosts).

Two "hosts" are made on this machine as the test does: network namespaces
joined by a veth pair (10.232.0.1 and .2), each with a mount namespace of
its own and a tmpfs at the same directory for the PMem tier, capsules and
statistics.  On host A a redis-server (Debian's /usr/bin/redis-server)
runs under libmmtier with --keys keys of --value bytes; a client on A
writes keys w-0, w-1, ... (SET, one at a time) as fast as it gets
answers, from before the migration until the source ends.  Then `mmtier
migrate` sends it to `mmtier receive` on host B, with --rounds pre-copy
rounds, and with 0 (stop, copy, start), --reps times each.  For each
run: the time the program was stopped (migrate's downtime: the held
snapshot, its changes sent, the restore there), the bytes sent, the
rounds, the whole migration's time; and on B, that every write the
client had an answer for is there (the last acknowledged key, and
DBSIZE).  Output: Markdown.  Only the Python standard library is used.
"""

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from restore_bench import log  # noqa: E402

WRITER = r"""
import socket, sys, time
c = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=60)
f = c.makefile('rb')
acked = -1
print('writing', flush=True)
try:
    i = 0
    while True:
        k, v = b'w-%d' % i, b'v-%d' % i
        c.sendall(b'*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n' % (len(k), k, len(v), v))
        if f.readline() != b'+OK\r\n':
            break
        acked = i
        i += 1
except OSError:
    pass
print(acked, flush=True)
"""


class Hosts:
    def __init__(self):
        self.tag = f"{random.randint(0, 99999):05d}"
        self.d = tempfile.mkdtemp(prefix="migrate-bench-", dir="/var/tmp")
        self.holders, self.procs = {}, []
        ns = {h: f"mb{self.tag}{h}" for h in "ab"}
        for h in "ab":
            subprocess.run(["ip", "netns", "add", ns[h]], check=True)
        subprocess.run(["ip", "link", "add", f"mbv{self.tag}a", "type", "veth", "peer", "name", f"mbv{self.tag}b"],
                       check=True)
        for k, h in enumerate("ab"):
            dev = f"mbv{self.tag}{h}"
            for cmd in (["link", "set", dev, "netns", ns[h]], ["-n", ns[h], "addr", "add", f"10.232.0.{k + 1}/24",
                                                                 "dev", dev],
                        ["-n", ns[h], "link", "set", dev, "up"], ["-n", ns[h], "link", "set", "lo", "up"]):
                subprocess.run(["ip"] + cmd, check=True)
            q = subprocess.Popen(["ip", "netns", "exec", ns[h], "unshare", "--mount", "--propagation", "private", "sh",
                                  "-c", f"mount -t tmpfs none {self.d} && mkdir -m 700 {self.d}/pmem {self.d}/caps "
                                  f"{self.d}/stats && echo ready && exec sleep 100000"], stdout=subprocess.PIPE,
                                 text=True)
            assert q.stdout.readline().strip() == "ready"
            self.holders[h] = q
        self.ns = ns

    def cmd(self, h, argv, env=None):
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        return ["nsenter", "-t", str(self.holders[h].pid), "-m", "-n", "-r", "env",
                f"MMTIER_STATS_DIR={self.d}/stats"] + extra + argv

    def run(self, h, argv, env=None, timeout=3600):
        return subprocess.run(self.cmd(h, argv, env), capture_output=True, text=True, timeout=timeout)

    def redis(self, h, *args):
        r = self.run(h, ["redis-cli", "-p", "7000", *args])
        return r.stdout.strip()

    def close(self):
        for q in self.holders.values():
            q.kill()
            q.wait()
        for n in self.ns.values():
            subprocess.run(["ip", "netns", "del", n])
        shutil.rmtree(self.d, True)


def one(a, hosts, lib, mmtier, rounds):
    env = {"LD_PRELOAD": lib, "MMTIER_PMEM_PATH": f"{hosts.d}/pmem", "MMTIER_SNAPSHOT_DIR": f"{hosts.d}/caps"}
    srv = subprocess.Popen(hosts.cmd("a", ["/usr/bin/redis-server", "--port", "7000", "--save", "", "--appendonly",
                                           "no", "--enable-debug-command", "yes"], env),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while hosts.redis("a", "PING") != "PONG":
            time.sleep(0.05)
        hosts.redis("a", "DEBUG", "POPULATE", str(a.keys), "key", str(a.value))
        while not os.path.exists(f"/proc/{srv.pid}") or hosts.run(
                "a", ["test", "-S", f"{hosts.d}/stats/{srv.pid}.ctl"]).returncode:
            time.sleep(0.05)
        recv = subprocess.Popen(hosts.cmd("b", [mmtier, "receive", "--listen", "10.232.0.2:7100", "--dir",
                                                f"{hosts.d}/caps"]), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        token = re.search(r"token (\w+);", recv.stderr.readline()).group(1)
        writer = subprocess.Popen(hosts.cmd("a", [sys.executable, "-c", WRITER, "7000"]), stdout=subprocess.PIPE,
                                  text=True)
        assert writer.stdout.readline().strip() == "writing"
        time.sleep(a.warmup)
        r = hosts.run("a", [mmtier, "migrate", str(srv.pid), "--to", "10.232.0.2:7100", "--token", token,
                            "--rounds", str(rounds), "--dir", f"{hosts.d}/caps", "--json"])
        if r.returncode:
            raise SystemExit(r.stderr)
        out = json.loads(r.stdout)
        acked = int(writer.stdout.readline())
        writer.wait()
        recv.wait()
        srv.wait()
        last = hosts.redis("b", "GET", f"w-{acked}")
        size = int(hosts.redis("b", "DBSIZE"))
        ok = last == f"v-{acked}" and size >= a.keys + acked + 1
        log(f"rounds {rounds}: {r.stderr.strip()}; {acked + 1} writes acknowledged, all there: {ok}")
        hosts.redis("b", "SHUTDOWN", "NOSAVE")
        return out, acked + 1, ok
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()
        hosts.run("b", ["sh", "-c", f"rm -rf {hosts.d}/caps/* {hosts.d}/pmem/*"])
        hosts.run("a", ["sh", "-c", f"rm -rf {hosts.d}/caps/* {hosts.d}/pmem/*"])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--keys", type=int, default=5000000)
    ap.add_argument("--value", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of writes before the migration starts")
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the two hosts are network and mount namespaces")
    mmtier = os.path.abspath(os.path.join(a.build, "mmtier"))
    lib = os.path.abspath(os.path.join(a.build, "libmmtier.so"))
    hosts = Hosts()
    rows, bad = [], False
    try:
        for rep in range(a.reps):
            for rounds in (a.rounds, 0):
                out, writes, ok = one(a, hosts, lib, mmtier, rounds)
                bad |= not ok
                rows.append((rounds, out, writes, ok))
    finally:
        hosts.close()
    g = 2 ** 30
    print(f"redis-server, {a.keys} keys of {a.value} bytes, a client writing as fast as it is answered; "
          f"two hosts on one machine (veth, tmpfs)\n")
    print("| --rounds | rounds run | stopped (downtime), s | sent, GiB | sent in the held round, MiB | whole, s "
          "| writes answered | all of them on B |")
    print("|---:|---:|---:|---:|---:|---:|---:|---|")
    for rounds, out, writes, ok in rows:
        print(f"| {rounds} | {len(out['rounds'])} | {out['downtime_seconds']:.2f} | {out['sent_bytes'] / g:.2f} | "
              f"{out['rounds'][-1]['sent_bytes'] / 2**20:.1f} | {out['seconds']:.2f} | {writes} | "
              f"{'yes' if ok else 'NO'} |")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
