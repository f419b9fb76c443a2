// Allocator engine (lib/alloc/): every block it hands out, of every size,
// lies in the heap (also its very first ones, made before the extent hooks
// were installed), and the tier arenas place their blocks on their tier.
#include "alloc/engine.h"
#include "api/runtime.h"
#include "heap/heap.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include <unistd.h>

namespace mmtier::detail {
namespace {

TEST(Engine, EveryBlockLiesInTheHeap) {
  ASSERT_EQ(runtime_start(), kReady);
  EXPECT_TRUE(engine_hooks_installed());
  std::vector<void *> blocks;
  size_t outside = 0;
  for (size_t size = 1; size <= (size_t{256} << 20); size = size * 3 / 2 + 1) {
    for (int k = 0; k < 4; ++k) {
      void *p = mmtier_je_malloc(size);
      ASSERT_NE(p, nullptr) << size;
      if (!heap_contains(p)) {
        ++outside;
        if (outside < 6) ADD_FAILURE() << "size " << size << " at " << p;
      }
      memset(p, 1, size < 4096 ? size : 4096);
      blocks.push_back(p);
    }
  }
  EXPECT_EQ(outside, 0u);
  for (void *p : blocks) mmtier_je_free(p);
}

TEST(Engine, TierArenasPlaceOnTheirTier) {
  ASSERT_EQ(runtime_start(), kReady);
  for (int tier : {kTierDram, kTierPmem}) {
    const int flags = je_arena_flag(engine_tier_arena(tier)) | kJeTcacheNone;
    for (size_t size : {size_t{16}, size_t{4096}, size_t{1} << 20, size_t{16} << 20}) {
      char *p = static_cast<char *>(mmtier_je_mallocx(size, flags));
      ASSERT_NE(p, nullptr);
      p[0] = 1;
      EXPECT_EQ(heap_tier_of(p), tier) << "size " << size;
      mmtier_je_dallocx(p, kJeTcacheNone);
    }
  }
}

// mmtier_free sends a block back to a tier's thread cache only when the
// block came from that tier's arena: blocks of the engine's start-up units
// (forced to DRAM, but not an explicit-tier arena) and policy blocks must go
// to the ordinary cache, or policy allocations would keep missing theirs.
TEST(Engine, OnlyTierArenaBlocksCountAsExplicitlyPlaced) {
  ASSERT_EQ(runtime_start(), kReady);
  void *policy = mmtier_je_malloc(64);
  ASSERT_TRUE(heap_contains(policy));
  EXPECT_EQ(heap_forced_tier(policy), -1);
  for (int tier : {kTierDram, kTierPmem}) {
    void *p = mmtier_je_mallocx(64, engine_tier_flags(tier));
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(heap_forced_tier(p), tier);
    mmtier_je_dallocx(p, engine_tier_flags(tier) & ~kJeArenaMask);
  }
  // Start-up units are forced to DRAM and owned as mappings, not by an arena.
  void *startup = nullptr;
  ASSERT_EQ(heap_mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &startup, kTierDram), 0);
  EXPECT_EQ(heap_tier_of(startup), kTierDram);
  EXPECT_EQ(heap_forced_tier(startup), -1);
  heap_munmap(startup, 4096);
  mmtier_je_free(policy);
}

// Threads are spread over arenas of the engine's own, made with the heap's
// hooks (jemalloc has one automatic arena): every block of every thread
// lies in the heap, and a second thread does not share arena 0.
TEST(Engine, ThreadsGetArenasWithTheHeapsHooks) {
  ASSERT_EQ(runtime_start(), kReady);
  unsigned narenas = 0;
  size_t len = sizeof narenas;
  ASSERT_EQ(mmtier_je_mallctl("opt.narenas", &narenas, &len, nullptr, 0), 0);
  EXPECT_EQ(narenas, 1u) << "jemalloc makes no automatic arena but arena 0";
  std::atomic<size_t> outside{0};
  std::vector<unsigned> arena(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      engine_thread_start();  // as a thread's first small allocation does
      unsigned a = 0;
      size_t l = sizeof a;
      mmtier_je_mallctl("thread.arena", &a, &l, nullptr, 0);
      arena[t] = a;
      for (size_t size = 2048; size <= (size_t{8} << 20); size *= 2) {
        void *p = mmtier_je_malloc(size);
        if (!heap_contains(p)) outside.fetch_add(1);
        memset(p, 2, 4096);
        mmtier_je_free(p);
      }
    });
  for (auto &th : threads) th.join();
  EXPECT_EQ(outside.load(), 0u);
  unsigned bound_elsewhere = 0;
  for (unsigned a : arena) bound_elsewhere += a != 0;
  if (sysconf(_SC_NPROCESSORS_ONLN) > 1) EXPECT_GE(bound_elsewhere, 1u) << "threads share the arenas in turn";
}

}  // namespace
}  // namespace mmtier::detail
