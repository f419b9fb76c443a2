// Allocator engine (lib/alloc/): every block it hands out, of every size,
// lies in the heap (also its very first ones, made before the extent hooks
// were installed), and the tier arenas place their blocks on their tier.
#include "alloc/engine.h"
#include "api/runtime.h"
#include "heap/heap.h"

#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cstring>
#include <vector>

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

}  // namespace
}  // namespace mmtier::detail
