// The mover's scan steps (see scan.h).
#include "mover/scan.h"

#include "heap/heap.h"
#include "support/log.h"

#include <cerrno>

namespace mmtier::detail {

void list_units(unit_listing &l, uint64_t scan_number, size_t (*lister)(uint32_t *, uint8_t *, size_t)) {
  if (!l.stale && scan_number % kRelistScans != 0) return;
  l.n = lister(l.units, l.tiers, kMaxListed);
  l.stale = false;
}

size_t decide(migration_policy &policy, uint64_t now_ns, const access_observation *obs, size_t n,
              const dram_budget &b, policy_migration *out) {
  policy.observe(now_ns, obs, n);
  return policy.decide(now_ns, b.budget, b.dram_now, out, kPolicyMaxBatch, b.dram_short);
}

namespace {

// Says the first failure of each kind, once per process.
void say_failure(const policy_migration &m, long r) {
  static failure_tally said;
  if (!said.add(static_cast<int32_t>(-r))) return;
  char ebuf[24];
  const int err = static_cast<int>(-r);
  const char *what = m.to_tier == kTierDram ? "a promotion" : "a demotion";
  // A PMem file system found full when placing has been said already.
  heap_counters c{};
  if (err == ENOSPC) heap_counters_get(&c);
  if (err == EBUSY || (err == ENOSPC && c.fallbacks > 0))
    MMTIER_INFO("mover: %s failed: %s (%s)", what, errno_name(err, ebuf), migration_failure_meaning(err));
  else
    MMTIER_WARN("mover: %s failed: %s (%s); later failures of this kind are only counted (mmtier stat, MMTIER_REPORT)",
                what, errno_name(err, ebuf), migration_failure_meaning(err));
}

}  // namespace

apply_outcome apply(migration_policy &policy, map_guard &guard, const policy_migration *migs, size_t n,
                    uint64_t now_ns, dram_budget b, long (*migrate)(size_t unit, int to), uint64_t time_ns,
                    uint64_t (*clock)()) {
  apply_outcome o;
  if (n && !guard.allow(n, now_ns)) {
    // Too close to vm.max_map_count: the application's own mappings come
    // first.  Nothing is attempted; the policy hears it as skipped.
    for (size_t i = 0; i < n; ++i) policy.report(now_ns, migs[i], migration_result::skipped);
    o.held = true;
    return o;
  }
  guard.moved(n);
  const uint64_t start = clock ? clock() : 0;
  for (size_t i = 0; i < n; ++i) {
    const policy_migration m = migs[i];
    if (clock && i > 0 && clock() - start >= time_ns) {
      policy.report(now_ns, m, migration_result::skipped);
      ++o.deferred;
      continue;
    }
    if ((m.to_tier == kTierDram && b.dram_now >= b.budget) || (m.to_tier == kTierPmem && b.pmem_room == 0)) {
      policy.report(now_ns, m, migration_result::skipped);
      continue;
    }
    const long r = migrate(m.unit, m.to_tier);
    MMTIER_DEBUG("mover: unit %u heat %d/1000 to %s: %ld", m.unit, static_cast<int>(policy.heat(m.unit, now_ns) * 1000),
                 m.to_tier == kTierDram ? "DRAM" : "PMem", r);
    if (r == -ENOSPC && m.to_tier == kTierDram) {
      // DRAM at its limit: the program's own allocations took the room
      // since the budget was read, or a fast NUMA node has no room for the
      // unit (other processes hold it).  Nothing failed; the rest of the
      // batch waits for the next scan, as over the budget: its promotions
      // would find no more room, and the demotions paired with them would
      // shrink DRAM for nothing (in the 6.1 guest, twenty such exchanges
      // demoted twenty cold units before one promotion fitted).
      policy.report(now_ns, m, migration_result::skipped);
      for (size_t k = i + 1; k < n; ++k) {
        policy.report(now_ns, migs[k], migration_result::skipped);
        ++o.deferred;
      }
      break;
    }
    if (r < 0) {
      policy.report(now_ns, m, migration_result::failed);
      ++o.failed;
      o.failures.add(static_cast<int32_t>(-r));
      say_failure(m, r);
      continue;
    }
    policy.report(now_ns, m, migration_result::done);
    o.bytes += static_cast<uint64_t>(r);
    if (m.to_tier == kTierDram) {
      ++o.promoted;
      ++b.dram_now;
      if (b.pmem_room != SIZE_MAX) ++b.pmem_room;
    } else {
      ++o.demoted;
      --b.dram_now;
      if (b.pmem_room != SIZE_MAX) --b.pmem_room;
    }
  }
  return o;
}

}  // namespace mmtier::detail
