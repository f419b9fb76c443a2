// The file tier's own state (see file_tier.cc): what it keeps to run its
// file.  Only the tier itself and its tests look in here; the heap goes
// through the ops table (tier.h).
#pragma once

#include "tier/tier.h"

#include <cstdint>

namespace mmtier::detail {

struct file_tier_state {
  int fd = -1;
  uint64_t file_slots = 0;       // slots the file is currently sized for
  uint64_t slot_high = 0;        // slots ever handed out
  uint32_t *free_slots = nullptr;  // stack of released slots
  uint64_t free_count = 0;
  uint64_t free_cap = 0;
  static constexpr uint32_t kWarmMax = 128;  // 256 MiB of storage held at most
  uint32_t warm_slots[kWarmMax] = {};        // slot_recycle's pool
  uint32_t warm_count = 0;
  uint32_t warm_limit = 0;
  // Slots frozen by this process's forks and since left by their units,
  // waiting for the fork children to let go of the file.
  uint32_t *retired = nullptr;
  uint64_t retired_count = 0;
  // Ancestors' files this process still maps frozen ranges of: each a
  // descriptor of its own holding a shared lock on the whole file
  // (F_OFD_SETLK), which tells the ancestor not to reuse any of it.
  static constexpr int kHeldMax = 8;
  int held[kHeldMax] = {-1, -1, -1, -1, -1, -1, -1, -1};
  // The hold taken for a fork in progress (fork_prepare .. fork_parent).
  int fork_hold = -1;
  // A fork child may map the file without a hold (taking one failed): the
  // retired slots are never reused.
  bool hold_failed = false;
  bool announced = false;  // the tier's directory and kind were said
  char dir[kPathMax] = {};
};

inline file_tier_state *file_state(const tier *t) { return static_cast<file_tier_state *>(t->impl); }

}  // namespace mmtier::detail
