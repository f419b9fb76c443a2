#!/usr/bin/env bash
# mmtier for a user who is not root, on a host configured as Debian ships
# it (vm.unprivileged_userfaultfd=0, /dev/userfaultfd root:root 0600):
#   1. before the host is set up, the user's program runs correctly, its
#      memory is placed, and one warning says why nothing is moved (and
#      memory the program asks to be wiped in a fork child still is);
#   2. after the set-up step the install performs
#      (scripts/install-host.sh --uffd-only: /dev/userfaultfd opened to a
#      group the user belongs to), the preload suite's essential checks pass
#      as that user and a GUPS-style hot set is promoted and cold units are
#      demoted.
# The device's permissions are put back as they were at the end.
# usage: unprivileged.sh BUILD_DIR SOURCE_DIR   (as root; exit 77 otherwise)
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$2" && pwd)
lib=$build/libmmtier.so
[[ $(id -u) == 0 ]] || { echo "needs root to make a user"; exit 77; }
dev=/dev/userfaultfd
[[ -c $dev ]] || { echo "no $dev (Linux before 6.1): the set-up step cannot apply"; exit 77; }
[[ $(cat /proc/sys/vm/unprivileged_userfaultfd) == 0 ]] ||
  { echo "vm.unprivileged_userfaultfd is not 0 here: not a default host"; exit 77; }

user=mmtier-unpriv
group=mmtier-unpriv-uffd
saved=$(stat -c '%u:%g %a' "$dev")
cleanup() {
  chown "${saved% *}" "$dev"
  chmod "${saved#* }" "$dev"
  rm -f /etc/udev/rules.d/70-mmtier-userfaultfd.rules
}
trap cleanup EXIT
chown root:root "$dev"
chmod 0600 "$dev"
id "$user" > /dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
getent group "$group" > /dev/null && gpasswd -d "$user" "$group" > /dev/null 2>&1 || true
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
as_user() { runuser -u "$user" -- env -i PATH=/usr/bin:/bin "$@"; }
gups() {
  as_user LD_PRELOAD="$lib" MMTIER_DRAM_LIMIT=64M MMTIER_SCAN_INTERVAL=20ms MMTIER_REPORT=stderr \
    MMTIER_STATS_DIR=off "$build/bench/workloads/gups" --footprint 512M --hot 32M --seconds 8 --move-at 4
}
# The mover's figures of the exit report: "mover: N scans, P promotions, D demotions, ...".
report_count() { sed -n "s/.* \([0-9][0-9]*\) $1,.*/\1/p" <<< "$2" | head -n 1; }

echo "== 1. default host: placed, not moved, said once"
out=$(gups 2>&1) || fail "gups failed before set-up: $out"
grep -q '^VERIFY ok' <<< "$out" || fail "gups output wrong before set-up: $out"
n=$(grep -c 'may not use userfaultfd' <<< "$out" || true)
[[ $n == 1 ]] || fail "expected one warning about userfaultfd, got $n: $out"
grep -q 'DRAM ' <<< "$out" || fail "no report: $out"
# Memory to be wiped in a fork child is made anonymous with the threads
# stopped (no userfaultfd to move it with).
as_user LD_PRELOAD="$lib" HOME=/nonexistent "$build/tests/preload/fork_test" --gtest_brief=1 \
  --gtest_filter='Fork.WipeOnFork*' > /tmp/mmtier-unpriv-wipe.log 2>&1 ||
  { cat /tmp/mmtier-unpriv-wipe.log; fail "fork_test's wipe-on-fork tests as $user before set-up"; }
tail -n 1 /tmp/mmtier-unpriv-wipe.log
rm -f /tmp/mmtier-unpriv-wipe.log

echo "== 2. the install's set-up step, the user in its group"
"$src/scripts/install-host.sh" --uffd-only --uffd-group "$group"
usermod -aG "$group" "$user"
[[ $(stat -c '%G %a' "$dev") == "$group 660" ]] || fail "$dev is $(stat -c '%U:%G %a' "$dev")"

echo "== 3. essential preload checks as $user"
for t in malloc_conformance_test mmap_semantics_test fork_test threads_test; do
  as_user LD_PRELOAD="$lib" HOME=/nonexistent "$build/tests/preload/$t" --gtest_brief=1 > /tmp/mmtier-unpriv-$t.log 2>&1 ||
    { cat /tmp/mmtier-unpriv-$t.log; fail "$t as $user"; }
  tail -n 1 /tmp/mmtier-unpriv-$t.log
  rm -f /tmp/mmtier-unpriv-$t.log
done

echo "== 4. a hot set as $user: promoted, and cold units demoted"
out=$(gups 2>&1) || fail "gups failed after set-up: $out"
grep -q '^VERIFY ok' <<< "$out" || fail "gups output wrong: $out"
grep -q 'userfaultfd' <<< "$out" && fail "still a userfaultfd warning: $out"
promotions=$(report_count promotions "$out")
demotions=$(report_count demotions "$out")
echo "promotions=$promotions demotions=$demotions"
grep '^SUMMARY' <<< "$out"
((promotions > 0)) || fail "no promotion as $user: $out"
((demotions > 0)) || fail "no demotion as $user: $out"
echo "ok"
