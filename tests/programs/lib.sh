#!/usr/bin/env bash
# Common harness for the real-program suite, sourced by every
# tests/programs/<program>.sh.  A program script defines `workload DIR` and
# calls `run_modes workload`: the workload then runs three times, without
# libmmtier (the reference), under LD_PRELOAD=libmmtier.so at the default
# ratio, and under MMTIER_DRAM_RATIO=1:9.  Its stdout, stderr and exit status
# must equal the reference byte for byte, and in the 1:9 run the process with
# the largest placed peak must have at least 60% of it on PMem.
#
# Usage of a program script: bash <program>.sh /abs/path/libmmtier.so
# Set PROGRAMS_KEEP_TMP=1 to keep the work directory for inspection, and
# PROGRAMS_MMTIER_ENV="MMTIER_X=... ..." to add settings to the runs under
# libmmtier.

set -euo pipefail

PROG_NAME=$(basename "${BASH_SOURCE[1]:-$0}" .sh)
PMEM_SHARE_MIN=60          # percent of the placed peak that must be on PMem at 1:9
RUN_TIMEOUT=${PROGRAMS_RUN_TIMEOUT:-240}   # seconds per workload run

# System directories only: the programs under test are the Debian-packaged ones,
# not wrappers or shims that happen to be first in the caller's PATH.
SYS_PATH=/usr/sbin:/usr/bin:/sbin:/bin

fail() {
  echo "FAIL [$PROG_NAME]: $*" >&2
  exit 1
}

note() { echo "[$PROG_NAME] $*"; }

