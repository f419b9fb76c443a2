// The cost of sampling a DRAM unit's page: one window hides pages of 32
// DRAM units (8 pages each, none touched meanwhile) and ends, putting them
// back.  On Linux 6.8+ a page moves out and back with UFFDIO_MOVE; before
// (Debian 12's 6.1, RHEL 9's 5.14) it is write-protected where it is and
// unprotected at the end.  Run it twice to compare the two paths on one
// machine:
//   build/bench/micro/sample_bench
//   MMTIER_HIDE_FEATURES=wp-unpopulated,move build/bench/micro/sample_bench
// items_per_second counts pages sampled: 1e9 / it is ns per page.
#include <benchmark/benchmark.h>

#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <vector>

#include "api/runtime.h"
#include "heap/faults.h"
#include "heap/heap.h"
#include "heap/sample.h"
#include "support/errors.h"

namespace {

using namespace mmtier::detail;

constexpr size_t kUnits = 32;

void BM_SampleDramWindow(benchmark::State &state) {
  if (runtime_start() != kReady || !faults_start() || !faults_can_sample()) {
    state.SkipWithError("no userfaultfd sampling here");
    return;
  }
  static void *startup = nullptr;  // start-up units never move
  if (!startup) heap_mmap(nullptr, kStartupUnits * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &startup);
  void *p = nullptr;
  if (heap_mmap(nullptr, kUnits * kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, &p) != 0) {
    state.SkipWithError("heap_mmap failed");
    return;
  }
  char *base = static_cast<char *>(p);
  for (size_t i = 0; i < kUnits * kUnitSize; i += 4096) base[i] = 1;
  std::vector<uint32_t> units;
  for (size_t u = 0; u < kUnits; ++u) {
    const size_t idx = (reinterpret_cast<uintptr_t>(base + u * kUnitSize) - g_heap.base) >> kUnitShift;
    if (heap_tier_of(base + u * kUnitSize) != kTierDram) heap_migrate(idx, kTierDram);
    units.push_back(static_cast<uint32_t>(idx));
  }
  std::vector<uint8_t> pages(units.size(), 8);
  sample_result out[kUnits];
  size_t sampled = 0;
  uint64_t seed = 1;
  for (auto _ : state) {
    sampled += heap_sample_begin(units.data(), pages.data(), units.size(), seed++);
    heap_sample_end(out, kUnits);
  }
  state.SetItemsProcessed(static_cast<int64_t>(sampled));
  state.SetLabel(faults_can_move() ? "UFFDIO_MOVE" : "write-protect in place");
  heap_munmap(base, kUnits * kUnitSize);
}
BENCHMARK(BM_SampleDramWindow)->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
