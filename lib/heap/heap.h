// Heap layer: the reserved address range, its units of placement, and every
// mapping operation on them (the layer's files are listed in
// heap_internal.h).  One range of virtual addresses is reserved at
// start-up (PROT_NONE, MAP_NORESERVE); all managed memory lives inside it, in
// 2 MiB units.  A unit is placed on one tier when its first page is needed
// and keeps its address for life: changing a unit's backing (migration,
// snapshot) never changes where the application sees it.
//
// Two clients: the allocator engine (whole units reserved per extent, pages
// committed/decommitted through the extent hooks) and the application's
// anonymous mmaps (whole units for large mappings, packed units for small
// ones).  All mutations take the heap lock; tier_of() and owns() are
// lock-free reads.
#pragma once

#include "support/layout.h"
#include "tier/tier.h"

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

enum unit_owner : uint8_t {
  kOwnerFree = 0,
  kOwnerEngine = 1,   // allocator engine extents
  kOwnerMmap = 2,     // one large application mmap (whole units)
  kOwnerPacked = 3,   // several small application mmaps
  kOwnerSmall = 4,    // a segment of the small-object allocator
};

// unit::frozen: 0, or a fork froze the unit's file view: the slot is one of
// this process's own file (kFrozenOwn: the process forked), or of an
// ancestor's (kFrozenInherited: the process is a fork child), or of a file
// a snapshot's capsule links (kFrozenCapsule: handed over at a ZeroIO
// snapshot, or mapped from the capsule by a restore; counted with the
// inherited ones).  Re-sharing (heap_reshare) gives the unit a slot of its
// own again.
inline constexpr uint8_t kFrozenOwn = 1, kFrozenInherited = 2, kFrozenCapsule = 3;

// Units whose pages belong to an allocator (jemalloc extents or small-object
// segments), never to an application mapping.
inline bool owner_is_allocator(uint8_t owner) { return owner == kOwnerEngine || owner == kOwnerSmall; }

// The table is zero-filled memory, so tier and forced are stored plus one:
// 0 means "not placed" and "by policy".
struct unit {
  std::atomic<uint8_t> tier1;  // tier + 1; 0 until placed
  uint8_t owner;
  uint8_t frozen;              // fork froze its file view (kFrozen*): its slot is not written, punched or reused
  uint8_t forced1;             // 0: by policy; else the only tier + 1
  uint8_t by_policy;           // its placement counts in the ratio
  uint8_t spilled;             // its tier ran out of room: new pages are DRAM
  uint8_t custom_prot;         // a protection other than read/write, or advice a new mapping would lose
  uint8_t sample;              // access sampling holds one of its pages (sample.h)
  // A PMem unit whose storage waits for its first access: its live pages
  // are untouched anonymous memory registered with the fault service
  // (units.cc, "Storage at first touch").  Read without the lock by the
  // fault service (atomically).
  uint8_t pending;
  uint8_t rehuge;            // to be collapsed into a huge page (huge.cc)
  // A kernel move of its pages is under way, outside the heap lock (node
  // tiers, node_moves.cc): not movable until it ends; cleared when the
  // unit is released.
  uint8_t moving;
  // Its DRAM mapping was made whole, with the huge-page advice (units.cc,
  // advise_run): a run of it mapped again gets the advice too.  Cleared
  // when it moves or is released.
  uint8_t huge_advised;
  uint32_t slot;             // slot in the tier's file (file-backed tiers)
  uint16_t live;             // pages placed (mapped on the tier)
  uint16_t owned;            // pages owned by application mappings
  uint64_t live_bits[kBitmapWords];
  uint64_t owned_bits[kBitmapWords];
};

// A process's first units that would be placed by policy go to DRAM as
// start-up memory, outside the ratio and never moved (8 MiB).
inline constexpr size_t kStartupUnits = 4;

