#!/bin/bash
# Runs inside the virtual machine of scripts/vm-test.sh (Debian's 6.1
# kernel, an emulated NVDIMM, a CPU-less NUMA node), chrooted into the
# host's root.  Reads /tmp/vmwork/args (BUILD=, SUITES=), prepares the
# NVDIMM as fsdax with ext4 mounted -o dax at /mnt/pmem, runs each suite and
# writes one line per check to /tmp/vmwork/results: "PASS name", "FAIL name:
# why" or "INFO name: text"; each suite's output goes to /tmp/vmwork/logs/.
set -u
W=/tmp/vmwork
. "$W/args"
mkdir -p "$W/logs"
: > "$W/results"
pass() { echo "PASS $1" >> "$W/results"; echo "vm-guest: PASS $1"; }
fail() { echo "FAIL $1: $2" >> "$W/results"; echo "vm-guest: FAIL $1: $2"; }
info() { echo "INFO $1: $2" >> "$W/results"; echo "vm-guest: $1: $2"; }
# check NAME CMD...: passes when CMD exits 0 within CHECK_TIMEOUT seconds;
# one that hangs has the kernel stacks of its processes logged, then dies.
check() {
  local name=$1
  shift
  setsid "$@" > "$W/logs/$name.log" 2>&1 &
  local pid=$! t=0
  while kill -0 "$pid" 2>/dev/null && [ "$t" -lt "${CHECK_TIMEOUT:-600}" ]; do
    sleep 1
    t=$((t + 1))
  done
  if kill -0 "$pid" 2>/dev/null; then
    {
      echo "== hung after $t s: kernel stacks"
      for p in $(pgrep -g "$pid"); do
        for task in /proc/"$p"/task/*; do
          echo "-- $p/${task##*/} $(cat "$task/comm" 2>/dev/null) $(cat "$task/wchan" 2>/dev/null)"
          cat "$task/stack" 2>/dev/null
        done
      done
    } >> "$W/logs/$name.log"
    kill -KILL -- -"$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    fail "$name" "hung for $t s (kernel stacks in logs/$name.log)"
    return
  fi
  if wait "$pid"; then pass "$name"; else fail "$name" "exit $? (logs/$name.log)"; fi
}
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
now() { cut -d' ' -f1 /proc/uptime; }

ip link set lo up 2>/dev/null
info kernel "$(uname -r)"
for n in /sys/devices/system/node/node[0-9]*; do
  info "$(basename "$n")" "cpus [$(cat "$n/cpulist")] $(awk '/MemTotal/ { print $4, $5 }' "$n/meminfo")"
done

# The NVDIMM: label-less, so its one namespace comes up raw; fsdax is
# written to the device once (the image keeps it), the file system anew.
setup_pmem() {
  modprobe -a nfit nd_pmem dax_pmem ext4 2>/dev/null
  udevadm settle 2>/dev/null || sleep 1
  if ndctl list -N 2>/dev/null | grep -q '"mode":"raw"'; then
    ndctl create-namespace -f -e namespace0.0 -m fsdax > /dev/null || return 1
  fi
  [ -b /dev/pmem0 ] || return 1
  mkfs.ext4 -q -F -b 4096 /dev/pmem0 || return 1
  mkdir -p /mnt/pmem
  mount -o dax /dev/pmem0 /mnt/pmem || return 1
  grep -q ' /mnt/pmem .*dax' /proc/mounts
}
if setup_pmem > "$W/logs/setup.log" 2>&1; then
  pass setup.fsdax
  mkdir -p /mnt/pmem/heap
  DAX=/mnt/pmem/heap
else
  fail setup.fsdax "no DAX mount (logs/setup.log)"
  DAX=
fi
mkdir -p /dev/shm/heap
LIB=$BUILD/libmmtier.so
cd /tmp

# A program's report says where its memory went; these read it.
report_has() { grep -q "$2" "$1"; }

