// Snapshot layer: memory the writer cannot see as of the pause, copied in
// the pause.
//
// The capsule's writer is a fork, and a fork shares a MAP_SHARED mapping
// with the program instead of copying it: read after the pause, such
// memory (/dev/zero, System V shared memory) would hold the program's
// later writes beside a heap frozen at the pause.  Memory the program
// marked MADV_WIPEONFORK is zero in a fork.  So in the pause each such
// region's pages in memory are copied into one private scratch mapping,
// which the fork then holds as of the pause; the writer saves them from
// there.
#pragma once

#include "platform/proc_maps.h"
#include "snapshot/proc_text.h"

#include <cstdint>

namespace mmtier::detail {

// Whether e is shared anonymous memory (/dev/zero, System V shared
// memory): what a restore makes again with its bytes.
bool shared_anonymous(const sys::maps_entry &e);

struct shared_copy_entry {
  uintptr_t lo, hi;  // the region
  uint64_t off;      // its copy, at scratch_lo + off
};

struct shared_copies {
  static constexpr uint32_t kMax = 64;
  static constexpr uint64_t kMaxBytes = uint64_t{256} << 20;  // of regions copied in the pause
  uintptr_t scratch_lo = 0, scratch_hi = 0;
  shared_copy_entry e[kMax];
  uint32_t n = 0;
  // Shared anonymous regions left out (more than kMax, or more than
  // kMaxBytes together): the writer reads them after the pause.
  uint32_t left_out = 0;
};

// In the pause: copies the pages in memory (mincore; without it, and on a
// host with swap, every page) of every mapping that advice marks
// MADV_WIPEONFORK, then of every shared anonymous region, through
// /proc/self/mem (a region's protection does not matter).  Nothing here
// allocates but the scratch mapping.  A shared region that cannot be
// copied is left out (the writer reads it after the pause); wiped memory
// has no other copy: -E2BIG when it is more than kMax mappings or
// kMaxBytes, -ENOMEM without a scratch mapping, nothing copied then and
// one line into why.
long shared_copy_take(shared_copies *c, const vm_advice &advice, char *why, size_t cap);

// The copy of the region [lo, hi) (a copied region holds it), or 0.
uintptr_t shared_copy_of(const shared_copies &c, uintptr_t lo, uintptr_t hi);

// After the fork, in the program: the scratch mapping goes.
void shared_copy_release(shared_copies *c);

}  // namespace mmtier::detail
