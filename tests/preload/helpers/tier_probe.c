/* Child program for the preload tests.  It is not linked against mmtier: run
 * under LD_PRELOAD=libmmtier.so it finds the API with dlsym.  Modes:
 *   main                      print "main ran" and exit 0
 *   hold MIB exit|abort       allocate and touch MIB MiB, print "ready"
 *                             (with "dram=B pmem=B" when the API is
 *                             found), wait for EOF on stdin,
 *                             then exit 0 or abort()
 *   workload MIB              mixed allocations (small, medium, large malloc,
 *                             anonymous mmap) of about MIB MiB, all touched,
 *                             some freed in the middle; prints
 *                             "live=B dram=B pmem=B", the placed bytes
 *                             per tier, and "verified" when
 *                             every live byte still holds what was written.
 *   sparse MIB DIR            one malloc of MIB MiB of which one byte in
 *                             every 64th 2 MiB unit is written (as sort
 *                             uses its buffer); prints "used=B", the bytes
 *                             in use on DIR's file system while it holds
 *                             the block, and "verified" when the bytes
 *                             written read back and others read zero.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <mmtier/mmtier.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <unistd.h>

typedef size_t (*resident_fn)(int);

static resident_fn resident(void) {
  resident_fn fn = (resident_fn)dlsym(RTLD_DEFAULT, "mmtier_resident_bytes");
  if (!fn) {
    fprintf(stderr, "tier_probe: mmtier_resident_bytes not found\n");
    exit(3);
  }
  return fn;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
  uint64_t x = rng_state;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return rng_state = x;
}
static size_t rnd_range(size_t lo, size_t hi) { return lo + (size_t)(rnd() % (hi - lo + 1)); }

static const size_t kPage = 4096;

/* ---- hold ---------------------------------------------------------------- */

static int do_hold(size_t mib, const char *how) {
  const size_t chunk = 2u << 20;
  size_t n = mib * (1u << 20) / chunk;
  char **blocks = malloc(n * sizeof *blocks);
  if (!blocks) return 2;
  for (size_t i = 0; i < n; i++) {
    blocks[i] = malloc(chunk);
    if (!blocks[i]) return 2;
    memset(blocks[i], (int)(i + 1), chunk);
  }
  /* The API is optional here: the file checks do not depend on it. */
  resident_fn res = (resident_fn)dlsym(RTLD_DEFAULT, "mmtier_resident_bytes");
  if (res)
    printf("ready dram=%zu pmem=%zu\n", res(0), res(1));
  else
    printf("ready\n");
  fflush(stdout);
  char buf[64];
  while (read(0, buf, sizeof buf) > 0) {
  }
  for (size_t i = 0; i < n; i++)
    if (blocks[i][chunk - 1] != (char)(i + 1)) return 4;
  if (strcmp(how, "abort") == 0) {
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    abort();
  }
  return 0;
}

/* ---- workload ------------------------------------------------------------ */

enum kind { SMALL, MEDIUM, LARGE, MAPPED };

struct block {
  unsigned char *p;
  size_t size;
  uint32_t id;
  unsigned char kind;
  unsigned char live;
};

static struct block *blocks;
static size_t nblocks, capblocks;

/* Small objects are filled completely with a byte derived from their id;
 * bigger ones get a tag in the first word of every page (so every page is
 * written) and in their last word. */
static uint64_t tag(uint32_t id, size_t page) { return ((uint64_t)id << 32) ^ page ^ 0xA5A5000000000000ull; }

static void fill(struct block *b) {
  if (b->kind == SMALL) {
    memset(b->p, (int)(b->id * 31u + 7u) & 0xff, b->size);
    return;
  }
  for (size_t off = 0, pg = 0; off + sizeof(uint64_t) <= b->size; off += kPage, pg++)
    memcpy(b->p + off, &(uint64_t){tag(b->id, pg)}, sizeof(uint64_t));
  memcpy(b->p + b->size - sizeof(uint64_t), &(uint64_t){tag(b->id, ~(size_t)0)}, sizeof(uint64_t));
}

static int check(const struct block *b) {
  if (b->kind == SMALL) {
    unsigned char want[4096];
    memset(want, (int)(b->id * 31u + 7u) & 0xff, b->size);
    return memcmp(b->p, want, b->size) == 0;
  }
  uint64_t v;
  size_t off = 0, pg = 0;
  for (; off + sizeof v <= b->size - sizeof v; off += kPage, pg++) {
    memcpy(&v, b->p + off, sizeof v);
    if (v != tag(b->id, pg)) return 0;
  }
  memcpy(&v, b->p + b->size - sizeof v, sizeof v);
  return v == tag(b->id, ~(size_t)0);
}

static void release(struct block *b) {
  if (b->kind == MAPPED)
    munmap(b->p, b->size);
  else
    free(b->p);
  b->live = 0;
}

