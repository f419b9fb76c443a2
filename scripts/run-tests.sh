#!/usr/bin/env bash
# Installs the dependencies, builds build/ and runs every test suite
# (ctest, all labels), then builds build-asan/ with AddressSanitizer and
# UndefinedBehaviorSanitizer and runs the unit tests there, and build-tsan/
# with ThreadSanitizer and runs the concurrency tests there (migration under
# concurrent writers and system calls, sampling and its race with the fault
# service, the small-object heaps; at a smaller size).  Exits non-zero if
# anything failed (or, with REQUIRE_ALL_TESTS=1, was skipped).  Ends with
# ctest's summary lines
# of every run, the skipped tests by name, and a final line
# "N passed, N failed, N skipped" over all.
# Then the suites of a virtual machine with Debian's 6.1 kernel, an fsdax
# NVDIMM and a CPU-less NUMA node (scripts/vm-test.sh).
# Environment: BUILD_DIR, ASAN_BUILD_DIR, TSAN_BUILD_DIR (default build/,
# build-asan/, build-tsan/ in the source tree), TEST_LABEL (a ctest -L regex
# for the first run; default: all), VM_TESTS (0: no virtual machine),
# REQUIRE_ALL_TESTS.
set -uo pipefail

# The tests set the library's variables they test; one left in the caller's
# environment (MMTIER_LOG=debug in a shell) would change what they see.
for v in $(compgen -e | grep '^MMTIER_'); do
  echo "run-tests: $v is set in the environment; unset for the tests"
  unset "$v"
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
ASAN_BUILD_DIR=${ASAN_BUILD_DIR:-$ROOT/build-asan}
TSAN_BUILD_DIR=${TSAN_BUILD_DIR:-$ROOT/build-tsan}
LOGS=$(mktemp -d "${TMPDIR:-/tmp}/mmtier-run-tests.XXXXXX")
trap 'rm -rf "$LOGS"' EXIT

status=0
step() { echo; echo "=== $* ==="; }

step "dependencies"
"$ROOT/scripts/install-deps.sh" || { echo "run-tests: installing dependencies failed" >&2; exit 1; }