struct heap_counters {
  size_t units[kTierCount];
  size_t policy_units[kTierCount];  // placed by policy (not forced)
  size_t peak_units[kTierCount];
  size_t policy_peak_units[kTierCount];  // most placed by policy at once
  size_t limit_units[kTierCount];  // SIZE_MAX: none
  size_t fallbacks;
  size_t mmap_bytes;
  size_t forks;
  // PMem ran out of room for a placement (a full file system) since its
  // last unit was released: demotions would fail the same way.
  bool pmem_full;
  // Units frozen by a fork (their file view private; pages written since
  // are DRAM copies), of this process's own file and of ancestors'.
  size_t frozen_own, frozen_inherited;
  // A fork child: the units it was born with, its parent's (0: not a fork
  // child).
  size_t units_at_fork;
  size_t reshared;  // frozen units given a slot of their own again
  // PMem units given their storage at their first access (units.cc,
  // "Storage at first touch").
  size_t pmem_first_touches;
};

struct heap_globals {
  uintptr_t base = 0;
  size_t size = 0;
  // [base, base + small_size) is the small zone: units there are only ever
  // small-object segments, so free() tells a small block by one compare.
  size_t small_size = 0;
  size_t nunits = 0;
  unit *units = nullptr;
};
extern heap_globals g_heap;

inline int unit_tier(const unit &u) {
  return static_cast<int>(u.tier1.load(std::memory_order_acquire)) - 1;
}

// Whether some of a file-backed unit's pages may be anonymous (DRAM) pages:
// after fork froze its file view, or after its tier ran out of room.  The
// tier of such a page is read from pagemap.
inline bool unit_mixed(const unit &u) { return u.frozen || u.spilled; }

inline bool heap_contains(const void *p) {
  return reinterpret_cast<uintptr_t>(p) - g_heap.base < g_heap.size;
}

inline bool heap_small_contains(const void *p) {
  return reinterpret_cast<uintptr_t>(p) - g_heap.base < g_heap.small_size;
}

// Reserves the address range and opens the tiers.  Returns false (and logs)
// only if no address range could be reserved at all.
[[nodiscard]] bool heap_init();

// Tier of the byte at p: 0 DRAM, 1 PMem, -1 not managed or not placed.
int heap_tier_of(const void *p);
// The NUMA node the PMem tier is (MMTIER_SLOW_NODE), or -1: a file.
int heap_slow_node();

// The tier of the engine arena p's unit belongs to when that arena is forced
// to one tier (explicit placement), else -1.  p must be in the heap.
inline int heap_forced_tier(const void *p) {
  const unit &u = g_heap.units[(reinterpret_cast<uintptr_t>(p) - g_heap.base) >> kUnitShift];
  return u.owner == kOwnerEngine ? static_cast<int>(u.forced1) - 1 : -1;
}

// --- allocator engine
// Reserves whole units for an engine extent; nullptr when out of addresses.
// forced: -1 for policy placement, else the tier every unit must use.
void *heap_engine_reserve(void *want, size_t size, size_t align, int forced);
void heap_engine_release(void *addr, size_t size);
// Places pages (read/write).  0, or -errno when no tier can hold them.
long heap_commit(void *addr, size_t len);
// Drops contents (zero on next use); unplace also gives the pages back.
long heap_discard(void *addr, size_t len, bool unplace);

// --- small-object allocator
// Reserves one unit of the small zone for a segment (placed by policy when
// its first page is committed); nullptr when the zone is exhausted.
void *heap_small_reserve();
// Drops a segment's pages and gives its unit back.
void heap_small_release(void *segment);

// --- application mappings (anonymous, private)
// forced: -1 to place by policy, else the tier (the engine's own start-up
// mappings are forced to DRAM).
long heap_mmap(void *hint, size_t len, int prot, int flags, void **out, int forced = -1);
// Handles the part of a call that falls inside the reserved range.
long heap_munmap(void *addr, size_t len);
long heap_mprotect(void *addr, size_t len, int prot);
long heap_madvise(void *addr, size_t len, int advice);
long heap_mremap(void *old_addr, size_t old_len, size_t new_len, int flags, void *new_addr,
                 void **out);
