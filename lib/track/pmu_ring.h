// PMU sample records and the perf ring buffers they arrive in: what a
// sample record looks like (pmu_layout), the view of one ring, the parser
// that consumes it (pmu_parse_ring, shared by the live tracker in
// pmu_tracker.h and the tests), the filter that decides which samples are
// kept, and the sample/sink types every consumer of samples sees.
//
// Records.  sample_type is kPmuSampleType: IDENTIFIER (which event: load,
// store or IBS), TID (pid filter, the caller's tid filter), TIME (CLOCK_
// MONOTONIC with use_clockid), ADDR, WEIGHT (the latency in cycles, 0 when
// the hardware gives none) and DATA_SRC (whose mem_op says load or store;
// it decides over the event's kind).  PERF_RECORD_LOST, LOST_SAMPLES,
// THROTTLE and UNTHROTTLE are counted; FORK and EXIT drive the thread set;
// other records are skipped by their size.
//
// Ring protocol (pmu_parse_ring, the one parser the live tracker and the
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
#pragma once

#include <linux/perf_event.h>

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline constexpr uint64_t kPmuSampleType = PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_TID |
                                           PERF_SAMPLE_TIME | PERF_SAMPLE_ADDR |
                                           PERF_SAMPLE_WEIGHT | PERF_SAMPLE_DATA_SRC;

enum class pmu_kind : uint8_t { load, store, mixed };

// One sample delivered to a sink: an access inside the managed range.
struct pmu_sample {
  uint64_t addr;
  uint64_t time;  // ns (CLOCK_MONOTONIC when use_clockid was accepted)
  uint32_t pid, tid;
  uint32_t weight;  // load latency in cycles, 0 if not available
  bool is_store;
};

struct pmu_sink {
  void (*sample)(void *ctx, const pmu_sample &s) = nullptr;
  // FORK (exit = false) or EXIT records of the filtered process (optional).
  void (*task)(void *ctx, bool exit, uint32_t pid, uint32_t tid, uint64_t time) = nullptr;
  void *ctx = nullptr;
};

// Counters, accumulated over every parse/drain.
struct pmu_stats {
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
struct pmu_layout {
  bool valid;
  bool weight_struct;  // PERF_SAMPLE_WEIGHT_STRUCT: weight is var1_dw
  uint16_t min_size;   // bytes a sample needs up to its last field used
  int16_t id, pid_tid, time, addr, weight, data_src;
};
[[nodiscard]] pmu_layout pmu_layout_for(uint64_t sample_type);

struct pmu_event_id {
  uint64_t id;
  pmu_kind kind;
};

// What the parser keeps and how it classifies samples.
struct pmu_filter {
  pmu_layout layout{};
  uintptr_t base = 0;  // managed range [base, base + size)
  size_t size = 0;
  uint32_t pid = 0;                   // 0: any process
  const pmu_event_id *ids = nullptr;  // sorted by id; a sample's kind
  size_t nids = 0;
  pmu_kind default_kind = pmu_kind::mixed;  // no id, or an id not listed
  const uint32_t *ignore_tids = nullptr;
  size_t nignore = 0;
};

// A ring: the control page and the data area (a power of two of bytes).
struct pmu_ring_view {
  perf_event_mmap_page *meta = nullptr;
  const unsigned char *data = nullptr;
  uint64_t size = 0;
};

// The ring of a perf mapping of len bytes at map: the data area is at
// meta->data_offset / data_size, or (kernels before 4.1, where both are 0)
// right after the first page up to len.  False if they do not describe a
// power-of-two area inside the mapping.
[[nodiscard]] bool pmu_ring_from_mapping(void *map, size_t len, pmu_ring_view *out);

// Consumes every complete record in [data_tail, data_head), calls the sink
// for each sample the filter keeps, updates st and writes data_tail back.
// Returns the samples delivered.
size_t pmu_parse_ring(const pmu_ring_view &ring, const pmu_filter &f, const pmu_sink &sink,
                      pmu_stats *st);

}  // namespace mmtier::detail
