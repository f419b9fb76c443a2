// Access sampling (see sample.h).  One window at a time, driven by one
// thread (the background mover); the fault service reads the DRAM sample
// table concurrently.  State changes run under the heap lock.
#include "heap/sample.h"

#include "heap/faults.h"
#include "heap/heap_internal.h"
#include "platform/clock.h"
#include "platform/pagemap.h"
#include "support/mix.h"
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
  uint16_t pages;  // hidden from page on
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

char *g_side = nullptr;          // kMaxDram side pages, then the probe (measure_allowance)
uint64_t g_side_generation = 0;  // fault service generation it is registered with
// Whole-unit samples (a unit mapped by one huge page, moved out as one):
// unit-aligned side slots, so that the huge page stays whole there.
constexpr size_t kMaxWhole = 32;
char *g_side_whole = nullptr;  // kMaxWhole slots, or nullptr (units sampled by pages)
bool g_whole_off = false;      // a slot could not be renewed (check_whole): none again
size_t g_nwhole = 0;           // slots used in this window
// A whole-unit sample counts as touched when its first access came within
// 1/512th of the window (from the moment every sample of the window is
// out), plus an allowance for the time the access took to reach the fault
// service (see whole_touched): what a fault of the sampler's own took to be
// answered as the window's samples went out (the probe: g_side's last page) three times
// over, at least kAllowanceFloorNs; on a virtual machine
// tens of microseconds while the service's CPU is busy, hundreds while it
// is idle (woken from a halted virtual CPU).  A first write into a unit
// moved out also waits for the kernel to get and clear a huge page (which
// it then drops, as the page is missing): g_huge_clear_ns more.
constexpr uint64_t kAllowanceFloorNs = 50'000;
constexpr uint64_t kCatchUpNs = 1'000'000;  // service_caught_up: the fault service's moment to answer
uint64_t g_allowance_ns = kAllowanceFloorNs;
uint64_t g_probe_ns = 0;  // the probe's round trip, last measured (waited_before)
uint64_t g_huge_clear_ns = UINT64_MAX;  // not measured yet
bool g_whole_any_touch = false;         // heap_sample_whole_any_touch (tests)
uint64_t g_whole_limit_ns = 0;          // heap_sample_whole_limit (tests)

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
    long r = sys::mmap(nullptr, (kMaxDram + 1) * kPageSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sys::failed(r)) return false;
    g_side = reinterpret_cast<char *>(r);
  }
  if (!g_side_whole && !g_whole_off && faults_can_move()) {
    // Unit-aligned: a huge page moves only between aligned places.
    const size_t len = (kMaxWhole + 1) * kUnitSize;
    long r = sys::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (!sys::failed(r)) {
      const uintptr_t lo = static_cast<uintptr_t>(r), at = align_up(lo, kUnitSize);
      if (at > lo) sys::munmap(reinterpret_cast<void *>(lo), at - lo);
      if (at + kMaxWhole * kUnitSize < lo + len)
        sys::munmap(reinterpret_cast<void *>(at + kMaxWhole * kUnitSize), lo + len - at - kMaxWhole * kUnitSize);
      g_side_whole = reinterpret_cast<char *>(at);
    }
  }
  const uint64_t gen = faults_generation();
  if (g_side_generation != gen) {
    // The side pages are the destination of every move out: registered.
    if (sys::uffd::register_range(faults_fd(), g_side, (kMaxDram + 1) * kPageSize, UFFDIO_REGISTER_MODE_MISSING) < 0)
      return false;
    if (g_side_whole &&
        sys::uffd::register_range(faults_fd(), g_side_whole, kMaxWhole * kUnitSize, UFFDIO_REGISTER_MODE_MISSING) < 0) {
      sys::munmap(g_side_whole, kMaxWhole * kUnitSize);
      g_side_whole = nullptr;
    }
    g_side_generation = gen;
  }
  return true;
}

