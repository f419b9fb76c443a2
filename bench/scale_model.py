#!/usr/bin/env python3
"""A cost model of mmtier's software tracking at scale: background CPU per
second, time to cover the heap once, and time to find a hot set, at heap
sizes nobody has measured on this machine (256 GiB, 1 TiB).

Not a measurement: it combines measured per-operation costs (arguments,
defaults below with where each comes from) with the tracker's rules
(lib/track/software_tracker.h, lib/mover/mover.cc):

  - Every scan interval I (MMTIER_SCAN_INTERVAL, 100 ms) the mover opens a
    sampling window of W = I/8 (12.5 ms).  It watches P PMem units with one
    hidden page each (P from 16 to 2048, starting at 64), D = clamp(P/8, 2,
    32) DRAM units with one page each, and the suspects of the previous
    window (at most 64) with 4 pages each.  PMem units come from a rotation
    over the list of movable units (step k visits entry k * stride mod n):
    every PMem unit is watched once per N_pmem / P windows.
  - Cost rule: after each scan that moved nothing, P shrinks by a quarter
    when tracking took more than its share of I and grows by a quarter (+1)
    below three fifths of it.  The share is 2 % in the steady state and 6 %
    while searching for a hot set (from the start, and after a burst of 4
    promotions within 8 scans, for one whole rotation or until 20 scans
    promote nothing).  "Tracking" is
    the mover's CPU time for the scan outside the window's sleep (listing,
    hiding, reading the results, the policy) plus the fault service's CPU in
    the meantime.
  - Work that grows with the heap: the list of movable units is rebuilt,
    and a heat histogram of every listed unit taken, every 8 scans (and
    the list after any scan that moved a unit).  The policy's decide()
    looks at its promotion candidates (units observed warm) and, only when
    something may go down, at the DRAM units (lib/policy/policy.cc): in the
    steady state modelled here it costs about 0.3 us a scan at any size
    (policy_bench, policy_decide_steady), so --decide-unit-ns is 0 unless
    given.
  - After 10 scans that moved nothing the interval doubles, up to 4 I; the
    rule still judges cost against I, so P does not change, scans are just
    rarer (cost per second / 4, coverage time x 4).
  - A PMem screening hit (the one page touched) makes the unit a suspect,
    watched with 4 pages in the next window; the PMem units within 4 of it
    on either side (while searching; 1 once steady) become suspects when
    at least half of those pages are touched; suspects are at most half of
    P.  Here a hot unit counts
    as found when its confirmation window sees at least one of the 4 pages
    touched (a score of 1/4 is above the policy's promote_min_heat of 1/8).
  - Span: where the base window sees next to nothing, a PMem sample is a
    span of 16..128 neighbouring pages under one shootdown, touched when any
    of them is.  The tracker doubles it while the background the wider span
    would see stays below 2.5 % (halves above 5 %); here the span is the
    widest at which the cold pages' chance stays below 2.5 %, and p(hot),
    p(cold) are per span.  A wider sample costs --zap-page-us more for
    each of its pages still mapped (touched since it was last hidden).
  - Promotion and demotion share MMTIER_MIGRATE_MBPS (256 MiB/s): moving a
    hot set of H bytes into a full DRAM takes at least 2 H / rate.

Per-operation inputs, and where they are measured:

  --hide-us       hiding one PMem page: madvise(MADV_DONTNEED) of one 4 KiB
                  page, with its TLB shootdown.  docs/BENCHMARKS.md ("What
                  the background CPU figure measures"): 8 us with the other
                  vCPU idle, 43-72 us with the workload running there.
                  Default 43.  Re-measure: --measure (a loop in this
                  process: no workload on the other vCPU, so a lower bound),
                  or perf trace -s on the mmtier-bg thread during a run.
  --syscall-us    one cheap system call (pread of 8 bytes): the pagemap read
                  per PMem sample at the window's end costs one, a DRAM
                  sample three more (pagemap, uffd register and unregister).
                  A pread loop on this VM: 1.3 us on /dev/zero, 2.4-2.6 us
                  on /proc/self/pagemap.  Default 2.5 (--measure).
  --zap-page-us   each further mapped page of a span: its page-table entry
                  zapped, its pagemap entry read.  A loop here (1, 16 and
                  128 pages of a tmpfs file, all mapped, single-threaded):
                  2.5, 7.8 and 37.8 us a zap, 1.9, 2.8 and 3.5 us a read,
                  so about 0.3 us a page.  Default 0.3.
  --dram-sample-us  one DRAM sample in all: moved out (UFFDIO_MOVE, a
                  shootdown) and back at the window's end (another), plus
                  three system calls.  Default 2 * hide + 3 * syscall.
  --fault-us      the fault service's CPU per touched DRAM sample (wake,
                  move the page back).  docs/BENCHMARKS.md: 5 wakes a second
                  cost 0.03 % of a core in all, so about 60 us.  Default 60.
  --scan-fixed-us  per-scan cost that does not grow with the heap (choosing
                  the window, decide's sorting, clocks, counters).  Derived:
                  the perf profile in docs/BENCHMARKS.md puts the scan
                  itself at about 3 % of the mover's 1.2-1.7 % of a core at
                  2 GiB, about 45 us per scan, of which decide's pass and
                  the listing take about 10.  Default 30.
  --decide-unit-ns  decide(), per tracked unit and scan.  It looks at its
                  promotion candidates and, only when something may go
                  down, at the DRAM units: in the steady state about 0.3 us
                  a scan at any size (bench/micro/policy_bench,
                  policy_decide_steady); with a seventh of the units warm
                  and DRAM at its budget 0.7 ns a unit from 128 Ki units up
                  (policy_decide, 1e9 / items_per_second; 3.8 ns when it
                  went over every unit).  Default 0.
  --list-unit-ns  per listed unit and rebuild: the heat histogram
                  (policy_bench, policy_heat_pass: 6.7 ns) plus the listing
                  itself (a walk of the address bitmap, not measured apart;
                  taken as 3 ns).  Default 10.
  --charge-pct    CPU the VM charges the mover's clock for sleeping and
                  waking, counted by the rule as tracking (docs/BENCHMARKS.md:
                  about 2 % of a core for a thread that only sleeps on the
                  other vCPU, less when a control thread takes it).
                  Default 0; 2 models this VM at its worst.

Workload inputs: --updates-per-s (GUPS on this VM: 25 M/s uniform, one
thread), --hot-share (0.9), --hot-pct (the hot set, % of the footprint) or
--hot (a fixed size), --dram-pct (the DRAM budget, % of the footprint).  Per page touch rates
give the chance that a hidden page is touched within W:
1 - exp(-rate * W).

Only the Python standard library is used.  See docs/BENCHMARKS.md, "Tiering
at scale: the sweep".
"""

