#!/usr/bin/env bash
# gcc under libmmtier: compiles a generated C file (hundreds of functions,
# switch tables, loops, a struct-heavy part) with -O2 and links it; gcc must
# exit 0, and the produced program's output and the binary itself must equal
# those produced without mmtier.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh" "$@"

GCC=$(require_prog gcc gcc)
AWK=$(require_prog awk mawk)

plain "$AWK" -v NF_=650 'BEGIN {
  n = NF_
  print "#include <stdio.h>"
  print "#include <stdint.h>"
  print "#include <string.h>"
  print "struct rec { uint64_t a, b; uint32_t c[8]; char name[24]; };"
  for (i = 0; i < n; i++) {
    printf "static uint64_t f%d(uint64_t x, struct rec *r) {\n", i
    printf "  uint64_t acc = %du;\n", (i * 2654435761) % 1000003
    printf "  for (int k = 0; k < %d; k++) {\n", 3 + i % 13
    printf "    switch ((x + k) %% %d) {\n", 4 + i % 7
    for (c = 0; c < 4 + i % 7; c++)
      printf "    case %d: acc = acc * %du + (x >> %d) + r->c[%d]; break;\n", c, 31 + 2 * c + i % 5, c % 13, (c + i) % 8
    printf "    default: acc ^= x; break;\n    }\n"
    printf "    r->c[k %% 8] += (uint32_t)(acc >> %d);\n", i % 17
    printf "  }\n"
    printf "  r->a += acc; r->b ^= acc << %d;\n", i % 11
    if (i > 0) printf "  if ((acc & 7) == %d) acc += f%d(x ^ acc, r) & 0xffff;\n", i % 8, i - 1
    printf "  return acc;\n}\n"
  }
  print "int main(void) {"
  print "  struct rec r; memset(&r, 0, sizeof r); strcpy(r.name, \"mmtier\");"
  print "  uint64_t total = 0;"
  for (i = 0; i < n; i++) {
    printf "  total += f%d(%du, &r);\n", i, i * 7 + 1
    if (i % 150 == 149) printf "  printf(\"%d %%llu %%llu %%llu\\n\", (unsigned long long)total, (unsigned long long)r.a, (unsigned long long)r.b);\n", i
  }
  print "  for (int k = 0; k < 8; k++) printf(\"c%d=%u \", k, r.c[k]);"
  print "  printf(\"\\n%s %llu\\n\", r.name, (unsigned long long)total);"
  print "  return 0;\n}"
}' > "$WORK/gen.c"

workload() {
  local out=$1
  cp "$WORK/gen.c" "$out/gen.c"
  (cd "$out" && run "$GCC" -O2 -Wall -o gen gen.c)
  echo "gcc exit status 0"
  plain "$out/gen"
  echo "binary md5 $(md5sum < "$out/gen" | cut -d' ' -f1)"
}

run_modes workload
