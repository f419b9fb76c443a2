#!/usr/bin/env bash
# Runs the GUPS hot-set workload (bench/workloads/gups.cc) under libmmtier with
# the setup of issue 4: 2 GiB footprint allocated with malloc, a 128 MiB hot
# set taking 90% of the updates in the last quarter of the allocation, moved
# to the second quarter half-way through, DRAM budget 256 MiB.  Prints the
# DRAM share of the hot set and the CPU of mmtier's threads and of an idle
# control thread every second, then a summary (time to 95% per
# phase, background-thread CPU, a MODELLED update time) and a RESULT line.
# usage: bench/gups.sh [BUILD_DIR=./build] [gups args...]
#   e.g. bench/gups.sh build --seconds 10
# MMTIER_DRAM_LIMIT (default 256M) and other MMTIER_* variables in the
# environment are passed on.
set -euo pipefail
build=${1:-./build}
[[ $# -gt 0 ]] && shift
bin=$build/bench/workloads/gups
lib=$build/libmmtier.so
for f in "$bin" "$lib"; do
  if [[ ! -e $f ]]; then
    echo "gups.sh: $f not found (build first: ninja -C $build mmtier bench_gups)" >&2
    exit 2
  fi
done
lib=$(cd "$(dirname "$lib")" && pwd)/$(basename "$lib")
cmd=(env "LD_PRELOAD=$lib" "MMTIER_DRAM_LIMIT=${MMTIER_DRAM_LIMIT:-256M}" "$bin" "$@")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"
