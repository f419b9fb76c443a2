#!/usr/bin/env python3
"""Process-level benchmark driver: mmtier against its peers, side by side.

Runs each workload under each allocator in alternation (round-robin: round 1
runs every workload under every allocator, then round 2, ..., with the order
of allocators rotated each round so none always goes first), takes medians,
and prints a table of medians, ratios to jemalloc, mimalloc and glibc, peak RSS and a
status per workload x allocator.  A run that crashes, times out, exits
non-zero, prints no RESULT line or whose checksum/output differs from the
glibc run's makes its row FAIL, with the reason; a row is never left out.

Allocators (every run starts from an empty environment plus these):
  glibc       no preload
  jemalloc    LD_PRELOAD=libjemalloc.so.2
  mimalloc    LD_PRELOAD=libmimalloc.so.2 (Debian libmimalloc2.0)
  libmemtier  LD_PRELOAD=libmemtier.so (memkind) with DRAM + FS_DAX at 1:4
  libmmtier   LD_PRELOAD=<build>/libmmtier.so MMTIER_DRAM_RATIO=1:4
  libmmtier@LABEL  (--compare LABEL=PATH, repeatable) another build of
              libmmtier, LD_PRELOAD=PATH with libmmtier's variables: a
              column of its own in the rotation, and a section comparing
              libmmtier with it (before/after a change, in one run)

Modes:
  (default)    the workload table (bench/workloads programs, process
               start+exit rows, python3, sqlite3, redis-server +
               redis-benchmark); the build row (libmmtier compiled from
               scratch under the allocator, 15-40 s a run on 2 cores) only with
               --only build or --with-build
  --callgrind  instructions per malloc+free pair under callgrind
  --micro      Google Benchmark loops (bench/micro) under each allocator

Only the Python standard library is used.  See docs/BENCHMARKS.md.
"""

import argparse
import csv
import functools
import hashlib
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

LIBDIR = "/usr/lib/x86_64-linux-gnu"
SYS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
ALLOCATORS = ["glibc", "jemalloc", "mimalloc", "libmemtier", "libmmtier"]
COMPARE_PREFIX = "libmmtier@"   # + LABEL: the builds of --compare LABEL=PATH
JEMALLOC = LIBDIR + "/libjemalloc.so.2"
MIMALLOC = LIBDIR + "/libmimalloc.so.2"   # Debian libmimalloc2.0
MEMTIER = LIBDIR + "/libmemtier.so"

# Parameters per size.  tiny: the CI smoke test (seconds in all);
# small: a quick look (a few minutes); full: the numbers in docs/BENCHMARKS.md.
SIZES = {
    "tiny": dict(churn_ops=100_000, xthread_objects=50_000, large_malloc=6,
                 large_realloc=2, large_mmap=12, py_n=10_000, py_rounds=2,
                 sqlite_rows=2_000, redis_keys=5_000, redis_requests=2_000,
                 spawn_starts=50, pairs=20_000, micro_min_time=0.005, timeout=60),
    "small": dict(churn_ops=3_000_000, xthread_objects=1_000_000, large_malloc=40,
                  large_realloc=8, large_mmap=100, py_n=60_000, py_rounds=3,
                  sqlite_rows=50_000, redis_keys=100_000, redis_requests=50_000,
                  spawn_starts=500, pairs=200_000, micro_min_time=0.05, timeout=180),
    "full": dict(churn_ops=10_000_000, xthread_objects=2_000_000, large_malloc=80,
                 large_realloc=12, large_mmap=200, py_n=150_000, py_rounds=3,
                 sqlite_rows=150_000, redis_keys=200_000, redis_requests=60_000,
                 spawn_starts=2000, pairs=1_000_000, micro_min_time=0.2, timeout=300),
}

# Units of a workload's value: throughput (higher is better) or wall time.
THROUGHPUT = "ops/s"
SECONDS = "s"


# The target against mimalloc: libmmtier, tiering on (MMTIER_DRAM_RATIO=1:4
# as in every libmmtier run here), at least this many times mimalloc's churn
# throughput at 1 and 2 threads, and as many times fewer instructions per
# malloc+free pair (--callgrind).
MIMALLOC_TARGET = 1.10


class Workload:
    def __init__(self, name, kind, unit, targets, describe, mimalloc_targets=(), default=True):
        self.name = name
        self.kind = kind          # "program", "python3", "sqlite3", "redis", "build"
        self.unit = unit          # THROUGHPUT (higher is better) or SECONDS (lower)
        self.targets = targets    # issue 3's targets: (peer, "min"/"max", ratio, "speed"/"time"/"rss")
        self.describe = describe
        self.mimalloc_targets = list(mimalloc_targets)   # the same form, against mimalloc
        self.default = default    # in the table without --only (build: only when asked)


WORKLOADS = [
    Workload("churn_1t", "program", THROUGHPUT,
             [("jemalloc", "min", 0.9, "speed"), ("glibc", "min", 1.5, "speed"),
              ("libmemtier", "min", 8.0, "speed")],
             "small-object churn 16 B..1 KiB, random free order, 1000 live, 1 thread",
             [("mimalloc", "min", MIMALLOC_TARGET, "speed")]),
    Workload("churn_2t", "program", THROUGHPUT,
             [("jemalloc", "min", 0.9, "speed"), ("glibc", "min", 1.5, "speed"),
              ("libmemtier", "min", 8.0, "speed")],
             "small-object churn 16 B..1 KiB, random free order, 1000 live per thread, 2 threads",
             [("mimalloc", "min", MIMALLOC_TARGET, "speed")]),
    Workload("xthread", "program", THROUGHPUT, [("jemalloc", "min", 0.8, "speed")],
             "producer allocates, consumer frees (SPSC ring of 1024), 16 B..1 KiB"),
    Workload("large_malloc", "program", THROUGHPUT, [("jemalloc", "min", 0.9, "speed")],
             "malloc/free 64 KiB..64 MiB (log-uniform), pages touched, 4 alive"),
    Workload("large_realloc", "program", THROUGHPUT, [("jemalloc", "min", 0.9, "speed")],
             "realloc growth chains 64 KiB -> 1..64 MiB by 1.5x, contents checked"),
    Workload("large_mmap", "program", THROUGHPUT, [("jemalloc", "min", 0.9, "speed")],
             "anonymous mmap/munmap 64 KiB..16 MiB, pages touched, partial unmaps"),
    Workload("spawn_true", "program", THROUGHPUT, [],
             "process start+exit: posix_spawn /bin/true N times in a row, each waited for (starts/s)"),
    Workload("spawn_small", "program", THROUGHPUT, [],
             "process start+exit: posix_spawn a small C program (mallocs, qsort, one line on a pipe) "
             "N times (starts/s)"),
    Workload("python3", "python3", SECONDS,
             [("jemalloc", "max", 1.10, "time"), ("jemalloc", "max", 1.15, "rss")],
             "/usr/bin/python3 builds and drops large dicts and lists (pyalloc.py)"),
    Workload("sqlite3", "sqlite3", SECONDS,
             [("jemalloc", "max", 1.10, "time"), ("jemalloc", "max", 1.15, "rss")],
             "sqlite3 :memory: bulk insert of generated SQL, index, aggregate"),
    Workload("redis", "redis", SECONDS,
             [("jemalloc", "max", 1.10, "time"), ("jemalloc", "max", 1.15, "rss")],
             "redis-server under the allocator; Lua load + redis-benchmark -P 16"),
    Workload("build", "build", SECONDS, [],
             "libmmtier built from scratch (cmake + ninja -j2 mmtier) by bash, everything "
             "under the allocator", default=False),
]
WORKLOAD_NAMES = [w.name for w in WORKLOADS]
# A build takes 15-40 s on 2 cores, longer on a loaded machine: its own
# timeout, whatever the size (--timeout overrides).
BUILD_TIMEOUT = 1200


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def signame(num):
    try:
        return signal.Signals(num).name
    except ValueError:
        return "signal %d" % num


