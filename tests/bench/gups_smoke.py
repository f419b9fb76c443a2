#!/usr/bin/env python3
"""Smoke test of the GUPS hot-set workload bench/workloads/gups (no timing checks).

Runs gups at a tiny size under libmmtier.so and without it and checks the
output format: the per-interval lines (time, updates/s, hot-set and footprint
DRAM shares, background-thread CPU, the idle control thread's CPU, phase),
the hot-set move, the per-phase SUMMARY lines, the MODELLED line, VERIFY and the RESULT line.  In --updates
mode (a fixed number of updates per thread) the verification must pass and
the checksum must be the same with and without the library, and differ for
another seed; --idle-period 0 (no control thread) must print n/a for the
control; --self-test-lost-write (one update undone after the run) must
be caught as MISMATCH with exit status 1.  --skew zipf:S (hot updates over
the hot set's pages by a Zipf law): the same formats plus the skew line and
the hot updates' DRAM share in SUMMARY, a checksum equal with and without
the library and unlike the uniform one, verification with several threads;
--hot-offset/--move-to positions start, middle and end; bad --skew values
rejected with exit status 2.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

failures = []

NUM = r"\d+\.\d+"
INTERVAL = re.compile(r"^\s+(%s)\s+(%s)\s+(%s|n/a)\s+(%s|n/a)\s+(%s|n/a)\s+(%s|n/a)\s+([01])$"
                      % (NUM, NUM, NUM, NUM, NUM, NUM))
RESULT = re.compile(r"^RESULT gups (%s) ([0-9a-f]{16})$" % NUM)
SIZE = ["--footprint", "64M", "--hot", "4M"]


def check(cond, what):
    if not cond:
        failures.append(what)
        print("CHECK FAILED: " + what, file=sys.stderr)
    return cond


def run(args, extra, preload, pmem):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMTIER_") and k != "LD_PRELOAD"}
    if preload:
        env["LD_PRELOAD"] = args.lib
        env["MMTIER_DRAM_LIMIT"] = "16M"
        env["MMTIER_PMEM_PATH"] = pmem
    cmd = [args.gups] + SIZE + extra
    print("+ %s%s" % ("LD_PRELOAD=%s " % args.lib if preload else "", " ".join(cmd)), flush=True)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr[-4000:])
    return r


def parse(out):
    lines = out.splitlines()
    intervals = [m.groups() for m in (INTERVAL.match(l) for l in lines) if m]
    results = [m.groups() for m in (RESULT.match(l) for l in lines) if m]
    return lines, intervals, results


def check_common(tag, r, preload, moved, control=True):
    lines, intervals, results = parse(r.stdout)
    check(r.returncode == 0, "%s: exit status %d" % (tag, r.returncode))
    check(any(l.startswith("#") and "time_s" in l and "hot_dram%" in l for l in lines),
          "%s: no interval header line" % tag)
    check(len(intervals) >= 1, "%s: no interval lines" % tag)
    for iv in intervals:
        t, rate, hot, alls, bg, idle, phase = iv
        if control:
            check(idle != "n/a" and float(idle) >= 0.0, "%s: idle_cpu %r, expected a figure" % (tag, idle))
        else:
            check(idle == "n/a", "%s: idle_cpu %r without a control thread, expected n/a" % (tag, idle))
        if preload:
            check(hot != "n/a" and 0.0 <= float(hot) <= 100.0, "%s: hot_dram %r not a share" % (tag, hot))
            check(alls != "n/a" and 0.0 <= float(alls) <= 100.0, "%s: all_dram %r not a share" % (tag, alls))
        else:
            check(hot == "n/a" and alls == "n/a", "%s: DRAM shares %r/%r without mmtier, expected n/a"
                  % (tag, hot, alls))
            check(bg == "n/a", "%s: bg_cpu %r without mmtier, expected n/a" % (tag, bg))
    times = [float(iv[0]) for iv in intervals]
    check(times == sorted(times), "%s: interval times not increasing: %s" % (tag, times))
    phases = [iv[6] for iv in intervals]
    check(phases == sorted(phases), "%s: phases not in order: %s" % (tag, phases))
    summaries = [l for l in lines if l.startswith("SUMMARY phase ")]
    want = 2 if moved else 1
    check(len(summaries) == want, "%s: %d SUMMARY lines, expected %d" % (tag, len(summaries), want))
    for i, s in enumerate(summaries):
        check(s.startswith("SUMMARY phase %d (hot set at offset " % i), "%s: bad SUMMARY line %r" % (tag, s))
        if preload:
            check(re.search(r"reached 95%% after %s s|95%% not reached \(max %s%%\)" % (NUM, NUM), s) is not None,
                  "%s: SUMMARY without a convergence figure: %r" % (tag, s))
        check("bg CPU" in s, "%s: SUMMARY without bg CPU: %r" % (tag, s))
        if "of one core" in s:
            check(("idle control thread" in s) == control,
                  "%s: SUMMARY %s the control's figure: %r" % (tag, "without" if control else "with", s))
    if moved:
        check(summaries[1:] and "offset 16 MiB" in summaries[1], "%s: phase 1 not at the second quarter" % tag)
    modelled = [l for l in lines if l.startswith("MODELLED")]
    check(len(modelled) == 1, "%s: %d MODELLED lines, expected 1" % (tag, len(modelled)))
    if preload and modelled:
        m = re.search(r"this placement (%s) s .* all-DRAM (%s) s, all-PMem (%s) s" % (NUM, NUM, NUM), modelled[0])
        if check(m is not None and "not measured" in modelled[0], "%s: MODELLED line malformed" % tag):
            placed, dram, pmem = (float(x) for x in m.groups())
            check(dram <= placed <= pmem, "%s: modelled time %s outside [all-DRAM %s, all-PMem %s]"
                  % (tag, placed, dram, pmem))
    if not preload and modelled:
        check("n/a" in modelled[0], "%s: MODELLED without mmtier should be n/a" % tag)
    check(any(l.startswith("VERIFY ok") for l in lines), "%s: no VERIFY ok line" % tag)
    check(not any("MISMATCH" in l for l in lines), "%s: MISMATCH" % tag)
    check(len(results) == 1 and lines and RESULT.match(lines[-1]) is not None,
          "%s: expected exactly one RESULT line, last" % tag)
    if preload:
        check(any(l.startswith("# mmtier_get_stats: unit ") for l in lines),
              "%s: mmtier_get_stats not found under LD_PRELOAD" % tag)
    else:
        check(any("mmtier_tier_of: not found" in l for l in lines), "%s: n/a reason not printed" % tag)
    return intervals, results[0] if results else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gups", required=True)
    ap.add_argument("--lib", required=True)
    args = ap.parse_args()
    pmem = tempfile.mkdtemp(prefix="mmtier-gups-smoke-", dir="/dev/shm")
    try:
        timed = ["--seconds", "2", "--move-at", "1", "--report-interval", "0.5"]
        for preload in (True, False):
            tag = "time mode, %s" % ("libmmtier" if preload else "no preload")
            r = run(args, timed, preload, pmem)
            intervals, res = check_common(tag, r, preload, moved=True)
            check(len(intervals) >= 3, "%s: %d interval lines in 2 s at 0.5 s, expected >= 3"
                  % (tag, len(intervals)))
            check({iv[6] for iv in intervals} == {"0", "1"}, "%s: intervals not in both phases" % tag)
            if preload:
                check(any(l.startswith("# background threads: ") and "mmtier-bg" in l for l in r.stdout.splitlines()),
                      "%s: the background threads are not named" % tag)
            check(any(re.match(r"^# t=%s s: hot set moved from offset 48 MiB to offset 16 MiB" % NUM, l)
                      for l in r.stdout.splitlines()), "%s: no hot-set move line" % tag)
            if res:
                check(res[1] == "0" * 16, "%s: time-mode checksum %s, expected 0" % (tag, res[1]))
                check(float(res[0]) > 0, "%s: RESULT rate %s" % (tag, res[0]))

        sums = {}
        counted = ["--updates", "300000", "--threads", "2"]
        for preload in (True, False):
            tag = "updates mode, %s" % ("libmmtier" if preload else "no preload")
            r = run(args, counted, preload, pmem)
            _, res = check_common(tag, r, preload, moved=True)
            check(re.search(r"^VERIFY ok: contents match the 600000 replayed updates$", r.stdout, re.M) is not None,
                  "%s: VERIFY does not count 2 x 300000 updates" % tag)
            if res:
                check(res[1] != "0" * 16, "%s: checksum is 0" % tag)
                sums[preload] = res[1]
        check(len(sums) == 2 and sums[True] == sums[False],
              "checksum differs with and without libmmtier: %s" % sums)

        r = run(args, timed + ["--idle-period", "0"], True, pmem)
        check_common("time mode, no control thread", r, True, moved=True, control=False)

        r = run(args, counted + ["--seed", "2"], False, pmem)
        _, res = check_common("updates mode, seed 2", r, False, moved=True)
        check(res is not None and res[1] != sums.get(False), "checksum does not depend on the seed")

        # --skew zipf:S.
        zipf = ["--skew", "zipf:0.99"]
        r = run(args, timed + zipf, True, pmem)
        check_common("time mode, zipf, libmmtier", r, True, moved=True)
        check(re.search(r"^# skew: zipf 0\.99 over the hot set's 1024 pages .*hottest page %s%%" % NUM,
                        r.stdout, re.M) is not None, "zipf: no skew line")
        summaries = [l for l in r.stdout.splitlines() if l.startswith("SUMMARY phase ")]
        check(summaries and all(re.search(r"at phase end \(pages taking %s%% of the hot updates\)" % NUM, l)
                                for l in summaries), "zipf: SUMMARY without the hot updates' DRAM share")
        r = run(args, timed, True, pmem)
        check(re.search(r"^# skew: uniform over the hot set$", r.stdout, re.M) is not None, "uniform: no skew line")
        check("of the hot updates" not in r.stdout, "uniform: SUMMARY has the zipf-only figure")
        zsums = {}
        for preload in (True, False):
            tag = "updates mode, zipf, %s" % ("libmmtier" if preload else "no preload")
            r = run(args, counted + zipf, preload, pmem)
            _, res = check_common(tag, r, preload, moved=True)
            if res:
                zsums[preload] = res[1]
        check(len(zsums) == 2 and zsums[True] == zsums[False],
              "zipf checksum differs with and without libmmtier: %s" % zsums)
        check(zsums.get(False) not in (None, sums.get(False)), "zipf checksum equals the uniform one")
        r = run(args, ["--updates", "200000", "--threads", "3", "--skew", "zipf:1.5"], False, pmem)
        check(r.returncode == 0 and "VERIFY ok" in r.stdout, "zipf, 3 threads: verification failed")

        # Positions.
        r = run(args, ["--updates", "1000", "--hot-offset", "end", "--move-to", "start"], False, pmem)
        check(re.search(r"hot set 4 MiB at offset 60 MiB \(end\), moving to offset 0 B \(start\)", r.stdout)
              is not None, "positions end/start not resolved")
        r = run(args, ["--updates", "1000", "--hot-offset", "middle", "--move-to", "end"], False, pmem)
        check(re.search(r"hot set 4 MiB at offset 30 MiB \(middle\), moving to offset 60 MiB \(end\)", r.stdout)
              is not None, "position middle not resolved")
        for bad in (["--skew", "zipf"], ["--skew", "zipf:x"], ["--skew", "pareto:1"], ["--hot-offset", "centre"]):
            r = run(args, ["--updates", "1000"] + bad, False, pmem)
            check(r.returncode == 2, "%s: exit status %d, expected 2" % (" ".join(bad), r.returncode))

        r = run(args, counted + ["--self-test-lost-write"], True, pmem)
        check(r.returncode == 1, "lost-write self-test: exit status %d, expected 1" % r.returncode)
        check(re.search(r"^MISMATCH", r.stdout, re.M) is not None, "lost-write self-test: no MISMATCH line")
        check(RESULT.search(r.stdout) is None and "VERIFY ok" not in r.stdout,
              "lost-write self-test: printed VERIFY ok or RESULT")
    finally:
        shutil.rmtree(pmem, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("gups smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
