#!/usr/bin/env python3
"""Smoke test of the benchmark driver bench/run_bench.py (no timing checks).

--mode table: runs the driver with --size tiny --rounds 1 and checks that it
exits 0, prints one table row for every workload under every allocator (ok
or FAIL with a reason, never missing), writes the same rows to the CSV, that
the reference allocators (glibc, jemalloc, mimalloc) and libmmtier have no FAIL row
(--strict), and that it leaves no temporary files behind.  Then runs it
again with --compare self=<the same libmmtier.so> and checks the column
libmmtier@self (a row per workload, none FAIL) and the section comparing
libmmtier with it.

--mode micro-callgrind: runs the driver's --micro and --callgrind modes on
the tiny size and checks that each reports a number for every allocator that
is expected to work (glibc, jemalloc, mimalloc, libmmtier, and the linked
mmtier API), and that the callgrind output compares libmmtier with mimalloc;
then both again with only libmmtier and --compare self=<the same library>,
for the column libmmtier@self and the section comparing the two.
"""

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile

# Every workload of the default set; the spawn rows are process start+exit.
WORKLOADS = ["churn_1t", "churn_2t", "xthread", "large_malloc", "large_realloc", "large_mmap",
             "spawn_true", "spawn_small", "python3", "sqlite3", "redis"]
ALLOCATORS = ["glibc", "jemalloc", "mimalloc", "libmemtier", "libmmtier"]
MUST_WORK = ["glibc", "jemalloc", "mimalloc", "libmmtier"]

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("CHECK FAILED: " + what, file=sys.stderr)


def run_driver(args, extra, scratch):
    """Runs the driver with TMPDIR and --pmem-dir inside scratch dirs."""
    tmp = os.path.join(scratch, "tmp")
    os.makedirs(tmp)
    pmem = tempfile.mkdtemp(prefix="mmtier-bench-smoke-", dir="/dev/shm")
    csv_path = os.path.join(scratch, "out.csv")
    env = dict(os.environ)
    env["TMPDIR"] = tmp
    cmd = [sys.executable, args.driver, "--build", args.build, "--lib", args.lib,
           "--size", "tiny", "--rounds", "1", "--csv", csv_path, "--pmem-dir", pmem] + extra
    print("+ " + " ".join(cmd), flush=True)
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    finally:
        left_pmem = os.listdir(pmem)
        shutil.rmtree(pmem, ignore_errors=True)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr[-6000:])
    check(r.returncode == 0, "driver %s exited with status %d" % (" ".join(extra), r.returncode))
    check(os.listdir(tmp) == [], "driver left files in TMPDIR: %s" % os.listdir(tmp))
    check(left_pmem == [], "driver left files in its --pmem-dir: %s" % left_pmem)
    rows = []
    if os.path.exists(csv_path):
        with open(csv_path, newline="") as f:
            rows = list(csv.DictReader(f))
    check(rows, "driver wrote no CSV rows to %s" % csv_path)
    return r.stdout, rows