suite_fallbacks() {
  # The paths of this kernel, natively: no write-protect of unpopulated
  # pages (6.4) and no UFFDIO_MOVE (6.8).
  check fallbacks.unit.tmpfs env MMTIER_PMEM_PATH=/dev/shm/heap \
    "$BUILD/tests/mmtier_unit_tests" --gtest_filter='Migrate.*:Sample.*:Reshare.*'
  [ -n "$DAX" ] && check fallbacks.unit.dax env MMTIER_PMEM_PATH=$DAX \
    "$BUILD/tests/mmtier_unit_tests" --gtest_filter='Migrate.*:Sample.*:Reshare.*'
}

suite_tiering() {
  [ -n "$DAX" ] || { fail tiering.dax "no DAX mount"; return; }
  # Left to the host: the mapping-limit test (60 000 mappings, minutes
  # under emulation) and the failed-moves test (it hides write-protect,
  # which 6.1 has, and needs more hammering than emulation does in its
  # minute); neither depends on the kernel's version.
  check tiering.dax env LD_PRELOAD="$LIB" MMTIER_PMEM_PATH=$DAX "$BUILD/tests/preload/tiering_test" \
    --gtest_filter='-Tiering.MoverHoldsMigrationsBackNearTheMappingLimit:Tiering.FailedMovesAreSaidOnceAndCountedByReason'
}

# An allocation-heavy python3 with its PMem tier on DAX, on tmpfs, and
# without mmtier: the answer must be the same; the times are reported.
PY='
d = {}
for i in range(400000):
    d[i] = [str(i)] * 4
    if i % 3 == 0:
        del d[i // 2]
print(sum(len(v) for v in d.values()))'
suite_program() {
  local want t0 t1 out dir
  want=$(python3 -c "$PY") || { fail program.python "python3 alone failed"; return; }
  t0=$(now); python3 -c "$PY" > /dev/null; t1=$(now)
  info program.python.time.none "$(secs "$t0" "$t1") s"
  for dir in /dev/shm/heap $DAX; do
    local name=program.python.$( [ "$dir" = "$DAX" ] && echo dax || echo tmpfs )
    t0=$(now)
    out=$(env LD_PRELOAD="$LIB" MMTIER_PMEM_PATH=$dir MMTIER_DRAM_RATIO=1:4 MMTIER_REPORT=stderr \
      MMTIER_LOG=info python3 -c "$PY" 2> "$W/logs/$name.log")
    t1=$(now)
    info "$name.time" "$(secs "$t0" "$t1") s"
    if [ "$out" != "$want" ]; then fail "$name" "answer $out, want $want"
    elif [ "$dir" = "$DAX" ] && ! report_has "$W/logs/$name.log" "PMem tier in $dir (DAX"; then
      fail "$name" "the PMem tier did not take the DAX path"
    elif ! report_has "$W/logs/$name.log" "PMem"; then fail "$name" "no report"
    else pass "$name"; fi
  done
}

# gups_check NAME [ENV...]: the hot-set workload under mmtier with ENV;
# passes when promotions and demotions both happened and none failed (and
# its output has $GUPS_EXPECT, when set).
gups_check() {
  local name=$1 log=$W/logs/$1.log
  shift
  env LD_PRELOAD="$LIB" MMTIER_DRAM_LIMIT=96M MMTIER_REPORT=stderr MMTIER_LOG=info "$@" \
    "$BUILD/bench/workloads/gups" --footprint 512M --hot 32M --seconds "${GUPS_SECONDS:-40}" > "$log" 2>&1
  local line p d f
  line=$(grep -E '^  mover: [0-9]+ scans' "$log" | tail -1)
  p=$(sed -E 's/.* ([0-9]+) promotions.*/\1/' <<< "$line")
  d=$(sed -E 's/.* ([0-9]+) demotions.*/\1/' <<< "$line")
  f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<< "$line")
  info "$name.mover" "${line# *}"
  grep '^SUMMARY' "$log" | while read -r s; do info "$name.summary" "$s"; done
  if [ -z "$line" ]; then fail "$name" "no mover line in the report"
  elif [ -n "${GUPS_EXPECT:-}" ] && ! grep -q "$GUPS_EXPECT" "$log"; then fail "$name" "no \"$GUPS_EXPECT\""
  elif [ "$p" -gt 0 ] && [ "$d" -gt 0 ] && [ "$f" -eq 0 ]; then pass "$name"
  else fail "$name" "promotions $p, demotions $d, failed $f"; fi
}