# run_suite NAME BUILD_DIR CMAKE_ARGS -- CTEST_ARGS: builds, runs ctest,
# keeps its output in $LOGS/NAME.log.
run_suite() {
  local name=$1 dir=$2
  shift 2
  local cmake_args=()
  while (($#)) && [[ $1 != -- ]]; do cmake_args+=("$1"); shift; done
  shift
  step "$name: build ($dir)"
  if ! "$ROOT/scripts/build.sh" "$dir" "${cmake_args[@]}"; then
    echo "run-tests: $name: build failed" | tee "$LOGS/$name.log" >&2
    status=1
    return
  fi
  step "$name: ctest --test-dir $dir $*"
  ctest --test-dir "$dir" --output-on-failure "$@" 2>&1 | tee "$LOGS/$name.log"
  local rc=${PIPESTATUS[0]}
  if ((rc != 0)); then
    echo "run-tests: $name: ctest exited with status $rc"
    status=1
  fi
}

# The tracking and migration tests also run with the PMem tier on ext4 (a
# directory in the build tree) and on xfs: a loop-mounted image, made here
# when this runs as root and the kernel allows it (a DAX mount is ext4 or
# xfs).  Unmounted at the end.
xfs_mnt=""
pmem_dirs_arg=()
if [[ $(id -u) == 0 ]] && command -v mkfs.xfs > /dev/null; then
  mkdir -p "$BUILD_DIR"
  xfs_img="$BUILD_DIR/pmem-xfs.img"
  xfs_mnt="$BUILD_DIR/pmem-xfs"
  mountpoint -q "$xfs_mnt" 2> /dev/null && umount "$xfs_mnt"
  mkdir -p "$xfs_mnt"
  if truncate -s 600M "$xfs_img" && mkfs.xfs -q -f "$xfs_img" && mount -o loop "$xfs_img" "$xfs_mnt" 2> "$LOGS/xfs.err"; then
    pmem_dirs_arg=("-DMMTIER_TEST_PMEM_DIRS=$xfs_mnt")
    trap 'umount "$xfs_mnt" 2> /dev/null; rm -f "$xfs_img"; rm -rf "$LOGS"' EXIT
  else
    echo "run-tests: no xfs loop mount ($(cat "$LOGS/xfs.err" 2> /dev/null)); the xfs runs of the tracking tests are left out"
    rm -f "$xfs_img"
    pmem_dirs_arg=("-DMMTIER_TEST_PMEM_DIRS=")
  fi
else
  echo "run-tests: not root or no mkfs.xfs: the xfs runs of the tracking tests are left out"
  pmem_dirs_arg=("-DMMTIER_TEST_PMEM_DIRS=")
fi

label_args=()
[[ -n ${TEST_LABEL:-} ]] && label_args=(-L "$TEST_LABEL")
run_suite all "$BUILD_DIR" "${pmem_dirs_arg[@]}" -- -j2 "${label_args[@]}"
BUILD_TARGET=mmtier_unit_tests run_suite asan "$ASAN_BUILD_DIR" "-DMMTIER_SANITIZE=address;undefined" \
  -DMMTIER_BUILD_BENCH=OFF -- -L unit
# ThreadSanitizer's deadlock detector holds at most 64 locks (the engine's
# fork handlers take more), and it cannot start threads in the child of a
# multi-threaded fork: that one fork test runs in the other suites only.
TSAN_OPTIONS=detect_deadlocks=0 BUILD_TARGET=mmtier_unit_tests run_suite tsan "$TSAN_BUILD_DIR" \
  -DMMTIER_SANITIZE=thread -DMMTIER_BUILD_BENCH=OFF -- -L unit -R '^(Migrate|Sample|SampleRace|Small)\.' -E 'AfterFork'

# The suites that need another kernel and memory this host lacks (Debian's
# 6.1 kernel, an fsdax NVDIMM, a CPU-less NUMA node): in a virtual machine
# booted on the build above (scripts/vm-test.sh; VM_TESTS=0 leaves it
# out).  It prints a summary line in ctest's form.
vm_skipped=""
if [[ ${VM_TESTS:-1} != 0 ]]; then
  step "vm: scripts/vm-test.sh --build $BUILD_DIR"
  "$ROOT/scripts/vm-test.sh" --build "$BUILD_DIR" 2>&1 | tee "$LOGS/vm.log"
  rc=${PIPESTATUS[0]}
  if ((rc == 77)); then
    vm_skipped="the virtual-machine suites ($(grep -m1 'cannot start' "$LOGS/vm.log" | sed 's/^vm-test: //'))"
  elif ((rc != 0)); then
    echo "run-tests: vm: scripts/vm-test.sh exited with status $rc"
    status=1
  fi
fi

# Summary.  A run without ctest's summary line (build failure, ctest crash)
# counts as one failure so that the totals can never read as a clean pass.
# ctest counts a skipped test among the passed; here it is counted apart,
# and with REQUIRE_ALL_TESTS=1 (CI: .ci/run, on a machine that can
# run every test) a skipped test fails the run.
step "summary"
passed=0 failed=0 skipped=0
names=(all asan tsan)
[[ ${VM_TESTS:-1} != 0 && -z $vm_skipped ]] && names+=(vm)
for name in "${names[@]}"; do
  line=$(grep -E '^[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$LOGS/$name.log" | tail -n 1)
  if [[ -z $line ]]; then
    echo "$name: no ctest summary (see the output above)"
    failed=$((failed + 1))
    status=1
    continue
  fi
  echo "$name: $line"
  grep -E '^Total Test time' "$LOGS/$name.log" | tail -n 1 | sed "s/^/$name: /"
  read -r nfail total < <(sed -E 's/^[0-9]+% tests passed, ([0-9]+) tests? failed out of ([0-9]+).*/\1 \2/' <<< "$line")
  # "The following tests did not run:" then one line per test.
  mapfile -t skips < <(sed -n '/^The following tests did not run:/,/^$/p' "$LOGS/$name.log" |
    grep -E '^[[:space:]]+[0-9]+ - .* \((Skipped|Disabled|Not Run)\)' | sed -E 's/^[[:space:]]+[0-9]+ - //')
  for t in "${skips[@]}"; do echo "$name: skipped: $t"; done
  nskip=${#skips[@]}
  passed=$((passed + total - nfail - nskip))
  failed=$((failed + nfail))
  skipped=$((skipped + nskip))
  ((nfail == 0)) || status=1
done
if [[ -n $vm_skipped ]]; then
  echo "vm: skipped: $vm_skipped"
  skipped=$((skipped + 1))
fi
if ((skipped > 0)) && [[ ${REQUIRE_ALL_TESTS:-0} == 1 ]]; then
  echo "run-tests: $skipped test(s) skipped on a machine that must run them all (REQUIRE_ALL_TESTS=1)"
  status=1
fi
echo "$passed passed, $failed failed, $skipped skipped"
exit "$status"
