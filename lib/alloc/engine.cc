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
#include "support/quiesce.h"

#include <jemalloc/jemalloc.h>
#include <pthread.h>
#include <sys/mman.h>

#include <atomic>

// Engine options that the heap depends on, applied after any MALLOC_CONF the
// user set for some other jemalloc (jemalloc reads this string last):
// oversize_threshold:0 keeps huge allocations in the hooked arenas instead of
// a dedicated arena created later with jemalloc's default hooks; narenas:1
// leaves jemalloc one automatic arena (the hooked arena 0): the others are
// the engine's own, made when a thread first needs one (see
// engine_thread_start), never with jemalloc's default hooks.
extern "C" {
__attribute__((visibility("hidden"))) const char *mmtier_je_malloc_conf_2_conf_harder =
    "oversize_threshold:0,narenas:1";
}

namespace mmtier::detail {
namespace {

constexpr unsigned kMaxArenas = 4096;
std::atomic<bool> g_hooks_installed{false};
int8_t g_arena_forced[kMaxArenas];  // forced tier + 1 per arena index
// Arenas made on first use (index + 1; 0: not made yet), under g_arena_lock:
// one per tier for explicit placement, and the pool threads are spread over.
constexpr unsigned kPoolMax = 256;
std::atomic<unsigned> g_tier_arena1[kTierCount];
std::atomic<unsigned> g_pool_arena1[kPoolMax];
unsigned g_pool_size = 1;
std::atomic<unsigned> g_pool_next{0};
pthread_mutex_t g_arena_lock = PTHREAD_MUTEX_INITIALIZER;
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

// An arena with the heap's hooks: index + 1 into *slot, made now if the
// slot is empty (making an arena touches tens of pages of metadata: most
// programs never need the tier arenas, nor more arenas than threads).  1
// (arena 0, the automatic one) if jemalloc refuses.
unsigned arena_made(std::atomic<unsigned> &slot, int forced) {
  unsigned ind = slot.load(std::memory_order_acquire);
  if (__builtin_expect(ind != 0, 1)) return ind;
  pthread_mutex_lock(&g_arena_lock);
  ind = slot.load(std::memory_order_relaxed);
  if (ind == 0) {
    extent_hooks_t *hooks = &g_hooks;
    unsigned made = 0;
    size_t len = sizeof made;
    const int r = mmtier_je_mallctl("arenas.create", &made, &len, &hooks, sizeof hooks);
    if (r == 0 && made < kMaxArenas) {
      g_arena_forced[made] = static_cast<int8_t>(forced + 1);
      ind = made + 1;
    } else {
      MMTIER_ERROR("allocator engine: cannot create an arena (error %d); arena 0 serves instead", r);
      ind = 1;
    }
    slot.store(ind, std::memory_order_release);
  }
  pthread_mutex_unlock(&g_arena_lock);
  return ind;
}

// The quiesce sequence, rank kRankEngineArenas: making an arena takes the
// engine's locks inside this one.
void arena_lock() { pthread_mutex_lock(&g_arena_lock); }
void arena_unlock() { pthread_mutex_unlock(&g_arena_lock); }
void arena_fork_child() { pthread_mutex_init(&g_arena_lock, nullptr); }

unsigned online_cpus() {
  uint64_t mask[16] = {};
  const long n = sys::raw(SYS_sched_getaffinity, 0, sizeof mask, reinterpret_cast<long>(mask));
  unsigned cpus = 0;
  for (long w = 0; n > 0 && w < n / 8; ++w) cpus += static_cast<unsigned>(__builtin_popcountll(mask[w]));
  return cpus ? cpus : 1;
}

}  // namespace

bool engine_init() {
  extent_hooks_t *hooks = &g_hooks;
  unsigned narenas = 0;
  size_t len = sizeof narenas;
  if (mmtier_je_mallctl("opt.narenas", &narenas, &len, nullptr, 0) != 0) {
    MMTIER_ERROR("allocator engine: cannot read opt.narenas");
    return false;
  }
  // One automatic arena (narenas:1 above); every other arena is made with
  // the hooks from the start.
  char name[64];
  for (unsigned i = 0; i < narenas; ++i) {
    format(name, sizeof name, "arena.%u.extent_hooks", i);
    int r = mmtier_je_mallctl(name, nullptr, nullptr, &hooks, sizeof hooks);
    if (r != 0) {
      MMTIER_ERROR("allocator engine: cannot install extent hooks on arena %u (error %d)", i, r);
      return false;
    }
  }
  g_pool_size = online_cpus() < kPoolMax ? online_cpus() : kPoolMax;
  quiesce_register(kRankEngineArenas, {arena_lock, arena_unlock, arena_fork_child, nullptr, arena_unlock});
  if (pthread_key_create(&g_tier_tcache_key, destroy_tier_tcaches) != 0) return false;
  g_hooks_installed.store(true, std::memory_order_release);
  return true;
}

unsigned engine_tier_arena(int t) { return arena_made(g_tier_arena1[t], t) - 1; }

void engine_thread_start() {
  if (!g_hooks_installed.load(std::memory_order_acquire) || g_pool_size < 2) return;
  // Threads in turn over one arena per CPU; the first share stays arena 0.
  const unsigned k = g_pool_next.fetch_add(1, std::memory_order_relaxed) % g_pool_size;
  if (k == 0) return;
  unsigned ind = arena_made(g_pool_arena1[k], -1) - 1;
  mmtier_je_mallctl("thread.arena", nullptr, nullptr, &ind, sizeof ind);
}

int engine_tier_flags(int t) {
  const int arena = je_arena_flag(engine_tier_arena(t));
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

}  // namespace mmtier::detail
