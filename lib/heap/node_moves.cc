// Heap layer: migration between NUMA-node tiers (tier/node_tier.cc), where
// both tiers are the process's anonymous memory and the kernel moves a
// unit's pages where they are (move_pages) while the program goes on using
// them.
//
// The kernel's move is the slow part: into a node short of memory it
// reclaims, compacts, and allocates and zeroes (init_on_alloc) each target
// page, milliseconds per unit and far more on a slow machine.  So it runs
// without the heap lock, and the program's allocations and frees never
// wait for it.  (They did: in the 6.1 guest's NUMA-pressure check a
// program stood still for tens of seconds while the mover held the lock
// across the moves of many units.)  A move takes three steps:
//   1. under the lock: the unit is checked (movable, the tier within its
//      limit), its samples settled, its live pages noted; it is counted on
//      the new tier at once, its live runs take that tier's policy (pages
//      made from now on are made there; runs placed later are mapped on
//      it), and it is marked moving;
//   2. without the lock: the kernel moves the noted pages (move_in);
//   3. under the lock again: if the unit was released meanwhile (release
//      clears the mark), the move is void and whatever moved belongs to
//      nobody's count; if the kernel found no room (most pages would not
//      fit), the unit goes back to its old tier, policy and count, and the
//      pages that moved stay where they are, as a move under the lock left
//      them.  Pages the kernel cannot move now (pinned by I/O in flight)
//      stay on their node: the unit is counted on its new tier all the same.
// A unit marked moving is not movable (heap_unit_movable): another move of
// it, the mover's or a program's mmtier_move(), is refused with EBUSY
// until this one ends.  The fault service, the sampler and every other
// heap operation see a unit counted and bound on one tier at every
// instant.  A released unit's addresses
// taken again while its old pages move are only misplaced (the kernel moves
// whatever pages lie there): never lost, never miscounted, and the recount
// below finds a DRAM unit's pages off its node.
#include "heap/heap_internal.h"

#include "support/log.h"

#include <cerrno>
#include <cstring>

