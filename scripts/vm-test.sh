#!/usr/bin/env bash
# Runs chosen test suites inside a virtual machine that has what users'
# machines have and this host may not: Debian 12's stock kernel (6.1: no
# userfaultfd write-protect of unpopulated pages, no UFFDIO_MOVE), an
# emulated NVDIMM converted to fsdax with ext4 mounted -o dax, and a second
# NUMA node without CPUs (how Linux shows CXL memory).  The guest sees the
# host's root read-only over virtio-9p, so it runs this build tree's
# binaries as they are.  Without /dev/kvm qemu emulates the CPU (TCG): a
# boot takes about 10 s and tests run several times slower than here.
#
# usage: scripts/vm-test.sh [--build DIR] [--work DIR] [--suites "LIST"]
#                           [--kernel VERSION | --ubuntu SERIES] [--timeout SECONDS] [--kmem]
#   suites (scripts/vm/guest.sh): fallbacks (migration and sampling unit
#   tests on the 6.1 kernel, PMem on tmpfs and on DAX), tiering (the
#   tiering tests with the PMem tier on DAX), program (python3 on DAX, on
#   tmpfs and alone: same answer, times), gups (the hot-set workload on
#   DAX: promotions and demotions, none failed), numa (the slow tier as the
#   CPU-less node: pages where their tier says, the workload and python3
#   on it, the workload with node 0 held but for 96 MiB), pressure (that
#   last check alone, to repeat it; each run's log kept), restore (snapshot restore with this kernel's paths: POSIX
#   timers, a container's PID namespace, a migration), programs (the real-program suite with the slow tier on DAX and
#   on the node; long), compare (python3 and GUPS with the slow tier on DAX,
#   tmpfs and the node, side by side), kerneltier (needs --kmem: GUPS under
#   the kernel's own tiering, mmtier's NUMA-node tier and memkind on a KMEM
#   DAX node), sweep (bench/sweep.py at the guest's sizes with the slow
#   tier on tmpfs, on DAX and on the node; SWEEP_SECONDS per phase,
#   SWEEP_TIERS some of tmpfs dax node),
#   script (runs WORK/script.sh in the guest, for investigations).
#   Default: all but programs, compare, kerneltier, sweep and script.
#   --kernel VERSION: an installed Debian kernel (/boot/vmlinuz-VERSION and
#   its modules); default the newest 6.1.  --ubuntu jammy|noble|focal: the
#   newest kernel of that Ubuntu release instead (jammy: 5.15 generic,
#   noble: 6.8 generic, focal: 5.14 oem, the base of RHEL 9's kernel),
#   fetched from archive.ubuntu.com into WORK/kernels (image, modules and
#   modules-extra unpacked there, nothing installed on the host; kept for
#   later runs); the guest's /lib/modules is that directory.
#   --kmem: node 1 has no RAM of its own but a second NVDIMM, which the
#   kerneltier suite onlines as system RAM (a KMEM DAX node, in a lower
#   memory tier); KT_FOOTPRINT, KT_HOT, KT_DRAM and KT_FREE_MB pass through,
#   and PROGRAMS_WHERE (dax, node or both: the programs suite's slow tiers)
#   and PROGRAMS_ONLY (which of its programs); PRESSURE_ROOM_MB (node 0's
#   room in the numa suite's pressure and holes checks), PRESSURE_LIB
#   (another libmmtier.so for those checks, to compare), PRESSURE_LOG
#   (their MMTIER_LOG, default info; debug names each move), PRESSURE_MOVES
#   (the mover's moves a phase of theirs may take, 80) and PRESSURE_SECONDS
#   (their cap, 150 s).
# Installs its packages when run as root (qemu-system-x86, a Debian 6.1
# kernel image, busybox-static, ndctl, cpio).  Prints the guest's results,
# then a line in ctest's form "N% tests passed, N tests failed out of N";
# exits 0 if every check passed, 1 if one failed (or the guest gave no
# results), 77 if what the machine needs is missing and cannot be installed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=$ROOT/build
WORK=
SUITES="fallbacks tiering program gups numa restore"  # and: programs, compare
KVER=
UBUNTU=
TIMEOUT=1200
KMEM=0
while (($#)); do
  case $1 in
    --build) BUILD=$(cd "$2" && pwd); shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --suites) SUITES=$2; shift 2 ;;
    --kernel) KVER=$2; shift 2 ;;
    --ubuntu) UBUNTU=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --kmem) KMEM=1; shift ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "vm-test: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
