#!/usr/bin/env bash
# test-image.sh: runs redis-server under libmmtier in the mmtier-redis
# image and checks it from the host.
#
#   deploy/container/test-image.sh [BUILD_DIR]      (default: build/)
#
# BUILD_DIR gives the host's `mmtier` command (and the binaries
# build-image.sh stages when the image does not exist yet).
#
# What it checks: redis-server starts in the container with the host's
# directory $WORK/test/pmem mounted at /pmem (MMTIER_PMEM_PATH=/pmem), its
# exit report going to the mounted $WORK/test/out, its live statistics to
# the mounted MMTIER_STATS_DIR; 200000 keys are loaded (DEBUG POPULATE) and
# read back; the host's `mmtier stat PID` and `mmtier stat --all` (same
# MMTIER_STATS_DIR) see the process with PMem placed; after SHUTDOWN the
# report exists and shows PMem bytes.
#
# How it runs the container (MMTIER_TEST_MODE):
#   podman   podman run, with a containers.conf ($WORK/containers.conf:
#            default_ulimits = [], runtime = "runc"; see README.md for why)
#   unshare  the image's root filesystem (podman export) under
#            unshare --mount --uts --ipc --fork + chroot, same mounts
#   auto     (default) podman when a probe container runs, else unshare
# Both run in the host's PID namespace (podman --pid=host), as the node
# agent's DaemonSet does: a stats file is named by the pid its process
# sees, and the host's reader checks that pid on the host (README.md).
#
# Exit: 0 all checks passed, 1 a check failed, 77 this machine can do
# neither (not root, no podman/unshare), for a harness to count as skipped.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build_dir=${1:-$repo/build}
work=${MMTIER_CONTAINER_WORK:-/var/tmp/mmtier-container}
mode=${MMTIER_TEST_MODE:-auto}
image=localhost/mmtier-redis:latest
port=${MMTIER_TEST_PORT:-16379}
keys=200000
name='mmtier-redis-test'

say() { echo "test-image: $*"; }
fail() { echo "test-image: FAIL: $*" >&2; exit 1; }
skip() { echo "test-image: SKIP: $*" >&2; exit 77; }

[ "$(id -u)" -eq 0 ] || skip "needs root (rootful podman, or unshare + chroot + bind mounts)"
command -v unshare >/dev/null || skip "no unshare"
[ -x "$build_dir/mmtier" ] || fail "no $build_dir/mmtier on the host"
mmtier=$(cd "$build_dir" && pwd)/mmtier

if ! command -v podman >/dev/null || ! podman image exists "$image" 2>/dev/null; then
  say "$image is missing: building it"
  "$here/build-image.sh" "$build_dir" || skip "could not build the image (build-image.sh failed)"
fi

# The podman configuration that runs containers on this host (README.md).
if [ -z "${CONTAINERS_CONF:-}" ]; then
  mkdir -p "$work"
  printf '[containers]\ndefault_ulimits = []\n\n[engine]\nruntime = "runc"\n' >"$work/containers.conf"
  export CONTAINERS_CONF=$work/containers.conf
fi

if [ "$mode" = auto ]; then
  if out=$(podman run --rm --pid=host --network=host "$image" true 2>&1); then
    mode=podman
  else
    say "podman cannot run a container here: $out"
    mode=unshare
  fi
fi
case $mode in podman|unshare) ;; *) fail "MMTIER_TEST_MODE=$mode: podman, unshare or auto" ;; esac

# Host directories mounted into the container.
t=$work/test
pmem=$t/pmem
outd=$t/out
stats=/dev/shm/mmtier-container-test    # MMTIER_STATS_DIR must be on tmpfs
rootfs=$t/rootfs
pid=