def fmt_num(v, unit):
    if v is None:
        return "-"
    if unit == SECONDS:
        return "%.3f" % v
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return "%.2f%s" % (v / scale, suffix)
    return "%.1f" % v


def fmt_ratio(r):
    return "-" if r is None else "%.2fx" % r


def is_mmtier(alloc):
    """libmmtier or one of the --compare builds: the same environment and checks."""
    return alloc == "libmmtier" or alloc.startswith(COMPARE_PREFIX)


def fmt_spread(vals, fmt):
    """min-max of a row's values (each through fmt) and its width relative to their median."""
    if not vals:
        return "-"
    lo, hi, med = min(vals), max(vals), statistics.median(vals)
    width = "" if not med else " (%.1f%%)" % (100.0 * (hi - lo) / abs(med))
    return "%s-%s%s" % (fmt(lo), fmt(hi), width)


def print_columns(hdr, table):
    """Left-aligned columns, the last one unpadded."""
    widths = [max(len(hdr[i]), *(len(t[i]) for t in table)) for i in range(len(hdr) - 1)]
    line = "  ".join(h.ljust(widths[i]) if i < len(widths) else h for i, h in enumerate(hdr))
    print("  " + line)
    for t in table:
        print("  " + "  ".join(c.ljust(widths[i]) if i < len(widths) else c for i, c in enumerate(t)))


def tail(path, lines=3, limit=300):
    try:
        with open(path, "rb") as f:
            data = f.read()[-4000:].decode("utf-8", "replace")
    except OSError:
        return ""
    text = " | ".join(l.strip() for l in data.strip().splitlines()[-lines:] if l.strip())
    return text[:limit]


