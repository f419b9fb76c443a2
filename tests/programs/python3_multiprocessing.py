"""A multiprocessing Pool over a large parent heap, under libmmtier or not.

Run by python3_multiprocessing.sh, which asserts on what this writes.  The
parent builds a heap of about 230 MiB (5 bytearrays of 40 MiB through malloc,
1 million int objects in pymalloc's mmap'd arenas), starts a Pool of 2
workers (fork start method, maxtasksperchild None) and rewrites its heap
while each worker rewrites its inherited copy: every page of the heap is
written on each side of the fork.  Each process then goes on rewriting one
blob at a time and, under libmmtier, reads its own figures through the C API
after each until its PMem data is back on PMem (the pages the fork froze and
the writes copied to DRAM re-shared, frozen-copied bytes and DRAM share of
resident under the bounds) or a deadline passes.  The workers live at least
MP_MIN_LIFE seconds after the fork, and until the parent's figures have
settled with the pool alive (its children still map its PMem file); the
parent then settles once more after the pool is gone, just before exit.

Every process finally compares its whole heap with contents computed again
from scratch.  stdout has only what depends neither on timing nor on
libmmtier (checksums, verdicts), the same with and without it.  Under
libmmtier the figures and a timeline of every process go, as JSON, to the
file named by MP_FIGURES, and each worker writes its own mmtier report (a
pool worker ends with os._exit, which skips the report at exit) into
MP_REPORT_DIR.

Environment (all optional):
  MP_FIGURES       where to write the figures (JSON); nothing written if unset
  MP_REPORT_DIR    where the workers write their mmtier reports
  MP_DRAM_PCT_MAX  DRAM share of resident bytes (percent) to wait for (30)
  MP_COPIED_MAX    frozen-copied bytes to wait for (16 MiB)
  MP_DEADLINE      seconds a process waits for them once its fixed rewrite
                   is done (20)
  MP_MIN_LIFE      seconds every worker lives at least after the fork (10)
"""

import ctypes
import hashlib
import json
import multiprocessing as mp
import os
import random
import sys
import time

MIB = 1 << 20
N_BLOBS = 5
BLOB_BYTES = 40 * MIB  # 5 x 40 MiB = 200 MiB through malloc
N_INTS = 1_000_000     # about 40 MiB of int objects (pymalloc arenas) and list

DRAM_PCT_MAX = float(os.environ.get("MP_DRAM_PCT_MAX", "30"))
COPIED_MAX = int(os.environ.get("MP_COPIED_MAX", str(16 * MIB)))
DEADLINE = float(os.environ.get("MP_DEADLINE", "20"))
MIN_LIFE = float(os.environ.get("MP_MIN_LIFE", "10"))


# --- the C API of libmmtier (include/mmtier/mmtier.h), when preloaded -------

class Stats(ctypes.Structure):
    _fields_ = [
        ("unit_size", ctypes.c_size_t),
        ("units", ctypes.c_size_t * 2),
        ("peak_units", ctypes.c_size_t * 2),
        ("resident_bytes", ctypes.c_size_t * 2),
        ("limit_bytes", ctypes.c_size_t * 2),
        ("fallbacks", ctypes.c_size_t),
        ("mapped_mmap_bytes", ctypes.c_size_t),
        ("forks", ctypes.c_size_t),
    ]


UNKNOWN = (1 << 64) - 1  # a field the library does not fill keeps this


