// Small-object allocator slow paths (see small.h): thread heaps, page
// queues, carving and retiring pages, segments, the inbox of blocks freed by
// other threads, thread exit and fork.
#include "alloc/small.h"

#include "support/log.h"
#include "support/quiesce.h"
#include "support/meta.h"

#include <pthread.h>

#include <array>
#include <cstring>
#include <new>

namespace mmtier::detail {

// A thread's heap until its first small allocation: every queue is the
// empty page, so the fast path falls through to thread start-up.
constinit small_page g_small_empty_page{};

constinit small_heap g_small_empty_heap{&g_small_empty_page};

namespace {

// The heap of a thread whose heap was given up at exit: allocations go to
// the general engine, frees are remote.
constinit small_heap g_dead_heap{&g_small_empty_page};

enum small_heap_state : uint8_t {
  kHeapLive = 0,
  kHeapAbandoned = 1,  // its thread exited; the next new thread takes it
  kHeapOrphaned = 2,   // a thread that did not survive fork() owned it: never touched again
};

constexpr std::array<uint16_t, kSmallClasses> kClassSizes = {
    16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 448, 512, 640, 768, 896, 1024};
static_assert(kClassSizes[kSmallClasses - 1] == kSmallMax);

constexpr std::array<uint8_t, kSmallMax / 16 + 1> make_class_table() {
  std::array<uint8_t, kSmallMax / 16 + 1> t{};
  unsigned c = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    const size_t size = i * 16;  // the largest size mapping to index i
    while (kClassSizes[c] < size) ++c;
    t[i] = static_cast<uint8_t>(c);
  }
  return t;
}

// Blocks carved from a page's bump range per slow path: about 4 KiB, so a
// fresh page is touched (committed) gradually.
constexpr size_t kCarveBytes = 4096;
// Unused pages a heap keeps committed for reuse before giving memory back.
constexpr size_t kMaxDirtyPages = 8;

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;  // heap list, abandoned list, heap pool
small_heap *g_all = nullptr;
small_heap *g_abandoned = nullptr;
std::atomic<size_t> g_abandoned_count{0};
small_heap *g_pool = nullptr;  // unused heap structures (metadata memory)
size_t g_pool_left = 0;
size_t g_heaps = 0;
std::atomic<size_t> g_segments{0};
std::atomic<size_t> g_pages{0};
pthread_key_t g_exit_key;
std::atomic<bool> g_ready{false};


thread_local bool t_starting __attribute__((tls_model("initial-exec"))) = false;

struct lock_guard {
  lock_guard() { pthread_mutex_lock(&g_lock); }
  ~lock_guard() { pthread_mutex_unlock(&g_lock); }
};

inline uintptr_t heap_key(const small_heap *h) { return reinterpret_cast<uintptr_t>(h); }
inline small_heap *owner_heap(uintptr_t owner) { return reinterpret_cast<small_heap *>(owner & ~uintptr_t{1}); }
inline small_segment *segment_of(const void *p) {
  return reinterpret_cast<small_segment *>(reinterpret_cast<uintptr_t>(p) & ~(uintptr_t{kUnitSize} - 1));
}
inline size_t page_index(const small_segment *seg, const small_page *pg) {
  return static_cast<size_t>(pg - seg->pages);
}
inline char *page_area(small_segment *seg, size_t i) {
  return reinterpret_cast<char *>(seg) + i * kSmallPageSize + (i == 0 ? kSmallHeaderSize : 0);
}
inline char *page_area_end(small_segment *seg, size_t i) {
  return reinterpret_cast<char *>(seg) + (i + 1) * kSmallPageSize;
}

// ---- class queues -----------------------------------------------------------

// The granules of size ((size + 15) / 16) of class c: [first, last].
struct granule_range {
  uint8_t first, last;
};
constexpr std::array<granule_range, kSmallClasses> make_granule_ranges() {
  std::array<granule_range, kSmallClasses> r{};
  for (unsigned c = 0; c < kSmallClasses; ++c) {
    const unsigned lo = c == 0 ? 0 : kClassSizes[c - 1] / 16 + 1;
    r[c] = {static_cast<uint8_t>(lo), static_cast<uint8_t>(kClassSizes[c] / 16)};
  }
  return r;
}
constexpr std::array<granule_range, kSmallClasses> kGranules = make_granule_ranges();
constexpr bool granules_match_classes() {
  const auto table = make_class_table();
  for (unsigned c = 0; c < kSmallClasses; ++c)
    for (unsigned g = kGranules[c].first; g <= kGranules[c].last; ++g)
      if (table[g] != c) return false;
  return kGranules[0].first == 0 && kGranules[kSmallClasses - 1].last == kSmallGranules - 1;
}
static_assert(granules_match_classes(), "direct[] covers each granule with its class");

// A new head for class c's queue, seen by malloc's fast path too.
void set_head(small_heap *h, unsigned c, small_page *pg) {
  h->pages[c] = pg;
  for (unsigned g = kGranules[c].first; g <= kGranules[c].last; ++g) h->direct[g] = pg;
}

void queue_push_front(small_heap *h, small_page *pg) {
  const unsigned c = pg->cls;
  small_page *head = h->pages[c] == &g_small_empty_page ? nullptr : h->pages[c];
  pg->prev = nullptr;
  pg->next = head;
  if (head) head->prev = pg;
  else h->tails[c] = pg;
  set_head(h, c, pg);
}

void queue_push_back(small_heap *h, small_page *pg) {
  const unsigned c = pg->cls;
  small_page *tail = h->tails[c];
  if (!tail) {
    queue_push_front(h, pg);
    return;
  }
  pg->next = nullptr;
  pg->prev = tail;
  tail->next = pg;
  h->tails[c] = pg;
}

void queue_remove(small_heap *h, small_page *pg) {
  const unsigned c = pg->cls;
  if (pg->prev) pg->prev->next = pg->next;
  else set_head(h, c, pg->next ? pg->next : &g_small_empty_page);
  if (pg->next) pg->next->prev = pg->prev;
  else h->tails[c] = pg->prev;
  pg->next = pg->prev = nullptr;
}

// ---- segments ---------------------------------------------------------------

void segment_list_add(small_heap *h, small_segment *seg) {
  seg->prev = nullptr;
  seg->next = h->available;
  if (h->available) h->available->prev = seg;
  h->available = seg;
  seg->available = true;
}

void segment_list_remove(small_heap *h, small_segment *seg) {
  if (seg->prev) seg->prev->next = seg->next;
  else h->available = seg->next;
  if (seg->next) seg->next->prev = seg->prev;
  seg->next = seg->prev = nullptr;
  seg->available = false;
}

small_segment *segment_new(small_heap *h) {
  void *unit = heap_small_reserve();
  if (!unit) return nullptr;
  // Page 0 holds the header: placed now, with the unit.
  if (heap_commit(unit, kSmallPageSize) < 0) {
    heap_small_release(unit);
    return nullptr;
  }
  auto *seg = static_cast<small_segment *>(unit);
  memset(static_cast<void *>(seg), 0, sizeof *seg);
  seg->heap = h;
  seg->unused_mask = ~uint32_t{0};
  seg->committed_mask = 1;
  g_segments.fetch_add(1, std::memory_order_relaxed);
  segment_list_add(h, seg);
  return seg;
}

void segment_release(small_heap *h, small_segment *seg) {
  segment_list_remove(h, seg);
  for (size_t i = 0; i < kSmallPages; ++i)
    if (seg->pages[i].dirty) --h->dirty_pages;
  g_segments.fetch_sub(1, std::memory_order_relaxed);
  heap_small_release(seg);
}

// ---- pages ------------------------------------------------------------------

// Moves up to kCarveBytes of never-used blocks onto the free list.
void carve(small_page *pg) {
  const size_t bs = pg->block_size;
  size_t n = kCarveBytes / bs;
  if (n == 0) n = 1;
  const size_t left = static_cast<size_t>(pg->end - pg->bump) / bs;
  if (n > left) n = left;
  char *first = pg->bump;
  for (size_t i = 0; i + 1 < n; ++i)
    reinterpret_cast<small_block *>(first + i * bs)->next = reinterpret_cast<small_block *>(first + (i + 1) * bs);
  reinterpret_cast<small_block *>(first + (n - 1) * bs)->next = pg->free;
  pg->free = reinterpret_cast<small_block *>(first);
  pg->bump = first + n * bs;
}

// A fresh page of class cls for h, at the front of its queue.
small_page *page_new(small_heap *h, unsigned cls) {
  small_segment *seg = h->available;
  if (!seg) {
    if (g_abandoned_count.load(std::memory_order_relaxed)) small_collect_abandoned();
    seg = h->available;
    if (!seg) seg = segment_new(h);
    if (!seg) return nullptr;
  }
  const uint32_t warm = seg->unused_mask & seg->committed_mask;
  const size_t i = static_cast<size_t>(__builtin_ctz(warm ? warm : seg->unused_mask));
  small_page *pg = &seg->pages[i];
  char *area = page_area(seg, i);
  if (!(seg->committed_mask & (uint32_t{1} << i))) {
    if (heap_commit(area, static_cast<size_t>(page_area_end(seg, i) - area)) < 0) return nullptr;
    seg->committed_mask |= uint32_t{1} << i;
  }
  if (pg->dirty) {
    pg->dirty = 0;
    --h->dirty_pages;
  }
  const uint32_t bs = kClassSizes[cls];
  pg->block_size = bs;
  pg->cls = static_cast<uint8_t>(cls);
  pg->capacity = static_cast<uint32_t>((page_area_end(seg, i) - area) / bs);
  pg->bump = area;
  pg->end = area + size_t{pg->capacity} * bs;
  pg->free = nullptr;
  pg->used = 0;
  pg->owner.store(heap_key(h), std::memory_order_release);
  seg->unused_mask &= ~(uint32_t{1} << i);
  ++seg->used_pages;
  if (!seg->unused_mask) segment_list_remove(h, seg);
  g_pages.fetch_add(1, std::memory_order_relaxed);
  carve(pg);
  queue_push_front(h, pg);
  return pg;
}

// Gives an empty page (no block out) back to its segment.
void page_retire(small_heap *h, small_page *pg) {
  if (!(pg->owner.load(std::memory_order_relaxed) & 1)) queue_remove(h, pg);
  small_segment *seg = segment_of(pg);
  const size_t i = page_index(seg, pg);
  pg->owner.store(0, std::memory_order_relaxed);
  pg->capacity = 0;
  pg->free = nullptr;
  pg->bump = pg->end = nullptr;
  seg->unused_mask |= uint32_t{1} << i;
  --seg->used_pages;
  g_pages.fetch_sub(1, std::memory_order_relaxed);
  if (!seg->available) segment_list_add(h, seg);
  if (seg->used_pages == 0 && (h->available != seg || seg->next)) {
    // Another segment can serve this heap: give the whole unit back.
    segment_release(h, seg);
    return;
  }
  if (h->dirty_pages < kMaxDirtyPages) {
    pg->dirty = 1;
    ++h->dirty_pages;
    return;
  }
  char *area = page_area(seg, i);
  (void)heap_discard(area, static_cast<size_t>(page_area_end(seg, i) - area), true);
  seg->committed_mask &= ~(uint32_t{1} << i);
}

// Frees b into its page, which belongs to h (the caller is h's thread, or
// holds g_lock for an abandoned h).
void free_local(small_heap *h, small_page *pg, small_block *b) {
  b->next = pg->free;
  pg->free = b;
  if (pg->owner.load(std::memory_order_relaxed) & 1) {
    // Full until now: back in the queue, behind the page in use.
    pg->owner.store(heap_key(h), std::memory_order_relaxed);
    queue_push_back(h, pg);
  }
  if (--pg->used == 0) small_page_emptied(h, pg);
}

void free_remote(small_heap *owner, small_block *b) {
  small_block *head = owner->inbox.load(std::memory_order_relaxed);
  do {
    b->next = head;
  } while (!owner->inbox.compare_exchange_weak(head, b, std::memory_order_release, std::memory_order_relaxed));
}

// Takes h's inbox and frees every block in it into its page.
void collect(small_heap *h) {
  small_block *b = h->inbox.exchange(nullptr, std::memory_order_acquire);
  while (b) {
    small_block *next = b->next;
    small_page *pg = small_page_of(b);
    small_heap *owner = owner_heap(pg->owner.load(std::memory_order_relaxed));
    if (owner == h) free_local(h, pg, b);
    else if (owner) free_remote(owner, b);  // cannot happen: pages never change heaps
    b = next;
  }
}

void *alloc_from(small_heap *h, unsigned cls) {
  for (;;) {
    small_page *pg = h->pages[cls];
    if (pg != &g_small_empty_page) {
      if (pg->free) break;
      if (h->inbox.load(std::memory_order_relaxed)) {
        collect(h);
        continue;
      }
      if (pg->bump < pg->end) {
        carve(pg);
        break;
      }
      // Full: out of the queue until a block comes back.
      queue_remove(h, pg);
      pg->owner.store(heap_key(h) | 1, std::memory_order_relaxed);
      continue;
    }
    if (h->inbox.load(std::memory_order_relaxed)) {
      collect(h);
      continue;
    }
    if (!page_new(h, cls)) return nullptr;
  }
  small_page *pg = h->pages[cls];
  small_block *b = pg->free;
  pg->free = b->next;
  ++pg->used;
  return b;
}

// ---- thread heaps -------------------------------------------------------------

small_heap *heap_take() {
  lock_guard g;
  if (small_heap *h = g_abandoned) {
    g_abandoned = h->next_abandoned;
    g_abandoned_count.fetch_sub(1, std::memory_order_relaxed);
    h->next_abandoned = nullptr;
    h->state = kHeapLive;
    return h;
  }
  if (g_pool_left == 0) {
    constexpr size_t kChunk = 64;
    g_pool = static_cast<small_heap *>(meta_map(kChunk * sizeof(small_heap)));
    if (!g_pool) return nullptr;
    g_pool_left = kChunk;
  }
  small_heap *h = new (g_pool++) small_heap(&g_small_empty_page);
  --g_pool_left;
  h->state = kHeapLive;
  h->next_all = g_all;
  g_all = h;
  ++g_heaps;
  return h;
}

// Returns what an exited thread's heap no longer uses and leaves it for the
// next new thread (with g_lock held).
void abandon_locked(small_heap *h) {
  collect(h);
  h->state = kHeapAbandoned;
  h->next_abandoned = g_abandoned;
  g_abandoned = h;
  g_abandoned_count.fetch_add(1, std::memory_order_relaxed);
}

void thread_exit(void *arg) {
  auto *h = static_cast<small_heap *>(arg);
  // Anything this thread allocates or frees from now on (other exit-time
  // destructors) goes to the general engine or is a remote free.
  t_small_heap = &g_dead_heap;
  lock_guard g;
  abandon_locked(h);
}

small_heap *thread_start() {
  if (!g_ready.load(std::memory_order_acquire) || t_starting) return nullptr;
  t_starting = true;  // pthread_setspecific may allocate
  small_heap *h = heap_take();
  if (h && pthread_setspecific(g_exit_key, h) != 0) {
    // Without the exit key the heap would never be given up: hand it back
    // now and let this thread use the engine.
    lock_guard g;
    abandon_locked(h);
    h = nullptr;
  }
  if (h) t_small_heap = h;
  // The thread's arena for larger blocks, while its allocations still go
  // elsewhere (t_starting: binding may allocate inside the engine).
  engine_thread_start();
  t_starting = false;
  return h;
}

void fork_prepare() { pthread_mutex_lock(&g_lock); }
void fork_parent() { pthread_mutex_unlock(&g_lock); }

// In the child only the forking thread lives on.  The heaps of the others
// may have been in the middle of an operation at the fork instant, so they
// are never used again: their blocks stay allocated (what the child frees
// of them waits in their inbox) and their memory is the child's to keep.
void fork_child() {
  pthread_mutex_init(&g_lock, nullptr);
  for (small_heap *h = g_all; h; h = h->next_all)
    if (h->state == kHeapLive && h != t_small_heap) h->state = kHeapOrphaned;
}

}  // namespace

