"""Whole-program workload for python3: builds and drops large dicts and lists.

Each round builds a dict of N entries (string keys, values that are small
lists, tuples, dicts and, for every 8th entry, a bytes object of 520..1543
bytes, above pymalloc's 512-byte limit so it comes from malloc), derives a
list from it, sorts a slice, then drops everything.  The checksum depends only
on N and ROUNDS, so a run under another allocator must print the same one.

usage: python3 -I pyalloc.py N ROUNDS
prints: RESULT python3 <seconds> <checksum>
"""
import sys
import time


def one_round(n, r):
    d = {}
    for i in range(n):
        key = "k%d:%d" % (r, i)
        value = [i, str(i * 7), (i, r), {"a": i, "b": key}]
        if i % 8 == 0:
            value.append(bytes(520 + (i * 31 + r) % 1024))
        d[key] = value
    derived = [v[1] * (1 + i % 5) for i, v in enumerate(d.values())]
    chunk = sorted(derived[: n // 4])
    h = len(d)
    h = (h * 1000003 + sum(len(s) for s in derived)) % (1 << 61)
    h = (h * 1000003 + sum(len(v[-1]) for v in d.values() if len(v) == 5)) % (1 << 61)
    h = (h * 1000003 + len(chunk[0]) + len(chunk[-1])) % (1 << 61)
    del d, derived, chunk
    return h


def main():
    n = int(sys.argv[1])
    rounds = int(sys.argv[2])
    start = time.monotonic()
    h = 0
    for r in range(rounds):
        h = (h * 31 + one_round(n, r)) % (1 << 61)
    elapsed = time.monotonic() - start
    print("pyalloc: n=%d rounds=%d elapsed=%.3fs" % (n, rounds, elapsed))
    print("RESULT python3 %.3f %016x" % (elapsed, h))


if __name__ == "__main__":
    main()
