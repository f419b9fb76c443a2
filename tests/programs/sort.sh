#!/usr/bin/env bash
# sort under libmmtier: 2 million generated lines sorted three ways (plain in
# memory, numeric on keys with a small buffer so it spills and merges
# temporary files, unique on a key) and checked with sort -c; checksums,
# counts and heads compared with the run without mmtier.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

SORT=$(require_prog sort coreutils)
AWK=$(require_prog awk mawk)

# The input is generated once, by a linear congruential generator so it does
# not depend on any awk's rand().
plain "$AWK" 'BEGIN {
  x = 12345
  for (i = 1; i <= 2000000; i++) {
    x = (x * 69069 + 1) % 4294967296
    printf "%.0f %.0f %s\n", x, x % 100003, substr("alphabetagammadeltaepsilonzetaeta", 1 + x % 17, 5 + x % 9)
  }
}' > "$WORK/input"

workload() {
  local out=$1
  run "$SORT" -o "$out/plain" "$WORK/input"
  run "$SORT" -S 16M -k2,2n -k1,1r -o "$out/numeric" "$WORK/input"
  run "$SORT" -u -k3,3 -o "$out/unique" "$WORK/input"
  run "$SORT" -c "$out/plain"
  local f
  for f in plain numeric unique; do
    echo "$f $(wc -l < "$out/$f") $(md5sum < "$out/$f" | cut -d' ' -f1)"
    head -n 3 "$out/$f"
  done
}

run_modes workload
