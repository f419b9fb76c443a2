#!/usr/bin/env python3
"""Generations of one redis-server: snapshot, SIGKILL, restore, again
(issue 15: "repeated snapshot/restore cycles of the same process: no
growth in mappings, descriptors or memory").

A redis-server (Debian's /usr/bin/redis-server) runs under libmmtier with
--keys keys of --value bytes written by redis-benchmark; then, for each of
--generations generations: a short redis-benchmark SET/GET load, the
server's mapping count (/proc/PID/maps), descriptor count and VmRSS read,
a capsule taken (`mmtier snapshot PID`), the server killed with SIGKILL
and restored from the capsule (`mmtier restore CAPSULE --detach`), which
is the next generation.  Each generation's DBSIZE must not fall (nothing
lost across a restore).  With --compare LABEL=BUILD, the same run follows
with that build's libmmtier.so and mmtier (a build tree: BUILD/mmtier,
BUILD/libmmtier.so).  Output: one row per library, the counts of every
generation, and the spread of the later half against the earlier.

  python3 bench/restore_cycles.py --build build --compare base=/tmp/old-build
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=60).stdout


def wait_pong(port, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cli(port, "ping").strip() == "PONG":
            return True
        time.sleep(0.05)
    return False


def server_pid(port):
    for line in cli(port, "info", "server").splitlines():
        if line.startswith("process_id:"):
            return int(line.split(":")[1])
    raise RuntimeError("no process_id in INFO")


def counts(pid):
    with open(f"/proc/{pid}/maps") as f:
        maps = sum(1 for _ in f)
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return maps, fds, rss


def run_one(label, build, args):
    work = tempfile.mkdtemp(prefix="mmtier-cycles-", dir="/var/tmp")
    stats = tempfile.mkdtemp(prefix="mmtier-cycles-", dir="/dev/shm")
    caps = os.path.join(work, "caps")
    os.mkdir(caps, 0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMTIER_") and k != "LD_PRELOAD"}
    env["MMTIER_STATS_DIR"] = stats
    mmtier = os.path.join(build, "mmtier")
    server_env = dict(env, LD_PRELOAD=os.path.join(build, "libmmtier.so"), MMTIER_BACKGROUND_AT="0",
                      MMTIER_SNAPSHOT_DIR=caps)
    port = args.port
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", work],
                           env=server_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = []
    try:
        if not wait_pong(port):
            raise RuntimeError("redis-server did not answer")
        subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set", "-n", str(args.keys * 2), "-r", str(args.keys),
                        "-d", str(args.value), "-q"], capture_output=True, timeout=600)
        for g in range(1, args.generations + 1):
            subprocess.run(["redis-benchmark", "-p", str(port), "-t", "set,get", "-n", "20000", "-r", str(args.keys),
                            "-d", str(args.value), "-q"], capture_output=True, timeout=600)
            pid = server_pid(port)
            keys = int(cli(port, "dbsize").strip())
            maps, fds, rss = counts(pid)
            rows.append((maps, fds, rss, keys))
            log(f"{label}: generation {g}: pid {pid} maps {maps} fds {fds} rss {rss} KiB keys {keys}")
            r = subprocess.run([mmtier, "snapshot", str(pid), "--dir", caps, "--name", f"g{g}"], env=env,
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"snapshot of generation {g}: {r.stderr.strip()}")
            os.kill(pid, signal.SIGKILL)
            # Reaped, so that the restore gets the same PID back (the first
            # generation is this script's child; a restored one is reaped
            # by its parent).
            if pid == srv.pid:
                srv.wait()
            while os.path.exists(f"/proc/{pid}"):
                time.sleep(0.02)
            r = subprocess.run([mmtier, "restore", os.path.join(caps, f"g{g}.mmtcap"), "--detach"], env=env,
                               capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                raise RuntimeError(f"restore of generation {g}: {r.stderr.strip()}")
            if not wait_pong(port):
                raise RuntimeError(f"generation {g + 1} does not answer")
            if g > 2:
                subprocess.run([mmtier, "snapshot", "delete", os.path.join(caps, f"g{g - 2}.mmtcap")], env=env,
                               capture_output=True, timeout=60, check=True)
    finally:
        try:
            os.kill(server_pid(port), signal.SIGKILL)
        except Exception:
            pass
        if srv.poll() is None:
            srv.kill()
        srv.wait()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(stats, ignore_errors=True)
    for a, b in zip(rows, rows[1:]):
        if b[3] < a[3]:
            raise RuntimeError(f"{label}: keys fell from {a[3]} to {b[3]} across a restore")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build"))
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=BUILD")
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--keys", type=int, default=100000)
    ap.add_argument("--value", type=int, default=100)
    ap.add_argument("--port", type=int, default=7399)
    args = ap.parse_args()
    for tool in ("redis-server", "redis-cli", "redis-benchmark"):
        if not shutil.which(tool):
            sys.exit(f"restore_cycles: {tool} not found (apt-get install redis-server redis-tools)")
    runs = [("libmmtier", args.build)] + [tuple(c.split("=", 1)) for c in args.compare]
    print(f"redis-server, {args.keys} keys of {args.value} bytes, {args.generations} generations "
          "(snapshot, SIGKILL, restore); per generation: mappings / descriptors, and VmRSS\n")
    print("| library | mappings by generation | later half at most / earlier half at most | descriptors | VmRSS MiB first / last |")
    print("|---|---|---|---|---|")
    for label, build in runs:
        rows = run_one(label, build, args)
        maps = [r[0] for r in rows]
        half = len(maps) // 2
        fds = sorted({r[1] for r in rows})
        print(f"| {label} | {' '.join(map(str, maps))} | {max(maps[half:])} / {max(maps[:half])} | "
              f"{'-'.join(map(str, (fds[0], fds[-1]))) if len(fds) > 1 else fds[0]} | "
              f"{rows[0][2] // 1024} / {rows[-1][2] // 1024} |")


if __name__ == "__main__":
    main()
