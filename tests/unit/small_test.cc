// Small-object allocator (lib/alloc/small.*): size classes, contents kept
// and blocks never shared, realloc, memory given back when blocks are freed
// (locally, by other threads, after their owner exited), thread heaps reused,
// and fork.
#include "alloc/small.h"
#include "api/runtime.h"
#include "heap/heap.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

namespace mmtier::detail {
namespace {

class Small : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(runtime_start(), kReady); }
};

small_stats stats() {
  small_stats s;
  small_stats_get(&s);
  return s;
}

void fill(void *p, size_t n, uint8_t tag) { memset(p, tag, n); }

size_t mismatches(const void *p, size_t n, uint8_t tag) {
  const auto *c = static_cast<const uint8_t *>(p);
  return static_cast<size_t>(std::count_if(c, c + n, [&](uint8_t v) { return v != tag; }));
}

TEST_F(Small, EverySizeGetsTheSmallestFittingAlignedBlock) {
  size_t prev_usable = 0;
  for (size_t size = 0; size <= kSmallMax; ++size) {
    void *p = small_alloc(size);
    ASSERT_NE(p, nullptr) << size;
    ASSERT_TRUE(heap_small_contains(p));
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << size;
    const size_t usable = small_usable_size(p);
    EXPECT_GE(usable, size);
    EXPECT_GE(usable, prev_usable) << "classes must grow with the size";
    // Less than a quarter wasted above 128 bytes, at most 15 bytes below.
    if (size > 128) EXPECT_LT(usable - size, usable / 4) << size;
    else EXPECT_LT(usable - (size ? size : 1), 16u) << size;
    prev_usable = usable;
    small_free(p);
  }
}

TEST_F(Small, LiveBlocksKeepTheirContentsAndNeverOverlap) {
  std::mt19937 rng(7);
  struct live {
    uint8_t *p;
    size_t n;
    uint8_t tag;
  };
  std::vector<live> blocks;
  for (int round = 0; round < 200000; ++round) {
    if (blocks.size() < 3000 && (blocks.empty() || rng() % 3)) {
      const size_t n = 1 + rng() % kSmallMax;
      auto *p = static_cast<uint8_t *>(small_alloc(n));
      ASSERT_NE(p, nullptr);
      const auto tag = static_cast<uint8_t>(rng());
      fill(p, n, tag);
      blocks.push_back({p, n, tag});
    } else {
      const size_t i = rng() % blocks.size();
      ASSERT_EQ(mismatches(blocks[i].p, blocks[i].n, blocks[i].tag), 0u);
      small_free(blocks[i].p);
      blocks[i] = blocks.back();
      blocks.pop_back();
    }
  }
  std::sort(blocks.begin(), blocks.end(), [](const live &a, const live &b) { return a.p < b.p; });
  for (size_t i = 0; i + 1 < blocks.size(); ++i)
    EXPECT_LE(blocks[i].p + blocks[i].n, blocks[i + 1].p) << "blocks overlap";
  for (auto &b : blocks) {
    EXPECT_EQ(mismatches(b.p, b.n, b.tag), 0u);
    small_free(b.p);
  }
}

TEST_F(Small, ReallocKeepsContentsInPlaceWhenTheClassFits) {
  auto *p = static_cast<uint8_t *>(small_alloc(100));
  ASSERT_NE(p, nullptr);
  fill(p, 100, 0x5a);
  const size_t usable = small_usable_size(p);
  EXPECT_EQ(small_realloc(p, usable), p) << "growing within the block stays";
  EXPECT_EQ(small_realloc(p, usable - 8), p) << "a small shrink stays";
  auto *q = static_cast<uint8_t *>(small_realloc(p, 900));
  ASSERT_NE(q, nullptr);
  EXPECT_NE(q, p);
  EXPECT_EQ(mismatches(q, 100, 0x5a), 0u);
  auto *r = static_cast<uint8_t *>(small_realloc(q, 20));
  ASSERT_NE(r, nullptr);
  EXPECT_NE(r, q) << "a block much larger than needed is given up";
  EXPECT_EQ(mismatches(r, 20, 0x5a), 0u);
  auto *big = static_cast<uint8_t *>(small_realloc(r, 100000));
  ASSERT_NE(big, nullptr);
  EXPECT_FALSE(heap_small_contains(big)) << "above kSmallMax the engine serves it";
  EXPECT_EQ(mismatches(big, 20, 0x5a), 0u);
  mmtier_je_free(big);
}

