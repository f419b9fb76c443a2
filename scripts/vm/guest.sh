#!/bin/bash
# Runs inside the virtual machine of scripts/vm-test.sh (Debian's 6.1
# kernel, an emulated NVDIMM, a CPU-less NUMA node), in the host's root
# (read-only; tmpfs where tests write).  Reads /tmp/vmwork/args (BUILD=, SUITES=), prepares the
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
  # pages (6.4) and no UFFDIO_MOVE (6.8).  Demotions check their copies
  # (MMTIER_CHECK_MOVES): a lost write then says whether the copy was wrong.
  check fallbacks.unit.tmpfs env MMTIER_PMEM_PATH=/dev/shm/heap MMTIER_CHECK_MOVES=1 \
    "$BUILD/tests/mmtier_unit_tests" --gtest_filter='Migrate.*:MoveCheck.*:Sample.*:Reshare.*:FirstTouch.*:Rehuge.*'
  [ -n "$DAX" ] && check fallbacks.unit.dax env MMTIER_PMEM_PATH=$DAX MMTIER_CHECK_MOVES=1 \
    "$BUILD/tests/mmtier_unit_tests" --gtest_filter='Migrate.*:MoveCheck.*:Sample.*:Reshare.*:FirstTouch.*:Rehuge.*'
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
# its output has $GUPS_EXPECT, when set).  20 s (the hot set moves at 10):
# both kinds of move come within the first seconds, and the check asks
# no more (GUPS_SECONDS, from vm-test.sh's environment, runs it longer).
gups_check() {
  local name=$1 log=$W/logs/$1.log
  shift
  env LD_PRELOAD="$LIB" MMTIER_DRAM_LIMIT=96M MMTIER_REPORT=stderr MMTIER_LOG=info "$@" \
    "$BUILD/bench/workloads/gups" --footprint 512M --hot 32M --seconds "${GUPS_SECONDS:-20}" > "$log" 2>&1
  local line p d f busy
  line=$(grep -E '^  mover: [0-9]+ scans' "$log" | tail -1)
  p=$(sed -E 's/.* ([0-9]+) promotions.*/\1/' <<< "$line")
  d=$(sed -E 's/.* ([0-9]+) demotions.*/\1/' <<< "$line")
  f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<< "$line")
  # EBUSY is a unit freed or remapped between the decision and the move
  # (the library says "not an error"): not a failure of the move.
  busy=$(grep -oE 'failed moves by reason:.* ([0-9]+) EBUSY' "$log" | tail -1 | sed -E 's/.* ([0-9]+) EBUSY$/\1/')
  [ -n "$f" ] && f=$((f - ${busy:-0}))
  info "$name.mover" "${line# *}"
  grep '^SUMMARY' "$log" | while read -r s; do info "$name.summary" "$s"; done
  if [ -z "$line" ]; then fail "$name" "no mover line in the report"
  elif [ -n "${GUPS_EXPECT:-}" ] && ! grep -q "$GUPS_EXPECT" "$log"; then fail "$name" "no \"$GUPS_EXPECT\""
  elif [ "$p" -gt 0 ] && [ "$d" -gt 0 ] && [ "$f" -eq 0 ]; then pass "$name"
  else fail "$name" "promotions $p, demotions $d, failed $f"; fi
}

# The hot-set workload on DAX: promotions and demotions both happen, none
# fails (but for EBUSY: a unit freed before its move).
suite_gups() {
  [ -n "$DAX" ] || { fail gups.dax "no DAX mount"; return; }
  gups_check gups.dax MMTIER_PMEM_PATH=$DAX
}

# The CPU-less node as the slow tier (MMTIER_SLOW_NODE=auto takes it when
# MMTIER_PMEM_PATH is unset): every page where its tier says, the moves
# done by the kernel, the hot-set workload and a real program on it.
# The NUMA-pressure check alone (numa_pressure below), to repeat it:
# --suites "pressure pressure pressure".
suite_pressure() {
  local slow
  slow=$(for n in /sys/devices/system/node/node[0-9]*; do [ -z "$(cat "$n/cpulist")" ] && basename "$n"; done | head -1)
  [ -n "$slow" ] || { fail pressure "no NUMA node without CPUs"; return; }
  numa_pressure "${slow#node}"
  # Each run's logs kept (the next run writes the same names).
  local at
  at=$(date +%s)
  for f in "$W"/logs/numa.pressure.log "$W"/logs/numa.pressure.log.stall; do [ -e "$f" ] && cp "$f" "$f.$at"; done
}

