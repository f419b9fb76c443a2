#!/usr/bin/env python3
"""Snapshot pause against fork() of the same process (issue 15).

The issue's targets: the pause of a snapshot (every thread stopped) of a
process with R GiB resident at most 5 ms + 5 ms per GiB, "i.e. half of what
fork() costs the same process", measured next to fork() of the same process
and next to Redis's own BGSAVE fork (INFO latest_fork_usec); the capsule
complete at >= 1 GB/s of what must be copied.

Part 1, the workload (bench/workloads/snapshot.cc) for R in 0.25, 1 and 2
GiB (and 4 with --large): one malloc'd block of R GiB, every page written,
T workers writing their stripes of it throughout, and in each of --rounds
rounds both methods, each right after every page was written again (fork
first in even rounds, the snapshot first in odd ones): fork() timed around
the call in the parent, and mmtier_snapshot_to() timed around the call
(completion), its pause and bytes read from the capsule's header.  Each
size runs once for each T of --threads (default 2,0: two workers writing as
fast as they can, then none, which leaves the writer child a CPU).  With
--settle S the rounds begin S seconds after the fill (the mover samples and
moves meanwhile, as in a program that has run a while); the table's "huge
pages / anonymous" is the share of the process's anonymous memory on
transparent huge pages just before the snapshot.  With --gap G each round
after the first begins G seconds after the last one (a program snapshotted
now and then: the mover rebuilds meanwhile the huge pages the writer
child's copy-on-write split).  The table gives the pause also apart by
order: snapshot first (odd rounds), and right after the workload's own
fork() and the rewrite of every page (even rounds: that fork froze the PMem
units, whose rewritten pages are then private 4 KiB copies until the mover
re-shares them).  With --compare
LABEL=PATH (repeatable) each size and thread count also runs under that
library, the libraries alternating, one table row each.

Part 2 (--redis): Debian's redis-server under the same libmmtier, filled with
DEBUG POPULATE to about R GiB resident (R GiB / REDIS_KEY_BYTES keys of
REDIS_VALUE bytes); each round, alternating the order,
BGSAVE (INFO latest_fork_usec: Redis's own timing of its fork() call) and
`mmtier snapshot PID --dir DIR --json` (paused_ms; the command's wall time is
the completion), each after FLUSHALL and a fresh DEBUG POPULATE, so that each
finds the data freshly written (its page table entries writable).  Skipped,
saying so, when the build has no `mmtier snapshot PID` or redis-server is not
installed.

Every process runs with LD_PRELOAD=<build>/libmmtier.so, MMTIER_DRAM_RATIO=1:1
and MMTIER_PMEM_PATH in a fresh directory under --pmem-dir (/dev/shm); the
capsules go to a fresh directory under --capsule-dir (/var/tmp, a disk file
system: the PMem tier is on another file system there, so its pages are
copied into the capsule like DRAM's).  Output: the machine, the commands,
one table per part (medians over the rounds and the min .. max), and with
--json FILE every round's figures.  Progress goes to stderr.  Only the Python
standard library.  See docs/BENCHMARKS.md, "Snapshot pause against fork".
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchenv import GiB, MiB, cpu_model, fs_type, meminfo

SYS_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
REDIS_VALUE = 1024            # bytes per DEBUG POPULATE value
REDIS_KEY_BYTES = 1800        # resident bytes per such key under libmmtier (measured: 0.44 GiB for 256 Ki keys)


def log(msg):
    print("snapshot_bench: " + msg, file=sys.stderr, flush=True)


def describe_machine(args):
    m = meminfo()
    la = os.getloadavg()
    return ("nproc %d, %s, MemTotal %.1f GiB, MemAvailable %.1f GiB, kernel %s, load average %.2f %.2f %.2f; "
            "PMem tier on %s (%s), capsules on %s (%s), transparent huge pages: %s" % (
                os.cpu_count() or 0, cpu_model(), m.get("MemTotal", 0) / GiB, m.get("MemAvailable", 0) / GiB,
                os.uname().release, la[0], la[1], la[2], args.pmem_dir, fs_type(args.pmem_dir),
                args.capsule_dir, fs_type(args.capsule_dir), thp_mode()))


def thp_mode():
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            text = f.read()
        return text[text.index("[") + 1:text.index("]")]
    except (OSError, ValueError):
        return "?"


def base_env(home, pmem_dir, lib):
    return {"PATH": SYS_PATH, "HOME": home, "LC_ALL": "C", "TMPDIR": home,
            "LD_PRELOAD": lib, "MMTIER_DRAM_RATIO": "1:1", "MMTIER_PMEM_PATH": pmem_dir}


def env_text(env):
    return " ".join("%s=%s" % (k, env[k]) for k in ("LD_PRELOAD", "MMTIER_DRAM_RATIO", "MMTIER_PMEM_PATH"))


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(v, digits=1):
    return "-" if v is None else "%.*f" % (digits, v)


def target_ms(gib):
    return 5.0 + 5.0 * gib


# ---------------------------------------------------------------- part 1


def run_workload(args, gib, threads, work, lib):
    pmem = tempfile.mkdtemp(prefix="snapbench-pmem-", dir=args.pmem_dir)
    caps = tempfile.mkdtemp(prefix="snapbench-caps-", dir=args.capsule_dir)
    env = base_env(work, pmem, lib)
    argv = [args.workload, "--gib", "%g" % gib, "--threads", str(threads), "--rounds", str(args.rounds),
            "--dir", caps]
    if args.write_mbps:
        argv += ["--write-mbps", "%g" % args.write_mbps]
    if args.settle:
        argv += ["--settle", "%g" % args.settle]
    if args.gap:
        argv += ["--gap", "%g" % args.gap]
    log("%s %s" % (env_text(env), " ".join(argv)))
    rows, err = [], None
    try:
        r = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True,
                           timeout=args.timeout)
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
        if r.returncode != 0:
            err = "exit status %d: %s" % (r.returncode, r.stderr.strip()[-300:])
    except subprocess.TimeoutExpired:
        err = "timed out after %d s" % args.timeout
    finally:
        left = os.listdir(caps)
        if left:
            err = (err + "; " if err else "") + "left in the capsule directory: %s" % left
        shutil.rmtree(caps, ignore_errors=True)
        shutil.rmtree(pmem, ignore_errors=True)
    for row in rows:
        log("  %.2f GiB, %d threads, round %d: fork %.1f ms (cpu %.1f), pause %.1f ms, complete %.0f ms, "
            "%.2f GB/s, writer cpu %.0f ms" % (gib, threads, row["round"], row["fork_ms"], row["fork_cpu_ms"],
                                              row["pause_ms"], row["complete_ms"], row["gbps"], row["writer_cpu_ms"]))
    return rows, err


def summarize(rows, key):
    xs = [r[key] for r in rows if r.get(key) is not None]
    return (med(xs), min(xs), max(xs)) if xs else (None, None, None)


def print_workload_table(results):
    print("| lib | R (GiB) | writing threads | huge pages / anonymous | fork ms, median (min .. max) | fork CPU ms "
          "| pause ms, median (min .. max) | pause ms, snapshot first | pause ms, after fork() "
          "| snapshot caller CPU ms | pause / fork | target 5+5R ms | completion ms, median (min .. max) | GB/s "
          "| writer CPU ms | GB per writer CPU-second | written / resident | DRAM written / resident "
          "| PMem written / resident | PMem linked / resident |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, gib, threads, rows, err in results:
        if not rows:
            print("| %s | %g | %d | FAIL: %s | | | | | | | | | | | | | | | | |" % (label, gib, threads, err))
            continue
        huge = med([r.get("anon_huge_bytes", 0) / r["rss_anon_bytes"] for r in rows if r.get("rss_anon_bytes")])
        f, fmin, fmax = summarize(rows, "fork_ms")
        p, pmin, pmax = summarize(rows, "pause_ms")
        # The workload takes the snapshot first in odd rounds, right after its
        # own fork() (which froze the PMem units) and the rewrite in even ones.
        p_first = med([r["pause_ms"] for r in rows if r["round"] % 2 == 1])
        p_after = med([r["pause_ms"] for r in rows if r["round"] % 2 == 0])
        c, cmin, cmax = summarize(rows, "complete_ms")
        gcpu = med([r["mem_bytes"] / r["writer_cpu_ms"] / 1e6 for r in rows if r.get("writer_cpu_ms")])
        wr = med([r["mem_bytes"] / r["rss_bytes"] for r in rows if r.get("rss_bytes")])
        # Per tier: DRAM is the anonymous resident memory, PMem the shared
        # (the tier's file pages); what the capsule links is PMem, what it
        # writes beyond the DRAM resident is PMem copied.
        dram = med([min(r["mem_bytes"], r["rss_anon_bytes"]) / r["rss_anon_bytes"]
                    for r in rows if r.get("rss_anon_bytes")])
        pm_w = med([max(0, r["mem_bytes"] - r["rss_anon_bytes"]) / r["rss_shmem_bytes"]
                    for r in rows if r.get("rss_shmem_bytes")])
        pm_l = med([r.get("pmem_linked_bytes", 0) / r["rss_shmem_bytes"] for r in rows if r.get("rss_shmem_bytes")])
        t = target_ms(gib)
        print("| %s | %g | %d | %s | %s (%s .. %s) | %s | %s (%s .. %s) | %s | %s | %s | %.2f | %.2f: %s "
              "| %s (%s .. %s) | %.2f | %s | %s | %s | %s | %s | %s |" % (
                  label, gib, threads, fmt(huge, 2), fmt(f), fmt(fmin), fmt(fmax),
                  fmt(summarize(rows, "fork_cpu_ms")[0]), fmt(p),
                  fmt(pmin), fmt(pmax), fmt(p_first), fmt(p_after), fmt(summarize(rows, "caller_cpu_ms")[0]), p / f if f else 0, t,
                  "meets" if p <= t else "misses (%.1fx)" % (p / t), fmt(c, 0), fmt(cmin, 0), fmt(cmax, 0),
                  summarize(rows, "gbps")[0], fmt(summarize(rows, "writer_cpu_ms")[0], 0), fmt(gcpu, 2),
                  fmt(wr, 2), fmt(dram, 2), fmt(pm_w, 2), fmt(pm_l, 2)))
        if err:
            print("| %s | %g | %d | %s | | | | | | | | | | | | | | | | |" % (label, gib, threads, err))


# ---------------------------------------------------------------- part 2: redis


def snapshot_cli_works(cli):
    if not cli or not os.access(cli, os.X_OK):
        return False, "no mmtier command at %s" % cli
    r = subprocess.run([cli, "snapshot", "--help"], capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or "snapshot PID" not in r.stdout:
        return False, "%s has no `snapshot PID` (exit %d)" % (cli, r.returncode)
    return True, None


def redis_populate(conn, gib):
    keys = int(gib * GiB / REDIS_KEY_BYTES)
    conn.call("FLUSHALL", "SYNC")
    conn.call("DEBUG", "POPULATE", keys, "key", REDIS_VALUE)
    return keys


def redis_bgsave(conn, srv, timeout):
    from fork_redis import wait_bgsave
    forks = int(conn.info("stats").get("total_forks", 0))
    conn.call("BGSAVE")
    ok, _secs, status = wait_bgsave(conn, srv, forks, timeout)
    if not ok:
        raise RuntimeError("BGSAVE: %s" % status)
    return int(conn.info("stats")["latest_fork_usec"]) / 1000.0


def redis_snapshot(cli, pid, caps, name, env, timeout):
    t0 = time.monotonic()
    r = subprocess.run([cli, "snapshot", str(pid), "--name", name, "--dir", caps, "--json"], env=env,
                       capture_output=True, text=True, timeout=timeout)
    wall = (time.monotonic() - t0) * 1000.0
    if r.returncode != 0:
        raise RuntimeError("mmtier snapshot: exit %d: %s" % (r.returncode, r.stderr.strip()[-300:]))
    out = json.loads(r.stdout)
    shutil.rmtree(out["path"])
    return out["paused_ms"], wall, out.get("memory_bytes")


def rss_of(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def run_redis(args, gib, work, cli, cli_ok):
    from fork_redis import Conn, start_redis, stop_redis
    pmem = tempfile.mkdtemp(prefix="snapbench-pmem-", dir=args.pmem_dir)
    caps = tempfile.mkdtemp(prefix="snapbench-caps-", dir=args.capsule_dir)
    rundir = tempfile.mkdtemp(prefix="snapbench-redis-", dir=args.capsule_dir)
    env = base_env(work, pmem, args.lib)
    cli_env = {"PATH": SYS_PATH, "HOME": work, "LC_ALL": "C"}
    rows, err = [], None
    srv = None
    try:
        srv, port = start_redis(rundir, env, ["--save", ""], "redis")
        conn = Conn(port, timeout=args.timeout)
        log("redis-server pid %d under %s; DEBUG POPULATE %d keys of %d B per measurement" % (
            srv.pid, env_text(env), int(gib * GiB / REDIS_KEY_BYTES), REDIS_VALUE))
        for rnd in range(args.rounds):
            row = {"round": rnd, "gib": gib}
            order = ["bgsave", "snapshot"] if rnd % 2 == 0 else ["snapshot", "bgsave"]
            for what in order:
                if what == "snapshot" and not cli_ok:
                    continue
                row["keys"] = redis_populate(conn, gib)
                row["rss_bytes"] = rss_of(srv.pid)
                row["used_memory"] = int(conn.info("memory")["used_memory"])
                if what == "bgsave":
                    row["fork_ms"] = redis_bgsave(conn, srv, args.timeout)
                else:
                    row["pause_ms"], row["complete_ms"], row["mem_bytes"] = redis_snapshot(
                        cli, srv.pid, caps, "redis-%d" % rnd, cli_env, args.timeout)
            log("  redis %.2f GiB round %d: fork %s ms, pause %s ms, complete %s ms" % (
                gib, rnd, fmt(row.get("fork_ms")), fmt(row.get("pause_ms")), fmt(row.get("complete_ms"), 0)))
            rows.append(row)
        conn.close()
    except Exception as e:  # a failed server or command ends this size's rows, with the reason
        err = "%s: %s" % (type(e).__name__, e)
    finally:
        if srv is not None:
            stop_redis(srv, port)
        shutil.rmtree(caps, ignore_errors=True)
        shutil.rmtree(rundir, ignore_errors=True)
        shutil.rmtree(pmem, ignore_errors=True)
    return rows, err


def print_redis_table(results, cli_ok, cli_why):
    if not cli_ok:
        print("mmtier snapshot PID: not measured (%s); only Redis's fork is shown." % cli_why)
        print()
    print("| R (GiB) | keys | RSS at the measurement | BGSAVE fork ms (latest_fork_usec), median (min .. max) "
          "| mmtier snapshot pause ms, median (min .. max) | pause / fork | target 5 + 5 x RSS ms "
          "| completion ms (the command's wall time), median | GB/s, median |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for gib, rows, err in results:
        if rows:
            f, fmin, fmax = summarize(rows, "fork_ms")
            p, pmin, pmax = summarize(rows, "pause_ms")
            c = summarize(rows, "complete_ms")[0]
            rss = med([r["rss_bytes"] for r in rows])
            g = med([r["mem_bytes"] / r["complete_ms"] / 1e6 for r in rows
                     if r.get("mem_bytes") and r.get("complete_ms")])
            print("| %g | %d | %.2f GiB | %s (%s .. %s) | %s | %s | %.2f | %s | %s |" % (
                gib, rows[0]["keys"], rss / GiB, fmt(f), fmt(fmin), fmt(fmax),
                "%s (%s .. %s)" % (fmt(p), fmt(pmin), fmt(pmax)) if p is not None else "not measured",
                "%.2f" % (p / f) if p is not None and f else "-", target_ms(rss / GiB), fmt(c, 0), fmt(g, 2)))
        if err:
            print("| %g | FAIL after %d rounds: %s | | | | | | | |" % (gib, len(rows), err))


# ---------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default="build", help="build directory (default ./build)")
    ap.add_argument("--lib", help="libmmtier.so to preload (default BUILD/libmmtier.so)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per size, each measuring both (default 5)")
    ap.add_argument("--threads", default="2,0",
                    help="writing worker threads of the workload, comma-separated: each size runs once with "
                         "each (default 2,0)")
    ap.add_argument("--write-mbps", type=float, default=0,
                    help="cap on each worker's writing, MiB of pages a second (default 0: none)")
    ap.add_argument("--sizes", default="0.25,1,2", help="GiB, comma-separated (default 0.25,1,2)")
    ap.add_argument("--large", action="store_true", help="add 4 GiB")
    ap.add_argument("--pmem-dir", default="/dev/shm", help="where the PMem tier's directory is made")
    ap.add_argument("--capsule-dir", default="/var/tmp", help="where the capsule directory is made")
    ap.add_argument("--redis", action="store_true", help="also redis-server: BGSAVE against mmtier snapshot PID")
    ap.add_argument("--no-workload", action="store_true", help="skip part 1 (with --redis)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per workload run or Redis command")
    ap.add_argument("--json", help="write every round's figures to this file")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=PATH",
                    help="also run the workload under the libmmtier.so at PATH, as LABEL (repeatable); the "
                         "libraries alternate for each size and thread count (part 1 only)")
    ap.add_argument("--settle", type=float, default=0,
                    help="seconds the workload waits after its fill before the first round, the mover at work "
                         "(default 0)")
    ap.add_argument("--gap", type=float, default=0,
                    help="seconds between two rounds, the workers writing and the mover at work (default 0)")
    args = ap.parse_args()

    args.build = os.path.abspath(args.build)
    args.lib = os.path.abspath(args.lib or os.path.join(args.build, "libmmtier.so"))
    args.workload = os.path.join(args.build, "bench", "workloads", "snapshot")
    cli = os.path.join(args.build, "mmtier")
    sizes = [float(s) for s in args.sizes.split(",") if s]
    thread_counts = [int(t) for t in args.threads.split(",") if t]
    if args.large and 4.0 not in sizes:
        sizes.append(4.0)
    for path, what in ((args.lib, "libmmtier.so"), (args.workload, "the snapshot workload")):
        if not os.path.exists(path):
            ap.error("%s not found at %s (build first)" % (what, path))

    work = tempfile.mkdtemp(prefix="snapbench-home-")
    out = {"machine": describe_machine(args), "workload": [], "redis": []}
    try:
        print("Machine: " + out["machine"])
        print("Command: python3 bench/snapshot_bench.py " + " ".join(sys.argv[1:]))
        print()
        if not args.no_workload:
            libs = [("libmmtier", args.lib)]
            for c in args.compare:
                label, _, path = c.partition("=")
                if not label or not os.path.exists(path):
                    ap.error("--compare %s: expected LABEL=PATH of an existing library" % c)
                libs.append(("libmmtier@" + label, os.path.abspath(path)))
            results = []
            for gib in sizes:
                for threads in thread_counts:
                    # Alternating: the main library first in odd configurations, last in even ones.
                    order = libs if len(results) // len(libs) % 2 == 0 else libs[::-1]
                    for label, lib in order:
                        rows, err = run_workload(args, gib, threads, work, lib)
                        for r in rows:
                            r["lib"] = label
                        results.append((label, gib, threads, rows, err))
                        out["workload"] += rows
            results.sort(key=lambda x: (x[1], x[2], [l for l, _ in libs].index(x[0])))
            print("Workload: one malloc'd block of R GiB, T writing threads%s, %d rounds, medians; "
                  "%s bench/workloads/snapshot --gib R --threads T --rounds %d --dir DIR%s" % (
                      " (%g MiB/s each)" % args.write_mbps if args.write_mbps else "", args.rounds,
                      env_text(base_env(work, os.path.join(args.pmem_dir, "DIR"), args.lib)), args.rounds,
                      (" --settle %g" % args.settle if args.settle else "") +
                      (" --gap %g" % args.gap if args.gap else "")))
            for label, lib in libs[1:]:
                print("%s: %s" % (label, lib))
            print()
            print_workload_table(results)
            print()
        if args.redis:
            cli_ok, cli_why = snapshot_cli_works(cli)
            if not (os.access("/usr/bin/redis-server", os.X_OK)):
                print("Redis: not measured (redis-server is not installed: apt-get install -y redis-server "
                      "redis-tools)")
            else:
                results = []
                for gib in sizes:
                    rows, err = run_redis(args, gib, work, cli, cli_ok)
                    results.append((gib, rows, err))
                    out["redis"] += rows
                print("Redis: redis-server --save '' under %s, DEBUG POPULATE of %d B values, %d rounds, "
                      "medians; each measurement after FLUSHALL and a fresh DEBUG POPULATE (keys: R GiB / %d B)" % (
                          env_text(base_env(work, os.path.join(args.pmem_dir, "DIR"), args.lib)), REDIS_VALUE,
                          args.rounds, REDIS_KEY_BYTES))
                print()
                print_redis_table(results, cli_ok, cli_why)
                print()
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
