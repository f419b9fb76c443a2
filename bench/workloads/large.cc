// Large allocations, 64 KiB..64 MiB, with every page touched (a real program
// writes the memory it asks for, so page faults and the allocator's reuse of
// pages are part of the cost).  Three modes, each its own RESULT line:
//
//   malloc COUNT   COUNT malloc/free cycles, sizes log-uniform 64 KiB..64 MiB,
//                  up to 4 blocks alive at once (freed oldest first)
//   realloc COUNT  COUNT growth chains: malloc(64 KiB), then realloc by 1.5x
//                  until a random end size of 1..64 MiB; after each realloc the
//                  old contents are checked and the new pages written.  One
//                  op is one malloc, realloc or free call.
//   mmap COUNT     COUNT anonymous private mmap/munmap cycles, 64 KiB..16 MiB,
//                  up to 4 alive; every other mapping is unmapped in two
//                  pieces (upper half first)
//
// Each page gets an 8-byte word derived from a tag; the words are checked
// before the memory is released and folded into the checksum.
//
// usage: large MODE COUNT [SEED=1]
// prints: RESULT large_<MODE> <ops_per_sec> <checksum>
#include <math.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "common.h"

namespace {

constexpr size_t kPage = 4096;
constexpr int kKeep = 4;

uint64_t g_sum = 0;
uint64_t g_corrupt = 0;

// Log-uniform size in [lo, hi], not page aligned.
size_t pick_size(bench::Rng &rng, size_t lo, size_t hi) {
  const double u = static_cast<double>(rng.next() >> 11) * (1.0 / 9007199254740992.0);
  const double v = exp(log(static_cast<double>(lo)) + u * (log(static_cast<double>(hi)) - log(static_cast<double>(lo))));
  size_t s = static_cast<size_t>(v);
  if (s < lo) s = lo;
  if (s > hi) s = hi;
  return s;
}

inline uint64_t word(uint64_t tag, size_t page) { return tag ^ (page * 0x9e3779b97f4a7c15ULL); }

// Writes the tag word at the start of every page in [from, to) of p.
void touch(unsigned char *p, size_t from, size_t to, uint64_t tag) {
  for (size_t off = (from + kPage - 1) / kPage * kPage; off + 8 <= to; off += kPage) {
    uint64_t w = word(tag, off / kPage);
    memcpy(p + off, &w, 8);
  }
}

// Checks the words of [0, size) and folds them into the checksum.
void check(const unsigned char *p, size_t size, uint64_t tag) {
  for (size_t off = 0; off + 8 <= size; off += kPage) {
    uint64_t w;
    memcpy(&w, p + off, 8);
    if (w != word(tag, off / kPage)) ++g_corrupt;
    g_sum = bench::mix(g_sum, w);
  }
}

struct Block {
  unsigned char *p = nullptr;
  size_t size = 0;
  uint64_t tag = 0;
};

bool run_malloc(uint64_t count, bench::Rng &rng, uint64_t *ops) {
  Block live[kKeep];
  for (uint64_t i = 0; i < count; ++i) {
    Block &b = live[i % kKeep];
    if (b.p != nullptr) {
      check(b.p, b.size, b.tag);
      free(b.p);
      ++*ops;
    }
    b.size = pick_size(rng, 64 << 10, 64 << 20);
    b.tag = rng.next();
    b.p = static_cast<unsigned char *>(malloc(b.size));
    if (b.p == nullptr) return false;
    ++*ops;
    touch(b.p, 0, b.size, b.tag);
  }
  for (Block &b : live) {
    if (b.p == nullptr) continue;
    check(b.p, b.size, b.tag);
    free(b.p);
    ++*ops;
  }
  return true;
}

bool run_realloc(uint64_t count, bench::Rng &rng, uint64_t *ops) {
  for (uint64_t i = 0; i < count; ++i) {
    const size_t end = pick_size(rng, 1 << 20, 64 << 20);
    const uint64_t tag = rng.next();
    size_t size = 64 << 10;
    unsigned char *p = static_cast<unsigned char *>(malloc(size));
    if (p == nullptr) return false;
    ++*ops;
    touch(p, 0, size, tag);
    while (size < end) {
      size_t next = size + size / 2 + rng.range(0, kPage - 1);
      if (next > end) next = end;
      unsigned char *q = static_cast<unsigned char *>(realloc(p, next));
      if (q == nullptr) {
        free(p);
        return false;
      }
      ++*ops;
      p = q;
      check(p, size, tag);
      touch(p, size, next, tag);
      size = next;
    }
    check(p, size, tag);
    free(p);
    ++*ops;
  }
  return true;
}

bool run_mmap(uint64_t count, bench::Rng &rng, uint64_t *ops) {
  Block live[kKeep];
  auto release = [&](Block &b) {
    if (b.tag & 1) {
      // Upper half first, then the rest: partial unmaps must work too.
      const size_t half = (b.size / 2 + kPage - 1) / kPage * kPage;
      check(b.p, half, b.tag);
      munmap(b.p + half, b.size - half);
      munmap(b.p, half);
    } else {
      check(b.p, b.size, b.tag);
      munmap(b.p, b.size);
    }
    ++*ops;
    b.p = nullptr;
  };
  for (uint64_t i = 0; i < count; ++i) {
    Block &b = live[i % kKeep];
    if (b.p != nullptr) release(b);
    b.size = (pick_size(rng, 64 << 10, 16 << 20) + kPage - 1) / kPage * kPage;
    b.tag = rng.next();
    void *m = mmap(nullptr, b.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return false;
    b.p = static_cast<unsigned char *>(m);
    ++*ops;
    touch(b.p, 0, b.size, b.tag);
  }
  for (Block &b : live) {
    if (b.p != nullptr) release(b);
  }
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s malloc|realloc|mmap COUNT [SEED=1]\n", argv[0]);
    return 2;
  }
  const char *mode = argv[1];
  const uint64_t count = bench::arg_u64(argc, argv, 2, 100);
  const uint64_t seed = bench::arg_u64(argc, argv, 3, 1);
  bench::Rng rng(seed);
  uint64_t ops = 0;
  bool ok;
  const double start = bench::now_seconds();
  if (strcmp(mode, "malloc") == 0) {
    ok = run_malloc(count, rng, &ops);
  } else if (strcmp(mode, "realloc") == 0) {
    ok = run_realloc(count, rng, &ops);
  } else if (strcmp(mode, "mmap") == 0) {
    ok = run_mmap(count, rng, &ops);
  } else {
    fprintf(stderr, "large: unknown mode '%s' (malloc, realloc or mmap)\n", mode);
    return 2;
  }
  const double elapsed = bench::now_seconds() - start;
  if (!ok) {
    fprintf(stderr, "large: %s: allocation failed after %llu ops\n", mode, (unsigned long long)ops);
    return 1;
  }
  if (g_corrupt != 0) fprintf(stderr, "large: %llu page words were lost\n", (unsigned long long)g_corrupt);
  printf("large: mode=%s count=%llu ops=%llu elapsed=%.3fs\n", mode, (unsigned long long)count,
         (unsigned long long)ops, elapsed);
  char name[32];
  snprintf(name, sizeof name, "large_%s", mode);
  bench::print_result(name, static_cast<double>(ops) / elapsed, g_sum);
  return 0;
}