class Child:
    """A program started through bench/runstat in its own session.

    runstat forks the program with the allocator's variables (extra), waits
    for it and records its wait status, peak RSS, CPU and wall time in a file:
    see bench/tools/runstat.c for why the driver does not measure directly."""

    def __init__(self, runstat, argv, env, extra, cwd, stdout, stderr, stdin=None):
        self.statfile = os.path.join(cwd, "runstat.%d" % id(self))
        full = [runstat, self.statfile] + ["%s=%s" % kv for kv in sorted(extra.items())] + ["--"] + list(argv)
        self.stderr_path = stderr
        with open(stdout, "wb") as out, open(stderr, "wb") as err, \
                open(stdin or os.devnull, "rb") as inp:
            self.proc = subprocess.Popen(full, env=env, cwd=cwd, stdin=inp, stdout=out,
                                         stderr=err, start_new_session=True)
        self.pid = self.proc.pid
        self.timed_out = False
        self.stats = None

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        """Waits up to timeout seconds; kills the whole process group past it."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.timed_out = True
            self.kill()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        self.stats = parse_runstat(self.statfile)
        return not self.timed_out

    def kill(self):
        # Only while runstat is unreaped: its pid (= the group id) is still ours.
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    @property
    def wall(self):
        return self.stats and self.stats.get("wall")

    @property
    def maxrss_kib(self):
        return self.stats and self.stats.get("maxrss_kib")

    @property
    def cpu(self):
        return self.stats and (self.stats["utime"] + self.stats["stime"])

    def failure(self, timeout):
        """None when the program exited 0, else the reason."""
        if self.timed_out:
            return "timed out after %ds" % timeout
        if self.proc.returncode != 0 or not self.stats:
            return "launcher runstat failed (status %s): %s" % (
                self.proc.returncode, tail(self.stderr_path, 2))
        status = int(self.stats["status"])
        if os.WIFSIGNALED(status):
            return "killed by %s" % signame(os.WTERMSIG(status))
        code = os.WEXITSTATUS(status)
        if code != 0:
            detail = tail(self.stderr_path, 2)
            return "exit status %d%s" % (code, (": " + detail) if detail else "")
        return None


def parse_runstat(path):
    text = read_text(path).strip()
    if not text:
        return None
    stats = {}
    for field in text.split():
        k, _, v = field.partition("=")
        try:
            stats[k] = float(v) if "." in v else int(v)
        except ValueError:
            return None
    for k in ("status", "maxrss_kib", "utime", "stime", "wall"):
        if k not in stats:
            return None
    return stats


class Run:
    def __init__(self):
        self.ok = False
        self.reason = None
        self.value = None      # ops/s or seconds
        self.checksum = None
        self.wall = None
        self.maxrss_kib = None
        self.cpu = None
        self.mmtier_peak = None  # (dram_bytes, pmem_bytes) placed-peak from MMTIER_REPORT

    def fail(self, reason):
        self.ok = False
        self.reason = reason
        return self


class Bench:
    def __init__(self, args):
        self.args = args
        self.size = SIZES[args.size]
        self.timeout = args.timeout or self.size["timeout"]
        self.build = os.path.abspath(args.build)
        self.src = os.path.dirname(os.path.abspath(__file__))
        self.libmmtier = os.path.abspath(args.lib) if args.lib else os.path.join(self.build, "libmmtier.so")
        self.workdir = tempfile.mkdtemp(prefix="mmtier-bench-")
        self.pmemdir = tempfile.mkdtemp(prefix="mmtier-bench-pmem-", dir=args.pmem_dir)
        # --compare: (column name, library), the columns after args.allocators.
        self.compare = [(COMPARE_PREFIX + label, os.path.abspath(path)) for label, path in args.compare]
        self.allocators = args.allocators + [name for name, _ in self.compare]
        self.run_counter = 0
        self.sql_file = None
        self.build_src = None
        self.runstat = os.path.join(self.build, "bench", "runstat")
        self.children = []

    def cleanup(self):
        # After an interruption a child (a redis-server, say) may still run.
        for child in self.children:
            if child.alive():
                child.kill()
                try:
                    child.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        if self.args.keep:
            log("kept work directories: %s %s" % (self.workdir, self.pmemdir))
            return
        shutil.rmtree(self.workdir, ignore_errors=True)
        shutil.rmtree(self.pmemdir, ignore_errors=True)

    # ---- environments -------------------------------------------------

    def base_env(self, rundir):
        home = os.path.join(rundir, "home")
        tmp = os.path.join(rundir, "tmp")
        os.makedirs(home, exist_ok=True)
        os.makedirs(tmp, exist_ok=True)
        return {"PATH": SYS_PATH, "HOME": home, "TMPDIR": tmp, "LC_ALL": "C", "LANG": "C",
                "TZ": "UTC"}

    def allocator_lib(self, alloc):
        libs = {"glibc": None, "jemalloc": JEMALLOC, "mimalloc": MIMALLOC, "libmemtier": MEMTIER,
                "libmmtier": self.libmmtier}
        libs.update(self.compare)
        return libs[alloc]

    def allocator_vars(self, alloc, rundir, preload=True):
        """Variables that select the allocator (LD_PRELOAD only if preload)."""
        env = {}
        lib = self.allocator_lib(alloc)
        if lib and preload:
            env["LD_PRELOAD"] = lib
        if alloc == "libmemtier":
            d = os.path.join(self.pmemdir, "memkind")
            os.makedirs(d, exist_ok=True)
            env["MEMKIND_MEM_TIERS"] = (
                "KIND:DRAM,RATIO:1;KIND:FS_DAX,PATH:%s,PMEM_SIZE_LIMIT:4G,RATIO:4;"
                "POLICY:STATIC_RATIO" % d)
        elif is_mmtier(alloc):
            d = os.path.join(self.pmemdir, "mmtier")
            os.makedirs(d, exist_ok=True)
            env["MMTIER_DRAM_RATIO"] = "1:4"
            env["MMTIER_PMEM_PATH"] = d
            env["MMTIER_REPORT"] = os.path.join(rundir, "mmtier-report.%p")
        return env

    def spawn(self, argv, env, extra, cwd, stdout, stderr, stdin=None):
        child = Child(self.runstat, argv, env, extra, cwd, stdout, stderr, stdin)
        self.children = [c for c in self.children if c.alive()] + [child]
        return child

    def missing_lib(self, alloc):
        lib = self.allocator_lib(alloc)
        if lib and not os.path.isfile(lib):
            return "%s not found" % lib
        return None

    def new_rundir(self, workload, alloc):
        self.run_counter += 1
        d = os.path.join(self.workdir, "%04d-%s-%s" % (self.run_counter, workload, alloc))
        os.makedirs(d)
        return d

    # ---- checks common to every run -------------------------------------

    def common_checks(self, run, alloc, rundir, stderr_path):
        try:
            with open(stderr_path, "rb") as f:
                err = f.read().decode("utf-8", "replace")
        except OSError:
            err = ""
        if "cannot be preloaded" in err:
            return run.fail("LD_PRELOAD library was not loaded")
        if is_mmtier(alloc):
            peak = read_mmtier_reports(rundir)
            if peak is None:
                return run.fail("no mmtier report written: libmmtier not loaded or exit path skipped")
            run.mmtier_peak = peak
        return run

    # ---- workloads ---------------------------------------------------------

    def program_argv(self, name):
        s = self.size
        w = os.path.join(self.build, "bench", "workloads")
        return {
            "churn_1t": [w + "/churn", "1", str(s["churn_ops"])],
            "churn_2t": [w + "/churn", "2", str(s["churn_ops"])],
            "xthread": [w + "/xthread", str(s["xthread_objects"])],
            "large_malloc": [w + "/large", "malloc", str(s["large_malloc"])],
            "large_realloc": [w + "/large", "realloc", str(s["large_realloc"])],
            "large_mmap": [w + "/large", "mmap", str(s["large_mmap"])],
            # The children inherit the allocator's variables but MMTIER_REPORT:
            # only the spawn driver writes an exit report, not every start.
            "spawn_true": [w + "/spawn", "spawn_true", str(s["spawn_starts"]), "--lines", "0",
                           "--unset", "MMTIER_REPORT", "--", "/bin/true"],
            "spawn_small": [w + "/spawn", "spawn_small", str(s["spawn_starts"]), "--lines", "1",
                            "--unset", "MMTIER_REPORT", "--", w + "/small"],
        }[name]

    def run_simple(self, workload, alloc, argv, stdin=None):
        """Runs one process under alloc; returns (Run, rundir, stdout_path)."""
        run = Run()
        rundir = self.new_rundir(workload.name, alloc)
        out = os.path.join(rundir, "stdout")
        err = os.path.join(rundir, "stderr")
        try:
            child = self.spawn(argv, self.base_env(rundir), self.allocator_vars(alloc, rundir),
                               rundir, out, err, stdin)
        except OSError as e:
            return run.fail("cannot start %s: %s" % (argv[0], e)), rundir, out
        child.wait(self.timeout)
        run.wall = child.wall
        run.maxrss_kib = child.maxrss_kib
        run.cpu = child.cpu
        reason = child.failure(self.timeout)
        if reason:
            return run.fail(reason), rundir, out
        self.common_checks(run, alloc, rundir, err)
        if run.reason:
            return run, rundir, out
        run.ok = True
        return run, rundir, out

    def parse_result(self, run, out, name):
        try:
            with open(out, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError:
            text = ""
        lines = [l for l in text.splitlines() if l.startswith("RESULT ")]
        if not lines:
            return run.fail("no RESULT line in stdout (output lost?)")
        if len(lines) > 1:
            return run.fail("%d RESULT lines in stdout" % len(lines))
        parts = lines[0].split()
        if len(parts) != 4 or parts[1] != name:
            return run.fail("malformed RESULT line: %r" % lines[0][:100])
        try:
            value = float(parts[2])
        except ValueError:
            return run.fail("malformed RESULT value: %r" % parts[2])
        run.checksum = parts[3]
        return value

    def run_program(self, workload, alloc):
        run, rundir, out = self.run_simple(workload, alloc, self.program_argv(workload.name))
        if run.ok:
            value = self.parse_result(run, out, workload.name)
            if run.reason is None:
                run.value = value
            else:
                run.ok = False
        return run, rundir

    def run_python3(self, workload, alloc):
        script = os.path.join(self.src, "workloads", "pyalloc.py")
        argv = ["/usr/bin/python3", "-I", script, str(self.size["py_n"]), str(self.size["py_rounds"])]
        run, rundir, out = self.run_simple(workload, alloc, argv)
        if run.ok:
            self.parse_result(run, out, "python3")
            if run.reason is None:
                run.value = run.wall
            else:
                run.ok = False
        return run, rundir

    def make_sql(self):
        if self.sql_file:
            return self.sql_file
        rows = self.size["sqlite_rows"]
        rng = random.Random(12345)
        path = os.path.join(self.workdir, "bulk.sql")
        words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel",
                 "india", "juliet", "kilo", "lima", "mike", "november", "oscar", "papa"]
        with open(path, "w") as f:
            f.write("PRAGMA journal_mode=OFF;\nPRAGMA synchronous=OFF;\n")
            f.write("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, grp INTEGER, "
                    "val REAL, payload TEXT);\nBEGIN;\n")
            for i in range(1, rows + 1):
                name = "%s-%s-%d" % (rng.choice(words), rng.choice(words), rng.randrange(1 << 20))
                payload = rng.choice(words) * rng.randrange(2, 60)
                f.write("INSERT INTO t VALUES(%d,'%s',%d,%.3f,'%s');\n"
                        % (i, name, rng.randrange(100), rng.random() * 1000, payload))
            f.write("COMMIT;\n")
            f.write("CREATE INDEX t_name ON t(name);\nCREATE INDEX t_grp ON t(grp, val);\n")
            f.write("SELECT count(*), sum(length(payload)), sum(id % 97) FROM t;\n")
            f.write("SELECT grp, count(*), printf('%.3f', total(val)) FROM t GROUP BY grp "
                    "ORDER BY grp LIMIT 5;\n")
            f.write("SELECT name FROM t ORDER BY name LIMIT 3;\n")
            f.write("DELETE FROM t WHERE id % 3 = 0;\nVACUUM;\n")
            f.write("SELECT count(*), sum(length(name)) FROM t;\n")
        self.sql_file = path
        return path

    def run_sqlite3(self, workload, alloc):
        sql = self.make_sql()
        argv = ["/usr/bin/sqlite3", "-batch", "-bail", ":memory:"]
        run, rundir, out = self.run_simple(workload, alloc, argv, stdin=sql)
        if run.ok:
            with open(out, "rb") as f:
                data = f.read()
            if not data.strip():
                return run.fail("no output (output lost?)"), rundir
            run.checksum = hashlib.sha256(data).hexdigest()[:16]
            run.value = run.wall
        return run, rundir

    def run_redis(self, workload, alloc):
        run = Run()
        rundir = self.new_rundir(workload.name, alloc)
        for binary in ("/usr/bin/redis-server", "/usr/bin/redis-cli", "/usr/bin/redis-benchmark"):
            if not os.access(binary, os.X_OK):
                return run.fail("%s not installed (Debian redis-server, redis-tools)" % binary), rundir
        plain_env = self.base_env(rundir)
        server_vars = self.allocator_vars(alloc, rundir)
        server_err = os.path.join(rundir, "server.stderr")
        server = None
        port = None
        for _attempt in range(6):
            port = free_port()
            logfile = os.path.join(rundir, "redis-%d.log" % port)
            argv = ["/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--protected-mode", "yes", "--dir", rundir, "--logfile", logfile,
                    "--enable-debug-command", "local"]
            try:
                server = self.spawn(argv, plain_env, server_vars, rundir,
                                    os.path.join(rundir, "server.stdout"), server_err)
            except OSError as e:
                return run.fail("cannot start redis-server: %s" % e), rundir
            ready = False
            deadline = time.monotonic() + min(30, self.timeout)
            while time.monotonic() < deadline and server.alive():
                r = self.cli(plain_env, port, ["PING"], 5)
                if r is not None and r.strip() == "PONG":
                    ready = True
                    break
                time.sleep(0.05)
            if ready:
                break
            if server.alive():
                server.kill()
                server.wait(15)
                return run.fail("redis-server did not answer PING within 30 s"), rundir
            server.wait(5)
            if "Address already in use" in read_text(logfile):
                server = None
                continue
            why = server.failure(30) or "exited at start-up"
            return run.fail("redis-server %s; log: %s" % (why, tail(logfile, 2))), rundir
        if server is None:
            return run.fail("no free port for redis-server after 6 attempts"), rundir

        try:
            reason = self.redis_session(run, plain_env, port, rundir)
        finally:
            if server.alive():
                self.cli(plain_env, port, ["SHUTDOWN", "NOSAVE"], 10)
            server.wait(20)
        run.maxrss_kib = server.maxrss_kib
        run.cpu = server.cpu
        if server.timed_out:
            return run.fail("redis-server did not exit after SHUTDOWN NOSAVE"), rundir
        died = server.failure(20)
        if reason is None and died:
            reason = "redis-server " + died
        elif reason is not None and died:
            reason = "%s (redis-server %s)" % (reason, died)
        if reason:
            return run.fail(reason), rundir
        self.common_checks(run, alloc, rundir, server_err)
        if run.reason:
            return run, rundir
        run.ok = True
        return run, rundir

    def cli(self, env, port, args, timeout, stdin=None):
        """redis-cli (never under the allocator); stdout text or None."""
        try:
            r = subprocess.run(["/usr/bin/redis-cli", "-h", "127.0.0.1", "-p", str(port)] + args,
                               env=env, input=stdin, capture_output=True, timeout=timeout)
        except (subprocess.TimeoutExpired, OSError):
            return None
        if r.returncode != 0:
            return None
        out = r.stdout.decode("utf-8", "replace")
        if out.startswith("ERR") or "Could not connect" in out:
            return None
        return out

    def redis_session(self, run, env, port, rundir):
        """The timed client session; returns None or the failure reason."""
        keys = self.size["redis_keys"]
        requests = self.size["redis_requests"]
        load = ("for i = 1, %d do redis.call('SET', 'key:' .. i, "
                "string.rep(string.char(97 + i %% 26), 16 + (i * 7) %% 500)) end "
                "for i = 1, %d, 3 do redis.call('DEL', 'key:' .. i) end "
                "for i = 1, %d do redis.call('HSET', 'h:' .. (i %% 100), 'f' .. i, i) end "
                "return redis.call('DBSIZE')" % (keys, keys, keys // 2))
        tests = "set,get,incr,lpush,rpush,lpop,rpop,sadd,hset,spop,zadd,lrange_100,mset"
        start = time.monotonic()
        if self.cli(env, port, ["EVAL", load, "0"], self.timeout) is None:
            return "Lua load script failed (server gone?)"
        bench_out = os.path.join(rundir, "redis-benchmark.txt")
        try:
            r = subprocess.run(["/usr/bin/redis-benchmark", "-h", "127.0.0.1", "-p", str(port),
                                "-n", str(requests), "-P", "16", "-c", "20", "-q", "--csv",
                                "-t", tests], env=env, capture_output=True,
                               timeout=self.timeout)
        except subprocess.TimeoutExpired:
            return "redis-benchmark timed out after %ds" % self.timeout
        run.wall = time.monotonic() - start
        run.value = run.wall
        with open(bench_out, "wb") as f:
            f.write(r.stdout + r.stderr)
        text = r.stdout.decode("utf-8", "replace")
        if r.returncode != 0:
            return "redis-benchmark exit status %d: %s" % (r.returncode, tail(bench_out, 2))
        done = re.findall(r'^"([^"]+)","[0-9.]+"', text, re.M)
        if len(done) < len(tests.split(",")):
            return "redis-benchmark completed %d of %d tests" % (len(done), len(tests.split(",")))
        digest = self.cli(env, port, ["DEBUG", "DIGEST"], 30)
        size = self.cli(env, port, ["DBSIZE"], 30)
        if digest is None or size is None:
            return "DEBUG DIGEST/DBSIZE failed after the benchmark (server gone?)"
        run.checksum = "%s/%s" % (digest.strip()[:16], size.strip())
        return None

    def make_build_src(self):
        """A copy of this source tree (without .git and build trees), made once per
        driver run, so that every build row compiles the same files even if the
        tree is edited meanwhile, and no run writes into the tree."""
        if self.build_src:
            return self.build_src
        root = os.path.dirname(self.src)

        def ignore(d, names):
            skip = {n for n in names if n in (".git", "__pycache__")
                    or os.path.isfile(os.path.join(d, n, "CMakeCache.txt"))}
            if os.path.samefile(d, root):
                skip |= {n for n in names if n.startswith("build") or n == "out"}
            return skip

        dst = os.path.join(self.workdir, "build-src")
        shutil.copytree(root, dst, symlinks=True, ignore=ignore)
        self.build_src = dst
        return dst

    def run_build(self, workload, alloc):
        """bash -c 'cmake ... && ninja ... mmtier' with everything under the allocator:
        bash and all it starts (cmake, ninja, gcc, cc1plus, as, ld) inherit the
        allocator's variables.  The value is the wall time of the whole build; the
        checksum, the number of build steps and the library's exported symbols."""
        src = self.make_build_src()
        run = Run()
        rundir = self.new_rundir(workload.name, alloc)
        tree = tempfile.mkdtemp(prefix="tree-", dir=rundir)
        out = os.path.join(rundir, "stdout")
        err = os.path.join(rundir, "stderr")
        script = ('cmake -S "$1" -B "$2" -G Ninja -DMMTIER_BUILD_TESTS=OFF -DMMTIER_BUILD_BENCH=OFF '
                  '-DMMTIER_BUILD_CLI=OFF >/dev/null && ninja -C "$2" -j2 mmtier')
        timeout = self.args.timeout or BUILD_TIMEOUT
        try:
            try:
                child = self.spawn(["/bin/bash", "-c", script, "bash", src, tree], self.base_env(rundir),
                                   self.allocator_vars(alloc, rundir), rundir, out, err)
            except OSError as e:
                return run.fail("cannot start bash: %s" % e), rundir
            child.wait(timeout)
            run.wall = child.wall
            run.maxrss_kib = child.maxrss_kib
            run.cpu = child.cpu
            reason = child.failure(timeout)
            if reason:
                return run.fail(reason), rundir
            lib = os.path.join(tree, "libmmtier.so")
            if not os.path.isfile(lib):
                return run.fail("the build exited 0 but made no libmmtier.so"), rundir
            steps = re.findall(r"^\[(\d+)/(\d+)\] ", read_text(out), re.M)
            if not steps or steps[-1][0] != steps[-1][1]:
                return run.fail("ninja's output does not end with its last step: %s" % tail(out, 1)), rundir
            try:
                nm = subprocess.run(["nm", "-D", "--defined-only", lib], env=self.base_env(rundir),
                                    capture_output=True, timeout=60)
            except (OSError, subprocess.TimeoutExpired) as e:
                return run.fail("nm on the built libmmtier.so failed: %s" % e), rundir
            syms = sorted(" ".join(l.split()[-2:]) for l in nm.stdout.decode("utf-8", "replace").splitlines()
                          if l.strip())
            if nm.returncode != 0 or not any(s.endswith(" malloc") for s in syms):
                return run.fail("the built libmmtier.so exports no malloc (nm status %d)" % nm.returncode), rundir
        finally:
            # A build tree is tens of MiB: never kept, even with --keep.
            shutil.rmtree(tree, ignore_errors=True)
        run.checksum = "%s/%s" % (steps[-1][1], hashlib.sha256("\n".join(syms).encode()).hexdigest()[:16])
        self.common_checks(run, alloc, rundir, err)
        if run.reason:
            return run, rundir
        run.value = run.wall
        run.ok = True
        return run, rundir

    def run_one(self, workload, alloc):
        missing = self.missing_lib(alloc)
        if missing:
            return Run().fail(missing)
        try:
            fn = {"program": self.run_program, "python3": self.run_python3,
                  "sqlite3": self.run_sqlite3, "redis": self.run_redis,
                  "build": self.run_build}[workload.kind]
            run, rundir = fn(workload, alloc)
        except Exception as e:  # a driver bug must not lose the row
            run, rundir = Run().fail("driver error: %s: %s" % (type(e).__name__, e)), None
        if rundir and not self.args.keep:
            shutil.rmtree(rundir, ignore_errors=True)
        return run


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}


