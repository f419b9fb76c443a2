// PMU access tracker: data addresses sampled by the hardware (Intel PEBS,
// AMD IBS) through perf_event_open, read from perf ring buffers and turned
// into per-unit read/write counts for the policy.  Used automatically where
// the PMU supports it; where it does not (VMs without a PMU, like the
// machines this is developed on), open() says so with a reason and the
// software tracker is used instead.
//
// Events (chosen from sysfs, so each CPU model gets the encoding its kernel
// driver knows, the way `perf mem` does):
//   Intel   loads:  <pmu>/events/mem-loads, the PEBS load-latency event
//                   (MEM_TRANS_RETIRED.LOAD_LATENCY, 0x1cd on most cores)
//                   with ldlat = load_latency_cycles (default 64): only
//                   loads that took at least that long are counted, which
//                   keeps L1/L2 hits out and the samples on memory-level
//                   loads; gives the address, the latency (weight) and the
//                   data source.  Where the kernel lists mem-loads-aux
//                   (Sapphire Rapids and later) the event needs it as a
//                   counting group leader, which is opened too.
//           stores: <pmu>/events/mem-stores, the precise store event
//                   (MEM_INST_RETIRED.ALL_STORES, 0x82d0, since Skylake;
//                   older cores list their own precise-store encoding).
//                   Stores have no latency filter, hence a longer period.
//           Hybrid parts have cpu_core and cpu_atom PMUs; each gets its own
//           events on the CPUs listed in its `cpus` file.
//           precise_ip is tried from 3 down to 1: PEBS gives data addresses
//           at any precise level.
//   AMD     ibs_op (one event samples every kind of op; the kernel decodes
//           loads and stores into PERF_SAMPLE_ADDR/DATA_SRC/WEIGHT, Linux
//           6.1+), counting dispatched ops (cnt_ctl=1) and, on Zen 4+,
//           l3missonly=1 so that only ops that missed the L3 are sampled.
//           Per-task IBS needs Linux 6.2+.  IBS refuses exclude_* flags
//           unless the kernel lists the swfilt format (software filtering).
//   HeMem samples L3-miss load events that exist only on some server parts
//   (MEM_LOAD_L3_MISS_RETIRED.LOCAL_DRAM, MEM_LOAD_RETIRED.LOCAL_PMM) plus
//   ALL_STORES, system-wide; the load-latency event is the portable way to
//   the same "loads that reached memory" population.
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
// kPebsMaxEvents; one ring of ring_pages pages per CPU.
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
// Records.  sample_type is kPebsSampleType: IDENTIFIER (which event: load,
// store or IBS), TID (pid filter, the caller's tid filter), TIME (CLOCK_
// MONOTONIC with use_clockid), ADDR, WEIGHT (the latency in cycles, 0 when
// the hardware gives none) and DATA_SRC (whose mem_op says load or store;
// it decides over the event's kind).  PERF_RECORD_LOST, LOST_SAMPLES,
// THROTTLE and UNTHROTTLE are counted; FORK and EXIT drive the thread set;
// other records are skipped by their size.
//
// Ring protocol (pebs_parse_ring, the one parser the live tracker and the
// tests use): data_head is read with acquire ordering, every record in
// [data_tail, data_head) is consumed, then data_tail is stored with release
// ordering (the kernel does not overwrite unread data; the data reads are
// done before the store).  Positions are free-running 64-bit counters, the
// data area a power of two; a record may wrap past the end of the area and
// is copied out in two pieces.  A record whose size is smaller than its
// header or larger than what is left before data_head, or a head more than
// the area ahead of the tail, cannot be resynchronised: the rest of the ring
// is discarded (tail = head) and counted as corrupt.  Nothing is ever read
// outside the data area.
//
// Samples kept: the filter drops, in this order, samples of another pid,
// of an ignored tid, of an op that is neither load nor store, and outside
// the managed range; each drop has its counter.
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

#include "support/layout.h"

#include <linux/perf_event.h>

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline constexpr uint64_t kPebsSampleType = PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_TID |
                                            PERF_SAMPLE_TIME | PERF_SAMPLE_ADDR |
                                            PERF_SAMPLE_WEIGHT | PERF_SAMPLE_DATA_SRC;

inline constexpr size_t kPebsMaxCpus = 256;      // CPUs sampled at most
inline constexpr size_t kPebsMaxEvents = 1024;   // perf descriptors at most
inline constexpr size_t kPebsMaxSpecs = 4;       // (PMU, kind) pairs: hybrid x {load, store}
inline constexpr size_t kPebsMaxThreads = 4096;  // threads the coverage set follows
inline constexpr size_t kPebsMaxIgnoredTids = 8;