TEST_F(Small, FreeingEverythingGivesSegmentsBack) {
  const small_stats before = stats();
  std::vector<void *> blocks;
  for (int i = 0; i < 200000; ++i) {  // 200k x 48..64 B: several segments
    void *p = small_alloc(48 + static_cast<size_t>(i % 2) * 16);
    ASSERT_NE(p, nullptr);
    blocks.push_back(p);
  }
  const small_stats full = stats();
  EXPECT_GE(full.segments, before.segments + 4);
  std::shuffle(blocks.begin(), blocks.end(), std::mt19937(3));
  for (void *p : blocks) small_free(p);
  const small_stats after = stats();
  // What stays: one segment per class queue head at most, here two classes.
  EXPECT_LE(after.segments, before.segments + 2);
  EXPECT_LE(after.pages, before.pages + 2);
}

TEST_F(Small, BlocksFreedByAnotherThreadAreReused) {
  // One thread allocates, another frees; over many rounds the allocating
  // thread must reuse the returned blocks, not grow without bound.
  constexpr int kRounds = 60, kPerRound = 5000;
  std::vector<void *> batch(kPerRound);
  size_t peak_segments = 0, first_round_segments = 0;
  for (int r = 0; r < kRounds; ++r) {
    for (auto &p : batch) {
      p = small_alloc(200);
      ASSERT_NE(p, nullptr);
      fill(p, 200, static_cast<uint8_t>(r));
    }
    std::thread consumer([&] {
      for (void *p : batch) {
        if (mismatches(p, 200, static_cast<uint8_t>(r)) != 0) ADD_FAILURE() << "block changed";
        small_free(p);
      }
    });
    consumer.join();
    const size_t segs = stats().segments;
    if (r == 0) first_round_segments = segs;
    peak_segments = std::max(peak_segments, segs);
  }
  EXPECT_LE(peak_segments, first_round_segments + 2);
}

TEST_F(Small, AnExitedThreadsHeapIsReusedAndItsBlocksFreedLater) {
  std::vector<void *> kept;
  std::thread a([&] {
    for (int i = 0; i < 100000; ++i) {
      void *p = small_alloc(64);
      ASSERT_NE(p, nullptr);
      fill(p, 64, 0x11);
      kept.push_back(p);
    }
  });
  a.join();
  const small_stats after_exit = stats();
  EXPECT_GE(after_exit.abandoned, 1u);
  // Thread a is gone: its blocks go to its heap's inbox ...
  for (void *p : kept) {
    EXPECT_EQ(mismatches(p, 64, 0x11), 0u);
    small_free(p);
  }
  // ... and are taken back by the next thread that needs a segment (here
  // forced directly), which gives the emptied segments back.
  small_collect_abandoned();
  const small_stats collected = stats();
  EXPECT_LT(collected.segments, after_exit.segments);
  // A new thread takes an abandoned heap instead of making one.
  std::thread b([&] {
    void *p = small_alloc(32);
    ASSERT_NE(p, nullptr);
    small_free(p);
  });
  b.join();
  EXPECT_EQ(stats().heaps, collected.heaps);
}

TEST_F(Small, SegmentsArePlacedOnATier) {
  void *p = small_alloc(512);
  ASSERT_NE(p, nullptr);
  static_cast<char *>(p)[0] = 1;
  const int t = heap_tier_of(p);
  EXPECT_TRUE(t == kTierDram || t == kTierPmem) << t;
  small_free(p);
}

TEST_F(Small, ChildOfForkAllocatesAndFreesParentBlocks) {
  // A thread that lives on in the parent owns blocks; in the child that
  // thread does not exist: freeing its blocks there must be safe, and the
  // child's own allocations work.
  std::atomic<int> stage{0};
  std::vector<void *> theirs;
  std::thread owner([&] {
    for (int i = 0; i < 1000; ++i) {
      void *p = small_alloc(128);
      fill(p, 128, 0x77);
      theirs.push_back(p);
    }
    stage = 1;
    while (stage.load() != 2) std::this_thread::yield();
  });
  while (stage.load() != 1) std::this_thread::yield();
  void *mine = small_alloc(64);
  fill(mine, 64, 0x33);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    int bad = 0;
    for (void *p : theirs) {
      bad += mismatches(p, 128, 0x77) != 0;
      small_free(p);
    }
    bad += mismatches(mine, 64, 0x33) != 0;
    small_free(mine);
    std::vector<void *> again;
    for (int i = 0; i < 20000; ++i) {
      void *p = small_alloc(static_cast<size_t>(16 + i % 1000));
      if (!p) _exit(3);
      again.push_back(p);
    }
    for (void *p : again) small_free(p);
    _exit(bad ? 2 : 0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  stage = 2;
  owner.join();
  for (void *p : theirs) {
    EXPECT_EQ(mismatches(p, 128, 0x77), 0u);
    small_free(p);
  }
  small_free(mine);
}

}  // namespace
}  // namespace mmtier::detail
