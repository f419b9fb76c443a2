// Which PMU events the tracker opens: the PMUs the kernel lists in sysfs
// (a fake root in tests), their CPU lists and format fields, and the plan
// built from them (pmu_plan_events): one event spec per (PMU, kind), with
// the encoding, period and precise levels to try.  Also the tracker's
// parameters and the status every step reports.
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
#pragma once

#include "track/pmu_ring.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline constexpr size_t kPmuMaxCpus = 256;  // CPUs sampled at most
inline constexpr size_t kPmuMaxSpecs = 4;   // (PMU, kind) pairs: hybrid x {load, store}

enum class pmu_status : uint8_t {
  ok,
  no_pmu,             // no hardware PMU at all, or none with PEBS/IBS
  no_permission,      // perf_event_paranoid / CAP_PERFMON, or the mlock limit
  unsupported_event,  // the PMU exists but refused the memory events
  no_kernel_support,  // perf_event_open does not exist (ENOSYS)
  out_of_resources,   // descriptors, memory, counters
  invalid_argument,   // no managed range, bad ring size, ...
  closed,             // not open (after close(), or never opened)
};
const char *pmu_status_name(pmu_status s);

enum class pmu_vendor : uint8_t { none, intel, amd_ibs };

struct pmu_cpu_set {
  uint64_t bits[kPmuMaxCpus / 64] = {};
  bool has(int cpu) const {
    return cpu >= 0 && static_cast<size_t>(cpu) < kPmuMaxCpus &&
           (bits[cpu / 64] >> (cpu % 64) & 1) != 0;
  }
  void add(int cpu) {
    if (cpu >= 0 && static_cast<size_t>(cpu) < kPmuMaxCpus)
      bits[cpu / 64] |= uint64_t{1} << (cpu % 64);
  }
  size_t count() const;
};
// Parses a kernel CPU list ("0-3,8,10-11\n"); CPUs beyond kPmuMaxCpus are
// dropped.  False on a syntax error.
[[nodiscard]] bool pmu_parse_cpu_list(const char *s, pmu_cpu_set *out);

// Puts value into cfg[0..2] (config, config1, config2) as a sysfs format
// line describes it ("config:0-7", "config1:0-15", "config:0-7,32-35",
// "config:19"): bits spread over the ranges, lowest first.  False if the
// line is malformed or value does not fit.
[[nodiscard]] bool pmu_apply_format(const char *format, uint64_t value, uint64_t cfg[3]);

struct pmu_params {
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
  const struct pmu_plan *plan = nullptr;
};

struct pmu_event_spec {
  pmu_kind kind;
  uint32_t type;       // PMU type (sysfs <pmu>/type)
  uint64_t config[3];  // config, config1, config2
  uint64_t period;
  uint8_t max_precise, min_precise;
  bool exclude_ok;  // the PMU accepts exclude_* flags
  bool aux_leader;  // needs a counting mem-loads-aux group leader
  uint64_t aux_config[3];
  pmu_cpu_set cpus;  // CPUs this PMU covers
  char pmu[16];
};

struct pmu_plan {
  pmu_vendor vendor;
  uint32_t n;
  pmu_event_spec ev[kPmuMaxSpecs];
};

// Chooses the events from sysfs_root (see the top of this file).  ok, or
// no_pmu / unsupported_event with a reason in why.
pmu_status pmu_plan_events(const pmu_params &p, pmu_plan *out, char *why, size_t cap);

// --- small readers, shared with the tracker (pmu_tracker.cc)

// Reads a small text file into buf (NUL-terminated, trailing newline kept);
// its length, or -errno.
long pmu_read_text(const char *path, char *buf, size_t cap);
// A decimal or 0x-prefixed hexadecimal number at p, advancing p past its
// digits.  False if there are none or the value overflows.
bool pmu_parse_u64(const char *&p, uint64_t *out);

}  // namespace mmtier::detail
