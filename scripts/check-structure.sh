#!/usr/bin/env bash
# Checks the structure rules of the source tree; CI runs it as the ctest
# entry structure.check.
#  1. Includes follow the layers of lib/layers.txt: a file in lib/<layer>/
#     (any depth) includes "X/..." only for X its own layer or one listed
#     before it; preload/ includes any layer and preload/; cli/ includes only
#     config/config.h, support/log.h, support/errors.h, stats/live_format.h,
#     snapshot/capsule_format.h, snapshot/capsule_dir.h, support/crc32c.h,
#     api/control_format.h and its own files
#     (it links just those parts).  An include with ".." is a violation
#     anywhere.  <system> headers and the public mmtier/ headers are fine
#     (<layer/...> in angle brackets is judged like "layer/...").  Every
#     directory of lib/ must be a layer.
#  2. No file under lib/ is longer than 800 lines.
#  3. No function in lib/ or preload/ is longer than 100 lines
#     (clang-tidy's readability-function-size, over the compile commands of
#     BUILD_DIR; it counts the lines from the opening brace of the body to
#     the closing one, that is one fewer than the body spans).  A function
#     is exempted by
#       // NOLINTNEXTLINE(readability-function-size): <the reason>
#     and a NOLINT that would silence that check without a reason after a
#     colon is itself a violation.
# Prints one line "file:line: what" per violation and a final line
# "check-structure: N violations" (exit 1) or "check-structure: ok".
# Usage: scripts/check-structure.sh [BUILD_DIR]   (default: build/ in the
# source tree; a relative BUILD_DIR is taken relative to the current
# directory).  Environment: CLANG_TIDY (default clang-tidy, clang-tidy-14),
# JOBS (parallel clang-tidy runs, default 2).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${1:-$ROOT/build}
[[ $BUILD_DIR == /* ]] || BUILD_DIR=$PWD/$BUILD_DIR
cd "$ROOT" || exit 1

MAX_FILE_LINES=800
MAX_FUNCTION_LINES=100
CLI_ALLOWED="config/config.h support/log.h support/errors.h stats/live_format.h snapshot/capsule_format.h snapshot/capsule_dir.h snapshot/file_identity.h support/crc32c.h api/control_format.h restorer/plan.h"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/check-structure.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
VIOLATIONS=$TMP/violations
: > "$VIOLATIONS"

violation() { printf '%s\n' "$*" | tee -a "$VIOLATIONS"; }

# ---- 1. includes ------------------------------------------------------------

if [[ ! -f lib/layers.txt ]]; then
  violation "lib/layers.txt:1: missing: the include check has no layer order"
fi
LAYERS=()
while read -r n layer; do
  if [[ " ${LAYERS[*]} " == *" $layer "* ]]; then
    violation "lib/layers.txt:$n: layer $layer is listed twice"
    continue
  fi
  LAYERS+=("$layer")
  [[ -d lib/$layer ]] || violation "lib/layers.txt:$n: layer $layer has no directory lib/$layer/"
done < <(awk '{ sub(/#.*/, ""); gsub(/[ \t\r]/, "") } $0 != "" { print FNR, $0 }' lib/layers.txt 2> /dev/null)
for dir in lib/*/; do
  dir=${dir%/}
  [[ " ${LAYERS[*]} " == *" ${dir#lib/} "* ]] ||
    violation "$dir/:1: not a layer listed in lib/layers.txt"
done
while IFS= read -r f; do
  violation "$f:1: lib/ sources belong in a layer directory, lib/<layer>/"
done < <(find lib -maxdepth 1 -type f \( -name '*.h' -o -name '*.cc' \) | sort)

mapfile -t SOURCES < <(find lib preload cli -type f \( -name '*.h' -o -name '*.cc' \) | sort)
if ((${#SOURCES[@]})); then
  awk -v layers="${LAYERS[*]}" -v cli_allowed="$CLI_ALLOWED" '
    BEGIN {
      n = split(layers, l, " ")
      for (i = 1; i <= n; i++) rank[l[i]] = i
      split(cli_allowed, c, " ")
      for (i in c) cli_ok[c[i]] = 1
    }
    function exists(p, line, r) {
      r = (getline line < p)
      close(p)
      return r >= 0
    }
    FNR == 1 {
      split(FILENAME, part, "/")
      area = part[1]
      own = area == "lib" ? part[2] : ""
      dir = FILENAME
      sub(/\/[^\/]*$/, "", dir)
    }
    /^[ \t]*#[ \t]*include[ \t]*["<]/ {
      s = $0
      sub(/^[ \t]*#[ \t]*include[ \t]*/, "", s)
      delim = substr(s, 1, 1)
      s = substr(s, 2)
      end = index(s, delim == "<" ? ">" : "\"")
      if (end == 0) next
      inc = substr(s, 1, end - 1)
      where = FILENAME ":" FNR ": "
      if (inc ~ /(^|\/)\.\.(\/|$)/) {
        print where "include with \"..\": " inc
        next
      }
      top = index(inc, "/") ? substr(inc, 1, index(inc, "/") - 1) : ""
      if (top == "mmtier") next                  # the public headers
      if (delim == "<" && !(top in rank) && top != "preload" && top != "cli") next  # system
      # A quoted include is looked up next to the including file first.
      if (delim == "\"" && exists(dir "/" inc)) next
      if (area == "lib") {
        if (!(own in rank)) next                 # reported above: not a layer
        if (top == "")
          print where "\"" inc "\" is no file next to this one; name headers as \"layer/file.h\""
        else if (!(top in rank))
          print where top "/ is not a layer of lib/ (lib/layers.txt): " inc
        else if (rank[top] > rank[own])
          print where "layer " own " includes " inc ": " top " is a higher layer than " own " (lib/layers.txt)"
      } else if (area == "preload") {
        if (top == "")
          print where "\"" inc "\" is no file next to this one; name headers as \"layer/file.h\""
        else if (!(top in rank) && top != "preload")
          print where "preload/ includes only lib/ layers and preload/: " inc
      } else if (area == "cli") {
        if (!(inc in cli_ok))
          print where "cli/ includes only " cli_allowed " and its own files: " inc
      }
    }' "${SOURCES[@]}" | tee -a "$VIOLATIONS"
