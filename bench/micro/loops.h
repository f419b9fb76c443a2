// Microbenchmark loops shared by api_bench (mmtier's linked API) and
// malloc_bench (plain malloc/free, run under each allocator by LD_PRELOAD).
// Each loop is a template over an Api with malloc/free/realloc, so both
// binaries run exactly the same code around the calls they measure.
#ifndef MMTIER_BENCH_MICRO_LOOPS_H
#define MMTIER_BENCH_MICRO_LOOPS_H

#include <benchmark/benchmark.h>
#include <stdint.h>
#include <stdlib.h>

#include <string>
#include <vector>

#include "../workloads/common.h"

namespace micro {

// The workloads' generator, so micro and process-level runs draw alike.
using Rng = bench::Rng;

// One malloc(size) + free pair per iteration: the thread-cache fast path.
template <class Api>
void malloc_free(benchmark::State &state) {
  const size_t size = static_cast<size_t>(state.range(0));
  for (auto _ : state) {
    void *p = Api::malloc(size);
    benchmark::DoNotOptimize(p);
    Api::free(p);
  }
  state.SetItemsProcessed(state.iterations());
}

// A batch of 64 allocations, then their frees in the same order: the
// fast path when the thread cache has to hand out and take back several.
template <class Api>
void malloc_batch_free(benchmark::State &state) {
  const size_t size = static_cast<size_t>(state.range(0));
  void *ptrs[64];
  for (auto _ : state) {
    for (void *&p : ptrs) {
      p = Api::malloc(size);
      benchmark::DoNotOptimize(p);
    }
    for (void *p : ptrs) Api::free(p);
  }
  state.SetItemsProcessed(state.iterations() * 64);
}

// Small-object churn: 1000 live objects of 16..1024 bytes, each iteration
// frees a random one and allocates a random size in its place.
template <class Api>
void churn(benchmark::State &state) {
  const size_t live = 1000;
  std::vector<void *> slots(live);
  Rng rng(42);
  for (void *&p : slots) p = Api::malloc(16 + rng.next() % 1009);
  for (auto _ : state) {
    void *&p = slots[rng.next() % live];
    Api::free(p);
    p = Api::malloc(16 + rng.next() % 1009);
    benchmark::DoNotOptimize(p);
  }
  for (void *p : slots) Api::free(p);
  state.SetItemsProcessed(state.iterations());
}

// Realloc growth: malloc(16), then realloc doubling up to range(0) bytes,
// then free.  Items are realloc calls.
template <class Api>
void realloc_growth(benchmark::State &state) {
  const size_t limit = static_cast<size_t>(state.range(0));
  int64_t reallocs = 0;
  for (auto _ : state) {
    void *p = Api::malloc(16);
    for (size_t size = 32; size <= limit; size *= 2) {
      p = Api::realloc(p, size);
      static_cast<char *>(p)[size - 1] = 1;
      ++reallocs;
    }
    benchmark::DoNotOptimize(p);
    Api::free(p);
  }
  state.SetItemsProcessed(reallocs);
}

}  // namespace micro

namespace micro {

// Registers the shared loops with names prefix + loop name.
template <class Api>
void register_common(const std::string &prefix) {
  benchmark::RegisterBenchmark((prefix + "malloc_free").c_str(), malloc_free<Api>)
      ->RangeMultiplier(2)->Range(16, 1024);
  benchmark::RegisterBenchmark((prefix + "malloc_batch64_free").c_str(), malloc_batch_free<Api>)
      ->Arg(16)->Arg(256)->Arg(1024);
  benchmark::RegisterBenchmark((prefix + "churn_16_1024").c_str(), churn<Api>);
  benchmark::RegisterBenchmark((prefix + "realloc_growth").c_str(), realloc_growth<Api>)
      ->Arg(4096)->Arg(65536)->Arg(1 << 20);
}

// main() of both binaries: the shared loops, then the binary's own.
template <class Api>
int run_main(int argc, char **argv, const std::string &prefix, void (*extra)()) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  register_common<Api>(prefix);
  if (extra != nullptr) extra();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace micro

#endif  // MMTIER_BENCH_MICRO_LOOPS_H
