#!/usr/bin/env bash
# Installs mmtier on this host (as root) and sets the host up so that every
# program can run under it, whatever user runs it:
#
#   - the libraries, headers and the mmtier command (cmake --install of
#     BUILD_DIR, built first if needed) under PREFIX;
#   - userfaultfd for unprivileged users, which the mover needs to move
#     memory between the tiers.  Debian and most distributions set
#     vm.unprivileged_userfaultfd=0: only root may use it, and a database
#     running as its own user gets placement but no promotion or demotion.
#     Linux 6.1 and later have /dev/userfaultfd, whose permissions decide
#     instead; this installs a udev rule that opens it to the group
#     `mmtier` (--uffd-group, the default) or to every user
#     (--uffd-all-users), and applies it to the device node now.  Add the
#     users that run tiered programs to the group
#     (usermod -aG mmtier postgres; a systemd service: SupplementaryGroups=mmtier).
#     userfaultfd lets a process hold its own page faults, also the
#     kernel's inside system calls; the kernel restricts it because that
#     can widen race windows an exploit needs.  The group keeps that to
#     the users you choose.
#   - with --preload-all: the library in /etc/ld.so.preload, so that every
#     program on the host starts under it (README, "Every process on a
#     host").
#
# usage: scripts/install-host.sh [--prefix DIR] [--build-dir DIR]
#            [--uffd-group NAME | --uffd-all-users | --no-uffd] [--preload-all]
#        scripts/install-host.sh --uninstall [--prefix DIR] [--build-dir DIR]
#        scripts/install-host.sh --uffd-only [--uffd-group NAME | --uffd-all-users]
# --uffd-only sets up userfaultfd access and nothing else (for tests).
# Idempotent.  Undone by --uninstall: /etc/ld.so.preload entry, udev rule,
# device permissions (back to root:root 0600), installed files.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PREFIX=/usr/local
BUILD_DIR=$ROOT/build
UFFD_MODE=group
UFFD_GROUP=mmtier
PRELOAD_ALL=0
ACTION=install
RULE=/etc/udev/rules.d/70-mmtier-userfaultfd.rules
DEVICE=/dev/userfaultfd
PRELOAD_FILE=/etc/ld.so.preload

die() {
  echo "install-host: $*" >&2
  exit 1
}

while (($#)); do
  case $1 in
    --prefix) PREFIX=${2:?}; shift ;;
    --build-dir) BUILD_DIR=${2:?}; shift ;;
    --uffd-group) UFFD_MODE=group; UFFD_GROUP=${2:?}; shift ;;
    --uffd-all-users) UFFD_MODE=all ;;
    --no-uffd) UFFD_MODE=none ;;
    --preload-all) PRELOAD_ALL=1 ;;
    --uninstall) ACTION=uninstall ;;
    --uffd-only) ACTION=uffd ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
  shift
done
[[ $(id -u) == 0 ]] || die "run as root: it installs into $PREFIX and changes /etc and $DEVICE"

LIB=$PREFIX/lib/$(gcc -print-multiarch 2> /dev/null || true)
[[ -d $LIB ]] || LIB=$PREFIX/lib

uffd_setup() {
  [[ $UFFD_MODE == none ]] || mkdir -p "$(dirname "$RULE")"
  case $UFFD_MODE in
    none) return ;;
    group)
      getent group "$UFFD_GROUP" > /dev/null || groupadd --system "$UFFD_GROUP"
      printf '# mmtier: userfaultfd for the users of group %s (scripts/install-host.sh)\nKERNEL=="userfaultfd", GROUP="%s", MODE="0660"\n' \
        "$UFFD_GROUP" "$UFFD_GROUP" > "$RULE"
      ;;
    all)
      printf '# mmtier: userfaultfd for every user (scripts/install-host.sh --uffd-all-users)\nKERNEL=="userfaultfd", MODE="0666"\n' > "$RULE"
      ;;
  esac
  if [[ -c $DEVICE ]]; then
    # Now, as udev would at the next boot (it may not run in a container).
    if [[ $UFFD_MODE == group ]]; then
      chgrp "$UFFD_GROUP" "$DEVICE"
      chmod 0660 "$DEVICE"
    else
      chmod 0666 "$DEVICE"
    fi
    echo "install-host: $DEVICE is now $(stat -c '%U:%G %a' "$DEVICE")"
  else
    echo "install-host: no $DEVICE here (Linux before 6.1): unprivileged processes get no userfaultfd;" \
      "set vm.unprivileged_userfaultfd=1 to allow it to every user (sysctl)" >&2
  fi
  if [[ $UFFD_MODE == group ]]; then
    echo "install-host: add the users that run tiered programs to group $UFFD_GROUP (usermod -aG $UFFD_GROUP USER;" \
      "a systemd service: SupplementaryGroups=$UFFD_GROUP)"
  fi
}

uffd_remove() {
  rm -f "$RULE"
  if [[ -c $DEVICE ]]; then
    chown root:root "$DEVICE"
    chmod 0600 "$DEVICE"
  fi
}

preload_add() {
  local lib=$LIB/libmmtier.so
  [[ -e $lib ]] || die "$lib is not installed"
  touch "$PRELOAD_FILE"
  grep -qxF "$lib" "$PRELOAD_FILE" || echo "$lib" >> "$PRELOAD_FILE"
  echo "install-host: every program started from now on runs under $lib ($PRELOAD_FILE)"
}

preload_remove() {
  [[ -f $PRELOAD_FILE ]] || return 0
  local tmp
  tmp=$(mktemp "$PRELOAD_FILE.XXXXXX")
  grep -v '/libmmtier\.so' "$PRELOAD_FILE" > "$tmp" || true
  if [[ -s $tmp ]]; then
    chmod 0644 "$tmp"
    mv "$tmp" "$PRELOAD_FILE"
  else
    rm -f "$tmp" "$PRELOAD_FILE"
  fi
}

case $ACTION in
  uffd)
    uffd_setup
    ;;
  install)
    if [[ ! -e $BUILD_DIR/libmmtier.so ]]; then
      "$ROOT/scripts/install-deps.sh"
      "$ROOT/scripts/build.sh" "$BUILD_DIR"
    fi
    cmake --install "$BUILD_DIR" --prefix "$PREFIX" > /dev/null
    ldconfig
    echo "install-host: installed under $PREFIX (libraries in $LIB)"
    uffd_setup
    ((PRELOAD_ALL)) && preload_add
    ;;
  uninstall)
    # First out of ld.so.preload: programs started meanwhile must not find
    # an entry whose file is gone (ld.so says so on every start).
    preload_remove
    uffd_remove
    if [[ -f $BUILD_DIR/install_manifest.txt ]]; then
      xargs -d '\n' rm -f < "$BUILD_DIR/install_manifest.txt"
      ldconfig
    fi
    echo "install-host: removed"
    ;;
esac