static int add_block(int kind, size_t size) {
  if (nblocks == capblocks) {
    capblocks = capblocks ? capblocks * 2 : 4096;
    blocks = realloc(blocks, capblocks * sizeof *blocks);
    if (!blocks) return 0;
  }
  struct block *b = &blocks[nblocks];
  b->size = size;
  b->id = (uint32_t)nblocks;
  b->kind = (unsigned char)kind;
  if (kind == MAPPED) {
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    b->p = p == MAP_FAILED ? NULL : p;
  } else {
    b->p = malloc(size);
  }
  if (!b->p) return 0;
  b->live = 1;
  nblocks++;
  fill(b);
  return 1;
}

/* Allocates `budget` bytes of one kind, sizes drawn from [lo, hi]. */
static int alloc_kind(int kind, size_t budget, size_t lo, size_t hi) {
  for (size_t done = 0; done < budget;) {
    size_t s = rnd_range(lo, hi);
    if (kind == MAPPED) s = (s + kPage - 1) & ~(kPage - 1);
    if (!add_block(kind, s)) return 0;
    done += s;
  }
  return 1;
}

static int do_workload(size_t mib) {
  const size_t total = mib << 20;
  /* Two rounds; between them about a third of what exists is freed. */
  for (int round = 0; round < 2; round++) {
    const size_t part = total / 2;
    if (!alloc_kind(SMALL, part / 5, 32, 4096) ||
        !alloc_kind(MEDIUM, part / 5, 64 << 10, 1 << 20) ||
        !alloc_kind(LARGE, part * 35 / 100, 4 << 20, 64 << 20) ||
        !alloc_kind(MAPPED, part / 4, 1 << 20, 32 << 20)) {
      fprintf(stderr, "tier_probe: allocation failed\n");
      return 2;
    }
    if (round == 0)
      for (size_t i = 0; i < nblocks; i++)
        if (i % 3 == 1) {
          if (!check(&blocks[i])) {
            fprintf(stderr, "tier_probe: block %zu corrupted before free\n", i);
            return 5;
          }
          release(&blocks[i]);
        }
  }
  size_t live = 0;
  for (size_t i = 0; i < nblocks; i++)
    if (blocks[i].live) live += blocks[i].size;
  resident_fn res = resident();
  size_t dram = res(0), pmem = res(1);
  printf("live=%zu dram=%zu pmem=%zu\n", live, dram, pmem);
  struct mmtier_stats st;
  int (*get_stats)(struct mmtier_stats *) =
      (int (*)(struct mmtier_stats *))dlsym(RTLD_DEFAULT, "mmtier_get_stats");
  if (get_stats && get_stats(&st) == 0)
    printf("placed_dram=%zu placed_pmem=%zu\n", st.units[0] * st.unit_size, st.units[1] * st.unit_size);
  for (size_t i = 0; i < nblocks; i++)
    if (blocks[i].live && !check(&blocks[i])) {
      fprintf(stderr, "tier_probe: block %zu (kind %d, %zu bytes) corrupted\n", i, blocks[i].kind,
              blocks[i].size);
      return 5;
    }
  printf("verified\n");
  for (size_t i = 0; i < nblocks; i++)
    if (blocks[i].live) release(&blocks[i]);
  free(blocks);
  return 0;
}

static int do_sparse(size_t mib, const char *dir) {
  const size_t unit = (size_t)2 << 20, n = mib << 20;
  unsigned char *p = malloc(n);
  if (!p) {
    fprintf(stderr, "tier_probe: malloc of %zu MiB failed\n", mib);
    return 2;
  }
  for (size_t off = 0; off + unit <= n; off += 64 * unit) p[off + 4096] = (unsigned char)(off / unit + 1);
  int ok = 1;
  for (size_t off = 0; off + unit <= n; off += 64 * unit)
    if (p[off + 4096] != (unsigned char)(off / unit + 1) || p[off + 4095] != 0) ok = 0;
  struct statvfs sv;
  if (statvfs(dir, &sv) != 0) return 3;
  printf("used=%llu\n", (unsigned long long)(sv.f_blocks - sv.f_bfree) * sv.f_frsize);
  if (ok) printf("verified\n");
  free(p);
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 2 && strcmp(argv[1], "main") == 0) {
    printf("main ran\n");
    return 0;
  }
  if (argc >= 4 && strcmp(argv[1], "hold") == 0) return do_hold(strtoul(argv[2], NULL, 10), argv[3]);
  if (argc >= 3 && strcmp(argv[1], "workload") == 0) return do_workload(strtoul(argv[2], NULL, 10));
  if (argc >= 4 && strcmp(argv[1], "sparse") == 0) return do_sparse(strtoul(argv[2], NULL, 10), argv[3]);
  fprintf(stderr, "usage: tier_probe main | hold MIB exit|abort | workload MIB | sparse MIB DIR\n");
  return 64;
}
