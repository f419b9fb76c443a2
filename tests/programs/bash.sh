#!/usr/bin/env bash
# bash under libmmtier: a script with a five-stage pipeline, subshells,
# command substitution of a multi-megabyte output, a large array and an
# associative array, process substitution, here-strings and a function in a
# pipeline; every process of the script (bash and the tools it starts) runs
# under the preload; output compared with the run without mmtier.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

BASH_BIN=$(require_prog bash bash)
require_prog awk mawk > /dev/null
require_prog sort coreutils > /dev/null

cat > "$WORK/workload.sh" <<'SH'
set -euo pipefail
n=500000
# command substitution of ~3 MB
data=$(seq 1 "$n" | awk '{ printf "%d %d %s\n", $1, ($1 * 7919) % 100003, ($1 % 3 ? "odd" : "tri") }')
echo "data bytes ${#data}"
# a large array built in the shell itself
mapfile -t lines <<< "$data"
echo "lines ${#lines[@]}"
total=0
for ((i = 0; i < ${#lines[@]}; i += 97)); do
  read -r a b c <<< "${lines[i]}"
  total=$((total + b))
done
echo "sampled total $total"
# a five-stage pipeline
printf '%s\n' "${lines[@]}" | grep -v ' tri$' | sort -k2,2n -k1,1n | awk '{ s += $2 } NR % 40000 == 0 { printf "%d %s %.0f\n", NR, $0, s }' | tr 'a-z' 'A-Z'
# subshells with their own state
count=$( (cd "$TMPDIR" && printf '%s\n' "${lines[@]:0:5000}" > part && wc -l < part) )
here=$PWD
(cd / && [[ $PWD == / ]])
echo "subshell count $count cwd kept $([[ $PWD == "$here" ]] && echo yes || echo no)"
( x=inner; for w in alpha beta gamma; do x="$x-$w"; done; echo "$x" )
# process substitution and nested command substitution
uniq_odd=$(sort -u <(printf '%s\n' "${lines[@]}" | awk '{ print $2 % 1000 }') | wc -l)
echo "distinct residues $uniq_odd"
summary() { local k=$1; awk -v k="$k" '$2 % k == 0' | wc -l; }
echo "multiples of 7: $(printf '%s\n' "${lines[@]}" | summary 7)"
declare -A by_kind=()
for ((i = 0; i < ${#lines[@]}; i += 13)); do
  kind=${lines[i]##* }
  by_kind[$kind]=$(( ${by_kind[$kind]:-0} + 1 ))
done
for k in $(printf '%s\n' "${!by_kind[@]}" | sort); do echo "kind $k ${by_kind[$k]}"; done
echo "md5 $(printf '%s\n' "${lines[@]}" | md5sum | cut -d' ' -f1)"
big=$(printf 'x%.0s' $(seq 1 20000))
echo "big ${#big}"
unset lines data big
echo done
SH

workload() {
  (cd "$1" && run "$BASH_BIN" "$WORK/workload.sh")
}

run_modes workload
