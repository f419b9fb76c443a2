#!/usr/bin/env bash
# The demo: installs the dependencies, builds mmtier, runs an unmodified
# program under libmmtier with MMTIER_DRAM_RATIO=1:4 and prints where its
# memory went (the exit report of its main process).
# Usage: scripts/run-demo.sh [-- CMD ARGS...]
# Without CMD, runs a python3 workload of a few hundred MiB.  BUILD_DIR
# selects the build tree (default: build/ in the source tree).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
[[ ${1:-} == -- ]] && shift

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mmtier-demo.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
REPORTS=$WORK/reports
mkdir -p "$REPORTS"

"$ROOT/scripts/install-deps.sh"
echo "run-demo: building in $BUILD_DIR ..."
"$ROOT/scripts/build.sh" "$BUILD_DIR" > "$WORK/build.log" 2>&1 || {
  tail -n 40 "$WORK/build.log" >&2
  echo "run-demo: build failed" >&2
  exit 1
}
LIB=$BUILD_DIR/libmmtier.so
[[ -f $LIB ]] || { echo "run-demo: $LIB was not built" >&2; exit 1; }

describe="$*"
if (($# == 0)); then
  # The system python3 (not a shim that would add processes of its own).
  python=$(PATH=/usr/bin:/bin command -v python3)
  set -- "$python" -c '
import hashlib
words = [f"word-{i:08d}" for i in range(3_000_000)]
buf = bytearray(200 << 20)
for i in range(0, len(buf), 4096):
    buf[i] = i % 251
digest = hashlib.sha256(buf).hexdigest()[:16]
print(f"{len(words)} strings, last {words[-1]}; {len(buf) >> 20} MiB bytearray, sha256 {digest}")
'
  describe="python3 -c '<3 million strings and a 200 MiB bytearray>'"
fi

echo "\$ LD_PRELOAD=$LIB MMTIER_DRAM_RATIO=${MMTIER_DRAM_RATIO:-1:4} $describe"
set +e
LD_PRELOAD=$LIB MMTIER_DRAM_RATIO=${MMTIER_DRAM_RATIO:-1:4} MMTIER_REPORT=$REPORTS/report.%p "$@"
status=$?
set -e

# The main process is the one with the largest DRAM+PMem placed peak.
bytes() {
  awk -v v="$1" -v u="$2" 'BEGIN { m["B"] = 1; m["KiB"] = 2^10; m["MiB"] = 2^20; m["GiB"] = 2^30
    m["TiB"] = 2^40; printf "%.0f\n", v * m[u] }'
}
best="" best_peak=-1 count=0
for f in "$REPORTS"/report.*; do
  [[ -e $f ]] || continue
  count=$((count + 1))
  peak=0
  while read -r v u; do peak=$((peak + $(bytes "$v" "$u"))); done \
    < <(awk '($1 == "DRAM" || $1 == "PMem") && NF >= 7 { print $4, $5 }' "$f")
  if ((peak > best_peak)); then best=$f best_peak=$peak; fi
done

echo
if [[ -z $best ]]; then
  echo "run-demo: no mmtier report was written (was the program setuid, or did it exit via _exit?)" >&2
  exit 1
fi
if ((count == 1)); then others="the only process reported"; else others="$count processes reported"; fi
echo "== where the memory went: mmtier report of the main process ($others) =="
cat "$best"
exit "$status"