suite_numa() {
  local slow
  slow=$(for n in /sys/devices/system/node/node[0-9]*; do [ -z "$(cat "$n/cpulist")" ] && basename "$n"; done | head -1)
  [ -n "$slow" ] || { fail numa "no NUMA node without CPUs"; return; }
  # Not the promotion's post-copy window: node-tier pages move in place.
  check numa.unit env MMTIER_SLOW_NODE=auto "$BUILD/tests/mmtier_unit_tests" \
    --gtest_filter='NodeTier.*:Migrate.*:Sample.*:-Migrate.APromotionWaitsForAnAnswer*'
  GUPS_EXPECT="PMem tier: NUMA node ${slow#node}" gups_check numa.gups MMTIER_SLOW_NODE=auto
  local want out
  want=$(python3 -c "$PY")
  out=$(env LD_PRELOAD="$LIB" MMTIER_DRAM_RATIO=1:4 python3 -c "$PY" 2> "$W/logs/numa.python.log")
  if [ "$out" = "$want" ]; then pass numa.python; else fail numa.python "answer $out, want $want"; fi
  numa_pressure "${slow#node}"
  numa_holes "${slow#node}"
}

# What node 0's zones keep from user pages (high watermarks and the
# largest protection of each zone; node0_keep_kb min: with the min
# watermarks, below which an allocation waits for reclaim), in kB; and
# hold_node0 KB: node 0's free memory held with huge pages but for KB
# above what its zones keep.
node0_keep_kb() {
  awk -v w="${1:-high}" '/^Node/ { n = $2 } n == "0," && $1 == w { k += $2 }
    n == "0," && $1 == "protection:" { m = 0; gsub(/[(),]/, " "); for (i = 2; i <= NF; i++) if ($i > m) m = $i; k += m }
    END { print k * 4 }' /proc/zoneinfo
}
NODE0_HP=/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages
hold_node0() {
  local free_kb pages
  sync; echo 3 > /proc/sys/vm/drop_caches
  free_kb=$(awk '/MemFree/ { print $4 }' /sys/devices/system/node/node0/meminfo)
  pages=$(( (free_kb - $(node0_keep_kb) - $1) / 2048 ))
  [ "$pages" -gt 0 ] && echo "$pages" > "$NODE0_HP"
}

# The kernel's counters of reclaim, compaction and migration (one line of
# "name value" pairs), and what changed between two such lines.
VM_COUNTERS='^(compact_stall|compact_fail|compact_success|allocstall_normal|allocstall_movable|pgscan_direct|pgscan_kswapd|thp_migration_success|thp_migration_fail|thp_migration_split|pgmigrate_fail)$'
vm_counters() { awk -v re="$VM_COUNTERS" '$1 ~ re { printf "%s %s ", $1, $2 }' /proc/vmstat; }
vm_delta() {
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); split(b, y, " ")
    for (i = 1; i < n; i += 2) if (y[i + 1] != x[i + 1]) printf "%s +%d ", x[i], y[i + 1] - x[i + 1] }'
}

