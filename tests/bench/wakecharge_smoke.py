#!/usr/bin/env python3
"""Smoke test of bench/workloads/wakecharge (no timing checks).

Runs it at a tiny size and checks the output: one line per placement
(other-cpu, same-cpu, other-process) with three non-negative figures, and
one RESULT line each, in that order; --only keeps one placement; a bad
argument exits 2.  Exit status 77 (fewer than 2 CPUs) is passed on as a
skip.
"""

import argparse
import re
import subprocess
import sys

NUM = r"\d+\.\d+"
LINE = re.compile(r"^\s+(other-cpu|same-cpu|other-process)\s+(%s)\s+(%s)\s+(%s)$" % (NUM, NUM, NUM))
RESULT = re.compile(r"^RESULT wakecharge (other-cpu|same-cpu|other-process) (%s)$" % NUM)
TINY = ["--footprint", "16M", "--sleep-ms", "5", "--wakes", "3", "--touch-pages", "8"]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("CHECK FAILED: " + what, file=sys.stderr)


def run(binary, extra):
    cmd = [binary] + TINY + extra
    print("+ " + " ".join(cmd), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--wakecharge", required=True)
    args = ap.parse_args()
    r = run(args.wakecharge, [])
    if r.returncode == 77:
        print("fewer than 2 CPUs: skipped")
        return 77
    check(r.returncode == 0, "exit status %d" % r.returncode)
    lines = r.stdout.splitlines()
    rows = [m.groups() for m in map(LINE.match, lines) if m]
    results = [m.groups() for m in map(RESULT.match, lines) if m]
    names = ["other-cpu", "same-cpu", "other-process"]
    check([row[0] for row in rows] == names, "placement lines %s, expected %s" % ([x[0] for x in rows], names))
    check([x[0] for x in results] == names, "RESULT lines %s, expected %s" % ([x[0] for x in results], names))
    for row in rows:
        check(all(float(v) >= 0 for v in row[1:]), "negative figure in %r" % (row,))
    # The share RESULT repeats the table's share.
    for row, res in zip(rows, results):
        check(abs(float(row[2]) - float(res[1])) <= 0.0051,
              "RESULT %s %s does not match the table's %s" % (res[0], res[1], row[2]))

    r = run(args.wakecharge, ["--only", "same-cpu"])
    check(r.returncode == 0, "--only: exit status %d" % r.returncode)
    got = [m.group(1) for m in map(RESULT.match, r.stdout.splitlines()) if m]
    check(got == ["same-cpu"], "--only same-cpu gave %s" % got)

    r = run(args.wakecharge, ["--only", "nowhere"])
    check(r.returncode == 2 and "usage" in r.stderr, "a bad --only: exit status %d" % r.returncode)

    if failures:
        print("%d check(s) failed" % len(failures), file=sys.stderr)
        return 1
    print("wakecharge smoke: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
