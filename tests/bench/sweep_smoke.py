#!/usr/bin/env python3
"""Smoke test of the scale sweep bench/sweep.py (no timing checks).

Lists the cells of the presets with --dry-run (quick: six cells that take
both ends of every dimension; issue: the issue's three cells), then runs
--preset quick with every dimension given one tiny value, so that it comes
down to one cell (256 MiB footprint, 10 % hot set, zipf skew, PMem on
tmpfs, 3 s per phase), against the library and against itself as
--compare self=: the table must have its columns and one row per library
for that cell with a PASS, MISS or SKIP verdict, the comparison section and
the totals; the CSV must have the same rows with the parsed figures; the
per-run logs must be kept; no PMem directory may be left behind.
"""

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile

failures = []
COLUMNS = ["cell", "lib", "footprint", "hot (%fp)", "budget", "skew", "pos", "fs", "fill_s", "t95_start",
           "t95_move", "hot_end%", "bg_cpu%", "idle_cpu%", "Mupd/s", "promo", "demo", "smp/scan", "verdict"]


def check(cond, what):
    if not cond:
        failures.append(what)
        print("CHECK FAILED: " + what, file=sys.stderr)
    return cond


def run(args, extra, timeout=300):
    cmd = [sys.executable, args.sweep, "--build", args.build, "--lib", args.lib] + extra
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr[-4000:])
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", required=True)
    ap.add_argument("--build", required=True)
    ap.add_argument("--lib", required=True)
    args = ap.parse_args()

    r = run(args, ["--preset", "quick", "--dry-run"])
    rows = [l for l in r.stdout.splitlines() if re.match(r"^\s*\d+\s+\S", l)]
    check(r.returncode == 0 and len(rows) == 6, "quick preset: %d cells listed, expected 6" % len(rows))
    for want in ("512M,", "16G,", "uniform", "zipf:0.99", "start", "middle", "end", "tmpfs", "ext4",
                 "1.5x", "4x"):
        check(any(want in l for l in rows), "quick preset: no cell with %s" % want)
    check("note: the budget holds 0 unit(s)" in r.stdout and "caps the workload's DRAM" in r.stdout,
          "quick preset: no notes on the cells whose DRAM cannot hold the hot set or is capped by the ratio")
    r = run(args, ["--preset", "issue", "--dry-run"])
    rows = [l for l in r.stdout.splitlines() if re.match(r"^\s*\d+\s+\S", l)]
    check(r.returncode == 0 and len(rows) == 3, "issue preset: %d cells listed, expected 3" % len(rows))
    for fp, hot, b in (("1.5G", "96M", "2x"), ("4G", "128M", "3x"), ("8G", "256M", "3x")):
        check(any(l.split()[1] == fp + "," and ("hot %s " % hot) in l and ("budget %s " % b) in l
                  and "uniform" in l and "tmpfs" in l for l in rows),
              "issue preset: no cell %s/%s/%s" % (fp, hot, b))
    r = run(args, ["--preset", "issue", "--footprints", "1G", "--dry-run"])
    check(r.returncode == 2, "issue preset with --footprints: exit status %d, expected 2" % r.returncode)

    work = tempfile.mkdtemp(prefix="mmtier-sweep-smoke-")
    pmem = tempfile.mkdtemp(prefix="mmtier-sweep-smoke-", dir="/dev/shm")
    try:
        csv_path = os.path.join(work, "sweep.csv")
        logs = os.path.join(work, "logs")
        r = run(args, ["--preset", "quick", "--footprints", "256M", "--hot-pcts", "10", "--budgets", "2",
                       "--skews", "zipf:0.99", "--positions", "end", "--fs", "tmpfs", "--seconds", "3",
                       "--tmpfs-dir", pmem, "--compare", "self=" + args.lib, "--csv", csv_path, "--logs", logs])
        check(r.returncode == 0, "sweep: exit status %d" % r.returncode)
        lines = r.stdout.splitlines()
        header = next((l for l in lines if l.startswith("cell ")), "")
        check(header.split() and all(c in header for c in COLUMNS), "table header lacks columns: %r" % header)
        check(re.findall(r"\S+(?: \(%fp\))?", header) == COLUMNS, "table columns %r, expected %r"
              % (re.findall(r"\S+(?: \(%fp\))?", header), COLUMNS))
        row = re.compile(r"^1\s+(libmmtier(?:@self)?)\s+256M\s+26M \(10\.2%\)\s+2x=52M(?: \(\S+\))?\s+zipf:0\.99\s+"
                         r"end\s+tmpfs\s+" + r"(\S+)\s+" * 10 + r"(.*)$")
        data = [l for l in lines if re.match(r"^1\s+libmmtier", l)]
        check(len(data) == 2, "%d table rows for cell 1, expected 2 (libmmtier, libmmtier@self)" % len(data))
        for l in data:
            m = row.match(l)
            if not check(m is not None, "row does not describe the cell: %r" % l):
                continue
            fill, t95s, t95m, hot_end, bg, idle, mupd, promo, demo, smp, verdict = m.groups()[1:]
            if verdict.startswith("SKIP: "):
                continue
            check(re.fullmatch(r"(PASS|MISS\([a-z0-9,]+\))( \[DRAM < hot set\])?", verdict) is not None,
                  "row verdict: %r" % verdict)
            check(all(re.fullmatch(r"\d+\.\d|>3", t) for t in (t95s, t95m)), "t95 columns: %r" % l)
            check(re.fullmatch(r"\d+/\d+", hot_end) is not None, "hot_end%% column: %r" % l)
            check(re.fullmatch(r"\d+\.\d~?/\d+\.\d~?", bg) is not None, "bg_cpu%% column: %r" % l)
            check(all(re.fullmatch(r"\d+", x) for x in (promo, demo, smp)), "promo/demo/smp columns: %r" % l)
        check(any(l.startswith("libmmtier against libmmtier@self") for l in lines), "no comparison section")
        check(any(re.match(r"^libmmtier: 1 of 1 cells run; PASS \d, MISS \d, FAIL 0", l) for l in lines)
              or any(re.match(r"^libmmtier: 0 of 1 cells run; .*SKIP 1", l) for l in lines), "no totals line")
        with open(csv_path) as f:
            recs = list(csv.DictReader(f))
        check(len(recs) == 2 and {x["lib"] for x in recs} == {"libmmtier", "libmmtier@self"},
              "CSV rows: %s" % [(x.get("cell"), x.get("lib")) for x in recs])
        for x in recs:
            if x["status"] == "ok":
                check(x["footprint"] == str(256 << 20) and x["skew"] == "zipf:0.99", "CSV cell fields: %s" % x)
                check(x["scans"].isdigit() and int(x["scans"]) > 0, "CSV: no mover line parsed: %s" % x)
                check(x["end_p0"] != "" and x["end_p1"] != "" and x["hot_updates_p1"] != "",
                      "CSV: no phase-end shares: %s" % x)
                check(x["bg_p0"] != "" and x["bg_p1"] != "", "CSV: no background CPU: %s" % x)
            else:
                check(x["status"] == "skipped", "CSV: run failed: %s" % x)
        check(os.path.isdir(logs) and any(n.endswith(".out") for n in os.listdir(logs)), "no logs kept")
        check(os.listdir(pmem) == [], "PMem directories left behind: %s" % os.listdir(pmem))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(pmem, ignore_errors=True)
    if failures:
        print("%d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("sweep smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
