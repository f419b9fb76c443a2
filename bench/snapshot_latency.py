#!/usr/bin/env python3
"""What a client sees while its server is snapshotted: redis-benchmark's
latency against a redis-server under libmmtier, without snapshots, with
`mmtier snapshot` every --every seconds, and with Redis's own BGSAVE (a
fork) every --every seconds, side by side in one run (issue 15).

One redis-server (Debian's /usr/bin/redis-server) under libmmtier is
filled with DEBUG POPULATE (--keys keys of --value bytes).  Each of
--rounds rounds runs, in turn for each mode, `redis-benchmark -t set,get
-r KEYS -n REQUESTS -c 50 --csv` and keeps its p50, p99 and max latency
and its requests per second.  In the snapshot mode a thread of this script
takes a snapshot (`mmtier snapshot PID --dir DIR`), waits for it to
complete, deletes it and sleeps --every seconds, for as long as the
benchmark runs; the BGSAVE mode does the same with BGSAVE, waiting for it
to end (INFO persistence).  The pauses (the capsules' paused_ns, INFO
stats latest_fork_usec) are reported too.  Output: a Markdown table of medians.
Only the Python standard library is used.
"""

import argparse
import csv
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def ask(port, *args):
    with socket.create_connection(("127.0.0.1", port), timeout=600) as c:
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        c.sendall(out)
        f = c.makefile("rb")
        line = f.readline().rstrip(b"\r\n")
        if line[:1] == b"$":
            n = int(line[1:])
            return None if n < 0 else f.read(n + 2)[:-2].decode()
        return line[1:].decode()


def info(port, key, section="persistence"):
    for line in ask(port, "INFO", section).splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--keys", type=int, default=2000000)
    ap.add_argument("--value", type=int, default=100)
    ap.add_argument("--requests", type=int, default=400000)
    ap.add_argument("--every", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=7421)
    ap.add_argument("--dir", default="/var/tmp")
    a = ap.parse_args()
    mmtier = os.path.abspath(os.path.join(a.build, "mmtier"))
    lib = os.path.abspath(os.path.join(a.build, "libmmtier.so"))
    work = tempfile.mkdtemp(prefix="snaplat-", dir=a.dir)
    os.chmod(work, 0o700)
    srv = None
    try:
        env = dict(os.environ, LD_PRELOAD=lib, MMTIER_SNAPSHOT_DIR=work)
        srv = subprocess.Popen(["/usr/bin/redis-server", "--port", str(a.port), "--save", "", "--appendonly", "no",
                                "--dir", work, "--enable-debug-command", "yes"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(500):
            try:
                if ask(a.port, "PING") == "PONG":
                    break
            except OSError:
                time.sleep(0.02)
        ask(a.port, "DEBUG", "POPULATE", a.keys, "key", a.value)
        with open(f"/proc/{srv.pid}/status") as f:
            rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024
        log(f"resident {rss / 2**20:.0f} MiB")
        rows = {m: [] for m in ("none", "snapshot", "bgsave")}
        pauses = {"snapshot": [], "bgsave": []}
        for rnd in range(a.rounds):
            for mode in rows:
                stop = threading.Event()

                def disturb():
                    k = 0
                    while not stop.is_set():
                        if mode == "snapshot":
                            r = subprocess.run([mmtier, "snapshot", str(srv.pid), "--name", f"s{k}", "--dir", work],
                                               capture_output=True, text=True)
                            if r.returncode == 0:
                                cap = r.stdout.strip().splitlines()[-1]
                                j = subprocess.run([mmtier, "snapshot", "info", cap, "--json"], capture_output=True,
                                                   text=True)
                                try:
                                    pauses["snapshot"].append(json.loads(j.stdout)["paused_ns"] / 1e6)
                                except (ValueError, KeyError):
                                    pass
                                subprocess.run([mmtier, "snapshot", "delete", cap], capture_output=True)
                            else:
                                log(r.stderr.strip())
                        else:
                            ask(a.port, "BGSAVE")
                            while info(a.port, "rdb_bgsave_in_progress") == "1":
                                time.sleep(0.01)
                            pauses["bgsave"].append(int(info(a.port, "latest_fork_usec", "stats") or 0) / 1000)
                        k += 1
                        stop.wait(a.every)

                t = threading.Thread(target=disturb) if mode != "none" else None
                if t:
                    t.start()
                b = subprocess.run(["redis-benchmark", "-p", str(a.port), "-t", "set,get", "-r", str(a.keys), "-n",
                                    str(a.requests), "-c", "50", "-d", str(a.value), "--csv"],
                                   capture_output=True, text=True, check=True)
                stop.set()
                if t:
                    t.join()
                for rec in csv.DictReader(io.StringIO(b.stdout)):
                    rows[mode].append({"test": rec["test"], "rps": float(rec["rps"]),
                                       "p50": float(rec["p50_latency_ms"]), "p99": float(rec["p99_latency_ms"]),
                                       "max": float(rec["max_latency_ms"])})
                log(f"round {rnd} {mode}: " + ", ".join(f"{r['test']} p99 {r['p99']} max {r['max']}"
                                                       for r in rows[mode][-2:]))
        print(f"redis-server under libmmtier, {a.keys} keys of {a.value} bytes ({rss / 2**20:.0f} MiB resident); "
              f"redis-benchmark -t set,get -n {a.requests} -c 50; a snapshot or BGSAVE every {a.every} s during "
              f"the run; {a.rounds} rounds, medians\n")
        print("| during the run | test | requests/s | p50 ms | p99 ms | max ms |")
        print("|---|---|---:|---:|---:|---:|")
        names = {"none": "nothing", "snapshot": "`mmtier snapshot`", "bgsave": "`BGSAVE` (fork)"}
        for mode, rs in rows.items():
            for test in ("SET", "GET"):
                sel = [r for r in rs if r["test"] == test]
                if not sel:
                    continue
                med = {k: statistics.median(r[k] for r in sel) for k in ("rps", "p50", "p99", "max")}
                print(f"| {names[mode]} | {test} | {med['rps']:.0f} | {med['p50']:.3f} | {med['p99']:.3f} | "
                      f"{med['max']:.3f} |")
        for mode, ps in pauses.items():
            if ps:
                print(f"\n{names[mode]}: {len(ps)} taken, pause median {statistics.median(ps):.1f} ms, "
                      f"max {max(ps):.1f} ms" + (" (INFO latest_fork_usec)" if mode == "bgsave" else
                                                  " (the capsules' paused time)"))
        return 0
    finally:
        if srv:
            srv.kill()
            srv.wait()
        shutil.rmtree(work, True)


if __name__ == "__main__":
    sys.exit(main())
