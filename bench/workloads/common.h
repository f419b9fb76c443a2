// Shared helpers for the allocator workloads in bench/workloads: a small
// deterministic random generator, a monotonic clock, argument parsing and
// the one RESULT line every workload prints.
//
// The workloads are plain C++ programs with no mmtier linkage: the driver
// (bench/run_bench.py) runs them under each allocator with LD_PRELOAD.  Each
// prints exactly one line
//     RESULT <name> <ops_per_sec> <checksum>
// on stdout through ordinary stdio (no explicit flush, as any program would),
// so an allocator that loses buffered output at exit is caught.  The checksum
// folds in every value read back from allocated memory, so it depends only on
// the seed and the arguments: a broken allocator (overlapping blocks, lost
// contents across realloc) gives a checksum different from the glibc run's.
#ifndef MMTIER_BENCH_WORKLOADS_COMMON_H
#define MMTIER_BENCH_WORKLOADS_COMMON_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

namespace bench {

// splitmix64: tiny, fast and fully deterministic across platforms.
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed) {}
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n): multiply-high instead of a division, so the harness
  // costs little next to the allocator it measures.
  uint64_t below(uint64_t n) {
    return static_cast<uint64_t>((static_cast<unsigned __int128>(next()) * n) >> 64);
  }
  // Uniform in [lo, hi] (inclusive).
  uint64_t range(uint64_t lo, uint64_t hi) { return lo + below(hi - lo + 1); }
};

inline double now_seconds() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

// Parses s as a size: digits, then optionally K, M, G or T (binary units),
// an optional "i" and an optional "B" after it.  Returns nullptr and sets
// *out, or returns why s is not a size.
inline const char *parse_size(const char *s, uint64_t *out) {
  char *end = nullptr;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (end == s || errno != 0 || *s == '-') return "expected a size";
  unsigned shift = 0;
  switch (*end) {
    case 'k': case 'K': shift = 10; ++end; break;
    case 'm': case 'M': shift = 20; ++end; break;
    case 'g': case 'G': shift = 30; ++end; break;
    case 't': case 'T': shift = 40; ++end; break;
    default: break;
  }
  if (*end == 'i' && shift != 0) ++end;
  if ((*end == 'b' || *end == 'B') && shift != 0) ++end;
  if (*end != '\0') return "trailing junk in size";
  if (shift != 0 && v > (UINT64_MAX >> shift)) return "size too large";
  *out = static_cast<uint64_t>(v) << shift;
  return nullptr;
}

// Parses argv[index] as an unsigned number (K/M/G suffixes allowed), or
// returns fallback when the argument is absent.  Exits with status 2 on junk.
inline uint64_t arg_u64(int argc, char **argv, int index, uint64_t fallback) {
  if (index >= argc) return fallback;
  char *end = nullptr;
  unsigned long long v = strtoull(argv[index], &end, 10);
  if (end == argv[index]) {
    fprintf(stderr, "%s: argument %d: expected a number, got '%s'\n", argv[0], index, argv[index]);
    exit(2);
  }
  switch (*end) {
    case 'k': case 'K': v <<= 10; ++end; break;
    case 'm': case 'M': v <<= 20; ++end; break;
    case 'g': case 'G': v <<= 30; ++end; break;
    default: break;
  }
  if (*end != '\0') {
    fprintf(stderr, "%s: argument %d: trailing junk in '%s'\n", argv[0], index, argv[index]);
    exit(2);
  }
  return v;
}

// Mixes a value read back from memory into a checksum (order-sensitive).
inline uint64_t mix(uint64_t sum, uint64_t v) {
  return (sum ^ v) * 0x100000001b3ULL + 0x9e3779b97f4a7c15ULL;
}

// Keeps the compiler from proving that an allocation is unused (GCC removes
// malloc+free pairs whose result never escapes).
inline void escape(void *p) { __asm__ volatile("" : : "g"(p) : "memory"); }

inline void print_result(const char *name, double ops_per_sec, uint64_t checksum) {
  printf("RESULT %s %.1f %016llx\n", name, ops_per_sec, static_cast<unsigned long long>(checksum));
}

}  // namespace bench

#endif  // MMTIER_BENCH_WORKLOADS_COMMON_H