# run_watched LOG CMD...: runs CMD with its output in LOG; should LOG not
# grow for 8 s meanwhile (the workload reports every second), the kernel
# stacks of CMD's threads, of kswapd and kcompactd, and the counters above
# go to LOG.stall once (what the guest was doing when it stood still).
run_watched() {
  local log=$1 pid size last=-1 still=0
  shift
  rm -f "$log.stall"  # an earlier run's
  "$@" > "$log" 2>&1 &
  pid=$!
  while kill -0 "$pid" 2> /dev/null; do
    sleep 1
    size=$(stat -c %s "$log" 2> /dev/null || echo 0)
    if [ "$size" = "$last" ]; then still=$((still + 1)); else still=0; fi
    last=$size
    if [ "$still" -eq 8 ] && [ ! -e "$log.stall" ]; then
      {
        echo "== $(now) s: no output for 8 s; $(vm_counters)"
        for task in /proc/"$pid"/task/* $(pgrep -x 'kswapd0|kcompactd0|kcompactd1|kswapd1' | sed 's|^|/proc/|'); do
          echo "-- ${task#/proc/} $(cat "$task/comm" 2> /dev/null) $(cut -d' ' -f3,14,15 "$task/stat" 2> /dev/null)"
          cat "$task/stack" 2> /dev/null
        done
        # A running task shows no stack there: the kernel's backtraces of
        # the CPUs, three times, a second apart, with the system call each
        # of CMD's threads is in.
        for k in 1 2 3; do
          echo "-- sample $k: system calls (number, arguments; 'running' in user space)"
          for task in /proc/"$pid"/task/*; do echo "$(cat "$task/comm" 2> /dev/null): $(cat "$task/syscall" 2> /dev/null)"; done
          dmesg -c > /dev/null 2>&1
          echo l > /proc/sysrq-trigger 2> /dev/null
          sleep 1
          dmesg 2> /dev/null | grep -v '^\s*$' | tail -80
        done
      } > "$log.stall"
    fi
  done
  wait "$pid"
}

# The phases of the pressure and holes checks: each ends once the hot set
# held 95 % on node 0 for 3 s, or after PRESSURE_MOVES (80) moves of the
# mover, about twice what finding it takes (gups --phase-moves), at most
# PRESSURE_SECONDS (150) in all.  By the mover's work, not the clock: on a busy
# host each move into the full node takes the emulated kernel a second
# (docs/BENCHMARKS.md, "A fast node on a busy host"), and 20 s phases then
# failed with the library's choices right.
pressure_phases() { echo "--seconds ${PRESSURE_SECONDS:-150} --phase-moves ${PRESSURE_MOVES:-80} --settle 3"; }

# The fast node nearly full (huge pages held by the kernel leave
# PRESSURE_ROOM_MB, 96 by default, above what node 0's zones keep: their
# high watermarks and protection), under a DRAM budget of twice that: a
# promotion must not be counted when the kernel would take its pages from
# the slow node.  The hot set's share on node 0, read from the kernel
# (gups --slow-node), reaches 95 % in both phases; the library says once
# that moves wait for room, and that the fill (up to the DRAM limit by the
# ratio 1:1, twice the room) was placed on PMem once node 0 had no room, or
# counted on PMem where the kernel put it.  PRESSURE_LIB runs another build
# of the library (a comparison).
numa_pressure() {
  local slow=$1 hp=$NODE0_HP log=$W/logs/numa.pressure.log line
  [ -w "$hp" ] || { fail numa.pressure "cannot hold node 0's memory ($hp)"; return; }
  hold_node0 $(( ${PRESSURE_ROOM_MB:-96} * 1024 ))
  info numa.pressure.node0 "$(cat "$hp") huge pages held, $(awk '/MemFree/ { print $4, $5 }' /sys/devices/system/node/node0/meminfo) free, $(node0_keep_kb) kB kept by the zones"
  local c0
  c0=$(vm_counters)
  run_watched "$log" env LD_PRELOAD="${PRESSURE_LIB:-$LIB}" MMTIER_SLOW_NODE="$slow" \
    MMTIER_DRAM_RATIO=1:1 MMTIER_DRAM_LIMIT=$((2 * ${PRESSURE_ROOM_MB:-96}))M MMTIER_REPORT=stderr MMTIER_LOG=${PRESSURE_LOG:-info} \
    "$BUILD/bench/workloads/gups" --footprint 512M --hot 32M $(pressure_phases) --slow-node "$slow"
  local rc=$?
  echo 0 > "$hp"
  line=$(grep -E '^  mover: [0-9]+ scans' "$log" | tail -1)
  info numa.pressure.mover "${line# *}"
  info numa.pressure.kernel "$(vm_delta "$c0" "$(vm_counters)")"
  [ -e "$log.stall" ] && info numa.pressure.stall "the workload stood still (kernel stacks in logs/${log##*/}.stall)"
  grep '^SUMMARY' "$log" | while read -r s; do info numa.pressure.summary "$s"; done
  local reached
  reached=$(grep -c '^SUMMARY phase .*reached 95%' "$log")
  if [ $rc -ne 0 ]; then fail numa.pressure "gups exit $rc (logs/numa.pressure.log)"
  elif [ "$reached" -ne 2 ]; then fail numa.pressure "the hot set did not reach 95 % on node 0 in both phases"
  elif ! grep -q 'MiB free above its watermarks and reserves; moves into it wait' "$log"; then
    fail numa.pressure "node 0 was never short of room (nothing tested: lower PRESSURE_ROOM_MB)"
  elif ! grep -qE 'lie on the slow node: counted on PMem|has no room above its watermarks: units placed on PMem' "$log"; then
    fail numa.pressure "the fill on a full node 0 was neither placed on PMem nor counted where the kernel put it"
  else pass numa.pressure; fi
}