def read_mmtier_reports(rundir):
    """Largest placed-peak (DRAM, PMem) bytes over the run's mmtier reports."""
    best = None
    for name in os.listdir(rundir):
        if not name.startswith("mmtier-report."):
            continue
        dram = pmem = None
        for line in read_text(os.path.join(rundir, name)).splitlines():
            f = line.split()
            # "  DRAM   8.0 MiB   8.0 MiB   460.0 KiB   none": placed-peak is f[3] f[4]
            if len(f) >= 7 and f[0] in ("DRAM", "PMem") and f[4] in UNITS:
                try:
                    v = float(f[3]) * UNITS[f[4]]
                except ValueError:
                    continue
                if f[0] == "DRAM":
                    dram = v
                else:
                    pmem = v
        if dram is None or pmem is None:
            continue
        if best is None or dram + pmem > best[0] + best[1]:
            best = (dram, pmem)
    return best


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


# ---- the workload table -----------------------------------------------------


class Row:
    def __init__(self, workload, alloc):
        self.workload = workload
        self.alloc = alloc
        self.runs = []
        self.status = "ok"
        self.reason = ""
        self.median = None
        self.rss = None
        self.cpu = None
        self.mmtier_peak = None
        self.vs_jemalloc = None
        self.vs_mimalloc = None
        self.vs_glibc = None
        self.rss_vs_jemalloc = None

    def ok_runs(self):
        return [r for r in self.runs if r.ok]