class TieringStats(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_size_t),
        ("running", ctypes.c_int),
        ("scan_interval_ns", ctypes.c_uint64),
        ("scans", ctypes.c_uint64),
        ("promotions", ctypes.c_uint64),
        ("demotions", ctypes.c_uint64),
        ("migrations_failed", ctypes.c_uint64),
        ("bytes_migrated", ctypes.c_uint64),
        ("samples", ctypes.c_uint64),
        ("samples_touched", ctypes.c_uint64),
        ("tracking_faults", ctypes.c_uint64),
        ("cpu_ns", ctypes.c_uint64),
        ("dram_budget_bytes", ctypes.c_uint64),
        ("heat_histogram", ctypes.c_uint64 * 8),
        ("map_count_holds", ctypes.c_uint64),
        ("failed_errno", ctypes.c_int32 * 4),
        ("failed_count", ctypes.c_uint64 * 4),
        ("failed_other", ctypes.c_uint64),
        ("frozen_bytes", ctypes.c_uint64),
        ("frozen_copied_bytes", ctypes.c_uint64),
        ("reshares", ctypes.c_uint64),
        ("reshare_bytes", ctypes.c_uint64),
        ("reshare_stops", ctypes.c_uint64),
        ("reshare_pause_max_ns", ctypes.c_uint64),
        ("reshare_stop_refusals", ctypes.c_uint64),
        ("reshare_failed", ctypes.c_uint64),
    ]


def mmtier_api():
    """The preloaded library's functions, or None without libmmtier."""
    lib = ctypes.CDLL(None)
    try:
        get_stats, get_tiering = lib.mmtier_get_stats, lib.mmtier_get_tiering_stats
        report = lib.mmtier_report
    except AttributeError:
        return None
    for f in (get_stats, get_tiering, report):
        f.restype = ctypes.c_int
    return get_stats, get_tiering, report


API = mmtier_api()


def figures(role, t_fork):
    """This process's figures now.  mmtier_get_stats measures the resident
    bytes, which also refreshes frozen_copied_bytes, so it goes first."""
    get_stats, get_tiering, _ = API
    st = Stats()
    if get_stats(ctypes.byref(st)) != 0:
        raise OSError("mmtier_get_stats failed")
    ts = TieringStats()
    for name, _ in TieringStats._fields_[1:]:
        if not name.startswith(("heat_", "failed_")) and name != "running":
            setattr(ts, name, UNKNOWN)
    ts.size = ctypes.sizeof(TieringStats)
    if get_tiering(ctypes.byref(ts)) != 0:
        raise OSError("mmtier_get_tiering_stats failed")
    dram, pmem = st.resident_bytes[0], st.resident_bytes[1]
    f = {
        "role": role,
        "pid": os.getpid(),
        "t_since_fork": round(time.monotonic() - t_fork, 2),
        "dram_resident": dram,
        "pmem_resident": pmem,
        "dram_pct": round(100.0 * dram / (dram + pmem), 1) if dram + pmem else 0.0,
        "dram_units": st.units[0],
        "pmem_units": st.units[1],
        "forks": st.forks,
        "mover_running": ts.running,
        "scans": ts.scans,
    }
    for name in ("frozen_bytes", "frozen_copied_bytes", "reshares", "reshare_bytes", "reshare_stops",
                 "reshare_pause_max_ns", "reshare_stop_refusals", "reshare_failed"):
        v = getattr(ts, name)
        f[name] = None if v == UNKNOWN else v  # None: a library without re-sharing
    return f


def settled(f):
    """The condition every process waits for: its PMem data back on PMem."""
    return (f["dram_pct"] <= DRAM_PCT_MAX and f["frozen_copied_bytes"] is not None
            and f["frozen_copied_bytes"] <= COPIED_MAX and (f["reshares"] or 0) > 0)


