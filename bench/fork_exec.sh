#!/usr/bin/env bash
# Runs bench/fork_exec_bench with and without libmmtier side by side, in
# alternation, and prints medians and their ratio.
# usage: bench/fork_exec.sh BUILD_DIR [HEAP_MIB=1024] [ITERATIONS=50] [ROUNDS=5]
set -euo pipefail
build=${1:?build dir}
heap=${2:-1024}
iters=${3:-50}
rounds=${4:-5}
bin=$build/bench/fork_exec_bench
lib=$build/libmmtier.so
declare -a plain=() tiered=()
for ((r = 0; r < rounds; r++)); do
  plain+=("$("$bin" "$heap" "$iters" | sed -n 's/.*ms_per_fork_exec=\([0-9.]*\).*/\1/p')")
  tiered+=("$(LD_PRELOAD=$lib "$bin" "$heap" "$iters" | sed -n 's/.*ms_per_fork_exec=\([0-9.]*\).*/\1/p')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mp=$(median "${plain[@]}")
mt=$(median "${tiered[@]}")
echo "fork+exec of /bin/true from a ${heap} MiB heap, median of $rounds rounds x $iters:"
echo "  glibc malloc:           ${mp} ms"
echo "  libmmtier (ratio 1:4):  ${mt} ms"
awk -v a="$mt" -v b="$mp" 'BEGIN {printf "  ratio libmmtier/glibc:  %.2fx\n", a / b}'