def validate(rows, workload):
    """Marks runs whose checksum differs from glibc's as failed."""
    ref_row = rows.get((workload.name, "glibc"))
    ref = None
    if ref_row:
        sums = {r.checksum for r in ref_row.ok_runs()}
        if len(sums) > 1:
            for r in ref_row.ok_runs():
                r.fail("glibc runs disagree on the checksum (%s): workload not deterministic"
                       % ", ".join(sorted(sums)))
        elif sums:
            ref = sums.pop()
    for (wname, alloc), row in rows.items():
        if wname != workload.name or alloc == "glibc":
            continue
        for r in row.ok_runs():
            if ref is None:
                continue  # nothing to compare with; glibc's row says why
            if r.checksum != ref:
                r.fail("checksum %s differs from glibc's %s" % (r.checksum, ref))


def summarise(row):
    ok = row.ok_runs()
    failed = [r for r in row.runs if not r.ok]
    if failed:
        row.status = "FAIL"
        reasons = {}
        for r in failed:
            reasons[r.reason] = reasons.get(r.reason, 0) + 1
        row.reason = "; ".join("%d/%d runs: %s" % (n, len(row.runs), why) for why, n in reasons.items())
    if ok:
        row.median = statistics.median(r.value for r in ok)
        rss = [r.maxrss_kib for r in ok if r.maxrss_kib is not None]
        row.rss = statistics.median(rss) if rss else None
        cpu = [r.cpu for r in ok if r.cpu is not None]
        row.cpu = statistics.median(cpu) if cpu else None
        peaks = [r.mmtier_peak for r in ok if r.mmtier_peak]
        if peaks:
            row.mmtier_peak = (statistics.median(p[0] for p in peaks),
                               statistics.median(p[1] for p in peaks))


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def run_table(bench, args):
    workloads = [w for w in WORKLOADS if w.name in args.only] if args.only else \
        [w for w in WORKLOADS if w.default or (args.with_build and w.kind == "build")]
    rows = {(w.name, a): Row(w, a) for w in workloads for a in bench.allocators}
    n = len(bench.allocators)
    for rnd in range(args.rounds):
        order = bench.allocators[rnd % n:] + bench.allocators[:rnd % n]
        for w in workloads:
            for alloc in order:
                run = bench.run_one(w, alloc)
                rows[(w.name, alloc)].runs.append(run)
                shown = fmt_num(run.value, w.unit) + " " + w.unit if run.ok else "FAIL: " + (run.reason or "?")
                log("[round %d/%d] %-13s %-10s %s" % (rnd + 1, args.rounds, w.name, alloc, shown))
    for w in workloads:
        validate(rows, w)
    for row in rows.values():
        summarise(row)
    for w in workloads:
        je = rows.get((w.name, "jemalloc"))
        mi = rows.get((w.name, "mimalloc"))
        gl = rows.get((w.name, "glibc"))
        for alloc in bench.allocators:
            row = rows[(w.name, alloc)]
            row.vs_jemalloc = ratio(row.median, je.median if je else None)
            row.vs_mimalloc = ratio(row.median, mi.median if mi else None)
            row.vs_glibc = ratio(row.median, gl.median if gl else None)
            row.rss_vs_jemalloc = ratio(row.rss, je.rss if je else None)
    return workloads, rows


def print_table(bench, workloads, rows):
    print()
    print("Workloads: median of %d round(s), size %s, allocators run in alternation."
          % (bench.args.rounds, bench.args.size))
    print("ops/s: higher is better (ratio > 1 = faster than the peer); "
          "s: wall time, lower is better (ratio < 1 = faster).")
    hdr = ("workload", "allocator", "median", "unit", "vs jemalloc", "vs mimalloc", "vs glibc",
           "peak RSS MiB", "RSS vs je", "status")
    table = []
    for w in workloads:
        for alloc in bench.allocators:
            r = rows[(w.name, alloc)]
            table.append((w.name, alloc, fmt_num(r.median, w.unit), w.unit,
                          fmt_ratio(r.vs_jemalloc), fmt_ratio(r.vs_mimalloc), fmt_ratio(r.vs_glibc),
                          "-" if r.rss is None else "%.1f" % (r.rss / 1024.0),
                          fmt_ratio(r.rss_vs_jemalloc),
                          "ok" if r.status == "ok" else "FAIL (%s)" % r.reason))
    widths = [max(len(hdr[i]), *(len(t[i]) for t in table)) for i in range(len(hdr) - 1)]
    line = "  ".join(h.ljust(widths[i]) if i < len(widths) else h for i, h in enumerate(hdr))
    print(line)
    print("-" * min(len(line) + 10, 140))
    for t in table:
        print("  ".join(c.ljust(widths[i]) if i < len(widths) else c for i, c in enumerate(t)))

    print()
    print("Workloads (docs/BENCHMARKS.md has the details):")
    for w in workloads:
        print("  %-13s %s" % (w.name, w.describe))

    if "libmmtier" in bench.allocators:
        peaks = [(w.name, rows[(w.name, "libmmtier")].mmtier_peak) for w in workloads]
        if any(p for _, p in peaks):
            print()
            print("libmmtier placed-peak per tier (MMTIER_REPORT, 2 MiB units; median over runs):")
            for name, p in peaks:
                if p:
                    print("  %-13s DRAM %8.1f MiB   PMem %8.1f MiB" % (name, p[0] / 2**20, p[1] / 2**20))
        for title, attr in (("Targets of issue 3 for libmmtier (MMTIER_DRAM_RATIO=1:4):", "targets"),
                            ("Target against mimalloc for libmmtier, tiering on (MMTIER_DRAM_RATIO=1:4): "
                             "churn >= %.2fx mimalloc at 1 and 2 threads:" % MIMALLOC_TARGET,
                             "mimalloc_targets")):
            lines = [target_line(w, rows, t) for w in workloads for t in getattr(w, attr)]
            if lines:
                print()
                print(title)
                for l in lines:
                    print(l)

    for other, lib in bench.compare:
        print_compare_table(bench, workloads, rows, other, lib)