WORK=${WORK:-$BUILD/vm}
cant() { echo "vm-test: cannot start the machine: $*" >&2; exit 77; }

# --- prerequisites ------------------------------------------------------
newest_kernel() { # the newest 6.1 kernel image installed, as its version ("" if none)
  { compgen -G '/boot/vmlinuz-6.1.0-*-amd64' || true; } | sed 's|/boot/vmlinuz-||' | sort -V | tail -1
}
[[ -n $KVER && -n $UBUNTU ]] && { echo "vm-test: --kernel and --ubuntu exclude each other" >&2; exit 2; }
[[ -z $KVER && -z $UBUNTU ]] && KVER=$(newest_kernel)
need=()
command -v qemu-system-x86_64 > /dev/null || need+=(qemu-system-x86)
# A static busybox (the initramfs has no libc); Debian's busybox package is
# dynamic.
static_busybox() { [[ -x /bin/busybox ]] && ! LC_ALL=C ldd /bin/busybox > /dev/null 2>&1; }
static_busybox || need+=(busybox-static)
command -v ndctl > /dev/null || need+=(ndctl)
command -v cpio > /dev/null || need+=(cpio)
((KMEM)) && ! command -v daxctl > /dev/null && need+=(daxctl)
command -v mkfs.ext4 > /dev/null || need+=(e2fsprogs)
if [[ -z $KVER && -z $UBUNTU ]]; then
  pkg=$(apt-cache search --names-only '^linux-image-6\.1\.0-[0-9]+-amd64-unsigned$' 2>/dev/null | cut -d' ' -f1 | sort -V | tail -1)
  need+=("${pkg:-linux-image-amd64}")