# The hot-set workload on DAX: promotions and demotions both happen, none
# fails.
suite_gups() {
  [ -n "$DAX" ] || { fail gups.dax "no DAX mount"; return; }
  gups_check gups.dax MMTIER_PMEM_PATH=$DAX
}

# The CPU-less node as the slow tier (MMTIER_SLOW_NODE=auto takes it when
# MMTIER_PMEM_PATH is unset): every page where its tier says, the moves
# done by the kernel, the hot-set workload and a real program on it.
suite_numa() {
  local slow
  slow=$(for n in /sys/devices/system/node/node[0-9]*; do [ -z "$(cat "$n/cpulist")" ] && basename "$n"; done | head -1)
  [ -n "$slow" ] || { fail numa "no NUMA node without CPUs"; return; }
  check numa.unit env MMTIER_SLOW_NODE=auto "$BUILD/tests/mmtier_unit_tests" \
    --gtest_filter='NodeTier.*:Migrate.*:Sample.*'
  GUPS_EXPECT="PMem tier: NUMA node ${slow#node}" gups_check numa.gups MMTIER_SLOW_NODE=auto
  local want out
  want=$(python3 -c "$PY")
  out=$(env LD_PRELOAD="$LIB" MMTIER_DRAM_RATIO=1:4 python3 -c "$PY" 2> "$W/logs/numa.python.log")
  if [ "$out" = "$want" ]; then pass numa.python; else fail numa.python "answer $out, want $want"; fi
}

# The real-program suite (tests/programs: byte-identical output with and
# without mmtier, the 1:9 run's memory on the slow tier) with the slow
# tier on DAX and on the CPU-less node.
suite_programs() {
  local p where
  for where in dax node; do
    [ "$where" = dax ] && [ -z "$DAX" ] && { fail programs.dax "no DAX mount"; continue; }
    for p in python3 perl sqlite3 redis gcc git sort bash python3_multiprocessing; do
      check "programs.$where.$p" env PROGRAMS_MMTIER_ENV="$(slow_env $where)" PROGRAMS_RUN_TIMEOUT=600 \
        bash "$SRC/tests/programs/$p.sh" "$LIB"
    done
  done
}

# Not in the default set (docs/BENCHMARKS.md, "Kernels and memory of the
# field"): side by side in this guest, an allocation-heavy python3 with the
# PMem tier on DAX, on tmpfs and on the CPU-less node, and alone; GUPS
# with the slow tier on each of them.
PY_HEAVY='
import random
random.seed(1)
d = {}
for i in range(400000):
    d[i] = [str(i)] * 3
    if i % 2 == 0:
        d.pop(random.randrange(i + 1), None)
print(len(d), sum(len(v) for v in d.values()))'
# The environment that puts the slow tier on $1: dax, tmpfs or node.
slow_env() {
  case $1 in
    dax) echo "MMTIER_PMEM_PATH=$DAX" ;;
    tmpfs) echo "MMTIER_PMEM_PATH=/dev/shm/heap" ;;
    node) echo "MMTIER_SLOW_NODE=auto" ;;
  esac
}
suite_compare() {
  local t0 t1 name run
  for run in 1 2; do
    t0=$(now); python3 -c "$PY_HEAVY" > /dev/null; t1=$(now)
    info "compare.python.none.$run" "$(secs "$t0" "$t1") s"
    for name in dax tmpfs node; do
      t0=$(now)
      env LD_PRELOAD="$LIB" MMTIER_DRAM_RATIO=1:4 "$(slow_env $name)" python3 -c "$PY_HEAVY" > /dev/null
      t1=$(now)
      info "compare.python.$name.$run" "$(secs "$t0" "$t1") s"
    done
  done
  for name in dax tmpfs node; do gups_check "compare.gups.$name" "$(slow_env $name)"; done
}

for s in $SUITES; do
  t0=$(now)
  if declare -F "suite_$s" > /dev/null; then "suite_$s"; else fail "$s" "no such suite"; fi
  info "time.$s" "$(secs "$t0" "$(now)") s"
done
echo "vm-guest: done"
