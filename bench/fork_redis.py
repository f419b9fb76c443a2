#!/usr/bin/env python3
"""Forking servers: Redis BGSAVE under libmmtier, library against library (issue 14).

Does a server that forks keep its memory tiers?  fork() freezes the PMem
units of a process under libmmtier: a page either side writes afterwards
becomes a private anonymous copy, in DRAM.  Without re-sharing, a Redis that
runs BGSAVE ends with its PMem data in DRAM; with it, the mover gives the
frozen units a shared PMem mapping again.  This script runs Debian's
/usr/bin/redis-server under each library given (--lib LABEL=PATH, and once
without any preload, "none") with MMTIER_DRAM_RATIO=1:4 and
MMTIER_PMEM_PATH in each --pmem-dir, and measures, side by side:

  after load          --data bytes of values (1 GiB by default) written by
                      a deterministic pipelined loader of this script's own
  BGSAVE i + writes   each of --rounds rounds: BGSAVE, waited for (INFO
                      persistence), then SET over the whole keyspace for
                      --write-seconds (values derived from key and round),
                      then --settle seconds, then the measurement

With --autosave 'SECONDS CHANGES' the server runs its own save schedule
instead (redis.conf's save, shortened: '10 1000' saves once 1000 keys
changed and 10 s passed) and each round is --write-seconds of writes, then
the BGSAVEs they caused (counted in the row's phase) settled, then the
measurement; no dump.rdb check there.

What a measurement holds: the DRAM and PMem resident bytes as mmtier
measures them (`mmtier stat PID --json` of the library's own build, which
has the figures measured afresh when they are older than 2 s), the DRAM
share of resident, the bytes of PMem units frozen by fork and their pages
copied to DRAM, the units re-shared and the longest pause re-sharing took
(libraries without these counters: "-"), INFO latest_fork_usec and
used_memory, the server's RSS (/proc), the bytes the PMem tier's files take
in their file system, the last BGSAVE's seconds, the write rate, and the
longest PING round trip (a probe every 10 ms) since the row before.

Data check: the keyspace, the values and the order of writes are fixed, so
every run ends with the same data.  At the end the script compares DEBUG
DIGEST with the run without preload, reads every value back (MGET) and
compares it with what was written, and loads each BGSAVE's dump.rdb
into a plain redis-server and compares its DEBUG DIGEST with the digest
taken just before the BGSAVE.  A BGSAVE still running after
--bgsave-timeout seconds counts as hung: its child is killed and the run
goes on.  The exit status is 1 when a server failed (died, a BGSAVE failed
or hung, no answer) or the data differed.

Output: one table per PMem directory, the data-check verdicts, the tier
and fork lines of each library's exit report (MMTIER_REPORT).  Progress
goes to stderr.  Only the Python standard library is used.  See
docs/BENCHMARKS.md, "Forking servers: Redis BGSAVE (issue 14)".
"""

import argparse
import csv
import json
import math
import os
import random
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchenv import GiB, KiB, MiB, cpu_model, fs_type, meminfo, parse_env, parse_size
REDIS_SERVER = "/usr/bin/redis-server"
SYS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
BASE_BYTES = 1 << 16          # the random block the values are cut from
CMDS_PER_CHUNK = 512          # SET commands per socket write
MGET_BATCH = 512
SERVER_START_S = 60

children = []                 # processes to kill on interruption


