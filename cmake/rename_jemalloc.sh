#!/bin/sh
# Builds a private copy of Debian's position-independent jemalloc archive in
# which every exported name (malloc, free, mallocx, operator new, ...) is
# renamed to mmtier_je_<name>, and its calls to mmap, munmap, madvise,
# mprotect and pthread_atfork go to mmtier_engine_<name>
# (lib/alloc/engine_os.cc) instead of libc: its fork handlers then run at
# their place in mmtier's one quiesce sequence (lib/support/quiesce.h).  The libraries link that copy as their allocator engine; the renaming
# keeps the engine's names from clashing with the interposed malloc family
# and out of the dynamic symbol table, and gives mmtier every memory call the
# engine makes, with or without interposition.
# usage: rename_jemalloc.sh <input libjemalloc_pic.a> <output .a> <syms file>
set -eu
in=$1; out=$2; syms=$3
nm -g --defined-only "$in" 2>/dev/null \
  | awk 'NF == 3 && $3 !~ /^je_/ && $3 !~ /^DW\.ref\./ { print $3 " mmtier_je_" $3 }' \
  | sort -u > "$syms"
for call in mmap munmap madvise mprotect pthread_atfork; do
  echo "$call mmtier_engine_$call" >> "$syms"
done
objcopy --redefine-syms="$syms" "$in" "$out"