// A MAP_FIXED mapping the heap does not manage (file or shared) placed over
// reserved addresses: forget whatever was there.
void heap_forget(void *addr, size_t len);

// --- migration (migration.cc, with the fault service of faults.h)
// Whether unit idx can move between tiers: placed by policy, not mixed
// (frozen by fork or spilled), every live page read/write, no move of it
// under way.
bool heap_unit_movable(size_t idx);
// Moves unit idx to tier `to` at the same addresses while any number of
// threads (and system calls) read and write it.  0, or -errno with the unit
// unchanged.  Promotion copies on demand (userfaultfd post-copy into
// anonymous memory); demotion holds writers off (userfaultfd write-protect)
// while the unit is copied into its new file slot and mapped over itself.
// Returns the bytes moved (>= 0).
long heap_migrate(size_t idx, int to);
// For tests: fn(idx) runs while the kernel moves unit idx's pages between
// NUMA-node tiers, on the moving thread, the heap lock not held (nullptr:
// nothing).
void heap_node_move_hook(void (*fn)(size_t idx));
// Units tier `to` can take now beside what it holds, as the tier sees its
// memory (a NUMA node other processes fill), or SIZE_MAX when the tier
// does not know: the budgets alone bound it.
size_t heap_tier_room_units(int to);
// Units tier `to`'s memory is short of what it keeps, rounded up (0: not
// short, or the tier does not know): what must leave it before a unit
// moving in finds room.
size_t heap_tier_short_units(int to);
// Node tiers: a unit counted on DRAM whose pages the kernel took from the
// slow node (the fast nodes were full when they were first touched: their
// policy is "preferred", a fault does not fail) is counted where its pages
// are, on PMem, and its stragglers follow; one with a few pages there has
// them moved to DRAM when it has room.  Looks at up to n DRAM units per
// call, in turn (8 pages of each, one system call), and moves the pages of
// at most 4 of them (outside the heap lock, as heap_migrate's); returns
// how many it counted again.  0 when the tiers are not nodes.  The mover's
// thread only.
size_t heap_recount_node_units(size_t n);
// Tests only: called by a demotion with the unit's address once it has read
// which pages hold data and before it copies them (a page dropped there is
// one that went away behind mmtier's back, as a raw madvise does).
extern void (*g_demote_copy_hook)(void *unit);
// Tests only: called by a demotion once it has copied the unit into its
// slot, before it checks the copy (MMTIER_CHECK_MOVES) and maps the slot.
extern void (*g_demote_copied_hook)(void *unit);
// Tests only: called by a promotion with the unit's address once its pages
// are missing and registered (its post-copy window open), before it fills
// them.
extern void (*g_promote_fill_hook)(void *unit);
// MMTIER_CHECK_MOVES: pages a demotion found different when it read back
// what it had written into PMem (0 without the check).
size_t heap_check_mismatches();
// Lists the units that can move now, ascending, with their tiers; returns
// how many (at most cap).
size_t heap_movable_units(uint32_t *units, uint8_t *tiers, size_t cap);
// The start hook: due once the process has min_units placed units (and in
// a child after fork, once it has placed min_units more of its own); the
// background mover starts that way, so small processes, and children that
// exec or exit soon, never get a thread.  The heap only
// raises g_start_due: the hook starts a thread, which allocates, so it runs
// from heap_maybe_start(), which the entry points (preload forwarders, API)
// call after an allocator's slow path has returned, never from inside one.
void heap_set_start_hook(void (*hook)(), size_t min_units);
extern std::atomic<bool> g_start_due;
extern std::atomic<bool> g_extra_due;
void heap_run_start_hook();
// Before an allocation of `bytes`: when placing it would make the start
// hook due, the fault service starts first, so that it is there to give
// this allocation's PMem units their storage at first touch
// (MMTIER_PMEM_RESERVE=touch) rather than all of it at placement.  Called
// by the entry points before the allocator, like heap_maybe_start after it.
void heap_before_large_slow(size_t bytes);
inline void heap_before_large(size_t bytes) {
  if (__builtin_expect(bytes >= 2 * kUnitSize, 0)) heap_before_large_slow(bytes);
}
inline void heap_maybe_start() {
  if (__builtin_expect(g_start_due.load(std::memory_order_relaxed) | g_extra_due.load(std::memory_order_relaxed), 0))
    heap_run_start_hook();
}
// Runs fn once, from the next heap_maybe_start() (a thread to start, away
// from the allocator's slow paths), whatever the start hook's count.
void heap_start_soon(void (*fn)());

