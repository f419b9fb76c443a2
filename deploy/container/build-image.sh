#!/usr/bin/env bash
# build-image.sh: builds the mmtier container images with buildah, from a
# Debian 12 base image made locally (no image registry needed).
#
#   deploy/container/build-image.sh [BUILD_DIR]     (default: build/)
#
# 1. localhost/debian:bookworm: debootstrap --variant=minbase bookworm into
#    $WORK/bookworm-rootfs, tarred and imported with `podman import`
#    (skipped when the image exists);
# 2. stages libmmtier.so, mmtier, mmtierd and mmtier-inject from BUILD_DIR into
#    $WORK/context/bin next to the Containerfile;
# 3. builds localhost/mmtier:latest (stage runtime, ENTRYPOINT mmtierd),
#    localhost/mmtier-redis:latest (stage redis-example) and
#    localhost/mmtier-webhook:latest (stage webhook: mmtier inject --webhook).
#
# Environment: MMTIER_CONTAINER_WORK (default /var/tmp/mmtier-container),
# DEBIAN_MIRROR (default http://deb.debian.org/debian), ISOLATION (buildah's
# --isolation for RUN steps; default chroot, which needs no OCI runtime or
# cgroups; oci uses crun/runc).  Run as root; installs buildah, podman and
# debootstrap with apt-get when missing.  Idempotent.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
build_dir=${1:-$repo/build}
work=${MMTIER_CONTAINER_WORK:-/var/tmp/mmtier-container}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
isolation=${ISOLATION:-chroot}
base_image=localhost/debian:bookworm

say() { echo "build-image: $*"; }
die() { echo "build-image: error: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and buildah's rootful storage)"
build_dir=$(cd "$build_dir" 2>/dev/null && pwd) || die "no build directory ${1:-$repo/build}"
for f in libmmtier.so mmtier mmtierd; do
  [ -e "$build_dir/$f" ] || die "$build_dir/$f is missing (build the project first: scripts/build.sh)"
done

need=()
command -v buildah >/dev/null || need+=(buildah)
command -v podman >/dev/null || need+=(podman)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
mkdir -p "$work"

# 1. The base image.
if buildah inspect --type image "$base_image" >/dev/null 2>&1; then
  say "$base_image exists"
else
  rootfs=$work/bookworm-rootfs
  if [ ! -e "$rootfs/.mmtier-debootstrap-done" ]; then
    say "debootstrap bookworm into $rootfs (a few minutes)"
    rm -rf "$rootfs"
    debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
      die "debootstrap failed, see $work/debootstrap.log"
    touch "$rootfs/.mmtier-debootstrap-done"
  fi
  say "importing $rootfs as $base_image"
  # Trim what an image does not need; the apt sources are the ones debootstrap wrote.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb http://deb.debian.org/debian-security bookworm-security main\n' \
    "$mirror" "$mirror" >"$rootfs/etc/apt/sources.list"
  tar --numeric-owner --exclude=./.mmtier-debootstrap-done --exclude='./proc/*' --exclude='./sys/*' \
    --exclude='./dev/*' -C "$rootfs" -cf "$work/bookworm.tar" .
  # (buildah has no import; podman import writes to the same storage.)
  podman import --quiet --change 'CMD ["/bin/bash"]' "$work/bookworm.tar" "$base_image" >/dev/null
  say "$base_image: $(podman image inspect --format '{{.Id}}' "$base_image" | cut -c1-12)"
fi

# 2. The context.
ctx=$work/context
rm -rf "$ctx"
mkdir -p "$ctx/bin"
cp "$here/Containerfile" "$ctx/Containerfile"
for f in libmmtier.so mmtier mmtierd mmtier-inject; do cp -L "$build_dir/$f" "$ctx/bin/$f"; done
say "staged $(cd "$ctx/bin" && ls | tr '\n' ' ')from $build_dir into $ctx"

# 3. The images.
bud() {  # bud TARGET TAG
  say "building $2 (stage $1, --isolation $isolation)"
  buildah bud --isolation "$isolation" --layers --target "$1" -t "$2" -f "$ctx/Containerfile" "$ctx" \
    >"$work/build-$1.log" 2>&1 || { tail -n 30 "$work/build-$1.log" >&2; die "buildah bud --target $1 failed, see $work/build-$1.log"; }
}
bud runtime localhost/mmtier:latest
bud redis-example localhost/mmtier-redis:latest
bud webhook localhost/mmtier-webhook:latest
buildah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' | grep -E 'localhost/(mmtier|debian)' | sed 's/^/build-image: image /'
say "done"