enum class pebs_status : uint8_t {
  ok,
  no_pmu,             // no hardware PMU at all, or none with PEBS/IBS
  no_permission,      // perf_event_paranoid / CAP_PERFMON, or the mlock limit
  unsupported_event,  // the PMU exists but refused the memory events
  no_kernel_support,  // perf_event_open does not exist (ENOSYS)
  out_of_resources,   // descriptors, memory, counters
  invalid_argument,   // no managed range, bad ring size, ...
  closed,             // not open (after close(), or never opened)
};
const char *pebs_status_name(pebs_status s);

enum class pebs_kind : uint8_t { load, store, mixed };
enum class pebs_vendor : uint8_t { none, intel, amd_ibs };

// One sample delivered to a sink: an access inside the managed range.
struct pebs_sample {
  uint64_t addr;
  uint64_t time;  // ns (CLOCK_MONOTONIC when use_clockid was accepted)
  uint32_t pid, tid;
  uint32_t weight;  // load latency in cycles, 0 if not available
  bool is_store;
};

struct pebs_sink {
  void (*sample)(void *ctx, const pebs_sample &s) = nullptr;
  // FORK (exit = false) or EXIT records of the filtered process (optional).
  void (*task)(void *ctx, bool exit, uint32_t pid, uint32_t tid, uint64_t time) = nullptr;
  void *ctx = nullptr;
};

// Counters, accumulated over every parse/drain.
struct pebs_stats {
  uint64_t records;           // records consumed
  uint64_t bytes;             // bytes consumed
  uint64_t samples;           // samples delivered to the sink
  uint64_t foreign;           // samples outside the managed range (address 0 included)
  uint64_t other_process;     // samples of another pid (fork children without inherit_thread)
  uint64_t ignored_tid;       // samples of an ignored thread
  uint64_t non_memory;        // samples of an op that was neither a load nor a store
  uint64_t malformed;         // records too short for their type (skipped by size)
  uint64_t lost;              // samples the kernel dropped, ring full (PERF_RECORD_LOST)
  uint64_t lost_records;      // PERF_RECORD_LOST records
  uint64_t lost_samples;      // samples the PMU dropped (PERF_RECORD_LOST_SAMPLES)
  uint64_t throttled;         // PERF_RECORD_THROTTLE
  uint64_t unthrottled;       // PERF_RECORD_UNTHROTTLE
  uint64_t forks, exits;      // PERF_RECORD_FORK / EXIT of the filtered process
  uint64_t unknown;           // other record types
  uint64_t corrupt;           // rings found corrupt (their unread rest was discarded)
  uint64_t threads_attached;  // threads given their own events by open()/refresh()
  uint64_t attach_failures;   // events that could not be opened for a thread
};

// Byte offsets of a sample's fields for a sample_type (from the start of the
// record, header included), -1 for fields not present.  valid is false when
// sample_type has a variable-size field (READ, CALLCHAIN, RAW, BRANCH_STACK,
// REGS_USER, STACK_USER) before WEIGHT/DATA_SRC, which this parser does not
// walk.
struct pebs_layout {
  bool valid;
  bool weight_struct;  // PERF_SAMPLE_WEIGHT_STRUCT: weight is var1_dw
  uint16_t min_size;   // bytes a sample needs up to its last field used
  int16_t id, pid_tid, time, addr, weight, data_src;
};
[[nodiscard]] pebs_layout pebs_layout_for(uint64_t sample_type);

struct pebs_event_id {
  uint64_t id;
  pebs_kind kind;
};

// What the parser keeps and how it classifies samples.
struct pebs_filter {
  pebs_layout layout{};
  uintptr_t base = 0;  // managed range [base, base + size)
  size_t size = 0;
  uint32_t pid = 0;                    // 0: any process
  const pebs_event_id *ids = nullptr;  // sorted by id; a sample's kind
  size_t nids = 0;
  pebs_kind default_kind = pebs_kind::mixed;  // no id, or an id not listed
  const uint32_t *ignore_tids = nullptr;
  size_t nignore = 0;
};

// A ring: the control page and the data area (a power of two of bytes).
struct pebs_ring_view {
  perf_event_mmap_page *meta = nullptr;
  const unsigned char *data = nullptr;
  uint64_t size = 0;
};

// The ring of a perf mapping of len bytes at map: the data area is at
// meta->data_offset / data_size, or (kernels before 4.1, where both are 0)
// right after the first page up to len.  False if they do not describe a
// power-of-two area inside the mapping.
[[nodiscard]] bool pebs_ring_from_mapping(void *map, size_t len, pebs_ring_view *out);

