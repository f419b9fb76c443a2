// The software tracker: which units to watch in each sampling window, and
// what a window's results mean, on machines without a PMU.  The mechanism
// (hiding pages and seeing whether they were touched) is the heap's
// (heap/sample.h); the rules are here, free of the heap, so each can be
// tested alone with made-up unit lists and results:
//
//   - Rotation.  Each window watches an adaptive number of PMem units and
//     an eighth as many DRAM units (at least 2, at most kDramPerScan),
//     taken from the list of movable units in a spread rotation: step k
//     visits entry (k * stride) mod n, with a stride about n / phi and
//     coprime with n.  Every unit is watched once per n steps, whatever
//     the heap's size, and the units of one window lie spread over the
//     whole heap, so a hot region is met within a window or two wherever
//     it lies (units taken in address order would reach it only when the
//     cursor gets there: many seconds on a large heap).
//   - Screening and confirmation.  A PMem unit is watched with one page; a
//     one-page sample of a cold unit is touched by chance now and then, so
//     a PMem unit found touched becomes a suspect and is watched again in
//     the next window with kConfirmPages pages before the policy hears of
//     it (four touched pages by chance are rare).
//     A confirmation that is neither (some pages touched, fewer than
//     half) is watched once more, and the policy hears the two as one
//     observation of eight pages: a hot page goes untouched through a
//     window now and then (a fifth of them at 8 M updates a second over a
//     164 MiB hot set), and a hot unit the policy heard of at one page of
//     four scored too low to move and was left to the rotation (16 s at
//     16 GiB); a second look 100 ms later would count for little, the
//     policy weighing an observation by the time since the unit's last.
//   - Neighbours.  Hot data is usually contiguous: the PMem units within
//     kNeighbourReach of a confirmed hot unit become suspects too, ahead of
//     the rotation, so a hot region is walked kNeighbourReach units a
//     window at each end while searching (one unit once steady: a hot unit
//     that cannot move up, DRAM full of hotter ones, would otherwise keep
//     its neighbours watched with four pages each, window after window).
//     Suspects are at most half a window's PMem units, so that the cost
//     rule governs them too; while searching, neighbours that do not fit
//     in the next window wait in a frontier (at most kFrontierMax, first
//     in first out) and fill later windows' room for suspects after the
//     screening hits, so the walk along a hot region goes on until it
//     meets cold units at both ends.  Without
//     it, a window that confirmed several hot units dropped most of their
//     neighbours, the walk stopped there, and the rest of the region
//     waited for the rotation (measured: 16 GiB, a 164 MiB hot set, 14 of
//     its 82 units, in a gap and at its end, not found within 15 s).
//   - Cost.  Hiding a page costs the mover a system call or two (a TLB
//     shootdown each) and the application a refault or a round trip to the
//     fault service when the page is touched.  After each scan that moved
//     nothing, the number of PMem units per window shrinks by a quarter
//     when tracking took more than its share of the scan interval, and
//     grows by a quarter below three fifths of it.
//   - Searching and steady.  The share is kCpuSearch while a hot set is
//     being found: from the start, and again after a burst of promotions
//     (kSearchBurst within kBurstScans scans), until one whole rotation
//     has passed with no such burst or kQuietScans scans with no promotion
//     at all (the hot set is in); then kCpuSteady.  So a large heap is
//     gone over in seconds when a hot set appears (at the start, or when
//     it moves: the first units of it met at the steady rate move, and the
//     search is on), and costs little once its placement holds.  A lone
//     promotion (a cold unit that sampling noise made look warm) starts no
//     search, unless it is the first after kQuietScans scans without one:
//     a program that spent minutes setting up (writing a heap of 16 GiB,
//     say) has put the tracker at its steady rate and the mover at its
//     longest interval, and a burst at that rate took 9 s to come (16 GiB,
//     a 1 % hot set); the first promotion after the quiet spell starts
//     the search at once.
//   - Background and window.  How often a cold page is touched within a
//     window depends on the workload, not on the heap: a thread making
//     tens of millions of updates a second over a small heap touches its
//     cold pages every few milliseconds, one touching a large hot set
//     thinly leaves its hot pages untouched for longer than a window.  The
//     share of screening samples (one page of a PMem unit from the
//     rotation, mostly cold units) found touched is kept as a smoothed
//     background, and every observation carries it as its chance share:
//     the policy counts only what was touched above it (policy.h), so a
//     cold unit confirmed on four pages by chance is not worth an
//     exchange.  And the window adapts, the way DAMON adapts its sampling
//     to what it sees: shorter while the background is above
//     kBackgroundHigh (chance touches drown the signal), back towards the
//     base window while it is below kBackgroundLow, between 1/8 and
//     kWindowMaxEighths/8 of the base.  Outside that band the next window
//     is the one that would see kBackgroundAim if pages were touched at
//     steady rates (a quarter to twice the last one per step), so a
//     workload that turns busy is met at the right window within a step
//     or two.  Not longer than the base: a longer window lets cold units
//     show two or three of four pages touched by chance (measured: 1.8
//     times the promotions and 3-5 times the mover's CPU at 4-8 GiB,
//     uniform), a noise the subtraction of a mean does not remove.  Where
//     the hot set itself is a large share of the PMem units, the
//     background stays high at any window (hot pages are touched
//     within any of them) and the window sits at its floor.  The window
//     is sleep, not work: the pages hidden per scan, and so the cost rule,
//     do not depend on it.
//   - Span.  Where even the base window sees next to nothing (a workload
//     that touches its pages a few times a second: a program slowed down
//     by its own I/O, or a large hot set spread thinly), a longer window
//     would not do (above), but a wider sample does: a PMem sample becomes
//     a span of kPmemSpanMin..kPmemSpanMax neighbouring pages, unmapped by
//     one call (one TLB shootdown, as for one page) and touched when any of
//     them is (heap/sample.h).  It doubles, once the window is at its
//     base, where the background the wider span would see (pages taken as
//     touched independently, the share at this span counted over all its
//     windows with one hit more than seen) is below half kBackgroundLow,
//     and halves while the smoothed background is above kBackgroundLow.
//     The margin and the count matter: a span that is too wide makes cold
//     units look warm (a 16 GiB heap whose cold pages show 0.5 % at one
//     page: a span of 16 widened on a few quiet windows made ten exchanges
//     of cold units and tripled the steady CPU).  A confirmation takes
//     kConfirmPages spans, at the widest the whole unit; a unit without a
//     whole live span is sampled a page at a time.  Measured on a 16 GiB heap
//     whose PMem tier is a file on ext4, written back while the program
//     runs (20 thousand updates a second, its 82 hot units each touched
//     about 220 times a second): with one page a hot unit showed in one
//     window of 200, nothing was promoted in 40 s; see docs/BENCHMARKS.md.
#pragma once

