// Microbenchmarks of mmtier's linked API (libmmtier_api.so, no
// interposition): mmtier_malloc/mmtier_free pairs at 16..1024 bytes,
// mmtier_malloc_on(tier) + mmtier_free, mmtier_realloc growth and
// mmtier_tier_of lookups.  The loops are the same as malloc_bench's
// (bench/micro/loops.h), so the two can be compared name for name.
// Configuration comes from the environment as for any mmtier program
// (MMTIER_DRAM_RATIO etc.; the default ratio is 1:4).
#include <mmtier/mmtier.h>
#include <stdlib.h>

#include "loops.h"

namespace {

struct Mmtier {
  static void *malloc(size_t n) { return mmtier_malloc(n); }
  static void *realloc(void *p, size_t n) { return mmtier_realloc(p, n); }
  static void free(void *p) { mmtier_free(p); }
};


// mmtier_malloc_on(tier, size) + mmtier_free: explicit placement.
void malloc_on_free(benchmark::State &state) {
  const int tier = static_cast<int>(state.range(0));
  const size_t size = static_cast<size_t>(state.range(1));
  for (auto _ : state) {
    void *p = mmtier_malloc_on(tier, size);
    benchmark::DoNotOptimize(p);
    mmtier_free(p);
  }
  state.SetItemsProcessed(state.iterations());
}


// mmtier_tier_of on 1024 addresses spread over managed blocks (kind 0), or
// on an address mmtier does not manage (kind 1: a stack address; kind 2: a
// block from the system malloc, which the linked library leaves alone).
void tier_of(benchmark::State &state) {
  const int kind = static_cast<int>(state.range(0));
  std::vector<void *> blocks;
  std::vector<const void *> addrs;
  int on_stack = 0;
  for (int i = 0; i < 1024; ++i) {
    if (kind == 0) {
      blocks.push_back(mmtier_malloc(64 + (i % 16) * 64));
      addrs.push_back(blocks.back());
    } else if (kind == 1) {
      addrs.push_back(&on_stack);
    } else {
      blocks.push_back(::malloc(64));
      addrs.push_back(blocks.back());
    }
  }
  int64_t lookups = 0;
  int sum = 0;
  for (auto _ : state) {
    for (const void *a : addrs) sum += mmtier_tier_of(a);
    lookups += static_cast<int64_t>(addrs.size());
  }
  benchmark::DoNotOptimize(sum);
  for (void *b : blocks) {
    if (kind == 0) {
      mmtier_free(b);
    } else {
      ::free(b);
    }
  }
  state.SetItemsProcessed(lookups);
}
void register_api() {
  benchmark::RegisterBenchmark("mmtier_malloc_on_free", malloc_on_free)
      ->ArgNames({"tier", "size"})
      ->ArgsProduct({{0, 1}, {16, 256, 1024}});
  benchmark::RegisterBenchmark("mmtier_tier_of", tier_of)->ArgName("kind")->Arg(0)->Arg(1)->Arg(2);
}

}  // namespace

int main(int argc, char **argv) { return micro::run_main<Mmtier>(argc, argv, "mmtier_", register_api); }
