// The smallest malloc+free loop, for counting instructions per pair with
// callgrind (bench/run_bench.py --callgrind runs it at N and 2N pairs and
// divides the difference by N, which cancels start-up and exit costs).
//
// usage: pairloop PAIRS [SIZE=64|mixed]
//   SIZE a number: every pair is malloc(SIZE) + free
//   mixed: sizes cycle through 16, 32, ..., 1024 bytes
// prints: RESULT pairloop_<SIZE> <pairs> <checksum>
#include <string.h>

#include "common.h"

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: %s PAIRS [SIZE=64|mixed]\n", argv[0]);
    return 2;
  }
  const uint64_t pairs = bench::arg_u64(argc, argv, 1, 1000000);
  const bool mixed = argc > 2 && strcmp(argv[2], "mixed") == 0;
  const uint64_t fixed = mixed ? 0 : bench::arg_u64(argc, argv, 2, 64);
  if (!mixed && fixed == 0) {
    fprintf(stderr, "pairloop: SIZE must be at least 1\n");
    return 2;
  }
  uint64_t sum = 0;
  size_t size = 16;
  for (uint64_t i = 0; i < pairs; ++i) {
    const size_t n = mixed ? size : fixed;
    unsigned char *p = static_cast<unsigned char *>(malloc(n));
    if (p == nullptr) return 1;
    p[0] = static_cast<unsigned char>(i);
    bench::escape(p);
    sum += p[0];
    free(p);
    if (mixed) size = size >= 1024 ? 16 : size + 16;
  }
  char name[32];
  if (mixed) {
    snprintf(name, sizeof name, "pairloop_mixed");
  } else {
    snprintf(name, sizeof name, "pairloop_%llu", (unsigned long long)fixed);
  }
  bench::print_result(name, static_cast<double>(pairs), sum);
  return 0;
}