fi

# ---- 2. file length ----------------------------------------------------------

while IFS= read -r f; do
  n=$(awk 'END { print NR }' "$f")
  ((n > MAX_FILE_LINES)) &&
    violation "$f:$((MAX_FILE_LINES + 1)): file has $n lines, more than $MAX_FILE_LINES"
done < <(find lib -type f | sort)

# ---- 3. function length --------------------------------------------------------

# A NOLINT that silences readability-function-size must say why after a colon.
nolint_re='NOLINT(NEXTLINE|BEGIN)?(\(([^)]*)\))?(.*)'
while IFS= read -r hit; do
  loc=${hit%%:NOLINT*}          # file:line
  [[ ${hit#"$loc":} =~ ^$nolint_re$ ]] || continue
  form=${BASH_REMATCH[1]} paren=${BASH_REMATCH[2]} list=${BASH_REMATCH[3]} rest=${BASH_REMATCH[4]}
  covers=0
  if [[ -z $paren ]]; then
    covers=1                    # no check list: every check
  else
    IFS=, read -ra globs <<< "$list"
    for g in "${globs[@]}"; do
      g=${g//[[:space:]]/}
      # shellcheck disable=SC2053  # $g is a glob
      [[ -n $g && readability-function-size == $g ]] && covers=1
    done
  fi
  ((covers)) || continue
  [[ $rest =~ ^[[:space:]]*:[[:space:]]*[^[:space:]] ]] ||
    violation "$loc: NOLINT$form$paren without a reason; write \"// NOLINTNEXTLINE(readability-function-size): <why>\""
done < <(grep -rnoE --include='*.h' --include='*.cc' 'NOLINT(NEXTLINE|BEGIN)?(\([^)]*\))?.*' lib preload |
           grep -vE '^[^:]+:[0-9]+:NOLINTEND' | sort -t: -k1,1 -k2,2n)

CLANG_TIDY=${CLANG_TIDY:-}
if [[ -z $CLANG_TIDY ]]; then
  CLANG_TIDY=$(command -v clang-tidy || command -v clang-tidy-14 || true)
fi
DB=$BUILD_DIR/compile_commands.json
if [[ -z $CLANG_TIDY ]] || ! command -v "$CLANG_TIDY" > /dev/null; then
  violation "clang-tidy:1: not found (Debian clang-tidy): the function sizes were not checked"
elif [[ ! -f $DB ]]; then
  violation "$DB:1: missing: the function sizes were not checked (configure $BUILD_DIR with CMAKE_EXPORT_COMPILE_COMMANDS=ON)"
elif ! grep -qF "\"file\": \"$ROOT/lib/" "$DB"; then
  violation "$DB:1: has no compile command for $ROOT/lib/: it is the build of another source tree"
else
  mapfile -t TIDY_FILES < <(find lib preload -type f -name '*.cc' | sort)
  big=4294967295                # clang-tidy 14: (unsigned)-1, the threshold is off
  # shellcheck disable=SC2089,SC2090  # the quotes are YAML's, for clang-tidy
  config="{Checks: '-*,readability-function-size', CheckOptions: [
    {key: readability-function-size.LineThreshold, value: $MAX_FUNCTION_LINES},
    {key: readability-function-size.StatementThreshold, value: $big},
    {key: readability-function-size.BranchThreshold, value: $big},
    {key: readability-function-size.ParameterThreshold, value: $big},
    {key: readability-function-size.NestingThreshold, value: $big},
    {key: readability-function-size.VariableThreshold, value: $big}]}"
  # Headers of lib/ and preload/ too (their inline functions), reported once.
  # shellcheck disable=SC2001  # a bracket expression, clearer in sed
  root_re=$(sed 's/[][\.*^$+?(){}|]/\\&/g' <<< "$ROOT")
  # shellcheck disable=SC2090
  export CLANG_TIDY BUILD_DIR TMP config
  export header_filter="^$root_re/(lib|preload)/"
  # shellcheck disable=SC2016  # expanded by the inner bash
  printf '%s\n' "${TIDY_FILES[@]}" | xargs -d '\n' -P "${JOBS:-2}" -I{} bash -c '
    out=$TMP/tidy.$(tr / _ <<< "$1")
    "$CLANG_TIDY" -p "$BUILD_DIR" --quiet --header-filter="$header_filter" \
      --config="$config" "$1" > "$out.log" 2>&1
    echo $? > "$out.rc"' _ {}
  for f in "${TIDY_FILES[@]}"; do
    out=$TMP/tidy.$(tr / _ <<< "$f")
    rc=$(cat "$out.rc" 2> /dev/null || echo "?")
    awk -v root="$ROOT/" -v file="$f" -v rc="$rc" -v limit="$MAX_FUNCTION_LINES" '
      function rel(p) { return index(p, root) == 1 ? substr(p, length(root) + 1) : p }
      / warning: function .* exceeds recommended size\/complexity thresholds/ {
        split($0, loc, ":")
        name = $0
        sub(/^.* warning: function /, "", name)
        sub(/ exceeds recommended.*$/, "", name)
        key = loc[1] ":" loc[2]
        fn[key] = name
      }
      / note: [0-9]+ lines including whitespace and comments/ {
        split($0, loc, ":")
        key = loc[1] ":" loc[2]
        n = $0
        sub(/^.* note: /, "", n)
        sub(/ lines including.*$/, "", n)
        if (key in fn)
          print rel(loc[1]) ":" loc[2] ": function " fn[key] ": " n " lines, more than " \
                limit " (readability-function-size)"
      }
      / error: / && errors < 3 {
        errors++
        print rel($0)
      }
      END {
        if (rc != 0 && errors == 0)
          print file ":1: clang-tidy failed (status " rc ")"
        else if (errors)
          print file ":1: clang-tidy could not analyse this file (errors above)"
      }' "$out.log"
  done | awk '!seen[$0]++' | tee -a "$VIOLATIONS"
fi

n=$(grep -c . "$VIOLATIONS")
if ((n)); then
  echo "check-structure: $n violations"
  exit 1
fi
echo "check-structure: ok"