def write_own_report(path):
    """The library's exit report of this process, written now: a pool worker
    ends with os._exit, which skips the library's report at exit."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        API[2](fd)
    finally:
        os.close(fd)


# --- the heap ----------------------------------------------------------------

def shift_table(d):
    return bytes((b + d) & 255 for b in range(256))


def initial_blob(i):
    return bytearray(random.Random(1000 + i).randbytes(MIB)) * (BLOB_BYTES // MIB)


def initial_int(j):
    return j * 7919 + 1_000_003  # > 256: every int is an object of its own


class Heap:
    """Blobs and ints plus the shifts applied to them since they were built,
    so that their expected contents can be computed again from scratch."""

    def __init__(self):
        self.blobs = [initial_blob(i) for i in range(N_BLOBS)]
        self.blob_shift = [0] * N_BLOBS
        self.ints = [initial_int(j) for j in range(N_INTS)]
        self.int_shift = 0

    def shift_blob(self, i, d):
        b, table = self.blobs[i], shift_table(d)
        for o in range(0, BLOB_BYTES, MIB):  # writes every page of the blob
            b[o:o + MIB] = b[o:o + MIB].translate(table)
        self.blob_shift[i] = (self.blob_shift[i] + d) & 255

    def shift_ints(self, d):
        # New int objects for all of them (the old ones freed), written into
        # the list's own array: every page of both is written.
        self.ints[:] = [x + d for x in self.ints]
        self.int_shift += d

    def rewrite_all(self, d):
        for i in range(N_BLOBS):
            self.shift_blob(i, d)
        self.shift_ints(d)

    def digest(self):
        h = hashlib.sha256()
        for b in self.blobs:
            h.update(hashlib.sha256(b).digest())
        h.update(str(sum(self.ints)).encode())
        return h.hexdigest()[:16]

    def verify(self):
        """Compares the heap with its expected contents built again; the
        names of what differs."""
        bad = []
        for i, b in enumerate(self.blobs):
            block = random.Random(1000 + i).randbytes(MIB).translate(shift_table(self.blob_shift[i]))
            if any(b[o:o + MIB] != block for o in range(0, BLOB_BYTES, MIB)):
                bad.append(f"blob{i}")
        if any(x != initial_int(j) + self.int_shift for j, x in enumerate(self.ints)):
            bad.append("ints")
        return bad


HEAP = None
BARRIER = None
PARENT_SETTLED = None
T_FORK = 0.0
EVENTS = []  # this process's timeline: [seconds since the fork, CPU seconds, what]


def event(what):
    EVENTS.append([round(time.monotonic() - T_FORK, 2), round(time.process_time(), 2), what])


def keep_writing(heap, role, step, until, deadline, hold=lambda: False):
    """Rewrites one blob per step, and under libmmtier reads this process's
    figures after each, until until(figures, seconds since the fork) holds
    or the deadline passes (and hold() no longer does; a minute later in any
    case).  Returns the last figures (None without libmmtier) and the next
    step."""
    f = None
    while True:
        heap.shift_blob(step % N_BLOBS, 1)
        step += 1
        now = time.monotonic()
        f = figures(role, T_FORK) if API is not None else None
        if until(f, now - T_FORK) or (now >= deadline and not hold()) or now >= deadline + 60:
            break
        time.sleep(0.1)
    if f is not None:
        f["settled"] = settled(f)
    event(f"wrote {step} blobs, {'settled' if f is None or f['settled'] else 'deadline passed'}")
    return f, step


def worker(k):
    """Pool task k: rewrite the inherited heap (a fixed part whose checksum is
    printed), then go on writing until this worker's figures and the
    parent's have settled; verify the heap, return the figures."""
    EVENTS.clear()
    event("task started")
    start = figures(f"worker{k}, task started", T_FORK) if API is not None else None
    BARRIER.wait(timeout=60)  # both workers run a task at once: one each
    heap = HEAP
    for i in range(N_BLOBS):
        heap.shift_blob(i, 11 + 2 * k)
    event("blobs rewritten")
    heap.shift_ints(11 + 2 * k)
    event("ints rewritten")
    digest = heap.digest()
    event("heap rewritten")
    f, _ = keep_writing(
        heap, f"worker{k}", 0,
        lambda f, t: t >= MIN_LIFE and PARENT_SETTLED.is_set() and (f is None or settled(f)),
        time.monotonic() + DEADLINE, hold=lambda: not PARENT_SETTLED.is_set())
    bad = heap.verify()
    event("heap verified")
    if f is not None:
        f["events"] = EVENTS
        f["frozen_bytes_at_start"] = start["frozen_bytes"]
        if os.environ.get("MP_REPORT_DIR"):
            write_own_report(os.path.join(os.environ["MP_REPORT_DIR"], f"report.worker{k}.{os.getpid()}"))
    return {"k": k, "pid": os.getpid(), "digest": digest, "bad": bad, "figures": f}