#include "heap/sample.h"
#include "track/observation.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

// The rotation's stride for a list of n entries (spread_stride(n) and n
// are coprime).
size_t spread_stride(size_t n);

class software_tracker {
 public:
  static constexpr size_t kDramPerScan = 32;
  static constexpr size_t kMaxSuspects = 64;
  static constexpr size_t kFrontierMax = 256;
  static constexpr size_t kMaxHeld = 32;  // undecided confirmations watched again
  static constexpr uint32_t kNeighbourReach = 4;
  static constexpr uint8_t kConfirmPages = 4;
  static constexpr size_t kPmemMin = 16, kPmemMax = 2048, kPmemStart = 64;
  static constexpr double kCpuSteady = 0.02, kCpuSearch = 0.06;
  static constexpr uint32_t kSearchBurst = 4, kBurstScans = 8, kQuietScans = 20;
  static constexpr double kBackgroundLow = 0.05, kBackgroundHigh = 0.25, kBackgroundAim = 0.12;
  static constexpr uint32_t kWindowMaxEighths = 8;
  // Screening samples a window needs for its share to count.
  static constexpr size_t kBackgroundMinSamples = 8;
  // Units one window watches at most (and results it can give).
  static constexpr size_t kChosenMax = kPmemMax + kDramPerScan + kMaxSuspects;

