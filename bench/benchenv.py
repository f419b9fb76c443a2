"""What the Python benchmark drivers of bench/ share: sizes and the machine.

Imported by the scripts beside it (python3 bench/NAME.py puts bench/ on
sys.path).  Only the Python standard library.
"""

import os
import re

KiB, MiB, GiB, TiB = 1 << 10, 1 << 20, 1 << 30, 1 << 40


def parse_size(text):
    """Bytes of a size such as 512M, 1.5G or 4096 (K/M/G/T binary, optional i?B)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", text, re.I)
    if not m:
        raise ValueError("not a size: %r" % text)
    mult = {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB}[m.group(2).upper()]
    return int(round(float(m.group(1)) * mult))


def meminfo():
    """/proc/meminfo in bytes."""
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            parts = v.split()
            if parts:
                out[k] = int(parts[0]) * KiB
    return out


def fs_type(path):
    """The file system type of the mount holding path (/proc/self/mountinfo)."""
    path = os.path.realpath(path)
    best, kind = "", "?"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mnt = left.split()[4].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, kind = mnt, right.split()[0]
    except OSError:
        pass
    return kind


def cpu_model():
    """The CPU's model name, or ?."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def parse_env(items, error):
    """VAR=VALUE strings as a dict; error(message) for a malformed one."""
    env = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq or not k:
            error("--env %r: expected VAR=VALUE" % item)
        env[k] = v
    return env