constinit const std::array<uint8_t, kSmallMax / 16 + 1> g_small_class_of = make_class_table();
constinit thread_local small_heap *t_small_heap __attribute__((tls_model("initial-exec"))) = &g_small_empty_heap;

void *small_alloc_slow(size_t size) {
  small_heap *h = t_small_heap;
  if (h == &g_small_empty_heap) {
    h = thread_start();
    if (!h) return nullptr;
  } else if (h == &g_dead_heap) {
    return nullptr;
  }
  return alloc_from(h, small_class(size));
}

void small_free_slow(void *p) {
  small_page *pg = small_page_of(p);
  const uintptr_t owner = pg->owner.load(std::memory_order_acquire);
  small_heap *h = t_small_heap;
  auto *b = static_cast<small_block *>(p);
  if (owner_heap(owner) == h) {
    free_local(h, pg, b);  // our page, full until now
    return;
  }
  if (owner == 0) {
    MMTIER_DEBUG("free(%p): not an allocated block of the small-object allocator; ignored", p);
    return;
  }
  free_remote(owner_heap(owner), b);
}

void small_page_retire(small_heap *h, small_page *pg) { page_retire(h, pg); }

void *small_realloc(void *p, size_t size) {
  const size_t old = small_usable_size(p);
  if (size <= old && (size * 2 > old || old == kClassSizes[0])) return p;
  void *q = small_or_engine_malloc(size);
  if (!q) return nullptr;
  memcpy(q, p, old < size ? old : size);
  small_free(p);
  return q;
}

void small_collect_abandoned() {
  lock_guard g;
  for (small_heap *h = g_abandoned; h; h = h->next_abandoned) collect(h);
}

bool small_init() {
  if (pthread_key_create(&g_exit_key, thread_exit) != 0) return false;
  // Restored: every thread and its heap are back.
  quiesce_register(kRankSmall, {fork_prepare, fork_parent, fork_child, nullptr, fork_parent});
  g_ready.store(true, std::memory_order_release);
  return true;
}

void small_stats_get(small_stats *out) {
  out->segments = g_segments.load(std::memory_order_relaxed);
  out->pages = g_pages.load(std::memory_order_relaxed);
  lock_guard g;
  out->heaps = g_heaps;
  out->abandoned = g_abandoned_count.load(std::memory_order_relaxed);
}

}  // namespace mmtier::detail
