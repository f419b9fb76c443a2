#!/usr/bin/env bash
# Configures (Ninja, RelWithDebInfo) and builds mmtier.
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]
# BUILD_DIR defaults to build/ in the source tree; a relative BUILD_DIR is
# taken relative to the current directory.  JOBS sets the build parallelism
# (default: the number of CPUs); BUILD_TARGET builds one target instead of
# all of them.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${1:-$ROOT/build}
shift || true
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$PWD/$BUILD_DIR

args=(-S "$ROOT" -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo)
# An existing tree keeps its generator; a new one uses Ninja.
[[ -f $BUILD_DIR/CMakeCache.txt ]] || args+=(-G Ninja)

cmake "${args[@]}" "$@"
cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}" ${BUILD_TARGET:+--target "$BUILD_TARGET"}
echo "build: done in $BUILD_DIR"