# Node 0 with room only in holes of one page (scripts/vm/holes.py: about
# 96 MiB above what its zones keep, between 4 KiB pages locked where
# compaction may not move them): no huge page fits there, so a unit made
# of one (Debian's THP is "always") can only move in page by page.  The
# hot-set workload under a DRAM limit of twice the room reaches 95 % on
# node 0 in both phases, read from the kernel.
numa_holes() {
  local slow=$1 hp=$NODE0_HP log=$W/logs/numa.holes.log line room=${PRESSURE_ROOM_MB:-96} unevictable
  [ -w "$hp" ] || { fail numa.holes "cannot hold node 0's memory ($hp)"; return; }
  unevictable=$(cat /proc/sys/vm/compact_unevictable_allowed 2> /dev/null) ||
    { fail numa.holes "no vm.compact_unevictable_allowed (a kernel without compaction)"; return; }
  echo 0 > /proc/sys/vm/compact_unevictable_allowed
  # The holder takes node 0 down to 4 MiB above its min watermarks and
  # gives half back: room above what the zones keep, in holes.
  local keep_kb min_kb take_kb
  keep_kb=$(node0_keep_kb) min_kb=$(node0_keep_kb min)
  hold_node0 $(( 2 * room * 1024 + keep_kb - min_kb - 4096 ))
  take_kb=$(( $(awk '/MemFree/ { print $4 }' /sys/devices/system/node/node0/meminfo) - min_kb - 4096 ))
  exec 7> >(python3 "$SRC/scripts/vm/holes.py" $((take_kb / 1024)) > "$W/logs/numa.holes.holder.log" 2>&1)
  local t=0
  until grep -q ready "$W/logs/numa.holes.holder.log" 2> /dev/null || [ $t -ge 600 ]; do sleep 0.1; t=$((t + 1)); done
  info numa.holes.node0 "$(cat "$hp") huge pages held, $(awk '/MemFree/ { print $4, $5 }' /sys/devices/system/node/node0/meminfo) free, $(node0_keep_kb) kB kept by the zones; free blocks by order: $(awk '$2 == "0," { for (i = 5; i <= NF; i++) s[i] += $i } END { for (i = 5; i <= 15; i++) printf "%d ", s[i] }' /proc/buddyinfo)"
  local split0 rc=0 c0
  split0=$(awk '$1 == "thp_split_page" { print $2 }' /proc/vmstat)
  c0=$(vm_counters)
  if grep -q ready "$W/logs/numa.holes.holder.log"; then
    run_watched "$log" env LD_PRELOAD="${PRESSURE_LIB:-$LIB}" MMTIER_SLOW_NODE="$slow" \
      MMTIER_DRAM_RATIO=1:1 MMTIER_DRAM_LIMIT=$((2 * room))M MMTIER_REPORT=stderr MMTIER_LOG=${PRESSURE_LOG:-info} \
      "$BUILD/bench/workloads/gups" --footprint 512M --hot 32M $(pressure_phases) --slow-node "$slow"
    rc=$?
  fi
  exec 7>&-
  echo 0 > "$hp"
  echo "$unevictable" > /proc/sys/vm/compact_unevictable_allowed
  line=$(grep -E '^  mover: [0-9]+ scans' "$log" | tail -1)
  info numa.holes.mover "${line# *}; $(( $(awk '$1 == "thp_split_page" { print $2 }' /proc/vmstat) - split0 )) huge pages split"
  info numa.holes.kernel "$(vm_delta "$c0" "$(vm_counters)")"
  [ -e "$log.stall" ] && info numa.holes.stall "the workload stood still (kernel stacks in logs/${log##*/}.stall)"
  grep '^SUMMARY' "$log" | while read -r s; do info numa.holes.summary "$s"; done
  if ! grep -q ready "$W/logs/numa.holes.holder.log"; then fail numa.holes "the holder did not start (logs/numa.holes.holder.log)"
  elif [ $rc -ne 0 ]; then fail numa.holes "gups exit $rc (logs/numa.holes.log)"
  elif [ "$(grep -c '^SUMMARY phase .*reached 95%' "$log")" -ne 2 ]; then
    fail numa.holes "the hot set did not reach 95 % on node 0 in both phases"
  else pass numa.holes; fi
}