// --- fork: re-sharing frozen units (migration.cc)
// Gives frozen units (heap.h: kFrozen*) a shared mapping of PMem again, so
// that the pages written since the fork, DRAM copies, go back to PMem and
// the unit rejoins the ones the mover moves.  Each unit is done with every
// other thread stopped (support/world.h), one unit per stop: on its own
// slot when no fork child holds the file any more (only the pages changed
// since the fork are written), else into a fresh slot (the whole unit; the
// frozen slot is reclaimed once the children let go of the file).  Units
// are looked at in rotation; one whose pages are all still the file's is
// left frozen while a child holds the file (it is on PMem already).  Stops
// after max_units units or max_bytes copied, at the first error, or when
// no frozen unit is worth it.
struct reshare_outcome {
  size_t units = 0;     // re-shared
  size_t in_place = 0;  // of them, back on their own slot
  size_t bytes = 0;     // copied
  uint32_t stops = 0;   // world stops made
  uint64_t pause_total_ns = 0, pause_max_ns = 0;  // of the stops, as the program saw them
  long err = 0;         // the error that ended the call (-EAGAIN: the world would not stop)
};
reshare_outcome heap_reshare(size_t max_units, size_t max_bytes);
// Before a snapshot's stop: every unit the process's own fork froze and
// worth it re-shared at once, without a byte limit, in place (only the
// pages written since the fork are written) and so only once no fork child
// holds the file (else nothing: copying each unit whole into a fresh slot
// is the mover's work, at its rate; so are a restored process's capsule
// units), and only where write-protect holds the writers off (no stop of
// the program's threads): -ENOTSUP in err, nothing done, where it cannot
// (Linux before 6.4, a DAX file).  A unit left private costs the stop's
// fork a page table entry per page (a fork then a rewrite of the program's
// heap: a 4 KiB private copy of every PMem page); re-shared, the fork
// copies nothing of it and the capsule links it (ZeroIO).
reshare_outcome heap_reshare_now();

// --- huge pages rebuilt (huge.cc)
// Collapses DRAM units in full use that lost their huge page (split by a
// fork's copy-on-write, or filled page by page by a promotion) into one
// huge page again (MADV_COLLAPSE, Linux 6.1; MMTIER_HUGE_PAGES=units).
// After each fork or snapshot every unit is looked at once, in rotation;
// else only promoted units.  A unit is collapsed only when all its pages
// are present and this process's alone: a unit a fork child still shares
// stays marked for a later round (`shared`).  At most max_bytes collapsed
// and max_looks units in use looked at per call.
struct rehuge_outcome {
  size_t units = 0;   // collapsed into a huge page
  size_t failed = 0;  // the kernel refused (left on small pages)
  size_t bytes = 0;   // copied by the collapses (both kinds)
  size_t looked = 0;  // candidates looked at
  size_t busy = 0;    // being sampled (left marked)
  bool shared = false;  // met units a fork child shares (left marked)
  long err = 0;         // stopped at a passing failure (-EAGAIN, -ENOMEM, -EBUSY)
};
rehuge_outcome heap_rehuge(size_t max_bytes, size_t max_looks);