// Consumes every complete record in [data_tail, data_head), calls the sink
// for each sample the filter keeps, updates st and writes data_tail back.
// Returns the samples delivered.
size_t pebs_parse_ring(const pebs_ring_view &ring, const pebs_filter &f, const pebs_sink &sink,
                       pebs_stats *st);

// --- event selection from sysfs (a fake root in tests)

struct pebs_cpu_set {
  uint64_t bits[kPebsMaxCpus / 64] = {};
  bool has(int cpu) const {
    return cpu >= 0 && static_cast<size_t>(cpu) < kPebsMaxCpus &&
           (bits[cpu / 64] >> (cpu % 64) & 1) != 0;
  }
  void add(int cpu) {
    if (cpu >= 0 && static_cast<size_t>(cpu) < kPebsMaxCpus)
      bits[cpu / 64] |= uint64_t{1} << (cpu % 64);
  }
  size_t count() const;
};
// Parses a kernel CPU list ("0-3,8,10-11\n"); CPUs beyond kPebsMaxCpus are
// dropped.  False on a syntax error.
[[nodiscard]] bool pebs_parse_cpu_list(const char *s, pebs_cpu_set *out);

// Puts value into cfg[0..2] (config, config1, config2) as a sysfs format
// line describes it ("config:0-7", "config1:0-15", "config:0-7,32-35",
// "config:19"): bits spread over the ranges, lowest first.  False if the
// line is malformed or value does not fit.
[[nodiscard]] bool pebs_apply_format(const char *format, uint64_t value, uint64_t cfg[3]);

struct pebs_params {
  // Managed range; size 0: the heap's range (g_heap) at open().
  uintptr_t base = 0;
  size_t size = 0;
  // Intel: mem-loads period and latency threshold, mem-stores period.
  // Primes, so that sampling does not alias with loop strides.
  uint64_t load_period = 2003;
  uint32_t load_latency_cycles = 64;
  uint64_t store_period = 100003;
  // AMD IBS op: ops between samples (rounded down to a multiple of 16).
  uint64_t ibs_period = 65536;
  bool ibs_l3_miss_only = true;
  // Data pages per CPU ring (power of two); halved down to 1 when the
  // mlock limit refuses it.
  uint32_t ring_pages = 32;
  // Also sample accesses the kernel makes in system calls (needs
  // perf_event_paranoid <= 1 or CAP_PERFMON); falls back to user-only.
  bool sample_kernel = true;
  const char *sysfs_root = "/sys";
  // Events to open instead of the ones sysfs suggests (tests use software
  // page-fault events, which carry the fault address, to run the live path
  // on machines without a PMU).  Copied by open().
  const struct pebs_plan *plan = nullptr;
};

struct pebs_event_spec {
  pebs_kind kind;
  uint32_t type;       // PMU type (sysfs <pmu>/type)
  uint64_t config[3];  // config, config1, config2
  uint64_t period;
  uint8_t max_precise, min_precise;
  bool exclude_ok;  // the PMU accepts exclude_* flags
  bool aux_leader;  // needs a counting mem-loads-aux group leader
  uint64_t aux_config[3];
  pebs_cpu_set cpus;  // CPUs this PMU covers
  char pmu[16];
};

struct pebs_plan {
  pebs_vendor vendor;
  uint32_t n;
  pebs_event_spec ev[kPebsMaxSpecs];
};

// Chooses the events from sysfs_root (see the top of this file).  ok, or
// no_pmu / unsupported_event with a reason in why.
pebs_status pebs_plan_events(const pebs_params &p, pebs_plan *out, char *why, size_t cap);

// --- which threads the events cover (see "Threads" above)

class pebs_threads {
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

  uint32_t tid_[kPebsMaxThreads]{};
  uint64_t time_[kPebsMaxThreads]{};
  uint8_t state_[kPebsMaxThreads]{};
  size_t n_ = 0;
};

// --- the live tracker

class pebs_tracker {
 public:
  constexpr pebs_tracker() = default;
  pebs_tracker(const pebs_tracker &) = delete;
  pebs_tracker &operator=(const pebs_tracker &) = delete;

  // Opens the events for this process (see the top of this file).  Never
  // aborts: any failure closes what was opened and returns the status, with
  // reason() saying why in one line.
  pebs_status open(const pebs_params &p);
  pebs_status status() const { return status_; }
  const char *reason() const { return reason_; }
  bool is_open() const { return status_ == pebs_status::ok; }
  pebs_vendor vendor() const { return plan_.vendor; }
  size_t cpus() const { return nrings_; }

