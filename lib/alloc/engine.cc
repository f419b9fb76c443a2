// Allocator engine glue (see engine.h): jemalloc's extent hooks backed by the
// heap layer.
//
// jemalloc grows an arena by asking the alloc hook for address space without
// commitment (it keeps retained ranges for reuse) and commits the pages it is
// about to hand out; the heap places a unit on a tier when its first page is
// committed, so placement follows the order memory is actually used.
// Decommit gives pages back (anonymous pages dropped, file ranges punched) and
// a unit with no committed page returns its placement.  Requests made with
// commit already set are jemalloc's own metadata (base blocks): plain memory
// outside the heap.
#include "alloc/engine.h"

#include "heap/heap.h"
#include "platform/sys.h"
#include "support/log.h"

#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <sys/mman.h>

#include <atomic>

// Engine options that the heap depends on, applied after any MALLOC_CONF the
// user set for some other jemalloc (jemalloc reads this string last):
// oversize_threshold:0 keeps huge allocations in the hooked arenas instead of
// a dedicated arena created later with jemalloc's default hooks.
extern "C" {
__attribute__((visibility("hidden"))) const char *mmtier_je_malloc_conf_2_conf_harder =
    "oversize_threshold:0";
}

namespace mmtier::detail {
namespace {

constexpr unsigned kMaxArenas = 4096;
std::atomic<bool> g_hooks_installed{false};
int8_t g_arena_forced[kMaxArenas];  // forced tier + 1 per arena index
unsigned g_tier_arena[kTierCount];
pthread_key_t g_tier_tcache_key;

// This thread's cache per tier arena: jemalloc tcache id + 1 (0: none yet).
thread_local unsigned t_tier_tcache[kTierCount] __attribute__((tls_model("initial-exec")));

void destroy_tier_tcaches(void *) {
  for (unsigned &tc : t_tier_tcache) {
    if (!tc) continue;
    unsigned id = tc - 1;
    tc = 0;
    mmtier_je_mallctl("tcache.destroy", nullptr, nullptr, &id, sizeof id);
  }
}

int forced_for(unsigned arena) {
  return arena < kMaxArenas ? g_arena_forced[arena] - 1 : -1;
}

// The engine's metadata blocks (its "base" allocator: extent records, radix
// tree nodes, arena structures) are the only memory it asks for already
// committed; they never hold application data, so they come from plain
// anonymous memory outside the heap and take no unit of any tier.
void *metadata_alloc(size_t size, size_t alignment) {
  if (alignment < kPageSize) alignment = kPageSize;
  const size_t span = size + alignment - kPageSize;
  long r = sys::mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (sys::failed(r)) return nullptr;
  const uintptr_t raw = static_cast<uintptr_t>(r);
  const uintptr_t start = align_up(raw, alignment);
  if (start > raw) sys::munmap(reinterpret_cast<void *>(raw), start - raw);
  if (raw + span > start + size) sys::munmap(reinterpret_cast<void *>(start + size), raw + span - (start + size));
  return reinterpret_cast<void *>(start);
}

void *hook_alloc(extent_hooks_t *, void *new_addr, size_t size, size_t alignment, bool *zero,
                 bool *commit, unsigned arena) {
  if (*commit && !new_addr) {
    *zero = true;
    return metadata_alloc(size, alignment);
  }
  void *p = heap_engine_reserve(new_addr, size, alignment, forced_for(arena));
  if (!p) return nullptr;
  if (*commit && heap_commit(p, size) < 0) {
    heap_engine_release(p, size);
    return nullptr;
  }
  *zero = true;  // fresh (or fully released) units read as zero
  return p;
}

bool hook_dalloc(extent_hooks_t *, void *, size_t, bool, unsigned) {
  return true;  // keep the address range (retained for reuse)
}

void hook_destroy(extent_hooks_t *, void *addr, size_t size, bool, unsigned) {
  if (heap_contains(addr)) heap_engine_release(addr, size);
  else sys::munmap(addr, size);
}

bool hook_commit(extent_hooks_t *, void *addr, size_t, size_t offset, size_t length, unsigned) {
  if (!heap_contains(addr)) return false;  // metadata: always committed
  return heap_commit(static_cast<char *>(addr) + offset, length) < 0;
}

bool hook_decommit(extent_hooks_t *, void *addr, size_t, size_t offset, size_t length, unsigned) {
  if (!heap_contains(addr)) return true;  // metadata stays committed
  return heap_discard(static_cast<char *>(addr) + offset, length, true) < 0;
}

bool hook_purge_forced(extent_hooks_t *, void *addr, size_t, size_t offset, size_t length, unsigned) {
  if (!heap_contains(addr)) return sys::madvise(static_cast<char *>(addr) + offset, length, MADV_DONTNEED) < 0;
  return heap_discard(static_cast<char *>(addr) + offset, length, false) < 0;
}

bool hook_split(extent_hooks_t *, void *, size_t, size_t, size_t, bool, unsigned) { return false; }
bool hook_merge(extent_hooks_t *, void *, size_t, void *, size_t, bool, unsigned) { return false; }

extent_hooks_t g_hooks = {hook_alloc, hook_dalloc, hook_destroy, hook_commit, hook_decommit,
                          nullptr /* purge_lazy: not for file-backed units */, hook_purge_forced,
                          hook_split, hook_merge};

}  // namespace

bool engine_init() {
  extent_hooks_t *hooks = &g_hooks;
  unsigned narenas = 0;
  size_t len = sizeof narenas;
  if (mmtier_je_mallctl("opt.narenas", &narenas, &len, nullptr, 0) != 0) {
    MMTIER_ERROR("allocator engine: cannot read opt.narenas");
    return false;
  }
  char name[64];
  for (unsigned i = 0; i < narenas; ++i) {
    format(name, sizeof name, "arena.%u.extent_hooks", i);
    int r = mmtier_je_mallctl(name, nullptr, nullptr, &hooks, sizeof hooks);
    if (r != 0) {
      MMTIER_ERROR("allocator engine: cannot install extent hooks on arena %u (error %d)", i, r);
      return false;
    }
  }
  for (int t = 0; t < kTierCount; ++t) {
    unsigned ind = 0;
    len = sizeof ind;
    int r = mmtier_je_mallctl("arenas.create", &ind, &len, &hooks, sizeof hooks);
    if (r != 0 || ind >= kMaxArenas) {
      MMTIER_ERROR("allocator engine: cannot create the arena for tier %d (error %d)", t, r);
      return false;
    }
    g_arena_forced[ind] = static_cast<int8_t>(t + 1);
    g_tier_arena[t] = ind;
  }
  if (pthread_key_create(&g_tier_tcache_key, destroy_tier_tcaches) != 0) return false;
  g_hooks_installed.store(true, std::memory_order_release);
  return true;
}

int engine_tier_flags(int t) {
  const int arena = je_arena_flag(g_tier_arena[t]);
  unsigned tc = t_tier_tcache[t];
  if (__builtin_expect(tc == 0, 0)) {
    unsigned id = 0;
    size_t len = sizeof id;
    if (mmtier_je_mallctl("tcache.create", &id, &len, nullptr, 0) != 0) return arena | kJeTcacheNone;
    tc = t_tier_tcache[t] = id + 1;
    pthread_setspecific(g_tier_tcache_key, &t_tier_tcache);  // destroyed at thread exit
  }
  return arena | je_tcache_flag(tc - 1);
}

bool engine_hooks_installed() { return g_hooks_installed.load(std::memory_order_acquire); }

unsigned engine_tier_arena(int t) { return g_tier_arena[t]; }

}  // namespace mmtier::detail