// Brings a DRAM sample's page back if it is still out (waiting for the
// fault service if it is moving it right now), then unregisters the page,
// once: a sample settled early (its unit freed, moved or protected) is
// settled again at the window's end, and by then its addresses may be
// another unit's, registered for that one's own faults (a PMem unit whose
// storage waits for its first touch: unregistered, its first writes would
// land in anonymous pages of its own, lost to the unit).
void settle_dram(fault_sample &s) {
  if (s.settled) return;
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
  sys::uffd::unregister_range(faults_fd(), reinterpret_cast<void *>(s.page), s.len);
  s.settled = true;
}

// The fault service's answering time now: a read of the probe page (a
// missing page of g_side: answered with the zero page), timed, then dropped
// for the next time.
void measure_allowance() {
  volatile char *probe = g_side + kMaxDram * kPageSize;
  const uint64_t t0 = sys::mono_ns();
  (void)*probe;
  const uint64_t took = sys::mono_ns() - t0;
  sys::madvise(const_cast<char *>(probe), kPageSize, MADV_DONTNEED);
  g_probe_ns = took;
  g_allowance_ns = std::max(kAllowanceFloorNs, 3 * took);
}

// What the kernel takes to give a write a fresh huge page: the least of
// three tries, each on an aligned scratch unit (0 when it gets no huge page
// there).  Measured once per process, so one try stretched by a preemption
// would stretch every window's allowance after it (seen on a loaded host: a
// write 20 ms into a 40 ms window counted as early).
void measure_huge_clear() {
  uint64_t least = UINT64_MAX;
  for (int t = 0; t < 3; ++t) {
    const size_t len = 2 * kUnitSize;
    long r = sys::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (sys::failed(r)) break;
    char *at = reinterpret_cast<char *>(align_up(static_cast<uintptr_t>(r), kUnitSize));
    sys::madvise(at, kUnitSize, MADV_HUGEPAGE);
    const uint64_t t0 = sys::mono_ns();
    *reinterpret_cast<volatile char *>(at) = 1;
    const uint64_t took = sys::mono_ns() - t0;
    const bool huge = g_pagemap.huge(reinterpret_cast<uintptr_t>(at), kUnitSize) == 1;
    sys::munmap(reinterpret_cast<void *>(r), len);
    if (!huge) break;
    least = std::min(least, took);
  }
  g_huge_clear_ns = least == UINT64_MAX ? 0 : least;
  MMTIER_DEBUG("sampling: a fresh huge page for a write takes %llu us here",
               static_cast<unsigned long long>(g_huge_clear_ns / 1000));
}

// A write into a whole unit moved out waits for the kernel to get and
// clear a huge page before the fault reaches the service: that time, or 0.
uint64_t huge_clear_of(const fault_sample &s) {
  const bool cleared = s.len != kPageSize && !s.by_wp && s.written.load(std::memory_order_relaxed);
  return cleared ? g_huge_clear_ns : 0;
}

// What a fault on s took beyond the service's reading it: the way there
// (the probe's round trip) and a huge page's clearing.
uint64_t delivery_of(const fault_sample &s) { return g_probe_ns + huge_clear_of(s); }

// The time the thread that first touched s spent waiting for the fault
// service between s's going out and that touch (read at first): a thread
// that meets several hidden units in a row reaches each only once the
// ones before are back (a huge page moved back each), and a hot unit met
// late in such a row read as untouched, counted from its going out
// (measured: about half the looks at the hot units on DRAM of a 2 GiB
// heap, each then a victim at heat 0).  Each earlier answer of the same
// thread (UFFD_FEATURE_THREAD_ID; none without it) counts from its read,
// or from s's going out if later, to its answer, plus its way to the
// service.  Only waits: the thread's running time between them stays
// counted, so that a cold unit touched by chance long after its going out
// does not read as touched because the thread was let go just before
// (counting from the last release instead made every touch soon after a
// release count: with DRAM write-protected in place, answered in
// microseconds, that was most of a busy thread's time, and cold units read
// warm).  Never more than the time up to the thread's last release.
uint64_t waited_before(const fault_sample &s, uint64_t first) {
  if (!s.ptid) return 0;
  uint64_t waited = 0, released = s.out_ns;
  for (size_t i = 0; i < g_ndram; ++i) {
    const fault_sample &f = g_dram[i];
    if (&f == &s || f.state.load(std::memory_order_acquire) != kSampleTouched || f.ptid != s.ptid) continue;
    if (f.answered_ns > first || f.answered_ns <= s.out_ns) continue;
    const uint64_t read = std::max(f.touch_ns.load(std::memory_order_relaxed), s.out_ns);
    waited += f.answered_ns - std::min(read, f.answered_ns) + delivery_of(f);
    released = std::max(released, f.answered_ns);
  }
  return std::min(waited, released - s.out_ns);
}