  // Step "choose": the units to watch in the next window (ascending, each
  // once) with the pages to hide in each; returns how many (<= cap).
  size_t choose(const unit_list &listed, uint32_t *units, uint8_t *pages, size_t cap);

  // Step "observe": a window's results (heap_sample_end) as observations
  // for the policy, written to out (<= cap); screening hits are held back
  // as suspects for the next window.  *touched: pages found touched.
  size_t observe(const sample_result *results, size_t n, const unit_list &listed, access_observation *out,
                 size_t cap, size_t *touched);

  // The cost rule: a scan's tracking took spent_ns (both threads) of an
  // interval of interval_ns.  Scans that moved data say nothing about
  // tracking's cost (the fault service is busy with the moves): not called
  // for them.
  void account(uint64_t spent_ns, uint64_t interval_ns);

  // Each scan's promotions (0 too); kSearchBurst of them within the last
  // kBurstScans scans start a search of one whole rotation.
  void promoted(size_t n);
  // Whether a hot set is being found (the share is kCpuSearch).
  bool searching() const { return steps_since_burst_ < listed_ && scans_since_promotion_ < kQuietScans; }

  // The next window's length for a base window of base_ns.
  uint64_t window_ns(uint64_t base_ns) const { return base_ns * window_eighths_ / 8; }
  // The next window's pages per PMem sample (heap_sample_begin's span).
  uint32_t pmem_span() const { return span_; }
  // Whether PMem samples can be spans at all (not where the PMem tier is a
  // NUMA node: its units are anonymous, sampled a page at a time as DRAM's).
  void allow_spans(bool on) {
    spans_ = on;
    if (on) return;
    span_ = 1;
    span_screened_ = span_hits_ = 0;
  }
  // The smoothed share of screening samples found touched (0 before any).
  double background() const { return background_; }

  size_t pmem_per_scan() const { return pmem_per_scan_; }
  size_t dram_per_scan() const;
  size_t suspects(const uint32_t **out) const {
    *out = suspects_;
    return nsuspects_;
  }
  size_t frontier() const { return nfrontier_; }

 private:
  bool suspected(uint32_t unit) const;
  size_t suspect_cap() const;
  // Makes unit a suspect of the next window; false if there is no room.
  bool suspect(uint32_t unit);
  void suspect_neighbours(uint32_t unit, const unit_list &listed);

  double smoothed_background(size_t screened, size_t hits);
  void adapt_window(size_t screened, size_t hits);
  bool adapt_span(size_t screened, size_t hits);

  size_t pmem_per_scan_ = kPmemStart;
  double background_ = 0;
  bool background_known_ = false;
  uint32_t window_eighths_ = 8;
  uint32_t span_ = 1;
  bool spans_ = true;
  size_t span_screened_ = 0, span_hits_ = 0;  // screening at this span and the base window
  // Suspects from the frontier while there is room, oldest first.
  void take_frontier(const unit_list &listed);

  uint32_t suspects_[kMaxSuspects] = {};
  size_t nsuspects_ = 0;
  uint32_t frontier_[kFrontierMax] = {};  // in order of arrival
  struct held_confirmation {
    uint32_t unit;
    uint16_t sampled, touched, written;
  };
  held_confirmation held_[kMaxHeld] = {};  // undecided, watched again in the next window
  size_t nheld_ = 0;
  size_t nfrontier_ = 0;
  size_t cursor_pmem_ = 0, cursor_dram_ = 0;
  // Entries of the list the PMem rotation went over since the last burst
  // of promotions, and the list's length: searching until the one reaches
  // the other.
  size_t steps_since_burst_ = 0, listed_ = 1;
  uint32_t recent_[kBurstScans] = {};  // promotions of the last scans, a ring
  size_t recent_at_ = 0;
  uint32_t scans_since_promotion_ = 0;  // from the start: no promotion yet is no reason to stop
};

}  // namespace mmtier::detail
