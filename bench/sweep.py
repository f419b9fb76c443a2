#!/usr/bin/env python3
"""Tiering at scale: the GUPS hot-set workload under libmmtier over a grid of cells.

Does the time to find the hot set, and the background CPU, stay flat as the
footprint grows?  Each cell runs bench/workloads/gups once under libmmtier
(and once under each --compare build, interleaved cell by cell) with:

  footprint   one malloc'd block, written once before timing (gups does it)
  hot set     a share of the footprint taking 90 % of the updates
  budget      MMTIER_DRAM_LIMIT, a multiple of the hot set
  skew        uniform, or zipf:S over the hot set's 4 KiB pages (gups --skew)
  position    where the hot set lies: start, middle or end of the block (or
              default: gups's 3/4, moved to 1/4); it moves half-way through
              to the start (from middle or end) or the end (from start)
  fs          the PMem directory's file system: tmpfs (/dev/shm) or ext4
              (BUILD/pmem-disk when it is on a disk, else /var/tmp); a fresh
              directory per run, removed after it

and prints one table row per run: what the cell is, then the seconds to 95 %
of the hot set on DRAM after the start and after the move, the hot set's
DRAM share at each phase's end, the steady-state CPU of mmtier's threads and
of gups's idle control thread per phase, the update rate, the promotions,
demotions and PMem samples per scan from the library's exit report
(MMTIER_REPORT=stderr, its "mover:" line), and PASS or MISS against the
targets (95 % within 5 s of the start and of the move, background CPU at
most 2 % of a core in both steady states).  A cell whose footprint and PMem
do not fit in the free memory (or disk, for ext4) is skipped, with the
reason.  Progress goes to stderr, the table to stdout.

Only the Python standard library is used.  See docs/BENCHMARKS.md, "Tiering
at scale: the sweep".
"""

import argparse
import csv
import itertools
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchenv import GiB, KiB, MiB, TiB, cpu_model, fs_type, meminfo, parse_env, parse_size
UNIT = 2 * MiB                 # mmtier's unit
WARM_SLOTS = 256 * MiB         # PMem storage the library may hold for units just moved up
HOT_SHARE = 0.9                # gups --hot-share (its default)
STARTUP_GUESS = 8 * MiB        # the library's own DRAM at start-up (the exit report has the real figure)

DEFAULTS = dict(footprints="0.5G,2G,8G,16G", hot_pcts="1,5,20", budgets="1.5,4",
                skews="uniform,zipf:0.99", positions="start,middle,end", fs="tmpfs,ext4")
# The table of the issue: (footprint, hot set, budget as a multiple of it).
ISSUE_CELLS = [("1.5G", "96M", 2), ("4G", "128M", 3), ("8G", "256M", 3)]
MOVES = {"start": "end", "middle": "start", "end": "start", "default": None}
POSITIONS = list(MOVES)
FS_KINDS = ("tmpfs", "ext4")

# Rough rates for the time estimate (this 2-vCPU VM, docs/BENCHMARKS.md):
# the fill writes the footprint through first-touch faults, the replay
# after the run redoes every update without memory traffic.
FILL_BYTES_PER_S = {"tmpfs": 200 * MiB, "ext4": 120 * MiB}
UPDATES_PER_S = {"tmpfs": 25e6, "ext4": 1.2e6}
REPLAY_PER_S = 120e6

NUM = r"\d+(?:\.\d+)?"
INTERVAL = re.compile(r"^\s+(%s)\s+(%s)\s+(%s|n/a)\s+(%s|n/a)\s+(%s|n/a)\s+(%s|n/a)\s+([01])$"
                      % ((NUM,) * 6))
SUMMARY = re.compile(r"^SUMMARY phase ([01]) \(hot set at offset .*?, t=(%s)\.\.(%s) s\): (.*)$" % (NUM, NUM))
MOVER = re.compile(r"mover: (\d+) scans, (\d+) promotions, (\d+) demotions, (\d+) failed, (.+?) moved, "
                   r"(\d+) of (\d+) samples touched, (%s) s CPU" % NUM)
REPORT_HEAD = re.compile(r"^mmtier report \(pid (\d+)\)")
STARTUP = re.compile(r"start-up and explicit: DRAM (%s) (B|KiB|MiB|GiB|TiB)," % NUM)

child = None                   # the gups process running now (killed on interrupt)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- sizes


def fmt_size(n):
    for mult, suffix in ((TiB, "T"), (GiB, "G"), (MiB, "M"), (KiB, "K")):
        if n >= mult:
            v = n / mult
            if abs(v - round(v)) < 1e-9:
                return "%d%s" % (round(v), suffix)
            if n >= 10 * mult or mult == KiB:
                return "%.0f%s" % (v, suffix)
            return "%.1f%s" % (v, suffix)
    return "%dB" % n


def fmt_mult(x):
    return ("%g" % x) + "x"


def split_list(text, kind):
    items = [x.strip() for x in text.split(",") if x.strip()]
    if not items:
        raise ValueError("empty list for %s" % kind)
    return items


# ---------------------------------------------------------------- cells

