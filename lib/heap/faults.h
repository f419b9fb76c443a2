// Fault service: the process's one userfaultfd and the thread that answers
// it.  Units that are being sampled or moved between tiers are registered
// with it for as long as that lasts; an access to a page the service holds
// (by an application thread, or by the kernel inside a system call) waits in
// the kernel until the service has put the right contents there, so no
// access ever fails, sees a half-moved page, or raises a signal.
//
// What a fault is answered with:
//   - a sampled page (moved out to a side page by UFFDIO_MOVE): moved back,
//     and the sample counts as touched;
//   - a page inside the post-copy window (a unit being promoted): copied in
//     from the window's source;
//   - a write-protect fault (a unit being demoted), or a missing page inside
//     the hold window: not answered; the mover wakes every waiter once the
//     unit is on its new tier;
//   - any other missing page of a registered range (never touched before):
//     the zero page, or a zeroed page for a write.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

// Opens the userfaultfd and starts the handler thread, once per process (and
// again in a child after fork).  False if the kernel offers no userfaultfd
// with the features needed; the reason is logged once.
[[nodiscard]] bool faults_start();
// Returns once no faults_start() is under way: the userfaultfds it opens
// (the features probe, the service's own before it is guarded) are then
// closed or guarded.  What a snapshot's descriptor check waits for before
// it takes a userfaultfd for the program's own.
void faults_start_settle();
// The handler thread is running (a fault taken now is answered).
bool faults_serving();
bool faults_ready();
int faults_fd();
// Whether anonymous pages can be write-protected (Linux 5.7): demotion
// needs it.  Where pages that do not exist yet cannot be (before 6.4,
// faults_wp_unpopulated false), the unit is also registered for missing
// pages and a hold window keeps their faults waiting.
bool faults_can_demote();
bool faults_wp_unpopulated();
// Whether pages can be moved out and back (UFFD_FEATURE_MOVE, 6.8).
bool faults_can_move();
// Whether anonymous pages can be sampled: moved out and back, or (before
// 6.8) write-protected in place, which sees writes only.
bool faults_can_sample();

// Whether every fault taken so far has been answered: none unread on the
// descriptor, none in the service's hands or waiting for a retry.  A
// sample whose fault is still waiting looks untouched when its window
// ends; the sampler asks first (sample.cc, sample_result::idle).
bool faults_caught_up();

// What the kernel lacks (support/errors.h kLack* bits, after what
// MMTIER_HIDE_FEATURES hides); 0 before the service was first started.
uint32_t faults_kernel_lacks();

// The hold window (one at a time, the mover's): while open, missing faults
// in [addr, addr + len) are not answered; they wait for the mover's wake,
// as writes to write-protected pages do.
void faults_hold_open(void *addr, size_t len);
void faults_hold_close();

// The post-copy window (one at a time): while open, missing faults in
// [dst, dst + len) are filled from src + (address - dst).
void faults_postcopy_open(void *dst, const void *src, size_t len);
void faults_postcopy_close();

// A sampled anonymous page: moved out to side by the sampler, or (by_wp)
// write-protected where it is.
enum sample_state : uint8_t {
  kSampleOut = 1,      // at side; a fault moves it back
  kSampleTouched = 2,  // moved back by a fault
  kSampleBack = 3,     // moved back by the sampler, untouched
  kSampleMoving = 4,   // being moved back (by whoever took it from kSampleOut)
};
// A sample is one page, or a whole unit mapped by one huge page (len
// kUnitSize: moved out and back, or write-protected, as one page-table
// entry, so that sampling never splits it).
struct fault_sample {
  uintptr_t page;
  uintptr_t side;
  uint32_t unit;
  uint32_t len;                  // bytes: one page, or a whole unit
  uint32_t back;                 // bytes moved back so far (by whoever holds kSampleMoving)
  uint64_t out_ns;               // when it went out (sys::mono_ns)
  bool by_wp;                    // write-protected in place (before 6.8), not moved out
  bool settled;                  // back and unregistered by the sampler (never again: see settle_dram)
  std::atomic<uint8_t> state;
  std::atomic<uint8_t> written;  // the touching access was a write
  std::atomic<uint64_t> touch_ns;  // when the fault service read the first access (a retry keeps its first read)
  // Set before state becomes kSampleTouched by the fault service: the
  // thread whose access it answered (0: not known) and when it was back.
  uint32_t ptid;
  uint64_t answered_ns;
};
// Puts a sampled page back (the caller moved its state from kSampleOut to
// kSampleMoving): UFFDIO_MOVE, or a copy when the side page cannot move;
// a page write-protected in place is unprotected.
// -EAGAIN: try again later; other errors are logged (the data stays in the
// side page).  Wakes the page's waiters either way.
long faults_sample_restore(fault_sample &s);

// Publishes the sample table (sorted by page) the handler consults.  To
// change or reuse it, the sampler retracts it first; faults_samples_retract
// returns once the handler no longer reads it.
void faults_samples_publish(fault_sample *table, size_t n);
void faults_samples_retract();

// A sample going out.  The sampler calls faults_moveout_begin before its
// entry says kSampleOut (it returns once the fault service is answering
// nothing) and faults_moveout_end once the page is out, or back and the
// entry reset: meanwhile the service answers no missing-page fault (they
// wait for its next round).  A unit's move can take milliseconds (its huge
// page split, moved page by page): an answer then would move back part of
// what is still going out, or fill a hole the move has just made with
// zeros, and the put-back would find that page taken, the data left at
// the side.
void faults_moveout_begin();
void faults_moveout_end();

// Tests only (nullptr otherwise): called by the fault service before it
// reads its descriptor (where 0, page 0), before it fills a missing page
// that is no sample with zeros (where 1), before it copies a page of a
// unit being promoted from the promotion's view of its slot (where 2), and
// before it puts a sample touched back (where 3).
using faults_hook_fn = void (*)(int where, uintptr_t page);
extern std::atomic<faults_hook_fn> g_faults_test_hook;

struct fault_counters {
  uint64_t faults;           // page faults answered (all kinds)
  uint64_t sample_faults;    // sampled pages touched
  uint64_t postcopy_faults;  // pages copied in on demand during promotion
  uint64_t wp_faults;        // writes that waited for a demotion
  uint64_t cpu_ns;           // CPU time of the handler thread
};
void faults_counters_get(fault_counters *out);

// Changes whenever the service is (re)started: a range registered under an
// older generation is not registered any more.
uint64_t faults_generation();

// Registers the service's part of the quiesce sequence (rank
// kRankFaultsStart: starting the service, which allocates).  In a fork
// child the service is gone (no handler thread, and its mappings lost
// their registration); the child starts its own when it first needs one.
void faults_fork_register();

}  // namespace mmtier::detail
