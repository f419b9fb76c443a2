// Tier layer: where the pages of a unit live.  A tier is a runtime ops table
// plus its state, so a new kind of tier is one new file.  DRAM is anonymous
// private memory; the PMem tier is a file in MMTIER_PMEM_PATH (a DAX mount
// on real hardware) mapped MAP_SHARED, where every unit placed on it owns
// one unit-sized slot of the file; or, where slow memory is a NUMA node,
// both tiers are anonymous memory bound to their nodes (node_tier.cc).
//
// The layers above see a tier only through these operations: what a tier
// keeps to do its work (a file descriptor, its free and warm slots) is its
// own (file_tier.h for the file tier, for its tests).
#pragma once

#include "config/config.h"
#include "platform/proc_maps.h"

#include <cstddef>
#include <cstdint>

namespace mmtier::detail {

inline constexpr int kTierDram = 0;
inline constexpr int kTierPmem = 1;
inline constexpr int kTierCount = 2;

struct tier;

inline constexpr int kTakeWarm = 1, kTakeFree = 2;

struct tier_ops {
  const char *kind;  // "dram", "file"
  // Opens the tier; returns 0 or -errno.
  long (*open)(tier *t, const config &cfg);
  // Reserves a slot for a unit; returns the slot (>= 0) or -errno.  Tiers
  // without slots return 0.
  long (*slot_alloc)(tier *t);
  // Releases a slot and its storage.
  void (*slot_free)(tier *t, uint32_t slot);
  // Makes [off, off + len) of a slot's storage allocated, so that touching
  // it cannot fail later (no SIGBUS on a full filesystem); 0 or -errno.
  long (*reserve)(tier *t, uint32_t slot, size_t off, size_t len);
  // Maps [off, off + len) of a slot at addr (MAP_FIXED); 0 or -errno.  off
  // may run past the slot into the following ones (one mapping of
  // consecutive slots).
  long (*map)(tier *t, void *addr, size_t len, int prot, uint32_t slot, size_t off);
  // Drops the contents of [off, off + len) of a slot mapped at addr: reads
  // return zeros afterwards and the storage is given back; 0 or -errno.
  long (*discard)(tier *t, void *addr, size_t len, uint32_t slot, size_t off);

  // --- optional (nullptr: not offered) -------------------------------------
  // Warm slots.  A slot whose unit moved away keeps its storage in a pool
  // (at most the limit set by warm_limit), which the next unit moving in
  // takes: its pages need no allocation, which is most of the cost of a
  // demotion.  The pool's overflow is freed.
  void (*slot_recycle)(tier *t, uint32_t slot);
  // The lowest-numbered warm slot (its contents are stale), or -ENOENT.
  // Lowest first: units moving in one after another then get consecutive
  // slots, whose mappings merge.
  long (*slot_take_warm)(tier *t);
  // Takes this particular slot if it is free in one of the ways `from`
  // allows: kTakeWarm, from the warm pool (contents stale); kTakeFree,
  // released (storage given back: reads as zero) or the next never used.
  // Returns the slot or -ENOENT.  Lets a unit take the slot that follows its
  // neighbour's, so that their mappings merge into one.
  long (*slot_take)(tier *t, uint32_t slot, int from);
  // Sets how many warm slots the pool keeps (capped by the tier) and frees
  // the ones over it; returns how many it freed.
  size_t (*warm_limit)(tier *t, size_t limit);

  // Copies between memory and a slot's storage without mapping it (for
  // migration): 0 or -errno.
  long (*read)(tier *t, uint32_t slot, size_t off, void *dst, size_t len);
  long (*write)(tier *t, uint32_t slot, size_t off, const void *src, size_t len);
  // Moves len bytes out of a pipe into the slot's storage (splice: the
  // pages go from the pipe to the storage without a copy through a
  // mapping); 0 or -errno; -EINVAL/-EOPNOTSUPP when this storage cannot
  // take a splice at all.
  long (*splice_in)(tier *t, uint32_t slot, size_t off, int pipe_fd, size_t len);
  // Maps a whole slot read-only at an address of the kernel's choosing (a
  // second view of the storage); the address, or -errno.
  long (*map_view)(tier *t, uint32_t slot);