def target_line(w, rows, target):
    """One line of a target summary: libmmtier's ratio to the peer and the verdict."""
    peer, kind, bound, what = target
    me = rows[(w.name, "libmmtier")]
    if what == "rss":
        label = "peak RSS vs %s <= %.2fx" % (peer, bound)
    elif w.unit == THROUGHPUT:
        label = "throughput vs %s >= %.2fx" % (peer, bound)
    else:
        label = "wall time vs %s <= %.2fx" % (peer, bound)
    p = rows.get((w.name, peer))
    if p is None:
        verdict, measured = "n/a (peer not run)", None
    else:
        measured = ratio(me.rss, p.rss) if what == "rss" else ratio(me.median, p.median)
        if me.status != "ok":
            verdict = "FAIL (libmmtier row failed)"
        elif measured is None:
            verdict = "n/a (%s row has no value)" % peer
        elif p.status != "ok":
            verdict = ("meets" if (measured >= bound if kind == "min" else measured <= bound)
                       else "misses") + " (but the %s row is FAIL)" % peer
        else:
            verdict = "meets" if (measured >= bound if kind == "min" else measured <= bound) else "MISSES"
    return "  %-13s %-34s measured %-7s %s" % (w.name, label, fmt_ratio(measured), verdict)


def better_ratio(mine, other, higher_is_better):
    """> 1 when mine is the better value, whichever way the unit runs."""
    return ratio(mine, other) if higher_is_better else ratio(other, mine)


def print_compare_table(bench, workloads, rows, other, lib):
    print()
    print("libmmtier against %s: median and min-max (width vs median) over %d round(s);"
          % (other, bench.args.rounds))
    print("ratio > 1: libmmtier is better (ops/s: libmmtier / %s; s: %s / libmmtier)."
          % (other, other))
    print("  libmmtier: %s" % bench.libmmtier)
    print("  %s: %s" % (other, lib))
    hdr = ("workload", "unit", "libmmtier", "spread", other, "spread", "ratio", "status")
    table = []
    for w in workloads:
        me, them = rows[(w.name, "libmmtier")], rows[(w.name, other)]
        num = functools.partial(fmt_num, unit=w.unit)
        failed = [a for a, r in (("libmmtier", me), (other, them)) if r.status != "ok"]
        table.append((w.name, w.unit,
                      fmt_num(me.median, w.unit), fmt_spread([r.value for r in me.ok_runs()], num),
                      fmt_num(them.median, w.unit), fmt_spread([r.value for r in them.ok_runs()], num),
                      fmt_ratio(better_ratio(me.median, them.median, w.unit == THROUGHPUT)),
                      "ok" if not failed else "FAIL (%s row; see the table)" % " and ".join(failed)))
    print_columns(hdr, table)


CSV_FIELDS = ["section", "workload", "allocator", "metric", "unit", "better", "runs", "runs_ok",
              "median", "min", "max", "ratio_vs_jemalloc", "ratio_vs_mimalloc", "ratio_vs_glibc",
              "peak_rss_kib",
              "rss_ratio_vs_jemalloc", "cpu_seconds", "mmtier_dram_peak_bytes",
              "mmtier_pmem_peak_bytes", "status", "reason", "samples"]


def table_csv_rows(bench, workloads, rows):
    out = []
    for w in workloads:
        for alloc in bench.allocators:
            r = rows[(w.name, alloc)]
            ok = r.ok_runs()
            vals = [x.value for x in ok]
            out.append({
                "section": "workload", "workload": w.name, "allocator": alloc,
                "metric": "throughput" if w.unit == THROUGHPUT else "wall_time",
                "unit": w.unit, "better": "higher" if w.unit == THROUGHPUT else "lower",
                "runs": len(r.runs), "runs_ok": len(ok),
                "median": r.median, "min": min(vals) if vals else None,
                "max": max(vals) if vals else None,
                "ratio_vs_jemalloc": r.vs_jemalloc, "ratio_vs_mimalloc": r.vs_mimalloc,
                "ratio_vs_glibc": r.vs_glibc,
                "peak_rss_kib": r.rss, "rss_ratio_vs_jemalloc": r.rss_vs_jemalloc,
                "cpu_seconds": r.cpu,
                "mmtier_dram_peak_bytes": r.mmtier_peak[0] if r.mmtier_peak else None,
                "mmtier_pmem_peak_bytes": r.mmtier_peak[1] if r.mmtier_peak else None,
                "status": r.status, "reason": r.reason,
                "samples": " ".join("%g" % v for v in vals),
            })
    return out


# ---- callgrind: instructions per malloc+free pair ------------------------------