def log(msg):
    print("fork_redis: " + msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- sizes


def fmt_size(n):
    for mult, suffix in ((GiB, "GiB"), (MiB, "MiB"), (KiB, "KiB")):
        if n >= mult:
            return "%.1f %s" % (n / mult, suffix)
    return "%d B" % n


def fmt_duration(s):
    s = int(s)
    return "%dh%02dm" % (s // 3600, s // 60 % 60) if s >= 3600 else "%dm%02ds" % (s // 60, s % 60)


# ---------------------------------------------------------------- machine


def describe_machine():
    cpu = cpu_model()
    m = meminfo()
    la = os.getloadavg()
    return "nproc %d, %s, MemTotal %s, MemAvailable %s, kernel %s, load average %.2f %.2f %.2f" % (
        os.cpu_count() or 0, cpu, fmt_size(m.get("MemTotal", 0)), fmt_size(m.get("MemAvailable", 0)),
        os.uname().release, la[0], la[1], la[2])


def proc_status(pid):
    """VmRSS and its parts (bytes) of a live process, or {}."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
                    out[k] = int(v.split()[0]) * KiB
    except (OSError, ValueError, IndexError):
        pass
    return out


def disk_bytes(path):
    """Bytes the files under path take in their file system (st_blocks)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:
                pass
    return total


def tier_file_bytes(pid, path):
    """Bytes the files of directory path that process pid holds open take in
    their file system (st_blocks): the PMem tier's file is unnamed (O_TMPFILE)
    or unlinked, so it is found through /proc/PID/fd."""
    total, seen = 0, set()
    prefix = os.path.realpath(path).rstrip("/") + "/"
    try:
        fds = os.listdir("/proc/%d/fd" % pid)
    except OSError:
        return None
    for fd in fds:
        link = "/proc/%d/fd/%s" % (pid, fd)
        try:
            if not os.readlink(link).startswith(prefix):
                continue
            st = os.stat(link)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) not in seen:
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_version():
    try:
        r = subprocess.run([REDIS_SERVER, "--version"], capture_output=True, text=True, timeout=10)
        m = re.search(r"v=(\S+)", r.stdout)
        return m.group(1) if m else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


# ---------------------------------------------------------------- data

class Data:
    """The keyspace and the values: key i is "fr:" + i in decimal; its value
    in round r (0: the load) is "i.r:" followed by a slice of a fixed random
    block that depends on i and r, --value-size bytes in all.  Each round
    writes the keys in its own fixed order (a stride through the keyspace)."""

    def __init__(self, nkeys, size, seed):
        self.n = nkeys
        self.size = size
        self.base = random.Random(seed).randbytes(BASE_BYTES + size)
        width = len(str(nkeys - 1))
        self.keys = [b"fr:%0*d" % (width, i) for i in range(nkeys)]
        self.stride = self._stride()

    def _stride(self):
        s = max(1, int(self.n * 0.6180339887))
        while math.gcd(s, self.n) != 1:
            s += 1
        return s

    def value(self, i, r):
        prefix = b"%d.%d:" % (i, r)
        off = (i * 2654435761 + r * 1000003) % (len(self.base) - self.size)
        return prefix + self.base[off:off + self.size - len(prefix)]

    def stream(self, r):
        """The SET commands of round r as [(bytes, commands), ...]."""
        head = b"*3\r\n$3\r\nSET\r\n$%d\r\n" % len(self.keys[0])
        mid = b"\r\n$%d\r\n" % self.size
        n, stride, shift = self.n, self.stride, (r * 7919) % self.n
        base, blen, size, keys = self.base, len(self.base) - self.size, self.size, self.keys
        chunks, parts = [], []
        for j in range(n):
            i = (j * stride + shift) % n
            prefix = b"%d.%d:" % (i, r)
            off = (i * 2654435761 + r * 1000003) % blen
            parts += (head, keys[i], mid, prefix, base[off:off + size - len(prefix)], b"\r\n")
            if len(parts) == 6 * CMDS_PER_CHUNK:
                chunks.append((b"".join(parts), CMDS_PER_CHUNK))
                parts = []
        if parts:
            chunks.append((b"".join(parts), len(parts) // 6))
        return chunks


# ---------------------------------------------------------------- redis protocol

class RedisError(Exception):
    pass


def encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out += (b"$%d\r\n" % len(a), a, b"\r\n")
    return b"".join(out)


class Conn:
    """A plain RESP2 connection to 127.0.0.1:port."""

    def __init__(self, port, timeout=600):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.pos = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self):
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        if self.pos:
            del self.buf[:self.pos]
            self.pos = 0
        self.buf += chunk

    def _line(self):
        while True:
            i = self.buf.find(b"\r\n", self.pos)
            if i >= 0:
                line = bytes(self.buf[self.pos:i])
                self.pos = i + 2
                return line
            self._fill()

    def _exact(self, n):
        while len(self.buf) - self.pos < n + 2:
            self._fill()
        data = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n + 2
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ConnectionError("protocol error: %r" % line[:60])

    def call(self, *args):
        self.sock.sendall(encode(args))
        return self.reply()

    def info(self, section="everything"):
        text = self.call("INFO", section)
        out = {}
        for line in (text.decode() if isinstance(text, bytes) else text).splitlines():
            k, sep, v = line.partition(":")
            if sep and not k.startswith("#"):
                out[k.strip()] = v.strip()
        return out


class SetStream:
    """Sends a stream of SET commands pipelined on a connection of its own,
    pass after pass until at least min_seconds went by (at least one pass,
    ending at a pass boundary, so that the data is the same whatever the
    speed), counting the +OK replies.  run() in a thread or in the caller."""

    def __init__(self, port, chunks, min_seconds=0.0):
        self.port = port
        self.chunks = chunks
        self.min_seconds = min_seconds
        self.sets = 0
        self.passes = 0
        self.seconds = 0.0
        self.errors = 0
        self.first_error = None
        self.failure = None

    def rate(self):
        return self.sets / self.seconds if self.seconds > 0 else None

    def run(self):
        try:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        except OSError as e:
            self.failure = "cannot connect: %s" % e
            return
        sock.settimeout(None)
        state = {"sent": 0, "err": None}
        done = threading.Event()
        per_pass = sum(c for _, c in self.chunks)
        t0 = time.monotonic()

        def sender():
            try:
                while True:
                    for blob, cnt in self.chunks:
                        sock.sendall(blob)
                        state["sent"] += cnt
                    self.passes += 1
                    if time.monotonic() - t0 >= self.min_seconds:
                        break
            except OSError as e:
                state["err"] = "send: %s" % e
            finally:
                done.set()

        th = threading.Thread(target=sender, daemon=True)
        th.start()
        got, carry, last = 0, b"", time.monotonic()
        try:
            while not (done.is_set() and got >= state["sent"]):
                r, _, _ = select.select([sock], [], [], 1.0)
                if not r:
                    if time.monotonic() - last > 300:
                        self.failure = "no reply for 300 s"
                        break
                    continue
                data = sock.recv(1 << 20)
                if not data:
                    self.failure = "the server closed the connection"
                    break
                last = time.monotonic()
                acc = carry + data
                cut = acc.rfind(b"\r\n") + 2
                whole, carry = acc[:cut], acc[cut:]
                lines = whole.count(b"\r\n")
                ok = whole.count(b"+OK\r\n")
                if ok != lines:
                    self.errors += lines - ok
                    if self.first_error is None:
                        for line in whole.split(b"\r\n"):
                            if line and line != b"+OK":
                                self.first_error = line.decode("utf-8", "replace")[:200]
                                break
                got += lines
        except OSError as e:
            self.failure = "receive: %s" % e
        self.seconds = time.monotonic() - t0
        self.sets = got
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
        th.join(30)
        if state["err"] and not self.failure:
            self.failure = state["err"]
        if not self.failure and got != self.passes * per_pass:
            self.failure = "%d replies for %d commands" % (got, self.passes * per_pass)


class Prober:
    """PINGs the server every 10 ms on a connection of its own and keeps the
    longest round trip since the last take(): the server's main thread
    stalls (fork, a stop of every thread, a long command) show there."""

    def __init__(self, port):
        self.port = port
        self.max_s = 0.0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            c = Conn(self.port, timeout=600)
        except OSError:
            return
        try:
            while not self.stop.is_set():
                t = time.monotonic()
                c.call("PING")
                rtt = time.monotonic() - t
                with self.lock:
                    self.max_s = max(self.max_s, rtt)
                self.stop.wait(0.01)
        except (OSError, ConnectionError, RedisError):
            pass
        finally:
            c.close()

    def take(self):
        with self.lock:
            m, self.max_s = self.max_s, 0.0
        return m

    def close(self):
        self.stop.set()
        self.thread.join(5)


# ---------------------------------------------------------------- servers

class Server:
    def __init__(self, argv, env, rundir, name):
        self.rundir = rundir
        self.out = open(os.path.join(rundir, name + ".stdout"), "wb")
        self.err_path = os.path.join(rundir, name + ".stderr")
        self.err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(argv, env=env, cwd=rundir, stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=self.err, start_new_session=True)
        children.append(self.proc)
        self.pid = self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            return False
        finally:
            self.out.close()
            self.err.close()
            if self.proc in children:
                children.remove(self.proc)
        return True

    def died(self):
        """Why the server ended, if it ended badly; None while it runs or after exit 0."""
        rc = self.proc.poll()
        if rc is None or rc == 0:
            return None
        if rc < 0:
            try:
                return "killed by %s" % signal.Signals(-rc).name
            except ValueError:
                return "killed by signal %d" % -rc
        return "exited with status %d" % rc


def start_redis(rundir, env, extra, name, wait_loading=False):
    """A redis-server on a free port, answering PING; (server, port) or raises."""
    last = None
    for _attempt in range(6):
        port = free_port()
        logfile = os.path.join(rundir, "%s-%d.log" % (name, port))
        argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--daemonize", "no",
                "--appendonly", "no", "--dir", rundir, "--logfile", logfile,
                "--enable-debug-command", "local"] + extra
        srv = Server(argv, env, rundir, name)
        srv.logfile = logfile
        deadline = time.monotonic() + SERVER_START_S * (10 if wait_loading else 1)
        while time.monotonic() < deadline and srv.alive():
            try:
                c = Conn(port, timeout=10)
                try:
                    if c.call("PING") == "PONG":
                        return srv, port
                finally:
                    c.close()
            except RedisError as e:      # -LOADING while an RDB file loads
                last = str(e)
            except OSError as e:
                last = str(e)
            time.sleep(0.1)
        if srv.alive():
            srv.proc.kill()
            srv.wait(30)
            raise RuntimeError("redis-server did not answer PING within %d s (%s)" % (SERVER_START_S, last))
        srv.wait(10)
        text = read_text(logfile)
        if "Address already in use" in text:
            continue
        raise RuntimeError("redis-server %s at start-up; log: %s" % (srv.died() or "exited", tail(text, 2)))
    raise RuntimeError("no free port for redis-server after 6 attempts")


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def tail(text, n):
    return " | ".join(text.strip().splitlines()[-n:])


def stop_redis(srv, port):
    """SHUTDOWN NOSAVE; True if the server then exited with status 0."""
    if srv.alive():
        try:
            c = Conn(port, timeout=30)
            try:
                c.call("SHUTDOWN", "NOSAVE")
            except (ConnectionError, OSError, RedisError):
                pass
            c.close()
        except OSError:
            pass
    exited = srv.wait(120)
    return exited and srv.died() is None


def rdb_digest(rundir, env):
    """DEBUG DIGEST of rundir/dump.rdb loaded into a plain redis-server."""
    srv, port = start_redis(rundir, env, ["--save", "", "--dbfilename", "dump.rdb"], "rdbcheck",
                            wait_loading=True)
    try:
        c = Conn(port)
        digest = c.call("DEBUG", "DIGEST")
        c.close()
    finally:
        stop_redis(srv, port)
    return digest.decode() if isinstance(digest, bytes) else digest


# ---------------------------------------------------------------- mmtier

def find_cli(lib):
    d = os.path.dirname(os.path.realpath(lib))
    for cand in (os.path.join(os.path.dirname(os.path.abspath(lib)), "mmtier"), os.path.join(d, "mmtier"),
                 os.path.join(d, "cli", "mmtier")):
        if os.access(cand, os.X_OK):
            return cand
    return None


def mmtier_stat(cli, pid, env):
    """The JSON of `mmtier stat PID --json` (figures older than 2 s are
    measured afresh first), or (None, reason)."""
    if not cli:
        return None, "no mmtier CLI"
    try:
        r = subprocess.run([cli, "stat", str(pid), "--json"], env=env, capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        return None, str(e)
    if r.returncode != 0:
        return None, r.stderr.decode("utf-8", "replace").strip()[:200]
    try:
        return json.loads(r.stdout), None
    except ValueError as e:
        return None, "bad JSON: %s" % e


# ---------------------------------------------------------------- one run

class Run:
    """One server under one library on one PMem directory."""

    def __init__(self, label, lib, cli, pmem_root):
        self.label = label
        self.lib = lib
        self.cli = cli
        self.pmem_root = pmem_root
        self.rows = []
        self.failures = []
        self.notes = []
        self.rdb_checks = []     # (round, ok, text)
        self.round_digests = []  # DEBUG DIGEST before each BGSAVE
        self.final_digest = None
        self.dbsize = None
        self.values_bad = None
        self.report = None       # the exit report's text
        self.leftover = None

    @property
    def ok(self):
        return not self.failures


def base_env(rundir):
    return {"PATH": SYS_PATH, "HOME": rundir, "LANG": "C", "TMPDIR": rundir}


def measure(args, run, srv, conn, phase, pmem_dir, t0, writes=None, extra=None, prober=None):
    row = dict(lib=run.label, phase=phase, t_s=round(time.monotonic() - t0, 1))
    if prober:
        row["ping_max_ms"] = round(prober.take() * 1000, 1)
    info = conn.info()
    st = proc_status(srv.pid)
    row.update(latest_fork_usec=int(info.get("latest_fork_usec", 0) or 0),
               total_forks=int(info.get("total_forks", 0) or 0),
               used_memory=int(info.get("used_memory", 0) or 0),
               rss_bytes=st.get("VmRSS"), rss_anon=st.get("RssAnon"), rss_file=st.get("RssFile"),
               rss_shmem=st.get("RssShmem"),
               bgsave_s=info.get("rdb_last_bgsave_time_sec"),
               bgsave_status=info.get("rdb_last_bgsave_status"),
               bgsave_in_progress=info.get("rdb_bgsave_in_progress"))
    if writes is not None:
        row.update(sets=writes.sets, write_s=round(writes.seconds, 2),
                   sets_per_s=round(writes.rate()) if writes.rate() else None)
    if run.lib:
        row["pmem_file_bytes"] = tier_file_bytes(srv.pid, pmem_dir)
        js, why = mmtier_stat(run.cli, srv.pid, args.cli_env)
        if js is None:
            run.notes.append("%s: mmtier stat: %s" % (phase, why))
        else:
            tiers = js.get("tiers", {})
            row["dram_resident"] = tiers.get("dram", {}).get("resident_bytes")
            row["pmem_resident"] = tiers.get("pmem", {}).get("resident_bytes")
            row["dram_placed"] = tiers.get("dram", {}).get("placed_bytes")
            row["pmem_placed"] = tiers.get("pmem", {}).get("placed_bytes")
            if js.get("resident_unix_ns") and js.get("sampled_unix_ns"):
                row["resident_age_s"] = round((js["sampled_unix_ns"] - js["resident_unix_ns"]) / 1e9, 1)
            for k_out, k_in in (("frozen", "frozen_bytes"), ("copied", "frozen_copied_bytes"),
                                ("reshares", "reshares"), ("reshare_bytes", "reshare_bytes"),
                                ("reshare_stops", "reshare_stops"), ("reshare_pause_max_ns", "reshare_pause_max_ns"),
                                ("reshare_pause_total_ns", "reshare_pause_total_ns"),
                                ("reshare_stop_refusals", "reshare_stop_refusals"),
                                ("reshare_failed", "reshare_failed"), ("promotions", "promotions"),
                                ("demotions", "demotions"), ("forks_mmtier", "forks")):
                row[k_out] = js.get(k_in)
    if extra:
        row.update(extra)
    d, p = row.get("dram_resident"), row.get("pmem_resident")
    row["dram_share"] = d / (d + p) if d is not None and p is not None and d + p > 0 else None
    run.rows.append(row)
    log("  %s / %s: %s" % (run.label, phase, brief_row(row)))
    return row


def brief_row(r):
    def mib(k):
        return "-" if r.get(k) is None else "%.0f" % (r[k] / MiB)

    def num(k):
        return "-" if r.get(k) is None else r[k]
    share = "-" if r.get("dram_share") is None else "%.1f%%" % (100 * r["dram_share"])
    return ("DRAM %s MiB, PMem %s MiB (%s), frozen %s, copied %s, re-shared %s, gave up %s, fork %s us, "
            "PING max %s ms, RSS %s MiB"
            % (mib("dram_resident"), mib("pmem_resident"), share, mib("frozen"), mib("copied"),
               num("reshares"), num("reshare_stop_refusals"), num("latest_fork_usec"), num("ping_max_ms"),
               mib("rss_bytes")))


def child_pids(pid):
    """The children of process pid (/proc/PID/task/*/children)."""
    out = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def wait_saves_settled(conn, srv, changes, timeout):
    """Until no BGSAVE runs and the server's save schedule has no reason to
    start another (fewer than `changes` keys changed since the last save);
    (ok, status)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not srv.alive():
            return False, "server gone"
        info = conn.info("persistence")
        if info.get("rdb_bgsave_in_progress") == "0" and int(info.get("rdb_changes_since_last_save", 0)) < changes:
            return info.get("rdb_last_bgsave_status") == "ok", info.get("rdb_last_bgsave_status")
        time.sleep(0.5)
    return False, "still saving after %g s" % timeout


def autosave_round(args, run, srv, conn, port, r, chunks, label, pmem_dir, t0, prober):
    """One round under the server's own save schedule (--autosave): the
    writes, then the saves they caused settled, then the measurement.
    False when the run cannot go on."""
    forks = int(conn.info("stats").get("total_forks", 0))
    writer = SetStream(port, chunks, args.write_seconds)
    writer.run()
    if writer.failure or writer.errors:
        run.failures.append("round %d writes: %s" % (
            r, writer.failure or "%d errors, first: %s" % (writer.errors, writer.first_error)))
        return False
    ok, status = wait_saves_settled(conn, srv, int(args.autosave.split()[1]), args.bgsave_timeout)
    saves = int(conn.info("stats").get("total_forks", 0)) - forks
    log("%s: round %d: %d SET in %.1f s (%.0f SET/s), %d BGSAVE by the save schedule, the last %s" % (
        label, r, writer.sets, writer.seconds, writer.rate() or 0, saves, status))
    if not ok:
        run.failures.append("round %d: BGSAVE %s" % (r, status))
        if not srv.alive():
            return False
    if saves == 0:
        run.failures.append("round %d: the save schedule started no BGSAVE" % r)
    time.sleep(args.settle)
    measure(args, run, srv, conn, "round %d: %d BGSAVE + writes" % (r, saves), pmem_dir, t0, writer, prober=prober)
    return True


def wait_bgsave(conn, srv, started_forks, timeout):
    """Until the BGSAVE started has ended; (ok, seconds, status).  A BGSAVE
    still running after timeout seconds has its child killed, so that the
    run goes on (the round then counts as failed)."""
    deadline = time.monotonic() + timeout
    killed = []
    while True:
        info = conn.info("persistence")
        stats = conn.info("stats")
        if info.get("rdb_bgsave_in_progress") == "0" and int(stats.get("total_forks", 0)) > started_forks:
            status = info.get("rdb_last_bgsave_status")
            if killed:
                status = "hung: still saving after %g s, child %s killed" % (timeout, killed)
            return info.get("rdb_last_bgsave_status") == "ok" and not killed, \
                info.get("rdb_last_bgsave_time_sec"), status
        if not srv.alive():
            return False, None, "server gone"
        if time.monotonic() > deadline:
            if killed:
                return False, None, "still saving %g s after its child was killed" % timeout
            killed = child_pids(srv.pid)
            for pid in killed:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            log("BGSAVE still running after %g s: killed its child %s" % (timeout, killed))
            deadline = time.monotonic() + timeout
        time.sleep(0.2)


def run_one(args, data, label, lib, cli, pmem_root, streams):
    """Runs the scenario for one library (lib None: no preload) on one PMem
    root; returns the Run."""
    run = Run(label, lib, cli, pmem_root)
    load_start = os.getloadavg()
    rundir = tempfile.mkdtemp(prefix="fork_redis-%s-" % label, dir=args.workdir)
    pmem_dir = None
    env = base_env(rundir)
    plain_env = dict(env)
    if lib:
        pmem_dir = tempfile.mkdtemp(prefix="fork_redis-pmem-", dir=pmem_root)
        env.update(LD_PRELOAD=lib, MMTIER_DRAM_RATIO=args.ratio, MMTIER_PMEM_PATH=pmem_dir,
                   MMTIER_REPORT=os.path.join(rundir, "report-%p.txt"))
        env.update(args.env)
    t0 = time.monotonic()
    srv = port = conn = prober = None
    try:
        try:
            srv, port = start_redis(rundir, env, ["--save", args.autosave or ""] + args.redis_args, "server")
        except RuntimeError as e:
            run.failures.append(str(e))
            return run
        conn = Conn(port)
        prober = Prober(port)
        log("%s: redis-server pid %d on port %d, run directory %s%s" % (
            label, srv.pid, port, rundir, ", PMem files in " + pmem_dir if pmem_dir else ""))

        # The load.
        load = SetStream(port, streams(0))
        load.run()
        if load.failure or load.errors:
            run.failures.append("load: %s" % (load.failure or "%d errors, first: %s" % (load.errors, load.first_error)))
            return run
        log("%s: loaded %d keys in %.1f s (%.0f SET/s)" % (label, load.sets, load.seconds, load.rate() or 0))
        time.sleep(args.settle)
        measure(args, run, srv, conn, "after load", pmem_dir, t0, load, prober=prober)

        last_round = 0
        for r in range(1, args.rounds + 1):
            chunks = streams(r)
            if args.autosave:
                if not autosave_round(args, run, srv, conn, port, r, chunks, label, pmem_dir, t0, prober):
                    return run
                last_round = r
                continue
            digest = conn.call("DEBUG", "DIGEST")
            digest = digest.decode() if isinstance(digest, bytes) else digest
            run.round_digests.append(digest)
            prober.take()      # DEBUG DIGEST holds the server for seconds: not a stall to report
            forks = int(conn.info("stats").get("total_forks", 0))
            reply = conn.call("BGSAVE")
            log("%s: round %d: BGSAVE: %s" % (label, r, reply))
            writer = None
            if args.overlap:
                writer = SetStream(port, chunks, args.write_seconds)
                th = threading.Thread(target=writer.run, daemon=True)
                th.start()
            ok, secs, status = wait_bgsave(conn, srv, forks, args.bgsave_timeout)
            if not ok:
                run.failures.append("round %d: BGSAVE %s" % (r, status))
                if not srv.alive():
                    return run
            log("%s: round %d: BGSAVE ended (%s, %s s)" % (label, r, status, secs))
            if writer is None:
                writer = SetStream(port, chunks, args.write_seconds)
                writer.run()
            else:
                th.join()
            if writer.failure or writer.errors:
                run.failures.append("round %d writes: %s" % (
                    r, writer.failure or "%d errors, first: %s" % (writer.errors, writer.first_error)))
                return run
            log("%s: round %d: %d SET in %.1f s (%d passes, %.0f SET/s)" % (
                label, r, writer.sets, writer.seconds, writer.passes, writer.rate() or 0))
            time.sleep(args.settle)
            measure(args, run, srv, conn, "BGSAVE %d + writes" % r, pmem_dir, t0, writer, prober=prober)
            last_round = r
            if args.rdb_check and not ok:
                log("%s: round %d: no dump.rdb check (the BGSAVE failed)" % (label, r))
            elif args.rdb_check:
                try:
                    d = rdb_digest(rundir, plain_env)
                    run.rdb_checks.append((r, d == digest, d))
                    if d != digest:
                        log("%s: round %d: dump.rdb digest %s, the data's at BGSAVE %s" % (label, r, d, digest))
                except (RuntimeError, OSError, RedisError) as e:
                    run.rdb_checks.append((r, False, "check failed: %s" % e))

        # The data check.
        d = conn.call("DEBUG", "DIGEST")
        run.final_digest = d.decode() if isinstance(d, bytes) else d
        run.dbsize = conn.call("DBSIZE")
        if not args.no_verify:
            run.values_bad, first = verify_values(conn, data, last_round)
            if run.values_bad:
                log("%s: %d values differ from what was written; first: %s" % (label, run.values_bad, first))
        log("%s: data: DEBUG DIGEST %s, DBSIZE %s, values differing: %s" % (
            label, run.final_digest, run.dbsize, "-" if run.values_bad is None else run.values_bad))
    except (ConnectionError, OSError, RedisError) as e:
        run.failures.append("client: %s" % e)
    finally:
        if prober:
            prober.close()
        if conn:
            conn.close()
        if srv:
            clean = stop_redis(srv, port)
            died = srv.died()
            if died:
                run.failures.append("redis-server " + died)
            elif not clean:
                run.failures.append("redis-server did not exit after SHUTDOWN NOSAVE")
            text = read_text(getattr(srv, "logfile", ""))
            for pat in ("Guru Meditation", "crashed by signal", "terminated by signal",
                        "Background saving error", "Killed by signal"):
                if pat in text:
                    run.failures.append("redis log: %s" % next(l for l in text.splitlines() if pat in l)[-160:])
            warn = [l for l in read_text(srv.err_path).splitlines() if "mmtier" in l]
            if warn:
                run.notes.append("server stderr: %d mmtier lines, first: %s" % (len(warn), warn[0][:200]))
            reports = [os.path.join(rundir, f) for f in os.listdir(rundir)
                       if f == "report-%d.txt" % srv.pid]
            if reports:
                run.report = read_text(reports[0])
            elif lib:
                run.notes.append("no exit report")
        if pmem_dir:
            run.leftover = disk_bytes(pmem_dir)
            shutil.rmtree(pmem_dir, ignore_errors=True)
        run.notes.append("load average (1, 5, 15 min) at the start %.2f %.2f %.2f, at the end %.2f %.2f %.2f"
                         % (load_start + os.getloadavg()))
        if args.keep:
            log("%s: kept %s" % (label, rundir))
        else:
            shutil.rmtree(rundir, ignore_errors=True)
    return run


def verify_values(conn, data, r):
    """Every value read back with MGET against value(i, r); (bad, first)."""
    bad, first = 0, None
    for lo in range(0, data.n, MGET_BATCH):
        hi = min(data.n, lo + MGET_BATCH)
        vals = conn.call("MGET", *data.keys[lo:hi])
        for i, v in zip(range(lo, hi), vals):
            if v != data.value(i, r):
                bad += 1
                if first is None:
                    first = "%s: %r..." % (data.keys[i].decode(), (v or b"(nil)")[:40])
    return bad, first


# ---------------------------------------------------------------- output

COLUMNS = [
    # header, width, function of the row
    ("DRAM MiB", 8, lambda r: mib(r.get("dram_resident"))),
    ("PMem MiB", 8, lambda r: mib(r.get("pmem_resident"))),
    ("DRAM %", 6, lambda r: "-" if r.get("dram_share") is None else "%.1f" % (100 * r["dram_share"])),
    ("frozen MiB", 10, lambda r: mib(r.get("frozen"))),
    ("copied MiB", 10, lambda r: mib(r.get("copied"))),
    ("re-shared", 9, lambda r: dash(r.get("reshares"))),
    ("pause us", 8, lambda r: "-" if r.get("reshare_pause_max_ns") is None
     else "%d" % (r["reshare_pause_max_ns"] // 1000)),
    ("gave up", 7, lambda r: dash(r.get("reshare_stop_refusals"))),
    ("PING ms", 7, lambda r: dash(r.get("ping_max_ms"))),
    ("fork us", 7, lambda r: dash(r.get("latest_fork_usec"))),
    ("RSS MiB", 7, lambda r: mib(r.get("rss_bytes"))),
    ("used MiB", 8, lambda r: mib(r.get("used_memory"))),
    ("file MiB", 8, lambda r: mib(r.get("pmem_file_bytes"))),
    ("save s", 6, lambda r: dash(r.get("bgsave_s")) if "BGSAVE" in r.get("phase", "") else "-"),
    ("kSET/s", 6, lambda r: "-" if r.get("sets_per_s") is None else "%.1f" % (r["sets_per_s"] / 1000)),
]


def mib(v):
    return "-" if v is None else "%.0f" % (v / MiB)


def dash(v):
    return "-" if v is None else str(v)


def print_table(args, runs, title, lib_width, phase_width):
    cols = COLUMNS
    print(title)
    head = "%-*s  %-*s" % (lib_width, "library", phase_width, "phase")
    for name, w, _ in cols:
        head += "  %*s" % (w, name)
    print(head)
    print("-" * len(head))
    for run in runs:
        if not run.rows:
            print("%-*s  %-*s  %s" % (lib_width, run.label, phase_width, "FAILED", "; ".join(run.failures)))
            continue
        for r in run.rows:
            line = "%-*s  %-*s" % (lib_width, run.label, phase_width, r["phase"])
            for _, w, f in cols:
                line += "  %*s" % (w, f(r))
            print(line)
    print()


def verdicts(args, runs, reference):
    """Prints the data check and failures of each run; whether all passed."""
    all_good = True
    width = max(len(r.label) for r in runs)
    for run in runs:
        good = not run.failures
        parts = []
        if run.final_digest is None:
            parts.append("no final digest")
            good = False
        else:
            if run is reference or reference is None or reference.final_digest is None:
                parts.append("DEBUG DIGEST %s%s" % (run.final_digest[:16], "" if run is reference
                                                    else " (no reference run to compare)"))
            elif reference.final_digest == run.final_digest:
                parts.append("DEBUG DIGEST = none's")
            else:
                parts.append("DEBUG DIGEST %s DIFFERS from none's %s" % (run.final_digest[:16],
                                                                          reference.final_digest[:16]))
                good = False
            if reference is not None and reference is not run and reference.round_digests:
                differ = [i + 1 for i, (a, b) in enumerate(zip(run.round_digests, reference.round_digests)) if a != b]
                if differ:
                    parts.append("the digest before BGSAVE differs from none's in round(s) %s" % differ)
                    good = False
            if run.dbsize != data_keys(args):
                parts.append("DBSIZE %s, expected %d" % (run.dbsize, data_keys(args)))
                good = False
        if run.values_bad is not None:
            if run.values_bad:
                parts.append("%d values differ from what was written" % run.values_bad)
                good = False
            else:
                parts.append("all %d values as written" % data_keys(args))
        if run.rdb_checks:
            okn = sum(1 for _, ok, _ in run.rdb_checks if ok)
            parts.append("dump.rdb = the data at BGSAVE in %d/%d rounds" % (okn, len(run.rdb_checks)))
            if okn != len(run.rdb_checks):
                good = False
                parts += ["round %d: dump.rdb %s" % (r, t) for r, ok, t in run.rdb_checks if not ok]
        if run.failures:
            parts.append("FAILED: " + "; ".join(run.failures))
        print("  %-*s %s: %s" % (width, run.label, "ok" if good else "FAIL", "; ".join(parts)))
        all_good &= good
    return all_good


def data_keys(args):
    return args.data // args.value_size


def print_reports(runs):
    for run in runs:
        lines = []
        if run.report:
            lines = [l.strip() for l in run.report.splitlines()
                     if re.match(r"\s+(tier|DRAM|PMem)\s|\s+DRAM share|\s+managed mmap|\s+fork:", l)]
        if run.leftover:
            lines.append("PMem files left behind after exit: %s" % fmt_size(run.leftover))
        for n in run.notes:
            lines.append("note: " + n)
        if lines:
            print("  %s:" % run.label)
            for l in lines:
                print("    " + l)


CSV_FIELDS = ["pmem_dir", "fs", "lib", "phase", "t_s", "dram_resident", "pmem_resident", "dram_share",
              "dram_placed", "pmem_placed", "resident_age_s", "frozen", "copied", "reshares", "reshare_bytes",
              "reshare_stops", "reshare_pause_max_ns", "reshare_pause_total_ns", "reshare_stop_refusals",
              "reshare_failed", "ping_max_ms", "promotions", "demotions", "forks_mmtier", "latest_fork_usec", "total_forks",
              "used_memory", "rss_bytes", "rss_anon", "rss_file", "rss_shmem", "pmem_file_bytes", "bgsave_s",
              "bgsave_status", "bgsave_in_progress", "sets", "write_s", "sets_per_s"]


def write_csv(path, tables):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for pmem_root, runs in tables:
            for run in runs:
                for r in run.rows:
                    row = {k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS}
                    row.update(pmem_dir=pmem_root if run.lib else "", fs=fs_type(pmem_root) if run.lib else "")
                    w.writerow(row)


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] + "\n\n" + "\n\n".join(__doc__.split("\n\n")[1:-1]),
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="Example (as run for docs/BENCHMARKS.md):\n"
                                        "  bench/fork_redis.py --lib before=/work/baseline/build/libmmtier.so "
                                        "--lib after=build/libmmtier.so \\\n"
                                        "      --pmem-dir /dev/shm --pmem-dir /var/tmp/pmem-ext4 --csv fork_redis.csv\n"
                                        "Where no directory is on ext4, a loop mount (as root):\n"
                                        "  truncate -s 6G /var/tmp/ext4.img; mkfs.ext4 -q /var/tmp/ext4.img; "
                                        "mkdir -p /mnt/ext4pm\n"
                                        "  mount -o loop /var/tmp/ext4.img /mnt/ext4pm    # then --pmem-dir /mnt/ext4pm")
    ap.add_argument("--lib", action="append", default=[], metavar="LABEL=PATH",
                    help="a libmmtier.so to run the server under (repeatable; default after=BUILD/libmmtier.so)")
    ap.add_argument("--cli", action="append", default=[], metavar="LABEL=PATH",
                    help="the mmtier CLI that reads LABEL's statistics (default: mmtier next to the library, "
                         "or in its cli/); the CLI must be of the library's own version")
    ap.add_argument("--no-none", action="store_true", help="skip the run without preload (no digest reference)")
    ap.add_argument("--build", default=None, help="build directory (default: the repository's build/)")
    ap.add_argument("--pmem-dir", action="append", default=[], metavar="DIR",
                    help="MMTIER_PMEM_PATH root, one table each (repeatable; default /dev/shm); each run gets a "
                         "fresh directory in it, removed after")
    ap.add_argument("--data", default="1G", help="bytes of values to load (default %(default)s)")
    ap.add_argument("--value-size", type=int, default=1024, help="bytes per value (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="BGSAVE + writes rounds (default %(default)s)")
    ap.add_argument("--write-seconds", type=float, default=30,
                    help="seconds of writes per round, whole passes over the keyspace, at least one "
                         "(default %(default)s)")
    ap.add_argument("--autosave", default=None, metavar="'SECONDS CHANGES'",
                    help="instead of a BGSAVE per round: the server's own save schedule (redis.conf's save, "
                         "e.g. '10 1000': a BGSAVE once 1000 keys changed and 10 s passed); each round is "
                         "--write-seconds of writes, the saves they caused settled, then the measurement "
                         "(no dump.rdb check: the data at a BGSAVE the server started is not known)")
    ap.add_argument("--overlap", action="store_true",
                    help="start each round's writes right after BGSAVE forks instead of after it ends")
    ap.add_argument("--bgsave-timeout", type=float, default=600,
                    help="seconds after which a BGSAVE still running counts as hung: its child is killed and "
                         "the round fails (default %(default)s)")
    ap.add_argument("--settle", type=float, default=5, help="seconds between the writes and a measurement "
                                                            "(default %(default)s)")
    ap.add_argument("--redis-config", action="append", default=[], metavar="'NAME VALUE'",
                    help="extra redis-server configuration for every server run (e.g. 'jemalloc-bg-thread no'; "
                         "repeatable)")
    ap.add_argument("--ratio", default="1:4", help="MMTIER_DRAM_RATIO (default %(default)s)")
    ap.add_argument("--env", action="append", default=[], metavar="VAR=VALUE",
                    help="extra environment for the server under a library (repeatable)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the values' random block (default 1)")
    ap.add_argument("--no-rdb-check", dest="rdb_check", action="store_false",
                    help="skip loading each dump.rdb into a plain redis-server to compare digests")
    ap.add_argument("--no-verify", action="store_true", help="skip reading every value back at the end")
    ap.add_argument("--workdir", default="/var/tmp", help="where the run directories (dump.rdb, logs) go "
                                                          "(default %(default)s; not a tmpfs: each dump.rdb "
                                                          "is about --data)")
    ap.add_argument("--keep", action="store_true", help="keep the run directories")
    ap.add_argument("--csv", default=None, help="write every measurement to this CSV file")
    args = ap.parse_args(argv)

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args.build = os.path.abspath(args.build or os.path.join(repo, "build"))
    libs = []
    for item in args.lib or ["after=" + os.path.join(args.build, "libmmtier.so")]:
        label, eq, path = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", label) or not path or label == "none":
            ap.error("--lib %r: expected LABEL=PATH (LABEL not none)" % item)
        if not os.path.isfile(path):
            ap.error("--lib %s: %s is not a file (build first: scripts/build.sh)" % (item, path))
        if label in [l for l, _, _ in libs]:
            ap.error("--lib: label %s given twice" % label)
        libs.append((label, os.path.abspath(path), find_cli(path)))
    for item in args.cli:
        label, eq, path = item.partition("=")
        if not eq or label not in [l for l, _, _ in libs] or not os.access(path, os.X_OK):
            ap.error("--cli %r: expected LABEL=PATH with a LABEL of --lib and an executable PATH" % item)
        libs = [(l, p, os.path.abspath(path) if l == label else c) for l, p, c in libs]
    for label, _, cli in libs:
        if not cli:
            log("warning: no mmtier CLI for %s: its rows will have only the figures of /proc and INFO" % label)
    try:
        args.data = parse_size(args.data)
    except ValueError as e:
        ap.error(str(e))
    if args.value_size < 32 or data_keys(args) < 1000:
        ap.error("--value-size at least 32 and --data at least 1000 values")
    if args.rounds < 0 or args.write_seconds < 0 or args.settle < 0 or args.bgsave_timeout <= 0:
        ap.error("negative or zero times/rounds")
    args.env = parse_env(args.env, ap.error)
    if args.autosave is not None:
        parts = args.autosave.split()
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            ap.error("--autosave %r: expected 'SECONDS CHANGES', two positive integers" % args.autosave)
        if args.overlap:
            ap.error("--autosave and --overlap do not go together")
        args.rdb_check = False
    args.redis_args = []
    for item in args.redis_config:
        name, _, value = item.strip().partition(" ")
        if not name:
            ap.error("--redis-config %r: expected 'NAME VALUE'" % item)
        args.redis_args += ["--" + name.lstrip("-"), value.strip()]
    args.cli_env = {"PATH": SYS_PATH, "LANG": "C"}
    if "MMTIER_STATS_DIR" in args.env:
        args.cli_env["MMTIER_STATS_DIR"] = args.env["MMTIER_STATS_DIR"]
    if not os.access(REDIS_SERVER, os.X_OK):
        ap.error("%s not installed (Debian redis-server)" % REDIS_SERVER)
    roots = args.pmem_dir or ["/dev/shm"]
    for root in roots:
        if not os.path.isdir(root):
            ap.error("--pmem-dir %s is not a directory" % root)
    os.makedirs(args.workdir, exist_ok=True)
    if fs_type(args.workdir) == "tmpfs":
        log("warning: --workdir %s is a tmpfs: each dump.rdb takes about %s of memory"
            % (args.workdir, fmt_size(args.data)))

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)

    nkeys = data_keys(args)
    avail = meminfo().get("MemAvailable", 0)
    need = int(args.data * 4.5)
    if avail < need:
        log("warning: MemAvailable %s, a run needs about %s (server, PMem files on tmpfs, the client's "
            "streams, the RDB check server)" % (fmt_size(avail), fmt_size(need)))
    # Rough rates on the 2-vCPU VM of docs/BENCHMARKS.md: the load at
    # 40 MiB/s of values, a BGSAVE and a dump.rdb check at 80 MiB/s each,
    # reading every value back at 100 MiB/s.
    per_round = args.write_seconds + args.settle + 3 + args.data / (80 * MiB) * (2 if args.rdb_check else 1)
    per_run = (args.data / (40 * MiB) + args.settle + 3 + args.data / (100 * MiB)
               + args.rounds * per_round)
    nruns = len(libs) * len(roots) + (0 if args.no_none else 1)
    log("%d run(s), about %s each, %s in all (rough)" % (nruns, fmt_duration(per_run), fmt_duration(per_run * nruns)))

    log("generating %d keys of %d B" % (nkeys, args.value_size))
    data = Data(nkeys, args.value_size, args.seed)
    cache = {}
    # Every round's stream is kept for the next runs when they all fit in a
    # third of the free memory; else one at a time, rebuilt in each run.
    keep_all = (args.rounds + 1) * args.data * 1.1 < avail / 3

    def streams(r):
        if r not in cache:
            if not keep_all:
                cache.clear()
            t = time.monotonic()
            cache[r] = data.stream(r)
            log("round %d's SET stream built in %.1f s" % (r, time.monotonic() - t))
        return cache[r]

    started = time.monotonic()
    print("mmtier fork_redis: " + describe_machine())
    print("redis-server %s (%s); %s of values: %d keys of %d B; %s; MMTIER_DRAM_RATIO %s%s" % (
        redis_version(), REDIS_SERVER, fmt_size(args.data), nkeys, args.value_size,
        ("%d rounds of %g s of writes under save %s, settle %g s" % (
            args.rounds, args.write_seconds, args.autosave, args.settle) if args.autosave else
         "%d rounds of BGSAVE + %g s of writes%s, settle %g s" % (
            args.rounds, args.write_seconds, " (overlapping the BGSAVE)" if args.overlap else "", args.settle)),
        args.ratio, "; extra environment: " + " ".join("%s=%s" % kv for kv in sorted(args.env.items())) if args.env else ""))
    if args.redis_args:
        print("redis-server configuration added: %s" % " ".join(args.redis_args))
    for label, path, cli in libs:
        print("%s: %s (stat: %s)" % (label, path, cli or "none: exit report only"))
    if not args.no_none:
        print("none: no preload (the same redis-server, its own jemalloc)")
    print()
    sys.stdout.flush()

    tables = []
    status = 0
    none_run = None
    try:
        if not args.no_none:
            log("=== none (no preload)")
            none_run = run_one(args, data, "none", None, None, None, streams)
        for root in roots:
            runs = [none_run] if none_run else []
            tables.append((root, runs))
            for label, path, cli in libs:
                log("=== %s on %s (%s)" % (label, root, fs_type(root)))
                runs.append(run_one(args, data, label, path, cli, root, streams))
    except KeyboardInterrupt:
        log("interrupted; the tables have the runs that finished")
        status = 130
        for p in list(children):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
    cache.clear()

    if none_run and not tables:
        tables.append(("(none only)", [none_run]))
    lib_width = max([len("library")] + [len(r.label) for _, runs in tables for r in runs])
    phase_width = max([len("phase")] + [len(x["phase"]) for _, runs in tables for r in runs for x in r.rows])
    all_good = True
    for root, runs in tables:
        title = "PMem dir %s (%s)%s:" % (root, fs_type(root) if os.path.isdir(root) else "?",
                                         " - the none rows are one run, the same in every table"
                                         if len(tables) > 1 and none_run else "")
        print_table(args, runs, title, lib_width, phase_width)
        print("Data check (at the end; reference: %s):" % ("the none run" if none_run else "none, --no-none"))
        all_good &= verdicts(args, runs, none_run)
        print("Exit reports (MMTIER_REPORT) and notes:")
        print_reports(runs)
        print()
    print("Columns: DRAM/PMem MiB: resident bytes as mmtier measures them (mmtier stat --json, measured afresh);")
    print("DRAM %: DRAM/(DRAM+PMem); frozen: PMem units frozen by fork now; copied: their pages copied to DRAM;")
    print("re-shared: frozen units given a shared PMem mapping again (in all); pause us: the longest stop")
    print("re-sharing took; gave up: re-share stops given up (a thread would not stop within 50 ms; the threads")
    print("that did stop waited meanwhile); PING ms: the longest PING round trip since the last row (every 10 ms,")
    print("own connection); fork us: INFO latest_fork_usec; RSS: VmRSS; used: INFO used_memory; file MiB: the")
    print("blocks of the PMem tier's file in its file system; save s: the round's BGSAVE (rdb_last_bgsave_time_sec);")
    print("kSET/s: the write rate of the load or of the round's writes.  '-': not measured / not in this library.")
    print("Wall time %s; load average at the end %.2f %.2f %.2f." % ((fmt_duration(time.monotonic() - started),)
                                                                  + os.getloadavg()))
    if args.csv:
        write_csv(args.csv, tables)
        log("CSV written to %s" % args.csv)
    if status == 0 and not all_good:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
