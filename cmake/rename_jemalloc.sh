#!/bin/sh
# Builds a private copy of Debian's position-independent jemalloc archive in
# which every exported name (malloc, free, mallocx, operator new, ...) is
# renamed to mmtier_je_<name>.  libmmtier.so links that copy as its allocator
# engine; the renaming keeps the engine's names from clashing with the
# interposed malloc family and keeps them out of the dynamic symbol table.
# usage: rename_jemalloc.sh <input libjemalloc_pic.a> <output .a> <syms file>
set -eu
in=$1; out=$2; syms=$3
nm -g --defined-only "$in" 2>/dev/null \
  | awk 'NF == 3 && $3 !~ /^je_/ && $3 !~ /^DW\.ref\./ { print $3 " mmtier_je_" $3 }' \
  | sort -u > "$syms"
objcopy --redefine-syms="$syms" "$in" "$out"
