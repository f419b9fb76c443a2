// Microbenchmarks of plain malloc/free/realloc (bench/micro/loops.h), not
// linked against mmtier: bench/run_bench.py --micro runs this binary under
// glibc, jemalloc, memkind libmemtier and libmmtier via LD_PRELOAD.
#include <stdlib.h>

#include "loops.h"

namespace {

struct Libc {
  static void *malloc(size_t n) { return ::malloc(n); }
  static void *realloc(void *p, size_t n) { return ::realloc(p, n); }
  static void free(void *p) { ::free(p); }
};

}  // namespace

int main(int argc, char **argv) { return micro::run_main<Libc>(argc, argv, "", nullptr); }