// Whether a whole-unit sample, out since s.out_ns until end_ns and first
// touched at s.touch_ns, counts as the touch of one page hidden as long.
// If the unit's accesses are spread over its 512 pages, the chance that a
// given page is reached within a time T is the chance that the unit is
// reached within T/512: the first access within that, not within T,
// keeps a unit's figure that of one page (a unit touched at all within a
// window would make every lukewarm unit look hot).  The allowance covers
// the time the fault service takes to see the access.  The time out is
// the sample's own, from when it went out: an access while later samples
// were still going out is held to the same scale (counted at once, it made
// every unit hidden early look hot where hiding is slow: on a busy virtual
// machine each flush waits for the other CPU, and cold units showed as
// warm as hot ones).
// The time to the first touch is the thread's running time: its waits
// for the service on other samples are not counted (waited_before).
bool whole_touched(const fault_sample &s, uint64_t end_ns) {
  if (s.state.load(std::memory_order_acquire) != kSampleTouched) return false;
  const uint64_t out = end_ns > s.out_ns ? end_ns - s.out_ns : 0;
  const uint64_t first = s.touch_ns.load(std::memory_order_relaxed);
  if (first <= s.out_ns) return true;  // within the sampler's own measuring time: at once
  if (g_whole_any_touch) return true;   // tests: any access counts
  const uint64_t ran = first - s.out_ns - waited_before(s, first);
  if (g_whole_limit_ns) return ran <= g_whole_limit_ns;
  return ran <= out / kPagesPerUnit + g_allowance_ns + huge_clear_of(s);
}

// Appends the result of one page to out, merging pages of the same unit
// (they are consecutive).
void add_result(sample_result *out, size_t cap, size_t &n, uint32_t unit, uint8_t tier, bool touched,
                bool written, bool idle = false) {
  if (touched) ++g_counters.touched;
  if (!out) return;
  if (n && out[n - 1].unit == unit) {
    sample_result &r = out[n - 1];
    ++r.sampled;
    r.touched = static_cast<uint8_t>(r.touched + touched);
    r.written = static_cast<uint8_t>(r.written + written);
  } else if (n < cap) {
    out[n++] = {unit, tier, 1, static_cast<uint8_t>(touched), static_cast<uint8_t>(written), static_cast<uint8_t>(idle)};
  }
}

// A whole-unit sample back on small pages: something split the huge page
// while it was out (a fault on it in a mapping not advised for huge pages
// leaves a page table at the unit's place, and the put-back splits the
// huge page into it).  The slot keeps a page table then, and would split
// every unit moved into it later: it is mapped afresh (the kernel frees a
// page table with the mapping), and the unit is marked to be rebuilt.
void check_whole(const fault_sample &s) {
  const unit &u = g_heap.units[s.unit];
  if (s.by_wp || unit_tier(u) != kTierDram || u.live != kPagesPerUnit || g_pagemap.huge(s.page, kUnitSize) != 0)
    return;
  heap_rehuge_mark(s.unit);
  void *slot = reinterpret_cast<void *>(s.side);
  const long r = sys::mmap(slot, kUnitSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
                           -1, 0);
  if (sys::failed(r) || sys::uffd::register_range(faults_fd(), slot, kUnitSize, UFFDIO_REGISTER_MODE_MISSING) < 0) {
    // Without its slot no unit is sampled whole any more (by pages instead).
    MMTIER_INFO("sampling: cannot renew a side slot (error %ld); units are sampled by pages from now on",
                sys::failed(r) ? -r : 0L);
    g_side_whole = nullptr;
    g_whole_off = true;
  }
}