# The real-program suite (tests/programs: byte-identical output with and
# without mmtier, the 1:9 run's memory on the slow tier) with the slow
# tier on DAX and on the CPU-less node.
suite_programs() {
  local p where
  for where in ${PROGRAMS_WHERE:-dax node}; do
    [ "$where" = dax ] && [ -z "$DAX" ] && { fail programs.dax "no DAX mount"; continue; }
    for p in ${PROGRAMS_ONLY:-python3 perl sqlite3 redis gcc git sort bash python3_multiprocessing}; do
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

# Not in the default set; needs vm-test.sh --kmem (docs/BENCHMARKS.md, "The
# NUMA-node tier against the kernel's tiering and memkind"): a second NVDIMM
# on node 1, made a KMEM DAX node (devdax, onlined as system RAM: the kernel
# puts it in a lower memory tier), and node 0 filled with huge pages but for
# KT_FREE_MB; then GUPS (KT_FOOTPRINT, KT_HOT) under the kernel's own
# tiering (numa_balancing=2 with demotion), under mmtier's NUMA-node tier
# (KT_DRAM budget) and under memkind's libmemtier with a KMEM_DAX tier.
# Placement is read from the kernel (gups --slow-node 1).
kt_gups() {
  local name=$1 log=$W/logs/$1.log c0 c1
  shift
  c0=$(awk '/^cpu / { print $2 + $3, $4 + $7 + $8 }' /proc/stat)
  env "$@" ${KT_WRAP:-} "$BUILD/bench/workloads/gups" --footprint "${KT_FOOTPRINT:-1G}" --hot "${KT_HOT:-64M}" \
    --seconds "${GUPS_SECONDS:-40}" --slow-node 1 > "$log" 2>&1
  local rc=$?
  c1=$(awk '/^cpu / { print $2 + $3, $4 + $7 + $8 }' /proc/stat)
  grep '^SUMMARY' "$log" | while read -r s; do info "$name.summary" "$s"; done
  grep -E '^  mover: [0-9]+ scans' "$log" | while read -r s; do info "$name.mover" "$s"; done
  # The whole machine's CPU over the run, in seconds: user, and system
  # (page faults, hinting faults, migration, kswapd, interrupts).
  info "$name.cpu" "$(awk -v a="$c0" -v b="$c1" 'BEGIN { split(a, x, " "); split(b, y, " ");
    printf "user %.1f s, system %.1f s", (y[1] - x[1]) / 100, (y[2] - x[2]) / 100 }')"
  if [ "${KT_PEER:-0}" = 1 ]; then info "$name.exit" "$rc"  # a peer's crash is not a failure of ours
  elif [ $rc -eq 0 ]; then pass "$name"
  else fail "$name" "exit $rc (logs/$name.log)"; fi
}
suite_kerneltier() {
  [ "${KMEM:-0}" = 1 ] || { fail kerneltier "needs vm-test.sh --kmem"; return; }
  modprobe -a dax_pmem device_dax kmem 2>/dev/null
  udevadm settle 2>/dev/null || sleep 1
  local r ns dev tiers
  # The region whose memory belongs to node 1 (its target node: node 1 is
  # offline until the memory is onlined, so numa_node says the nearest).
  for r in /sys/bus/nd/devices/region*; do
    [ "$(cat "$r/target_node" 2>/dev/null)" = 1 ] || continue
    ns=$(basename "$(ls -d "$r"/namespace*.0 | head -1)")
  done
  [ -n "${ns:-}" ] || { fail kerneltier.kmem "no NVDIMM region for node 1 ($(grep -H . /sys/bus/nd/devices/region*/*_node 2>/dev/null | tr '\n' ' '))"; return; }
  ndctl list -n "$ns" 2>/dev/null | grep -q '"mode":"devdax"' ||
    ndctl create-namespace -f -e "$ns" -m devdax > "$W/logs/kerneltier.ndctl.log" 2>&1 ||
    { fail kerneltier.kmem "ndctl could not make $ns devdax"; return; }
  dev=$(ndctl list -n "$ns" 2>/dev/null | sed -nE 's/.*"chardev":"(dax[0-9.]+)".*/\1/p')
  [ -n "$dev" ] || { fail kerneltier.kmem "no dax device for $ns"; return; }
  # (A kernel whose policy onlines hot-added memory itself, as Debian's
  # 6.12 does, makes daxctl refuse: the onlining is left to daxctl.)
  local auto=/sys/devices/system/memory/auto_online_blocks
  [ -w "$auto" ] && [ "$(cat "$auto")" != offline ] && echo offline > "$auto"
  daxctl reconfigure-device -m system-ram "$dev" >> "$W/logs/kerneltier.ndctl.log" 2>&1 ||
    { fail kerneltier.kmem "daxctl could not online $dev"; return; }
  info kerneltier.node1 "$(awk '/MemTotal/ { print $4, $5 }' /sys/devices/system/node/node1/meminfo)"
  tiers=$(for t in /sys/devices/virtual/memory_tiering/memory_tier*; do
    echo "$(basename "$t"): nodes $(cat "$t/nodelist")"; done | tr '\n' ' ')
  info kerneltier.tiers "$tiers"
  [ "$(ls -d /sys/devices/virtual/memory_tiering/memory_tier* 2>/dev/null | wc -l)" -ge 2 ] &&
    pass kerneltier.kmem || fail kerneltier.kmem "node 1 is not in a lower memory tier ($tiers)"
  # Node 0 filled but for KT_FREE_MB: the fast memory both contenders have.
  local free_kb pages
  free_kb=$(awk '/MemFree/ { print $4 }' /sys/devices/system/node/node0/meminfo)
  pages=$(( (free_kb - ${KT_FREE_MB:-256} * 1024) / 2048 ))
  [ "$pages" -gt 0 ] && echo "$pages" > /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages
  info kerneltier.node0 "$(cat /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages) huge pages held, $(awk '/MemFree/ { print $4, $5 }' /sys/devices/system/node/node0/meminfo) free"
  echo 1 > /sys/kernel/mm/numa/demotion_enabled 2>/dev/null
  echo 2 > /proc/sys/kernel/numa_balancing 2>/dev/null
  info kerneltier.kernel "numa_balancing=$(cat /proc/sys/kernel/numa_balancing) demotion_enabled=$(cat /sys/kernel/mm/numa/demotion_enabled 2>/dev/null)"
  kt_gups kerneltier.kernel
  echo 0 > /proc/sys/kernel/numa_balancing
  # mmtier with the kernel's demotion still on (it says so), then alone.
  kt_gups kerneltier.mmtier-demoting LD_PRELOAD="$LIB" MMTIER_SLOW_NODE=1 MMTIER_DRAM_LIMIT="${KT_DRAM:-192M}" \
    MMTIER_REPORT=stderr MMTIER_LOG=info
  grep -q "the kernel tiers memory itself (demotion_enabled)" "$W/logs/kerneltier.mmtier-demoting.log" &&
    pass kerneltier.warned || fail kerneltier.warned "no warning of the kernel's demotion"
  echo 0 > /sys/kernel/mm/numa/demotion_enabled 2>/dev/null
  kt_gups kerneltier.mmtier LD_PRELOAD="$LIB" MMTIER_SLOW_NODE=1 MMTIER_DRAM_LIMIT="${KT_DRAM:-192M}" \
    MMTIER_REPORT=stderr MMTIER_LOG=info
  KT_PEER=1 kt_gups kerneltier.memkind LD_PRELOAD=libmemtier.so \
    MEMKIND_MEM_TIERS="KIND:DRAM,RATIO:1;KIND:KMEM_DAX,RATIO:4;POLICY:STATIC_RATIO"
  # Linux 6.9 and later: the kernel's weighted interleave at memkind's 1:4
  # (a page's node by its weight, whatever its heat).
  local wi=/sys/kernel/mm/mempolicy/weighted_interleave
  if [ -w "$wi/node0" ] && [ -w "$wi/node1" ]; then
    echo 1 > "$wi/node0" && echo 4 > "$wi/node1"
    info kerneltier.weighted.weights "node0 $(cat "$wi/node0"), node1 $(cat "$wi/node1")"
    KT_WRAP="$BUILD/bench/mpol_exec weighted-interleave 0,1" kt_gups kerneltier.weighted
  else
    info kerneltier.weighted "no weighted interleave on $(uname -r) (Linux 6.9)"
  fi
  # Node 0 given back for the suites after this one.
  echo 0 > /sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages
}

