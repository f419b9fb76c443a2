// PMU access tracker: data addresses sampled by the hardware (Intel PEBS,
// AMD IBS) through perf_event_open, read from perf ring buffers and turned
// into per-unit read/write counts for the policy.  Used automatically where
// the PMU supports it; where it does not (VMs without a PMU, like the
// machines this is developed on), open() says so with a reason and the
// software tracker is used instead.
//
// This file is the live tracker: it opens the events on the process's
// threads (pmu_tracker), follows which threads they cover (pmu_threads)
// and drains the rings.  The events it opens are chosen in pmu_events.h,
// the rings are parsed by pmu_ring.h, and pmu_counts.h adds the samples up
// per unit.
//
// Threads.  perf refuses to mmap an inherited per-task event opened on all
// CPUs (pid, cpu = -1, inherit = 1: EINVAL), and per-thread events cannot
// share a ring.  So, as `perf record` does for a workload: one event per
// (thread, CPU, kind) with inherit = 1, and per CPU one ring buffer that
// every event on that CPU writes to (PERF_EVENT_IOC_SET_OUTPUT).  Threads
// created later by a monitored thread inherit the events (inherit_thread: not
// fork children; remove_on_exec: not after exec; both Linux 5.13+, dropped on
// older kernels, where samples of other processes are filtered out by pid).
// open() attaches to every thread alive at that moment (normally just the
// main thread when the library starts).  A thread that was not created by a
// monitored thread (it raced with open()) is found by refresh(), which lists
// /proc/self/task: the events carry attr.task, so the ring reports a FORK
// record for every covered thread, and a thread seen in two consecutive
// scans without one gets its own events.  Events opened on a thread are
// never closed before close(): closing them would end the sampling of the
// threads that inherited them.  Cost: CPUs x kinds descriptors per root
// thread (128 on a 64-CPU Intel machine started with one thread), at most
// kPmuMaxEvents; one ring of ring_pages pages per CPU.
//
// Availability.  open() reads sysfs first: no PEBS/IBS events listed and a
// plain cycles counter refused gives no_pmu (this machine: ENOENT); cycles
// counting but no memory events gives unsupported_event.  Then each event
// kind is probed on the calling thread, falling back from kernel+user to
// user-only sampling (perf_event_paranoid >= 2), from the 5.13 flags to none
// and down the precise levels; the reason names the last errno and the
// paranoid level.  A kind that cannot be opened is dropped; with none left
// open() fails.  Nothing aborts.
//
// Fork: the ring mappings are not inherited (perf maps them VM_DONTCOPY);
// the child calls forget_after_fork(), which closes its copies of the
// descriptors and touches no mapping.
//
// Threading: a tracker is driven by one thread (the background thread),
// which also calls close() (there is no destructor: a global tracker must
// not be torn down under that thread at exit).  Nothing here allocates, and
// every system call goes through sys::raw.
#pragma once

#include "track/pmu_events.h"
#include "track/pmu_ring.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline constexpr size_t kPmuMaxEvents = 1024;   // perf descriptors at most
inline constexpr size_t kPmuMaxThreads = 4096;  // threads the coverage set follows
inline constexpr size_t kPmuMaxIgnoredTids = 8;

// --- which threads the events cover (see "Threads" above)

class pmu_threads {
 public:
  void reset() { n_ = 0; }
  // The thread has events: attached as a root, or a FORK record was seen.
  void covered(uint32_t tid, uint64_t time);
  // An EXIT record: forgotten, unless it is older than the entry (the tid
  // was reused and the new thread's FORK was read first).
  void exited(uint32_t tid, uint64_t time);
  // One scan of the live threads tids[0..n): threads gone are forgotten; a
  // thread seen for the first time without cover becomes pending; a thread
  // still pending since the previous scan is written to attach[] (up to
  // cap; the caller attaches it and calls covered()).  Returns how many.
  size_t scan(const uint32_t *tids, size_t n, uint32_t *attach, size_t cap);
  bool is_covered(uint32_t tid) const;
  bool is_pending(uint32_t tid) const;
  size_t size() const { return n_; }

 private:
  size_t find(uint32_t tid) const;  // index of tid or of where it goes
  bool insert_at(size_t i, uint32_t tid, uint8_t state, uint64_t time);
  void erase_at(size_t i);

  uint32_t tid_[kPmuMaxThreads]{};
  uint64_t time_[kPmuMaxThreads]{};
  uint8_t state_[kPmuMaxThreads]{};
  size_t n_ = 0;
};

// --- the live tracker

class pmu_tracker {
 public:
  constexpr pmu_tracker() = default;
  pmu_tracker(const pmu_tracker &) = delete;
  pmu_tracker &operator=(const pmu_tracker &) = delete;

  // Opens the events for this process (see the top of this file).  Never
  // aborts: any failure closes what was opened and returns the status, with
  // reason() saying why in one line.
  pmu_status open(const pmu_params &p);
  pmu_status status() const { return status_; }
  const char *reason() const { return reason_; }
  bool is_open() const { return status_ == pmu_status::ok; }
  pmu_vendor vendor() const { return plan_.vendor; }
  size_t cpus() const { return nrings_; }

  // Consumes every ring; calls sink.sample for each access in the managed
  // range (and sink.task for FORK/EXIT).  Returns the samples delivered.
  size_t drain(const pmu_sink &sink);
  // Lists this process's threads and gives events to those the inherited
  // events do not cover (call after drain(), once per scan).  Returns the
  // threads attached.
  size_t refresh();
  // Samples of this thread (e.g. the migration thread) are dropped.  Call
  // it from the driving thread, like drain().
  void ignore_tid(uint32_t tid);

  const pmu_stats &stats() const { return stats_; }
  void close();
  // In a fork child: closes the inherited descriptors, leaves the (not
  // inherited) mappings alone.
  void forget_after_fork();

 private:
  struct ring_slot {
    int cpu;
    int fd;
    void *map;
    size_t len;
  };
  struct fd_slot {
    int fd;
    int cpu;
    uint32_t tid;
  };
  struct attempt {
    bool modern;     // inherit_thread, remove_on_exec, use_clockid
    bool user_only;  // exclude_kernel
    uint8_t precise;
  };

  pmu_status fail(pmu_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
  long open_event(const pmu_event_spec &s, size_t spec_index, const attempt &a, uint32_t tid,
                  int cpu, int group, bool aux);
  pmu_status probe(uint32_t tid);
  int attach(uint32_t tid, bool first);
  ring_slot *ring_for(int cpu);
  bool add_fd(int fd, int cpu, uint32_t tid);
  void add_id(uint64_t id, pmu_kind kind);
  static void on_task(void *self, bool exit, uint32_t pid, uint32_t tid, uint64_t time);
  void release(bool unmap);

  pmu_params params_{};
  pmu_plan plan_{};
  pmu_status status_ = pmu_status::closed;
  char reason_[320] = "not opened";
  attempt chosen_[kPmuMaxSpecs]{};
  uint32_t pid_ = 0;
  uintptr_t base_ = 0;
  size_t size_ = 0;
  uint32_t ring_pages_ = 0;
  ring_slot rings_[kPmuMaxCpus]{};
  size_t nrings_ = 0;
  fd_slot fds_[kPmuMaxEvents]{};
  size_t nfds_ = 0;
  pmu_event_id ids_[kPmuMaxEvents]{};
  size_t nids_ = 0;
  uint32_t ignore_[kPmuMaxIgnoredTids]{};
  size_t nignore_ = 0;
  pmu_threads threads_{};
  pmu_stats stats_{};
};

}  // namespace mmtier::detail
