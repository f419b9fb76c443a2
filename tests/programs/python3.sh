#!/usr/bin/env bash
# python3 under libmmtier: a big dict and list built and dropped, a JSON round
# trip, a child started with subprocess.run, and a multiprocessing Pool(4)
# with the fork start method; output compared with the run without mmtier.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

PYTHON=$(require_prog python3 python3)

cat > "$WORK/workload.py" <<'PY'
import hashlib
import json
import multiprocessing as mp
import subprocess
import sys


def square(x):
    return (x, x * x, hashlib.sha256(str(x).encode()).hexdigest()[:8])


def main():
    d = {f"k{i}": [i, str(i) * 4, {"v": i % 97}] for i in range(400000)}
    s = json.dumps(d, sort_keys=True)
    back = json.loads(s)
    print("dict", len(d), len(s), back == d, hashlib.md5(s.encode()).hexdigest())
    del d, back, s
    lst = [str(i) * 3 for i in range(1500000)]
    lst.sort(reverse=True)
    print("list", len(lst), sum(len(x) for x in lst), lst[0], lst[-1])
    del lst
    r = subprocess.run(
        [sys.executable, "-c", "import sys; print(sum(range(10**6))); sys.exit(3)"],
        capture_output=True, text=True)
    print("child", r.returncode, r.stdout.strip(), repr(r.stderr))
    blob = bytearray(b"x" * (64 << 20))  # touched in the parent before fork
    ctx = mp.get_context("fork")
    with ctx.Pool(4) as pool:
        res = pool.map(square, range(4000), chunksize=100)
    print("pool", len(res), res[:3], res[-1], sum(r[1] for r in res))
    print("blob", len(blob), blob.count(b"x"))


if __name__ == "__main__":
    main()
PY

workload() {
  run "$PYTHON" "$WORK/workload.py"
}

run_modes workload
