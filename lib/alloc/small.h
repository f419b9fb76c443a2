// Small-object allocator: blocks of up to kSmallMax bytes, in 64 KiB pages
// of 2 MiB segments (each segment one unit of the heap's small zone, so
// placement, migration and snapshots see it like any unit).
//
// Every thread owns a heap: per size class, a queue of pages with free
// blocks.  malloc pops the first page's free list; free pushes onto the
// block's page when the page is this thread's, and onto the owning heap's
// inbox (one atomic push) otherwise; the owner takes its inbox back in a
// slow path.  A page's descriptor lives in its segment's header, found from
// the block's address by masking, so neither path takes a lock or looks
// anything up.  Pages are carved lazily (never-used blocks are a bump
// range), empty pages go back to their segment, and empty segments back to
// the heap layer.  A thread that exits leaves its heap to the next new
// thread; blocks freed into it meanwhile are collected by whichever thread
// next needs a fresh segment.
#pragma once

#include "alloc/engine.h"
#include "heap/heap.h"

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline constexpr size_t kSmallMax = 1024;
inline constexpr size_t kSmallPageShift = 16;
inline constexpr size_t kSmallPageSize = size_t{1} << kSmallPageShift;
inline constexpr size_t kSmallPages = kUnitSize / kSmallPageSize;  // per segment
inline constexpr size_t kSmallHeaderSize = 4096;  // segment header, at the start of page 0
inline constexpr unsigned kSmallClasses = 20;

struct small_block {
  small_block *next;
};

struct small_heap;

// One page of one size class.  owner is the owning heap's address with bit 0
// set while the page is full (and in no queue); a thread frees straight into
// the page only when owner equals its own heap, so one compare covers both.
struct alignas(64) small_page {
  small_block *free;                // blocks ready to hand out
  uint32_t used;                    // blocks handed out and not freed back here
  uint32_t capacity;                // blocks in the page; 0 while the page is unused
  std::atomic<uintptr_t> owner;     // small_heap * | full bit; 0 while unused
  char *bump;                       // first block never handed out
  char *end;                        // end of the page's last block
  uint32_t block_size;
  uint8_t cls;
  uint8_t dirty;                    // unused but still committed (counted in its heap)
  small_page *next, *prev;          // the class queue of the owning heap
};
static_assert(sizeof(small_page) == 64);

struct small_segment {
  small_page pages[kSmallPages];
  small_heap *heap;
  small_segment *next, *prev;  // the heap's segments with unused pages
  uint32_t unused_mask;        // pages not in use
  uint32_t committed_mask;     // pages whose memory is placed
  uint32_t used_pages;
  bool available;              // in the heap's list
};
static_assert(sizeof(small_segment) <= kSmallHeaderSize);

inline constexpr size_t kSmallGranules = kSmallMax / 16 + 1;  // (size + 15) / 16 for size <= kSmallMax

struct small_heap {
  // The queue head of the class of each 16-byte granule of size: malloc's
  // fast path indexes it by (size + 15) / 16 directly, without the class
  // table (kept equal to pages[class] by the slow paths that change a head).
  small_page *direct[kSmallGranules] = {};
  small_page *pages[kSmallClasses] = {};  // queue heads: the page malloc pops from
  small_page *tails[kSmallClasses] = {};
  std::atomic<small_block *> inbox{nullptr};  // blocks other threads freed into our pages
  small_segment *available = nullptr;         // segments with unused pages
  size_t dirty_pages = 0;
  small_heap *next_all = nullptr;             // every heap ever made
  small_heap *next_abandoned = nullptr;
  uint8_t state = 0;                          // small_heap_state

  // Every queue empty: its head is the shared empty page.
  constexpr explicit small_heap(small_page *empty) {
    for (auto &p : pages) p = empty;
    for (auto &p : direct) p = empty;
  }
};

extern small_page g_small_empty_page;
extern small_heap g_small_empty_heap;
// constinit: no dynamic initialisation, so no TLS wrapper call on the fast paths.
extern constinit thread_local small_heap *t_small_heap __attribute__((tls_model("initial-exec")));
// Size class of a request, by (size + 15) / 16.
extern const std::array<uint8_t, kSmallMax / 16 + 1> g_small_class_of;

inline unsigned small_class(size_t size) { return g_small_class_of[(size + 15) >> 4]; }

inline small_page *small_page_of(const void *p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  auto *seg = reinterpret_cast<small_segment *>(a & ~(uintptr_t{kUnitSize} - 1));
  return &seg->pages[(a >> kSmallPageShift) & (kSmallPages - 1)];
}

// Slow paths (small.cc).
// nullptr: not served here (this thread cannot have a heap yet or any more,
// or no memory); the caller uses the general engine.
void *small_alloc_slow(size_t size);
void small_free_slow(void *p);
// A page of h's with no block out any more that is not the head of its
// queue: back to its segment.
void small_page_retire(small_heap *h, small_page *pg);

// The page malloc pops from stays, however empty: a thread that allocates
// and frees one block at a time would otherwise retire and remake it.
inline void small_page_emptied(small_heap *h, small_page *pg) {
  if (h->pages[pg->cls] != pg) small_page_retire(h, pg);
}

// size <= kSmallMax.  A block from the first page of the class's queue, or
// nullptr if that page has none ready (then small_alloc_slow).
inline void *small_alloc_fast(size_t size) {
  small_page *pg = t_small_heap->direct[(size + 15) >> 4];
  small_block *b = pg->free;
  if (__builtin_expect(b != nullptr, 1)) {
    pg->free = b->next;
    ++pg->used;
  }
  return b;
}

// size <= kSmallMax.  nullptr as small_alloc_slow.
inline void *small_alloc(size_t size) {
  if (void *p = small_alloc_fast(size)) return p;
  return small_alloc_slow(size);
}

// p is a block of the small zone.
inline void small_free(void *p) {
  small_page *pg = small_page_of(p);
  small_heap *h = t_small_heap;
  if (__builtin_expect(pg->owner.load(std::memory_order_relaxed) == reinterpret_cast<uintptr_t>(h), 1)) {
    auto *b = static_cast<small_block *>(p);
    b->next = pg->free;
    pg->free = b;
    if (__builtin_expect(--pg->used == 0, 0)) small_page_emptied(h, pg);
    return;
  }
  small_free_slow(p);
}

inline size_t small_usable_size(const void *p) { return small_page_of(p)->block_size; }

// malloc with the engine ready: small blocks here, the rest (and small ones
// this thread cannot have) from the general engine.
inline void *small_or_engine_malloc(size_t size) {
  if (__builtin_expect(size <= kSmallMax, 1)) {
    if (void *p = small_alloc(size)) return p;
  }
  return mmtier_je_malloc(size);
}

// realloc of a small block to size > 0: in place while the block's class
// still fits the size well, else a new block, the contents and a free.
// nullptr (p untouched) when no memory.
void *small_realloc(void *p, size_t size);

// Called once the heap exists (runtime start-up); until then every small
// allocation goes to the general engine.  False if the thread-exit key
// could not be made.
[[nodiscard]] bool small_init();

struct small_stats {
  size_t segments;      // segments held now
  size_t pages;         // pages in use now
  size_t heaps;         // thread heaps ever made
  size_t abandoned;     // heaps of exited threads waiting for a new thread
};
void small_stats_get(small_stats *out);

// Test seams: collects the inboxes of exited threads' heaps now (as a
// thread needing a fresh segment would) and releases what they no longer use.
void small_collect_abandoned();

}  // namespace mmtier::detail
