// Heap layer: storage at first touch (see heap_internal.h, unit::pending).
//
// A PMem unit on a file tier is mapped on its slot, and its storage is
// allocated with fallocate (a full file system is an error then, not a
// SIGBUS at a later first write).  Done at placement, that would make every
// page of an allocation cost storage at once: memory on tmpfs, blocks and
// the zeros written on DAX (sort's 3.4 GB buffer, of which it uses 180 MB;
// a JVM's committed heap).  So a fresh PMem unit is *pending*: its pages
// are anonymous and untouched, registered with the fault service for
// missing pages.  The first access to any of them, by a thread or by the
// kernel inside a system call, faults to the service, which allocates the
// unit's storage, maps its slot over the pages (zeros, as they were) and
// wakes every waiter (pending_fault).  Storage is then that of the units
// used, at 2 MiB granularity.  A unit that cannot get storage becomes a
// DRAM unit then, with the same warning as at placement.
//
// The service answers under the heap lock (a trylock: retried while
// another thread holds it).  So no path that holds the lock may touch a
// pending unit's pages: those that would (a protection change the file
// mapping must carry, advice, a move, a copy) materialize the unit first;
// a fork or a snapshot unpends it instead (fork.cc: its untouched pages are
// then its private copies, frozen like every other PMem unit).
#include "heap/heap_internal.h"

#include "config/config.h"
#include "heap/faults.h"
#include "platform/sys.h"
#include "platform/uffd.h"

#include <sys/mman.h>

#include <atomic>
#include <cerrno>

namespace mmtier::detail {
namespace {

std::atomic<size_t> g_pending_units{0};

}  // namespace

bool pending_eligible(int prot) {
  const tier &t = pmem_tier();
  // A file tier only: a node tier's units are anonymous memory, lazy by
  // nature.
  return config_get().pmem_reserve_at_touch && prot == (PROT_READ | PROT_WRITE) && !t.anonymous &&
         t.ops->reserve && t.ops->slot_alloc && faults_serving();
}

void set_pending(unit &u, bool on) {
  if (!u.pending == !on) return;
  __atomic_store_n(&u.pending, static_cast<uint8_t>(on), __ATOMIC_RELEASE);
  if (on) g_pending_units.fetch_add(1, std::memory_order_relaxed);
  else g_pending_units.fetch_sub(1, std::memory_order_relaxed);
}

// Untouched anonymous pages for [addr, addr + len) of a pending unit,
// registered for missing pages; 0 or -errno (nothing registered).
long map_pending(void *addr, size_t len) {
  long r = dram_tier().ops->map(&dram_tier(), addr, len, PROT_READ | PROT_WRITE, 0, 0);
  if (r < 0) return r;
  // Pages present already (mlockall(MCL_FUTURE) populates every new
  // mapping): writes to them would never reach the fault service.
  unsigned char present = 0;
  if (sys::raw(SYS_mincore, reinterpret_cast<long>(addr), kPageSize, reinterpret_cast<long>(&present)) == 0 &&
      (present & 1))
    return -EBUSY;
  return sys::uffd::register_range(faults_fd(), addr, len, UFFDIO_REGISTER_MODE_MISSING);
}

void materialize_locked(size_t idx) {
  unit &u = g_heap.units[idx];
  if (!u.pending) return;
  tier &t = pmem_tier();
  const int fd = faults_fd();
  long err = 0;
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t a, size_t c) {
    if (err) return;
    const size_t off = a << kPageShift, len = c << kPageShift;
    long r = t.ops->reserve(&t, u.slot, off, len);
    if (r == -ENOSPC && t.ops->warm_limit && t.ops->warm_limit(&t, 0) > 0) r = t.ops->reserve(&t, u.slot, off, len);
    err = r;
  });
  if (err) {
    // No storage: the untouched anonymous pages are the unit's, on DRAM.
    note_fallback(kTierPmem, err, "PMem tier is full");
    pending_to_dram(idx);
    return;
  }
  // The slot mapped over the untouched pages (which ends their
  // registration); a run that cannot be mapped (no mapping left under
  // vm.max_map_count) keeps its anonymous pages, and the unit is then
  // spilled.
  for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t a, size_t c) {
    void *addr = page_addr(idx, a);
    if (t.ops->map(&t, addr, c << kPageShift, PROT_READ | PROT_WRITE, u.slot, a << kPageShift) < 0) {
      if (fd >= 0) sys::uffd::unregister_range(fd, addr, c << kPageShift);
      u.spilled = 1;
    }
  });
  set_pending(u, false);
  ++g_mgr.counters.pmem_first_touches;
  g_mgr.counters_changed = true;
  // Every access waiting on a page of the unit tries again.
  if (fd >= 0) sys::uffd::wake(fd, page_addr(idx, 0), kUnitSize);
}

void pending_to_dram(size_t idx) {
  unit &u = g_heap.units[idx];
  if (!u.pending) return;
  tier &t = pmem_tier();
  const int fd = faults_fd();
  // Run by run: the unit may hold other mappings, which an unregister
  // spanning them would refuse.
  if (fd >= 0)
    for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t a, size_t c) {
      sys::uffd::unregister_range(fd, page_addr(idx, a), c << kPageShift);
    });
  if (t.ops->slot_free) t.ops->slot_free(&t, u.slot);
  count_unit(u, kTierPmem, -1);
  u.slot = 0;
  u.tier1.store(kTierDram + 1, std::memory_order_release);
  count_unit(u, kTierDram, +1);
  set_pending(u, false);
  if (fd >= 0) sys::uffd::wake(fd, page_addr(idx, 0), kUnitSize);
}

void unpend_locked(size_t idx) {
  unit &u = g_heap.units[idx];
  if (!u.pending) return;
  const int fd = faults_fd();
  if (fd >= 0) {
    for_runs(u.live_bits, 0, kPagesPerUnit, true, [&](size_t a, size_t c) {
      sys::uffd::unregister_range(fd, page_addr(idx, a), c << kPageShift);
    });
    sys::uffd::wake(fd, page_addr(idx, 0), kUnitSize);
  }
  set_pending(u, false);
}

int heap_pending_fault(int fd, uintptr_t page) {
  if (!g_pending_units.load(std::memory_order_relaxed) || page - g_heap.base >= g_heap.size) return 0;
  const size_t idx = unit_index(page);
  if (!__atomic_load_n(&g_heap.units[idx].pending, __ATOMIC_ACQUIRE)) return 0;
  if (pthread_mutex_trylock(&g_mgr.lock) != 0) return -EAGAIN;
  materialize_locked(idx);
  heap_unlock();
  // Also when another path materialized it first: the waiter retries.
  sys::uffd::wake(fd, page_addr(idx, 0), kUnitSize);
  return 1;
}

void heap_pending_abandon() {
  if (!g_pending_units.load(std::memory_order_relaxed)) return;
  heap_lock();
  for_used_va_words([](size_t w) {
    for (uint64_t bits = g_mgr.va_bits[w]; bits; bits &= bits - 1)
      pending_to_dram(w * 64 + static_cast<size_t>(__builtin_ctzll(bits)));
  });
  g_mgr.counters_changed = true;
  heap_unlock();
}

size_t heap_pending_units() { return g_pending_units.load(std::memory_order_relaxed); }

}  // namespace mmtier::detail
