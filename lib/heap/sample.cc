// Access sampling (see sample.h).  One window at a time, driven by one
// thread (the background mover); the fault service reads the DRAM sample
// table concurrently.  State changes run under the heap lock.
#include "heap/sample.h"

#include "heap/faults.h"
#include "heap/heap_internal.h"
#include "platform/pagemap.h"
#include "platform/sys.h"
#include "platform/uffd.h"
#include "support/log.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>
#include <atomic>

namespace mmtier::detail {
namespace {

constexpr size_t kMaxDram = 1024;
constexpr size_t kMaxPmem = 8192;

struct pmem_sample {
  uintptr_t page;
  uint32_t unit;
  bool valid;
};

// DRAM samples: ascending pages (units are asked in ascending order), so
// every published prefix is sorted for the fault service's binary search.
// constinit: in .bss, untouched until used (a dynamic initializer would
// touch all 32 KiB of it at every process start).
constinit fault_sample g_dram[kMaxDram] = {};
size_t g_ndram = 0;
constinit pmem_sample g_pmem[kMaxPmem] = {};
size_t g_npmem = 0;
bool g_open = false;

char *g_side = nullptr;          // kMaxDram side pages
uint64_t g_side_generation = 0;  // fault service generation it is registered with

constinit sys::pagemap_file g_pagemap;  // the heap lock guards it

// Totals over the process's windows (for a debugger; the mover keeps its
// own counters for the API).
struct {
  uint64_t windows;
  uint64_t samples;  // pages hidden
  uint64_t touched;  // of which found touched
} g_counters = {};

constexpr uint64_t kPresent = sys::kPagemapPresent;
constexpr uint64_t kFile = sys::kPagemapFile;
constexpr uint64_t kExclusive = sys::kPagemapExclusive;

inline uint64_t next_random(uint64_t &x) {
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return x;
}

bool side_ready() {
  if (!faults_can_sample()) return false;
  if (!g_side) {
    long r = sys::mmap(nullptr, kMaxDram * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sys::failed(r)) return false;
    g_side = reinterpret_cast<char *>(r);
  }
  const uint64_t gen = faults_generation();
  if (g_side_generation != gen) {
    // The side pages are the destination of every move out: registered.
    if (sys::uffd::register_range(faults_fd(), g_side, kMaxDram * kPageSize, UFFDIO_REGISTER_MODE_MISSING) < 0)
      return false;
    g_side_generation = gen;
  }
  return true;
}

// Brings a DRAM sample's page back if it is still out (waiting for the
// fault service if it is moving it right now), then unregisters the page.
void settle_dram(fault_sample &s) {
  for (;;) {
    uint8_t st = s.state.load(std::memory_order_acquire);
    if (st == 0) return;  // never went out
    if (st == kSampleMoving) {
      sched_yield();
      continue;
    }
    if (st != kSampleOut) break;  // back already
    if (!s.state.compare_exchange_strong(st, kSampleMoving, std::memory_order_acq_rel)) continue;
    while (faults_sample_restore(s) == -EAGAIN) sched_yield();
    s.state.store(kSampleBack, std::memory_order_release);
    break;
  }
  sys::uffd::unregister_range(faults_fd(), reinterpret_cast<void *>(s.page), kPageSize);
}

// Appends the result of one page to out, merging pages of the same unit
// (they are consecutive).
void add_result(sample_result *out, size_t cap, size_t &n, uint32_t unit, uint8_t tier, bool touched,
                bool written) {
  if (touched) ++g_counters.touched;
  if (!out) return;
  if (n && out[n - 1].unit == unit) {
    sample_result &r = out[n - 1];
    ++r.sampled;
    r.touched = static_cast<uint8_t>(r.touched + touched);
    r.written = static_cast<uint8_t>(r.written + written);
  } else if (n < cap) {
    out[n++] = {unit, tier, 1, static_cast<uint8_t>(touched), static_cast<uint8_t>(written)};
  }
}

void end_locked(sample_result *out, size_t cap, size_t *count) {
  size_t n = 0;
  for (size_t i = 0; i < g_ndram; ++i) {
    fault_sample &s = g_dram[i];
    if (s.state.load(std::memory_order_acquire) == 0) continue;
    settle_dram(s);
    const bool touched = s.state.load(std::memory_order_acquire) == kSampleTouched;
    unit &u = g_heap.units[s.unit];
    u.sample = 0;
    add_result(out, cap, n, s.unit, static_cast<uint8_t>(unit_tier(u)), touched, s.written.load() != 0);
  }
  faults_samples_retract();
  g_ndram = 0;
  for (size_t i = 0; i < g_npmem; ++i) {
    pmem_sample &s = g_pmem[i];
    if (!s.valid) continue;
    g_heap.units[s.unit].sample = 0;
    add_result(out, cap, n, s.unit, kTierPmem, (g_pagemap.entry(s.page) & kPresent) != 0, false);
  }
  g_npmem = 0;
  g_open = false;
  if (count) *count = n;
}

// A live page in 64 KiB block `block` of unit u, at or after a random page
// of the block, or SIZE_MAX.
size_t pick_page(const unit &u, size_t block, uint64_t &rnd) {
  constexpr size_t kBlockPages = 16;
  const size_t start = static_cast<size_t>(next_random(rnd) % kBlockPages);
  for (size_t k = 0; k < kBlockPages; ++k) {
    const size_t i = block * kBlockPages + (start + k) % kBlockPages;
    if ((u.live_bits[i >> 6] >> (i & 63)) & 1) return i;
  }
  return SIZE_MAX;
}

// Up to want live pages of unit u in distinct 64 KiB blocks (a random first
// block, then a stride coprime with 32), ascending so the DRAM table stays
// sorted by address; returns how many.
size_t pick_pages(const unit &u, size_t want, uint64_t &rnd, size_t picks[kMaxPagesPerUnit]) {
  constexpr size_t kBlocks = kUnitSize / (size_t{16} << kPageShift);  // 64 KiB blocks per unit
  const size_t first_block = static_cast<size_t>(next_random(rnd) % kBlocks);
  size_t npicks = 0;
  for (size_t j = 0; j < want; ++j) {
    const size_t pg = pick_page(u, (first_block + j * 7) % kBlocks, rnd);
    if (pg != SIZE_MAX) picks[npicks++] = pg;
  }
  for (size_t a = 1; a < npicks; ++a)  // insertion sort of at most 8
    for (size_t b = a; b > 0 && picks[b - 1] > picks[b]; --b) std::swap(picks[b - 1], picks[b]);
  return npicks;
}

// Hides a page of a PMem unit.  Every page of a movable PMem unit is a page
// of its file (units with anonymous pages, frozen or spilled, never move),
// and one not mapped now is as good as one unmapped on purpose: no pagemap
// read first (a system call costs tens of microseconds on the measuring VM,
// and this is one per sample).
bool hide_pmem_page(unit &u, size_t idx, uintptr_t page) {
  if (g_npmem == kMaxPmem) return false;
  if (sys::madvise(reinterpret_cast<void *>(page), kPageSize, MADV_DONTNEED) < 0) return false;
  g_pmem[g_npmem++] = {page, static_cast<uint32_t>(idx), true};
  u.sample = 2;
  return true;
}

// Moves a DRAM page to its side page (Linux 6.8); 0 or -errno.
long move_out(int fd, void *side, uintptr_t page) {
  size_t done = 0;
  long r;
  while ((r = sys::uffd::move(fd, side, reinterpret_cast<void *>(page), kPageSize, &done)) == -EAGAIN) sched_yield();
  if (r == -EEXIST) {
    // The side page was populated behind our back (a debugger reading it,
    // mlockall): it holds nothing of ours.
    sys::madvise(side, kPageSize, MADV_DONTNEED);
    r = sys::uffd::move(fd, side, reinterpret_cast<void *>(page), kPageSize, &done);
  }
  return r;
}

// Hides a page of a DRAM unit: moves it to a side page, registered so that
// the first access faults to the fault service (before 6.8: write-protects
// it, so that the first write does).  Only a present page of this
// process's own (not shared with a child since fork) is sampled.
bool hide_dram_page(unit &u, size_t idx, uintptr_t page) {
  if (g_ndram == kMaxDram || (g_ndram > 0 && g_dram[g_ndram - 1].page >= page)) return false;
  const uint64_t e = g_pagemap.entry(page);
  if (!(e & kPresent) || !(e & kExclusive) || (e & kFile)) return false;
  const int fd = faults_fd();
  fault_sample &s = g_dram[g_ndram];
  s.page = page;
  s.side = reinterpret_cast<uintptr_t>(g_side + g_ndram * kPageSize);
  s.unit = static_cast<uint32_t>(idx);
  s.written.store(0, std::memory_order_relaxed);
  s.state.store(0, std::memory_order_relaxed);
  // Entries are never reused within a window (the fault service may be
  // reading them): a page that cannot be sampled leaves an empty entry.
  ++g_ndram;
  // Without UFFDIO_MOVE (before 6.8) the page stays where it is, write-
  // protected: a write is seen, a read is not.  Copying it out and dropping
  // it would lose what a device writes into it meanwhile (an O_DIRECT read
  // in flight pins the page, which a move refuses and a drop does not).
  const bool by_move = faults_can_move();
  s.by_wp = !by_move;
  const uint64_t mode = by_move ? UFFDIO_REGISTER_MODE_MISSING : UFFDIO_REGISTER_MODE_WP;
  if (sys::uffd::register_range(fd, reinterpret_cast<void *>(page), kPageSize, mode) < 0) return false;
  // Published before the page goes: a fault on it finds its entry.
  s.state.store(kSampleOut, std::memory_order_release);
  faults_samples_publish(g_dram, g_ndram);
  long r = by_move ? move_out(fd, reinterpret_cast<void *>(s.side), page)
                   : sys::uffd::write_protect(fd, reinterpret_cast<void *>(page), kPageSize, true);
  if (r < 0) {
    // Not movable now (shared with a child since fork, pinned, ...).
    s.state.store(0, std::memory_order_release);
    sys::uffd::unregister_range(fd, reinterpret_cast<void *>(page), kPageSize);
    return false;
  }
  u.sample = 1;
  return true;
}

}  // namespace

sys::pagemap_file &heap_pagemap() { return g_pagemap; }

size_t heap_sample_begin(const uint32_t *units, const uint8_t *pages, size_t n, uint64_t seed) {
  heap_lock_guard g;
  g_pagemap.check_owner();
  if (g_open) end_locked(nullptr, 0, nullptr);
  const bool dram_ok = side_ready();
  uint64_t rnd = seed | 1;
  size_t started = 0;
  for (size_t k = 0; k < n; ++k) {
    const size_t idx = units[k];
    if (!heap_unit_movable(idx)) continue;
    unit &u = g_heap.units[idx];
    const int t = unit_tier(u);
    // Anonymous units (DRAM, and both node tiers) are sampled through the
    // fault service; a file's pages by unmapping them.
    const bool anon = t == kTierDram || g_mgr.tiers[t].anonymous;
    if (anon && !dram_ok) continue;
    const size_t want = pages[k] < 1 ? 1 : pages[k] > kMaxPagesPerUnit ? kMaxPagesPerUnit : pages[k];
    size_t picks[kMaxPagesPerUnit];
    const size_t npicks = pick_pages(u, want, rnd, picks);
    for (size_t j = 0; j < npicks; ++j) {
      const uintptr_t page = reinterpret_cast<uintptr_t>(page_addr(idx, picks[j]));
      if (anon ? hide_dram_page(u, idx, page) : hide_pmem_page(u, idx, page)) ++started;
    }
  }
  g_open = true;
  ++g_counters.windows;
  g_counters.samples += started;
  return started;
}

size_t heap_sample_end(sample_result *out, size_t cap) {
  heap_lock_guard g;
  g_pagemap.check_owner();
  size_t n = 0;
  if (g_open) end_locked(out, cap, &n);
  return n;
}

void sample_settle_unit_locked(size_t idx) {
  unit &u = g_heap.units[idx];
  if (!u.sample) return;
  if (u.sample == 1) {
    for (size_t i = 0; i < g_ndram; ++i)
      if (g_dram[i].unit == idx && g_dram[i].state.load(std::memory_order_acquire) != 0) settle_dram(g_dram[i]);
  } else {
    for (size_t i = 0; i < g_npmem; ++i)
      if (g_pmem[i].unit == idx) g_pmem[i].valid = false;
  }
  u.sample = 0;
}

void sample_settle_all_locked() {
  for (size_t i = 0; i < g_ndram; ++i) {
    if (g_dram[i].state.load(std::memory_order_acquire) == 0) continue;
    settle_dram(g_dram[i]);
    g_heap.units[g_dram[i].unit].sample = 0;
  }
}

void sample_fork_child() {
  // Every DRAM sample was settled before the fork; the window is the
  // parent's.  The child's mover starts its own.
  for (size_t i = 0; i < g_npmem; ++i) g_heap.units[g_pmem[i].unit].sample = 0;
  for (size_t i = 0; i < g_ndram; ++i) g_heap.units[g_dram[i].unit].sample = 0;
  g_ndram = g_npmem = 0;
  g_open = false;
  g_side_generation = 0;
}

void sample_restored() {
  sample_fork_child();
  g_pagemap.forget();
}

}  // namespace mmtier::detail