def run_callgrind(bench, args):
    valgrind = shutil.which("valgrind", path=SYS_PATH)
    prog = os.path.join(bench.build, "bench", "workloads", "pairloop")
    n = bench.size["pairs"]
    results = []
    for mode in ("64", "mixed"):
        for alloc in bench.allocators:
            res = {"mode": mode, "alloc": alloc, "value": None, "reason": ""}
            results.append(res)
            if valgrind is None:
                res["reason"] = "valgrind not installed (Debian valgrind)"
                continue
            missing = bench.missing_lib(alloc)
            if missing:
                res["reason"] = missing
                continue
            counts = []
            for pairs in (n, 2 * n):
                rundir = bench.new_rundir("callgrind", alloc)
                extra = bench.allocator_vars(alloc, rundir, preload=False)
                inner = ["env"]
                if bench.allocator_lib(alloc):
                    inner.append("LD_PRELOAD=" + bench.allocator_lib(alloc))
                argv = [valgrind, "--tool=callgrind", "--trace-children=yes",
                        "--callgrind-out-file=" + os.path.join(rundir, "callgrind.out.%p"),
                        ] + inner + [prog, str(pairs), mode]
                out = os.path.join(rundir, "stdout")
                err = os.path.join(rundir, "stderr")
                try:
                    child = bench.spawn(argv, bench.base_env(rundir), extra, rundir, out, err)
                except OSError as e:
                    res["reason"] = "cannot start valgrind: %s" % e
                    break
                child.wait(bench.timeout * 4)
                why = child.failure(bench.timeout * 4)
                text = read_text(err)
                collected = re.findall(r"^==\d+== Collected : (\d+)", text, re.M)
                if why is None and not re.search(r"^RESULT pairloop_\S+ \d", read_text(out), re.M):
                    why = "no RESULT line (output lost?)"
                if why is None and not collected:
                    why = "no 'Collected' line from callgrind: %s" % tail(err, 2)
                if not args.keep:
                    shutil.rmtree(rundir, ignore_errors=True)
                if why:
                    res["reason"] = why
                    break
                counts.append(int(collected[-1]))
            if len(counts) == 2:
                res["value"] = (counts[1] - counts[0]) / n
                res["counts"] = counts
            log("[callgrind] %-6s %-10s %s" % (mode, alloc, "%.1f instr/pair" % res["value"]
                                                if res["value"] is not None else "FAIL: " + res["reason"]))
    print()
    print("Instructions per malloc+free pair (callgrind, (I(2N) - I(N)) / N, N = %d; "
          "lower is better):" % n)
    aw = max([10] + [len(a) for a in bench.allocators])
    print("  %-*s %-14s %-14s %s" % (aw, "allocator", "64 B", "16..1024 B", "status"))
    for alloc in bench.allocators:
        cells, reasons = [], []
        for mode in ("64", "mixed"):
            r = next(x for x in results if x["mode"] == mode and x["alloc"] == alloc)
            cells.append("%.1f" % r["value"] if r["value"] is not None else "FAIL")
            if r["reason"]:
                reasons.append("%s: %s" % ("64 B" if mode == "64" else "mixed", r["reason"]))
        print("  %-*s %-14s %-14s %s" % (aw, alloc, cells[0], cells[1],
                                          "ok" if not reasons else "FAIL (" + "; ".join(reasons) + ")"))
    if "libmmtier" in bench.allocators and "mimalloc" in bench.allocators:
        print()
        print("libmmtier against mimalloc (tiering on, MMTIER_DRAM_RATIO=1:4): instructions per "
              "malloc+free pair; ratio = mimalloc / libmmtier, > 1: libmmtier runs fewer; "
              "target >= %.2fx." % MIMALLOC_TARGET)
        table = []
        for mode, size in (("64", "64 B"), ("mixed", "16..1024 B")):
            me, mi = (next(x for x in results if x["mode"] == mode and x["alloc"] == a)
                      for a in ("libmmtier", "mimalloc"))
            r = better_ratio(me["value"], mi["value"], False)
            failed = [a for a, x in (("libmmtier", me), ("mimalloc", mi)) if x["value"] is None]
            verdict = ("FAIL (%s)" % " and ".join(failed) if failed else
                       "meets" if r >= MIMALLOC_TARGET else "MISSES")
            table.append((size, "-" if me["value"] is None else "%.1f" % me["value"],
                          "-" if mi["value"] is None else "%.1f" % mi["value"],
                          fmt_ratio(r), verdict))
        print_columns(("size", "libmmtier", "mimalloc", "ratio", "target"), table)
    for other, lib in bench.compare:
        print()
        print("libmmtier against %s: instructions per malloc+free pair; "
              "ratio > 1: libmmtier runs fewer (%s / libmmtier)." % (other, other))
        print("  libmmtier: %s" % bench.libmmtier)
        print("  %s: %s" % (other, lib))
        table = []
        for mode, size in (("64", "64 B"), ("mixed", "16..1024 B")):
            me, them = (next(x for x in results if x["mode"] == mode and x["alloc"] == a)
                        for a in ("libmmtier", other))
            failed = [a for a, r in (("libmmtier", me), (other, them)) if r["value"] is None]
            table.append((size, "-" if me["value"] is None else "%.1f" % me["value"],
                          "-" if them["value"] is None else "%.1f" % them["value"],
                          fmt_ratio(better_ratio(me["value"], them["value"], False)),
                          "ok" if not failed else "FAIL (%s)" % " and ".join(failed)))
        print_columns(("size", "libmmtier", other, "ratio", "status"), table)
    out = []
    for r in results:
        je = next((x for x in results if x["mode"] == r["mode"] and x["alloc"] == "jemalloc"), None)
        mi = next((x for x in results if x["mode"] == r["mode"] and x["alloc"] == "mimalloc"), None)
        gl = next((x for x in results if x["mode"] == r["mode"] and x["alloc"] == "glibc"), None)
        out.append({
            "section": "callgrind", "workload": "pair_" + r["mode"], "allocator": r["alloc"],
            "metric": "instructions_per_pair", "unit": "instr", "better": "lower",
            "runs": 1, "runs_ok": 1 if r["value"] is not None else 0,
            "median": r["value"], "ratio_vs_jemalloc": ratio(r["value"], je and je["value"]),
            "ratio_vs_mimalloc": ratio(r["value"], mi and mi["value"]),
            "ratio_vs_glibc": ratio(r["value"], gl and gl["value"]),
            "status": "ok" if r["value"] is not None else "FAIL", "reason": r["reason"],
            "samples": " ".join(str(c) for c in r.get("counts", [])),
        })
    return out


# ---- Google Benchmark loops -----------------------------------------------------


def parse_gbench_csv(path):
    """{benchmark name: ns per item} from Google Benchmark's CSV output."""
    res = {}
    text = read_text(path)
    lines = text.splitlines()
    start = next((i for i, l in enumerate(lines) if l.startswith("name,")), None)
    if start is None:
        return res
    for rec in csv.DictReader(lines[start:]):
        name = rec.get("name", "")
        if rec.get("error_occurred") == "true":
            continue
        ips = rec.get("items_per_second")
        try:
            if ips:
                res[name] = 1e9 / float(ips)
            else:
                res[name] = float(rec["cpu_time"])
        except (ValueError, KeyError, ZeroDivisionError):
            continue
    return res


def run_micro(bench, args):
    mb = os.path.join(bench.build, "bench", "micro", "malloc_bench")
    ab = os.path.join(bench.build, "bench", "micro", "mmtier_api_bench")
    columns = list(bench.allocators) + ["mmtier API"]
    samples = {c: {} for c in columns}
    reasons = {c: [] for c in columns}
    min_time = bench.size["micro_min_time"]
    n = len(columns)
    for rnd in range(args.rounds):
        for col in columns[rnd % n:] + columns[:rnd % n]:
            linked = col == "mmtier API"
            prog = ab if linked else mb
            if not os.access(prog, os.X_OK):
                reasons[col].append("%s not built (libbenchmark-dev missing?)" % prog)
                continue
            alloc = "libmmtier" if linked else col
            missing = None if linked else bench.missing_lib(alloc)
            if missing:
                reasons[col].append(missing)
                continue
            rundir = bench.new_rundir("micro", col.replace(" ", "_"))
            extra = bench.allocator_vars(alloc, rundir, preload=not linked)
            if linked:
                extra["MMTIER_REPORT"] = "off"
            result = os.path.join(rundir, "result.csv")
            argv = [prog, "--benchmark_min_time=%g" % min_time,
                    "--benchmark_out=" + result, "--benchmark_out_format=csv"]
            out, err = os.path.join(rundir, "stdout"), os.path.join(rundir, "stderr")
            try:
                child = bench.spawn(argv, bench.base_env(rundir), extra, rundir, out, err)
                child.wait(bench.timeout * 3)
                why = child.failure(bench.timeout * 3)
            except OSError as e:
                why = "cannot start: %s" % e
            got = parse_gbench_csv(result)
            if why is None and not got:
                why = "no results written"
            if why:
                reasons[col].append(why)
            for name, ns in got.items():
                key = name[len("mmtier_"):] if linked and name.startswith("mmtier_") else name
                if linked and name.startswith(("mmtier_malloc_on", "mmtier_tier_of")):
                    key = name
                samples[col].setdefault(key, []).append(ns)
            log("[micro round %d/%d] %-10s %s" % (rnd + 1, args.rounds, col,
                                                  "%d benchmarks" % len(got) if not why else "FAIL: " + why))
            if not args.keep:
                shutil.rmtree(rundir, ignore_errors=True)
    names = []
    for col in columns:
        for k in samples[col]:
            if k not in names:
                names.append(k)
    print()
    print("Microbenchmarks: ns per item, median of %d round(s) (Google Benchmark, min_time %gs); "
          "lower is better." % (args.rounds, min_time))
    print("The first %d columns run bench/micro/malloc_bench under LD_PRELOAD; 'mmtier API' runs "
          "mmtier_api_bench (linked libmmtier_api.so, same loops, mmtier_* calls)." % len(bench.allocators))
    w0 = max([len("benchmark")] + [len(x) for x in names])
    cw = max([13] + [len(c) + 2 for c in columns])
    print("  " + "benchmark".ljust(w0) + "".join(c.rjust(cw) for c in columns))
    out = []
    for name in names:
        cells = []
        for col in columns:
            vals = samples[col].get(name)
            cells.append(("%.2f" % statistics.median(vals)) if vals else "-")
        print("  " + name.ljust(w0) + "".join(c.rjust(cw) for c in cells))
    for col in columns:
        if reasons[col]:
            print("  %s: FAIL (%s)" % (col, "; ".join(sorted(set(reasons[col])))))
    for other, lib in bench.compare:
        print()
        print("libmmtier against %s: malloc_bench under LD_PRELOAD, ns per item, median and "
              "min-max (width vs median) over %d round(s);" % (other, args.rounds))
        print("ratio > 1: libmmtier is faster (%s / libmmtier)." % other)
        print("  libmmtier: %s" % bench.libmmtier)
        print("  %s: %s" % (other, lib))
        table = []
        for name in names:
            me, them = samples["libmmtier"].get(name), samples[other].get(name)
            if not me and not them:
                continue  # a loop of the API benchmark only
            failed = [a for a, v in (("libmmtier", me), (other, them)) if not v or reasons[a]]
            med = [statistics.median(v) if v else None for v in (me, them)]
            table.append((name, "-" if med[0] is None else "%.2f" % med[0], fmt_spread(me, lambda v: "%.2f" % v),
                          "-" if med[1] is None else "%.2f" % med[1], fmt_spread(them, lambda v: "%.2f" % v),
                          fmt_ratio(better_ratio(med[0], med[1], False)),
                          "ok" if not failed else "FAIL (%s)" % " and ".join(failed)))
        print_columns(("benchmark", "libmmtier", "spread", other, "spread", "ratio", "status"), table)
    for name in names:
        je = samples["jemalloc"].get(name) if "jemalloc" in samples else None
        mi = samples["mimalloc"].get(name) if "mimalloc" in samples else None
        gl = samples["glibc"].get(name) if "glibc" in samples else None
        for col in columns:
            vals = samples[col].get(name)
            med = statistics.median(vals) if vals else None
            out.append({
                "section": "micro", "workload": name, "allocator": col,
                "metric": "ns_per_item", "unit": "ns", "better": "lower",
                "runs": args.rounds, "runs_ok": len(vals or []), "median": med,
                "min": min(vals) if vals else None, "max": max(vals) if vals else None,
                "ratio_vs_jemalloc": ratio(med, je and statistics.median(je)),
                "ratio_vs_mimalloc": ratio(med, mi and statistics.median(mi)),
                "ratio_vs_glibc": ratio(med, gl and statistics.median(gl)),
                "status": "ok" if vals and not reasons[col] else "FAIL",
                "reason": "; ".join(sorted(set(reasons[col]))),
                "samples": " ".join("%.3f" % v for v in (vals or [])),
            })
    return out


