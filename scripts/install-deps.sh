#!/usr/bin/env bash
# Installs everything needed to build mmtier and run every test suite, on
# Debian 12, as root.  Idempotent and non-interactive: when every package is
# already installed it does nothing (no apt-get update).
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake ninja-build pkg-config
  libjemalloc-dev libjemalloc2 libgtest-dev libbenchmark-dev
  # a peer allocator of the benchmarks (bench/run_bench.py: the mimalloc column)
  libmimalloc2.0
  libpmem-dev libmemkind-dev libunwind-dev libboost-dev
  # the real-program suite (tests/programs) and tools
  python3 perl sqlite3 redis-server redis-tools git gcc valgrind coreutils
  # a JVM for the restore of a Java program (tests/cli: javac compiles it)
  openjdk-17-jdk-headless
  # the mmtier command's tests (tests/cli); iproute2 and util-linux make the
  # two "hosts" of the migration test (network and mount namespaces)
  tmux python3-prometheus-client iproute2 util-linux
  # an xfs file system for the PMem tier in the tracking tests
  xfsprogs
  # the structure check (scripts/check-structure.sh, ctest structure.check)
  clang-tidy
  # the Kubernetes layer's checks (tests/kubernetes): mmtier inject's YAML,
  # a schema validator (the Python client's models)
  python3-yaml python3-kubernetes
  # the admission webhook's certificate (deploy/kubernetes/webhook/install.sh)
  openssl
)

# kubectl renders the kustomizations (kubectl kustomize), Node.js runs the
# other schema validator (kubernetes-models, from npm, below).  Debian's
# packages provide them; a kubectl or a Node.js from elsewhere (whose
# nodejs package may conflict with Debian's npm) does as well.
if ! command -v kubectl > /dev/null; then PACKAGES+=(kubernetes-client); fi
if ! command -v node > /dev/null; then PACKAGES+=(nodejs); fi
if ! command -v npm > /dev/null; then PACKAGES+=(npm); fi

# The schema validators' npm packages, pinned by tests/kubernetes's
# package-lock.json, into tests/kubernetes/node_modules.
npm_checks() {
  local dir
  dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/tests/kubernetes"
  if [[ -d $dir/node_modules/kubernetes-models && $dir/node_modules/.package-lock.json -nt $dir/package-lock.json ]]; then
    return
  fi
  echo "install-deps: npm ci in $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) < /dev/null
}

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages are installed"
  npm_checks
  exit 0
fi

echo "install-deps: missing: ${missing[*]}"
if [[ $(id -u) != 0 ]]; then
  echo "install-deps: run as root (apt-get install needs it): sudo $0" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
# Do not let package scripts start services (redis-server) during install.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"
  chmod 755 "$policy"
  added_policy=1
fi
remove_policy() { if ((added_policy)); then rm -f "$policy"; fi; }
trap remove_policy EXIT

apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}" < /dev/null
echo "install-deps: installed ${missing[*]}"
npm_checks