fi
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || cant "missing ${need[*]} (run as root to install them)"
  echo "vm-test: installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}" < /dev/null > /dev/null ||
    { apt-get update -q > /dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${need[@]}" < /dev/null > /dev/null; } || cant "apt-get install ${need[*]} failed"
  [[ -z $KVER && -z $UBUNTU ]] && KVER=$(newest_kernel)
fi
mkdir -p "${WORK}"
WORK=$(cd "$WORK" && pwd)
KROOT=  # where the kernel's boot/ and lib/modules/ are: / for an installed one
GUEST_MODULES=  # the guest's path of a fetched kernel's lib/modules
if [[ -n $UBUNTU ]]; then
  # Ubuntu's kernel of that release, from its archive: the newest
  # linux-image-unsigned-V-N-FLAVOUR in SERIES-updates (else SERIES) whose V
  # is the one asked for (not a hardware-enablement kernel).
  flavour=generic
  case $UBUNTU in
    jammy) base=5.15.0 ;;
    noble) base=6.8.0 ;;
    focal) base=5.14.0 flavour=oem ;;  # 20.04's OEM kernel: Linux 5.14, RHEL 9's base
    *) echo "vm-test: --ubuntu takes jammy (5.15), noble (6.8) or focal (5.14), not $UBUNTU" >&2; exit 2 ;;
  esac
  mirror=${UBUNTU_MIRROR:-http://archive.ubuntu.com/ubuntu}
  kdir=$WORK/kernels/$UBUNTU
  mkdir -p "$kdir"
  if [[ ! -f $kdir/version ]]; then
    command -v curl > /dev/null || cant "--ubuntu needs curl"
    for pocket in "$UBUNTU-updates" "$UBUNTU"; do
      curl -fsS --max-time 120 "$mirror/dists/$pocket/main/binary-amd64/Packages.gz" | gzip -dc > "$kdir/Packages" ||
        continue
      abi=$(sed -nE "s/^Package: linux-image-unsigned-($base-[0-9]+)-$flavour$/\1/p" "$kdir/Packages" | sort -V | tail -1)
      [[ -n $abi ]] && break
    done
    [[ -n ${abi:-} ]] || cant "no $base $flavour kernel found in $mirror for $UBUNTU"
    rm -rf "$kdir/root"
    mkdir -p "$kdir/root"
    for p in image-unsigned modules modules-extra; do
      f=$(awk -v P="Package: linux-$p-$abi-$flavour" '$0 == P { f = 1 } f && /^Filename:/ { print $2; exit }' "$kdir/Packages")
      [[ -z $f && $p == modules-extra ]] && continue  # a flavour without it
      [[ -n $f ]] || cant "no linux-$p-$abi-$flavour in $mirror"
      echo "vm-test: fetching $(basename "$f")"
      curl -fsS --max-time 600 "$mirror/$f" -o "$kdir/pkg.deb" || cant "cannot fetch $mirror/$f"
      dpkg-deb -x "$kdir/pkg.deb" "$kdir/root" || cant "cannot unpack $f"
      rm -f "$kdir/pkg.deb"
    done
    # The packages make modules.dep at installation; unpacked, it is made here.
    depmod -b "$kdir/root" "$abi-$flavour" || cant "depmod failed for $abi-$flavour"
    echo "$abi-$flavour" > "$kdir/version"
  fi
  KVER=$(cat "$kdir/version")
  KROOT=$kdir/root
  GUEST_MODULES=/tmp/vmwork/kernels/$UBUNTU/root/lib/modules
fi
KIMG=$KROOT/boot/vmlinuz-$KVER
[[ -n $KVER ]] || cant "no /boot/vmlinuz-6.1.0-*-amd64"
[[ -r $KIMG ]] || cant "no readable $KIMG"
MODROOT=$KROOT/lib/modules/$KVER
MODS=$MODROOT/kernel
[[ -d $MODS ]] || cant "no modules in $MODS"
for f in "$BUILD/libmmtier.so" "$BUILD/tests/mmtier_unit_tests" "$BUILD/tests/preload/tiering_test" \
  "$BUILD/bench/workloads/gups" "$BUILD/mmtier" "$BUILD/tests/cli/cli_restore_child"; do
  [[ -e $f ]] || { echo "vm-test: $f not built (build first: scripts/build.sh $BUILD)" >&2; exit 2; }
done

# --- the initramfs: busybox, the 9p modules, init -------------------------
initrd=$WORK/initramfs-$KVER.cpio.gz
if [[ ! -s $initrd || $ROOT/scripts/vm/init -nt $initrd ]]; then
  tree=$(mktemp -d)
  mkdir -p "$tree"/{bin,dev,proc,sys,root,modules}
  cp /bin/busybox "$tree/bin/busybox"
  cp "$ROOT/scripts/vm/init" "$tree/init"
  chmod 755 "$tree/init"
  # In load order: each module after what modules.dep says it needs (which
  # differs between 6.1 updates: virtio needs virtio_ring in later ones).
  order=()
  add_mod() {
    local m=$1 dep d
    [[ " ${order[*]} " == *" $m "* ]] && return
    dep=$(sed -nE "s|^kernel/$m\.ko[^:]*:(.*)|\1|p" "$MODROOT/modules.dep" 2>/dev/null)
    for d in $dep; do
      d=${d#kernel/}
      add_mod "${d%.ko*}"
    done
    order+=("$m")
  }
  for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_modern_dev \
    drivers/virtio/virtio_pci_legacy_dev drivers/virtio/virtio_pci fs/netfs/netfs fs/fscache/fscache \
    net/9p/9pnet net/9p/9pnet_virtio fs/9p/9p; do
    add_mod "$m"
  done
  for m in "${order[@]}"; do
    f=$({ compgen -G "$MODS/$m.ko*" || true; } | head -1)
    [[ -n $f ]] || continue  # built into this kernel
    case $f in
      *.xz) xz -dc "$f" > "$tree/modules/$(basename "$m").ko" ;;
      *.zst) zstd -qdc "$f" > "$tree/modules/$(basename "$m").ko" ;;
      *) cp "$f" "$tree/modules/" ;;
    esac
    echo "$(basename "$m").ko" >> "$tree/modules.list"
  done
  touch "$tree/modules.list"
  (cd "$tree" && find . | cpio -o -H newc --quiet | gzip -1) > "$initrd"
  rm -rf "$tree"
fi

# --- the machine -----------------------------------------------------------
# The NVDIMM's backing file keeps its fsdax namespace between runs.
[[ -f $WORK/nvdimm.img ]] || truncate -s 2G "$WORK/nvdimm.img"
printf 'BUILD=%q\nSRC=%q\nSUITES=%q\nGUPS_SECONDS=%q\nKMEM=%q\n' "$BUILD" "$ROOT" "$SUITES" "${GUPS_SECONDS:-}" \
  "$KMEM" > "$WORK/args"
