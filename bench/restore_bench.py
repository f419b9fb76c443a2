#!/usr/bin/env python3
"""Restore until the program answers: mmtier restore (eager and --lazy)
against redis-server loading its own RDB file of the same data (issue 15).

One redis-server (Debian's /usr/bin/redis-server) runs under libmmtier and
is filled with DEBUG POPULATE (--keys keys of --value bytes); its DEBUG
DIGEST is taken, then a capsule (`mmtier snapshot PID`) and an RDB file
(SAVE) of the same data; then it is killed with SIGKILL.  Each of --rounds
rounds then measures, in this order:

  eager   `mmtier restore CAPSULE --detach`: seconds from the command's
          start until PING answers PONG on a new connection
  lazy    `mmtier restore CAPSULE --lazy`: seconds until PONG, and until
          the restore reports its fill done (every byte in place)
  rdb     a plain redis-server started on the RDB file: seconds until PONG
          (it answers -LOADING until the file is loaded)
  aof     with --aof: a plain redis-server started with appendonly on, on
          an append-only file of the same data written without an RDB
          preamble (its commands replayed): seconds until PONG

With --autosave instead, the server runs under `mmtier run --autosave
EVERY` (a snapshot every EVERY, after a crash the newest restored by the
supervisor, lazily); each round waits for a periodic snapshot taken after
the data was loaded, kills the server with SIGKILL and measures the
seconds until PING answers PONG again (the supervisor noticing the death,
picking the capsule, restoring), then checks DEBUG DIGEST.  With --load,
a client writes SET w-N as fast as it is answered meanwhile (reconnecting
after the kill); instead of the digest, every write answered before the
restored capsule's instant must be there, and the writes lost (answered
after it, before the kill) are counted.

After each, DEBUG DIGEST must equal the original's (for the lazy restore,
taken once the fill is done: the digest reads every value), then the
server is killed.  With --cold the page cache is dropped before each
(root only; the capsule and the RDB file are then read from the disk, as
after a reboot).  Output: a Markdown table of medians (min .. max) and the
sizes.  Progress goes to stderr.  Only the Python standard library is used.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def resp(conn, *args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    conn.sendall(out)
    f = conn.makefile("rb")
    line = f.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"$":
        n = int(rest)
        return None if n < 0 else f.read(n + 2)[:-2].decode()
    if kind == b":":
        return int(rest)
    return rest.decode() if kind == b"+" else ("ERR " + rest.decode())


def ask(port, *args, timeout=600):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as c:
        return resp(c, *args)


def wait_pong(port, t0, limit=900):
    """Seconds from t0 until PING answers PONG on a fresh connection."""
    while time.monotonic() - t0 < limit:
        try:
            if ask(port, "PING", timeout=5) == "PONG":
                return time.monotonic() - t0
        except OSError:
            pass
        time.sleep(0.002)
    raise SystemExit(f"no PONG on port {port} within {limit} s")


def kill_wait(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    for _ in range(3000):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.01)


def drop_caches(cold):
    if cold:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")


def fmt(xs):
    return f"{statistics.median(xs):.2f} ({min(xs):.2f} .. {max(xs):.2f})"


def populated_capsule(a, mmtier, lib, work):
    """redis-server under libmmtier on a.port, with a.keys keys of a.value
    bytes, snapshotted into work: (the server, its DEBUG DIGEST, its
    resident bytes, the capsule's path).  The server still runs."""
    env = dict(os.environ, LD_PRELOAD=lib, MMTIER_SNAPSHOT_DIR=work)
    srv = subprocess.Popen(["/usr/bin/redis-server", "--port", str(a.port), "--save", "", "--appendonly", "no",
                            "--dir", work, "--enable-debug-command", "yes", "--daemonize", "no"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_pong(a.port, time.monotonic(), 60)
    log(f"populating {a.keys} keys of {a.value} bytes")
    ask(a.port, "DEBUG", "POPULATE", a.keys, "key", a.value)
    digest = ask(a.port, "DEBUG", "DIGEST")
    with open(f"/proc/{srv.pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1)) * 1024
    out = subprocess.run([mmtier, "snapshot", str(srv.pid), "--name", "r", "--dir", work], capture_output=True,
                         text=True, check=True)
    log(out.stderr.strip())  # the pause and the bytes written
    return srv, digest, rss, out.stdout.strip().splitlines()[-1]


class Writer(threading.Thread):
    """SET w-N v-N, one at a time, as fast as answered; reconnects after
    an error.  acks[N] = when w-N was answered (time.time_ns())."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port, self.acks, self.stop = port, [], False

    def run(self):
        while not self.stop:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as c:
                    while not self.stop:
                        i = len(self.acks)
                        if resp(c, "SET", f"w-{i}", f"v-{i}") != "OK":
                            break
                        self.acks.append(time.time_ns())
            except OSError:
                time.sleep(0.001)


def autosave(a, mmtier, work):
    """The --autosave measurement (see the module's text)."""
    env = dict(os.environ, MMTIER_SNAPSHOT_DIR=work)
    sup = subprocess.Popen([mmtier, "run", "--autosave", a.autosave, "--keep", "2", "--max-restarts",
                            str(a.rounds + 1), "--", "/usr/bin/redis-server", "--port", str(a.port), "--save", "",
                            "--appendonly", "no", "--dir", work, "--enable-debug-command", "yes"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_pong(a.port, time.monotonic(), 60)
        log(f"populating {a.keys} keys of {a.value} bytes")
        ask(a.port, "DEBUG", "POPULATE", a.keys, "key", a.value)
        digest = ask(a.port, "DEBUG", "DIGEST")
        pid = int(ask(a.port, "INFO", "server").split("process_id:")[1].split()[0])
        times, bad, lost = [], [], []
        host = pid
        writer = Writer(a.port) if a.load else None
        if writer:
            writer.start()
        for rnd in range(a.rounds):
            loaded = time.time()
            # A periodic snapshot that holds the data: one begun after it was loaded.
            while not any(e.startswith(f"auto-{pid}-") and e.endswith(".mmtcap") and
                          os.path.getmtime(os.path.join(work, e)) > loaded + 1 for e in os.listdir(work)):
                time.sleep(0.1)
            t0 = time.monotonic()
            acked_at_kill = len(writer.acks) if writer else 0
            os.kill(host, signal.SIGKILL)
            m = None
            capsule = None
            while not m:  # the supervisor's own line, once the restore is done
                line = sup.stderr.readline()
                if not line:
                    raise SystemExit("the supervisor ended")
                log(line.strip())
                c = re.search(r"; restoring (\S+) \(taken", line)
                capsule = c.group(1) if c else capsule
                m = re.match(r"mmtier run: process \d+ restored \(host pid (\d+)\)", line)
            host = int(m.group(1))
            times.append(wait_pong(a.port, t0))
            if writer:
                info = json.loads(subprocess.run([mmtier, "snapshot", "info", capsule, "--json"], capture_output=True,
                                                 text=True, check=True).stdout)
                before = [i for i in range(acked_at_kill) if writer.acks[i] < info["created_unix_ns"]]
                if before and ask(a.port, "GET", f"w-{before[-1]}") != f"v-{before[-1]}":
                    bad.append(f"round {rnd}")
                lost.append(acked_at_kill - len(before))
            elif ask(a.port, "DEBUG", "DIGEST") != digest:
                bad.append(f"round {rnd}")
            log(f"round {rnd}: answering {times[-1]:.2f} s after the kill")
        if writer:
            writer.stop = True
        print(f"redis-server, {a.keys} keys of {a.value} bytes, under mmtier run --autosave {a.autosave}"
              f"{' with a client writing all along' if writer else ''}: SIGKILL to PONG, {a.rounds} rounds, seconds: "
              f"{fmt(times)}")
        if writer:
            print(f"data: every write answered before the restored snapshot's instant there: "
                  f"{'yes' if not bad else 'NO in ' + ', '.join(bad)}; writes lost (answered after it, before the "
                  f"kill), per round: {lost}; writes answered in all: {len(writer.acks)}")
        else:
            print(f"data: DEBUG DIGEST {'equal to the original' if not bad else 'DIFFERS in ' + ', '.join(bad)}")
        return 1 if bad else 0
    finally:
        sup.send_signal(signal.SIGINT)
        try:
            sup.wait(timeout=60)
        except subprocess.TimeoutExpired:
            sup.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build")
    ap.add_argument("--keys", type=int, default=1000000)
    ap.add_argument("--value", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--port", type=int, default=7411)
    ap.add_argument("--dir", default="/var/tmp", help="where the capsule and the RDB file go (a real disk)")
    ap.add_argument("--cold", action="store_true", help="drop the page cache before each restore (root)")
    ap.add_argument("--autosave", metavar="EVERY", help="measure mmtier run --autosave EVERY instead (e.g. 5s)")
    ap.add_argument("--aof", action="store_true", help="also redis-server replaying an append-only file")
    ap.add_argument("--load", action="store_true", help="--autosave: a client writes all along")
    a = ap.parse_args()
    mmtier = os.path.abspath(os.path.join(a.build, "mmtier"))
    lib = os.path.abspath(os.path.join(a.build, "libmmtier.so"))
    work = tempfile.mkdtemp(prefix="restore-bench-", dir=a.dir)
    os.chmod(work, 0o700)
    try:
        if a.autosave:
            return autosave(a, mmtier, work)
        srv, digest, rss, capsule = populated_capsule(a, mmtier, lib, work)
        ask(a.port, "SAVE")
        aof = 0
        if a.aof:
            # A pure append-only file (no RDB preamble) of the same data.
            ask(a.port, "CONFIG", "SET", "aof-use-rdb-preamble", "no")
            ask(a.port, "CONFIG", "SET", "appendonly", "yes")
            while True:
                info = ask(a.port, "INFO", "persistence")
                if ("aof_rewrite_in_progress:0" in info and "aof_rewrite_scheduled:0" in info and
                        "aof_enabled:1" in info and "aof_last_bgrewrite_status:ok" in info):
                    break
                time.sleep(0.1)
            aof_dir = os.path.join(work, "appendonlydir")
            aof = sum(os.path.getsize(os.path.join(aof_dir, f)) for f in os.listdir(aof_dir))
        kill_wait(srv.pid)
        srv.wait()
        mem = os.path.getsize(os.path.join(capsule, "mem"))
        rdb = os.path.getsize(os.path.join(work, "dump.rdb"))
        log(f"resident {rss / 2**30:.2f} GiB, capsule mem {mem / 2**30:.2f} GiB, RDB {rdb / 2**30:.2f} GiB")
        res = {"eager": [], "lazy": [], "lazy_full": [], "rdb": [], "aof": []}
        bad = []
        for rnd in range(a.rounds):
            drop_caches(a.cold)
            t0 = time.monotonic()
            r = subprocess.run([mmtier, "restore", capsule, "--detach"], capture_output=True, text=True)
            if r.returncode:
                raise SystemExit(r.stderr)
            res["eager"].append(wait_pong(a.port, t0))
            if ask(a.port, "DEBUG", "DIGEST") != digest:
                bad.append(f"eager round {rnd}")
            kill_wait(int(r.stdout.split()[-1]))
            time.sleep(0.5)

            drop_caches(a.cold)
            t0 = time.monotonic()
            p = subprocess.Popen([mmtier, "restore", capsule, "--lazy"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.PIPE, text=True)
            first = p.stderr.readline()
            m = re.search(r"host pid (\d+)", first)
            if not m:
                raise SystemExit(first + p.stderr.read())
            res["lazy"].append(wait_pong(a.port, t0))
            line = p.stderr.readline()
            m2 = re.search(r"lazy fill done in", line)
            if not m2:
                raise SystemExit(line + p.stderr.read())
            res["lazy_full"].append(time.monotonic() - t0)
            log(line.strip())
            if ask(a.port, "DEBUG", "DIGEST") != digest:
                bad.append(f"lazy round {rnd}")
            kill_wait(int(m.group(1)))
            p.wait()
            time.sleep(0.5)

            drop_caches(a.cold)
            t0 = time.monotonic()
            plain = subprocess.Popen(["/usr/bin/redis-server", "--port", str(a.port), "--save", "", "--appendonly",
                                      "no", "--dir", work, "--enable-debug-command", "yes"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while True:
                try:
                    if ask(a.port, "PING", timeout=5) == "PONG":
                        break
                except OSError:
                    pass
                time.sleep(0.002)
            res["rdb"].append(time.monotonic() - t0)
            if ask(a.port, "DEBUG", "DIGEST") != digest:
                bad.append(f"rdb round {rnd}")
            kill_wait(plain.pid)
            plain.wait()
            if a.aof:
                time.sleep(0.5)
                drop_caches(a.cold)
                t0 = time.monotonic()
                plain = subprocess.Popen(["/usr/bin/redis-server", "--port", str(a.port), "--save", "",
                                          "--appendonly", "yes", "--aof-use-rdb-preamble", "no", "--dir", work,
                                          "--enable-debug-command", "yes"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                res["aof"].append(wait_pong(a.port, t0))
                if ask(a.port, "DEBUG", "DIGEST") != digest:
                    bad.append(f"aof round {rnd}")
                kill_wait(plain.pid)
                plain.wait()
            log(f"round {rnd}: eager {res['eager'][-1]:.2f} s, lazy {res['lazy'][-1]:.2f} s "
                f"(filled at {res['lazy_full'][-1]:.2f} s), RDB {res['rdb'][-1]:.2f} s")
        print(f"redis-server, {a.keys} keys of {a.value} bytes: resident {rss / 2**30:.2f} GiB, capsule mem "
              f"{mem / 2**30:.2f} GiB, RDB file {rdb / 2**30:.2f} GiB; page cache {'dropped' if a.cold else 'warm'}; "
              f"{a.rounds} rounds, seconds, median (min .. max)\n")
        print("| method | until PING answers | until every byte is in place |")
        print("|---|---:|---:|")
        print(f"| mmtier restore (eager) | {fmt(res['eager'])} | same |")
        print(f"| mmtier restore --lazy | {fmt(res['lazy'])} | {fmt(res['lazy_full'])} |")
        print(f"| redis-server loading its RDB file | {fmt(res['rdb'])} | same |")
        if a.aof:
            print(f"| redis-server replaying its append-only file ({aof / 2**30:.2f} GiB) | {fmt(res['aof'])} "
                  "| same |")
        print(f"\ndata: DEBUG DIGEST {'equal to the original' if not bad else 'DIFFERS in ' + ', '.join(bad)} "
              "after every restore and load")
        return 1 if bad else 0
    finally:
        shutil.rmtree(work, True)


if __name__ == "__main__":
    sys.exit(main())