// --- snapshots (ZeroIO: the PMem storage is linked into the capsule, not
// copied)
// Calls fn for each descriptor of PMem storage this process maps units of
// (tier_ops::storage_fds): its own first (k 0, skipped when it has none),
// then each ancestor's it holds (k 1..), with the heap lock held, so that a
// descriptor named to fn stays open while fn runs.
void heap_pmem_storage_each(void (*fn)(void *ctx, int fd, int k), void *ctx);
// Before a snapshot's stop, beside the running program: makes the PMem
// units' shared mappings private now (the freeze a fork or the stop does,
// a piece at a time), so that the stop freezes only what was shared since.
// Dropping a unit's page table entries is the costly part (about 10 ms per
// GiB of present pages here); done here, it is out of the pause.  Correct
// without a stop: a unit's later writes go to private copies, which the
// stop's fork keeps and the writer saves as the unit's own pages.  The
// bytes of mappings it made private.
size_t heap_snapshot_prefreeze();
// In a snapshot's stop (the heap lock held by it), after the freeze: the
// bytes of mappings the stop had to make private (shared since the
// pre-freeze: units placed or re-shared meanwhile).
size_t heap_snapshot_frozen_in_stop();
// In a snapshot's stop (the heap lock held by it): if the freeze made every
// PMem unit private and the tier can hand its own storage over, calls link
// with its descriptor; if link says it linked it into the capsule, hands it
// over (tier_ops::hand_over): its units become kFrozenCapsule units, which
// the process never writes back into it.  1 when it did; 0 when there is
// no own storage; -EBUSY when it cannot now (the freeze was incomplete, or
// the tier holds as many files as it can); -ENOLINK when link did not link
// it; -EIO when link did but the storage could not change hands (the link
// must be undone).
int heap_snapshot_hand_over(bool (*link)(void *ctx, int fd), void *ctx);
// In a restored process (once every layer was put right): the capsule's
// PMem files its units map, left open by the restore, are held as an
// earlier snapshot's files are, so that the next snapshot links them
// again.  Descriptors that cannot be held (no unit of the capsule's left,
// no room) are closed.
void heap_adopt_capsule_storage(const int *fds, size_t n);
// Before the restored handlers run, in a thin clone (`mmtier restore
// --clone`): its units' pages are private mappings of the capsule's memory,
// shared with every other clone until written.  Each unit becomes a frozen
// one of the capsule's (kFrozenCapsule): a page it drops becomes a fresh
// zero page, never the capsule's again; it is re-shared into storage of
// the clone's own once written, not when only read (which would copy what
// the clones share); a DRAM one stays where it is.
void heap_note_thin_clone();

// The DRAM units the node agent allows this process (SIZE_MAX: no node
// budget).  Placement and the mover keep to the tighter of it and
// MMTIER_DRAM_LIMIT (counters.limit_units[kTierDram]); units over it are
// demoted by the mover at its rate limit.  A fork child and a restored
// process start without one.
void heap_set_node_dram_limit(size_t units);

// --- statistics
void heap_counters_get(heap_counters *out);
size_t heap_resident_bytes(int tier);
// PMem units placed whose storage waits for their first access.
size_t heap_pending_units();
// Pages present, as the kernel sees them: bytes[t] on each tier (a unit
// frozen by fork counts its copies, anonymous pages, as DRAM), and of
// bytes[kTierDram] the copies in frozen units.
struct resident_split {
  size_t bytes[kTierCount] = {};
  size_t frozen_copied = 0;
};
// One pass over every unit: about 1.5 ms per GiB here; the heap lock is
// taken 64 units at a time.  The _locked form is for a caller holding the
// heap lock (the change hook).
resident_split heap_resident_split();
resident_split heap_resident_split_locked();
// resident_split::frozen_copied of the last pass.
size_t heap_frozen_copied_last();
// The change hook runs, with the heap lock held, before the lock is released
// after any counter changed (units placed or released on a tier, fallbacks,
// managed mmap bytes, forks): once per heap operation, in the thread that
// made it.  It must not allocate nor take a lock that is held while the heap
// lock is taken.  Statistics publishing (stats/live_stats.h) uses it.
void heap_set_change_hook(void (*hook)(const heap_counters &));
size_t heap_tier_limit(int tier);

}  // namespace mmtier::detail