cleanup() {
  set +e
  if [ "$mode" = podman ]; then
    podman rm -f -t 2 "$name" >/dev/null 2>&1
  elif [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid"
  fi
}
trap cleanup EXIT

podman rm -f -t 2 "$name" >/dev/null 2>&1 || true
rm -rf "$pmem" "$outd" "$stats"
mkdir -p "$pmem" "$outd"
mkdir -m 0700 "$stats"

envs=(MMTIER_PMEM_PATH=/pmem MMTIER_DRAM_RATIO=1:4 MMTIER_REPORT=/out/report.%p MMTIER_STATS_DIR=/stats
      LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmmtier.so)
redis=(redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --protected-mode no
       --enable-debug-command yes)

if [ "$mode" = podman ]; then
  say "RUNNING WITH PODMAN: podman run (runtime runc, CONTAINERS_CONF=$CONTAINERS_CONF)"
  eargs=(); for e in "${envs[@]}"; do eargs+=(-e "$e"); done
  # /dev/userfaultfd: without it (or CAP_SYS_PTRACE + seccomp=unconfined)
  # the mover cannot move memory in a container (README.md).
  dev=(); [ -c /dev/userfaultfd ] && dev=(--device /dev/userfaultfd)
  podman run -d --name "$name" --pid=host --network=host "${dev[@]}" \
    -v "$pmem:/pmem" -v "$outd:/out" -v "$stats:/stats" "${eargs[@]}" "$image" "${redis[@]}" >/dev/null
  for _ in $(seq 100); do
    pid=$(podman inspect -f '{{.State.Pid}}' "$name" 2>/dev/null || true)
    [ -n "$pid" ] && [ "$pid" != 0 ] && break; sleep 0.1
  done
  rcli() { podman exec "$name" env -u LD_PRELOAD redis-cli -p "$port" "$@"; }
  logs() { podman logs "$name" 2>&1 | tail -n 20; }
else
  say "RUNNING WITHOUT A CONTAINER RUNTIME: the image's root filesystem under unshare --mount --uts --ipc --fork + chroot"
  id=$(podman image inspect -f '{{.Id}}' "$image")
  if [ "$(cat "$rootfs.id" 2>/dev/null)" != "$id" ]; then
    say "exporting $image (${id:0:12}) to $rootfs"
    rm -rf "$rootfs"; mkdir -p "$rootfs"
    c=$(podman create "$image" true)
    podman export "$c" | tar -x -C "$rootfs"
    podman rm "$c" >/dev/null
    echo "$id" >"$rootfs.id"
  fi
  mkdir -p "$rootfs/pmem" "$rootfs/out" "$rootfs/stats"
  : >"$outd/redis.pid"
  export PMEM=$pmem OUTD=$outd STATS=$stats
  # The inner shell writes its pid (the host's: no PID namespace) and execs redis.
  unshare --mount --uts --ipc --fork /bin/sh -c '
    set -e; r=$1; shift
    mount --make-rprivate /
    mount --bind "$PMEM" "$r/pmem"; mount --bind "$OUTD" "$r/out"; mount --bind "$STATS" "$r/stats"
    mount -t proc proc "$r/proc"; mount --rbind /dev "$r/dev"; mount --rbind /sys "$r/sys"
    mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm"; mount -t tmpfs tmpfs "$r/tmp"
    echo $$ >"$OUTD/redis.pid"
    exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
  ' sh "$rootfs" "${envs[@]}" "${redis[@]}" >"$outd/redis.log" 2>&1 &
  for _ in $(seq 100); do pid=$(cat "$outd/redis.pid" 2>/dev/null || true); [ -n "$pid" ] && break; sleep 0.1; done
  rcli() { chroot "$rootfs" /usr/bin/redis-cli -p "$port" "$@"; }
  logs() { tail -n 20 "$outd/redis.log"; }
fi
[ -n "$pid" ] || fail "redis-server did not start"
say "redis-server is pid $pid on the host"

for _ in $(seq 100); do [ "$(rcli PING 2>/dev/null)" = PONG ] && break; sleep 0.2; done
[ "$(rcli PING 2>/dev/null)" = PONG ] || { logs >&2; fail "redis-server does not answer PING"; }
grep -q libmmtier "/proc/$pid/maps" || fail "libmmtier.so is not mapped in redis-server (pid $pid)"
say "libmmtier.so is loaded in redis-server: $(grep -m1 -o '/[^ ]*libmmtier[^ ]*' "/proc/$pid/maps")"

# Load and check keys.
r=$(rcli DEBUG POPULATE "$keys" key 512) || fail "DEBUG POPULATE failed"
[ "$r" = OK ] || fail "DEBUG POPULATE: $r"
for i in $(seq 1 50); do rcli SET "extra:$i" "$(printf 'v%.0s' $(seq 1 $((i * 40))))" >/dev/null; done
n=$(rcli DBSIZE)
[ "$n" -eq $((keys + 50)) ] || fail "DBSIZE is $n, want $((keys + 50))"
v=$(rcli GET key:123456 | tr -d '\0')   # DEBUG POPULATE pads "value:N" with zero bytes
[ "$v" = value:123456 ] || fail "GET key:123456 gave '${v:0:40}'"
l=$(rcli STRLEN key:123456); [ "$l" -eq 512 ] || fail "STRLEN key:123456 is $l, want 512"
v=$(rcli GET extra:50); [ "${#v}" -eq 2000 ] || fail "GET extra:50 has ${#v} bytes, want 2000"
say "loaded $keys keys with DEBUG POPULATE (512 B values) and 50 with SET: DBSIZE $n, values read back intact"
say "redis used_memory: $(rcli INFO memory | tr -d '\r' | awk -F: '$1=="used_memory_human"{print $2}')"
# The PMem file is unlinked once open; its mappings name it, and its
# device is the host directory's.
pm=$(grep -c '/pmem/' "/proc/$pid/maps" || true)
[ "$pm" -gt 0 ] || fail "redis-server maps nothing from /pmem"
f=$(grep -m1 -o ' /[^ ]*/*pmem/[^ ]*' "/proc/$pid/maps" | tr -d ' ')
hostdev=$(stat -c %d "$pmem")
mapdev=$(for m in "/proc/$pid/map_files/"*; do
  [[ $(readlink "$m") == */pmem/* ]] && { stat -L -c %d "$m"; break; }; done)
[ "$mapdev" = "$hostdev" ] || fail "the /pmem mappings are on device $mapdev, the host's $pmem on $hostdev"
say "PMem: $pm mappings of $f in redis-server, on the host directory's filesystem (device $hostdev)"

# The host's view through the shared statistics directory.
for _ in $(seq 50); do [ -e "$stats/$pid.stats" ] && break; sleep 0.2; done
[ -e "$stats/$pid.stats" ] || fail "no $stats/$pid.stats (ls: $(ls "$stats"))"
say "host: MMTIER_STATS_DIR=$stats $mmtier stat $pid"
st=$(MMTIER_STATS_DIR=$stats "$mmtier" stat "$pid") || fail "mmtier stat $pid failed: $st"
echo "$st" | sed 's/^/    /'
say "host: MMTIER_STATS_DIR=$stats $mmtier stat --all"
all=$(MMTIER_STATS_DIR=$stats "$mmtier" stat --all) || fail "mmtier stat --all failed: $all"
echo "$all" | sed 's/^/    /'
echo "$all" | grep -qw "$pid" || fail "mmtier stat --all does not list pid $pid"
js=$(MMTIER_STATS_DIR=$stats "$mmtier" stat "$pid" --json) || fail "mmtier stat $pid --json failed"
pmem_placed=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tiers"]["pmem"]["placed_bytes"])' <<<"$js" 2>/dev/null || echo 0)
say "mmtier stat --json: PMem placed bytes = $pmem_placed"
[ "${pmem_placed%.*}" -gt 0 ] 2>/dev/null || fail "mmtier stat shows no PMem placed (json: ${js:0:400})"

# Normal exit: the report.
say "SHUTDOWN NOSAVE"
rcli SHUTDOWN NOSAVE >/dev/null 2>&1 || true
for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
kill -0 "$pid" 2>/dev/null && fail "redis-server (pid $pid) did not exit"
if [ "$mode" = podman ]; then
  for _ in $(seq 50); do [ "$(podman inspect -f '{{.State.Status}}' "$name")" = exited ] && break; sleep 0.1; done
  code=$(podman inspect -f '{{.State.ExitCode}}' "$name")
  say "container exited with code $code"
  [ "$code" = 0 ] || { logs >&2; fail "container exit code $code"; }
fi
rep=$outd/report.$pid
[ -s "$rep" ] || fail "no report $rep (out: $(ls "$outd"))"
say "report $rep:"
sed 's/^/    /' "$rep"
peak=$(awk '$1=="PMem" {print $4, $5; exit}' "$rep")
case $peak in ""|"0 "*|"0.0 "*) fail "the report shows no PMem bytes (PMem placed-peak: '$peak')" ;; esac
say "report: PMem placed-peak $peak"
if [ -c /dev/userfaultfd ] && grep -q 'moves unavailable' "$rep"; then
  fail "the mover could not use userfaultfd in the container (see the report's kernel line)"
fi
[ -e "$stats/$pid.stats" ] && fail "$stats/$pid.stats is still there after exit"
say "PASS ($mode): redis-server under libmmtier in the image, $keys keys, PMem from the host's $pmem, stats and report seen from the host"
