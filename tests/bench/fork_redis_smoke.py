#!/usr/bin/env python3
"""Smoke test of bench/fork_redis.py (no timing checks).

Runs the driver end to end at a tiny size (8 MiB of values, one round)
with the library and without preload, once with a BGSAVE per round and
once under the server's own save schedule (--autosave '1 100', 3 s of
writes), and checks that each exits 0, prints the table rows of both runs
and says the data check passed for the library: its DEBUG DIGEST equals
the run without preload, every value reads back as written and (with a
BGSAVE per round) the dump.rdb holds the data of the BGSAVE.  Exit 77 (a skip) when Debian's redis-server is not
installed.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--driver", required=True)
    ap.add_argument("--lib", required=True)
    args = ap.parse_args()
    if not os.access("/usr/bin/redis-server", os.X_OK):
        print("redis-server is not installed (scripts/install-deps.sh installs it)")
        return 77
    failures = []
    # A BGSAVE per round; then the server's own save schedule (--autosave).
    for extra, row, check in (
            ([], r"BGSAVE 1 \+ writes", r"; dump\.rdb = the data at BGSAVE in 1/1 rounds"),
            (["--autosave", "1 100", "--write-seconds", "3"], r"round 1: [1-9]\d* BGSAVE \+ writes", "")):
        with tempfile.TemporaryDirectory(prefix="fork_redis_smoke-") as work:
            pmem = os.path.join(work, "pmem")
            os.mkdir(pmem)
            cmd = [sys.executable, args.driver, "--lib", "lib=" + args.lib, "--pmem-dir", pmem, "--workdir", work,
                   "--data", "8M", "--rounds", "1", "--write-seconds", "1", "--settle", "0.5"] + extra
            print("+ " + " ".join(cmd), flush=True)
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
            sys.stdout.write(r.stdout)
            sys.stderr.write(r.stderr)
            if r.returncode != 0:
                failures.append("%s: exit status %d" % (extra, r.returncode))
            for label in ("none", "lib"):
                for phase in ("after load", row):
                    if not re.search(r"^%s\s+%s\s" % (label, phase), r.stdout, re.M):
                        failures.append("%s: no row %r for %s" % (extra, phase, label))
            if not re.search(r"^\s+lib\s+ok: DEBUG DIGEST = none's; all 8192 values as written%s$" % check,
                             r.stdout, re.M):
                failures.append("%s: no passing data check for the library" % extra)
            if os.listdir(pmem):
                failures.append("%s: left in the PMem directory: %s" % (extra, os.listdir(pmem)))
    for f in failures:
        print("CHECK FAILED: " + f, file=sys.stderr)
    print("%d checks failed" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