class Cell:
    def __init__(self, footprint, hot, budget_mult, skew, position, fs):
        self.footprint = footprint
        self.hot = hot
        self.budget_mult = budget_mult
        self.budget = int(round(hot * budget_mult / KiB)) * KiB
        self.skew = skew
        self.position = position
        self.fs = fs

    def key(self):
        return (self.footprint, self.hot, self.budget_mult, self.skew, self.position, self.fs)

    @property
    def hot_pct(self):
        return 100.0 * self.hot / self.footprint

    def describe(self):
        return "%s, hot %s (%.3g%%), budget %s = %s, %s, %s, %s" % (
            fmt_size(self.footprint), fmt_size(self.hot), self.hot_pct, fmt_mult(self.budget_mult),
            fmt_size(self.budget), self.skew, self.position, self.fs)


def hot_of(footprint, pct):
    """The hot set for a share of the footprint: whole MiB, at least 1 MiB."""
    return max(MiB, int(round(footprint * pct / 100.0 / MiB)) * MiB)


def grid_cells(d):
    cells = []
    for fp, pct, b, skew, pos, fs in itertools.product(d["footprints"], d["hot_pcts"], d["budgets"], d["skews"],
                                                       d["positions"], d["fs"]):
        cells.append(Cell(fp, hot_of(fp, pct), b, skew, pos, fs))
    return cells


