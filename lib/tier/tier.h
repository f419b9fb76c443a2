// Tier layer: where the pages of a unit live.  A tier is a runtime ops table
// plus its state, so a new kind of tier (a CXL/NUMA node, ...) is one new
// file.  DRAM is anonymous private memory; the PMem tier is a file in
// MMTIER_PMEM_PATH (a DAX mount on real hardware) mapped MAP_SHARED, where
// every unit placed on it owns one unit-sized slot of the file.
#pragma once

#include "config/config.h"

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
  // Maps [off, off + len) of a slot at addr (MAP_FIXED); 0 or -errno.
  long (*map)(tier *t, void *addr, size_t len, int prot, uint32_t slot, size_t off);
  // Drops the contents of [off, off + len) of a slot mapped at addr: reads
  // return zeros afterwards and the storage is given back; 0 or -errno.
  long (*discard)(tier *t, void *addr, size_t len, uint32_t slot, size_t off);
  // Optional (nullptr: not offered).  A slot whose unit moved away keeps
  // its storage in a pool of warm slots (at most warm_limit of them), which
  // the next unit moving in takes: its pages need no allocation, which is
  // most of the cost of a demotion.  The pool's overflow is freed.
  void (*slot_recycle)(tier *t, uint32_t slot);
  // The lowest-numbered warm slot (its contents are stale), or -ENOENT.
  // Lowest first: units moving in one after another then get consecutive
  // slots, whose mappings merge.
  long (*slot_take_warm)(tier *t);
  // Optional.  Takes this particular slot if it is free in one of the ways
  // `from` allows: kTakeWarm, from the warm pool (contents stale); kTakeFree,
  // released (storage given back: reads as zero) or the next never used.
  // Returns the slot or -ENOENT.  Lets a unit take the slot that follows its
  // neighbour's, so that their mappings merge into one.
  long (*slot_take)(tier *t, uint32_t slot, int from);
};

struct tier {
  const tier_ops *ops = nullptr;
  int index = 0;
  bool usable = false;
  // file-backed tiers
  int fd = -1;
  bool dax = false;            // MAP_SYNC works: real persistent memory
  uint64_t file_slots = 0;     // slots the file is currently sized for
  uint64_t slot_high = 0;      // slots ever handed out
  uint32_t *free_slots = nullptr;  // stack of released slots
  uint64_t free_count = 0;
  uint64_t free_cap = 0;
  static constexpr uint32_t kWarmMax = 128;  // 256 MiB of storage held at most
  uint32_t warm_slots[kWarmMax] = {};  // slot_recycle's pool
  uint32_t warm_count = 0;
  uint32_t warm_limit = 0;  // set by the heap (heap.cc: keep_warm)
  char dir[kPathMax] = {};
};

extern const tier_ops dram_tier_ops;
extern const tier_ops file_tier_ops;

}  // namespace mmtier::detail