def check_table(args, scratch):
    out, rows = run_driver(args, ["--strict", ",".join(MUST_WORK)], scratch)
    for w in WORKLOADS:
        for a in ALLOCATORS:
            pat = re.compile(r"^%s\s+%s\s+\S+\s+(ops/s|s)\s+.*\s(ok|FAIL \(.+\))$"
                             % (re.escape(w), re.escape(a)), re.M)
            found = pat.findall(out)
            check(len(found) == 1, "table has %d rows for %s under %s, expected 1" % (len(found), w, a))
            recs = [r for r in rows if r["section"] == "workload" and r["workload"] == w
                    and r["allocator"] == a]
            check(len(recs) == 1, "CSV has %d rows for %s under %s, expected 1" % (len(recs), w, a))
            for rec in recs:
                check(rec["status"] in ("ok", "FAIL"), "CSV status %r for %s/%s" % (rec["status"], w, a))
                check(rec["runs"] == "1", "CSV runs %r for %s/%s, expected 1" % (rec["runs"], w, a))
                if rec["status"] == "FAIL":
                    check(rec["reason"] != "", "FAIL row without a reason for %s/%s" % (w, a))
                    check(a not in MUST_WORK, "%s FAILs under %s: %s" % (w, a, rec["reason"]))
                else:
                    check(float(rec["median"]) > 0, "non-positive median for %s/%s" % (w, a))
                    check(rec["peak_rss_kib"] != "" and float(rec["peak_rss_kib"]) > 0,
                          "no peak RSS for %s/%s" % (w, a))
                if a == "libmmtier" and rec["status"] == "ok":
                    total = float(rec["mmtier_dram_peak_bytes"] or 0) + float(rec["mmtier_pmem_peak_bytes"] or 0)
                    check(total > 0, "no mmtier placed-peak recorded for %s" % w)
    check(len([r for r in rows if r["section"] == "workload"]) == len(WORKLOADS) * len(ALLOCATORS),
          "CSV has extra workload rows")
    check("Targets of issue 3 for libmmtier" in out, "no target summary in the output")
    header = [l for l in out.splitlines() if l.startswith("workload ")]
    check(len(header) == 1 and "vs mimalloc" in header[0], "table header has no 'vs mimalloc': %r" % header)
    for w in ("churn_1t", "churn_2t"):
        check(re.search(r"^  %s\s+throughput vs mimalloc >= 1\.10x\s+measured \d+\.\d+x\s+(meets|MISSES)$"
                        % w, out, re.M), "no target line against mimalloc for %s" % w)
        rec = [r for r in rows if r["workload"] == w and r["allocator"] == "libmmtier"]
        check(len(rec) == 1 and rec[0]["ratio_vs_mimalloc"] != "",
              "CSV has no ratio_vs_mimalloc for libmmtier in %s" % w)
    check("libmmtier against libmmtier@" not in out, "a comparison section without --compare")


def check_compare(args, scratch):
    other = "libmmtier@self"
    out, rows = run_driver(args, ["--compare", "self=" + args.lib,
                                  "--strict", ",".join(MUST_WORK + [other])],
                           os.path.join(scratch, "compare"))
    title = "libmmtier against %s:" % other
    check(title in out, "no section %r in the output" % title)
    section = out[out.find(title):] if title in out else ""
    for w in WORKLOADS:
        table = re.findall(r"^%s\s+%s\s+\S+\s+(?:ops/s|s)\s+.*\s(ok|FAIL \(.+\))$"
                           % (re.escape(w), re.escape(other)), out, re.M)
        check(table == ["ok"], "table rows for %s under %s: %r, expected one ok" % (w, other, table))
        recs = [r for r in rows if r["section"] == "workload" and r["workload"] == w
                and r["allocator"] == other]
        check(len(recs) == 1 and recs[0]["status"] == "ok" and recs[0]["runs"] == "1",
              "CSV rows for %s under %s: %r" % (w, other, recs))
        # workload, unit, median, spread, median, spread, ratio, status
        line = re.findall(r"^\s+%s\s+(?:ops/s|s)\s+\S+\s+\S+ \(\S+%%\)\s+\S+\s+"
                          r"\S+ \(\S+%%\)\s+\d+\.\d+x\s+ok$" % re.escape(w), section, re.M)
        check(len(line) == 1, "comparison section has no ok line for %s" % w)