  // fork.  Whether a mapping of this process (a /proc/self/maps entry) is
  // a shared mapping of this tier's storage.
  bool (*maps_storage)(const tier *t, const sys::maps_entry &e);
  // Maps [off, off + len) of the storage at addr MAP_PRIVATE (copy on
  // write): a view that keeps the storage's contents as of now and takes no
  // later writes of this process into it.  Addressed like map.
  long (*map_private)(tier *t, void *addr, size_t len, int prot, uint32_t slot, size_t off);
  // Before fork, in the parent: takes a hold on the storage for the child
  // to come (a shared lock of a description of its own, which the child
  // inherits); fork_parent lets the parent's copy of it go, after the fork
  // or its failure.  A storage held by a child is reclaimed by nobody.
  void (*fork_prepare)(tier *t);
  void (*fork_parent)(tier *t);
  // In a fork child: the storage is the parent's (whatever the child still
  // maps of it stays mapped); start afresh with storage of its own.  The
  // child keeps the hold fork_prepare took until drop_inherited: the parent
  // reclaims none of the storage meanwhile.
  long (*fork_child)(tier *t, const config &cfg);
  // The process no longer maps storage inherited from its ancestors.
  void (*drop_inherited)(tier *t);
  // A slot frozen by this process's fork whose unit has moved to another
  // slot: freed by reclaim_retired once no other process (a fork child)
  // holds the storage.
  void (*slot_retire)(tier *t, uint32_t slot);
  // Frees the retired slots if nobody else holds the storage; returns how
  // many were freed.
  size_t (*reclaim_retired)(tier *t);
  // Whether no other process holds the storage (no fork child maps any of
  // it), so writing any slot changes no other process's view.
  bool (*storage_unheld)(tier *t);
  // Bytes of a slot's storage that hold data as the file system sees them
  // (written blocks: SEEK_DATA/SEEK_HOLE), or -errno.  What a unit takes of
  // a DAX tier, where pages not mapped are not in any cache that mincore
  // could see: their data lives only in the storage.
  long (*stored)(const tier *t, uint32_t slot);
  // In a process restored from a snapshot: the storage and every hold on
  // it belong to the dead original, their descriptors do not exist here
  // (closes nothing), and no unit maps the storage any more (the restore
  // copied its pages or maps the capsule's copy of them).  Start afresh,
  // as a fork child with nothing inherited.
  void (*restored)(tier *t);

  // Snapshots (ZeroIO).  The descriptors of the storage this process maps
  // units of: its own first (-1 when it has none yet), then each
  // ancestor's it holds.  Returns how many were written (<= cap);
  // *can_hand_over: whether hand_over would succeed now (own storage, room
  // for its hold).
  int (*storage_fds)(const tier *t, int *out, int cap, bool *can_hand_over);
  // At a snapshot's stop, between fork_prepare and fork_parent, once every
  // unit on the storage maps it MAP_PRIVATE: the storage now belongs to
  // the capsule, which links it.  The process never writes, punches or
  // reuses any of it again, keeps mapping what it maps of it, holds it as
  // it holds an ancestor's, and starts afresh with storage of its own.
  // false (nothing changed) when it has no storage or no room for the hold.
  bool (*hand_over)(tier *t);
  // In a restored process: fd (a capsule's PMem file, which units map
  // privately) is held as an earlier snapshot's file is.  false (fd left
  // to the caller) when there is no room.
  bool (*adopt_held)(tier *t, int fd);