for v in KT_FOOTPRINT KT_HOT KT_DRAM KT_FREE_MB PROGRAMS_WHERE PROGRAMS_ONLY PRESSURE_ROOM_MB PRESSURE_LIB PRESSURE_LOG PRESSURE_MOVES PRESSURE_SECONDS SWEEP_SECONDS SWEEP_TIERS; do [[ -n ${!v:-} ]] && printf '%s=%q\n' "$v" "${!v}" >> "$WORK/args"; done
# Node 1: 3 GiB of RAM, or (--kmem) none but a second NVDIMM.
node1=(-object memory-backend-ram,id=ram1,size=3G -numa node,nodeid=1,memdev=ram1)
mem=6G
if ((KMEM)); then
  [[ -f $WORK/nvdimm1.img ]] || truncate -s 3G "$WORK/nvdimm1.img"
  node1=(-numa node,nodeid=1
    -object memory-backend-file,id=nv1,share=on,mem-path="$WORK/nvdimm1.img",size=3G
    -device nvdimm,id=nvdimm1,memdev=nv1,node=1)
  mem=3G
fi
rm -f "$WORK/results"
cp "$ROOT/scripts/vm/guest.sh" "$WORK/guest.sh"
accel=(-accel tcg,thread=multi -cpu max)
# KVM only where a guest really starts under it: on some hosts /dev/kvm is
# there and writable, but a nested guest never gets past the firmware.  A
# bare boot of the kernel must print its banner within 20 s.
kvm_starts() {
  local log="$WORK/kvm-probe.log" t
  qemu-system-x86_64 -machine pc -accel kvm -cpu host -smp 1 -m 512M -kernel "$KIMG" \
    -append "console=ttyS0 loglevel=7 panic=-1" -nographic -no-reboot < /dev/null > "$log" 2>&1 &
  local pid=$!
  for ((t = 0; t < 40; t++)); do
    if grep -aq 'Linux version' "$log"; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  return 1
}
if [[ -w /dev/kvm ]]; then
  if kvm_starts; then
    accel=(-accel kvm -cpu host)
  else
    echo "vm-test: /dev/kvm is there but a guest does not start under it (no kernel banner within 20 s); emulating the CPU (TCG)"
  fi
fi
echo "vm-test: booting $KVER (${accel[1]%%,*}), suites: $SUITES; console in $WORK/console.log"
start=$SECONDS
set +e
timeout --foreground -k 10 "$TIMEOUT" qemu-system-x86_64 \
  -machine pc,nvdimm=on "${accel[@]}" -smp 2 \
  -m "$mem",slots=2,maxmem=16G \
  -object memory-backend-ram,id=ram0,size=3G -numa node,nodeid=0,cpus=0-1,memdev=ram0 \
  -object memory-backend-file,id=nv0,share=on,mem-path="$WORK/nvdimm.img",size=2G \
  -device nvdimm,id=nvdimm0,memdev=nv0,node=0 \
  "${node1[@]}" \
  -virtfs local,path=/,mount_tag=host,security_model=none,readonly=on,multidevs=remap,id=fs0 \
  -virtfs local,path="$WORK",mount_tag=work,security_model=none,id=fs1 \
  -virtfs local,path="$ROOT",mount_tag=src,security_model=none,readonly=on,multidevs=remap,id=fs2 \
  -virtfs local,path="$BUILD",mount_tag=build,security_model=none,readonly=on,multidevs=remap,id=fs3 \
  -kernel "$KIMG" -initrd "$initrd" \
  -append "console=ttyS0 rdinit=/init loglevel=4 mitigations=off panic=-1 vmtest.script=/tmp/vmwork/guest.sh vmtest.src=$ROOT vmtest.build=$BUILD${GUEST_MODULES:+ vmtest.modules=$GUEST_MODULES}" \
  -nographic -no-reboot < /dev/null > "$WORK/console.log" 2>&1
rc=$?
set -e
echo "vm-test: the machine ran $((SECONDS - start)) s (qemu exit $rc)"
[[ -f $WORK/results ]] || { tail -20 "$WORK/console.log"; echo "vm-test: no results from the guest"; exit 1; }

# --- results ----------------------------------------------------------------
sed -n 's/^INFO /  /p' "$WORK/results"
grep -E '^(PASS|FAIL) ' "$WORK/results" | sed 's/^/  /'
npass=$(grep -c '^PASS ' "$WORK/results" || true)
nfail=$(grep -c '^FAIL ' "$WORK/results" || true)
grep -q 'vm-guest: done' "$WORK/console.log" || { echo "vm-test: the guest did not finish (timeout $TIMEOUT s?)"; nfail=$((nfail + 1)); }
total=$((npass + nfail))
pct=$((total ? npass * 100 / total : 0))
echo "$pct% tests passed, $nfail tests failed out of $total"
((nfail == 0 && total > 0))