def check_modes(args, scratch):
    out, rows = run_driver(args, ["--micro"], os.path.join(scratch, "micro"))
    columns = ALLOCATORS + ["mmtier API"]
    header = [l for l in out.splitlines() if l.strip().startswith("benchmark")]
    check(len(header) == 1 and all(c in header[0] for c in columns),
          "micro table header missing or without every allocator: %r" % header)
    for col in columns:
        rec = [r for r in rows if r["section"] == "micro" and r["workload"] == "malloc_free/16"
               and r["allocator"] == col]
        check(len(rec) == 1, "micro CSV has %d malloc_free/16 rows for %s" % (len(rec), col))
        if col in MUST_WORK + ["mmtier API"]:
            check(rec and rec[0]["status"] == "ok" and float(rec[0]["median"]) > 0,
                  "micro malloc_free/16 under %s: %r" % (col, rec and rec[0]["reason"]))
    for name in ("mmtier_malloc_on_free/tier:1/size:16", "mmtier_tier_of/kind:0"):
        rec = [r for r in rows if r["workload"] == name and r["allocator"] == "mmtier API"]
        check(len(rec) == 1 and rec[0]["status"] == "ok", "micro %s missing or failed" % name)

    if shutil.which("valgrind") is None:
        check(False, "valgrind is not installed (scripts/install-deps.sh installs it)")
        return
    out, rows = run_driver(args, ["--callgrind"], os.path.join(scratch, "callgrind"))
    for a in ALLOCATORS:
        check(re.search(r"^\s+%s\s+(\S+)\s+(\S+)\s+(ok|FAIL)" % re.escape(a), out, re.M) is not None,
              "callgrind table has no row for %s" % a)
        for mode in ("pair_64", "pair_mixed"):
            rec = [r for r in rows if r["section"] == "callgrind" and r["workload"] == mode
                   and r["allocator"] == a]
            check(len(rec) == 1, "callgrind CSV has %d %s rows for %s" % (len(rec), mode, a))
            if a in MUST_WORK and rec:
                check(rec[0]["status"] == "ok" and float(rec[0]["median"]) > 0,
                      "callgrind %s under %s: %s" % (mode, a, rec[0]["reason"]))
    check("libmmtier against libmmtier@" not in out, "a callgrind comparison section without --compare")
    title = "libmmtier against mimalloc"
    section = out[out.find(title):] if title in out else ""
    check(section != "", "callgrind output has no section comparing libmmtier with mimalloc")
    for size in ("64 B", "16..1024 B"):
        check(re.search(r"^\s+%s\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d+x\s+(meets|MISSES)$"
                        % re.escape(size), section, re.M),
              "callgrind section against mimalloc has no line with both counts for %s" % size)

    other = "libmmtier@self"
    compare = ["--allocators", "libmmtier", "--compare", "self=" + args.lib]
    # mode, lines of its comparison section, its CSV rows (section, workloads)
    for mode, lines, csv_rows in (
            ("--micro", ["malloc_free/16", "churn_16_1024"],
             ("micro", ["malloc_free/16", "churn_16_1024"])),
            ("--callgrind", ["64 B", "16..1024 B"], ("callgrind", ["pair_64", "pair_mixed"]))):
        out, rows = run_driver(args, [mode] + compare, os.path.join(scratch, mode[2:] + "-compare"))
        title = "libmmtier against %s:" % other
        check(title in out, "%s: no section %r in the output" % (mode, title))
        section = out[out.find(title):] if title in out else ""
        for name in lines:
            check(re.search(r"^\s+%s\s+.*\s\d+\.\d+x\s+ok$" % re.escape(name), section, re.M),
                  "%s: comparison section has no ok line for %s" % (mode, name))
        recs = [r for r in rows if r["section"] == csv_rows[0] and r["workload"] in csv_rows[1]
                and r["allocator"] == other]
        check(len(recs) == len(csv_rows[1]) and all(r["status"] == "ok" for r in recs),
              "%s: CSV rows under %s missing or FAIL: %r" % (mode, other, [r["reason"] for r in recs]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--mode", choices=["table", "micro-callgrind"], required=True)
    args = ap.parse_args()
    scratch = tempfile.mkdtemp(prefix="mmtier-bench-smoke-")
    try:
        if args.mode == "table":
            check_table(args, scratch)
            check_compare(args, scratch)
        else:
            check_modes(args, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
