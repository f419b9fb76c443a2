// Access sampling: which units are being used, without a PMU.  For each unit
// asked about, one present page is hidden for a window and the end of the
// window tells whether anything touched it:
//   - a page of a file-backed (PMem) unit is unmapped with MADV_DONTNEED (its
//     data stays in the file); any access maps it again, which pagemap shows.
//     The kernel does the refault: no handler, no signal, system calls work.
//     Where one page is touched too rarely to show, a run of them (a span)
//     goes out under the same call and shows any access to one of them.
//   - a page of an anonymous (DRAM) unit is moved to a side page with
//     UFFDIO_MOVE; an access faults to the fault service (faults.h), which
//     moves it back at once and records the access (and whether it wrote).
//   - a DRAM unit mapped by one transparent huge page is moved out whole,
//     as that one page-table entry (hiding one small page would split the
//     huge page for good); its first access within 1/512th of the window
//     counts as one page touched (sample.cc, whole_touched).  Before 6.8 a
//     DRAM unit whose pages are all in use is write-protected whole.
// Units frozen by fork or spilled are never sampled.  Any heap operation on a
// unit first settles its sample (the hidden page comes back), so nothing else
// in the heap ever sees a hidden page; fork settles all of them.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline constexpr size_t kMaxPagesPerUnit = 8;

struct sample_result {
  uint32_t unit;
  uint8_t tier;      // the unit's tier during the window
  uint8_t sampled;   // pages hidden
  uint8_t touched;   // of those, touched in the window
  uint8_t written;   // of those, first touched by a write (DRAM samples only)
  // A unit sampled whole that nothing touched at any time in the window
  // (before 6.8: nothing wrote to), early or late: the strongest sign of a
  // cold unit a window gives (a late access is not counted touched, but
  // shows the unit in use).
  uint8_t idle = 0;
};

// Starts a window over units[0..n) (ascending unit indices), hiding
// pages[i] samples (1..kMaxPagesPerUnit, in different 64 KiB blocks: a read
// refault maps its 64 KiB neighbourhood) of unit i.  A sample of a file's
// (PMem) unit is pmem_span pages from a span-aligned page, unmapped with
// one call and counted touched when any of them is: 1, or a power of two
// from kPmemSpanMin to kPmemSpanMax (other values are rounded down to one);
// what a workload that touches its pages too thinly for one page to show
// within a window still shows (software_tracker.h).  Returns the samples
// hidden (a unit with no suitable page is skipped).  A window already open
// is ended first and its results dropped.
inline constexpr uint32_t kPmemSpanMin = 16, kPmemSpanMax = 128;
size_t heap_sample_begin(const uint32_t *units, const uint8_t *pages, size_t n, uint64_t seed,
                         uint32_t pmem_span = 1);

// Ends the window: every hidden page is back, out[] gets one result per
// unit sampled (up to cap).  Returns the count.
size_t heap_sample_end(sample_result *out, size_t cap);

// For tests: while on, a unit sampled whole counts as touched by any access
// in the window, not only one the fault service saw soon enough (see
// whole_touched in sample.cc): a result that does not depend on when the
// service got to run.
void heap_sample_whole_any_touch(bool on);
// For tests: a unit sampled whole counts as touched when its toucher's
// running time from the unit's going out to the first touch (its waits
// for the service on other samples of the window left out) is at most ns;
// 0 (the default): at most a 512th of the window and the allowance.  A
// wide limit makes a result about what is counted as waiting, not about a
// loaded machine's scheduling.
void heap_sample_whole_limit(uint64_t ns);
// For tests: what a whole sample's first touch is allowed beyond a 512th
// of the window in the window now open (the service's answering time as
// last measured, and a huge page's clearing), in ns.
uint64_t heap_sample_whole_allowance();

// --- for the heap layer's other files (heap lock held)
void sample_settle_unit_locked(size_t idx);
void sample_settle_all_locked();
void sample_fork_child();
// In a restored process: as in a fork child, and the pagemap descriptor is
// the dead original's.
void sample_restored();

}  // namespace mmtier::detail