if [[ $# -lt 1 ]]; then
  fail "usage: bash $PROG_NAME.sh /path/to/libmmtier.so"
fi
MMTIER_LIB=$1
[[ $MMTIER_LIB == /* ]] || MMTIER_LIB=$(pwd)/$MMTIER_LIB
[[ -f $MMTIER_LIB ]] || fail "libmmtier.so not found at '$MMTIER_LIB' (build it first: scripts/build.sh)"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mmtier-programs-$PROG_NAME.XXXXXX")
cleanup() {
  local rc=$?
  if [[ ${PROGRAMS_KEEP_TMP:-0} == 1 ]]; then
    echo "[$PROG_NAME] work directory kept: $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# require_prog NAME PACKAGE: absolute path of a system program, or a failure
# that names the Debian package providing it.
require_prog() {
  local name=$1 pkg=$2 path
  path=$(PATH=$SYS_PATH command -v "$name" 2>/dev/null || true)
  if [[ -z $path || ! -x $path ]]; then
    fail "'$name' is not installed; install the Debian package '$pkg' (apt-get install -y $pkg, or run scripts/install-deps.sh as root)"
  fi
  printf '%s\n' "$path"
}

# The current mode's environment.  Every program run starts from an empty
# environment (env -i) so nothing from the caller (LD_PRELOAD, MMTIER_*,
# locale, HOME, git config) leaks in; set_mode fills MODE_ENV.
BASE_ENV=()
MODE_ENV=()
MODE=""
# set_base_env [NAME=VALUE...]: the fixed environment plus extra variables.
# shellcheck disable=SC2120
set_base_env() {
  mkdir -p "$WORK/home" "$WORK/tmp"
  BASE_ENV=("PATH=$SYS_PATH" "HOME=$WORK/home" "TMPDIR=$WORK/tmp" LC_ALL=C LANG=C TZ=UTC "$@")
}
set_base_env

# set_mode MODE DIR.  The default-ratio run also writes reports (MMTIER_REPORT
# changes nothing else): they prove libmmtier was really loaded.
set_mode() {
  MODE=$1
  local dir=$2
  case $MODE in
    reference) MODE_ENV=() ;;
    default)   MODE_ENV=("LD_PRELOAD=$MMTIER_LIB" "MMTIER_REPORT=$dir/reports/report.%p") ;;
    ratio1-9)  MODE_ENV=("LD_PRELOAD=$MMTIER_LIB" MMTIER_DRAM_RATIO=1:9
                         "MMTIER_REPORT=$dir/reports/report.%p") ;;
    *) fail "unknown mode $MODE" ;;
  esac
  [[ $MODE != reference ]] && add_mmtier_env
  mkdir -p "$dir/reports"
}

# PROGRAMS_MMTIER_ENV: more MMTIER_* settings for the runs under libmmtier
# (the slow tier on a DAX mount or a NUMA node, in scripts/vm-test.sh),
# added to MODE_ENV.  A test that sets MODE_ENV itself calls this too.
add_mmtier_env() {
  if [[ -n ${PROGRAMS_MMTIER_ENV:-} ]]; then
    local extra
    read -r -a extra <<< "$PROGRAMS_MMTIER_ENV"
    MODE_ENV+=("${extra[@]}")
  fi
  return 0
}

# run CMD ARGS...: runs a program in the current mode (under libmmtier unless
# this is the reference run), with a timeout.
run() {
  local rc=0
  timeout -k 10 "$RUN_TIMEOUT" env -i "${BASE_ENV[@]}" "${MODE_ENV[@]}" "$@" || rc=$?
  if ((rc == 124)); then
    echo "timed out after ${RUN_TIMEOUT}s: $*" >&2
  elif ((rc > 128)); then
    echo "killed by signal $((rc - 128)) ($(kill -l $((rc - 128)) 2> /dev/null || echo '?')): $*" >&2
  fi
  return "$rc"
}

# plain CMD ARGS...: runs a helper (generator, client, checksum) never under
# libmmtier, with the same clean environment.
plain() {
  timeout -k 10 "$RUN_TIMEOUT" env -i "${BASE_ENV[@]}" "$@"
}

# size_to_bytes "58.0" "MiB"
size_to_bytes() {
  awk -v v="$1" -v u="$2" 'BEGIN {
    m["B"] = 1; m["KiB"] = 1024; m["MiB"] = 1048576; m["GiB"] = 1073741824; m["TiB"] = 1099511627776
    if (!(u in m)) { exit 1 }
    printf "%.0f\n", v * m[u] }'
}

# check_reports DIR MIN_PCT: parses every report in DIR/reports, picks the
# process with the largest DRAM+PMem placed-peak and prints its shares; with
# MIN_PCT > 0, fails unless its PMem placed-peak is at least MIN_PCT percent.
check_reports() {
  local dir=$1 min=$2
  local files=("$dir"/reports/report.*)
  [[ -e ${files[0]} ]] || fail "$MODE run wrote no mmtier report in $dir/reports: was libmmtier loaded?"
  local best_file="" best_total=-1 best_dram=0 best_pmem=0 f dram pmem total
  for f in "${files[@]}"; do
    # "  DRAM      18.0 MiB     56.0 MiB      6.0 MiB         none": the
    # placed-peak is the second size (fields 4 and 5).
    dram=$(awk '$1 == "DRAM" && NF >= 7 { print $4, $5; exit }' "$f")
    pmem=$(awk '$1 == "PMem" && NF >= 7 { print $4, $5; exit }' "$f")
    [[ -n $dram && -n $pmem ]] || fail "cannot parse mmtier report $f:$(printf '\n'; cat "$f")"
    # shellcheck disable=SC2086
    dram=$(size_to_bytes $dram) || fail "bad size in $f"
    # shellcheck disable=SC2086
    pmem=$(size_to_bytes $pmem) || fail "bad size in $f"
    total=$((dram + pmem))
    if ((total > best_total)); then
      best_file=$f best_total=$total best_dram=$dram best_pmem=$pmem
    fi
  done
  ((best_total > 0)) || fail "$MODE run: no process placed any memory on a tier (${#files[@]} reports)"
  local pct=$((best_pmem * 100 / best_total))
  note "$MODE: ${#files[@]} report(s); largest process $(basename "$best_file"):" \
    "placed-peak DRAM $((best_dram >> 20)) MiB + PMem $((best_pmem >> 20)) MiB," \
    "PMem share ${pct}%, DRAM share $((100 - pct))%"
  if ((min > 0 && pct < min)); then
    echo "--- $best_file" >&2
    cat "$best_file" >&2
    fail "$MODE run: PMem holds ${pct}% of the largest process's placed peak, expected >= ${min}%"
  fi
}

# compare_with_reference DIR: the run's stdout, stderr and exit status must be
# the reference's, byte for byte.
compare_with_reference() {
  local dir=$1 ref=$WORK/reference what differ=()
  for what in rc stdout stderr; do
    cmp -s "$ref/$what" "$dir/$what" || differ+=("$what")
  done
  if ((${#differ[@]})); then
    for what in "${differ[@]}"; do
      echo "--- $what differs between the reference run and the $MODE run (diff head):" >&2
      diff -u --label "reference/$what" --label "$MODE/$what" "$ref/$what" "$dir/$what" \
        | head -n 40 >&2 || true
    done
    fail "$MODE run's ${differ[*]} differ(s) from the reference run without libmmtier"
  fi
  note "$MODE: output identical to the reference ($(wc -c < "$dir/stdout") bytes of stdout, exit status $(cat "$dir/rc"))"
}

# run_modes FUNC: runs FUNC DIR in the three modes and checks them.  FUNC
# writes what is compared to its stdout/stderr and must use `run` for the
# program under test.  A non-zero status of FUNC is recorded and compared
# (it must match the reference, which must be 0).
run_modes() {
  local func=$1 mode dir rc start
  for mode in reference default ratio1-9; do
    dir=$WORK/$mode
    mkdir -p "$dir/scratch"
    set_mode "$mode" "$dir"
    start=$SECONDS
    set +e
    (set -e; "$func" "$dir/scratch") > "$dir/stdout" 2> "$dir/stderr"
    rc=$?
    set -e
    echo "$rc" > "$dir/rc"
    note "$mode: exit status $rc in $((SECONDS - start)) s"
    if [[ $mode == reference ]]; then
      if [[ $rc != 0 ]]; then
        echo "--- stderr of the reference run (head):" >&2
        head -n 40 "$dir/stderr" >&2
        fail "the reference run (without libmmtier) failed with status $rc: the workload or the machine is broken, not mmtier"
      fi
      continue
    fi
    compare_with_reference "$dir"
    if [[ $mode == ratio1-9 ]]; then
      check_reports "$dir" "$PMEM_SHARE_MIN"
    else
      check_reports "$dir" 0
    fi
    rm -rf "$dir/scratch"
  done
  note "PASS"
}