def main():
    global HEAP, BARRIER, PARENT_SETTLED, T_FORK
    t0 = time.monotonic()
    HEAP = Heap()
    print("parent heap", HEAP.digest(), flush=True)
    ctx = mp.get_context("fork")
    BARRIER = ctx.Barrier(2)
    PARENT_SETTLED = ctx.Event()
    t_built = time.monotonic()
    T_FORK = time.monotonic()
    pool = ctx.Pool(2, maxtasksperchild=None)
    pids = sorted(p.pid for p in pool._pool)
    start = figures("parent, after fork", T_FORK) if API is not None else None
    async_res = pool.map_async(worker, [0, 1], chunksize=1)
    # The parent rewrites its heap while the workers rewrite theirs...
    event("pool started")
    HEAP.rewrite_all(100)
    print("parent rewritten", HEAP.digest(), flush=True)
    event("heap rewritten")
    # ... and goes on writing while the pool lives, until its own figures
    # settle with the workers still holding its PMem file (then the workers
    # may finish), and the workers are done.
    step = 0
    alive = None
    deadline = time.monotonic() + DEADLINE
    while not async_res.ready():
        HEAP.shift_blob(step % N_BLOBS, 1)
        step += 1
        if not PARENT_SETTLED.is_set():
            alive = figures("parent, pool alive", T_FORK) if API is not None else None
            if alive is None or settled(alive) or time.monotonic() >= deadline:
                if alive is not None:
                    alive["settled"] = settled(alive)
                    alive["frozen_bytes_at_start"] = start["frozen_bytes"]
                PARENT_SETTLED.set()
                event(f"pool alive: {'settled' if alive is None or alive['settled'] else 'deadline passed'}")
        async_res.wait(0.1)
    results = sorted(async_res.get(timeout=1), key=lambda r: r["k"])
    pool.close()
    pool.join()
    t_pool_gone = time.monotonic()
    event("pool gone")
    ok = True
    for res in results:
        print(f"worker{res['k']} digest", res["digest"],
              "verify", "ok" if not res["bad"] else "BAD " + ",".join(res["bad"]))
        ok &= not res["bad"]
    distinct = sorted(r["pid"] for r in results) == pids and len(set(pids)) == 2
    print("workers distinct pool processes", distinct)
    # The workers gone: the parent writes on until its figures settle again.
    f, _ = keep_writing(HEAP, "parent", step, lambda f, t: f is None or settled(f), t_pool_gone + DEADLINE)
    bad = HEAP.verify()
    print("parent verify", "ok" if not bad else "BAD " + ",".join(bad))
    event("heap verified")
    ok &= not bad and distinct
    if API is not None and os.environ.get("MP_FIGURES"):
        f["events"] = EVENTS
        f["frozen_bytes_at_start"] = start["frozen_bytes"]
        out = {
            "parent": f,
            "parent_pool_alive": alive,
            "workers": [r["figures"] for r in results],
            "seconds": {"build": round(t_built - t0, 1), "pool": round(t_pool_gone - T_FORK, 1),
                        "total": round(time.monotonic() - t0, 1)},
            "limits": {"dram_pct_max": DRAM_PCT_MAX, "copied_max": COPIED_MAX, "deadline": DEADLINE,
                       "min_life": MIN_LIFE},
        }
        with open(os.environ["MP_FIGURES"], "w") as fh:
            json.dump(out, fh, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