  // Consumes every ring; calls sink.sample for each access in the managed
  // range (and sink.task for FORK/EXIT).  Returns the samples delivered.
  size_t drain(const pebs_sink &sink);
  // Lists this process's threads and gives events to those the inherited
  // events do not cover (call after drain(), once per scan).  Returns the
  // threads attached.
  size_t refresh();
  // Samples of this thread (e.g. the migration thread) are dropped.  Call
  // it from the driving thread, like drain().
  void ignore_tid(uint32_t tid);

  const pebs_stats &stats() const { return stats_; }
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

  pebs_status fail(pebs_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
  long open_event(const pebs_event_spec &s, size_t spec_index, const attempt &a, uint32_t tid,
                  int cpu, int group, bool aux);
  pebs_status probe(uint32_t tid);
  int attach(uint32_t tid, bool first);
  ring_slot *ring_for(int cpu);
  bool add_fd(int fd, int cpu, uint32_t tid);
  void add_id(uint64_t id, pebs_kind kind);
  static void on_task(void *self, bool exit, uint32_t pid, uint32_t tid, uint64_t time);
  void release(bool unmap);

  pebs_params params_{};
  pebs_plan plan_{};
  pebs_status status_ = pebs_status::closed;
  char reason_[320] = "not opened";
  attempt chosen_[kPebsMaxSpecs]{};
  uint32_t pid_ = 0;
  uintptr_t base_ = 0;
  size_t size_ = 0;
  uint32_t ring_pages_ = 0;
  ring_slot rings_[kPebsMaxCpus]{};
  size_t nrings_ = 0;
  fd_slot fds_[kPebsMaxEvents]{};
  size_t nfds_ = 0;
  pebs_event_id ids_[kPebsMaxEvents]{};
  size_t nids_ = 0;
  uint32_t ignore_[kPebsMaxIgnoredTids]{};
  size_t nignore_ = 0;
  pebs_threads threads_{};
  pebs_stats stats_{};
};

// --- per-unit counts for the policy

struct pebs_unit_count {
  uint32_t reads;
  uint32_t writes;
};

// One unit's access information in the policy's terms (the fields of
// policy_observation, whose tier and movable the caller adds): sampled is
// the scale, touched/sampled the unit's sample rate as a fraction of
// full_scale_per_sec (capped at 1), written/sampled the same for stores
// (written <= touched).  A unit with no samples is observed as idle
// (touched 0), not as "no information"; interval 0 gives sampled 0.
struct pebs_unit_observation {
  uint32_t unit;
  uint16_t sampled;
  uint16_t touched;
  uint16_t written;
};

struct pebs_scale {
  // Samples per second in one unit that count as "every page touched"
  // (score 1).  Roughly: the rate a unit of the hot set gets with the
  // default periods on a memory-bound thread.
  uint32_t full_scale_per_sec = 64;
  uint16_t sampled = static_cast<uint16_t>(kPagesPerUnit);
};

class pebs_unit_counts {
 public:
  static constexpr size_t storage_bytes(size_t max_units) {
    return max_units * (sizeof(pebs_unit_count) + sizeof(uint32_t));
  }
  // Counts for units [0, max_units) of the range starting at base (unit =
  // (addr - base) >> kUnitShift).  storage: storage_bytes(max_units) zeroed
  // bytes, 4-aligned, or nullptr to take them from meta_map.
  [[nodiscard]] bool init(uintptr_t base, size_t max_units, void *storage = nullptr);
  // The same for the heap's range (g_heap.base, g_heap.nunits units).
  [[nodiscard]] bool init_for_heap(void *storage = nullptr);

  void add(uint64_t addr, bool is_store);
  // A sink that adds every sample here (ctx = this).
  pebs_sink sink();

  pebs_unit_count count(uint32_t unit) const;
  size_t touched() const { return ntouched_; }  // units with samples since clear()
  uint32_t touched_unit(size_t i) const { return touched_[i]; }
  uint64_t outside() const { return outside_; }  // samples beyond max_units

  // The unit's observation for counts gathered over interval_ns.
  pebs_unit_observation observe(uint32_t unit, uint64_t interval_ns,
                                const pebs_scale &sc = {}) const;
  // Observations of every touched unit, in first-touch order; returns how
  // many were written (at most max).
  size_t emit(uint64_t interval_ns, pebs_unit_observation *out, size_t max,
              const pebs_scale &sc = {}) const;
  // Zeroes the touched units' counts (cost: the touched units).
  void clear();

 private:
  uintptr_t base_ = 0;
  size_t max_units_ = 0;
  pebs_unit_count *counts_ = nullptr;
  uint32_t *touched_ = nullptr;
  size_t ntouched_ = 0;
  uint64_t outside_ = 0;
};

}  // namespace mmtier::detail
