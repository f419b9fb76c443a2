#!/usr/bin/env python3
"""Leaves NUMA node 0's free memory in holes of one page.

usage: holes.py MIB

Takes MIB MiB of node 0 in 4 KiB pages (bound there, no huge pages),
locks them and unmaps every other page, so that with
vm.compact_unevictable_allowed=0 the kernel cannot move the rest to
make a free block: half of MIB is free on node 0 and no huge page fits
in it.  Prints "ready" and holds the pages until its
standard input closes.
"""
import ctypes
import sys

SYS_MBIND = 237  # x86_64
MPOL_BIND = 2
MADV_NOHUGEPAGE = 15
PROT_RW, MAP_PRIVATE_ANON = 3, 0x22
PAGE = 4096


def main():
    size = int(sys.argv[1]) << 20
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.mlock.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    libc.syscall.restype = ctypes.c_long
    addr = libc.mmap(None, size, PROT_RW, MAP_PRIVATE_ANON, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        sys.exit("holes: mmap failed")

    def need(ok, what):
        if not ok:
            sys.exit("holes: %s failed (errno %d)" % (what, ctypes.get_errno()))

    need(libc.madvise(addr, size, MADV_NOHUGEPAGE) == 0, "madvise(MADV_NOHUGEPAGE)")
    mask = ctypes.c_ulong(1)
    need(libc.syscall(SYS_MBIND, ctypes.c_void_p(addr), ctypes.c_size_t(size), MPOL_BIND, ctypes.byref(mask),
                      ctypes.c_ulong(64), 0) == 0, "mbind")
    ctypes.memset(addr, 1, size)
    need(libc.mlock(addr, size) == 0, "mlock")
    # A locked page cannot be dropped with madvise: unmapped (a mapping
    # each for the rest, well within vm.max_map_count for some 100 MiB).
    for off in range(0, size, 2 * PAGE):
        need(libc.munmap(addr + off, PAGE) == 0, "munmap")
    print("ready", flush=True)
    sys.stdin.read()


main()
