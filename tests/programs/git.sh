#!/usr/bin/env bash
# git under libmmtier: a generated repository of 50 commits (a 40k-line file
# edited in every commit, a 40 MiB file, files added, changed and deleted),
# then log --stat, gc, fsck and archive, with fixed names and dates so every
# object id is fixed; output compared with the run without mmtier.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

GIT=$(require_prog git git)
AWK=$(require_prog awk mawk)

set_base_env GIT_CONFIG_NOSYSTEM=1 GIT_TERMINAL_PROMPT=0 \
  GIT_AUTHOR_NAME="Ada Tester" GIT_AUTHOR_EMAIL=ada@example.com \
  GIT_COMMITTER_NAME="Bob Committer" GIT_COMMITTER_EMAIL=bob@example.com

# A 40 MiB file added in the first commit: git holds whole blobs in memory
# when it deflates, deltifies, checks and archives them.
plain "$AWK" 'BEGIN { for (n = 1; n <= 1000000; n++) printf "%09d blob line %022d\n", n, n * 7919 }' \
  > "$WORK/blob.txt"

# gen_commit REPO I: writes the files of commit I (plain, not under mmtier).
gen_commit() {
  local repo=$1 i=$2
  plain "$AWK" -v c="$i" 'BEGIN {
    for (n = 1; n <= 40000; n++) {
      v = (n % 50 == c % 50) ? c : 0
      printf "line %d value %d tag %d\n", n, (n * 7919 + v * 104729) % 1000003, v
    }
  }' > "$repo/big.txt"
  ((i == 1)) && cp "$WORK/blob.txt" "$repo/blob.txt"
  mkdir -p "$repo/src/dir$((i % 4))"
  plain "$AWK" -v c="$i" 'BEGIN { for (n = 1; n <= 200; n++) printf "file %d row %d %d\n", c, n, (n * c) % 97 }' \
    > "$repo/src/dir$((i % 4))/file_$i.txt"
  if ((i % 3 == 0 && i > 1)); then
    echo "edited in commit $i" >> "$repo/src/dir$(((i - 1) % 4))/file_$((i - 1)).txt"
  fi
  if ((i % 5 == 0 && i > 3)); then
    rm -f "$repo/src/dir$(((i - 3) % 4))/file_$((i - 3)).txt"
  fi
}

workload() {
  local repo=$1/repo i when
  mkdir -p "$repo"
  cd "$repo" || return 1
  run "$GIT" init -q -b main .
  for ((i = 1; i <= 50; i++)); do
    gen_commit "$repo" "$i"
    when="@$((1700000000 + i * 3600)) +0000"
    run "$GIT" add -A
    run env GIT_AUTHOR_DATE="$when" GIT_COMMITTER_DATE="$when" \
      "$GIT" commit -q -m "commit $i" -m "Generated commit number $i."
  done
  run "$GIT" log --stat
  run "$GIT" rev-list --count HEAD
  run "$GIT" gc --quiet
  run "$GIT" count-objects -v | grep -E '^(count|in-pack|packs|garbage):'
  run "$GIT" fsck --full --strict
  echo "fsck status 0"
  run "$GIT" archive --format=tar HEAD | md5sum
  run "$GIT" diff --stat HEAD~40 HEAD
  run "$GIT" show --format=%H%n%an%n%cd --date=iso-strict HEAD~25:big.txt | md5sum
}

run_modes workload