// Whether the fault service has answered every fault taken in this
// window, asked only when some whole sample looks untouched (the one result
// that depends on it: sample_result::idle).  Without the heap lock: the
// service may need it to answer (a first touch), and the program's
// allocations never wait here.  The service is given a moment to finish
// what it has in hand (it answers in microseconds; one that has not within
// kCatchUpNs is held up, and its faults wait).
bool service_caught_up() {
  bool untouched_whole = false;
  for (size_t i = 0; i < g_ndram && !untouched_whole; ++i) {
    const uint8_t st = g_dram[i].state.load(std::memory_order_acquire);
    untouched_whole = g_dram[i].len != kPageSize && st != 0 && st != kSampleTouched;
  }
  if (!untouched_whole) return false;
  bool answered = faults_caught_up();
  for (const uint64_t t0 = sys::mono_ns(); !answered && sys::mono_ns() - t0 < kCatchUpNs;) {
    sched_yield();
    answered = faults_caught_up();
  }
  return answered;
}

// answered: service_caught_up() just before (no sample is idle otherwise);
// asked again here, without waiting, for faults taken while the lock was
// being taken (one answered since has its sample touched).
void end_locked(sample_result *out, size_t cap, size_t *count, bool answered = false) {
  size_t n = 0;
  const uint64_t end_ns = sys::mono_ns();
  answered = answered && faults_caught_up();
  for (size_t i = 0; i < g_ndram; ++i) {
    fault_sample &s = g_dram[i];
    if (s.state.load(std::memory_order_acquire) == 0) continue;
    const bool whole_window = !s.settled;  // not settled early (its unit used, a fork)
    settle_dram(s);
    if (s.len != kPageSize && g_side_whole) check_whole(s);
    const bool any = s.state.load(std::memory_order_acquire) == kSampleTouched;
    const bool touched = s.len == kPageSize ? any : whole_touched(s, end_ns);
    unit &u = g_heap.units[s.unit];
    u.sample = 0;
    add_result(out, cap, n, s.unit, static_cast<uint8_t>(unit_tier(u)), touched, touched && s.written.load() != 0,
               s.len != kPageSize && !any && whole_window && answered);
  }
  faults_samples_retract();
  g_ndram = 0;
  g_nwhole = 0;
  for (size_t i = 0; i < g_npmem; ++i) {
    pmem_sample &s = g_pmem[i];
    if (!s.valid) continue;
    g_heap.units[s.unit].sample = 0;
    const bool touched =
        s.pages == 1 ? (g_pagemap.entry(s.page) & kPresent) != 0 : g_pagemap.present(s.page, s.pages) != 0;
    add_result(out, cap, n, s.unit, kTierPmem, touched, false);
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

// Up to want spans of span pages of unit u (span-aligned, distinct, every
// page live: only the heap's own pages are unmapped; a random first span,
// then a stride coprime with their number), as the first page of each;
// returns how many.
size_t pick_spans(const unit &u, size_t want, size_t span, uint64_t &rnd, size_t picks[kMaxPagesPerUnit]) {
  const size_t nspans = kPagesPerUnit / span;  // a power of two
  const size_t first = static_cast<size_t>(next_random(rnd) % nspans);
  const uint64_t mask = span >= 64 ? ~uint64_t{0} : (uint64_t{1} << span) - 1;
  size_t npicks = 0;
  for (size_t j = 0; j < want && j < nspans; ++j) {
    const size_t at = (first + j * 7) % nspans * span;
    bool live = true;
    for (size_t i = at; i < at + span && live; i += 64) live = ((u.live_bits[i >> 6] >> (i & 63)) & mask) == mask;
    if (live) picks[npicks++] = at;
  }
  return npicks;
}

// The span a caller asked for, as heap_sample_begin takes it.
size_t span_pages(uint32_t asked) {
  if (asked < kPmemSpanMin) return 1;
  size_t span = kPmemSpanMin;
  while (span * 2 <= asked && span * 2 <= kPmemSpanMax) span *= 2;
  return span;
}

// Hides pages of a PMem unit.  Every page of a movable PMem unit is a page
// of its file (units with anonymous pages, frozen or spilled, never move),
// and one not mapped now is as good as one unmapped on purpose: no pagemap
// read first (a system call costs tens of microseconds on the measuring VM,
// and this is one per sample).  Not a unit whose storage waits for its
// first touch: its pages are anonymous (untouched: nothing to see), and
// dropping one that a write reached some other way would lose the write.
bool hide_pmem_pages(unit &u, size_t idx, uintptr_t page, size_t pages) {
  if (g_npmem == kMaxPmem || __atomic_load_n(&u.pending, __ATOMIC_ACQUIRE)) return false;
  if (sys::madvise(reinterpret_cast<void *>(page), pages * kPageSize, MADV_DONTNEED) < 0) return false;
  g_pmem[g_npmem++] = {page, static_cast<uint32_t>(idx), static_cast<uint16_t>(pages), true};
  u.sample = 2;
  return true;
}

// Moves a DRAM page (or a whole unit) to its side page (Linux 6.8); 0 or
// -errno, and then nothing is out.  Called between faults_moveout_begin and
// faults_moveout_end: no fault is answered meanwhile, so nothing moves back
// what is going out, or fills a hole it leaves.
long move_out(int fd, void *side, uintptr_t page, size_t len) {
  char *to = static_cast<char *>(side);
  size_t at = 0;
  long r = 0;
  bool cleared = false;
  while (at < len) {
    size_t done = 0;
    r = sys::uffd::move(fd, to + at, reinterpret_cast<void *>(page + at), len - at, &done);
    at += done;
    if (r == 0) break;
    if (r == -EAGAIN) {
      // Busy for now (a page locked, the address space changing until the
      // fault service reads the event): go on from where it stopped.
      if (!done) sched_yield();
    } else if (r == -EEXIST && at == 0 && !cleared) {
      // The side page was populated behind our back (a debugger reading
      // it, mlockall): it holds nothing of ours.
      sys::madvise(side, len, MADV_DONTNEED);
      cleared = true;
    } else {
      break;
    }
  }
  if (r < 0 && at > 0) {
    // Part of a unit went (its huge page was split meanwhile, a page of it
    // pinned): back with it before the sample is given up.
    for (size_t total = 0, back = 0; total < at; total += back) {
      const long b = sys::uffd::move(fd, reinterpret_cast<char *>(page) + total, to + total, at - total, &back);
      if (b == 0) break;
      if (b != -EAGAIN) {
        MMTIER_ERROR("sampling: cannot put %p back (error %ld); its data stays at %p",
                     reinterpret_cast<void *>(page + total), -b, to + total);
        break;
      }
      if (!back) sched_yield();
    }
  }
  return r;
}

// Hides a page of a DRAM unit: moves it to a side page, registered so that
// the first access faults to the fault service (before 6.8: write-protects
// it, so that the first write does).  Only a present page of this
// process's own (not shared with a child since fork) is sampled.
//
// len kUnitSize: the whole unit, as one (see hide_dram_unit).
bool hide_dram_page(unit &u, size_t idx, uintptr_t page, size_t len = kPageSize) {
  if (g_ndram == kMaxDram || (g_ndram > 0 && g_dram[g_ndram - 1].page >= page)) return false;
  const uint64_t e = g_pagemap.entry(page);
  if (!(e & kPresent) || !(e & kExclusive) || (e & kFile)) return false;
  const int fd = faults_fd();
  fault_sample &s = g_dram[g_ndram];
  s.page = page;
  s.side = len == kPageSize ? reinterpret_cast<uintptr_t>(g_side + g_ndram * kPageSize)
                            : reinterpret_cast<uintptr_t>(g_side_whole + g_nwhole * kUnitSize);
  s.unit = static_cast<uint32_t>(idx);
  s.len = static_cast<uint32_t>(len);
  s.back = 0;
  s.out_ns = sys::mono_ns();
  s.touch_ns.store(0, std::memory_order_relaxed);
  s.written.store(0, std::memory_order_relaxed);
  s.ptid = 0;
  s.answered_ns = 0;
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
  s.settled = false;
  const uint64_t mode = by_move ? UFFDIO_REGISTER_MODE_MISSING : UFFDIO_REGISTER_MODE_WP;
  if (sys::uffd::register_range(fd, reinterpret_cast<void *>(page), len, mode) < 0) return false;
  // Published before the page goes, and no fault answered until it is out
  // (or back): a fault on it then finds its entry, and the page at the side.
  faults_moveout_begin();
  s.state.store(kSampleOut, std::memory_order_release);
  faults_samples_publish(g_dram, g_ndram);
  long r = by_move ? move_out(fd, reinterpret_cast<void *>(s.side), page, len)
                   : sys::uffd::write_protect(fd, reinterpret_cast<void *>(page), len, true);
  // Not movable now (shared with a child since fork, pinned, ...).
  if (r < 0) s.state.store(0, std::memory_order_release);
  faults_moveout_end();
  if (r < 0) {
    sys::uffd::unregister_range(fd, reinterpret_cast<void *>(page), len);
    return false;
  }
  if (len != kPageSize) ++g_nwhole;
  // A unit moved out is out from now, not from before the registration:
  // registering the range (the address space's write lock, a mapping
  // split) and the move took about a millisecond for the first unit of a
  // window on this VM (30-50 us for the next ones), in which the program
  // could not reach the unit.  Counted as time out, the first hot unit's
  // first touch came 1.2-1.4 ms after it went out instead of 30-250 us, and
  // read as untouched; the first units of a window are those at the heap's
  // low end, so a hot set at the start of the heap was demoted first.  An
  // access during the move is read before this and counts at once.
  // Write-protected in place (before 6.8) the time still counts from before
  // the registration: there (the 6.1 guest, where protecting a unit is
  // slow) the later start gives a cold unit's chance write the whole window
  // to count in, and after a move the old hot set kept its heat for tens
  // of seconds in more runs; a whole sample's chance of a touch is not
  // subtracted yet (docs/BENCHMARKS.md, "The start mended").
  if (by_move) s.out_ns = sys::mono_ns();
  u.sample = 1;
  return true;
}

// A unit sampled whole, as one page: a unit mapped by one huge page, which
// hiding one of its small pages would split for good (and with it the
// fork's and the TLB's gain: a snapshot's pause grows by the page-table
// entries), or, where pages are write-protected in place (before 6.8), any
// unit whose pages are all in use (one call and one TLB flush, and a huge
// page stays whole).  Whether the page is huge is asked of PAGEMAP_SCAN;
// where it cannot say, units are sampled by pages.  See whole_touched for
// what such a sample counts as.
bool hide_dram_unit(unit &u, size_t idx) {
  // DRAM only: a slow node's units (anonymous too) are where the tracker
  // screens for hot units page by page, and they are not the ones whose
  // huge pages a snapshot's fork or the TLB gain from.
  if (unit_tier(u) != kTierDram || u.live != kPagesPerUnit) return false;
  const uintptr_t at = unit_addr(idx);
  if (faults_can_move() && (!g_side_whole || g_nwhole == kMaxWhole || g_pagemap.huge(at, kUnitSize) != 1))
    return false;
  return hide_dram_page(u, idx, at, kUnitSize);
}

}  // namespace

sys::pagemap_file &heap_pagemap() { return g_pagemap; }

void heap_sample_whole_any_touch(bool on) {
  heap_lock_guard g;
  g_whole_any_touch = on;
}

void heap_sample_whole_limit(uint64_t ns) {
  heap_lock_guard g;
  g_whole_limit_ns = ns;
}

uint64_t heap_sample_whole_allowance() {
  heap_lock_guard g;
  const uint64_t clear = g_huge_clear_ns == UINT64_MAX ? 0 : g_huge_clear_ns;
  return g_allowance_ns + clear;
}

size_t heap_sample_begin(const uint32_t *units, const uint8_t *pages, size_t n, uint64_t seed, uint32_t pmem_span) {
  heap_lock_guard g;
  g_pagemap.check_owner();
  if (g_open) end_locked(nullptr, 0, nullptr);
  const bool dram_ok = side_ready();
  // The seed mixed first: the shift generator's first outputs from a small
  // seed have even low bits, so the first unit of a window would only ever
  // get even blocks and spans.
  uint64_t rnd = mix64(seed ^ 0x9e3779b97f4a7c15ull) | 1;
  const size_t span = span_pages(pmem_span);
  size_t started = 0;
  // Anonymous units (DRAM, and both node tiers) are sampled through the
  // fault service; a file's pages by unmapping them.  The files' first:
  // each unmapping is a TLB shootdown, which on a virtual machine stalls
  // the program's threads for tens of microseconds, and a whole unit
  // hidden before hundreds of them (units are asked in address order) is
  // reached by a hot thread only as they let it.  So the anonymous samples
  // go out last, still in ascending order, as the fault service's table
  // needs (one run of the four 'start' cells of docs/BENCHMARKS.md, with
  // and without: 4, 20, 2, 2 s against 8, 11, 4, 17 s to 95 %).
  for (int pass = 0; pass < 2; ++pass)
  for (size_t k = 0; k < n; ++k) {
    const size_t idx = units[k];
    if (!heap_unit_movable(idx)) continue;
    unit &u = g_heap.units[idx];
    const int t = unit_tier(u);
    const bool anon = t == kTierDram || g_mgr.tiers[t].anonymous;
    if (anon != (pass == 1)) continue;
    if (anon && !dram_ok) continue;
    if (anon && hide_dram_unit(u, idx)) {
      ++started;
      continue;
    }
    const size_t want = pages[k] < 1 ? 1 : pages[k] > kMaxPagesPerUnit ? kMaxPagesPerUnit : pages[k];
    size_t picks[kMaxPagesPerUnit];
    // A unit without a whole live span is sampled a page at a time.
    size_t len = anon ? 1 : span;
    size_t npicks = len > 1 ? pick_spans(u, want, len, rnd, picks) : 0;
    if (npicks == 0) {
      len = 1;
      npicks = pick_pages(u, want, rnd, picks);
    }
    for (size_t j = 0; j < npicks; ++j) {
      const uintptr_t page = reinterpret_cast<uintptr_t>(page_addr(idx, picks[j]));
      if (anon ? hide_dram_page(u, idx, page) : hide_pmem_pages(u, idx, page, len)) ++started;
    }
  }
  // What whole samples are judged with, once any went out.  Each one's
  // time out is its own (whole_touched), less the time these measurements
  // take: the sampler's, not the program's, time to touch it.
  if (g_nwhole) {
    const uint64_t t0 = sys::mono_ns();
    if (faults_can_move() && g_huge_clear_ns == UINT64_MAX) measure_huge_clear();
    measure_allowance();
    const uint64_t took = sys::mono_ns() - t0;
    for (size_t i = 0; i < g_ndram; ++i)
      if (g_dram[i].len != kPageSize) g_dram[i].out_ns += took;
  }
  g_open = true;
  ++g_counters.windows;
  g_counters.samples += started;
  return started;
}

size_t heap_sample_end(sample_result *out, size_t cap) {
  // Only the mover opens and ends windows: g_open and the table hold still.
  const bool answered = g_open && service_caught_up();
  heap_lock_guard g;
  g_pagemap.check_owner();
  size_t n = 0;
  if (g_open) end_locked(out, cap, &n, answered);
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