namespace mmtier::detail {
namespace {

void (*g_move_hook)(size_t idx);  // tests only (heap_node_move_hook)

struct node_move {
  size_t idx = 0;
  int from = -1, to = -1;
  uint64_t runs[kBitmapWords] = {};  // the live pages as the move began
};

// Step 1 (heap lock held): unit idx counted and bound on tier `to`.
void begin_move(node_move &m, size_t idx, int to) {
  unit &u = g_heap.units[idx];
  tier &t = g_mgr.tiers[to];
  m.idx = idx;
  m.from = unit_tier(u);
  m.to = to;
  memcpy(m.runs, u.live_bits, sizeof m.runs);
  for_runs(u.live_bits, 0, kPagesPerUnit, true,
           [&](size_t first, size_t n) { t.ops->bind(&t, page_addr(idx, first), n << kPageShift); });
  retier(u, to, 0);
  u.moving = 1;
}

// Step 2 (no lock): the kernel moves the noted pages; 0 or -errno.
long move_noted_pages(const node_move &m, int to) {
  tier &t = g_mgr.tiers[to];
  if (g_move_hook) g_move_hook(m.idx);
  long err = 0;
  for_runs(m.runs, 0, kPagesPerUnit, true, [&](size_t first, size_t n) {
    if (!err) err = t.ops->move_in(&t, page_addr(m.idx, first), n << kPageShift);
  });
  return err;
}

// Step 3 (heap lock held): the bytes moved, or -errno with the unit back
// on its old tier (-EBUSY: released meanwhile).
long end_move(const node_move &m, long err) {
  unit &u = g_heap.units[m.idx];
  if (!u.moving) return -EBUSY;
  u.moving = 0;
  if (err == 0) return static_cast<long>(u.live) << kPageShift;
  tier &t = g_mgr.tiers[m.from];
  for_runs(u.live_bits, 0, kPagesPerUnit, true,
           [&](size_t first, size_t n) { t.ops->bind(&t, page_addr(m.idx, first), n << kPageShift); });
  retier(u, m.from, 0);
  return err;
}

}  // namespace

void heap_node_move_hook(void (*fn)(size_t idx)) { g_move_hook = fn; }

long node_migrate(size_t idx, int to) {
  node_move m;
  {
    heap_lock_guard g;
    const long ok = migration_check_locked(idx, to);
    if (ok <= 0) return ok;
    begin_move(m, idx, to);
  }
  const long err = move_noted_pages(m, to);
  heap_lock_guard g;
  return end_move(m, err);
}

namespace {

constexpr size_t kRecountBatch = 64, kRecountLook = 8;
// Units whose pages one call moves: it then looks at the next ones in the
// next scan, so that the budgets' moves are not kept waiting.
constexpr size_t kRecountMoves = 4;

struct recount_state {
  size_t cursor = 0;  // where the last call stopped
  bool said = false;
};
recount_state g_recount;  // the mover's thread only

struct recount_look {
  size_t idx[kRecountBatch], looks[kRecountBatch];
  void *pages[kRecountBatch * kRecountLook];
  int where[kRecountBatch * kRecountLook];
  size_t found = 0, asked = 0;
};

// The next n DRAM units with a live page in [from, to) (the units in use
// only: the reservation's other units cost nothing), and up to
// kRecountLook of their live pages spread across each.  Heap lock held.
void collect(recount_look &l, size_t n, size_t from, size_t to) {
  for_used_va_words([&](size_t w) {
    for (uint64_t bits = g_mgr.va_bits[w]; bits && l.found < n; bits &= bits - 1) {
      const size_t i = w * 64 + static_cast<size_t>(__builtin_ctzll(bits));
      if (i < from || i >= to) continue;
      const unit &u = g_heap.units[i];
      if (unit_tier(u) != kTierDram || !heap_unit_movable(i)) continue;
      size_t m = 0;
      for (size_t p = 0; p < kPagesPerUnit && m < kRecountLook; p += kPagesPerUnit / kRecountLook)
        if (bit_get(u.live_bits, p)) l.pages[l.asked + m++] = page_addr(i, p);
      if (m == 0) continue;
      l.idx[l.found] = i;
      l.looks[l.found++] = m;
      l.asked += m;
    }
  });
}

}  // namespace

size_t heap_recount_node_units(size_t n) {
  tier &dram = g_mgr.tiers[kTierDram];
  if (!dram.usable || !dram.ops->lies_on || !g_mgr.tiers[kTierPmem].ops->move_in) return 0;
  recount_state &st = g_recount;
  if (n > kRecountBatch) n = kRecountBatch;
  recount_look l;
  node_move moves[kRecountMoves];
  size_t nmoves = 0, recounted = 0;
  {
    heap_lock_guard g;
    const size_t from = st.cursor < g_heap.nunits ? st.cursor : 0;
    collect(l, n, from, g_heap.nunits);
    if (l.found < n) collect(l, n, 0, from);
    st.cursor = l.found ? l.idx[l.found - 1] + 1 : 0;
    if (!l.found || dram.ops->lies_on(&dram, l.pages, l.asked, l.where) != 0) return 0;
    for (size_t k = 0, at = 0; k < l.found; at += l.looks[k++]) {
      size_t off = 0, known = 0;
      for (size_t j = at; j < at + l.looks[k]; ++j) {
        known += l.where[j] >= 0;
        off += l.where[j] == 0;
      }
      if (off == 0) continue;
      if (nmoves == kRecountMoves) {
        st.cursor = l.idx[k];  // looked at first in the next call
        break;
      }
      node_move &m = moves[nmoves++];
      if (2 * off <= known) {
        // Some of its pages elsewhere (a move that found the node short,
        // or pages made while it was full): moved to DRAM when there is
        // room (move_pages leaves those already there); the unit stays.
        m.idx = l.idx[k];
        m.to = kTierDram;
        memcpy(m.runs, g_heap.units[m.idx].live_bits, sizeof m.runs);
        continue;
      }
      // Most of it elsewhere: counted on PMem, bound to the slow node (what
      // is not there yet follows) at no cost to the budgets' moves.
      begin_move(m, l.idx[k], kTierPmem);
    }
  }
  long err[kRecountMoves];
  for (size_t k = 0; k < nmoves; ++k) err[k] = move_noted_pages(moves[k], moves[k].to);
  heap_lock_guard g;
  for (size_t k = 0; k < nmoves; ++k) {
    if (moves[k].from < 0 || end_move(moves[k], err[k]) < 0) continue;
    ++recounted;
    MMTIER_DEBUG("heap: unit %zu counted on PMem: the kernel put its pages on the slow node", moves[k].idx);
  }
  if (recounted && !st.said) {
    st.said = true;
    MMTIER_INFO("DRAM tier: units placed while NUMA node %d was full lie on the slow node: counted on PMem (the "
                "mover promotes them when they are hot and room returns)",
                dram.node);
  }
  return recounted;
}

}  // namespace mmtier::detail