def quick_cells(d):
    """A handful of cells that between them take every extreme of every
    dimension: both ends of footprint, hot share and budget crossed, each
    skew, position and file system at least once (small cells for the
    second file system)."""
    fp, pct, b = d["footprints"], d["hot_pcts"], d["budgets"]
    s, p, f = d["skews"], d["positions"], d["fs"]
    lo_fp, hi_fp = min(fp), max(fp)
    lo_h, hi_h = min(pct), max(pct)
    lo_b, hi_b = min(b), max(b)
    mid = p[len(p) // 2]
    specs = [
        (lo_fp, lo_h, lo_b, s[0], p[0], f[0]),
        (lo_fp, hi_h, hi_b, s[-1], p[-1], f[0]),
        (hi_fp, lo_h, hi_b, s[0], p[-1], f[0]),
        (hi_fp, hi_h, lo_b, s[-1], p[0], f[0]),
        (lo_fp, lo_h, lo_b, s[0], mid, f[-1]),
        (lo_fp, hi_h, hi_b, s[-1], mid, f[-1]),
    ]
    return [Cell(a, hot_of(a, h), bb, ss, pp, ff) for a, h, bb, ss, pp, ff in specs]


def issue_cells(d):
    cells = []
    for fp, hot, mult in ISSUE_CELLS:
        for skew, pos, fs in itertools.product(d["skews"], d["positions"], d["fs"]):
            cells.append(Cell(parse_size(fp), parse_size(hot), mult, skew, pos, fs))
    return cells


def dedupe(cells):
    seen, out = set(), []
    for c in cells:
        if c.key() not in seen:
            seen.add(c.key())
            out.append(c)
    return out


def spread(cells, n):
    """n cells spread evenly over the list, its first and last included."""
    if n >= len(cells):
        return cells
    if n == 1:
        return cells[:1]
    idx = sorted({round(i * (len(cells) - 1) / (n - 1)) for i in range(n)})
    return [cells[i] for i in idx]


# ---------------------------------------------------------------- machine


def describe_machine():
    cpu = cpu_model()
    m = meminfo()
    return "nproc %d, %s, MemTotal %s, MemAvailable %s, kernel %s, load %.2f" % (
        os.cpu_count() or 0, cpu, fmt_size(m.get("MemTotal", 0)), fmt_size(m.get("MemAvailable", 0)),
        os.uname().release, os.getloadavg()[0])


def memory_need(cell):
    """Bytes of RAM a run takes at most: the footprint once (its DRAM part
    anonymous, its PMem part in the tier's file, in RAM on tmpfs and page
    cache on ext4), the PMem slots of units just promoted that the library
    keeps warm, gups's Zipf table, and a margin."""
    table = (cell.hot // 4096) * 16 if cell.skew.startswith("zipf") else 0
    base = cell.footprint + min(cell.budget, WARM_SLOTS) + table
    return base + max(GiB, base // 10)


def fits(cell, pmem_root):
    avail = meminfo().get("MemAvailable", 0)
    need = memory_need(cell)
    if need > avail:
        return "needs about %s of memory, %s available" % (fmt_size(need), fmt_size(avail))
    if cell.fs != "tmpfs":
        st = os.statvfs(pmem_root)
        free = st.f_bavail * st.f_frsize
        if cell.footprint + GiB > free:
            return "PMem file of up to %s does not fit in %s free on %s" % (
                fmt_size(cell.footprint), fmt_size(free), pmem_root)
    return None


def estimate_seconds(cell, seconds, verify=True):
    fill = cell.footprint / FILL_BYTES_PER_S[cell.fs]
    run = 2 * seconds
    replay = (UPDATES_PER_S[cell.fs] * run / REPLAY_PER_S + cell.footprint / (2 * GiB)) if verify else 0
    return 2 + fill + run + replay


def fmt_duration(s):
    s = int(round(s))
    if s < 120:
        return "%d s" % s
    if s < 7200:
        return "%d min" % round(s / 60)
    return "%.1f h" % (s / 3600)


# ---------------------------------------------------------------- one run

class Result:
    FIELDS = ["cell", "lib", "lib_path", "footprint", "hot", "hot_pct", "budget_mult", "budget", "skew",
              "position", "move_to", "fs", "fs_type", "seconds_per_phase", "status", "verdict", "reason",
              "fill_s", "t95_start", "t95_move", "max_p0", "max_p1", "end_p0", "end_p1", "hot_updates_p0",
              "hot_updates_p1", "bg_p0", "bg_p1", "bg_source_p0", "bg_source_p1", "idle_p0", "idle_p1",
              "updates_per_s", "scans", "promotions", "demotions", "failed", "moved", "samples",
              "samples_touched", "samples_per_scan", "mover_cpu_s", "startup_dram", "dram_room", "ratio_caps",
              "note", "wall_s",
              "exit_status"]

    def __init__(self, cell, index, lib, lib_path, seconds):
        self.v = {k: None for k in self.FIELDS}
        self.v.update(cell=index, lib=lib, lib_path=lib_path, footprint=cell.footprint, hot=cell.hot,
                      hot_pct=round(cell.hot_pct, 3), budget_mult=cell.budget_mult, budget=cell.budget,
                      skew=cell.skew, position=cell.position, move_to=MOVES[cell.position] or "1/4",
                      fs=cell.fs, seconds_per_phase=seconds)
        self.cell = cell
        self.ratio = (1, 4)
        self.intervals = []

    def __getitem__(self, k):
        return self.v[k]

    def __setitem__(self, k, val):
        self.v[k] = val


def gups_argv(gups, cell, seconds, seed, verify):
    argv = [gups, "--footprint", "%dK" % (cell.footprint // KiB), "--hot", "%dK" % (cell.hot // KiB),
            "--seconds", "%g" % (2 * seconds), "--move-at", "%g" % seconds, "--skew", cell.skew,
            "--seed", str(seed), "--report-interval", "1"]
    if cell.position != "default":
        argv += ["--hot-offset", cell.position, "--move-to", MOVES[cell.position]]
    if not verify:
        argv.append("--no-verify")
    return argv


def parse_gups(res, out, err, pid):
    lines = out.splitlines()
    for line in lines:
        m = INTERVAL.match(line)
        if m:
            t, rate, hot, alls, bg, idle, ph = m.groups()
            f = lambda x: None if x == "n/a" else float(x)
            res.intervals.append(dict(t=float(t), rate=float(rate), hot=f(hot), all=f(alls), bg=f(bg),
                                      idle=f(idle), phase=int(ph)))
            continue
        m = re.match(r"^# fill: .* written in (%s) s" % NUM, line)
        if m:
            res["fill_s"] = float(m.group(1))
            continue
        m = re.match(r"^# \d+ updates in %s s: (%s) M updates/s" % (NUM, NUM), line)
        if m:
            res["updates_per_s"] = float(m.group(1)) * 1e6
            continue
        m = SUMMARY.match(line)
        if m:
            parse_summary(res, int(m.group(1)), float(m.group(2)), float(m.group(3)), m.group(4))
    # The exit report of gups's own process (a helper it started would have
    # its own, with another pid).
    report_pid = None
    for line in err.splitlines():
        m = REPORT_HEAD.match(line)
        if m:
            report_pid = int(m.group(1))
            continue
        m = MOVER.search(line)
        if m and (report_pid is None or report_pid == pid):
            res["scans"], res["promotions"], res["demotions"], res["failed"] = (int(x) for x in m.groups()[:4])
            res["moved"] = m.group(5)
            res["samples_touched"], res["samples"] = int(m.group(6)), int(m.group(7))
            res["mover_cpu_s"] = float(m.group(8))
            res["samples_per_scan"] = round(res["samples"] / res["scans"], 1) if res["scans"] else None
        m = STARTUP.search(line)
        if m and (report_pid is None or report_pid == pid):
            scale = {"B": 1, "KiB": KiB, "MiB": MiB, "GiB": GiB, "TiB": TiB}[m.group(2)]
            res["startup_dram"] = int(float(m.group(1)) * scale)
    startup = res["startup_dram"] if res["startup_dram"] is not None else STARTUP_GUESS
    room, limit_binds = dram_room(res.cell, startup, res.ratio)
    res["dram_room"] = room * UNIT
    res["ratio_caps"] = not limit_binds
    if res["startup_dram"] is not None:
        res["note"] = budget_note(res.cell, res["startup_dram"], res.ratio)


def dram_room(cell, startup, ratio):
    """DRAM units the workload's memory can have (lib/policy/budget.cc):
    MMTIER_DRAM_LIMIT less the library's start-up units, and no more than
    the ratio's share of the units placed by policy."""
    limit_room = cell.budget // UNIT - (startup + UNIT - 1) // UNIT
    d, p = ratio
    ratio_room = (cell.footprint // UNIT + 1) * d // (d + p) if d + p else 0
    return max(0, min(limit_room, ratio_room)), limit_room <= ratio_room


def budget_note(cell, startup, ratio):
    """Why the cell cannot reach 95 %, whatever the tracker does, or None."""
    room, limit_binds = dram_room(cell, startup, ratio)
    if room * UNIT >= 0.95 * cell.hot:
        return None
    if limit_binds:
        return "the budget holds %d unit(s) after %s of start-up DRAM, less than 95 %% of the hot set" % (
            room, fmt_size(startup))
    return ("MMTIER_DRAM_RATIO %d:%d caps DRAM at %d unit(s) of this footprint, below the budget and 95 %% of "
            "the hot set (--ratio lifts the cap)" % (ratio[0], ratio[1], room))


def parse_summary(res, phase, t0, t1, text):
    key = "t95_start" if phase == 0 else "t95_move"
    m = re.search(r"reached 95%% after (%s) s" % NUM, text)
    if m:
        res[key] = float(m.group(1))
        res["max_p%d" % phase] = None
    m = re.search(r"95%% not reached \(max (%s)%%\)" % NUM, text)
    if m:
        res[key] = None
        res["max_p%d" % phase] = float(m.group(1))
    m = re.search(r"(%s)%% at phase end" % NUM, text)
    if m:
        res["end_p%d" % phase] = float(m.group(1))
    m = re.search(r"pages taking (%s)%% of the hot updates" % NUM, text)
    if m:
        res["hot_updates_p%d" % phase] = float(m.group(1))
    m = re.search(r"steady-state bg CPU (%s)%% of one core" % NUM, text)
    if m:
        res["bg_p%d" % phase] = float(m.group(1))
        res["bg_source_p%d" % phase] = "steady"
        m2 = re.search(r"idle control thread (%s)%%" % NUM, text)
        res["idle_p%d" % phase] = float(m2.group(1)) if m2 else None
    res["_phase%d" % phase] = (t0, t1)


def second_half_cpu(res, phase):
    """Not converged: the mean CPU over the phase's second half (intervals
    that begin at or after its middle), from the per-second lines."""
    span = res.v.get("_phase%d" % phase)
    if not span:
        return None, None
    mid = (span[0] + span[1]) / 2
    ivs = [iv for iv in res.intervals if iv["phase"] == phase and iv["t"] - 1.0 >= mid - 1e-3]
    bg = [iv["bg"] for iv in ivs if iv["bg"] is not None]
    idle = [iv["idle"] for iv in ivs if iv["idle"] is not None]
    return (statistics.mean(bg) if bg else None), (statistics.mean(idle) if idle else None)


def judge(res, targets):
    t_sec, t_cpu = targets
    if res["status"] != "ok":
        return
    misses = []
    if res["t95_start"] is None or res["t95_start"] > t_sec:
        misses.append("start")
    if res["t95_move"] is None or res["t95_move"] > t_sec:
        misses.append("move")
    for p in (0, 1):
        if res["bg_p%d" % p] is None or res["bg_p%d" % p] > t_cpu:
            misses.append("cpu%d" % p)
    if res["end_p0"] is None:
        res["verdict"], res["reason"] = "N/A", "no DRAM shares (mmtier_tier_of not found)"
    elif misses:
        res["verdict"], res["reason"] = "MISS", ",".join(misses)
    else:
        res["verdict"], res["reason"] = "PASS", ""


def run_cell(args, cell, index, lib, lib_path, pmem_root, logs):
    global child
    res = Result(cell, index, lib, lib_path, args.seconds)
    res.ratio = args.ratio
    res["fs_type"] = fs_type(pmem_root)
    why = fits(cell, pmem_root)
    if why:
        res["status"], res["verdict"], res["reason"] = "skipped", "SKIP", why
        return res
    pmem = tempfile.mkdtemp(prefix="mmtier-sweep-", dir=pmem_root)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMTIER_") and k != "LD_PRELOAD"}
    env.update(LD_PRELOAD=lib_path, MMTIER_DRAM_LIMIT="%dK" % (cell.budget // KiB), MMTIER_PMEM_PATH=pmem,
               MMTIER_REPORT="stderr")
    if args.ratio_given:
        env["MMTIER_DRAM_RATIO"] = "%d:%d" % args.ratio
    env.update(args.env)
    argv = gups_argv(args.gups, cell, args.seconds, args.seed, not args.no_verify)
    timeout = args.timeout or 3 * estimate_seconds(cell, args.seconds, not args.no_verify) + 60
    t0 = time.monotonic()
    out = err = ""
    try:
        child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 start_new_session=True)
        try:
            out, err = child.communicate(timeout=timeout)
            res["exit_status"] = child.returncode
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            out, err = child.communicate()
            res["exit_status"] = "timeout"
        except BaseException:  # interrupted: the run goes too
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
            raise
        pid = child.pid
    finally:
        child = None
        shutil.rmtree(pmem, ignore_errors=True)
    res["wall_s"] = round(time.monotonic() - t0, 1)
    if logs:
        stem = os.path.join(logs, "cell%03d-%s" % (index, lib))
        with open(stem + ".out", "w") as f:
            f.write("# " + " ".join("%s=%s" % (k, env[k]) for k in sorted(env) if k.startswith(("MMTIER_", "LD_")))
                    + "\n# " + " ".join(argv) + "\n" + out)
        with open(stem + ".err", "w") as f:
            f.write(err)
    parse_gups(res, out, err, pid)
    if res["exit_status"] == "timeout":
        res["status"], res["verdict"], res["reason"] = "failed", "FAIL", "timed out after %d s" % timeout
    elif "MISMATCH" in out:
        res["status"], res["verdict"], res["reason"] = "failed", "FAIL", "MISMATCH: lost or misplaced write"
    elif res["exit_status"] != 0:
        tail = " | ".join(err.strip().splitlines()[-2:])[:200]
        res["status"], res["verdict"], res["reason"] = "failed", "FAIL", "exit status %s: %s" % (
            res["exit_status"], tail)
    elif not re.search(r"^RESULT gups ", out, re.M):
        res["status"], res["verdict"], res["reason"] = "failed", "FAIL", "no RESULT line"
    else:
        res["status"] = "ok"
        for p in (0, 1):
            if res["bg_p%d" % p] is None:
                bg, idle = second_half_cpu(res, p)
                res["bg_p%d" % p], res["idle_p%d" % p] = bg, idle
                res["bg_source_p%d" % p] = "second-half" if bg is not None else None
        judge(res, (args.target_seconds, args.target_cpu))
    res.v = {k: v for k, v in res.v.items() if not k.startswith("_")}
    return res


# ---------------------------------------------------------------- table

COLUMNS = [  # (header, width, formatter)
    ("cell", 4), ("lib", 0), ("footprint", 9), ("hot (%fp)", 13), ("budget", 19), ("skew", 10),
    ("pos", 7), ("fs", 5), ("fill_s", 6), ("t95_start", 9), ("t95_move", 9), ("hot_end%", 9),
    ("bg_cpu%", 11), ("idle_cpu%", 11), ("Mupd/s", 6), ("promo", 6), ("demo", 6), ("smp/scan", 8),
    ("verdict", 0),
]


def fmt_or(v, fmt, none="-"):
    return none if v is None else fmt % v


def row_cells(res, lib_width):
    c = res.cell
    secs = res["seconds_per_phase"]

    def t95(key):
        if res["status"] != "ok":
            return "-"
        v = res[key]
        return ">%g" % secs if v is None else "%.1f" % v

    def pair(a, b, fmt):
        if a is None and b is None:
            return "-"
        return "%s/%s" % (fmt_or(a, fmt), fmt_or(b, fmt))

    def cpu(p):
        v = res["bg_p%d" % p]
        mark = "~" if res["bg_source_p%d" % p] == "second-half" else ""
        return fmt_or(v, "%.1f") + (mark if v is not None else "")

    bg = "-" if res["bg_p0"] is None and res["bg_p1"] is None else "%s/%s" % (cpu(0), cpu(1))
    verdict = res["verdict"] + ("(%s)" % res["reason"] if res["reason"] and res["verdict"] == "MISS" else "")
    if res["note"]:
        verdict += " [DRAM < hot set]"
    if res["verdict"] in ("SKIP", "FAIL"):
        verdict += ": " + res["reason"]
    budget = "%s=%s" % (fmt_mult(c.budget_mult), fmt_size(c.budget))
    if res["ratio_caps"]:
        budget += " (%s)" % fmt_size(res["dram_room"])
    return [str(res["cell"]), res["lib"], fmt_size(c.footprint), "%s (%.3g%%)" % (fmt_size(c.hot), c.hot_pct),
            budget, c.skew, c.position, c.fs,
            fmt_or(res["fill_s"], "%.1f"), t95("t95_start"), t95("t95_move"),
            pair(res["end_p0"], res["end_p1"], "%.0f"), bg, pair(res["idle_p0"], res["idle_p1"], "%.1f"),
            fmt_or(None if res["updates_per_s"] is None else res["updates_per_s"] / 1e6, "%.1f"),
            fmt_or(res["promotions"], "%d"), fmt_or(res["demotions"], "%d"),
            fmt_or(res["samples_per_scan"], "%.0f"), verdict]


def widths(lib_width):
    return [w if w else lib_width for _, w in COLUMNS[:-1]]


def print_header(lib_width):
    ws = widths(lib_width)
    cols = [h.ljust(w) for (h, _), w in zip(COLUMNS[:-1], ws)] + [COLUMNS[-1][0]]
    print("  ".join(cols).rstrip())
    print("  ".join("-" * w for w in ws) + "  " + "-" * 7)
    sys.stdout.flush()


def print_row(res, lib_width):
    ws = widths(lib_width)
    vals = row_cells(res, lib_width)
    print("  ".join(v.ljust(w) for v, w in zip(vals[:-1], ws)) + "  " + vals[-1])
    sys.stdout.flush()


def print_legend(args):
    print()
    print("t95_start / t95_move: seconds from the start of the updates / from the move until 95 % of the hot "
          "set's bytes were on DRAM (1 s resolution; >N: not within the phase)")
    print("hot_end%: hot set's DRAM share at the end of phase 0 / 1; bg_cpu%: CPU of the mmtier-* threads, "
          "% of one core, mean over each phase's steady state (after 95 %; ~: not converged, mean of the "
          "phase's second half); idle_cpu%: gups's idle control thread over the same intervals")
    print("promo / demo: promotions and demotions over the whole run (exit report); smp/scan: PMem and DRAM "
          "pages hidden per scan; targets: 95 %% within %g s of the start and of the move, bg CPU <= %g %% "
          "in both steady states" % (args.target_seconds, args.target_cpu))
    print("budget (N): MMTIER_DRAM_RATIO's share of the footprint caps the workload's DRAM at N, below the "
          "budget (lib/policy/budget.cc; --ratio changes it)")
    print("[DRAM < hot set]: the DRAM the workload can have holds less than 95 % of the hot set, so "
          "the cell cannot reach 95 %: the budget less the library's own start-up DRAM (exit report), capped by "
          "MMTIER_DRAM_RATIO's share of the footprint (the CSV's note says which)")


def print_compare(results, libs, lib_width):
    base = libs[0][0]
    for label, _ in libs[1:]:
        print()
        print("%s against %s (same cells, interleaved): t95 start, t95 move, bg CPU %% phase 0/1, verdict"
              % (base, label))
        print("  ".join(["cell".ljust(4), "t95_start".ljust(13), "t95_move".ljust(13), "bg_cpu%".ljust(23),
                         "verdict"]))
        by = {}
        for r in results:
            by.setdefault(r["cell"], {})[r["lib"]] = r
        for cell in sorted(by):
            a, b = by[cell].get(base), by[cell].get(label)
            if not a or not b:
                continue

            def t(r, k):
                if r["status"] != "ok":
                    return "-"
                return ">%g" % r["seconds_per_phase"] if r[k] is None else "%.1f" % r[k]

            def bg(r):
                return "%s/%s" % (fmt_or(r["bg_p0"], "%.1f"), fmt_or(r["bg_p1"], "%.1f"))
            print("  ".join([str(cell).ljust(4), ("%s | %s" % (t(a, "t95_start"), t(b, "t95_start"))).ljust(13),
                             ("%s | %s" % (t(a, "t95_move"), t(b, "t95_move"))).ljust(13),
                             ("%s | %s" % (bg(a), bg(b))).ljust(23), "%s | %s" % (a["verdict"], b["verdict"])]))


def print_totals(results, libs):
    print()
    for label, _ in libs:
        rs = [r for r in results if r["lib"] == label]
        ok = [r for r in rs if r["status"] == "ok"]
        npass = sum(1 for r in ok if r["verdict"] == "PASS")
        skipped = sum(1 for r in rs if r["status"] == "skipped")
        failed = sum(1 for r in rs if r["status"] == "failed")
        t95 = [r[k] for r in ok for k in ("t95_start", "t95_move") if r[k] is not None]
        unreached = sum(1 for r in ok for k in ("t95_start", "t95_move") if r[k] is None)
        bg = [r["bg_p%d" % p] for r in ok for p in (0, 1) if r["bg_p%d" % p] is not None]
        print("%s: %d of %d cells run; PASS %d, MISS %d, FAIL %d, SKIP %d; t95 max %s (%d phase(s) not "
              "reached); bg CPU max %s %%" % (
                  label, len(ok), len(rs), npass, len(ok) - npass, failed, skipped,
                  fmt_or(max(t95) if t95 else None, "%.1f s"), unreached, fmt_or(max(bg) if bg else None, "%.1f")))


def write_csv(path, results):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=Result.FIELDS)
        w.writeheader()
        for r in results:
            w.writerow({k: ("" if r[k] is None else r[k]) for k in Result.FIELDS})


# ---------------------------------------------------------------- main

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="See docs/BENCHMARKS.md, \"Tiering at scale: the sweep\".")
    ap.add_argument("--preset", choices=["quick", "issue", "full"],
                    help="quick: a handful of cells taking the extremes of the dimensions below; issue: "
                         "footprint/hot set/budget 1.5G/96M/2x, 4G/128M/3x, 8G/256M/3x, uniform, tmpfs, hot set "
                         "at gups's default place; full (and no preset): every cell of the grid")
    ap.add_argument("--footprints", help="footprints (default %s)" % DEFAULTS["footprints"])
    ap.add_argument("--hot-pcts", help="hot set sizes in percent of the footprint (default %s)" % DEFAULTS["hot_pcts"])
    ap.add_argument("--budgets", help="DRAM budgets, multiples of the hot set (default %s)" % DEFAULTS["budgets"])
    ap.add_argument("--skews", help="uniform and/or zipf:S (default %s)" % DEFAULTS["skews"])
    ap.add_argument("--positions", help="of %s (default %s)" % (",".join(POSITIONS), DEFAULTS["positions"]))
    ap.add_argument("--fs", help="PMem directory file systems: tmpfs, ext4 (default %s)" % DEFAULTS["fs"])
    ap.add_argument("--seconds", type=float, default=20, help="seconds per phase (default 20)")
    ap.add_argument("--cells", type=int, default=0, help="run only N cells, spread evenly over the list")
    ap.add_argument("--build", default=None, help="build directory (default: the repository's build/)")
    ap.add_argument("--lib", default=None, help="libmmtier.so to preload (default BUILD/libmmtier.so)")
    ap.add_argument("--compare", action="append", default=[], metavar="LABEL=PATH",
                    help="also run the libmmtier.so at PATH on every cell, right after (or before) the main "
                         "one, as lib libmmtier@LABEL (repeatable)")
    ap.add_argument("--csv", default=None, help="write every run to this CSV file")
    ap.add_argument("--logs", default=None, help="keep each run's stdout and stderr in this directory")
    ap.add_argument("--tmpfs-dir", default="/dev/shm", help="PMem root for fs tmpfs (default /dev/shm)")
    ap.add_argument("--ext4-dir", default=None,
                    help="PMem root for fs ext4 (default BUILD/pmem-disk if on a disk, else /var/tmp)")
    ap.add_argument("--ratio", default=None, metavar="D:P",
                    help="MMTIER_DRAM_RATIO for every run (default: the library's, 1:4, which caps the DRAM "
                         "budget at a fifth of the footprint whatever MMTIER_DRAM_LIMIT says)")
    ap.add_argument("--env", action="append", default=[], metavar="VAR=VALUE",
                    help="extra environment for every run (e.g. MMTIER_SCAN_INTERVAL=50ms; repeatable)")
    ap.add_argument("--seed", type=int, default=1, help="gups --seed (default 1)")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip gups's replay check of the memory contents after each run (saves time)")
    ap.add_argument("--timeout", type=float, default=0, help="seconds per run (default: 3x the estimate + 60)")
    ap.add_argument("--target-seconds", type=float, default=5, help="95 %% target, seconds (default 5)")
    ap.add_argument("--target-cpu", type=float, default=2, help="background CPU target, %% (default 2)")
    ap.add_argument("--dry-run", action="store_true", help="list the cells and the time estimate, run nothing")
    args = ap.parse_args(argv)

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    args.build = os.path.abspath(args.build or os.path.join(repo, "build"))
    args.gups = os.path.join(args.build, "bench", "workloads", "gups")
    lib = os.path.abspath(args.lib or os.path.join(args.build, "libmmtier.so"))
    libs = [("libmmtier", lib)]
    for item in args.compare:
        label, eq, path = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", label) or not path:
            ap.error("--compare %r: expected LABEL=PATH" % item)
        if not os.path.isfile(path):
            ap.error("--compare %s: %s is not a file" % (item, path))
        if "libmmtier@" + label in [l for l, _ in libs]:
            ap.error("--compare: label %s given twice" % label)
        libs.append(("libmmtier@" + label, os.path.abspath(path)))
    args.ratio_given = args.ratio is not None
    m = re.fullmatch(r"(\d+):(\d+)", args.ratio or "1:4")
    if not m or int(m.group(1)) + int(m.group(2)) == 0:
        ap.error("--ratio: expected D:P, not both 0")
    args.ratio = (int(m.group(1)), int(m.group(2)))
    args.env = parse_env(args.env, ap.error)
    if args.seconds <= 0:
        ap.error("--seconds must be > 0")

    # Dimensions: what was given, else the defaults.
    d = {}
    try:
        preset = args.preset or "full"
        raw = {k: getattr(args, k) for k in DEFAULTS}
        if preset == "issue":
            for k in ("footprints", "hot_pcts", "budgets"):
                if raw[k] is not None:
                    ap.error("--preset issue fixes footprints, hot sets and budgets; --%s is not taken"
                             % k.replace("_", "-"))
            raw = dict(raw, skews=raw["skews"] or "uniform", positions=raw["positions"] or "default",
                       fs=raw["fs"] or "tmpfs")
        for k, v in raw.items():
            d[k] = split_list(v if v is not None else DEFAULTS[k], k)
        d["footprints"] = [parse_size(x) for x in d["footprints"]]
        d["hot_pcts"] = [float(x) for x in d["hot_pcts"]]
        d["budgets"] = [float(x) for x in d["budgets"]]
    except ValueError as e:
        ap.error(str(e))
    for s in d["skews"]:
        if s != "uniform" and not re.fullmatch(r"zipf:%s" % NUM, s):
            ap.error("--skews: %r is not uniform or zipf:S" % s)
    for p in d["positions"]:
        if p not in POSITIONS:
            ap.error("--positions: %r is not one of %s" % (p, ",".join(POSITIONS)))
    for f in d["fs"]:
        if f not in FS_KINDS:
            ap.error("--fs: %r is not one of %s" % (f, ",".join(FS_KINDS)))
    if any(not 0 < p < 100 for p in d["hot_pcts"]) or any(b <= 0 for b in d["budgets"]):
        ap.error("hot sets must be between 0 and 100 %, budgets above 0")

    if preset == "quick":
        cells = quick_cells(d)
    elif preset == "issue":
        cells = issue_cells(d)
    else:
        cells = grid_cells(d)
    cells = dedupe([c for c in cells if c.hot + 4096 <= c.footprint])
    if args.cells > 0:
        cells = spread(cells, args.cells)
    if not cells:
        ap.error("no cells to run")

    roots = {"tmpfs": args.tmpfs_dir}
    if "ext4" in d["fs"]:
        if args.ext4_dir is None:
            disk = os.path.join(args.build, "pmem-disk")
            os.makedirs(disk, exist_ok=True)
            args.ext4_dir = disk if fs_type(disk) != "tmpfs" else "/var/tmp"
        roots["ext4"] = args.ext4_dir
    for kind, root in roots.items():
        if kind in d["fs"]:
            if not os.path.isdir(root):
                ap.error("PMem root %s for %s is not a directory" % (root, kind))
            actual = fs_type(root)
            if (kind == "tmpfs") != (actual == "tmpfs"):
                log("sweep: warning: the %s cells' PMem root %s is on %s" % (kind, root, actual))

    total = sum(estimate_seconds(c, args.seconds, not args.no_verify) for c in cells) * len(libs)
    log("sweep: %d cell(s) x %d lib(s), about %s (rough: fill at %s/s on tmpfs, %s s per phase)" % (
        len(cells), len(libs), fmt_duration(total), fmt_size(FILL_BYTES_PER_S["tmpfs"]), "%g" % args.seconds))
    if args.dry_run:
        for i, c in enumerate(cells, 1):
            note = budget_note(c, STARTUP_GUESS, args.ratio)
            room, limit_binds = dram_room(c, STARTUP_GUESS, args.ratio)
            if not limit_binds and not note:
                note = "MMTIER_DRAM_RATIO %d:%d caps the workload's DRAM at %s, below the budget" % (
                    args.ratio[0], args.ratio[1], fmt_size(room * UNIT))
            print("%3d  %s  (needs about %s of memory, about %s per run)%s" % (
                i, c.describe(), fmt_size(memory_need(c)), fmt_duration(estimate_seconds(c, args.seconds)),
                "\n     note: " + note if note else ""))
        return 0
    for _, path in libs:
        if not os.path.isfile(path):
            ap.error("%s not found (build first: scripts/build.sh %s)" % (path, args.build))
    if not os.access(args.gups, os.X_OK):
        ap.error("%s not found (build first: ninja -C %s bench_gups)" % (args.gups, args.build))
    if args.logs:
        os.makedirs(args.logs, exist_ok=True)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)

    lib_width = max(len(l) for l, _ in libs)
    print("mmtier sweep: " + describe_machine())
    for label, path in libs:
        print("%s: %s" % (label, path))
    print("gups: %s; %g s per phase; PMem roots: %s; MMTIER_DRAM_RATIO %d:%d%s; extra environment: %s" % (
        args.gups, args.seconds, ", ".join("%s %s (%s)" % (k, v, fs_type(v)) for k, v in roots.items()),
        args.ratio[0], args.ratio[1], "" if args.ratio_given else " (the library's default)",
        " ".join("%s=%s" % kv for kv in sorted(args.env.items())) or "none"))
    print()
    print_header(lib_width)
    results = []
    started = time.monotonic()
    done_est = 0.0
    status = 0
    try:
        for i, cell in enumerate(cells, 1):
            # The main build first in odd cells, last in even ones: neither
            # always runs on a machine just left by the other.
            order = libs if i % 2 == 1 else libs[::-1]
            for label, path in order:
                est = estimate_seconds(cell, args.seconds, not args.no_verify)
                elapsed = time.monotonic() - started
                left = (total - done_est) * (elapsed / done_est if done_est > 0 else 1)
                log("[%d/%d] %s, %s: running (about %s; about %s left in all)" % (
                    i, len(cells), cell.describe(), label, fmt_duration(est), fmt_duration(left)))
                res = run_cell(args, cell, i, label, path, roots[cell.fs], args.logs)
                done_est += est
                results.append(res)
                log("[%d/%d] %s: %s%s in %s s%s" % (i, len(cells), label, res["verdict"],
                                                     " (%s)" % res["reason"] if res["reason"] else "",
                                                     res["wall_s"] if res["wall_s"] is not None else 0,
                                                     "; note: " + res["note"] if res["note"] else ""))
            # Rows of one cell together, in lib order.
            for label, _ in libs:
                for r in results:
                    if r["cell"] == i and r["lib"] == label:
                        print_row(r, lib_width)
    except KeyboardInterrupt:
        log("sweep: interrupted; the table has the cells that finished")
        status = 130
    print_legend(args)
    if len(libs) > 1:
        print_compare(results, libs, lib_width)
    print_totals(results, libs)
    if args.csv:
        write_csv(args.csv, results)
        log("sweep: CSV written to %s" % args.csv)
    if any(r["status"] == "failed" for r in results) and status == 0:
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
