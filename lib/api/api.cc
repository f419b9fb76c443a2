// The public C API (include/mmtier/mmtier.h), shared by the preload library
// and the linked library.  Allocation goes through the same front-end as
// the interposed malloc (front.h).  Errors are reported through errno.
#include <mmtier/mmtier.h>

#include "api/front.h"
#include "api/runtime.h"
#include "heap/heap.h"
#include "mover/mover.h"
#include "snapshot/capture.h"
#include "support/log.h"
#include "stats/report.h"

#include <cerrno>
#include <cstddef>
#include <cstring>

using namespace mmtier::detail;

namespace {

inline bool started() { return runtime_ready() || runtime_start() == kReady; }

void *fail(int err) {
  errno = err;
  return nullptr;
}

bool valid_tier(int t) { return t >= 0 && t < kTierCount; }

}  // namespace

extern "C" {

MMTIER_API int mmtier_tier_of(const void *addr) {
  if (!runtime_ready()) return -1;
  return heap_tier_of(addr);
}

MMTIER_API size_t mmtier_resident_bytes(int tier) {
  if (!started() || !valid_tier(tier)) return 0;
  return heap_resident_bytes(tier);
}

MMTIER_API size_t mmtier_tier_limit(int tier) {
  if (!valid_tier(tier)) return 0;
  runtime_start();
  return heap_tier_limit(tier);
}

MMTIER_API void *mmtier_aligned_alloc_on(int tier, size_t alignment, size_t size) {
  return front_malloc_on(tier, alignment, size);
}

MMTIER_API void *mmtier_malloc_on(int tier, size_t size) { return front_malloc_on(tier, 16, size); }

MMTIER_API void *mmtier_calloc_on(int tier, size_t count, size_t size) {
  size_t total;
  if (__builtin_mul_overflow(count, size, &total)) return fail(ENOMEM);
  void *p = front_malloc_on(tier, 16, total);
  if (p) memset(p, 0, total);
  return p;
}

MMTIER_API void *mmtier_malloc(size_t size) {
  if (!started()) return fail(ENOMEM);
  return front_malloc(size);
}

// The API takes back only what it handed out: pointers outside the heap are
// refused (realloc) or ignored (free), whatever the runtime's state.
MMTIER_API void *mmtier_realloc(void *ptr, size_t size) {
  if (!ptr) return mmtier_malloc(size);
  if (!heap_contains(ptr)) return fail(EINVAL);
  return front_realloc(ptr, size);
}

MMTIER_API void mmtier_free(void *ptr) {
  if (ptr && heap_contains(ptr)) front_free(ptr);
}

MMTIER_API size_t mmtier_usable_size(const void *ptr) {
  return ptr && heap_contains(ptr) ? front_usable_size(ptr) : 0;
}

MMTIER_API int mmtier_owns(const void *ptr) { return ptr && runtime_ready() && heap_contains(ptr); }

MMTIER_API int mmtier_get_stats(struct mmtier_stats *out) {
  if (!out) {
    errno = EINVAL;
    return -1;
  }
  if (!started()) {
    memset(out, 0, sizeof *out);
    return 0;
  }
  stats_fill(out, true);
  return 0;
}

MMTIER_API long mmtier_move(const void *addr, size_t len, int tier) {
  if (!valid_tier(tier) || !started() || len == 0) {
    errno = EINVAL;
    return -1;
  }
  const uintptr_t a = reinterpret_cast<uintptr_t>(addr);
  if (!heap_contains(addr) || a + len < a) {
    errno = EINVAL;
    return -1;
  }
  const size_t first = (a - g_heap.base) >> kUnitShift;
  const size_t last = (a + len - 1 - g_heap.base) >> kUnitShift;
  long moved = 0;
  for (size_t idx = first; idx <= last && idx < g_heap.nunits; ++idx) {
    long r = heap_migrate(idx, tier);
    if (r >= 0) {
      moved += r;
    } else if (r != -EBUSY) {
      errno = static_cast<int>(-r);
      return -1;
    }
  }
  return moved;
}

MMTIER_API int mmtier_get_tiering_stats(struct mmtier_tiering_stats *out) {
  if (!out || out->size < offsetof(mmtier_tiering_stats, running) + sizeof(int)) {
    errno = EINVAL;
    return -1;
  }
  mmtier_tiering_stats s = {};
  s.size = out->size < sizeof s ? out->size : sizeof s;
  if (started()) {
    mover_stats m;
    mover_stats_get(&m);
    s.running = m.running;
    s.scan_interval_ns = m.scan_interval_ns;
    s.scans = m.scans;
    s.promotions = m.promotions;
    s.demotions = m.demotions;
    s.migrations_failed = m.migrations_failed;
    s.bytes_migrated = m.bytes_migrated;
    s.samples = m.samples;
    s.samples_touched = m.samples_touched;
    s.tracking_faults = m.tracking_faults;
    s.cpu_ns = m.cpu_ns;
    s.dram_budget_bytes = m.dram_budget_units == SIZE_MAX || !m.scans ? UINT64_MAX : m.dram_budget_units << kUnitShift;
    for (size_t i = 0; i < kHeatBuckets; ++i) s.heat_histogram[i] = m.heat_histogram[i];
    s.map_count_holds = m.map_count_holds;
    for (int i = 0; i < 4 && i < failure_tally::kMax; ++i) {
      s.failed_errno[i] = m.failures.err[i];
      s.failed_count[i] = m.failures.count[i];
    }
    s.failed_other = m.failures.other;
    s.reshares = m.reshares;
    s.reshare_bytes = m.reshare_bytes;
    s.reshare_stops = m.reshare_stops;
    s.reshare_pause_max_ns = m.reshare_pause_max_ns;
    s.reshare_stop_refusals = m.reshare_stop_refusals;
    s.reshare_failed = m.reshare_failed;
    heap_counters c;
    heap_counters_get(&c);
    s.frozen_bytes = uint64_t{c.frozen_own + c.frozen_inherited} << kUnitShift;
    s.frozen_copied_bytes = heap_frozen_copied_last();
  }
  memcpy(out, &s, s.size);
  return 0;
}

MMTIER_API int mmtier_report(int fd) {
  if (!started()) {
    errno = ENOMEM;
    return -1;
  }
  int r = write_report(fd);
  if (r < 0) {
    errno = -r;
    return -1;
  }
  return 0;
}

MMTIER_API int mmtier_snapshot_to(const char *dir, const char *name, char *path, size_t cap) {
  if (!started()) {
    errno = ENOMEM;
    return -1;
  }
  snap_result res;
  snap_result *r = &res;
  const long e = snapshot_take({name, dir}, r);
  if (e < 0) {
    MMTIER_ERROR("snapshot failed: %s", r->line);
    errno = static_cast<int>(-e);
    return -1;
  }
  if (path && cap) {
    const size_t n = strnlen(r->path, cap - 1);
    memcpy(path, r->path, n);
    path[n] = 0;
  }
  return e == 1 ? MMTIER_SNAPSHOT_RESTORED : 0;
}

MMTIER_API int mmtier_snapshot(const char *name) { return mmtier_snapshot_to(nullptr, name, nullptr, 0); }

}  // extern "C"
