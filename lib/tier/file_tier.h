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
  char dir[kPathMax] = {};
};

inline file_tier_state *file_state(const tier *t) { return static_cast<file_tier_state *>(t->impl); }

}  // namespace mmtier::detail