# Restore on this kernel (no PR_TIMER_CREATE_RESTORE_IDS: POSIX timers
# reached in order), in a fresh container's PID namespace without set_tid
# (in place and in order), and a migration between two network and mount
# namespaces: the cli tests that cover them.
suite_restore() {
  local b=$BUILD v
  v=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$b/CMakeCache.txt")
  check restore env -C "$SRC" python3 tests/cli/cli_test.py --mmtier "$b/mmtier" --lib "$b/libmmtier.so.$v" \
    --child "$b/tests/cli/cli_stats_child" --fake "$b/tests/cli/cli_fake_publisher" \
    --maker "$b/tests/cli/cli_capsule_maker" --restore-child "$b/tests/cli/cli_restore_child" --version "$v" -v \
    RestoreTest.test_kernel_objects_come_back \
    RestoreTest.test_a_container_process_comes_back_without_choosing_its_ids \
    RestoreTest.test_migrate_moves_a_process_to_another_host_and_a_failure_leaves_it_running
}

# Not in the default set: the sweep of bench/sweep.py at this machine's
# sizes (0.5 and 1 GiB footprints, 0.5 GiB only on the 2 GiB DAX mount,
# whose free room must exceed the footprint by 1 GiB; hot sets of 5 and
# 20 %, a budget of twice the hot set, 20 s phases) with the slow tier as
# a file on tmpfs, as a file on the DAX mount and as the CPU-less node
# (SWEEP_TIERS picks some): every run moves memory both ways and none
# fails (its table and verdicts are info lines; the 5 s target is the
# host's, not the emulator's).
suite_sweep() {
  local slow tier csv
  slow=$(for n in /sys/devices/system/node/node[0-9]*; do [ -z "$(cat "$n/cpulist")" ] && basename "$n"; done | head -1)
  for tier in ${SWEEP_TIERS:-tmpfs dax node}; do
    local args=(--hot-pcts 5,20 --budgets 2 --skews uniform --positions default
      --ratio 1:1 --no-verify --seconds "${SWEEP_SECONDS:-20}" --build "$BUILD" --tmpfs-dir /tmp)
    [ "$tier" = dax ] && args+=(--footprints 0.5G) || args+=(--footprints 0.5G,1G)
    case $tier in
      tmpfs) args+=(--fs tmpfs) ;;
      dax) [ -n "$DAX" ] || { fail sweep.dax "no DAX mount"; continue; }
        args+=(--fs ext4 --ext4-dir "$DAX") ;;
      node) [ -n "$slow" ] || { fail sweep.node "no NUMA node without CPUs"; continue; }
        args+=(--fs tmpfs --env "MMTIER_SLOW_NODE=${slow#node}") ;;
    esac
    csv=$W/logs/sweep.$tier.csv
    env -C "$SRC" python3 bench/sweep.py "${args[@]}" --csv "$csv" --logs "$W/logs/sweep.$tier" \
      > "$W/logs/sweep.$tier.table" 2> "$W/logs/sweep.$tier.err"
    while read -r l; do info "sweep.$tier" "$l"; done < "$W/logs/sweep.$tier.table"
    local bad
    bad=$(python3 -c '
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
bad = [r["footprint"] + "/" + r["hot"] + ": " + (r["reason"] or r["verdict"]) for r in rows
       if r["verdict"] in ("FAIL", "SKIP", "N/A") or int(r["promotions"] or 0) == 0
       or int(r["demotions"] or 0) == 0 or int(r["failed"] or 0) > 0]
print("; ".join(bad) if rows else "no rows")' "$csv" 2>&1)
    if [ -z "$bad" ]; then pass "sweep.$tier"; else fail "sweep.$tier" "$bad"; fi
  done
}

# For investigations, not in the default set: runs the host's
# $WORK/script.sh in this guest (with LIB, BUILD, SRC, DAX and W set); its
# exit status is the result, its output logs/script.log.
suite_script() {
  [ -r "$W/script.sh" ] || { fail script "no $W/script.sh"; return; }
  check script env LIB="$LIB" BUILD="$BUILD" SRC="$SRC" DAX="$DAX" W="$W" bash "$W/script.sh"
}

for s in $SUITES; do
  t0=$(now)
  if declare -F "suite_$s" > /dev/null; then "suite_$s"; else fail "$s" "no such suite"; fi
  info "time.$s" "$(secs "$t0" "$(now)") s"
done
echo "vm-guest: done"