  // NUMA-node tiers (node_tier.cc).  Moves the pages of [addr, addr + len),
  // anonymous memory of the other node tier, onto this tier's nodes where
  // they are: the kernel migrates them (move_pages) while any thread goes
  // on using them.  The range's policy is bind's (below).  0, -ENOSPC when
  // the nodes have no room for it (nothing asked of the kernel, or most of
  // its pages could not be given a page there), or -errno.  Runs without
  // the heap lock (the tier's room figures are atomics).
  long (*move_in)(tier *t, void *addr, size_t len);
  // The range takes this tier's policy: pages made from now on are made on
  // its nodes; 0 or -errno.  After move_in, under the heap lock.
  long (*bind)(tier *t, void *addr, size_t len);

  // Allocates storage for whatever of [off, off + len) of a slot has none
  // (a hole), keeping every byte of the rest, which reserve may overwrite
  // (on DAX it writes zeros); 0 or -errno.  For a unit mapped again on a
  // slot it already has (re-sharing in place), parts of which were never
  // given storage.
  long (*reserve_keep)(tier *t, uint32_t slot, size_t off, size_t len);

  // Bytes the tier can take now, or -1 when it does not know (the budgets
  // alone bound it).  A node tier: what its nodes can give (free memory and
  // clean, unmapped page cache) above what their zones keep, less units
  // placed whose pages are not made yet; other processes may take it.
  long long (*room)(tier *t);
  // Bytes the tier's memory is below what it keeps (0: not short, or not
  // known).  A node tier: what its nodes can give under what their zones
  // keep (the kernel placed the program's pages there down to its low
  // watermarks, or other processes took it); a move in waits until
  // demotions have freed that much.
  long long (*shortfall)(tier *t);
  // Whether len bytes placed on the tier now fit in its free memory
  // (unknown: yes); if so they are held against its room until its free
  // memory has fallen by as much (the pages made), or a second after the
  // last placement.
  bool (*claim)(tier *t, size_t len);
  // For each of n pages, whether it lies on the tier's memory: 1 yes, 0
  // no (elsewhere), -1 not known (not present); 0 or -errno.  A node tier
  // asks the kernel (move_pages without nodes).
  long (*lies_on)(tier *t, void *const *pages, size_t n, int *out);
};

struct tier {
  const tier_ops *ops = nullptr;
  int index = 0;
  bool usable = false;  // can take units now
  bool dax = false;     // persistent memory mapped directly (a DAX mount: MAP_SYNC accepted)
  bool anonymous = false;  // units are anonymous memory of the process (no file, no slots): a node tier
  int node = -1;        // a node tier's node; before its open, the slow node chosen (node_tier_choose)
  void *impl = nullptr; // the tier's own state
};

extern const tier_ops dram_tier_ops;
extern const tier_ops file_tier_ops;
// The two tiers of a machine whose slow memory is a NUMA node (CXL memory,
// KMEM DAX): the nodes with CPUs, and the slow node.
extern const tier_ops node_fast_tier_ops;
extern const tier_ops node_slow_tier_ops;

// The slow node MMTIER_SLOW_NODE asks for on this machine: the number
// given, or with auto (and MMTIER_PMEM_PATH unset) the node with memory and
// no CPUs farthest from the first node with CPUs; -1 for none (the file
// tier).  Says once why a node given cannot be used.
int node_tier_choose(const config &cfg);

// The node tier's readers of the kernel's figures (exposed for tests):
// what a node's sysfs meminfo text gives a new page without writing
// anything back (MemFree and the clean, unmapped inactive page cache) in bytes, or
// -1 without MemFree; and one line of
// /proc/zoneinfo (without its newline), which adds the high watermark and
// the largest protection of a zone of a node in `want` (kMaxNodes flags)
// to *high_pages, *node carrying the current zone's node from line to line
// (start it at -1).
long long node_meminfo_available(const char *text);
// For tests: node tiers take `bytes` as their nodes' available memory (the
// kernel's figures again with -1).
void node_tier_test_available(long long bytes);
void zoneinfo_line(const char *line, size_t len, int *node, uint64_t *high_pages, const bool *want);

}  // namespace mmtier::detail