import argparse
import bisect
import ctypes
import math
import mmap
import os
import random
import re
import statistics
import sys
import time

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40
UNIT = 2 * MiB
PAGE = 4096
PMEM_MIN, PMEM_MAX, PMEM_START = 16, 2048, 64
DRAM_MIN, DRAM_MAX = 2, 32
MAX_SUSPECTS, CONFIRM_PAGES = 64, 4
NEIGHBOUR_REACH = 4  # PMem units either side of a confirmed hot one that become suspects
CPU_STEADY, CPU_SEARCH = 0.02, 0.06  # the tracker's shares: steady, and while searching for a hot set
RELIST_SCANS = 8
QUIET_FACTOR = 4
SPAN_MIN, SPAN_MAX = 16, 128  # pages of a PMem sample when it widens
SPAN_WIDEN_BELOW = 0.025      # the background a wider span must stay under


def parse_size(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError("not a size: %r" % text)
    return int(float(m.group(1)) * {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB}[m.group(2).upper()])


def fmt_size(n):
    for mult, s in ((TiB, "T"), (GiB, "G"), (MiB, "M")):
        if n >= mult:
            v = n / mult
            return ("%d%s" if abs(v - round(v)) < 1e-9 else "%.1f%s") % (v if v != round(v) else round(v), s)
    return "%dK" % (n // KiB)


def fmt_time(s):
    if s is None:
        return "-"
    if math.isinf(s):
        return "never"
    if s < 120:
        return "%.1f s" % s
    if s < 7200:
        return "%.0f min" % (s / 60)
    return "%.1f h" % (s / 3600)


def spread_stride(n):
    """The rotation's stride (software_tracker.cc): about n / phi, coprime with n."""
    if n < 3:
        return 1
    s = int(n * 0.6180339887)
    while math.gcd(s, n) != 1:
        s += 1
    return s


def dram_per_scan(p):
    return min(max(p // 8, DRAM_MIN), DRAM_MAX)


def touch_prob(rate_per_s, window_s):
    return 1.0 - math.exp(-rate_per_s * window_s)


class Model:
    def __init__(self, a, footprint):
        self.a = a
        self.footprint = footprint
        self.units = max(1, footprint // UNIT)
        self.dram_units = max(1, int(self.units * a.dram_pct / 100))
        self.pmem_units = max(1, self.units - self.dram_units)
        self.hot_bytes = max(UNIT, a.hot if a.hot else int(footprint * a.hot_pct / 100))
        self.hot_units = max(1, self.hot_bytes // UNIT)
        self.window = a.interval_ms / 8e3
        self.interval = a.interval_ms / 1e3
        hot_pages = self.hot_bytes // PAGE
        cold_pages = max(1, (footprint - self.hot_bytes) // PAGE)
        self.hot_rate = a.updates_per_s * a.hot_share / hot_pages
        self.cold_rate = a.updates_per_s * (1 - a.hot_share) / cold_pages
        self.span = 1
        while not a.no_span and self.span < SPAN_MAX:
            wider = SPAN_MIN if self.span == 1 else 2 * self.span
            if touch_prob(self.cold_rate * wider, self.window) >= SPAN_WIDEN_BELOW:
                break
            self.span = wider
        self.p_hot = touch_prob(self.hot_rate * self.span, self.window)
        self.p_cold = touch_prob(self.cold_rate * self.span, self.window)

    # -- cost of one scan in seconds, and the share of the interval the rule sees
    def per_unit_s(self):
        """Per scan: decide (per unit, if given), the rebuild amortised."""
        return (self.a.decide_unit_ns + self.a.list_unit_ns / RELIST_SCANS) * 1e-9 * self.units

    def scan_cost_s(self, p):
        a = self.a
        # A span's further pages cost only while mapped: touched since they
        # were last hidden, about 512 / span visits of their unit ago.
        since = math.ceil(self.pmem_units / p) * self.interval * 512 / self.span
        mapped = (self.span - 1) * touch_prob(self.cold_rate, since)
        per_pmem = (a.hide_us + a.syscall_us + mapped * a.zap_page_us) * 1e-6
        d = dram_per_scan(p)
        # Steady state: the hot set on DRAM, the PMem units cold; screening
        # hits on cold pages become suspects (4 pages each, next window).
        suspects = min(MAX_SUSPECTS, max(4, p // 2), p * self.p_cold)
        dram_touched = d * a.dram_touched
        return (a.scan_fixed_us * 1e-6 + self.per_unit_s() + p * per_pmem + suspects * CONFIRM_PAGES * per_pmem
                + d * a.dram_sample_us * 1e-6 + dram_touched * a.fault_us * 1e-6)

    def share(self, p):
        return self.scan_cost_s(p) / self.interval + self.a.charge_pct / 100

    def settle(self, high=CPU_STEADY):
        """The cost rule from its start (64) for 400 scans with the share
        `high` (above it P shrinks by a quarter, below 3/5 of it P grows by a
        quarter): the final P and the range it moves in over the last 40."""
        p, seen = PMEM_START, []
        for i in range(400):
            s = self.share(p)
            if s > high:
                p = max(PMEM_MIN, p * 3 // 4)
            elif s < high * 0.6:
                p = min(PMEM_MAX, p * 5 // 4 + 1)
            if i >= 360:
                seen.append(p)
        return p, min(seen), max(seen)

    # -- finding a contiguous hot set: the rotation, suspects and neighbours
    def rotation_inverse(self):
        """How many steps of the rotation lie between the visits of two
        neighbouring entries of the list (the stride's inverse mod n, folded):
        when it is small, the units of a contiguous region are all visited
        within a short stretch of each pass, so a region smaller than n / P
        units waits about half a pass for its first visit."""
        n = self.units
        if n < 3:
            return 1
        inv = pow(spread_stride(n), -1, n)
        return min(inv, n - inv)

    def simulate_find(self, p, seed, limit_s):
        """Seconds until 95 % of a contiguous hot set's units are found (the
        hot set on PMem at the start, DRAM with room), or inf past limit_s.
        The rotation runs over every listed unit (n, DRAM ones included) and
        skips DRAM units: p PMem units take about p / (1 - DRAM share) steps."""
        n = self.units
        h = min(self.hot_units, self.pmem_units)
        rng = random.Random(seed)
        start = rng.randrange(0, n - h + 1)
        stride = spread_stride(n)
        inv = pow(stride, -1, n) if n > 1 else 0
        steps = sorted(((u * inv) % n, u) for u in range(start, start + h))
        per_scan = max(p, round(p * self.units / self.pmem_units))
        keys = [k for k, _ in steps]
        found = set()
        suspects = []
        want = math.ceil(0.95 * h)
        cold_pos = p * self.p_cold  # cold screening hits per window, competing for suspect slots
        cursor = 0
        max_scans = int(limit_s / self.interval) + 1
        for scan in range(1, max_scans + 1):
            new_suspects = []
            # Confirmation of last window's suspects (4 pages).
            for u in suspects:
                if u in found:
                    continue
                touched = sum(1 for _ in range(CONFIRM_PAGES) if rng.random() < self.p_hot)
                if touched >= 1:
                    found.add(u)
                if touched * 2 >= CONFIRM_PAGES:
                    for nb in [u + d for r in range(1, NEIGHBOUR_REACH + 1) for d in (-r, r)]:
                        if start <= nb < start + h and nb not in found:
                            new_suspects.append(nb)
            if len(found) >= want:
                return scan * self.interval
            # Screening by the rotation: the window's steps.
            lo, hi = cursor, cursor + per_scan
            hits = []
            for a, b in ((lo, min(hi, n)), (0, hi - n)) if hi > n else ((lo, hi),):
                i = bisect.bisect_left(keys, a)
                while i < len(keys) and keys[i] < b:
                    hits.append(steps[i][1])
                    i += 1
            cursor = hi % n
            for u in hits:
                if u not in found and rng.random() < self.p_hot:
                    new_suspects.append(u)
            # At most 64 suspects, cold screening hits taking their share.
            new_suspects = list(dict.fromkeys(new_suspects))
            room = min(MAX_SUSPECTS, max(4, p // 2))
            if new_suspects and cold_pos > 0 and len(new_suspects) + cold_pos > room:
                keep = int(room * len(new_suspects) / (len(new_suspects) + cold_pos))
                rng.shuffle(new_suspects)
                new_suspects = new_suspects[:keep]
            suspects = new_suspects[:room]
        return math.inf

    def move_bound_s(self):
        """Moving the hot set in at MMTIER_MIGRATE_MBPS, a demotion for each
        promotion when DRAM is full."""
        if self.a.migrate_mbps <= 0:
            return 0.0
        return 2 * self.hot_bytes / (self.a.migrate_mbps * MiB)


def measure():
    """Per-page costs in this process: pagemap reads of present pages, a
    pread of /dev/zero, and MADV_DONTNEED of one page.  Python adds well
    under a microsecond per call; no workload runs on the other vCPU, so
    the zap has no remote TLB to flush: a lower bound for --hide-us."""
    n = 4096
    buf = mmap.mmap(-1, n * PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for i in range(n):
        buf[i * PAGE] = 1
    addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    t0 = time.perf_counter()
    present = 0
    for i in range(n):
        e = int.from_bytes(os.pread(fd, 8, (addr // PAGE + i) * 8), "little")
        present += e >> 63
    t1 = time.perf_counter()
    os.close(fd)
    z = os.open("/dev/zero", os.O_RDONLY)
    t2 = time.perf_counter()
    for i in range(n):
        os.pread(z, 8, 0)
    t3 = time.perf_counter()
    os.close(z)
    t4 = time.perf_counter()
    for i in range(0, n, 2):
        buf.madvise(mmap.MADV_DONTNEED, i * PAGE, PAGE)
    t5 = time.perf_counter()
    buf.close()
    pm, zero, zap = (t1 - t0) / n * 1e6, (t3 - t2) / n * 1e6, (t5 - t4) / (n // 2) * 1e6
    print("measured in this process (single-threaded: no remote TLB to flush): pagemap read %.2f us/page "
          "(%d of %d present), pread /dev/zero %.2f us, MADV_DONTNEED of one page %.2f us" % (pm, present, n, zero, zap))
    return pm, zap


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--footprints", default="2G,16G,256G,1T", help="heap sizes (default 2G,16G,256G,1T)")
    ap.add_argument("--hide-us", type=float, default=43, help="PMem page hide, us (default 43)")
    ap.add_argument("--syscall-us", type=float, default=2.5, help="one cheap system call / pagemap read, us (2.5)")
    ap.add_argument("--zap-page-us", type=float, default=0.3, help="each further mapped page of a span, us (0.3)")
    ap.add_argument("--no-span", action="store_true", help="one page a PMem sample, as before the span")
    ap.add_argument("--dram-sample-us", type=float, default=None,
                    help="one DRAM sample in all, us (default 2 * hide + 3 * syscall)")
    ap.add_argument("--fault-us", type=float, default=60, help="fault service per touched DRAM sample, us (60)")
    ap.add_argument("--dram-touched", type=float, default=1.0,
                    help="share of DRAM samples touched in a window (default 1: DRAM holds the hot set)")
    ap.add_argument("--scan-fixed-us", type=float, default=30, help="per-scan fixed cost, us (default 30)")
    ap.add_argument("--decide-unit-ns", type=float, default=0,
                    help="decide() per tracked unit per scan, ns (default 0: the steady state; 0.7 with "
                         "thousands of warm PMem units and DRAM at its budget, policy_bench policy_decide)")
    ap.add_argument("--list-unit-ns", type=float, default=10,
                    help="listing + heat histogram per unit per rebuild (every 8 scans), ns (default 10)")
    ap.add_argument("--charge-pct", type=float, default=0,
                    help="VM wake-up charge counted as tracking, %% of a core (default 0)")
    ap.add_argument("--interval-ms", type=float, default=100, help="MMTIER_SCAN_INTERVAL, ms (default 100)")
    ap.add_argument("--migrate-mbps", type=float, default=256, help="MMTIER_MIGRATE_MBPS (default 256)")
    ap.add_argument("--dram-pct", type=float, default=10, help="DRAM budget, %% of the footprint (default 10)")
    ap.add_argument("--hot-pct", type=float, default=1, help="hot set, %% of the footprint (default 1)")
    ap.add_argument("--hot", type=parse_size, default=0,
                    help="hot set as a size, the same at every footprint (instead of --hot-pct)")
    ap.add_argument("--hot-share", type=float, default=0.9, help="share of updates to the hot set (0.9)")
    ap.add_argument("--updates-per-s", type=float, default=25e6, help="workload updates per second (25e6)")
    ap.add_argument("--pmem-per-scan", type=int, default=0,
                    help="take P as given instead of from the cost rule (16..2048)")
    ap.add_argument("--find-limit", type=float, default=3600, help="give up finding after this many s (3600)")
    ap.add_argument("--seeds", type=int, default=9, help="simulated hot-set placements per footprint (9)")
    ap.add_argument("--no-find", action="store_true", help="skip the hot-set simulation")
    ap.add_argument("--measure", action="store_true",
                    help="measure pagemap read and page zap costs here first and use them")
    a = ap.parse_args(argv)
    try:
        footprints = [parse_size(x) for x in a.footprints.split(",") if x.strip()]
    except argparse.ArgumentTypeError as e:
        ap.error(str(e))
    if a.measure:
        pm, zap = measure()
        a.syscall_us, a.hide_us = pm, zap
    if a.dram_sample_us is None:
        a.dram_sample_us = 2 * a.hide_us + 3 * a.syscall_us
    if a.pmem_per_scan and not PMEM_MIN <= a.pmem_per_scan <= PMEM_MAX:
        ap.error("--pmem-per-scan must be in %d..%d" % (PMEM_MIN, PMEM_MAX))

    print("inputs: hide %.1f us/page, syscall %.1f us, DRAM sample %.1f us, fault service %.0f us, scan fixed "
          "%.0f us, %.1f ns per unit per scan + %.1f ns per unit per rebuild, wake charge %.1f %%; interval %g ms, "
          "window %g ms; DRAM %g %%, hot set %s taking %g of %.3g updates/s; migration "
          "%g MiB/s" % (
              a.hide_us, a.syscall_us, a.dram_sample_us, a.fault_us, a.scan_fixed_us, a.decide_unit_ns,
              a.list_unit_ns, a.charge_pct,
              a.interval_ms, a.interval_ms / 8, a.dram_pct,
              fmt_size(a.hot) if a.hot else "%g %% of the footprint" % a.hot_pct, a.hot_share, a.updates_per_s,
              a.migrate_mbps))
    print("(a model, not a measurement: see --help for where each input comes from)")
    print()
    hdr = ["footprint", "units", "PMem units", "per-unit/scan", "P (range)", "D", "scan cost", "bg CPU %",
           "quiet", "cover once", "quiet", "P search", "CPU search", "cover search", "step gap", "span", "p(hot)",
           "p(cold)", "find 95%", "move >="]
    rows = []
    for fp in footprints:
        m = Model(a, fp)
        if a.pmem_per_scan:
            p = lo = hi = ps = a.pmem_per_scan
        else:
            p, lo, hi = m.settle()
            ps = m.settle(CPU_SEARCH)[0]
        cost = m.scan_cost_s(p)
        cpu = 100 * cost / m.interval
        cover = math.ceil(m.pmem_units / p) * m.interval
        find = "-"
        if not a.no_find:
            ts = [m.simulate_find(ps, seed, a.find_limit) for seed in range(a.seeds)]
            med = statistics.median(ts)
            find = fmt_time(med) if not math.isinf(med) else "> " + fmt_time(a.find_limit)
        rows.append([fmt_size(fp), str(m.units), str(m.pmem_units), "%.2f ms" % (m.per_unit_s() * 1e3),
                     "%d (%d-%d)" % (p, lo, hi) if lo != hi else str(p), str(dram_per_scan(p)),
                     "%.2f ms" % (cost * 1e3), "%.2f" % cpu, "%.2f" % (cpu / QUIET_FACTOR), fmt_time(cover),
                     fmt_time(cover * QUIET_FACTOR), str(ps), "%.2f" % (100 * m.scan_cost_s(ps) / m.interval),
                     fmt_time(math.ceil(m.pmem_units / ps) * m.interval), str(m.rotation_inverse()), str(m.span), "%.3f" % m.p_hot, "%.4f" % m.p_cold, find,
                     fmt_time(m.move_bound_s())])
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(hdr)]
    print("  ".join(h.ljust(w) for h, w in zip(hdr, widths)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    print()
    legend = [
        "per-unit/scan: decide (--decide-unit-ns per unit) plus the rebuild amortised over 8 scans",
        "P: PMem units watched per window as the cost rule settles it (range over its last 40 scans); D: DRAM units",
        "scan cost: one scan's tracking; bg CPU %: scan cost / interval, in % of one core (quiet: the interval at",
        "  4x after 10 scans without a move)",
        "cover once: every PMem unit watched once (N_pmem / P windows)",
        "P search, CPU search, cover search: the same while searching for a hot set (the share 6 % instead of 2 %:",
        "  from the start, and for one whole rotation after a burst of promotions)",
        "step gap: rotation steps between the visits of two neighbouring units (the stride's inverse mod the",
        "  number of units); small: a contiguous region is visited in one burst per pass (see --help)",
        "span: pages of a PMem sample (1, or 16-128 where one page would see next to nothing)",
        "p(hot), p(cold): chance that a PMem sample (one page or a span) of a hot / cold unit is touched within "
        "the window",
        "find 95%%: simulated time until 95 %% of a contiguous hot set's units are confirmed, searching (median "
        "of %d placements)" % a.seeds,
        "move >=: moving the hot set in at the migration rate, a demotion for each promotion",
    ]
    print("\n".join(legend))
    return 0


if __name__ == "__main__":
    sys.exit(main())