# ---- main ---------------------------------------------------------------------


def write_csv(path, records):
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
        wr.writeheader()
        for rec in records:
            wr.writerow({k: ("" if rec.get(k) is None else
                             ("%.6g" % rec[k] if isinstance(rec.get(k), float) else rec[k]))
                         for k in CSV_FIELDS})


def describe_machine():
    cpu = "?"
    try:
        for line in read_text("/proc/cpuinfo").splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = read_text("/proc/meminfo").splitlines()
    total = next((l.split()[1] for l in mem if l.startswith("MemTotal:")), "?")
    return "nproc %d, %s, MemTotal %s kB, kernel %s, load %.2f" % (
        os.cpu_count() or 0, cpu, total, os.uname().release, os.getloadavg()[0])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See docs/BENCHMARKS.md.")
    ap.add_argument("--build", default=None,
                    help="build directory with libmmtier.so and bench/ (default: ./build)")
    ap.add_argument("--lib", default=None, help="libmmtier.so to preload (default: BUILD/libmmtier.so)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of alternation (default 5)")
    ap.add_argument("--size", choices=sorted(SIZES), default="small", help="problem size (default small)")
    ap.add_argument("--only", action="append", default=[],
                    help="run only this workload (repeatable, or comma-separated): " + ", ".join(WORKLOAD_NAMES)
                    + " (build is not in the default set)")
    ap.add_argument("--with-build", action="store_true",
                    help="add the build row (libmmtier built from scratch under each allocator, "
                         "15-40 s a run on 2 cores) to the default set")
    ap.add_argument("--allocators", default=",".join(ALLOCATORS),
                    help="comma-separated subset of " + ",".join(ALLOCATORS))
    ap.add_argument("--csv", default=None, help="write every row to this CSV file")
    ap.add_argument("--callgrind", action="store_true",
                    help="report instructions per malloc+free pair under callgrind instead of the table")
    ap.add_argument("--micro", action="store_true",
                    help="run the Google Benchmark loops under each allocator instead of the table")
    ap.add_argument("--timeout", type=int, default=0, help="seconds per run (default: by size)")
    ap.add_argument("--pmem-dir", default="/dev/shm",
                    help="where the PMem tier files of libmemtier and libmmtier go (default /dev/shm)")
    ap.add_argument("--strict", default="",
                    help="exit 3 if a row of one of these allocators (comma-separated) is FAIL")
    ap.add_argument("--keep", action="store_true", help="keep the work directories")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=PATH",
                    help="also run the libmmtier.so at PATH, as column libmmtier@LABEL with "
                         "libmmtier's environment, and compare libmmtier with it (repeatable)")
    args = ap.parse_args(argv)

    only = [x for item in args.only for x in item.split(",") if x]
    unknown = [x for x in only if x not in WORKLOAD_NAMES]
    if unknown:
        ap.error("unknown workload(s) %s; known: %s" % (", ".join(unknown), ", ".join(WORKLOAD_NAMES)))
    args.only = only
    allocs = [a for a in args.allocators.split(",") if a]
    bad = [a for a in allocs if a not in ALLOCATORS]
    if bad or not allocs:
        ap.error("unknown allocator(s) %s; known: %s" % (", ".join(bad), ", ".join(ALLOCATORS)))
    args.allocators = allocs
    compare = []
    for item in args.compare:
        label, eq, path = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", label) or not path:
            ap.error("--compare %r: expected LABEL=PATH, LABEL of letters, digits, '.', '_', '+', '-'"
                     % item)
        if label in [known for known, _ in compare]:
            ap.error("--compare: label %s given twice" % label)
        if not os.path.isfile(path):
            ap.error("--compare %s: %s is not a file" % (item, path))
        compare.append((label, path))
    if compare and "libmmtier" not in allocs:
        ap.error("--compare compares with libmmtier: keep libmmtier in --allocators")
    args.compare = compare
    strict = [a for a in args.strict.split(",") if a]
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    if args.build is None:
        args.build = os.path.join(os.getcwd(), "build")
    if not os.access(os.path.join(args.build, "bench", "runstat"), os.X_OK):
        ap.error("%s has no bench/runstat: build first (ninja -C %s bench_all)" % (args.build, args.build))
    if not os.path.isdir(args.pmem_dir):
        ap.error("--pmem-dir %s is not a directory" % args.pmem_dir)

    bench = Bench(args)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)

    signal.signal(signal.SIGTERM, on_signal)
    records = []
    failed_strict = []
    try:
        print("mmtier benchmark driver: " + describe_machine())
        print("libmmtier: %s" % bench.libmmtier)
        for name, lib in bench.compare:
            print("%s: %s" % (name, lib))
        if args.callgrind:
            records += run_callgrind(bench, args)
        if args.micro:
            records += run_micro(bench, args)
        if not args.callgrind and not args.micro:
            workloads, rows = run_table(bench, args)
            print_table(bench, workloads, rows)
            records += table_csv_rows(bench, workloads, rows)
        failed_strict = [r for r in records if r["allocator"] in strict and r["status"] != "ok"]
        if args.csv:
            write_csv(args.csv, records)
            print("\nCSV written to %s" % args.csv)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.cleanup()
    if failed_strict:
        log("--strict: %d row(s) of %s failed" % (len(failed_strict), ",".join(strict)))
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
